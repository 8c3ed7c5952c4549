"""ONNX Runtime on a GPU: the providers for a device (its number; TensorRT's engine cache and shape profile) and the
lock under which a session that builds a TensorRT engine is made, so that the workers of one host build an engine once
and never read one another's half-written files."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

TENSORRT = "TensorrtExecutionProvider"
TENSORRT_RUN = 32  # frames per run of a TensorRT engine when no run size was measured (`triage optimize` on the GPU)
LOCK_NAME = ".building.lock"


def gpu_providers(device: str, available: list[str], onnx_path: str | Path, run: int | None = None) -> list:
    """ONNX Runtime's GPU providers for ``device`` ("cuda" or "cuda:N"), with the device number (the providers otherwise
    take GPU 0 whatever was asked) and, for TensorRT, an engine cache, so that each new process does not build the engine
    again (minutes for a large network), and a shape profile of runs of 1 to ``run`` frames (default
    :data:`TENSORRT_RUN`; rev90 #8: without one, an engine was built for the first run's size and again for each other,
    a study's last, shorter run included). [] for the CPU."""
    if not device.startswith("cuda"):
        return []
    index = int(device.partition(":")[2] or 0)
    tensorrt = {"device_id": index, **tensorrt_profile(onnx_path, run or TENSORRT_RUN), **_tensorrt_cache(onnx_path)}
    options = {TENSORRT: tensorrt if TENSORRT in available else {}, "CUDAExecutionProvider": {"device_id": index}}
    return [(name, provider_options) for name, provider_options in options.items() if name in available]


def frame_input(onnx_path: str | Path) -> tuple[str, list[int | None], np.dtype]:
    """The name, shape and dtype of the model's (first) input, None for a dimension the file leaves free (the batch)."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    graph_input = onnx.load(str(onnx_path), load_external_data=False).graph.input[0]
    tensor = graph_input.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    return graph_input.name, dims, tensor_dtype_to_np_dtype(tensor.elem_type)


def tensorrt_profile(onnx_path: str | Path, run: int) -> dict:
    """TensorRT's optimisation profile of the frame input: runs of 1 to ``run`` frames, tuned for ``run``, the other
    dimensions as the file fixes them; {} when it leaves another free (TensorRT then profiles the shapes it sees)."""
    name, dims, _ = frame_input(onnx_path)
    if len(dims) < 2 or any(d is None for d in dims[1:]):
        return {}
    frame = "x".join(str(d) for d in dims[1:])
    return {f"trt_profile_{end}_shapes": f"{name}:{n}x{frame}" for end, n in (("min", 1), ("opt", run), ("max", run))}


def _tensorrt_cache(onnx_path: str | Path) -> dict:
    """TensorRT's engine cache options for one ONNX file: a folder per file content, because ONNX
    Runtime names an engine after the graph's node names, not its weights (a retrained model of the
    same architecture would load the old engine: microsoft/onnxruntime#6455). {} (no cache) when the
    cache folder cannot be made (a read-only home in a container)."""
    from .digests import file_sha256

    try:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "capsule_triage" / "tensorrt" / file_sha256(onnx_path)[:16]
        cache.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError):  # RuntimeError: Path.home() without a home
        return {}
    return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache)}


@contextlib.contextmanager
def engine_lock(providers: list):
    """Held while a session of these providers is made and first run: with TensorRT's engine cache, an exclusive lock on
    a file in the cache folder (rev90 #8: the workers of a batch on one host made their sessions at once, each building
    the same engine and writing it where the others read it). Nothing is held without that cache, where the lock file
    cannot be opened, or without ``fcntl`` (Windows)."""
    cache = dict(providers).get(TENSORRT, {}).get("trt_engine_cache_path")
    try:
        import fcntl
    except ImportError:
        fcntl = None
    with contextlib.ExitStack() as stack:
        if cache is not None and fcntl is not None:
            try:
                lock = stack.enter_context(open(Path(cache) / LOCK_NAME, "a"))
            except OSError:
                lock = None
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def make_session(ort, path: str | Path, options, providers: list, run: int | None = None):
    """An ONNX Runtime session on ``providers`` (then the CPU); when it took TensorRT, one run of ``run`` blank frames
    (default :data:`TENSORRT_RUN`) under :func:`engine_lock`, so that its engine is built, or read from the cache, before
    another worker of the host reads it."""
    with engine_lock(providers):
        session = ort.InferenceSession(str(path), options, providers=providers + ["CPUExecutionProvider"])
        if TENSORRT in session.get_providers():
            name, dims, dtype = frame_input(path)
            if all(d is not None for d in dims[1:]):
                session.run(None, {name: np.zeros((run or TENSORRT_RUN, *dims[1:]), dtype)})
    return session
