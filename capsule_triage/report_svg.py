"""The report's building blocks: escaping, number formats and the score timeline SVG (a facts list is
:func:`capsule_triage.report_facts.facts`; the page shell and writing a page are in :mod:`capsule_triage.report_page`).

Pure numpy and string building, no plotting library or web assets: pages stay self-contained and
small. A long study is downsampled by per-bin maximum before drawing, so a 100,000-frame timeline
becomes at most ``max_points`` vertices and no peak is lost. The stylesheet and the (plain) scripts the
pages inline are in :mod:`capsule_triage.report_assets`.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from datetime import datetime, timezone
from html import escape
from typing import Sequence

import numpy as np


MAX_POINTS = 2000
RUO = "Research use only \u2014 not a diagnostic device"
WIDTH, HEIGHT = 1000, 210
LEFT, RIGHT, TOP, BOTTOM = 40, 10, 10, 26
UNIX_TIME_FROM = 1e9  # s: times from here on (2001-09-09) are Unix times, clock times a CSV gave; no study lasts 31 years
_NICE_STEPS = (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)


def esc(value: object) -> str:
    """Text or attribute value made safe for HTML and inline SVG (quotes included)."""
    return escape(str(value), quote=True)


_HOURS = contextvars.ContextVar("clock_hours", default=False)  # pages of a study that reaches an hour: h:mm:ss.s throughout


@contextlib.contextmanager
def clock_with_hours(on: bool):
    """While building the pages of a study that reaches an hour, every :func:`fmt_clock` says its hours (QA 41:
    "#100 1:34.5" beside "#98 1:04:36.8" read as 1 h 34 min)."""
    token = _HOURS.set(on)
    try:
        yield
    finally:
        _HOURS.reset(token)


def fmt_clock(seconds: float) -> str:
    """Video position to the nearest tenth of a second: ``m:ss.s``, from an hour on (or within
    :func:`clock_with_hours`) ``h:mm:ss.s``; a Unix time (:data:`UNIX_TIME_FROM` on) as the UTC date and time it is.

    Rounded half up (4.25 s is ``0:04.3``; Python's round() gave ``0:04.2`` but ``0:03.8`` for 3.75 s) before
    it is split, so 59.96 s is ``1:00.0`` (not ``0:60.0``)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds >= UNIX_TIME_FROM:  # QA 77 #12: a timestamps.csv of clock times read 499042:00:04.0
        tenths = math.floor(float(seconds) * 10 + 0.5)
        return f"{datetime.fromtimestamp(tenths // 10, timezone.utc):%Y-%m-%d %H:%M:%S}.{tenths % 10} UTC"
    signed = math.floor(float(seconds) * 10 + 0.5)  # QA 61: a stream's own times may be negative (0:00.0 was said for each)
    sign = "-" if signed < 0 else ""  # (rev55: the sign put on after rounding, half up: -0.25 s is -0:00.2)
    hours, tenths = divmod(abs(signed), 36000)
    minutes, tenths = divmod(tenths, 600)
    long = hours or _HOURS.get()
    clock = f"{minutes:02d}:{tenths // 10:02d}.{tenths % 10}" if long else f"{minutes}:{tenths // 10:02d}.{tenths % 10}"
    return f"{sign}{hours}:{clock}" if long else sign + clock


def fmt_percent(percent: float) -> str:
    """A share in percent to one place, rounded half up as it reads (QA 119 #4: 26,025 of 50,000 frames, 52.05%, was
    "52.0%": the float is 52.0499...), never onto 0 or 100 it does not reach (rev107 #7: 1 of 2,000 frames, as cards say)."""
    if percent is None or not math.isfinite(percent):
        return "n/a"
    if 0 < percent < 0.05 or 99.95 <= percent < 100:
        return "<0.1%" if percent < 50 else ">99.9%"
    return f"{Decimal(repr(float(percent))).quantize(Decimal('0.1'), ROUND_HALF_UP)}%"


def fmt_duration(seconds: float) -> str:
    """A span of time for people: ``4.4 s``, ``12 min 05 s``, ``2 h 03 min``."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    tenths = math.floor(max(0.0, float(seconds)) * 10 + 0.5)  # half up, as fmt_clock: 7.25 s is 7.3 s (QA 41: 7.2 beside 13:43.3)
    if tenths < 600:
        return f"{tenths / 10:.1f} s"
    whole = math.floor(tenths / 10 + 0.5)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    hours, minutes = divmod((whole + 30) // 60, 60)  # minutes rounded half up too (rev36: 7,199 s read 1 h 59 min)
    return f"{hours} h {minutes:02d} min"


def downsample_max(t: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` of a series' samples (times ``t`` increasing, values ``y``, NaN as missing), in time order:
    consecutive samples are grouped into ``ceil(len / max_points)``-sample bins, each kept as its sample of the largest
    ``y``, so every peak of the full series is still drawn."""
    t, y = np.asarray(t, np.float64), np.asarray(y, np.float64)
    n = len(y)
    if n <= max_points:
        return t, y
    size = math.ceil(n / max_points)
    bins = math.ceil(n / size)
    padded = np.full(bins * size, -np.inf)
    padded[:n] = np.nan_to_num(y, nan=-np.inf)
    pick = np.arange(bins) * size + padded.reshape(bins, size).argmax(axis=1)
    return t[pick], y[pick]


@dataclass
class Span:
    """One event drawn on a timeline."""

    label: str  # short text, e.g. "#3"
    title: str  # tooltip
    start_seconds: float
    end_seconds: float
    peak_seconds: float
    peak_score: float
    href: str  # link target (already a safe, relative URL)
    rank: int  # 0-based rank, for keyboard highlighting
    # where the drawn box ends: start + the event's duration, one frame period past its last frame (the time its frames
    # show, as the tables' Duration; QA 90 #4: the box stopped at the last frame, a period short); end_seconds if None
    shown_until: float | None = None


def nice_step(span_seconds: float, target_ticks: int = 8) -> float:
    """The round tick spacing giving about ``target_ticks`` ticks over ``span_seconds``."""
    for step in _NICE_STEPS:
        if span_seconds / step <= target_ticks:
            return step
    return 3600 * math.ceil(span_seconds / target_ticks / 3600)


def timeline_svg(t: np.ndarray, smoothed: np.ndarray, *, enter: float | None, leave: float | None,
                 spans: list[Span], t_range: tuple[float, float] | None = None, raw: np.ndarray | None = None,
                 gaps: Sequence[tuple[float, float]] = (), label: str = "Score timeline", max_points: int = MAX_POINTS,
                 label_limit: int = 12, label_rows: int = 1, flagged_percent: float | None = None, current: int | None = None,
                 hatch: bool = True) -> str:
    """The smoothed score over time, threshold lines, and clickable event spans, in a box that scrolls sideways.

    The figure is a named group (it holds links, so not an image) with a ``<desc>`` saying in words what
    it shows (:func:`timeline_desc`). Its span links are out of the Tab order: every event is also linked
    from the gallery, and 2,000 spans would be 2,000 tab stops before it. The SVG has a minimum width, so
    on a narrow screen its text stays readable and the box scrolls instead of the text shrinking.

    Args:
        t: float [N], frame times in seconds (increasing).
        smoothed: float [N], smoothed suspicion score in [0, 1].
        enter: threshold at which events start (dashed line), or None.
        leave: threshold below which events end (dotted line), or None.
        spans: events to shade; each links to ``span.href``.
        t_range: (start, end) seconds of the x axis; default the data's range.
        raw: float [N], per-frame score drawn faintly behind the smoothed one (detail views).
        gaps: (time of the last frame before, time of the first frame after) of each stretch without
            frames (a lost signal, a damaged part; :func:`capsule_triage.completeness.gap_starts`): hatched
            (cut to the axis), and the lines stop at each, so no score is drawn across time the model never saw.
        label: accessible name of the figure.
        max_points: vertex budget per curve (see :func:`downsample_max`).
        label_limit: spans of rank below this get a "#k" label.
        label_rows: rows of labels under the top of the plot: a label that would cover a higher rank's in the first goes
            to the next; one that fits in none is left out (1: a lower rank gives way; an hour strip has 2, every event
            labelled).
        flagged_percent: share of the study's frames in events, said in the description (None: not said).
        current: rank of the event this page is about: its span is marked (class selected, aria-current).
        hatch: define the hatch pattern of the gaps (``#hatch``); False for a page's further timelines, which use the
            first one's (an id is once per page).

    Returns:
        A ``<div>`` holding the ``<svg>``, to inline in HTML.
    """
    t = np.asarray(t, np.float64)
    t0, t1 = t_range if t_range else ((float(t[0]), float(t[-1])) if len(t) else (0.0, 1.0))
    t1 = max(t1, t0 + 1e-6)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(sec):
        return LEFT + plot_w * (np.asarray(sec, np.float64) - t0) / (t1 - t0)

    def y(score):
        return TOP + plot_h * (1.0 - np.clip(np.asarray(score, np.float64), 0.0, 1.0))

    scored = np.isfinite(np.asarray(smoothed, np.float64))  # NaN: a frame without a field of view, not scored
    unseen = [(float(t[max(run[0] - 1, 0)]), float(t[min(run[-1] + 1, len(t) - 1)]), run)  # from the frame scored before to the one after
              for run in _runs(np.flatnonzero(~scored))]
    desc = timeline_desc(spans, t0, t1, enter=enter, leave=leave, gaps=[g for g in gaps if g[1] >= t0 and g[0] <= t1],
                         flagged_percent=flagged_percent, no_view=len(unseen))
    parts = ['<div class="timeline-scroll" tabindex="0" role="region" aria-label="Timeline (scrolls sideways on a narrow screen)">'
             f'<svg class="timeline" viewBox="0 0 {WIDTH} {HEIGHT}" role="group" aria-label="{esc(label)}" '
             f'xmlns="http://www.w3.org/2000/svg"><desc>{esc(desc)}</desc>'
             + ('<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
                '<rect width="6" height="6" fill="#e4e6ea"/><line x1="0" y1="0" x2="0" y2="6" stroke="#8b93a0" stroke-width="2"/>'
                '</pattern></defs>' if hatch else ''),
             f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>']
    parts += _axes(x, y, t0, t1)
    for start, end in gaps:
        if end < t0 or start > t1:
            continue
        a, b = (min(max(float(x(sec)), LEFT), WIDTH - RIGHT) for sec in (start, end))
        parts.append(f'<rect class="gap" x="{a:.1f}" y="{TOP}" width="{max(b - a, 1.0):.1f}" height="{plot_h:.1f}">'
                     f'<title>no frames between {esc(fmt_clock(start))} and {esc(fmt_clock(end))} (the last before, the first after): not scored</title></rect>')
    cuts = np.flatnonzero(np.isin(t[:-1], [start for start, _ in gaps])) if len(t) > 1 and len(gaps) else np.zeros(0, np.int64)
    pieces = [piece for piece in np.split(np.arange(len(t)), cuts + 1) if len(piece)] if len(t) else []
    if unseen:  # under the spans: a stretch without a view bridged inside an event must not take its clicks (review rev35)
        parts += [_no_view(start, end, t[run], x, plot_h) for start, end, run in unseen]
        pieces = [run for piece in pieces for run in _runs(piece[scored[piece]])]
    for span in sorted(spans, key=lambda s: -s.rank):  # the highest-ranked drawn last, on top where thin spans meet (QA 41)
        parts.append(_span(span, x, y, plot_h, current=span.rank == current))
    for piece in pieces:  # each stretch with frames on its own: a line never bridges a gap
        budget = max(2, round(max_points * len(piece) / len(t)))
        if raw is not None:
            parts.append(_line("raw", *downsample_max(t[piece], np.asarray(raw)[piece], budget), x, y))
        ts, ys = downsample_max(t[piece], np.asarray(smoothed)[piece], budget)
        if len(ts) > 1:
            parts.append(f'<path class="area" d="{_path(ts, ys, x, y)} L{x(ts[-1]):.1f},{y(0):.1f} L{x(ts[0]):.1f},{y(0):.1f} Z"/>')
        parts.append(_line("score", ts, ys, x, y))
    for value, cls, name in ((enter, "enter", "enter"), (leave, "leave", "leave")):  # enter's label above its line, leave's below
        if value is not None:
            parts.append(f'<line class="thr {cls}" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}">'
                         f'<title>{name} threshold {esc(score_text(value))}</title></line>'
                         f'<text class="thr-label {cls}" x="{WIDTH - RIGHT - 4}" y="{y(value) + (-3 if cls == "enter" else 11):.1f}" text-anchor="end">'
                         f'{name} {esc(score_text(value))}</text>')  # as the facts say it (QA 85 #5: 'leave 0.38' by 0.375)
    parts += _labels(spans, x, y, label_limit, label_rows)  # QA 126 #1: over the curves and lines, each with a white halo
    # QA 96 #7: on a phone the timeline showed 0:00-1:30 of 2:49 in a box without a visible scrollbar, and nothing said more
    parts.append('</svg></div><p class="scroll-cue" aria-hidden="true">\u2194 Scroll the timeline sideways to see all of it.</p>')
    return "".join(parts)


def timeline_desc(spans: list[Span], t0: float, t1: float, *, enter: float | None, leave: float | None,
                  gaps: Sequence[tuple[float, float]] = (), flagged_percent: float | None = None, top: int = 5,
                  no_view: int = 0) -> str:
    """What a timeline shows, in words (its ``<desc>``): the time range, how many events, the ``top``
    highest-ranked with their time span and peak score, the share of frames flagged, stretches without
    frames and without a field of view (``no_view``), and the thresholds."""
    out = [f"Score from {fmt_clock(t0)} to {fmt_clock(t1)}."]
    ranked = sorted(spans, key=lambda s: s.rank)
    if ranked:
        listed = "; ".join(f"{s.label} {fmt_clock(s.start_seconds)}\u2013{fmt_clock(s.end_seconds)}, peak {score_text(s.peak_score)}"
                           for s in ranked[:top])
        more = f"; {len(ranked) - top} more" if len(ranked) > top else ""
        out.append(f"{len(ranked)} event{'s' if len(ranked) != 1 else ''} shown, highest first: {listed}{more}.")
    else:
        out.append("No events shown.")
    if flagged_percent is not None:
        out.append(f"{fmt_percent(flagged_percent)} of frames flagged (in events).")
    if gaps:
        out.append(f"{len(gaps)} stretch{'es' if len(gaps) != 1 else ''} without frames (not scored).")
    if no_view:
        out.append(f"{no_view} stretch{'es' if no_view != 1 else ''} without a field of view (not scored).")
    thresholds = ", ".join(f"{name} threshold {score_text(value)}" for name, value in (("enter", enter), ("leave", leave)) if value is not None)
    if thresholds:
        out.append(f"{thresholds[0].upper()}{thresholds[1:]}.")
    return " ".join(out)


def _runs(positions: np.ndarray) -> list[np.ndarray]:
    """Increasing positions split where they skip one."""
    return [run for run in np.split(positions, np.flatnonzero(np.diff(positions) > 1) + 1) if len(run)]


def _no_view(start: float, end: float, times: np.ndarray, x, plot_h: float) -> str:
    """Frames that show no field of view (dark, burned-in text only, a flat screen) at ``times``, drawn
    from the frame scored before them to the one after (as a gap runs): grey, not scored. The title
    names the frames' own first and last time and their count (QA 28: one frame at 30 frames/s read
    "from 0:12.5 to 0:12.5", the clock being in tenths)."""
    a, b = (min(max(float(x(sec)), LEFT), WIDTH - RIGHT) for sec in (start, end))
    first, last = fmt_clock(float(times[0])), fmt_clock(float(times[-1]))
    when = f"at {first}" if first == last else f"from {first} to {last}"
    count = f"{len(times)} frame{'s' if len(times) != 1 else ''}"
    return (f'<rect class="noview" x="{a:.1f}" y="{TOP}" width="{max(b - a, 1.0):.1f}" height="{plot_h:.1f}">'
            f'<title>no field of view {esc(when)} ({count}): not scored</title></rect>')


def _line(cls: str, ts: np.ndarray, ys: np.ndarray, x, y) -> str:
    """A curve of class ``cls``; a single point (a one-frame stretch) as a dot, which a path cannot draw."""
    if len(ts) == 1:
        return f'<circle class="{cls} point" cx="{float(x(ts[0])):.1f}" cy="{float(y(ys[0])):.1f}" r="2.5"/>'
    return f'<path class="{cls}" d="{_path(ts, ys, x, y)}"/>'


def _path(ts: np.ndarray, ys: np.ndarray, x, y) -> str:
    xs, yv = x(ts), y(ys)
    return "M" + " L".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs, yv))


