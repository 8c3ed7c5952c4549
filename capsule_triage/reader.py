"""Stream frames from a video file or a folder of frame images as :class:`FrameBatch` es.

Memory is bounded by ``batch_size`` (and by the prefetch queue depth of the caller), never by the
length of the video. Frames are resized in the decoder's own swscale pass (video) or by OpenCV
(images) so that the short side equals ``short_side``, then centre-cropped to a square: the model
only ever needs that, and source-resolution pixels are re-read later for thumbnails only
(:mod:`capsule_triage.frames_at`). Frame times are the stream's presentation times; in AVI, which
stores none, they are put in presentation order (:class:`~capsule_triage.presentation_times.PresentationTimes`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import av
from av.video.reformatter import VideoReformatter
import cv2
import numpy as np

from .completeness import LeadingFrames, avi_indexed_frames, check_complete, cut_iso_box, cut_transport_stream, tag_seconds, unreadable_why
from .errors import InputError, path_argument, short_error
from .folder_times import folder_times, without_untimed_irregular
from .frame_folder import (IMAGE_SUFFIXES, JPEG_SUFFIXES, FolderColours, FolderListing, UnreadableImage, extra_pages, listed,
                           plural, probe_image, read_image_rgb, scan_frame_folder)
from .frames import DecodeStats, FrameBatch, Segment, SourceInfo
from .orientation import upright
from .read_options import ReadOptions, checked_options, timed
from .presentation_times import REORDER_FRAMES, PresentationTimes, kept, stores_no_times
from .source_state import check_source
from .video_colour import UnconvertibleColours, frame_notes, frame_rgb, stream_colours

# What `triage batch` takes for a video (any file `triage run` is given is read by its content): common
# containers, and what recorders write: AVCHD (.m2ts/.mts), DVD (.vob), broadcast and capture (.mxf, .m2t, .dv).
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".wmv", ".ts", ".m2ts", ".mts",
                            ".m2t", ".mxf", ".vob", ".dv", ".3gp", ".flv", ".ogv", ".asf", ".m2v"})
PROBE_IMAGES = 10  # images tried for a frame folder's size
def _fit(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """Output size (w, h) that keeps the aspect ratio with the short side = ``short_side``."""
    if short_side is None:
        return width, height
    scale = short_side / min(width, height)
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def square_pixel_width(stream: av.VideoStream, width: int) -> int:
    """The width at which a frame of ``stream`` shows undistorted: anamorphic video (a PAL capture
    of 720 x 576 with pixel aspect 16:15 or 64:45) stores non-square pixels, and the model was
    trained on square ones (scores moved by up to 0.37 on a 16:9 PAL clip read unstretched)."""
    sar = stream.sample_aspect_ratio
    return max(1, round(width * sar)) if sar and sar > 0 and sar != 1 else width


def _centre_square(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top : top + side, left : left + side]


def probe(path: str | Path, options: ReadOptions = ReadOptions()) -> SourceInfo:
    """Read the header of a video (or list a frame folder) without decoding the whole thing.

    Raises:
        InputError: missing path, empty file, not a video, no video stream, folder without images.
    """
    path, options = path_argument(path, "path"), checked_options(options)
    check_source(path)
    if path.is_dir():
        return _probe_folder(path, timed(path, options))
    size = path.stat().st_size
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video and not container.streams.audio:  # e.g. an mp4 cut inside its moov atom
                raise InputError(path, "not a readable video (no video stream found: truncated or damaged header?)")
            if not container.streams.video:
                raise InputError(path, "no video stream (audio or data only)")
            if not moving_pictures(container):  # QA 40: an mp3's cover art was scored as a one-frame study
                raise InputError(path, "no video stream (only a cover picture: audio with an attached image)")
            stream = video_stream(container)
            cc = stream.codec_context
            if cc is None:  # e.g. a damaged sample description: no decoder for this stream
                raise InputError(path, "not a readable video (no decoder for its video stream: unknown codec or damaged header)")
            if not cc.width or not cc.height:
                raise InputError(path, "video stream has no frame size")
            if container.format.name.endswith("_pipe") or container.format.name == "image2":  # QA 72 #6, 77 #3: a PNG as .mp4, a .jpg
                raise InputError(path, f"a still image ({cc.name}), not a video: put it in a folder of frames to triage it")
            if container.format.name in RAW_STREAM_FORMATS:
                wrapped = f"{path.stem}.{'mkv' if path.suffix.lower() == '.mp4' else 'mp4'}"  # not its own name: ffmpeg reads it
                raise InputError(path, f"raw {cc.name} stream: it stores no frame rate or timestamps (25 frames/s would be assumed) and "
                                       f"cannot be seeked for thumbnails; put it in a container at its real rate first, e.g. ffmpeg "
                                       f"-framerate 4 -i {path.name} -c copy {wrapped}, and move {path.name} out of a batch's input folder")
            if "mov" in container.format.name.split(",") and (cut := cut_iso_box(path)):
                raise InputError(path, f"truncated video: {cut}")  # a fragmented MP4's header counts no frames (QA 40)
            if container.format.name == "mpegts" and (cut := cut_transport_stream(path)):
                raise InputError(path, f"truncated video: {cut}")  # nor does a transport stream's (QA 62 #9)
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            fps = float(stream.average_rate) if stream.average_rate else None
            return SourceInfo(
                path=str(path), kind="video", codec=cc.codec.canonical_name, width=cc.width, height=cc.height,
                display_width=square_pixel_width(stream, cc.width), muxer_duration_seconds=tag_seconds(stream.metadata.get("DURATION")),
                start_seconds=float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else None,
                average_fps=fps, duration_seconds=duration, num_frames_from_header=int(stream.frames) or None, size_bytes=size,
                container=container.format.name, stream_index=stream.index, video_streams=len(moving_pictures(container)),
                colours=stream_colours(cc), frames_in_index=avi_indexed_frames(path, stream) if container.format.name == "avi" else None)
    except InputError:
        raise
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(path, f"not a readable video ({unreadable_why(path) or short_error(exc)})") from None


# Raw elementary streams whose demuxer invents times at 25 frames/s (FFmpeg's default -framerate); a raw
# MPEG-1/2 stream is not among them: its sequence header carries the rate.
RAW_STREAM_FORMATS = frozenset({"h264", "hevc", "vvc", "mjpeg", "cavsvideo", "avs2", "avs3"})
# How far a frame may show before one already read (a damaged file, leading pictures of an open GOP):
# the longer of 1 s and a decoder's reordering depth in frame periods (8 s at 2 frames/s). Further back
# is two timelines in one file.
MAX_TIME_STEP_BACK = 1.0


def moving_pictures(container: av.container.InputContainer) -> list:
    """The container's video streams that are not a cover picture (an attached image, as of an mp3 or m4a)."""
    return [s for s in container.streams.video if av.stream.Disposition.attached_pic not in s.disposition]


