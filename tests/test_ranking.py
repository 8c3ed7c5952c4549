"""Tests for capsule_triage.ranking (pure numpy, fast)."""

from __future__ import annotations

import numpy as np
import pytest

from capsule_triage.ranking import (
    Event,
    RankParams,
    abnormal_score,
    find_events,
    hysteresis_mask,
    rank,
    smooth_scores,
)
from capsule_triage.top_frames import top_k_frames

CLASSES = ["normal", "ulcer", "bleeding"]
ABNORMAL = [1, 2]


def _probs_from_scores(scores: np.ndarray) -> np.ndarray:
    """3-class probs whose abnormal sum equals ``scores`` (all abnormal mass on 'ulcer')."""
    s = np.asarray(scores, dtype=np.float64)
    return np.stack([1.0 - s, s, np.zeros_like(s)], axis=1)


def _run(pts, scores, frame_index=None, **params) -> tuple[list[Event], np.ndarray]:
    """rank() on a score curve; returns (events, event_id)."""
    pts = np.asarray(pts, dtype=np.float64)
    if frame_index is None:
        frame_index = np.arange(len(pts), dtype=np.int64)
    r = rank(pts, frame_index, _probs_from_scores(scores), CLASSES, ABNORMAL, RankParams(**params))
    return r.events, r.event_id


def _sample(fps: float, duration: float, pieces: list[tuple[float, float, float]], base=0.05):
    """pts and scores of a piecewise-constant score curve sampled at ``fps``."""
    pts = np.arange(int(round(duration * fps))) / fps
    scores = np.full(pts.shape, base)
    for t0, t1, value in pieces:
        scores[(pts >= t0) & (pts < t1)] = value
    return pts, scores


def test_abnormal_score_sums_abnormal_columns():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    out = abnormal_score(probs, ABNORMAL)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.3, 0.9], rtol=1e-6)


def test_smoothing_uses_time_window_on_irregular_pts():
    pts = np.array([0.0, 0.125, 0.25, 1.0, 3.0])
    scores = np.array([1.0, 0.0, 0.0, 1.0, 0.0])
    out = smooth_scores(scores, pts, 0.5)  # half-window 0.25 s, inclusive
    # A 3-frame window would mix frame 3 with its neighbours; a 0.5 s window leaves it alone.
    np.testing.assert_allclose(out, [1 / 3, 1 / 3, 1 / 3, 1.0, 0.0], rtol=1e-6)
    assert out.dtype == np.float32


def test_smoothing_matches_brute_force_and_zero_window_copies():
    rng = np.random.default_rng(0)
    pts = np.cumsum(rng.uniform(0.01, 0.7, size=300))
    scores = rng.random(300)
    out = smooth_scores(scores, pts, 1.3)
    brute = [scores[np.abs(pts - t) <= 0.65].mean() for t in pts]
    np.testing.assert_allclose(out, brute, rtol=1e-5)
    copy = smooth_scores(scores, pts, 0.0)
    np.testing.assert_allclose(copy, scores, rtol=1e-6)
    assert not np.shares_memory(copy, scores)
    assert smooth_scores(np.zeros(0), np.zeros(0), 1.0).shape == (0,)
    np.testing.assert_allclose(smooth_scores(np.array([0.4]), np.array([2.0]), 1.0), [0.4])


def test_hysteresis_holds_through_dip_and_ends_below_leave():
    s = np.array([0.0, 0.6, 0.4, 0.45, 0.6, 0.3, 0.4, 0.6, 0.36])
    mask = hysteresis_mask(s, enter=0.5, leave=0.35)
    assert mask.tolist() == [False, True, True, True, True, False, False, True, True]
    # 0.4 before any entry never starts an event.
    assert not hysteresis_mask(np.array([0.4, 0.45]), 0.5, 0.35).any()
    with pytest.raises(ValueError, match="leave"):
        hysteresis_mask(s, enter=0.3, leave=0.5)


def test_event_survives_dip_between_thresholds():
    pts = np.arange(12) * 0.5
    scores = [0, 0.6, 0.4, 0.4, 0.4, 0.6, 0.3, 0, 0, 0, 0, 0]
    events, event_id = _run(pts, scores, smooth_seconds=0, merge_gap_seconds=0)
    assert len(events) == 1
    assert (events[0].start_frame, events[0].end_frame) == (1, 5)
    assert events[0].frame_count == 5
    assert (event_id >= 0).tolist() == [False] + [True] * 5 + [False] * 6


