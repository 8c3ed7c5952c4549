"""Reading back the JSON files the tool keeps (run.json, backends.json, config.json, batch records, locks)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

MAX_JSON_BYTES = 64 << 20  # the largest run.json of a 100,000-frame study is well under 1 MB


def read_json(path: str | Path) -> Any:
    """The JSON value in ``path``: a regular file, read without waiting (a FIFO or device there is refused, never read).

    Raises:
        OSError: the file cannot be read.
        ValueError: not a regular file, over :data:`MAX_JSON_BYTES`, not UTF-8 JSON, or nested too deeply for Python's
            parser (QA 55: a file of 100,000 nested brackets raised RecursionError, a RuntimeError that every caller's
            ``except ValueError`` let through: one such run.json in OUT_DIR ended every night's batch with a traceback;
            review rev50: a FIFO named run.json or .batch.lock hung the night).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode):  # before open(): a folder there said "[Errno 21] Is a directory: 3" (QA 91 #8)
        os.close(fd)
        raise ValueError("not a regular file")
    with open(fd, "rb") as fh:
        if found.st_size > MAX_JSON_BYTES:
            raise ValueError(f"{found.st_size:,} bytes, more than any file of the tool's holds")
        data = fh.read(MAX_JSON_BYTES + 1)
    try:
        return json.loads(data.decode("utf-8-sig"))
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None
