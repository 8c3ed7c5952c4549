"""Where does bf16 move the shipped model's scores, and would an fp32 head keep them within the check? A probe, not part of the product.

    python benchmarks/bf16_probe.py [--study-frames 2000] [--seconds 4] [--repeats 2]

``triage optimize`` rejects every bf16 backend of the shipped model (ov-bf16 0.17-0.18 from fp32 on the
562 check frames, tolerance 0.05). This probe asks where that comes from and what keeping part of the
network in fp32 would buy, on the model card's check frames (the two shared WCE clips and
wcebleedgen/test) and on the first ``--study-frames`` frames of the simulated 336 px H.264 study
(``run_benchmarks.py``'s, the manifest frames in order; made here if missing):

1. PyTorch, emulated: the weights, inputs and outputs of chosen convolutions rounded to bf16 (products
   accumulated in fp32, as AMX and AVX-512-BF16 do), everything else exact. Which layers' rounding
   moves the scores, and how far with the first k convolutions kept exact.
2. OpenVINO, measured: the fp32 ONNX file cut at a tensor into a head compiled in f32 and the rest
   compiled in bf16 (two compiled models, the head's output passed to the rest), against ov-fp32 and
   ov-bf16 whole: max / mean |score - ov-fp32| (scores only: events are not compared) and model-only
   frames/s (runs of ``--run`` frames on two one-thread streams, both cores; the variants timed in
   turn, ``--repeats`` rounds).

Writes ``benchmarks/results/bf16_probe.json`` (``--results DIR``: DIR/bf16_probe.json).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from clips import REPO, SHARED, WEIGHTS, output_options, results_file  # benchmarks/ is the script's folder, so on sys.path

sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from capsule_triage.backends import import_openvino  # noqa: E402
from capsule_triage.bf16_weights import to_bf16 as bf16  # noqa: E402
from capsule_triage.cpu_info import machine  # noqa: E402
from capsule_triage.digests import weights_sha256  # noqa: E402
from capsule_triage.optimize import decode_all  # noqa: E402
from capsule_triage.ranking import abnormal_score  # noqa: E402
from capsule_triage.torch_backend import FoldedModel  # noqa: E402
from capsule_triage.versions import package_versions  # noqa: E402
from capsule_triage.weights import load_model  # noqa: E402

CHECK = ["videos/wcebleedgen_mixed_triage_4fps.mp4", "videos/wcebleedgen_bleeding_run_0419-0510_4fps.mp4",
         "wcebleedgen/test/bleeding", "wcebleedgen/test/non-bleeding"]
# OpenVINO cut points: names of the ONNX export's nodes (timm's tf_efficientnet_lite0), the head ending at each
CUTS = {"stem": "/model/bn1/act/Clip",
        "stem + first depthwise": "/model/blocks/blocks.0/blocks.0.0/bn1/act/Clip",
        "stage 0 (3 convolutions)": "/model/blocks/blocks.0/blocks.0.0/conv_pw/Conv",
        "stage 1 (9 convolutions)": "/model/blocks/blocks.1/blocks.1.1/Add",
        "stage 2 (15 convolutions)": "/model/blocks/blocks.2/blocks.2.1/Add"}


def emulated(folded: FoldedModel, frames: dict[str, np.ndarray], score, convs: list, what: dict[int, str]) -> dict[str, np.ndarray]:
    """Scores with convolution i's weights ("w"), input ("i") and output ("o") rounded to bf16 for each i in ``what``."""
    kept = {i: convs[i].weight.detach().clone() for i in what}
    hooks = []
    with torch.no_grad():
        for i, parts in what.items():
            if "w" in parts:
                convs[i].weight.copy_(bf16(convs[i].weight))
            if "i" in parts:
                hooks.append(convs[i].register_forward_pre_hook(lambda m, a: (bf16(a[0]),)))
            if "o" in parts:
                hooks.append(convs[i].register_forward_hook(lambda m, a, o: bf16(o)))
    try:
        return {k: score(f) for k, f in frames.items()}
    finally:
        for hook in hooks:
            hook.remove()
        with torch.no_grad():
            for i, weight in kept.items():
                convs[i].weight.copy_(weight)


