"""Turn per-frame class probabilities into ranked suspicious events and a top-K frame list.

Pure numpy. Every duration is in seconds of presentation time (``pts_seconds``), never in frame
counts, so variable frame rates, decode gaps and different sampling rates are handled alike.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .event_runs import cut_after, hysteresis_mask, merged, runs, take_in_peaks
from .periods import TIME_EPS, frame_periods
from .seconds import as_seconds, frame_period_seconds
from .top_frames import top_k_rows

__all__ = ["Event", "RankParams", "Ranking", "abnormal_score", "find_events", "hysteresis_mask", "rank", "smooth_scores"]


@dataclass(frozen=True)
class RankParams:
    """Parameters of the event and top-K ranking."""

    smooth_seconds: float = 1.0  # centred moving-average window, in seconds (0 = off)
    enter_threshold: float = 0.5  # smoothed score at/above which an event starts (hysteresis)
    leave_threshold: float = 0.35  # smoothed score below which an event ends (must be <= enter)
    merge_gap_seconds: float = 2.0  # events with less unflagged time between them (next start - last end - its period) merge;
    # one unflagged frame in the frames' rhythm always merges, even at 0
    min_event_seconds: float = 0.5  # events shorter than this (incl. one frame period) are dropped
    top_k: int = 20  # number of single frames in the top-K list
    nms_seconds: float = 5.0  # no two top-K frames within this many seconds of each other

    def validate(self) -> None:
        """Check every field.

        Raises:
            ValueError: naming the first bad field and its value.
        """
        for name in ("smooth_seconds", "merge_gap_seconds", "min_event_seconds", "nms_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise ValueError(f"RankParams.{name} must be a finite number >= 0, got {value!r}")
        for name in ("enter_threshold", "leave_threshold"):
            value = getattr(self, name)
            if value is None:  # rev97 #5: a preset's pipeline.rank, whose unset thresholds are the weights'
                raise ValueError(f"RankParams.{name} is None: left to the model's operating threshold; rank with "
                                 "pipeline.rank_params(classifier.config)")
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
                raise ValueError(f"RankParams.{name} must be in [0, 1], got {value!r}")
        if self.leave_threshold > self.enter_threshold:
            raise ValueError(f"RankParams.leave_threshold ({self.leave_threshold!r}) must be "
                             f"<= enter_threshold ({self.enter_threshold!r})")
        top_k = self.top_k
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 0:
            raise ValueError(f"RankParams.top_k must be an integer >= 0, got {self.top_k!r}")


@dataclass
class Event:
    """One contiguous suspicious stretch of the video."""

    event_id: int  # 0-based rank (0 = highest peak score)
    start_frame: int  # frame_index value of the first frame
    end_frame: int  # frame_index value of the last frame
    start_seconds: float  # pts of the first frame
    end_seconds: float  # pts of the last frame
    peak_frame: int  # frame_index value of the frame with the highest raw score
    peak_seconds: float  # pts of that frame
    peak_score: float  # max raw score in the event
    mean_score: float  # mean raw score over the event's frames
    frame_count: int  # number of frames in the event (including merged gap frames)
    dominant_class: str  # abnormal class with the largest summed probability over the event
    duration_seconds: float  # end - start + one frame period: the time its frames show (what min_event_seconds is held to)


@dataclass
class Ranking:
    """Everything :func:`rank` computes for one video."""

    scores: np.ndarray  # float32 [N], per-frame abnormal score (probability mass of the abnormal classes)
    smoothed: np.ndarray  # float32 [N], time-smoothed abnormal score
    event_id: np.ndarray  # int32 [N], event of each frame, -1 = none
    events: list[Event]  # events ordered by rank (events[i].event_id == i)
    top_frames: list[tuple[int, float, float]]  # (frame_index, pts_seconds, score), best first
    top_classes: list[str] = field(default_factory=list)  # per top frame: its most probable abnormal class (as an event's)


PROB_SLACK = 1e-6  # float32 rounding of a softmax


def _check_1d(name: str, arr: np.ndarray, n: int) -> None:
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}] (like pts_seconds), got {arr.shape}")


def _as_pts_probs(pts_seconds: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pts as float64 [N] and probs as [N, C], or ValueError naming the mismatch."""
    pts = as_seconds("pts_seconds", pts_seconds)
    probs = np.asarray(probs)
    if probs.dtype.kind not in "iuf":  # QA 105 #5: an object array was numpy's "ufunc 'isfinite' not supported"
        raise ValueError(f"probs must be class probabilities as numbers (float32), got {probs.dtype}")
    if pts.ndim != 1:
        raise ValueError(f"pts_seconds must have shape [N], got {pts.shape}")
    if probs.ndim != 2 or probs.shape[0] != pts.shape[0]:
        raise ValueError(
            f"probs must have shape [{pts.shape[0]}, C] (like pts_seconds), got {probs.shape}"
        )
    return pts, probs