def test_short_blip_is_dropped_long_event_kept():
    pts, scores = _sample(30, 20, [(2.0, 2.0 + 5 / 30, 0.9), (10.0, 11.0, 0.9)])
    events, event_id = _run(pts, scores, smooth_seconds=0, min_event_seconds=0.5)
    assert len(events) == 1
    assert events[0].start_seconds == pytest.approx(10.0)
    assert not (event_id[(pts >= 1.5) & (pts < 3)] >= 0).any()
    # A single frame at 2 fps lasts one period (0.5 s) and is therefore kept.
    pts2, scores2 = _sample(2, 20, [(5.0, 5.5, 0.9)])
    events2, _ = _run(pts2, scores2, smooth_seconds=0, min_event_seconds=0.5)
    assert len(events2) == 1 and events2[0].frame_count == 1


@pytest.mark.parametrize("gap, expected", [(1.0, 1), (3.0, 2)])
def test_merge_gap(gap, expected):
    pts, scores = _sample(2, 40, [(10.0, 12.5, 0.9), (12.0 + gap, 15.0 + gap, 0.9)])
    events, event_id = _run(pts, scores, smooth_seconds=0, merge_gap_seconds=2.0)
    assert len(events) == expected
    if expected == 1:
        ev = events[0]
        assert (ev.start_seconds, ev.end_seconds) == (10.0, 14.5 + gap)
        assert ev.frame_count == int((ev.end_seconds - ev.start_seconds) * 2) + 1
        assert (event_id == 0).sum() == ev.frame_count  # gap frames belong to the event


def test_same_events_at_2_and_30_fps():
    pieces = [(10.0, 20.0, 0.9), (40.0, 45.0, 0.8), (70.0, 70.3, 0.9), (90.0, 92.0, 0.7)]
    results = {}
    for fps in (2, 30):
        pts, scores = _sample(fps, 120, pieces)
        events, _ = _run(pts, scores)  # default params: 1 s smoothing
        results[fps] = sorted(events, key=lambda e: e.start_seconds)
    assert len(results[2]) == len(results[30]) == 3  # the 0.3 s blip is gone at both rates
    for a, b in zip(results[2], results[30]):
        assert abs(a.start_seconds - b.start_seconds) <= 0.5
        # The inclusive 1 s window holds 3 samples at 2 fps (effectively 1.5 s of video), so the
        # smoothed tail falls below leave_threshold up to ~0.65 s earlier than at 30 fps.
        assert abs(a.end_seconds - b.end_seconds) <= 0.75
        assert a.event_id == b.event_id


def test_same_events_at_2_and_30_fps_without_smoothing():
    pieces = [(10.0, 20.0, 0.9), (40.0, 45.0, 0.8), (90.0, 92.0, 0.7)]
    results = {}
    for fps in (2, 30):
        pts, scores = _sample(fps, 120, pieces)
        events, _ = _run(pts, scores, smooth_seconds=0)
        results[fps] = sorted(events, key=lambda e: e.start_seconds)
    assert len(results[2]) == len(results[30]) == 3
    for a, b in zip(results[2], results[30]):
        assert abs(a.start_seconds - b.start_seconds) <= 0.5
        assert abs(a.end_seconds - b.end_seconds) <= 0.5


def test_ranking_by_peak_and_event_ids():
    pts, scores = _sample(
        2, 100, [(10, 15, 0.7), (30, 35, 0.95), (50, 55, 0.8), (70, 75, 0.8)], base=0.0
    )
    events, event_id = _run(pts, scores, smooth_seconds=0)
    assert [e.event_id for e in events] == [0, 1, 2, 3]
    assert [e.peak_score for e in events] == pytest.approx([0.95, 0.8, 0.8, 0.7])
    # Tie between 0.8 peaks: the earlier event ranks first.
    assert [e.start_seconds for e in events] == [30.0, 50.0, 70.0, 10.0]
    for e in events:
        sel = np.flatnonzero(event_id == e.event_id)
        assert len(sel) == e.frame_count
        assert (pts[sel[0]], pts[sel[-1]]) == (e.start_seconds, e.end_seconds)
        assert e.mean_score == pytest.approx(scores[sel].mean())


