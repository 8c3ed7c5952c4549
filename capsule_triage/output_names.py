"""Names in an output folder: the ones a run writes (the thumbnails' and the event pages' inside their folders too) and
everything else, which is someone's work — a reviewer's notes — that replacing the folder would delete
(:class:`capsule_triage.outputs.StagedOutput` and a batch's install refuse to)."""

from __future__ import annotations

import re
from pathlib import Path

THUMBNAILS_DIR = "thumbnails"
DETAIL_DIR = "report"  # the review pages of each event
PARTIAL_MARK = ".partial-"
# What a run writes inside its folders (QA 66 #2: a reviewer's thumbnails/marked.jpg or report/notes.html was deleted by
# --force and by a batch scoring the study again: only the folder's top level was looked at)
OWN_INSIDE = {THUMBNAILS_DIR: re.compile(r"frame_\d{7,}\.jpg"), DETAIL_DIR: re.compile(r"event-\d{4,}\.html")}
SYSTEM_FILES = (".ds_store", "thumbs.db", "desktop.ini")  # what file browsers leave in folders they show


def foreign_files(folder: Path, own: frozenset[str]) -> list[str]:
    """Paths (relative to ``folder``) that are none of ``own`` nor, inside its folders of :data:`OWN_INSIDE`, what a run
    writes there, and not a file browser's or an interrupted write's: someone's work, which replacing the folder would
    delete (a reviewer's notes in a study's output: review QA 62 #1)."""
    found = []
    for path in folder.iterdir():
        if path.name not in own:
            if not system_file(path) and not _left_over(path.name, own):
                found.append(path.name)
        elif path.name in OWN_INSIDE and path.is_dir() and not path.is_symlink():
            written = OWN_INSIDE[path.name]
            found += [f"{path.name}/{inner.name}" for inner in path.iterdir()
                      if not written.fullmatch(inner.name) and not system_file(inner) and not _left_over(inner.name, frozenset())]
    return sorted(found)


def _left_over(name: str, own: frozenset[str]) -> bool:
    """A hidden file an interrupted write of one of ``own`` leaves (``.report.html.<hex>.tmp``, ``.<name>.partial-...``; in
    a folder of :data:`OWN_INSIDE`, any hidden ``.tmp``: a page being written) or that NFS keeps for a file deleted while
    open (``.nfsXXXX``): not someone's work (review rev50)."""
    if name.startswith(".nfs") or (not own and name.startswith(".") and name.endswith(".tmp")):
        return True
    return any(name.startswith(f".{o}.") and (name.endswith(".tmp") or PARTIAL_MARK in name) for o in own)


def system_file(path: Path) -> bool:
    """A file a file browser leaves in folders it shows (macOS .DS_Store and ._ files, Windows Thumbs.db): not the
    user's work, so it does not keep an earlier output from being replaced (review rev29). Only these, and only
    files: a folder holding just a hidden .git is someone's repository, not an empty folder."""
    return path.is_file() and not path.is_symlink() and (path.name.casefold() in SYSTEM_FILES or path.name.startswith("._"))
