"""Colour profiles embedded in frame images, and the conversion of such frames to sRGB.

Every model here was trained on sRGB pictures (ImageNet's, then capsule frames exported as sRGB). An export
tagged with a wider colour space (ProPhoto RGB, Adobe RGB, Display P3) stores the same colours as other numbers:
read as sRGB, its reds are dull (QA 53: a bleeding frame exported in ProPhoto RGB scored 0.15-0.21 instead of
0.999). OpenCV ignores embedded profiles, so a frame folder's images are converted here with LittleCMS (Pillow's
ImageCms, installed with torchvision): relative colorimetric with black-point compensation, what an image editor's
"convert to sRGB" does. A profile that is sRGB in effect is left alone (tested on a grid of colours, not by its
name). One that cannot be used is named by the reader (a Warning: line) and the image read as sRGB. Videos carry no
ICC profile (their colour primaries are not read).

The profile is found in the file's own bytes (:func:`~capsule_triage.image_headers.embedded_profile`).
"""

from __future__ import annotations

import functools
import io
import zlib
from dataclasses import dataclass

import numpy as np

from .image_headers import EmbeddedProfile

MAX_PROFILE_BYTES = 8 << 20  # libpng's own limit for a PNG's profile: a few kB is usual, a LUT profile up to ~1 MB
_IMAGE_CLASSES = {"mntr": "display", "scnr": "input", "spac": "colour space"}  # what an image may be tagged with
_PATTERN = np.stack(np.meshgrid(*[np.linspace(0, 255, 17).round().astype(np.uint8)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)


class UnusableProfile(ValueError):
    """An embedded profile that is not used, and why: it cannot be read (damaged, cut short, a segment missing, over
    :data:`MAX_PROFILE_BYTES`), is not an image's (a device link, a printer's CMYK) or cannot be converted from."""


@dataclass(frozen=True)
class _Conversion:
    """What one embedded profile does to a frame: ``transform`` to sRGB (None: nothing to convert), or ``refusal``."""

    description: str = ""
    transform: object | None = None
    refusal: str | None = None


@functools.lru_cache(maxsize=8)  # a frame folder's images share one profile: read and checked once, refusals too
def _conversion(profile: EmbeddedProfile) -> _Conversion:
    try:
        return _build(profile)
    except UnusableProfile as exc:
        return _Conversion(refusal=str(exc))


def _build(profile: EmbeddedProfile) -> _Conversion:
    from PIL import Image, ImageCms  # Pillow: only for frames that carry a profile

    data = profile.data
    if profile.compressed:  # inflated up to the limit only: a small chunk may inflate to gigabytes
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(data, MAX_PROFILE_BYTES)
        except zlib.error as exc:
            raise UnusableProfile(f"cannot be read (its compressed data are damaged: {exc})") from None
        if inflater.unconsumed_tail:
            raise UnusableProfile(f"is over {MAX_PROFILE_BYTES >> 20} MB: not read")
        if not inflater.eof:
            raise UnusableProfile("cannot be read (its compressed data end early: cut short)")
    if len(data) > MAX_PROFILE_BYTES:
        raise UnusableProfile(f"is over {MAX_PROFILE_BYTES >> 20} MB: not read")
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(data))
        description = (ImageCms.getProfileDescription(source) or "").strip() or "unnamed"
        space, kind = source.profile.xcolor_space.strip(), source.profile.device_class
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        raise UnusableProfile(f"cannot be read ({exc or 'empty, cut short or a part missing'})") from None
    if kind not in _IMAGE_CLASSES:
        raise UnusableProfile(f"{description!r} is a {kind!r} profile, not an image's")
    if space == "GRAY":  # a grey image's own: its greys are read as they are
        return _Conversion(description)
    if space != "RGB":
        raise UnusableProfile(f"{description!r} is a profile of {space} colours, not RGB")
    try:
        transform = ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), "RGB", "RGB",
                                            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
                                            flags=ImageCms.Flags.BLACKPOINTCOMPENSATION)
        moved = np.asarray(ImageCms.applyTransform(Image.fromarray(_PATTERN, "RGB"), transform)).astype(int) - _PATTERN
    except ImageCms.PyCMSError as exc:
        raise UnusableProfile(f"{description!r} cannot be converted to sRGB ({exc})") from None
    # sRGB in effect, whatever its name says (a linear-light profile may be named "sRGB ... g10"): nothing to convert
    return _Conversion(description, None if np.abs(moved).max() <= 1 else transform)


def to_srgb(rgb: np.ndarray, profile: EmbeddedProfile) -> tuple[np.ndarray, str | None]:
    """``rgb`` (uint8 [H, W, 3], in ``profile``'s colours) in sRGB, and the profile's description when it was
    converted (None: a profile that moves no colour of a 17-level grid by more than one level, i.e. sRGB in effect,
    or a grey one: left as it is). A 16-bit image is converted after its reduction to 8 bits (Pillow's LittleCMS
    transforms are 8-bit): a linear-light one loses some precision in its darks. About 4 ms a 336 x 336 frame on one
    core here (a PNG's decode: ~2 ms). Raises :class:`UnusableProfile`."""
    conversion = _conversion(profile)
    if conversion.refusal:
        raise UnusableProfile(conversion.refusal)
    if conversion.transform is None:
        return rgb, None
    from PIL import Image, ImageCms

    return np.asarray(ImageCms.applyTransform(Image.fromarray(rgb, "RGB"), conversion.transform)), conversion.description
