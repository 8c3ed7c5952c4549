"""``triage optimize``: make faster backends for a weights folder and prove they agree with fp32.

For each candidate backend (torch bf16 where the CPU has native bf16, ONNX Runtime fp32 and static int8 calibrated on real frames,
the same two ONNX files on OpenVINO in fp32, bf16 and int8; torch fp16 on a GPU when one is usable) this scores the same real clips as torch fp32 and records the largest score
difference, whether the ranked events (start/end frames) are identical, and the measured
frames/s at the chosen batch size. A candidate is *accepted* only if its max score difference is
within ``tolerance`` and its events are identical, and a lower precision only on a check with enough
frames the model is unsure about (:func:`verdict`); ``--backend auto`` then picks the fastest
accepted one. The report goes to ``backends.json`` beside the weights.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from .backend_choice import graph_sha256
from .backends import engine_error, onnx_backend, onnx_file, openvino_native_bf16, quantize_int8, runs_here
from .classifier import BACKENDS_FILE, softmax
from .cpu_info import machine as cpu_machine
from .cpu_info import LOADED_SHARE, OtherLoad, bf16_emulated
from .device import cuda_unsupported, gpu_name, resolve_device
from .digests import file_sha256, weights_digests, weights_sha256
from .errors import OutputError, WeightsError
from .outputs import check_creatable
from .model_config import WEIGHTS_NAME, folder_config, read_geometry
from .frame_folder import plural
from .frames import DecodeStats
from .preprocess import Preprocessor
from .presets import DEFAULT_PIPELINE, Pipeline, load_pipeline
from .ranking import abnormal_score, rank
from .reader import ReadOptions, letterboxed, read_frames
from .report_svg import fmt_duration
from .torch_backend import TorchBackend, export_onnx
from .weights import load_model

DEFAULT_TOLERANCE = 0.05  # max |score - fp32 score| over all check frames
CALIBRATION_FRAMES = 128  # int8 calibration frames taken from the start of each calibration clip or folder


def decode_all(path: Path, size: int, limit: int | None = None, *, fov: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All frames of a clip at the model's input size (small clips only); for a model that detects
    the field of view (``fov``), at twice that size with their shape kept, as ``triage run`` reads them."""
    data, index, pts = [], [], []
    short_side, square_crop = read_geometry(size, "fov" if fov else "circle")
    for batch in read_frames(path, ReadOptions(batch_size=64, short_side=short_side, square_crop=square_crop, own_timestamps=False), DecodeStats()):
        data.append(batch.data)
        index.append(batch.frame_index)
        pts.append(batch.pts_seconds)
        if limit and sum(len(d) for d in data) >= limit:
            break
    if fov:  # stills of several sizes: every batch keeps its first frame's shape; the first batch's for all (review)
        height, width = data[0].shape[1:3]
        data = [np.stack([letterboxed(frame, width, height) for frame in batch]) for batch in data]
    return np.concatenate(data)[:limit], np.concatenate(index)[:limit], np.concatenate(pts)[:limit]


def _views(frames: np.ndarray, config) -> np.ndarray:
    """Frames as an ONNX graph takes them: for a model that detects the field of view, cropped to their
    views on the host (int8 calibration sees what the graph will); others as read."""
    return Preprocessor(config).views_nhwc(frames) if config.border == "fov" else frames