def test_dominant_class_uses_summed_probability():
    n = 20
    pts = np.arange(n) * 0.5
    probs = np.tile([1.0, 0.0, 0.0], (n, 1))
    probs[5] = [0.05, 0.9, 0.05]  # ulcer has the single highest probability...
    probs[6:9] = [0.1, 0.2, 0.7]  # ...but bleeding has the larger sum (2.15 vs 1.5)
    probs[14:16] = [0.1, 0.6, 0.3]  # a second event where ulcer dominates
    r = rank(pts, np.arange(n), probs, CLASSES, ABNORMAL, RankParams(smooth_seconds=0))
    by_start = {e.start_frame: e for e in r.events}
    assert by_start[5].dominant_class == "bleeding"
    assert by_start[5].peak_frame == 5
    assert by_start[14].dominant_class == "ulcer"
    # QA 71 #5: a top frame names its own most probable abnormal class (frame 5: ulcer, in bleeding's event)
    assert [(f, c) for (f, _, _), c in zip(r.top_frames, r.top_classes)] == [(5, "ulcer"), (15, "ulcer")]
    view = np.ones(n, bool)
    view[5] = False  # a frame without a view is never a top frame; the frames after it take their own classes
    probs[5] = np.nan
    r = rank(pts, np.arange(n), probs, CLASSES, ABNORMAL, RankParams(smooth_seconds=0), has_view=view)
    assert [(f, c) for (f, _, _), c in zip(r.top_frames, r.top_classes)][0] == (6, "bleeding")
    # review rev66: two rows of one time (a library caller's) each keep their own class; QA 124 #6: of one frame index
    twins = np.array([[0.1, 0.8, 0.1], [0.1, 0.05, 0.85]])  # too they were taken, as two frames.parquet rows of one frame
    assert rank(np.zeros(2), np.array([7, 8]), twins, CLASSES, ABNORMAL, RankParams(smooth_seconds=0, nms_seconds=0)).top_classes == ["ulcer", "bleeding"]
    with pytest.raises(ValueError, match=r"^frame_index must name each frame once, got 7 2 times \(1 repeated\)"):
        rank(np.zeros(2), np.array([7, 7]), twins, CLASSES, ABNORMAL, RankParams(smooth_seconds=0, nms_seconds=0))


def test_top_k_nms():
    rng = np.random.default_rng(1)
    pts = np.arange(2000) / 10.0
    scores = rng.random(2000)
    top = top_k_frames(pts, np.arange(2000), scores, k=30, nms_seconds=5.0)
    assert len(top) == 30
    assert top[0][0] == int(np.argmax(scores)) and top[0][2] == pytest.approx(scores.max())
    assert [t[2] for t in top] == sorted((t[2] for t in top), reverse=True)
    times = np.array([t[1] for t in top])
    diffs = np.abs(times[:, None] - times[None, :])[~np.eye(len(times), dtype=bool)]
    assert diffs.min() >= 5.0
    # The runner-up 1 s from the max is suppressed; exactly nms_seconds away is allowed.
    pts2 = np.array([0.0, 1.0, 5.0, 20.0])
    top2 = top_k_frames(pts2, np.array([10, 11, 12, 13]), np.array([0.9, 0.8, 0.7, 0.1]), 10, 5.0)
    assert [t[0] for t in top2] == [10, 12, 13]
    assert top_k_frames(pts2, np.arange(4), np.ones(4), 0, 5.0) == []


def test_empty_and_single_frame():
    r = rank(np.zeros(0), np.zeros(0, np.int64), np.zeros((0, 3)), CLASSES, ABNORMAL, RankParams())
    assert r.smoothed.shape == (0,) and r.event_id.shape == (0,)
    assert r.event_id.dtype == np.int32 and r.events == [] and r.top_frames == []
    one = (np.array([3.0]), np.array([7]), np.array([[0.1, 0.5, 0.4]]))
    r1 = rank(*one, CLASSES, ABNORMAL, RankParams())
    assert r1.events == []  # duration 0 (no frame period) < 0.5 s
    assert r1.top_frames == [(7, 3.0, pytest.approx(0.9))]
    r2 = rank(*one, CLASSES, ABNORMAL, RankParams(min_event_seconds=0))
    assert len(r2.events) == 1 and r2.events[0].start_frame == 7
    assert r2.events[0].dominant_class == "ulcer" and r2.event_id.tolist() == [0]
    # a one-frame study of a 2 fps source lasts one period, 0.5 s: an event (none at 4 fps, as two frames there)
    assert len(rank(*one, CLASSES, ABNORMAL, RankParams(), frame_period=0.5).events) == 1
    assert rank(*one, CLASSES, ABNORMAL, RankParams(), frame_period=0.25).events == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"smooth_seconds": -1.0}, r"smooth_seconds.*-1\.0"),
        ({"merge_gap_seconds": -0.1}, "merge_gap_seconds"),
        ({"min_event_seconds": float("nan")}, "min_event_seconds"),
        ({"nms_seconds": -5}, "nms_seconds"),
        ({"enter_threshold": 1.5}, r"enter_threshold.*1\.5"),
        ({"leave_threshold": -0.1}, "leave_threshold"),
        ({"enter_threshold": 0.3, "leave_threshold": 0.4}, "leave_threshold.*enter_threshold"),
        ({"top_k": -1}, r"top_k.*-1"),
        ({"top_k": 2.5}, "top_k"),
    ],
)
def test_param_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RankParams(**kwargs).validate()
    with pytest.raises(ValueError, match=match):
        rank(np.zeros(2), np.arange(2), np.zeros((2, 3)), CLASSES, ABNORMAL, RankParams(**kwargs))


