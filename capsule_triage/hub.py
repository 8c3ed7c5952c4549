"""Trained weights from the Hugging Face Hub: ``hf-hub:OWNER/REPO[@REVISION]`` names a model repository
holding a weights folder as ``triage train`` writes it (``config.json`` + ``model.safetensors``, and
the model card). It is fetched into the Hugging Face cache (``HF_HUB_CACHE``), checked for updates on
each use when the Hub can be reached, and read from the cache alone offline (``HF_HUB_OFFLINE=1``, or
no connection); ``@REVISION`` (a commit) pins it. From then on it is an ordinary weights folder.

A timm tag (``hub:resnet50.a1_in1k``) is not trained weights: it holds ImageNet weights without a
head for the model's classes, so it starts training (``triage train --init hub:TAG``) and is refused
for scoring.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path

from .errors import WeightsError
from .model_config import CONFIG_NAME, WEIGHTS_NAME

PREFIX = "hf-hub:"
FILES = [CONFIG_NAME, WEIGHTS_NAME, "MODEL_CARD.md", "README.md",  # the last two: eval's overlap checks (rev60 #3)
         "training_images.parquet", "threshold_images.parquet"]
ETAG_TIMEOUT_SECONDS = 10


def local_weights(weights: str | Path) -> str | Path:
    """``weights`` as a local location (see :func:`fetch_weights`, whose note this drops)."""
    return fetch_weights(weights)[0]


def fetch_weights(weights: str | Path) -> tuple[str | Path, str | None]:
    """``weights`` as a local location: an ``hf-hub:`` repository as its cached folder, the
    ``model.safetensors`` of a weights folder as that folder (its config.json describes it, not a
    preset's [model]); others unchanged. With a note when the Hub could not be reached and the
    cached copy stands in (a ``Warning:`` line and run.json say so), else None.

    Raises:
        WeightsError: a timm ``hub:`` tag; an ``hf-hub:`` repository that is not in the cache when
            offline or unreachable, that the Hub says is missing or closed to us (never replaced by a
            cached copy), that cannot be fetched, or that holds no weights folder.
    """
    text = str(weights)
    if text.startswith("hub:"):
        raise WeightsError(text, "a timm hub tag holds ImageNet weights without a head for this model's classes: start "
                                 f"training from it (`triage train --init {text}`), or score with trained weights "
                                 f"(a folder, a file, or {PREFIX}OWNER/REPO)")
    if not text.startswith(PREFIX):
        path = Path(text)
        if path.name == WEIGHTS_NAME and (path.parent / CONFIG_NAME).is_file():
            return path.parent, None
        return weights, None
    repo, at, revision = text[len(PREFIX):].partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")) or any(c.isspace() for c in repo) or (at and not revision):
        raise WeightsError(text, f"expected {PREFIX}OWNER/REPO or {PREFIX}OWNER/REPO@REVISION")
    if COMMIT.fullmatch(revision.lower()):
        revision = revision.lower()  # a commit in capitals (as some tools print it) is the same commit: the cache, not the Hub
    folder, note = _snapshot(text, repo, revision or None)
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:  # QA 44: an incomplete cached snapshot was called the repository's fault
        raise WeightsError(text, f"its snapshot {folder} lacks {' and '.join(missing)}: the repository holds no weights folder "
                                 f"({CONFIG_NAME} + {WEIGHTS_NAME}), or the cached download is incomplete (fetch it again online)")
    return folder, note


def offline_mode() -> bool:
    """HF_HUB_OFFLINE set as huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _snapshot(text: str, repo: str, revision: str | None) -> tuple[Path, str | None]:
    """The repository's files: fetched (or checked for updates) online; from the cache alone when
    HF_HUB_OFFLINE is set, for a commit already cached (a commit never changes), or, with a note,
    when the Hub cannot be reached or refuses us (no connection, a proxy, the Hub failing, a private
    repository without a token). A repository or revision the Hub says does not exist (404) is an
    error, never a cached copy (huggingface_hub falls back to the cache for any HTTP error, silently:
    so we ask the Hub which commit is current first)."""
    from huggingface_hub import HfApi, snapshot_download

    timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or ETAG_TIMEOUT_SECONDS)  # the user's setting wins
    fetch = dict(allow_patterns=FILES, etag_timeout=timeout)
    with quiet_hub():
        if offline_mode() or (revision is not None and COMMIT.fullmatch(revision)):
            try:
                return Path(snapshot_download(repo, revision=revision, local_files_only=True, **fetch)), None
            except Exception:  # not cached: offline that is the end; a commit is fetched below
                if offline_mode():
                    raise WeightsError(text, "not in the local Hugging Face cache and HF_HUB_OFFLINE is set") from None
        try:
            current = HfApi().repo_info(repo, revision=revision, timeout=timeout).sha  # raises what the Hub says
            # by the name given, not the commit it resolved to: only so does the cache record which commit a
            # branch is at (refs/main), which offline runs and the fallback below read (review rev19)
            folder = Path(snapshot_download(repo, revision=revision, **fetch))
            if current and folder.name != current:  # its own second look failed and it took the cache, silently
                return folder, (f"{text}: the Hub's current commit {current[:12]} could not be fetched; using the cached "
                                f"commit {folder.name[:12]}")
            return folder, None
        except Exception as exc:  # the HTTP client's own errors (proxy, TLS, DNS) as well as the Hub's
            if not unreachable(exc):
                raise WeightsError(text, f"cannot fetch the repository ({first_line(exc, typed=True)})") from None
            network = exc
        try:
            folder = Path(snapshot_download(repo, revision=revision, local_files_only=True, **fetch))
        except Exception:
            raise WeightsError(text, f"cannot fetch the repository and it is not in the local cache ({first_line(network, typed=True)})") from None
    return folder, f"{text}: could not check the Hub for updates ({first_line(network, 120, typed=True)}); using the cached commit {folder.name[:12]}"