def _axes(x, y, t0: float, t1: float) -> list[str]:
    out = []
    for score in (0.0, 0.5, 1.0):
        out.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(score):.1f}" y2="{y(score):.1f}"/>'
                   f'<text class="tick" x="{LEFT - 5}" y="{y(score) + 4:.1f}" text-anchor="end">{score:.1f}</text>')
    step = nice_step(t1 - t0)
    first = math.ceil(t0 / step) * step  # below 0 too: a stream's own times may be negative (QA 61)
    for k in range(int((t1 - first) / step + 1e-9) + 1):
        sec = first + k * step
        anchor = "end" if x(sec) > WIDTH - RIGHT - 12 else "middle"  # a label centred on the right edge is cut off
        out.append(f'<line class="xtick" x1="{x(sec):.1f}" x2="{x(sec):.1f}" y1="{y(0):.1f}" y2="{y(0) + 4:.1f}"/>'
                   f'<text class="tick" x="{x(sec):.1f}" y="{y(0) + 17:.1f}" text-anchor="{anchor}">{esc(_tick_label(sec, step))}</text>')
    return out


def _tick_label(seconds: float, step: float) -> str:
    if seconds >= UNIX_TIME_FROM:  # the time of day (UTC): the hour strips' titles and the facts give the date
        tenths = math.floor(seconds * 10 + 0.5)
        day = f"{datetime.fromtimestamp(tenths // 10, timezone.utc):%H:%M:%S}"
        return f"{day}.{tenths % 10}" if step < 1 else day
    if seconds < 0 and round(seconds, 1) < 0:
        return "-" + _tick_label(-seconds, step)
    if step < 1:  # tenths, as the page's times (QA 90 #1: "33600.0 s" under "Start 9:20:00.0")
        return fmt_clock(seconds)
    whole = int(round(seconds))
    if whole >= 3600 or _HOURS.get():
        return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
    return f"{whole // 60}:{whole % 60:02d}"


