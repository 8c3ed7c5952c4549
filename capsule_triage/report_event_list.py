"""The study page's table of its events in time order, beside the gallery's rank order.

A reviewer reads a capsule study from mouth to colon: where an event lies matters as much as how high it
scored, and with a hundred events the timeline's spans are too thin to tell apart. The table lists every
event by start time (sortable by any column, as the batch's index is), each row linking to its event page.
"""

from __future__ import annotations

from .report_facts import names_classes
from .report_svg import esc, fmt_clock, fmt_duration, score_text
from .study_folder import Study

COLUMNS = ("start", "end", "length", "peak at", "peak", "class", "frames", "event")
TEXT = ' class="text"'  # the class column, left-aligned among numbers (QA 119 #1: by position, it was the frames' column
# when a one-class model has none)


def event_list_section(study: Study, event_href) -> str:
    """A ``<details>`` (closed) with every event as a table row, ordered by start time; "" when there are none.
    ``event_href(rank)``: the URL of the event's page."""
    if not study.events:
        return ""
    start = [_number(e.get("start_seconds")) for e in study.events]
    order = sorted(range(len(study.events)), key=lambda i: (start[i] == "", start[i] or 0.0, i))  # none last
    sorted_by = ' aria-sort="ascending"'
    classes = names_classes(study)  # a class column only where the model has a choice of them (QA 96 #1)
    head = "".join(f'<th{sorted_by if k == 0 else ""}{TEXT if name == "class" else ""}><button type="button" data-col="{k}">'
                   f'{esc(name)}</button></th>' for k, name in enumerate(c for c in COLUMNS if classes or c != "class"))
    rows = "".join(_row(study.events[i], i, event_href(i), classes=classes) for i in order)
    n = len(study.events)
    return (f'<section id="event-list" aria-labelledby="event-list-title"><h2 id="event-list-title">Events in time order</h2>'
            f'<details><summary>{n} event{"s" if n != 1 else ""} by start time, with their length, peak{" and class" if classes else ""} '
            f'(click a column title to sort)</summary><div class="scroll" tabindex="0" role="region" aria-label="Events in time order">'
            f'<table class="events"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div></details></section>')


def _row(e: dict, rank: int, href: str, *, classes: bool) -> str:
    start, end, length = e.get("start_seconds"), e.get("end_seconds"), e.get("duration_seconds")
    cells = [(_number(start), esc(fmt_clock(start))), (_number(end), esc(fmt_clock(end))),
             (_number(length), esc(fmt_duration(length)) if _number(length) != "" else "?"),
             (_number(e.get("peak_seconds")), esc(fmt_clock(e.get("peak_seconds")))),
             (_number(e.get("peak_score")), esc(score_text(e.get("peak_score")))),
             *([(esc(e.get("dominant_class") or ""), esc(e.get("dominant_class") or "?"), TEXT)] if classes else []),
             (_number(e.get("frame_count")), esc(e["frame_count"]) if _number(e.get("frame_count")) != "" else "?"),
             (rank + 1, f'<a href="{esc(href)}">#{rank + 1}</a>')]
    return "<tr>" + "".join(f'<td data-v="{v}"{extra[0] if extra else ""}>{text}</td>' for v, text, *extra in cells) + "</tr>"


def _number(value) -> float | str:
    """A sort key for ``data-v``: the number, or "" (sorted as text, after numbers) when there is none."""
    return float(value) if isinstance(value, (int, float)) and value == value else ""
