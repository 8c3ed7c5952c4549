"""Review pages for people: ``report.html`` per study (a batch's ``index.html``: :mod:`capsule_triage.report_batch`).

A study's page is self-contained (inline CSS and JS, no fonts or scripts from elsewhere) and only
refers to files inside its ``OUT_DIR``: the thumbnails, and one detail page per event under
``OUT_DIR/report/`` (and a batch's study to the batch's ``index.html`` above it). Every string that comes from the input (paths, metadata, class names) is
HTML-escaped; data embedded in ``<script>`` is JSON with ``<``, ``>`` and ``&`` escaped.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .completeness import gap_seconds, gap_starts
from .errors import OutputError
from .field_of_view import NO_VIEW_KINDS
from .model_card import intended_use, use_beside
from .output_names import DETAIL_DIR, OWN_INSIDE
from .outputs import FRAMES_FILE
from .report_assets import DETAIL_JS, KEEP_JS, MAIN_JS, SORT_JS
from .report_event_list import event_list_section
from .report_facts import (facts, file_name, model_facts, names_classes, playing_rate, run_thresholds, says_hours, study_duration, study_facts,
                           study_start, time_range)
from .report_page import html_page, keys_hint, page_header, write_atomic
from .report_svg import (LEFT, RIGHT, UNIX_TIME_FROM, WIDTH, Span, clock_with_hours, esc, fmt_clock, fmt_duration, fmt_percent,
                         score_text, timeline_svg)
from .report_top import top_frames_section
from .run_notes import frames_not_scored
from .study_folder import Study, load_study

REPORT_FILE = "report.html"
INDEX_FILE = "index.html"  # a batch's page of all its studies, in the folder above each study's (report_batch)
READING_FPS = 15.0  # frames per second a reader reviews at
PAGE_SIZE = 50  # events per gallery page
MAX_DETAIL_ROWS = 5000  # frames listed on one event page
HOUR_STRIPS_FROM = 2 * 3600.0  # seconds: a study longer than this has its timeline hour by hour too (_hour_strips)
HOUR_STRIP_POINTS = 1000  # vertex budget of an hour's curve (one per pixel of its axis)
HOUR_STRIP_TAIL = 300.0  # seconds: a remainder this short after the last whole hour is drawn in that hour's strip


def paginate(count: int, page_size: int = PAGE_SIZE) -> list[range]:
    """Item ranges of each gallery page (one empty page when there are no items)."""
    if page_size < 1:
        raise ValueError(f"page_size must be >= 1, got {page_size}")
    return [range(start, min(start + page_size, count)) for start in range(0, max(count, 1), page_size)]


def reading_seconds(frames: int, fps: float = READING_FPS) -> float:
    """Time to look at ``frames`` frames at ``fps`` frames per second."""
    return frames / fps


def write_report(out_dir: Path, *, model_card: str | None = None, batch_index: bool | None = None) -> Path:
    """Write ``OUT_DIR/report.html`` and one ``OUT_DIR/report/event-NNNN.html`` per event; return report.html's path.

    Args:
        out_dir: a study folder written by ``triage run``.
        model_card: the model card (Markdown text or path); its intended-use line is shown.
        batch_index: whether a batch study's pages link to the batch's index.html (its writer says so); None: when
            that page is there now (a ``--no-report`` batch has none: review rev32 L5, the link was dead).

    Raises:
        InputError: not a study folder, or unreadable files.
        OutputError: the pages cannot be written.
    """
    study = load_study(Path(out_dir))
    model = study.run.get("model", {})
    provenance = model.get("config", {}).get("provenance", {}).get("intended_use")
    if model_card is None:  # the card beside the weights the run used (if still there), else what the run read in it
        beside = use_beside(model.get("weights_path"))
        card_use = beside if beside is not None else model.get("intended_use")  # "": a card that states none (rev64)
    else:
        card_use = intended_use(model_card) or ""
    card_use = card_use or provenance or ("not stated in the model card" if card_use == "" else None)
    detail_dir, gaps = study.out_dir / DETAIL_DIR, _gap_times(study)
    in_batch = isinstance(study.run.get("batch"), dict)  # triaged by `triage batch`
    linked = in_batch and (batch_index if batch_index is not None else (study.out_dir.parent / INDEX_FILE).is_file())
    with clock_with_hours(says_hours(study)):
        return _write_pages(study, card_use, gaps, linked, detail_dir)


def _write_pages(study: Study, card_use: str | None, gaps: list, linked: bool, detail_dir: Path) -> Path:
    try:
        if detail_dir.is_symlink():  # never written through, nor its target's pages deleted (review rev50)
            detail_dir.unlink()
        detail_dir.mkdir(exist_ok=True)
        wanted = {_detail_name(i) for i in range(len(study.events))}
        for stale in detail_dir.glob("event-*.html"):  # rev63 #1: only its own (a reviewer's event-0001-notes.html is kept)
            if stale.name not in wanted and OWN_INSIDE[DETAIL_DIR].fullmatch(stale.name):
                stale.unlink()
        rows_by_event, spans = _rows_by_event(study.frames["event_id"]), _spans(study, "{name}")  # once: per page, N events cost N^2
        unseen = gap_seconds(study.frames["pts_seconds"]) if gaps else {}
        for i in range(len(study.events)):
            write_atomic(detail_dir / _detail_name(i), _event_page(study, i, rows_by_event, spans, gaps, linked, unseen))
    except OSError as exc:
        raise OutputError(detail_dir, f"cannot write ({exc.strerror or exc})") from None
    return write_atomic(study.out_dir / REPORT_FILE, _study_page(study, card_use, gaps, linked))


def _detail_name(rank: int) -> str:
    return f"event-{rank + 1:04d}.html"


def _rows_by_event(event_id: np.ndarray) -> dict[int, np.ndarray]:
    order = np.argsort(event_id, kind="stable")
    ids, starts = np.unique(event_id[order], return_index=True)
    bounds = list(starts) + [len(order)]
    return {int(e): order[bounds[k]:bounds[k + 1]] for k, e in enumerate(ids) if e >= 0}


# --- study page -------------------------------------------------------------------------------

def _batch_link(linked: bool, up: str) -> str:
    """A link to the batch's list of studies, for a study that ``triage batch`` triaged (QA 34: only Back led there)."""
    return f' <a href="{up}{INDEX_FILE}">all studies of the batch</a>' if linked else ""


