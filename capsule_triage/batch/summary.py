"""What a batch run leaves for people and programs: studies.parquet, batch.json, batch.log, index.html.

studies.parquet and batch.json are rebuilt from the per-study results on disk at the end of every run
(also an interrupted one); batch.log gets one line per study per run; index.html (the review index,
:func:`capsule_triage.report_batch.write_batch_index`) is rebuilt after them unless reports are off.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from ..json_files import read_json
from ..errors import OutputError, TriageError, one_line
from ..outputs import RUN_FILE, outputs_complete, write_json
from ..result_tables import parquet_text
from ..report_batch import DONE_STATUSES, INDEX_FILE, write_batch_index
from .discovery import Study, excluded
from .layout import BATCH_FILE, FAILED_DIR, SUMMARY_FILE, WORK_DIR, now_utc
from .context import StudyOutcome
from .records import results_row

SUMMARY_COLUMNS = {  # name -> pyarrow type name; one row per study (studies.parquet)
    "study_id": "string", "input_path": "string", "kind": "string", "status": "string", "error": "string",
    "frames": "int64", "frames_skipped": "int64", "gap_seconds": "float64",
    "frames_without_view": "int64", "events": "int64", "flagged_percent": "float64",
    "top_score": "float64", "wall_seconds": "float64", "fps": "float64", "model": "string",
    "weights_sha256": "string", "backend": "string", "input_sha256": "string", "output_dir": "string",
}


def summary_row(study: Study, status: str, out_dir: Path, error: str | None = None, *, earlier: bool = False,
                failed_on: str | None = None, input_fault: bool = False) -> dict:
    """A studies.parquet row, read back from the study's run.json or failure record (``earlier``: a pending study's
    results of an earlier run, shown until it is scored again; ``error`` says so). A failed study carries this run's
    ``error`` and the input hash it ``failed_on`` (its failure record is an earlier one's when it could not be written:
    a full disk); one that failed for a reason not its input's (not ``input_fault``: --force or other settings stopped
    by a reviewer's file in its folder, a full disk on a rerun) carries the complete results its folder holds of those
    very bytes beside the error: they stand until it is scored again (QA 72 #4: the index dropped them)."""
    row = dict.fromkeys(SUMMARY_COLUMNS)
    row.update(study_id=study.study_id, input_path=study.rel_path, kind=study.kind, status=status)
    if status in DONE_STATUSES or earlier:
        row.update(results_row(study.study_id, read_json(out_dir / study.study_id / RUN_FILE)), error=error if earlier else None)
    elif status == "pending" and error:  # e.g. still being written: why it waits for the next run
        row.update(error=error)
    elif status == "failed":
        try:
            record = read_json(out_dir / FAILED_DIR / f"{study.study_id}.json")
        except (OSError, ValueError):
            record = {}
        row.update(error=error or record.get("error"), input_sha256=failed_on or record.get("input_sha256"))
        folder = out_dir / study.study_id
        if failed_on and not input_fault and recorded_input_sha(folder) == failed_on and outputs_complete(folder):
            try:
                row.update(results_row(study.study_id, read_json(folder / RUN_FILE)))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):  # a run.json of a version that recorded less
                pass
    return row


