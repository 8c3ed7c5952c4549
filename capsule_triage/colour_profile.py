"""Colour profiles embedded in frame images, and the conversion of such frames to sRGB.

Every model here was trained on sRGB pictures (ImageNet's, then capsule frames exported as sRGB). An export
tagged with a wider colour space (ProPhoto RGB, Adobe RGB, Display P3) stores the same colours as other numbers:
read as sRGB, its reds are dull (QA 53: a bleeding frame exported in ProPhoto RGB scored 0.15-0.21 instead of
0.999). OpenCV ignores embedded profiles, so a frame folder's images are converted here with LittleCMS (Pillow's
ImageCms, installed with torchvision): relative colorimetric with black-point compensation, what an image editor's
"convert to sRGB" does. An sRGB profile is left alone. Videos carry no ICC profile (their colour primaries are
not read).

The profile is found in the file's own bytes (:func:`~capsule_triage.image_headers.embedded_profile`).
"""

from __future__ import annotations

import functools

import numpy as np


class UnusableProfile(ValueError):
    """A profile LittleCMS cannot read, or one of other colours than RGB or grey (a CMYK image's)."""


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
