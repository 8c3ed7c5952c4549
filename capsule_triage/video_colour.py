"""A decoded video frame as the RGB the models learned: SDR, BT.709 primaries, sRGB-like tone.

Almost every recording is SDR with BT.709 or BT.601 primaries: swscale converts its Y'CbCr to R'G'B' with the matrix
and range the stream states (or FFmpeg's default for an untagged one), and those values are the frame. Two kinds of
stream need more (QA 54), because swscale converts the matrix only, not the light: HDR video, whose R'G'B' are PQ
(SMPTE ST 2084) or HLG (ARIB STD-B67) signals, read as SDR they are dull and dark (bleeding frames scored 0.32 instead
of 0.99); and BT.2020's wider primaries, read as BT.709 they desaturate reds. Such a frame is converted to 16-bit
R'G'B' by swscale (matrix, range, resize), then by lookup tables and a 3 x 3 matrix to display light relative to
reference white (PQ: 203 cd/m2, BT.2408; HLG: its 75 % signal, through BT.2100's display step, system gamma 1.2 at
1,000 cd/m2; SDR: the inverse BT.709 curve), to BT.709 primaries (BT.2087), and back to signals (HDR: sRGB's curve, as
an SDR picture is shown; SDR: the BT.709 curve it came by, so only its primaries change); what lies above reference
white (highlights) or outside BT.709 is clipped. ~1-2 ms a 224 px frame, 55-70 ms a 1080p thumbnail here. Colour
matrices swscale cannot convert (YCgCo, ICtCp, constant-luminance BT.2020) are refused with their name. A stream with
an alpha channel (PNG or QuickTime Animation in a MOV, ProRes 4444) or a palette is laid on black, as a frame folder's
transparent PNG is.
"""

from __future__ import annotations

import functools

import av
import cv2
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

SWSCALE_THREADS = 1  # the decoder's resize and RGB conversion on one thread (PyAV 17+ defaults to one per core)
# How every decoded frame becomes RGB (here, in thumbnails and in the H.264 round trips of training and
# evaluation). swscale's default (bilinear, chroma at half width, fast rounding) darkens frames: on real
# frames encoded at CRF 10 and read at 224 px, by 1.8 / 1.0 / 1.4 grey levels (R / G / B) against the
# training resize of the same frames (OpenCV INTER_AREA of the source), mean |difference| 1.73. Full-width
# chroma with accurate rounding removes the bias (-0.15 / 0.13 / -0.09, what the codec itself leaves), and
# with AREA (the training resize's filter) the mean |difference| 0.63. Cost: 336 -> 224 px 264 vs 243 us per frame,
# 720p 1.25 vs 1.05 ms (tests: test_reader.py::test_video_frames_are_as_bright_as_their_source, test_recompress.py).
RGB_CONVERSION = Interpolation.AREA | Interpolation.FULL_CHR_H_INT | Interpolation.ACCURATE_RND

PQ, HLG, BT2020_PRIMARIES = 16, 18, 9  # AVColorTransferCharacteristic, AVColorPrimaries
_TRANSFER_NAMES = {PQ: "PQ (SMPTE ST 2084)", HLG: "HLG (ARIB STD-B67)"}
# AVColorSpace values swscale has no conversion for ("Operation not supported" on every frame)
_UNCONVERTIBLE_MATRICES = {8: "YCgCo", 10: "BT.2020 constant luminance", 11: "SMPTE ST 2085", 12: "chromaticity-derived",
                           13: "chromaticity-derived constant luminance", 14: "ICtCp", 15: "IPT-C2", 16: "YCgCo-Re",
                           17: "YCgCo-Ro"}
# BT.2020 -> BT.709 primaries, linear light (ITU-R BT.2087)
BT2020_TO_BT709 = np.array([[1.6605, -0.5876, -0.0728], [-0.1246, 1.1329, -0.0083], [-0.0182, -0.1006, 1.1187]],
                           np.float32)
BT2020_LUMA, BT709_LUMA = np.array([0.2627, 0.6780, 0.0593], np.float32), np.array([0.2126, 0.7152, 0.0722], np.float32)
HLG_PEAK, REFERENCE_WHITE = 1000.0, 203.0  # cd/m2: BT.2100's nominal HLG display, BT.2408's reference white
_OUT_STEPS = 16383  # linear light is looked up at this many steps to its 8-bit signal (under half a level apart)


# How a stream's header describes its Y'CbCr (AVColorSpace, AVColorRange), for run.json and the report
_MATRIX_NAMES = {1: "BT.709", 4: "FCC", 5: "BT.601", 6: "BT.601", 7: "SMPTE 240M", 9: "BT.2020"} | _UNCONVERTIBLE_MATRICES
_RANGE_NAMES = {1: "limited range", 2: "full range"}
HD_WIDTH, SD_HEIGHT = 1280, 576  # players take an untagged picture this wide, or taller than SD, for BT.709 (mpv, Chromium)