# px a "#k" label's '#' and each digit take at most (10 px bold: DejaVu Sans Bold's are 8.4 and 7.0), and px between two
LABEL_HASH_WIDTH, LABEL_DIGIT_WIDTH, LABEL_GAP = 8.5, 7.0, 2.0
PEAK_R, LABEL_BASELINE, LABEL_LINE = 3, 11, 14  # an event's peak dot; its label's baseline under the top of the plot, a row's
# under the one above (more than the font's box, 10 px glyphs: rows never touch)


def _box(span: Span, x) -> tuple[float, float]:
    """Left edge and width of a span as drawn: at least 2 px, inside the plot."""
    until = span.end_seconds if span.shown_until is None else span.shown_until
    x0, x1 = (min(max(float(x(sec)), LEFT), WIDTH - RIGHT) for sec in (span.start_seconds, until))
    width = max(x1 - x0, 2.0)
    return min(x0, WIDTH - RIGHT - width), width


def _labels(spans: list[Span], x, y, label_limit: int, rows: int = 1) -> list[str]:
    """The "#k" labels, drawn over the curves: of the spans of rank below ``label_limit``, highest first, each in the first
    of ``rows`` rows where it clears every label placed by :data:`LABEL_GAP` (QA 64, QA 85 #2; rev111 #1: an hour strip's
    label kept inside the plot pushed its neighbour's out of the one row) and no dot of theirs (rev112 #1: "#2" took the
    place "#1" left over its dot); a label that would cover its own span's peak dot goes under the dot (QA 111 #4)."""
    def covers(baseline: float, centre: float, half: float, px: float, py: float) -> bool:
        return baseline - LABEL_LINE < py + PEAK_R and py - PEAK_R < baseline + 1 and abs(px - centre) < half + PEAK_R
    placed, dots, out = [], [], []  # (centre, half width, baseline) of each label drawn; the drawn dots of their spans
    for span in sorted((s for s in spans if s.rank < label_limit), key=lambda s: s.rank):
        centre, half = _label_centre(span, x), _label_half_width(span.label)
        px, py = float(x(span.peak_seconds)), float(y(span.peak_score))
        shown = LEFT <= px <= WIDTH - RIGHT
        for row in range(rows):
            baseline = TOP + LABEL_BASELINE + LABEL_LINE * row
            if shown and covers(baseline, centre, half, px, py):
                baseline = py + PEAK_R + LABEL_BASELINE  # the dot over the label: the label under it
            if (all(abs(centre - c) >= half + h + LABEL_GAP or abs(baseline - b) >= LABEL_LINE for c, h, b in placed)
                    and not any(covers(baseline, centre, half, *dot) for dot in dots)):
                placed.append((centre, half, baseline))
                dots += [(px, py)] if shown else []
                out.append(f'<text class="span-label" x="{centre:.1f}" y="{baseline:.1f}" text-anchor="middle">{esc(span.label)}</text>')
                break
    return out