def video_stream(container: av.container.InputContainer) -> av.VideoStream:
    """The video stream to triage: FFmpeg's own choice (``av_find_best_stream``, as players make it), not
    whichever comes first — a cover picture or a one-frame preview track may; but a stream of a larger picture
    that runs at least 90 % as long, where the header says how long, is taken instead, as the ffmpeg command line
    takes the largest picture (QA 61: a 64x64 proxy track first, as long as the 320x320 study, tied FFmpeg's
    count of frames probed, and the first stream wins a tie: the proxy was scored)."""
    best = container.streams.best("video")
    area = lambda s: (s.codec_context.width or 0) * (s.codec_context.height or 0)
    larger = [s for s in moving_pictures(container) if best is not None and area(s) > area(best)]
    length = _stream_seconds(best) if larger else None
    running = [s for s in larger if length is not None and (_stream_seconds(s) or 0.0) >= 0.9 * length]
    return max(running, key=area) if running else best


def _stream_seconds(stream: av.VideoStream) -> float | None:
    """How long a stream runs by its header: its duration, Matroska's DURATION tag, or frames / rate; None if unsaid."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    if (tagged := tag_seconds(stream.metadata.get("DURATION"))) is not None:
        return tagged
    return float(stream.frames / stream.average_rate) if stream.frames and stream.average_rate else None


def _folder_frames(folder: Path, options: ReadOptions) -> tuple[FolderListing, np.ndarray]:
    """The folder's frames and their times, or the one-line error that says why there are none."""
    listing = without_untimed_irregular(scan_frame_folder(folder), options.timestamps_csv)
    images = listing.images
    if not images:
        raise InputError(folder, f"folder contains no frame images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                         + (f"; not read: {'; '.join(listing.unread)}" if listing.unread else ""))
    unreadable = [p for p in images if not os.access(p, os.R_OK) and os.path.exists(p)]  # (a broken link: skipped when read)
    if unreadable:
        raise InputError(unreadable[0], "permission denied (frame image cannot be opened)")
    times, absent = folder_times(folder, images, fps=options.folder_fps, timestamps_csv=options.timestamps_csv)
    if absent:  # frames the export timed but did not write: the study is incomplete (QA pass 13)
        listing.unread.append(f"{plural(len(absent), 'frame')} listed in {Path(options.timestamps_csv).name} but not in the folder: {listed(absent)}")
    return listing, times


def _probe_folder(folder: Path, options: ReadOptions) -> SourceInfo:
    listing, times = _folder_frames(folder, options)
    images = listing.images
    # The size of the first image that decodes (a damaged first image is skipped when read, too);
    # not cv2.imread: it crashes on names that are not UTF-8.
    first = next((image for image in map(probe_image, images[:PROBE_IMAGES]) if image is not None), None)
    height, width = first.shape[:2] if first is not None else (0, 0)
    return SourceInfo(
        path=str(folder), kind="frames", codec=images[0].suffix.lower().lstrip("."), width=width, height=height,
        average_fps=None if options.timestamps_csv else options.folder_fps,
        duration_seconds=float(np.ptp(times)) if len(times) > 1 else 0.0,
        num_frames_from_header=len(images), size_bytes=sum(p.stat().st_size for p in images if p.name not in listing.irregular), unread=listing.unread,
        **(listing.name_order() if options.timestamps_csv is None else {}),  # QA 61, QA 77 #4 #5: ordered by name, unsaid
    )


def read_frames(
    path: str | Path, options: ReadOptions = ReadOptions(), stats: DecodeStats | None = None, *, segment: Segment | None = None
) -> Iterator[FrameBatch]:
    """Stream a video file or frame folder as batches.

    Frames that fail to decode are skipped and counted in ``stats``; a stream that ends before
    the frame count its header announces is an error (a truncated file).

    ``segment``: decode only this part of a video (see :mod:`capsule_triage.segments`); the checks
    for truncation and for no decodable frames are then left to the caller, who sees all parts.

    A frame folder with a ``timestamps.csv`` of its own is timed by it, as in ``triage run`` (see
    :class:`ReadOptions`' ``own_timestamps``).

    Raises:
        ValueError: ``options`` is not a usable :class:`ReadOptions` (checked here, before reading).
        InputError: here, a source that is missing, empty or unreadable (QA 82 #4: at the first batch); as it is read,
            one that cannot be opened, is truncated, or yields no decodable frame.
    """
    options, path = checked_options(options), path_argument(path, "path")
    if stats is not None and not isinstance(stats, DecodeStats):  # QA 105 #5: {} was "'dict' object has no attribute ..."
        raise ValueError(f"stats must be a DecodeStats (or None), got {type(stats).__name__}")
    check_source(path)
    return _batches(path, options, stats if stats is not None else DecodeStats(), segment)


def _batches(path: Path, options: ReadOptions, stats: DecodeStats, segment: Segment | None) -> Iterator[FrameBatch]:
    source = _read_folder(path, timed(path, options), stats) if path.is_dir() else _read_video(path, options, stats, segment)
    buffer: list[tuple[np.ndarray, int, float]] = []
    for item in source:
        buffer.append(item)
        if len(buffer) == options.batch_size:
            yield _to_batch(buffer)
            buffer = []
    if buffer:
        yield _to_batch(buffer)
    if segment is None:
        require_frames(path, stats)


def letterboxed(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """``rgb`` fitted inside ``width`` x ``height`` with its aspect ratio, on black (a frame squeezed to
    another shape would be scored distorted; black is border to the field-of-view crop)."""
    if rgb.shape[:2] == (height, width):
        return rgb
    scale = min(width / rgb.shape[1], height / rgb.shape[0])
    w, h = max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))
    out = np.zeros((height, width, 3), np.uint8)
    top, left = (height - h) // 2, (width - w) // 2
    out[top : top + h, left : left + w] = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    return out


