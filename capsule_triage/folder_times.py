"""Frame times of a frame folder: a constant rate (``--fps``), or a timestamp CSV (``--timestamps``, or
the folder's own ``timestamps.csv``) with columns ``filename,pts_seconds``, one row per image, read strictly: a frame folder's times place
its events, so a row that cannot be read, a name listed twice or two images at one time (QA 77) is
refused, naming the CSV and the row, before any frame is scored. The CSV's times are the authority
on order: frames are ranked in time order whatever their names (a camera counter that wraps from
IMG_9999 to IMG_0000 keeps its frames in place)."""

from __future__ import annotations

import csv
import math
import numbers
import os
import re
import unicodedata
from dataclasses import replace
from pathlib import Path

import numpy as np

from .errors import InputError

COLUMNS = ("filename", "pts_seconds")
MIN_FPS = 0.001  # frames per second: one frame per 1,000 s (a rate near 0 made times overflow to infinity: rev77); the
# least --fps, a preset's folder_fps and RunOptions/ReadOptions.folder_fps take alike (QA 97 #4: the library took 1e-6)
TIMESTAMPS_FILE = "timestamps.csv"  # a frame folder's own times: used when no --timestamps names a CSV


def own_timestamps(folder: Path) -> Path | None:
    """The folder's own timestamp CSV (``timestamps.csv`` inside it, the name in any case: "Timestamps.CSV"
    from a Windows export is found on every file system alike), if it has one. An export that writes its
    frames' times beside them is timed by them in ``triage run`` and ``triage batch`` alike (a batch has no
    per-study ``--timestamps``; QA 31: its frame folders were all read at one rate). An entry of that name
    that is not a readable file (a broken link, a folder) is still returned: reading it names the problem
    (QA 36: the folder was read at the preset's rate in silence).

    Raises:
        InputError: two entries of that name in different case (which is meant is not for us to guess).
    """
    try:
        with os.scandir(folder) as listing:
            found = sorted(e.name for e in listing if e.name.casefold() == TIMESTAMPS_FILE)
    except OSError:  # a folder that cannot be searched: reading it names the problem
        return None
    if len(found) > 1:
        raise InputError(Path(folder), f"holds {' and '.join(found)}: keep one timestamp CSV")
    return Path(folder).absolute() / found[0] if found else None


def with_own_timestamps(read, source: Path, *, use: bool = True):
    """``(read, note)``: ``read`` (a :class:`~capsule_triage.reader.ReadOptions`) timed by ``source``'s own
    timestamps.csv when ``source`` is a frame folder that has one and no CSV was named (``--timestamps`` or the
    preset), and ``use``; else ``read`` as it is, with a ``Warning:`` line when the folder's CSV is left unused:
    not ``use``d (``--fps``), or without the columns (a timing file of another format, which a folder read at
    ``--fps`` before this CSV was looked for may hold: review rev31), or another CSV named (``--timestamps``)."""
    if read.timestamps_csv is not None:  # QA 77 #7: another CSV times the folder; its own was left unused in silence
        return read, _named_over_own(source, Path(read.timestamps_csv)) if use else None
    own = own_timestamps(source) if Path(source).is_dir() else None
    if own is None:
        return read, None
    if not use:
        return read, f"{own}: not used: --fps {read.folder_fps:g} reads the frames at a fixed rate"
    if not _has_columns(own):
        return read, (f"{own}: not used as the frames' times (it has no header with columns {','.join(COLUMNS)}): "
                      f"read at {read.folder_fps:g} frames/s")
    return replace(read, timestamps_csv=own), None


def _named_over_own(source: Path, named: Path) -> str | None:
    """The Warning: line when a named CSV times a folder that holds a timestamps.csv of its own (of our columns)."""
    try:
        own = own_timestamps(source) if Path(source).is_dir() else None
    except InputError:  # two of them in different case: neither is used, and reading the named one is what counts
        return None
    if own is None or not _has_columns(own) or own.resolve() == named.resolve():
        return None
    return f"{own}: not used: {named} times the frames"


