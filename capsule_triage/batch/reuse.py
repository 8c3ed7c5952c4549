"""A study whose input bytes another study's complete outputs were made from (the archive reorganised into other
folders, or a copy): those outputs hard-linked in as its own (:func:`reuse_outputs`), not scored again."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import TriageError
from ..outputs import EVENTS_FILE, FRAMES_FILE, RUN_FILE, TOP_FRAMES_FILE
from ..report import DETAIL_DIR, REPORT_FILE, write_report
from ..source_state import settled_state_digest
from .discovery import Study
from .install import ignore_foreign_at, install, link_or_copy
from .layout import FAILED_DIR, WORK_DIR, write_json_atomic
from .records import completed_run

if TYPE_CHECKING:
    from .context import WorkerContext


def reuse_outputs(ctx: WorkerContext, study: Study, sha: str, earlier: Path, final: Path) -> bool:
    """Install a hard-linked copy of ``earlier`` as this study's output (reorganising an archive into
    other folders rescored every study), with run.json naming this study and its review pages
    rewritten for its path; ``earlier`` itself is not modified. False (nothing installed: score it)
    when the input is not the bytes ``sha`` says (it may have been hashed a while ago) or the copy is
    not a complete output of ``sha`` (another worker may be replacing ``earlier`` meanwhile)."""
    hashed = ctx.hashed(study)
    if hashed is None or hashed[0] != sha:
        return False
    before = hashed[1]
    work = ctx.out_dir / WORK_DIR / study.study_id
    shutil.rmtree(work, ignore_errors=True)
    try:
        shutil.copytree(earlier, work, symlinks=True, copy_function=link_or_copy, ignore=ignore_foreign_at(earlier))
    except shutil.Error as exc:  # the errors of each file, in one exception without an errno
        shutil.rmtree(work, ignore_errors=True)
        full = "[Errno 28]" in str(exc) or "[Errno 122]" in str(exc)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) if full else OSError(errno.EIO, f"cannot copy {earlier}") from None
    run = completed_run(work, sha, ctx.accepts(study))
    if run is None or any(_table_input_sha(work / name) != sha for name in (FRAMES_FILE, EVENTS_FILE, TOP_FRAMES_FILE)):
        shutil.rmtree(work, ignore_errors=True)
        return False
    try:
        _rewrite(ctx, study, run, work, earlier, before)
    except (TriageError, KeyError, TypeError, ValueError, AttributeError):  # QA 94 #1: the earlier study's outputs do not
        shutil.rmtree(work, ignore_errors=True)  # read as complete (a run.json edited into other shapes): this study is
        return False  # scored, not failed for good as a bad input (and the error named a folder that was never made)
    install(work, final)
    with contextlib.suppress(OSError):  # installed: an old failure record that cannot be removed fails nothing
        (ctx.out_dir / FAILED_DIR / f"{study.study_id}.json").unlink(missing_ok=True)
    return True


def _rewrite(ctx: WorkerContext, study: Study, run: dict, work: Path, earlier: Path, before: tuple) -> None:
    """The copy's run.json naming this study, and its pages written for its path (or removed without reports)."""
    earlier_path, path = run["input"]["path"], str(Path(study.path).absolute())
    run["input"] = {**run["input"], "path": path, "state_sha256": settled_state_digest(before)}
    run["source"] = {**run.get("source", {}), "path": path}
    _renamed(run, earlier_path, path)
    run["batch"] = {**run["batch"], "study_id": study.study_id, "relative_path": study.rel_path, "reused_from": earlier.name,
                    "run_id": ctx.run_id, "pipeline_fingerprint": ctx.fingerprint_of(study)}  # its own, where taken at another
    write_json_atomic(work / RUN_FILE, run, ctx.out_dir / WORK_DIR)  # a new file in place of the link
    if ctx.run.report:
        write_report(work, batch_index=True)  # replaces the linked pages by rename; index.html follows this run
    else:  # no pages naming the earlier path
        (work / REPORT_FILE).unlink(missing_ok=True)
        shutil.rmtree(work / DETAIL_DIR, ignore_errors=True)


def _renamed(run: dict, earlier_path: str, path: str) -> None:
    """The rest of a reused run.json that names the study's folder (QA 36: its warnings and the folder's own
    timestamps.csv named the study the outputs were made for)."""
    named = lambda text: text.startswith(earlier_path) and text[len(earlier_path):][:1] in (":", os.sep)  # the folder or a file in it
    run["warnings"] = [path + w[len(earlier_path):] if named(w) else w for w in run.get("warnings", [])]
    read = run.get("parameters", {}).get("read", {})
    if read.get("timestamps_from") == "folder" and named(str(read.get("timestamps_csv", ""))):
        read["timestamps_csv"] = path + read["timestamps_csv"][len(earlier_path):]


def _table_input_sha(path: Path) -> str | None:
    """The input SHA-256 a table's metadata records (written with it by ``triage_study``)."""
    import pyarrow.parquet as pq

    try:
        with open(path, "rb") as fh:  # a Python file: pyarrow's own path handling rejects non-UTF-8 names
            return (pq.read_schema(fh).metadata or {}).get(b"input_sha256", b"").decode() or None
    except (OSError, ValueError):
        return None
