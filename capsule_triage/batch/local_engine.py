"""The local engine of a batch: :class:`~.worker.StudyWorker` in-process (one worker) or in a pool of
spawned processes (``--workers N``, one model each, one per GPU by default), each killed with the
batch process (:func:`die_with_parent`). ``--engine ray`` uses :class:`~.ray_engine.RayEngine` instead.
"""

from __future__ import annotations

import errno
import gc
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from ..interrupts import ignore_group_signals, starting_children
from .discovery import Study
from .records import unchanged_input_sha
from .context import StudyOutcome, WorkerContext, WorkerSetupError
from .worker import StudyWorker, record_failure

if TYPE_CHECKING:
    from .engine import BatchOptions


class LocalEngine:
    """In-process (one worker) or a process pool; one model per worker, one worker per GPU by default."""

    def __init__(self, options: BatchOptions):
        from ..device import device_name, usable_gpus

        device = device_name(options.device)  # cuda:0 checked (an error), or auto fell back to the CPU
        self.device_type = device.split(":")[0]
        self.notes: list[str] = []  # said as the night's warnings
        if device == "cuda":  # every GPU this PyTorch can run on, one worker each
            self.devices, self.notes = usable_gpus()
        else:
            self.devices = [device]
        self.workers = options.workers or (len(self.devices) if self.device_type == "cuda" else 1)

    def run(self, studies: list[Study], ctx: WorkerContext, on_outcome: Callable[[StudyOutcome], None]) -> None:
        run_local(studies, ctx, workers=self.workers, devices=self.devices, on_outcome=on_outcome)

    def close(self) -> None:
        pass


def run_local(studies: list[Study], ctx: WorkerContext, *, workers: int, devices: list[str],
              on_outcome: Callable[[StudyOutcome], None]) -> None:
    """One worker in-process (hashing the next study in a background thread), or a process pool.

    With one worker, while study k is decoded and scored (decode already overlaps inference inside
    :func:`~capsule_triage.pipeline.triage_study`), a thread checks whether study k+1 is already
    complete: by its recorded file state, else by hashing it (reading all of its bytes, which also
    brings them into the page cache).
    """
    if workers <= 1:
        from ..background import prefetch

        worker = StudyWorker(replace(ctx, device=devices[0]))
        for study, hashed in prefetch(_hashed(studies, ctx), depth=1):
            sha, state = hashed or (None, None)
            on_outcome(worker.run(study, input_sha=sha, input_state=state))  # the worker checks the state still holds
        return
    try:
        return _run_pool(studies, ctx, workers=workers, devices=devices, on_outcome=on_outcome)
    except OSError as exc:  # a process limit, not a study's fault: one line instead of multiprocessing's traceback
        if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.EAGAIN):
            raise
        problem = exc.strerror
    import resource

    gc.collect()  # the pool's semaphores, kept by the exception's frames until now ("leaked semaphore" warnings at exit)
    raise WorkerSetupError("--workers", f"cannot start {workers} worker processes ({problem}; open-file limit `ulimit -n` "
                                        f"{resource.getrlimit(resource.RLIMIT_NOFILE)[0]}): raise the limit or use fewer --workers")


def _hashed(studies: list[Study], ctx: WorkerContext) -> Iterator[tuple[Study, tuple[str, tuple] | None]]:
    """Each study with its input hash and the file state that held while it was taken (the worker
    trusts the hash only if the state still holds when it gets to the study), or None."""
    for study in studies:
        try:
            state = ctx.state_of(study)
            known = None if ctx.force else unchanged_input_sha(ctx.out_dir / study.study_id, ctx.accepts(study), state)
            yield study, ((known, state) if known else ctx.hashed(study))
        except Exception:  # noqa: BLE001 - the worker reports it
            yield study, None


_POOL_WORKER: StudyWorker | None = None


def _pool_init(ctx: WorkerContext, devices, parent_pid: int) -> None:
    global _POOL_WORKER
    die_with_parent(parent_pid)
    ignore_group_signals()  # Ctrl-C and hangup reach the whole process group: the parent stops the workers
    import threading

    from tqdm import tqdm

    # tqdm's default lock is a multiprocessing semaphore; a worker killed on Ctrl-C never unregisters it, and
    # the resource tracker then warns of a leak. Workers draw no progress bars: a thread lock is enough.
    tqdm.set_lock(threading.RLock())
    _POOL_WORKER = StudyWorker(replace(ctx, device=devices.get()))


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this process when the batch process dies, even by SIGKILL (Linux).

    Without it a killed batch left its workers running: they finished their studies into OUT_DIR
    without the lock, while a re-run had already recovered the stale lock (QA, 2026-12-01).
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def _pool_run(study: Study) -> StudyOutcome:
    return _POOL_WORKER.run(study)


