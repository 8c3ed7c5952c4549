"""What a frame folder's image names say of their order: natural order ("frame2" before "frame10", names compared in
Unicode NFC), names alike but for zeros, case, type or Unicode form (twins, whose order in time is a guess), a file
manager's copies, and decimal numbers that natural order reads as two; and the phrases a run lists them in."""

from __future__ import annotations

import os
import re
import unicodedata


def natural_key(name: str) -> tuple[list, str]:
    """Sort key so that ``frame2`` comes before ``frame10``; names are compared in Unicode NFC, so
    "Läsion_07" copied from a Mac (decomposed, NFD) sorts with "Läsion_06" written elsewhere (NFC).
    Names equal that way ("Frame1"/"frame1", NFC/NFD twins, "img_01"/"img_1") are ordered by the name
    itself: a total order, so frames, classes and splits never follow a folder's listing order or
    Python's string hashing (QA: the same frames trained different models)."""
    parts = [int(part) if part.isdecimal() else part.casefold() for part in re.split(r"(\d+)", unicodedata.normalize("NFC", name))]
    return parts, name


def listed(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def decimals_out_of_order(names: list[str]) -> list[str]:
    """["a before b"]: the first pair of ``names`` (in natural order) that reading their decimal numbers as decimals
    would swap (QA 77 #4: "frame_0.5s" goes before "frame_0.25s", 25 being more than 5; "frame_0s" after
    "frame_0.75s"). Natural order stays (a name such as "study_1.10" may number, not measure); the run says so."""
    if not any(DECIMAL.search(name) for name in names):
        return []

    def decimal_key(name: str) -> list:
        return [float(p) if p[:1].isdecimal() else p.casefold() for p in DECIMAL_SPLIT.split(unicodedata.normalize("NFC", name)) if p]

    keys = [decimal_key(name) for name in names]
    for i in range(len(names) - 1):
        try:
            if keys[i + 1] < keys[i]:
                return [f"{names[i]} before {names[i + 1]}"]
        except TypeError:  # a number against a word at the same place: not comparable as decimals
            continue
    return []


DECIMAL = re.compile(r"\d\.\d")  # a name with a decimal number in it ("frame_0.25s"), which natural order reads as two
DECIMAL_SPLIT = re.compile(r"(\d+\.\d+|\d+)")
# A file manager's copy of a file, ending its stem (casefolded; a copy of a copy ends twice): Windows' "x - Copy",
# "x - Copy (2)", "x (1)"; macOS's "x copy", "x copy 2"; GNOME's "x (copy)", "x (another copy)", "x (3rd copy)"; "x - Kopie"
COPY_ENDING = re.compile(r"(?: - (?:copy|kopie)(?: \(\d+\))?| copy(?: \d+)?| \(\d+\)| \((?:another |\d+(?:st|nd|rd|th) )?copy\))+$")


def twins_and_copies(keyed_names) -> tuple[list[str], list[str]]:
    """(groups of image names, in natural order, that differ only in leading zeros, case, image type or Unicode form, "img_01.png and
    img_1.jpg": their order is by name, not by time (QA 61); images named as a file manager's copy of another image,
    "img_5 - Copy.jpg (of img_5.jpg)": scored as frames of their own, every later frame a period late (QA 77 #5)).
    ``keyed_names``: (natural_key(name), name) pairs. A copy's ending counts only beside the name without it ("IMG
    (1).jpg" alone is a name)."""
    groups: dict[tuple, list[str]] = {}
    endings = []
    for (parts, _), name in keyed_names:
        suffix = os.path.splitext(name)[1].casefold()
        stem = (*parts[:-1], parts[-1][:-len(suffix)]) if suffix and isinstance(parts[-1], str) else tuple(parts)
        groups.setdefault(stem, []).append(name)
        own = os.path.splitext(unicodedata.normalize("NFC", name))[0].casefold()
        if (base := COPY_ENDING.sub("", own)) != own:
            endings.append((tuple(natural_key(base)[0]), name))
    copies = [f"{name} (of {groups[base][0]})" for base, name in endings if base in groups]
    return [_shown(names) for names in groups.values() if len(names) > 1], copies


def _shown(names: list[str]) -> str:  # QA 109 #3: names printing alike (composed, decomposed as a Mac's) told apart
    def form(n: str) -> str:  # rev100 #7: a name in neither form (mixed, or U+212B's Angstrom sign) by its code points
        return next((f for f in ("NFC", "NFD") if unicodedata.is_normalized(f, n)), ascii(n))
    alike = [sum(unicodedata.normalize("NFC", m) == unicodedata.normalize("NFC", n) for m in names) > 1 for n in names]
    return " and ".join(n + (f" ({form(n)})" if a else "") for n, a in zip(names, alike))
