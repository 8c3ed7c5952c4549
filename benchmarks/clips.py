"""Benchmark inputs assembled from real WCEBleedGen frames (Zenodo 10156571, CC BY 4.0) with PyAV."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import av
import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# ../shared/data next to the clone (the development machines also have it at /work/shared/data)
SHARED = next((p for p in (REPO.parent / "shared" / "data", Path("/work/shared/data")) if p.exists()), REPO.parent / "shared" / "data")
WEIGHTS = REPO / "weights" / "capsule-bleeding-lite0"  # the shipped default model


def output_options(parser: argparse.ArgumentParser, *, cache: bool = True) -> None:
    """A probe's ``--results`` and (``cache``: one that makes or reads the generated study clips) ``--cache``, as
    ``run_benchmarks.py``'s (QA 127 #1: the probes wrote into the checkout only, so a trial run could not stay out of it)."""
    parser.add_argument("--results", type=Path, default=HERE / "results", help="folder of the results JSON (default benchmarks/results)")
    if cache:
        parser.add_argument("--cache", type=Path, default=HERE / ".cache",
                            help="folder of the generated clips (default benchmarks/.cache, git-ignored)")


def results_file(args: argparse.Namespace, name: str) -> Path:
    """Where a probe writes ``name`` (``--results``, made if missing); the study clips it asks
    ``run_benchmarks.study_clip`` for are then made in, or taken from, ``--cache``."""
    import run_benchmarks  # (it imports this module)

    run_benchmarks.CACHE = getattr(args, "cache", run_benchmarks.CACHE)
    args.results.mkdir(parents=True, exist_ok=True)
    return args.results / name

def real_frames(shared_data: Path, count: int) -> list[np.ndarray]:
    """``count`` real capsule frames (RGB 224x224) in manifest order, cycling if needed."""
    rows = [r for r in csv.DictReader(open(shared_data / "wcebleedgen" / "manifest.csv"))]
    frames = []
    for row in rows[: min(count, len(rows))]:
        frames.append(cv2.cvtColor(cv2.imread(str(shared_data / "wcebleedgen" / row["path"])), cv2.COLOR_BGR2RGB))
    return [frames[i % len(frames)] for i in range(count)]


def capsule_336(frame: np.ndarray) -> np.ndarray:
    return cv2.resize(frame, (336, 336), interpolation=cv2.INTER_CUBIC)


def endoscope_720p(frame: np.ndarray) -> np.ndarray:
    """A real frame as the circular view inside a 1280x720 black canvas (like a scope's output)."""
    canvas = np.zeros((720, 1280, 3), np.uint8)
    view = cv2.resize(frame, (680, 680), interpolation=cv2.INTER_CUBIC)
    canvas[20:700, 300:980] = view
    return canvas


def write_clip(path: Path, frames, *, count: int, fps: int = 4, crf: int = 23) -> Path:
    """Encode ``count`` frames (an iterable, cycled) as H.264 with PyAV; skips existing files."""
    if path.exists():
        return path
    frames = list(frames)
    tmp = path.with_suffix(".partial.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        h, w = frames[0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for i in range(count):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)
    return path
