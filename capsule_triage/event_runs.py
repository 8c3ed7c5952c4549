"""The runs of flagged frames that become events, rule by rule: hysteresis on the smoothed scores, cuts where no frame
shows for the merge gap or more, merging of runs close in time, and taking in the frame that raised a run.
:func:`capsule_triage.ranking.find_events` composes them in that order. Pure numpy; positions are rows of the timeline,
times seconds of presentation time, ``period`` each frame's local period (:func:`capsule_triage.periods.frame_periods`).
"""

from __future__ import annotations

import numpy as np

from .periods import TIME_EPS


def hysteresis_mask(smoothed: np.ndarray, enter: float, leave: float, *, restart: np.ndarray | None = None) -> np.ndarray:
    """Two-threshold flagging.

    A frame is flagged from the first frame ``>= enter`` until (excluding) the first later frame
    ``< leave``; frames in between keep the previous state. Vectorised (forward fill).

    Args:
        smoothed: float [N] smoothed scores.
        enter: threshold that switches the state on; leave: below it the state switches off.
        restart: bool [N], True at the first frame after unseen time (:func:`cut_after`): the state starts over there,
            off, so a run after it begins where a smoothed score reaches ``enter`` (QA 99 #1: frames at 0.40 after 5 s
            without a view went on an event of 0.90 before them, and became an event of their own under enter 0.50).

    Returns:
        bool [N] mask of flagged frames.
    """
    if leave > enter:
        raise ValueError(f"leave threshold ({leave!r}) must be <= enter threshold ({enter!r})")
    s = np.asarray(smoothed)
    on = s >= enter
    decided = on | (s < leave) if restart is None else on | (s < leave) | restart
    # Index of the last frame at or before i whose state was decided (-1 = none yet -> off).
    last = np.maximum.accumulate(np.where(decided, np.arange(s.shape[0]), -1))
    return np.concatenate(([False], on))[last + 1]


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and inclusive end positions of the runs of True in ``mask``."""
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1


def cut_after(pts: np.ndarray, period: np.ndarray, merge_gap: float) -> np.ndarray:
    """bool [N-1]: True after frame i when the time no frame shows before the next (their step less frame i's period) is
    ``merge_gap`` or more, and at least half a period: what was not seen is in no event (review rev26). Never between
    frames of one time (rev93 #1: at merge gap 0, eleven repeated timestamps have a period of 0, and each split an event)."""
    steps = np.diff(pts)
    return (steps - period[:-1] >= np.maximum(merge_gap - TIME_EPS, period[:-1] / 2)) & (steps > 0)


def merged(pts: np.ndarray, period: np.ndarray, starts: np.ndarray, ends: np.ndarray, merge_gap: float,
           stretch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs (in time order) joined where the unflagged time between them (next start - last end - its period) is under
    ``merge_gap`` (QA 29: measured with one period in, at 2 frames/s 1.5 s apart split, at 6 merged), or is one frame in
    the frames' own rhythm (QA 64 #4: at 0.5 frames/s a frame is 2 s, the preset's merge gap, so one frame missed split a
    100-frame bleeding run into two events), or where they touch (runs that took in their peaks, at a merge gap of 0: rev92
    #3); never across a cut (``stretch`` as in :func:`take_in_peaks`; rev92 #2: the one-frame rule joined runs across one
    where the local periods were uneven)."""
    if len(starts) < 2:
        return starts, ends
    gaps = pts[starts[1:]] - pts[ends[:-1]] - period[ends[:-1]]
    lone = (starts[1:] - ends[:-1] == 2) & (pts[starts[1:]] - pts[ends[:-1]] <= period[ends[:-1]] + period[ends[:-1] + 1] + TIME_EPS)
    joined = (gaps < merge_gap - TIME_EPS) | lone | (starts[1:] - ends[:-1] == 1)
    new_group = np.concatenate(([True], ~joined | (stretch[starts[1:]] != stretch[ends[:-1]])))
    return starts[new_group], ends[np.concatenate((np.flatnonzero(new_group)[1:] - 1, [len(new_group) - 1]))]


def take_in_peaks(pts: np.ndarray, scores: np.ndarray, starts: np.ndarray, ends: np.ndarray, half: float,
                  stretch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each run widened to the frame of highest raw score among the frames its smoothed scores averaged (within
    ``half`` of the smoothing window of its ends), when that frame lies outside it; never into a neighbouring run, as
    that run was found or (the one before it) as it was widened, so no two events share a frame; never across a cut
    (``stretch``: int [N], the number of the stretch between cuts each frame is in; QA 99 #3: a window wider than the
    merge gap took in a frame after 0.33 s unseen).

    QA 64: a frame scored 0.491 between two low ones smoothed to 0.183, under the enter threshold, while its neighbour
    smoothed to 0.195: the event was that neighbour alone, its peak 0.050, and the frame that raised it in no event
    (43 of 347 events of a 5.5 h study). The peak and thumbnail are now the frame that raised the event."""
    if half <= 0 or not len(starts):
        return starts, ends
    lo = np.maximum(np.searchsorted(pts, pts[starts] - half - TIME_EPS, side="left"),
                    np.searchsorted(stretch, stretch[starts], side="left"))
    hi = np.minimum.reduce([np.searchsorted(pts, pts[ends] + half + TIME_EPS, side="right") - 1,
                            np.concatenate((starts[1:] - 1, [len(pts) - 1])),
                            np.searchsorted(stretch, stretch[ends], side="right") - 1])
    starts, ends = starts.copy(), ends.copy()
    for i in range(len(starts)):  # in time order: a run never reaches back past its predecessor's end as widened (rev58 #3)
        low = max(int(lo[i]), int(ends[i - 1]) + 1 if i else 0)
        if low >= starts[i] and hi[i] <= ends[i]:
            continue  # no frame averaged in beyond its ends
        window = scores[low : hi[i] + 1]
        if window.max() > scores[starts[i] : ends[i] + 1].max():  # strictly: a tie keeps the run as it is
            peak = low + int(np.argmax(window))
            starts[i], ends[i] = min(starts[i], peak), max(ends[i], peak)
    return starts, ends
