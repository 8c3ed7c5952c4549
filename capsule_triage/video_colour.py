"""A decoded video frame as the RGB the models learned: SDR, BT.709 primaries, sRGB-like tone.

Almost every recording is SDR with BT.709 or BT.601 primaries: swscale converts its Y'CbCr to R'G'B' with the matrix
and range the stream states (or FFmpeg's default for an untagged one), and those values are the frame. Two kinds of
stream need more (QA 54), because swscale converts the matrix only, not the light: HDR video, whose R'G'B' are PQ
(SMPTE ST 2084) or HLG (ARIB STD-B67) signals, read as SDR they are dull and dark (bleeding frames scored 0.32 instead
of 0.99); and BT.2020's wider primaries, read as BT.709 they desaturate reds. Such a frame is converted to float
R'G'B' by swscale (matrix, range, resize), then in numpy to linear light (PQ: reference white 203 cd/m2, BT.2408; HLG:
its 75 % signal; SDR: the inverse BT.709 curve), to BT.709 primaries, and back to signals (HDR: sRGB's curve, as an
SDR picture is shown; SDR: the BT.709 curve it came by, so only its primaries change); what lies above reference white
(highlights) or outside BT.709 is clipped. ~3 ms a 224 px frame here. Colour matrices swscale cannot convert
(YCgCo, ICtCp, constant-luminance BT.2020) are refused with their name. A stream with an alpha channel (PNG or
QuickTime Animation in a MOV) is laid on black, as a frame folder's transparent PNG is.
"""

from __future__ import annotations

import functools

import av
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
_HLG_WHITE = (np.exp((0.75 - 0.55991073) / 0.17883277) + 0.28466892) / 12  # scene light of its 75 % signal: 0.265
# BT.2020 -> BT.709 primaries, linear light (ITU-R BT.2087)
_BT2020_TO_BT709 = np.array([[1.6605, -0.5876, -0.0728], [-0.1246, 1.1329, -0.0083], [-0.0182, -0.1006, 1.1187]],
                            np.float32)


class UnconvertibleColours(Exception):
    """A frame whose colour matrix swscale cannot convert to RGB; the message names it."""


@functools.lru_cache(maxsize=16)
def _has_alpha(pixel_format: str) -> bool:
    return any(component.is_alpha for component in av.VideoFormat(pixel_format).components)


def needs_conversion(frame: av.VideoFrame) -> bool:
    """Whether ``frame`` is HDR or of BT.2020 primaries: more than swscale's matrix conversion to be read right."""
    return int(frame.color_trc) in (PQ, HLG) or int(frame.color_primaries) == BT2020_PRIMARIES


def conversion_note(frame: av.VideoFrame) -> str:
    """What a run says of a converted stream (a Warning: line: the scores of such input are less certain)."""
    trc = int(frame.color_trc)
    what = f"HDR video ({_TRANSFER_NAMES[trc]}" if trc in _TRANSFER_NAMES else "video (SDR"
    primaries = ", BT.2020 primaries" if int(frame.color_primaries) == BT2020_PRIMARIES else ""
    white = {PQ: ", reference white at 203 cd/m2 (BT.2408), highlights above it clipped",
             HLG: ", reference white at its 75 % signal, highlights above it clipped"}.get(trc, "")
    return (f"{what}{primaries}): converted to SDR sRGB with BT.709 primaries{white}; the models learned SDR recordings, "
            "so check its events against the source")


def frame_rgb(reformatter: VideoReformatter, frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """``frame`` as uint8 RGB [height, width, 3] (see the module's docstring).

    Raises:
        UnconvertibleColours: a colour matrix swscale cannot convert.
        av.FFmpegError, ValueError: swscale's own failures.
    """
    matrix = int(frame.colorspace)
    if matrix in _UNCONVERTIBLE_MATRICES:
        raise UnconvertibleColours(f"colour matrix {_UNCONVERTIBLE_MATRICES[matrix]} (a stream tag), which FFmpeg's "
                                   "scaler cannot convert to RGB: re-encode it to BT.709 (ffmpeg -vf "
                                   "colorspace=all=bt709) to triage it")
    if _has_alpha(frame.format.name):  # (PNG or QuickTime Animation in a MOV): laid on black, as a frame folder's PNG
        rgba = reformatter.reformat(frame, width=width, height=height, format="rgba", interpolation=RGB_CONVERSION,
                                    threads=SWSCALE_THREADS).to_ndarray()
        return np.ascontiguousarray((rgba[..., :3].astype(np.uint16) * rgba[..., 3:] // 255).astype(np.uint8))
    if not needs_conversion(frame):
        return reformatter.reformat(frame, width=width, height=height, format="rgb24", interpolation=RGB_CONVERSION,
                                    threads=SWSCALE_THREADS).to_ndarray()
    planar = reformatter.reformat(frame, width=width, height=height, format="gbrpf32le", interpolation=RGB_CONVERSION,
                                  threads=SWSCALE_THREADS)
    g, b, r = (np.frombuffer(p, np.float32).reshape(p.height, p.line_size // 4)[:, : p.width] for p in planar.planes)
    signal = np.clip(np.stack([r, g, b], -1), 0.0, 1.0)
    linear = _to_linear(signal, int(frame.color_trc))
    if int(frame.color_primaries) == BT2020_PRIMARIES:
        linear = linear @ _BT2020_TO_BT709.T
    linear = np.clip(linear, 0.0, 1.0)
    if int(frame.color_trc) in (PQ, HLG):  # display light: sRGB's curve, as an SDR picture is shown
        encoded = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)
    else:  # SDR: back through the curve it came by, so only the primaries change (as any SDR stream is read)
        encoded = np.where(linear < 0.018, 4.5 * linear, 1.099 * np.power(linear, 0.45) - 0.099)
    return np.ascontiguousarray((encoded * 255 + 0.5).astype(np.uint8))


def _to_linear(signal: np.ndarray, trc: int) -> np.ndarray:
    """R'G'B' signals (0-1) as linear light, 1.0 at reference white."""
    if trc == PQ:
        m1, m2, c1, c2, c3 = 2610 / 16384, 2523 / 4096 * 128, 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
        p = np.power(signal, 1 / m2)
        return 10000 / 203 * np.power(np.maximum(p - c1, 0) / (c2 - c3 * p), 1 / m1)
    if trc == HLG:
        a, b, c = 0.17883277, 0.28466892, 0.55991073
        scene = np.where(signal <= 0.5, signal * signal / 3, (np.exp((signal - c) / a) + b) / 12)
        return scene / _HLG_WHITE
    return np.where(signal < 0.081, signal / 4.5, np.power((signal + 0.099) / 1.099, 1 / 0.45))  # BT.709's curve