def recorded_input_sha(folder: Path) -> str | None:
    """The input SHA-256 a study folder's run.json records; None if it has none (or cannot be read)."""
    try:
        return read_json(folder / RUN_FILE)["input"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_summary(out_dir: Path, rows: list[dict], batch: dict) -> None:
    """studies.parquet and batch.json, each written to a temp file and renamed into place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, getattr(pa, typ)()) for name, typ in SUMMARY_COLUMNS.items()])
    # Parquet strings are UTF-8: undecodable bytes of file names (kept as surrogates) are written as \xff (result_tables.parquet_text)
    rows = [{k: parquet_text(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]
    table = pa.Table.from_pylist(rows, schema=schema)
    table = table.replace_schema_metadata({"schema_version": "1", "pipeline_fingerprint": batch["pipeline_fingerprint"], **(
        {"video_pipeline_fingerprint": video} if (video := batch.get("video_pipeline_fingerprint")) else {})})
    work = out_dir / WORK_DIR
    tmp = work / f"{SUMMARY_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    tmp_batch = work / f"{BATCH_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    target = out_dir / SUMMARY_FILE
    try:  # both written before either is renamed into place: a full disk leaves last night's pair, not a mixed one (QA 33)
        with open(tmp, "wb") as fh:  # a file object: pyarrow wants UTF-8 paths, an OUT_DIR may not be one
            pq.write_table(table, fh, compression="zstd")
        target = out_dir / BATCH_FILE
        write_json(tmp_batch, batch)
        os.replace(tmp_batch, target)
        target = out_dir / SUMMARY_FILE
        os.replace(tmp, target)
    except OSError as exc:
        for path in (tmp, tmp_batch):
            try:
                path.unlink(missing_ok=True)
            except OSError:  # a read-only file system: the OutputError below is what matters (QA 33: this hid it)
                pass
        raise OutputError(target, f"cannot write ({exc.strerror or exc}); the studies' own folders are "
                                  "unaffected: re-run the same command to rebuild the summary") from None



def write_index(out_dir: Path, log: Callable[[str], None], rows: list[dict], batch: dict) -> tuple[Path | None, str | None]:
    """index.html of the run's rows (those of studies.parquet, also when that could not be written: the pages link
    the index); a failure is logged and returned as a warning, never raised (the page is a view of the results: it
    must not change them or the exit code).

    Returns:
        (the page, None) or (None, the warning).
    """
    try:
        return write_batch_index(out_dir, rows, batch), None
    except Exception as exc:  # noqa: BLE001 - any problem with the page leaves the results as they are
        warning = str(exc) if isinstance(exc, TriageError) else f"{out_dir / INDEX_FILE}: {type(exc).__name__}: {exc}"
        log(f"warning {INDEX_FILE} not written: {warning}")
        return None, warning


class Progress:
    """The tqdm bar over studies (frames/s in the postfix) and one batch.log line per study."""

    def __init__(self, total: int, log: Callable[[str], None], *, show: bool, started: float):
        from ..progress import progress_bar

        self.log, self.started, self.frames = log, started, 0
        self.outcomes: dict[str, StudyOutcome] = {}
        self.bar = progress_bar(total=total, show=show, unit="study", desc="batch", dynamic_ncols=True)  # off: no tqdm thread (review rev30)

    def __call__(self, outcome: StudyOutcome) -> None:
        self.outcomes[outcome.study.study_id] = outcome
        self.frames += outcome.frames
        fps = outcome.frames / outcome.wall_seconds if outcome.wall_seconds > 0 else 0.0
        error = f" error={outcome.error}" if outcome.error else ""
        error += f" note={outcome.note}" if outcome.note else ""
        error += "".join(f" warning={line}" for line in (outcome.warning, *outcome.run_warnings) if line)
        scored = "" if outcome.status in ("skipped", "reused") else f"frames={outcome.frames} fps={fps:.1f} "  # QA 24: 'frames=0' read as empty
        self.log(f"{outcome.status:<7} {outcome.study.study_id} {scored}wall={outcome.wall_seconds:.2f}s {outcome.study.rel_path}{error}")
        counts = {s: sum(o.status == s for o in self.outcomes.values()) for s in ("ok", "skipped", "failed")}
        if reused := sum(o.status == "reused" for o in self.outcomes.values()):
            counts["reused"] = reused
        self.bar.set_postfix({"frames/s": f"{self.frames / max(time.perf_counter() - self.started, 1e-9):.1f}", **counts})
        self.bar.update(1)


def file_logger(path: Path) -> Callable[..., None]:
    """A function that appends one time-stamped line to ``path`` (batch.log); the first line it cannot append is
    said once on stderr (QA 51: another user's batch.log, or a full disk, lost a whole night's lines without a word)."""
    said = []

    def log(line: str, *, lost_said: bool = True) -> None:  # a newline in a study's name stays in its line; names may not be UTF-8
        text = parquet_text(f"{now_utc()} pid={os.getpid()} {one_line(line)}\n")  # QA 114 #6: a name's byte \xff as studies.parquet
        why = append_whole_line(path, text.encode("utf-8", "backslashreplace"))  # has it, not Python's \udcff
        if why and not said and lost_said:  # (not for a refusal's line: its Error: line is the one to say, QA 114 #4)
            said.append(why)
            from tqdm import tqdm  # above a progress bar, not glued to it (rev44)

            tqdm.write(f"Warning: {path}: cannot append ({why}); this run's lines from here on are not in it", file=sys.stderr)

    return log


def append_whole_line(path: Path, data: bytes) -> str | None:
    """Append ``data`` (one line) to ``path`` in one write, or not at all: a full disk loses log lines, never a study
    (the results say the rest), and leaves no torn line for the next night's to be glued to (QA 49: "2026-12026-12-03T...").
    A file that does not end in a newline (torn by an older version or another program) gets one first. Writers hold
    an exclusive lock (flock) from the look at the end to the write, so a refused run's line is never taken back with
    ours (rev43); a file made for a line that could not be written stays, empty. Made readable and writable as the
    umask allows (QA 51: 0644 whatever the umask kept a team's other service user out). Never into anything but a regular
    file, nor through a symbolic link made by another user (QA 55: a link swapped in by anyone who may write OUT_DIR took
    the night's lines, and the file names in them, into a service user's ~/.bashrc); one of this user's own (a log kept
    elsewhere) is followed, as the kernel's protected_symlinks rule does (rev50). Returns why a line was lost, else None."""
    try:
        found = os.lstat(path)
        own_link = stat.S_ISLNK(found.st_mode) and found.st_uid == os.geteuid()
    except OSError:
        own_link = False
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | (0 if own_link else os.O_NOFOLLOW), 0o666)
    except OSError as exc:
        return "a symbolic link made by another user, not followed" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "not a regular file"
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        try:
            if os.write(fd, data) == len(data):
                return None
            why = os.strerror(errno.ENOSPC)  # a short write: the disk filled up
        except OSError as exc:
            why = exc.strerror or str(exc)
        if os.fstat(fd).st_size > size:  # taken back
            os.ftruncate(fd, size)
        return why
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        os.close(fd)  # and the lock with it


