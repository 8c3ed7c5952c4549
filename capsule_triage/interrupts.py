"""Ctrl-C, hangup and SIGTERM: held off while a command writes its results, and kept from child processes.

Writing results (:func:`deferring_interrupts`): ``triage eval`` changes several files in its last
step (config.json's threshold, the model card, ``--out``); an interrupt then is held until they are
all written and raised afterwards as :class:`InterruptedAfterWriting`, so the command can say which
of the two it was: nothing written, or everything.

Children: the terminal sends Ctrl-C (SIGINT), and its hangup (SIGHUP, rev44), to the whole foreground
process group; the parent process decides what stops, so its children ignore both. A child can only
ignore them once it runs Python, and a spawned one imports for seconds before (numpy and PyAV; torch
and timm in a batch worker): a Ctrl-C then printed a KeyboardInterrupt traceback from inside those
imports (CI, 2026-12-03). So the parent blocks both while it starts the child, which inherits the mask:
the signal waits in the child until :func:`ignore_group_signals` ignores, and so discards, it; in the
parent it is delivered as soon as the mask is restored.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Not SIGTERM (rev52 asked): ProcessPoolExecutor stops the workers of a broken pool (one crashed) with it, then joins them.
GROUP_SIGNALS = frozenset({signal.SIGINT, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])})


@contextmanager
def starting_children() -> Iterator[None]:
    """Block SIGINT and SIGHUP in this thread while children are started (they inherit the mask)."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no masks, no process groups sharing Ctrl-C this way
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def ignore_group_signals() -> None:
    """In a child, first thing: ignore SIGINT and SIGHUP (discarding one pending), then unblock them."""
    for sig in GROUP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, GROUP_SIGNALS)


DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []))


class InterruptedAfterWriting(KeyboardInterrupt):
    """An interrupt that arrived while results were being written: they were written whole, then this was raised."""


@contextmanager
def deferring_interrupts() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and hangup until the block ends; one that arrived raises InterruptedAfterWriting then.

    Only signals this process handles in Python (the CLI turns all three into KeyboardInterrupt) are held:
    an ignored one stays ignored, a default one (a library caller's SIGTERM) still ends the process. The
    handlers are swapped rather than the signals blocked: a process-directed signal blocked in this thread
    alone would go to one of the model's threads, and Python runs its handler here all the same.
    """
    if threading.current_thread() is not threading.main_thread():  # signal.signal works in the main thread only
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in DEFERRED_SIGNALS}
    swapped: list[int] = []
    try:  # (rev104 #6: a signal while they were swapped left those swapped before it held for good)
        for sig in (sig for sig, handler in previous.items() if callable(handler)):
            signal.signal(sig, lambda signum, frame: caught.append(signum))
            swapped.append(sig)
        yield
    finally:
        for sig in swapped:
            signal.signal(sig, previous[sig])
    if caught:
        raise InterruptedAfterWriting(f"signal {caught[0]} while results were written")