COMMIT = re.compile(r"[0-9a-f]{40}")
NETWORK_MODULES = ("httpx", "httpcore", "requests", "urllib3", "ssl", "socket", "h11", "h2")


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the Hub could not be reached, failed or refused us (a connection, proxy,
    TLS or DNS error, a timeout, a 5xx, 401/403/407/408/429 without a reason: a gated repository without
    a token), rather than that the repository or revision does not exist or is disabled (the Hub says
    so with an error code, as 401 without a token: RepositoryNotFoundError), or another error (a full
    disk, a mistyped HF_ENDPOINT, a bug)."""
    from huggingface_hub.errors import (DisabledRepoError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    if isinstance(exc, GatedRepoError):
        return True
    if isinstance(exc, (RepositoryNotFoundError, RevisionNotFoundError, DisabledRepoError)):
        return False
    if type(exc).__name__ in ("UnsupportedProtocol", "InvalidURL", "MissingSchema", "InvalidSchema"):
        return False  # our address is wrong, not the network
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return status is None or status >= 500 or status in (401, 403, 407, 408, 429)
    if isinstance(exc, (LocalEntryNotFoundError, ConnectionError, TimeoutError)):
        return True
    return any(cls.__module__.startswith(NETWORK_MODULES) for cls in type(exc).__mro__ if cls.__module__ != "builtins")


def first_line(exc: BaseException, limit: int = 200, *, typed: bool = False) -> str:
    """An exception's first line, without terminal colour codes, or its type when it has no text;
    ``typed``: with the type in front ("ProxyError: 404 Not Found" says more than "404 Not Found")."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    line = lines[0][:limit] if lines else type(exc).__name__
    return f"{type(exc).__name__}: {line}" if typed and type(exc).__name__ not in line else line


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextlib.contextmanager
def quiet_hub():
    """huggingface_hub's retry warnings ("Retrying in 8s [Retry 4/5]") off for the call: the outcome is
    one line of ours, and its progress bars ("Fetching 2 files"). A filter of its own per call on each
    of its loggers (a filter applies to the logger it is on, not to its children; a changed level would
    not be restored right when threads overlap)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars  # creates its loggers

    only_errors, bars_were_off = _BelowError(), are_progress_bars_disabled()
    bars_were_off = bars_were_off or os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") is not None  # the user's: left alone
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict) if name.split(".")[0] == "huggingface_hub"]
    for logger in loggers:
        logger.addFilter(only_errors)
    if not bars_were_off:
        disable_progress_bars()  # "Fetching 2 files: 100%" on stderr at each check for updates
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(only_errors)
        if not bars_were_off:
            enable_progress_bars()
