"""The input's state and hash: what tells a changed video or frame folder apart, with or without
reading it (``run.json``'s ``input.sha256`` and ``input.state_sha256``; a batch re-run skips a study
whose state is the recorded one)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from .digests import file_sha256
from .errors import InputChanged, InputError, TriageError, path_exists, unexpanded_note


def check_source(path: str | Path, *, empty_ok: bool = False) -> None:
    """Refuse a source that cannot be triaged before anything is loaded (``triage run`` checks it before the
    model, so a mistyped path is said at once, not after seconds of loading PyTorch): missing, a broken link,
    not a regular file or folder, unreadable, empty (unless ``empty_ok``: a batch first takes an empty file's state,
    as ``cp`` makes the file before it writes it; QA 103 #1).

    Raises:
        InputError: naming the path and the problem.
    """
    path = Path(path)
    if not path_exists(path):
        if path.is_symlink():
            raise InputError(path, "broken symbolic link (its target is missing, or it is part of a symlink loop)")
        raise InputError(path, "no such file or directory" + unexpanded_note(path))
    if path.is_dir():
        return
    if not path.is_file():
        raise InputError(path, "not a regular file (a FIFO, socket or device cannot be triaged)")
    if not os.access(path, os.R_OK):
        raise InputError(path, "permission denied")
    if not empty_ok and path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")


def gone(path: str | Path) -> bool:
    """Whether nothing is at ``path`` now (not even a broken link): a study moved or deleted after a batch listed it.
    One that cannot be reached (a folder on its path this user cannot search) is there: :func:`check_source` fails it
    in its own words (rev72 #1: ``os.path.lexists`` said "no longer found" and the night ended as if nothing were wrong)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:  # there, but not reachable: not gone
        pass
    return False


def _folder_files(folder: Path, own_csv: bool = True) -> list[Path]:
    """A frame folder's images in natural order, then its own ``timestamps.csv`` if it has one and ``own_csv`` (its
    times are part of the study: an edited CSV moves events, so a batch scores the study again; a run that times the
    frames otherwise, ``--fps`` or ``--timestamps OTHER``, leaves it out: QA 36 L7)."""
    from .folder_times import own_timestamps
    from .frame_folder import list_frame_images

    try:
        csv = own_timestamps(folder) if own_csv else None
    except InputError:  # two of them: the run refuses the folder, naming both
        csv = None
    return list_frame_images(folder) + ([csv] if csv else [])


def source_state(path: str | Path, *, own_csv: bool = True) -> tuple:
    """What tells a changed input apart without reading it: (name, inode, size, mtime, ctime) of the
    video file, or of every image of a frame folder and its own timestamps.csv (its listing included).
    The ctime catches a rewrite that restores the modification time (``cp -p``, an anonymiser calling utime)."""
    path = Path(path)

    def state(p: Path) -> tuple:
        try:
            st = p.stat()
        except OSError:  # a frame that is a broken or looping link: the link's own state
            if not p.is_symlink():
                raise
            st = p.lstat()
        return p.name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns

    try:
        return tuple(map(state, _folder_files(path, own_csv))) if path.is_dir() else state(path)
    except OSError:
        return ()  # probe names the problem


def folder_names(state: tuple, images: int) -> list[str]:
    """A frame folder's image names by frame index, from its :func:`source_state` (its images in the reader's
    natural order come first, then its own timestamps.csv)."""
    return [entry[0] for entry in state[:images]]


def state_digest(state: tuple) -> str:
    """SHA-256 of a :func:`source_state` (what ``run.json`` records as ``input.state_sha256``)."""
    return hashlib.sha256(json.dumps(state).encode("utf-8", "surrogateescape")).hexdigest()


SETTLE_SECONDS = 3.0  # file times newer than this may not show a rewrite (1-2 s timestamps on FAT, HFS+, ext2)


# An input modified this recently may be a copy still being written: watched for WATCH_SECONDS before it fails, and held
# (pending) by the batch worker if it lost frames.
RECENT_SECONDS = 60.0
WATCH_SECONDS = 2.0  # for this long (a copy writes more often: cp, rsync and file managers write every few milliseconds)


def seconds_since_written(path: str | Path, state: tuple) -> float | None:
    """Seconds since the last write to the input at ``path``: the newest modification time of the files of its
    :func:`source_state` and, for a frame folder, of the folder itself (an image added to it: a copy that keeps each
    image's own time, ``rsync -a``, ``cp -p``, still changes the folder's; rev84 #1); a time in the future, a
    recorder's clock ahead, counts as none (rev70 #2). None: no file (a batch's ``--settle``)."""
    entries = (state,) if state and isinstance(state[0], str) else state
    times = [entry[3] for entry in entries]
    if Path(path).is_dir():
        try:
            times.append(os.stat(path).st_mtime_ns)
        except OSError:
            pass
    now = time.time_ns()
    written = [t for t in times if t <= now + SETTLE_SECONDS * 1e9]
    return max(0.0, (now - max(written)) / 1e9) if written else None


def recently_modified(state: tuple, *, inode_changes: bool = True) -> bool:
    """Whether a file of a :func:`source_state` was written in the last :data:`RECENT_SECONDS`, or with ``inode_changes``
    its inode changed then (its ctime: a copy that restores the modification time, ``cp -p``, also sets it)."""
    entries = (state,) if state and isinstance(state[0], str) else state
    last, now = slice(3, 5 if inode_changes else 4), time.time_ns()  # (name, inode, size, mtime, ctime)
    # a time in the future (a recorder's clock ahead, kept by cp -p) is no recent write: it would stay "recent" for hours (rev70 #2)
    return any(now - RECENT_SECONDS * 1e9 < max(entry[last]) <= now + SETTLE_SECONDS * 1e9 for entry in entries)


def being_written(path: str | Path, earlier_state: tuple | None, *, watch_seconds: float = WATCH_SECONDS, own_csv: bool = True) -> bool:
    """Whether the input's files changed since ``earlier_state`` (:func:`source_state`): a file still
    being copied into an archive fails as truncated or changing, and is not a bad input yet. An input
    modified in the last :data:`RECENT_SECONDS` is watched up to ``watch_seconds`` for another write
    (QA 47: a file that failed to open in a few milliseconds had not changed yet, so six exports still being
    copied in were failed studies and a red night)."""
    if not earlier_state:
        return False
    deadline = time.monotonic() + (watch_seconds if recently_modified(earlier_state) else 0.0)
    while True:
        try:
            now = source_state(path, own_csv=own_csv)
        except (OSError, TriageError):
            return False
        if not now:  # deleted meanwhile (source_state says so by ()): a failure like any other
            return False
        if now != earlier_state:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def settled_state_digest(state: tuple) -> str | None:
    """:func:`state_digest` of a state whose files were last modified more than ``SETTLE_SECONDS``
    ago, else None (as git does with its index: on a file system with coarse times a file rewritten
    within the same second at the same size keeps its state)."""
    entries = (state,) if state and isinstance(state[0], str) else state
    if not entries or any(entry[3] > time.time_ns() - SETTLE_SECONDS * 1e9 for entry in entries):  # a write sets both times
        return None
    return state_digest(state)


def hashed_state(path: str | Path, *, own_csv: bool = True) -> tuple[str, tuple] | None:
    """The input's hash with the file state that held while it was taken; None when the input
    changed meanwhile or cannot be read (a hash is only worth recording with the state it belongs to).
    ``own_csv``: a frame folder's timestamps.csv is part of it (:func:`source_sha256`)."""
    before = source_state(path, own_csv=own_csv)
    try:
        sha = source_sha256(path, own_csv=own_csv)
    except (OSError, InputError):
        return None
    return (sha, before) if before and source_state(path, own_csv=own_csv) == before else None


def hash_unchanged(path: Path, before: tuple, *, own_csv: bool = True) -> str:
    """The input's hash, after checking that it is the input that was scored: a file replaced,
    appended to or deleted during the run was recorded with the new file's hash and the old file's
    size and scores (or ended in a traceback). A file of it that cannot be read while its state holds is
    said as such (review rev33: a folder's unreadable timestamps.csv, unused under --fps, read "input changed")."""
    changed = InputChanged(path, "input changed while it was being triaged (still being written, replaced or deleted?); "
                               "nothing was written")
    if not before:
        raise changed
    try:
        sha = source_sha256(path, own_csv=own_csv)
    except (OSError, InputError) as exc:
        if source_state(path, own_csv=own_csv) != before:
            raise changed from None
        if isinstance(exc, InputError):
            raise
        raise InputError(Path(os.fsdecode(exc.filename)) if exc.filename else path, f"cannot read ({exc.strerror or exc})") from None
    if source_state(path, own_csv=own_csv) != before:
        raise changed
    return sha


def source_sha256(path: str | Path, *, own_csv: bool = True) -> str:
    """The input hash recorded in run.json: a video file's bytes, or a frame folder's image names
    and contents in natural order, then its own timestamps.csv's (a folder without one hashes as before)."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    from .folder_times import TIMESTAMPS_FILE, unreadable_csv

    digest = hashlib.sha256()
    for image in _folder_files(path, own_csv):
        digest.update(image.name.encode("utf-8", "surrogateescape"))
        if not image.is_file():  # a broken link, a FIFO or a device (skipped when read): what it is, not its contents
            digest.update(b"\0not a regular file:" + (os.fsencode(os.readlink(image)) if image.is_symlink() else b""))
            continue
        try:
            digest.update(file_sha256(image).encode())
        except OSError as exc:  # the CSV said as `triage run` says it; an image as it is (the batch names the file)
            raise unreadable_csv(image, exc) if image.name.casefold() == TIMESTAMPS_FILE else exc from None
    return digest.hexdigest()
