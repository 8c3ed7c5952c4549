"""The nouns that flow through the pipeline: frames with their timestamps, and what a source holds."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .seconds import fine_enough, is_time_type, time_type_fix


@dataclass
class FrameBatch:
    """A batch of decoded frames; pixels never travel without their time.

    Attributes:
        data: uint8 [N, H, W, 3], RGB, C-contiguous (NHWC).
        frame_index: int64 [N], position of each frame in decode order of the source (gaps mark
            frames the decoder failed on with an error; frames it dropped without one, at a recording's
            start inside a group of pictures or a packet it swallowed, take no index and are counted in
            ``DecodeStats.frames_skipped`` only).
        pts_seconds: float64 [N], presentation time of each frame in seconds from the stream
            (pts x time_base), so variable frame rate is preserved.
    """

    data: np.ndarray
    frame_index: np.ndarray
    pts_seconds: np.ndarray

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ValueError unless the fields are as documented (again where they may have been changed since: QA 116 #1,
        a batch normalised to float after it was built scored every frame 0.8 on OpenVINO)."""
        for name, kind in (("data", "uint8 [N,H,W,3]"), ("frame_index", "int64 [N]"), ("pts_seconds", "float64 [N]")):
            if not isinstance(getattr(self, name), np.ndarray):  # QA 58 #7: a list was "'list' object has no attribute 'dtype'"
                raise ValueError(f"FrameBatch.{name} must be a numpy array ({kind}), got {type(getattr(self, name)).__name__}")
        if self.data.dtype != np.uint8 or self.data.ndim != 4 or self.data.shape[-1] != 3 or 0 in self.data.shape[1:3]:
            raise ValueError(f"FrameBatch.data must be uint8 [N,H,W,3] with H, W >= 1, got {self.data.dtype} {self.data.shape}")
        n = self.data.shape[0]
        if self.frame_index.shape != (n,) or self.pts_seconds.shape != (n,):
            raise ValueError(
                f"FrameBatch: {n} frames but frame_index {self.frame_index.shape} and pts_seconds {self.pts_seconds.shape}"
            )
        # QA 58 #8: fractional indices and NaN times went through to the scores, refused far away (in rank)
        if not np.issubdtype(self.frame_index.dtype, np.integer) or self.frame_index.dtype.kind == "m":
            raise ValueError(f"FrameBatch.frame_index must be whole numbers (int64), got {self.frame_index.dtype}")
        if is_time_type(self.pts_seconds):  # QA 105 #3: numpy counts timedelta64 as an integer: read as seconds, 1,000 x
            raise ValueError(f"FrameBatch.pts_seconds must be seconds as numbers, got {self.pts_seconds.dtype} ({time_type_fix(self.pts_seconds)})")
        if not np.issubdtype(self.pts_seconds.dtype, np.number) or np.issubdtype(self.pts_seconds.dtype, np.complexfloating) \
                or not np.isfinite(self.pts_seconds).all():
            raise ValueError(f"FrameBatch.pts_seconds must be finite seconds (float64), got {self.pts_seconds.dtype}"
                             + (" with NaN or infinite values" if np.issubdtype(self.pts_seconds.dtype, np.floating) else ""))
        fine_enough("FrameBatch.pts_seconds", self.pts_seconds)

    def __len__(self) -> int:
        return int(self.data.shape[0])


