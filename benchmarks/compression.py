"""How much compression do the shipped model's scores stand? The measurement behind ``bitrate.FLOORS``.

    python benchmarks/compression.py [WEIGHTS]

Scores the 374 wcebleedgen/test frames (224 x 224, in manifest order) as PNG, then after encoding them
as one 4 frames/s clip (libx264 at CRF 0-51; MPEG-4 Part 2 in AVI at 400-25 kbit/s) or frame by frame
as JPEG (quality 95-2, as MJPEG stores them), at 4:2:0 as a recorder writes them, decoded as the reader
decodes. For each: the bits per pixel per frame the encoder spent (video packets only), how far the
scores move (max, 95th percentile, mean), how many frames cross the model's operating threshold, the
share flagged and the ROC AUC against the labels. Per codec family, the floor is the bits per pixel at
which the frames crossing the threshold reach ``CROSSING_LIMIT`` of all (interpolated on log bits per
pixel between the two encodings around it): ``triage run`` warns about a video below its family's floor.
Writes ``benchmarks/results/compression.json`` (``--results DIR``: DIR/compression.json).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from clips import REPO, SHARED, WEIGHTS, output_options, results_file  # benchmarks/ is the script's folder, so on sys.path

sys.path.insert(0, str(REPO))

from capsule_triage.bitrate import CROSSING_LIMIT  # noqa: E402
from capsule_triage.cpu_info import machine  # noqa: E402
from capsule_triage.datasets import read_samples, select  # noqa: E402
from capsule_triage.evaluate import predict_probs, suspicion  # noqa: E402
from capsule_triage.metrics import roc_auc  # noqa: E402
from capsule_triage.preprocess import Preprocessor  # noqa: E402
from capsule_triage.stills import load_for_model  # noqa: E402
from capsule_triage.versions import package_versions  # noqa: E402
from capsule_triage.weights import load_model  # noqa: E402

H264_CRFS = (0, 18, 23, 28, 33, 38, 43, 48, 51)
MPEG4_KBITS = (400, 200, 100, 50, 25)
JPEG_QUALITIES = (95, 75, 50, 30, 15, 8, 4, 2)


def encode_video(frames: np.ndarray, codec: str, container: str, *, options: dict | None = None,
                 bit_rate: int | None = None) -> tuple[np.ndarray, int]:
    """``frames`` (uint8 [N, H, W, 3]) after a round trip through ``codec`` at 4 frames/s; and the bytes of its packets."""
    n, h, w, _ = frames.shape
    buffer, size = io.BytesIO(), 0
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=4)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if bit_rate:
            stream.bit_rate = bit_rate
        stream.options = options or {}
        stream.codec_context.thread_count = 1  # the same bytes on any machine
        for frame in [*frames, None]:
            for packet in stream.encode(None if frame is None else av.VideoFrame.from_ndarray(frame, format="rgb24")):
                size += packet.size
                out.mux(packet)
    buffer.seek(0)
    reformatter = VideoReformatter()
    with av.open(buffer) as clip:
        decoded = np.stack([reformatter.reformat(f, format="rgb24").to_ndarray() for f in clip.decode(video=0)])
    if len(decoded) != n:
        raise ValueError(f"{codec}: {len(decoded)} frames back of {n}")
    return decoded, size


def encode_jpeg(frames: np.ndarray, quality: int) -> tuple[np.ndarray, int]:
    out, size = [], 0
    for frame in frames:
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        size += len(data)
        out.append(cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    return np.stack(out), size


def floor(rows: list[dict], frames: int) -> float | None:
    """Bits per pixel where ``crossings / frames`` reaches CROSSING_LIMIT (rows of one family, any order); None if never."""
    ordered = sorted(rows, key=lambda r: -r["bits_per_pixel"])
    limit = CROSSING_LIMIT * frames
    for above, below in zip(ordered, ordered[1:]):
        if above["crossings"] < limit <= below["crossings"]:
            t = (limit - above["crossings"]) / (below["crossings"] - above["crossings"])
            a, b = math.log(above["bits_per_pixel"]), math.log(below["bits_per_pixel"])
            return round(math.exp(a + t * (b - a)), 3)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", nargs="?", type=Path, default=WEIGHTS)
    output_options(parser, cache=False)
    args = parser.parse_args()
    written = results_file(args, "compression.json")
    torch.set_num_threads(2)
    model, config = load_model(args.weights)
    samples = select(read_samples(SHARED / "wcebleedgen" / "manifest.csv").samples, "test")
    images = load_for_model(samples, config).images
    positive = np.array([s.label in config.abnormal_classes for s in samples])
    preprocess = Preprocessor(config)
    score = lambda x: suspicion(predict_probs(model, preprocess, torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()), config)  # noqa: E731
    frames = images.permute(0, 2, 3, 1).contiguous().numpy()
    n, h, w, _ = frames.shape
    base = score(frames)
    variants = [("h264", f"crf {crf}", lambda crf=crf: encode_video(frames, "libx264", "mp4", options={"crf": str(crf), "preset": "veryfast"}))
                for crf in H264_CRFS]
    variants += [("mpeg4", f"{k} kbit/s", lambda k=k: encode_video(frames, "mpeg4", "avi", bit_rate=k * 1000)) for k in MPEG4_KBITS]
    variants += [("mjpeg", f"quality {q}", lambda q=q: encode_jpeg(frames, q)) for q in JPEG_QUALITIES]
    rows = []
    for family, setting, encode in variants:
        decoded, size = encode()
        changed = score(decoded)
        d = np.abs(changed - base)
        row = {"family": family, "setting": setting, "kb_per_frame": round(size / n / 1024, 2),
               "bits_per_pixel": round(size * 8 / (n * w * h), 4), "max": round(float(d.max()), 3),
               "p95": round(float(np.quantile(d, 0.95)), 3), "mean": round(float(d.mean()), 4),
               "crossings": int(((changed >= config.threshold) != (base >= config.threshold)).sum()),
               "flagged": round(float((changed >= config.threshold).mean()), 3), "auc": round(roc_auc(positive, changed), 6)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    floors = {family: floor([r for r in rows if r["family"] == family], n) for family in ("h264", "mpeg4", "mjpeg")}
    print("floors (bits per pixel):", floors)
    out = {"what": "compression", "command": "python benchmarks/compression.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "versions": package_versions(),
           "weights": str(args.weights.resolve().relative_to(REPO) if args.weights.resolve().is_relative_to(REPO) else args.weights),
           "frames": n, "size": [w, h], "threshold": config.threshold, "flagged_png": round(float((base >= config.threshold).mean()), 3),
           "auc_png": round(roc_auc(positive, base), 6), "crossing_limit": CROSSING_LIMIT, "floors": floors, "rows": rows}
    written.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
