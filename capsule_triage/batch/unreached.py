"""What an interrupted batch lists for a study whose outcome it never got: a worker may have installed it before it was
killed (``ok``, or ``reused`` when those were another study's outputs), an earlier night's results of the same input
may stand (``skipped``), or it is ``pending``, with the earlier results of another version shown when its folder holds
them (:func:`unreached_row`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import TriageError
from ..json_files import read_json
from ..outputs import RUN_FILE, outputs_complete
from ..source_state import state_digest
from .discovery import Study
from .records import completed_run, unchanged_input_sha
from .summary import summary_row
from .context import WorkerContext

# QA 74 #4: an empty error cell; QA 79 #8: the study in progress at a SIGTERM was said "not reached"
NOT_REACHED = "not finished in this run (interrupted before or while it was triaged); it is triaged on the next run"
EARLIER_RESULTS = ("not finished in this run (interrupted before or while it was triaged); these are the results of an earlier version or other settings, "
                   "of the same input: it is scored again on the next run")


def unreached_status(ctx: WorkerContext, study: Study, since: float) -> str:
    """The status of a study whose outcome this run never got (interrupted): what a killed worker installed in this run
    (:func:`installed_since`), "skipped" if it is complete from an earlier run and its input unchanged by its recorded
    file state (an early Ctrl-C listed a whole archive of complete studies as pending, with no data or link on
    index.html; with ``--force`` too: its results stand until it is redone), else "pending"."""
    if installed := installed_since(ctx, study, since):
        return installed
    final = ctx.out_dir / study.study_id
    sha = unchanged_input_sha(final, ctx.accepts(study), ctx.state_of(study))
    return "skipped" if sha and completed_run(final, sha, ctx.accepts(study)) is not None else "pending"


def unreached_row(ctx: WorkerContext, study: Study, since: float) -> dict:
    """The studies.parquet row of a study this run never got to: with the earlier results its folder holds of the same
    input, when another pipeline made them (QA 43: an upgrade night interrupted early listed a whole archive as pending,
    with no data or link on index.html), as pending."""
    status = unreached_status(ctx, study, since)
    if status == "pending":
        final = ctx.out_dir / study.study_id
        try:
            same_input = read_json(final / RUN_FILE)["input"]["state_sha256"] == state_digest(ctx.state_of(study))
        except (OSError, ValueError, KeyError, TypeError, TriageError):
            same_input = False
        if same_input and outputs_complete(final):
            try:
                return summary_row(study, status, ctx.out_dir, EARLIER_RESULTS, earlier=True)
            except (OSError, ValueError, KeyError, TypeError):  # a run.json of a version that recorded less
                pass
    return summary_row(study, status, ctx.out_dir, NOT_REACHED if status == "pending" else None)


def installed_since(ctx: WorkerContext, study: Study, since: float) -> str | None:
    """"ok" for a study that a worker installed in this run but whose outcome never reached this process (the workers
    are killed on Ctrl-C, possibly between the two): its run.json, written after the run started, names this run
    (``batch.run_id``) and pipeline; "reused" when those were another study's outputs of the same bytes (run.json
    ``batch.reused_from``; review rev58 #8: listed "ok", as if scored); else None."""
    run_file = Path(ctx.out_dir) / study.study_id / RUN_FILE
    try:
        if run_file.stat().st_mtime < since:
            return None
        batch = read_json(run_file).get("batch", {})
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(batch, dict) or batch.get("pipeline_fingerprint") != ctx.fingerprint_of(study) or batch.get("run_id") != ctx.run_id:
        return None
    return "reused" if batch.get("reused_from") else "ok"