def _check_indices(abnormal_indices: Sequence[int], num_classes: int) -> np.ndarray:
    idx = np.asarray(list(abnormal_indices), dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= num_classes):
        raise ValueError(f"abnormal_indices {idx.tolist()} out of range for {num_classes} classes")
    if len(set(idx.tolist())) < idx.size:  # QA 116 #5: [1, 1] summed a class twice, scores up to 1.8
        raise ValueError(f"abnormal_indices {idx.tolist()} name a class twice")
    return idx


def abnormal_score(probs: np.ndarray, abnormal_indices: Sequence[int]) -> np.ndarray:
    """Per-frame probability of being abnormal.

    Args:
        probs: float [N, C] class probabilities.
        abnormal_indices: columns of ``probs`` that count as abnormal.

    Returns:
        float32 [N], the sum of the abnormal columns.
    """
    probs = np.asarray(probs)
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape [N, C], got {probs.shape}")
    idx = _check_indices(abnormal_indices, probs.shape[1])
    return probs[:, idx].sum(axis=1, dtype=np.float64).astype(np.float32)


def smooth_scores(
    scores: np.ndarray, pts_seconds: np.ndarray, window_seconds: float, stretch: np.ndarray | None = None
) -> np.ndarray:
    """Centred moving average over a time window.

    Frame ``i`` gets the mean score of all frames ``j`` with ``|t_j - t_i| <= window / 2``, which
    handles irregular timestamps; O(N log N) via a cumulative sum and ``searchsorted``.

    Args:
        scores: float [N] raw scores; pts_seconds: float [N] ascending timestamps.
        window_seconds: full window width; 0 returns a copy of ``scores``.
        stretch: int [N], ascending: the stretch between cuts at unseen time each frame is in (as :func:`rank` finds
            them); the average stays within it (review rev92 #4: a window wider than twice the merge gap averaged
            frames before a cut into the first after it, an event whose raw scores were all 0).

    Returns:
        float32 [N] smoothed scores.
    """
    scores = np.asarray(scores)
    pts = as_seconds("pts_seconds", pts_seconds)
    _check_1d("scores", scores, pts.shape[0] if pts.ndim == 1 else -1)
    if window_seconds < 0:
        raise ValueError(f"window_seconds must be >= 0, got {window_seconds!r}")
    if window_seconds == 0 or scores.shape[0] < 2:
        return scores.astype(np.float32, copy=True)
    half = window_seconds / 2.0
    csum = np.concatenate(([0.0], np.cumsum(scores, dtype=np.float64)))
    lo = np.searchsorted(pts, pts - half - TIME_EPS, side="left")  # QA 29: at 2 frames/s a 1 s window ends on the
    hi = np.searchsorted(pts, pts + half + TIME_EPS, side="right")  # neighbours, and 16.333000000000002 fell out
    if stretch is not None:
        stretch = np.asarray(stretch)
        _check_1d("stretch", stretch, pts.shape[0])
        if np.any(np.diff(stretch) < 0):  # rev93 #2: numbered along the timeline, as rank numbers them
            raise ValueError("stretch must be ascending (the number of the stretch between cuts each frame is in)")
        lo = np.maximum(lo, np.searchsorted(stretch, stretch, side="left"))
        hi = np.minimum(hi, np.searchsorted(stretch, stretch, side="right"))
    return ((csum[hi] - csum[lo]) / (hi - lo)).astype(np.float32)