def times_frames(path: Path) -> bool:
    """Whether a folder's own ``timestamps.csv`` at ``path`` times its frames (its header names our columns), so that
    ``--fps`` does not read the folder (its batch print leaves ``--fps`` out: rev88 #6)."""
    return _has_columns(path)


def _has_columns(path: Path) -> bool:
    """Whether a CSV's first row names the columns, separated by commas, semicolons or tabs (a European Excel's
    "filename;pts_seconds" is ours, and reading it says what is wrong: review rev32); a file that cannot be read
    counts as ours too."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            header = fh.readline()
    except (OSError, UnicodeDecodeError):
        return True
    return set(COLUMNS) <= {h.strip().strip('"').casefold() for h in re.split(r"[,;\t]", header)}


def timestamps_origin(read_csv: str | Path, source: Path, named: Path | None) -> str:
    """Where a frame folder's CSV came from, for run.json: "--timestamps", "folder" or "preset"."""
    if named is not None:
        return "--timestamps"
    return "folder" if Path(read_csv).absolute().parent == Path(source).absolute() else "preset"


def folder_times(folder: Path, images: list[Path], *, fps: float, timestamps_csv: Path | None) -> tuple[np.ndarray, list[str]]:
    """float64 [len(images)] times in seconds, for ``images`` in their (natural) order, and the names
    the CSV lists that are not in the folder (frames the export timed but did not write), in CSV order.

    Raises:
        InputError: a non-positive or non-finite ``fps``; a CSV that is missing, unreadable, lacks the
            columns, has a row without a name or a finite time, lists a name twice, misses an image,
            or gives two images the same time.
    """
    if timestamps_csv is None:
        if not (isinstance(fps, numbers.Real) and not isinstance(fps, bool) and math.isfinite(fps) and fps >= MIN_FPS):  # QA 105 #1: np.float32(4)
            raise InputError(folder, f"--fps must be a finite number >= {MIN_FPS:g}, got {fps}")
        return np.arange(len(images), dtype=np.float64) / fps, []
    times = read_timestamp_csv(Path(timestamps_csv))
    path = Path(timestamps_csv)
    keys = [_nfc(p.name) for p in images]  # QA 36: a Mac's decomposed "Läsion_0.png" against a CSV written elsewhere
    missing = [p.name for p, key in zip(images, keys) if key not in times]
    if missing:
        cased = {name.casefold(): name for name in times}.get(_nfc(missing[0]).casefold())  # QA 77 #8
        hint = (" (the CSV's names carry a folder: give the image names alone)" if any("/" in n or "\\" in n for n in times) else
                f" (the CSV lists {cased!r}: names must match the files' exactly, case too)" if cased else "")
        raise InputError(path, f"no timestamp for {len(missing)} image(s), e.g. {missing[0]!r}{hint}")
    seconds = np.array([times[key][0] for key in keys], dtype=np.float64)
    if len(seconds) > 1 and np.ptp(seconds) == 0:
        raise InputError(path, f"all {len(seconds)} images have the same time ({_seconds(seconds[0])} s): the study has no duration")
    values, counts = np.unique(seconds, return_counts=True)
    if (counts > 1).any():  # QA 77 #1: a clock that restarted interleaved two halves; times in whole seconds merged frames
        tied = int(counts[counts > 1].sum())
        at = int(np.argmax(counts > 1))
        pair = [images[i].name for i in np.flatnonzero(seconds == values[at])[:2]]
        if _nfc(pair[0]) == _nfc(pair[1]):  # one row times both (rev77: "Läsion.png and Läsion.png at 0 s", own times asked)
            raise InputError(folder, f"holds two images named {pair[0]!r} but for Unicode normalisation (one copied from a "
                                     f"Mac?), which one row of {path.name} times alike: keep one")
        raise InputError(path, f"{tied} of the {len(seconds)} images share their time with another (e.g. {pair[0]} and {pair[1]} at "
                               f"{_seconds(values[at])} s), so their order in time is unknown and the frames at one time would be scored as "
                               "one moment (a clock that restarted? times rounded to whole seconds?): give each image its own time, "
                               "or read the frames at a fixed rate in name order with --fps F instead of the CSV")
    names = set(keys)
    return seconds, sorted((name for name in times if name not in names), key=lambda name: times[name][1])


