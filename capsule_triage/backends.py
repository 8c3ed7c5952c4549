"""Inference backends: the same model and preprocessing run by PyTorch or by ONNX Runtime.

Every backend takes uint8 frames [N, H, W, 3] (already at the model's input size, as the reader
delivers them) and returns float32 logits [N, C]. The normalisation and border mask are folded into
the model (:class:`capsule_triage.torch_backend.FoldedModel`), so no per-frame Python work or float
copy happens outside it.

* ``torch-fp32`` / ``torch-bf16`` (CPU autocast; uses AVX-512-BF16 or AMX where present) /
  ``torch-fp16`` (CUDA autocast), channels_last: :mod:`capsule_triage.torch_backend`;
* ``ort-fp32`` and ``ort-int8`` (static QDQ int8 calibrated on real frames) on ONNX Runtime's CPU
  provider (CUDA/TensorRT providers are used when onnxruntime-gpu offers them): here. This module
  does not import torch, so a run on an ONNX backend never loads it (about 600 MB less memory).

A lower precision is only chosen automatically after ``triage optimize`` showed that it agrees
with fp32 on real frames (see :mod:`capsule_triage.optimize`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BACKENDS = ("torch-fp32", "torch-bf16", "torch-fp16", "ort-fp32", "ort-int8")


def split_runs(frames: np.ndarray, size: int | None) -> list[np.ndarray]:
    """``frames`` as consecutive runs of at most ``size`` frames (views, no copy; None: one run)."""
    step = size or max(1, len(frames))
    return [frames[i : i + step] for i in range(0, max(1, len(frames)), step)]


class OnnxBackend:
    """An exported :class:`~capsule_triage.torch_backend.FoldedModel` on ONNX Runtime.

    Args:
        path: the ONNX file.
        name: backend name (``ort-fp32``, ``ort-int8``).
        threads: intra-op threads of each run (default: ONNX Runtime's, one per physical core).
        batch_size: frames per ``session.run``; a larger input is split (``None``: never split).
        streams: runs in flight at once on the same session (ONNX Runtime's ``run`` is thread-safe
            and releases the GIL). For small CNNs on a few cores, two 1-thread streams beat one
            2-thread run: no synchronisation between the threads inside each layer.
        device: "cpu" or "cuda[:N]" (TensorRT/CUDA providers when onnxruntime-gpu has them).
    """

    def __init__(self, path: str | Path, *, name: str, threads: int | None = None, batch_size: int | None = None,
                 streams: int = 1, device: str = "cpu"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default, one per physical core
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
        self.threads = threads
        self.batch_size = batch_size
        self.streams = max(1, streams)
        self._pool = None
        if self.streams > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix="capsule-triage-ort")

    def _run(self, frames_nhwc: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(frames_nhwc)})[0].astype(np.float32)

    def logits(self, frames_nhwc: np.ndarray) -> np.ndarray:
        runs = split_runs(frames_nhwc, self.batch_size)
        outputs = self._pool.map(self._run, runs) if self._pool is not None and len(runs) > 1 else map(self._run, runs)
        return np.concatenate(list(outputs))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


FLOAT_STEM_CONVS = 4  # the first convolutions see the raw, hard-masked image: int8 there costs the most accuracy
FLOAT_HEAD_CONVS = 2  # the last convolutions feed the classifier directly


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, calibration_frames: np.ndarray, *, batch_size: int = 16) -> Path:
    """Static QDQ int8 (per-channel int8 weights, uint8 activations) calibrated on real frames.

    Stay in float: the first :data:`FLOAT_STEM_CONVS` and last :data:`FLOAT_HEAD_CONVS`
    convolutions, and every depthwise convolution (memory-bound, so int8 gains little there, and
    with one filter per channel its errors do not average out). On the shipped Lite0 model, scored
    on the two shared real clips against fp32 (2026-11-22): int8 everywhere moved scores by up to
    0.98; stem and head in float by up to 0.089 with changed events; also the depthwise
    convolutions in float, calibrated on 256 WCEBleedGen training frames, by 0.036 with identical
    events, at 206 vs 195 frames/s for fp32.
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
        convs = [node for node in onnx.load(str(prepared)).graph.node if node.op_type == "Conv"]
        depthwise = [node.name for node in convs if any(a.name == "group" and a.i > 1 for a in node.attribute)]
        names = [node.name for node in convs]
        keep_float = sorted(set(names[:FLOAT_STEM_CONVS] + names[-FLOAT_HEAD_CONVS:] + depthwise))
        quantize_static(
            str(prepared), str(int8_path), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"], nodes_to_exclude=keep_float,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    finally:
        prepared.unlink(missing_ok=True)
    return Path(int8_path)
