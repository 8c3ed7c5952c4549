"""Progress bars that cost nothing when they are off.

``tqdm(disable=True)`` still starts tqdm's monitor thread (tqdm 4.70.1), which then runs for the life of the
process: a library user's notebook gained a ``tqdm_monitor`` thread from a run with ``progress=False`` (QA 32).
"""

from __future__ import annotations

from typing import Iterable


class _Off:
    """What the code calls on a bar, doing nothing; iterates its iterable as it is."""

    def __init__(self, iterable: Iterable | None = None):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def __enter__(self) -> "_Off":
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(iterable: Iterable | None = None, *, show: bool, **kwargs):
    """``tqdm(iterable, **kwargs)`` when ``show``, else a stand-in that draws nothing and starts no thread."""
    if not show:
        return _Off(iterable)
    from tqdm import tqdm

    return tqdm(iterable, **kwargs)