def find_events(
    pts_seconds: np.ndarray,
    frame_index: np.ndarray,
    scores: np.ndarray,
    smoothed: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    abnormal_indices: Sequence[int],
    params: RankParams,
    frame_period: float | None = None,
    periods: np.ndarray | None = None,
) -> tuple[list[Event], np.ndarray]:
    """Group flagged frames into ranked events.

    Hysteresis on ``smoothed``, a run cut where the time no frame shows between two consecutive
    frames (their step less the frame period there) is ``merge_gap_seconds`` or more; runs whose
    unflagged time between them (start of next minus end of previous less the period of that last
    frame) is shorter than ``merge_gap_seconds``, or is one frame in the frames' rhythm, merge (gap frames
    join the event); events whose duration (``end - start`` + the period of the last frame) is shorter than ``min_event_seconds``
    are dropped; an event then takes in the frame of highest raw score its smoothed scores averaged, when that lies
    just outside it (:func:`~capsule_triage.event_runs.take_in_peaks`), and runs closer than the merge gap after that
    merge. After a cut the hysteresis starts over. Periods are local (:func:`frame_periods`), so an adaptive frame rate
    gives the same events at 2 and 6 frames/s. Events are ranked by peak raw score (ties: earlier first).

    Args:
        pts_seconds: float [N] ascending timestamps.
        frame_index: int [N] decoder frame numbers (may have gaps); reported in events.
        scores: float [N] raw abnormal scores; smoothed: float [N] smoothed scores, within the stretches between cuts
            (``smooth_scores(..., stretch)`` as :func:`rank` gives it; rev93 #5).
        probs: float [N, C] class probabilities; class_names: C names;
            abnormal_indices: columns of ``probs`` that count as abnormal.
        params: ranking parameters.
        frame_period: the source's nominal frame period (seconds), used when fewer than two frames
            give a median step (a one-frame study); None: 0.
        periods: float [N], each frame's period when these frames are part of a longer timeline
            (frames with a view among all decoded: a removed frame is unseen time); None:
            :func:`frame_periods` of ``pts_seconds``.

    Returns:
        ``(events, event_id_per_frame)``, the latter int32 [N] with -1 outside events.
    """
    pts, probs = _as_pts_probs(pts_seconds, probs)
    n = pts.shape[0]
    fidx, scores, smoothed = (np.asarray(a) for a in (frame_index, scores, smoothed))
    for name, arr in (("frame_index", fidx), ("scores", scores), ("smoothed", smoothed)):
        _check_1d(name, arr, n)
    if isinstance(class_names, (str, bytes)) or not hasattr(class_names, "__len__"):  # QA 105 #5: a generator's len()
        raise ValueError(f"class_names must be a list of the model's class names, got {type(class_names).__name__}")
    if len(class_names) != probs.shape[1]:
        raise ValueError(f"{len(class_names)} class_names but probs has {probs.shape[1]} columns")
    idx = _check_indices(abnormal_indices, probs.shape[1])

    event_id = np.full(n, -1, dtype=np.int32)
    period = frame_periods(pts, frame_period) if periods is None else np.asarray(periods, np.float64)
    _check_1d("periods", period, n)
    # A run crossing time without frames (a decode gap, or frames without a view) of merge_gap_seconds or more ends
    # before it; after it the hysteresis starts over (QA 99 #1), so what was not seen is in no event (review rev26).
    unseen = cut_after(pts, period, params.merge_gap_seconds)
    restart = np.concatenate(([False], unseen))
    flagged = hysteresis_mask(smoothed, params.enter_threshold, params.leave_threshold, restart=restart)
    starts, ends = runs(flagged)
    if starts.size == 0:
        return [], event_id
    cut = np.flatnonzero(unseen & flagged[:-1] & flagged[1:])
    starts, ends = np.sort(np.concatenate((starts, cut + 1))), np.sort(np.concatenate((ends, cut)))
    stretch = np.cumsum(restart)  # the stretch between cuts each frame is in
    starts, ends = merged(pts, period, starts, ends, params.merge_gap_seconds, stretch)
    keep = pts[ends] - pts[starts] + period[ends] >= params.min_event_seconds - TIME_EPS  # which runs are events: before
    starts, ends = take_in_peaks(pts, scores, starts[keep], ends[keep], params.smooth_seconds / 2, stretch)
    # QA 99 #2: a run that took in its peak may now lie closer to the next than the merge gap (even touching it)
    starts, ends = merged(pts, period, starts, ends, params.merge_gap_seconds, stretch)

    events: list[Event] = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        seg = scores[s : e + 1].astype(np.float64)
        p = s + int(np.argmax(seg))
        dominant = ""
        if idx.size:
            sums = probs[s : e + 1][:, idx].sum(axis=0, dtype=np.float64)
            dominant = str(class_names[int(idx[int(np.argmax(sums))])])
        events.append(Event(
            event_id=-1, start_frame=int(fidx[s]), end_frame=int(fidx[e]),
            start_seconds=float(pts[s]), end_seconds=float(pts[e]),
            peak_frame=int(fidx[p]), peak_seconds=float(pts[p]), peak_score=float(seg.max()),
            mean_score=float(seg.mean()), frame_count=e - s + 1, dominant_class=dominant,
            duration_seconds=float(pts[e] - pts[s] + period[e]),
        ))
    # Events are in time order, so a stable sort keeps ties earlier-first.
    order = sorted(range(len(events)), key=lambda i: -events[i].peak_score)
    ranked = []
    for rank_i, i in enumerate(order):
        events[i].event_id = rank_i
        event_id[starts[i] : ends[i] + 1] = rank_i
        ranked.append(events[i])
    return ranked, event_id


