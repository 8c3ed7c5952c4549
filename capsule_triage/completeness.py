"""Is a decoded video complete? The end-of-stream checks of :func:`capsule_triage.reader.read_frames`
(also run by the decoder-process path over all of its parts), and the gaps inside it: stretches of
time without frames (a damaged part the demuxer skipped, a capsule's lost radio link), which the
reviewer must know were not seen."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

from .errors import InputError
from .frames import DecodeStats, SourceInfo
from .presentation_times import REORDER_FRAMES
from .periods import TIME_EPS, local_periods


def tag_seconds(value: str | None) -> float | None:
    """Seconds of a Matroska ``DURATION`` tag ("HH:MM:SS.nnnnnnnnn"), written by the muxer per track."""
    match = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", (value or "").strip())
    return int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3]) if match else None


FRAGMENT_BOXES = frozenset({b"moof", b"mdat"})  # what a fragmented MP4 adds fragment by fragment


def avi_indexed_frames(path: Path, stream) -> int | None:
    """The frames an AVI's index lists (chunks with data), when the file holds its whole index: a top-level ``idx1``
    chunk that ends within the file (written last, so a cut file has none, and FFmpeg's count would only be of the
    packets it read while probing: rev83 #3), in a file of one RIFF list (an OpenDML file over 1 GB adds ``AVIX`` lists
    after the one ``idx1`` covers: cut in one of those, its index would pass for whole, rev84 #4); else None. Its header
    also counts the empty chunks a muxer writes for a tick without a frame, a frame the capture dropped (QA 87 #2), which
    FFmpeg's index leaves out."""
    with open(path, "rb") as file:
        head, size = file.read(12), path.stat().st_size
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"AVI ":
            return None
        riff_end = 8 + struct.unpack("<I", head[4:8])[0]
        file.seek(riff_end + (riff_end & 1))
        if (follows := file.read(12))[:4] == b"RIFF" and follows[8:] == b"AVIX":  # OpenDML: lists after the one idx1 covers
            return None
        at, end, indexed = 12, min(size, riff_end), None
        while at + 8 <= end:
            file.seek(at)
            name, length = struct.unpack("<4sI", file.read(8))
            if name == b"idx1":
                indexed = len(stream.index_entries) if at + 8 + length <= size else None
            at += 8 + length + (length & 1)
    return indexed


def cut_iso_box(path: Path) -> str | None:
    """How a fragmented MP4/MOV is cut off: the fragment box (``moof``/``mdat``) the file ends inside, else None.

    A fragmented MP4 (``movflags=frag_keyframe``, with or without ``empty_moov``, as streaming recorders write)
    counts in its header the frames of its first fragment at most: cut mid-fragment it read as a shorter recording
    without a word (QA 40; review rev34: also when the header counted the first fragment). Reads 16 bytes per
    top-level box. Only a file with a ``moof`` box is judged (an unfragmented one is checked against the frames
    its header counts); bytes after the last whole box that are no fragment box (a few trailing bytes, padding,
    junk) are left to the demuxer, which plays such files whole. A cut in the first 4 bytes of a box header (its size
    field alone) cannot be told from such a tail: it reads as the file up to that box.
    """
    size = path.stat().st_size
    offset, fragmented = 0, False
    with open(path, "rb") as fh:
        while offset + 8 <= size:
            fh.seek(offset)
            head = fh.read(16)
            box_size, kind = struct.unpack(">I4s", head[:8])
            if box_size == 1 and len(head) == 16:  # a 64-bit size follows
                box_size = struct.unpack(">Q", head[8:16])[0]
            if box_size < 8 or kind not in FRAGMENT_BOXES and offset + box_size > size:
                return None  # to the end of the file (size 0), or not a box: not ours to judge
            fragmented |= kind == b"moof"
            if offset + box_size > size:
                return (f"the file ends inside its '{kind.decode()}' box ({size - offset:,} of its {box_size:,} bytes)"
                        if fragmented else None)
            offset += box_size
        if fragmented and 5 <= size - offset < 8:  # cut inside the next fragment's header (review rev35), not a tail of junk:
            fh.seek(offset)                          # its size and the start of 'moof'/'mdat' (rev36: 4 bytes are any tail)
            tail = fh.read(8)
            if struct.unpack(">I", tail[:4])[0] >= 8 and any(name.startswith(tail[4:]) for name in FRAGMENT_BOXES):
                return f"the file ends inside the header of its next box ({len(tail)} of its 8 bytes, at byte {offset:,})"
    return None


TRANSPORT_PACKETS = ((188, 0), (192, 4), (204, 0))  # MPEG-TS; Blu-ray/AVCHD M2TS (a 4-byte time before each); with Reed-Solomon bytes


def cut_transport_stream(path: Path) -> str | None:
    """How an MPEG transport stream is cut off: the packet the file ends inside, else None.

    A transport stream has no index and its header counts no frames, so a capture or a copy cut short read as a
    shorter recording, without a word (QA 62 #9). Recorders and muxers write whole packets (188 bytes; 192 in
    M2TS, 204 with error-correction bytes), so a file that ends inside one was cut. Judged only when the file's
    packets are found (a sync byte at the same place in each of its first 5 packets, as FFmpeg probes them) and
    its last part begins as a packet does (not a tail of other bytes). A cut on a packet boundary cannot be told
    from a whole file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(6 * 204)
        for packet, sync_at in TRANSPORT_PACKETS:
            start = next((start for start in range(sync_at, packet + sync_at)
                          if all(head[start + k * packet: start + k * packet + 1] == b"\x47" for k in range(5))), None)
            if start is None:
                continue
            left = (size - (start - sync_at)) % packet
            if not left:
                return None
            fh.seek(size - left + sync_at)
            if left > sync_at and fh.read(1) == b"\x47":  # QA 92 #3: what to do to triage the frames it holds, said
                return (f"the file ends inside a transport packet ({left} of its {packet} bytes, at byte {size - left:,}); "
                        f"to triage the frames before it, cut a copy there: truncate -s {size - left} COPY")
            return None
    return None


def unreadable_why(path: Path) -> str | None:
    """What a file FFmpeg cannot open is, where its first bytes or its boxes tell, else None (QA 47: a text file
    named .mp4, a truncated export and one still being copied all read "Invalid data found when processing input").
    An MP4/MOV without its index (``moov``, written last by most recorders): cut short inside a box, its media box
    left open (size 0: a recorder stopped before finishing), or never written; a file of text (an error page saved
    as the video, a note). Reads the first 256 bytes and 16 per top-level box, up to the index."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(256)
            if head[4:8] == b"ftyp":
                return _unindexed_iso(fh, size)
    except (OSError, struct.error):
        return None
    head = head.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut by the 256th byte is not binary
        text = head[: exc.start].decode("utf-8") if exc.start >= len(head) - 3 and exc.start > 0 else ""
    if text.strip() and all(ch.isprintable() or ch in "\t\r\n" for ch in text):
        return f"a text file, beginning {text.strip()[:40]!r}"
    return None


def _unindexed_iso(fh, size: int) -> str | None:
    offset = 0
    while offset + 8 <= size:
        fh.seek(offset)
        box_size, kind = struct.unpack(">I4s", fh.read(8))
        if kind == b"moov" or not all(33 <= c < 127 for c in kind):
            return None  # indexed, or not a box (a damaged size led here): FFmpeg's words stand
        if box_size == 1:
            box_size = struct.unpack(">Q", fh.read(8))[0]
        if box_size == 0:  # runs to the end of the file: a recorder's media box, never closed
            return (f"an MP4/MOV never finished: its '{kind.decode()}' box runs to the end of the file and no index (the 'moov' "
                    f"box) was written: a recording stopped before it was closed, or still being copied")
        if box_size < 8:
            return None
        if offset + box_size > size:
            return (f"an MP4/MOV cut short: the file ends inside its '{kind.decode()}' box ({size - offset:,} of its {box_size:,} "
                    f"bytes), before its index (the 'moov' box): still being copied, or damaged")
        offset += box_size
    return "an MP4/MOV without its index (the 'moov' box): a recording never finished?"


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

    MP4/MOV: the header's duration is the muxer's (the edit list's when there is one), and the
    demuxer leaves out only samples an edit list hides (a recording trimmed by ``ffmpeg -ss T -c
    copy``, an editor, a camera; QA: such files were refused as truncated, or reported 2 frames lost
    to damage). So packets that reach the header's duration make a complete file, and the samples
    the header counts beyond them are hidden frames (``stats.frames_hidden_by_edit_list``), not lost.
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
    if info.frames_in_index and packets_read <= info.frames_in_index < announced:
        # QA 87 #2: an AVI's header counts the empty chunks its muxer wrote for ticks without a frame (dropped by the
        # capture, irregular timing: "show the last one again"); its whole index lists the chunks with data (rev83 #1:
        # before the check for a cut file, which empty chunks at the end would fail)
        stats.ticks_without_frame = announced - info.frames_in_index
        announced = info.frames_in_index
    period = 1 / info.average_fps if info.average_fps else None
    edited = "mov" in (info.container or "").split(",") and info.duration_seconds and period
    end = info.duration_seconds if edited else (announced * period if period else None)
    reached_end = end is not None and packets_end is not None and packets_end >= end - 2 * period
    if stats.frames_decoded and packets_read < announced - 1 and not reached_end:
        raise InputError(path, f"truncated video: stream ended after {packets_read} of the {announced} frames its header announces")
    if edited and reached_end and packets_read < announced:
        stats.frames_hidden_by_edit_list += announced - packets_read
        announced = packets_read
    lost = max(announced, packets_read) - frames_out
    if lost > 0:
        stats.frames_skipped += lost
        if len(stats.errors) < 10:
            stats.errors.append(f"{lost} frame(s) lost without a decoder error (damaged data)")


class LeadingFrames:
    """Frames shown before the first frame the decoder gave that never came out: in a recording that
    starts inside a group of pictures (a capture started between keyframes, a file cut at a byte
    offset) the first frames lack their references, and decoders drop them without an error (QA:
    30 of 80 frames of such a transport stream went unscored and unmentioned).

    Fed the packets' timestamps in decode order and the frames' as they come out; a packet up to
    :data:`REORDER_FRAMES` after the first frame may still be shown before it (B-frames), and a
    frame stamped late (a capture clock) comes out after frames shown before it: only timestamps
    that never came out count. Packets the decoder failed on before the first frame are counted
    by the reader already."""

    def __init__(self):
        self.pts: list[int] = []
        self.first: int | None = None
        self.out: set[int] = set()  # frames shown before the first one that came out all the same
        self.after = 0
        self.failed = 0

    def packet(self, pts: int | None) -> None:
        if pts is not None and (self.first is None or self.after < REORDER_FRAMES):
            self.pts.append(pts)
            self.after += self.first is not None

    def decode_failed(self) -> None:
        self.failed += self.first is None

    def frame(self, pts: int | None) -> None:
        if pts is None:
            return
        if self.first is None:
            self.first = pts
        elif pts < self.first:
            self.out.add(pts)

    def count(self, stats: DecodeStats) -> int:
        """The frames lost so, added to ``stats`` (skipped, and one line in its errors)."""
        never_out = 0 if self.first is None else sum(p < self.first and p not in self.out for p in self.pts)
        lost = max(0, never_out - self.failed)
        if lost:
            stats.frames_skipped += lost
            stats.errors.append(f"{lost} frame(s) at the start could not be decoded (the recording starts inside a "
                                "group of pictures: their reference frames are not in the file)")
        return lost


GAP_MIN_SECONDS = 1.0  # a gap is longer than this and than GAP_PERIODS frame periods around it
GAP_PERIODS = 3.0  # (periods.local_periods: a capsule's adaptive 0.5-6 frames/s is judged at its rate there)
GAPS_LISTED = 100
SLOWEST_PERIOD = 2.0  # a capsule's slowest rate, 0.5 frames/s: steady steps up to this long are a rate, not gaps
STEADY_STEPS = 3  # ... when at least this many in a row agree within STEADY_TOLERANCE (QA 63 #2)
STEADY_TOLERANCE = 0.1


def gap_starts(pts_seconds: np.ndarray) -> np.ndarray:
    """Positions i of a sorted timeline after which a stretch without frames begins (frame i + 1 is the
    next one): steps longer than :data:`GAP_MIN_SECONDS` and :data:`GAP_PERIODS` frame periods there
    (:func:`capsule_triage.periods.local_periods`)."""
    return _gaps(np.asarray(pts_seconds, np.float64))[0]


def gap_seconds(pts_seconds: np.ndarray) -> dict[float, float]:
    """The time no frame covers in each stretch without frames (its step less the one period a frame fills, as run.json's
    ``time_gaps`` counts it), by the time of the last frame before it."""
    pts = np.asarray(pts_seconds, np.float64)
    at, steps, local = _gaps(pts)
    return {float(pts[i]): float(steps[i] - local[i]) for i in at}


def _gaps(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions of the gaps, every step, every step's local period)."""
    steps = np.diff(pts)
    if len(steps) < 2:
        return np.zeros(0, np.int64), steps, steps
    local = local_periods(pts)
    longer = steps > np.maximum(GAP_MIN_SECONDS, GAP_PERIODS * local) + TIME_EPS
    return np.flatnonzero(longer & ~steady_rate(steps)), steps, local


def steady_rate(steps: np.ndarray) -> np.ndarray:
    """bool per step: part of a run of at least :data:`STEADY_STEPS` steps, each within :data:`STEADY_TOLERANCE` of the
    one before, none longer than :data:`SLOWEST_PERIOD`: a capsule at a slow rate, not a signal lost between frames (QA 63
    #2: six steps at 0.5 frames/s in a study at 2 were judged against the 2 frames/s around them, six "stretches without
    frames"; frames lost again and again give steps that differ, review rev27's 0.5 s then 2 s, which stay gaps). So three
    equal losses of up to 2 s in a row read as a slower rate, as a capsule's would: no gap is said for them."""
    steps = np.asarray(steps, np.float64)
    if len(steps) < STEADY_STEPS:
        return np.zeros(len(steps), bool)
    close = np.abs(np.diff(steps)) <= STEADY_TOLERANCE * np.maximum(steps[:-1], steps[1:])  # pair j: steps j and j + 1
    edges = np.flatnonzero(np.diff(np.r_[0, close.astype(np.int8), 0]))
    starts, ends = edges[::2], edges[1::2]  # close[start:end] all True: steps start..end form one run
    long_runs = ends - starts + 1 >= STEADY_STEPS
    marks = np.zeros(len(steps) + 1, np.int64)
    np.add.at(marks, starts[long_runs], 1)
    np.add.at(marks, ends[long_runs] + 1, -1)
    return (np.cumsum(marks)[:-1] > 0) & (steps <= SLOWEST_PERIOD + TIME_EPS)


def time_gaps(pts_seconds: np.ndarray) -> dict:
    """Stretches without frames in a sorted timeline, for run.json and the report.

    Returns:
        {"count", "seconds" (without frames, in all: each step less one frame period there),
        "frames_missing_estimate" (at the frame period there), "gaps": up to
        :data:`GAPS_LISTED` of {"from_seconds", "to_seconds", "seconds", "frames_missing_estimate"}}.
    """
    pts = np.asarray(pts_seconds, np.float64)
    at, steps, local = _gaps(pts)
    if len(steps) < 2:
        return {"count": 0, "seconds": 0.0, "frames_missing_estimate": 0, "gaps": []}
    missing = [max(0, round(steps[i] / local[i]) - 1) if local[i] > 0 else 0 for i in at]
    without = steps[at] - local[at]  # the time no frame covers: the step less the one period a frame would fill
    gaps = [{"from_seconds": float(pts[i]), "to_seconds": float(pts[i + 1]), "seconds": round(float(w), 3),
             "frames_missing_estimate": int(m)} for i, w, m in zip(at, without, missing)]
    return {"count": len(gaps), "seconds": round(float(without.sum()), 3), "frames_missing_estimate": int(sum(missing)),
            "gaps": gaps[:GAPS_LISTED]}


def measured_rate(pts_seconds: np.ndarray) -> dict | None:
    """The frame rate the frames' own times give, for run.json's ``frame_rate`` and the review page:
    a header's rate can be the encoder's nominal one (Matroska), an adaptive-rate capsule's varies
    (2-6 frames/s), and a folder timed by a CSV has none (QA 29).

    Returns:
        None for fewer than two distinct times, else {"average_fps" (frame steps over the span, gaps
        included), "varies" (the 95th percentile of frame steps more than 10% and 2 ms above the 5th:
        not a timebase's rounding, as 120 frames/s in millisecond ticks), "slowest_fps", "fastest_fps"
        (the 95th and 5th percentiles of the steps; None under 10 of them)}; the steps of stretches without frames
        (:func:`gap_starts`) are left out of the percentiles (QA 100 #3: one 11.5 s gap among 19 steps at 2 frames/s
        read as a rate varying from 0.6 to 2.0).
    """
    pts = np.asarray(pts_seconds, np.float64)
    if len(pts) < 2 or not pts[-1] > pts[0]:
        return None
    steps = np.diff(pts)
    played = np.delete(steps, gap_starts(pts))
    positive = played[played > 0]
    fast, slow = np.percentile(positive, [5, 95]) if len(positive) >= 10 else (None, None)
    return {"average_fps": round(len(steps) / float(pts[-1] - pts[0]), 4),
            "varies": bool(fast is not None and slow - fast > max(0.1 * fast, 0.002)),
            "slowest_fps": round(1 / float(slow), 4) if slow else None, "fastest_fps": round(1 / float(fast), 4) if fast else None}
