"""The Parquet tables of a study: frames.parquet, events.parquet and top_frames.parquet, their columns and the
key-value metadata each one carries (:func:`table_provenance`). :mod:`capsule_triage.outputs` stages and installs them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .outputs import RESULTS_VERSION, json_default
from .ranking import Event, Ranking
from .versions import version_line

SCHEMA_VERSION = "2"  # the tables' columns: 2 = top_frames.parquet has dominant_class (2026-12-05; QA 80 #3)


def prob_column(class_name: str) -> str:
    return f"prob_{class_name}"


def table_provenance(model: str, weights_sha256: str, input_sha256: str, parameters: dict, backend: str, config: dict) -> dict:
    """What every table of a run says of itself (schema key-value metadata), beside ``schema_version``: the model, weights
    and input, the results version, the backend that scored, the event thresholds and a digest of run.json's ``parameters``
    (QA 70 #1: two runs of one study with another --threshold, --skip-duplicates or --fps wrote tables that named the same
    everything; review rev65: another --backend too) and of the model's config as it ran, run.json's ``model.config`` (QA 93 #5:
    one loose weights file under two presets of other mean/std scored otherwise under the same metadata)."""
    return {"capsule_triage": version_line(),  # QA 80 #3: which code wrote a table taken out of its folder
            "model": model, "weights_sha256": weights_sha256, "input_sha256": input_sha256, "results_version": RESULTS_VERSION,
            "backend": backend,
            "enter_threshold": repr(float(parameters["rank"]["enter_threshold"])),
            "leave_threshold": repr(float(parameters["rank"]["leave_threshold"])),
            "parameters_sha256": parameters_sha256(parameters), "model_config_sha256": _digest(config)}


def parameters_sha256(parameters: dict) -> str:
    """The tables' ``parameters_sha256`` of run.json's ``parameters``: their digest, with a frame folder's own
    timestamps.csv named by its name in the folder (QA 100 #1: a study moved and reused by a batch has its run.json name
    the CSV where it now is, and its tables, linked, kept the digest of the old path; one folder in two places differed)."""
    read = parameters.get("read") or {}
    if read.get("timestamps_from") == "folder" and isinstance(read.get("timestamps_csv"), str):
        parameters = {**parameters, "read": {**read, "timestamps_csv": Path(read["timestamps_csv"]).name}}
    return _digest(parameters)


def _digest(record: dict) -> str:
    """SHA-256 of a run.json part as JSON with sorted keys."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=json_default).encode()).hexdigest()


def _metadata(provenance: dict) -> dict[bytes, bytes]:
    meta = {"schema_version": SCHEMA_VERSION, **{k: str(v) for k, v in provenance.items()}}
    return {k.encode(): v.encode() for k, v in meta.items()}


def write_table(path: Path, columns: dict[str, pa.Array], provenance: dict) -> None:
    table = pa.table(columns)
    table = table.replace_schema_metadata(_metadata(provenance))
    with open(path, "wb") as fh:  # a Python file: pyarrow's own path handling rejects non-UTF-8 names
        pq.write_table(table, fh, compression="zstd")


def frames_table(*, frame_index, pts_seconds, probs, class_names, scores, ranking: Ranking, has_view=None,
                 files: list[str] | None = None, reused=None) -> dict[str, pa.Array]:
    """Columns of frames.parquet: one row per decoded frame. A frame without a field of view
    (``has_view`` False) has null score, probabilities and smoothed score: it was not scored. ``files``: a
    frame folder's image names by frame index, as the ``source_file`` column. ``reused``: which frames took the score
    of a near-duplicate before them (``--skip-duplicates``), the ``score_reused`` column."""
    score = lambda values: pa.array(values, pa.float32(), from_pandas=True)  # noqa: E731 - NaN (no view) -> null
    columns = {
        "frame_index": pa.array(frame_index, pa.int64()),
        "pts_seconds": pa.array(pts_seconds, pa.float64()),
        "score": score(scores),
    }
    for i, name in enumerate(class_names):
        columns[prob_column(name)] = score(probs[:, i])
    columns["smoothed_score"] = score(ranking.smoothed)
    columns["flagged"] = pa.array(ranking.event_id >= 0, pa.bool_())
    columns["event_id"] = pa.array(ranking.event_id, pa.int32())
    columns["has_view"] = pa.array(np.ones(len(scores), bool) if has_view is None else has_view, pa.bool_())
    columns["score_reused"] = pa.array(np.zeros(len(scores), bool) if reused is None else reused, pa.bool_())
    if files is not None:
        columns["source_file"] = _names([files[i] for i in frame_index])
    return columns


def events_table(events: list[Event], thumbnails: dict[int, str], *, files: list[str] | None = None) -> dict[str, pa.Array]:
    """Columns of events.parquet: one row per event, in rank order (rank 0 = highest peak score); for a frame
    folder (``files``) also the peak frame's image name, ``peak_file``."""
    def col(name, typ):
        return pa.array([getattr(e, name) for e in events], typ)

    return {
        "rank": pa.array(range(len(events)), pa.int32()),
        "event_id": col("event_id", pa.int32()),
        "start_frame": col("start_frame", pa.int64()),
        "end_frame": col("end_frame", pa.int64()),
        "start_seconds": col("start_seconds", pa.float64()),
        "end_seconds": col("end_seconds", pa.float64()),
        "duration_seconds": col("duration_seconds", pa.float64()),
        "peak_frame": col("peak_frame", pa.int64()),
        "peak_seconds": col("peak_seconds", pa.float64()),
        "peak_score": col("peak_score", pa.float32()),
        "mean_score": col("mean_score", pa.float32()),
        "frame_count": col("frame_count", pa.int64()),
        "dominant_class": col("dominant_class", pa.string()),
        "thumbnail": pa.array([thumbnails.get(e.peak_frame) for e in events], pa.string()),
        **({"peak_file": _names([files[e.peak_frame] for e in events])} if files is not None else {}),
    }


def top_frames_table(top_frames: list[tuple[int, float, float]], thumbnails: dict[int, str], *,
                     files: list[str] | None = None, classes: list[str] | None = None) -> dict[str, pa.Array]:
    """Columns of top_frames.parquet: the top-K single frames after temporal NMS, with each one's most probable
    abnormal class (``Ranking.top_classes``; a frame folder's: with ``file``)."""
    return {
        "rank": pa.array(range(len(top_frames)), pa.int32()),
        "frame_index": pa.array([t[0] for t in top_frames], pa.int64()),
        "pts_seconds": pa.array([t[1] for t in top_frames], pa.float64()),
        "score": pa.array([t[2] for t in top_frames], pa.float32()),
        "dominant_class": pa.array(classes or [None] * len(top_frames), pa.string()),  # None, []: not known
        "thumbnail": pa.array([thumbnails.get(t[0]) for t in top_frames], pa.string()),
        **({"file": _names([files[t[0]] for t in top_frames])} if files is not None else {}),
    }


def parquet_text(name: str) -> str:
    """A file name as Parquet (UTF-8) can hold it: bytes that are not UTF-8 (kept as surrogates) as ``\\xff`` (QA 80 #1:
    one such image name failed its study after scoring; QA 79 #7: U+FFFD could not be matched back to the file)."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate no file name decodes to (rev103 #4: from a JSON file's text)
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _names(names: list[str]) -> pa.Array:
    return pa.array([parquet_text(n) for n in names], pa.string())
