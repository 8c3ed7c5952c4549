"""Labelled image sets for training and evaluation.

A data source is one of:
* a manifest CSV with columns ``path,label`` and optionally a group column (``group``, ``patient``,
  ``subject`` or ``near_dup_group``: frames that must stay on one side of a split) and ``split``
  (``train``/``val``/``test``; ``validation``/``valid``/``dev`` mean ``val``). Paths are relative to
  the CSV's folder. A folder holding ``manifest.csv`` is read through that manifest.
* an image-folder tree: one sub-folder per class (images anywhere below it), optionally under split
  folders ``train/``, ``val/``, ``test/`` (any case; ``training``, ``valid``, ``validation``, ``dev``,
  ``testing`` too). A folder tree has no groups: every image is its own group. Folders and images
  of segmentation masks or annotations (``masks_bleeding/``, ``bleeding/Annotations/``,
  ``Ground Truth/``, ``0_mask.png``: public datasets ship them beside or inside the class folders)
  are neither a class nor frames; they, images outside the class folders, empty class folders and
  image types that are not read are listed in :attr:`LabelledSource.unread`, so training and
  evaluation can say what they left out.

Validation frames come from the manifest's ``val`` split when it has one; otherwise
:func:`capsule_triage.splits.assign_validation` moves whole groups of the training pool (``train`` or unassigned rows) to
``val``, stratified by the groups' majority label, deterministically from a seed. ``test`` rows are
never used for training.

The images themselves are loaded by :mod:`capsule_triage.stills`.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from .errors import InputError
from .frame_folder import IMAGE_SUFFIXES, OTHER_IMAGE_SUFFIXES, listed, natural_key, other_types, plural
from .manifest_columns import SPLIT_ALIASES, group_column, named_as_we_read, unread_split_column  # noqa: F401 - re-exported

SPLIT_FOLDERS = ("train", "val", "test")
MANIFEST_NAME = "manifest.csv"
NORMAL_NAMES = ("normal", "negative", "healthy", "benign", "background")
# Folder names of masks and annotations, as a word of the name: "masks_bleeding", "Annotations", "Ground Truth", "gt".
# An image named as a mask ("0_mask.png", "mask_12.jpg"); not "gt"/"annotation", words frame exports use too ("frame_gt_001").
MASK_FILE = re.compile(r"(?:^|[^a-z0-9])masks?(?:[^a-z0-9]|$)")
MASK_FOLDER = re.compile(r"(?:^|[^a-z0-9])(?:masks?|annotations?|segmentations?|ground[ _-]?truths?|gt)(?:[^a-z0-9]|$)")


@dataclass(frozen=True)
class Sample:
    """One labelled image.

    Attributes:
        path: image file.
        label: class name.
        group: leakage unit (patient, subject, near-duplicate run); the path when none is given.
        split: "train", "val", "test" or "" (unassigned: part of the training pool).
    """

    path: Path
    label: str
    group: str
    split: str


class LabelledSource(NamedTuple):
    """What :func:`read_samples` found.

    Attributes:
        samples: the labelled images.
        group_column: the manifest's group column, or None.
        unread: what a folder tree holds that is not read as labelled frames, one short phrase per kind
            (mask or annotation folders and images, images outside the class folders, empty class
            folders, image types not read).
        notes: how the tree was read where a user may have meant otherwise (a class folder made of
            several image folders, as HyperKvasir's lower-gi-tract/pathological-findings/polyps/).
    """

    samples: list[Sample]
    group_column: str | None
    unread: list[str]
    notes: list[str] = []

    def messages(self) -> list[str]:
        """What training and evaluation say of the data, one line each: what is not read, then the notes."""
        return ([f"not read: {'; '.join(self.unread)}"] if self.unread else []) + self.notes


def read_samples(data: str | Path) -> LabelledSource:
    """All samples of a manifest CSV or image-folder tree.

    Raises:
        InputError: missing source, unreadable manifest, missing columns or files, no images.
    """
    data = Path(data)
    if data.is_dir() and (data / MANIFEST_NAME).is_file():
        samples, group = _read_manifest(data / MANIFEST_NAME)
        return _named_in_utf8(LabelledSource(samples, group, [], _unlisted(data, samples) + _ungrouped(samples, group)))
    if data.is_file():
        samples, group = _read_manifest(data)
        return _named_in_utf8(LabelledSource(samples, group, [], _ungrouped(samples, group)))
    if data.is_dir():
        return _named_in_utf8(_read_tree(data))
    raise InputError(data, "no such manifest CSV or image folder")


def _ungrouped(samples: list[Sample], group: str | None) -> list[str]:
    """A note when rows of a manifest with a group column leave it blank (QA 69 #9: each such image was its own group,
    so a patient's frames without the id could fall on both sides of a split, unsaid)."""
    blank = [s for s in samples if s.group == str(s.path)] if group else []
    return [f"{plural(len(blank), 'row')} with no {group} (e.g. {blank[0].path.name}): each such image is its own group, so "
            f"frames of one {group} can fall on both sides of a split"] if blank else []


def _unlisted(folder: Path, samples: list[Sample]) -> list[str]:
    """A note when a folder read as the :data:`MANIFEST_NAME` in it holds images that manifest does not list (QA 69 #7:
    frames added to the class folders later were never read, unsaid); masks and hidden files are not counted."""
    listed_paths = {s.path for s in samples}
    missing = [p for p in _images_below(folder, _Unread(folder)) if _absolute(p) not in listed_paths]
    if not missing:
        return []
    return [f"read as {folder / MANIFEST_NAME}: {plural(len(missing), 'image')} below {folder} {'is' if len(missing) == 1 else 'are'} "
            f"not listed in it and not read (e.g. {missing[0].relative_to(folder)}): list them there, or move it away to read "
            "the folder tree"]


def _named_in_utf8(source: LabelledSource) -> LabelledSource:
    """``source`` once every image path is UTF-8 (QA 55: another encoding's name failed eval after its scoring)."""
    for sample in source.samples:
        try:
            str(sample.path).encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(sample.path, "its name is not UTF-8 text (written on a system with another encoding?), which "
                                          "the tables written from it cannot hold: rename it, e.g. with convmv") from None
    return source


_LINE = "\0line"  # key of a manifest row's line number while it is read (no CSV header holds a NUL)


def _read_manifest(path: Path) -> tuple[list[Sample], str | None]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # Excel's "CSV UTF-8" starts with a BOM
            reader = csv.DictReader(fh)
            reader.fieldnames = named_as_we_read(reader.fieldnames or [])
            rows = [{**row, _LINE: reader.line_num} for row in reader]  # the file's own line (blank lines are skipped)
            header = len(reader.fieldnames)  # as written: names may repeat ('path,label,,')
    except UnicodeDecodeError:  # QA 56 #12: the decoder's position is within its chunk: find the line
        if path.read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff"):  # QA 89 #5: Excel's "Unicode Text" was called Latin-1
            raise InputError(path, "is UTF-16 text (Excel: Unicode Text), not UTF-8; save it as UTF-8 (Excel: CSV UTF-8)") from None
        line = next(n for n, raw in enumerate(path.read_bytes().splitlines(), 1) if not _is_utf8(raw))
        raise InputError(path, f"line {line} is not UTF-8 text (a Latin-1 or Windows-1252 file?); save it as UTF-8 "
                               "(Excel: CSV UTF-8)") from None
    except (OSError, csv.Error) as exc:
        raise InputError(path, f"cannot read manifest CSV ({exc})") from None
    columns = set(reader.fieldnames) - {""}
    if not {"path", "label"} <= columns:
        separated = next((f" (separated by {sep!r}? a manifest is comma-separated)" for sep in ";\t" if any(sep in c for c in columns)), "")
        raise InputError(path, f"manifest needs columns path,label (found {sorted(columns) or 'an empty file'}){separated}")
    if not rows:
        raise InputError(path, "manifest lists no images (a header only)")
    group_col = group_column(columns)
    if problem := unread_split_column(columns, rows, group_col):  # QA 118 #1: 'splt' ignored: the test frames were trained on
        raise InputError(path, problem)
    samples = []
    first_row: dict[Path, tuple[int, str]] = {}
    for row in rows:
        number = row.pop(_LINE)
        if None in row:  # csv.DictReader files the fields beyond the header under None (review rev28)
            raise InputError(path, f"row {number} has more fields than the header's {header} (a value holding a comma needs quotes)")
        if not (row["path"] or "").strip():  # a short row's missing fields are None (QA 31: a TypeError traceback)
            raise InputError(path, f"row {number} has no path" + (" (fewer fields than the header)" if None in row.values() else ""))
        split = (row.get("split") or "").strip().lower()
        if split not in SPLIT_ALIASES:
            raise InputError(path, f"unknown split {split!r} for {row['path']}; allowed: train, val, test")
        if not (row.get("label") or "").strip():
            raise InputError(path, f"empty label for {row['path']} (row {number})")
        image = _on_disk(path.parent, row["path"])
        if os.sep == "/" and re.match(r"[A-Za-z]:[\\/]|\\\\", row["path"].strip()) and not image.exists():  # QA 56 #13: 'not found'
            raise InputError(path, f"row {number}: {row['path'].strip()} is an absolute Windows path; list the images relative to the "
                                   "manifest's folder (as `triage split` writes them)")
        if image in first_row:  # a second label, group or split for one image: ambiguous, or a leak across the split
            labels = (first_row[image][1], row["label"].strip())  # QA 89 #6: two labels read as a copy to delete
            differ = f" with different labels, {labels[0]} and {labels[1]}: which is it?" if labels[0] != labels[1] else ";"
            raise InputError(path, f"{row['path']} is listed twice (rows {first_row[image][0]} and {number}){differ} list each image once")
        first_row[image] = (number, row["label"].strip())
        group = (row.get(group_col) or "").strip() if group_col else ""
        samples.append(Sample(image, row["label"].strip(), group or str(image), SPLIT_ALIASES[split]))
    missing = [s.path for s in samples if not s.path.is_file()]
    if missing and missing[0].exists():  # QA 69 #9: a row naming a folder was "not found"
        raise InputError(missing[0], f"listed in {path.name} as an image, but it is {'a folder' if missing[0].is_dir() else 'not a regular file'}")
    if missing:
        raise InputError(missing[0], f"image listed in {path.name} not found ({len(missing)} missing)")
    return samples, group_col


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def is_mask_folder(name: str) -> bool:
    """Whether a folder's (or an image's) name says it holds segmentation masks or annotations rather
    than frames."""
    return MASK_FOLDER.search(name.casefold()) is not None


class _Unread:
    """What a folder tree holds that is not read, named relative to its root."""

    def __init__(self, root: Path):
        self.root, self.masks, self.mask_files, self.loose, self.beside, self.empty, self.outputs = root, [], [], [], [], [], []
        self.other: dict[str, list[str]] = defaultdict(list)

    def name(self, path: str | Path, folder: bool = False) -> str:
        return os.path.relpath(path, self.root) + ("/" if folder else "")

    def phrases(self) -> list[str]:
        found = [f"{plural(len(self.masks), 'mask or annotation folder')} (not a class, not frames): {listed(self.masks)}"] if self.masks else []
        found += [f"{plural(len(self.mask_files), 'mask image')} (by name, not frames): {listed(self.mask_files)}"] if self.mask_files else []
        found += [f"{plural(len(self.empty), 'class folder')} without images (not a class): {listed(self.empty)}"] if self.empty else []
        found += [f"{plural(len(self.outputs), 'output folder')} of triage eval or run (not a class, not frames): "
                  f"{listed(self.outputs)}"] if self.outputs else []
        found += [f"{plural(len(self.loose), 'image')} outside the class folders: {listed(self.loose)}"] if self.loose else []
        found += [f"{plural(len(self.beside), 'folder')} beside the split folders {', '.join(s + '/' for s in SPLIT_FOLDERS)}: "
                  f"{listed(self.beside)}"] if self.beside else []
        return found + other_types(self.other)


def tool_output(folder: str | Path) -> bool:
    """Whether ``folder`` is what ``triage eval --out`` (metrics.json, predictions.parquet) or ``triage run`` (run.json,
    frames.parquet) wrote: its roc.png and thumbnails are not frames (QA 69 #8: an evaluation written into the data tree
    became a class of one image, its ROC plot, at the next train or eval)."""
    folder = Path(folder)
    return any((folder / a).is_file() and (folder / b).is_file() for a, b in (("metrics.json", "predictions.parquet"),
                                                                              ("run.json", "frames.parquet")))


def _absolute(path: Path) -> Path:
    """An image's path, absolute, by its own name: a symlink is not replaced by its target (QA 69 #1: a link beside its
    target listed the target twice, which eval's predictions and split's manifests then refused as a frame listed twice)."""
    return Path(os.path.abspath(path))


def _on_disk(folder: Path, relative: str) -> Path:
    """The image a manifest row names, relative to the manifest's ``folder``: as written, else with
    Windows ``\\`` separators, else in the other Unicode normal form (a manifest written in NFC
    naming files a Mac stored decomposed, NFD, or the reverse). The row's own text is tried first,
    so a POSIX name holding a backslash is still found."""
    spellings = [relative] + ([relative.replace("\\", "/")] if "\\" in relative and os.sep == "/" else [])
    candidates = [_absolute(folder / text) for name in spellings for text in (name, unicodedata.normalize("NFC", name),
                                                                                unicodedata.normalize("NFD", name))]
    return next((c for c in candidates if c.exists()), candidates[0])


def _images_below(folder: Path, unread: _Unread) -> list[Path]:
    """Images anywhere below ``folder`` in natural order; hidden entries (.thumbnails, .DS_Store) are
    skipped, mask folders and other image types noted in ``unread``. Symlinked folders are not followed."""
    found = []
    for top, dirs, files in os.walk(folder):
        masks = [d for d in dirs if not d.startswith(".") and is_mask_folder(d)]
        unread.masks += [unread.name(os.path.join(top, d), folder=True) for d in masks]
        outputs = [d for d in dirs if not d.startswith(".") and d not in masks and tool_output(os.path.join(top, d))]
        unread.outputs += [unread.name(os.path.join(top, d), folder=True) for d in outputs]
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in masks and d not in outputs]
        for name in files:
            suffix = os.path.splitext(name)[1].lower()
            if name.startswith("."):
                continue
            if suffix in IMAGE_SUFFIXES and MASK_FILE.search(os.path.splitext(name)[0].casefold()):  # 0_mask.png beside 0.png
                unread.mask_files.append(unread.name(os.path.join(top, name)))
            elif suffix in IMAGE_SUFFIXES:
                found.append(Path(top, name))
            elif suffix in OTHER_IMAGE_SUFFIXES:
                unread.other[suffix].append(unread.name(os.path.join(top, name)))
    return sorted(found, key=lambda p: natural_key(str(p.relative_to(folder))))


def _holds_classes(folder: Path) -> bool:
    """A split folder holds class folders (a class called "valid" or "dev", holding its images, stays a class)."""
    return any(e.is_dir() and not e.name.startswith(".") for e in folder.iterdir())


def _read_tree(root: Path) -> LabelledSource:
    top = sorted((e for e in root.iterdir() if e.is_dir() and not e.name.startswith(".")), key=lambda e: natural_key(e.name))
    # split folders as people name them: Train/, TEST/, valid/, validation/ (QA 14: Train/ and Test/ were trained as two classes)
    split_dirs = [(e, SPLIT_ALIASES[e.name.casefold()]) for e in top if SPLIT_ALIASES.get(e.name.casefold()) and _holds_classes(e)]
    samples, unread, merged = [], _Unread(root), []
    for folder, split in split_dirs or [(root, "")]:
        entries = sorted((e for e in folder.iterdir() if not e.name.startswith(".")), key=lambda e: natural_key(e.name))
        unread.loose += [unread.name(e) for e in entries if e.suffix.lower() in IMAGE_SUFFIXES and e.is_file()]
        for class_dir in (e for e in entries if e.is_dir()):
            if is_mask_folder(class_dir.name):
                unread.masks.append(unread.name(class_dir, folder=True))
                continue
            if tool_output(class_dir):
                unread.outputs.append(unread.name(class_dir, folder=True))
                continue
            images = _images_below(class_dir, unread)
            unread.empty += [] if images else [unread.name(class_dir, folder=True)]
            parts = sorted({str(p.parent.relative_to(class_dir)) for p in images} - {"."}, key=natural_key)
            if len(parts) > 1:  # e.g. lower-gi-tract/ holding polyps/ and cecum/: one class, maybe not what was meant
                merged.append(f"{unread.name(class_dir, folder=True)} ({listed([p + '/' for p in parts])})")
            samples += [Sample(_absolute(p), class_dir.name, str(_absolute(p)), split) for p in images]
    if split_dirs:
        unread.beside = [unread.name(e, folder=True) for e in top if e not in dict(split_dirs)]
        unread.loose += [unread.name(e) for e in sorted(root.iterdir(), key=lambda e: natural_key(e.name))  # QA 56 #11: unnamed
                         if not e.name.startswith(".") and e.suffix.lower() in IMAGE_SUFFIXES and e.is_file()]
    if not samples:
        raise InputError(root, "no labelled images (expected one sub-folder of images per class, or a manifest CSV)"
                               + (f"; not read: {'; '.join(unread.phrases())}" if unread.phrases() else ""))
    notes = [f"{plural(len(merged), 'class folder')} holding several image folders, each read as one class: {listed(merged)} "
             "(if those folders are classes of their own, point DATA at the folder that holds them or list the frames in a manifest)"] if merged else []
    return LabelledSource(samples, None, unread.phrases(), notes)


def looks_normal(name: str) -> bool:
    """A class name that says "normal": "normal", "negative", "healthy mucosa", "non-bleeding", "Non Bleeding", "nonbleeding",
    "no lesion" (QA 69 #2: "Non Bleeding" was taken as abnormal and the model flagged normal frames)."""
    words = re.sub(r"[\s_-]+", " ", name.casefold()).strip()
    return (words.split(" ")[0] in NORMAL_NAMES if words else False) or words.startswith(("normal", "non", "no ", "not ", "without "))


def class_order(labels: list[str] | set[str]) -> list[str]:
    """Default head order: normal-looking names (:func:`looks_normal`) first, then natural order."""
    return sorted(set(labels), key=lambda c: (not looks_normal(c), natural_key(c)))


def check_label_twins(data: str | Path, samples: list[Sample]) -> None:
    """Refuse class names that differ only in case, Unicode form or separators (QA 14: 'Ulcer'/'ulcer', or 'Läsion'
    written on a Mac (NFD) and elsewhere (NFC), trained as two classes; QA 31: `triage split` wrote them unsaid; rev107
    #2: 'Blood-fresh'/'blood_fresh', 'grade 1'/'grade1')."""
    same: dict[str, set[str]] = defaultdict(set)
    for label in {s.label for s in samples}:
        plain = unicodedata.normalize("NFC", label).casefold()  # separators beside a letter dropped, between digits kept
        same[re.sub(r"[\s_-]+", " ", re.sub(r"(?<=[^\W\d_])[\s_-]+|[\s_-]+(?=[^\W\d_])", "", plain)).strip()].add(label)
    twins = [sorted(names) for names in same.values() if len(names) > 1]
    if twins:
        raise InputError(data, f"class names that differ only in case, Unicode form or separators: {', '.join(' / '.join(map(repr, t)) for t in twins)}; "
                               "give each class one name (rename the folders or the labels)")


def select(samples: list[Sample], split: str) -> list[Sample]:
    """Samples of one split ("all" = every sample)."""
    return list(samples) if split == "all" else [s for s in samples if s.split == split]


def samples_digest(samples: list[Sample]) -> str:
    """SHA-256 of what a training run learns from: every image's path, size, label, group and split."""
    digest = hashlib.sha256()
    for s in sorted(samples, key=lambda s: str(s.path)):
        digest.update(f"{s.path}\t{s.path.stat().st_size}\t{s.label}\t{s.group}\t{s.split}\n".encode())
    return digest.hexdigest()


def class_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Balanced loss weights ``n / (C * n_c)`` (0 for a class without images)."""
    counts = torch.bincount(labels, minlength=n_classes).float()
    return torch.where(counts > 0, len(labels) / (n_classes * counts.clamp_min(1)), torch.zeros_like(counts))


def split_counts(samples: list[Sample]) -> dict[str, dict[str, int]]:
    """{split: {label: count}} for reports."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for s in samples:
        counts[s.split][s.label] += 1
    return {split: dict(sorted(c.items())) for split, c in sorted(counts.items())}