def require_frames(path: Path, stats: DecodeStats) -> None:
    """The end-of-stream check that something decoded (naming the first decode error, if any)."""
    if stats.frames_decoded == 0:
        detail = f" ({stats.errors[0]})" if stats.errors else ""
        raise InputError(path, f"no decodable frames{detail}")


def _to_batch(items: list[tuple[np.ndarray, int, float]]) -> FrameBatch:
    shapes = {item[0].shape for item in items}
    if len(shapes) > 1:  # frame size changed mid-stream (another capture source) without a square crop
        h, w = items[0][0].shape[:2]
        items = [(letterboxed(a, w, h), i, t) for a, i, t in items]
    return FrameBatch(
        data=np.stack([item[0] for item in items]),
        frame_index=np.array([item[1] for item in items], dtype=np.int64),
        pts_seconds=np.array([item[2] for item in items], dtype=np.float64),
    )


def _read_video(path: Path, options: ReadOptions, stats: DecodeStats, segment: Segment | None = None) -> Iterator[tuple[np.ndarray, int, float]]:
    info = probe(path, options)
    index = segment.first_index if segment else 0
    started = segment is None or segment.start_pts is None
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise InputError(path, f"not a readable video ({short_error(exc)})") from None
    with container:
        stream = video_stream(container)
        stream.thread_type = "AUTO" if options.decoder_threads > 1 else "SLICE"
        stream.codec_context.thread_count = options.decoder_threads
        # One reformatter for the whole stream: it keeps its swscale context, where frame.to_ndarray(width=...)
        # builds a new one per frame (1,110 vs 680 frames/s decode+convert+resize at 336 -> 224 px here).
        # Scaling on one thread: the same pixels as PyAV's default of one thread per core, without waking
        # threads per frame on the cores the model uses (decode-and-score stream of a 1,200-frame 336 px
        # clip, alternating: 299-310 vs 292-301 frames/s).
        reformatter = VideoReformatter()
        time_base = float(stream.time_base) if stream.time_base else 1.0 / (info.average_fps or 1.0)
        fallback_period = 1.0 / info.average_fps if info.average_fps else 1.0
        step_back_limit = max(MAX_TIME_STEP_BACK, REORDER_FRAMES * fallback_period)
        last_pts = latest = None
        start = info.start_seconds or 0.0  # the stream's first timestamp, as probed
        packets_read, packets_end = 0, None  # frames' packets the file delivered, and how far in time they reach
        reorder = PresentationTimes() if stores_no_times(container) else None
        leading = LeadingFrames() if segment is None or segment.start_pts is None else None  # from the file's start
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.FFmpegError as exc:  # demuxer gave up (e.g. garbage in the middle): stop here
                stats.skip(f"demux: {short_error(exc)}")
                break
            if segment is not None:  # demux (cheap) up to the segment's first keyframe; stop at the next one's
                started = started or (packet.pts == segment.start_pts and packet.is_keyframe)
                if not started:
                    continue
                if segment.end_pts is not None and packet.pts == segment.end_pts and packet.is_keyframe:
                    packet = None  # flush: the frames still inside the decoder come out
            if packet is not None and packet.size and not packet.is_discard:
                packets_read += 1
                stats.video_bytes += packet.size
                if leading:
                    leading.packet(packet.pts)
                if packet.pts is not None:
                    end = (packet.pts + (packet.duration or 0)) * time_base - start
                    packets_end = end if packets_end is None else max(packets_end, end)
            try:
                frames = packet.decode() if packet is not None else stream.codec_context.decode(None)
            except av.FFmpegError as exc:
                if packet is not None and packet.size:
                    stats.skip(f"frame {index}: {short_error(exc)}")
                    index += 1
                    if leading:
                        leading.decode_failed()
                continue
            for frame in frames:
                if leading:
                    leading.frame(frame.pts)
                if frame.pts is not None:
                    pts = frame.pts * time_base
                else:
                    pts = (last_pts + fallback_period) if last_pts is not None else 0.0
                if reorder is None and latest is not None and pts < latest - step_back_limit:
                    raise InputError(path, f"timestamps jump back from {latest:.2f} s to {pts:.2f} s at frame {index} "
                                           "(recordings joined without re-timing?); split it there or re-mux it into one timeline")
                latest = pts if latest is None else max(latest, pts)
                last_pts = pts
                try:
                    w, h = _fit(square_pixel_width(stream, frame.width), frame.height, options.short_side)
                    rgb = frame_rgb(reformatter, frame, w, h)
                    if notes := [note for note in frame_notes(frame) if note not in stats.colour_notes]:
                        stats.colour_notes += notes  # each kind once: a stream may change (SDR, then HDR)
                except UnconvertibleColours as exc:
                    raise InputError(path, f"frame {index}: {exc}") from None
                except (av.FFmpegError, ValueError) as exc:
                    stats.skip(f"frame {index}: {short_error(exc)}")
                    rgb = None
                else:
                    rgb = upright(rgb, frame, stats)
                    stats.saw_frame(frame.width, frame.height)
                    rgb = np.ascontiguousarray(_centre_square(rgb) if options.square_crop else rgb)
                    stats.frames_decoded += 1
                if reorder is None:
                    if rgb is not None:
                        yield rgb, index, pts
                else:  # a frame left out still takes its place in time, so its neighbours keep theirs
                    yield from kept(reorder.push((rgb, index), pts))
                index += 1
            if packet is None:  # flushed at the end of a segment
                break
        if reorder is not None:
            yield from kept(reorder.drain())
        lost_at_start = leading.count(stats) if leading else 0
    if segment is None:
        check_complete(path, info, stats, packets_read=packets_read, packets_end=packets_end, frames_out=index + lost_at_start)


