"""Can the shipped model run in int8 and still agree with fp32? A probe, not part of the product.

    pip install nncf torchao                      # not project dependencies: this probe only
    python benchmarks/int8_probe.py [--epochs 7] [--lr 2e-5]

Scores the frames of the shipped model's agreement check (its MODEL_CARD.md: the two WCE clips and
wcebleedgen/test, 562 frames) with int8 variants of the shipped weights and reports, per variant and
engine (``ort-int8``, ``ov-int8`` as ``triage run`` would run them), the max and mean |score - fp32
score| and model-only frames/s. ``triage optimize`` accepts a backend within 0.05 with identical events.

* ``ort-ptq``: the project's own int8 file (``backends.quantize_int8``: ONNX Runtime static QDQ, stem,
  head and depthwise convolutions in float), calibrated here on 300 training frames;
* ``nncf-ptq``: NNCF post-training quantization of every convolution with full bias correction;
* ``nncf-qat``: NNCF's quantized model (its PyTorch fake-quantizers) fine-tuned to reproduce the fp32
  model's logits (distillation, MSE) on the 1,494 wcebleedgen/train frames, then exported as QDQ.

Calibration and distillation use training frames only; the check frames are never trained on.
Writes ``benchmarks/results/int8_probe.json`` (``--results DIR``: DIR/int8_probe.json).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from clips import REPO, SHARED, WEIGHTS, output_options, results_file  # benchmarks/ is the script's folder, so on sys.path

sys.path.insert(0, str(REPO))
CHECK = ["videos/wcebleedgen_mixed_triage_4fps.mp4", "videos/wcebleedgen_bleeding_run_0419-0510_4fps.mp4",
         "wcebleedgen/test/bleeding", "wcebleedgen/test/non-bleeding"]
TRAIN = ["wcebleedgen/train/bleeding", "wcebleedgen/train/non-bleeding"]
CALIBRATION = 300

from capsule_triage.backends import onnx_backend, quantize_int8, runs_here  # noqa: E402
from capsule_triage.cpu_info import machine  # noqa: E402
from capsule_triage.classifier import softmax  # noqa: E402
from capsule_triage.optimize import decode_all, measure_fps  # noqa: E402
from capsule_triage.versions import package_versions  # noqa: E402
from capsule_triage.torch_backend import FoldedModel, static_same_padding  # noqa: E402
from capsule_triage.weights import load_model  # noqa: E402


def frames(parts: list[str], size: int) -> np.ndarray:
    return np.concatenate([decode_all(SHARED / part, size)[0] for part in parts])


def onnx_scores(engine: str, path: Path, x: np.ndarray, abnormal: int, run: int = 32) -> np.ndarray:
    backend = onnx_backend(engine, path, threads=2, batch_size=run)
    scores = np.concatenate([softmax(backend.logits(x[i : i + run]))[:, abnormal] for i in range(0, len(x), run)])
    backend.close()
    return scores


def torch_logits(model: torch.nn.Module, x: np.ndarray, run: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(x[i : i + run])) for i in range(0, len(x), run)])


def distill(student: torch.nn.Module, teacher: torch.nn.Module, train: np.ndarray, *, epochs: int, lr: float,
            check: np.ndarray, reference: np.ndarray, abnormal: int, seed: int = 0) -> list[dict]:
    """Fine-tune ``student`` (fake-quantized) towards the fp32 ``teacher``'s logits; BatchNorm stays frozen."""
    rng = np.random.default_rng(seed)
    targets = torch_logits(teacher, train)
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)
    history = []
    for epoch in range(epochs):
        student.train()
        for module in student.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
        order, total = rng.permutation(len(train)), 0.0
        for start in range(0, len(train), 32):
            pick = order[start : start + 32]
            x, y = torch.from_numpy(train[pick]), targets[pick]
            if rng.random() < 0.5:  # horizontal flip: the teacher's logits are recomputed for it
                x = x.flip(2)
                with torch.no_grad():
                    y = teacher(x)
            loss = torch.nn.functional.mse_loss(student(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(pick)
        student.eval()
        diff = np.abs(torch.softmax(torch_logits(student, check), 1)[:, abnormal].numpy() - reference)
        history.append({"epoch": epoch + 1, "train_mse": round(total / len(train), 5),
                        "check_max_diff_fake_quant": round(float(diff.max()), 4)})
        print(history[-1], flush=True)
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--lr", type=float, default=2e-5)
    output_options(parser, cache=False)
    args = parser.parse_args()
    missing = [name for name in ("nncf", "torchao") if importlib.util.find_spec(name) is None]  # QA 127 #3: a traceback
    if missing:  # named nncf alone
        raise SystemExit(f"int8_probe.py needs {' and '.join(missing)}: pip install nncf torchao (not project dependencies)")
    out = results_file(args, "int8_probe.json")
    import nncf
    import onnx

    torch.manual_seed(0)
    model, config = load_model(WEIGHTS)
    size, abnormal = config.input_size, config.abnormal_indices[0]
    check, train = frames(CHECK, size), frames(TRAIN, size)
    calibration = train[np.random.default_rng(0).permutation(len(train))[:CALIBRATION]]
    fp32_file = WEIGHTS / "model.fp32.onnx"
    reference = onnx_scores("ort-fp32", fp32_file, check, abnormal)
    engines = [e for e in ("ort-int8", "ov-int8") if runs_here(e)]
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(["python", "benchmarks/int8_probe.py", *sys.argv[1:]]),
              "machine": machine(),  # left for later (QA 35): the file held no command or CPU
              "check": CHECK, "check_frames": len(check), "train_frames": len(train), "calibration_frames": CALIBRATION,
              "epochs": args.epochs, "lr": args.lr, "versions": package_versions(), "variants": {}}
    fp32_speed = {e: round(measure_fps(onnx_backend(e, fp32_file, threads=2, batch_size=8), check, 8, min_seconds=3), 1)
                  for e in ("ort-fp32", "ov-fp32") if runs_here(e)}
    report["fp32_frames_per_second"] = fp32_speed

    def record(name: str, path: Path, **extra) -> None:
        row = dict(extra)
        for engine in engines:
            diff = np.abs(onnx_scores(engine, path, check, abnormal) - reference)
            backend = onnx_backend(engine, path, threads=2, batch_size=8)
            row[engine] = {"max_score_diff": round(float(diff.max()), 4), "mean_score_diff": round(float(diff.mean()), 5),
                           "frames_per_second": round(measure_fps(backend, check, 8, min_seconds=3), 1)}
            backend.close()
        report["variants"][name] = row
        print(name, row, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        record("ort-ptq", quantize_int8(fp32_file, tmp / "ort-ptq.onnx", calibration))

        ptq = nncf.quantize(onnx.load(str(fp32_file)), nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))], lambda x: {"frames": x}),
                            preset=nncf.QuantizationPreset.MIXED, subset_size=CALIBRATION, fast_bias_correction=False)
        onnx.save(ptq, str(tmp / "nncf-ptq.onnx"))
        record("nncf-ptq", tmp / "nncf-ptq.onnx")

        teacher = FoldedModel(static_same_padding(model, size), config).eval()
        student, _ = load_model(WEIGHTS)
        student = nncf.quantize(FoldedModel(static_same_padding(student, size), config).eval(),
                                nncf.Dataset([torch.from_numpy(calibration[i : i + 1]) for i in range(len(calibration))]),
                                preset=nncf.QuantizationPreset.MIXED, subset_size=CALIBRATION)
        started = time.perf_counter()
        history = distill(student, teacher, train, epochs=args.epochs, lr=args.lr, check=check, reference=reference, abnormal=abnormal)
        example = torch.zeros((2, size, size, 3), dtype=torch.uint8)
        exported = nncf.strip(student, do_copy=True, example_input=example)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(exported, (example,), str(tmp / "nncf-qat.onnx"), input_names=["frames"], output_names=["logits"],
                              dynamic_axes={"frames": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
        record("nncf-qat", tmp / "nncf-qat.onnx", history=history, train_minutes=round((time.perf_counter() - started) / 60, 1))

    out.write_text(json.dumps(report, indent=2) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