def _class_positions(abnormal_indices) -> list[int]:
    """``abnormal_indices`` as a list (read once: a generator checked, then passed on, was empty by then — rev64), or
    ValueError naming what it takes (QA 68 #11: ['bleeding'] was int()'s "invalid literal")."""
    try:
        positions = None if isinstance(abnormal_indices, (str, bytes)) else list(abnormal_indices)
    except TypeError:  # a single number
        positions = None
    if positions is None or not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in positions):
        raise ValueError(f"abnormal_indices must be class positions (whole numbers: config.abnormal_indices), got {abnormal_indices!r}")
    return [int(i) for i in positions]


def rank(
    pts_seconds: np.ndarray,
    frame_index: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    abnormal_indices: Sequence[int],
    params: RankParams,
    frame_period: float | None = None,
    has_view: np.ndarray | None = None,
    periods: np.ndarray | None = None,
) -> Ranking:
    """Score, smooth, find events and pick top-K frames for one video.

    Args:
        pts_seconds, frame_index, probs, class_names, abnormal_indices: as in
            :func:`find_events`.
        params: ranking parameters (validated here).
        frame_period: as in :func:`find_events`.
        has_view: bool [N], False for frames that show no field of view
            (:func:`capsule_triage.field_of_view.has_view`); their ``probs`` may be NaN. They are
            left out as if never decoded: no score (NaN in ``scores`` and ``smoothed``), in no
            event, never a top frame, and no part of their neighbours' smoothed scores.
        periods: as in :func:`find_events`.

    Returns:
        The :class:`Ranking`.
    """
    if not isinstance(params, RankParams):  # QA 68 #11: None was "'NoneType' object has no attribute 'validate'"
        raise ValueError(f"params must be a RankParams (pipeline.rank_params(config)), got {type(params).__name__}")
    params.validate()
    abnormal_indices = _class_positions(abnormal_indices)
    index = np.asarray(frame_index)
    if index.size and (not np.issubdtype(index.dtype, np.integer) or index.dtype.kind == "m"):  # rev96 #5: timedelta64 too  # QA 58 #2: FrameBatch's order (frame_index first) passed
        raise ValueError(f"frame_index must be an integer array (int64), got {index.dtype}: rank takes "
                         "(pts_seconds, frame_index, probs, ...), times first")
    if index.size > 1:  # QA 124 #6: a frame named twice made two frames.parquet rows of one frame_index
        values, counts = np.unique(index, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"frame_index must name each frame once, got {int(values[counts > 1][0])} {int(counts[counts > 1][0])} "
                             f"times ({int((counts > 1).sum())} repeated): frames.parquet and the events name frames by it")
    pts, probs = _as_pts_probs(pts_seconds, probs)
    if pts.size > 1 and np.any(np.diff(pts) < 0):
        raise ValueError("pts_seconds must be ascending")
    if has_view is not None:  # QA 78 #4: checked only where some frame had no view
        _check_1d("has_view", np.asarray(has_view), pts.shape[0])
        if np.asarray(has_view).dtype != bool and not np.isin(has_view, (0, 1)).all():  # QA 105 #6: NaN was True
            raise ValueError(f"has_view must be True/False per frame, got {np.asarray(has_view).dtype} values other than 0 and 1")
    if probs.size and (np.nanmin(probs, initial=0.0) < -PROB_SLACK or np.nanmax(probs, initial=1.0) > 1 + PROB_SLACK):
        raise ValueError(f"probs must be class probabilities in [0, 1] (a softmax of the logits), got values from "  # QA 78 #3
                         f"{np.nanmin(probs):g} to {np.nanmax(probs):g}")
    if frame_period is not None:
        frame_period = frame_period_seconds(frame_period)
    period = frame_periods(pts, frame_period) if periods is None else np.asarray(periods, np.float64)
    _check_1d("periods", period, pts.shape[0])  # every frame's, those without a view too (rev93 #3: given ones were dropped)
    if has_view is not None and not np.all(has_view):
        return _rank_frames_with_view(pts, frame_index, probs, class_names, abnormal_indices, params, frame_period, has_view,
                                      period)
    if not np.all(np.isfinite(probs)) or not np.all(np.isfinite(pts)):
        raise ValueError("pts_seconds and probs must be finite (no NaN/inf)")
    scores = abnormal_score(probs, abnormal_indices)
    stretch = np.cumsum(np.concatenate(([False], cut_after(pts, period, params.merge_gap_seconds)))) if len(pts) > 1 else None
    smoothed = smooth_scores(scores, pts, params.smooth_seconds, stretch)
    events, event_id = find_events(
        pts, frame_index, scores, smoothed, probs, class_names, abnormal_indices, params, frame_period, period
    )
    rows = top_k_rows(pts, index, scores, params.top_k, params.nms_seconds)
    idx = np.asarray(abnormal_indices, dtype=np.int64)  # QA 71 #5: each top frame's own most probable abnormal class
    return Ranking(scores=scores, smoothed=smoothed, event_id=event_id, events=events,
                   top_frames=[(int(index[r]), float(pts[r]), float(scores[r])) for r in rows],
                   top_classes=[str(class_names[int(idx[int(np.argmax(probs[r, idx]))])]) if idx.size else "" for r in rows])


def _rank_frames_with_view(pts, frame_index, probs, class_names, abnormal_indices, params, frame_period, has_view,
                           period) -> Ranking:
    """:func:`rank` of the frames with a view, spread back over every frame (see its ``has_view``); ``period``: every
    frame's."""
    view, fidx = np.asarray(has_view, dtype=bool), np.asarray(frame_index)
    _check_1d("has_view", view, pts.shape[0])
    part = rank(pts[view], fidx[view], probs[view], class_names, abnormal_indices, params, frame_period,
                periods=period[view])  # review rev27: the periods of every frame decoded, so frames left out are
    # unseen time (from the frames with a view alone, one seen every 5 s at 6 frames/s made a 5 s period)
    scores, smoothed = np.full(view.shape, np.nan, np.float32), np.full(view.shape, np.nan, np.float32)
    event_id = np.full(view.shape, -1, np.int32)
    scores[view], smoothed[view], event_id[view] = part.scores, part.smoothed, part.event_id
    return Ranking(scores=scores, smoothed=smoothed, event_id=event_id, events=part.events, top_frames=part.top_frames,
                   top_classes=part.top_classes)
