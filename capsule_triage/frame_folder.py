"""A frame folder's listing and images: which files are its frames, in which order (their names' order:
:mod:`~capsule_triage.frame_names`), what it leaves unread, and one image decoded to RGB.

A frame folder is the images directly inside one folder, in natural name order ("frame2" before
"frame10"). Images in its subfolders are not its frames (``triage batch`` treats such a subfolder as a
study of its own), and files of image types OpenCV is not asked to read are not frames either: both
are listed in :attr:`FolderListing.unread`, so a run can say what it left out instead of scoring half
a study in silence (and, at a fixed frame rate, shifting every later frame's time).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import MAX_FRAME_PIXELS
from .colour_profile import UnusableProfile, to_srgb
from .image_headers import (PNG_SIGNATURE, embedded_profile, jpeg_size, png_chunk_span, png_exif_orientation, png_intact,
                            png_transparent)
from .errors import InputError
from .frame_names import decimals_out_of_order, listed, natural_key, plural, twins_and_copies  # noqa: F401 - re-exported
from .opencv_quiet import opencv_silenced

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".tif", ".tiff", ".webp",
                            ".ppm", ".pnm"})  # colour Netpbm: `ffmpeg -i study.mp4 %05d.ppm` (QA 53: dropped, later times shifted)
JPEG_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})
# Image types an export may hold that are not read as frames; named when found, never silently dropped. Grey Netpbm
# (.pgm, .pbm) is what masks beside frames are written as, and a grey frame shows no view (rev45).
OTHER_IMAGE_SUFFIXES = frozenset({".gif", ".heic", ".heif", ".avif", ".jp2", ".j2k", ".jxl", ".dcm", ".pgm", ".pbm", ".pam"})


def _image_count(folder: str) -> int:
    with os.scandir(folder) as listing:
        return sum(1 for e in listing if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)


def other_types(names_by_suffix: dict[str, list[str]]) -> list[str]:
    """One phrase per image type that is not read as frames ({".gif": [names]}), for ``unread`` lists."""
    return [f"{plural(len(names), suffix.lstrip('.') + ' file')}: {listed(names)} (frames are {', '.join(sorted(IMAGE_SUFFIXES))})"
            for suffix, names in sorted(names_by_suffix.items())]


@dataclass
class FolderListing:
    """``images``: the frames in natural order (hidden files ignored), each name of an image type that is not a folder:
    one that is not a regular file (a link to a missing file, a FIFO, a device) is skipped when read, with why, and keeps
    its place in time (QA 55: left out in silence, it moved every later frame's time with ``--fps``); ``unread``: what
    looks like frames but is not read, one short phrase per kind (subfolders holding images; images of each other type;
    video files)."""

    images: list[Path]
    unread: list[str]
    irregular: list[str] = field(default_factory=list)  # names in ``images`` that are not regular files
    twins: list[str] = field(default_factory=list)  # "img_01.jpg and img_1.png": names alike but for zeros, case or type
    copies: list[str] = field(default_factory=list)  # "img_5 - Copy.jpg (of img_5.jpg)": named as a file manager's copy
    decimals: list[str] = field(default_factory=list)  # "frame_0.5s.jpg before frame_0.25s.jpg": decimals out of order

    def name_order(self) -> dict[str, list[str]]:
        """What a folder timed by its names' order says of them (:class:`~capsule_triage.frames.SourceInfo`'s fields)."""
        return {"name_twins": self.twins, "name_copies": self.copies, "name_decimals": self.decimals}


def scan_frame_folder(folder: Path) -> FolderListing:
    """One pass over the folder (``os.scandir``: file or folder from the directory entry, no stat per
    name for regular files; a 100,000-image folder was stat-ed twice per name by ``Path`` checks)."""
    from .reader import VIDEO_SUFFIXES  # (reader imports this module)

    folder = Path(folder)
    videos = []
    try:
        with os.scandir(folder) as listing:
            keyed = sorted(((natural_key(e.name), e) for e in listing if not e.name.startswith(".")), key=lambda pair: pair[0])
        entries = [e for _, e in keyed]
        named = [(key, e) for key, e in keyed if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and not _is(e.is_dir)]
        images, irregular = [folder / e.name for _, e in named], [e.name for _, e in named if not _is(e.is_file)]
        twins, copies = twins_and_copies((key, e.name) for key, e in named if e.name not in irregular)
        subfolders, others = [], {}
        for entry in entries:
            suffix = os.path.splitext(entry.name)[1].lower()
            if suffix in OTHER_IMAGE_SUFFIXES and _is(entry.is_file):
                others.setdefault(suffix, []).append(entry.name)
            elif suffix in VIDEO_SUFFIXES and _is(entry.is_file):  # QA 61: a recording beside the frames, unread and unsaid
                videos.append(entry.name)
            elif suffix not in IMAGE_SUFFIXES and _is(entry.is_dir) and os.path.realpath(entry.path) != os.path.realpath(folder):
                try:
                    count = _image_count(entry.path)
                except OSError:  # unreadable: not ours to report
                    continue
                if count:
                    subfolders.append(f"{entry.name}/ ({count})")
    except OSError as exc:
        raise InputError(folder, f"cannot list the folder ({exc.strerror or exc})") from None
    unread = [f"images in {plural(len(subfolders), 'subfolder')}: {listed(subfolders)}"] if subfolders else []
    unread += other_types(others)
    if videos:
        unread.append(f"{plural(len(videos), 'video file')}: {listed(videos)} (a video is a study of its own, not frames of this one)")
    regular = [p.name for p in images if p.name not in irregular]
    return FolderListing(images, unread, irregular, twins, copies, decimals_out_of_order(regular))


def _is(test) -> bool:
    """A directory entry's ``is_dir``/``is_file``, False where it cannot be told (a link looping to itself: ELOOP, which
    failed the whole folder with "cannot list the folder")."""
    try:
        return test()
    except OSError:
        return False


def list_frame_images(folder: Path) -> list[Path]:
    """The frames of a frame folder in natural order (see :func:`scan_frame_folder`)."""
    return scan_frame_folder(folder).images


def read_image_rgb(path: Path, colours: FolderColours | None = None) -> np.ndarray | None:
    """An image file as uint8 RGB [H, W, 3] (grayscale, 16-bit, floating-point and RGBA are converted: see
    :func:`decode_image_rgb`; EXIF orientation applied); None if undecodable. Raises :class:`UnreadableImage` (also for
    a FIFO or a device, which is never opened: reading one could block), OSError (a link to a missing file)."""
    found = path.stat()
    if not stat.S_ISREG(found.st_mode):
        raise UnreadableImage(f"not a regular file ({'a FIFO' if stat.S_ISFIFO(found.st_mode) else 'a device or socket'}): not read")
    return decode_image_rgb(np.fromfile(str(path), dtype=np.uint8), colours, path.name) if found.st_size else None


def probe_image(path: Path) -> np.ndarray | None:
    """:func:`read_image_rgb`, with an image not read taken as undecodable (the folder's read skips it and says why)."""
    try:
        return read_image_rgb(path)
    except (UnreadableImage, OSError):
        return None


MULTI_PAGE_SUFFIXES = frozenset({".tif", ".tiff", ".webp"})  # formats that may hold several pages or frames in one file


def extra_pages(path: Path) -> int:
    """Pages (TIFF) or frames (animated WebP) of an image file beyond the first, which a frame folder does not read;
    0 for other formats or when OpenCV cannot count them."""
    if path.suffix.lower() not in MULTI_PAGE_SUFFIXES:
        return 0
    try:
        with opencv_silenced():
            return max(0, int(cv2.imcount(str(path))) - 1)
    except cv2.error:
        return 0


class UnreadableImage(ValueError):
    """An image file that decodes but whose samples are not taken as a frame's colours; its message says why."""


class ImageTooLarge(UnreadableImage):
    """An image of more than :data:`~capsule_triage.MAX_FRAME_PIXELS`: not decoded (QA 48: a 1.2 MB PNG of 20000 x 20000
    pixels, a decompression bomb, took 2.5 GB and 23 s, and two of them a batch's workers' memory)."""


def check_image_size(data: np.ndarray) -> None:
    """Raise :class:`ImageTooLarge` for a PNG or JPEG whose header states more than the limit (PNG: IHDR, at a fixed place;
    JPEG: its frame header, a few markers in; ~3 us), naming its size. Any other format, or a header not found here, meets
    OpenCV's own check of the same limit (``OPENCV_IO_MAX_IMAGE_PIXELS``, set by the package: :func:`decode_image_rgb`)."""
    head = memoryview(data)
    size = None
    if bytes(head[:8]) == PNG_SIGNATURE and bytes(head[12:16]) == b"IHDR":
        size = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    elif bytes(head[:2]) == b"\xff\xd8":
        size = jpeg_size(head)
    if size is not None and size[0] * size[1] > MAX_FRAME_PIXELS:
        raise ImageTooLarge(f"{size[0]:,} x {size[1]:,} px ({size[0] * size[1] / 1e6:,.0f} MP), over the "
                            f"{MAX_FRAME_PIXELS // 1_000_000} MP a frame may have: not decoded")


class SampleDepth:
    """How a frame folder's 16-bit images are brought to 8 bits, kept across its images so that they all get the same scale.

    A 16-bit PNG or TIFF often holds a camera's 10-, 12- or 14-bit values (0-4,095 for 12 bits) as they came, not
    stretched to 0-65,535 (QA 53: read as 16-bit, a 12-bit export was nearly black, every score fell, 0 events). No
    field says which (a PNG's sBIT chunk, where written, states the precision of values that the PNG standard has
    stretched to 16 bits, and FFmpeg writes it so: rev46), so the depth is the fewest of 10, 12, 14 or 16 bits that hold
    the brightest value seen so far in the folder: an endoscope's light and its highlights reach the top of its range,
    and a dark frame is not brightened on its own. Stretched data reach past 14 bits and are read as 16-bit.

    Attributes:
        bits: the depth so far (0: no 16-bit image yet); ``fixed``: given (a thumbnail's read takes the scoring read's
            final depth), not guessed.
        changes: (first image, depth) for the first 16-bit image and each that raised the depth; the images before a
            raise were read at the smaller depth. For the run's note.
    """

    def __init__(self, bits: int = 0) -> None:
        self.bits, self.fixed = bits, bool(bits)
        self.changes: list[tuple[str, int]] = []

    def scale_for(self, image: np.ndarray, name: str = "") -> float:
        """The factor that brings ``image``'s values (uint16) to 0-255, raising the folder's depth if it needs more bits."""
        if not self.fixed:
            needed = next(bits for bits in (10, 12, 14, 16) if int(image.max()) < 2 ** bits)
            if needed > self.bits:
                self.bits = needed
                self.changes.append((name, needed))
        return 255 / (2 ** self.bits - 1)

    def note(self) -> str | None:
        """What a run says of the depth it guessed, or None when its 16-bit images were read as 16-bit throughout."""
        if not self.changes or self.changes == [self.changes[0][:1] + (16,)]:
            return None
        if len(self.changes) == 1:
            return (f"16-bit images (e.g. {self.changes[0][0]}) hold values only up to {2 ** self.bits - 1:,}: read as "
                    f"{self.bits}-bit data (a camera's, not stretched to 16 bits)")
        steps = ", ".join(f"from {name} on as {bits}-bit" for name, bits in self.changes)
        return (f"16-bit images read at the depth their brightest value so far needed: {steps}; the images before each "
                "change may be too bright (they were read at the smaller depth)")


class FolderColours:
    """What a frame folder's read keeps across its images so that their colours are read alike: the depth of its 16-bit
    images (:class:`SampleDepth`) and the colour profiles it converted to sRGB (:mod:`~capsule_triage.colour_profile`).

    Attributes:
        converted: each profile converted from (its description), with the first image that carried it.
        unusable: the first image whose profile could not be used, and why (its colours were taken as sRGB).
    """

    def __init__(self, bits: int = 0) -> None:
        self.depth = SampleDepth(bits)
        self.converted: dict[str, str] = {}
        self.unusable: str | None = None

    def notes(self) -> list[str]:
        """The Warning: lines of what was guessed: a depth below 16 bits, a profile not used."""
        unusable = self.unusable and (f"{self.unusable}: its colours were taken as sRGB (so were those of any other image "
                                      "carrying it); export the frames in sRGB")
        return [note for note in (self.depth.note(), unusable) if note]

    def profiles(self) -> list[str]:
        """The profiles converted from, for run.json: "ProPhoto RGB (from frame0.png)"."""
        return [f"{profile} (from {name})" for profile, name in self.converted.items()]


def _float_to_uint8(image: np.ndarray) -> np.ndarray:
    """A floating-point image (a float TIFF: values 0-1 by convention) as uint8; NaN (no data, as outside a view) is
    black; values outside 0-1 are not guessed at."""
    image = np.nan_to_num(image, nan=0.0, posinf=np.inf, neginf=-np.inf)
    low, high = float(image.min()), float(image.max())
    if low < -1e-3 or high > 1 + 1e-3:  # inf included
        raise UnreadableImage(f"floating-point samples from {low:.4g} to {high:.4g}, outside the 0-1 a floating-point "
                              "frame holds (a high-dynamic-range or scientific image?): not read; export it as 8- or "
                              "16-bit")
    return cv2.convertScaleAbs(image, alpha=255.0)


def _as_unsigned_16(image: np.ndarray) -> np.ndarray:
    """A signed 16-bit image (some TIFF writers' choice for camera data) as unsigned, if it holds no negative value."""
    if int(image.min()) < 0:
        raise UnreadableImage("signed 16-bit samples below zero (not a picture's brightness): not read; export the "
                              "frames as 8- or 16-bit unsigned")
    return image.view(np.uint16)


# EXIF orientation (1-8) as numpy steps on an image stored [H, W, C]: what OpenCV applies for a decode without alpha.
_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.transpose(1, 0, 2),
           6: lambda a: np.rot90(a, -1), 7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1], 8: lambda a: np.rot90(a)}