def _seconds(value: float) -> str:
    """A CSV time as written, to the microsecond (``:g`` cut 28800.25 to 28800.2: rev77)."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def without_untimed_irregular(listing, timestamps_csv: Path | None):
    """``listing`` (a :class:`~capsule_triage.frame_folder.FolderListing`) without the entries that are not regular files
    (a broken link, a FIFO) and that ``timestamps_csv`` does not time: a frame folder timed by name keeps every other
    frame's time without them, so such a stray is left out and named, not a reason to refuse the study (review rev50)."""
    if timestamps_csv is None or not listing.irregular:
        return listing
    timed = {_nfc(name) for name in read_timestamp_csv(Path(timestamps_csv))}
    stray = [name for name in listing.irregular if _nfc(name) not in timed]
    if stray:
        listing.images = [p for p in listing.images if p.name not in set(stray)]
        listing.unread.append(f"{len(stray)} not regular file(s) that {Path(timestamps_csv).name} does not time: {', '.join(stray[:3])}")
    return listing


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def read_timestamp_csv(path: Path) -> dict[str, tuple[float, int]]:
    """{filename: (seconds, CSV row number)} from a timestamp CSV (UTF-8, a BOM allowed)."""
    if not path.is_file():
        what = ("is a folder, not a timestamp CSV" if path.is_dir() else
                f"is a symbolic link to {os.readlink(path)}, which does not exist" if path.is_symlink() else "timestamp CSV not found")
        raise InputError(path, what)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            if not set(COLUMNS) <= {h.casefold() for h in header}:
                raise InputError(path, f"timestamp CSV needs a header row with columns filename,pts_seconds, separated by commas "
                                       f"(found {header or 'no header'})")
            reader.fieldnames = _column_names(path, header)
            times: dict[str, tuple[float, int]] = {}
            for number, row in enumerate(reader, start=2):
                name, text = (row.get("filename") or "").strip(), (row.get("pts_seconds") or "").strip()
                if not name:
                    raise InputError(path, f"row {number}: no filename")
                try:
                    seconds = float(text)
                except ValueError:
                    raise InputError(path, f"row {number}: pts_seconds {text!r} of {name} is not a number") from None
                if not math.isfinite(seconds):
                    raise InputError(path, f"row {number}: pts_seconds of {name} must be finite, got {text!r}")
                name = _nfc(name)
                if name in times:
                    raise InputError(path, f"{name} is listed twice (rows {times[name][1]} and {number})")
                times[name] = (seconds, number)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise unreadable_csv(path, exc) from None
    return times


def _column_names(path: Path, header: list[str]) -> list[str]:
    """``header`` with our columns named as :data:`COLUMNS` whatever their case (QA 61: an export's "Filename,PTS_Seconds"
    left the folder unused); where both cases are there, the lower-case one is ours as before, and two others refused
    (rev55: the last of them won, silently)."""
    names = list(header)
    for column in COLUMNS:
        if column in header:
            continue
        alike = [i for i, h in enumerate(header) if h.casefold() == column]
        if len(alike) > 1:
            raise InputError(path, f"timestamp CSV has {len(alike)} columns named {column} in other cases "
                                   f"({', '.join(header[i] for i in alike)}): keep one")
        names[alike[0]] = column
    return names


def unreadable_csv(path: Path, exc: Exception) -> InputError:
    """The one error for a timestamp CSV that cannot be read, in ``triage run`` and in a batch's hashing alike
    (QA 36 L9: the batch said "Permission denied" alone)."""
    if isinstance(exc, UnicodeDecodeError):  # QA 61: Python's codec message, for a CSV saved as UTF-16 ("Unicode text")
        return InputError(path, "the timestamp CSV is not UTF-8 text: save it as CSV UTF-8")
    return InputError(path, f"cannot read the timestamp CSV ({getattr(exc, 'strerror', None) or exc})")
