"""``triage optimize``: make faster backends for a weights folder and prove they agree with fp32.

For each candidate backend (torch bf16, ONNX Runtime fp32, ONNX Runtime static int8 calibrated on
real frames) this scores the same real clips as torch fp32 and records the largest score
difference, whether the ranked events (start/end frames) are identical, and the measured
frames/s at the chosen batch size. A candidate is *accepted* only if its max score difference is
within ``tolerance`` and its events are identical; ``--backend auto`` then picks the fastest
accepted one. The report goes to ``backends.json`` beside the weights.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .backends import OnnxBackend, TorchBackend, export_onnx, quantize_int8
from .classifier import BACKENDS_FILE, softmax
from .frames import DecodeStats
from .ranking import RankParams, abnormal_score, rank
from .reader import ReadOptions, read_frames
from .weights import load_model, weights_sha256

DEFAULT_TOLERANCE = 0.05  # max |score - fp32 score| over all check frames


def decode_all(path: Path, size: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All frames of a clip at the model's input size (small clips only)."""
    data, index, pts = [], [], []
    for batch in read_frames(path, ReadOptions(batch_size=64, short_side=size), DecodeStats()):
        data.append(batch.data)
        index.append(batch.frame_index)
        pts.append(batch.pts_seconds)
        if limit and sum(len(d) for d in data) >= limit:
            break
    return np.concatenate(data)[:limit], np.concatenate(index)[:limit], np.concatenate(pts)[:limit]


def _scores(backend, frames: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([softmax(backend.logits(frames[i : i + batch_size])) for i in range(0, len(frames), batch_size)])


def measure_fps(backend, frames: np.ndarray, batch_size: int, *, repeats: int = 3) -> float:
    """Model-only frames/s: one warm-up batch, then the median of ``repeats`` timed batches."""
    batch = np.ascontiguousarray(frames[:batch_size])
    if len(batch) < batch_size:
        batch = np.resize(batch, (batch_size, *batch.shape[1:]))
    backend.logits(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend.logits(batch)
        times.append(time.perf_counter() - start)
    return batch_size / float(np.median(times))


def _events(pts, index, probs, config, params) -> list[tuple[int, int]]:
    ranking = rank(pts, index, probs, config.class_names, config.abnormal_indices, params)
    return sorted((e.start_frame, e.end_frame) for e in ranking.events)


def optimize(weights_dir: str | Path, check_clips: list[Path], *, calibration_clips: list[Path] | None = None,
             tolerance: float = DEFAULT_TOLERANCE, batch_size: int = 32, threads: int | None = None) -> dict:
    """Export, quantize, check and time every CPU backend; write ``backends.json``.

    Args:
        weights_dir: a weights folder (config.json + model.safetensors); ONNX files are written into it.
        check_clips: real clips the candidates must agree on with fp32.
        calibration_clips: real clips for int8 calibration (default: the check clips).
        tolerance: max accepted |score - fp32 score|.
        batch_size: batch size of the speed measurement.
        threads: intra-op threads (default: torch's).
    """
    weights_dir = Path(weights_dir)
    model, config = load_model(weights_dir)
    threads = threads or torch.get_num_threads()
    size = config.input_size
    check = [decode_all(Path(c), size) for c in check_clips]
    calibration = np.concatenate([decode_all(Path(c), size, limit=128)[0] for c in (calibration_clips or check_clips)])[::2]
    cpu = torch.device("cpu")
    candidates = {
        "torch-fp32": lambda: TorchBackend(model, config, device=cpu, precision="fp32"),
        "torch-bf16": lambda: TorchBackend(model, config, device=cpu, precision="bf16"),
        "ort-fp32": lambda: OnnxBackend(export_onnx(model, config, weights_dir / "model.fp32.onnx"), name="ort-fp32", threads=threads),
        "ort-int8": lambda: OnnxBackend(quantize_int8(weights_dir / "model.fp32.onnx", weights_dir / "model.int8.onnx", calibration),
                                        name="ort-int8", threads=threads),
    }
    params = RankParams(enter_threshold=config.threshold, leave_threshold=0.75 * config.threshold)
    reference_backend = candidates["torch-fp32"]()
    reference = [_scores(reference_backend, frames, batch_size) for frames, _, _ in check]
    report = {"weights_sha256": weights_sha256(weights_dir), "tolerance": tolerance, "batch_size": batch_size, "threads": threads,
              "check_clips": [str(c) for c in check_clips], "check_frames": int(sum(len(c[0]) for c in check)),
              "rank_params": asdict(params), "machine": {"processor": platform.processor() or platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability()},
              "candidates": {}}
    for name, make in candidates.items():
        try:
            backend = make()
        except Exception as exc:  # noqa: BLE001 - e.g. an op ONNX Runtime cannot quantize: recorded, not fatal
            report["candidates"][name] = {"accepted": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            continue
        diffs, identical = [], True
        for (frames, index, pts), ref in zip(check, reference):
            probs = _scores(backend, frames, batch_size)
            diffs.append(np.abs(abnormal_score(probs, config.abnormal_indices) - abnormal_score(ref, config.abnormal_indices)))
            identical &= _events(pts, index, probs, config, params) == _events(pts, index, ref, config, params)
        diff = np.concatenate(diffs)
        report["candidates"][name] = {
            "max_score_diff": round(float(diff.max()), 6), "mean_score_diff": round(float(diff.mean()), 6),
            "events_identical": bool(identical), "accepted": bool(diff.max() <= tolerance and identical),
            "frames_per_second": round(measure_fps(backend, check[0][0], batch_size), 1),
        }
    (weights_dir / BACKENDS_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report