def decode_image_rgb(data: np.ndarray, colours: FolderColours | None = None, name: str = "") -> np.ndarray | None:
    """:func:`read_image_rgb` of an image file's bytes (uint8 [n]) already in memory.

    16-bit images are scaled from the bits they use (:class:`SampleDepth`), floating-point ones from 0-1 (NaN black); an
    image with a colour profile other than sRGB is converted to sRGB (:func:`~capsule_triage.colour_profile.to_srgb`);
    a PNG's transparency (an alpha channel or a tRNS chunk) is laid on black, the colour outside an endoscope's field of
    view (under transparent pixels the colour is often left-over). ``colours`` keeps what a folder's images share
    (:class:`FolderColours`; None: this image alone), ``name`` names this one in its notes.

    Raises:
        ImageTooLarge: more than :data:`~capsule_triage.MAX_FRAME_PIXELS` (its header, or OpenCV's own check, says so).
        UnreadableImage: samples that cannot be taken as colours (floating-point values outside 0-1, negative ones).
    """
    if not len(data):
        return None
    whole = memoryview(np.ascontiguousarray(data))
    png = bytes(whole[:8]) == PNG_SIGNATURE
    if png and not png_intact(whole):
        return None  # cut short or damaged: libpng would print its own error line to stderr
    check_image_size(data)
    transparent = png and png_transparent(whole)
    profile = embedded_profile(whole)
    if profile is not None and profile.compressed and (span := png_chunk_span(whole, b"iCCP")):
        data = np.concatenate((data[: span[0]], data[span[1] :]))  # read below; libpng would warn per frame of some
    try:  # with alpha: as stored (OpenCV then applies no EXIF orientation: done below); else gray/palette to RGB
        with opencv_silenced():  # the reader names a damaged image itself
            image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED if transparent else cv2.IMREAD_COLOR_RGB | cv2.IMREAD_ANYDEPTH)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" not in str(exc):
            raise
        raise ImageTooLarge(f"over the {MAX_FRAME_PIXELS // 1_000_000} MP a frame may have: not decoded") from None
    if image is None or image.size == 0:
        return None
    alpha = None
    if transparent:
        if image.ndim == 2 or image.shape[2] < 4:  # a tRNS OpenCV did not expand (grey 16-bit): no alpha to lay
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if image.ndim == 2 or image.shape[2] == 1 else cv2.COLOR_BGR2RGB)
        else:
            image, alpha = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB), image[..., 3:]
        if (orientation := png_exif_orientation(whole)) != 1:
            image = _ORIENT[orientation](image)
            alpha = None if alpha is None else _ORIENT[orientation](alpha)
    if image.dtype == np.int16:
        image = _as_unsigned_16(image)
    if image.dtype == np.uint16:
        colours = colours or FolderColours()
        image = cv2.convertScaleAbs(image, alpha=colours.depth.scale_for(image, name))
        alpha = None if alpha is None else (alpha.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = _float_to_uint8(image)
    elif image.dtype != np.uint8:
        raise UnreadableImage(f"samples of type {image.dtype} (32-bit integers, not 8- or 16-bit, nor 0-1 floating "
                              "point): not read; export the frames as 8- or 16-bit")
    if profile is not None:
        colours = colours or FolderColours()
        try:
            image, converted = to_srgb(np.ascontiguousarray(image), profile)
        except UnusableProfile as exc:
            colours.unusable = colours.unusable or f"{name or 'an image'}: its colour profile {exc}"
        else:
            if converted:
                colours.converted.setdefault(converted, name)
    if alpha is not None and alpha.min() < 255:
        image = (image.astype(np.uint16) * alpha // 255).astype(np.uint8)
    return np.ascontiguousarray(image)