def _scores(backend, frames: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([softmax(backend.logits(frames[i : i + batch_size])) for i in range(0, len(frames), batch_size)])


def measure_fps(backend, frames: np.ndarray, batch_size: int, *, min_seconds: float = 0.6, windows: int = 2) -> float:
    """Model-only frames/s of ``backend.logits`` on calls of ``batch_size`` frames: one warm-up call,
    then ``windows`` windows of as many calls as fit in ``min_seconds / windows`` (at least 2 each); the
    fastest window counts, since other work on the machine only slows a window down (QA 30: one window
    per setting, on a machine busy for a moment, measured 8 frames/s where the setting runs 114-152)."""
    batch = np.ascontiguousarray(frames[:batch_size])
    if len(batch) < batch_size:
        batch = np.resize(batch, (batch_size, *batch.shape[1:]))
    backend.logits(batch)
    best = 0.0
    for _ in range(windows):
        calls, start = 0, time.perf_counter()
        while calls < 2 or time.perf_counter() - start < min_seconds / windows:
            backend.logits(batch)
            calls += 1
        best = max(best, calls * batch_size / (time.perf_counter() - start))
    return best


TUNE_BATCH_SIZES = (1, 2, 4, 8, 16, 32)
TUNE_SECONDS = 0.6  # timed per run size and layout


MAX_TUNE_BATCH = 256  # a run of more frames holds GBs of input at 384 px and compiles OpenVINO for that batch (review rev31)


def parse_sizes(text: str) -> tuple[int, ...]:
    """``--tune-batch-sizes`` ("1,4,16") as ascending distinct sizes; ValueError naming the option otherwise."""
    try:
        sizes = sorted({int(part) for part in text.split(",")})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] < 1 or sizes[-1] > MAX_TUNE_BATCH:
        raise ValueError(f"--tune-batch-sizes: give whole numbers from 1 to {MAX_TUNE_BATCH} separated by commas (e.g. 1,4,16), "
                         f"got {text!r}")
    return tuple(sizes)


def tune(make, frames: np.ndarray, threads: int, *, onnx: bool, batch_sizes=TUNE_BATCH_SIZES, min_seconds: float = TUNE_SECONDS) -> dict:
    """Measure frames/s over batch sizes (and, for ONNX Runtime, one run using every thread vs
    ``threads`` concurrent 1-thread runs); return the fastest setting and every measurement.

    ``make(threads=, streams=, batch_size=)`` builds the backend; each call scores
    ``batch_size x streams`` frames, ``batch_size`` per run.
    """
    layouts = [(threads, 1)] + ([(1, threads)] if onnx and threads > 1 else [])
    measured = []
    for run_threads, streams in layouts:
        for size in batch_sizes:
            backend = make(threads=run_threads, streams=streams, batch_size=size)
            try:
                fps = measure_fps(backend, frames, size * streams, min_seconds=min_seconds)
            finally:  # its threads and sessions, also when it fails (QA 94 #7)
                getattr(backend, "close", lambda: None)()
            measured.append({"batch_size": size, "threads": run_threads, "streams": streams, "frames_per_second": round(fps, 1)})
    best = max(measured, key=lambda m: m["frames_per_second"])
    return {"tuning": {k: best[k] for k in ("batch_size", "threads", "streams")}, "frames_per_second": best["frames_per_second"],
            "measured": measured}


def _time_each(check_seconds: float, check_frames: int, sizes, threads: int) -> float:
    """About how long a candidate as fast as fp32 takes: the check's frames, then :func:`tune` per run size (and, on ONNX
    engines with several threads, per layout): a warm-up call and two windows of >= 2 calls or TUNE_SECONDS / 2 each.
    Exporting, compiling and calibrating are not counted (rev64: a big model's 1-32 took minutes each); a faster backend
    takes less (QA 102 #6: "at least 1 min 20 s each" where ONNX backends took ~40 s)."""
    per_frame = check_seconds / max(check_frames, 1)
    timing = sum(size * per_frame + max(TUNE_SECONDS, 4 * size * per_frame) for size in sizes)
    return check_seconds + timing * (2 if threads > 1 else 1)


UNCERTAIN = (0.1, 0.9)  # fp32 scores in this range: where a small logit change moves the score (and the flag) most


