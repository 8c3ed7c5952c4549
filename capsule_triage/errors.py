"""Error types with messages meant for the person running the tool.

Every error that is the input's fault is a :class:`TriageError` carrying the path it concerns; the
CLI prints it as one line ``Error: <path>: <what is wrong>`` and exits with code 2.
"""

from __future__ import annotations

import errno
import os
import traceback
from pathlib import Path


def path_argument(value, name: str) -> Path:
    """A library function's path argument as a Path; ValueError naming it when it is no path (QA 68 #4: an int was a
    TypeError from pathlib, after the input had been probed)."""
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{name} must be a path (str or pathlib.Path), got {type(value).__name__}")
    return Path(value)


class TriageError(Exception):
    """A problem with an input (video, frame folder, weights, preset) the user can fix.

    Args:
        path: the file or folder the problem concerns.
        message: what is wrong, in one line, without the path.

    Attributes:
        warnings: the ``Warning:`` lines of the run it ended, said before its ``Error:`` line (a batch refused after
            taking its lock: a killed night it recovered, hub weights from a cache; rev79 #1).
    """

    warnings: tuple[str, ...] | list[str] = ()

    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")

    def __reduce__(self):  # pickles as (path, message): errors cross process boundaries (decoder, batch workers)
        return type(self), (self.path, self.message)


class InputError(TriageError):
    """The video or frame folder cannot be read."""


class InputChanged(InputError):
    """The input changed while it was triaged (still being written, replaced or deleted): not a bad input, it is retried."""


class WeightsError(TriageError):
    """The weights or their config are missing, unsafe or inconsistent."""


class PresetError(TriageError):
    """A pipeline preset is missing or malformed."""


class OutputError(TriageError):
    """The output directory cannot be written (exists without --force, disk full, ...)."""


class DeviceError(TriageError):
    """The compute device failed: out of memory for even one frame, or a device error that leaves it
    unusable in this process. Not the input's fault: a batch stops and retries the study next run."""


class DataWarning(UserWarning):
    """Labelled data that is read only in part (mask folders, images outside the class folders, image
    types not read), or a setting that works but costs much on this machine (bf16 without native support):
    training and evaluation go on, and the CLI prints it as one ``Warning:`` line."""


def unexpanded_home(path: str | Path) -> str | None:
    """The ``~`` or ``~user`` (of a user this machine has) a relative path begins with: the shell left it
    as it was (quoted), so the path does not mean the home folder the user meant. Other names that begin
    with ``~`` (``~clip.mp4``, its default output ``~clip_triage``) are names like any other."""
    first = Path(path).parts[0] if Path(path).parts else ""
    return first if first.startswith("~") and os.path.expanduser(first) != first else None


def unexpanded_note(path: str | Path) -> str:
    """" ('~' was not expanded by the shell: quoted? in Python, os.path.expanduser)" for a path not found because of it,
    else "" (QA 78 #7: a library caller was asked about the shell only)."""
    tilde = unexpanded_home(path)
    return f" ({tilde!r} was not expanded by the shell: quoted? in Python, os.path.expanduser)" if tilde else ""


def path_exists(path: Path, error: type[TriageError] = InputError) -> bool:
    """Whether ``path`` exists (following links), but a path this user cannot reach is ``error`` naming it: EACCES from
    a folder on the path without search permission was a traceback from Python 3.11's ``Path.exists()`` (rev71 #1: a
    service user's ``triage run``/``triage batch`` of a folder it may not enter). Decided by errno, not by what a
    Python version's ``exists()`` does with it (rev72 #3)."""
    try:
        os.stat(path)
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EBADF):  # what pathlib counts as "not there"
            return False
        if exc.errno != errno.EACCES:
            raise error(path, f"cannot reach it ({exc.strerror or exc})") from None
        if os.path.islink(path):  # rev72 #6: the folder that cannot be searched is on the link's target's path
            target = os.path.realpath(path)  # rev73 #1: not by the path's text (a linked parent's ".." is another folder)
            raise error(path, f"permission denied (a link to {target}: a folder on its path cannot be searched by this user)") from None
        raise error(path, "permission denied (a folder on its path cannot be searched by this user)") from None
    except ValueError:  # an embedded NUL byte: no such path
        return False


# C0 and C1 controls and the Unicode line breaks Python's splitlines() also splits on (review rev22: U+2028)
_CONTROL = ({i: f"\\x{i:02x}" for i in (*range(0x20), *range(0x7F, 0xA0))} | {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
            | {i: f"\\u{i:04x}" for i in (0x2028, 0x2029)})


def one_line(text: object) -> str:
    """``text`` with its control characters escaped (a newline in a file name is ``\\n``), so a message or
    a batch.log line stays one line and cannot forge the next one (QA 24)."""
    return str(text).translate(_CONTROL)


def short_error(exc: BaseException) -> str:
    """An exception in one short line: an FFmpeg (PyAV) error's own message, without the errno and the file name
    the caller already prints; otherwise its first line."""
    if type(exc).__module__.startswith("av.") and getattr(exc, "strerror", None):
        return str(exc.strerror)[:160]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def describe_error(source: Path, exc: BaseException, *, out_dir: Path | None = None) -> str:
    """One line ``<path>: <problem>`` for any exception a study of ``source`` failed with (a full disk names the output
    folder, not the input; one of the machine says so)."""
    if isinstance(exc, TriageError):
        return str(exc)
    name = os.fsdecode(exc.filename) if isinstance(exc, OSError) and isinstance(exc.filename, (str, bytes)) and exc.filename else None
    where = Path(os.path.normpath(os.path.abspath(name))) if name else None
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT) and out_dir is not None:
        full = name if where is not None and not where.is_relative_to(os.path.abspath(out_dir)) else out_dir
        return f"{full}: {exc.strerror} (the outputs of {source} were not written)"  # QA 49: a full /dev/shm read as OUT_DIR's
    if isinstance(exc, OSError) and exc.strerror:
        if where is None or where.is_relative_to(os.path.abspath(source)):
            return f"{name or source}: {exc.strerror}"  # the study, or one of its images (first: an input inside OUT_DIR, rev84 #5)
        if out_dir is not None and where.is_relative_to(os.path.abspath(out_dir)):
            return f"{name}: {exc.strerror} (the outputs of {source} were not written)"  # QA 88 #4: OUT_DIR's folder alone named
        return f"{source}: {exc.strerror} ({name})"  # QA 33: named the Python interpreter the decoder process could not start
    if isinstance(exc, MemoryError) or "(-4:Insufficient memory)" in str(exc):  # QA 48: OpenCV's own words, a path into its source
        who = "OpenCV" if type(exc).__module__.startswith("cv2") else type(exc).__name__  # cv2's class is named `error`
        return f"{source}: out of memory ({who}); retried on the next run"
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    return f"{source}: {type(exc).__name__}{at}: {lines[0][:200] if lines else 'no message'}"