def _study_page(study: Study, card_use: str | None, gaps: list[tuple[float, float]], linked: bool) -> str:
    run, f = study.run, study.frames
    name = file_name(run)
    n, flagged = len(f["pts_seconds"]), int(np.count_nonzero(f["flagged"]))
    # what to look at first, first (QA 96 #3: the gallery began 1,340 px down, below hashes, colours and backend); the
    # study's and model's facts after the frames
    main = [_warnings(run),
            _summary(n, flagged, len(study.events), study_duration(study), playing_rate(study)),
            '<section><h2>Timeline</h2><p class="hint">Smoothed suspicion score over the study. Shaded spans are events '
            '(click one to jump to it; where they crowd, a higher-ranked one covers its neighbours: the hour strips (of a long study), '
            'or j/k, reach each), each dot its peak frame\'s own score; dashed line: enter threshold, dotted: leave '
            f'threshold; hatched: no frames, grey: no field of view (neither scored).{_start_note(study)}</p>',
            timeline_svg(f["pts_seconds"], f["smoothed_score"], **run_thresholds(run), spans=_spans(study, "#event-{n}"),
                         t_range=time_range(study), gaps=gaps, label=f"Smoothed score timeline of {name}",
                         flagged_percent=100 * flagged / n if n else None),
            _hour_strips(study, gaps), "</section>", event_list_section(study, href := lambda rank: f"{DETAIL_DIR}/{_detail_name(rank)}"), _gallery(study),
            top_frames_section(study, href), '<div class="grid2">', study_facts(study), model_facts(run, card_use), "</div>"]
    # j/k announce "Event 3 of 117, peak 0.998, at 1:02.5" from these (screen readers are not told otherwise)
    data = {"page_size": PAGE_SIZE, "events": [{"href": f"{DETAIL_DIR}/{_detail_name(i)}", "peak": score_text(e.get("peak_score")),
                                                "time": fmt_clock(e.get("peak_seconds"))} for i, e in enumerate(study.events)]}
    return html_page(f"Triage report \u2014 {name}", page_header(f"Triage report \u2014 {name}", nav=_batch_link(linked, "../")), main,
                     MAIN_JS + SORT_JS + KEEP_JS, data=data, skip=("#events", "Skip to events"))


