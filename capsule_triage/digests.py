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


def weights_sha256(path: str | Path) -> str:
    """SHA-256 of a weights file, or of config + tensors for a weights folder."""
    path = Path(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if (path / name).exists():
                digest.update(file_sha256(path / name).encode())
        return digest.hexdigest()
    return file_sha256(path)
