"""``triage batch``: triage a tree of studies — resumable, failure-isolated, summarised — locally or on Ray.

* A study is a video file (``VIDEO_SUFFIXES``) or a folder with frame images directly inside it.
  Hidden entries are skipped; a folder without images is not a study (nothing to report), while an
  empty or corrupt video is a study that fails. Symlinks are followed, each real folder once.
* Its id is ``<slug of the relative path>-<10 hex of sha256(relative path)>``: stable across runs
  and machines, readable, and distinct for ``a/b.mp4`` vs ``a_b.mp4``.
* A study is complete (skipped on the next run) when ``OUT_DIR/<id>/run.json`` records the input's
  current SHA-256 and this run's :func:`~.records.pipeline_fingerprint`. Failed studies are retried.
* Every study goes through :class:`~.worker.StudyWorker` (the model loaded once per worker),
  in-process, in ``--workers`` processes (:mod:`.engine`) or in Ray actors (:mod:`.ray_engine`). A bad
  study is recorded as failed; only a model that cannot be loaded stops the batch.
* Overlap (one local worker): inside a study, decoding runs in a thread ahead of inference
  (:func:`~capsule_triage.background.prefetch`); across studies, a second thread decides whether the
  next study can be skipped while the current one is scored: unread when its files' state is the one
  its run.json records, else by hashing it (reading all of its bytes, so it is in the page cache when
  its decoding starts).
* Review pages: each study's ``report.html`` is written in its staging folder once its run.json names the
  batch (the pages link back to ``index.html``; a page that cannot be written leaves the complete results
  installed without pages, with a warning); after the summary, ``index.html`` links them
  (:func:`capsule_triage.report_batch.write_batch_index`).
  ``--no-report`` writes neither. ``report`` is not part of the pipeline fingerprint (it changes no
  result): a complete study that lacks report.html when reports are wanted gets one written from its
  outputs, without rescoring (it stays "skipped"); with ``--no-report`` existing pages are left alone.

Modules: :mod:`.discovery` (studies and their ids), :mod:`.layout` (names in OUT_DIR, atomic JSON),
:mod:`.lock` (the OUT_DIR lock, held by ``triage report`` too), :mod:`.worker` (the per-study function),
:mod:`.records` (fingerprint, completion marker), :mod:`.reuse` (outputs of the same bytes reused),
:mod:`.summary` (studies.parquet, batch.json, batch.log, index.html), :mod:`.run_lines` (the run's own
`Warning:` lines), :mod:`.unreached` (studies an interrupted run never got to), :mod:`.engine` (:func:`run_batch`),
:mod:`.local_engine`, :mod:`.ray_engine` (``--engine ray``; ``ray`` is optional).
"""

from __future__ import annotations

from .. import _lazy_getattr

# Imported on first use (PEP 562), as the package's own names are: reading a batch's tables
# (capsule_triage.batch_table, .tables) loaded the engine, the worker and with them PyTorch (QA 78 #1: +670 MB, 2.4 s)
_PUBLIC = {"discover_studies": "discovery", "study_id": "discovery", "BatchOptions": "engine", "run_batch": "engine",
           "LOCK_FILE": "layout", "acquire_lock": "lock", "StudyWorker": "worker", "WorkerContext": "context",
           "WorkerSetupError": "context"}
__all__ = sorted(_PUBLIC)

__getattr__ = _lazy_getattr(__name__, _PUBLIC)