def openvino_scorers(onnx_path, run: int) -> dict:
    """name -> (score function of one run of ``run`` uint8 frames, from stream k) for ov-fp32, ov-bf16 and each cut."""
    ov = import_openvino()
    core = ov.Core()

    def read():
        model = core.read_model(str(onnx_path))
        shape = model.inputs[0].get_partial_shape()
        shape[0] = run
        model.reshape({model.inputs[0].any_name: shape})
        return model

    def compiled(model, precision):
        config = {"INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": 2, "INFERENCE_NUM_THREADS": 2, "ENABLE_CPU_PINNING": False}
        net = core.compile_model(model, "CPU", config)
        return [net.create_infer_request() for _ in range(2)]

    def whole(precision):
        requests = compiled(read(), precision)
        return lambda k, frames: requests[k].infer({0: frames}, share_inputs=True)[0].copy()

    def cut(node_name):
        model = read()
        output = next(op for op in model.get_ordered_ops() if op.get_friendly_name() == node_name).output(0)
        head = compiled(ov.Model([output], model.get_parameters(), "head"), "f32")
        model = read()  # the rest from a second copy: replacing the cut tensor's consumers edits the graph
        output = next(op for op in model.get_ordered_ops() if op.get_friendly_name() == node_name).output(0)
        parameter = ov.opset13.parameter(output.get_partial_shape(), output.get_element_type(), name="head_output")
        for consumer in list(output.get_target_inputs()):
            consumer.replace_source_output(parameter.output(0))
        rest = compiled(ov.Model(model.get_results(), [parameter], "rest"), "bf16")
        return lambda k, frames: rest[k].infer({0: head[k].infer({0: frames}, share_inputs=True)[0]}, share_inputs=True)[0].copy()

    scorers = {"ov-fp32": whole("f32"), "ov-bf16": whole("bf16")}
    scorers.update({f"f32 head to the end of {name}, bf16 after": cut(node) for name, node in CUTS.items()})
    return scorers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-frames", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=4.0, help="timing window per variant and round")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--run", type=int, default=4, help="frames per OpenVINO request")
    output_options(parser)
    args = parser.parse_args()
    out = results_file(args, "bf16_probe.json")
    torch.set_num_threads(2)
    from run_benchmarks import study_clip  # noqa: E402 (makes the study clip if missing)

    model, config = load_model(WEIGHTS)
    folded = FoldedModel(model, config).eval()
    frames = {"check": np.concatenate([decode_all(SHARED / path, config.input_size)[0] for path in CHECK]),
              "study": decode_all(study_clip(5000), config.input_size, args.study_frames)[0]}

    def torch_score(batch_frames: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = [folded(torch.from_numpy(batch_frames[i : i + 64])) for i in range(0, len(batch_frames), 64)]
        return abnormal_score(torch.softmax(torch.cat(logits).float(), 1).numpy(), config.abnormal_indices)

    def difference(scores: dict, reference: dict) -> dict:
        return {k: {"max": round(float(np.abs(scores[k] - reference[k]).max()), 4),
                    "mean": round(float(np.abs(scores[k] - reference[k]).mean()), 5)} for k in frames}

    convs = [m for m in folded.model.modules() if isinstance(m, torch.nn.Conv2d)]
    reference = {k: torch_score(f) for k, f in frames.items()}
    every = {i: "wio" for i in range(len(convs))}
    cases = {"every convolution (weights, inputs, outputs)": every,
             **{f"every convolution but the first {k}": {i: p for i, p in every.items() if i >= k} for k in (1, 2, 3, 9, 15)},
             "the first two convolutions only": {0: "wio", 1: "wio"},
             "the first depthwise convolution's weights only": {1: "w"},
             "every convolution but the first depthwise convolution's weights": {**every, 1: "io"}}
    emulation = []
    for name, what in cases.items():
        row = {"rounded to bf16": name, "max / mean |score - fp32|": difference(emulated(folded, frames, torch_score, convs, what), reference)}
        emulation.append(row)
        print("emulated:", name, row["max / mean |score - fp32|"], flush=True)
    first_dw = folded.model.blocks[0][0]
    scale = (first_dw.bn1.weight / torch.sqrt(first_dw.bn1.running_var + first_dw.bn1.eps)).detach()
    weights = first_dw.conv_dw.weight.detach()
    kernels = [{"channel": c, "max |weight|": round(float(weights[c].abs().max()), 3), "sum of weights": round(float(weights[c].sum()), 4),
                "batch-norm scale": round(float(scale[c]), 3)} for c in range(len(weights))
               if float(weights[c].abs().max()) > 1 and abs(float(weights[c].sum())) < 0.1 * float(weights[c].abs().max())]

    scorers = openvino_scorers(WEIGHTS / "model.fp32.onnx", args.run)
    pool, streams = ThreadPoolExecutor(2), threading.local()
    taken = itertools.count()

    def stream() -> int:
        """This pool thread's own request (0 or 1): a request runs one inference at a time."""
        if not hasattr(streams, "k"):
            streams.k = next(taken)
        return streams.k

    def ov_scores(score_run, batch_frames: np.ndarray) -> np.ndarray:
        runs = [batch_frames[i : i + args.run] for i in range(0, len(batch_frames), args.run)]
        runs = [np.ascontiguousarray(r) if len(r) == args.run else np.concatenate([r, np.zeros((args.run - len(r), *r.shape[1:]), r.dtype)])
                for r in runs]
        logits = list(pool.map(lambda run: score_run(stream(), run), runs))
        return abnormal_score(torch.softmax(torch.from_numpy(np.concatenate(logits)[: len(batch_frames)]), 1).numpy(), config.abnormal_indices)

    ov_reference = {k: ov_scores(scorers["ov-fp32"], f) for k, f in frames.items()}
    openvino = {name: {"max / mean |score - ov-fp32|": difference({k: ov_scores(s, f) for k, f in frames.items()}, ov_reference),
                       "frames_per_second": []} for name, s in scorers.items()}
    timing = np.ascontiguousarray(frames["check"][: 64 * args.run])
    for _ in range(args.repeats):
        for name, score_run in scorers.items():
            ov_scores(score_run, timing[: 4 * args.run])  # warm-up
            start, done = time.perf_counter(), 0
            while time.perf_counter() - start < args.seconds:
                ov_scores(score_run, timing)
                done += len(timing)
            openvino[name]["frames_per_second"].append(round(done / (time.perf_counter() - start), 1))
    for name, row in openvino.items():
        print("openvino:", name, row, flush=True)

    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(["python", "benchmarks/bf16_probe.py", *sys.argv[1:]]),
              "machine": machine(), "versions": package_versions(), "weights": str(WEIGHTS), "weights_sha256": weights_sha256(WEIGHTS),
              "frames": {k: len(f) for k, f in frames.items()}, "tolerance of triage optimize": 0.05,
              "emulated in PyTorch (vs PyTorch fp32)": emulation,
              "first depthwise convolution: high-pass kernels (sum of weights under a tenth of the largest)": kernels,
              f"OpenVINO (runs of {args.run} frames, two one-thread streams)": openvino}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
