"""Colour profiles embedded in frame images, and the conversion of such frames to sRGB.

Every model here was trained on sRGB pictures (ImageNet's, then capsule frames exported as sRGB). An export
tagged with a wider colour space (ProPhoto RGB, Adobe RGB, Display P3) stores the same colours as other numbers:
read as sRGB, its reds are dull (QA 53: a bleeding frame exported in ProPhoto RGB scored 0.15-0.21 instead of
0.999). OpenCV ignores embedded profiles, so a frame folder's images are converted here with LittleCMS (Pillow's
ImageCms, installed with torchvision): relative colorimetric with black-point compensation, what an image editor's
"convert to sRGB" does. An sRGB profile is left alone. Videos carry no ICC profile (their colour primaries are
not read).

The profile is found in the file's own bytes, in the place each format keeps it: a PNG's iCCP chunk, a JPEG's
APP2 ICC_PROFILE segments, a WebP's ICCP chunk, a TIFF's tag 34675.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_ICC_TAG = 34675


def embedded_profile(data: memoryview) -> bytes | None:
    """The ICC profile an image file's bytes embed (PNG, JPEG, WebP, TIFF), or None: none, another format, or
    a profile chunk that cannot be read (taken as none)."""
    try:
        if bytes(data[:8]) == _PNG_SIGNATURE:
            return _png_profile(data)
        if bytes(data[:2]) == b"\xff\xd8":
            return _jpeg_profile(data)
        if bytes(data[:4]) == b"RIFF" and bytes(data[8:12]) == b"WEBP":
            return _webp_profile(data)
        if bytes(data[:4]) in (b"II*\x00", b"MM\x00*"):
            return _tiff_profile(data)
    except (zlib.error, IndexError, ValueError):
        return None
    return None


def _png_profile(data: memoryview) -> bytes | None:
    at = 8
    while at + 8 <= len(data):
        length, kind = int.from_bytes(data[at : at + 4], "big"), bytes(data[at + 4 : at + 8])
        if kind == b"iCCP":
            body = bytes(data[at + 8 : at + 8 + length])
            name_end = body.index(b"\x00")  # a name of 1-79 bytes, then the compression method (0: zlib)
            return zlib.decompress(body[name_end + 2 :])
        if kind in (b"sRGB", b"IDAT", b"IEND"):  # an sRGB chunk says sRGB; the profile comes before the pixels
            return None
        at += 12 + length
    return None


def _jpeg_profile(data: memoryview) -> bytes | None:
    parts: dict[int, bytes] = {}
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0xDA or marker == 0xD9:  # the pixel data (or the end): the profile comes before it
            break
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if marker == 0xE2 and bytes(data[at + 4 : at + 16]) == b"ICC_PROFILE\x00":
            parts[data[at + 16]] = bytes(data[at + 18 : at + 2 + length])  # sequence number (from 1), count, data
        at += 2 + length
    return b"".join(parts[k] for k in sorted(parts)) if parts else None


def _webp_profile(data: memoryview) -> bytes | None:
    at = 12
    while at + 8 <= len(data):
        size = int.from_bytes(data[at + 4 : at + 8], "little")
        if bytes(data[at : at + 4]) == b"ICCP":
            return bytes(data[at + 8 : at + 8 + size])
        at += 8 + size + (size & 1)
    return None


def _tiff_profile(data: memoryview) -> bytes | None:
    order = "little" if bytes(data[:2]) == b"II" else "big"
    ifd = int.from_bytes(data[4:8], order)
    for entry in range(int.from_bytes(data[ifd : ifd + 2], order)):
        at = ifd + 2 + 12 * entry
        if int.from_bytes(data[at : at + 2], order) == _TIFF_ICC_TAG:
            count, offset = int.from_bytes(data[at + 4 : at + 8], order), int.from_bytes(data[at + 8 : at + 12], order)
            return bytes(data[offset : offset + count]) if count > 4 else None
    return None


class UnusableProfile(ValueError):
    """A profile LittleCMS cannot read, or one that is not of RGB colours (a grey or CMYK image's)."""


@functools.lru_cache(maxsize=8)  # a frame folder's images share one profile: its transform is built once
def _to_srgb(profile: bytes):
    """(description, transform) for an embedded profile's bytes; the transform None for an sRGB profile (nothing to
    convert) or a grey one (a grey image's greys are read as they are)."""
    from PIL import ImageCms  # Pillow: only for frames that carry a profile

    try:
        source = ImageCms.ImageCmsProfile(ImageCms.core.profile_frombytes(profile))
    except (OSError, ValueError, TypeError) as exc:
        raise UnusableProfile(f"cannot be read ({exc})") from None
    description = (ImageCms.getProfileDescription(source) or "unnamed").strip()
    if source.profile.xcolor_space.strip() == "GRAY":  # a grey image's own: its greys are read as they are
        return description, None
    if source.profile.xcolor_space.strip() != "RGB":
        raise UnusableProfile(f"{description!r} is a profile of {source.profile.xcolor_space.strip()} colours, not RGB")
    if "srgb" in description.lower():
        return description, None
    transform = ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), "RGB", "RGB",
                                        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
                                        flags=ImageCms.Flags.BLACKPOINTCOMPENSATION)
    return description, transform


def to_srgb(rgb: np.ndarray, profile: bytes) -> tuple[np.ndarray, str | None]:
    """``rgb`` (uint8 [H, W, 3], in ``profile``'s colours) in sRGB, and the profile's description when it was
    converted (None: an sRGB or grey profile, left as it is). About 4 ms a 336 x 336 frame on one core here (a PNG's
    decode: ~2 ms). Raises :class:`UnusableProfile`."""
    description, transform = _to_srgb(profile)
    if transform is None:
        return rgb, None
    from PIL import Image, ImageCms

    return np.asarray(ImageCms.applyTransform(Image.fromarray(rgb, "RGB"), transform)), description
