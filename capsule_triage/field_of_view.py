"""Whether a frame shows the endoscope's field of view at all. Numpy and OpenCV only: every backend
(ONNX Runtime and OpenVINO run without PyTorch) tests its frames here before they are ranked."""

from __future__ import annotations

import cv2
import numpy as np

from .frames import FrameBatch

FOV_LUMA_THRESHOLD = 0.08  # a pixel brighter than this (0-1 scale) is inside the endoscope's view
VIEW_MIN_SIDE = 1 / 4  # the smallest view, as a fraction of the frame's short side (fov_boxes and has_view)
VIEW_GRID = 48  # has_view looks at about this many pixels along the frame's short side
FLAT_LUMA_IQR = 3  # a bright part whose middle half of pixels spans fewer grey levels (of 255) is a flat screen
GREY_SATURATION = 20  # a bright part whose median pixel's saturation ((max - min) / max of R, G, B) is below this % is grey: a panel, not tissue
NO_VIEW_KINDS = "black, too dark, a flat or grey (monochrome) picture, or burned-in text only"  # what has_view refuses, in every message
NO_VIEW_WARN_SHARE = 0.5  # a study with at least this share of frames without a view is named (Warning:, batch index)


def brightness(red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> np.ndarray:
    """uint16: R + G + B of uint8 channels (3 x the mean, 0-765)."""
    total = red.astype(np.uint16)
    total += green
    total += blue
    return total


def bright_pixels(red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> np.ndarray:
    """bool: where the mean of uint8 R, G, B is above :data:`FOV_LUMA_THRESHOLD` (inside a view)."""
    return brightness(red, green, blue) > FOV_LUMA_THRESHOLD * 255 * 3


def mostly_without_view(without: int, frames: int) -> bool:
    """Whether a study's frames without a view are :data:`NO_VIEW_WARN_SHARE` of it or more."""
    return frames > 0 and without >= NO_VIEW_WARN_SHARE * frames


def has_view(frames_nhwc: np.ndarray) -> np.ndarray:
    """bool [N]: which uint8 [N, H, W, 3] frames (or a :class:`~capsule_triage.frames.FrameBatch`'s) show a field of view at all.

    A frame shows one when its largest connected part of bright pixels (:func:`bright_pixels`)
    covers at least the area of a square :data:`VIEW_MIN_SIDE` of the frame's short side across
    (the smallest view :func:`capsule_triage.preprocess.fov_boxes` takes), is not flat (the middle
    half of its pixels' brightness spans at least :data:`FLAT_LUMA_IQR` grey levels) and is not
    grey (its median pixel's saturation is at least :data:`GREY_SATURATION` %; dimming keeps it). A
    black frame, a view too dark to read (before the scope goes in, after it comes out), burned-in
    text alone (each glyph a small part of its own), a flat screen (a processor's blue "no signal")
    or a grey one (a panel of patient details, shaded or not) shows none: a model's score of such a
    frame means nothing, and its thumbnail would show the patient's name (QA passes 27 and 28,
    review rev26). A grey (monochrome) video shows none either: endoscopes record colour.

    Measured (2026-12-02): every real frame of ../shared/data (1,868 WCEBleedGen stills, the three
    clips) and of QA 26's gastroscope-style clips has a part at least 5.4 times that area, whose
    middle half spans 6.0 grey levels or more (1 % of the stills below 9.3) and whose median
    saturation is 35 % or more (1 % of the stills below 44 %, clips 49 %; QA 28's bluish-grey panels
    6-10 %); QA 27's black frames have none, its text-only frames 0.04 times the area. Counted on
    every ``step``-th pixel, about :data:`VIEW_GRID` along the short side: about 55 microseconds per
    336 px frame, 75 per 720p one, 40 % of it in OpenCV's connected components."""
    frames_nhwc = frames_nhwc.data if isinstance(frames_nhwc, FrameBatch) else frames_nhwc  # (rev53: public, so checked)
    if not isinstance(frames_nhwc, np.ndarray) or frames_nhwc.dtype != np.uint8 or frames_nhwc.ndim != 4 or frames_nhwc.shape[-1] != 3:
        got = f"{frames_nhwc.dtype} {frames_nhwc.shape}" if isinstance(frames_nhwc, np.ndarray) else type(frames_nhwc).__name__
        raise ValueError(f"has_view takes uint8 frames [N,H,W,3] or a FrameBatch, got {got}")
    n, h, w, _ = frames_nhwc.shape
    step = max(1, min(h, w) // VIEW_GRID)
    small = frames_nhwc[:, ::step, ::step]
    total = brightness(small[..., 0], small[..., 1], small[..., 2])
    bright = (total > FOV_LUMA_THRESHOLD * 255 * 3).view(np.uint8)
    least = (VIEW_MIN_SIDE * min(bright.shape[1:])) ** 2
    out, saturation = np.zeros(n, dtype=bool), None
    for i, mask in enumerate(bright):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if count < 2:
            continue
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        size = int(stats[largest, cv2.CC_STAT_AREA])
        if size < least:
            continue
        part = labels == largest
        cumulative = np.bincount(total[i][part], minlength=766).cumsum()  # quartiles from the histogram
        low, high = np.searchsorted(cumulative, (size / 4, 3 * size / 4))
        if high - low < 3 * FLAT_LUMA_IQR:
            continue
        if saturation is None:  # of every grid pixel in %, once per batch (most frames get here)
            top = np.maximum(np.maximum(small[..., 0], small[..., 1]), small[..., 2]).astype(np.uint16)
            spread = top - np.minimum(np.minimum(small[..., 0], small[..., 1]), small[..., 2])
            saturation = (spread * 100 // np.maximum(top, 1)).astype(np.uint8)
        out[i] = np.searchsorted(np.bincount(saturation[i][part], minlength=101).cumsum(), size / 2) >= GREY_SATURATION
    return out
