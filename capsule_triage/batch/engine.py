"""Running a batch: :func:`run_batch` (arguments, lock, engine, summary).

The studies run on :class:`~.local_engine.LocalEngine` (in-process or a process pool) or, with
``--engine ray``, :class:`~.ray_engine.RayEngine`, imported only then (``ray`` is optional).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from ..interrupts import InterruptedAfterWriting, deferring_interrupts
from ..errors import OutputError, TriageError, path_exists, unexpanded_note
from ..model_config import folder_config
from ..outputs import check_expanded
from ..pipeline import RunOptions, resolve_weights
from ..presets import DEFAULT_PIPELINE, Pipeline, load_pipeline
from ..report_batch import INDEX_FILE, settle_unwritten_index
from ..weights import check_weights_file
from .discovery import Study, exclude_patterns, find_studies, found_lines, found_record
from .layout import BATCH_FILE, FAILED_DIR, LOG_FILE, WORK_DIR, broken_link, now_utc, own_folder, remove_if_empty, study_folders
from .local_engine import LocalEngine
from .lock import acquire_lock, release_lock
from .run_lines import run_lines
from .summary import (Progress, file_logger, orphan_folders, other_input, prune_failure_records, stale_folders, summary_row, write_index,
                      write_summary)
from .records import made_otherwise, pipeline_fingerprints
from .unreached import unreached_row
from .context import WorkerContext, WorkerSetupError

ENGINES = ("local", "ray")
STATUSES = ("ok", "failed", "skipped", "reused", "pending")  # pending = not reached (interrupted run)


@dataclass
class BatchOptions:
    """Settings of one batch run (CLI flags).

    Attributes:
        pipeline: preset name or TOML path.
        weights: weights instead of the preset's.
        device: "auto", "cpu", "cuda" or "cuda:N".
        backend: "auto" or a backend name (see :mod:`capsule_triage.backends`).
        engine: "local" or "ray".
        workers: local worker processes / Ray actors (None = one per GPU, else 1).
        ray_address: address of an existing Ray cluster (None = start a local one).
        force: redo studies that are already complete.
        exclude: paths or patterns relative to the input folder (``fnmatch``) of videos and folders that are no
            studies of this batch (:func:`~capsule_triage.batch.discovery.excluded`): e.g. an export known to be
            broken, which would fail (exit 1) every night until fixed. Not part of the pipeline's settings.
        settle_seconds: a study any of whose files was written less than this many seconds before the batch reads it
            is pending, left for a later run (``--settle``: a copy into the archive that stalled between images, or at a
            transport stream's packet boundary, reads cleanly; 0: only a study that fails while it changes is held).
        progress: show a tqdm bar over studies.
        run: per-study options (batch_size, threshold, top_k, folder_fps; report=False: no review pages).
    """

    pipeline: str = DEFAULT_PIPELINE
    weights: str | None = None
    device: str = "auto"
    backend: str = "auto"
    engine: str = "local"
    workers: int | None = None
    ray_address: str | None = None
    force: bool = False
    exclude: tuple[str, ...] = ()
    settle_seconds: float = 0.0
    progress: bool = False
    run: RunOptions = field(default_factory=RunOptions)


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM in a batch, raised once its summary is written (or failed to be: ``result.summary_error``);
    ``result``: what the run reports, its failures ("<path>: <problem>" per study that failed before it; QA 43: the CLI
    printed none; rev39: not read back from a studies.parquet that another run, or a file system's own clock, could have
    written) and warnings with it (review rev57 #3: they, and a summary that could not be written, were lost).
    ``finished``: it came after every study was reached, while the summary was written or the engine shut down (review
    rev58 #5, rev59 #1: the CLI said "Interrupted ... Re-run" and exited 130 for a complete night whose batch.json says
    ``interrupted: false``)."""

    def __init__(self, result: BatchResult | None, *, finished: bool = False):
        super().__init__()
        self.result = result
        self.finished = finished

    @property
    def failures(self) -> list[str]:
        return self.result.failures if self.result is not None else []


@dataclass
class BatchResult:
    """What a finished batch run reports.

    Attributes:
        out_dir: the output folder.
        rows: the studies.parquet rows.
        counts: studies per status.
        frames: frames scored in this run.
        wall_seconds: duration of this run.
        failures: one "<path>: <problem>" line per failed study.
        index: index.html, when it was written (reports on, and no problem writing it).
        warnings: problems that changed no result (e.g. index.html could not be written).
        summary_error: studies.parquet/batch.json could not be written ("<path>: <problem>"), else None.
    """

    out_dir: Path
    rows: list[dict]
    counts: dict[str, int]
    frames: int
    wall_seconds: float
    failures: list[str]
    index: Path | None = None
    warnings: list[str] = field(default_factory=list)
    summary_error: str | None = None


def run_batch(input_dir: str | Path, out_dir: str | Path, options: BatchOptions = BatchOptions()) -> BatchResult:
    """Triage every study under ``input_dir`` into ``out_dir`` (see :mod:`capsule_triage.batch`).

    Raises:
        TriageError: bad input folder, preset, weights or engine; the output folder is locked.
    """
    started, started_at = time.perf_counter(), now_utc()
    check_expanded(out_dir)  # as typed: a quoted '~/out' would be a folder named '~' here
    given_input, input_dir, out_dir = input_dir, Path(input_dir).absolute(), Path(out_dir).absolute()
    try:
        if not path_exists(input_dir, TriageError):
            raise TriageError(input_dir, "input folder not found" + unexpanded_note(given_input))
        pipeline, options, weights_note = _check_arguments(input_dir, out_dir, options)
    except TriageError as exc:  # QA 79 #1: a night refused here (a share not mounted, weights gone) left the log and the
        if _is_file(out_dir / LOG_FILE):  # page of an earlier night as the last word: its line goes where the morning reads
            file_logger(out_dir / LOG_FILE)(f"refused: {exc}", lost_said=False)
        raise
    created_out_dir = not out_dir.exists()
    try:
        out_dir.mkdir(exist_ok=True)
    except FileNotFoundError:  # QA 72 #5: a share not mounted rescored the archive onto the local disk (only ENOENT: rev70 #7)
        raise OutputError(out_dir, f"its parent folder {out_dir.parent} does not exist (a share not mounted?); the batch makes only "
                                   "the last folder of OUT_DIR: create the others first") from None
    except OSError as exc:  # a parent that is a file, or that this user cannot search: said as it is
        if out_dir.is_symlink():  # rev71 #6: a link to a share not mounted was "File exists"
            raise OutputError(out_dir, broken_link(out_dir)) from None
        raise OutputError(out_dir, f"cannot create the output folder ({exc.strerror or exc})") from None
    log, recovered, done = file_logger(out_dir / LOG_FILE), [], None
    try:
        lock = acquire_lock(out_dir, log, recovered)
    except OutputError as exc:  # QA 47: an overlapping night left no trace in the log the morning reader reads
        log(f"refused: {exc.message}", lost_said=False)
        if created_out_dir:  # QA 114 #4: a full disk left the folder this run made, an empty batch.log in it (rev104 #2: only so: a run
            remove_if_empty(out_dir)  # that made it and lost the lock to another leaves the other's files)
        raise
    try:
        shutil.rmtree(out_dir / WORK_DIR, ignore_errors=True)  # staging of killed runs (we hold the lock)
        notes = [weights_note] if weights_note else []  # a cached copy of hub weights stands in for a Hub that could not be asked
        notes += recovered  # QA 79 #2: a killed night was said in batch.log only
        for name in (WORK_DIR, FAILED_DIR):
            try:
                notes += [replaced] if (replaced := own_folder(out_dir / name)) else []
            except OSError as exc:
                raise OutputError(out_dir / name, f"cannot create it ({exc.strerror or exc})") from None
        for note in notes:
            log(f"warning {note}")
        # review rev59 #3: the run's own notes (hub weights from a cache, a link replaced) were lost when interrupted;
        # rev78 #1: they were not in batch.json's warnings
        done = _run_locked(input_dir, out_dir, pipeline, options, log, started=started, started_at=started_at, notes=notes)
        return done
    except TriageError as exc:  # rev79 #1: a night refused after its lock was taken (no studies, a model that cannot load)
        if isinstance(exc, WorkerSetupError):  # lost its notes, a killed night recovered among them: said beside the error
            log(f"aborted: {exc}")
        exc.warnings = notes
        raise
    finally:  # QA 114 #2: an interrupt here left the lock (the next night warned of a crash) and made a finished night 130
        try:
            with deferring_interrupts():
                _clean_up(out_dir, lock)
        except KeyboardInterrupt:  # held until the cleanup ended, or (rev103 #6) come before it was held: done again
            _clean_up(out_dir, lock)
            if done is not None:  # else the exception in flight goes on
                raise BatchInterrupted(done, finished=True) from None


def _clean_up(out_dir: Path, lock: Path) -> None:
    shutil.rmtree(out_dir / WORK_DIR, ignore_errors=True)
    release_lock(lock)


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False where it cannot be told (Python 3.11 raises PermissionError for a path through a folder
    this user cannot search: the refusal it was to log became that error, CI195)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _run_locked(input_dir: Path, out_dir: Path, pipeline: Pipeline, options: BatchOptions, log: Callable[..., None], *,
                started: float, started_at: str, notes: list[str] = ()) -> BatchResult:
    found = find_studies(input_dir, skip_dirs=(out_dir,), patterns=options.exclude)
    studies = found.studies
    if not studies and not found.left_out and (earlier := study_folders(out_dir)):  # QA 62 #4: an unmounted share emptied the summary and the index
        problem = (f"no studies found, yet {out_dir} holds the results of {len(earlier)} stud{'ies' if len(earlier) != 1 else 'y'} "
                   "of earlier runs: is the share mounted? Nothing was changed; if the studies were removed on purpose, move "
                   "their folders out of the output folder")
        log(f"refused: {input_dir}: {problem}", lost_said=False)
        raise TriageError(input_dir, problem)
    if other := other_input(out_dir, input_dir):
        problem = (f"holds the results of another input folder, {other} (its batch.json): give each input folder its own "
                   f"output folder. Nothing was changed; if the studies of {other} were moved to {input_dir}, move "
                   f"{out_dir / BATCH_FILE} aside first")
        log(f"refused: {out_dir}: {problem}", lost_said=False)
        raise OutputError(out_dir, problem)
    engine, result = _make_engine(options), None
    for note in getattr(engine, "notes", ()):  # GPUs left out (rev90 #1)
        log(f"warning {note}")
    notes = [*notes, *getattr(engine, "notes", ())]
    try:
        prints = pipeline_fingerprints(pipeline, weights=options.weights, backend=options.backend, device_type=engine.device_type,
                                       run=options.run)
        fingerprint, video_fingerprint = prints["frames"], prints["video"]
        ctx = WorkerContext(out_dir=out_dir, pipeline=pipeline, weights=options.weights, device=options.device,
                            backend=options.backend, run=options.run, fingerprint=fingerprint, force=options.force,
                            run_id=uuid.uuid4().hex, settle_seconds=options.settle_seconds, video_fingerprint=video_fingerprint)
        log(f"start {len(studies)} studies from {input_dir} engine={options.engine} workers={engine.workers} "
            f"pipeline={pipeline.name} fingerprint={fingerprint[:12]}")
        run = options.run  # QA 45: the options were in the fingerprint only (README: batch.json holds the run's settings)
        settings = {"backend": options.backend, "device": options.device, "force": options.force, "report": run.report,
                    "settle_seconds": options.settle_seconds,
                    **{k: getattr(run, k) for k in ("threshold", "top_k", "folder_fps", "batch_size", "skip_duplicates")}}
        info = {"run_id": ctx.run_id, "input_dir": str(input_dir), "out_dir": str(out_dir), "started": started_at, "engine": options.engine,
                "workers": engine.workers, "device": engine.device_type, "settings": settings,
                **found_record(found, options.exclude)}
        for line in found_lines(found):
            log(line)
        progress, made, reached = Progress(len(studies), log, show=options.progress, started=started), [], False
        try:
            try:
                made = [] if options.force else made_otherwise(out_dir, {s.study_id: ctx.accepts(s) for s in studies})  # before they are redone
                engine.run(studies, ctx, progress)
                reached = True
            except WorkerSetupError as exc:  # QA 94 #4: a device that failed after studies were installed left them unlisted (no
                if progress.outcomes:  # studies.parquet, batch.json or index.html): listed, the rest pending (the run stopped),
                    try:  # then the error, with what the night said before it (rev89 #1: its failures and warnings were lost)
                        exc.result = _summarised(studies, progress, ctx, info=info, interrupted=True, made=made, notes=notes)
                    except Exception as summary_exc:  # noqa: BLE001 - the device's error is the one to say
                        log(f"warning summary not written after the device failed: {summary_exc}")
                raise
            finally:
                progress.bar.close()
            result = _summarised(studies, progress, ctx, info=info, interrupted=False, made=made, notes=notes)  # before Ray's slow shutdown
        except KeyboardInterrupt as exc:  # QA 114 #1: one after the last study, before the summary began, left none
            if isinstance(exc, BatchInterrupted):
                raise
            reached = reached or all(s.study_id in progress.outcomes for s in studies)  # rev103 #1: in the pool's shutdown
            done = _summarised(studies, progress, ctx, info=info, interrupted=not reached, made=made, notes=notes)
            raise BatchInterrupted(done, finished=reached) from None
    finally:
        try:
            engine.close()
        except KeyboardInterrupt:  # review rev57 #6: a Ctrl-C in ray.shutdown() came before the summary was written
            if result is not None:
                raise BatchInterrupted(result, finished=True) from None  # else the exception in flight goes on
    return result


def _summarised(studies: list[Study], progress: Progress, ctx: WorkerContext, *, info: dict, interrupted: bool,
                made: list[str], notes: list[str] = ()) -> BatchResult:
    """:func:`_finish` with Ctrl-C, SIGTERM and hangup held until the summary is written (QA 62 #3: a second Ctrl-C or a
    SIGTERM then cut it, leaving the night's new study unlisted, while the console said it was written); one that came
    meanwhile stops the run after it, with the failures said (review rev56: they were lost with the result)."""
    done = None
    try:
        with deferring_interrupts():
            done = _finish(studies, progress, ctx, info=info, interrupted=interrupted, made=made, notes=notes)
    except InterruptedAfterWriting:  # review rev59 #1: after every study was reached, the night is complete all the same
        raise BatchInterrupted(done, finished=not interrupted) from None
    return done


def _check_arguments(input_dir: Path, out_dir: Path, options: BatchOptions) -> tuple[Pipeline, BatchOptions, str | None]:
    """Validate everything before anything is written; returns the preset, the options with local
    weights, and a note on how hub weights were found (None when there is nothing to say)."""
    if options.engine not in ENGINES:
        raise TriageError("--engine", f"unknown engine {options.engine!r}; use one of {list(ENGINES)}")
    if options.ray_address and options.engine != "ray":
        raise TriageError("--ray-address", "only used with --engine ray")
    if options.engine == "ray":
        from .ray_engine import check_ray_address, require_ray

        require_ray()
        check_ray_address(options.ray_address)  # before the lock is taken: a wrong address is one line
        if options.device.lower() not in ("auto", "cpu", "cuda"):  # rev90 #2: cuda:1 ran on every GPU, "gpu" as "cuda"
            raise TriageError("--device", f"{options.device} with --engine ray: use auto, cpu or cuda (Ray gives each actor a GPU "
                                          "of its own; to use only some, start the Ray nodes with CUDA_VISIBLE_DEVICES set)")
    if options.run.timestamps_csv is not None:  # rev89 #2: one CSV for every study failed each folder with a CSV of its own
        raise TriageError("timestamps_csv", "times one study (`triage run --timestamps`); a batch's frame folders are timed by "
                                            "their own timestamps.csv: leave it None")
    if not isinstance(options.settle_seconds, (int, float)) or not 0 <= options.settle_seconds < float("inf"):
        raise TriageError("--settle", f"must be a number of seconds, 0 or more, got {options.settle_seconds!r}")
    if not input_dir.is_dir():
        raise TriageError(input_dir, "not a folder (use `triage run` for a single video)")
    if os.path.realpath(input_dir) == os.path.realpath(out_dir):
        raise OutputError(out_dir, "the output folder must not be the input folder")
    if path_exists(out_dir, OutputError) and not out_dir.is_dir():
        raise OutputError(out_dir, "output path exists and is not a folder")
    options = replace(options, exclude=exclude_patterns(options.exclude, input_dir))
    pipeline = load_pipeline(options.pipeline)
    weights, note = resolve_weights(pipeline, options.weights)  # an hf-hub: repository fetched once, here
    if Path(weights).is_dir():  # its classes against the preset's before OUT_DIR exists (QA 44: a batch.log was left behind)
        folder_config(Path(weights), pipeline.model)
    elif Path(weights).is_file() and Path(weights).suffix != ".npz":  # a bare file, from its tensors' shapes (rev39)
        check_weights_file(Path(weights), pipeline.model)
    return pipeline, replace(options, weights=weights), note


def _outcome_row(study: Study, outcome, out_dir: Path) -> dict:
    """The studies.parquet row of a study a worker reported on: a pending one (``--settle``) with its earlier results
    when their run.json holds what a row reads (rev85 #4: a short one failed the night's summary)."""
    row = partial(summary_row, study, outcome.status, out_dir, outcome.error, failed_on=outcome.failed_on, input_fault=outcome.input_fault)
    try:
        return row(earlier=outcome.earlier)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return row()


def _finish(studies: list[Study], progress: Progress, ctx: WorkerContext, *, info: dict, interrupted: bool,
            made: list[str] = (), notes: list[str] = ()) -> BatchResult:
    """Rebuild studies.parquet + batch.json from the per-study results on disk, then index.html
    (unless reports are off; a problem with it is only a warning), log the totals."""
    outcomes = progress.outcomes
    since = time.time() - (time.perf_counter() - progress.started)  # this run's start, on the files' clock
    rows = [_outcome_row(s, outcomes[s.study_id], ctx.out_dir) if s.study_id in outcomes else unreached_row(ctx, s, since)
            for s in studies]
    counts = {status: sum(r["status"] == status for r in rows) for status in STATUSES}
    scored = {r["study_id"] for r in rows if r["status"] == "ok"}  # rev38: a failure not decoded again, one not reached: not redone
    info = {**info, **({"made_otherwise": redone} if (redone := [m for m in made if m in scored]) else {})}
    wall = time.perf_counter() - progress.started
    batch = {
        "schema_version": "1", **info, "finished": now_utc(), "wall_seconds": round(wall, 3), "interrupted": interrupted,
        "pipeline": {"name": ctx.pipeline.name, "source": os.path.abspath(ctx.pipeline.source)},
        "weights": os.path.abspath(ctx.weights), "pipeline_fingerprint": ctx.fingerprint,
        "video_pipeline_fingerprint": ctx.video_fingerprint,
        "studies": len(studies), "counts": counts, "frames_scored": progress.frames,
        "fps": round(progress.frames / wall, 2) if wall > 0 else 0.0, "host": socket.gethostname(),
        "orphan_folders": orphan_folders(ctx.out_dir, studies, tuple(info.get("exclude", ()))),
        "stale_folders": stale_folders(ctx.out_dir, studies, rows),
    }
    warnings = [*notes, *dict.fromkeys(line for o in outcomes.values() for line in (o.warning, *o.run_warnings) if line)]  # each once
    said = run_lines(ctx.out_dir, rows, batch, ctx.run.folder_fps)  # the run's own lines, in batch.log too (QA 47)
    failed_ids = [r["study_id"] for r in rows if r["status"] == "failed"]  # QA 47: on the line a morning reader reads, too
    batch |= {"failed": failed_ids, "warnings": [*warnings, *said]}  # QA 79 #11: a monitor read counts, not which or why
    if pruned := prune_failure_records(ctx.out_dir, studies, Path(info["input_dir"]), tuple(info.get("exclude", ()))):
        progress.log(f"removed {pruned} failure record{'s' if pruned != 1 else ''} of inputs no longer found")
    try:
        write_summary(ctx.out_dir, rows, batch)
        summary_error = None
    except OutputError as exc:  # a full disk: the studies' own results stand; said after their lines
        summary_error = str(exc)
        progress.log(f"error {summary_error}")
    # --no-report writes no pages, but an index.html of earlier runs is rebuilt (QA 37: removed, the studies' pages kept
    # dead links to it); it links only the studies that have pages
    wanted = ctx.run.report or (ctx.out_dir / INDEX_FILE).is_file()
    index, warning = write_index(ctx.out_dir, progress.log, rows, batch) if wanted else (None, None)
    if index is None and warning:  # not rewritten: the earlier page kept if it lists the same results, else removed
        settled = settle_unwritten_index(ctx.out_dir, rows)
        warning += settled
        if settled:  # kept or removed, in batch.log too (rev73 #3: only a kept page was)
            progress.log(settled.removeprefix("; "))
    failures = [r["error"] or f"{r['input_path']}: failed" for r in rows if r["status"] == "failed"]
    warnings += [warning] if warning else []
    for line in said:
        progress.log(f"warning {line}")
    warnings += said
    progress.log(f"{'interrupted' if interrupted else 'done'} " + " ".join(f"{k}={v}" for k, v in counts.items())
                 + f" frames={progress.frames} wall={wall:.1f}s"
                 + (f"; failed: {', '.join(failed_ids[:10])}{f' and {len(failed_ids) - 10} more' if len(failed_ids) > 10 else ''}"
                    if failed_ids else ""))
    return BatchResult(out_dir=ctx.out_dir, rows=rows, counts=counts, frames=progress.frames, wall_seconds=wall, failures=failures,
                       index=index, warnings=warnings, summary_error=summary_error)


def _make_engine(options: BatchOptions):
    if options.engine == "ray":
        from .ray_engine import RayEngine

        return RayEngine(options)
    return LocalEngine(options)
