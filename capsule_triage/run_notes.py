"""The `Warning:` lines a run says of its input and how it was read, beside its results (run.json ``warnings``): a frame
folder read at an assumed rate or with an --fps its own timestamps.csv overrides, other video streams not scored, images
of several pages, a study mostly without a field of view."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .field_of_view import NO_VIEW_KINDS, mostly_without_view
from .folder_times import TIMESTAMPS_FILE
from .frame_folder import listed, plural
from .frames import DecodeStats, SourceInfo
from .read_options import DEFAULT_FOLDER_FPS

ASSUMED_RATE_ADVICE = (f"frames read at {DEFAULT_FOLDER_FPS:g} frames/s (the preset's folder_fps, a typical capsule rate; no "
                       f"{TIMESTAMPS_FILE} times the images, and names are not read as times): give --fps F (or, to triage "
                       f"run, --timestamps CSV), or put a {TIMESTAMPS_FILE} (filename,pts_seconds) in the folder, if that is "
                       "not their rate")


def rate_assumed(read_record: dict) -> bool:
    """Whether run.json's ``parameters.read`` is a frame folder read at the default rate that nobody gave
    (QA 22: times silently off by 2x for 4 fps exports); a preset that sets another rate for its recorder
    is taken at its word. The run's warning and the batch's count both ask this."""
    return read_record.get("folder_fps_from") == "preset" and read_record.get("folder_fps") == DEFAULT_FOLDER_FPS


SLOWEST_STEP = 10.0  # s between frames: slower than any capsule (0.5-6 frames/s) or endoscope records (a subset export, or ms?)


def frame_times_note(path: str | Path, read_record: dict, pts: np.ndarray) -> str | None:
    """A Warning: line when the frames' times cannot be what they say: a timestamp CSV that puts a frame folder's frames a
    median of over :data:`SLOWEST_STEP` apart (QA 77 #2: a CSV in milliseconds read as seconds made a 20-frame study 10,000 s
    long and a lone frame a 500 s event), or a video whose frames mostly repeat a time (QA 81 #3: a muxer that wrote
    every frame at 0: 'Duration 0.0 s', every frame smoothed with every other, and no word)."""
    if len(pts) < 3:
        return None
    steps = np.diff(np.sort(pts))
    if "timestamps_from" in read_record and (step := float(np.median(steps))) > SLOWEST_STEP:
        return (f"{read_record['timestamps_csv']}: its frames are a median {step:g} s apart: if its pts_seconds are milliseconds "
                "(a capsule records 0.5-6 frames a second), divide them by 1000; events and durations follow these times")
    if 2 * (repeated := int(np.count_nonzero(steps == 0))) <= len(steps):
        return None
    every = (f"all {len(pts)} frames carry one time ({pts[0]:g} s)" if repeated == len(steps) else
             f"{repeated} of its {len(steps)} frame steps repeat a time")
    return (f"{path}: {every}: the file stores no usable frame times, so its duration, events and smoothing (over seconds) "
            "are not the recording's; export it again, or triage its frames as a folder with --fps F")


def out_of_order_note(path: str | Path, frame_index: np.ndarray, pts: np.ndarray) -> str | None:
    """A Warning: line when a video's frames, in the order decoded, step back in time or repeat the time of the frame before
    (QA 110 #2: a Matroska file whose times went back 0.5 s scored two frames at 7.0 s, interleaved, without a word); both
    are placed by their times. ``pts`` in the order decoded. Most frames at one time: :func:`frame_times_note` says it."""
    steps = np.diff(np.asarray(pts, np.float64))
    back, same = np.flatnonzero(steps < 0), np.flatnonzero(steps == 0)
    if not (len(back) or len(same)) or 2 * len(same) > len(steps):
        return None
    said = []
    if len(back):
        i = back[0]
        said.append(f"{plural(len(back), 'frame')} timed before the frame decoded ahead of it (first: frame {frame_index[i + 1]} "
                    f"at {pts[i + 1]:.3f} s, after {pts[i]:.3f} s)")
    if len(same):
        i = same[0]
        said.append(f"{plural(len(same), 'frame')} at the time of the frame before it (first: frame {frame_index[i + 1]} at "
                    f"{pts[i + 1]:.3f} s)")
    return (f"{path}: {'; '.join(said)}: each placed by its time, as the file gives it; its timestamps are damaged, or two "
            "recordings were joined (re-mux it with fresh timestamps if the frames' order matters)")


def name_twins_note(info: SourceInfo) -> str | None:
    """A Warning: line when a frame folder timed by its order holds names alike but for zeros, case or type (QA 61: "Image_01.jpg" and
    "Image_1.jpg" were put in name order, their order in time a guess, without a word), or named as a file manager's copy
    of another image (QA 77 #5: "frame_5 - Copy.jpg" was scored as a frame of its own, every later one a period late)."""
    said = []
    if info.name_twins:
        said.append(f"{plural(len(info.name_twins), 'group')} of frame names alike but for leading zeros, case, type or Unicode form "
                    f"({listed(info.name_twins)}): put in name order, so their order in time is a guess; a {TIMESTAMPS_FILE} "
                    "(filename,pts_seconds) in the folder times them")
    if copies := info.name_copies:
        said.append(f"{plural(len(copies), 'image')} named as a file manager's copy of another ({listed(copies)}): each scored "
                    f"as a frame of its own, every later frame a period later; delete {'it' if len(copies) == 1 else 'them'} if a copy")
    if info.name_decimals:  # QA 77 #4
        said.append(f"names with decimal numbers put in natural order, which reads 0.25 as 25 ({info.name_decimals[0]}): if the "
                    f"numbers are times, a {TIMESTAMPS_FILE} (filename,pts_seconds) in the folder puts the frames in time order")
    return f"{info.path}: " + "; ".join(said) if said else None


def fps_not_used(path: str, read_record: dict, fps: float | None) -> str | None:
    """A Warning: line when --fps was given for a folder that its own timestamps.csv times (a batch's --fps is
    for its folders without one)."""
    if fps is None or read_record.get("timestamps_from") != "folder":
        return None
    return f"{path}: --fps {fps:g} not used: the folder's {TIMESTAMPS_FILE} gives its frames' times"


def other_streams_note(info: SourceInfo) -> str | None:
    """A Warning: line for a file of several video streams (QA 40: a two-camera recording lost one camera in silence)."""
    if not info.video_streams or info.video_streams < 2:
        return None
    return (f"{info.path}: {info.video_streams} video streams; only stream 0:{info.stream_index} ({info.width}x{info.height}, the "
            "main one) is scored, not the others (a second camera's, a preview): put one in a file of its own to triage it "
            "(ffmpeg -i IN -map 0:N -c copy OUT.mkv for ffprobe's stream 0:N)")


def unfinished_note(info: SourceInfo) -> str | None:
    """A Warning: line for a Matroska file whose muxer wrote no duration, of the track or the file (QA 92 #2: a recorder
    that crashed mid-recording leaves one; read whole, it was triaged as complete where a cut MP4 is refused)."""
    if "matroska" not in (info.container or "").split(",") or info.muxer_duration_seconds is not None or info.duration_seconds is not None:
        return None
    return (f"{info.path}: a Matroska file with no duration recorded, as a recording never finished leaves it (a recorder "
            "stopped or crashed, a live capture; a browser's WebM recording writes none either): its frames are scored, but "
            "whether the recording went on beyond them cannot be told")


def multi_page_note(path: Path, stats: DecodeStats) -> str | None:
    """A Warning: line for a frame folder's images of several pages or frames, of which only the first is read."""
    if not stats.multi_page:
        return None
    many = len(stats.multi_page)
    return (f"{path}: {many} image{'s hold' if many > 1 else ' holds'} several pages or frames (a multi-page TIFF, an animated WebP; "
            f"e.g. {stats.multi_page[0]}): only the first of each is scored; export one image per frame to triage them all")


def image_sizes_note(path: Path, stats: DecodeStats, kind: str = "frames") -> str | None:
    """A Warning: line for a frame folder whose images are of several sizes (QA 77 #11: said nowhere; run.json's source
    gives the first image's): frames of several devices, or enlarged stills, among the study's; or for a video whose
    stream changes its picture size part-way (QA 87 #4: a recorder restarted, recordings joined)."""
    if len(stats.image_sizes) < 2:
        return None
    sizes = sorted(stats.image_sizes.items(), key=lambda item: -item[1])
    shown = ", ".join(f"{size} px: {n}" for size, n in sizes[:4]) + (f", {len(sizes) - 4} more sizes" if len(sizes) > 4 else "")
    if kind == "video":
        return (f"{path}: frames of {len(sizes)} sizes ({shown}; run.json image_sizes): the stream changes its picture size "
                "part-way (a recorder restarted, recordings joined?); each frame is scaled to the model's input on its own; "
                "the study's width and height are its first frame's")
    return (f"{path}: images of {len(sizes)} sizes ({shown}; run.json image_sizes): several devices, or enlarged stills, in one "
            "folder? Each is scaled to the model's input on its own (short side, centre square); the study's width and height "
            "are its first image's")


def ticks_without_frame_note(path: Path, stats: DecodeStats) -> str | None:
    """A Warning: line for an AVI with empty chunks (QA 87 #2, rev83 #2: once counted as frames lost to damage, then said
    nowhere): ticks its recorder wrote no frame for, a frame the capture dropped, or a variable rate written at a fixed
    one."""
    if not (ticks := stats.ticks_without_frame):
        return None
    return (f"{path}: {ticks:,} tick{'s' if ticks != 1 else ''} of the recording hold no frame (the AVI's empty chunks, run.json "
            "ticks_without_frame: frames the capture dropped, or a variable frame rate written at a fixed one); a player "
            "shows the frame before for each, and no frame was lost")


def thumbnail_frames(ranking) -> dict[int, float]:
    """{frame_index: pts_seconds} of the frames that get a thumbnail: the events' peaks, then the top frames."""
    return {e.peak_frame: e.peak_seconds for e in ranking.events} | {f: t for f, t, _ in ranking.top_frames}


def thumbnails_note(path: Path, ranking, thumbnails: dict) -> str | None:
    """A Warning: line for frames of events or the top list whose thumbnail could not be re-read from the source (QA 106
    #1: a physician's first picture was missing without a word; the tables' thumbnail is null)."""
    from .report_svg import fmt_clock

    wanted = thumbnail_frames(ranking)
    if not (lost := sorted(set(wanted) - set(thumbnails))):
        return None
    shown = ", ".join(f"{i} at {fmt_clock(wanted[i])}" for i in lost[:5]) + (f" and {len(lost) - 5:,} more" if len(lost) > 5 else "")
    one = len(lost) == 1
    return (f"{path}: {len(lost):,} of the {len(wanted):,} frames shown as event peaks or top frames could not be re-read for "
            f"{'its' if one else 'their'} thumbnail{'' if one else 's'} (frame{'' if one else 's'} {shown}): the page shows "
            f"none for {'it' if one else 'them'}, the tables' thumbnail is null")


def no_view_note(path: Path, view: np.ndarray) -> str | None:
    """A Warning: line when most frames show no field of view (a blank or unplugged study)."""
    without = int((~view).sum())
    if not mostly_without_view(without, len(view)):
        return None
    what = "no frame shows a" if without == len(view) else f"{without:,} of {len(view):,} frames ({without / len(view):.0%}) show no"
    return f"{path}: {what} field of view ({NO_VIEW_KINDS}): not scored, in no event"  # QA 66 #4: "8 of 11 frames show a field"


def frames_not_scored(run: dict) -> list[str]:
    """The Warning: lines of a run's stretches without frames and its frames that could not be decoded, without the
    source's name: the console prefixes it, the review page shows them as they are (QA 111 #1/#2: its Warnings box
    left both out, the page naming neither a gap's 8 minutes nor which frame was lost)."""
    from .report_facts import gaps_amount, gaps_frames, gaps_phrase

    lines = []
    if (gaps := run.get("time_gaps") or {}).get("count"):
        frames = f", {frames}" if (frames := gaps_frames(gaps)) else ""
        lines.append(f"{gaps_phrase(gaps['count'])} without frames ({gaps_amount(gaps)}{frames}), not scored; "
                     "see time_gaps in run.json")
    if skipped := run.get("frames_skipped"):  # QA 72 #3: a batch said it nowhere but studies.parquet
        errors = run.get("decode_errors") or []  # rev70 #8: "(first: 3 frame(s) at the start ...)" for the only entry
        why = "" if not errors else f" ({errors[0]})" if len(errors) == 1 else f" (first: {errors[0]})"
        lines.append(f"{skipped:,} frame{'s' if skipped != 1 else ''} could not be decoded and {'were' if skipped != 1 else 'was'} "
                     f"not scored{why}" + ("; see decode_errors in run.json" if errors else ""))
    return lines


def warning_lines(run: dict, source: str | Path, *, leave_out=()) -> list[str]:
    """Every `Warning:` line of a finished run (its run.json): time gaps, what a folder left unread, and its notes
    (``warnings``), but those in ``leave_out`` (the model's, said once; those a batch counts over its studies). Printed
    by `triage run`, and by `triage batch` for each study it scored (QA 66 #3: a study's gaps, wide or enlarged frames,
    several-page images reached only its run.json and page)."""
    lines = [f"{source}: {line}" for line in frames_not_scored(run)]
    if unread := run["source"].get("unread"):
        lines.append(f"{source}: not read: {'; '.join(unread)}; see source.unread in run.json")
    return lines + [line for line in run.get("warnings", []) if line not in leave_out]
