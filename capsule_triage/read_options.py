"""How a source is read (:class:`ReadOptions`), checked before any reading, and a frame folder's own
timestamps.csv applied as :func:`~capsule_triage.pipeline.triage_study` applies it."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

from .folder_times import MIN_FPS, with_own_timestamps

DEFAULT_FOLDER_FPS = 2.0  # capsule recorders take 2-6 frames/s; a frame folder without timestamps is read at 2 fps


@dataclass(frozen=True)
class ReadOptions:
    """How to read a source.

    Attributes:
        batch_size: frames per :class:`FrameBatch`.
        short_side: resize so the short side has this many pixels (None = source resolution).
        square_crop: centre-crop to a square (side = short side) after resizing.
        decoder_threads: threads the video decoder may use (set explicitly, never "all cores").
        folder_fps: frame rate assumed for a frame folder without a timestamp CSV.
        timestamps_csv: CSV with columns ``filename,pts_seconds`` giving each image's time.
        own_timestamps: time a frame folder by its own ``timestamps.csv`` when ``timestamps_csv`` is None (as
            :func:`~capsule_triage.pipeline.triage_study` does; ``folder_fps`` then reads only folders without one).
    """

    batch_size: int = 32
    short_side: int | None = None
    square_crop: bool = True
    decoder_threads: int = 1
    folder_fps: float = DEFAULT_FOLDER_FPS
    timestamps_csv: Path | None = None
    own_timestamps: bool = True

    def validate(self) -> None:
        """Raise ValueError naming the first field a preset or caller set to something unusable."""
        for name in ("batch_size", "decoder_threads", "short_side"):
            value = getattr(self, name)
            if name == "short_side" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:  # numpy's too (rev53)
                raise ValueError(f"{name} must be a whole number >= 1{' or None' if name == 'short_side' else ''}, got {value!r}")
        for name in ("square_crop", "own_timestamps"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.timestamps_csv is not None and not isinstance(self.timestamps_csv, (str, os.PathLike)):
            raise ValueError(f"timestamps_csv must be a path or None, got {self.timestamps_csv!r}")
        fps = self.folder_fps
        if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps < MIN_FPS:
            raise ValueError(f"folder_fps must be a finite number >= {MIN_FPS:g}, got {fps!r}")


def checked_options(options: ReadOptions) -> ReadOptions:
    """``options``, checked (:meth:`ReadOptions.validate`): a ``batch_size`` of 0 read a whole source as one batch."""
    if not isinstance(options, ReadOptions):
        raise ValueError(f"options must be a ReadOptions, got {type(options).__name__}")
    options.validate()
    return options


def timed(path: Path, options: ReadOptions) -> ReadOptions:
    """``options`` with a frame folder's own timestamps.csv as its ``timestamps_csv``, where it is used (see
    :func:`~capsule_triage.folder_times.with_own_timestamps`), else as they are."""
    if not options.own_timestamps or options.timestamps_csv is not None or not path.is_dir():
        return options
    return with_own_timestamps(options, path)[0]
