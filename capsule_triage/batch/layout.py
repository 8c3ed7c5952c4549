"""What ``OUT_DIR`` of a batch holds, and how files appear in it (by rename only).

Layout of ``OUT_DIR``::

    <study-id>/          one study's outputs (what ``triage run`` writes); run.json has a ``batch``
                         section (study id, relative path, pipeline fingerprint, top score)
    .failed/<id>.json    the error of a study that failed (removed when it later succeeds)
    studies.parquet      one row per study; batch.json: the run's totals (both rebuilt every run)
    index.html           the review index linking each study's report.html (rebuilt every run)
    batch.log            one line per study per run (appended)
    .batch.lock          pid, host and start time of the run writing here
    .work/               staging area: wiped at start (under the lock) and removed at the end

Study folders, the summary files and failure records appear by rename only, so a run killed with
SIGKILL at any moment leaves either the old file or the new one, and the next run (which recovers the
dead run's lock) finishes the rest.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

from ..outputs import RUN_FILE, write_json

SUMMARY_FILE = "studies.parquet"
BATCH_FILE = "batch.json"
LOG_FILE = "batch.log"
LOCK_FILE = ".batch.lock"
WORK_DIR = ".work"
FAILED_DIR = ".failed"


def write_json_atomic(path: Path, data: dict, work: Path) -> None:
    """Write ``data`` to a temp file in ``work`` (same file system) and rename it to ``path``."""
    tmp = work / f"{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write_json(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave half a record behind
        raise


def own_folder(path: Path) -> str | None:
    """Make ``path`` (``.work``, ``.failed``) a folder of OUT_DIR's own; run under the lock. A symbolic link there is
    removed, not written through (QA 55: staging and failure records landed in the folder a link pointed at), and said.
    Raises OSError when it cannot be made."""
    note = None
    if path.is_symlink():
        note = f"{path} was a symbolic link (to {os.readlink(path)}): replaced by a folder, nothing written through it"
        path.unlink()
    path.mkdir(exist_ok=True)
    return note


def now_utc() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def broken_link(link: Path) -> str:
    """Why a symbolic link at OUT_DIR is no folder to write in: a loop, or a target that cannot be reached (rev72 #5: a
    relative target was said as stored, a loop as a share not mounted)."""
    try:
        os.stat(link)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop, not a folder"
    target = os.path.realpath(link)  # as far as it resolves (rev73 #1: the link's text joined to a linked parent misled)
    return f"a link to {target}, which is not a folder that can be reached (a share not mounted?)"


def study_folders(out_dir: Path) -> list[Path]:
    """Folders of OUT_DIR holding a study's results (a run.json)."""
    try:
        return [p for p in out_dir.iterdir() if not p.name.startswith(".") and (p / RUN_FILE).is_file()]
    except OSError:
        return []


def remove_if_empty(out_dir: Path) -> None:
    """Remove ``out_dir`` if it holds nothing but an empty batch.log (a line that could not be written)."""
    with contextlib.suppress(OSError):
        if (out_dir / LOG_FILE).stat().st_size == 0:
            (out_dir / LOG_FILE).unlink()
    with contextlib.suppress(OSError):
        out_dir.rmdir()
