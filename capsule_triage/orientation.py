"""A video frame turned and mirrored as a player shows it, by its display matrix.

A phone, a recorder or an editor may store frames sideways or mirrored and write a display matrix saying how to show
them (FFmpeg's ``AV_FRAME_DATA_DISPLAYMATRIX``, the track header's matrix of an MP4). Players apply it; so does the
reader, before scoring, and :mod:`~capsule_triage.frames_at` for the thumbnails. The matrix's axis-aligned part is
honoured: one of the eight quarter turns and mirrors (a matrix turning by another angle is taken to the nearest). A
mirror is what FFmpeg's ``frame.rotation`` cannot say (QA 87 #1: a left-right mirror was turned 180 degrees, a top-bottom
one ignored). Read per frame: an H.264 display-orientation message may change it part-way.
"""

from __future__ import annotations

import av
import numpy as np
from av.sidedata.sidedata import SideDataContainer

from .frames import DecodeStats

DISPLAY_MATRIX = av.sidedata.sidedata.Type.DISPLAYMATRIX
LEFT_RIGHT, TOP_BOTTOM = "left to right", "top to bottom"  # DecodeStats.mirrored, run.json frames_mirrored

# (clockwise degrees, mirror after the turn) by the signs of the matrix entries that carry the picture's axes
_AXES_KEPT = {(True, True): (0, ""), (False, False): (180, ""), (False, True): (0, LEFT_RIGHT), (True, False): (0, TOP_BOTTOM)}
_AXES_SWAPPED = {(True, False): (90, ""), (False, True): (270, ""), (True, True): (90, LEFT_RIGHT), (False, False): (270, LEFT_RIGHT)}


def display_turn(frame: av.VideoFrame) -> tuple[int, str]:
    """How ``frame`` is shown: ``(degrees clockwise, mirror)``, the picture turned by 0, 90, 180 or 270 degrees
    clockwise, then mirrored :data:`LEFT_RIGHT` or :data:`TOP_BOTTOM` (``""``: not); ``(0, "")`` without a display
    matrix.

    The matrix maps a stored pixel (x, y) to the shown (a x + c y, b x + d y) (FFmpeg's ``libavutil/display.h``; its
    translation only places the picture): with b = c = 0 the axes stay and the signs of a and d say which are reversed;
    with a = d = 0 they swap (b > 0 > c: a clockwise quarter turn; b, c > 0: the transpose, a turn and a mirror)."""
    # QA 110 #1: `frame.side_data` keeps its container on the frame, and the container points back at it: a cycle that
    # only the garbage collector frees, holding every decoded picture (12 MB at 4K) until it runs. A container of our
    # own refers to the frame, not the frame to it: freed with this call.
    side = SideDataContainer(frame).get(DISPLAY_MATRIX)
    if side is None:
        return 0, ""
    a, b, _, c, d = np.frombuffer(bytes(side), dtype=np.int32)[:5].tolist()
    if abs(a) + abs(d) >= abs(b) + abs(c):
        return _AXES_KEPT[(a >= 0, d >= 0)]
    return _AXES_SWAPPED[(b > 0, c > 0)]


def upright(image: np.ndarray, frame: av.VideoFrame, stats: DecodeStats | None = None) -> np.ndarray:
    """``image`` (decoded from ``frame``) turned and mirrored as a player shows it (:func:`display_turn`); a view, no
    copy. The turn and the mirror are noted in ``stats`` (``turned_degrees``, ``mirrored``: each once)."""
    clockwise, mirror = display_turn(frame)
    if stats is not None:
        if clockwise and clockwise not in stats.turned_degrees:
            stats.turned_degrees.append(clockwise)
        if mirror and mirror not in stats.mirrored:
            stats.mirrored.append(mirror)
    turned = np.rot90(image, -clockwise // 90) if clockwise else image  # np.rot90 turns counter-clockwise
    return turned[:, ::-1] if mirror == LEFT_RIGHT else turned[::-1] if mirror == TOP_BOTTOM else turned