def test_shape_validation():
    pts, fidx, probs = np.arange(5.0), np.arange(5), np.full((5, 3), 1 / 3)
    p = RankParams()
    with pytest.raises(ValueError, match="probs"):
        rank(pts, fidx, probs[:4], CLASSES, ABNORMAL, p)
    with pytest.raises(ValueError, match="frame_index"):
        rank(pts, fidx[:4], probs, CLASSES, ABNORMAL, p)
    with pytest.raises(ValueError, match="class_names"):
        rank(pts, fidx, probs, CLASSES[:2], ABNORMAL, p)
    with pytest.raises(ValueError, match="abnormal_indices"):
        rank(pts, fidx, probs, CLASSES, [1, 3], p)
    with pytest.raises(ValueError, match="ascending"):
        rank(pts[::-1].copy(), fidx, probs, CLASSES, ABNORMAL, p)
    scores = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match="smoothed"):
        find_events(pts, fidx, scores, scores[:3], probs, CLASSES, ABNORMAL, p)


def test_frame_index_gaps_are_reported():
    # Frames 3, 4 and 9 failed to decode; pts follow the real frame numbers at 2 fps.
    fidx = np.array([0, 1, 2, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19])
    pts = fidx / 2.0
    scores = np.where((fidx >= 5) & (fidx <= 11), 0.9, 0.0)
    scores[fidx == 10] = 0.95
    events, _ = _run(pts, scores, frame_index=fidx, smooth_seconds=0)
    assert len(events) == 1
    ev = events[0]
    assert (ev.start_frame, ev.end_frame, ev.peak_frame) == (5, 11, 10)
    assert (ev.start_seconds, ev.end_seconds, ev.peak_seconds) == (2.5, 5.5, 5.0)
    assert ev.frame_count == 6


def test_smoke_100k_frames():
    n = 100_000
    rng = np.random.default_rng(2)
    pts = np.cumsum(rng.uniform(0.02, 0.05, size=n))
    logits = np.cumsum(rng.normal(0, 0.05, size=n))
    s = 1 / (1 + np.exp(-(logits - logits.mean())))
    probs = np.stack([1 - s, s * 0.6, s * 0.4], axis=1)
    r = rank(pts, np.arange(n) * 2, probs, CLASSES, ABNORMAL, RankParams())
    assert r.smoothed.shape == (n,) and r.event_id.shape == (n,)
    assert [e.event_id for e in r.events] == list(range(len(r.events)))
    peaks = [e.peak_score for e in r.events]
    assert peaks == sorted(peaks, reverse=True)
    assert sum(e.frame_count for e in r.events) == int((r.event_id >= 0).sum())
    assert 0 < len(r.top_frames) <= 20


def test_events_of_an_adaptive_rate_are_the_same_at_2_and_6_fps():
    """QA 29: runs 1.5 s of unflagged video apart split at 2 frames/s but merged at 6 (the merge gap was
    measured with one frame period in); a frame's period was the study's median step, so a lone flagged
    frame of a 2 frames/s stretch in a study mostly at 6 lasted 1/6 s and was dropped."""
    for fps in (2, 6):  # bleeding 5.0-8.0 s and 9.5-12.0 s: 1.5 s apart, under the 2 s merge gap
        pts, scores = _sample(fps, 20, [(5.0, 8.0, 0.9), (9.5, 12.0, 0.9)])
        events, _ = _run(pts, scores, smooth_seconds=0, merge_gap_seconds=2.0)
        assert [(e.start_seconds, round(e.end_seconds + 1 / fps, 6)) for e in events] == [(5.0, 12.0)], fps
        assert events[0].duration_seconds == pytest.approx(7.0)
    # mostly 6 frames/s, one 2 frames/s stretch (10-20 s) holding a single flagged frame at 15 s
    pts = np.concatenate([np.arange(60) / 6, 10 + np.arange(20) / 2, 20 + np.arange(60) / 6])
    scores = np.where(pts == 15.0, 0.9, 0.05)
    events, _ = _run(pts, scores, smooth_seconds=0, min_event_seconds=0.5)
    assert len(events) == 1 and events[0].frame_count == 1 and events[0].duration_seconds == pytest.approx(0.5)
    # and the other way round: a lone 6 frames/s frame in a study mostly at 2 lasts 1/6 s, under 0.5
    pts = np.concatenate([np.arange(20) / 2, 10 + np.arange(60) / 6, 20 + np.arange(20) / 2])
    assert _run(pts, np.where(pts == 15.0, 0.9, 0.05), smooth_seconds=0, min_event_seconds=0.5)[0] == []


