"""Per-run settings of :func:`~capsule_triage.pipeline.triage_study`, checked before any work.

The library refuses what the CLI refuses, with the same messages (named by their CLI flag), so a
script that passes ``batch_size=-4`` learns it at once, not from a numpy error in the decoder or from
a run.json recording the wrong value (QA pass 13). Numbers may be numpy scalars (a threshold taken
from an evaluation's scores); they are recorded as Python numbers.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import WeightsError
from .folder_times import MIN_FPS
from .model_config import order_hint

if TYPE_CHECKING:
    from .classifier import Classifier
    from .presets import Pipeline

PROCESS_MIN_FRAMES = 1000  # "auto" decodes sources at least this long in a child process
DECODE_IN = ("auto", "process", "thread")


MAX_BATCH_SIZE = 1024  # frames per decoded batch a user or preset may ask for: at 384 px 450 MB of uint8 (QA 91 #2: bench
# tiled 100,000 frames, 15 GB); a preset's size rounded up to the backend's tuned call (streams x run size) may exceed it


def batch_size_problem(value) -> str | None:
    """What is wrong with a batch size a user or preset asks for (``--batch-size``, a preset's ``[reader] batch_size``,
    :func:`~capsule_triage.bench.bench`'s), in the words of every refusal; None for a whole number from 1 to
    :data:`MAX_BATCH_SIZE`."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and 1 <= value <= MAX_BATCH_SIZE:
        return None
    return f"must be a whole number from 1 to {MAX_BATCH_SIZE}, got {value!r}"

@dataclass
class RunOptions:
    """Per-run settings (CLI flags); None = the preset's value.

    Attributes:
        out: output folder (None = ``<input>_triage`` beside the input).
        force: replace an existing output folder.
        batch_size: frames per decoded batch handed to the classifier (None: the preset's, rounded to a
            multiple of the backend's run size); the backend scores them in runs of its measured size.
        threshold: enter threshold of the event hysteresis (None = the model's operating threshold).
        top_k: number of single top frames.
        folder_fps: frame rate of a frame folder without timestamps.
        timestamps_csv: per-image timestamps for a frame folder.
        own_timestamps: time a frame folder by its own ``timestamps.csv`` when ``timestamps_csv`` is None
            (:func:`~capsule_triage.folder_times.own_timestamps`); ``folder_fps`` then reads only folders without one.
            ``triage run --fps F`` turns it off (an option typed for one study beats a file found in it); a
            batch's ``--fps`` is for its folders without times.
        progress: show a tqdm bar.
        queue_depth: decoded batches the reader may run ahead of inference.
        skip_duplicates: reuse the previous score for near-identical frames whose thumbnail differs
            by less than this (mean abs, 0-255); None = score every frame.
        report: also write the HTML review page (report.html), inside the same atomic output.
        decoder_processes: decode one video in this many child processes, one keyframe-aligned part
            each (:mod:`capsule_triage.segments`), to feed a model faster than one core decodes (a
            GPU); 1 = one pass. Implies ``decode_in="process"``; not with ``skip_duplicates``, which
            compares each frame with the one before it.
        decode_in: where frames are decoded while the model runs: "process" (a child process with its
            own GIL, which a crashing decoder cannot take down, see :mod:`capsule_triage.reader_process`),
            "thread" (a thread of this process), or "auto": a process for sources of at least
            :data:`PROCESS_MIN_FRAMES` frames or of unknown length, else a thread (starting the
            process costs ~0.25 s, which a short clip would notice).
        command: the command line that made the run (``triage run`` gives its own), recorded in run.json.
    """

    out: Path | None = None
    force: bool = False
    batch_size: int | None = None
    threshold: float | None = None
    top_k: int | None = None
    folder_fps: float | None = None
    timestamps_csv: Path | None = None
    own_timestamps: bool = True
    progress: bool = False
    queue_depth: int = 4
    skip_duplicates: float | None = None
    report: bool = True
    decode_in: str = "auto"
    decoder_processes: int = 1
    command: str | None = None


def check_run(pipeline: "Pipeline", classifier: "Classifier", options: RunOptions) -> RunOptions:
    """Refuse options out of range or of the wrong type, and a classifier whose classes are not the
    pipeline's (its ranking settings and run.json would describe another model). ``folder_fps`` and
    ``timestamps_csv`` apply to frame folders and are ignored for a video (one RunOptions serves every
    study of a batch; ``triage run`` refuses them for a video before loading the model).

    Returns the options with numpy scalars made Python numbers.

    Raises:
        ValueError: an option out of range or of the wrong type.
        WeightsError: the classifier's classes differ from the preset's.
    """
    if not isinstance(options, RunOptions):  # QA 32: a dict gave "'dict' object has no attribute 'batch_size'"
        raise ValueError(f"options must be a RunOptions, got {type(options).__name__}")
    from .classifier import Classifier
    from .presets import Pipeline

    for name, value, kind, how in (("pipeline", pipeline, Pipeline, "load_pipeline(name)"), ("classifier", classifier, Classifier, "load_classifier(pipeline)")):
        if not isinstance(value, kind):  # QA 58 #7: arguments swapped gave "'Pipeline' object has no attribute 'config'"
            raise ValueError(f"{name} must be a {kind.__name__} ({how}), got {type(value).__name__}")
    classifier.usable()  # closed (QA 116 #6: refused when the first batch came, the decoder started and the output folder
    # made) or loaded before a fork (QA 124 #1: it hung)
    checks = [
        ("batch_size (--batch-size)", options.batch_size, options.batch_size is None or batch_size_problem(options.batch_size) is None,
         f"a whole number from 1 to {MAX_BATCH_SIZE}"),
        ("threshold (--threshold)", options.threshold, _real(options.threshold, 0.0, 1.0), "a number in [0, 1]"),
        ("top_k (--top-k)", options.top_k, _whole(options.top_k, 0), "a whole number >= 0"),
        ("folder_fps (--fps)", options.folder_fps, options.folder_fps is None or (_real(options.folder_fps, 0.0, math.inf) and MIN_FPS <= options.folder_fps < math.inf),
         f"a finite number >= {MIN_FPS:g}"),
        ("skip_duplicates (--skip-duplicates)", options.skip_duplicates, _real(options.skip_duplicates, 0.0, 255.0),
         "a mean grey-level difference in [0, 255]"),
        ("decoder_processes (--decoders)", options.decoder_processes, _whole(options.decoder_processes, 1, optional=False), "a whole number >= 1"),
        ("decode_in (--decode-in)", options.decode_in, options.decode_in in DECODE_IN, f"one of {', '.join(DECODE_IN)}"),
        ("queue_depth", options.queue_depth, _whole(options.queue_depth, 1, optional=False), "a whole number >= 1"),
        *((name, getattr(options, name), _flag(getattr(options, name)), "True or False")  # QA 68 #5: force="no" forced
          for name in ("own_timestamps", "force", "report", "progress")),
        *((name, getattr(options, name), getattr(options, name) is None or (isinstance(getattr(options, name), (str, os.PathLike))
                                                                              and os.fspath(getattr(options, name)) != ""),
           "a path (str or pathlib.Path) or None") for name in ("out", "timestamps_csv")),  # QA 116 #2: "" was taken as None
        ("the preset's [reader] batch_size", pipeline.read.batch_size, options.batch_size is not None  # (rev104 #7: unless
         or batch_size_problem(pipeline.read.batch_size) is None,  # --batch-size replaces it)
         f"a whole number from 1 to {MAX_BATCH_SIZE}"),  # QA 116 #3: set in code, 0 and -5 ran as 2, 5000 as 5000
        ("command", options.command, options.command is None or isinstance(options.command, str), "a string or None"),
    ]
    for name, value, ok, expected in checks:  # QA 116 #7: a field's name, and its flag where it has one
        if not ok:
            raise ValueError(f"{name} must be {expected}, got {value!r}")
    if options.decoder_processes > 1 and options.skip_duplicates:
        raise ValueError("skipping duplicates compares frames in time order: use one decoder process with it")
    if options.folder_fps is not None and options.timestamps_csv is not None:  # QA 124 #4: the CSV won without a word
        raise ValueError("folder_fps (--fps) and timestamps_csv (--timestamps): give one, not both (the CSV's times are the "
                         "frames' times)")
    if options.decoder_processes > 1 and options.decode_in == "thread":  # QA 19: decoded in processes without a word
        raise ValueError(f"--decoders {options.decoder_processes} decodes in {options.decoder_processes} processes: "
                         "--decode-in thread contradicts it (omit one)")
    if (classifier.loaded_for or classifier.config.class_names) != pipeline.model.class_names:  # loaded for another preset
        raise WeightsError(classifier.weights_path or classifier.config.name or "classifier",
                           f"weights classes {classifier.config.class_names} do not match the preset's {pipeline.model.class_names} "
                           f"({pipeline.name}); load the classifier for this pipeline (load_classifier(pipeline, weights=...))"
                           + order_hint(classifier.config.class_names, pipeline.model.class_names))
    return _plain(options)


def reads_own_csv(pipeline: "Pipeline", options: RunOptions) -> bool:
    """Whether a frame folder's own timestamps.csv times it (and is part of its input) under ``pipeline`` and ``options``:
    neither turns the own CSVs off and neither names another CSV. One rule for ``triage_study`` and a batch's
    :class:`~capsule_triage.batch.context.WorkerContext`, which hashes and fingerprints a study as it will be read."""
    own = options.own_timestamps and pipeline.read.own_timestamps  # (rev53: a library's pipeline may turn it off too)
    return own and (options.timestamps_csv or pipeline.read.timestamps_csv) is None


def checked_threshold(threshold) -> float | None:
    """``load_classifier``'s threshold as a float (None stays None); ValueError naming it when it is not in [0, 1]."""
    if not _real(threshold, 0.0, 1.0):
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    return None if threshold is None else float(threshold)


def checked_load_arguments(weights, device, backend, threshold) -> float | None:
    """``load_classifier``'s arguments checked before any loading (QA 78 #6: device=None was an AttributeError, weights=""
    or False loaded the preset's weights in silence); its threshold as :func:`checked_threshold` returns it."""
    if weights is not None and not (isinstance(weights, (str, os.PathLike)) and str(weights).strip()):
        raise ValueError(f"weights must be a weights folder or file, or an hf-hub: name (None: the preset's), got {weights!r}")
    for name, value in (("device", device), ("backend", backend)):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string ('auto', or a name as --{name} takes), got {type(value).__name__}")
    return checked_threshold(threshold)


def other_threshold_note(pipeline: "Pipeline", classifier: "Classifier", params) -> str | None:
    """A warning when the classifier was loaded for another ``threshold`` than the run ranks at (``params``, the run's
    RankParams; QA 58 #9: the classifier's threshold only chooses its backend, the run's comes from its RunOptions)."""
    loaded = classifier.loaded_threshold
    if loaded is None:
        return None
    meant = pipeline.rank_params(classifier.config, threshold=loaded).enter_threshold
    if math.isclose(meant, params.enter_threshold, rel_tol=1e-6, abs_tol=1e-9):
        return None
    return (f"the classifier was loaded for threshold {loaded:g} (load_classifier(..., threshold=...)) but the run ranks at "
            f"{params.enter_threshold:g}: give RunOptions(threshold={loaded:g}) to rank at {meant:g}")


def code_threshold_note(pipeline: "Pipeline", classifier: "Classifier", params, threshold: float | None) -> str | None:
    """A warning when the run ranks at an enter threshold set in code on ``pipeline.rank``, not the weights' operating one
    (rev98 #1: ``replace(pipeline, rank=RankParams(top_k=50))`` brings RankParams' own 0.5 and 0.35, taken since QA 105 #2)."""
    code = pipeline.thresholds_in_code()
    model = classifier.config.threshold
    if threshold is not None or "enter_threshold" not in code or math.isclose(params.enter_threshold, model, rel_tol=1e-6):
        return None
    where = f"not as {pipeline.source.name} sets it" if pipeline.sha256 else "a pipeline made in code"  # rev99 #7
    return (f"pipeline.rank sets enter_threshold {code['enter_threshold']:g} in code ({where}): the run ranks at it, not at the "
            f"weights' operating threshold {model:g} (a new RankParams() brings its own 0.5; replace(pipeline.rank, ...) keeps "
            "the weights'; RunOptions(threshold=T) ranks at T without this line)")


def _whole(value, low: int, *, optional: bool = True) -> bool:
    if value is None:
        return optional
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def _real(value, low: float, high: float) -> bool:
    """None, or a real number (numpy's too; not a bool or a string) in [low, high]; NaN fails."""
    if value is None:
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and low <= value <= high


def _flag(value) -> bool:
    """True or False, numpy's too (``mask.any()``; rev64)."""
    return isinstance(value, (bool, np.bool_))


def _plain(options: RunOptions) -> RunOptions:
    """``options`` with numpy scalars as Python numbers and flags (run.json is JSON)."""
    whole = {name: int(getattr(options, name)) for name in ("batch_size", "top_k", "decoder_processes", "queue_depth")
             if getattr(options, name) is not None}
    real = {name: float(getattr(options, name)) for name in ("threshold", "folder_fps", "skip_duplicates") if getattr(options, name) is not None}
    flags = {name: bool(getattr(options, name)) for name in ("own_timestamps", "force", "report", "progress")}
    return replace(options, **whole, **real, **flags)
