"""What code produced a result: package versions and, from a source checkout, its git commit
(recorded in run.json and the bench JSON; QA 24: '0.1.0' alone did not say which code ran)."""

from __future__ import annotations

import platform
import re
from pathlib import Path

from . import __version__

PACKAGES = ("torch", "torchvision", "timm", "av", "numpy", "pyarrow", "opencv-python-headless", "onnxruntime", "openvino")


def package_versions() -> dict[str, str]:
    """Python's, ours (with the checkout's commit when run from one) and the libraries' that score frames."""
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "capsule-triage": __version__}
    if commit := checkout_commit(Path(__file__).resolve().parent.parent):
        versions["capsule-triage-commit"] = commit
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return versions


def checkout_commit(folder: Path) -> str | None:
    """The commit checked out in ``folder`` (a git checkout or worktree), read from its files without
    running git; None for an installed wheel or anything unreadable. Uncommitted edits are not seen."""
    try:
        git = folder / ".git"
        if git.is_file():  # a worktree: "gitdir: <path>"
            git = Path(git.read_text().split(":", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head if re.fullmatch(r"[0-9a-f]{40,64}", head) else None  # a detached HEAD
        ref = head[5:]
        common = Path((git / "commondir").read_text().strip()) if (git / "commondir").is_file() else git
        common = common if common.is_absolute() else git / common
        for base in (git, common):
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
        for line in (common / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split(" ", 1)[0]
    except (OSError, IndexError, ValueError):
        pass
    return None
