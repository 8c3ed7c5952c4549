"""Lossy re-encoding of frames, as a video codec does to them before ``triage run`` sees them.

The labelled frames a model is trained and evaluated on are stills (PNG); the studies it triages are
compressed video (H.264 at 4:2:0). ``triage eval --codec h264:23`` scores a split after a round trip
through the codec, so the model card states what compression does to the metrics; training with
``--recompress P`` passes frames through H.264 (or JPEG) at a random quality, so the model learns
what compressed frames look like and compression artefacts carry no class information (in
WCEBleedGen the classes come mostly from different sources, whose compression differs, like their
borders).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import av
from av.video.reformatter import VideoReformatter
import cv2
import numpy as np
import torch

from .video_colour import RGB_CONVERSION

CODECS = ("h264", "jpeg")
JPEG_QUALITY_RANGE = (30, 95)  # training: uniform over this range (OpenCV's JPEG is 4:2:0, like H.264 here)
H264_CRF_RANGE = (18, 35)  # training: one CRF per batch, uniform over this range (libx264's default is 23)


@dataclass(frozen=True)
class Codec:
    """A lossy round trip: ``h264`` at a CRF (0-51, libx264's scale: lower is better) or ``jpeg`` at a
    quality (1-100: higher is better)."""

    kind: str
    level: int

    @classmethod
    def parse(cls, spec: str) -> Codec:
        """``"h264:23"`` or ``"jpeg:75"``.

        Raises:
            ValueError: naming the spec and what is wrong with it.
        """
        kind, _, level = spec.partition(":")
        if kind not in CODECS or not (level.strip().isascii() and level.strip().isdecimal()):
            raise ValueError(f"codec {spec!r}: expected h264:CRF or jpeg:QUALITY, e.g. h264:23")
        codec = cls(kind, int(level))
        low, high = (0, 51) if kind == "h264" else (1, 100)
        if not low <= codec.level <= high:
            raise ValueError(f"codec {spec!r}: {'CRF' if kind == 'h264' else 'quality'} must be in {low}-{high}")
        return codec

    def __str__(self) -> str:
        return f"{self.kind}:{self.level}"


def round_trip(images: torch.Tensor, codec: Codec) -> torch.Tensor:
    """uint8 [N,3,H,W] frames after encoding and decoding with ``codec`` (same shape).

    H.264 encodes the frames as one 4 fps clip in the given order, so later frames are predicted from
    earlier ones as in a study (libx264, yuv420p, preset veryfast, one thread, no macroblock-tree
    rate control, so that the same frames give the same bytes), with PyAV, and decodes it to RGB as
    the reader does. JPEG encodes each frame alone with OpenCV.
    """
    frames = images.permute(0, 2, 3, 1).contiguous().numpy()
    if codec.kind == "h264" and (frames.shape[1] % 2 or frames.shape[2] % 2):  # same shape out: nothing cut to even
        raise ValueError(f"H.264 at 4:2:0 needs even frame sides, got {frames.shape[2]}x{frames.shape[1]}")
    out = np.stack(list(round_trip_stills(frames, codec)))  # frames of one size: one clip
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    """An RGB uint8 [H,W,3] frame after a JPEG round trip at ``quality``."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for a frame of shape {frame.shape}")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _h264_stream(container, width: int, height: int, crf: int):
    stream = container.add_stream("libx264", rate=4)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    # Reproducible bytes: x264's macroblock-tree rate control gave 2-10 different encodes of the same
    # 48 frames in 10 runs (in one process, one thread); without it 1 of 10. One thread, because
    # x264's output depends on the thread count, which by default follows the machine's cores.
    stream.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0"}
    stream.codec_context.thread_count = 1
    return stream


