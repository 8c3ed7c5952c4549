"""The facts boxes of a study's page: the study (file, duration, frames, gaps, source and rate) and the model
(classes, score, thresholds, weights, backend, the run), from run.json and the study's frames."""

from __future__ import annotations

import math
from pathlib import PurePosixPath

import numpy as np

from .completeness import measured_rate, time_gaps
from .model_card import percent_text
from .periods import timeline_seconds
from .report_svg import esc, fmt_clock, fmt_duration, score_text, threshold_text
from .study_folder import Study


def file_name(run: dict) -> str:
    path = run.get("input", {}).get("path") or run.get("source", {}).get("path") or "(unknown input)"
    return PurePosixPath(path).name or path


def study_start(study: Study) -> float:
    """Where the stream's clock starts (0 for most files; a recording's own clock, e.g. 3600 s, for some)."""
    stated = study.run.get("source", {}).get("start_seconds")
    pts = study.frames["pts_seconds"]
    first = float(pts[0]) if len(pts) else 0.0
    return min(float(stated), first) if isinstance(stated, (int, float)) and not isinstance(stated, bool) else first


def study_duration(study: Study) -> float:
    """The video's length: from its frames (container durations of streams that start late may be their
    end time), else as run.json states it (one frame: one period, QA 73 #3), else one period at the source's
    rate, else as the container does."""
    if (seconds := timeline_seconds(study.frames["pts_seconds"])) is not None:
        return seconds
    src = study.run.get("source", {})
    rate = src.get("average_fps")
    one_period = 1 / rate if len(study.frames["pts_seconds"]) == 1 and _number(rate) and rate > 0 else None
    for stated in (study.run.get("duration_seconds"), one_period, src.get("duration_seconds")):  # rev75 #3: a late start's end time
        if _number(stated):
            return float(stated)
    return 0.0


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def study_gaps(study: Study) -> dict:
    """The study's stretches without frames: run.json's ``time_gaps``, or found in its frames for a run.json written
    before 2026-12-01 without them (rev75 #1: the timeline drew them, the facts and the rate did not)."""
    gaps = study.run.get("time_gaps")
    return gaps if isinstance(gaps, dict) and _number(gaps.get("seconds")) else time_gaps(study.frames["pts_seconds"])


def playing_rate(study: Study) -> float | None:
    """Frames per second as the video plays: its frames over its length less the time its stretches without frames
    add (:func:`study_gaps`), so that a capsule's signal loss is not read as slower playing (QA 73 #2: a 30 frames/s
    study with an 8 s gap was read at 15, its frames over the whole span giving 10); None for fewer than two frames."""
    frames = len(study.frames["pts_seconds"])
    playing = study_duration(study) - study_gaps(study)["seconds"]
    return frames / playing if frames > 1 and playing > 0 else None


def time_range(study: Study) -> tuple[float, float]:
    """Where the study's timeline starts and ends: its start, and start + duration (one frame period past the last frame)."""
    pts = study.frames["pts_seconds"]
    start = study_start(study)
    return start, max(start + study_duration(study), float(pts[-1]) if len(pts) else start)


def names_classes(study: Study) -> bool:
    """Whether events and frames are shown with their abnormal class: only where the model has a choice of them (review
    rev66, QA 96 #1: every event of a one-class model read "bleeding", a 0.437 one beside a frame the model scored
    non-bleeding 0.563, as if it were a finding)."""
    return len(((study.run.get("model") or {}).get("config") or {}).get("abnormal_classes") or ()) > 1


def says_hours(study: Study) -> bool:
    """Whether the study's times are said with hours (``h:mm:ss.s``), on its pages and the console alike: its timeline
    reaches an hour as :func:`~capsule_triage.report_svg.fmt_clock` rounds (rev35: 3599.96 s; review rev58 #6: the console
    judged by the last frame, the page by the timeline's end, one period later, so a study ending at 3599.5 s at 2 frames/s
    had hours on its page only)."""
    return math.floor(time_range(study)[1] * 10 + 0.5) >= 36000


