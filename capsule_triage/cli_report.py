"""``triage report OUT_DIR``: (re)write the review pages of a study folder or a batch folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

EXIT_BAD_INPUT = 2


def register(app: typer.Typer) -> None:
    app.command("report", short_help="Write the review pages of a study or a batch.")(report)


def report(
    out_dir: Annotated[Path, typer.Argument(metavar="OUT_DIR", readable=False, help="A study folder (with run.json) or a batch folder (with studies.parquet).", show_default=False)],
    model_card: Annotated[Optional[Path], typer.Option(help="The model's MODEL_CARD.md; its intended-use line is shown in the report.")] = None,
) -> None:
    """Write report.html for a study folder, or index.html (and every study's report.html) for a batch folder.

    The pages are self-contained HTML (no network access needed) and refer only to files inside
    OUT_DIR. Exit code 2 when OUT_DIR is neither kind of folder or cannot be read or written.
    """
    from .batch.lock import lock_for_pages
    from .errors import TriageError, unexpanded_note
    from .model_card import intended_use
    from .outputs import RUN_FILE
    from .report import write_report
    from .cli import printable
    from .report_batch import STUDIES_FILE, write_batch_reports

    try:
        card = _read_card(model_card)
        if card is not None and intended_use(card) is None:  # QA 67 #7: any text file was taken without a word
            typer.echo(printable(f"Warning: {model_card}: states no intended use (no 'Intended use:' line or '## Intended "
                                 "use' section): is it a model card?"), err=True)
        if (out_dir / STUDIES_FILE).is_file():
            with lock_for_pages(out_dir):  # QA 79 #9: not under a running night
                written, problems = write_batch_reports(out_dir, model_card=card)
            for problem in problems:
                typer.echo(printable(f"Warning: {problem}"), err=True)
        elif (out_dir / RUN_FILE).is_file():
            try:
                written = write_report(out_dir, model_card=card)
            except (AttributeError, TypeError, KeyError, ValueError) as exc:  # a hand-edited run.json: a field of another type deep inside
                raise TriageError(out_dir / RUN_FILE, f"cannot make the page from it ({type(exc).__name__}: {exc})") from None
        elif out_dir.exists() and not out_dir.is_dir():
            raise TriageError(out_dir, "not a folder: give the output folder of `triage run` or `triage batch`")
        elif not out_dir.is_dir():
            raise TriageError(out_dir, "no such folder" + unexpanded_note(out_dir))  # QA 67 #6: as run and bench say it
        else:
            raise TriageError(out_dir, f"neither a study folder ({RUN_FILE}) nor a batch folder ({STUDIES_FILE})")
    except TriageError as exc:
        typer.echo(printable(f"Error: {exc}"), err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    typer.echo(printable(f"Wrote {written}"))


def _read_card(path: Path | None) -> str | None:
    from .errors import InputError

    if path is None:
        return None
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        raise InputError(path, f"cannot read the model card ({exc.strerror or exc})") from None