def uncertain_frames(reference: list[np.ndarray], abnormal_indices) -> int:
    """How many check frames fp32 scores in :data:`UNCERTAIN`: the frames that make the check demanding.

    Clips the model is sure about prove little: on the shipped Lite0 model (2026-11-30) every lower
    precision stayed within 0.044 of fp32 on the two shared WCE clips (2 of 188 frames uncertain)
    but moved scores by 0.17-0.22 on the 374 wcebleedgen/test frames (10 uncertain).
    """
    scores = np.concatenate([abnormal_score(probs, abnormal_indices) for probs in reference])
    return int(((scores > UNCERTAIN[0]) & (scores < UNCERTAIN[1])).sum())


MIN_UNCERTAIN = 10  # fewer uncertain check frames than this: the check proves nothing about a lower precision


def _timed_under_load(timing: Callable[[], dict]) -> dict:
    """``timing()``'s row with ``other_processes_cpus``: the CPUs' worth other processes used while it ran (None: not known;
    :class:`~capsule_triage.cpu_info.OtherLoad`)."""
    load = OtherLoad()
    row = timing()
    others = load.cores()
    return {**row, "other_processes_cpus": None if others is None else round(others, 2)}


def load_warning(report: dict) -> str | None:
    """A warning when other processes used more than :data:`~capsule_triage.cpu_info.LOADED_SHARE` of the CPUs while
    candidates were timed (QA 91 #4: a loaded run timed ov-fp32 at a third of its speed, and ``--backend auto`` ranks
    by these figures until the next optimize)."""
    cpus = report.get("machine", {}).get("cpus") or 1
    loaded = {name: row["other_processes_cpus"] for name, row in report["candidates"].items()
              if isinstance(row.get("other_processes_cpus"), (int, float)) and row["other_processes_cpus"] > LOADED_SHARE * cpus}
    if not loaded:
        return None
    return (f"other processes (or the virtual machine's host) used up to {max(loaded.values()):.2f} of the {cpus} CPUs while "
            f"{', '.join(loaded)} {'were' if len(loaded) > 1 else 'was'} timed (/proc/stat): {'their' if len(loaded) > 1 else 'its'} "
            f"frames/s, by which --backend auto ranks the CPU backends, are likely low; run `triage optimize` again on an idle machine")


def calibration_warning(report: dict) -> str | None:
    """A warning when int8 was calibrated on frames the agreement check then scores (QA 31: the default), which
    makes its check optimistic: the quantization ranges were fitted to those very frames."""
    same = sorted({os.path.realpath(c) for c in report.get("calibration_clips", [])} & {os.path.realpath(c) for c in report["check_clips"]})
    if not same:
        return None
    return (f"int8 was calibrated on frames the agreement check scores ({', '.join(os.path.basename(c) for c in same)}), so its check "
            "is optimistic; --calibration with frames apart from them (training frames) is the honest choice")


def check_summary(report: dict) -> str:
    """One line on how demanding the agreement check was (printed by ``triage optimize``)."""
    line = f"Checked on {report['check_frames']} frames, {report['check_frames_uncertain']} of them uncertain (fp32 score between {UNCERTAIN[0]} and {UNCERTAIN[1]})"
    if report["check_frames_uncertain"] < MIN_UNCERTAIN:
        line += (f"; fewer than {MIN_UNCERTAIN}: the check proves little, so no lower precision is accepted on it "
                 "(add --check frames the model is unsure about)")
    return line


def verdict(name: str, max_diff: float, events_identical: bool, *, tolerance: float, uncertain: int) -> dict:
    """Whether a candidate is accepted, and why not: its scores within ``tolerance`` of fp32 and the same
    events, and for a lower precision (bf16, int8) a check with at least :data:`MIN_UNCERTAIN` uncertain frames."""
    if max_diff > tolerance:
        return {"accepted": False, "reason": f"max score difference {max_diff:.4f} > tolerance {tolerance}"}
    if not events_identical:
        return {"accepted": False, "reason": "events differ from fp32"}
    if not name.endswith("fp32") and uncertain < MIN_UNCERTAIN:
        return {"accepted": False, "reason": f"lower precision on a weak check ({plural(uncertain, 'uncertain frame')}, fewer than {MIN_UNCERTAIN})"}
    return {"accepted": True}