def study_facts(study: Study) -> str:
    run, src = study.run, study.run.get("source", {})
    size = run.get("input", {}).get("size_bytes")
    res = f"{src.get('width')} \u00d7 {src.get('height')} px" if src.get("width") else None
    turned, mirrored = run.get("frames_turned_clockwise_degrees"), run.get("frames_mirrored")
    if res and (turned or mirrored):  # QA 61 L3: the stored size, with nothing saying the frames were turned
        turns = " and ".join(f"{t}\u00b0" for t in turned or ())
        shown = [f"turned {turns} clockwise"] if turned else []
        res += f" as stored, shown {' and '.join(shown + [f'mirrored {m}' for m in mirrored or ()])} (its display matrix)"
    duration, gaps, frames = study_duration(study), study_gaps(study), len(study.frames["pts_seconds"])
    gapped = (playing_rate(study), frames / duration if duration else None) if gaps["count"] else None
    return facts("Study", [
        ("File", file_name(run)), ("Path", run.get("input", {}).get("path")),
        ("Duration", fmt_duration(duration) + (f" ({duration:,.0f} s)" if duration >= 60 else "")),
        ("Frames", f"{frames:,} decoded, {run.get('frames_skipped', 0):,} skipped"
                   + (f", {run['frames_without_view']:,} without a field of view (not scored)" if run.get("frames_without_view") else "")),
        ("Gaps", _gaps(gaps)),
        ("Source", ", ".join(str(v) for v in (src.get("kind"), src.get("codec"), res, _rate(run, src, study.frames["pts_seconds"], gapped))
                             if v)),
        ("Colours", src.get("colours")),
        ("Size", f"{size / 1e6:.1f} MB" if size else None), ("SHA-256", run.get("input", {}).get("sha256"))])


_CSV_ORIGIN = {"folder": "folder's timestamps.csv", "preset": "preset's timestamp CSV"}  # else --timestamps (older run.json too)


def _rate(run: dict, src: dict, pts: np.ndarray, gapped: tuple[float | None, float | None] | None) -> str | None:
    """The frame rate, whether it varies (an adaptive-rate capsule's 2-6 frames/s), and for a frame folder
    where its times came from (the images carry none); for a study with stretches without frames, ``gapped``: its rate
    as it plays between them and its frames over its whole length (QA 73 #2: the second alone read as a slower rate)."""
    read = run.get("parameters", {}).get("read", {})
    measured = measured_rate(pts)
    timed_by_csv = src.get("kind") == "frames" and read.get("timestamps_csv")
    if not src.get("average_fps") and not (timed_by_csv and measured):
        return None
    origin = ("" if src.get("kind") != "frames" else f" (times from the {_CSV_ORIGIN.get(read.get('timestamps_from'), '--timestamps CSV')})" if timed_by_csv
              else f" (--fps {read.get('folder_fps', src['average_fps']):g}: the images carry no times)" if read.get("folder_fps_from") == "--fps"
              else f" (the preset's folder_fps {read.get('folder_fps', src['average_fps']):g}: the images carry no times)"
              if read.get("folder_fps_from") == "preset" else " (the images carry no times)")  # run.json before 2026-12-01: not said
    varies = (f" on average, from {measured['slowest_fps']:.1f} to {measured['fastest_fps']:.1f} (5th-95th percentile of frame steps)"
              if measured and measured["varies"] else "")
    if gapped and gapped[0] and gapped[1]:  # two significant digits below 0.1 (QA 90 #3: "0.00" over a 10-hour folder's length)
        whole = f"{gapped[1]:.{max(2, 1 - math.floor(math.log10(gapped[1])))}f}"  # 0.0017, 0.000083 (rev86: not 8.3e-05)
        return f"{gapped[0]:.2f} frames/s between its gaps{varies}; {whole} over its whole length{origin}"
    if measured and (measured["varies"] or not src.get("average_fps")):  # the frames' own times, not a header's nominal rate
        return f"{measured['average_fps']:.2f} frames/s{varies}{origin}"
    return f"{src['average_fps']:.2f} frames/s{origin}"


def gaps_amount(gaps: dict) -> str:
    """How long a study's stretches without frames last: '3 min 00 s' for one, '... in all' for several (the console's and
    the page's words: rev81 #5, '179.8 s' on the one, '3 min 00 s' on the other)."""
    return fmt_duration(gaps.get("seconds", 0)) + (" in all" if gaps["count"] > 1 else "")


def gaps_frames(gaps: dict) -> str:
    """"~N frames" missing in the stretches; "" where no frame period is known there (QA 117 #2: frames that all repeat
    one time said "~0 frames" of a 3 s stretch)."""
    return f"~{missing:,} frames" if (missing := gaps.get("frames_missing_estimate", 0)) else ""


def gaps_phrase(count: int) -> str:
    return f"{count} stretch{'es' if count != 1 else ''}"


def _gaps(gaps) -> str | None:
    """Stretches of the video without frames: never seen by the model, so the reviewer must know."""
    if not isinstance(gaps, dict) or not gaps.get("count"):
        return None
    longest = max(gaps.get("gaps") or [{}], key=lambda g: g.get("seconds", 0))
    where = (f"; longest {fmt_duration(longest['seconds'])} after {fmt_clock(longest['from_seconds'])}" if longest and gaps["count"] > 1
             else f", after {fmt_clock(longest['from_seconds'])}" if longest else "")  # QA 85 #6: one gap said '3 min 00 s', '179.8 s'
    missing = f" ({frames})" if (frames := gaps_frames(gaps)) else ""
    return (f"\u26a0 {gaps_phrase(gaps['count'])} without frames, {gaps_amount(gaps)}{missing}{where}: not scored (a damaged "
            "file, or a lost signal)")


