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
