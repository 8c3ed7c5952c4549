"""What an image file's own bytes say before it is decoded: a PNG's chunks (whether they are intact, transparency, EXIF
orientation), a JPEG's segments (its size), a TIFF-structured block's tags (a TIFF file, EXIF), and the ICC colour
profile each format embeds where it keeps it (a PNG's iCCP chunk, a JPEG's APP2 ICC_PROFILE segments, a WebP's ICCP
chunk, a TIFF's tag 34675).

OpenCV decodes the pixels but does not hand these over (nor apply a profile), and reads no EXIF orientation
when asked for an image's alpha channel; these few byte walks fill the gaps (microseconds a frame: a profile is
found and copied here, and read, inflated and checked in :mod:`~capsule_triage.colour_profile`, once per profile).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_ICC_TAG, _TIFF_ORIENTATION_TAG = 34675, 0x0112


def png_chunks(data: memoryview) -> Iterator[tuple[bytes, memoryview]]:
    """A PNG's chunks before its pixel data (IHDR ... up to the first IDAT), as (kind, body)."""
    at = 8
    while at + 8 <= len(data):
        length, kind = int.from_bytes(data[at : at + 4], "big"), bytes(data[at + 4 : at + 8])
        if kind in (b"IDAT", b"IEND"):
            return
        yield kind, data[at + 8 : at + 8 + length]
        at += 12 + length


def png_intact(data: memoryview) -> bool:
    """Whether a PNG's chunks are all there up to IEND, its critical ones (IHDR, PLTE, IDAT, IEND:
    an upper-case first letter) each with its CRC. libpng prints its own line to stderr for a damaged
    one ("libpng error: IDAT: CRC error" for a flipped byte, "PNG input buffer is incomplete" for a
    file cut short by an interrupted copy), around the run's own lines; the reader counts such a
    frame as undecodable itself. A damaged ancillary chunk (tEXt, ...) does not stop the image from
    decoding. CRCs of a 1 MB frame: ~0.1 ms."""
    at = 8
    while at + 12 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        end = at + 8 + length
        if end + 4 > len(data):
            return False
        critical = 65 <= data[at + 4] <= 90
        if critical and zlib.crc32(data[at + 4 : end]) != int.from_bytes(data[end : end + 4], "big"):
            return False
        if data[at + 4 : at + 8] == b"IEND":
            return True  # data an exporter appends after it is fine
        at = end + 4
    return False


def png_chunk_span(data: memoryview, wanted: bytes) -> tuple[int, int] | None:
    """Where a chunk before a PNG's pixel data lies, [start, end) over its length, kind, body and CRC, or None."""
    at = 8
    for kind, body in png_chunks(data):
        if kind == wanted:
            return at, at + 12 + len(body)
        at += 12 + len(body)
    return None


def png_transparent(data: memoryview) -> bool:
    """Whether a PNG may have transparent pixels: an alpha channel (colour type 4 or 6) or a tRNS chunk (a palette's
    alphas, or one grey or RGB colour that is transparent: what PNG optimisers write for an RGBA image)."""
    return len(data) > 25 and (data[25] in (4, 6) or any(kind == b"tRNS" for kind, _ in png_chunks(data)))


_TIFF_TYPE_SIZES = {1: 1, 2: 1, 6: 1, 7: 1, 3: 2, 8: 2, 4: 4, 9: 4, 11: 4, 13: 4, 5: 8, 10: 8, 12: 8, 16: 8, 17: 8, 18: 8}


def tiff_tag(block: memoryview, tag: int) -> tuple[int, memoryview] | None:
    """(type, value bytes) of a tag in the first directory (IFD0) of a TIFF-structured block (a TIFF file, EXIF), or
    None. The bytes may be short of what the tag states when it points past the block's end (a damaged file)."""
    order = "little" if bytes(block[:2]) == b"II" else "big"
    ifd = int.from_bytes(block[4:8], order)
    for entry in range(int.from_bytes(block[ifd : ifd + 2], order)):
        at = ifd + 2 + 12 * entry
        if int.from_bytes(block[at : at + 2], order) == tag:
            kind, count = int.from_bytes(block[at + 2 : at + 4], order), int.from_bytes(block[at + 4 : at + 8], order)
            size = count * _TIFF_TYPE_SIZES.get(kind, 1)
            if size <= 4:
                return kind, block[at + 8 : at + 8 + size]
            offset = int.from_bytes(block[at + 8 : at + 12], order)
            return kind, block[offset : offset + size]
    return None


