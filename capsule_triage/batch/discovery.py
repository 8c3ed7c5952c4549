"""Finding the studies under an input folder, and their stable ids and input hashes.

A study is a video file (``VIDEO_SUFFIXES``) or a folder with frame images directly inside it; its
id is ``<slug of the relative path>-<10 hex of sha256(relative path)>``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..errors import TriageError
from ..outputs import FRAMES_FILE, RUN_FILE
from ..result_tables import parquet_text
from ..source_state import source_sha256
from ..folder_times import TIMESTAMPS_FILE, times_frames
from ..frame_folder import IMAGE_SUFFIXES, natural_key
from ..reader import VIDEO_SUFFIXES
from .layout import BATCH_FILE, SUMMARY_FILE

# A folder holding both files of a pair is capsule_triage's own output, never a study: an earlier
# `triage run` beside its input (<name>_triage/, whose thumbnails/ would look like a frame folder) or
# an earlier batch's OUT_DIR inside the input tree.
OUTPUT_SIGNATURES = ({RUN_FILE, FRAMES_FILE}, {BATCH_FILE, SUMMARY_FILE})
NOT_READ_LISTED = 100  # batch.json lists the first files not read (their count is whole)
SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})  # Windows puts them in image folders: passed over as
# hidden names are (rev105 #2: each frame folder on an SMB share was a file "not read" every night)


@dataclass(frozen=True)
class Study:
    """One unit of work: a video file or a folder that directly contains frame images.

    Attributes:
        study_id: stable output folder name, derived from ``rel_path`` only.
        rel_path: path relative to the input folder, POSIX separators ("." for the folder itself).
        path: absolute path.
        kind: "video" or "frames".
        own_times: a frame folder timed by its own timestamps.csv (one, with our columns): ``--fps`` does not read it.
    """

    study_id: str
    rel_path: str
    path: str
    kind: str
    own_times: bool = False


class Found(NamedTuple):
    """What :func:`find_studies` found: the studies, what ``--exclude`` left out, and the files that are no study."""

    studies: list[Study]
    left_out: list[str]  # videos and folders ``patterns`` matched
    not_read: list[str]  # files neither a video (by suffix), a frame image nor a frame folder's timestamps.csv (QA 114 #5: raw.h264)
    files_left_out: list[str]  # such files ``patterns`` matched (no studies: rev106 #5, the unmounted-share guard counts none)

    @property
    def excluded_paths(self) -> list[str]:
        """Everything ``--exclude`` matched, studies and files, in natural order."""
        return sorted([*self.left_out, *self.files_left_out], key=natural_key)


def study_id(rel_path: str) -> str:
    """``<slug>-<10 hex of sha256(rel_path)>``: readable, and ``a/b.mp4`` != ``a_b.mp4``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", rel_path).strip("._-")[:80] or "study"
    return f"{slug}-{hashlib.sha256(rel_path.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"


def discover_studies(input_dir: str | Path, *, skip_dirs: tuple[Path, ...] = (), patterns: tuple[str, ...] = ()) -> list[Study]:
    """Studies under ``input_dir`` in natural path order (see :func:`find_studies`)."""
    return find_studies(input_dir, skip_dirs=skip_dirs, patterns=patterns)[0]


def find_studies(input_dir: str | Path, *, skip_dirs: tuple[Path, ...] = (), patterns: tuple[str, ...] = ()) -> Found:
    """Studies under ``input_dir`` in natural path order, the relative paths that ``patterns`` left out, and the files
    that are no part of a study, not read or left out by ``patterns`` (relative paths; a frame folder's own images and
    timestamps.csv are read with it, never left out alone).

    Hidden files and folders are skipped, symlinks are followed but each real folder is visited once
    (no loops), folders in ``skip_dirs`` (e.g. the output folder) and earlier outputs of capsule_triage
    (:data:`OUTPUT_SIGNATURES`) are not entered, and a folder with no images directly inside it is
    not a study (its subfolders may be). A file or folder whose path relative to ``input_dir`` (POSIX)
    matches one of ``patterns`` (:func:`excluded`; ``--exclude``) is no study and a folder is not entered.
    """
    root = Path(input_dir).absolute()
    skip = {os.path.realpath(p) for p in skip_dirs}
    visited: set[str] = set()
    studies: list[Study] = []
    left_out: list[str] = []
    not_read: list[str] = []
    files_left_out: list[str] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in visited or real in skip:
            continue
        visited.add(real)
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: natural_key(e.name))
        except OSError:  # unreadable folder: let it fail as a study so it is reported
            studies.append(_study(root, folder, "frames"))
            continue
        if any(signature <= {e.name for e in entries} for signature in OUTPUT_SIGNATURES):
            continue
        has_images, subfolders, csvs, others = False, [], [], []
        for entry in entries:
            suffix = os.path.splitext(entry.name)[1].lower()
            if entry.name.startswith(".") or entry.name.casefold() in SYSTEM_FILES:
                continue
            is_dir = _is_dir(entry)
            if (is_dir or suffix in VIDEO_SUFFIXES) and patterns and excluded(rel := _relative(root, Path(entry.path)), patterns):
                left_out.append(rel)
            elif is_dir:
                subfolders.append(Path(entry.path))
            elif suffix in VIDEO_SUFFIXES:
                studies.append(_study(root, Path(entry.path), "video"))
            elif suffix in IMAGE_SUFFIXES:
                has_images = True
            elif entry.name.casefold() == TIMESTAMPS_FILE:
                csvs.append(Path(entry.path))
            else:
                others.append(_relative(root, Path(entry.path)))
        others += [] if has_images else [_relative(root, csv) for csv in csvs]  # a CSV beside no images times nothing (rev105 #5)
        for rel in others:  # rev105 #1: one --exclude matches is left out, not "not read" (else "nothing matches it")
            (files_left_out if patterns and excluded(rel, patterns) else not_read).append(rel)
        if has_images:  # rev88 #6: one that times the folder keeps --fps out of its print (two are an error when it is read)
            studies.append(_study(root, folder, "frames", own_times=len(csvs) == 1 and times_frames(csvs[0])))
        stack.extend(reversed(subfolders))
    return Found(sorted(studies, key=lambda s: natural_key(s.rel_path)), sorted(left_out, key=natural_key),
                 sorted(not_read, key=natural_key), sorted(files_left_out, key=natural_key))


