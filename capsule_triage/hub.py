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
FILES = [CONFIG_NAME, WEIGHTS_NAME, "MODEL_CARD.md", "README.md", "training_images.parquet"]  # the last: eval's overlap check
ETAG_TIMEOUT_SECONDS = 10


def local_weights(weights: str | Path) -> str | Path:
    """``weights`` as a local location: an ``hf-hub:`` repository as its cached folder, the
    ``model.safetensors`` of a weights folder as that folder (its config.json describes it, not a
    preset's [model]); others unchanged.

    Raises:
        WeightsError: a timm ``hub:`` tag; an ``hf-hub:`` repository that is not in the cache when
            offline, cannot be fetched, or holds no weights folder.
    """
    text = str(weights)
    if text.startswith("hub:"):
        raise WeightsError(text, "a timm hub tag holds ImageNet weights without a head for this model's classes: start "
                                 f"training from it (`triage train --init {text}`), or score with trained weights "
                                 f"(a folder, a file, or {PREFIX}OWNER/REPO)")
    if not text.startswith(PREFIX):
        path = Path(text)
        if path.name == WEIGHTS_NAME and (path.parent / CONFIG_NAME).is_file():
            return path.parent
        return weights
    repo, at, revision = text[len(PREFIX):].partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")) or any(c.isspace() for c in repo) or (at and not revision):
        raise WeightsError(text, f"expected {PREFIX}OWNER/REPO or {PREFIX}OWNER/REPO@REVISION")
    folder = _snapshot(text, repo, revision or None)
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise WeightsError(text, f"the repository holds no weights folder ({CONFIG_NAME} + {WEIGHTS_NAME})")
    return folder


def _snapshot(text: str, repo: str, revision: str | None) -> Path:
    """The repository's files: fetched (or checked for updates) online; from the cache alone when
    HF_HUB_OFFLINE is set, for a commit already cached (a commit never changes), or, as
    huggingface_hub does, when the Hub cannot be reached (no connection, a proxy that refuses it)."""
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    fetch = dict(revision=revision, allow_patterns=FILES, etag_timeout=ETAG_TIMEOUT_SECONDS)
    with quiet_hub():
        if offline or (revision is not None and COMMIT.fullmatch(revision)):
            try:
                return Path(snapshot_download(repo, local_files_only=True, **fetch))
            except Exception:  # not cached: offline that is the end; a commit is fetched below
                if offline:
                    raise WeightsError(text, "not in the local Hugging Face cache and HF_HUB_OFFLINE is set") from None
        try:
            return Path(snapshot_download(repo, **fetch))
        except Exception as exc:  # the HTTP client's own errors (proxy, TLS, DNS) as well as the Hub's
            network = exc
        try:  # huggingface_hub falls back to the cache for some network errors, not for all
            return Path(snapshot_download(repo, local_files_only=True, **fetch))
        except Exception:
            raise WeightsError(text, f"cannot fetch the repository and it is not in the local cache ({first_line(network, typed=True)})") from None


COMMIT = re.compile(r"[0-9a-f]{40}")


def first_line(exc: BaseException, limit: int = 200, *, typed: bool = False) -> str:
    """An exception's first line, without terminal colour codes, or its type when it has no text;
    ``typed``: with the type in front ("ProxyError: 404 Not Found" says more than "404 Not Found")."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    line = lines[0][:limit] if lines else type(exc).__name__
    return f"{type(exc).__name__}: {line}" if typed and type(exc).__name__ not in line else line


@contextlib.contextmanager
def quiet_hub():
    """huggingface_hub's retry warnings ("Retrying in 8s [Retry 4/5]") off for the call: the outcome is
    one line of ours."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
