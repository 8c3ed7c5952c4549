"""Write a study's outputs: Parquet tables (their columns: :mod:`capsule_triage.result_tables`), thumbnails and
run.json, atomically.

Everything is written into a hidden staging folder beside the destination and renamed into place
only when complete, so ``OUT_DIR`` is either absent or whole: an interrupted or failed run never
leaves a half-written Parquet behind. An existing ``OUT_DIR`` is replaced only with ``force``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputError, OutputError, TriageError, unexpanded_home
from .output_names import PARTIAL_MARK, THUMBNAILS_DIR, foreign_files, system_file

# Raised when the same input, weights and options give other results, so a batch re-run redoes the studies
# it made before: 2 = frames without a field of view are not scored, and runs end at time not seen (2026-12-02);
# 3 = an event takes in the frame that raised it, and one unflagged frame does not split an event (2026-12-04, QA 64);
# 4 = the hysteresis starts over after time not seen, runs merge again after taking in their peaks, and neither they
# nor the smoothing cross time not seen (2026-12-07, QA 99; review rev92).
RESULTS_VERSION = 4
FRAMES_FILE = "frames.parquet"
EVENTS_FILE = "events.parquet"
TOP_FRAMES_FILE = "top_frames.parquet"
RUN_FILE = "run.json"
REPLACED_MARK = ".replaced-"  # an old output being swapped out (``--force``); deleted right after


def check_expanded(path: Path) -> None:
    """Refuse an output path beginning with a ``~`` the shell did not expand (QA 22: ``--out '~/out'``
    made a folder named ``~`` here, one ``rm -rf ~`` away from losing the home folder)."""
    if tilde := unexpanded_home(path):
        raise OutputError(path, f"begins with {tilde!r}, which the shell did not expand (quoted?): it would create a folder "
                                f"named {tilde!r} in {Path.cwd()}; give the path unquoted or with $HOME (a folder really "
                                "named so: its full path)")


def check_creatable(path: Path) -> None:
    """Raise :class:`OutputError` now, before any work, if ``path`` could not be created: it begins with
    a ``~`` the shell did not expand, or the nearest existing folder above it is a file or not writable."""
    check_expanded(path)
    ancestor = Path(path).absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(ancestor, "is not a folder, so the output cannot be created under it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        read_only = os.statvfs(ancestor).f_flag & os.ST_RDONLY  # QA 33: said "permission denied" for a read-only mount
        unsearchable = os.access(ancestor, os.W_OK) and not read_only  # rev72 #6: writable, but not searchable (mode 600)
        raise OutputError(ancestor, f"cannot write here ({'read-only file system' if read_only else 'permission denied'}"
                                    f"{': this user cannot search it' if unsearchable else ''})")


def _check_name_lengths(final: Path) -> None:
    """The output's names fit the file system, with the staging folder's suffix added (a 240-byte
    name passed every check, was scored, then failed to install: 'File name too long')."""
    ancestor = final.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    name_max, path_max = os.pathconf(ancestor, "PC_NAME_MAX"), os.pathconf(ancestor, "PC_PATH_MAX")
    staging_extra = len(f"..{PARTIAL_MARK}{4194304}-{uuid.uuid4().hex[:8]}")  # leading dot, pid (max 2^22), token
    longest = max(len(os.fsencode(part)) for part in final.parts[1:]) if len(final.parts) > 1 else 0
    if longest > name_max or len(os.fsencode(final.name)) + staging_extra > name_max:
        raise OutputError(final, f"name too long: at most {name_max - staging_extra} bytes for the output folder's "
                                 f"name and {name_max} for the folders above it on this file system")
    if len(os.fsencode(str(final))) + staging_extra + 64 > path_max:  # 64: the longest path inside an output
        raise OutputError(final, f"path too long: at most {path_max - staging_extra - 64} bytes on this file system")


def is_mount_point(folder: Path) -> bool:
    """Whether ``folder`` is a mount point, a bind mount of a folder of the same file system included (Linux's
    mount table; ``os.path.ismount`` compares devices only, and a bind mount cannot be renamed either: rev43)."""
    if os.path.ismount(folder):
        return True
    try:
        table = Path("/proc/self/mountinfo").read_text(errors="surrogateescape")
    except OSError:
        return False
    target = os.path.realpath(folder)
    points = (line.split()[4] for line in table.splitlines() if len(line.split()) > 4)  # field 5: the mount point
    return any(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point) == target for point in points)  # '\040': a space


class StagedOutput:
    """Context manager: a staging folder that becomes ``final`` on success and vanishes on error."""

    def __init__(self, final: str | Path, *, force: bool = False, source: str | Path | None = None, marker: str = RUN_FILE,
                 only: frozenset[str] | None = None):
        self.given = Path(final)  # as typed: '~/out' is checked for its unexpanded '~'
        self.final = Path(final).absolute()
        self.force = force
        self.marker = marker  # the file that makes a folder an earlier output of the command (triage eval: metrics.json)
        self.only = only  # if given, the names an earlier output may hold (nothing else is replaced with it)
        self.source = Path(source) if source is not None else None
        self.staging: Path | None = None
        self._created_parent: Path | None = None

    def check(self) -> None:
        """Raise early (before any work) if the destination may not be written.

        An empty folder is filled; ``--force`` replaces only an earlier output (a folder holding run.json, or
        ``marker``, and with ``only`` nothing else but what an interrupted write of those names or the file system
        leaves: :func:`_left_over`), never the input or a folder that holds it:
        a mistyped ``--out`` must not delete a study.
        A symbolic link to a folder stands for that folder (the link stays).
        """
        try:
            self._check()
        except OSError as exc:  # e.g. a name too long for stat() itself
            raise OutputError(self.final, f"cannot use this output path ({exc.strerror or exc})") from None
        except RuntimeError as exc:  # Path.resolve() on a symbolic link loop (Python 3.11)
            raise OutputError(self.final, f"cannot use this output path ({exc})") from None

    def _check(self) -> None:
        check_creatable(self.given)
        _check_name_lengths(self.final)
        if self.final.is_symlink():
            target = self.final.resolve()
            if not target.is_dir():
                raise OutputError(self.final, f"is a symbolic link to {os.readlink(self.final)}, which is not a folder")
            self.final = target  # replacing the link itself left the old output in the target and a hidden link behind
        if self.source is not None:
            source, final = self.source.resolve(), self.final.resolve()
            if source == final or source.is_relative_to(final):
                raise OutputError(self.final, f"output folder would replace the input {self.source}; choose another --out")
        if self.final.exists():
            if not self.final.is_dir():  # before --force is suggested: it would not help (QA 22)
                raise OutputError(self.final, "output path exists and is not a folder")
            if is_mount_point(self.final):  # QA 49: Docker's `-v host:/out` then `--out /out` failed after all the scoring
                raise OutputError(self.final, "is a mount point: the output is made beside its folder and moved into place, "
                                              "which a mount point cannot be; give a folder inside it")
            if all(system_file(p) for p in self.final.iterdir()):
                return check_creatable(self.final)  # an empty folder (made for the output) is filled, --force or not
            if not (self.final / self.marker).is_file():  # said before --force is suggested, which would not help (review rev29)
                raise OutputError(self.final, f"folder is not an earlier triage output (no {self.marker}); "
                                              "--force replaces only those, choose another --out")
            others = foreign_files(self.final, self.only) if self.only is not None else []
            if others:
                raise OutputError(self.final, f"folder holds files this command does not write ({', '.join(others[:3])}"
                                              f"{', ...' if len(others) > 3 else ''}); --force replaces only an earlier output, choose another --out")
            if not self.force:
                raise OutputError(self.final, "output already exists; use --force to replace it")
        check_creatable(self.final)

    def __enter__(self) -> Path:
        self.check()
        parent = self.final.parent
        if not parent.exists():
            top = parent
            while not top.parent.exists():
                top = top.parent
            try:
                parent.mkdir(parents=True)
            except OSError as exc:
                shutil.rmtree(top, ignore_errors=True)  # it did not exist: whatever of it exists now is ours
                raise OutputError(parent, f"cannot create the output's folder ({exc.strerror or exc})") from None
            self._created_parent = top
        remove_stale_partials(parent, self.final.name)
        self.staging = parent / f".{self.final.name}{PARTIAL_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self.staging.mkdir()
        except OSError as exc:
            raise OutputError(parent, f"cannot write here ({exc.strerror or exc})") from None
        return self.staging

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self._discard()
            if isinstance(exc, OSError):  # e.g. a full disk: one clear error, nothing left behind
                raise self._os_error(exc) from None
            if isinstance(exc, OutputError) and self._in_staging(exc.path):  # name the output, not the vanished staging folder
                detail = re.sub(r"^cannot write \((.*)\)$", r"\1", exc.message)
                raise OutputError(self.final, f"cannot write the output ({detail}); nothing was written") from None
            return False
        trash = None
        try:
            if self.final.exists():
                trash = self.final.parent / f".{self.final.name}{REPLACED_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
                os.rename(self.final, trash)
            os.rename(self.staging, self.final)
        except OSError as exc:
            if trash is not None and not self.final.exists():
                os.rename(trash, self.final)
                trash = None
            self._discard()
            raise OutputError(self.final, f"cannot move the finished output into place ({exc.strerror or exc})") from None
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        return False

    def _os_error(self, exc: OSError) -> TriageError:
        """An OS error while writing becomes an :class:`OutputError` (or an :class:`InputError` if
        it concerns a file outside the staging folder, e.g. the input vanished while thumbnails were re-read)."""
        problem = os.strerror(exc.errno) if exc.errno in errno.errorcode else (exc.strerror or str(exc).strip() or type(exc).__name__)
        filename = os.fsdecode(exc.filename) if isinstance(exc.filename, (str, bytes)) else None
        if filename and not self._in_staging(filename):
            return InputError(filename, problem.splitlines()[0][:160])
        return OutputError(self.final, f"cannot write the output ({problem.splitlines()[0][:160]}); nothing was written")

    def _in_staging(self, path: str | Path) -> bool:
        return self.staging is not None and Path(path).absolute().is_relative_to(self.staging)

    def _discard(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
        if self._created_parent is not None:
            shutil.rmtree(self._created_parent, ignore_errors=True)


@contextmanager
def written_whole(out: Path, what: str = ""):
    """A temporary path beside ``out`` that becomes ``out`` when the block ends, or vanishes whatever stops it (a full
    disk, Ctrl-C); an OS error is one :class:`OutputError` naming ``out`` ("cannot write{what} (...)")."""
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        yield partial
        os.replace(partial, out)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(out, f"cannot write{what} ({exc.strerror or exc})") from None
        raise


def remove_stale_partials(parent: Path, name: str) -> None:
    """Delete staging (and swapped-out) folders of runs whose process is gone (e.g. killed with SIGKILL).

    Names are compared as strings, not as glob patterns: an output named ``a[1]`` is matched exactly.
    """
    for mark in (PARTIAL_MARK, REPLACED_MARK):
        prefix = f".{name}{mark}"
        for path in parent.iterdir():
            if not path.name.startswith(prefix):
                continue
            pid_text = path.name[len(prefix):].split("-")[0]
            if pid_text.isdecimal() and not _alive(int(pid_text)):
                shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_thumbnails(folder: Path, images: Iterable[tuple[int, np.ndarray]], *, quality: int = 90) -> dict[int, str]:
    """JPEGs named by frame index, written one by one from (frame_index, RGB image) pairs; returns
    frame_index -> path relative to the output folder."""
    (folder / THUMBNAILS_DIR).mkdir(exist_ok=True)
    written = {}
    for frame_index, rgb in images:
        rel = f"{THUMBNAILS_DIR}/frame_{frame_index:07d}.jpg"
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise OutputError(folder / rel, "JPEG encoding failed")
        (folder / rel).write_bytes(data.tobytes())
        written[frame_index] = rel
    return written


def outputs_complete(folder: Path) -> bool:
    """Whether a study folder holds its three tables and every thumbnail they name (a thumbnails/
    folder pruned or a table damaged after the run: not complete, so a batch triages it again)."""
    try:
        if not all((folder / name).is_file() for name in (FRAMES_FILE, EVENTS_FILE, TOP_FRAMES_FILE)):
            return False
        with open(folder / FRAMES_FILE, "rb") as fh:  # its footer (QA 62 #6: an empty or cut frames.parquet counted as complete)
            pq.read_metadata(fh)
        named: set[str] = set()
        for table in (EVENTS_FILE, TOP_FRAMES_FILE):
            with open(folder / table, "rb") as fh:  # a file object: pyarrow wants UTF-8 paths
                named.update(name for name in pq.read_table(fh, columns=["thumbnail"]).column("thumbnail").to_pylist() if name)
    except (OSError, pa.ArrowException, KeyError):
        return False
    return all((folder / name).is_file() for name in named)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, default=json_default) + "\n")


def json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
