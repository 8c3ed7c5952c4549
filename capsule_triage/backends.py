"""Inference backends: the same model and preprocessing run by PyTorch or by ONNX Runtime.

Every backend takes uint8 frames [N, H, W, 3] (already at the model's input size, as the reader
delivers them) and returns float32 logits [N, C]. The normalisation and border mask are folded into
the model (:class:`FoldedModel`), so no per-frame Python work or float copy happens outside it.

* ``torch-fp32`` / ``torch-bf16`` (CPU autocast; uses AVX-512-BF16 or AMX where present) /
  ``torch-fp16`` (CUDA autocast), channels_last;
* ``ort-fp32`` and ``ort-int8`` (static QDQ int8 calibrated on real frames) on ONNX Runtime's CPU
  provider (CUDA/TensorRT providers are used when onnxruntime-gpu offers them).

A lower precision is only chosen automatically after ``triage optimize`` showed that it agrees
with fp32 on real frames (see :mod:`capsule_triage.optimize`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .device import to_device_nchw
from .model_config import ModelConfig
from .preprocess import Preprocessor

BACKENDS = ("torch-fp32", "torch-bf16", "torch-fp16", "ort-fp32", "ort-int8")


class FoldedModel(nn.Module):
    """uint8 NHWC frames -> logits: preprocessing + network in one graph (exportable to ONNX)."""

    def __init__(self, model: nn.Module, config: ModelConfig):
        super().__init__()
        self.preprocess = Preprocessor(config)
        self.model = model

    def forward(self, frames_nhwc: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(frames_nhwc.permute(0, 3, 1, 2))
        return self.model(x.contiguous(memory_format=torch.channels_last))


class TorchBackend:
    """PyTorch eager on CPU or CUDA; autocast for bf16/fp16; pinned, non-blocking copies on CUDA."""

    def __init__(self, model: nn.Module, config: ModelConfig, *, device: torch.device, precision: str):
        self.device = device
        self.precision = precision
        self.name = f"torch-{precision}"
        self.folded = FoldedModel(model, config).eval().to(device, memory_format=torch.channels_last)
        for param in self.folded.parameters():
            param.requires_grad_(False)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def logits(self, frames_nhwc: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            if self.stream is not None:  # copy on a side stream so it overlaps compute queued on the main one
                with torch.cuda.stream(self.stream):
                    frames = to_device_nchw(frames_nhwc, self.device).permute(0, 2, 3, 1)
                torch.cuda.current_stream(self.device).wait_stream(self.stream)
            else:
                frames = torch.from_numpy(frames_nhwc)
            return self.folded(frames).float().cpu().numpy()


class OnnxBackend:
    """An exported :class:`FoldedModel` on ONNX Runtime."""

    def __init__(self, path: str | Path, *, name: str, threads: int = 2, device: str = "cpu"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            providers = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available] + providers
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.name = name
        self.precision = name.split("-")[-1]
        self.path = Path(path)

    def logits(self, frames_nhwc: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(frames_nhwc)})[0].astype(np.float32)


def export_onnx(model: nn.Module, config: ModelConfig, path: str | Path) -> Path:
    """Export the folded model (uint8 NHWC input, dynamic batch) with the TorchScript-based exporter.

    Only fixed preprocessing folds into a graph: a detected field-of-view crop (border "fov") is
    data-dependent and runs in PyTorch.
    """
    if config.border == "fov":
        raise ValueError("ONNX export needs border 'circle' or 'none'; the 'fov' crop runs with the torch backends")
    folded = FoldedModel(model, config).eval()
    size = config.input_size
    example = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks become constants: intended
        torch.onnx.export(
            folded, (example,), str(path), input_names=["frames"], output_names=["logits"],
            dynamic_axes={"frames": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
        )
    return Path(path)


FLOAT_STEM_CONVS = 4  # the first convolutions see the raw, hard-masked image: int8 there costs the most accuracy
FLOAT_HEAD_CONVS = 2  # the last convolutions feed the classifier directly


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, calibration_frames: np.ndarray, *, batch_size: int = 16) -> Path:
    """Static QDQ int8 (per-channel int8 weights, uint8 activations) calibrated on real frames.

    The first :data:`FLOAT_STEM_CONVS` and last :data:`FLOAT_HEAD_CONVS` convolutions stay in
    float: on the shipped Lite0 model, quantizing every convolution moved scores by up to 0.98 on
    real frames, keeping only the first and last in float by up to 0.33, and these six by 0.055.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Frames(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([calibration_frames[i : i + batch_size] for i in range(0, len(calibration_frames), batch_size)])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"frames": np.ascontiguousarray(batch)}

    prepared = Path(int8_path).with_suffix(".prep.onnx")
    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        convs = [node.name for node in onnx.load(str(prepared)).graph.node if node.op_type == "Conv"]
        keep_float = convs[:FLOAT_STEM_CONVS] + convs[-FLOAT_HEAD_CONVS:]
        quantize_static(
            str(prepared), str(int8_path), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"], nodes_to_exclude=keep_float,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    finally:
        prepared.unlink(missing_ok=True)
    return Path(int8_path)
