"""The frame period around each frame of a timeline, from its own timestamps: a capsule's rate
follows its motion (2 frames/s resting, 6 moving, 0.5 in some), so the time a frame stands for is
judged from the steps around it, not from a header's rate or the study's median step (QA 29).
Used by the ranking (event durations, merging, cutting), the gap rule of
:mod:`capsule_triage.completeness` and the review page."""

from __future__ import annotations

import warnings

import numpy as np

TIME_EPS = 1e-9  # tolerance for duration comparisons on float timestamps
LOCAL_STEPS = 10  # a frame's period is the median of up to this many steps on each side of it (QA 29)


def local_periods(pts_seconds: np.ndarray) -> np.ndarray:
    """The frame period around each step of an ascending timeline: float [N - 1], step i's being the
    median of up to :data:`LOCAL_STEPS` steps on each side of it, not step i itself (a lone step: itself).

    A capsule's rate follows its motion (2 frames/s resting, 6 moving, 0.5 in some): a step is judged
    against the steps around it, not the study's median (QA 29: a 0.5 frames/s stretch in a study
    mostly at 6 was fifteen "stretches without frames"; a 2 frames/s frame was held to 1/6 s). Under five
    steps: their median. Where most steps around are gaps (a signal lost again and again), the median is
    one of them, and the stretch reads as a slower rate (review rev27: 2 frames then 2 s lost, 20 times,
    finds 10 of the 20 gaps)."""
    steps = np.diff(np.asarray(pts_seconds, np.float64))
    spans = np.where(steps > 0, steps, np.nan)  # a repeated timestamp is no period (it halved the median where every
    if len(steps) < 5:  # other step was one); too few steps for those around a step to outnumber a gap (review rev27)
        return np.full_like(steps, _nanmedian(spans)) if len(steps) else steps
    k = LOCAL_STEPS
    padded = np.concatenate((np.full(k, np.nan), spans, np.full(k, np.nan)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * k + 1)  # row i: step i in the middle (a view)
    out = np.empty_like(steps)
    edge = np.r_[0:min(k, len(steps)), max(k, len(steps) - k):len(steps)]  # rows with padding in them
    out[edge] = _nanmedian(np.delete(windows[edge], k, axis=1), axis=1)
    for lo in range(k, len(steps) - k, 65536):  # a bounded copy at a time (a 1,000,000-frame study)
        rows = np.delete(windows[lo:min(lo + 65536, len(steps) - k)], k, axis=1)
        part = np.median(rows, axis=1)  # NaN where a repeated timestamp is in the window: those rows again, without it
        repeated = np.isnan(part)
        part[repeated] = _nanmedian(rows[repeated], axis=1)
        out[lo:lo + len(rows)] = part
    return out


def _nanmedian(values: np.ndarray, axis: int | None = None):
    """The median of the values that are not NaN; 0 where all are (timestamps all repeated)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "All-NaN slice encountered"
        return np.nan_to_num(np.nanmedian(values, axis=axis), nan=0.0)


def frame_periods(pts_seconds: np.ndarray, frame_period: float | None = None) -> np.ndarray:
    """The time each frame of an ascending timeline shows: float [N], the period around the step after it
    (:func:`local_periods`; the last frame: the step before it). One frame: ``frame_period`` (None: 0)."""
    local = local_periods(pts_seconds)
    return np.append(local, local[-1]) if len(local) else np.full(len(pts_seconds), frame_period or 0.0)


def timeline_seconds(pts_seconds: np.ndarray) -> float | None:
    """How long an ascending timeline lasts: first frame to last, plus the period the last one shows (only the steps
    before it decide it); None under two frames. The study's duration in run.json and on the review page (QA 63 #1: a
    container's duration can be its end time, counted from 0 when the stream starts at 5 s, or fall short of the frames)."""
    pts = np.asarray(pts_seconds, np.float64)
    if len(pts) < 2:
        return None
    return float(pts[-1] - pts[0] + frame_periods(pts[-(LOCAL_STEPS + 2):])[-1])
