"""Finding the studies under an input folder, and their stable ids and input hashes.

A study is a video file (``VIDEO_SUFFIXES``) or a folder with frame images directly inside it; its
id is ``<slug of the relative path>-<10 hex of sha256(relative path)>``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..outputs import FRAMES_FILE, RUN_FILE
from ..source_state import source_sha256
from ..frame_folder import IMAGE_SUFFIXES, natural_key
from ..reader import VIDEO_SUFFIXES
from .layout import BATCH_FILE, SUMMARY_FILE

# A folder holding both files of a pair is capsule_triage's own output, never a study: an earlier
# `triage run` beside its input (<name>_triage/, whose thumbnails/ would look like a frame folder) or
# an earlier batch's OUT_DIR inside the input tree.
OUTPUT_SIGNATURES = ({RUN_FILE, FRAMES_FILE}, {BATCH_FILE, SUMMARY_FILE})


@dataclass(frozen=True)
class Study:
    """One unit of work: a video file or a folder that directly contains frame images.

    Attributes:
        study_id: stable output folder name, derived from ``rel_path`` only.
        rel_path: path relative to the input folder, POSIX separators ("." for the folder itself).
        path: absolute path.
        kind: "video" or "frames".
    """

    study_id: str
    rel_path: str
    path: str
    kind: str


def study_id(rel_path: str) -> str:
    """``<slug>-<10 hex of sha256(rel_path)>``: readable, and ``a/b.mp4`` != ``a_b.mp4``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", rel_path).strip("._-")[:80] or "study"
    return f"{slug}-{hashlib.sha256(rel_path.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"


def discover_studies(input_dir: str | Path, *, exclude: tuple[Path, ...] = ()) -> list[Study]:
    """Studies under ``input_dir`` in natural path order.

    Hidden files and folders are skipped, symlinks are followed but each real folder is visited once
    (no loops), folders in ``exclude`` (e.g. the output folder) and earlier outputs of capsule_triage
    (:data:`OUTPUT_SIGNATURES`) are not entered, and a folder with no images directly inside it is
    not a study (its subfolders may be).
    """
    root = Path(input_dir).absolute()
    skip = {os.path.realpath(p) for p in exclude}
    visited: set[str] = set()
    studies: list[Study] = []
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
        has_images, subfolders = False, []
        for entry in entries:
            suffix = os.path.splitext(entry.name)[1].lower()
            if entry.name.startswith("."):
                continue
            if _is_dir(entry):
                subfolders.append(Path(entry.path))
            elif suffix in VIDEO_SUFFIXES:
                studies.append(_study(root, Path(entry.path), "video"))
            elif suffix in IMAGE_SUFFIXES:
                has_images = True
        if has_images:
            studies.append(_study(root, folder, "frames"))
        stack.extend(reversed(subfolders))
    return sorted(studies, key=lambda s: natural_key(s.rel_path))


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def _study(root: Path, path: Path, kind: str) -> Study:
    rel = path.relative_to(root).as_posix() if path != root else "."
    return Study(study_id=study_id(rel), rel_path=rel, path=str(path), kind=kind)


def input_sha256(study: Study) -> str:
    """The input hash ``triage_study`` records in run.json (file bytes, or a folder's images)."""
    return source_sha256(study.path)

