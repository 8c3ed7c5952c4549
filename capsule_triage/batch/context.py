"""The nouns a batch's workers share: :class:`WorkerContext` (what every worker needs, with the fingerprints and file
states a study is judged by), :class:`StudyOutcome` (what a worker reports for one study) and :class:`WorkerSetupError`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import TriageError
from ..pipeline import RunOptions
from ..run_options import reads_own_csv
from ..presets import Pipeline
from ..source_state import hashed_state, source_state
from .discovery import Study


@dataclass
class WorkerContext:
    """What every worker (in-process, pool process or Ray actor) needs; picklable.

    Attributes:
        out_dir: the batch output folder (shared by all workers).
        pipeline: the resolved preset.
        weights: weights instead of the preset's (None = the preset's).
        device: device for the model ("auto", "cpu", "cuda:N").
        backend: inference backend ("auto", "torch-fp32", "ort-int8", ...).
        run: per-study options (batch_size, threshold, top_k, folder_fps, report); out/force are set per study.
        fingerprint: this run's print of its frame folders (:func:`~.records.pipeline_fingerprints`; batch.json records it).
        video_fingerprint: its print of the studies ``--fps`` does not time, videos and frame folders timed by their own
            timestamps.csv (None: the same), which leaves the frame folders' options out.
        force: redo complete studies.
        threads: inference threads for this worker (None = the backend's default).
        settle_seconds: a study written less than this before it is read is left for a later run (``--settle``).
        run_id: this batch run's id (batch.json ``run_id``), recorded in the run.json of each study a worker installs
            (``batch.run_id``), so that an interrupted run tells the studies it installed (review rev59 #4: by the
            file's time, a run.json only given a touched input's new state was taken for one installed that night).
    """

    out_dir: Path
    pipeline: Pipeline
    weights: str | None
    device: str
    backend: str
    run: RunOptions
    fingerprint: str
    force: bool = False
    threads: int | None = None
    run_id: str = ""
    settle_seconds: float = 0.0
    video_fingerprint: str | None = None

    @property
    def own_csv(self) -> bool:
        """Whether a frame folder's own timestamps.csv times it and is part of its input in this run (one rule with
        ``triage_study``: :func:`~capsule_triage.run_options.reads_own_csv`; rev91 #1: the worker's own checks read
        ``run.own_timestamps`` alone)."""
        return reads_own_csv(self.pipeline, self.run)

    def fingerprint_of(self, study: Study) -> str:
        """The pipeline fingerprint ``study``'s results get in this run: :attr:`video_fingerprint` (which leaves ``--fps``
        out) for a study ``--fps`` does not time, a video or a frame folder timed by its own timestamps.csv (rev88 #6)."""
        fps_free = study.kind == "video" or (study.own_times and self.own_csv)
        return (self.video_fingerprint or self.fingerprint) if fps_free else self.fingerprint

    def accepts(self, study: Study) -> tuple[str, ...]:
        """The prints of ``study``'s earlier results and records that are this run's: a video's also this run's frame
        folders' print, which a video's records held before videos had their own (so the same ``--fps`` as then
        rescores none; rev86 #4)."""
        return tuple(dict.fromkeys((self.fingerprint_of(study), self.fingerprint)))

    def state_of(self, study: Study) -> tuple:
        """``study``'s file state as ``triage_study`` takes it under this run's options (a frame folder's timestamps.csv
        only when it is read: a library's batch that turned the CSVs off failed every such folder as changing)."""
        return source_state(study.path, own_csv=self.own_csv)

    def hashed(self, study: Study) -> tuple[str, tuple] | None:
        """:func:`~capsule_triage.source_state.hashed_state` of ``study`` as ``triage_study`` hashes it (see :meth:`state_of`)."""
        return hashed_state(study.path, own_csv=self.own_csv)


@dataclass
class StudyOutcome:
    """What a worker reports for one study (the summary row itself is rebuilt from disk).

    Attributes:
        study: the study.
        status: "ok" (scored), "failed", "skipped" (complete from an earlier run), "reused" (the complete outputs of
            the same input bytes under another study id copied: a study moved, renamed or copied in the archive) or
            "pending" (left for a later run: still being written, gone since it was listed, ``--settle``).
        error: "<path>: <problem>" for a failed study.
        frames: frames scored (0 when skipped or failed).
        wall_seconds: time spent on the study in this run.
        note: what else was done, for the log (e.g. the report of a skipped study was added).
        warning: a problem that changed no result (e.g. its report.html could not be added).
        run_warnings: a study scored in this run: its run's own `Warning:` lines (time gaps, wide or enlarged frames,
            several-page images; :func:`~capsule_triage.run_notes.warning_lines`), but the model's and those the batch
            counts over its studies.
        failed_on: a failed study: the SHA-256 of the input it failed on as this run hashed it (None: not hashed); its
            failure record may be an earlier failure's (one this run could not write: a full disk, rev74 #1).
        earlier: a pending study whose folder holds the complete results of an earlier version of its input: listed
            until it is scored (``--settle``).
        input_fault: the failure is the input's own (not the machine's or its output folder's); else the complete results
            its folder holds of the bytes it failed on stand and stay listed (QA 72 #4).
    """

    study: Study
    status: str
    error: str | None = None
    frames: int = 0
    wall_seconds: float = 0.0
    note: str | None = None
    warning: str | None = None
    run_warnings: tuple[str, ...] = ()
    failed_on: str | None = None
    input_fault: bool = False
    earlier: bool = False


class WorkerSetupError(TriageError):
    """The model could not be loaded, or the device failed (:class:`DeviceError`): no study can run, so
    the batch stops; the studies not done stay for the next run."""

    def __reduce__(self):  # crosses process boundaries (pool workers, Ray actors)
        return type(self), (self.path, self.message)
