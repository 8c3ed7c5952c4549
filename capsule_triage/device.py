"""Device choice and the host-to-device copy, in one place.

``torch`` is imported only when a CUDA device may exist or a tensor is made, so that a CPU run on
an ONNX Runtime backend never loads it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    import torch


def cuda_possible() -> bool:
    """False when this machine certainly has no CUDA device, decided without importing torch.

    On Linux the NVIDIA driver exposes ``/proc/driver/nvidia/version``; without it
    ``torch.cuda.is_available()`` is always False. Elsewhere we cannot tell cheaply.
    """
    if sys.platform.startswith("linux"):
        return os.path.exists("/proc/driver/nvidia/version")
    return True


def device_name(name: str = "auto") -> str:
    """The device ``name`` resolves to, as a string (``cpu``, ``cuda``, ``cuda:1``).

    Imports torch only when CUDA is asked for or may be present.

    Raises:
        ValueError: an unknown device, or CUDA asked for where there is none.
    """
    if name == "cpu" or (name == "auto" and not cuda_possible()):
        return "cpu"
    return str(resolve_device(name))


def resolve_device(name: str = "auto") -> "torch.device":
    """``auto`` = CUDA when present and this PyTorch build has kernels for it, else CPU; otherwise the
    named device (``cpu``, ``cuda``, ``cuda:1``), which must exist and be supported.

    Raises:
        ValueError: an unknown device, CUDA where there is none, a device number the machine does
            not have, or a GPU this PyTorch build has no kernels for.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and cuda_unsupported(0) is None else "cpu")
    try:
        device = torch.device(name.lower())  # 'CPU', 'CUDA:0' as typed
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):  # rev-GPU #4: mps, xpu, meta ... were taken, then failed in a traceback
        raise ValueError(f"--device {name}: {device.type} devices are not supported (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: {cuda_unusable()} (use cpu or auto)")
        count = torch.cuda.device_count()
        if (device.index or 0) >= count:
            raise ValueError(f"--device {name}: this machine has {count} CUDA device{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})")
        reason = cuda_unsupported(device.index or 0)
        if reason:
            raise ValueError(f"--device {name}: {reason} (use cpu)")
    return device


