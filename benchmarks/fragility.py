"""How far do a model's scores move under changes no reader would see? A probe, not part of the product.

    python benchmarks/fragility.py [WEIGHTS ...] [--backends ov-bf16,ov-int8]

For each weights folder (default: the shipped model), scores the 374 wcebleedgen/test frames as PNG
and again after: Gaussian pixel noise of 0.5, 1 and 2 grey levels (rounded back to uint8, seeded),
an H.264 round trip at CRF 23 (``recompress.round_trip``, as ``triage eval --codec h264:23``), bf16
autocast in PyTorch and, with ``--backends``, the named inference backends (they need the files that
``triage optimize`` writes). Reports per change the max, 99th percentile and mean |score change| and
how many frames cross the model's operating threshold. ``triage optimize`` accepts a backend within
0.05 of fp32 with identical events: a model whose scores move that far under one grey level of noise
will not pass it in bf16 or int8 either (benchmarks/README.md, "Design notes").
Writes ``benchmarks/results/fragility.json`` (``--results DIR``: DIR/fragility.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from clips import REPO, SHARED, WEIGHTS, output_options, results_file  # benchmarks/ is the script's folder, so on sys.path

sys.path.insert(0, str(REPO))

from capsule_triage.augment import pixel_noise  # noqa: E402
from capsule_triage.cpu_info import machine  # noqa: E402
from capsule_triage.datasets import read_samples, select  # noqa: E402
from capsule_triage.evaluate import backend_probs, predict_probs, suspicion  # noqa: E402
from capsule_triage.preprocess import Preprocessor  # noqa: E402
from capsule_triage.recompress import Codec, round_trip  # noqa: E402
from capsule_triage.stills import load_for_model  # noqa: E402
from capsule_triage.versions import package_versions  # noqa: E402
from capsule_triage.weights import load_model  # noqa: E402


def changes(weights: Path, backends: list[str]) -> dict:
    model, config = load_model(weights)
    samples = read_samples(SHARED / "wcebleedgen" / "manifest.csv").samples
    images = load_for_model(select(samples, "test"), config).images
    preprocess = Preprocessor(config)
    score = lambda x: suspicion(predict_probs(model, preprocess, x), config)  # noqa: E731
    base = score(images)
    variants = {f"noise {s:g} levels": lambda s=s: score(pixel_noise(images, s, torch.Generator().manual_seed(0))) for s in (0.5, 1.0, 2.0)}
    variants["h264:23"] = lambda: score(round_trip(images, Codec.parse("h264:23")))

    def bf16() -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return score(images)

    variants["torch-bf16 autocast"] = bf16
    for backend in backends:
        variants[backend] = lambda b=backend: suspicion(backend_probs(weights, b, config, images)[0], config)
    rows = {}
    for name, run in variants.items():
        changed = run()
        d = np.abs(changed - base)
        rows[name] = {"max": round(float(d.max()), 4), "p99": round(float(np.quantile(d, 0.99)), 4), "mean": round(float(d.mean()), 5),
                      "threshold_crossings": int(((changed >= config.threshold) != (base >= config.threshold)).sum())}
        print(f"  {name:22s} max {d.max():.3f}  p99 {np.quantile(d, 0.99):.3f}  mean {d.mean():.4f}  crossings {rows[name]['threshold_crossings']}", flush=True)
    recipe = config.provenance.get("training", {}).get("recipe", {})
    return {"weights": str(weights.resolve()), "training_stability": recipe.get("stability", 0.0), "threshold": config.threshold,
            "frames": len(base), "changes": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", nargs="*", type=Path, default=[WEIGHTS])
    parser.add_argument("--backends", default="", help="comma-separated backends to compare too (e.g. ov-bf16,ov-int8)")
    output_options(parser, cache=False)
    args = parser.parse_args()
    written = results_file(args, "fragility.json")
    torch.set_num_threads(2)
    results = []
    for weights in args.weights:
        print(weights)
        results.append(changes(weights, [b for b in args.backends.split(",") if b]))
    out = {"what": "fragility", "command": "python benchmarks/fragility.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "versions": package_versions(),  # left for later (QA 35)
           "torch": torch.__version__, "results": results}
    written.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