def _hour_strips(study: Study, gaps: list[tuple[float, float]]) -> str:
    """The timeline of a study longer than :data:`HOUR_STRIPS_FROM` again, one hour to a strip, in a ``<details>``: on the
    whole study's axis an hour is ~80 px of a 12 h study and a minute-long event is at the 2 px minimum, its label and
    click lost among its neighbours' (QA 64: 343 of 347 spans of a 5.5 h study); on an hour's axis a minute is ~15 px.
    Every event that fits a label gets one; spans cut at an hour's edge are drawn in both strips."""
    first, last = time_range(study)
    if last - first <= HOUR_STRIPS_FROM:
        return ""
    f, spans, strips = study.frames, _spans(study, "#event-{n}"), []
    t = f["pts_seconds"]
    hours = max(1, math.ceil((last - first - HOUR_STRIP_TAIL) / 3600))  # rev60 #5: a last "hour" of 0.5 s filled a strip
    for hour in range(hours):
        lo, hi = first + 3600 * hour, (first + 3600 * (hour + 1) if hour + 1 < hours else last)  # the last takes a short tail
        win = slice(np.searchsorted(t, lo, "left"), np.searchsorted(t, hi, "right"))
        shown = [s for s in spans if s.end_seconds >= lo and s.start_seconds <= hi]
        title = f"Hour {hour + 1}: {fmt_clock(lo)} to {fmt_clock(hi)}, {len(shown)} event{'s' if len(shown) != 1 else ''}"
        strips.append(f'<h3>{esc(title)}</h3>' + timeline_svg(
            t[win], f["smoothed_score"][win], **run_thresholds(study.run), spans=shown, t_range=(lo, hi), gaps=gaps,
            label=f"Smoothed score timeline, hour {hour + 1}", max_points=HOUR_STRIP_POINTS, label_limit=len(spans), label_rows=2,
            hatch=False))
    return (f'<details id="hours"><summary>The timeline hour by hour ({len(strips)} strips; a minute is '
            f'{(WIDTH - LEFT - RIGHT) / 60:.0f} px or more)</summary>{"".join(strips)}</details>')


def _start_note(study: Study) -> str:
    start = study_start(study)
    if abs(start) < 0.5:
        return ""
    if start >= UNIX_TIME_FROM:  # QA 77 #12
        return (f" Times are the clock times of the frames' timestamps (Unix times, shown in UTC): it starts at "
                f"{esc(fmt_clock(start))}.")
    if study.run.get("source", {}).get("kind") == "frames":  # QA 90 #3: no player shows a folder of images
        return f" Times are the frames' timestamps: it starts at {esc(fmt_clock(start))}."
    return (f" Times are the stream's own: it starts at {esc(fmt_clock(start))}; a player counting from zero shows each "
            f"time {esc(fmt_clock(abs(start)))} {'earlier' if start > 0 else 'later'}.")


def _gap_times(study: Study) -> list[tuple[float, float]]:
    """(last frame before, first frame after) of each stretch without frames (the rule of run.json's time_gaps)."""
    pts = study.frames["pts_seconds"]
    return [(float(pts[i]), float(pts[i + 1])) for i in gap_starts(pts)]


def _cut_by(event: dict, gaps: list, unseen: dict[float, float]) -> str | None:
    """Where an event begins or ends at a stretch without frames (QA 96 #5: an event "ending" where the frames stop for
    20 s, and going on as another event after them, read as the end of the finding; said on the chart only). ``unseen``:
    each stretch's time without frames by the time of the last frame before it (QA 100 #4: the frames' step was said, a period more than
    run.json's ``time_gaps``)."""
    start, end = event.get("start_seconds"), event.get("end_seconds")
    said = [f"{where} a stretch of {fmt_duration(unseen.get(a, b - a))} without frames (between the frames at {fmt_clock(a)} and "
            f"{fmt_clock(b)}): what the video showed there is not known" for a, b in gaps for where, at, edge in (("begins after", start, b), ("ends at", end, a))
            if isinstance(at, (int, float)) and math.isclose(at, edge, abs_tol=1e-6)]
    return "; ".join(said) or None


