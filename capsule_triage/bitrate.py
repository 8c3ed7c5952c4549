"""How heavily a video is compressed, and when that is more than the model's scores stand.

A capsule recorder's export, or a copy re-encoded to save space, can carry so few bits per frame that
blocking and smearing change what the model sees: on the shipped model's test frames the share of
frames flagged rose from 51 % to 60-96 % as the bits fell (``benchmarks/compression.py``; QA 61 M3: the
same 90 frames in low-bitrate AVIs of 1-4 KB a frame flagged 68-74 % against 37 %). ``triage run`` then
says so in a ``Warning:`` line rather than let the flags stand as if the video were clean.

:data:`FLOORS` are measured (``benchmarks/results/compression.json``, which the tests compare with
them): per codec family, the bits per pixel per frame below which more than :data:`CROSSING_LIMIT` of
the 374 wcebleedgen/test frames crossed the shipped model's operating threshold.
"""

from __future__ import annotations

from .frames import DecodeStats, SourceInfo

CROSSING_LIMIT = 0.05  # the share of frames crossing the threshold that a floor allows
# bits per pixel per frame (benchmarks/results/compression.json "floors"); HEVC, AV1, VP9 and VP8 are held to H.264's,
# MS-MPEG-4 and H.263 to MPEG-4 Part 2's: measured on the family's first member, not on them
FLOORS = {"h264": 0.145, "mpeg4": 0.489, "mjpeg": 0.658}
FAMILIES = {"h264": "h264", "hevc": "h264", "av1": "h264", "vp9": "h264", "vp8": "h264",
            "mpeg4": "mpeg4", "msmpeg4v2": "mpeg4", "msmpeg4v3": "mpeg4", "h263": "mpeg4", "mjpeg": "mjpeg"}
INTRA_ONLY = frozenset({"mjpeg"})  # every frame coded alone: its bits per frame do not depend on the frame rate
# The floors were measured at 4 frames/s. A codec that predicts frames from their neighbours spends far fewer bits on
# each at a video rate (review rev56: the same scene at x264 CRF 28, a quality the floor passes, 0.071 bits per pixel
# at 25 frames/s, 0.368 at 4), so its floor holds only up to this rate: a capsule's (2-6 frames/s), not a gastroscope's.
MEASURED_MAX_FPS = 6.0


def bits_per_pixel(info: SourceInfo, stats: DecodeStats) -> float | None:
    """Bits of video packets per stored pixel per decoded frame; None for a frame folder or nothing decoded."""
    if info.kind != "video" or not stats.frames_decoded or not stats.video_bytes or not info.width or not info.height:
        return None
    return stats.video_bytes * 8 / (stats.frames_decoded * info.width * info.height)


def bits_per_model_pixel(info: SourceInfo, stats: DecodeStats, input_size: int) -> float | None:
    """Bits per frame over the pixels the model sees of it: a frame is resized to ``input_size`` on its short side, and
    a larger one loses its fine blocking in that (a 720p clip at 0.11 bits per stored pixel is 1.2 at 224 px; the
    floors were measured on 224 px frames). A smaller frame is enlarged, its artefacts with it: its own pixels count."""
    bpp = bits_per_pixel(info, stats)
    if bpp is None:
        return None
    short, long = sorted((info.width, info.height))
    seen = input_size * input_size * long / short
    return bpp * info.width * info.height / min(info.width * info.height, seen)


def low_bitrate_note(info: SourceInfo, stats: DecodeStats, input_size: int, fps: float | None) -> str | None:
    """A ``Warning:`` line for a video compressed below its codec family's floor, else None; ``fps``: the frames'
    own average rate (a predicting codec is judged only up to :data:`MEASURED_MAX_FPS`)."""
    bpp, family = bits_per_model_pixel(info, stats, input_size), FAMILIES.get(info.codec or "")
    if bpp is None or family is None or bpp >= FLOORS[family]:
        return None
    if info.codec not in INTRA_ONLY and (fps is None or fps > MEASURED_MAX_FPS + 1e-6):
        return None
    return (f"{info.path}: heavily compressed video ({bpp:.3f} bits per pixel a frame at the model's {input_size} px, "
            f"{info.codec}): below {FLOORS[family]:g}, more than {CROSSING_LIMIT:.0%} of the shipped model's test frames "
            "changed sides of its threshold, most of them to flagged (benchmarks/README.md, compression); expect frames "
            "flagged for the artefacts, and export the study at a higher bitrate if the recorder allows")