def test_local_periods_are_the_steps_around_each_step():
    from capsule_triage.periods import frame_periods, local_periods

    rng = np.random.default_rng(3)
    for n in (2, 3, 5, 12, 21, 22, 23, 60):
        pts = np.cumsum(rng.uniform(0.1, 2.0, n))
        steps = np.diff(pts)
        expected = [np.median(np.concatenate([steps[max(0, i - 10):i], steps[i + 1:i + 11]])) if len(steps) >= 5 else np.median(steps)
                    for i in range(len(steps))]
        np.testing.assert_allclose(local_periods(pts), expected)
        assert frame_periods(pts)[-1] == local_periods(pts)[-1]
    assert frame_periods(np.array([3.0]), 0.25).tolist() == [0.25] and frame_periods(np.array([3.0])).tolist() == [0.0]
    # review rev27 (left for later): a repeated timestamp is no period; where every other step was one, the median halved
    # (0.125 s at 4 frames/s, 0 under five steps) and the frames lost in a 2.25 s step were counted at 8 frames/s (17, not 8)
    from capsule_triage.completeness import time_gaps

    paired = np.repeat(np.concatenate([np.arange(40) / 4, 12 + np.arange(40) / 4]), 2)  # two frames at each time
    assert np.allclose(local_periods(paired), 0.25) and np.allclose(local_periods(paired[:4]), 0.25)
    assert [(g["from_seconds"], g["frames_missing_estimate"]) for g in time_gaps(paired)["gaps"]] == [(9.75, 8)]
    assert local_periods(np.zeros(30)).tolist() == [0.0] * 29 and local_periods(np.zeros(3)).tolist() == [0.0] * 2
    # review rev27: in a study of 4 frames the steps besides a step are its gap: a lone frame at 0 lasted 4.75 s
    events, _ = _run([0.0, 0.5, 1.0, 10.0], [0.9, 0.05, 0.05, 0.05], smooth_seconds=0, min_event_seconds=0.5)
    assert [e.duration_seconds for e in events] == [0.5]


def test_frames_without_a_view_are_unseen_time_whatever_their_number():
    """Review rev27: with frames without a view left out, the periods came from the frames with a view alone:
    at 6 frames/s, one frame in 30 with a view for 120 s made a 5 s period, and all of them one 110 s event."""
    pts = np.arange(0, 200, 1 / 6)
    view, i = np.ones(len(pts), bool), np.arange(len(pts))
    middle = (pts >= 10) & (pts < 130)
    view[middle] = i[middle] % 30 == 0
    scores = np.where(middle, 0.9, 0.05)
    probs = _probs_from_scores(np.where(view, scores, np.nan))
    for params in (RankParams(), RankParams(smooth_seconds=0, min_event_seconds=0.5)):
        got = rank(pts, i, probs, CLASSES, ABNORMAL, params, has_view=view)
        assert all(e.duration_seconds < 1 for e in got.events), [(e.start_seconds, e.end_seconds) for e in got.events]


def test_given_periods_hold_when_some_frames_have_no_view():
    """Review rev93 #3: ``rank(periods=...)`` was dropped when some frame had no view, and the periods made again from
    the timeline alone: frames 1 s apart that each show 0.25 s (3/4 of every second unseen, merge gap 0.5 s) made one
    event of 10 frames instead of ten."""
    pts, i = np.arange(0.0, 30.0), np.arange(30)
    scores = np.where((pts >= 10) & (pts < 20), 0.9, 0.05)
    view = np.ones(30, bool)
    view[25] = False
    probs = _probs_from_scores(np.where(view, scores, np.nan))
    params, periods = RankParams(smooth_seconds=0, min_event_seconds=0, merge_gap_seconds=0.5), np.full(30, 0.25)
    got = rank(pts, i, probs, CLASSES, ABNORMAL, params, has_view=view, periods=periods)
    alone = rank(pts[view], i[view], probs[view], CLASSES, ABNORMAL, params, periods=periods[view])
    assert len(got.events) == len(alone.events) == 10
    assert [(e.start_frame, e.end_frame) for e in got.events] == [(e.start_frame, e.end_frame) for e in alone.events]
    with pytest.raises(ValueError, match="periods"):
        rank(pts, i, probs, CLASSES, ABNORMAL, params, has_view=view, periods=periods[:-1])