def _label_half_width(label: str) -> float:
    return (LABEL_HASH_WIDTH + (len(label) - 1) * LABEL_DIGIT_WIDTH) / 2


def _label_centre(span: Span, x) -> float:
    """The centre of a span's "#k" label: the span's, moved inside the plot (QA 126 #2: an event at the start of an hour
    strip put "#120" over the axis's "1.0")."""
    x0, width = _box(span, x)
    half = _label_half_width(span.label)
    return min(max(x0 + width / 2, LEFT + half), WIDTH - RIGHT - half)


def _span(span: Span, x, y, plot_h: float, *, current: bool) -> str:
    """A span's link: its box and peak dot (its label is drawn later, over the curves: :func:`_labels`)."""
    x0, width = _box(span, x)
    px, py = float(x(span.peak_seconds)), float(y(span.peak_score))
    peak = f'<circle cx="{px:.1f}" cy="{py:.1f}" r="{PEAK_R}"/>' if LEFT <= px <= WIDTH - RIGHT else ""
    mark = ' class="span selected" aria-current="true"' if current else ' class="span"'
    return (f'<a{mark} href="{esc(span.href)}" tabindex="-1" data-rank="{span.rank}"><title>{esc(span.title)}</title>'
            f'<rect x="{x0:.1f}" y="{TOP}" width="{width:.1f}" height="{plot_h:.1f}"/>'
            f'{peak}</a>')


