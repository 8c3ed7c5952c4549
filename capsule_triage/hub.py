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

import os
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
    HF_HUB_OFFLINE is set, or, as huggingface_hub does, when the Hub cannot be reached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        return Path(snapshot_download(repo, revision=revision, allow_patterns=FILES, local_files_only=offline,
                                      etag_timeout=ETAG_TIMEOUT_SECONDS))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        if offline:
            raise WeightsError(text, "not in the local Hugging Face cache and HF_HUB_OFFLINE is set") from None
        raise WeightsError(text, f"cannot fetch the repository and it is not in the local cache ({str(exc).splitlines()[0][:160]})") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise WeightsError(text, f"cannot fetch the repository ({str(exc).splitlines()[0][:200]})") from None
