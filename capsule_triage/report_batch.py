"""The review page of a batch: ``BATCH_OUT_DIR/index.html`` lists every study of ``studies.parquet``
with a link to its ``report.html`` (:mod:`capsule_triage.report`), sortable by any column. Strings
from the input are HTML-escaped, and a study id that would lead outside the batch folder is not linked.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from .json_files import read_json
from .errors import InputError, OutputError, TriageError
from .field_of_view import mostly_without_view
from .outputs import RUN_FILE
from .report import INDEX_FILE, REPORT_FILE, write_report
from .report_assets import KEEP_JS, SORT_JS
from .report_page import html_page, page_header, write_atomic
from .report_svg import esc, fmt_duration, fmt_percent, score_text
from .study_folder import read_parquet

DONE_STATUSES = ("ok", "skipped", "reused")  # studies.parquet statuses of a study with complete results (batch/worker.py)

STUDIES_FILE = "studies.parquet"


def write_batch_index(batch_out_dir: Path, rows: list[dict] | None = None, batch: dict | None = None) -> Path:
    """Write ``BATCH_OUT_DIR/index.html`` listing every study of ``studies.parquet`` with a link to its report.

    Args:
        rows, batch: the studies' rows and the run's batch.json as the batch has them in memory (its index does
            not depend on the summary files being written: QA 37, pages linked an index a failed summary left
            out); None: read from the folder.

    Raises:
        InputError: no readable studies.parquet.
        OutputError: the page cannot be written.
    """
    folder = Path(batch_out_dir)
    if rows is None:
        if not (folder / STUDIES_FILE).is_file():
            raise InputError(folder, f"not a batch folder ({STUDIES_FILE} not found)")
        rows = read_parquet(folder / STUDIES_FILE).to_pylist()
    summary, body = _listing(folder, rows)
    head = "".join(f'<th><button type="button" data-col="{k}">{esc(h)}</button></th>' for k, h in enumerate(
        ["study", "status", "events", "flagged", "top score", "frames", "gaps", "wall", "model", "input", "error"]))
    main = [f'<section><h2>Summary</h2><p id="summary">{summary}{_run_line(folder, batch)}</p></section>',
            '<section><h2>Studies</h2><p class="hint">Click a column title (or Tab to it and press Enter) to sort.</p>'
            '<div class="scroll" tabindex="0" role="region" aria-label="Studies of the batch">'
            f'<table class="studies" data-listing="{_digest(folder, rows)}">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div></section>"]
    return write_atomic(folder / INDEX_FILE, html_page(f"Triage batch \u2014 {folder.name}", page_header(
        f"Triage batch \u2014 {folder.name}", nav=""), main, SORT_JS + KEEP_JS))


def _listing(folder: Path, rows: list[dict]) -> tuple[str, str]:
    """The page's summary sentence (without the last run's line) and its table rows."""
    body = "".join(_study_row(folder, r) for r in rows)
    status = [str(r.get("status") or "unknown") for r in rows]
    counts = ", ".join(f"{status.count(s)} {s}" for s in sorted(set(status)))
    done = [r for r in rows if r.get("status") in DONE_STATUSES]  # QA 74 #2: not the earlier results shown beside others
    total = lambda key: sum(r.get(key) or 0 for r in done)
    counted = lambda n, one, many: f"{n:,} {one if n == 1 else many}"  # QA 72 #8: "1 events"
    earlier = sum(map(_beside_earlier, rows))
    return (f'{counted(len(rows), "study", "studies")} ({esc(counts or "none")}); '
            f'{counted(total("frames"), "frame", "frames")}, {counted(total("events"), "event", "events")}'
            + (f' (not counting the earlier results shown beside {counted(earlier, "failed or pending study", "failed or pending studies")})'
               if earlier else "")
            + ".", body)


def _digest(folder: Path, rows: list[dict]) -> str:
    """SHA-256 of what a page of ``rows`` says of the studies: every row, ok, reused and skipped alike (what a run did
    with results that stand: a page of the night that scored them still lists them right, rev71 #2), and whether its
    report is linked (a report.html or run.json gone since unlinks it)."""
    shown = [(sorted({**r, "status": "done" if r.get("status") in DONE_STATUSES else r.get("status")}.items()), _linked(folder, r))
             for r in rows]
    return hashlib.sha256(repr(shown).encode("utf-8", "surrogateescape")).hexdigest()


def index_lists(batch_out_dir: Path, rows: list[dict]) -> bool:
    """Whether the batch's index.html on disk lists the studies as a page of ``rows`` would (its rows and links; its
    "Last run" line aside). QA 72 #2: a full disk at the summary of a night that changed nothing removed a page that
    was still right; one listing a study added, removed or failed since must go (rev70 #3). Never raises."""
    folder = Path(batch_out_dir)
    try:
        found = re.search(rb'<table class="studies" data-listing="([0-9a-f]{64})">', (folder / INDEX_FILE).read_bytes())
        return bool(found) and found.group(1).decode() == _digest(folder, rows)
    except Exception:  # noqa: BLE001 - unreadable, or rows a hand edit broke: not kept (rev71 #5: as write_index)
        return False


def settle_unwritten_index(batch_out_dir: Path, rows: list[dict]) -> str:
    """After index.html could not be rewritten: the earlier page is kept if it lists the same results (QA 72 #2: a full
    disk removed a page still right), else removed (it would link studies deleted or failed since).

    Returns:
        What the Warning or Error adds: which of the two it was; "" when there was no earlier page, or it cannot be
        removed either.
    """
    folder = Path(batch_out_dir)
    if index_lists(folder, rows):
        return f'; the earlier {INDEX_FILE} lists the same results and is kept (its "Last run" line is of the run that wrote it)'
    try:
        (folder / INDEX_FILE).unlink()
    except OSError:
        return ""
    return f"; the earlier {INDEX_FILE} no longer lists these results and was removed"  # rev72 #7: it said nothing


def _run_line(folder: Path, batch: dict | None = None) -> str:
    """How the last run went, from batch.json (QA 19: the page did not say which engine ran): "" if unreadable."""
    if batch is None:
        batch, _problem = last_run(folder)
    try:
        engine, workers = str(batch["engine"]), int(batch["workers"])
        pipeline = str((batch.get("pipeline") or {}).get("name", "?"))
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
        return ""
    wall = batch.get("wall_seconds")
    return esc(f" Last run {batch.get('started', '?')}: engine {engine}, {workers} worker{'s' if workers != 1 else ''} on "
               f"{batch.get('device', '?')}, preset {pipeline}" + (f", {fmt_duration(wall)}" if isinstance(wall, (int, float)) else "")
               + (" (interrupted)" if batch.get("interrupted") else "") + ".")


def last_run(folder: Path) -> tuple[dict | None, InputError | None]:
    """The batch's batch.json, or None and why the index can say nothing of the last run (QA 67 #5: a corrupt one
    dropped the index's "Last run" line without a word)."""
    from .batch.layout import BATCH_FILE  # here: the batch package imports this module

    path = folder / BATCH_FILE
    try:
        batch = read_json(path)
        str(batch["engine"]), int(batch["workers"])
    except FileNotFoundError:
        return None, InputError(path, "not found: index.html says nothing of the last run")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        why = (f"no {exc.args[0]!r} field" if isinstance(exc, KeyError) else exc.strerror
               if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}")
        return None, InputError(path, f"cannot read it ({why}): index.html says nothing of the last run")
    return batch, None


def _study_id(row: dict) -> str:
    return str(row.get("study_id") or row.get("id") or "")


def _inside(sid: str) -> bool:
    """Whether a study id from studies.parquet names a folder inside the batch folder (the file may have been edited)."""
    return bool(sid) and ".." not in PurePosixPath(sid).parts and not PurePosixPath(sid).is_absolute()


def _beside_earlier(row: dict) -> bool:
    """A failed or pending row that lists the results an earlier run left in its folder, of the same input (set by
    batch/summary.py): the totals leave them out, the error and wall cells say whose they are, the study is linked."""
    return row.get("status") in ("failed", "pending") and bool(row.get("output_dir"))


def _earlier(row: dict) -> str:
    """What the error cell adds for a failed row that shows results: they are an earlier run's (QA 74 #1: the row read as
    this night's results; a pending row's error says so itself)."""
    return (" (the results shown are an earlier run's, of the same input, made with that run's settings)"  # QA 95 #5: not said
            if row.get("status") == "failed" and _beside_earlier(row) else "")  # that a night of other settings shows them


def _scored_before(row: dict) -> str:
    """What the wall cell adds for results an earlier run scored (skipped, reused, or shown beside a failure): their wall
    time is that run's (QA 74 #5: read as this night's)."""
    return ' <span class="hint">(when scored)</span>' if row.get("status") in ("skipped", "reused") or _beside_earlier(row) else ""


def _linked(folder: Path, row: dict) -> bool:
    """Whether the page links the study's report: only results that stand for the input as it is. A failed study's
    folder may still hold the report of an earlier version of its input (the new one failed), and a folder deleted
    since has no page to open; a pending or failed row names its folder (``output_dir``) only when it holds results of
    the same input bytes that stand (QA 43, QA 72 #4: batch/summary.py)."""
    sid = _study_id(row)
    current = row.get("status") in DONE_STATUSES or _beside_earlier(row)
    return bool(_inside(sid) and current and (folder / sid / REPORT_FILE).is_file() and (folder / sid / RUN_FILE).is_file())


def _study_row(folder: Path, row: dict) -> str:
    sid = _study_id(row)
    name = f'<a href="{esc(quote(f"{sid}/{REPORT_FILE}"))}">{esc(sid)}</a>' if _linked(folder, row) else esc(sid or "?")
    pct, top, wall, gap = row.get("flagged_percent"), row.get("top_score"), row.get("wall_seconds"), row.get("gap_seconds")
    cells = [(sid, name), (row.get("status"), f'<span class="status {esc(row.get("status") or "")}">{esc(row.get("status") or "?")}</span>'),
             (row.get("events"), esc(_int(row.get("events")))), (pct, "\u2014" if pct is None else esc(fmt_percent(pct))),
             (top, esc(score_text(top))), (row.get("frames"), esc(_int(row.get("frames"))) + _without_view(row.get("frames_without_view"), row.get("frames"))
              + _lost(row.get("frames_skipped"))), (gap, _gap_cell(gap)),
             (wall, "\u2014" if wall is None else esc(fmt_duration(wall)) + _scored_before(row)), (row.get("model"), esc(row.get("model") or "")),
             (row.get("input_path"), esc(row.get("input_path") or "")), (row.get("error"), esc((row.get("error") or "") + _earlier(row) + _no_page(folder, row)))]
    return "<tr>" + "".join(f'<td data-v="{esc("" if v is None else v)}">{html}</td>' for v, html in cells) + "</tr>"


def _no_page(folder: Path, row: dict) -> str:
    """Why a study with results has no link (QA 79 #3: its name stood unlinked without a word)."""
    sid = _study_id(row)
    if row.get("status") not in DONE_STATUSES or not _inside(sid):
        return ""
    if not (folder / sid / RUN_FILE).is_file():  # rev78 #8, rev79 #5
        return f"no {RUN_FILE}: the study's output is incomplete; the next `triage batch` triages it again"
    if (folder / sid / REPORT_FILE).is_file():
        return ""
    return (f"no {REPORT_FILE}: the run was told --no-report, or the page could not be written (batch.log says why); "
            "`triage report OUT_DIR`, or a night without --no-report, adds it")


def _without_view(count, frames) -> str:
    """Frames that showed no field of view (not scored): marked when they are most of the study (a black
    or unplugged one, as its run's Warning: line), else said plainly (a few dark frames at either end)."""
    if not count:
        return ""
    if mostly_without_view(count, frames or 0):
        return f' <span class="warn">\u26a0 {count:,} without a view</span>'
    return f' <span class="hint">({count:,} without a view)</span>'


def _lost(count) -> str:
    """Frames that could not be decoded (not scored; QA 72 #3: said only in studies.parquet and the run's Warning: line)."""
    return f' <span class="warn">\u26a0 {count:,} not decoded</span>' if count else ""


def _gap_cell(seconds) -> str:
    """Time without frames (never scored): empty when none, marked when some."""
    if not seconds:
        return "\u2014" if seconds is None else ""
    return f'<span class="warn">\u26a0 {esc(fmt_duration(seconds))}</span>'


def _int(value) -> str:
    return "\u2014" if value is None else f"{int(value):,}"


def write_batch_reports(batch_out_dir: Path, *, model_card: str | None = None) -> tuple[Path, list[TriageError]]:
    """Rewrite the report of every study folder of a batch (those with run.json), then its index.

    Returns:
        (index.html path, the errors of studies whose report could not be written).
    """
    folder, problems = Path(batch_out_dir), []
    if not (folder / STUDIES_FILE).is_file():
        raise InputError(folder, f"not a batch folder ({STUDIES_FILE} not found)")
    rows = read_parquet(folder / STUDIES_FILE).to_pylist()
    for row in rows:
        sid = _study_id(row)
        if sid and not (_inside(sid) and (folder / sid).resolve().is_relative_to(folder.resolve())):  # QA 55, rev50: an absolute
            # or ../ id, or a study folder that is a link out of the batch, had the pages of a folder elsewhere rewritten
            problems.append(InputError(folder / STUDIES_FILE, f"study id {sid!r} is not a folder of this batch: its report is left alone"))
        elif sid and (folder / sid / RUN_FILE).is_file():
            try:
                write_report(folder / sid, model_card=model_card, batch_index=True)  # the index follows
            except TriageError as exc:
                problems.append(exc)
            except (AttributeError, TypeError, KeyError, ValueError) as exc:  # a hand-edited run.json (QA 55: a traceback)
                problems.append(InputError(folder / sid / RUN_FILE, f"cannot make the page from it ({type(exc).__name__}: {exc})"))
        elif sid and row.get("status") in DONE_STATUSES:  # listed as done, but its output is gone or incomplete
            problems.append(InputError(folder / sid, f"{RUN_FILE} not found: the study's output is incomplete (not linked "
                                                     "from index.html; run triage batch again to triage it)"))
    batch, problem = last_run(folder)
    problems += [problem] if problem else []
    try:
        return write_batch_index(folder, rows, batch=batch if batch is not None else {}), problems  # {}: read once, said once
    except OutputError as exc:  # rev71 #7: left whatever page was there, matching or not, as the batch does not
        raise OutputError(exc.path, exc.message + settle_unwritten_index(folder, rows)) from None
    except (AttributeError, TypeError, KeyError, ValueError) as exc:  # a hand-edited studies.parquet (rev50: a traceback)
        raise InputError(folder / STUDIES_FILE, f"cannot make the index from it ({type(exc).__name__}: {exc})") from None
