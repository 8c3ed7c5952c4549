"""What a study folder records about how it was made: the pipeline fingerprint of a batch, and the
run.json / failure records that let a re-run skip a study without reading its input.

A study is complete when ``OUT_DIR/<id>/run.json`` records the input's current SHA-256 and one of the prints of
:func:`pipeline_fingerprints` this run accepts for it (:meth:`~.context.WorkerContext.accepts`), and its tables are
present (:func:`completed_run`). The SHA-256 is not
recomputed while the input's file state is the one run.json records with it (:func:`unchanged_input_sha`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from ..json_files import read_json
from .. import __version__
from ..digests import file_sha256, weights_sha256
from ..outputs import RESULTS_VERSION, RUN_FILE, outputs_complete
from ..pipeline import RunOptions
from ..presets import Pipeline
from ..source_state import state_digest

FINGERPRINT_OPTIONS = ("batch_size", "threshold", "top_k", "folder_fps")  # the RunOptions that change results (not report)


def pipeline_fingerprints(pipeline: Pipeline, *, weights: str | None, backend: str, device_type: str, run: RunOptions) -> dict[str, str]:
    """{kind: hash of everything that changes the results of a study of that kind}: preset file, weights (with the
    backend report and ONNX files ``triage optimize`` put beside them), backend, device type, options, version, and
    :data:`~capsule_triage.outputs.RESULTS_VERSION`. A video's ("video") leaves the frame folders' options at their
    defaults: they read no video (QA 88 #2: a night's ``--fps`` scored every video of the archive again), nor a frame
    folder timed by its own timestamps.csv, which takes it too (:meth:`~capsule_triage.batch.context.WorkerContext.fingerprint_of`);
    any other frame folder's is "frames".
    """
    location = weights or pipeline.weights
    path = Path(location)
    extras = sorted([*path.glob("backends.json"), *path.glob("model.*.onnx")]) if path.is_dir() else []
    parts = {
        "preset_sha256": pipeline.sha256 or file_sha256(pipeline.source),  # the bytes run.json names
        "weights_sha256": weights_sha256(path) if path.exists() else location,
        "weights_extras": {p.name: file_sha256(p) for p in extras},
        "backend": backend,
        "device_type": device_type,
        "capsule_triage": __version__,
        "results": RESULTS_VERSION,
    }

    def options(run: RunOptions) -> dict:
        return {k: getattr(run, k) for k in FINGERPRINT_OPTIONS} | (  # only when set: earlier batches' prints stand
            {"skip_duplicates": run.skip_duplicates} if run.skip_duplicates is not None else {}) | (
            {"own_timestamps": False} if not run.own_timestamps else {})  # a library's batch that turns the folder CSVs off

    return {kind: hashlib.sha256(json.dumps({**parts, "options": options(of_kind)}, sort_keys=True).encode()).hexdigest()
            for kind, of_kind in (("frames", run), ("video", replace(run, folder_fps=None, own_timestamps=True)))}


def recorded(path: Path, fingerprints: tuple[str, ...], state: tuple) -> dict | None:
    """The record (run.json or a failure record) at ``path`` if this pipeline wrote it for an input
    whose file state was ``state``: the input is then known without reading it."""
    try:
        record = read_json(path)
        pipeline = record["batch"]["pipeline_fingerprint"] if "batch" in record else record["pipeline_fingerprint"]
        state_sha = record["input"].get("state_sha256") if "input" in record else record.get("input_state_sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return record if state_sha and pipeline in fingerprints and state_digest(state) == state_sha else None


def unchanged_input_sha(folder: Path, fingerprints: tuple[str, ...], state: tuple) -> str | None:
    """The input hash a complete study of this pipeline recorded, if its input's file state (names,
    inodes, sizes, times; ``state``, from :func:`source_state`) is still the recorded one: a nightly
    re-run then skips it without reading the input's bytes (it re-read every study in the archive,
    every night). None: hash the input."""
    run = recorded(folder / RUN_FILE, fingerprints, state)
    sha = run["input"].get("sha256") if run else None
    return sha if isinstance(sha, str) else None


def completed_run(folder: Path, input_sha: str, fingerprints: tuple[str, ...]) -> dict | None:
    """run.json of a complete study made from the same input by the same pipeline, else None: also when it lacks what
    the study's row of studies.parquet reads (QA 94 #2: one run.json edited or damaged into valid JSON of other shapes
    stopped the night's summary, every night, naming no file; such a study is scored again)."""
    try:
        run = read_json(folder / RUN_FILE)
        same = run["input"]["sha256"] == input_sha and run["batch"]["pipeline_fingerprint"] in fingerprints
        results_row(folder.name, run)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return run if same and outputs_complete(folder) else None


def results_row(study_id: str, run: dict) -> dict:
    """A studies.parquet row's columns read from a study's run.json (raises KeyError, TypeError, ValueError or
    AttributeError on a run.json without them: :func:`completed_run` holds such a study incomplete)."""
    frames = int(run["frames_decoded"])
    gaps = run.get("time_gaps")  # absent from the run.json of versions before 2026-12-01
    return dict(frames=frames, frames_skipped=int(run["frames_skipped"]), events=int(run["events"]),
                gap_seconds=float(gaps["seconds"]) if isinstance(gaps, dict) else None,
                frames_without_view=_of(int, run.get("frames_without_view")),  # absent before 2026-12-02
                flagged_percent=100.0 * run["flagged_frames"] / frames if frames else 0.0,
                top_score=None if run["batch"]["top_score"] is None else float(run["batch"]["top_score"]),  # None: nothing scored
                wall_seconds=float(run["wall_seconds"]),
                fps=float(run["fps"]), model=_of(str, run["model"]["name"]), weights_sha256=_of(str, run["model"].get("weights_sha256")),
                backend=_of(str, run["model"].get("backend")), input_sha256=_of(str, run["input"]["sha256"]), output_dir=study_id)


def _of(kind: type, value):
    """``value`` if it is None or of ``kind`` (a column of that type takes it), else TypeError."""
    if value is None or (isinstance(value, kind) and not isinstance(value, bool)):
        return value
    raise TypeError(f"{value!r} is not {kind.__name__}")


def made_otherwise(out_dir: Path, fingerprints: dict[str, tuple[str, ...]]) -> list[str]:
    """The studies whose folders hold complete results of another pipeline fingerprint: made by an earlier
    capsule_triage (its results version) or with other settings (weights, preset, options), so scored again in
    this run (QA 43: the first night after an upgrade rescored a whole archive without a word). ``fingerprints``: the
    prints each study id's results may have in this run."""
    made = []
    for study_id, accepted in fingerprints.items():
        try:
            run = read_json(out_dir / study_id / RUN_FILE)
            other = run["batch"]["pipeline_fingerprint"] not in accepted
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if other and outputs_complete(out_dir / study_id):
            made.append(study_id)
    return made
