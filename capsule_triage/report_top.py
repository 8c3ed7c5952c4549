"""The study page's list of the highest-scoring single frames (``top_frames.parquet``): what a study without
events still shows (QA 41: the frames and their thumbnails were written, the page said only "No events")."""

from __future__ import annotations

import numpy as np

from .report_svg import esc, fmt_clock, score_text
from .study_folder import Study


def top_frames_section(study: Study, event_href) -> str:
    """``<details>`` of the top frames as small cards (open when the study has no events); "" when there are none.
    ``event_href(rank)``: the URL of an event's page, for a frame inside an event."""
    if not study.top_frames:
        return ""
    rank_of = {int(e.get("event_id", i)): i for i, e in enumerate(study.events)}
    frame_index, event_id = study.frames["frame_index"], study.frames["event_id"]
    nms = study.run.get("parameters", {}).get("rank", {}).get("nms_seconds")
    cards = []
    for row in study.top_frames:
        at = np.flatnonzero(frame_index == row.get("frame_index"))
        event = rank_of.get(int(event_id[at[0]])) if len(at) else None
        where = (f'<a href="{esc(event_href(event))}">in event #{event + 1}</a>' if event is not None else "in no event")
        thumb = study.thumbs.get(row.get("frame_index"))
        label = f"{study.frame(row.get('frame_index'))} at {fmt_clock(row.get('pts_seconds'))}"
        img = f'<img src="{esc(thumb)}" alt="{esc(label)}" loading=lazy>' if thumb else '<span class="nothumb">no thumbnail</span>'
        cards.append(f'<li class="card top"><span class="thumb">{img}</span><span><b>{esc(fmt_clock(row.get("pts_seconds")))}</b> '
                     f'<span class="score">{score_text(row.get("score"))}</span></span><small>{esc(study.frame(row.get("frame_index")))} '
                     f'\u00b7 {where}</small></li>')
    apart = f", no two within {nms:g} s" if isinstance(nms, (int, float)) else ""
    return (f'<section id="top-frames"><details{" open" if not study.events else ""}><summary><h2>Highest-scoring frames '
            f'({len(cards)})</h2></summary><p class="hint">Single frames by score{esc(apart)}, in an event or not.</p>'
            f'<ol class="cards">{"".join(cards)}</ol></details></section>')
