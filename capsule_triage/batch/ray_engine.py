"""``--engine ray``: the same per-study function on a Ray cluster.

One study per task; each actor wraps a :class:`~capsule_triage.batch.worker.StudyWorker`, so the
model is loaded once per actor; with GPUs in the cluster each actor asks for one (one model per GPU). Workers
write straight into ``OUT_DIR``, which must therefore be on a file system every node sees; each node
needs capsule_triage installed. ``ray`` is an optional extra: ``pip install "capsule-triage[ray]"``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..errors import TriageError
from .discovery import Study
from .engine import BatchOptions
from .local_engine import available_cpus
from .layout import LOCK_FILE
from .lock import is_stale, read_lock
from .context import StudyOutcome, WorkerContext, WorkerSetupError
from .worker import StudyWorker, record_failure

OBJECT_STORE_BYTES = 128 * 1024**2  # only study descriptors and outcomes travel through it
REACH_SECONDS = 5.0  # a --ray-address that does not answer a TCP connection in this time is not a Ray cluster


def require_ray():
    """The ``ray`` module, or a :class:`TriageError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise TriageError("--engine", 'ray is not installed; pip install "capsule-triage[ray]"') from None
    return ray


def check_ray_address(address: str | None) -> None:
    """A ``--ray-address`` HOST:PORT (or ray://HOST:PORT) must accept a connection: ``ray.init`` on one
    that does not retries for ever (QA: 197 s, ignoring SIGTERM, holding OUT_DIR's lock).

    Raises:
        TriageError: not an address, or nothing answers there.
    """
    source = "--ray-address"
    if address in (None, "auto") and os.environ.get("RAY_ADDRESS"):  # what ray.init connects to then
        address, source = os.environ["RAY_ADDRESS"], "RAY_ADDRESS"
    if not address or address in ("auto", "local"):
        return
    if address.startswith(("http://", "https://")):
        raise TriageError(source, f"{address} is a dashboard address (for `ray job submit`); give the cluster's HOST:PORT "
                                  "(its GCS, port 6379 by default) or ray://HOST:10001")
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdecimal()):
        raise TriageError(source, f"{address!r}: expected HOST:PORT, ray://HOST:PORT, auto or local")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_SECONDS).close()
    except OSError as exc:
        raise TriageError(source, f"nothing answers at {address} ({exc.strerror or exc}); is the Ray cluster up?") from None


class RayEngine:
    """Connects to (or starts) Ray and runs studies on ``workers`` actors.

    Args:
        options: ``ray_address`` None starts a local Ray with this machine's CPUs (no dashboard);
            ``workers`` None = one actor per GPU, else 1.
    """

    def __init__(self, options: BatchOptions):
        # Ray's usage statistics (on by default) probe cloud metadata addresses and report to Anyscale
        # (QA, strace); a hospital's nightly job talks to no one. A user's own setting wins.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self.ray = ray = require_ray()
        self._started = not ray.is_initialized()
        if self._started:
            common = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
            ours = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                address = options.ray_address or os.environ.get("RAY_ADDRESS")  # ray job submit sets RAY_ADDRESS
                if address and address != "local":  # a cluster of its own size
                    ray.init(address=address, **common)
                else:
                    ray.init(num_cpus=available_cpus(), object_store_memory=OBJECT_STORE_BYTES, **common)
            except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ... from ray
                raise TriageError(options.ray_address or "ray", f"cannot start or reach Ray ({str(exc).splitlines()[0][:200]})") from None
            finally:  # ray.init puts in its own SIGTERM handler (sys.exit(15): no summary, exit 15; QA 19)
                if threading.current_thread() is threading.main_thread():
                    for sig, handler in ours.items():
                        if handler is not None:  # None: installed outside Python, not ours to put back
                            signal.signal(sig, handler)
        resources = ray.cluster_resources()
        gpus = 0 if options.device.lower() == "cpu" else int(resources.get("GPU", 0))  # 'CPU' as typed
        self.device_type = "cuda" if gpus else "cpu"
        cpus = int(resources.get("CPU", 1))
        # never more actors than the cluster can place now (an unplaceable actor would wait forever)
        self.workers = max(1, min(options.workers or gpus or 1, gpus or cpus))
        self.num_gpus = 1 if gpus else 0
        node_cpus = [n["Resources"].get("CPU", 1) for n in ray.nodes() if n.get("Alive")] or [1]
        self.cpus_per_actor = max(1, min(cpus // self.workers, int(max(node_cpus))))
        self._lock_record: dict | None = None

    def _actor(self, ctx: WorkerContext):
        cls = self.ray.remote(num_cpus=self.cpus_per_actor, num_gpus=self.num_gpus, max_restarts=0)(OwnedStudyWorker)
        device = "cuda" if self.num_gpus else ctx.device  # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU
        if self._lock_record is None:  # read once: the batch holds its lock from before the engine starts
            self._lock_record = read_lock(ctx.out_dir / LOCK_FILE) or {}
        owner = {"node": self.ray.get_runtime_context().get_node_id(), "lock": str(ctx.out_dir / LOCK_FILE),
                 "record": self._lock_record or None}
        return cls.remote(replace(ctx, device=device, threads=self.cpus_per_actor), owner)

    def run(self, studies: list[Study], ctx: WorkerContext, on_outcome: Callable[[StudyOutcome], None]) -> None:
        """Keep every actor busy with one study at a time; an actor that dies fails its study and is replaced."""
        ray = self.ray
        from ray.exceptions import RayActorError, RayTaskError

        pending = list(studies)
        idle = [self._actor(ctx) for _ in range(min(self.workers, len(pending)))]
        running: dict = {}
        while pending or running:
            while idle and pending:
                actor, study = idle.pop(), pending.pop(0)
                running[actor.run.remote(study)] = (actor, study)
            (ref,), _ = ray.wait(list(running), num_returns=1)
            actor, study = running.pop(ref)
            try:
                outcome = ray.get(ref)
                idle.append(actor)
            except RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, WorkerSetupError):
                    raise WorkerSetupError(cause.path, cause.message) from None
                outcome = record_failure(ctx, study, f"{study.path}: ray task failed ({type(cause).__name__}: {cause})")
                idle.append(actor)
            except RayActorError as exc:
                outcome = record_failure(ctx, study, f"{study.path}: ray actor died ({type(exc).__name__})")
                idle.append(self._actor(ctx))
            on_outcome(outcome)

    def close(self) -> None:
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()


class OwnedStudyWorker(StudyWorker):
    """A :class:`StudyWorker` as a Ray actor that installs nothing once the batch that started it is gone.

    After a ``kill -9`` of the batch Ray notices its driver's death only seconds later, and meanwhile
    the actor installed a whole study into OUT_DIR, whose lock no longer guarded it (QA 19); local
    ``--workers`` processes die with the batch. Before each install the actor checks that OUT_DIR's
    lock still holds the batch's own record (any node: OUT_DIR is shared) and, on the batch's own Ray
    node, that its process is alive and the same one (:func:`~capsule_triage.batch.lock.is_stale`:
    pid and start time, so a reused pid or another container's host name cannot fool it); there a
    watcher also ends an idle actor every :data:`OWNER_CHECK_SECONDS`.
    """

    def __init__(self, ctx: WorkerContext, owner: dict):
        super().__init__(ctx)
        import ray

        self.lock, self.record = Path(owner["lock"]), owner["record"]  # record None: the batch's lock could not be read
        self.same_node = ray.get_runtime_context().get_node_id() == owner["node"]
        if self.same_node and self.record:
            threading.Thread(target=self._exit_when_gone, daemon=True, name="owner-watch").start()

    def may_install(self) -> bool:
        return not self._owner_gone()

    def _owner_gone(self) -> bool:
        """True when the lock is released or another's, or (on the batch's node) its process is gone; an
        unreadable lock (a busy or network file system for a moment) is no verdict."""
        if not self.record:
            return False
        try:
            if not self.lock.exists():
                return True
        except OSError:
            return False
        holder = read_lock(self.lock)
        return bool(holder) and (holder != self.record or (self.same_node and is_stale(self.lock, holder)))

    def _exit_when_gone(self) -> None:
        verdicts = 0
        while verdicts < OWNER_VERDICTS:  # a few in a row: one odd read never ends a healthy actor
            verdicts = verdicts + 1 if self._owner_gone() else 0
            time.sleep(OWNER_CHECK_SECONDS)
        os._exit(1)  # at once: no cleanup that could write into OUT_DIR


OWNER_CHECK_SECONDS = 0.2
OWNER_VERDICTS = 3