def _spans(study: Study, href: str) -> list[Span]:
    return [Span(label=f"#{i + 1}", title=f"Event #{i + 1}: {fmt_clock(e.get('start_seconds'))}\u2013{fmt_clock(e.get('end_seconds'))}, "
                 f"peak {score_text(e.get('peak_score'))}" + (f" ({e.get('dominant_class') or '?'})" if names_classes(study) else ""),
                 start_seconds=e.get("start_seconds") or 0.0, end_seconds=e.get("end_seconds") or 0.0,
                 peak_seconds=e.get("peak_seconds") or 0.0, peak_score=e.get("peak_score") or 0.0,
                 href=href.format(n=i + 1, name=_detail_name(i)), rank=i, shown_until=_shown_until(e))
            for i, e in enumerate(study.events)]


def _shown_until(event: dict) -> float | None:
    """Where an event's box ends: its start + duration (one frame period past its last frame), None without them."""
    start, length = event.get("start_seconds"), event.get("duration_seconds")
    ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (start, length))
    return float(start) + float(length) if ok else None


def _warnings(run: dict) -> str:
    """The run's Warning: lines (a backend the agreement check rejected, scores checked for other event
    settings, weights unlike their preset's, a cached copy of hub weights), which the console showed
    once and the reviewer would not see: "" when there are none."""
    unread = (run.get("source") or {}).get("unread") or []
    lines = [*((run.get("model") or {}).get("backend_selection") or {}).get("warnings", []), *frames_not_scored(run),
             *run.get("warnings", []), *([f"not read: {'; '.join(map(str, unread))}"] if unread else [])]  # as the console's
    if not lines:
        return ""
    items = "".join(f"<li>{esc(line)}</li>" for line in dict.fromkeys(map(str, lines)))
    return f'<section class="warnings" role="note"><h2>Warnings</h2><ul>{items}</ul></section>'


def _summary(frames: int, flagged: int, events: int, duration: float, playing: float | None) -> str:
    pct = 100 * flagged / frames if frames else 0.0
    # A reader goes no slower than the video plays (QA 26: at 15 frames/s a 90 s 60 fps clip "read" in 6 min), as it
    # plays between any gaps (QA 73 #2: frames / duration read a 30 frames/s study with an 8 s gap at 15)
    rate = max(READING_FPS, round(playing) if frames > 1 and playing else 0.0)
    read_flagged, read_all = reading_seconds(flagged, rate), reading_seconds(frames, rate)
    saved = f"{100 * (1 - read_flagged / read_all):.0f}% less" if read_all else ""
    reading = f"Reading at {READING_FPS:g} frames/s" if rate == READING_FPS else f"Reading at {rate:.0f} frames/s (as it plays)"
    tiles = [("Frames", f"{frames:,}", f"{fmt_duration(duration)} of video"),
             ("Events", f"{events:,}", "ranked by peak score"),
             ("Flagged", fmt_percent(pct), f"{flagged:,} frame{'s' if flagged != 1 else ''} in events"),
             (reading, fmt_duration(read_flagged), f"flagged frames only, in {events:,} event{'s' if events != 1 else ''} to open, "
                                                   f"vs {fmt_duration(read_all)} for the whole study ({saved})")  # QA 64: how many
             if flagged else (reading, fmt_duration(read_all), "the whole study: no flagged frames to look at first")]  # QA 41: "0.0 s, 100% less"
    cells = "".join(f'<div class="tile"><div class="k">{esc(k)}</div><div class="v">{esc(v)}</div><div class="s">{esc(s)}</div></div>'
                    for k, v, s in tiles)
    return f'<section><h2>Summary</h2><div class="tiles" id="summary">{cells}</div></section>'


