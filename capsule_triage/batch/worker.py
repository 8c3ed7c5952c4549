"""The per-study function: :class:`StudyWorker` (its context and outcome: :mod:`.context`; the fingerprint and completion
records: :mod:`.records`; outputs of the same bytes reused: :mod:`.reuse`).

The same worker runs in-process, in each ``--workers`` process and as a Ray actor. A study is
complete when ``OUT_DIR/<id>/run.json`` records the input's current SHA-256 and a print this run accepts for it
(:meth:`~.context.WorkerContext.accepts`), and its tables are present; it is then skipped. The SHA-256 is not
recomputed while the input's file state (names, inodes, sizes, modification times) is the one
run.json records with it (:func:`unchanged_input_sha`). Finished studies are
staged under ``OUT_DIR/.work/<id>`` and renamed into place; failures go to ``.failed/<id>.json``.

Review pages: ``RunOptions.report`` is not in the fingerprint, because it changes no result. A
complete study without report.html, when reports are wanted, gets one written from its outputs
(:func:`add_missing_report`, staged and renamed like a new study, no rescoring; the study stays
"skipped"; pages that cannot be written are a warning, and are tried again next run). With ``report=False`` a complete study's pages are left as they are.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

from ..json_files import read_json
from ..errors import DeviceError, InputChanged, InputError, TriageError, describe_error
from ..outputs import RUN_FILE, outputs_complete
from ..pipeline import load_classifier, triage_study
from ..source_state import (being_written, check_source, gone, recently_modified, seconds_since_written, settled_state_digest, source_sha256,
                            state_digest)
from ..report import DETAIL_DIR, REPORT_FILE, write_report
from ..report_page import pages_current
from ..run_notes import warning_lines
from .context import StudyOutcome, WorkerContext, WorkerSetupError  # noqa: F401 - where callers found them
from .discovery import Study
from .install import check_replaceable, install, link_or_copy
from .layout import FAILED_DIR, WORK_DIR, now_utc, write_json_atomic
from .records import completed_run, recorded, unchanged_input_sha
from .reuse import reuse_outputs

def _record_state(ctx: WorkerContext, final: Path, study: Study, run: dict, state: tuple, *, hashed_under_state: bool) -> None:
    """Record the input's file state with a complete study found by its hash (same bytes, new state:
    a copied or touched archive), so that later runs skip it unread. Only a state that held while the
    bytes were hashed is recorded (a hash taken before the state changed would have a file replaced
    since skipped with stale results for good): ``hashed_under_state`` says the hash that found the
    study was, else it is hashed again here; and the study's own print where it was taken at another it accepts (a video's
    results from before videos had their own); best effort."""
    updated = dict(run)
    if run.get("batch", {}).get("pipeline_fingerprint") != ctx.fingerprint_of(study):  # taken at a print it accepts (rev87 #6:
        updated["batch"] = {**run["batch"], "pipeline_fingerprint": ctx.fingerprint_of(study)}  # kept, another --fps rescored it)
    if state_digest(state) != run["input"].get("state_sha256") and settled_state_digest(state) is not None and (
            hashed_under_state or ctx.hashed(study) == (run["input"]["sha256"], state)):
        updated["input"] = {**run["input"], "state_sha256": state_digest(state)}
    if updated == run:
        return
    try:
        write_json_atomic(final / RUN_FILE, updated, ctx.out_dir / WORK_DIR)
    except OSError:  # e.g. a full disk: the study stays complete, it is hashed again next run
        pass


def unchanged_failure(ctx: WorkerContext, study: Study, state: tuple) -> dict | None:
    """The failure record of a study whose input was bad (truncated, not a video, no decodable
    frames, ...) when neither the input's file state nor the pipeline changed since: a corrupt
    50,000-frame study was decoded again every night to fail the same way. Failures of the machine
    (full disk, a crashed worker) record no state and are always retried."""
    record = recorded(ctx.out_dir / FAILED_DIR / f"{study.study_id}.json", ctx.accepts(study), state)
    return record if record is not None and isinstance(record.get("error"), str) else None


class StudyWorker:
    """A stateful callable: the model is loaded once, on the first study that needs it.

    The same class runs in-process, in each ``--workers`` process, and as a Ray actor.
    """

    def __init__(self, ctx: WorkerContext):
        self.ctx = ctx
        self._classifier = None
        self._outputs_by_input: dict[tuple[str, str], Path] | None = None  # complete outputs in OUT_DIR by input SHA-256, print
        self._unsaid: list[str] = []  # the model's warnings (backend choice, stopped training), for the next study scored

    @property
    def classifier(self):
        if self._classifier is None:
            try:
                self._classifier = load_classifier(self.ctx.pipeline, weights=self.ctx.weights, device=self.ctx.device,
                                                   backend=self.ctx.backend, threads=self.ctx.threads, threshold=self.ctx.run.threshold)
                self._unsaid = list(self._classifier.selection.get("warnings", []))
            except Exception as exc:  # noqa: BLE001 - no study can run without the model
                raise WorkerSetupError(getattr(exc, "path", "model"), getattr(exc, "message", str(exc))) from None
        return self._classifier

    def may_install(self) -> bool:
        """Whether a finished study may still be renamed into OUT_DIR (see the Ray engine's override)."""
        return True

    def run(self, study: Study, input_sha: str | None = None, input_state: tuple | None = None) -> StudyOutcome:
        """Triage one study into ``OUT_DIR/<id>`` unless it is already complete; never raises for
        a bad study (only :class:`WorkerSetupError`). ``input_sha``: the input's hash if the caller
        took it; with ``input_state`` (the file state it was taken under, see
        :func:`~capsule_triage.source_state.hashed_state`) it is used only while that state holds, and
        then need not be taken again to record the state. The first outcome after the model loaded
        carries its warnings, whatever the study's fate (QA 20, reviews rev20 and rev22)."""
        outcome = self._run(study, input_sha, input_state)
        if self._unsaid:
            said, self._unsaid = "; ".join(self._unsaid), []
            outcome = replace(outcome, warning="; ".join(w for w in (outcome.warning, said) if w))
        return outcome

    def _run(self, study: Study, input_sha: str | None, input_state: tuple | None) -> StudyOutcome:
        started = time.perf_counter()
        ctx = self.ctx
        final = ctx.out_dir / study.study_id
        first_state = input_state  # the earliest look at the input: changed by the time it fails = still being written
        just_written = False
        if gone(study.path):  # QA 62 #7: moved or deleted after the batch listed it: a failure, exit 1
            note = f"{study.path}: no longer found (moved or deleted after the batch listed it); not triaged in this run"
            return StudyOutcome(study, "pending", error=note, warning=note, wall_seconds=time.perf_counter() - started)
        try:
            check_source(study.path, empty_ok=True)  # a broken link, a FIFO, an unreadable file: in `triage run`'s words (QA 62 #7)
            state = ctx.state_of(study)  # once per study: a stat of every image of a frame folder
            just_written = recently_modified(state, inode_changes=False)  # as the study is read, not minutes later (rev70 #1)
            first_state = first_state or state
            if ctx.settle_seconds and (settling := self._settling(study, state, final, started)):
                return settling
            check_source(study.path)  # QA 103 #1: an empty file, as `cp` makes it before it writes, is judged as any input fault
            if input_state is not None and input_state != state:  # hashed ahead (prefetch), changed since
                input_sha = None
            hashed_under_state = input_sha is not None and input_state == state
            failed = None if ctx.force else unchanged_failure(ctx, study, state)
            if failed is not None:
                return StudyOutcome(study, "failed", error=failed["error"],
                                    note=f"not decoded again: input unchanged since it failed at {failed.get('failed_at')} (--force retries)")
            sha = input_sha or (None if ctx.force else unchanged_input_sha(final, ctx.accepts(study), state))
            if sha is None:
                hashed = ctx.hashed(study)
                hashed_under_state = hashed is not None and hashed[1] == state
                sha = hashed[0] if hashed else source_sha256(study.path, own_csv=ctx.own_csv)  # changing: scoring says so
            if not ctx.force and (run := completed_run(final, sha, ctx.accepts(study))) is not None:
                note = warning = None
                _record_state(ctx, final, study, run, state, hashed_under_state=hashed_under_state)
                if ctx.run.report and not pages_current(final / REPORT_FILE):  # done with --no-report, or by an earlier version (QA 43)
                    try:
                        written = (final / REPORT_FILE).is_file()
                        add_missing_report(final, ctx.out_dir / WORK_DIR)
                        note = "pages rewritten (written by an earlier version)" if written else f"{REPORT_FILE} added"
                    except Exception as exc:  # noqa: BLE001 - the results are complete: the page is only a view of them
                        shutil.rmtree(ctx.out_dir / WORK_DIR / study.study_id, ignore_errors=True)  # (rev38: a hand-edited run.json failed it)
                        why = getattr(exc, "message", None) or getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"
                        warning = f"{final / REPORT_FILE}: not {'rewritten' if written else 'added'} ({why}); the results are complete"
                _forget_failure(ctx, study)  # QA 33: a record of a failure of the machine stayed after the study was complete
                return StudyOutcome(study, "skipped", note=note, warning=warning, wall_seconds=time.perf_counter() - started)
            check_replaceable(final)  # before the scoring: the study waits for its folder to be cleared, its results kept
            earlier = None if ctx.force else self._earlier_output(sha, final, ctx.accepts(study))
            if earlier is not None and reuse_outputs(ctx, study, sha, earlier, final):
                return StudyOutcome(study, "reused", note=f"outputs of {earlier.name} reused (same input bytes)",
                                    wall_seconds=time.perf_counter() - started)
            classifier = self.classifier
            work = ctx.out_dir / WORK_DIR / study.study_id
            # The pages are written once run.json names the batch (they link back to its index.html)
            result = triage_study(study.path, ctx.pipeline, classifier, replace(ctx.run, out=work, force=True, progress=False, report=False))
            if result.input_sha256 != sha:
                raise InputChanged(study.path, "input changed while it was being triaged (still being written?); "
                                             "it is retried on the next run")
            # QA 72 #1: a copy that stalled mid-image read cleanly otherwise (by the file's time only: a recording copied in
            # with its own time, cp -p, is as old as it says, and its lost frames are damage, triaged with a Warning line)
            if result.frames_skipped and just_written:
                shutil.rmtree(work, ignore_errors=True)
                lost = f"{result.frames_skipped} frame{'s' if result.frames_skipped != 1 else ''}"
                note = (f"{study.path}: written less than a minute before this run read it and {lost} could not be decoded (a copy "
                        "still coming in?); triaged on the next run")
                return StudyOutcome(study, "pending", error=note, warning=note, wall_seconds=time.perf_counter() - started)
            run = {**result.run, "batch": {"study_id": study.study_id, "relative_path": study.rel_path, "run_id": ctx.run_id,
                                           "pipeline_fingerprint": ctx.fingerprint_of(study), "top_score": result.top_score,
                                           "flagged_fraction": result.flagged_fraction}}
            write_json_atomic(work / RUN_FILE, run, ctx.out_dir / WORK_DIR)
            page_note = _write_pages(work, final) if ctx.run.report else None
            if not self.may_install():  # the batch is gone (a Ray actor outliving a kill -9): OUT_DIR is not ours
                shutil.rmtree(work, ignore_errors=True)
                return StudyOutcome(study, "pending", note="the batch ended before this study was installed")
            install(work, final)
            _forget_failure(ctx, study)
            if self._outputs_by_input is not None:  # a copy later in this run reuses it (rev33: not setdefault, an entry may be stale)
                self._outputs_by_input[sha, ctx.fingerprint_of(study)] = final
            said = warning_lines(result.run, study.path, leave_out=[*classifier.selection.get("warnings", []), *result.summarised])
            return StudyOutcome(study, "ok", frames=result.frames, wall_seconds=time.perf_counter() - started, warning=page_note,
                                run_warnings=tuple(said))
        except WorkerSetupError:
            raise
        except DeviceError as exc:  # every later study would fail the same way
            raise WorkerSetupError(exc.path, exc.message) from None
        except Exception as exc:  # noqa: BLE001 - one bad study must not stop the others
            if isinstance(exc, InputError) and being_written(study.path, first_state, own_csv=ctx.own_csv):  # an export still being copied in
                note = f"{study.path}: still being written (it changed while it was read: {exc.message}); triaged on the next run"
                return StudyOutcome(study, "pending", error=note, warning=note, wall_seconds=time.perf_counter() - started)
            input_fault = isinstance(exc, InputError) and not isinstance(exc, InputChanged)  # QA 94 #5: by type, not words
            if input_fault and just_written:  # QA 79 #4: a copy stalled before an MP4's index failed the night (exit 1)
                note = (f"{study.path}: written less than a minute before this run read it, and cannot be read yet ({exc.message}): "
                        "a copy still coming in? triaged on the next run")  # where a frame folder's was pending (QA 72 #1)
                return StudyOutcome(study, "pending", error=note, warning=note, wall_seconds=time.perf_counter() - started)
            error = describe_error(study.path, exc, out_dir=ctx.out_dir)
            error = error.replace(str(ctx.out_dir / WORK_DIR / study.study_id), str(final))  # the staging folder is gone
            return record_failure(ctx, study, error, started=started, input_fault=input_fault)

    def _settling(self, study: Study, state: tuple, final: Path, started: float) -> StudyOutcome | None:
        """``pending`` for a study written less than ``--settle`` seconds before it is read (QA 88 #1: a copy into the
        archive that stalled between images, or at a transport stream's packet boundary, reads cleanly), unless its
        files are as its complete results record them (rev84 #2); such results of an earlier version stay listed."""
        age = seconds_since_written(study.path, state)
        if age is None or age >= self.ctx.settle_seconds or unchanged_input_sha(final, self.ctx.accepts(study), state):
            return None
        if not self.ctx.force and unchanged_failure(self.ctx, study, state) is not None:
            return None  # failed on these very files: "not decoded again", as without --settle (rev85 #5)
        note = (f"{study.path}: written {age:.0f} s before this run read it, within --settle {self.ctx.settle_seconds:g} "
                "(a copy still coming in?); triaged on a later run")
        try:
            earlier = outputs_complete(final) and isinstance(read_json(final / RUN_FILE).get("batch"), dict)
        except (OSError, ValueError, AttributeError):
            earlier = False
        return StudyOutcome(study, "pending", error=note + ("; the results listed are of its earlier version" if earlier else ""),
                            warning=note, earlier=earlier, wall_seconds=time.perf_counter() - started)

    def _earlier_output(self, sha: str, final: Path, fingerprints: tuple[str, ...]) -> Path | None:
        """A complete output of the same input bytes and pipeline under another id: the study was
        moved or renamed in the archive (its id comes from its path), or is a copy. The index is made
        once per worker, at its first study that needs scoring (with several workers it may include
        outputs other workers installed in this run: harmless, :func:`~.reuse.reuse_outputs` checks the copy); the studies it
        scores join it when installed (two copies in one night: scored once; by two workers at once, twice)."""
        if self._outputs_by_input is None:
            self._outputs_by_input = {}
            for run_file in sorted(self.ctx.out_dir.glob(f"*/{RUN_FILE}")):
                if run_file.parent.name.startswith("."):
                    continue
                try:
                    run = read_json(run_file)
                    made = run["batch"]["pipeline_fingerprint"]
                    if made in (self.ctx.fingerprint, self.ctx.video_fingerprint):
                        self._outputs_by_input.setdefault((run["input"]["sha256"], made), run_file.parent)
                except (OSError, ValueError, KeyError, TypeError, AttributeError):
                    continue
        folder = next((found for print_ in fingerprints if (found := self._outputs_by_input.get((sha, print_)))), None)
        if folder is None or folder == final or completed_run(folder, sha, fingerprints) is None:
            return None
        return folder


def _write_pages(work: Path, final: Path) -> str | None:
    """The review pages of a study scored in this run; a failure leaves its complete results to be installed without
    pages (a later run adds them) and is said in a warning (review rev32: it failed the study, and an InputError from
    reading the outputs back was taken for a bad input, never retried)."""
    try:
        write_report(work, batch_index=True)  # the run writes index.html after its studies
        return None
    except (OSError, TriageError) as exc:
        (work / REPORT_FILE).unlink(missing_ok=True)
        shutil.rmtree(work / DETAIL_DIR, ignore_errors=True)
        reason = str(exc).replace(str(work), str(final)) if isinstance(exc, TriageError) else exc.strerror or str(exc)
        return f"{final / REPORT_FILE}: not written ({reason}); the results are complete, a later run adds the pages"


def _forget_failure(ctx: WorkerContext, study: Study) -> None:
    try:
        (ctx.out_dir / FAILED_DIR / f"{study.study_id}.json").unlink(missing_ok=True)
    except OSError:  # a read-only OUT_DIR: the record says an earlier failure, which the summary shows as such
        pass


def record_failure(ctx: WorkerContext, study: Study, error: str, *, started: float | None = None,
                   input_fault: bool = False) -> StudyOutcome:
    """Write ``.failed/<id>.json`` atomically and return the failed outcome. ``input_fault``: the
    input itself is bad (not the machine: a full disk, a crashed worker); its file state is recorded,
    and the study is not decoded again while that state holds (:func:`unchanged_failure`)."""
    try:
        sha, state = ctx.hashed(study) or (None, None)
    except Exception:  # noqa: BLE001 - unreadable input
        sha = state = None
    state = settled_state_digest(state) if input_fault and state else None
    failed = {"study_id": study.study_id, "relative_path": study.rel_path, "kind": study.kind, "error": error,
              "input_sha256": sha, "input_state_sha256": state, "pipeline_fingerprint": ctx.fingerprint_of(study), "failed_at": now_utc()}
    shutil.rmtree(ctx.out_dir / WORK_DIR / study.study_id, ignore_errors=True)  # first: it may be what filled the disk
    try:
        write_json_atomic(ctx.out_dir / FAILED_DIR / f"{study.study_id}.json", failed, ctx.out_dir / WORK_DIR)
    except OSError:  # a full disk: the failure is still reported (summary row, Error line) and retried next run
        pass
    return StudyOutcome(study, "failed", error=error, wall_seconds=time.perf_counter() - started if started else 0.0,
                        failed_on=sha, input_fault=input_fault)


def add_missing_report(final: Path, work_root: Path) -> None:
    """Write the review pages of a complete study from its outputs, without rescoring it.

    The pages are written into a hard-linked copy under ``work_root`` that is then renamed into
    place, so a kill leaves either the old folder or the new one (never a half-written page).
    """
    work = work_root / final.name
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(final, work, symlinks=True, copy_function=link_or_copy)
    write_report(work, batch_index=True)  # replaces files by rename only: the linked originals are never modified
    install(work, final, whole_copy=True)
