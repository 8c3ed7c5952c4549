"""Training augmentations of the seed studies, batched on uint8 frames.

Contract: ``augment(frames, policy, generator)`` takes uint8 [N, 3, H, W] and returns uint8 of the same
shape, so the result goes through the model's own :class:`~capsule_triage.preprocess.Preprocessor`
exactly like an inference frame. Every random draw comes from ``generator``: the same generator state
gives the same batch (what ``--resume`` relies on).

Policies:
* ``bit`` (seed B): 0-2 distinct operations per image, drawn from {horizontal flip, vertical flip,
  rotation by 90/180/270 degrees, intensity scale in [0.8, 1.5], Gaussian blur with sigma in [0, 5]}.
* ``flip-rotate`` (seed C): horizontal flip with p = 0.5 and a rotation uniform in [-12, 12] degrees
  (zero fill; the border is masked afterwards anyway).
* ``rotate-zoom`` (seed A, "rotation and zoom", no ranges given: ours are Keras' common
  ``rotation_range=30, zoom_range=0.2``): a rotation uniform in [-30, 30] degrees and a zoom uniform in
  [0.8, 1.2] (above 1 zooms in; zero fill).
* ``none``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

POLICIES = ("bit", "flip-rotate", "rotate-zoom", "none")
BIT_OPS = ("hflip", "vflip", "rot90", "intensity", "blur")
BIT_MAX_OPS = 2
INTENSITY_RANGE = (0.8, 1.5)
BLUR_SIGMA_RANGE = (0.0, 5.0)
ROTATE_DEGREES = 12.0
ZOOM_DEGREES = 30.0
ZOOM_RANGE = (0.8, 1.2)


def augment(frames: torch.Tensor, policy: str, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch of uint8 [N,3,H,W] frames with ``policy`` (see module docstring)."""
    if policy not in POLICIES:
        raise ValueError(f"augmentation policy must be one of {POLICIES}, got {policy!r}")
    if frames.dtype != torch.uint8 or frames.ndim != 4:
        raise ValueError(f"augment expects uint8 [N,3,H,W], got {frames.dtype} {tuple(frames.shape)}")
    if policy == "bit":
        return bit_augment(frames, generator)
    if policy == "flip-rotate":
        return flip_rotate(frames, generator)
    if policy == "rotate-zoom":
        return rotate_zoom(frames, generator)
    return frames


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round_().clamp_(0, 255).to(torch.uint8)


def bit_augment(frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Seed B: each image gets 0, 1 or 2 distinct operations of :data:`BIT_OPS`, chosen uniformly."""
    n = frames.shape[0]
    n_ops = torch.randint(0, BIT_MAX_OPS + 1, (n,), generator=generator)
    rank = torch.argsort(torch.rand(n, len(BIT_OPS), generator=generator), dim=1)  # a random choice of ops ...
    chosen = rank < n_ops[:, None]  # [N, 5]: op j applied to image i, in BIT_OPS order (the seed names no order)
    rot_k = torch.randint(1, 4, (n,), generator=generator)
    scale = _uniform(n, *INTENSITY_RANGE, generator)
    sigma = _uniform(n, *BLUR_SIGMA_RANGE, generator)
    out = frames.clone()
    sel = chosen[:, 0]
    out[sel] = out[sel].flip(-1)
    sel = chosen[:, 1]
    out[sel] = out[sel].flip(-2)
    square = frames.shape[-1] == frames.shape[-2]
    for k in (1, 2, 3):
        sel = chosen[:, 2] & (rot_k == (k if square else 2))
        if sel.any():
            out[sel] = torch.rot90(out[sel], k if square else 2, dims=(-2, -1))
    sel = chosen[:, 3]
    if sel.any():
        out[sel] = _to_uint8(out[sel].float() * scale[sel].view(-1, 1, 1, 1))
    sel = chosen[:, 4]
    if sel.any():
        out[sel] = _to_uint8(gaussian_blur(out[sel].float(), sigma[sel]))
    return out


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur float [N,C,H,W] with a per-image sigma [N] (separable, reflect padding; sigma ~0 = identity)."""
    n, c, h, w = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    radius = min(radius, (min(h, w) - 1) // 2) or 1
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    s = sigma.clamp_min(1e-3).view(-1, 1)
    kernel = torch.exp(-0.5 * (offsets / s) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [N*C, K]
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), kernel.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), kernel.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


def flip_rotate(frames: torch.Tensor, generator: torch.Generator, *, max_degrees: float = ROTATE_DEGREES) -> torch.Tensor:
    """Seed C: random horizontal flip (p = 0.5), then rotation uniform in [-max_degrees, max_degrees]."""
    n = frames.shape[0]
    flip = torch.rand(n, generator=generator) < 0.5
    angle = torch.deg2rad(_uniform(n, -max_degrees, max_degrees, generator))
    x = frames.float()
    return _affine(torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x), angle, torch.ones(n))


def rotate_zoom(frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Seed A: rotation uniform in [-ZOOM_DEGREES, ZOOM_DEGREES], then zoom uniform in ZOOM_RANGE."""
    n = frames.shape[0]
    angle = torch.deg2rad(_uniform(n, -ZOOM_DEGREES, ZOOM_DEGREES, generator))
    return _affine(frames.float(), angle, _uniform(n, *ZOOM_RANGE, generator))


def _affine(x: torch.Tensor, angle: torch.Tensor, zoom: torch.Tensor) -> torch.Tensor:
    """Rotate float [N,C,H,W] by ``angle`` (radians) about the centre and scale by ``zoom`` (> 1 enlarges), bilinear, zero fill."""
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    zeros = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)  # [N,2,3]: output -> input
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return _to_uint8(F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False))


def pixel_noise(frames: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """``frames`` plus Gaussian noise of ``sigma`` grey levels, rounded back to uint8: the copy a
    stability loss compares each training frame with (what a different decoder's rounding, a
    re-encode or a lower-precision backend does to a frame, in kind)."""
    return _to_uint8(frames.float() + sigma * torch.randn(frames.shape, generator=generator))