def _machine() -> dict:
    """The CPU the report's speeds and agreement checks were measured on (read back by backend_choice: QA 42)."""
    machine = {**cpu_machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}  # rev37: cores and features too
    if runs_here("ov-fp32") and not engine_error("ov-fp32"):  # rev100 #2: a broken OpenVINO fails its own candidates
        machine["openvino_native_bf16"] = openvino_native_bf16()
    return machine


SKIPPED = {  # why a candidate is not checked on the CPU it was measured on (rev54: said of that CPU, read on others too)
    "torch-bf16": ("no native bf16 (AVX-512-BF16 or AMX) on the CPU it was measured on: PyTorch would emulate it, many times "
                   "slower than fp32, and the check would not hold for a CPU with native bf16"),
    "ov-bf16": "OpenVINO found no native bf16 (AVX-512-BF16 or AMX) on the CPU it was measured on, and runs bf16 only natively",
}


def skipped(name: str) -> str | None:
    """Why ``name`` is not checked on this machine, or None (QA 60 #7: torch-bf16 ran emulated for minutes on an
    AVX2-only CPU, ov-bf16 was recorded as a failure, where neither is a candidate at all)."""
    if name == "torch-bf16" and bf16_emulated():
        return SKIPPED[name]
    if name == "ov-bf16" and runs_here("ov-fp32") and not engine_error(name) and not openvino_native_bf16():  # OpenVINO's own view of the CPU
        return SKIPPED[name]
    return None


def candidate_line(name: str, row: dict) -> str:
    """One candidate's line as ``triage optimize`` prints it when the candidate is done."""
    verdict = "accepted" if row["accepted"] else f"rejected ({row['reason']})" if "reason" in row else "rejected"
    if "skipped" in row:
        return f"  {name:<11} skipped: {row['skipped']}"
    if "error" in row:
        return f"  {name:<11} failed: {row['error']}  -> {verdict}"
    tuning = row["tuning"]
    return (f"  {name:<11} {row['frames_per_second']:8.1f} frames/s (batch {tuning['batch_size']} x {plural(tuning['streams'], 'stream')} "
            f"x {plural(tuning['threads'], 'thread')})  max |d score| {row['max_score_diff']:.4f}  "
            f"events identical: {row['events_identical']}  -> {verdict}")


def _events(pts, index, probs, config, params) -> list[tuple[int, int]]:
    ranking = rank(pts, index, probs, config.class_names, config.abnormal_indices, params)
    return sorted((e.start_frame, e.end_frame) for e in ranking.events)


