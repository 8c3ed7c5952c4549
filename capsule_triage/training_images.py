"""The images a model learned from, by content: ``training_images.parquet`` in its weights folder.

Training writes one row per training and validation image: the SHA-256 of the file's bytes and its
split, nothing else (no names or labels: a weights folder may be shared, and file names of clinical
data can carry patient details; a digest cannot be turned back into the image). Evaluation then recognises frames byte-identical to those wherever they are
now (a copy on another disk, another manifest, renamed files: a check by path sees none of these;
QA 12 and 14), and training names images it was given twice (the same bytes under two labels, or on
both sides of the train/val split), and refuses to resume on images changed in place.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from .datasets import Sample
from .digests import file_sha256
from .frame_folder import listed, plural
from .model_config import WEIGHTS_NAME
from .outputs import written_whole

if TYPE_CHECKING:
    from .model_config import ModelConfig

TRAINING_IMAGES = "training_images.parquet"


def image_digests(samples: list[Sample]) -> list[str]:
    """SHA-256 of each sample's file."""
    return [file_sha256(s.path) for s in samples]


def images_sha256(samples: list[Sample], digests: list[str]) -> str:
    """One digest of the images' contents with their labels and splits (order-free): what a resumed run
    must see again (two same-size images swapped between class folders change it too)."""
    return hashlib.sha256("".join(sorted(f"{d}\t{s.label}\t{s.split}\n" for s, d in zip(samples, digests))).encode()).hexdigest()


INHERITED = "init"  # the split of the frames the --init weights were trained or validated on (QA 89 #2)


def inherited_images(init: str, record: dict | None) -> list[str]:
    """The SHA-256 of every frame an ``--init`` weights folder lists as trained or validated on (its inherited ones too),
    so that evaluating a fine-tune on its base model's training frames still says so; none for other ``--init``, nor
    when the folder no longer holds the tensors ``record`` (provenance ``init_weights``) names: replaced since a stopped
    run began (rev86 #6; its config.json may change: rev88 #3)."""
    tensors = Path(init) / WEIGHTS_NAME
    if not record or not tensors.is_file() or file_sha256(tensors) != record.get("tensors_sha256"):
        return []
    known = read_training_images(init)
    return sorted(known) if known else []


def write_training_images(folder: Path, samples: list[Sample], digests: list[str], inherited: list[str] = ()) -> None:
    """Write :data:`TRAINING_IMAGES` into the weights ``folder``, whole or not at all (helper-127: a full disk ended
    ``triage train`` in a traceback and left the partial file); ``inherited``: :func:`inherited_images`."""
    table = pa.table({"sha256": [*digests, *inherited], "split": [s.split for s in samples] + [INHERITED] * len(inherited)})
    with written_whole(folder / TRAINING_IMAGES) as partial:
        pq.write_table(table, partial)


def read_training_images(folder: str | Path) -> dict[str, str] | None:
    """{sha256: split} of a weights folder's training and validation images; None when it has no
    readable list (weights trained before it existed, a single weights file, a damaged file)."""
    try:
        table = pq.read_table(Path(folder) / TRAINING_IMAGES, columns=["sha256", "split"]).to_pydict()
    except (OSError, pa.ArrowException, KeyError):
        return None
    known: dict[str, str] = {}
    first = {"train": 0, "val": 1}  # bytes both trained on and validated on: training; this model's before its base's
    for digest, split in zip(table["sha256"], table["split"]):
        known[digest] = min(split, known.get(digest, split), key=lambda side: first.get(side, 2))
    return known


def copies_note(samples: list[Sample], digests: list[str], *, scored: str | None = None) -> str | None:
    """One warning for images held twice by their bytes, or None: under two labels (one of them is wrong, or the image
    says nothing of either class); for ``triage train`` and ``triage split`` (``scored`` None), in two splits (a frame
    validated or tested on is one the model trains or is tuned on: optimistic figures); for ``triage eval`` (``scored``,
    the split's name), scored more than once, each copy counted in the metrics (QA 108 #2: split and eval said nothing)."""
    by_digest: dict[str, list[Sample]] = defaultdict(list)
    for sample, digest in zip(samples, digests):
        by_digest[digest].append(sample)
    copies = [group for group in by_digest.values() if len(group) > 1]

    def pairs(groups: list[list[Sample]], key, tag) -> str:  # rev101 #2: the first copy and one that differs in ``key``
        def shown(pair: tuple[Sample, Sample]) -> str:  # rev100 #10: by name, or by path where the names are alike
            alike = pair[0].path.name == pair[1].path.name
            root = Path(os.path.commonpath([str(s.path) for s in pair])) if alike else None
            return " = ".join((str(s.path.relative_to(root)) if root else s.path.name) + tag(s) for s in pair)
        return listed([shown((g[0], next(s for s in g[1:] if key(s) != key(g[0])))) for g in groups])

    said = []
    if labels := [g for g in copies if len({s.label for s in g}) > 1]:
        said.append(f"{plural(len(labels), 'image')} under two labels ({pairs(labels, lambda s: s.label, lambda s: f' ({s.label})')}): "
                    "correct the wrong label, or delete the copy")
    if scored is None and (sides := [g for g in copies if len({s.split for s in g}) > 1]):
        said.append(f"{plural(len(sides), 'image')} in two splits ({pairs(sides, lambda s: s.split, lambda s: f' ({s.split})')}): "
                    "the model is measured on frames it trained or was tuned on, so its figures are optimistic; delete the copy, "
                    "or give both one group (a group column)")
    elif scored is not None and (twice := [[s for s in g if s.label == label] for g in copies for label in sorted({s.label for s in g})
                                           if sum(s.label == label for s in g) > 1]):  # within a label, mixed groups too
        said.append(f"{plural(len(twice), 'image')} scored more than once under other names ({pairs(twice, lambda s: s.path, lambda s: '')}): "
                    "each copy counts in the metrics; delete the copy")
    return f"images held twice, by their bytes{f', among the {scored!r} frames' if scored else ''}: {'; '.join(said)}" if said else None


