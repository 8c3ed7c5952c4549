"""Is a decoded video complete? The end-of-stream checks of :func:`capsule_triage.reader.read_frames`
(also run by the decoder-process path over all of its parts), and the gaps inside it: stretches of
time without frames (a damaged part the demuxer skipped, a capsule's lost radio link), which the
reviewer must know were not seen."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .errors import InputError
from .frames import DecodeStats, SourceInfo


def tag_seconds(value: str | None) -> float | None:
    """Seconds of a Matroska ``DURATION`` tag ("HH:MM:SS.nnnnnnnnn"), written by the muxer per track."""
    match = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", (value or "").strip())
    return int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3]) if match else None


def check_complete(path: Path, info: SourceInfo, stats: DecodeStats, *, packets_read: int, packets_end: float | None,
                   frames_out: int) -> None:
    """After the last packet: a truncated file is an error; frames lost inside a complete file are counted.

    Truncated = the header announces at least two frames more than the file delivered AND the
    delivered packets stop short in time of what the header announces (frame count / average frame
    rate; a damaged chunk in the middle loses frames but the packets still reach the end; the
    container's duration is no reference: demuxers compute it from what is there). Frames the header announces
    that neither decoded nor failed loudly (a damaged packet the decoder swallowed, a chunk the
    demuxer skipped) are counted as skipped. Only containers whose header counts frames (mp4, mov,
    avi) are checked so: in WebM/MKV a packet need not be a frame (e.g. VP8 alt-ref packets). There,
    a file whose packets end more than a second (or two frames) before the video track's duration as
    its muxer wrote it (Matroska's ``DURATION`` tag) is truncated; without the tag nothing is checked.
    """
    written = info.muxer_duration_seconds
    if written and packets_end is not None and stats.frames_decoded:
        # FFmpeg's muxer writes the track's last timestamp (from zero, not from the stream's start), mkvmerge
        # the duration of tracks it starts at zero: comparing the last timestamp reached errs towards "complete".
        reached = packets_end + (info.start_seconds or 0.0)
        slack = max(1.0, 2 / info.average_fps) if info.average_fps else 1.0
        if reached < written - slack:
            raise InputError(path, f"truncated video: stream ended at {reached:.1f} s of the {written:.1f} s its header announces")
    announced = info.num_frames_from_header
    if not announced:
        return
    reached_end = bool(info.average_fps) and packets_end is not None and packets_end >= (announced - 2) / info.average_fps
    if stats.frames_decoded and packets_read < announced - 1 and not reached_end:
        raise InputError(path, f"truncated video: stream ended after {packets_read} of the {announced} frames its header announces")
    lost = max(announced, packets_read) - frames_out
    if lost > 0:
        stats.frames_skipped += lost
        if len(stats.errors) < 10:
            stats.errors.append(f"{lost} frame(s) lost without a decoder error (damaged data)")


GAP_MIN_SECONDS = 1.0  # a gap is longer than this and than GAP_PERIODS typical frame periods
GAP_PERIODS = 3.0  # (a capsule's adaptive 2-6 frames/s stays well inside 3 periods of its median)
GAPS_LISTED = 100


def time_gaps(pts_seconds: np.ndarray) -> dict:
    """Stretches without frames in a sorted timeline, for run.json and the report.

    Returns:
        {"count", "seconds" (without frames, in all: each step less one median frame period),
        "frames_missing_estimate" (at the median frame period), "gaps": up to
        :data:`GAPS_LISTED` of {"from_seconds", "to_seconds", "seconds", "frames_missing_estimate"}}.
    """
    pts = np.asarray(pts_seconds, np.float64)
    steps = np.diff(pts)
    if len(steps) < 2:
        return {"count": 0, "seconds": 0.0, "frames_missing_estimate": 0, "gaps": []}
    period = float(np.median(steps))
    at = np.flatnonzero(steps > max(GAP_MIN_SECONDS, GAP_PERIODS * period))
    missing = [max(0, round(steps[i] / period) - 1) if period > 0 else 0 for i in at]
    without = steps[at] - period  # the time no frame covers: the step less the one period a frame would fill
    gaps = [{"from_seconds": float(pts[i]), "to_seconds": float(pts[i + 1]), "seconds": round(float(w), 3),
             "frames_missing_estimate": int(m)} for i, w, m in zip(at, without, missing)]
    return {"count": len(gaps), "seconds": round(float(without.sum()), 3), "frames_missing_estimate": int(sum(missing)),
            "gaps": gaps[:GAPS_LISTED]}