def png_exif_orientation(data: memoryview) -> int:
    """The EXIF orientation (1-8) a PNG's eXIf chunk states; 1 (as stored) when none or unreadable."""
    try:
        exif = next((body for kind, body in png_chunks(data) if kind == b"eXIf"), None)
        if exif is None or bytes(exif[:2]) not in (b"II", b"MM"):
            return 1
        found = tiff_tag(exif, _TIFF_ORIENTATION_TAG)
        orientation = int.from_bytes(found[1], "little" if bytes(exif[:2]) == b"II" else "big") if found else 1
        return orientation if 1 <= orientation <= 8 else 1  # a SHORT by the standard; a LONG read whole alike
    except (IndexError, ValueError):
        return 1


@dataclass(frozen=True)
class EmbeddedProfile:
    """An ICC profile as the file keeps it: ``data``, compressed with zlib when ``compressed`` (a PNG's iCCP), inflated
    by its reader (:mod:`~capsule_triage.colour_profile`, with a limit) once per profile rather than here per frame."""

    data: bytes
    compressed: bool = False


def embedded_profile(data: memoryview) -> EmbeddedProfile | None:
    """The ICC profile an image file's bytes embed (PNG, JPEG, WebP, TIFF) as stored, or None: none, or another
    format. What is found is not checked here: a damaged one is the reader's to name."""
    try:
        if bytes(data[:8]) == PNG_SIGNATURE:
            return _png_profile(data)
        if bytes(data[:2]) == b"\xff\xd8":
            return _jpeg_profile(data)
        if bytes(data[:4]) == b"RIFF" and bytes(data[8:12]) == b"WEBP":
            return _webp_profile(data)
        if bytes(data[:4]) in (b"II*\x00", b"MM\x00*"):
            found = tiff_tag(data, _TIFF_ICC_TAG)
            return EmbeddedProfile(bytes(found[1])) if found is not None else None
    except (IndexError, ValueError):  # a directory or chunk list that runs off the end: no profile found in it
        return None
    return None


def _png_profile(data: memoryview) -> EmbeddedProfile | None:
    for kind, body in png_chunks(data):
        if kind == b"iCCP":
            name_end = bytes(body[:80]).find(b"\x00")  # a name of 1-79 bytes, then the compression method (0: zlib)
            return EmbeddedProfile(bytes(body[name_end + 2 :]) if name_end > 0 else b"", compressed=True)
        if kind == b"sRGB":  # says sRGB in so many words
            return None
    return None


def jpeg_segments(data: memoryview) -> Iterator[tuple[int, memoryview]]:
    """A JPEG's marker segments before its pixel data (the first scan), as (marker, body after the length field)."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length (TEM, RSTn)
            at += 2
        elif marker in (0xD9, 0xDA):  # the end, or the pixel data
            return
        else:
            length = int.from_bytes(data[at + 2 : at + 4], "big")
            yield marker, data[at + 4 : at + 2 + length]
            at += 2 + length


_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})  # a JPEG's frame header


def jpeg_size(data: memoryview) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header (a few segments in), or None where none comes before the pixel data."""
    header = next((body for marker, body in jpeg_segments(data) if marker in _SOF_MARKERS), None)
    if header is None or len(header) < 5:  # sample precision, height, width
        return None
    return int.from_bytes(header[3:5], "big"), int.from_bytes(header[1:3], "big")


def _jpeg_profile(data: memoryview) -> EmbeddedProfile | None:
    parts: dict[int, bytes] = {}
    count = 0
    for marker, body in jpeg_segments(data):
        if marker == 0xE2 and bytes(body[:12]) == b"ICC_PROFILE\x00" and len(body) >= 14:
            parts[body[12]] = bytes(body[14:])  # sequence number (from 1), count, data
            count = body[13]
    if not parts:
        return None
    if sorted(parts) != list(range(1, count + 1)):  # a segment missing: what is left is not the profile
        return EmbeddedProfile(b"")
    return EmbeddedProfile(b"".join(parts[k] for k in sorted(parts)))


def _webp_profile(data: memoryview) -> EmbeddedProfile | None:
    at = 12
    while at + 8 <= len(data):
        size = int.from_bytes(data[at + 4 : at + 8], "little")
        if bytes(data[at : at + 4]) == b"ICCP":
            return EmbeddedProfile(bytes(data[at + 8 : at + 8 + size]))
        at += 8 + size + (size & 1)
    return None
