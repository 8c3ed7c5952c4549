"""A matrix/TRC ICC v2 display profile, written by hand for tests (no profile file ships with the OS images here)."""

from __future__ import annotations

import struct

# ProPhoto RGB (ROMM RGB): its primaries as D50 XYZ colorants, gamma 1.8 (ISO 22028-2); the widest common export space.
PROPHOTO_COLORANTS = ((0.7977, 0.2880, 0.0000), (0.1352, 0.7119, 0.0000), (0.0313, 0.0001, 0.8249))
D50 = (0.9642, 1.0, 0.8249)
# sRGB's primaries as D50 colorants (those of the IEC 61966-2-1 profile) and its tone curve, sampled
SRGB_COLORANTS = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))


def srgb_curve(samples: int = 1024) -> list[float]:
    v = [i / (samples - 1) for i in range(samples)]
    return [x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4 for x in v]


def _s15(values) -> bytes:
    return b"".join(struct.pack(">i", round(v * 65536)) for v in values)


def _pad(tag: bytes) -> bytes:
    return tag + b"\x00" * (-len(tag) % 4)


def matrix_profile(description: str = "ProPhoto RGB (test)", colorants=PROPHOTO_COLORANTS, gamma: float = 1.8,
                   grey: bool = False, curve: list[float] | None = None, omit: tuple[bytes, ...] = (),
                   device_class: bytes = b"mntr") -> bytes:
    """The bytes of an RGB display profile with the given colorants (D50 XYZ of R, G, B) and one gamma (or a sampled
    ``curve``, 0-1 to 0-1); ``grey``: a grey one (its tone curve only); ``omit``: tags left out (a broken profile);
    ``device_class``: another class (b"link": a device link, not an image's)."""
    text = description.encode("ascii") + b"\x00"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4) + bytes(4) + bytes(2) + bytes(1) + bytes(67)
    if curve is None:
        curve = b"curv" + bytes(4) + struct.pack(">I", 1) + struct.pack(">H", round(gamma * 256))
    else:
        curve = b"curv" + bytes(4) + struct.pack(">I", len(curve)) + b"".join(struct.pack(">H", round(v * 65535)) for v in curve)
    tags = [(b"desc", desc), (b"wtpt", b"XYZ " + bytes(4) + _s15(D50)), (b"cprt", b"text" + bytes(4) + b"none\x00")]
    if grey:
        tags.append((b"kTRC", curve))
    else:
        tags += [(name, b"XYZ " + bytes(4) + _s15(c)) for name, c in zip((b"rXYZ", b"gXYZ", b"bXYZ"), colorants)]
        tags += [(name, curve) for name in (b"rTRC", b"gTRC", b"bTRC")]
    tags = [(name, data) for name, data in tags if name not in omit]
    table, body, offset = b"", b"", 128 + 4 + 12 * len(tags)
    for name, data in tags:
        data = _pad(data)
        table += name + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + device_class + (b"GRAY" if grey else b"RGB ") + b"XYZ " + bytes(12) + b"acsp"
              + bytes(4) + bytes(4) + bytes(4) + bytes(4) + bytes(8) + struct.pack(">I", 0) + _s15(D50) + bytes(4) + bytes(16)
              + bytes(28))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body
