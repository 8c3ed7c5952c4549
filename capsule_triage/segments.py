"""Split one video into keyframe-aligned parts that decode independently (several decoder processes).

One decoder decodes ~1,100-1,450 frames/s of 336 px H.264 on one core; a GPU scores several
thousand. :func:`plan_segments` reads the packet headers only (demuxing, no decoding: 0.23 s for the
50,000-frame benchmark study) and cuts at keyframes where the stream is closed: every packet before the cut
in decode order shows before the keyframe, and every packet from it on shows at or after it, so no
frame of one part needs a reference from another (open-GOP B-frames, which do, are never split).
It relies on the container's keyframe flag (an mp4 sync sample, an mkv/avi key frame) meaning what
the formats define: decoding can start there and every frame from it on decodes exactly (the tests
compare the pixels with one pass on x264 with B-frames and on MJPEG).
Anything unusual, packets without timestamps, duplicate timestamps, discarded packets, a demuxer
error, means no plan: the caller then decodes the whole video in one pass, as always.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from .frames import Segment
from .reader import video_stream


@dataclass(frozen=True)
class SegmentPlan:
    """The parts, and what the single-pass reader would have learnt about the packets (its
    truncation check runs once all parts are decoded).

    Attributes:
        segments: consecutive parts covering the whole video, in time order.
        packets_read: packets that carry a frame.
        packets_end: how far in time the packets reach, in seconds from the stream's start.
    """

    segments: list[Segment]
    packets_read: int
    packets_end: float | None


def plan_segments(path: str | Path, parts: int) -> SegmentPlan | None:
    """Up to ``parts`` parts of about equal packet counts; None when the video cannot be split safely
    (or has fewer than two clean cuts' worth of packets)."""
    if parts < 2:
        return None
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = video_stream(container)
            time_base = float(stream.time_base) if stream.time_base else None
            start = float(stream.start_time * stream.time_base) if stream.start_time is not None and time_base else 0.0
            pts, keyframe, ends = [], [], []
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                if packet.pts is None or packet.is_discard or time_base is None:
                    return None
                pts.append(packet.pts)
                keyframe.append(packet.is_keyframe)
                ends.append((packet.pts + (packet.duration or 0)) * time_base - start)
    except (av.FFmpegError, IndexError, ValueError):
        return None
    n = len(pts)
    order = np.asarray(pts, dtype=np.int64)
    if n < 2 * parts or len(np.unique(order)) != n:
        return None
    shown_before = np.maximum.accumulate(order)  # latest pts among packets [0, i]
    shown_from = np.minimum.accumulate(order[::-1])[::-1]  # earliest pts among packets [i, n)
    if not keyframe[0] or shown_from[0] < order[0]:
        return None  # frames before the first keyframe, or shown before it (open GOP), lack references: numbered by one pass
    cuts = np.array([i for i in range(1, n) if keyframe[i] and shown_before[i - 1] < order[i] == shown_from[i]], dtype=np.int64)
    if len(cuts) == 0:
        return None
    chosen = sorted({int(cuts[np.abs(cuts - n * k / parts).argmin()]) for k in range(1, parts)})
    bounds = [None] + [int(order[i]) for i in chosen] + [None]
    firsts = [0] + chosen  # at a clean cut, the packets before it are exactly the frames shown before it
    segments = [Segment(start_pts=a, end_pts=b, first_index=first) for a, b, first in zip(bounds[:-1], bounds[1:], firsts)]
    return SegmentPlan(segments=segments, packets_read=n, packets_end=max(ends))