def _gallery(study: Study) -> str:
    events, pages = study.events, paginate(len(study.events))
    if not events:
        return f'<section id="events"><h2>Events</h2><p>No events: {esc(_why_no_events(study))}</p></section>'
    pager = lambda where: "" if len(pages) == 1 else f'<nav class="pager" aria-label="Gallery pages{where}">Page ' + " ".join(
        f'<a href="#page-{p + 1}" aria-label="Page {p + 1} (events {r.start + 1}\u2013{r.stop})">{p + 1}</a>'
        for p, r in enumerate(pages)) + "</nav>"
    sections = []
    for p, items in enumerate(pages):
        cards = "".join(_card(study, i, lazy=p > 0) for i in items)
        sections.append(f'<section class="page" id="page-{p + 1}"><h3>Events {items.start + 1}\u2013{items.stop} of {len(events)}'
                        f' \u00b7 page {p + 1} of {len(pages)}</h3><ol class="cards" start="{items.start + 1}">{cards}</ol></section>')
    keys = keys_hint("<kbd>j</kbd>/<kbd>\u2192</kbd> next event, <kbd>k</kbd>/<kbd>\u2190</kbd> previous, <kbd>Enter</kbd> open it.")
    return (f'<section id="events"><h2>Events ({len(events)})</h2><p class="hint">Ranked by peak score (equal peaks: the earlier first). {keys}</p>'
            f'<p id="announce" class="vh" aria-live="polite"></p>{pager("")}'
            f'<div class="pages">{"".join(sections)}</div>{pager(", below the events")}</section>')


def _why_no_events(study: Study) -> str:
    rank, smoothed = study.run.get("parameters", {}).get("rank", {}), study.frames["smoothed_score"]
    enter, shortest = run_thresholds(study.run)["enter"], rank.get("min_event_seconds")
    smoothed = smoothed[np.isfinite(smoothed)]  # NaN: frames without a field of view
    if len(study.frames["smoothed_score"]) and not len(smoothed):
        return f"no frame shows a field of view ({NO_VIEW_KINDS}): nothing was scored."
    if enter is None or not len(smoothed) or float(np.max(smoothed)) < enter:
        if enter is None or not len(smoothed):
            return "no stretch of the study reached the enter threshold."
        raw = study.frames["score"][np.isfinite(study.frames["score"])]
        listed = ": the highest-scoring frames are listed below" if study.top_frames else ""
        over = (f" (single frames did, up to {score_text(float(np.max(raw)))}{listed})"
                if len(raw) and float(np.max(raw)) >= enter else "")  # QA 96 #4: said above a frame shown over it
        window = rank.get("smooth_seconds")
        averaged = f"averaged over {window:g} s" if isinstance(window, (int, float)) and window > 0 else "smoothed"
        return f"no stretch of the study reached the enter threshold: the score {averaged} (the timeline's line) stayed below it{over}."
    return (f"the smoothed score reached the enter threshold (highest {score_text(float(np.max(smoothed)))}) only in stretches shorter "
            f"than the shortest event ({fmt_duration(shortest) if shortest is not None else 'min_event_seconds'}, one frame period "
            f"counted); the per-frame scores are in {FRAMES_FILE}.")


def _card(study: Study, i: int, *, lazy: bool) -> str:
    e, href = study.events[i], f"{DETAIL_DIR}/{_detail_name(i)}"
    thumb = study.thumbs.get(e.get("peak_frame"))
    alt = f"Event {i + 1}: peak {study.frame(e.get('peak_frame'))} at {fmt_clock(e.get('peak_seconds'))}"
    img = (f'<img src="{esc(thumb)}" alt="{esc(alt)}"{" loading=lazy" if lazy else ""}>' if thumb
           else '<span class="nothumb">no thumbnail</span>')
    span = f'{fmt_clock(e.get("start_seconds"))}\u2013{fmt_clock(e.get("end_seconds"))}'
    cls = (e.get("dominant_class") or "?") if names_classes(study) else None  # QA 96 #1: a one-class model's said "bleeding"
    said, shown = (f", {esc(cls)}", f' <span class="cls">{esc(cls)}</span>') if cls else ("", "")
    # One tab stop per card: the thumbnail repeats the title's link; the title link's name says it all
    return (f'<li class="card" id="event-{i + 1}" data-rank="{i}"><a class="thumb" href="{href}" tabindex="-1" aria-hidden="true">{img}</a>'
            f'<a class="title" href="{href}"><b>#{i + 1}</b> {esc(fmt_clock(e.get("peak_seconds")))}<span class="vh">: peak '
            f'{esc(score_text(e.get("peak_score")))}{said}, event {esc(span)}</span></a>'
            f'<span><span class="score">peak {esc(score_text(e.get("peak_score")))}</span>{shown}</span>'
            f'<small>{esc(span)} \u00b7 ' + (f'{esc(e["peak_file"])} \u00b7 ' if e.get("peak_file") else "") +
            f'{e.get("frame_count", "?")} frame{"" if e.get("frame_count") == 1 else "s"} \u00b7 mean {esc(score_text(e.get("mean_score")))}</small></li>')


