"""The ``triage`` command line: parse, call the library, report. No logic lives here."""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_batch import EXIT_INTERRUPTED, frame_rate, output_folder  # Ctrl-C or SIGTERM, for every command
from .errors import InputError, TriageError, one_line
from .run_options import MAX_BATCH_SIZE


def _help_wraps_at_spaces_only() -> None:
    """The help wraps after a hyphen too ('capsule-' / 'bleeding', '--no-' / 'report'): a name copied from an 80-column
    terminal would not work (QA 123 #2). The wrapper of typer's own copy of click (a subclass of textwrap's, used for
    help alone) then splits at spaces only, as textwrap does with break_on_hyphens=False; a typer without that class
    wraps as it does (test_first_run's 80-column test says so)."""
    try:
        from typer._click._textwrap import TextWrapper
    except ImportError:
        return
    TextWrapper.wordsep_re = TextWrapper.wordsep_simple_re


_help_wraps_at_spaces_only()
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,  # click's help: wraps at any width (Rich's tables cut long tokens with '...' at 80 columns: QA 121 #1)
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Triage capsule-endoscopy video: score every frame, rank suspicious events for review. "
    "Research use only, not a diagnostic device. Presets (pipelines/) and shipped weights (weights/) are read from "
    "$CAPSULE_TRIAGE_HOME, by default the source checkout or, installed from a wheel, <prefix>/share/capsule-triage.",
)

EXIT_BAD_INPUT = 2


