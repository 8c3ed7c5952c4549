"""A video frame turned and mirrored as a player shows it, by its display matrix.

A phone, a recorder or an editor may store frames sideways or mirrored and write a display matrix saying how to show
them (FFmpeg's ``AV_FRAME_DATA_DISPLAYMATRIX``, the track header's matrix of an MP4). Players apply it; so does the
reader, before scoring, and :mod:`~capsule_triage.frames_at` for the thumbnails. The matrix's axis-aligned part is
honoured: one of the eight quarter turns and mirrors (a matrix turning by another angle is taken to the nearest). A
mirror is what FFmpeg's ``frame.rotation`` cannot say (QA 87 #1: a left-right mirror was turned 180 degrees, a top-bottom
one ignored).
"""

from __future__ import annotations

import av
import numpy as np

from .frames import DecodeStats

DISPLAY_MATRIX = av.sidedata.sidedata.Type.DISPLAYMATRIX


def display_turn(frame: av.VideoFrame) -> tuple[int, bool]:
    """How ``frame`` is shown: ``(degrees clockwise, mirrored)``, the picture turned by 0, 90, 180 or 270 degrees
    clockwise, then, when ``mirrored``, mirrored left to right; ``(0, False)`` without a display matrix.

    The matrix maps a stored pixel (x, y) to the shown (a x + c y, b x + d y) (FFmpeg's ``libavutil/display.h``; its
    translation only places the picture)."""
    side = frame.side_data.get(DISPLAY_MATRIX)
    if side is None:
        return 0, False
    a, b, _, c, d = np.frombuffer(bytes(side), dtype=np.int32)[:5].tolist()
    if abs(a) + abs(d) >= abs(b) + abs(c):  # x stays across, y down (signs say which way)
        return {(True, True): (0, False), (False, False): (180, False), (False, True): (0, True),
                (True, False): (180, True)}[(a >= 0, d >= 0)]  # top-bottom: turned half round, then mirrored
    # x and y swap: (b > 0, c < 0) is a clockwise quarter turn; both positive the transpose, a turn and a mirror
    return {(True, False): (90, False), (False, True): (270, False), (True, True): (90, True),
            (False, False): (270, True)}[(b > 0, c > 0)]


def upright(image: np.ndarray, frame: av.VideoFrame, stats: DecodeStats | None = None) -> np.ndarray:
    """``image`` (decoded from ``frame``) turned and mirrored as a player shows it (:func:`display_turn`); a view, no
    copy. A turn and a mirror are noted in ``stats`` (``turned_degrees``, each turn once; ``mirrored``)."""
    clockwise, mirrored = display_turn(frame)
    if stats is not None:
        if clockwise and clockwise not in stats.turned_degrees:
            stats.turned_degrees.append(clockwise)
        stats.mirrored = stats.mirrored or mirrored
    turned = np.rot90(image, -clockwise // 90) if clockwise else image  # np.rot90 turns counter-clockwise
    return turned[:, ::-1] if mirrored else turned
