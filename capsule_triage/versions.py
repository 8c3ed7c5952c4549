"""What code produced a result: package versions and, from a source checkout, its git commit
(recorded in run.json and the bench JSON; QA 24: '0.1.0' alone did not say which code ran)."""

from __future__ import annotations

import platform
import re
from functools import cache
from pathlib import Path

from . import __version__

PACKAGES = ("torch", "torchvision", "timm", "av", "numpy", "pyarrow", "opencv-python-headless", "onnxruntime", "openvino")


def package_versions() -> dict[str, str]:
    """Python's, ours (with the checkout's commit when run from one) and the libraries' that score frames."""
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "capsule-triage": __version__}
    if commit := code_commit():
        versions["capsule-triage-commit"] = commit
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return versions


def version_line() -> str:
    """"capsule-triage 0.1.0 (bd82d29a1f3c)": the version, and the commit when run from a checkout."""
    commit = code_commit()
    return f"capsule-triage {__version__}" + (f" ({commit[:12]})" if commit else "")


@cache
def code_commit() -> str | None:
    """The commit of the checkout this package was imported from, read once: a batch that outlives a
    ``git pull`` records the code it runs, not the newer one. Uncommitted edits are not seen."""
    return checkout_commit(Path(__file__).resolve().parent.parent)


_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256 repositories


def checkout_commit(folder: Path) -> str | None:
    """The commit checked out in ``folder`` (a git checkout, worktree or submodule), read from its files
    without running git; None for an installed wheel, an unborn branch or anything unexpected."""
    try:
        git = folder / ".git"
        if git.is_file():  # a worktree or submodule: "gitdir: <path>", relative to the checkout
            git = (folder / _read(git).split(":", 1)[1].strip()).resolve()
        head = _read(git / "HEAD")
        if not head.startswith("ref: "):
            return head if _SHA.fullmatch(head) else None  # a detached HEAD
        ref = head[5:]
        common = (git / _read(git / "commondir")).resolve() if (git / "commondir").is_file() else git
        for base in (git, common):
            if (base / ref).is_file():
                sha = _read(base / ref)
                return sha if _SHA.fullmatch(sha) else None
        for line in _read(common / "packed-refs", limit=1 << 28).splitlines():
            sha, _, name = line.partition(" ")
            if name == ref and _SHA.fullmatch(sha):
                return sha
    except (OSError, IndexError, ValueError):
        pass
    return None


def _read(path: Path, limit: int = 1 << 16) -> str:
    """A regular file's text, up to ``limit`` bytes (a FIFO or a huge file where git keeps a small one:
    refused, not waited on)."""
    if not path.is_file() or path.stat().st_size > limit:
        raise ValueError(path)
    return path.read_text().strip()