@dataclass
class SourceInfo:
    """What the header (or folder listing) says about a source, before decoding.

    Attributes:
        path: the video file or frame folder.
        kind: "video" or "frames".
        codec: codec name ("h264", "mjpeg", ...) or image format for folders.
        width: frame width in pixels (first frame for folders).
        height: frame height in pixels.
        average_fps: average frame rate from the header (or the folder's --fps); may be None.
        duration_seconds: duration from the header; None when the container does not say.
        num_frames_from_header: frame count the header claims (0 or None when unknown).
        size_bytes: size of the file, or total size of the folder's images.
        display_width: width with square pixels (differs from ``width`` for anamorphic video, whose
            frames are stretched to it before scaling); None for frame folders.
        muxer_duration_seconds: the video track's duration as its muxer wrote it (Matroska's
            ``DURATION`` tag), against which truncation is checked; None when not written.
        start_seconds: the stream's first timestamp. ``pts_seconds`` everywhere are stream times, as
            in the file; a player that counts from zero shows ``pts_seconds - start_seconds``.
        unread: frame folders only: what looks like frames but is not read (images in subfolders,
            image types that are not frames), one phrase each; shown as a warning.
        name_twins: frame folders timed by their order (no timestamps CSV) only: groups of image names alike but for
            leading zeros, case, type or Unicode form ("img_01.png and img_1.jpg"), whose order in time is a guess; shown as a warning.
        name_copies: as ``name_twins``: images named as a file manager's copy of another ("img_5 - Copy.jpg (of
            img_5.jpg)"), each scored as a frame of its own; ``name_decimals``: the first pair of names whose decimal
            numbers natural order puts out of order ("frame_0.5s.jpg before frame_0.25s.jpg"); both shown as warnings.
        container: FFmpeg's name of the container format ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm",
            "avi", ...); None for frame folders.
        stream_index: the container's stream that is triaged (FFmpeg's choice among
            ``video_streams`` video streams); None for frame folders.
        frames_in_index: the frames a complete AVI's index lists (chunks with data: its header also counts the empty
            chunks a muxer writes for a tick without a frame; :func:`~capsule_triage.completeness.avi_indexed_frames`);
            None for other sources, and an AVI without its whole index.
        colours: how the video stream's header describes its colours and how an untagged one is read
            (:func:`capsule_triage.video_colour.stream_colours`); None for frame folders.
    """

    path: str
    kind: str
    codec: str
    width: int
    height: int
    average_fps: float | None
    duration_seconds: float | None
    num_frames_from_header: int | None
    size_bytes: int
    display_width: int | None = None
    muxer_duration_seconds: float | None = None
    start_seconds: float | None = None
    unread: list[str] = field(default_factory=list)
    name_twins: list[str] = field(default_factory=list)
    name_copies: list[str] = field(default_factory=list)
    name_decimals: list[str] = field(default_factory=list)
    container: str | None = None
    stream_index: int | None = None
    video_streams: int | None = None
    colours: str | None = None
    frames_in_index: int | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class DecodeStats:
    """Counters a reader fills while streaming.

    Attributes:
        frames_decoded: frames delivered.
        frames_skipped: frames (or images) that failed to decode and were skipped.
        errors: first few decode error messages, for run.json.
        frames_reused: frames not scored because they duplicated the last scored frame.
        frames_hidden_by_edit_list: frames of an MP4/MOV sample table its edit list hides (a trimmed
            recording): not shown by players, not delivered by the demuxer, not scored.
        decoder_peak_rss_mb: peak resident memory of the decoder process (0: decoded in this process).
        multi_page: images of a frame folder holding several pages or frames ("name (pages)"): only the first is read.
        smallest_image: (width, height, name) of a frame folder's image with the shortest side, as stored (None: a video).
        image_sizes: a frame folder's images, or a video's frames, by size as stored ("640x480": count; a stream may
            change its picture size part-way: QA 87 #4).
        colour_notes: Warning: lines on colours: what a frame folder's read guessed (a 16-bit depth, a colour profile not
            used: :meth:`~capsule_triage.frame_folder.FolderColours.notes`), or how a video's frames were converted (HDR,
            BT.2020 primaries), or that they are interlaced (:func:`~capsule_triage.video_colour.frame_notes`), each once.
        sample_bits: the depth a frame folder's 16-bit images were read at, at the end (0: none), for re-reads.
        colour_profiles: the colour profiles a frame folder's images were converted to sRGB from ("ProPhoto RGB (from
            frame0.png)").
        video_bytes: bytes of the video packets read (0: a frame folder), for the bits per pixel (:mod:`~capsule_triage.bitrate`).
        turned_degrees: the quarter turns clockwise (90, 180, 270) a video's display matrix asked for, each once, in the
            order first seen: its frames were turned upright by them (the stored size is the source's ``width`` x ``height``).
        mirrored: how a video's display matrix mirrored its frames after their turn ("left to right", "top to bottom"),
            each once (:func:`~capsule_triage.orientation.display_turn`).
        ticks_without_frame: an AVI's empty chunks, ticks its recorder wrote no frame for (a frame the capture dropped,
            or a variable rate written at a fixed one): its header counts them as frames, none is lost (QA 87 #2).
        jpeg_images, jpeg_bytes, jpeg_pixels: a frame folder's JPEG images read, their file bytes and stored pixels (each
            coded alone, as MJPEG's frames are: their bits per pixel, :mod:`~capsule_triage.bitrate`).
    """

    frames_decoded: int = 0
    frames_skipped: int = 0
    frames_reused: int = 0
    frames_hidden_by_edit_list: int = 0
    decoder_peak_rss_mb: float = 0.0
    errors: list[str] = field(default_factory=list)
    multi_page: list[str] = field(default_factory=list)
    smallest_image: tuple[int, int, str] | None = None
    image_sizes: dict[str, int] = field(default_factory=dict)
    colour_notes: list[str] = field(default_factory=list)
    colour_profiles: list[str] = field(default_factory=list)
    sample_bits: int = 0
    video_bytes: int = 0
    turned_degrees: list[int] = field(default_factory=list)
    mirrored: list[str] = field(default_factory=list)
    ticks_without_frame: int = 0
    jpeg_images: int = 0
    jpeg_bytes: int = 0
    jpeg_pixels: int = 0

    def skip(self, message: str) -> None:
        self.frames_skipped += 1
        if len(self.errors) < 10:
            self.errors.append(message)

    def saw_jpeg(self, nbytes: int, width: int, height: int) -> None:
        self.jpeg_images += 1
        self.jpeg_bytes += nbytes
        self.jpeg_pixels += width * height

    def saw_image(self, width: int, height: int, name: str) -> None:
        if self.smallest_image is None or min(width, height) < min(self.smallest_image[:2]):
            self.smallest_image = (width, height, name)
        self.saw_frame(width, height)

    def saw_frame(self, width: int, height: int) -> None:
        size = f"{width}x{height}"
        self.image_sizes[size] = self.image_sizes.get(size, 0) + 1


@dataclass(frozen=True)
class Segment:
    """A part of a video that decodes on its own: from a keyframe to the next part's keyframe.

    Attributes:
        start_pts: pts (stream time base) of the keyframe it starts at; None = the beginning.
        end_pts: pts of the keyframe the next part starts at; None = to the end.
        first_index: ``frame_index`` of its first frame (frames before it in presentation order).
    """

    start_pts: int | None
    end_pts: int | None
    first_index: int