def _run_pool(studies, ctx, *, workers, devices, on_outcome) -> None:
    """``workers`` spawned processes, each with its own model (one per GPU on CUDA).

    A worker process that dies (killed for memory, a crash in a decoder) breaks the whole pool: every study in it fails
    with it (QA 62 #2: one kill -9 failed all 6 studies of a night, each error naming its own study). So no more studies
    are given to the pool than it has workers; those in flight when it broke are triaged again one at a time, each in a
    fresh one-worker pool, so only a study that kills its worker by itself fails, and the rest of the night goes on in a
    new pool of ``workers`` (review rev56: not one at a time)."""
    def said_retried(outcome: StudyOutcome) -> None:  # QA 72 #7: a worker killed for memory went unsaid when the retry passed
        if outcome.status in ("ok", "reused"):  # (a failure is its own Error line; rev70 #4)
            why = (f"{outcome.study.path}: triaged again on its own: a worker process died while it was in flight (killed, out "
                   "of memory, or a crash in a decoder; its own or another study's)")
            outcome = replace(outcome, warning="; ".join(filter(None, (why, outcome.warning))))
        on_outcome(outcome)

    rest = list(studies)
    while rest:
        lost, rest = _pool_round(rest, ctx, workers=workers, devices=devices, on_outcome=on_outcome)
        for study in lost:
            if _pool_round([study], ctx, workers=1, devices=devices, on_outcome=said_retried)[0]:
                on_outcome(record_failure(ctx, study, f"{study.path}: the worker process died while triaging it (killed, "
                                                      "out of memory, or a crash in a decoder); retried on the next run"))


def _pool_round(studies, ctx, *, workers, devices, on_outcome) -> tuple[list[Study], list[Study]]:
    """Triage ``studies`` in a pool of ``workers`` processes, ``workers`` at a time, until done or a worker dies (a broken
    pool): then (the studies in flight that did not finish, the studies not yet given to it); else ([], [])."""
    import multiprocessing
    from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    mp = multiprocessing.get_context("spawn")
    queue = mp.Queue()
    for i in range(workers):
        queue.put(devices[i % len(devices)])
    threads = max(1, (ctx.threads or available_cpus()) // workers)
    pool = ProcessPoolExecutor(workers, mp_context=mp, initializer=_pool_init,
                               initargs=(replace(ctx, threads=threads), queue, os.getpid()))
    waiting, running = list(studies), {}

    def settle(done) -> list[Study]:
        """Report each finished study's outcome; the studies the broken pool lost (every one of ``done`` is looked at:
        review rev57 #2, a study finished beside the lost one was triaged again)."""
        lost = []
        for future in done:
            study = running.pop(future)
            try:
                outcome = future.result()
            except WorkerSetupError:
                raise
            except BrokenProcessPool:
                lost.append(study)
                continue
            except Exception as exc:  # noqa: BLE001 - e.g. an outcome that cannot be sent back
                outcome = record_failure(ctx, study, f"{study.path}: worker process failed ({type(exc).__name__})")
            on_outcome(outcome)
        return lost

    try:
        while waiting or running:
            broken = False
            while waiting and len(running) < workers and not broken:
                study = waiting.pop(0)
                try:
                    with starting_children():  # a submit may spawn a worker (up to `workers`; none later: no max_tasks_per_child)
                        running[pool.submit(_pool_run, study)] = study
                except BrokenProcessPool:  # a worker died while an outcome was being reported (review rev57 #1: a traceback)
                    waiting.insert(0, study)
                    broken = True
            lost = settle(wait(running, return_when=ALL_COMPLETED if broken else FIRST_COMPLETED)[0])
            if lost or broken:  # every future of a broken pool ends, with its result or with the pool
                return [*lost, *settle(wait(running, return_when=ALL_COMPLETED)[0])], waiting
        return [], []
    except BaseException:  # interrupted (or a setup error): stop now, not after the studies in flight
        _kill_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        # Free the pool's semaphores now: a traceback would keep this frame (and them) alive until the
        # CLI's os._exit, and multiprocessing's resource tracker would then warn of "leaked semaphores".
        del pool, queue
        gc.collect()  # the executor sits in reference cycles


def _kill_workers(pool) -> None:
    """Kill the pool's workers (``ProcessPoolExecutor.kill_workers`` from Python 3.14): a study in
    flight is in OUT_DIR/.work, which run_batch discards, so it is neither installed after the
    summary was taken (it would be listed as pending) nor waited for."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