# --- event detail pages -----------------------------------------------------------------------

def _event_page(study: Study, i: int, rows_by_event: dict[int, np.ndarray], all_spans: list[Span], gaps: list, linked: bool,
                unseen: dict[float, float]) -> str:
    e, f, n = study.events[i], study.frames, len(study.events)
    rows = rows_by_event.get(int(e.get("event_id", i)), np.array([], np.int64))
    if len(rows):  # QA 90 #5: its frames without a field of view (not scored: no event id) are rows of it too, said so
        rows = np.arange(rows.min(), rows.max() + 1)
    name = file_name(study.run)
    link = lambda k, text, rel: f'<a rel="{rel}" href="{_detail_name(k)}">{text}</a>' if 0 <= k < n else f"<span>{text}</span>"
    # They go by rank, not by time: the names say so
    prev_link = link(i - 1, f"\u2190 previous event (#{i}, higher score)" if i else "\u2190 previous event", "prev")
    next_link = link(i + 1, f"next event (#{i + 2}, lower score) \u2192" if i + 1 < n else "next event \u2192", "next")
    nav = f'{prev_link} <a rel="up" href="../{REPORT_FILE}#event-{i + 1}">all events</a> {next_link}{_batch_link(linked, "../../")}'
    thumb = study.thumbs.get(e.get("peak_frame"))
    figure = (f'<figure><img src="../{esc(thumb)}" alt="Peak {esc(study.frame(e.get("peak_frame")))}"><figcaption>Peak '
              f'{esc(study.frame(e.get("peak_frame")))} at {esc(fmt_clock(e.get("peak_seconds")))}</figcaption></figure>' if thumb else "")
    info = facts(f"Event #{i + 1} of {n}", [
        ("Start", f"{fmt_clock(e.get('start_seconds'))} ({study.frame(e.get('start_frame'))})"),
        ("End", f"{fmt_clock(e.get('end_seconds'))} ({study.frame(e.get('end_frame'))})"),
        ("Duration", fmt_duration(e.get("duration_seconds", (e.get("end_seconds") or 0) - (e.get("start_seconds") or 0)))),
        ("Peak", f"{score_text(e.get('peak_score'))} at {fmt_clock(e.get('peak_seconds'))} ({study.frame(e.get('peak_frame'))})"),
        ("Mean score", score_text(e.get("mean_score"))), ("Frames", e.get("frame_count")),
        *([("Abnormal class", e.get("dominant_class"))] if names_classes(study) else []),
        ("Cut by a gap", _cut_by(e, gaps, unseen))])  # QA 81 #5: "Class" read as the
    # verdict (a bare "GC" where CG was likelier); QA 96 #1: a one-class model's every event read "Abnormal class: bleeding"
    t = f["pts_seconds"]  # QA 34: 3 frame steps at least (at 0.2 frames/s a 2 s pad showed one lone frame), within the study
    pad = max(2.0, 0.5 * ((e.get("end_seconds") or 0) - (e.get("start_seconds") or 0)), 3 * float(np.median(np.diff(t))) if len(t) > 1 else 0.0)
    first, last = time_range(study)
    lo, hi = max(first, (e.get("start_seconds") or 0) - pad), min((e.get("end_seconds") or 0) + pad, last)
    win = slice(np.searchsorted(f["pts_seconds"], lo, "left"), np.searchsorted(f["pts_seconds"], hi, "right"))
    spans = [s for s in all_spans if s.end_seconds >= lo and s.start_seconds <= hi]
    svg = timeline_svg(f["pts_seconds"][win], f["smoothed_score"][win], **run_thresholds(study.run), spans=spans, t_range=(lo, hi),
                       raw=f["score"][win], gaps=gaps,
                       label=f"Score around event {i + 1}", label_limit=n, current=i)
    keys = keys_hint("<kbd>j</kbd>/<kbd>\u2192</kbd> next event (lower score), <kbd>k</kbd>/<kbd>\u2190</kbd> previous "
                     "(higher score), <kbd>u</kbd>/<kbd>Esc</kbd> all events.")
    main = [f'<p class="hint">{keys}</p><p id="announce" class="vh" aria-live="polite"></p>', '<div class="grid2">', figure, info, "</div>",
            f'<section><h2>Scores around the event</h2><p class="hint">Thin line: per-frame score; thick: smoothed; hatched: no '
            f'frames; grey: no field of view (neither scored).{_start_note(study)}</p>', svg,
            "</section>", _frame_table(study, rows, e, i)]
    return html_page(f"Event #{i + 1} \u2014 {name}", page_header(f"Event #{i + 1} \u2014 {name}", nav=nav), main, DETAIL_JS)


