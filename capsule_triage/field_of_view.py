"""Whether a frame shows the endoscope's field of view at all. Numpy and OpenCV only: every backend
(ONNX Runtime and OpenVINO run without PyTorch) tests its frames here before they are ranked."""

from __future__ import annotations

import cv2
import numpy as np

FOV_LUMA_THRESHOLD = 0.08  # a pixel brighter than this (0-1 scale) is inside the endoscope's view
VIEW_GRID = 48  # has_view looks at about this many pixels along the frame's short side


def has_view(frames_nhwc: np.ndarray) -> np.ndarray:
    """bool [N]: which uint8 [N, H, W, 3] frames show a field of view at all.

    A frame shows one when its largest connected part of bright pixels (mean of R, G, B above
    :data:`FOV_LUMA_THRESHOLD`) covers at least the area of a square a quarter of the frame's short
    side across: the smallest view :func:`capsule_triage.preprocess.fov_boxes` takes for one. A
    black frame, a view too dark to read (before the scope goes in, after it comes out) or one
    showing only burned-in text (each glyph a small part of its own) shows none: a model's score of
    such a frame means nothing, and its thumbnail would show the patient's name (QA pass 27).
    Measured (2026-12-02): every real frame of ../shared/data (1,868 WCEBleedGen stills, the three
    clips) and of QA 26's gastroscope-style clips has a part of at least 5.4 times that area; QA 27's
    black frames none, its text-only frames 0.04 times. Counted on every ``step``-th pixel, about
    :data:`VIEW_GRID` along the short side (about 35 microseconds per 336 px frame)."""
    n, h, w, _ = frames_nhwc.shape
    step = max(1, min(h, w) // VIEW_GRID)
    small = frames_nhwc[:, ::step, ::step]
    total = small[..., 0].astype(np.uint16)
    total += small[..., 1]
    total += small[..., 2]
    bright = (total > FOV_LUMA_THRESHOLD * 255 * 3).view(np.uint8)
    least = (min(bright.shape[1:]) / 4) ** 2
    out = np.zeros(n, dtype=bool)
    for i, mask in enumerate(bright):
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        out[i] = count > 1 and stats[1:, cv2.CC_STAT_AREA].max() >= least
    return out
