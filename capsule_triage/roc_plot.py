"""The ROC figure of ``triage eval --out`` (roc.png): curves drawn with OpenCV, no plotting library."""

from __future__ import annotations

import math

import cv2
import numpy as np


def draw_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], *, title: str, point: tuple[float, float] | None = None, size: int = 480) -> np.ndarray:
    """A BGR image of ROC curves (fpr, tpr) with axes, the chance diagonal and an operating point."""
    img = np.full((size, size, 3), 255, np.uint8)
    left, right, top, bottom = 50, size - 20, 45, size - 45
    def xy(fpr: float, tpr: float) -> tuple[int, int]:
        return int(left + fpr * (right - left)), int(bottom - tpr * (bottom - top))
    cv2.rectangle(img, xy(0, 0), xy(1, 1), (0, 0, 0), 1)
    cv2.line(img, xy(0, 0), xy(1, 1), (180, 180, 180), 1, cv2.LINE_AA)
    for t in (0.0, 0.5, 1.0):
        cv2.putText(img, f"{t:.1f}", (xy(t, 0)[0] - 10, bottom + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        cv2.putText(img, f"{t:.1f}", (left - 30, xy(0, t)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    colors = [(200, 60, 0), (0, 140, 0), (0, 0, 200), (160, 0, 160), (0, 160, 160)]
    for k, (name, (fpr, tpr)) in enumerate(curves.items()):
        if np.isnan(fpr).any() or np.isnan(tpr).any():
            continue
        pts = np.array([xy(f, t) for f, t in zip(fpr, tpr)], np.int32)
        cv2.polylines(img, [pts], False, colors[k % len(colors)], 2, cv2.LINE_AA)
        cv2.putText(img, name, (right - 120, bottom - 10 - 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colors[k % len(colors)], 1)
    if point is not None and not any(math.isnan(v) for v in point):
        cv2.circle(img, xy(*point), 5, (0, 0, 0), 2)
    cv2.putText(img, title, (left, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "true positive rate (sensitivity)", (left - 30, top - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    cv2.putText(img, "false positive rate (1 - specificity)", (size // 2 - 110, size - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    return img
