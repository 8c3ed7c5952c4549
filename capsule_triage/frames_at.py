"""Chosen frames re-read at source resolution — the thumbnails of events and top frames — by seeking,
instead of decoding the whole source a second time."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .presentation_times import REORDER_FRAMES, PresentationTimes, stores_no_times
from .frame_folder import FolderColours, UnreadableImage, list_frame_images, read_image_rgb
from .orientation import upright
from .reader import MAX_TIME_STEP_BACK, square_pixel_width, video_stream
from .video_colour import frame_rgb

# How far before the target each try seeks (seconds); after the last, one more try decodes from the
# file's start. Most files need only the first: the seek lands on a keyframe at or before the target.
SEEK_BACK_SECONDS = (0.0, 1.0, 4.0, 16.0, 64.0)
# A frame shown out of decode order (a capture clock stepping back across a keyframe, within the
# reader's limit) is looked for this far back before the next frame shown stands in for it.
EXACT_SEARCH_SECONDS = 16.0
# Packets in a row that fail to decode before a try gives up (what the AVI reordering waits for, and more).
MAX_FAILED_PACKETS = 4 * REORDER_FRAMES


def read_frames_at(path: str | Path, frame_indices: list[int], pts_seconds: list[float],
                   sample_bits: int = 0) -> dict[int, np.ndarray]:
    """Re-read chosen frames at source resolution, keyed by frame_index (see :func:`iter_frames_at`)."""
    return dict(iter_frames_at(path, frame_indices, pts_seconds, sample_bits))


def iter_frames_at(path: str | Path, frame_indices: list[int], pts_seconds: list[float],
                   sample_bits: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame_index, RGB image at source resolution) for chosen frames, in time order, one at
    a time (a long study has hundreds of events: holding all of them costs ~100 MB per 300 at 336 px).

    Video frames: see :func:`decode_at`, which gives the pixels a decode of the whole file gives.
    Folder frames are re-read by position, 16-bit ones at ``sample_bits`` (the depth the folder's read ended at:
    :class:`~capsule_triage.frame_folder.SampleDepth`). A frame that cannot be re-read is left out.
    """
    path = Path(path)
    wanted = sorted(set(zip(frame_indices, pts_seconds)), key=lambda item: item[1])
    if path.is_dir():
        images, colours = list_frame_images(path), FolderColours(sample_bits)
        for index, _ in wanted:
            try:
                image = read_image_rgb(images[index], colours) if 0 <= index < len(images) else None
            except UnreadableImage:  # skipped when the study was read: no frame of it is asked for
                image = None
            if image is not None:
                yield index, image
        return
    with av.open(str(path), metadata_errors="ignore") as container:
        stream, reformatter = video_stream(container), VideoReformatter()
        for index, target in wanted:
            try:
                frame = decode_at(container, stream, target)
            except av.FFmpegError:
                continue
            if frame is not None:  # converted as the scoring read converts it (HDR, BT.2020: video_colour)
                rgb = frame_rgb(reformatter, frame, square_pixel_width(stream, frame.width), frame.height)
                yield index, np.ascontiguousarray(upright(rgb, frame))


def decode_at(container: av.container.InputContainer, stream: av.VideoStream, target: float) -> av.VideoFrame | None:
    """The frame shown at ``target`` seconds (stream time) — or, if none is shown exactly then, the
    next one — decoded from a keyframe shown at or before it; None past the end.

    A seek lands on a keyframe before the target in most files, but not in all: in an MPEG program
    stream it lands between keyframes, and with B-frames (mpeg4 in .mov) on a keyframe whose packet
    comes before frames shown ahead of it. Frames shown before the first keyframe decoded since the
    seek lack their references (garbled, or another frame's pixels), so they are passed over; if the
    target is among them, the next try seeks further back (:data:`SEEK_BACK_SECONDS`), and the last
    decodes from the file's start. A try that decoded from a keyframe to the end of the stream
    without reaching the target ends the search: starting earlier cannot add frames after it; so does one that met
    more than :data:`MAX_FAILED_PACKETS` undecodable packets in a row (a damaged stretch), after giving out the frames it
    held.
    A frame shown at the target whose packet comes before the keyframe the seek landed on (a
    timestamp stepping back across it) is found by the tries up to :data:`EXACT_SEARCH_SECONDS`
    back; only then does the next frame stand in for it (QA: the thumbnail showed another scene).
    """
    time_base = float(stream.time_base)
    # QA 61: an MPEG-TS starting just before its 33-bit clock wraps has its first seconds at negative times; a floor
    # of 0 re-read each of them as the frame at +0.28 s (a normal frame as a bleeding event's thumbnail)
    first = min(0.0, stream.start_time * time_base) if stream.start_time is not None else 0.0
    standing_in = None
    for back in (*SEEK_BACK_SECONDS, None):
        if standing_in is not None and (back is None or back > EXACT_SEARCH_SECONDS):
            break
        if back is None:  # the file's start, opened afresh: a seek to before a negative start lands after it (MPEG-TS,
            with av.open(container.name, metadata_errors="ignore") as fresh:  # Matroska: on pts 0; rev55)
                frame, shown, whole_from = _first_whole_frame(fresh, fresh.streams[stream.index], None, target, from_start=True)
        else:
            frame, shown, whole_from = _first_whole_frame(container, stream, max(first, target - back), target, from_start=False)
        if frame is None and whole_from is not None:
            break
        if frame is not None and whole_from <= target + 0.5 * time_base:
            if shown <= target + 0.5 * time_base:
                return frame
            standing_in = standing_in or frame
    return standing_in


