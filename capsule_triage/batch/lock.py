"""The ``OUT_DIR/.batch.lock`` that keeps two batch runs from writing the same folder at once.

The lock file is created with O_EXCL and records pid, host, start time and the process start time
(to tell a reused pid apart); a lock whose process is gone on this host is recovered.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..json_files import read_json
from ..errors import OutputError
from .layout import LOCK_FILE, now_utc

STALE_EMPTY_SECONDS = 30  # a lock with no record is taken over once this old (its writer killed between create and write)


BATCH, REPORT = "triage batch", "triage report"  # what holds the lock, in its record's "command"
NO_RECORD = "no_record_since"  # `triage report`'s "replaces" for a taken-over lock that had no record: its mtime


def acquire_lock(out_dir: Path, log: Callable[[str], None], recovered: list[str] | None = None) -> Path:
    """Create ``OUT_DIR/.batch.lock`` (O_EXCL); recover it if its process is dead on this host, saying so in
    ``recovered`` (a `Warning:` line of the run: QA 79 #2, a night killed by the OOM killer or a reboot was said in
    batch.log only).

    Raises:
        OutputError: a live process (or one on another host) holds the lock.
    """
    lock = out_dir / LOCK_FILE
    record = _record(BATCH)
    for _ in range(3):
        try:
            if _create(lock, record):
                return lock
        except OSError as exc:  # QA 33: an OUT_DIR made read-only (or a read-only file system) was a traceback, exit 1
            raise OutputError(out_dir, f"cannot write the batch lock ({exc.strerror or exc})") from None
        holder = read_lock(lock)
        if not holder and not os.path.lexists(lock):  # released between the create and the read (rev78 #2): no one's left
            continue
        if _live(lock, holder):
            raise OutputError(out_dir, _held(out_dir, lock, holder)) from None
        log(f"recovered stale lock of pid {holder.get('pid', '?')} (started {holder.get('started', '?')}, process gone)")
        if recovered is not None:
            recovered.append(f"{out_dir}: {_ended(holder)}")
        try:
            lock.unlink(missing_ok=True)
        except OSError as exc:
            raise OutputError(out_dir, f"cannot remove the stale batch lock ({exc.strerror or exc})") from None
    raise OutputError(lock, "cannot take the batch lock (it keeps reappearing)")


@contextlib.contextmanager
def lock_for_pages(out_dir: Path) -> Iterator[None]:
    """Hold ``OUT_DIR/.batch.lock`` while ``triage report`` rewrites a batch folder's pages (QA 79 #9: it wrote them under
    a running night, which then wrote them again from other rows, and a night started meanwhile was not refused).

    The lock of a run whose process is gone is held too, its record kept in ours (``replaces``) and put back after, for
    the next night to recover and say (rev78 #4: the pages were written without a lock). A folder the lock cannot be
    written in goes on without it (its pages cannot be written either, and say so themselves).

    Raises:
        OutputError: a batch run (or another ``triage report``) is writing the folder.
    """
    lock, record = out_dir / LOCK_FILE, _record(REPORT)
    try:
        mine = _create(lock, record)
        if not mine and _live(lock, holder := read_lock(lock)):
            raise OutputError(out_dir, _held(out_dir, lock, holder) + ": make the pages once it has finished")
        if not mine:  # a killed run's lock: taken over as the batch does, and given back
            try:
                night = holder or {NO_RECORD: lock.stat().st_mtime}  # rev79 #3: one with no record was not put back
            except FileNotFoundError:  # released between the create and the read (rev80 #3: the pages went unlocked)
                night = None
            lock.unlink(missing_ok=True)
            if not (mine := _create(lock, record := {**record, **({"replaces": night} if night else {})})):  # a night, just now
                raise OutputError(out_dir, _held(out_dir, lock, read_lock(lock)) + ": make the pages once it has finished")
    except OSError:
        mine = False
    try:
        yield
    finally:
        if mine and read_lock(lock).get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                if not (night := record.get("replaces")):
                    lock.unlink()
                elif NO_RECORD in night:  # empty again, and as old as it was: the next night takes it over at once, and says so
                    write_lock_record(lock, None, mtime=night[NO_RECORD])
                else:  # in one rename (rev79 #2: a night starting between an unlink and a create lost it)
                    write_lock_record(lock, night)


def _record(command: str) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": now_utc(), "pid_start": _process_start(os.getpid()),
            "command": command}


def _create(lock: Path, record: dict) -> bool:
    """Write ``record`` to a new ``lock`` (O_EXCL): False if it exists.

    Raises:
        OSError: it cannot be written (none is left behind: an empty lock would refuse every run for 30 s).
    """
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        with contextlib.suppress(OSError):  # not on FAT/exFAT, which refuse it (rev45): the umask's mode then
            os.fchmod(fd, 0o644)  # whatever the umask (rev44): another service user's run must read it to tell a dead holder
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError:  # a full disk
        lock.unlink(missing_ok=True)
        raise
    return True


def write_lock_record(lock: Path, record: dict | None, mtime: float | None = None) -> None:
    """Replace our ``lock`` by ``record`` (None: an empty lock, dated ``mtime``) in one rename."""
    tmp = lock.with_name(f"{lock.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text("" if record is None else json.dumps(record) + "\n")
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o644)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, lock)
    finally:
        tmp.unlink(missing_ok=True)


def _live(lock: Path, holder: dict) -> bool:
    return "unreadable" in holder or not is_stale(lock, holder)


def _ended(holder: dict) -> str:
    """What a recovered lock says of the run that held it (QA 79 #2; rev78 #3: 'pid ?' for a lock with no record, and a
    killed `triage report` was said to have left studies undone)."""
    if not holder:
        return "a batch lock with no record (a run killed as it started?) was taken over"
    started = f"started {holder.get('started', '?')} (pid {holder.get('pid', '?')}) ended without finishing"  # (rev79 #4)
    if holder.get("command") != REPORT:
        return (f"the batch run {started} (killed, or the machine restarted?); its lock was recovered, and what it left "
                "undone is triaged now")
    night = holder.get("replaces")
    night = night if isinstance(night, dict) and night else None
    return (f"a `triage report` {started} (killed, or the machine restarted?); its lock was recovered"
            + ("" if not night else "; it had taken over a batch lock with no record (a run killed as it started?)"
               if NO_RECORD in night else f"; it had taken over that of {_ended(night)}"))


def _held(out_dir: Path, lock: Path, holder: dict) -> str:
    """Who holds a live lock, for the refusal."""
    if "unreadable" in holder:  # QA 51: another user's lock under umask 077 read as garbled, and was removed live
        return (f"the batch lock {LOCK_FILE} cannot be read ({holder['unreadable']}; it is {_owner(lock)}'s): another "
                "batch run may be writing here; remove it if none is")
    if not holder:  # QA 79 #10: 'another batch run (pid ?)' for 30 s
        return (f"the batch lock {LOCK_FILE} has no record yet (a run starting this moment, or one killed as it started: "
                f"taken over once {STALE_EMPTY_SECONDS} s old)")
    pid = holder["pid"]
    who = "`triage report`" if holder.get("command") == REPORT else "another batch run"
    if holder.get("host") == socket.gethostname():
        return f"{who} (pid {pid}) is writing here"
    # QA 62 #5: a container named anew each night (docker run --rm) never saw its killed run's lock go
    return (f"{who} (pid {pid} on {holder.get('host')}, started {holder.get('started', '?')}) may be writing here; this host "
            f"({socket.gethostname()}) cannot see that host's processes: if none runs there, remove {lock}")


def release_lock(lock: Path) -> None:
    """Remove our lock. If OUT_DIR can no longer be written (made read-only while the batch ran), it stays:
    the next run recovers a lock whose process is gone, and the batch's own error has been said (QA 33: this
    raised over it, a traceback instead of the summary's Error line)."""
    if read_lock(lock).get("pid") == os.getpid():
        try:
            lock.unlink(missing_ok=True)
        except OSError:
            pass


def read_lock(lock: Path) -> dict:
    """The lock's record; {} if gone or garbled (no whole-number pid or no host: QA 79 #10, such a lock was refused for
    good); ``{"unreadable": why}`` if it cannot be read (another user's)."""
    try:
        data = read_json(lock)
        return data if isinstance(data, dict) and type(data.get("pid")) is int and isinstance(data.get("host"), str) else {}
    except PermissionError as exc:
        return {"unreadable": exc.strerror or str(exc)}
    except (OSError, ValueError):
        return {}


def _owner(path: Path) -> str:
    try:
        uid = path.stat().st_uid
    except OSError:
        return "another user"
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"user {uid}"


def is_stale(lock: Path, holder: dict) -> bool:
    if not holder:  # empty/garbled: killed between create and write, unless it is being written now
        try:
            return time.time() - lock.stat().st_mtime > STALE_EMPTY_SECONDS
        except FileNotFoundError:
            return True
    if holder.get("host") != socket.gethostname():
        return False  # cannot see that host's processes
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's (QA 51: a reused pid of another user's daemon held the lock for good): compared below
    except (KeyError, ValueError, TypeError):
        return False
    recorded = holder.get("pid_start")  # the pid is alive: is it still the same process?
    return bool(recorded) and _process_start(int(holder["pid"])) not in (None, recorded)


def _process_start(pid: int) -> str | None:
    """Start time of a process (clock ticks since boot, Linux /proc), to tell a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None

