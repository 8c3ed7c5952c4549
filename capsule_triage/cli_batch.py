"""``triage batch``: parse, call :func:`capsule_triage.batch.run_batch`, report."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import TriageError
from .run_options import MAX_BATCH_SIZE, MIN_FPS

EXIT_STUDY_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def output_folder(value: str | Path) -> Path:
    """--out's parser: an empty value (``--out ''``, ``-o "$UNSET"``) is refused, not read as ``.``
    (which wrote a batch into the current folder)."""
    if not str(value).strip():
        raise typer.BadParameter("is empty: give a folder (. for the current one)")
    return Path(value)


def frame_rate(value: str | float) -> float:
    """--fps's parser: a finite rate of at least :data:`MIN_FPS` (QA 77 #10: "nan" was refused as "Input should be
    greater than or equal to 0.001")."""
    try:
        rate = float(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a number of frames per second") from None
    if not (math.isfinite(rate) and rate >= MIN_FPS):
        raise typer.BadParameter(f"a frame rate is a finite number of frames per second, at least {MIN_FPS:g}, got {value}")
    return rate


def batch_command(
    input_dir: Annotated[Path, typer.Argument(metavar="INPUT_DIR", readable=False, help="Folder searched recursively for studies: video files, and folders that directly contain frame images.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", parser=output_folder, metavar="DIR", help="Output folder: one sub-folder per study, studies.parquet, batch.json, batch.log.", show_default=False)],
    pipeline: Annotated[str, typer.Option("--pipeline", "-p", metavar="NAME|TOML", help="Preset name from pipelines/ or a path to a preset TOML.")] = "capsule-bleeding",
    weights: Annotated[Optional[str], typer.Option(metavar="WEIGHTS", help="Weights instead of the preset's (weights folder, .safetensors, .pth, BiT .npz, hf-hub:OWNER/REPO[@REVISION]).")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, metavar="N", help="Worker processes (local) or actors (ray), each with its own model (default: one per GPU, else 1).")] = None,
    engine: Annotated[str, typer.Option(metavar="local|ray", help="local (this machine) or ray (a Ray cluster; pip install \"capsule-triage[ray]\").")] = "local",
    ray_address: Annotated[Optional[str], typer.Option(metavar="ADDRESS", help="Address of a running Ray cluster (default: start a local one).")] = None,
    device: Annotated[str, typer.Option(metavar="DEVICE", help="auto (CUDA when present, else CPU), cpu, cuda (every GPU this PyTorch can run on, a worker each) or cuda:N (local engine only).")] = "auto",
    backend: Annotated[str, typer.Option(metavar="BACKEND", help="auto, torch-fp32, torch-bf16, torch-fp16 (CUDA), ort-fp32, ort-int8, ov-fp32, ov-bf16 or ov-int8 (as for `triage run`).")] = "auto",
    threshold: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, metavar="S", help="Score at which an event starts (default: the model's operating threshold), as for `triage run`.")] = None,
    top_k: Annotated[Optional[int], typer.Option(min=0, metavar="K", help="Single top frames listed per study (default: the preset's).")] = None,
    fps: Annotated[Optional[float], typer.Option(parser=frame_rate, metavar="F", help="Frame rate (at least 0.001) of the frame-folder studies without their own timestamps.csv (default: the preset's, 2.0); videos keep their own times.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, max=MAX_BATCH_SIZE, metavar="N", help="Frames decoded per batch handed to the model (default: the preset's).")] = None,
    skip_duplicates: Annotated[Optional[float], typer.Option(min=0.0, max=255.0, metavar="D", help="Reuse the last score for near-identical frames, as for `triage run` (off by default).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", metavar="PATTERN", help="A video or folder that is no study of this batch, or a file batch.log would name as not read: a path relative to INPUT_DIR ('day3/broken.mp4', 'scratch') or, with * or ?, a pattern ('*.avi', '*.pdf'; * crosses /); repeatable. E.g. an export known to be broken, which would fail every night.", show_default=False)] = None,
    settle: Annotated[float, typer.Option("--settle", min=0.0, metavar="SECONDS", help="A study any of whose files was written less than SECONDS before the batch reads it is left for a later run (pending: a copy still coming in). For a night fed by copies into the archive, e.g. 600; 0 (default): only a study that fails while its files change is held back.")] = 0.0,
    force: Annotated[bool, typer.Option("--force", help="Redo studies whose outputs are already complete.")] = False,
    no_report: Annotated[bool, typer.Option("--no-report", help="Write no study pages (report.html); an index.html of earlier runs is kept up to date. A later run without this flag adds the missing pages without rescoring.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Triage every study under INPUT_DIR into OUT_DIR; resumable, one bad study never stops the others.

    A study is a video file or a folder that directly holds frame images. A study whose outputs match its input hash and the pipeline is skipped (unread when its files' sizes and times are as recorded), so re-running after an interruption finishes the rest.

    Each study's report.html is linked from OUT_DIR/index.html (unless --no-report); a page that cannot be written is a `Warning: ...` line and changes no result.

    A study that cannot be read yet and was written less than a minute before (a copy still coming in), or that changes while it is read, is pending: left for the next run, not failed (--settle holds back more).

    Exit code 0 when every study is ok, skipped, reused or pending, 1 when any failed (one `Error: <path>: <problem>` line each), 2 on bad arguments, input folder, weights, a locked OUT_DIR, an OUT_DIR whose last run read another input folder, or a summary (studies.parquet, batch.json) that cannot be written, 130 when Ctrl-C, SIGTERM or SIGHUP stopped it before every study was reached (a stop after that, while the summary is written or the engine shuts down, keeps the code the studies give).
    """
    from .batch import BatchOptions, run_batch
    from .cli import printable  # names with undecodable bytes print as they are on disk
    from .pipeline import RunOptions

    options = BatchOptions(pipeline=pipeline, weights=weights, device=device, backend=backend, engine=engine, workers=workers,
                           ray_address=ray_address, force=force, exclude=tuple(exclude or ()), settle_seconds=settle, progress=not quiet and sys.stderr.isatty(),
                           run=RunOptions(report=not no_report, threshold=threshold, top_k=top_k, folder_fps=fps,
                                          batch_size=batch_size, skip_duplicates=skip_duplicates))
    try:
        result = run_batch(input_dir, out, options)
    except (TriageError, ValueError) as exc:
        done = getattr(exc, "result", None)  # a device that failed after studies were done: what the night said of them
        for line in done.failures if done else ():
            typer.echo(printable(f"Error: {line}"), err=True)
        for line in dict.fromkeys([*getattr(exc, "warnings", ()), *(done.warnings if done else ())]):  # the night's own notes
            typer.echo(printable(f"Warning: {line}"), err=True)  # (when it was refused after taking its lock too)
        if done and done.summary_error:
            typer.echo(printable(f"Error: {done.summary_error}"), err=True)
        typer.echo(printable(f"Error: {exc}"), err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt as exc:
        if not getattr(exc, "finished", False):
            _interrupted(exc, force)
        result = exc.result  # review rev58 #5, rev59 #1: after every study was reached (the summary, the engine's shutdown)
        with contextlib.suppress(OSError):
            typer.echo("Interrupted after every study was reached: the night is complete", err=True)
    code = _said(result)
    if code:
        raise typer.Exit(code)


def _said(result) -> int:
    """Print a night's failures, warnings and totals; return its exit code (0; 1: a study failed; 2: no summary), which
    stands whatever becomes of the printing (review rev59 #2: a pipe's reader killed by the same Ctrl-C, `| tee`, made
    a complete night exit 1)."""
    from .cli import printable

    code = EXIT_BAD_INPUT if result.summary_error else EXIT_STUDY_FAILED if result.counts["failed"] else 0
    try:
        for line in result.failures:
            typer.echo(printable(f"Error: {line}"), err=True)
        for line in result.warnings:
            typer.echo(printable(f"Warning: {line}"), err=True)
        counts = result.counts
        rate = result.frames / result.wall_seconds if result.wall_seconds > 0 else 0.0
        reused = f", {counts['reused']} reused" if counts.get("reused") else ""
        pending = f", {counts['pending']} pending" if counts.get("pending") else ""
        typer.echo(f"{len(result.rows)} {'study' if len(result.rows) == 1 else 'studies'}: {counts['ok']} ok, {counts['skipped']} skipped{reused}, "
                   f"{counts['failed']} failed{pending}; {result.frames} frames in {result.wall_seconds:.1f} s ({rate:.1f} frames/s)")
        if result.summary_error:
            typer.echo(printable(f"Error: {result.summary_error}"), err=True)
            return code
        typer.echo(printable(f"Wrote {result.out_dir / 'studies.parquet'}"))
        if result.index is not None:
            typer.echo(printable(f"Wrote {result.index}"))
        sys.stdout.flush()  # a closed pipe is found here, not at exit (exit code 120)
    except OSError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is still buffered goes nowhere at exit
    except KeyboardInterrupt:  # review rev60 #6: a second Ctrl-C while a complete night's lines print: still its own code
        with contextlib.suppress(OSError):  # helper-127: said the summary was complete when it could not be written
            typer.echo(printable("Interrupted while the night's lines were printed; " + (
                f"its summary could not be written: {result.summary_error}" if result.summary_error else
                f"its summary is complete ({result.out_dir / 'studies.parquet'})")), err=True)
    return code


def _interrupted(exc: KeyboardInterrupt, force: bool) -> None:
    """What an interrupted batch says (its failures, warnings, a summary it could not write, what a re-run does); exits 130."""
    from .cli import printable

    rest = ("Studies not reached keep their earlier results and new ones stay pending (a run without --force scores "
            "those only); --force again redoes every study" if force else  # QA 37, rev33
            "Re-run the same command to finish the rest")
    done = getattr(exc, "result", None)  # a BatchInterrupted: what the run reports, as far as it got
    with contextlib.suppress(OSError):  # stderr gone with the terminal or a pipe's reader (rev45): the exit code says it
        for line in done.failures if done else ():  # the studies that failed before it
            typer.echo(printable(f"Error: {line}"), err=True)
        for line in done.warnings if done else ():
            typer.echo(printable(f"Warning: {line}"), err=True)
        if done and done.summary_error:  # review rev57 #3: said "studies.parquet lists what is done" all the same
            typer.echo(printable(f"Error: {done.summary_error}"), err=True)
            typer.echo(f"Interrupted; the summary could not be written (above): each finished study's own results stand. {rest}.", err=True)
        else:
            typer.echo(f"Interrupted; studies.parquet lists what is done. {rest}.", err=True)
    raise typer.Exit(EXIT_INTERRUPTED)


def register(app: typer.Typer) -> None:
    app.command("batch", short_help="Triage every study in a folder; resumable.")(batch_command)