def _print_version(value: bool) -> None:
    if value:
        from .versions import version_line

        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Triage capsule-endoscopy video. Research use only, not a diagnostic device."""


def printable(text: object) -> bytes:
    """Bytes to print: file names with undecodable bytes (kept as surrogates) come out as they are on
    disk; control characters (a newline in a file name) are escaped, so a message stays one line."""
    return one_line(text).encode("utf-8", "surrogateescape")


def fail(exc: BaseException) -> None:
    """Print one line ``Error: <path>: <problem>`` and exit with code 2."""
    typer.echo(printable(f"Error: {exc}"), err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def warn_backend(classifier) -> None:
    """One ``Warning:`` line per thing the backend choice wants the user to know (also in run.json)."""
    for line in classifier.selection.get("warnings", []):
        typer.echo(printable(f"Warning: {line}"), err=True)


class DecodeIn(str, Enum):
    """Where frames are decoded (RunOptions.decode_in)."""

    auto = "auto"
    process = "process"
    thread = "thread"


PipelineOpt = Annotated[str, typer.Option("--pipeline", "-p", metavar="NAME|TOML", help="Preset name from pipelines/ (e.g. capsule-bleeding) or a path to a preset TOML.")]
WeightsOpt = Annotated[Optional[str], typer.Option(metavar="WEIGHTS", help="Weights instead of the preset's: a weights folder (config.json + model.safetensors), a .safetensors/.pth state dict, a BiT .npz, or hf-hub:OWNER/REPO[@REVISION] (a weights folder on the Hugging Face Hub, cached for offline use).")]
DeviceOpt = Annotated[str, typer.Option(metavar="DEVICE", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")]


@app.command(short_help="Triage one video or frame folder: scores, events, pages.")
def run(
    source: Annotated[Path, typer.Argument(metavar="SOURCE", help="Video file (mp4, avi, mkv, mov, ...) or folder of frame images (png/jpg/bmp/tif/webp/ppm, natural order).", show_default=False, readable=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", parser=output_folder, metavar="DIR", help="Output folder (default: <input>_triage beside the input).")] = None,
    pipeline: PipelineOpt = "capsule-bleeding",
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    backend: Annotated[str, typer.Option(metavar="BACKEND", help="auto, torch-fp32, torch-bf16, torch-fp16 (CUDA), ort-fp32, ort-int8, ov-fp32, ov-bf16 or ov-int8. auto: the fastest backend `triage optimize` accepted for these weights on this kind of device (fp16 on a GPU, once checked there), else torch-fp32.")] = "auto",
    batch_size: Annotated[Optional[int], typer.Option(min=1, max=MAX_BATCH_SIZE, metavar="N", help="Frames decoded per batch handed to the model (default: the preset's, rounded to a multiple of the backend's run size); the backend scores them in runs of the size `triage optimize` measured fastest.")] = None,
    threshold: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, metavar="S", help="Score at which an event starts (default: the model's operating threshold); it ends below 0.75 x this.")] = None,
    top_k: Annotated[Optional[int], typer.Option(min=0, metavar="K", help="Number of single top frames to list, the highest scores at least the preset's nms_seconds apart (default: the preset's).")] = None,
    fps: Annotated[Optional[float], typer.Option(parser=frame_rate, metavar="F", help="Frame rate (at least 0.001) of a frame folder (default: its own timestamps.csv if it has one, else 2.0, the preset's).")] = None,
    timestamps: Annotated[Optional[Path], typer.Option(metavar="CSV", help="CSV with columns filename,pts_seconds giving each image's time (frame folders; default: the folder's own timestamps.csv).")] = None,
    skip_duplicates: Annotated[Optional[float], typer.Option(min=0.0, max=255.0, metavar="D", help="Reuse the last score for near-identical frames (mean abs difference of 16x16 grey thumbnails below this, 0-255 scale; e.g. 2.0). Off by default.")] = None,
    decode_in: Annotated[DecodeIn, typer.Option(help="Where frames are decoded while the model runs: a child process (it decodes beside the model without taking turns with it for Python's interpreter lock; a crashing decoder cannot take the run down), a thread, or auto (a process for sources of 1,000 frames or more).")] = DecodeIn.auto,
    decoders: Annotated[int, typer.Option(min=1, metavar="N", help="Decoder processes for one video, each decoding a keyframe-aligned part (to feed a GPU faster than one core decodes; ~700-950 frames/s per process at 336 px on a 2-core EPYC, benchmarks/results/decoders.json).")] = 1,
    no_report: Annotated[bool, typer.Option("--no-report", help="Do not write the HTML review page (report.html).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output folder.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Score every frame of SOURCE and write a ranked timeline of suspicious events.

    Writes frames.parquet, events.parquet, top_frames.parquet, thumbnails/, run.json and the HTML review page (report.html and report/event-NNNN.html) into the output folder, atomically. Exit code 2 on bad input (nothing is written).
    """
    from .pipeline import RunOptions, check_input, load_classifier, triage_study
    from .presets import load_pipeline
    from .source_state import check_source

    try:
        check_source(source)  # before the model loads (a mistyped path took 3.5 s to be told)
        if source.is_file() and (fps is not None or timestamps is not None):  # before the model loads
            raise InputError("--fps" if fps is not None else "--timestamps", f"applies to a frame folder; {source} is a file "
                             "(a video's frame times come from its stream)")
        if fps is not None and timestamps is not None:  # QA 13: --fps was ignored without a word
            raise InputError("--fps", "give --fps or --timestamps, not both (the CSV's times are the frames' times)")
        preset = load_pipeline(pipeline)
        options = RunOptions(out=out, force=force, batch_size=batch_size, threshold=threshold, top_k=top_k,
                             folder_fps=fps, timestamps_csv=timestamps, own_timestamps=fps is None, skip_duplicates=skip_duplicates, report=not no_report, decode_in=decode_in.value,
                             decoder_processes=decoders, progress=not quiet and sys.stderr.isatty(),
                             command="triage " + shlex.join(sys.argv[1:]))
        check_input(source, preset, options)  # the header, or a folder's listing and times, before the model loads
        classifier = load_classifier(preset, weights=weights, device=device, backend=backend, threshold=threshold)
        warn_backend(classifier)
        result = triage_study(source, preset, classifier, options)
    except (TriageError, ValueError) as exc:
        fail(exc)
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):  # stderr gone with the terminal or a pipe's reader (rev45): the exit code says it
            typer.echo(printable(f"Interrupted; nothing was written for {source}."), err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    try:
        _said_of_run(result, source, classifier.selection.get("warnings", []), report=not no_report)
    except OSError:  # QA 66 #6: `| head -1` made a complete run exit 1 without a word (as `triage batch` does: rev59 #2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is still buffered goes nowhere at exit


def _said_of_run(result, source: Path, model_warnings: list[str], *, report: bool) -> None:
    """A finished run's lines: its warnings (but the model's, said when it loaded), totals, top events, what it wrote."""
    from .report_svg import fmt_percent
    from .run_notes import warning_lines

    for line in warning_lines(result.run, source, leave_out=model_warnings):
        typer.echo(printable(f"Warning: {line}"), err=True)
    events = result.run["events"]
    typer.echo(
        f"{result.frames:,} frame{'s' if result.frames != 1 else ''} ({result.frames_skipped:,} skipped"  # QA 110 #4: "1 frames"
        + (f", {result.run['frames_without_view']:,} without a field of view" if result.run.get("frames_without_view") else "")
        + f"), {events} event{'s' if events != 1 else ''}, "
        f"{fmt_percent(100 * result.run['flagged_frames'] / result.frames if result.frames else 0.0)} of frames flagged, "
        f"{result.wall_seconds:.1f} s, {result.fps:.1f} frames/s"  # as the page and the batch's index say it (rev107 #5)
    )
    _print_top_events(result.out_dir)
    typer.echo(printable(f"Wrote {result.out_dir}"))
    if report:  # QA 22: a first run did not say what to open
        typer.echo(printable(f"Review page: {result.out_dir / 'report.html'}"))
    sys.stdout.flush()  # a closed pipe is found here, not at exit (exit code 120)


def _print_top_events(out_dir: Path, limit: int = 5) -> None:
    from .report_facts import names_classes, says_hours
    from .report_svg import clock_with_hours, fmt_clock, score_text
    from .study_folder import load_study

    study = load_study(out_dir)
    classes = names_classes(study)  # as the page: a class only where the model has a choice of them (QA 96 #1)
    with clock_with_hours(says_hours(study)):  # the page's clock (QA 64: "19949.50 s" here, 5:32:29.5 there)
        for row in study.events[:limit]:
            typer.echo(
                f"  #{row['rank'] + 1}: {fmt_clock(row['start_seconds'])} to {fmt_clock(row['end_seconds'])} "
                f"({row['start_seconds']:.2f} to {row['end_seconds']:.2f} s), peak {score_text(row['peak_score'])} "
                f"at {fmt_clock(row['peak_seconds'])}, {row['frame_count']} frame{'s' if row['frame_count'] != 1 else ''}"
                + (f", {row['dominant_class']}" if classes else "")
            )
    if len(study.events) > limit:  # QA 96 #8: "11 events" above five lines, without a word of the rest
        more = len(study.events) - limit
        typer.echo(f"  ... and {more} more event{'s' if more != 1 else ''}, ranked in the review page and events.parquet")


def _register_optional() -> None:
    """Commands that live in their own modules."""
    import importlib

    for module in ("cli_models", "cli_batch", "cli_report", "cli_bench"):
        try:
            mod = importlib.import_module(f"capsule_triage.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"capsule_triage.{module}":
                raise
            continue
        mod.register(app)


_register_optional()


_started = False  # a command began (an interrupt before it is said by _run_app); reset by each _run_app


def _said_when_interrupted(command):
    """A command whose Ctrl-C (or SIGTERM) it did not catch itself says "Interrupted." and exits 130 (QA 65 #5: one in
    `triage eval`'s first seconds, its `import torch`, ended the process with no word: typer turns it into exit 130)."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        global _started
        _started = True
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            with contextlib.suppress(OSError):
                typer.echo("Interrupted.", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    return run


for _command in app.registered_commands:
    _command.callback = _said_when_interrupted(_command.callback)


def main() -> None:
    """The ``triage`` script: run the command, flush, and end the process without finalisation.

    Everything a command writes is complete (and atomically renamed) before it returns, so nothing
    is lost by skipping interpreter finalisation; what is avoided is native thread pools (Arrow's,
    ONNX Runtime's, PyTorch's) being torn down while the interpreter dies, which intermittently
    aborts an otherwise successful run with "terminate called without an active exception"
    (exit -6; seen once in CI, apache/arrow#34314). Uncaught exceptions still end normally, with
    their traceback.
    """
    signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's stop ends a run or batch as Ctrl-C does: cleaned up, exit 130
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:  # a closed terminal too (QA 51);
        _TERMINAL_FDS[:] = [fd for fd in (1, 2) if os.isatty(fd)]  # known now: a hung-up terminal is a tty no more
        signal.signal(signal.SIGHUP, _hang_up)  # not under nohup, which ignores it
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:  # started with it closed (`2>&-`): print nowhere, keep the exit code
            setattr(sys, name, open(os.devnull, "w"))
    try:
        code = _run_app()
    except KeyboardInterrupt:  # QA 114 #3: one before a command began (typer building it) was a 50-line traceback
        with contextlib.suppress(OSError):
            print("Interrupted.", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    _exit_now(code)


def _run_app() -> int:
    """Run the command; a usage error (unknown option, value out of range, missing argument) is one
    ``Error:`` line, exit 2, like every other bad input (typer's framed panel spans five lines of a
    nightly log)."""
    global _started
    _started = False
    try:
        code = app(prog_name="triage", standalone_mode=False)
    except typer.TyperException as exc:  # typer's click exceptions: usage errors and their kin
        exit_code = getattr(exc, "exit_code", EXIT_BAD_INPUT)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `triage` alone: the help (click's, on stderr), exit 2
            exc.show()
            return exit_code
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        if ctx is not None and ctx.command_path.endswith(" run") and "extra argument" in exc.format_message():
            hint = " (one SOURCE per run: `triage batch FOLDER --out DIR` triages every study in a folder)"
        typer.echo(printable(f"Error: {exc.format_message()}{hint}"), err=True)
        return exit_code
    except typer.Abort:
        return 1
    except ImportError as exc:  # QA 107 #3: a broken library (cv2's libGL.so.1, PyAV's FFmpeg) was a 60-line traceback
        if (exc.name or "").split(".")[0] == "capsule_triage":  # rev97 #1: our own code's import is a bug: its traceback
            raise
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        cv2 = (exc.name or "").startswith("cv2")  # rev98 #6: the headless build needs no libGL
        fix = ("a system library is missing: install it with the system's package manager" + (
            " (or opencv-python-headless in place of opencv-python)" if cv2 else "") if "shared object" in detail
            else "reinstall capsule-triage's dependencies")
        typer.echo(printable(f"Error: cannot import {exc.name or 'a library'} ({detail}): this installation is incomplete or "
                             f"broken; {fix}"), err=True)
        return EXIT_BAD_INPUT
    except PermissionError as exc:  # rev72 #2: a weights, preset, timestamps or data path this user may not read or reach
        if exc.filename is None:  # (one not checked before it is read): one line, as for the paths that are; nothing else is
            raise  # caught here: the outputs of a command are staged and cleaned up by the command itself
        typer.echo(printable(f"Error: {os.fsdecode(exc.filename)}: permission denied (this user cannot read it, or cannot "
                             "search a folder on its path)"), err=True)
        return EXIT_BAD_INPUT
    if code == EXIT_INTERRUPTED and not _started:  # typer's exit for one while it read the arguments, without a word
        raise KeyboardInterrupt
    return code if isinstance(code, int) else 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


_TERMINAL_FDS: list[int] = []  # stdout, stderr where they were a terminal when the command started


def _hang_up(signum, frame) -> None:
    """SIGHUP: the terminal is gone, and a write to it fails (EIO: rev44, the closing lines made the exit 1, not 130);
    what went to it goes nowhere from now on, at the descriptor, so that every writer (tqdm's bar too) is covered."""
    null = os.open(os.devnull, os.O_WRONLY)
    for fd in _TERMINAL_FDS:
        try:
            os.dup2(null, fd)
        except OSError:
            pass
    os.close(null)
    for later in (signal.SIGHUP, signal.SIGTERM):  # a second hangup (the kernel's, then a shell's or systemd's) must not
        signal.signal(later, signal.SIG_IGN)  # interrupt the cleanup this one starts (rev45)
    raise KeyboardInterrupt


def _exit_now(code: int) -> None:
    import logging

    logging.shutdown()
    if (mp_util := sys.modules.get("multiprocessing.util")) is not None:
        # What an interpreter's own exit runs first: named semaphores unlinked and unregistered. Skipped by os._exit, the
        # resource tracker now and then warned of "leaked semaphore objects" after a pool that could not start (CI).
        try:
            mp_util._run_finalizers(0)
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
