"""Ctrl-C and hangup in the child processes a run or a batch starts (decoder process, batch workers).

The terminal sends Ctrl-C (SIGINT), and its hangup (SIGHUP, rev44), to the whole foreground process
group; the parent process decides what stops, so its children ignore both. A child can only ignore them
once it runs Python, and a spawned one imports for seconds before (numpy and PyAV; torch and timm in a
batch worker): a Ctrl-C then printed a KeyboardInterrupt traceback from inside those imports (CI,
2026-12-03). So the parent blocks both while it starts the child, which inherits the mask: the signal
waits in the child until :func:`ignore_group_signals` ignores, and so discards, it; in the parent it is
delivered as soon as the mask is restored.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

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
