"""Redundant-frame skipping: duplicates reuse the last scored frame's probabilities, nothing else."""

from __future__ import annotations

import numpy as np

from capsule_triage.dedup import DuplicateSkipper, thumbnails


def _frames(values):
    return np.stack([np.full((32, 32, 3), v, np.uint8) for v in values])


def test_thumbnails_are_block_means():
    frames = np.zeros((1, 32, 32, 3), np.uint8)
    frames[0, :2, :2] = 255
    thumb = thumbnails(frames)
    assert thumb.shape == (1, 16, 16) and thumb[0, 0, 0] == 255 and thumb[0, 0, 1] == 0


def test_duplicates_copy_the_last_scored_frame_across_batches():
    skipper = DuplicateSkipper(threshold=2.0)
    score, source = skipper.plan(_frames([10, 11, 40, 41, 41]))
    assert score.tolist() == [True, False, True, False, False] and source.tolist() == [0, 0, 2, 2, 2]
    probs = skipper.fill(np.array([[0.9, 0.1], [0.2, 0.8]], np.float32), score, source)
    np.testing.assert_allclose(probs[:, 1], [0.1, 0.1, 0.8, 0.8, 0.8], rtol=1e-6)
    score, source = skipper.plan(_frames([41, 90]))  # 41 vs the last scored (40): duplicate
    assert score.tolist() == [False, True] and source[0] == -1
    probs = skipper.fill(np.array([[0.5, 0.5]], np.float32), score, source)
    np.testing.assert_allclose(probs[:, 1], [0.8, 0.5], rtol=1e-6)
    assert skipper.skipped == 4


def test_slow_drift_is_rescored():
    """Each frame differs by 1 from the previous, but the drift from the last scored frame grows."""
    skipper = DuplicateSkipper(threshold=2.5)
    score, _ = skipper.plan(_frames([10, 11, 12, 13, 14, 15]))
    assert score.tolist() == [True, False, False, True, False, False]


def test_first_frame_is_always_scored():
    score, _ = DuplicateSkipper(threshold=100).plan(_frames([5, 5]))
    assert score.tolist() == [True, False]


def test_a_frame_with_a_view_never_takes_the_score_of_one_without():
    """QA 28: a dim frame with a view took the model's output for a slightly dimmer one without a view
    (0.514 for frames that score 0.492-0.499), so its true score was never computed."""
    skipper = DuplicateSkipper(threshold=2.0)
    view = np.array([False, False, True, True, False])
    score, source = skipper.plan(_frames([20, 20, 21, 21, 21]), view)
    assert score.tolist() == [True, False, True, False, True] and source.tolist() == [0, 0, 2, 2, 4]
    score, source = skipper.plan(_frames([21, 21]), np.array([False, True]))  # against the last scored (no view)
    assert score.tolist() == [False, True] and source.tolist() == [-1, 1]