def test_smoothing_window_edges_do_not_depend_on_rounding():
    """QA 29: at 2 frames/s a 1 s window ends on the neighbours; 15.833 s held 16.333000000000002 out (2 frames, not 3)."""
    pts = np.array([15.333, 15.833, 16.333000000000002, 16.833])
    got = smooth_scores(np.array([0.0, 0.3, 0.9, 0.0]), pts, 1.0)
    assert got[1] == pytest.approx((0.0 + 0.3 + 0.9) / 3) and got[2] == pytest.approx((0.3 + 0.9 + 0.0) / 3)


def test_an_event_holds_the_frame_that_raised_it():
    """QA 64: a frame scored 0.491 between low ones smoothed to 0.183, under the enter threshold, while its neighbour
    smoothed to 0.195: the event was the neighbour alone, 'peak 0.050 - bleeding' on its card, and the frame that raised
    it in no event (43 of 347 events of a 5.5 h study). The event now takes in that frame: its peak and thumbnail."""
    scores = np.array([0.03, 0.033, 0.007, 0.491, 0.05, 0.043, 0.023, 0.018, 0.02])
    pts = np.arange(len(scores)) * 0.5  # 2 frames/s: the 1 s window averages each frame with its two neighbours
    params = RankParams(smooth_seconds=1.0, enter_threshold=0.1883, leave_threshold=0.1412, merge_gap_seconds=2.0,
                        min_event_seconds=0.5, top_k=5, nms_seconds=5.0)
    result = rank(pts, np.arange(len(scores)), np.stack([1 - scores, scores], 1), ["normal", "bleeding"], [1], params)
    assert np.flatnonzero(result.smoothed >= 0.1883).tolist() == [4]  # the case: only the neighbour is flagged
    (event,) = result.events
    assert (event.start_frame, event.end_frame, event.peak_frame, event.frame_count) == (3, 4, 3, 2)
    assert event.peak_score == pytest.approx(0.491) and event.duration_seconds == pytest.approx(1.0)
    assert result.event_id.tolist() == [-1, -1, -1, 0, 0, -1, -1, -1, -1]
    level = scores.copy()
    level[3] = 0.05  # the frame outside no higher than the run's own peak: the run is left as it is
    level[4], level[5] = 0.6, 0.05
    (event,) = rank(pts, np.arange(len(scores)), np.stack([1 - level, level], 1), ["normal", "bleeding"], [1], params).events
    assert (event.start_frame, event.peak_frame) == (event.end_frame - event.frame_count + 1, 4) and event.peak_score == pytest.approx(0.6)


def test_one_frame_missed_at_a_low_rate_does_not_split_an_event():
    """QA 64 #4: at 0.5 frames/s a frame is 2 s, the preset's merge gap, so one unflagged frame inside a 100-frame
    bleeding run split it into two events (#6 and #2 of a 12 h study). Across time without frames it still splits."""
    params = RankParams(smooth_seconds=1.0, enter_threshold=0.5, leave_threshold=0.4, merge_gap_seconds=2.0,
                        min_event_seconds=0.5, top_k=5, nms_seconds=5.0)
    scores = np.array([0.0] * 3 + [0.9] * 5 + [0.1] + [0.9] * 5 + [0.0] * 3)
    pts = np.arange(len(scores)) * 2.0  # 0.5 frames/s: the 1 s window is each frame alone
    probs = np.stack([1 - scores, scores], 1)
    (event,) = rank(pts, np.arange(len(scores)), probs, ["normal", "bleeding"], [1], params).events
    assert (event.start_frame, event.end_frame, event.frame_count) == (3, 13, 11)
    two = scores.copy()
    two[8:10] = 0.1  # two frames missed (4 s unflagged): two events, as before
    assert len(rank(pts, np.arange(len(scores)), np.stack([1 - two, two], 1), ["normal", "bleeding"], [1], params).events) == 2
    apart = pts.copy()
    apart[9:] += 6.0  # the lone frame followed by 6 s without frames: what was not seen splits it
    assert len(rank(apart, np.arange(len(scores)), probs, ["normal", "bleeding"], [1], params).events) == 2


