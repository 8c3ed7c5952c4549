"""``triage bench``: decode-only, preprocess, model-only and end-to-end frames/s for one input.

All four are measured in one run on the same frames, so their ratios are meaningful even on a
noisy machine. Each stage is warmed up first; CUDA is synchronised before the clock is read.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .backends import inference_threads
from .classifier import Classifier
from .cpu_info import LOADED_SHARE, OtherLoad, machine
from .frames import DecodeStats
from .memory import peak_rss_mb
from .pipeline import RunOptions, model_read_options, read_batch_size, triage_study
from .run_options import batch_size_problem
from .presets import Pipeline
from .reader import read_frames
from .versions import package_versions

BENCH_SCHEMA_VERSION = 1


SIZING_MIN_FRAMES = 1000  # an input shorter than this is said to be too short to size a machine (per-study work weighs)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def _timed(fn, min_seconds: float, device: str, *, warm: bool = False) -> tuple[float, int]:
    """Run ``fn() -> frames`` repeatedly for at least ``min_seconds``; return (seconds, frames). ``warm``: the
    caller has just run it once (its warm-up)."""
    if not warm:
        fn()  # warm-up
    _sync(device)
    frames, start = 0, time.perf_counter()
    while True:
        frames += fn()
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed, frames


def bench(video: str | Path, pipeline: Pipeline, classifier: Classifier, *, batch_size: int | None = None,
          min_seconds: float = 3.0, decoder_threads: int | None = None, decode_in: str = "auto",
          decoder_processes: int = 1) -> dict:
    """Measure one input; returns a JSON-ready dict (schema: see tests/test_backends.py).

    The stages run in the order decode, end-to-end, model-only, preprocess; ``peak_rss_mb`` is
    read after end-to-end, before the reference preprocess stage (PyTorch, which the ONNX backends
    do not load) can add to it.
    """
    video = Path(video)
    classifier.usable()  # closed, or loaded before a fork: refused before seconds of decoding (rev110 #7)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load = OtherLoad()
    if batch_size is not None and (problem := batch_size_problem(batch_size)):  # before its frames are tiled to it (QA 91 #2)
        raise ValueError(f"batch_size {problem}")
    if batch_size is None and (problem := batch_size_problem(pipeline.read.batch_size)):  # rev104 #7: a preset's set in code,
        raise ValueError(f"the preset's [reader] batch_size {problem}")  # before the decode stages read batches of it
    given, batch_size = batch_size, read_batch_size(pipeline.read.batch_size, classifier, batch_size)
    read = replace(model_read_options(pipeline.read, classifier, RunOptions(batch_size=given)),  # as `triage run` reads
                   decoder_threads=decoder_threads or pipeline.read.decoder_threads)
    device = classifier.device

    def decode() -> int:
        return sum(len(b) for b in read_frames(video, read, DecodeStats()))

    frames_per_pass = decode()  # also the warm-up of the timed decode below (QA 35: it was warmed twice)
    decode_s, decode_n = _timed(decode, min_seconds, "cpu", warm=True)
    runs: list[dict] = []  # run.json of every end-to-end pass, the first being _timed's warm-up
    with tempfile.TemporaryDirectory() as tmp:
        def end_to_end() -> int:
            options = RunOptions(out=Path(tmp) / "out", force=True, batch_size=given, decode_in=decode_in,  # rev87 #1: not the
                                 decoder_processes=decoder_processes)  # rounded size, which may pass --batch-size's bound
            runs.append(triage_study(video, pipeline, classifier, options).run)
            return runs[-1]["frames_decoded"]

        e2e_s, e2e_n = _timed(end_to_end, min_seconds, device)
    last_run = runs[-1]
    scoring_s = sum(run["stage_seconds"]["decode_and_score"] for run in runs[1:])
    rss = peak_rss_mb()
    frames = next(iter(read_frames(video, read, DecodeStats()))).data
    if len(frames) < batch_size:  # an input shorter than one read batch (a single image): its frames repeated to a full
        # one, the batch a long input is scored in (QA 21: one image was timed a frame per call; QA 76 #4: not to a run of
        # the backend, which with --batch-size 3 and runs of 4 timed 4 frames a call where every run scores 3)
        frames = np.concatenate([frames] * -(-batch_size // len(frames)))[:batch_size]

    def model() -> int:
        classifier.backend.logits(frames)
        return len(frames)

    model_s, model_n = _timed(model, min_seconds, device)
    prep_s, prep_n = _time_preprocess(classifier, frames, min_seconds)  # QA 35: half the time --seconds promised
    others = load.cores()
    fps = {"decode": decode_n / decode_s, "preprocess": prep_n / prep_s, "model": model_n / model_s, "end_to_end": e2e_n / e2e_s,
           "scoring": e2e_n / scoring_s}  # end to end without the per-study work (thumbnails, tables; run.json's stage_seconds)
    per_frame = {k: 1.0 / v for k, v in fps.items()}
    backend = classifier.backend
    cost = per_frame["end_to_end"] / (per_frame["decode"] + per_frame["model"])  # < 1 where decoding overlaps the model
    # QA 57 #1: each stage is timed in its own window, so a machine whose load changes during the run can give impossible
    # figures (end to end at 2.8x the model alone, which scores every frame of it): said, not printed as a measurement
    warnings = [f"end to end measured {fps['end_to_end'] / fps['model']:.1f}x faster than the model alone, which scores every "
                "frame of it: the machine's load changed between the stages' timings; measure again on an idle machine, or "
                "with more --seconds"] if fps["end_to_end"] > 1.15 * fps["model"] else []
    if frames_per_pass < SIZING_MIN_FRAMES:  # QA 84 #2: one frame was benchmarked as any study, without a word
        warnings.append(f"{frames_per_pass:,} frame{'s' if frames_per_pass != 1 else ''} a pass: the work done once per study "
                        "(opening it, thumbnails, tables) weighs on end to end as it does not on a study of thousands of frames; "
                        f"give a VIDEO of {SIZING_MIN_FRAMES:,} frames or more to size a machine")
    if others is not None and others > LOADED_SHARE * load.cpus:
        warnings.append(f"other processes (or the virtual machine's host) used {others:.2f} of the {load.cpus} CPUs bench ran on "
                        "while it measured (/proc/stat): every stage shared them, so these figures are likely low; measure again "
                        "on an idle machine")
    return {
        "schema_version": BENCH_SCHEMA_VERSION,
        "input": str(Path(video).absolute()),
        # QA 84 #6: JSON files of two machines could not be compared (decode speed follows the resolution and codec)
        "source": {k: last_run["source"].get(k) for k in ("kind", "codec", "width", "height", "average_fps")},
        "measured_at": started_at, "min_seconds": min_seconds,
        "frames_per_pass": frames_per_pass,
        "fps": {k: round(v, 2) for k, v in fps.items()},
        # what each rate was computed from (QA 91 #9: a rate alone could not be weighed): frames over seconds of its window
        "timed": {k: {"frames": n, "seconds": round(s, 4)} for k, (n, s) in
                  {"decode": (decode_n, decode_s), "preprocess": (prep_n, prep_s), "model": (model_n, model_s),
                   "end_to_end": (e2e_n, e2e_s), "scoring": (e2e_n, scoring_s)}.items()},
        "cost_ratio": round(cost, 3),
        "warnings": warnings,
        "other_processes_cpus": None if others is None else round(others, 2),  # CPUs' worth others used of ours (None: not known)
        "decode_share": round(per_frame["decode"] / per_frame["end_to_end"], 3),
        "device": device,
        "backend": backend.name,
        "precision": classifier.precision,
        "backend_selection": classifier.selection,  # why this backend, its agreement check, its warnings (QA 30: on stderr only)
        "batch_size": batch_size,  # frames per FrameBatch read
        "run_batch_size": getattr(backend, "run_size", getattr(backend, "batch_size", None)) or batch_size,  # frames per backend run
        "model_frames_per_call": len(frames),  # model-only: one read batch, or a short input's frames repeated to a run
        "threads": {"inference": inference_threads(backend), "streams": getattr(backend, "streams", 1),
                    "decoder": read.decoder_threads},
        "model": classifier.config.name or classifier.config.architecture,
        "pipeline": last_run["pipeline"],  # QA 113: which preset's reading and events (two differing in [rank] alone were alike)
        "weights_sha256": classifier.weights_id,  # which weights were measured (QA 13: figures of two machines could not be matched)
        "machine": machine(),
        "input_size": classifier.config.input_size,
        "versions": package_versions(),
        "decoded_in": last_run["decoded_in"],  # end to end: in a child process or a thread (see RunOptions.decode_in)
        "decoder_processes": last_run["decoder_processes"],
        "peak_rss_mb": round(rss, 1),
        # the decoder processes' own; null when decoding in a thread (QA 42: 0.0 read as a measured zero)
        "decoder_peak_rss_mb": last_run["decoder_peak_rss_mb"] if last_run["decoded_in"] == "process" else None,
        "stage_seconds": last_run["stage_seconds"],  # of the last end-to-end pass
    }


def _time_preprocess(classifier: Classifier, frames, min_seconds: float) -> tuple[float, int]:
    """The preprocessing alone (PyTorch, as folded into every backend's graph), for reference."""
    import torch

    from .preprocess import Preprocessor

    device = torch.device(classifier.device)
    preprocess = Preprocessor(classifier.config).to(device)

    def prep() -> int:
        with torch.inference_mode():
            preprocess(torch.from_numpy(frames).to(device).permute(0, 3, 1, 2))
        return len(frames)

    return _timed(prep, min_seconds, classifier.device)