def optimize(weights_dir: str | Path, check_clips: list[Path], *, calibration_clips: list[Path] | None = None,
             tolerance: float = DEFAULT_TOLERANCE, batch_size: int = 32, threads: int | None = None,
             tune_batch_sizes: tuple[int, ...] = TUNE_BATCH_SIZES, pipeline: "Pipeline | None" = None,
             progress: Callable[[str], None] | None = None) -> dict:
    """Export, quantize, check and tune every CPU backend (and torch fp16 on a usable GPU); write ``backends.json``.

    Each candidate is checked at ``batch_size`` and then timed over batch sizes and thread layouts
    (:func:`tune`); its ``frames_per_second`` is the fastest setting, which ``--backend auto`` uses.

    Args:
        weights_dir: a weights folder (config.json + model.safetensors); ONNX files are written into it.
        check_clips: real clips the candidates must agree on with fp32.
        calibration_clips: real clips or frame folders for int8 calibration (default: the check
            clips; frames apart from them are the honest choice).
        tolerance: max accepted |score - fp32 score|.
        batch_size: batch size of the agreement check.
        threads: threads to tune for (default: torch's, one per physical core).
        tune_batch_sizes: batch sizes to time (large models on a CPU can skip the big ones).
        pipeline: the preset whose event settings (smoothing, merging, minimum length) the "events
            identical" check uses (default: the default preset's; QA 16: a gastroscope model was
            checked with the capsule preset's).
        progress: called with a line once the check frames are scored by fp32, and with each candidate's
            :func:`candidate_line` as soon as it is checked and timed (``triage optimize`` prints them as they
            come: each can take a minute or more, and the command said nothing for minutes: QA 60 #7).
    """
    weights_dir = Path(weights_dir)
    if weights_dir.exists() and not weights_dir.is_dir():  # QA 67 #3: "a bare weights file needs ... (--pipeline)", --pipeline given
        raise WeightsError(weights_dir, "is a file: triage optimize takes a weights folder (config.json + model.safetensors), "
                                        "beside which it writes its ONNX files and backends.json")
    if weights_dir.is_dir():  # QA 107 #5: a read-only install said "backends.json: permission denied" after the checks ran
        try:
            check_creatable(weights_dir / BACKENDS_FILE)
        except OutputError as exc:
            raise OutputError(exc.path, f"{exc.message}: triage optimize writes its ONNX files and {BACKENDS_FILE} beside the "
                                        "weights; copy the weights folder somewhere writable and optimize the copy") from None
    parse_sizes(",".join(map(str, tune_batch_sizes)))  # the library's sizes checked as the command line's (review rev32)
    if pipeline is not None and weights_dir.is_dir():  # QA 113 #2: checked events of a preset that refuses these weights
        folder_config(weights_dir, pipeline.model)
    model, config = load_model(weights_dir)
    threads = threads or torch.get_num_threads()
    size = config.input_size
    fov = config.border == "fov"  # frames read as triage run reads them; ONNX candidates crop them on the host (ViewCropped)
    check = [decode_all(Path(c), size, fov=fov) for c in check_clips]
    calibration = np.concatenate([_views(decode_all(Path(c), size, limit=CALIBRATION_FRAMES, fov=fov)[0], config)
                                  for c in (calibration_clips or check_clips)])
    # The ONNX files are about to be replaced: until the new report is written, no report vouches for them (an
    # interrupted run must not leave the old report accepting new, unchecked files). Only now: a bad --calibration
    # input deleted it before (QA 67 #1), where a bad --check input leaves the folder as it was.
    (weights_dir / BACKENDS_FILE).unlink(missing_ok=True)
    cpu = torch.device("cpu")

    def on_torch(precision: str, device: torch.device = cpu):
        backend = TorchBackend(model, config, device=device, precision=precision)
        return lambda threads, streams, batch_size: backend  # torch threads are process-wide; the call size is the batch

    def on_onnx(name: str, path: Path):
        return lambda threads, streams, batch_size: onnx_backend(name, path, view=config, threads=threads, streams=streams, batch_size=batch_size)

    candidates = {  # name -> prepare() -> make(threads, streams, batch_size) -> backend
        "torch-fp32": lambda: on_torch("fp32"),
        "torch-bf16": lambda: on_torch("bf16"),
        "ort-fp32": lambda: on_onnx("ort-fp32", export_onnx(model, config, weights_dir / "model.fp32.onnx")),
        "ort-int8": lambda: on_onnx("ort-int8", quantize_int8(weights_dir / "model.fp32.onnx", weights_dir / "model.int8.onnx", calibration)),
        **{name: (lambda name=name: on_onnx(name, weights_dir / onnx_file(name))) for name in ("ov-fp32", "ov-bf16", "ov-int8")},
        # on a GPU, fp16 autocast: what `--backend auto` runs on CUDA once it is accepted here (against the CPU's fp32)
        **({"torch-fp16": lambda: on_torch("fp16", resolve_device("cuda"))} if torch.cuda.is_available() and cuda_unsupported(0) is None else {}),
    }
    params = (pipeline or load_pipeline(DEFAULT_PIPELINE)).rank_params(config)
    reference_backend = TorchBackend(model, config, device=cpu, precision="fp32")
    started = time.perf_counter()
    reference = [_scores(reference_backend, frames, batch_size) for frames, _, _ in check]
    per_candidate = _time_each(time.perf_counter() - started, sum(len(c[0]) for c in check), tune_batch_sizes, threads)
    digests = weights_digests(weights_dir)
    report = {"weights_sha256": weights_sha256(weights_dir, digests), "model_sha256": digests[WEIGHTS_NAME],
              "graph_sha256": graph_sha256(config), "tolerance": tolerance, "batch_size": batch_size, "threads": threads,
              "check_clips": [str(c) for c in check_clips], "calibration_clips": [str(c) for c in (calibration_clips or check_clips)],
              "check_frames": int(sum(len(c[0]) for c in check)),
              "check_frames_uncertain": uncertain_frames(reference, config.abnormal_indices),
              "rank_params": asdict(params), "machine": _machine(),
              "measured_at": datetime.now(timezone.utc).isoformat(timespec="minutes"),  # QA 102 #1: in the run's reason
              "candidates": {}}
    if progress:
        checked = sum(skipped(name) is None for name in candidates)
        progress(f"{check_summary(report)}; checking {checked} backends against it and timing each at run sizes "
                 f"{','.join(map(str, tune_batch_sizes))} (about {fmt_duration(per_candidate)} each at fp32's speed, less for faster ones):")
    for name, prepare in candidates.items():
        if (why := skipped(name)) is not None:
            report["candidates"][name] = {"accepted": False, "skipped": why}
            if progress:
                progress(candidate_line(name, report["candidates"][name]))
            continue
        backend = None
        try:  # e.g. an op ONNX Runtime cannot quantize, OpenVINO missing, a backend failing on the check frames or while
            make = prepare()  # timed: recorded, not fatal (QA 94 #7: one failing after it was made lost the whole report)
            backend = make(threads=threads, streams=1, batch_size=None)
            diffs, identical = [], True
            for (frames, index, pts), ref in zip(check, reference):
                probs = _scores(backend, frames, batch_size)
                diffs.append(np.abs(abnormal_score(probs, config.abnormal_indices) - abnormal_score(ref, config.abnormal_indices)))
                identical &= _events(pts, index, probs, config, params) == _events(pts, index, ref, config, params)
            diff = np.concatenate(diffs)
            report["candidates"][name] = {
                **({"gpu": gpu_name("cuda")} if name == "torch-fp16" else {}),  # checked and timed on this GPU (the rest on the CPU)
                "max_score_diff": round(float(diff.max()), 6), "mean_score_diff": round(float(diff.mean()), 6),
                "events_identical": bool(identical),
                **verdict(name, float(diff.max()), bool(identical), tolerance=tolerance, uncertain=report["check_frames_uncertain"]),
                **_timed_under_load(lambda: tune(make, check[0][0], threads, onnx=onnx_file(name) is not None, batch_sizes=tune_batch_sizes)),
            }
        except Exception as exc:  # noqa: BLE001
            said = str(exc).splitlines()[0].removeprefix(f"--backend {name}: ") if str(exc) else ""  # no --backend option here
            report["candidates"][name] = {"accepted": False, "error": f"{type(exc).__name__}: {said[:200]}"}
        finally:
            getattr(backend, "close", lambda: None)()
        if progress:
            progress(candidate_line(name, report["candidates"][name]))
    # the bytes each ONNX candidate was checked on: a file swapped or re-exported later is refused, not trusted (QA 52)
    checked = sorted({onnx_file(name) for name, row in report["candidates"].items() if onnx_file(name) and "max_score_diff" in row})
    report["onnx_sha256"] = {name: file_sha256(weights_dir / name) for name in checked}
    partial = weights_dir / f".{BACKENDS_FILE}.partial"  # whole or not at all: a full disk leaves no half report (QA 94 #7)
    try:
        partial.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(partial, weights_dir / BACKENDS_FILE)
    except OSError:
        partial.unlink(missing_ok=True)
        raise
    return report