def other_input(out_dir: Path, input_dir: Path) -> str | None:
    """The input folder the previous run into ``out_dir`` read (its batch.json's), when it is another folder than
    ``input_dir`` that still exists (an archive moved to ``input_dir`` is no other), else None. Two inputs sharing one
    output folder (a cron line per ward) took each other's studies for deleted ones, advised deleting their folders,
    forgot their failure records, and a study path both hold (one id) was scored over each night (QA 88 #3, rev84 #3,
    rev85 #1-#3): a batch into it is refused."""
    try:
        earlier = read_json(out_dir / BATCH_FILE).get("input_dir")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(earlier, str) or os.path.realpath(earlier) == os.path.realpath(input_dir):
        return None
    return earlier if os.path.isdir(earlier) else None


def orphan_folders(out_dir: Path, studies: list[Study], exclude: tuple[str, ...] = ()) -> list[str]:
    """Study folders in OUT_DIR that belong to no current input (moved, renamed or deleted studies):
    not listed, never deleted by the batch; named in batch.json and a warning so disk use is seen.
    Folders of studies under a folder that could not be listed are not orphans: their inputs may be there;
    nor are those of studies ``exclude`` leaves out (``--exclude``: kept as they are, not listed)."""
    current = {s.study_id for s in studies}
    unlisted = [s.rel_path.rstrip("/") + "/" for s in studies if s.kind == "frames" and not _listable(s.path)]
    try:
        candidates = [p for p in out_dir.iterdir() if not p.name.startswith(".") and p.name not in current and (p / RUN_FILE).is_file()]
    except OSError:
        return []
    orphans = []
    for folder in candidates:
        try:
            relative = read_json(folder / RUN_FILE)["batch"]["relative_path"]
        except (OSError, ValueError, KeyError, TypeError):
            relative = ""
        if not any(str(relative).startswith(prefix) for prefix in unlisted) and not (relative and excluded(str(relative), exclude)):
            orphans.append(folder.name)
    return sorted(orphans)


def stale_folders(out_dir: Path, studies: list[Study], rows: list[dict]) -> list[str]:
    """Failed studies whose folders hold an earlier night's results of other input bytes than the file that failed
    now (QA 33: named nowhere). Results of these very bytes (a machine failure on a rerun) are not stale (review
    rev30); a failure that could not hash its input says nothing either way."""
    stale = []
    for study, row in zip(studies, rows):
        if row["status"] != "failed" or not row.get("input_sha256"):
            continue
        if (recorded := recorded_input_sha(out_dir / study.study_id)) is not None and recorded != row["input_sha256"]:
            stale.append(study.study_id)
    return stale


def prune_failure_records(out_dir: Path, studies: list[Study], input_dir: Path, exclude: tuple[str, ...] = ()) -> int:
    """Delete the ``.failed/<id>.json`` of inputs no longer found (QA 47: kept for good, through ``--force`` too; a
    record is only ever read for its own study's input). Only where the input is known to be gone: never on a night
    that found no studies (an empty mount point), and not when the way to it is out of reach (a dangling symlink, a
    share offline: rev41) or cannot be listed; those left out by ``--exclude`` are kept, as their folders are
    (:func:`orphan_folders`). Returns how many went."""
    if not studies:
        return 0
    current = {s.study_id for s in studies}
    gone = 0
    try:
        records = [p for p in (out_dir / FAILED_DIR).glob("*.json") if p.stem not in current]
    except OSError:
        return 0
    for record in records:
        try:
            relative = str(read_json(record)["relative_path"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours to judge
        if excluded(relative, exclude) or not _surely_gone(input_dir, relative):
            continue
        try:
            record.unlink()
            gone += 1
        except OSError:
            pass
    return gone


def _surely_gone(input_dir: Path, relative: str) -> bool:
    """Whether ``input_dir / relative`` is absent with the folder above its first missing part there and listable
    (not a dangling symlink, a share offline, a folder that cannot be read)."""
    parts = Path(relative.rstrip("/")).parts
    if not parts or ".." in parts:
        return False
    folder = input_dir
    for part in parts:
        if not _listable(folder):
            return False
        nxt = folder / part
        if not os.path.lexists(nxt):
            return True  # absent, from a folder that lists
        if not nxt.exists():
            return False  # a symlink whose target is gone: out of reach, maybe for the night
        folder = nxt
    return False  # it is there (a study not found as one this night, e.g. emptied): kept


def _listable(folder) -> bool:
    try:
        os.scandir(folder).close()
        return True
    except OSError:
        return False