def model_facts(run: dict, card_use: str | None) -> str:
    model, rank = run.get("model", {}), run.get("parameters", {}).get("rank", {})
    config = model.get("config", {})
    return facts("Model", [
        ("Model", model.get("name") or config.get("name")), ("Architecture", model.get("architecture") or config.get("architecture")),
        ("Intended use", card_use or "not stated (no model card given)"),
        ("Classes", ", ".join(config.get("class_names", [])) or None),
        ("Score", f"P({' + '.join(config['abnormal_classes'])}), the abnormal classes: the model's output, to rank frames by, "
                  "not a calibrated chance of a finding" if config.get("abnormal_classes") else None),  # QA 96 #2: read as one
        ("Thresholds", f"enter {_threshold(rank.get('enter_threshold'))}, leave {_threshold(rank.get('leave_threshold'))}{operating_note(rank, config)}"
         if rank else None),
        ("Events", _event_rule(rank)),
        ("Weights", model.get("weights_path")), ("Weights SHA-256", model.get("weights_sha256")),
        ("Pipeline", run.get("pipeline", {}).get("name")), ("Backend", _backend(model)),
        ("Run", f"{run.get('wall_seconds', 0):.1f} s, {run.get('fps', 0):.1f} frames/s on {model.get('device', '?')}" + _scored_by(run))])


def _scored_by(run: dict) -> str:
    """Which capsule_triage scored the study (QA 43: a page rewritten by a later version named only its own, in the footer)."""
    versions = run.get("versions") if isinstance(run.get("versions"), dict) else {}
    version, commit = versions.get("capsule-triage"), versions.get("capsule-triage-commit")
    said = " ".join([f"capsule-triage {version}"] * bool(version) + [f"({str(commit)[:12]})"] * bool(commit))
    return f", by {said}" if said else ", by a capsule-triage that did not record its version"


def _backend(model: dict) -> str | None:
    """"ov-fp32 (fastest accepted in backends.json ...)": what scored the frames and why (QA 20: not on the page)."""
    backend = model.get("backend")
    reason = (model.get("backend_selection") or {}).get("reason")
    return f"{backend} \u2014 {reason}" if backend and reason else backend


def _event_rule(rank: dict) -> str | None:
    """The thresholds in plain words (QA 96 #2: "enter 0.188, leave 0.141" was explained nowhere on the page)."""
    window = rank.get("smooth_seconds")
    if not all(isinstance(rank.get(k), (int, float)) for k in ("enter_threshold", "leave_threshold")):
        return None
    averaged = f"the score averaged over {window:g} s" if isinstance(window, (int, float)) and window > 0 else "the score"
    return (f"begin where {averaged} reaches {score_text(rank['enter_threshold'])} and end where it falls below "
            f"{score_text(rank['leave_threshold'])}")


def _threshold(value) -> str:  # rev102 #6: a threshold near 1 read ">0.999" (a score's rounding), 0.99999994 "1.000"
    return threshold_text(value, 3) if isinstance(value, (int, float)) and math.isfinite(value) else score_text(value)


def operating_note(rank: dict, config: dict) -> str:
    """Said beside the thresholds: whether the run's enter threshold is the model's operating one (QA 34: a run at
    --threshold 0.99 read as the validated setting, 14 fewer event frames than at the model's 0.188), and whether that
    one was chosen on data (QA 81 #1); "" when either is not known."""
    enter, operating = rank.get("enter_threshold"), config.get("threshold")
    if not isinstance(enter, (int, float)) or not isinstance(operating, (int, float)):
        return ""
    chosen = (config.get("provenance") or {}).get("operating_threshold") or {}
    sensitivity = chosen.get("val_sensitivity") if chosen.get("threshold") == operating else None
    validated = f", chosen for sensitivity {percent_text(sensitivity)} on validation" if isinstance(sensitivity, (int, float)) else ""
    if math.isclose(enter, operating, abs_tol=1e-9):  # QA 81 #1: an untuned 0.5 (every frame of a 3-class model) read as chosen
        return (f" (the model's operating threshold{validated})" if validated else
                " (the weights' default, not recorded as chosen on data: `triage eval --target-sensitivity S` chooses one)")
    return f" (this run's; the model's operating threshold is {threshold_text(operating, 3)}{validated})"


def run_thresholds(run: dict) -> dict:
    """The thresholds the run ranked at (run.json): ``enter`` (the model's own where the run names none) and ``leave``."""
    rank = run.get("parameters", {}).get("rank", {})
    enter = rank.get("enter_threshold", run.get("model", {}).get("config", {}).get("threshold"))
    return {"enter": enter, "leave": rank.get("leave_threshold")}


def facts(title: str, items: list[tuple[str, object]]) -> str:
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items if v not in (None, ""))
    return f'<section class="facts"><h2>{esc(title)}</h2><dl>{rows}</dl></section>'