# --- page building blocks -------------------------------------------------------------------

def score_text(value, digits: int = 3) -> str:
    """A score (0-1) to ``digits`` places, never rounded onto an end it does not reach: 0.99962 reads
    ">0.999", not "1.000" (which a reviewer takes for certainty), and 0.00031 "<0.001"; None/NaN a dash."""
    if value is None or math.isnan(value := float(value)):  # numpy's float32 NaN too (review rev32: it read "nan")
        return "\u2014"
    value = value + 0.0 if value else 0.0  # -0.0 reads 0.000
    step = 10.0 ** -digits
    if 1.0 - step / 2 <= value < 1.0:
        return f">{1.0 - step:.{digits}f}"
    if 0.0 < value < step / 2:
        return f"<{step:.{digits}f}"
    return f"{value:.{digits}f}"


def threshold_text(value: float, digits: int = 4) -> str:
    """A threshold to ``digits`` places, or in full where those would round it onto 0 or 1 (QA 108 #3: "threshold 1.0000"
    beside scores of 1.000 one flagged and one not): a threshold is compared, not read as a score."""
    value = float(value) + 0.0 if value else 0.0  # -0.0 reads 0.0000 (rev102 #7)
    text = f"{value:.{digits}f}"
    return text if value in (0.0, 1.0) or 0.0 < float(text) < 1.0 else repr(value)