def _first_whole_frame(container, stream, seconds: float | None, target: float, *,
                       from_start: bool) -> tuple[av.VideoFrame | None, float | None, float | None]:
    """Seek to the keyframe at or before ``seconds`` (None: a container just opened, read from its start) and decode forward, among the frames shown from
    the first keyframe decoded on (all of them when decoding ``from_start``, as the whole-file pass
    does): the frame shown at ``target`` (within half a time base), else the first shown after it;
    its shown time; and that keyframe's shown time (None if none was decoded).

    Frames come out in presentation order, but timestamps that step back (a capture clock) put a
    frame after later ones: the frame shown at ``target`` is looked for until a frame shown more
    than the reader's largest step back after it has come out.

    Frames shown before the target that no other frame references are not decoded (``skip_frame``
    NONREF per packet): nothing needs them, and a 720p thumbnail of the benchmark clip (libx264 with
    B-frames) took 30-33 instead of 41-43 ms. Except in AVI, whose times are put in presentation
    order as the whole-file pass does (:class:`~capsule_triage.presentation_times.PresentationTimes`), which
    needs every frame's.
    """
    time_base = float(stream.time_base)
    reached, exact_until = target - 0.5 * time_base, target + 0.5 * time_base
    rate = float(stream.average_rate) if stream.average_rate else 0.0
    horizon = target + max(MAX_TIME_STEP_BACK, REORDER_FRAMES / rate if rate else 0.0)
    if seconds is not None:
        container.seek(int(seconds / time_base), stream=stream, backward=True, any_frame=False)
    whole_from = -math.inf if from_start else None
    reorder = PresentationTimes() if stores_no_times(container) else None
    after = None  # the first frame shown after the target: stands in if none is shown at it

    def shown_frames():
        nonlocal whole_from
        failed = 0  # packets in a row that did not decode: a damaged tail ends the try, not the file's end (rev97 #8)
        for packet in container.demux(stream):
            early = reorder is None and packet.pts is not None and packet.pts * time_base < reached
            stream.codec_context.skip_frame = "NONREF" if early else "DEFAULT"
            try:
                decoded = packet.decode()
            except av.FFmpegError:  # skipped, as the scoring read skips it (QA 106 #1: an AVI's reordering held the 16
                failed += 1  # frames before a bad packet, and every thumbnail among them was lost to its error)
                if failed > MAX_FAILED_PACKETS:
                    break
                continue
            failed = 0
            for frame in decoded:
                guessed = (frame.pts or 0) * time_base
                if whole_from is None and frame.key_frame:
                    whole_from = guessed  # a keyframe opens its group in decode and presentation order alike
                if whole_from is not None:
                    yield from (reorder.push(frame, guessed) if reorder else [(frame, guessed)])
        if reorder and whole_from is not None:
            yield from reorder.drain()

    for out, shown in shown_frames():
        if shown < max(whole_from, reached):
            continue
        if shown <= exact_until:
            return out, shown, whole_from
        after = after or (out, shown)
        if shown > horizon or whole_from > exact_until:  # past the step-back limit, or landed after the target
            break
    return (*after, whole_from) if after else (None, None, whole_from)