def inherited_digests(folder: str | Path) -> set[str]:
    """The frames a weights folder's ``--init`` weights were trained or validated on (split "init"), whatever this
    model's own split of them (rev88 #1: a fine-tune's validation frames its base trained on read as validation only)."""
    try:
        table = pq.read_table(Path(folder) / TRAINING_IMAGES, columns=["sha256", "split"]).to_pydict()
    except (OSError, pa.ArrowException, KeyError):
        return set()
    return {digest for digest, split in zip(table["sha256"], table["split"]) if split == INHERITED}


def overlap_warning(known: dict[str, str], scored: list[Sample], split: str, digests: list[str],
                    inherited: set[str] = frozenset()) -> str | None:
    """A warning when frames being scored have the bytes of frames the model was trained on (for
    ``split`` "val": of its training frames only, its validation frames being what is asked for), or its ``--init``
    weights were (``inherited``: :func:`inherited_digests`). ``digests``: the scored files' SHA-256
    (``LabelledImages.sha256``, taken as they were decoded)."""
    counted = ("train", INHERITED) if split == "val" else ("train", "val", INHERITED)
    sides = [known.get(d) if known.get(d) in counted or d not in inherited else INHERITED for d in digests]
    hits = [(sample, side) for sample, side in zip(scored, sides) if side in counted]
    if not hits:
        return None
    words = {"train": "training", "val": "validation", INHERITED: "--init weights' training or validation"}
    sides = " and ".join(f"{n} {words[side]}" for side in counted if (n := sum(1 for _, s in hits if s == side)))
    return (f"{len(hits)} of the {len(scored)} frames scored ({split}) have the bytes of this model's training data "
            f"({sides} frames; e.g. {hits[0][0].path}); these metrics are optimistic")


THRESHOLD_IMAGES = "threshold_images.parquet"  # the frames `triage eval --target-sensitivity` chose the threshold on


def write_threshold_images(folder: Path, digests: list[str], threshold: float) -> None:
    """Write :data:`THRESHOLD_IMAGES` (the SHA-256 of each frame the operating ``threshold`` was chosen on) into the
    weights ``folder`` atomically, so that a later evaluation of those frames says its figures there are optimistic."""
    table = pa.table({"sha256": sorted(set(digests))}).replace_schema_metadata({"threshold": repr(float(threshold))})
    with written_whole(folder / THRESHOLD_IMAGES) as partial:
        pq.write_table(table, partial)


def read_threshold_images(folder: str | Path, threshold: float) -> set[str]:
    """The frames a weights folder's operating ``threshold`` was chosen on (empty: none recorded, or recorded for another
    threshold, e.g. one set by hand since)."""
    try:
        table = pq.read_table(Path(folder) / THRESHOLD_IMAGES, columns=["sha256"])
    except (OSError, pa.ArrowException, KeyError):
        return set()
    if (table.schema.metadata or {}).get(b"threshold") != repr(float(threshold)).encode():
        return set()
    return set(table.column("sha256").to_pylist())


def threshold_chosen_on(folder: str | Path, config: ModelConfig, known: dict[str, str] | None) -> set[str]:
    """The frames a weights folder's operating threshold was chosen on: :data:`THRESHOLD_IMAGES`, else, for weights from
    before it was written (the shipped model's), the model's own validation frames (``known``: its training record) when
    its config says the threshold was chosen on the validation split of its training data (QA 83 #2: `triage eval --split
    val` of the shipped model gave the very figures its threshold was chosen to reach, without a word)."""
    recorded = read_threshold_images(folder, config.threshold)
    chosen = config.provenance.get("operating_threshold") if isinstance(config.provenance, dict) else None
    training = (config.provenance.get("training") or {}).get("recipe") or {} if isinstance(config.provenance, dict) else {}
    if recorded or not known or not isinstance(chosen, dict) or chosen.get("threshold") != config.threshold:
        return recorded
    if str(chosen.get("method", "")).endswith("on the validation split") and _same_path(chosen.get("data"), training.get("data")):
        return {digest for digest, side in known.items() if side == "val"}
    return recorded


def _same_path(a, b) -> bool:
    """Whether two paths as typed name one file: the same text, or the same file seen from here (rev80 #5: one typed
    relative, the other absolute)."""
    if not isinstance(a, str) or not isinstance(b, str) or not a or not b:
        return False
    try:
        return a == b or os.path.samefile(a, b)
    except (OSError, ValueError):
        return False
