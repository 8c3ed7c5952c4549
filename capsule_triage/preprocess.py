"""Batched, on-device preprocessing: uint8 frames in, normalised border-neutral tensors out.

Contract: input uint8 [N, 3, H, W] (any memory format; NHWC frames permuted without a copy arrive
as channels_last), square or not; output float32 [N, 3, S, S] with S = ``config.input_size``,
normalised with the model's own mean/std, and zero (= the mean colour) outside the field of view, so
the model never sees the scope's black border or burned-in text. The same module runs in training,
evaluation and inference, so a model is always fed exactly as it was trained.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .field_of_view import FOV_LUMA_THRESHOLD, VIEW_MIN_SIDE, bright_pixels
from .model_config import ModelConfig

FOV_MIN_FRACTION = 0.05  # a row/column is inside the view when this fraction of it is bright
FOV_GAP_FRACTION = 1 / 32  # dark rows/columns (of the short side) one view may hold; a wider dark gap separates marks beside it
FOV_PART_SHARE = 0.25  # a bright stretch with this share of the fullest one's bright pixels is part of the view


def circle_mask(size: int, radius_fraction: float) -> torch.Tensor:
    """float32 [1, 1, size, size]: 1 inside the centred circle of radius ``radius_fraction * size/2``."""
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    dist2 = coords[:, None] ** 2 + coords[None, :] ** 2
    return (dist2 <= (radius_fraction * size / 2) ** 2).float()[None, None]


def fov_boxes(frames: torch.Tensor) -> list[tuple[int, int, int]]:
    """Per-frame square box (top, left, side) around the bright field of view of uint8 [N,3,H,W] frames.

    The columns inside the view are the stretch of bright ones (:func:`_view_stretch`) holding the
    most bright pixels; the rows are found within those columns, and the columns again within those
    rows: burned-in text, a status line or a logo in the black border is a stretch of its own, and
    text above the view lies outside its columns (QA pass 16: white overlay text beside the view
    moved the crop onto it). A view narrower than a quarter of the frame's short side counts as
    none found (a dark frame): the centre square. The batch's bright-pixel mask comes to the host in
    one copy (on a GPU: one synchronisation per batch, not two per frame).
    """
    if frames.device.type == "cpu" and frames.dtype == torch.uint8:  # mean of R, G, B > threshold; numpy: 2-4x faster than torch
        channels = frames.numpy()
        bright = bright_pixels(channels[:, 0], channels[:, 1], channels[:, 2])
    else:
        bright = (frames.sum(dim=1, dtype=torch.int16) > FOV_LUMA_THRESHOLD * 255 * 3).cpu().numpy()
    n, h, w = bright.shape
    gap, least = max(1.0, min(h, w) * FOV_GAP_FRACTION), int(min(h, w) * VIEW_MIN_SIDE)
    boxes = []
    for mask in bright:
        left, right = _view_stretch(mask.sum(axis=0) / h, gap)
        top, bottom = _view_stretch(mask[:, left:right].sum(axis=1) / max(1, right - left), gap)
        left, right = _view_stretch(mask[top:bottom].sum(axis=0) / max(1, bottom - top), gap)
        if bottom - top >= least and right - left >= least:
            top, bottom, left, right = _without_specks(mask, top, bottom, left, right, gap)
        if bottom - top < least or right - left < least:  # nothing found (dark frame): centre square
            side = min(h, w)
            boxes.append(((h - side) // 2, (w - side) // 2, side))
            continue
        side = min(max(bottom - top, right - left), h, w)
        cy, cx = (top + bottom) // 2, (left + right) // 2
        top = min(max(cy - side // 2, 0), h - side)
        left = min(max(cx - side // 2, 0), w - side)
        boxes.append((top, left, side))
    return boxes


def crop_to_view(rgb: np.ndarray) -> np.ndarray:
    """An RGB image [H, W, 3] cropped to its field of view's square box (:func:`fov_boxes`): the
    thumbnails of a model that detects the view show what it scored, not the burned-in patient name
    and id beside it (QA 26: a shared review page showed them in full)."""
    top, left, side = fov_boxes(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None])[0]
    return rgb[top : top + side, left : left + side]


def _without_specks(mask: np.ndarray, top: int, bottom: int, left: int, right: int, gap: float) -> tuple[int, int, int, int]:
    """The box shrunk to the view's large connected parts: burned-in text close beside a round view
    shares its rows or columns, so the stretches took it in (QA 25: the crop slid 50 px onto a
    patient id next to the circle), but it is small parts of its own. The mask is halved and closed
    (an odd kernel of about half the gap in frame pixels: a view's own dark specks do not split it);
    parts holding at least :data:`FOV_PART_SHARE` of the largest one's bright pixels stay, counted
    before the closing (review rev23: closed, a block of text outweighed a dim view's fragments). The
    box is kept as found when the parts left hold less than half of its bright pixels or cover less than
    that share of it (a dark frame: nothing is sure), and a side moves only beyond the halving's rounding. Known limit: a dark fold
    narrower than the gap but wider than the closing cuts off a piece of the view smaller than the
    share; that piece is left out with the text (review rev23)."""
    sub = np.ascontiguousarray(mask[top:bottom:2, left:right:2], dtype=np.uint8)
    size = 2 * (max(1, int(gap / 4)) // 2) + 1  # odd: an even kernel shifts the closed mask by a pixel
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        cv2.morphologyEx(sub, cv2.MORPH_CLOSE, np.ones((size, size), np.uint8)), connectivity=8)
    if count <= 2:  # one part (or none): nothing to leave out
        return top, bottom, left, right
    bright = np.bincount(labels[sub > 0], minlength=count)[1:]  # each part's own bright pixels
    kept = bright >= FOV_PART_SHARE * bright.max()
    keep = stats[1:][kept]
    if bright[kept].sum() < 0.5 * bright.sum() or keep[:, cv2.CC_STAT_AREA].sum() < FOV_PART_SHARE * sub.size:
        return top, bottom, left, right  # scattered bright pixels (a dark frame), or what is left is no view's size
    x0, y0 = left + 2 * keep[:, cv2.CC_STAT_LEFT].min(), top + 2 * keep[:, cv2.CC_STAT_TOP].min()
    x1 = left + 2 * (keep[:, cv2.CC_STAT_LEFT] + keep[:, cv2.CC_STAT_WIDTH]).max()
    y1 = top + 2 * (keep[:, cv2.CC_STAT_TOP] + keep[:, cv2.CC_STAT_HEIGHT]).max()
    moved = lambda old, new: int(new) if abs(new - old) > 2 else old  # noqa: E731 - the halving rounds by up to 2 pixels
    return moved(top, y0), moved(bottom, min(y1, bottom)), moved(left, x0), moved(right, min(x1, right))


def _view_stretch(share: np.ndarray, gap: float) -> tuple[int, int]:
    """(first, one past the last) of the rows (or columns) inside the view, given each one's bright
    share: the stretches of rows more than :data:`FOV_MIN_FRACTION` bright, joined across dark runs
    up to ``gap`` long, that hold at least :data:`FOV_PART_SHARE` of the bright pixels of the
    fullest one (a view crossed by a dark band is two such stretches; overlay text holds far less);
    (0, 0) if none is bright."""
    inside = np.flatnonzero(share > FOV_MIN_FRACTION)
    if not len(inside):
        return 0, 0
    breaks = np.flatnonzero(np.diff(inside) > gap + 1)  # a step of k + 1 skips k dark rows
    starts, ends = np.concatenate([[0], breaks + 1]), np.concatenate([breaks, [len(inside) - 1]])
    mass = np.array([share[inside[a] : inside[b] + 1].sum() for a, b in zip(starts, ends)])
    parts = np.flatnonzero(mass >= FOV_PART_SHARE * mass.max())
    return int(inside[starts[parts[0]]]), int(inside[ends[parts[-1]]]) + 1


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

    def forward(self, frames: torch.Tensor, boxes: list[tuple[int, int, int]] | None = None) -> torch.Tensor:
        """``boxes``: a field-of-view model's crops (:func:`fov_boxes`), found on the host before the frames went to a GPU."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"Preprocessor expects uint8 [N,3,H,W], got {frames.dtype} {tuple(frames.shape)}")
        if self.border == "fov":
            x = self.view(frames, boxes).float()
        else:
            h, w = frames.shape[-2:]
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            x = self._resize(frames[:, :, top : top + side, left : left + side].float())
        x = x * self.scale + self.shift
        return x * self.mask

    def view(self, frames: torch.Tensor, boxes: list[tuple[int, int, int]] | None = None) -> torch.Tensor:
        """uint8 [N, 3, S, S]: each uint8 [N, 3, H, W] frame's field of view, cropped square, resized
        and rounded back to uint8 — the pixels every backend and training see alike (an ONNX backend
        gets them from the host, see :class:`capsule_triage.backends.ViewCropped`).

        ``triage run`` reads frames for a field-of-view model at twice the input size with their
        shape kept and crops them here. Training and evaluation crop their stills the same way when
        they load them (:func:`capsule_triage.stills.load_images`; they are stored S x S), and
        frames of exactly S x S are taken as cropped: a run never reads frames that small for such a
        model. (Stills were centre-cropped square first: a 16:9 gastroscope still lost part of its
        view and trained on black border where the run crops to the view; QA pass 16.)

        ``boxes``: the frames' :func:`fov_boxes`, when the caller found them (on the host, before the frames went to a GPU:
        found here, they cost a wait for the device per batch; rev90 #9)."""
        if tuple(frames.shape[-2:]) == (self.input_size, self.input_size):
            return frames  # already cropped to the view (stills are when they are loaded)
        boxes = fov_boxes(frames) if boxes is None else boxes
        views = torch.cat([self._resize(frames[i : i + 1, :, t : t + s, l : l + s].float()) for i, (t, l, s) in enumerate(boxes)])
        return views.round_().clamp_(0, 255).to(torch.uint8)

    def views_nhwc(self, frames_nhwc: np.ndarray) -> np.ndarray:
        """:meth:`view` of uint8 NHWC frames as the reader gives them, as uint8 [N, S, S, 3] for an ONNX graph."""
        with torch.inference_mode():
            return self.view(torch.from_numpy(frames_nhwc).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).contiguous().numpy()

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == self.input_size and x.shape[-2] == self.input_size:
            return x
        return F.interpolate(x, size=(self.input_size, self.input_size), mode=self.mode, antialias=True, align_corners=False)
