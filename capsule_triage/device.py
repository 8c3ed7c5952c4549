"""Device choice and the host-to-device copy, in one place."""

from __future__ import annotations

import numpy as np
import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` = CUDA when present, else CPU; otherwise the named device (``cpu``, ``cuda``, ``cuda:1``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
    return device


def to_device_nchw(frames_nhwc: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 NHWC numpy -> uint8 [N,3,H,W] on ``device`` (channels_last memory, no copy on CPU).

    On CUDA the batch goes through pinned host memory with a non-blocking copy, so the transfer
    overlaps work already queued on the stream.
    """
    tensor = torch.from_numpy(frames_nhwc)
    if device.type == "cuda":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    return tensor.permute(0, 3, 1, 2)
