"""Would a cascade make the shipped model faster without leaving the agreement check? A probe, not part of the product.

    python benchmarks/cascade_probe.py [--backends ov-int8,ov-bf16,ort-int8] [--gates 0.005,0.01,0.02,0.05] [--uppers 1,0.98,0.95]

The idea: score every frame with a fast backend and re-score with fp32 only the frames whose fast
score lies between a gate and an upper gate, so the stored score is fp32's wherever it could matter
and the fast one only where the model is sure (normal below the gate, abnormal above the upper gate:
a sigmoid's slope, and so the score a logit error moves, is smallest near 0 and 1). Upper gate 1:
only the lower gate (the first probe, 2026-12-01). It pays only if (a) few frames fall in the band
and (b) the frames outside it stay within ``triage optimize``'s tolerance (0.05) of fp32.

Scores the model card's check frames (the two shared WCE clips and wcebleedgen/test) and, when
``run_benchmarks.py study`` has made it, the 5,000-frame study, with ov-fp32 and each fast backend
(the ONNX files ``triage optimize`` wrote beside the shipped weights). Reports per backend and gate:
the share of frames re-scored, the max |cascade score - fp32 score| and the model time per frame
the cascade would cost relative to fp32 alone (fast + share x fp32), from the model-only frames/s
that ``triage optimize`` measured and wrote to backends.json (not timed here: the shares and score
differences do not depend on the machine's load, timings would).
Writes ``benchmarks/results/cascade_probe.json`` (``--results DIR``: DIR/cascade_probe.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from clips import REPO, SHARED, WEIGHTS, output_options, results_file  # benchmarks/ is the script's folder, so on sys.path

sys.path.insert(0, str(REPO))

from capsule_triage.backends import onnx_backend, onnx_file  # noqa: E402
from capsule_triage.cpu_info import machine  # noqa: E402
from capsule_triage.digests import weights_sha256  # noqa: E402
from capsule_triage.versions import package_versions  # noqa: E402
from capsule_triage.model_config import folder_config  # noqa: E402
from capsule_triage.classifier import BACKENDS_FILE  # noqa: E402
from capsule_triage.optimize import _scores, decode_all  # noqa: E402
from capsule_triage.ranking import abnormal_score  # noqa: E402

def inputs(cache: Path) -> dict[str, Path]:
    found = {
        "mixed clip": SHARED / "videos/wcebleedgen_mixed_triage_4fps.mp4",
        "bleeding-run clip": SHARED / "videos/wcebleedgen_bleeding_run_0419-0510_4fps.mp4",
        "test bleeding": SHARED / "wcebleedgen/test/bleeding",
        "test non-bleeding": SHARED / "wcebleedgen/test/non-bleeding",
        "study336_5000": cache / "study336_5000.mp4",  # if run_benchmarks.py study (or another probe) made it
    }
    return {name: path for name, path in found.items() if path.exists()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="ov-int8,ov-bf16,ort-int8")
    parser.add_argument("--gates", default="0.005,0.01,0.02,0.05")
    parser.add_argument("--uppers", default="1", help="upper gates: fast scores above one keep the fast score (1: none)")
    output_options(parser)
    args = parser.parse_args()
    out = results_file(args, "cascade_probe.json")
    config = folder_config(WEIGHTS)
    frames = {name: decode_all(path, config.input_size)[0] for name, path in inputs(args.cache).items()}

    measured = json.loads((WEIGHTS / BACKENDS_FILE).read_text())["candidates"]

    def scores_and_fps(name: str) -> tuple[dict[str, np.ndarray], float]:
        backend = onnx_backend(name, WEIGHTS / onnx_file(name), threads=2, batch_size=32)
        scores = {k: abnormal_score(_scores(backend, f, 32), config.abnormal_indices) for k, f in frames.items()}
        return scores, measured[name]["frames_per_second"]

    reference, reference_fps = scores_and_fps("ov-fp32")
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(["python", "benchmarks/cascade_probe.py", *sys.argv[1:]]),
              "machine": machine(), "versions": package_versions(),  # QA 35: the file held no command, CPU or versions
              "weights": str(WEIGHTS), "weights_sha256": weights_sha256(WEIGHTS), "frames": {k: len(f) for k, f in frames.items()},
              "fp32_frames_per_second (backends.json)": reference_fps, "backends": {}}
    for name in args.backends.split(","):
        fast, fast_fps = scores_and_fps(name)
        rows = []
        for gate, upper in [(g, u) for u in map(float, args.uppers.split(",")) for g in map(float, args.gates.split(","))]:
            band = {k: (fast[k] >= gate) & (fast[k] <= upper) for k in frames}
            share = {k: float(band[k].mean()) for k in frames}
            cascade_diff = max(float(np.abs(np.where(band[k], reference[k], fast[k]) - reference[k]).max()) for k in frames)
            cost = {k: (1 / fast_fps + share[k] / reference_fps) * reference_fps for k in frames}  # model time per frame / fp32's
            rows.append({"gate": gate, **({"upper_gate": upper} if upper < 1 else {}), "max_score_diff": round(cascade_diff, 4),
                         "rescored_share": {k: round(v, 3) for k, v in share.items()},
                         "model_time_vs_fp32": {k: round(v, 2) for k, v in cost.items()}})
            print(f"{name} band [{gate}, {upper}]: max |d| {cascade_diff:.4f}; re-scored "
                  + ", ".join(f"{k} {100 * share[k]:.0f}% ({cost[k]:.2f}x fp32 time)" for k in frames))
        result["backends"][name] = {"frames_per_second (backends.json)": fast_fps, "gates": rows}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