def round_trip_stills(images: Iterable[np.ndarray], codec: Codec) -> Iterator[np.ndarray]:
    """RGB uint8 [H,W,3] stills at their own size after ``codec``'s round trip, in order, as a study's frames are
    compressed before ``triage run`` resizes them for its model (QA 65 #2: ``triage eval --codec`` compressed the
    model-sized stills, so a 96 px model saw far coarser blocks than in a video of 224 px frames). JPEG: each alone, as
    it comes. H.264: each run of stills of one size as one 4 fps clip (:func:`round_trip`'s settings), streamed through
    the encoder, then decoded in order; a still of another size starts a new clip (review rev60 #1: resized to the first
    one's size, a wide still was squashed); a still with an odd side loses its last row or column (4:2:0), a side of one pixel is repeated to two."""
    if codec.kind == "jpeg":
        for image in images:
            yield jpeg(image, codec.level)
        return
    state, count = None, 0  # (container, stream, buffer, size) of the clip being encoded; its frames so far
    try:
        for image in images:
            if min(image.shape[:2]) < 2:  # rev61: a 1-pixel side cut to even is none (an IndexError): repeated once instead
                image = np.pad(image, ((0, image.shape[0] < 2), (0, image.shape[1] < 2), (0, 0)), mode="edge")
            size = (image.shape[0] // 2 * 2, image.shape[1] // 2 * 2)
            if state is not None and state[3] != size:
                finished, state = state, None
                yield from _finish_clip(finished, count)
            if state is None:
                buffer = io.BytesIO()
                container = av.open(buffer, "w", format="mp4")
                state, count = (container, _h264_stream(container, size[1], size[0], codec.level), buffer, size), 0
            frame = np.ascontiguousarray(image[: size[0], : size[1]])
            state[0].mux(state[1].encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            count += 1
        if state is not None:
            finished, state = state, None
            yield from _finish_clip(finished, count)
    finally:
        if state is not None:  # stopped mid-clip (an unreadable still): the encoder is let go, the error goes on
            with contextlib.suppress(Exception):
                state[0].close()


def _finish_clip(state, count: int) -> Iterator[np.ndarray]:
    """The frames of a clip :func:`round_trip_stills` encoded, decoded in order."""
    container, stream, buffer, _ = state
    try:
        container.mux(stream.encode())
    finally:  # rev61: a failed flush left the container open (to the garbage collector)
        container.close()
    buffer.seek(0)
    # One reformatter (one swscale context) for the clip: frame.to_ndarray(format=...) builds one per
    # frame. Same pixels; 64 frames decoded and converted in 27-46 instead of 45-64 ms.
    reformatter, decoded = VideoReformatter(), 0
    with av.open(buffer, "r") as clip:
        for frame in clip.decode(video=0):
            decoded += 1
            yield reformatter.reformat(frame, format="rgb24", interpolation=RGB_CONVERSION).to_ndarray()
    if decoded != count:
        raise ValueError(f"H.264 round trip returned {decoded} frames for {count}")


def recompress_augment(frames: torch.Tensor, probability: float, generator: torch.Generator, codec: str = "h264") -> torch.Tensor:
    """Training: each uint8 [N,3,H,W] frame, with ``probability``, after a lossy round trip — ``h264``:
    the chosen frames of the batch as one clip at a CRF uniform in :data:`H264_CRF_RANGE`; ``jpeg``:
    each at a quality uniform in :data:`JPEG_QUALITY_RANGE`. Every draw comes from ``generator``.

    Raises:
        ValueError: an unknown codec.
    """
    if codec not in CODECS:
        raise ValueError(f"recompress codec must be one of {CODECS}, got {codec!r}")
    n = frames.shape[0]
    chosen = torch.rand(n, generator=generator) < probability
    low, high = H264_CRF_RANGE if codec == "h264" else JPEG_QUALITY_RANGE
    level = torch.randint(low, high + 1, (n,), generator=generator)
    picked = chosen.nonzero().flatten()
    if not len(picked):
        return frames
    out = frames.clone()
    if codec == "h264":  # one clip per batch, at the first chosen frame's CRF
        out[picked] = round_trip(frames[picked], Codec("h264", int(level[picked[0]])))
        return out
    for i in picked.tolist():
        hwc = frames[i].permute(1, 2, 0).contiguous().numpy()
        out[i] = torch.from_numpy(jpeg(hwc, int(level[i]))).permute(2, 0, 1)
    return out
