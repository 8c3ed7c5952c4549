"""The study page's list of the highest-scoring single frames (``top_frames.parquet``): what a study without
events still shows (QA 41: the frames and their thumbnails were written, the page said only "No events")."""

from __future__ import annotations

import numpy as np

from .report_facts import names_classes, run_thresholds
from .report_svg import esc, fmt_clock, score_text, threshold_text
from .study_folder import Study


def top_frames_section(study: Study, event_href) -> str:
    """The top frames as small cards under their heading, in a ``<details>`` open when the study has no events; ""
    when there are none. ``event_href(rank)``: the URL of an event's page, for a frame inside an event."""
    rows = [row for row in study.top_frames if row.get("frame_index") is not None]
    if not rows:
        return ""
    rank_of = {e.get("event_id", i): i for i, e in enumerate(study.events)}
    frame_index, event_id = study.frames["frame_index"], study.frames["event_id"]
    nms = study.run.get("parameters", {}).get("rank", {}).get("nms_seconds")
    classes = names_classes(study)  # review rev66: a one-class model's 0.03 frame read "bleeding"
    threshold = run_thresholds(study.run)["enter"]  # rev103 #3: the run's (--threshold), not the model's own
    cards = []
    for row in rows:
        at = np.flatnonzero(frame_index == row["frame_index"])
        if not len(at):  # review rev35: said "in no event"
            where = "not in frames.parquet"
        else:
            event = rank_of.get(int(event_id[at[0]])) if event_id[at[0]] is not None and event_id[at[0]] >= 0 else None
            where = f'<a href="{esc(event_href(event))}">in event #{event + 1}</a>' if event is not None else "in no event"
        frame, clock = study.frame(row["frame_index"]), fmt_clock(row.get("pts_seconds"))
        thumb = study.thumbs.get(row["frame_index"])
        img = f'<img src="{esc(thumb)}" alt="{esc(f"{frame} at {clock}")}" loading=lazy>' if thumb else '<span class="nothumb">no thumbnail</span>'
        label = f' <span class="cls">{esc(row["dominant_class"])}</span>' if classes and row.get("dominant_class") else ""  # QA 71 #5
        cards.append(f'<li class="card top"><span class="thumb">{img}</span><span><b>{esc(clock)}</b> '
                     f'{_score(row.get("score"), threshold)}{label}</span><small>{esc(frame)} \u00b7 {where}</small></li>')
    apart = f", no two within {nms:g} s" if isinstance(nms, (int, float)) else ""
    return (f'<section id="top-frames" aria-labelledby="top-frames-title"><h2 id="top-frames-title">Highest-scoring frames</h2>'
            f'<details{" open" if not study.events else ""}><summary>{len(cards)} single frame{"s" if len(cards) != 1 else ""} '
            f'by score{esc(apart)}, in an event or not</summary><ol class="cards">{"".join(cards)}</ol></details></section>')


def _score(score, threshold) -> str:
    """A card's score, styled as a finding only at or over the run's enter threshold (QA 111 #5: a frame at 0.03 of a
    study without events was shown in the red of the flagged ones)."""
    if isinstance(score, (int, float)) and isinstance(threshold, (int, float)) and score < threshold:
        return (f'<span class="score low" title="below the enter threshold {esc(threshold_text(threshold))}">'
                f'{esc(score_text(score))}</span>')
    return f'<span class="score">{esc(score_text(score))}</span>'