def cuda_unsupported(index: int) -> str | None:
    """Why this PyTorch build cannot run kernels on CUDA device ``index``, or None when it can.

    A wheel carries machine code for some GPU generations (``sm_XY``: runs on X.Y to X.9) and PTX
    (``compute_XY``: compiled at load for X.Y and newer); an older GPU (a V100 or a GTX 10xx under a
    build for sm_75 and up) otherwise fails at its first kernel with "no kernel image is available".
    """
    import torch

    if getattr(torch.version, "hip", None):  # ROCm: "cuda" devices are AMD GPUs with gfx... architectures
        return None
    major, minor = torch.cuda.get_device_capability(index)
    built = [(kind, int(number) // 10, int(number) % 10) for kind, number in
             (re.fullmatch(r"(sm|compute)_(\d+)[a-z]?", arch).groups() for arch in torch.cuda.get_arch_list()
              if re.fullmatch(r"(sm|compute)_(\d+)[a-z]?", arch))]
    if any((kind == "sm" and b_major == major and b_minor <= minor) or (kind == "compute" and (b_major, b_minor) <= (major, minor))
           for kind, b_major, b_minor in built):
        return None
    return (f"{torch.cuda.get_device_name(index)} (compute capability {major}.{minor}) is not supported by this PyTorch build "
            f"(built for {', '.join(torch.cuda.get_arch_list())})")


def cuda_unusable() -> str:
    """Why ``torch.cuda.is_available()`` is False here (rev90 #3: "not available on this machine" was said of a machine with
    a GPU and a CPU-only PyTorch, or a driver older than the build's CUDA)."""
    import torch

    if not cuda_possible():
        return "CUDA is not available on this machine"  # no NVIDIA driver
    if torch.version.cuda is None and not getattr(torch.version, "hip", None):
        return "this PyTorch build has no CUDA (a CPU-only wheel): install torch from PyPI or PyTorch's CUDA index to use the GPU"
    return (f"the NVIDIA driver is loaded but PyTorch (CUDA {torch.version.cuda or torch.version.hip}) cannot use a GPU: a "
            "driver older than the build's CUDA, or none visible (CUDA_VISIBLE_DEVICES)")


def usable_gpus() -> tuple[list[str], list[str]]:
    """The CUDA devices this PyTorch build can run on (``cuda:N``), and a line for each it cannot (rev90 #1: a batch gave
    every GPU a worker, and one on a GPU the build has no kernels for stopped the night at its setup)."""
    import torch

    usable, left = [], []
    for index in range(torch.cuda.device_count()):
        reason = cuda_unsupported(index)
        usable += [] if reason else [f"cuda:{index}"]
        left += [f"cuda:{index} is left out: {reason}"] if reason else []
    return usable, left


def bf16_unsupported(device: str) -> str | None:
    """Why CUDA device ``device`` cannot compute in bf16 natively (compute capability below 8.0: a T4, a V100; rev90 #4:
    ``torch.cuda.is_bf16_supported()`` says True there, as it counts emulation), or None (and None for the CPU)."""
    if not device.startswith("cuda"):
        return None
    import torch

    index = int(device.partition(":")[2] or 0)
    major, minor = torch.cuda.get_device_capability(index)
    if getattr(torch.version, "hip", None) or (major, minor) >= (8, 0):
        return None
    return f"{torch.cuda.get_device_name(index)} (compute capability {major}.{minor}) has no native bf16"


def gpu_name(device: str) -> str:
    """The name of CUDA device ``device`` ("cuda" or "cuda:N"), as ``triage optimize`` records it."""
    import torch

    return torch.cuda.get_device_name(int(device.partition(":")[2] or 0))


def auto_device_note(requested: str) -> str | None:
    """For ``--device auto`` on a machine whose GPU this PyTorch build cannot use: why the run is on
    the CPU (a warning, so a user with a GPU is not left guessing). None otherwise."""
    if requested != "auto" or not cuda_possible():
        return None
    import torch

    if torch.cuda.is_available():
        reason = cuda_unsupported(0)
    else:  # said only where the driver is known to be there, and not of GPUs hidden on purpose (rev91 #2)
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip() in ("", "-1")
        reason = cuda_unusable() if sys.platform.startswith("linux") and not hidden else None
    return f"{reason}: running on the CPU" if reason else None


def to_device_nchw(frames_nhwc: np.ndarray, device: "torch.device") -> "torch.Tensor":
    """uint8 NHWC numpy -> uint8 [N,3,H,W] on ``device`` (channels_last memory, no copy on CPU).

    On CUDA the batch goes through pinned host memory with a non-blocking copy (the caller orders it
    with its streams).
    """
    import torch

    return to_device(torch.from_numpy(frames_nhwc), device).permute(0, 3, 1, 2)


# Mixed precision for training and evaluation (inference picks its precision per backend, see backends.py).
PRECISIONS = ("fp32", "bf16", "fp16")


def check_precision(precision: str, device: "torch.device") -> None:
    """Raises ValueError for a precision ``device`` cannot train in (fp16 autocast is CUDA's)."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        from .cpu_info import bf16_emulated

        slow = bf16_emulated()  # rev54: bf16 advised where PyTorch emulates it
        raise ValueError(f"--precision fp16: mixed fp16 needs a CUDA device (this run is on {device}); "
                         + ("use fp32 (this CPU has no native bf16)" if slow else "use bf16 or fp32"))
    if precision == "bf16" and (reason := bf16_unsupported(str(device))):
        raise ValueError(f"--precision bf16: {reason}; use fp16 (mixed, with loss scaling) or fp32")


def autocast(device: "torch.device", precision: str):
    """The autocast context of ``precision`` on ``device`` (disabled for fp32): matrix products and
    convolutions in bf16/fp16, reductions and the loss in fp32."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    return torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32")


def exact_fp32(device: "torch.device") -> None:
    """fp32 arithmetic as named on a CUDA device: cuDNN convolutions default to TF32 on Ampere and
    newer GPUs (10 mantissa bits), which moves scores; off for the whole process (no effect on the CPU)."""
    if device.type == "cuda":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def to_device(tensor: "torch.Tensor", device: "torch.device") -> "torch.Tensor":
    """A host tensor on ``device``: on CUDA through pinned memory with a non-blocking copy, so the CPU
    prepares the next batch while the GPU works; unchanged on the CPU."""
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


@contextlib.contextmanager
def out_of_memory_raises(error: Callable[[], Exception]):
    """Within this block, a failed PyTorch allocation (:func:`out_of_memory`) raises ``error()`` instead, a one-line
    error naming what to change; any other exception passes as it is."""
    try:
        yield
    except RuntimeError as exc:
        if not out_of_memory(exc):
            raise
        raise error() from None


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says a PyTorch allocation failed: ``torch.OutOfMemoryError`` on a GPU, and on the CPU the
    plain RuntimeError of the default allocator ("DefaultCPUAllocator: can't allocate memory: ...", QA 55 #8)."""
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))
