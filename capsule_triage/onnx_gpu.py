"""ONNX Runtime on a GPU: the providers for a device (its number; TensorRT's engine cache and shape profile) and the
lock under which a session that builds a TensorRT engine is made, so that the workers of one host build an engine once
and never read one another's half-written files."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np

from .errors import DataWarning

TENSORRT = "TensorrtExecutionProvider"
TENSORRT_RUN = 32  # frames per run of a TensorRT engine unless the caller gives its batch_size (optimize times no ort-* on a GPU)
LOCK_NAME = ".building.lock"
# rev-GPU #1/#2: the CUDA provider computes "fp32" in TF32 on Ampere and later unless told (torch's fp32 here is exact:
# device.exact_fp32; TensorRT's provider has no such switch: its engines may use TF32), and benchmarks every cuDNN
# algorithm for each new batch shape (seconds each: a study's last, shorter batch, one thinned by --skip-duplicates):
# cuDNN's heuristic choice instead, still per shape (rev104 #3)
CUDA_OPTIONS = {"use_tf32": "0", "cudnn_conv_algo_search": "HEURISTIC"}


def gpu_providers(device: str, available: list[str], onnx_path: str | Path, run: int | None = None, *,
                  tensorrt: bool = True) -> list:
    """ONNX Runtime's GPU providers for ``device`` ("cuda" or "cuda:N"), with the device number (the providers otherwise
    take GPU 0 whatever was asked) and, for TensorRT, an engine cache, so that each new process does not build the engine
    again (minutes for a large network), and a shape profile of runs of 1 to ``run`` frames (default
    :data:`TENSORRT_RUN`; rev90 #8: without one, an engine was built for the first run's size and again for each other,
    a study's last, shorter run included). ``tensorrt=False`` leaves TensorRT out: an ``ort-int8`` file's Q/DQ nodes are
    unsigned and asymmetric, which TensorRT does not take (rev94 #3: the graph would be cut into engines whose inputs are
    inner tensors, outside the profile). [] for the CPU."""
    if not device.startswith("cuda"):
        return []
    index = int(device.partition(":")[2] or 0)
    options = {"CUDAExecutionProvider": {"device_id": index, **CUDA_OPTIONS}}
    if tensorrt and TENSORRT in available:  # rev94 #2: the file read and digested only for TensorRT
        options = {TENSORRT: {"device_id": index, **tensorrt_profile(onnx_path, run or TENSORRT_RUN), **_tensorrt_cache(onnx_path)},
                   **options}
    return [(name, provider_options) for name, provider_options in options.items() if name in available]


def frame_input(onnx_path: str | Path) -> tuple[str, list[int | None]]:
    """The name and shape of the model's (first) input, None for a dimension the file leaves free (the batch)."""
    import onnx

    graph_input = onnx.load(str(onnx_path), load_external_data=False).graph.input[0]
    return graph_input.name, [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]


def tensorrt_profile(onnx_path: str | Path, run: int) -> dict:
    """TensorRT's optimisation profile of the frame input: runs of 1 to ``run`` frames, tuned for ``run``, the other
    dimensions as the file fixes them; {} when it fixes the batch too, or leaves another dimension free (TensorRT then
    profiles the shapes it sees)."""
    name, dims = frame_input(onnx_path)
    if len(dims) < 2 or dims[0] is not None or any(d is None for d in dims[1:]):
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
    cannot be opened, or without ``fcntl`` (Windows). Waiting for another holder is said (rev94 #7: a process stopped
    while it held the lock, e.g. by Ctrl-Z, held every worker without a word)."""
    cache = dict(providers).get(TENSORRT, {}).get("trt_engine_cache_path")
    try:
        import fcntl
    except ImportError:
        fcntl = None
    with contextlib.ExitStack() as stack:
        if cache is not None and fcntl is not None:
            try:
                lock = stack.enter_context(open(Path(cache) / LOCK_NAME, "a"))  # let go when it closes
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    warnings.warn(f"{cache}: waiting for another process that is building or loading this TensorRT engine "
                                  f"(it holds {LOCK_NAME} there; a stopped one holds every worker)", DataWarning, stacklevel=3)
                    fcntl.flock(lock, fcntl.LOCK_EX)
            except OSError:  # rev94 #1: a file system without flock (Lustre without -o flock: ENOSYS; some NFS: ENOLCK)
                pass
        yield


def make_session(ort, path: str | Path, options, providers: list, run: int | None = None):
    """An ONNX Runtime session on ``providers`` (then the CPU); when it took TensorRT, one run of ``run`` blank frames
    (default :data:`TENSORRT_RUN`) under :func:`engine_lock`, so that its engine is built, or read from the cache, before
    another worker of the host reads it."""
    with engine_lock(providers):
        session = ort.InferenceSession(str(path), options, providers=providers + ["CPUExecutionProvider"])
        if TENSORRT in session.get_providers():
            frames = session.get_inputs()[0]  # rev94 #2: the session's own, not the file read again
            if frames.type == "tensor(uint8)" and len(frames.shape) == 4 and all(isinstance(d, int) for d in frames.shape[1:]):
                batch = frames.shape[0] if isinstance(frames.shape[0], int) else run or TENSORRT_RUN  # rev95 #6: a fixed batch
                session.run(None, {frames.name: np.zeros((batch, *frames.shape[1:]), np.uint8)})
    return session
