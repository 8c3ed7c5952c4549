"""The top-K single frames of a study: its highest raw scores, no two within a few seconds of each other (greedy
temporal non-maximum suppression). :func:`capsule_triage.ranking.rank` puts them beside the events."""

from __future__ import annotations

import bisect

import numpy as np


def top_k_frames(
    pts_seconds: np.ndarray, frame_index: np.ndarray, scores: np.ndarray, k: int, nms_seconds: float
) -> list[tuple[int, float, float]]:
    """Greedy temporal non-maximum suppression over single frames.

    Frames are taken by descending raw score (ties: earlier first); a frame closer than
    ``nms_seconds`` (``|dt| < nms_seconds``) to an already chosen one is skipped.

    Args:
        pts_seconds: float [N] timestamps; frame_index: int [N]; scores: float [N] raw scores.
        k: maximum number of frames to return.
        nms_seconds: minimum spacing between returned frames.

    Returns:
        Up to ``k`` tuples ``(frame_index, pts_seconds, score)``, best first.
    """
    pts, fidx, scores = np.asarray(pts_seconds, dtype=np.float64), np.asarray(frame_index), np.asarray(scores)
    return [(int(fidx[i]), float(pts[i]), float(scores[i])) for i in top_k_rows(pts, fidx, scores, k, nms_seconds)]


def top_k_rows(pts_seconds: np.ndarray, frame_index: np.ndarray, scores: np.ndarray, k: int, nms_seconds: float) -> list[int]:
    """:func:`top_k_frames` as positions in the arrays, best first (what else is known of each frame is at its row)."""
    pts = np.asarray(pts_seconds, dtype=np.float64)
    n = pts.shape[0] if pts.ndim == 1 else -1
    fidx, scores = np.asarray(frame_index), np.asarray(scores)
    for name, arr in (("frame_index", fidx), ("scores", scores)):
        if arr.ndim != 1 or arr.shape[0] != n:
            raise ValueError(f"{name} must have shape [{n}] (like pts_seconds), got {arr.shape}")
    if k <= 0 or n == 0:
        return []
    order = np.argsort(-scores.astype(np.float64), kind="stable")
    chosen_times: list[float] = []  # sorted pts of chosen frames
    out: list[int] = []
    for i in order.tolist():
        t = float(pts[i])
        pos = bisect.bisect_left(chosen_times, t)
        if pos > 0 and t - chosen_times[pos - 1] < nms_seconds:
            continue
        if pos < len(chosen_times) and chosen_times[pos] - t < nms_seconds:
            continue
        chosen_times.insert(pos, t)
        out.append(i)
        if len(out) >= k:
            break
    return out
