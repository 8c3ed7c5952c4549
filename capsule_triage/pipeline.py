"""The composition: one function runs probe -> read -> classify -> rank -> write for one study.

``triage run``, ``triage batch`` (local or Ray) and the benchmarks all call :func:`triage_study`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .backend_choice import events_unchecked
from .background import prefetch
from .bitrate import low_bitrate_note
from .classifier import Classifier, noted
from .hub import fetch_weights
from .json_files import read_json
from .model_config import CONFIG_NAME, read_geometry, small_frames_note, unused_preset_settings, wide_frames_note
from .errors import InputError, OutputError, WeightsError, path_argument, unexpanded_note
from .dedup import DuplicateSkipper
from .folder_times import with_own_timestamps
from .frames import DecodeStats, FrameBatch, SourceInfo
from .outputs import EVENTS_FILE, FRAMES_FILE, RUN_FILE, THUMBNAILS_DIR, TOP_FRAMES_FILE, StagedOutput, write_json, write_thumbnails
from .result_tables import events_table, frames_table, table_provenance, top_frames_table, write_table
from .presets import Pipeline, weights_not_installed
from .ranking import Ranking, rank
from .report import DETAIL_DIR, REPORT_FILE, write_report
from .field_of_view import has_view
from .frames_at import iter_frames_at
from .read_options import ReadOptions
from .reader import probe, read_frames
from .reader_process import read_frames_in_process
from .run_notes import (ASSUMED_RATE_ADVICE, fps_not_used, frame_times_note, image_sizes_note, multi_page_note, name_twins_note, no_view_note,
                        other_streams_note, rate_assumed, thumbnail_frames, thumbnails_note, ticks_without_frame_note,
                        out_of_order_note, unfinished_note)
from .run_record import run_parameters, run_record
from .run_options import (PROCESS_MIN_FRAMES, RunOptions, check_run, checked_load_arguments, code_threshold_note, other_threshold_note,
                          reads_own_csv)
from .source_state import folder_names, hash_unchanged, settled_state_digest, source_state
from .progress import progress_bar

# everything a run's folder holds: --force replaces such a folder only when it holds nothing else (QA 55: a reviewer's
# notes.txt in it was deleted with the old output)
RUN_OUTPUTS = frozenset({FRAMES_FILE, EVENTS_FILE, TOP_FRAMES_FILE, RUN_FILE, THUMBNAILS_DIR, REPORT_FILE, DETAIL_DIR})


@dataclass
class StudyResult:
    """What a finished run reports (also the row a batch summary is built from)."""

    out_dir: Path
    frames: int
    frames_skipped: int
    events: int
    flagged_fraction: float
    top_score: float | None  # None: no frame showed a view (nothing scored)
    wall_seconds: float
    fps: float
    model: str
    input_sha256: str
    run: dict = field(default_factory=dict)
    summarised: list[str] = field(default_factory=list)  # its warnings a batch counts over its studies in lines of its own

    def warning_lines(self) -> list[str]:
        """Every `Warning:` line `triage run` prints of the study, unprefixed: time gaps, frames not decoded, what a folder
        left unread, then ``run["warnings"]`` (QA 78 #2: that list alone misses the first three)."""
        from .run_notes import warning_lines
        return warning_lines(self.run, self.run["input"]["path"])


def default_out_dir(input_path: Path) -> Path:
    """``<input>_triage`` beside the input; for ``.`` or ``..`` beside the folder they name (QA 66 #1: ``triage run .``
    wrote ``./_triage``, inside the input folder)."""
    if input_path.name in ("", ".."):
        input_path = Path(os.path.normpath(input_path.absolute()))
    return input_path.parent / f"{input_path.stem if input_path.is_file() else input_path.name}_triage"


def load_classifier(pipeline: Pipeline, *, weights: str | Path | None = None, device: str = "auto", backend: str = "auto",
                    threads: int | None = None, threshold: float | None = None) -> Classifier:
    """The preset's model (or ``weights``), checked against the preset's classes. ``threshold``: the
    runs' ``--threshold``, if any: ``auto`` then takes only backends checked with these event settings.
    ``threads``: the backend's intra-op threads (default: as ``triage optimize`` tuned them); for a torch
    backend PyTorch's process-wide count (see :class:`~capsule_triage.classifier.Classifier`)."""
    if not isinstance(pipeline, Pipeline):  # QA 58 #7: a preset's name gave "'str' object has no attribute 'weights'"
        raise ValueError(f"load_classifier takes a Pipeline (load_pipeline(name)), got {type(pipeline).__name__}")
    threshold = checked_load_arguments(weights, device, backend, threshold)  # QA 68 #1: a loose file's threshold 5 failed a run
    location, note = resolve_weights(pipeline, weights)
    classifier = Classifier.load(location, pipeline.model, device=device, backend=backend, threads=threads, note=note,
                                 rank=lambda config: pipeline.rank_params(config, threshold=threshold))
    if weights is None and Path(str(location)).is_dir():  # the preset's own folder (QA 93 #1), not one given to it
        try:  # read whole moments ago, by the classifier; rewritten since (eval's threshold), its keys are not known
            written = read_json(Path(str(location)) / CONFIG_NAME)
        except (OSError, ValueError):  # rev95 #5
            written = None
        classifier.selection = noted(classifier.selection, unused_preset_settings(classifier.config, pipeline.model, pipeline.model_keys,
                                                                                  written))
    classifier.loaded_threshold, classifier.loaded_for = threshold, list(pipeline.model.class_names)
    return classifier


def weights_location(pipeline: Pipeline, weights: str | Path | None = None) -> str:
    """The local weights to load (see :func:`resolve_weights`, whose note this drops)."""
    return resolve_weights(pipeline, weights)[0]


def resolve_weights(pipeline: Pipeline, weights: str | Path | None = None) -> tuple[str, str | None]:
    """The local weights to load (``weights`` or the preset's): an ``hf-hub:`` repository fetched into
    its cached folder, a folder's ``model.safetensors`` as the folder (see :func:`capsule_triage.hub.fetch_weights`);
    with a note when a cached copy stands in for a Hub that could not be reached.

    Raises:
        WeightsError: none found (for the preset's own: how to get them), or a hub name that cannot serve.
    """
    location = str(weights) if weights else pipeline.weights
    if not location:
        raise weights_not_installed(pipeline)
    if not location.startswith(("hub:", "hf-hub:")) and not Path(location).exists():
        if weights:
            raise WeightsError(location, f"weights not found{unexpanded_note(location)}")  # QA 113 #3
        raise weights_not_installed(pipeline)
    local, note = fetch_weights(location)
    return str(local), note


def check_input(input_path: str | Path, pipeline: Pipeline, options: RunOptions = RunOptions()) -> None:
    """Refuse an input :func:`triage_study` would refuse at its probe, without a model: a video's header, a frame
    folder's listing and times (``triage run`` calls it before loading the model: review rev32, an empty folder or a
    missing --timestamps CSV was said after seconds of loading PyTorch).

    Raises:
        InputError: as the probe of :func:`triage_study`.
    """
    read = replace(pipeline.read, folder_fps=options.folder_fps or pipeline.read.folder_fps,
                   timestamps_csv=options.timestamps_csv or pipeline.read.timestamps_csv,
                   own_timestamps=options.own_timestamps and pipeline.read.own_timestamps)
    probe(input_path, read)  # (it checks that input_path is a path)


def triage_study(input_path: str | Path, pipeline: Pipeline, classifier: Classifier, options: RunOptions = RunOptions()) -> StudyResult:
    """Triage one video or frame folder into ``options.out``.

    Raises:
        TriageError: bad input or output (nothing is left behind).
        ValueError: ``options`` not a usable :class:`RunOptions` (checked before anything is read or written).
    """
    started = time.perf_counter()
    input_path = path_argument(input_path, "input_path")
    options = check_run(pipeline, classifier, options)
    # The folder's own timestamps.csv is part of the input unless the run times the frames otherwise (QA 36 L7)
    own = options.own_timestamps and pipeline.read.own_timestamps  # (rev53: a library's pipeline may turn it off too)
    own_csv = reads_own_csv(pipeline, options)  # as a batch's WorkerContext hashes the study
    unchanged = source_state(input_path, own_csv=own_csv)  # first: a timestamps.csv added after it fails the run as a changed input
    read, own_note = with_own_timestamps(model_read_options(pipeline.read, classifier, options), input_path, use=own)
    read = replace(read, own_timestamps=False)  # resolved here: the probe and the readers need not look again (rev53)
    info = probe(input_path, read)  # fails fast, before any output exists
    params = pipeline.rank_params(classifier.config, threshold=options.threshold, top_k=options.top_k)
    staged = StagedOutput(options.out or default_out_dir(input_path), force=options.force, source=input_path, only=RUN_OUTPUTS)
    try:
        staged.check()
    except OutputError as exc:  # QA 107 #8: a folder the user never typed was named without a word of why
        beside = not options.out and exc.message.startswith(("cannot write here", "is not a folder"))  # rev97 #6: not "exists"
        raise (OutputError(exc.path, f"{exc.message} (the default output, beside the input: give --out DIR)") if beside
               else exc) from None
    stats = DecodeStats()
    where = decode_location(options, info)
    scoring_started = time.perf_counter()
    frame_index, pts, probs, view, reused = _score_stream(input_path, read, classifier, stats, info, options, where)
    stage_seconds = {"decode_and_score": time.perf_counter() - scoring_started}
    decoded = np.argsort(frame_index, kind="stable")  # rev102 #1: --decoders N parts arrive interleaved; the frame index is
    disorder = out_of_order_note(info.path, frame_index[decoded], pts[decoded]) if info.kind == "video" else None  # decode order
    order = np.argsort(pts, kind="stable")  # presentation order (broken files may decode out of order)
    frame_index, pts, probs, view, reused = frame_index[order], pts[order], probs[order], view[order], reused[order]
    probs[~view] = np.nan  # frames without a view have no score (QA 27: black, or burned-in text only)
    if info.kind == "video" and info.start_seconds is None:  # a header without it (a one-frame MKV): the first frame's time
        info = replace(info, start_seconds=float(pts[0]))
    config = classifier.config
    ranking = rank(pts, frame_index, probs, config.class_names, config.abnormal_indices, params,
                   frame_period=1.0 / info.average_fps if info.average_fps else None, has_view=view)
    input_sha = hash_unchanged(input_path, unchanged, own_csv=own_csv)
    parameters = run_parameters(input_path, info, read, params, options, own_note and ("--fps" if not own else "columns" if own_csv else "--timestamps"))
    provenance = table_provenance(config.name or config.architecture, classifier.weights_id, input_sha, parameters,
                                  classifier.describe()["backend"], config.to_dict())
    with staged as folder:
        thumbnails_started = time.perf_counter()
        thumbs = _thumbnails(folder, input_path, ranking, view=config.border == "fov", sample_bits=stats.sample_bits)
        stage_seconds["thumbnails"] = time.perf_counter() - thumbnails_started
        # A frame folder's image names by frame index (QA 34: "frame 36" only), from the state the hash has just
        # confirmed: the listing the frames came from, without listing the folder again (~0.45 s per 50,000 images)
        files = folder_names(unchanged, info.num_frames_from_header) if info.kind == "frames" else None
        write_table(folder / FRAMES_FILE, frames_table(frame_index=frame_index, pts_seconds=pts, probs=probs,
                    class_names=config.class_names, scores=ranking.scores, ranking=ranking, has_view=view, files=files, reused=reused),
                    provenance)
        write_table(folder / EVENTS_FILE, events_table(ranking.events, thumbs, files=files), provenance)
        write_table(folder / TOP_FRAMES_FILE, top_frames_table(ranking.top_frames, thumbs, files=files,
                    classes=ranking.top_classes), provenance)
        wall = time.perf_counter() - started
        stage_seconds["other"] = wall - sum(stage_seconds.values())  # probe, ranking, hashing the input, tables
        run = run_record(input_path, info, input_sha, pipeline, classifier, parameters, stats, ranking, wall, where,
                          options, stage_seconds, pts, view)
        assumed = f"{info.path}: {ASSUMED_RATE_ADVICE}" if rate_assumed(run["parameters"]["read"]) else None
        timing = fps_not_used(info.path, run["parameters"]["read"], options.folder_fps)
        shape = (info.display_width or info.width, info.height)[::-1 if {90, 270} & set(stats.turned_degrees) else 1]  # as shown
        wide = wide_frames_note(config, *shape)  # every Warning: line of the run (QA 25, 26, 48)
        small = small_frames_note(config, *stats.smallest_image) if stats.smallest_image else small_frames_note(config, *shape)
        notes = (events_unchecked(classifier.selection, asdict(params)), other_threshold_note(pipeline, classifier, params),
                 code_threshold_note(pipeline, classifier, params, options.threshold), own_note, assumed, timing,
                 wide and f"{info.path}: {wide}", small and f"{info.path}: {small}", (blank := no_view_note(info.path, view)),
                 thumbnails_note(info.path, ranking, thumbs), other_streams_note(info), unfinished_note(info), name_twins_note(info), multi_page_note(info.path, stats), image_sizes_note(info.path, stats, info.kind), ticks_without_frame_note(info.path, stats), frame_times_note(info.path, run["parameters"]["read"], pts), disorder,
                 low_bitrate_note(info, stats, config.input_size, float(view.mean()) if len(view) else 0.0),
                 *(f"{info.path}: {note}" for note in stats.colour_notes))
        run["warnings"] = [*classifier.selection.get("warnings", []), *(note for note in notes if note)]
        columns = own_note if run["parameters"]["read"].get("own_timestamps_unused") == "columns" else None  # (a batch counts them)
        run["input"]["state_sha256"] = settled_state_digest(unchanged)  # lets a batch re-run skip it without reading it
        write_json(folder / RUN_FILE, run)
        if options.report:
            write_report(folder)
    n = len(pts)
    return StudyResult(
        out_dir=staged.final, frames=n, frames_skipped=stats.frames_skipped, events=len(ranking.events),
        flagged_fraction=float((ranking.event_id >= 0).mean()) if n else 0.0,
        top_score=float(np.nanmax(ranking.scores)) if view.any() else None, wall_seconds=wall, fps=n / wall if wall > 0 else 0.0,
        model=provenance["model"], input_sha256=input_sha, run=run, summarised=[note for note in (assumed, timing, blank, columns) if note],
    )


def model_read_options(base: ReadOptions, classifier: Classifier, options: RunOptions) -> ReadOptions:
    """Decode straight to the model's input size (resize inside the decoder's swscale pass), in
    batches of the size measured fastest for the backend (else the preset's).

    With a detected field-of-view crop the frame keeps its shape at twice the input size, so the
    crop found by the preprocessor still has enough pixels.
    """
    if not isinstance(base, ReadOptions):  # QA 68 #11: the Pipeline itself gave "'Pipeline' object has no attribute ..."
        raise ValueError(f"base must be a ReadOptions (pipeline.read), got {type(base).__name__}")
    short_side, square_crop = read_geometry(classifier.config.input_size, classifier.config.border)
    return replace(
        base,
        short_side=short_side,
        square_crop=square_crop,
        batch_size=read_batch_size(base.batch_size, classifier, options.batch_size),
        folder_fps=options.folder_fps or base.folder_fps,
        timestamps_csv=options.timestamps_csv or base.timestamps_csv,
        own_timestamps=options.own_timestamps and base.own_timestamps,
    )


def read_batch_size(preset: int, classifier: Classifier, requested: int | None = None) -> int:
    """Frames per :class:`FrameBatch`: the requested size, else the preset's rounded up to a multiple
    of the classifier's measured call size (the backend splits it into runs of the measured size).

    Reading in batches larger than one run costs a few MB and saves Python round trips: on the
    shipped model (ort-int8, runs of 1 frame on 2 streams) a 5,000-frame 336 px study ran at 187
    frames/s with read batches of 2 and 206-212 with batches of 32 (RunOptions.batch_size, 2026-11-22).
    """
    if requested:
        return requested
    call = classifier.batch_size or 1
    return max(call, -(-preset // call) * call)


def _score_stream(input_path: Path, read: ReadOptions, classifier: Classifier, stats: DecodeStats, info: SourceInfo,
                  options: RunOptions, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(frame_index, pts_seconds, probs, has_view, reused: the score copied from a near-duplicate) of every frame. Every batch scored, one batch in flight: batch k+1 is read and submitted before the scores of
    batch k are waited for (on a GPU the device works on k meanwhile; on the CPU scores are ready
    when submitted, so nothing changes there)."""
    indices, times, probs, views, reused = [], [], [], [], []
    total = info.num_frames_from_header or None
    skipper = DuplicateSkipper(options.skip_duplicates) if options.skip_duplicates else None
    in_flight = None  # (frame_index, pts_seconds, scores) of the batch submitted last
    with progress_bar(total=total, unit="frame", desc=input_path.name[:40], show=options.progress, dynamic_ncols=True) as bar:
        batches = stream_frames(input_path, read, stats, where, options.queue_depth, options.decoder_processes)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except InputError:
                if in_flight is not None:
                    in_flight[2]()  # a device that failed on the batch in flight is the error to report
                raise
            views.append(has_view(batch.data))
            scores, copied = _submit(classifier, batch, skipper, views[-1])
            reused.append(copied)
            submitted = (batch.frame_index, batch.pts_seconds, scores)
            if in_flight is not None:
                _collect(*in_flight, indices, times, probs, bar)
            in_flight = submitted
        if in_flight is not None:
            _collect(*in_flight, indices, times, probs, bar)
    stats.frames_reused = skipper.skipped if skipper else 0
    if not probs:
        raise InputError(input_path, "no decodable frames")
    return np.concatenate(indices), np.concatenate(times), np.concatenate(probs), np.concatenate(views), np.concatenate(reused)


def _submit(classifier: Classifier, batch: FrameBatch, skipper: DuplicateSkipper | None,
            view: np.ndarray) -> tuple[Callable[[], np.ndarray], np.ndarray]:
    """Start scoring ``batch`` (the frames the skipper does not reuse; ``view``: which show a field of view): a function
    that waits for the whole batch's probabilities, and which frames take a near-duplicate's (QA 70 #3: frames.parquet)."""
    if skipper is None:
        pending = classifier.submit(batch)
        return (lambda: pending.result().probs), np.zeros(len(batch.data), bool)
    score, source = skipper.plan(batch.data, view)
    if not score.any():
        return (lambda: skipper.fill(np.empty((0, len(classifier.config.class_names)), np.float32), score, source)), ~score
    pending = classifier.submit(FrameBatch(batch.data[score], batch.frame_index[score], batch.pts_seconds[score]))
    return (lambda: skipper.fill(pending.result().probs, score, source)), ~score


def _collect(frame_index: np.ndarray, pts_seconds: np.ndarray, scores: Callable[[], np.ndarray], indices: list, times: list,
             probs: list, bar) -> None:
    probs.append(scores())
    indices.append(frame_index)
    times.append(pts_seconds)
    bar.update(len(frame_index))


def decode_location(options: RunOptions, info: SourceInfo) -> str:
    """Where this source is decoded: "process" or "thread" (see ``RunOptions.decode_in``)."""
    if options.decoder_processes > 1:
        return "process"
    if options.decode_in != "auto":
        return options.decode_in
    frames = info.num_frames_from_header
    return "process" if not frames or frames >= PROCESS_MIN_FRAMES else "thread"


def stream_frames(input_path: Path, read: ReadOptions, stats: DecodeStats, where: str, depth: int,
                  processes: int = 1) -> Iterator[FrameBatch]:
    """The source's batches, decoded up to ``depth`` batches ahead of the consumer in child
    processes (``where="process"``; with several, batches come out of time order) or a thread."""
    if where == "process":
        return read_frames_in_process(input_path, read, stats, depth=depth, processes=processes)
    return prefetch(read_frames(input_path, read, stats), depth=depth)


def _thumbnails(folder: Path, input_path: Path, ranking: Ranking, *, view: bool, sample_bits: int = 0) -> dict[int, str]:
    """Thumbnails of the events' peaks and the top frames; with ``view`` (border "fov") cropped to the view; a frame
    folder's 16-bit images at the depth the scoring read ended at (``sample_bits``)."""
    wanted = thumbnail_frames(ranking)
    if not wanted:
        return {}
    images = iter_frames_at(input_path, list(wanted), list(wanted.values()), sample_bits=sample_bits)
    if view:
        from .preprocess import crop_to_view  # torch: imported only for such a model (an ONNX backend runs without it)

        images = ((i, crop_to_view(rgb)) for i, rgb in images)
    return write_thumbnails(folder, images)
