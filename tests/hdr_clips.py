"""Wide-gamut and HDR clips written by the standards' own formulas, for tests (no such recordings ship with the data).

sRGB frames -> linear light -> BT.2020 primaries (ITU-R BT.2087) -> a transfer: the BT.709 curve (SDR), PQ with
reference white at 203 cd/m2 (SMPTE ST 2084, ITU-R BT.2408) or HLG through BT.2100's inverse EOTF (a 1,000 cd/m2
display, reference white 203 cd/m2) -> BT.2020 non-constant-luminance Y'CbCr, limited range, 10-bit 4:2:0 -> lossless
HEVC, tagged.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

BT709_TO_BT2020 = np.array([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]])
SDR_2020, PQ, HLG = 14, 16, 18  # AVColorTransferCharacteristic


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    x = rgb / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def bt709_curve(linear: np.ndarray) -> np.ndarray:
    return np.where(linear < 0.018, 4.5 * linear, 1.099 * np.maximum(linear, 0) ** 0.45 - 0.099)


def _signal(linear: np.ndarray, trc: int) -> np.ndarray:
    if trc == PQ:
        m1, m2, c1, c2, c3 = 2610 / 16384, 2523 / 4096 * 128, 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
        y = np.clip(linear * 203 / 10000, 0, 1) ** m1
        return ((c1 + c2 * y) / (1 + c3 * y)) ** m2
    if trc == HLG:  # BT.2100's inverse EOTF: display light (1,000 cd/m2 display, gamma 1.2) to scene light, then OETF
        a, b, c = 0.17883277, 0.28466892, 0.55991073
        display = linear * 203 / 1000
        luma = np.maximum(display @ [0.2627, 0.6780, 0.0593], 1e-12)[..., None]
        e = display * luma ** ((1 - 1.2) / 1.2)
        return np.where(e <= 1 / 12, np.sqrt(3 * np.maximum(e, 0)), a * np.log(np.maximum(12 * e - b, 1e-12)) + c)
    return bt709_curve(linear)


def write_clip(frames: list[np.ndarray], path: Path, trc: int) -> Path:
    """Lossless 10-bit HEVC of ``frames`` (sRGB uint8, even sizes) in BT.2020 primaries with transfer ``trc``."""
    h, w = frames[0].shape[:2]
    kr, kb = 0.2627, 0.0593
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx265", rate=4)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p10le"
        stream.options = {"x265-params": "lossless=1:log-level=error"}
        context = stream.codec_context
        context.colorspace, context.color_range, context.color_primaries, context.color_trc = 9, 1, 9, trc
        for i, rgb in enumerate(frames):
            e = np.clip(_signal(srgb_to_linear(rgb.astype(np.float64)) @ BT709_TO_BT2020.T, trc), 0, 1)
            y = e @ [kr, 1 - kr - kb, kb]
            cb, cr = (e[..., 2] - y) / (2 * (1 - kb)), (e[..., 0] - y) / (2 * (1 - kr))
            half = lambda p: p.reshape(h // 2, 2, w // 2, 2).mean((1, 3))  # noqa: E731
            frame = av.VideoFrame(w, h, "yuv420p10le")
            frame.colorspace, frame.color_range, frame.color_primaries, frame.color_trc = 9, 1, 9, trc
            for plane, values in zip(frame.planes, [(16 + 219 * y) * 4, half((128 + 224 * cb) * 4), half((128 + 224 * cr) * 4)]):
                buffer = np.frombuffer(plane, np.uint16).reshape(plane.height, -1)
                buffer[:, : values.shape[1]] = np.round(values)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
