"""Which frames an evaluation scores, and how they relate to what the model was trained on.

``triage eval DATA --split S`` scores DATA's split S as training split it (the validation share redrawn
from the recorded seed); data without any split is held-out data, scored whole, unless it is the model's
own training data (by path or by the digest training recorded), which is refused. Frames that were
training frames of the model are named, since metrics on them are optimistic.
"""

from __future__ import annotations

from pathlib import Path

from .datasets import MANIFEST_NAME, read_samples, samples_digest
from .errors import InputError, TriageError
from .model_config import ModelConfig
from .splits import assign_validation, split_leak


def training_validation(samples: list, config: ModelConfig) -> list:
    """``samples`` split as training split them (assign_validation: unassigned rows join the training
    pool, a validation fraction is remade from the recorded seed): the same list training hashed."""
    split = config.provenance.get("training", {}).get("split") or {}
    return assign_validation(samples, val_fraction=split.get("val_fraction") or 0.0, seed=split.get("seed", 0))


def training_data(config: ModelConfig) -> str | None:
    """Where training read its data: the absolute path it recorded, else the command's (relative to the
    folder the command ran in, which is all older weights recorded)."""
    training = config.provenance.get("training", {})
    return training.get("data_path") or training.get("recipe", {}).get("data")


def split_to_score(data: str | Path, config: ModelConfig, split: str) -> tuple[list, str, list[str]]:
    """The samples and the split to score, and the data's warnings (what is not read, how it was read): data without any
    split information is held-out data, scored whole for ``test`` (unless the model was trained on it)."""
    source = read_samples(data)
    samples, unread = source.samples, source.messages()
    unsplit = not any(s.split for s in samples)
    drawn = split == "val" and not any(s.split == "val" for s in samples)  # a validation share redrawn as training drew it
    if (split == "test" and unsplit) or drawn:
        trained_on, digest = training_data(config), config.provenance.get("training", {}).get("data_sha256")
        trained = (trained_on and same_data(trained_on, data)) or (digest and digest == samples_digest(training_validation(samples, config)))
        if split == "test" and trained:
            raise InputError(data, "the model was trained on this data and it has no 'test' split; evaluate held-out "
                                   "frames, or --split val for the frames training held out for validation")
        if drawn and not trained:  # QA 56 #7, rev52: a validation share redrawn from data the model never saw, silently
            raise InputError(data, "the data has no 'val' rows and is not recognised as this model's training data (by the path "
                                   "or the digest training recorded), so there is no validation share of it to redraw; score "
                                   "its frames with --split test")
        if split == "test":
            return samples, "all", unread
    samples = training_validation(samples, config)
    if split != "all" and not any(s.split == split for s in samples):
        raise InputError(data, f"no {split!r} split in the data (splits: {sorted({s.split for s in samples})})")
    leak = split_leak(samples, source.group_column, scored=split) if split != "all" else None
    return samples, split, unread + ([leak] if leak else [])


def training_overlap(scored: list, config: ModelConfig, split: str) -> str | None:
    """A warning when frames being scored were training frames of this model (the same images listed in
    another manifest or folder tree: metrics on them are optimistic); None when none were, or when the
    training data is no longer where training read it."""
    trained_on = training_data(config)
    if not trained_on or not Path(trained_on).exists():
        return None
    try:
        train = training_validation(read_samples(trained_on)[0], config)
    except (TriageError, ValueError):
        return None
    seen = {s.path for s in train if s.split == "train"}
    overlap = sum(s.path in seen for s in scored)
    if not overlap:
        return None
    return (f"{overlap} of the {len(scored)} frames scored ({split}) were training frames of this model ({trained_on}); "
            "these metrics are optimistic")


def same_data(a: str | Path, b: str | Path) -> bool:
    def manifest(p: Path) -> Path:
        return p / MANIFEST_NAME if p.is_dir() and (p / MANIFEST_NAME).is_file() else p
    return manifest(Path(a).resolve()) == manifest(Path(b).resolve())