def _frame_table(study: Study, rows: np.ndarray, event: dict, rank: int) -> str:
    f, peak = study.frames, event.get("peak_frame")
    found = np.flatnonzero(f["frame_index"][rows] == peak) if len(rows) > MAX_DETAIL_ROWS else []  # QA 85 #1: the first 5,000
    first = min(max(0, int(found[0]) - MAX_DETAIL_ROWS // 2), len(rows) - MAX_DETAIL_ROWS) if len(found) else 0  # rows left out
    shown = rows[first : first + MAX_DETAIL_ROWS]  # a later peak's, whose row the caption said was bold
    probs = study.prob_columns
    files = f.get("source_file")  # a frame folder's image names
    blank = ~f["has_view"].astype(bool) if "has_view" in f else f["event_id"] < 0  # tables before has_view: no event id
    head = "".join(f"<th>{esc(h)}</th>" for h in ["frame", *(["file"] if files is not None else []), "time", "seconds", "score",
                                                  "smoothed", *(p[5:] for p in probs)])
    body = []
    for r in shown:
        frame = int(f["frame_index"][r])
        cells = [f"{frame}", *([files[r]] if files is not None else []), fmt_clock(f["pts_seconds"][r]), f"{f['pts_seconds'][r]:.3f}", score_text(float(f["score"][r])),
                 score_text(float(f["smoothed_score"][r])), *(score_text(float(f[p][r])) for p in probs)]  # NaN (no view): a dash
        mark = ' class="peak"' if frame == peak else ' class="noview"' if blank[r] else ""
        body.append(f'<tr id="frame-{frame}"{mark}>' + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    before, after = first, len(rows) - first - len(shown)
    sides = " and ".join(f"{n:,} {side}" for n, side in ((before, "before these"), (after, "after")) if n)
    more = (f"<p>{before + after:,} more frame{'s are' if before + after > 1 else ' is'} in {FRAMES_FILE} ({sides}).</p>"
            if before + after else "")
    window = ("" if not more else f" ({first + 1:,} to {first + len(shown):,} of {len(rows):,}, around its peak)" if len(found)
              else f" (the first {len(shown):,})")
    bold = bool(np.any(f["frame_index"][shown] == peak)) if peak is not None else False  # (rev82 #3: said of no row)
    blank = int(np.sum(blank[rows]))
    caption = (f"Frames of event #{rank + 1}{window} in time order: time, score, smoothed score and each class's probability"
               + ("; the peak frame's row is bold" if bold else "")
               + (f"; {blank:,} frame{'s' if blank != 1 else ''} without a field of view, not scored (a dash, greyed)" if blank else ""))
    # Focusable, so its rows scroll by keyboard (and the page's arrow keys leave it alone: DETAIL_JS)
    return (f'<section><h2>Frames ({len(rows):,}{f", {blank:,} not scored" if blank else ""})</h2><div class="scroll" tabindex="0" role="region" aria-label="Frames of this event">'
            f'<table class="frames"><caption>{esc(caption)}</caption><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>{more}</section>')
