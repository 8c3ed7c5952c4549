"""How heavily a video is compressed, and when that is more than the model's scores stand.

A capsule recorder's export, or a copy re-encoded to save space, can carry so few bits per frame that
blocking and smearing change what the model sees: on the shipped model's test frames the share of
frames flagged rose from 51 % to 60-99 % as the bits fell (``benchmarks/compression.py``; QA 61 M3: the
same 90 frames in low-bitrate AVIs of 1-4 KB a frame flagged 68-74 % against 37 %). run.json records the
bits of every video (and of a frame folder of JPEG images); for MJPEG and JPEG images, whose every frame is coded
alone, ``triage run`` says in a ``Warning:`` line when they are below the floor, rather than let the flags stand as if
the study were clean (MJPEG's floor was measured on JPEG files).

:data:`FLOORS` are measured (``benchmarks/results/compression.json``, which the tests compare with
them): per codec family, the bits per pixel per frame below which more than :data:`CROSSING_LIMIT` of
the 374 wcebleedgen/test frames crossed the shipped model's operating threshold. Only MJPEG's is applied:
a codec that predicts frames from their neighbours spends bits on what changes, so its bits a frame follow
the content as much as the quality (review rev56: the same scene at x264 CRF 28, a quality its floor
passes, 0.071 bits per pixel at 25 frames/s, 0.368 at 4; CI145: a clip of a few frames of text on black,
a stalled capsule's, costs almost nothing), and an average over a study cannot tell a coarse export from
an easy one. Intra-coded frames of black or text only are small too: a study is judged only when
:data:`VIEW_SHARE` of its frames show a field of view.
"""

from __future__ import annotations

from .frames import DecodeStats, SourceInfo

CROSSING_LIMIT = 0.05  # the share of frames crossing the threshold that a floor allows
# bits per pixel per frame (benchmarks/results/compression.json "floors"), measured per codec family on its first member;
# only the families of JUDGED are applied (H.264's and MPEG-4's are recorded for the day keyframe bits are counted)
FLOORS = {"h264": 0.145, "mpeg4": 0.489, "mjpeg": 0.658}
FAMILIES = {"h264": "h264", "hevc": "h264", "av1": "h264", "vp9": "h264", "vp8": "h264",
            "mpeg4": "mpeg4", "msmpeg4v2": "mpeg4", "msmpeg4v3": "mpeg4", "h263": "mpeg4", "mjpeg": "mjpeg"}
JUDGED = frozenset({"mjpeg"})  # every frame coded alone: its size is its quality (the floor's family: FAMILIES)
VIEW_SHARE = 0.95  # frames with a field of view a judged study needs (black and text-only frames cost few bits)


def _all_jpeg(info: SourceInfo, stats: DecodeStats) -> bool:
    """A frame folder whose every image read is a JPEG (counted by the reader: ``DecodeStats.jpeg_images``)."""
    return info.kind == "frames" and stats.frames_decoded > 0 and stats.jpeg_images == stats.frames_decoded and stats.jpeg_pixels > 0


def bits_per_pixel(info: SourceInfo, stats: DecodeStats) -> float | None:
    """Bits per stored pixel per decoded frame: of the video packets, or of a frame folder's files when all of its
    images are JPEGs (each coded alone, as an MJPEG frame); None for other folders or nothing decoded."""
    if _all_jpeg(info, stats):
        return stats.jpeg_bytes * 8 / stats.jpeg_pixels
    if info.kind != "video" or not stats.frames_decoded or not stats.video_bytes or not info.width or not info.height:
        return None
    return stats.video_bytes * 8 / (stats.frames_decoded * info.width * info.height)


def bits_per_model_pixel(info: SourceInfo, stats: DecodeStats, input_size: int) -> float | None:
    """Bits per frame over the pixels the model sees of it: a frame is resized to ``input_size`` on its short side, and
    a larger one loses its fine blocking in that (a 720p clip at 0.11 bits per stored pixel is 1.2 at 224 px; the
    floors were measured on 224 px frames). A smaller frame is enlarged, its artefacts with it: its own pixels count.
    A frame folder's frames are taken at their mean stored size, in the shape of its first image."""
    bpp = bits_per_pixel(info, stats)
    if bpp is None or not info.width or not info.height:  # a folder whose first images did not decode has no shape (rev58)
        return None
    pixels = stats.jpeg_pixels / stats.jpeg_images if info.kind == "frames" else info.width * info.height
    short, long = sorted((info.width, info.height))
    seen = input_size * input_size * long / short
    return bpp * pixels / min(pixels, seen)


def low_bitrate_note(info: SourceInfo, stats: DecodeStats, input_size: int, view_share: float) -> str | None:
    """A ``Warning:`` line for an intra-coded video (:data:`JUDGED`) or a frame folder of JPEG images compressed below
    its floor, else None; ``view_share``: the share of its frames that show a field of view."""
    bpp = bits_per_model_pixel(info, stats, input_size)
    codec = "mjpeg" if _all_jpeg(info, stats) else info.codec
    if bpp is None or codec not in JUDGED or view_share < VIEW_SHARE or bpp >= FLOORS[FAMILIES[codec]]:
        return None
    what, of = ("JPEG images", "") if info.kind == "frames" else ("video", f", {codec}")
    return (f"{info.path}: heavily compressed {what} ({bpp:.3f} bits per pixel a frame at the model's {input_size} px{of}): "
            f"below {FLOORS[FAMILIES[codec]]:g}, more than {CROSSING_LIMIT:.0%} of the shipped model's test frames "
            "changed sides of its threshold, most of them to flagged (benchmarks/README.md, compression); expect frames "
            "flagged for the artefacts, and export the study at a higher quality if the recorder allows")