def test_two_events_never_share_the_frame_that_raised_them():
    """Review rev58 #3: with a smoothing window wider than the merge gap (not a shipped preset's), two runs each took in
    the frame between them that raised both: events #0 (frames 0-1) and #1 (frames 1-3) both peaked at frame 1, and the
    per-frame event_id said only one. Runs are widened in time order, the later never back past the earlier."""
    scores = np.array([0.0, 0.9, 0.9, 0.0, 0.0, 0.9, 0.0, 0.0, 0.9, 0.9, 0.9, 0.0])
    params = RankParams(smooth_seconds=4.0, enter_threshold=0.5, leave_threshold=0.5, merge_gap_seconds=0.0,
                        min_event_seconds=0.0, top_k=0)
    result = rank(np.arange(len(scores)) * 1.0, np.arange(len(scores)), np.stack([1 - scores, scores], 1),
                  ["normal", "bleeding"], [1], params)
    spans = sorted((e.start_frame, e.end_frame) for e in result.events)
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:])), spans
    for e in result.events:  # each event's frames are the frames event_id gives it
        assert np.flatnonzero(result.event_id == e.event_id).tolist() == list(range(e.start_frame, e.end_frame + 1))
        assert e.start_frame <= e.peak_frame <= e.end_frame


def _spans(ranking) -> list[tuple[int, int, float]]:
    return [(e.start_frame, e.end_frame, round(e.peak_score, 2)) for e in sorted(ranking.events, key=lambda e: e.start_frame)]


def _rank_scores(pts, scores, params: RankParams, **kwargs):
    s = np.asarray(scores, np.float64)
    return rank(np.asarray(pts, np.float64), np.arange(len(s)), np.stack([1 - s, s], axis=1), ["n", "b"], [1], params, **kwargs)


def test_after_unseen_time_an_event_starts_only_where_a_score_reaches_enter_again():
    """QA 99 #1: the hysteresis ran on across 5 s without a view (or a decode gap): frames at 0.40 after it (enter 0.50,
    leave 0.375) went on the event of 0.90 before it, and the cut made them an event of their own, peak 0.40."""
    preset = RankParams(smooth_seconds=1.0, enter_threshold=0.5, leave_threshold=0.375, merge_gap_seconds=2.0, min_event_seconds=0.5)
    scores = np.array([0.9] * 6 + [np.nan] * 10 + [0.4] * 6)
    assert _spans(_rank_scores(np.arange(22) * 0.5, np.nan_to_num(scores), preset, has_view=~np.isnan(scores))) == [(0, 5, 0.9)]
    gap = np.r_[np.arange(6), np.arange(16, 22)] * 0.5  # the same after a decode gap of 5 s
    assert _spans(_rank_scores(gap, [0.9] * 6 + [0.4] * 6, preset)) == [(0, 5, 0.9)]
    again = _rank_scores(gap, [0.9] * 6 + [0.4, 0.4, 0.7, 0.7, 0.7, 0.4], preset)  # reaching enter again: from there
    assert _spans(again) == [(0, 5, 0.9), (7, 11, 0.7)] and again.event_id[6] == -1  # frame 7 smooths to 0.50
    without_gap = _rank_scores(np.arange(12) * 0.5, [0.9] * 6 + [0.4] * 6, preset)  # seen throughout: one event, as before
    assert _spans(without_gap) == [(0, 11, 0.9)]