def stream_colours(codec_context) -> str | None:
    """How the stream's header describes its colours, as a fact of the source ("BT.709, limited range"), saying what an
    untagged stream is read as: swscale's BT.601 whatever its size (FFmpeg's convention, and what FFmpeg, OpenCV and PyAV
    write untagged from RGB). A player shows untagged HD as BT.709 instead, which moves saturated colours by up to ~24
    grey levels (a red of (200, 30, 40) here), so this is said for such a stream. None: no pixel format in the header."""
    fmt = codec_context.format
    if fmt is None:
        return None
    if fmt.is_rgb or fmt.name == "pal8":
        return "RGB"
    matrix = int(codec_context.colorspace)
    assumed = "full" if fmt.name.startswith("yuvj") else "limited"  # swscale's reading of an untagged range
    in_range = _RANGE_NAMES.get(int(codec_context.color_range)) or f"range untagged, read as {assumed}"
    if matrix in _MATRIX_NAMES:
        described = f"{_MATRIX_NAMES[matrix]}, {in_range}"
    else:
        described = f"matrix untagged, read as BT.601 (FFmpeg's convention), {in_range}"
        if codec_context.width >= HD_WIDTH or codec_context.height > SD_HEIGHT:
            described += " (players show untagged HD as BT.709: saturated colours differ)"
    trc, primaries = int(codec_context.color_trc), int(codec_context.color_primaries)
    return described + "".join(note for cond, note in ((primaries == BT2020_PRIMARIES, ", BT.2020 primaries"),
                                                       (trc in _TRANSFER_NAMES, f", {_TRANSFER_NAMES.get(trc)}")) if cond)


class UnconvertibleColours(Exception):
    """A frame whose colour matrix swscale cannot convert to RGB; the message names it."""


@functools.lru_cache(maxsize=16)
def _has_alpha(pixel_format: str) -> bool:
    """An alpha channel, or a palette (whose entries may be transparent: FFmpeg's PNG decoder keeps tRNS there)."""
    return pixel_format == "pal8" or any(component.is_alpha for component in av.VideoFormat(pixel_format).components)


def needs_conversion(frame: av.VideoFrame) -> bool:
    """Whether ``frame`` is HDR or of BT.2020 primaries: more than swscale's matrix conversion to be read right."""
    return int(frame.color_trc) in (PQ, HLG) or int(frame.color_primaries) == BT2020_PRIMARIES


def conversion_note(frame: av.VideoFrame) -> str:
    """What a run says of a converted frame's kind (a Warning: line: the scores of such input are less certain)."""
    trc = int(frame.color_trc)
    primaries = ", BT.2020 primaries" if int(frame.color_primaries) == BT2020_PRIMARIES else ""
    if trc not in _TRANSFER_NAMES:
        return f"video (SDR{primaries}): converted to BT.709 primaries (its BT.709 curve kept)"
    white = {PQ: "reference white at 203 cd/m2 (BT.2408)", HLG: "reference white at its 75 % signal (BT.2408)"}[trc]
    return (f"HDR video ({_TRANSFER_NAMES[trc]}{primaries}): converted to SDR sRGB with BT.709 primaries, {white}, "
            "highlights above it clipped; the models learned SDR recordings, so check its events against the source")


INTERLACED_NOTE = ("interlaced video (two fields in each frame): scored as stored, not deinterlaced; where there is motion "
                   "its thumbnails show combing")


def frame_notes(frame: av.VideoFrame) -> tuple[str, ...]:
    """What a run says once of a kind of frame: colours converted (:func:`conversion_note`), fields interlaced (QA 81
    #4: a 1080i capture's combed thumbnails, not a word in run.json), or both (rev78 #5: 1080i HLG)."""
    converted = (conversion_note(frame),) if needs_conversion(frame) else ()
    return (*converted, INTERLACED_NOTE) if frame.interlaced_frame else converted


