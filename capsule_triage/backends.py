"""Inference backends: the same model and preprocessing run by PyTorch or by ONNX Runtime.

Every backend takes uint8 frames [N, H, W, 3] (already at the model's input size, as the reader
delivers them) and returns float32 logits [N, C]: ``logits(frames)``, or ``submit(frames)`` whose
``result()`` gives them (on CUDA it returns while the device works, so the caller can read the next
batch meanwhile; the frames may be reused as soon as it returns). The normalisation and border mask
are folded into the model (:class:`capsule_triage.torch_backend.FoldedModel`), so no per-frame
Python work or float copy happens outside it.

* ``torch-fp32`` / ``torch-bf16`` (CPU autocast; uses AVX-512-BF16 or AMX where present) /
  ``torch-fp16`` (CUDA autocast), channels_last: :mod:`capsule_triage.torch_backend`;
* ``ort-fp32`` and ``ort-int8`` (static QDQ int8 calibrated on real frames) on ONNX Runtime's CPU
  provider (CUDA/TensorRT providers are used when onnxruntime-gpu offers them): :class:`OnnxBackend`;
* ``ov-fp32``, ``ov-bf16`` and ``ov-int8``: the same two ONNX files on OpenVINO's CPU plugin
  (:class:`OpenVinoBackend`). Unlike ONNX Runtime on x86, OpenVINO runs the layers left in float
  in bf16 on CPUs with native bf16 (AVX-512-BF16 or AMX) — the depthwise convolutions that int8
  keeps in float are most of Lite0's time.

This module does not import torch, so a run on an ONNX file never loads it (about 600 MB less memory),
except for a model that detects the field of view, whose crop runs in torch (:class:`ViewCropped`).

A lower precision is only chosen automatically after ``triage optimize`` showed that it agrees
with fp32 on real frames (see :mod:`capsule_triage.optimize`).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache, partial
from pathlib import Path

import numpy as np

from .interrupts import InterruptedAfterWriting, deferring_interrupts
from .onnx_gpu import TENSORRT, TENSORRT_RUN, gpu_providers, make_session

BACKENDS = ("torch-fp32", "torch-bf16", "torch-fp16", "ort-fp32", "ort-int8", "ov-fp32", "ov-bf16", "ov-int8")
ENGINE_MODULES = {"torch": "torch", "ort": "onnxruntime", "ov": "openvino"}  # backend prefix -> the package that runs it


def onnx_file(backend: str) -> str | None:
    """The ONNX file (in the weights folder, made by ``triage optimize``) a backend runs; None for torch."""
    engine, precision = backend.split("-", 1)
    if engine == "torch":
        return None
    return "model.int8.onnx" if precision == "int8" else "model.fp32.onnx"


def import_onnxruntime():
    """``onnxruntime`` with its telemetry off.

    Its official Linux wheels (1DS telemetry since 2026) kept a device id and a queue of events to upload
    under ``~/.cache/Microsoft/DeveloperTools/.onnxruntime`` (QA 24: 131 queued events naming the Python
    path, the CPU and the network; no connection seen), and printed an ANSI-coloured line into cron logs
    when HOME could not be written. ``ORT_DISABLE_TELEMETRY=1`` set before its first import is its full
    opt-out: no uploader, device id or cache (latched for the process). A value the user set is kept.
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


def import_openvino():
    """``openvino``, imported without its usage telemetry.

    ``import openvino`` imports its model converter, which imports ``openvino_telemetry``: every run
    then wrote ``~/intel/openvino_ga_cid`` and ``~/intel/stats`` and looked up www.google-analytics.com
    (QA, strace). A hospital's nightly job must not talk to anyone; the converter falls back to
    OpenVINO's own telemetry stub when the package cannot be imported, which this arranges (unless
    something imported it earlier). Scoring never uses the converter.
    """
    import sys

    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # None in sys.modules: ImportError on import
    import openvino

    return openvino


