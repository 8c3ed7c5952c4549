"""Batched, on-device preprocessing: uint8 frames in, normalised border-neutral tensors out.

Contract: input uint8 [N, 3, H, W] (any memory format; NHWC frames permuted without a copy arrive
as channels_last), square or not; output float32 [N, 3, S, S] with S = ``config.input_size``,
normalised with the model's own mean/std, and zero (= the mean colour) outside the field of view, so
the model never sees the scope's black border or burned-in text. The same module runs in training,
evaluation and inference, so a model is always fed exactly as it was trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .model_config import ModelConfig

FOV_LUMA_THRESHOLD = 0.08  # a pixel brighter than this (0-1 scale) is inside the endoscope's view
FOV_MIN_FRACTION = 0.05  # a row/column is inside the view when this fraction of it is bright


def circle_mask(size: int, radius_fraction: float) -> torch.Tensor:
    """float32 [1, 1, size, size]: 1 inside the centred circle of radius ``radius_fraction * size/2``."""
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    dist2 = coords[:, None] ** 2 + coords[None, :] ** 2
    return (dist2 <= (radius_fraction * size / 2) ** 2).float()[None, None]


def fov_boxes(frames: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """Per-frame square box (top, left, side) around the bright field of view of uint8 [N,3,H,W] frames.

    The bright rows and columns of the whole batch are found on the frames' device and come back
    to the host in one copy (on a GPU: one synchronisation per batch, not two per frame).
    """
    bright = frames.sum(dim=1, dtype=torch.int16) > FOV_LUMA_THRESHOLD * 255 * 3  # mean of R, G, B, without a float copy of the frames
    n, h, w = bright.shape
    extents = [_extent(bright.float().mean(dim=dim) > FOV_MIN_FRACTION) for dim in (2, 1)]  # rows [N, H], columns [N, W]
    boxes = []
    for (rows, top, bottom), (cols, left, right) in zip(*(e.tolist() for e in extents)):
        if rows < h // 4 or cols < w // 4:  # nothing found (dark frame): centre square
            side = min(h, w)
            boxes.append(((h - side) // 2, (w - side) // 2, side))
            continue
        side = min(max(bottom - top, right - left), h, w)
        cy, cx = (top + bottom) // 2, (left + right) // 2
        top = min(max(cy - side // 2, 0), h - side)
        left = min(max(cx - side // 2, 0), w - side)
        boxes.append((top, left, side))
    return boxes


def _extent(inside: torch.Tensor) -> torch.Tensor:
    """int64 [N, 3] of a bool [N, L]: how many are True, the first True, one past the last True."""
    length = inside.shape[1]
    first = inside.int().argmax(dim=1)  # argmax returns the first maximum
    last = length - inside.flip(1).int().argmax(dim=1)
    return torch.stack([inside.sum(dim=1), first, last], dim=1).cpu()


class Preprocessor(nn.Module):
    """Centre-crop, resize, normalise and border-neutralise a batch of uint8 frames."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.input_size = config.input_size
        self.border = config.border
        self.mode = config.interpolation
        mean = torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1)
        # (x / 255 - mean) / std == x * scale + shift, folded into one multiply-add.
        self.register_buffer("scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("shift", -mean / std, persistent=False)
        mask = circle_mask(config.input_size, config.border_radius) if config.border != "none" else torch.ones(1, 1, 1, 1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"Preprocessor expects uint8 [N,3,H,W], got {frames.dtype} {tuple(frames.shape)}")
        if self.border == "fov":
            x = torch.cat([self._resize(frames[i : i + 1, :, t : t + s, l : l + s].float()) for i, (t, l, s) in enumerate(fov_boxes(frames))])
        else:
            h, w = frames.shape[-2:]
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            x = self._resize(frames[:, :, top : top + side, left : left + side].float())
        x = x * self.scale + self.shift
        return x * self.mask

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == self.input_size and x.shape[-2] == self.input_size:
            return x
        return F.interpolate(x, size=(self.input_size, self.input_size), mode=self.mode, antialias=True, align_corners=False)
