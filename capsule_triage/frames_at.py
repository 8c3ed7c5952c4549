"""Chosen frames re-read at source resolution — the thumbnails of events and top frames — by seeking,
instead of decoding the whole source a second time."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from .presentation_times import PresentationTimes, stores_no_times
from .frame_folder import list_frame_images, read_image_rgb
from .reader import RGB_CONVERSION, square_pixel_width, upright, video_stream

# How far before the target each try seeks (seconds); after the last, one more try decodes from the
# file's start. Most files need only the first: the seek lands on a keyframe at or before the target.
SEEK_BACK_SECONDS = (0.0, 1.0, 4.0, 16.0, 64.0)


def read_frames_at(path: str | Path, frame_indices: list[int], pts_seconds: list[float]) -> dict[int, np.ndarray]:
    """Re-read chosen frames at source resolution, keyed by frame_index (see :func:`iter_frames_at`)."""
    return dict(iter_frames_at(path, frame_indices, pts_seconds))


def iter_frames_at(path: str | Path, frame_indices: list[int], pts_seconds: list[float]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame_index, RGB image at source resolution) for chosen frames, in time order, one at
    a time (a long study has hundreds of events: holding all of them costs ~100 MB per 300 at 336 px).

    Video frames: see :func:`decode_at`, which gives the pixels a decode of the whole file gives.
    Folder frames are re-read by position. A frame that cannot be re-read is left out.
    """
    path = Path(path)
    wanted = sorted(set(zip(frame_indices, pts_seconds)), key=lambda item: item[1])
    if path.is_dir():
        images = list_frame_images(path)
        for index, _ in wanted:
            image = read_image_rgb(images[index]) if 0 <= index < len(images) else None
            if image is not None:
                yield index, image
        return
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = video_stream(container)
        for index, target in wanted:
            try:
                frame = decode_at(container, stream, target)
            except av.FFmpegError:
                continue
            if frame is not None:
                rgb = frame.to_ndarray(width=square_pixel_width(stream, frame.width), height=frame.height, format="rgb24",
                                       interpolation=RGB_CONVERSION)
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
    without reaching the target ends the search: starting earlier cannot add frames after it.
    """
    time_base = float(stream.time_base)
    for back in (*SEEK_BACK_SECONDS, None):
        seconds = 0.0 if back is None else max(0.0, target - back)
        frame, whole_from = _first_whole_frame(container, stream, seconds, target - 0.5 * time_base, from_start=back is None)
        if frame is None and whole_from is not None:
            return None
        if frame is not None and whole_from <= target + 0.5 * time_base:
            return frame
    return None


def _first_whole_frame(container, stream, seconds: float, reached: float, *, from_start: bool) -> tuple[av.VideoFrame | None, float | None]:
    """Seek to the keyframe at or before ``seconds`` and decode forward: the first frame shown at or
    after ``reached`` among those shown from the first keyframe decoded on (all of them when
    decoding ``from_start``, as the whole-file pass does), and that keyframe's shown time (None if
    none was decoded).

    Frames shown before ``reached`` that no other frame references are not decoded (``skip_frame``
    NONREF per packet): nothing needs them, and a 720p thumbnail of the benchmark clip (libx264 with
    B-frames) took 30-33 instead of 41-43 ms. Except in AVI, whose times are put in presentation
    order as the whole-file pass does (:class:`~capsule_triage.presentation_times.PresentationTimes`), which
    needs every frame's.
    """
    time_base = float(stream.time_base)
    container.seek(int(seconds / time_base), stream=stream, backward=True, any_frame=False)
    whole_from = -math.inf if from_start else None
    reorder = PresentationTimes() if stores_no_times(container) else None
    for packet in container.demux(stream):
        early = reorder is None and packet.pts is not None and packet.pts * time_base < reached
        stream.codec_context.skip_frame = "NONREF" if early else "DEFAULT"
        for frame in packet.decode():
            guessed = (frame.pts or 0) * time_base
            if whole_from is None and frame.key_frame:
                whole_from = guessed  # a keyframe opens its group in decode and presentation order alike
            if whole_from is None:
                continue
            for out, shown in (reorder.push(frame, guessed) if reorder else [(frame, guessed)]):
                if shown >= max(whole_from, reached):
                    return out, whole_from
    for out, shown in (reorder.drain() if reorder and whole_from is not None else []):
        if shown >= max(whole_from, reached):
            return out, whole_from
    return None, whole_from