def _read_folder(folder: Path, options: ReadOptions, stats: DecodeStats) -> Iterator[tuple[np.ndarray, int, float]]:
    listing, times = _folder_frames(folder, options)  # listed and timed once (the probe's first-image decode is not needed)
    colours = FolderColours()  # one scale for its 16-bit images; its colour profiles converted once
    for index, image_path in enumerate(listing.images):
        try:
            image = read_image_rgb(image_path, colours)
        except OSError as exc:  # e.g. deleted or made unreadable while the folder is read
            stats.skip(f"{image_path.name}: cannot be read ({exc.strerror or exc})")
            continue
        except UnreadableImage as exc:
            stats.skip(f"{image_path.name}: {exc}")
            continue
        if image is None:
            stats.skip(f"{image_path.name}: not a decodable image")
            continue
        if more := extra_pages(image_path):  # QA 40: a multi-page TIFF or an animated WebP lost its other pages in silence
            stats.multi_page.append(f"{image_path.name} ({more + 1})")
        stats.frames_decoded += 1
        stats.saw_image(image.shape[1], image.shape[0], image_path.name)
        if image_path.suffix.lower() in JPEG_SUFFIXES:  # coded alone, as an MJPEG frame: its bytes are its quality
            try:
                stats.saw_jpeg(image_path.stat().st_size, image.shape[1], image.shape[0])
            except OSError:
                pass  # gone since it was read: not counted, and the folder is not judged (bitrate.bits_per_pixel)
        yield fit_still(image, options.short_side, options.square_crop), index, float(times[index])
    stats.colour_notes, stats.colour_profiles, stats.sample_bits = colours.notes(), colours.profiles(), colours.depth.bits


def fit_still(image: np.ndarray, short_side: int | None, square_crop: bool) -> np.ndarray:
    """A decoded still as a frame folder's frame is read: short side resized with OpenCV's area
    filter (aspect kept), then centre-cropped square if asked; contiguous. Training and evaluation
    read their stills with it too (:mod:`capsule_triage.stills`)."""
    w, h = _fit(image.shape[1], image.shape[0], short_side)
    if (w, h) != (image.shape[1], image.shape[0]):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(_centre_square(image) if square_crop else image)
