"""Redundant-frame skipping: capsules stall, so consecutive frames are often near-identical.

A frame whose 16x16 grey thumbnail differs from the last *scored* frame's by less than
``threshold`` (mean absolute difference, 0-255 scale) reuses that frame's probabilities instead of
running the model. Comparing with the last scored frame (not the previous one) keeps a slow drift
from being skipped forever. Off by default (see benchmarks/README.md for the measurement).
"""

from __future__ import annotations

import numpy as np

THUMB = 16  # thumbnail side in blocks


def thumbnails(frames: np.ndarray) -> np.ndarray:
    """float32 [N, 16, 16] block-mean grey thumbnails of uint8 [N, H, W, 3] frames (vectorised)."""
    n, h, w, _ = frames.shape
    bh, bw = h // THUMB, w // THUMB
    if bh == 0 or bw == 0:
        return frames.mean(axis=3, dtype=np.float32)
    crop = frames[:, : bh * THUMB, : bw * THUMB]
    return crop.reshape(n, THUMB, bh, THUMB, bw, 3).mean(axis=(2, 4, 5), dtype=np.float32)


class DuplicateSkipper:
    """Stateful across batches of one stream: which frames need the model, and whom the others copy.

    ``plan`` each batch, then ``fill`` the batches in the same order; a plan may run ahead of the
    fill of the batch before it (the pipeline keeps one batch in flight): the thumbnail compared
    with is always a scored frame's, whose probabilities that earlier ``fill`` provides.

    Args:
        threshold: max mean absolute thumbnail difference (0-255) for a frame to count as a duplicate.
    """

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.last_thumb: np.ndarray | None = None
        self.last_view = True
        self.last_probs: np.ndarray | None = None
        self.skipped = 0

    def plan(self, frames: np.ndarray, has_view: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return (score_mask bool [N], source int [N]): source[i] = position in this batch whose
        probabilities frame i takes, or -1 = the last scored frame of the previous batch. With
        ``has_view`` (:func:`capsule_triage.field_of_view.has_view`), a frame never takes those of a
        frame on the other side of that line (QA 28: a dim frame with a view took the score of a
        slightly dimmer one without)."""
        thumbs = thumbnails(frames)
        n = len(frames)
        view = np.ones(n, dtype=bool) if has_view is None else np.asarray(has_view, dtype=bool)
        score = np.ones(n, dtype=bool)
        source = np.arange(n)
        ref_thumb, ref_pos, ref_view = self.last_thumb, -1, self.last_view
        for i in range(n):
            if ref_thumb is not None and view[i] == ref_view and np.abs(thumbs[i] - ref_thumb).mean() < self.threshold:
                score[i] = False
                source[i] = ref_pos
            else:
                ref_thumb, ref_pos, ref_view = thumbs[i], i, view[i]
        self.last_thumb, self.last_view = ref_thumb, ref_view
        return score, source

    def fill(self, scored_probs: np.ndarray, score: np.ndarray, source: np.ndarray) -> np.ndarray:
        """Expand probabilities of the scored frames to the whole batch."""
        probs = np.empty((len(score), scored_probs.shape[1]), dtype=np.float32)
        probs[score] = scored_probs
        for i in np.flatnonzero(~score):
            probs[i] = probs[source[i]] if source[i] >= 0 else self.last_probs
        self.skipped += int((~score).sum())
        self.last_probs = probs[np.flatnonzero(score)[-1]] if score.any() else self.last_probs
        return probs
