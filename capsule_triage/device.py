"""Device choice and the host-to-device copy, in one place.

``torch`` is imported only when a CUDA device may exist or a tensor is made, so that a CPU run on
an ONNX Runtime backend never loads it.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

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
    """``auto`` = CUDA when present, else CPU; otherwise the named device (``cpu``, ``cuda``, ``cuda:1``)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
    return device


def to_device_nchw(frames_nhwc: np.ndarray, device: "torch.device") -> "torch.Tensor":
    """uint8 NHWC numpy -> uint8 [N,3,H,W] on ``device`` (channels_last memory, no copy on CPU).

    On CUDA the batch goes through pinned host memory with a non-blocking copy, so the transfer
    overlaps work already queued on the stream.
    """
    import torch

    tensor = torch.from_numpy(frames_nhwc)
    if device.type == "cuda":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    return tensor.permute(0, 3, 1, 2)