def test_runs_that_took_in_their_peaks_merge_when_closer_than_the_merge_gap_and_never_cross_a_cut():
    """QA 99 #2: a run took in the frame that raised it after the merge, so two events lay 1.5 s apart under a 2 s merge
    gap, or touched (one lesion of two frames scored 1.0 split in two events); #3: with a smoothing window wider than the
    merge gap a run took in a frame after unseen time, and the event spanned time no frame showed."""
    preset = RankParams(smooth_seconds=1.0, enter_threshold=0.5, leave_threshold=0.375, merge_gap_seconds=2.0, min_event_seconds=0.5)
    assert _spans(_rank_scores(np.arange(17) * 0.5, [0, 0, .55, .55, .55, .5, .6, 0, 0, 0, .6, .5, .55, .55, .55, 0, 0], preset)) == [
        (3, 13, 0.6)]  # were (3, 6) and (10, 13): 1.5 s of unflagged time between them
    scores = np.zeros(30)
    scores[[18, 20, 21, 22, 25]] = [0.1, 0.4, 1.0, 1.0, 0.5]
    assert _spans(_rank_scores(np.arange(30) * 0.25, scores, RankParams(1.0, 0.5, 0.5, 0.5, 0.0))) == [(20, 23, 1.0)]  # were 20-21, 22-23
    pts = np.r_[np.arange(8), np.arange(10, 16)] / 6  # 6 frames/s, 0.33 s unseen after frame 7
    cut = _rank_scores(pts, [0, 0, .6, .6, .6, .6, .6, .6, .9, 0, 0, 0, 0, 0], RankParams(1.0, 0.5, 0.5, 0.25, 0.0))
    assert _spans(cut) == [(4, 7, 0.6)] and cut.event_id[8] == -1  # was 4-8: frame 8 lies after the cut
    assert cut.top_frames[0][0] == 8  # the reviewer still sees it: the top frame


def test_runs_never_merge_across_a_cut_and_touching_runs_are_one_event():
    """Review rev92: #2 the one-frame rule joined two runs across a cut where the local periods were uneven (an event
    spanning time no frame showed); #3 at a merge gap of 0 two runs that touched once they took in their peaks stayed two
    events (one lesion, two events)."""
    pts = np.r_[0, np.cumsum([1 / 6] * 5 + [0.5] * 6 + [1 / 6] * 4 + [0.5] * 2)]  # cuts after frames 5-10 at merge gap 0
    scores = np.zeros(len(pts))
    scores[[10, 13]] = [0.3, 1.0]
    cut = _rank_scores(pts, scores, RankParams(0.5, 0.3, 0.0, 0.0, 0.0))
    assert _spans(cut) == [(10, 10, 0.3), (12, 17, 1.0)]  # was one event 10-17, across the cut after frame 10
    scores = np.zeros(30)
    scores[[18, 20, 21, 22, 25]] = [0.1, 0.4, 1.0, 1.0, 0.5]
    for gap in (0.0, 0.5):
        assert _spans(_rank_scores(np.arange(30) * 0.25, scores, RankParams(1.0, 0.5, 0.5, gap, 0.0))) == [(20, 23, 1.0)], gap


def test_smoothing_stays_within_the_stretch_between_cuts():
    """Review rev92 #4: a smoothing window wider than twice the merge gap averaged the frames before a cut into the first
    after it, and made an event there whose raw scores were all 0 (the QA 64 symptom); it averages within its stretch."""
    pts = np.r_[np.arange(12), np.arange(14, 26)] / 6  # 6 frames/s, 0.33 s unseen after frame 11: a cut at merge gap 0.25
    scores = np.array([1.0] * 12 + [0.0] * 12)
    ranked = _rank_scores(pts, scores, RankParams(3.0, 0.4, 0.4, 0.25, 0.0))
    assert _spans(ranked) == [(0, 11, 1.0)] and ranked.smoothed[12] == 0.0  # was also (12, 12, 0.0), smoothed 0.41
    assert ranked.smoothed[11] == 1.0
    np.testing.assert_array_equal(smooth_scores(scores, pts, 3.0), _rank_scores(pts, scores, RankParams(3.0, 0.4, 0.4, 5.0, 0.0)).smoothed)


def test_repeated_timestamps_are_no_cut_and_stretches_are_checked():
    """Review rev93: #1 at merge gap 0, eleven or more frames of one timestamp have a local period of 0, and each step of 0
    counted as time not seen: one lesion became five events, four of 0 s; #2 a stretch array of the wrong length was
    numpy's broadcast error, a descending one averaged wrongly."""
    pts = np.r_[np.arange(10) * 0.5, np.full(25, 5.0), 5.5 + np.arange(10) * 0.5]
    scores = np.r_[np.zeros(10), np.full(25, 0.9), np.zeros(10)]
    ranked = _rank_scores(pts, scores, RankParams(1.0, 0.5, 0.375, 0.0, 0.0))
    assert [(e.start_frame, e.end_frame) for e in ranked.events] == [(9, 35)]
    with pytest.raises(ValueError, match=r"^stretch must have shape \[6\]"):
        smooth_scores(np.ones(6), np.arange(6.0), 2.0, np.zeros(5, int))
    with pytest.raises(ValueError, match="^stretch must be ascending"):
        smooth_scores(np.ones(6), np.arange(6.0), 2.0, np.array([1, 1, 0, 0, 0, 0]))
