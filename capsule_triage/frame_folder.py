"""A frame folder's listing and images: which files are its frames, in which order, what it leaves
unread, and one image decoded to RGB.

A frame folder is the images directly inside one folder, in natural name order ("frame2" before
"frame10"). Images in its subfolders are not its frames (``triage batch`` treats such a subfolder as a
study of its own), and files of image types OpenCV is not asked to read are not frames either: both
are listed in :attr:`FolderListing.unread`, so a run can say what it left out instead of scoring half
a study in silence (and, at a fixed frame rate, shifting every later frame's time).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
# Image types an export may hold that are not read as frames; named when found, never silently dropped.
OTHER_IMAGE_SUFFIXES = frozenset({".gif", ".heic", ".heif", ".avif", ".jp2", ".j2k", ".jxl", ".dcm"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def natural_key(name: str) -> list:
    """Sort key so that ``frame2`` comes before ``frame10``; names are compared in Unicode NFC, so
    "Läsion_07" copied from a Mac (decomposed, NFD) sorts with "Läsion_06" written elsewhere (NFC)."""
    return [int(part) if part.isdigit() else part.casefold() for part in re.split(r"(\d+)", unicodedata.normalize("NFC", name))]


def _visible_images(folder: Path, suffixes: frozenset[str]) -> list[Path]:
    return [p for p in folder.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith(".")]


@dataclass
class FolderListing:
    """``images``: the frames in natural order (hidden files and non-regular files such as FIFOs or
    dangling symlinks ignored: reading those could block or fail); ``unread``: what looks like frames
    but is not read, one phrase each (subfolders holding images, images of other types)."""

    images: list[Path]
    unread: list[str]


def scan_frame_folder(folder: Path) -> FolderListing:
    try:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
        images = sorted((p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=lambda p: natural_key(p.name))
        unread = []
        for entry in sorted(entries, key=lambda p: natural_key(p.name)):
            if entry.is_dir():
                try:
                    count = len(_visible_images(entry, IMAGE_SUFFIXES))
                except OSError:
                    continue
                if count:
                    unread.append(f"{entry.name}/ ({count} images in a subfolder)")
            elif entry.suffix.lower() in OTHER_IMAGE_SUFFIXES:
                unread.append(f"{entry.name} (a {entry.suffix.lower().lstrip('.')} image; frames are {', '.join(sorted(IMAGE_SUFFIXES))})")
    except OSError as exc:
        raise InputError(folder, f"cannot list the folder ({exc.strerror or exc})") from None
    return FolderListing(images, unread)


def list_frame_images(folder: Path) -> list[Path]:
    """The frames of a frame folder in natural order (see :func:`scan_frame_folder`)."""
    return scan_frame_folder(folder).images


def read_image_rgb(path: Path) -> np.ndarray | None:
    """An image file as uint8 RGB [H, W, 3] (grayscale, 16-bit and RGBA are converted; EXIF
    orientation applied); None if undecodable."""
    data = np.fromfile(str(path), dtype=np.uint8) if path.stat().st_size else None
    if data is None:
        return None
    if data[:8].tobytes() == _PNG_SIGNATURE and b"IEND" not in data[-32:].tobytes():
        return None  # cut short (an interrupted copy): libpng would print its own error line to stderr
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # converts gray/RGBA to BGR and 16-bit to 8-bit
    if image is None or image.size == 0:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
