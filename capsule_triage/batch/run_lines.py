"""The batch run's own `Warning:` lines (beside each study's): how frame folders were timed, studies without a view,
folders of another input or of none, patterns that matched nothing, results made otherwise. They go to stderr,
batch.log and batch.json's ``warnings``."""

from __future__ import annotations

from pathlib import Path

from ..field_of_view import NO_VIEW_KINDS, mostly_without_view
from ..json_files import read_json
from ..outputs import RUN_FILE
from ..read_options import DEFAULT_FOLDER_FPS
from ..run_notes import rate_assumed
from .discovery import excluded

INSTALLED_TONIGHT = ("ok", "reused")  # studies.parquet statuses of results installed by this run (a skipped one's are older)


def run_lines(out_dir: Path, rows: list[dict], batch: dict, fps: float | None) -> list[str]:
    """The lines said of the run as a whole, from its summary rows and ``batch`` (batch.json's record so far)."""
    said = rate_warnings(out_dir, rows, fps)
    said += [blank] if (blank := without_view_warning(rows)) else []
    if not rows:  # (QA 62 #4: this one reached stderr only)
        unread = batch.get("not_read_count", 0)  # rev105 #3: an archive of raw .h264 streams alone said no more
        said.insert(0, f"{batch['input_dir']}: no studies found (video files, or folders directly holding frame images)"
                       + (f"; {unread} file{'s' if unread != 1 else ''} not read, e.g. {batch['not_read'][0]} (batch.json not_read)"
                          if unread else ""))
    if stale := batch["stale_folders"]:
        said.append(f"{out_dir}: {len(stale)} failed stud{'ies keep' if len(stale) != 1 else 'y keeps'} the results of an earlier "
                    f"version of {'their' if len(stale) != 1 else 'its'} input, e.g. {stale[0]}: not of the file now (batch.json "
                    "stale_folders names them; kept, not linked from index.html)")
    for pattern in batch.get("exclude", ()):  # a typo would leave a broken study failing every night
        inside = lambda path: excluded(pattern, (path,)) and pattern != path  # noqa: E731 - a value within a folder left out
        if not any(excluded(path, (pattern,)) or inside(path) for path in batch["excluded"]):
            said.append(f"--exclude {pattern!r}: nothing under {batch['input_dir']} matches it")
    if redone := batch.get("made_otherwise"):
        said.append(_made_otherwise_line(redone))
    if orphans := batch["orphan_folders"]:
        said.append(f"{out_dir}: {len(orphans)} study folder{'s' if len(orphans) != 1 else ''} of inputs no longer found "
                    f"(moved, renamed or deleted), e.g. {orphans[0]}; they are not in studies.parquet (batch.json "
                    "orphan_folders names them); delete them to free the space")
    return said


def _named(paths: list[str]) -> str:
    return ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def rate_warnings(out_dir: Path, rows: list[dict], fps: float | None) -> list[str]:
    """The lines on how the frame-folder studies scored in this run were timed: those read at the default rate that
    nobody gave (QA 22: a 4 fps export read at 2 fps without a word; each study's run.json and page say it too), and,
    when ``--fps`` was given, those timed by their own timestamps.csv instead (review rev31: said in run.json only).
    Studies skipped were said on the night they were scored (QA 88 #2: a cron job mailed the line every
    night, nothing scored)."""
    assumed, own = [], 0
    unused = []  # folders whose timestamps.csv lacks the columns: read at the rate instead (review rev32: said in run.json only)
    for row in rows:
        if row["kind"] != "frames" or row["status"] not in INSTALLED_TONIGHT:
            continue
        try:
            run = read_json(out_dir / row["study_id"] / RUN_FILE)
            read = run["parameters"]["read"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        assumed += [row["input_path"]] if rate_assumed(read) else []
        own += read.get("timestamps_from") == "folder"
        unused += [run.get("input", {}).get("path", row["input_path"])] if read.get("own_timestamps_unused") == "columns" else []
    studies = lambda n: f"{n} frame-folder {'study' if n == 1 else 'studies'}"
    lines = [f"{studies(len(assumed))} ({_named(assumed)}) read at {DEFAULT_FOLDER_FPS:g} frames/s, the preset's rate (no timestamps.csv times the images, and names are not read as times): give "
             "--fps F, or a timestamps.csv (filename,pts_seconds) in each folder, if that is not their rate"] if assumed else []
    if own and fps is not None:
        lines.append(f"{studies(own)} timed by {'its' if own == 1 else 'their'} own timestamps.csv: --fps {fps:g} is for the "
                     "folders without one")
    if unused:
        lines.append(f"{studies(len(unused))} read at a fixed rate although {'it has' if len(unused) == 1 else 'they have'} a "
                     f"timestamps.csv without the columns filename,pts_seconds, e.g. {unused[0]}")
    return lines


def without_view_warning(rows: list[dict]) -> str | None:
    """One line for the studies scored in this run most of whose frames show no field of view (a recorder left running
    unplugged, a capsule in the dark: QA 28), naming up to three; each one's run.json and index row say it too, and a
    study skipped on later nights is not said again (QA 88 #2)."""
    blank = [row["input_path"] for row in rows if row["status"] in INSTALLED_TONIGHT and row.get("frames_without_view")
             and mostly_without_view(row["frames_without_view"], row["frames"] or 0)]
    if not blank:
        return None
    named = _named(blank)
    return (f"{len(blank)} {'study shows' if len(blank) == 1 else 'studies show'} no field of view in most frames ({NO_VIEW_KINDS}: "
            f"not scored): {named}")


def _made_otherwise_line(study_ids: list[str]) -> str:
    n = len(study_ids)
    return (f"{n} stud{'ies' if n != 1 else 'y'} held results made by an earlier capsule_triage or with other settings (results "
            f"version, weights, preset or options), e.g. {study_ids[0]}: scored again in this run (batch.json made_otherwise names them)")
