"""Do the f32-head cuts of ``bf16_probe.py`` keep the flagged events, and can one compiled model keep its head in f32? A probe, not part of the product.

    python benchmarks/bf16_cuts.py [--study-frames 2000]

``bf16_probe.py`` measured how far an f32 head (the fp32 ONNX file cut at a tensor, the head compiled in f32 and the
rest in bf16) moves the shipped model's scores; it did not compare events. This probe scores the model card's check
inputs (each clip and folder on its own, as ``triage optimize`` checks them) and the first ``--study-frames`` frames of
the simulated 336 px study with each cut, and compares max |score - ov-fp32| and the events (the default preset's event
settings, ``capsule_triage.optimize``'s comparison) with ov-fp32's.

It also tries to keep the head in f32 within one compiled model: runtime-info keys set on every node of the ONNX
graph up to the first 15 convolutions before compiling with the bf16 hint (OpenVINO has no Python call for its
``disable_fp16_compression``; the keys are its runtime-info names and others tried). Same scores as ov-bf16 whole
means the CPU plugin ignored them.

Writes ``benchmarks/results/bf16_cuts.json`` (``--results DIR``: DIR/bf16_cuts.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from bf16_probe import CHECK, openvino_scorers  # benchmarks/ is the script's folder, so on sys.path
from clips import REPO, SHARED, WEIGHTS, output_options, results_file

sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from capsule_triage.backends import import_openvino  # noqa: E402
from capsule_triage.cpu_info import machine  # noqa: E402
from capsule_triage.digests import weights_sha256  # noqa: E402
from capsule_triage.optimize import _events, decode_all  # noqa: E402
from capsule_triage.presets import DEFAULT_PIPELINE, load_pipeline  # noqa: E402
from capsule_triage.ranking import abnormal_score  # noqa: E402
from capsule_triage.versions import package_versions  # noqa: E402
from capsule_triage.weights import load_model  # noqa: E402

RUN = 8  # frames per request, as triage run's OpenVINO default
KEYS = ["disable_fp16_compression_0", "disable_fp16_compression", "precise_0", "keep_original_precision_0",
        "KeepOriginalPrecision", "enforceBF16evenForGraphTail"]
KEPT_CONVOLUTIONS = 15


def one_model_scorer(key: str):
    """ov-bf16 of the fp32 ONNX file with ``key`` set in the runtime info of every node up to the 15th convolution."""
    ov = import_openvino()
    core = ov.Core()
    model = core.read_model(str(WEIGHTS / "model.fp32.onnx"))
    shape = model.inputs[0].get_partial_shape()
    shape[0] = RUN
    model.reshape({model.inputs[0].any_name: shape})
    convolutions = 0
    for op in model.get_ordered_ops():
        if convolutions >= KEPT_CONVOLUTIONS:
            break
        op.get_rt_info()[key] = ""
        convolutions += op.get_type_name() in ("Convolution", "GroupConvolution")
    request = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": 2}).create_infer_request()
    return lambda _k, frames: request.infer({0: frames}, share_inputs=True)[0].copy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-frames", type=int, default=2000)
    output_options(parser)
    args = parser.parse_args()
    out = results_file(args, "bf16_cuts.json")
    torch.set_num_threads(2)
    from run_benchmarks import study_clip  # noqa: E402 (makes the study clip if missing)

    model, config = load_model(WEIGHTS)
    params = load_pipeline(DEFAULT_PIPELINE).rank_params(config)
    inputs = {path: decode_all(SHARED / path, config.input_size) for path in CHECK}
    inputs[f"study (first {args.study_frames} frames)"] = decode_all(study_clip(5000), config.input_size, args.study_frames)

    def probabilities(score_run, frames: np.ndarray) -> np.ndarray:
        pad = (-len(frames)) % RUN
        padded = np.concatenate([frames, np.zeros((pad, *frames.shape[1:]), frames.dtype)]) if pad else frames
        logits = np.concatenate([score_run(0, np.ascontiguousarray(padded[i : i + RUN])) for i in range(0, len(padded), RUN)])
        return torch.softmax(torch.from_numpy(logits[: len(frames)]), 1).numpy()

    scorers = openvino_scorers(WEIGHTS / "model.fp32.onnx", RUN)
    scorers.update({f"one model, runtime info {key!r} up to the {KEPT_CONVOLUTIONS}th convolution": one_model_scorer(key) for key in KEYS})
    reference = {name: probabilities(scorers["ov-fp32"], frames) for name, (frames, _, _) in inputs.items()}
    rows = {}
    for variant, score_run in scorers.items():
        rows[variant] = {}
        for name, (frames, index, pts) in inputs.items():
            probs = probabilities(score_run, frames)
            diff = np.abs(abnormal_score(probs, config.abnormal_indices) - abnormal_score(reference[name], config.abnormal_indices))
            rows[variant][name] = {"max_score_diff": round(float(diff.max()), 4),
                                   "events_identical": _events(pts, index, probs, config, params) == _events(pts, index, reference[name], config, params)}
        print(variant, rows[variant], flush=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(["python", "benchmarks/bf16_cuts.py", *sys.argv[1:]]),
              "machine": machine(), "versions": package_versions(), "weights": str(WEIGHTS), "weights_sha256": weights_sha256(WEIGHTS),
              "frames": {name: len(frames) for name, (frames, _, _) in inputs.items()}, "run": RUN,
              "against ov-fp32: max |score diff| and events identical": rows}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
