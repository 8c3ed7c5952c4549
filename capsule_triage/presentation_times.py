"""Frame times for containers that store none: the k-th frame out of the decoder gets the k-th
smallest of the demuxer's guesses (AVI with B-frames)."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator

import av
import numpy as np

REORDER_FRAMES = 16  # the most frames an H.264/HEVC decoder holds back to put them in presentation order


class PresentationTimes:
    """Timestamps for containers that store none (AVI): the k-th frame out of the decoder gets the
    k-th smallest timestamp.

    A decoder hands frames out in presentation order, but an AVI demuxer guesses each packet's time
    in decode order, and with B-frames the guesses come out permuted (H.264: 1, 4, 3, 5, 2, ...).
    Frames wait here until :data:`REORDER_FRAMES` later ones have been seen, then leave with the
    smallest time not yet given out: the right times where the guesses are permuted within the
    decoder's reordering, and the same times where they already rise (MJPEG, gaps kept).
    """

    def __init__(self, depth: int = REORDER_FRAMES):
        self.depth = depth
        self.times: list[float] = []
        self.waiting: deque = deque()

    def push(self, item, seconds: float) -> Iterator[tuple[object, float]]:
        """Add a frame with its guessed time; yield the (item, time) pairs that can leave."""
        heapq.heappush(self.times, seconds)
        self.waiting.append(item)
        while len(self.waiting) > self.depth:
            yield self.waiting.popleft(), heapq.heappop(self.times)

    def drain(self) -> Iterator[tuple[object, float]]:
        """At the end of the stream: every frame still waiting."""
        while self.waiting:
            yield self.waiting.popleft(), heapq.heappop(self.times)


def kept(pairs: Iterator[tuple[object, float]]) -> Iterator[tuple[np.ndarray, int, float]]:
    """(rgb, index, time) for the reordered frames that were converted (None marks a skipped one)."""
    return ((rgb, i, t) for (rgb, i), t in pairs if rgb is not None)


def stores_no_times(container: av.container.InputContainer) -> bool:
    """True for containers whose frame times are the demuxer's guesses in decode order (AVI)."""
    return container.format.name == "avi"
