"""SHA-256 digests of inputs and weights (provenance, resumable batches), without importing torch."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

from .model_config import CONFIG_NAME, WEIGHTS_NAME


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a regular file.

    Raises:
        OSError: unreadable, or not a regular file (opened non-blocking, so a FIFO never hangs).
    """
    digest = hashlib.sha256()
    with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, socket or device cannot be hashed)", str(path))
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_digests(path: str | Path) -> dict[str, str]:
    """SHA-256 of each file that makes the weights: {name: digest} for a folder's config.json and
    model.safetensors (those present), or for a single weights file."""
    path = Path(path)
    if not path.is_dir():
        return {path.name: file_sha256(path)}
    return {name: file_sha256(path / name) for name in (CONFIG_NAME, WEIGHTS_NAME) if (path / name).exists()}


def weights_sha256(path: str | Path, digests: dict[str, str] | None = None) -> str:
    """SHA-256 of a weights file, or of config + tensors for a weights folder (of their digests, in that
    order). ``digests``: :func:`weights_digests` of ``path`` when the caller has them (no file is read twice)."""
    path = Path(path)
    digests = digests if digests is not None else weights_digests(path)
    if not path.is_dir():
        return digests[path.name]
    return hashlib.sha256("".join(digests[n] for n in (CONFIG_NAME, WEIGHTS_NAME) if n in digests).encode()).hexdigest()