def frame_rgb(reformatter: VideoReformatter, frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """``frame`` as uint8 RGB [height, width, 3] (see the module's docstring); an alpha channel laid on black.

    Raises:
        UnconvertibleColours: a colour matrix swscale cannot convert.
        av.FFmpegError, ValueError: swscale's own failures.
    """
    matrix = int(frame.colorspace)
    if matrix in _UNCONVERTIBLE_MATRICES:
        raise UnconvertibleColours(f"colour matrix {_UNCONVERTIBLE_MATRICES[matrix]} (a stream tag), which FFmpeg's "
                                   "scaler cannot convert to RGB: convert it to BT.709 Y'CbCr with a tool that knows "
                                   "this matrix to triage it")
    alpha, size = _has_alpha(frame.format.name), (width, height)
    if alpha:  # laid on black at the frame's own size, then resized, as a frame folder's image is (resizing straight
        width, height = frame.width, frame.height  # RGBA would blend the colours under transparent pixels in: rev49)
    if not needs_conversion(frame):
        if not alpha:
            return reformatter.reformat(frame, width=width, height=height, format="rgb24", interpolation=RGB_CONVERSION,
                                        threads=SWSCALE_THREADS).to_ndarray()
        rgba = reformatter.reformat(frame, width=width, height=height, format="rgba", interpolation=RGB_CONVERSION,
                                    threads=SWSCALE_THREADS).to_ndarray()
        return _resized(_on_black(rgba[..., :3], rgba[..., 3:]), size)
    planar = reformatter.reformat(frame, width=width, height=height, format="gbrap16le" if alpha else "gbrp16le",
                                  interpolation=RGB_CONVERSION, threads=SWSCALE_THREADS)
    planes = [np.frombuffer(p, np.uint16).reshape(p.height, p.line_size // 2)[:, : p.width] for p in planar.planes]
    trc, wide = int(frame.color_trc), int(frame.color_primaries) == BT2020_PRIMARIES
    to_linear = _signal_to_linear(trc if trc in (PQ, HLG) else 0)
    linear = np.stack([to_linear[planes[2]], to_linear[planes[0]], to_linear[planes[1]]], -1)  # gbrp: G, B, R planes
    if trc == HLG:  # BT.2100's display step: F_D = L_W * Y_S ** (gamma - 1) * E, in the stream's (BT.2020) primaries
        luma = cv2.transform(linear, (BT2020_LUMA if wide else BT709_LUMA)[None]).reshape(linear.shape[:2] + (1,))
        linear *= (HLG_PEAK / REFERENCE_WHITE) * np.power(np.maximum(luma, 0), 0.2)
    if wide:
        linear = cv2.transform(linear, BT2020_TO_BT709)
    steps = np.clip(linear * _OUT_STEPS + 0.5, 0, _OUT_STEPS).astype(np.uint16)
    rgb = _linear_to_signal(trc in (PQ, HLG))[steps]
    if not alpha:
        return np.ascontiguousarray(rgb)
    alpha8 = ((planes[3].astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # 10/12-bit opaque: 65472, 65520
    return _resized(_on_black(rgb, alpha8[..., None]), size)


def _on_black(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 RGB laid on black by its uint8 alpha, as a frame folder's transparent PNG is."""
    return np.ascontiguousarray((rgb.astype(np.uint16) * alpha // 255).astype(np.uint8))


def _resized(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))


@functools.lru_cache(maxsize=4)
def _signal_to_linear(trc: int) -> np.ndarray:
    """float32 [65536]: a 16-bit R'G'B' signal as light, 1.0 at reference white (HLG: scene light, before the display
    step; 0: SDR, the inverse BT.709 curve)."""
    signal = np.arange(65536, dtype=np.float64) / 65535
    if trc == PQ:
        m1, m2, c1, c2, c3 = 2610 / 16384, 2523 / 4096 * 128, 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
        p = np.power(signal, 1 / m2)
        light = 10000 / REFERENCE_WHITE * np.power(np.maximum(p - c1, 0) / (c2 - c3 * p), 1 / m1)
    elif trc == HLG:  # scene light 0-1 (BT.2100's inverse OETF); the display step makes its 75 % signal 1.0
        a, b, c = 0.17883277, 0.28466892, 0.55991073
        light = np.where(signal <= 0.5, signal * signal / 3, (np.exp((signal - c) / a) + b) / 12)
    else:
        light = np.where(signal < 0.081, signal / 4.5, np.power((signal + 0.099) / 1.099, 1 / 0.45))
    return light.astype(np.float32)


@functools.lru_cache(maxsize=2)
def _linear_to_signal(srgb: bool) -> np.ndarray:
    """uint8 [_OUT_STEPS + 1]: linear light 0-1 as an 8-bit signal: sRGB's curve (HDR) or BT.709's (SDR)."""
    linear = np.arange(_OUT_STEPS + 1, dtype=np.float64) / _OUT_STEPS
    if srgb:
        signal = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)
    else:
        signal = np.where(linear < 0.018, 4.5 * linear, 1.099 * np.power(linear, 0.45) - 0.099)
    return (signal * 255 + 0.5).astype(np.uint8)
