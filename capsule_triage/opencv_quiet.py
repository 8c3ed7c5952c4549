"""OpenCV's log, silenced while the package decodes an image and set back after.

OpenCV's decoders print a line per damaged image (libjpeg's "Corrupt JPEG data"); the reader reports such frames itself
(skipped, counted, named in run.json): the lines would only break the one `Error:` line of a bad input (400 damaged PNGs
printed 428 lines). The level was set once, at import, for the whole process: a library caller's own OpenCV lost its
warnings (QA 82 #3). Decoding threads share one silence: the level is set back when the last of them is done.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import cv2

_lock = threading.Lock()
_inside = 0
_level_before = None


@contextlib.contextmanager
def opencv_silenced() -> Iterator[None]:
    """OpenCV's log level SILENT inside, the caller's level again after."""
    global _inside, _level_before
    with _lock:
        if not _inside:
            _level_before = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if not _inside:
                cv2.utils.logging.setLogLevel(_level_before)
