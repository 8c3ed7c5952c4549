"""Times given by a library caller, checked to be seconds as numbers: numpy's and Python's time types are refused, not
read as counts (QA 105 #3: a timedelta64[ms] array was taken as seconds, 1,000 times too long). Used by
:func:`capsule_triage.ranking.rank` and :class:`capsule_triage.frames.FrameBatch`; so are times in float32 too coarse
to tell frames apart."""

from __future__ import annotations

import datetime
import decimal
import math
import numbers

import numpy as np

TIME_TYPES = (datetime.timedelta, datetime.datetime, np.timedelta64, np.datetime64)
STEP_LIMIT = 0.01  # seconds: the coarsest step times in a float narrower than float64 may have (float32: to 1.3e5 s, 36 h)


def time_type_fix(array: np.ndarray) -> str:
    """How to turn such times into seconds (rev99 #9: a datetime64 cannot be divided by a timedelta)."""
    dates = array.dtype.kind == "M" or (array.dtype.kind == "O" and any(isinstance(v, (datetime.datetime, np.datetime64))
                                                                        for v in array.flat))
    return "a time type: " + ("subtract the first time, then " if dates else "") + "divide by np.timedelta64(1, 's')"


def is_time_type(array: np.ndarray) -> bool:
    """Whether an array holds times of a time type (timedelta64, datetime64, or Python's in an object array)."""
    return array.dtype.kind in "mM" or (array.dtype.kind == "O" and any(isinstance(v, TIME_TYPES) for v in array.flat))


def as_seconds(name: str, values) -> np.ndarray:
    """``values`` as float64 seconds, or ValueError naming ``name``: time types are refused, as are values that are not
    numbers; an object array of numbers is taken (rev96 #4: an SQL NUMERIC column's Decimals; rev97 #7: not text, bools
    or None)."""
    array = np.asarray(values)
    if is_time_type(array):
        raise ValueError(f"{name} must be seconds as numbers, got {array.dtype} ({time_type_fix(array)})")
    numbers_only = array.dtype.kind in "iuf" or (array.dtype.kind == "O" and all(
        isinstance(v, (numbers.Real, decimal.Decimal)) and not isinstance(v, bool) for v in array.flat))
    if numbers_only:
        return fine_enough(name, array).astype(np.float64, copy=False)
    raise ValueError(f"{name} must be seconds as numbers (float64), got {array.dtype}")


def fine_enough(name: str, array: np.ndarray) -> np.ndarray:
    """``array`` of seconds, or ValueError naming ``name`` where a float narrower than float64 cannot tell its times apart
    to :data:`STEP_LIMIT` (QA 116 #4: Unix times in float32 are 128 s apart, so a study's frames fell onto a few times)."""
    if array.size and array.dtype.kind == "f" and array.dtype.itemsize < 8:
        latest = np.abs(array[np.isfinite(array)]).max(initial=0)  # (rev105 #7: a NaN among them hid the step)
        if (step := float(np.spacing(latest))) > STEP_LIMIT:
            raise ValueError(f"{name} in {array.dtype} cannot tell times apart by less than {step:g} s at {float(latest):g} s: "
                             "give them as float64")
    return array


def frame_period_seconds(value) -> float:
    """A frame period as a float, or ValueError naming the value: any real number of one value (rev96 #3: a 0-d array, a
    Decimal), not text, a bool or a time type (QA 105 #5: "0.25" was numpy's "ufunc 'isfinite' not supported")."""
    seconds = math.nan
    if not isinstance(value, (bool, str, bytes, *TIME_TYPES)) and np.ndim(value) == 0 and np.asarray(value).dtype.kind not in "mMbc":
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            pass
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"frame_period must be a frame's duration in seconds, finite and > 0 (or None), got {value!r}")
    return seconds