@cache
def openvino_native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin has native bf16 here (AVX-512-BF16 or AMX)."""
    ov = import_openvino()

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def engine_error(backend: str) -> str | None:
    """Why ``backend``'s engine cannot be imported here ("openvino (libopenvino.so.1: ...)"), None when it can.

    Installed is not importable: a package whose shared library is missing or built for another CPU or
    Python fails on import (QA 107 #4), so ``auto`` tries the engine before it chooses the backend."""
    return _import_error(ENGINE_MODULES[backend.split("-")[0]])


@cache
def _import_error(module: str) -> str | None:  # rev100 #12: once per engine, whatever it raises
    # rev101 #4: OpenVINO imported may still lack its CPU plugin (Core fails): asking the plugin its bf16 loads it
    importer = {"onnxruntime": import_onnxruntime, "openvino": openvino_native_bf16}.get(module)
    error = None
    try:  # QA 115 #1: a Ctrl-C or SIGTERM inside OpenVINO's native start came back as its own error ("initialization
        with deferring_interrupts():  # failed"): the engine was called broken and the run went on, exit 0; held till after
            try:
                importer() if importer else importlib.import_module(module)
            except Exception as exc:  # noqa: BLE001 - an extension module's loader may raise more than ImportError
                error = f"{module} ({' '.join(str(exc).split())[:160] or type(exc).__name__})"
    except InterruptedAfterWriting:  # (nothing was written: an interrupt as any other, and nothing cached)
        raise KeyboardInterrupt from None
    return error


def runs_here(backend: str) -> bool:
    """Whether ``backend`` can run on this machine: its engine is installed, and ``ov-bf16`` has native
    bf16 (a ``backends.json`` may have been measured on another machine). An engine installed but failing on import counts
    as one that runs, so that ``auto`` names it when it leaves it out (:func:`engine_error`)."""
    if importlib.util.find_spec(ENGINE_MODULES[backend.split("-")[0]]) is None:
        return False
    return backend != "ov-bf16" or engine_error(backend) is not None or openvino_native_bf16()  # broken: auto says so


def inference_threads(backend) -> int | None:
    """Threads per run: as set, torch's own count (process-wide: ``torch.set_num_threads``), or None where the
    engine chooses (ONNX Runtime and OpenVINO untuned: about one per core)."""
    if getattr(backend, "threads", None):
        return int(backend.threads)
    if backend.name.startswith("torch-"):
        import torch

        return torch.get_num_threads()
    return None


class Done:
    """A backend call's logits, already computed: what :meth:`submit` returns on a backend that runs
    a call through before returning (every CPU backend). A CUDA backend returns a handle whose
    ``result()`` waits for the device (:class:`capsule_triage.torch_backend.OnDevice`)."""

    __slots__ = ("logits",)

    def __init__(self, logits: np.ndarray):
        self.logits = logits

    def result(self) -> np.ndarray:
        return self.logits


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
        ahead: :meth:`submit` returns before the scores, run in a thread of their own (default: on a GPU, so that the
            pipeline reads and copies the next batch while the device works, as the CUDA torch backend does; rev90 #7:
            ``session.run`` copied, ran and copied back before it returned).
    """

    def __init__(self, path: str | Path, *, name: str, threads: int | None = None, batch_size: int | None = None,
                 streams: int = 1, device: str = "cpu", ahead: bool | None = None):
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default, one per physical core
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = gpu_providers(device, ort.get_available_providers(), path, batch_size, tensorrt=not name.endswith("int8"))
        self.session = make_session(ort, path, options, providers, batch_size)
        if device.startswith("cuda") and "CUDAExecutionProvider" not in self.session.get_providers():
            raise ValueError(f"--device {device}: ONNX Runtime cannot use the GPU here (the onnxruntime package has no CUDA "
                             f"provider: install onnxruntime-gpu; or onnxruntime-gpu could not load its CUDA/cuDNN libraries), "
                             f"so {name} would run on the CPU; use a torch-* backend on the GPU, or --device cpu to run {name}")
        self.input_name = self.session.get_inputs()[0].name
        self.name = name
        self.precision = name.split("-")[-1]
        self.path = Path(path)
        self.threads = threads
        self.batch_size = batch_size
        # rev90 #8: runs within TensorRT's profile (onnx_gpu.gpu_providers), whatever the batches submitted
        self.run_size = batch_size or (TENSORRT_RUN if TENSORRT in self.session.get_providers() else None)
        self.streams = max(1, streams)
        self._pool = self._ahead = None
        if self.streams > 1:
            self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix="capsule-triage-ort")
        if device.startswith("cuda") if ahead is None else ahead:
            self._ahead = ThreadPoolExecutor(1, thread_name_prefix="capsule-triage-ort-ahead")

    def _run(self, frames_nhwc: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(frames_nhwc)})[0].astype(np.float32)

    def logits(self, frames_nhwc: np.ndarray) -> np.ndarray:
        runs = split_runs(frames_nhwc, self.run_size)
        pool = self._pool  # read once: close() from another thread sets it to None (rev53)
        outputs = pool.map(self._run, runs) if pool is not None and len(runs) > 1 else map(self._run, runs)
        return np.concatenate(list(outputs))

    def submit(self, frames_nhwc: np.ndarray) -> Done | Future:
        """The logits of ``frames_nhwc``: computed now, or (``ahead``) a future of them; the frames may be reused once this
        returns (the future scores its own copy)."""
        ahead = self._ahead
        if ahead is not None:
            return ahead.submit(self.logits, np.array(frames_nhwc))
        return Done(self.logits(frames_nhwc))

    def close(self) -> None:
        for pool in (self._ahead, self._pool):  # the one ahead first: it may still use the streams
            if pool is not None:
                pool.shutdown(wait=True)
        self._pool = self._ahead = None


OPENVINO_RUN = 8  # frames per request when no measured run size is given


class OpenVinoBackend:
    """An exported :class:`~capsule_triage.torch_backend.FoldedModel` on OpenVINO's CPU plugin.

    Same arguments as :class:`OnnxBackend` (``streams`` are OpenVINO's CPU streams, each running
    one request of ``batch_size`` frames with ``threads`` threads), except that the model is always
    compiled for a static batch (``batch_size``, default :data:`OPENVINO_RUN`) and a last, shorter
    run is padded: static shapes were faster than a dynamic batch, and they select other kernels —
    bf16 logits of a dynamic compile differed by up to 0.03 from the (identical) static ones at
    1, 2 and 32 frames, so the agreement check must see what runs.

    ``name`` sets the float precision: ``ov-fp32`` f32; ``ov-bf16`` bf16 (needs a CPU with native
    bf16); ``ov-int8`` runs the int8 ONNX file with its float layers in bf16 where the CPU has
    native bf16, else f32 (the precision actually compiled is :attr:`precision`). Threads are not
    pinned to cores: the decoder shares them. Inputs are shared with the requests, not copied.
    Calls from several threads are run one at a time (each call already uses every stream).
    """

    def __init__(self, path: str | Path, *, name: str, threads: int | None = None, batch_size: int | None = None,
                 streams: int = 1, device: str = "cpu"):
        ov = import_openvino()

        if device != "cpu":
            raise ValueError(f"backend {name} runs on the CPU only (got device {device!r}); use torch-fp16 on CUDA")
        core = ov.Core()
        native_bf16 = openvino_native_bf16()
        kind = name.split("-", 1)[1]
        if kind == "bf16" and not native_bf16:
            # QA 42: named no option, and suggested ov-int8 too, which the shipped model's agreement check rejects
            raise ValueError(f"--backend {name}: needs a CPU with native bf16 (AVX-512-BF16 or AMX), which this one lacks; use ov-fp32")
        float_precision = "bf16" if kind == "bf16" or (kind == "int8" and native_bf16) else "f32"
        model = core.read_model(str(path))
        batch_size = batch_size or OPENVINO_RUN
        shape = model.inputs[0].get_partial_shape()
        shape[0] = batch_size
        model.reshape({model.inputs[0].any_name: shape})
        self.streams = max(1, streams)
        config = {"INFERENCE_PRECISION_HINT": float_precision, "NUM_STREAMS": self.streams, "ENABLE_CPU_PINNING": False}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads * self.streams
        self.compiled = core.compile_model(model, "CPU", config)
        self._queue = ov.AsyncInferQueue(self.compiled, self.streams)
        self._outputs: dict[int, np.ndarray] = {}
        # the callback holds the results' dict, not self: OpenVINO's native queue holding a bound method made a cycle
        # the garbage collector cannot see, so a dropped backend kept its compiled model and threads (QA 46: +57 MB, +2 threads per load)
        self._queue.set_callback(partial(_keep_output, self._outputs))
        self._lock = threading.Lock()
        self.name = name
        self.precision = f"int8+{float_precision.replace('f32', 'fp32')}" if kind == "int8" else kind
        self.path = Path(path)
        self.threads = threads
        self.batch_size = batch_size

    def logits(self, frames_nhwc: np.ndarray) -> np.ndarray:
        runs = split_runs(frames_nhwc, self.batch_size)
        inputs = [np.ascontiguousarray(run) if len(run) == self.batch_size else
                  np.concatenate([run, np.zeros((self.batch_size - len(run), *run.shape[1:]), run.dtype)]) for run in runs]
        with self._lock:  # one call at a time: the queue and its results are shared (QA: threads got each other's scores)
            self._outputs.clear()
            try:
                for index, frames in enumerate(inputs):  # shared, not copied: `inputs` keeps them alive until wait_all
                    self._queue.start_async({0: frames}, index, share_inputs=True)
            finally:  # QA 82 #1: a Ctrl-C between two starts left requests reading freed inputs (an abort at exit)
                self._queue.wait_all()
            return np.concatenate([self._outputs.pop(i)[: len(run)] for i, run in enumerate(runs)])

    def submit(self, frames_nhwc: np.ndarray) -> Done:
        return Done(self.logits(frames_nhwc))

    def close(self) -> None:
        self._queue.wait_all()


def _keep_output(outputs: dict[int, np.ndarray], request, index: int) -> None:
    outputs[index] = request.get_output_tensor(0).data.astype(np.float32)  # a copy: the request's buffer is reused


ONNX_ENGINES = (OnnxBackend, OpenVinoBackend)


def onnx_backend(name: str, path: str | Path, *, view=None, **options) -> "OnnxBackend | OpenVinoBackend | ViewCropped":
    """The engine that runs backend ``name`` (``ort-*`` or ``ov-*``) on an ONNX file; for a model that
    detects the field of view, ``view`` is its ModelConfig and the engine takes the frames as read."""
    engine = (OpenVinoBackend if name.startswith("ov-") else OnnxBackend)(path, name=name, **options)
    return ViewCropped(engine, view) if view is not None and view.border == "fov" else engine


class ViewCropped:
    """An ONNX engine of a model that detects the field of view (border "fov"): the crop is
    data-dependent, so it runs on the host before the graph — each frame cropped to its view, resized
    and rounded to uint8 by the model's own :class:`~capsule_triage.preprocess.Preprocessor`, exactly
    the pixels the torch backends and training use — and the graph, exported from such crops,
    normalises, masks and scores them (QA 26: such models ran only in PyTorch, ~11 frames/s on 720p
    gastroscopy here). Imports torch (the crop's resize is torch's), and gives it the engine's threads
    (a batch worker's share of the cores: torch's own default is every core, review rev25)."""

    def __init__(self, engine: "OnnxBackend | OpenVinoBackend", config):
        import torch

        from .preprocess import Preprocessor

        self.engine = engine
        self.preprocess = Preprocessor(config)
        self.name, self.precision, self.batch_size = engine.name, engine.precision, engine.batch_size
        self.run_size = getattr(engine, "run_size", engine.batch_size)
        self.path, self.threads, self.streams = engine.path, engine.threads, engine.streams  # what bench and run.json report
        if engine.threads:
            torch.set_num_threads(engine.threads * engine.streams)

    def logits(self, frames_nhwc: np.ndarray) -> np.ndarray:
        return self.engine.logits(self.preprocess.views_nhwc(frames_nhwc))

    def submit(self, frames_nhwc: np.ndarray) -> Done | Future:
        return self.engine.submit(self.preprocess.views_nhwc(frames_nhwc))

    def close(self) -> None:
        self.engine.close()


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
    events, at 206 vs 195 frames/s for fp32 — on those two clips; on the 374 wcebleedgen/test frames,
    where the model is less sure, it moves scores by up to 0.175 and is rejected (2026-11-30, see
    :func:`capsule_triage.optimize.uncertain_frames`).
    """
    import onnx

    import_onnxruntime()  # its telemetry off before the quantizer imports it
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Frames(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([calibration_frames[i : i + batch_size] for i in range(0, len(calibration_frames), batch_size)])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"frames": np.ascontiguousarray(batch)}

    prepared, partial = Path(int8_path).with_suffix(".prep.onnx"), Path(int8_path).with_suffix(".partial")
    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        convs = [node for node in onnx.load(str(prepared)).graph.node if node.op_type == "Conv"]
        depthwise = [node.name for node in convs if any(a.name == "group" and a.i > 1 for a in node.attribute)]
        names = [node.name for node in convs]
        keep_float = sorted(set(names[:FLOAT_STEM_CONVS] + names[-FLOAT_HEAD_CONVS:] + depthwise))
        quantize_static(
            str(prepared), str(partial), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"], nodes_to_exclude=keep_float,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
        os.replace(partial, int8_path)  # whole or not at all
    finally:
        prepared.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return Path(int8_path)