def found_record(found: Found, exclude: tuple[str, ...]) -> dict:
    """batch.json's record of what is no study: ``exclude`` and what it matched, and the files not read (QA 114 #5: a raw
    .h264 went unsaid), the first :data:`NOT_READ_LISTED` named as batch.log and studies.parquet write names (rev105 #4)."""
    return {**({"exclude": list(exclude), "excluded": found.excluded_paths} if exclude else {}),
            "not_read": [parquet_text(p) for p in found.not_read[:NOT_READ_LISTED]], "not_read_count": len(found.not_read)}


def found_lines(found: Found) -> list[str]:
    """batch.log's lines of what was left out and not read."""
    def listed(paths: list[str]) -> str:
        return ", ".join(paths[:20]) + (" ..." if len(paths) > 20 else "")

    matched = found.excluded_paths
    return ([f"excluded {len(matched)}: {listed(matched)}"] if matched else []) + (
        [f"not read {len(found.not_read)} (neither a video by its suffix nor a frame image; --exclude one to leave it unsaid): "
         f"{listed(found.not_read)}"] if found.not_read else [])


def excluded(rel_path: str, patterns: tuple[str, ...]) -> bool:
    """Whether a study's path relative to the input folder (POSIX), or a folder above it, is one of the ``--exclude``
    values: a value with ``*`` or ``?`` is a pattern (:func:`fnmatch.fnmatchcase`, case-sensitive as the file system;
    ``*`` also crosses ``/``, so ``*.avi`` is every ``.avi``, not ``.AVI``), any other the path itself, brackets and
    all (review rev34/rev35: ``study[1].mp4`` as a pattern left out ``study1.mp4``, another study, at once or on the
    night the broken file was gone)."""
    parts = rel_path.split("/")
    paths = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(path, pattern) if is_pattern(pattern) else path == pattern for path in paths for pattern in patterns)


def is_pattern(value: str) -> bool:
    return "*" in value or "?" in value


def exclude_patterns(patterns, input_dir: Path) -> tuple[str, ...]:
    """``--exclude`` values relative to the input folder (see :func:`excluded`): an absolute path under it made relative
    (also through symbolic links), ``./`` and ``//`` dropped.

    Raises:
        TriageError: an empty value, one that names the input folder itself or a folder above it, or an absolute path
            outside it.
    """
    out = []
    for pattern in (patterns,) if isinstance(patterns, (str, Path)) else patterns:  # one pattern as a string, not its letters
        text = str(pattern).strip()
        if os.path.isabs(text):
            text = _inside(Path(os.path.normpath(text)), input_dir)
            if text is None:
                raise TriageError("--exclude", f"{pattern} is not inside the input folder {input_dir}")
        text = posixpath.normpath(text) if text else text
        if text in ("", ".", "..", "*") or text.startswith("../"):
            raise TriageError("--exclude", f"{pattern!r} would leave out every study or none: give a path or pattern relative to "
                                           "the input folder (e.g. day3/broken.mp4, '*.avi', 'scratch')")
        out.append(text)
    return tuple(out)


def _inside(path: Path, folder: Path) -> str | None:
    """``path`` relative to ``folder`` (POSIX), as given or with symbolic links resolved in both; None if outside."""
    for a, b in ((path, folder), (Path(os.path.realpath(path)), Path(os.path.realpath(folder)))):
        try:
            return a.relative_to(b).as_posix()
        except ValueError:
            continue
    return None


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else "."


def _study(root: Path, path: Path, kind: str, *, own_times: bool = False) -> Study:
    rel = _relative(root, path)
    return Study(study_id=study_id(rel), rel_path=rel, path=str(path), kind=kind, own_times=own_times)


def input_sha256(study: Study) -> str:
    """The input hash ``triage_study`` records in run.json (file bytes, or a folder's images)."""
    return source_sha256(study.path)

