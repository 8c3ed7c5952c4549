"""Putting a study's finished folder into OUT_DIR: by rename, replacing an earlier one only when it holds nothing
but what the batch writes (a reviewer's notes are never deleted), and hard-linked copies of a folder's files."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from ..errors import OutputError
from ..output_names import OWN_INSIDE, foreign_files
from ..pipeline import RUN_OUTPUTS


def check_replaceable(final: Path) -> None:
    """A study's folder in OUT_DIR holds only what the batch writes there (or is not there yet).

    Raises:
        OutputError: a file in the folder's place, or files in it the batch does not write (a reviewer's notes):
            replacing it would delete them (QA 62 #1: they were deleted without a word; ``triage run --force`` refuses).
    """
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise OutputError(final, "is not a study folder of this batch (a file or link in its place); move it away and the "
                                 "study is triaged on the next run")
    if final.is_dir() and (others := foreign_files(final, RUN_OUTPUTS)):
        raise OutputError(final, f"holds files this batch does not write ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}), "
                                 "which scoring the study again would delete; move them out of the study's folder and the "
                                 "study is triaged by the next run of this command (its earlier results are kept until then)")


def install(work: Path, final: Path, *, whole_copy: bool = False) -> None:
    """Rename the finished study folder into place (replacing an outdated one, which must hold nothing else:
    :func:`check_replaceable`, unless ``work`` is a copy of all of it, ``whole_copy``, and nothing was added since)."""
    if not whole_copy:
        check_replaceable(final)  # again: a reviewer may have saved a file there while the study was scored
    elif final.is_dir() and (added := saved_since_copied(final, work)):
        raise OutputError(final, f"files were saved in it or removed while its pages were written ({', '.join(added[:3])}"
                                 f"{', ...' if len(added) > 3 else ''}): left as it is, the pages are written on the next run")
    trash = None
    if final.exists():
        trash = work.parent / f"{final.name}.replaced-{uuid.uuid4().hex[:8]}"
        os.rename(final, trash)
    try:
        os.rename(work, final)
    except OSError:  # QA 94 #3: the earlier results back in place, not left in .work (which the batch deletes at its end)
        if trash is not None:
            os.rename(trash, final)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def saved_since_copied(final: Path, work: Path) -> list[str]:
    """Paths (relative to ``final``) outside what the batch writes that changed in ``final`` after ``work`` was copied from
    it: added, deleted, or written again (another size or modification time, kept by a hard link and by ``copy2`` alike:
    an editor saves by writing a new file and renaming it over the old one), at any depth. Review rev58 #4: only top-level
    names were compared, so a note added in a reviewer's folder or saved again was lost; rev59 #5: one deleted came back."""
    now, then = _foreign_tree(final), _foreign_tree(work)
    return sorted(rel for rel in now.keys() | then.keys() if now.get(rel) != then.get(rel))


def _foreign_tree(folder: Path) -> dict[str, tuple]:
    """What ``folder`` holds outside what the batch writes: relative path -> a link's target, "folder", or a file's size
    and modification time."""
    tree = {}
    for name in foreign_files(folder, RUN_OUTPUTS):
        top = folder / name
        for path in [top, *sorted(top.rglob("*"))] if top.is_dir() and not top.is_symlink() else [top]:
            try:
                if path.is_symlink():
                    state = ("link", os.readlink(path))
                elif path.is_dir():
                    state = ("folder",)
                else:
                    info = path.lstat()
                    state = ("file", info.st_size, info.st_mtime_ns)
            except OSError:  # gone meanwhile
                continue
            tree[str(path.relative_to(folder))] = state
    return tree


def link_or_copy(src: str, dst: str) -> None:
    """A copytree ``copy_function``: a hard link (no bytes copied; the batch replaces files by rename, never in place,
    so the original is never changed through it), else a copy."""
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


def ignore_foreign_at(top: Path):
    """A copytree ``ignore`` leaving out what the batch does not write in ``top`` (a reviewer's notes on the earlier
    study's results are not the moved study's: review rev56, they then refused its every rescore)."""
    def ignored(folder, names):
        folder = Path(folder)
        if folder == top:
            return [n for n in names if n not in RUN_OUTPUTS]
        if folder.parent == top and folder.name in OWN_INSIDE:  # QA 66 #2: a reviewer's file in thumbnails/ or report/
            return [n for n in names if not OWN_INSIDE[folder.name].fullmatch(n)]
        return []
    return ignored
