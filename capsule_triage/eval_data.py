"""Which frames an evaluation scores, and how they relate to what the model was trained on.

``triage eval DATA --split S`` scores DATA's split S as training split it (the validation share redrawn
from the recorded seed); data without any split is held-out data, scored whole, unless it is the model's
own training data (by path or by the digest training recorded), which is refused. Frames that were
training frames of the model are named, since metrics on them are optimistic.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .datasets import MANIFEST_NAME, Sample, read_samples, samples_digest
from .errors import InputError, TriageError
from .frame_folder import natural_key
from .model_config import ModelConfig
from .splits import assign_validation, split_leak
from .training_images import INHERITED, image_digests, read_training_images

ADDED = "added"  # the split of training-pool images a weights folder's record does not hold (added or changed since training)


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


def _trained_on(data: str | Path, samples: list[Sample], config: ModelConfig) -> bool:
    """Whether ``data`` is the model's training data: by the path or the data digest training recorded."""
    trained_on, digest = training_data(config), config.provenance.get("training", {}).get("data_sha256")
    return bool((trained_on and same_data(trained_on, data)) or (digest and digest == samples_digest(training_validation(samples, config))))


def _all_trained_on(samples: list[Sample], weights: str | Path, digests: dict | None) -> set[str]:
    """The recorded splits of ``samples`` when every one has the bytes of a frame the weights (or their ``--init``
    weights: "init") were trained or validated on, else none (QA 89 #3: a copy of the training folder elsewhere was scored
    as held-out data, with a warning). ``digests``: as :func:`as_trained`'s."""
    known = read_training_images(weights)
    if not known or not samples:
        return set()
    hashed, sides = ({} if digests is None else digests), set()
    for sample in samples:  # held-out data: stops at its first frame (rev86 #2: every image was read twice)
        try:
            if sample.path not in hashed:
                hashed[sample.path] = image_digests([sample])[0]
        except OSError:  # an unreadable image: loading the frames names it
            return set()
        if (side := known.get(hashed[sample.path])) not in ("train", "val", INHERITED):  # --init weights' too (rev86 #5)
            return set()
        sides.add(side)
    return sides


def as_trained(data: str | Path, samples: list[Sample], config: ModelConfig, weights: str | Path, *,
               instead: str = "score its frames with --split test", digests: dict | None = None,
               trained_frames_suffice: bool = False) -> tuple[list[Sample], list[str]]:
    """``samples`` split as training split them, and a note when that is not the split redrawn from them now.

    Rows of their own 'val' split keep it (training validated on them). Otherwise the validation share is redrawn
    (:func:`training_validation`), which only makes sense on the model's own training data; and when the weights folder
    records its images by content (training_images.parquet), each training-pool image takes the split recorded for its
    bytes, so that images added, removed or changed since training never move training frames into 'val' (QA 69 #3);
    pool images the record does not hold get the split :data:`ADDED` (in neither share). ``instead``: what to do when
    the data is not the model's (the refusal's advice). ``digests``: {path: SHA-256} of files hashed already, filled in
    (one evaluation asks twice: for ``--split val`` and for ``--target-sensitivity``). ``trained_frames_suffice``: most of
    the data's frames having the bytes of frames training saw makes it the model's (``--split train``: QA 115 #2, its
    training frames alone were called held out; never for a validation share: rev104 #1).

    Raises:
        InputError: no 'val' rows, and neither the path nor the data digest are the model's training data's, nor does it
            hold the bytes of at least half of the frames training validated on (nor, ``trained_frames_suffice``, are most
            of its frames training's).
    """
    redrawn = training_validation(samples, config)
    if any(s.split == "val" for s in samples):
        return redrawn, []
    trained_on, digest = training_data(config), config.provenance.get("training", {}).get("data_sha256")
    if digest and digest == samples_digest(redrawn):  # the data as training read it: no file read twice to hash it
        return redrawn, []
    known = read_training_images(weights) or {}
    pool = [i for i, s in enumerate(samples) if s.split in ("", "train")]
    hashed = {} if digests is None else digests
    unhashed = [samples[i] for i in pool if samples[i].path not in hashed] if known else []
    hashed.update(zip((s.path for s in unhashed), image_digests(unhashed)))
    digests = {i: hashed[samples[i].path] for i in pool} if known else {}
    recorded = {i: known[d] for i, d in digests.items() if known.get(d) in ("train", "val")}  # not its --init weights' (rev86 #5)
    n_recorded = sum(side == "val" for side in known.values())
    # by bytes: at least half of the frames training validated on (review rev65: one shared image made other data the model's)
    by_bytes = n_recorded > 0 and 2 * sum(side == "val" for side in recorded.values()) >= n_recorded
    by_bytes = by_bytes or bool(trained_frames_suffice and pool and 2 * len(recorded) >= len(pool))
    if not ((trained_on and same_data(trained_on, data)) or by_bytes):  # QA 56 #7, rev52: a share redrawn from data the model never saw
        raise InputError(data, "the data has no 'val' rows and is not recognised as this model's training data (by the path, "
                               "the digest or the images' bytes training recorded), so there is no validation share of it "
                               f"to redraw; {instead}")
    if not known:
        return redrawn, []
    as_recorded = [replace(s, split=recorded.get(i, ADDED)) if i in digests else s for i, s in enumerate(redrawn)]
    if all(a.split == b.split for a, b in zip(as_recorded, redrawn)):
        return redrawn, []
    n_val = sum(s.split == "val" for s in as_recorded)
    added = sum(s.split == ADDED for s in as_recorded)
    return as_recorded, ["not the data the model was trained on as it was then, so no validation share is redrawn from it: "
                         f"the validation frames are the {n_val} (of training's {n_recorded}) whose bytes training recorded as "
                         f"validation frames" + (f"; {added} image(s) it did not record (added or changed since) are in neither "
                                                 f"share (split {ADDED!r})" if added else "")]


def split_to_score(data: str | Path, config: ModelConfig, split: str, weights: str | Path,
                   digests: dict | None = None) -> tuple[list, str, list[str]]:
    """The samples and the split to score, and the data's warnings (what is not read, how it was read): data without any
    split information is held-out data, scored whole for ``test`` (unless the model was trained on it). ``digests``: as
    :func:`as_trained`'s."""
    source = read_samples(data)
    samples, unread = source.samples, source.messages()
    if split == "test" and not any(s.split for s in samples):
        trained = _trained_on(data, samples, config)
        sides = set() if trained else _all_trained_on(samples, weights, digests)
        if sides == {INHERITED}:
            raise InputError(data, "its --init weights were trained on this data (every frame's bytes) and it has no 'test' split: "
                                   "evaluate held-out frames, or --split all to score it anyway (its metrics optimistic)")  # rev88 #5
        validated = config.provenance.get("training", {}).get("val_from") != "none" if trained else "val" in sides
        if trained or sides:  # QA 115 #2, rev104 #4: --split val only where the data holds frames training validated on
            raise InputError(data, "the model was trained on this data (by its path, digest or every frame's bytes) and it has "
                                   "no 'test' split; evaluate held-out frames, " + ("--split val for the frames training held "
                                   "out for validation, " if validated else "") + "or --split all to score it anyway (its metrics "
                                   "optimistic)" + ("" if validated else "; none of its frames is one training validated on"))
        return samples, "all", unread
    if split in ("val", "train"):  # review rev65: --split train scored frames training validated on, as 'train'
        samples, notes = as_trained(data, samples, config, weights, digests=digests, instead="score its frames with --split test"
                                    if split == "val" else "most of its rows are not frames this model was trained on: score them "
                                    "with --split all", trained_frames_suffice=split == "train")
    else:
        samples, notes = training_validation(samples, config), []
    if split != "all" and not any(s.split == split for s in samples):
        raise InputError(data, f"no {split!r} split in the data (splits: {sorted({s.split for s in samples})})")
    # review rev65: a patient's frames added since training are in no split, not in another one; QA 83 #7: for the test
    # split, the data's own splits (a 'val' redrawn from its train rows was named, a split the data does not have)
    checked = source.samples if split == "test" else [s for s in samples if s.split != ADDED]
    leak = split_leak(checked, source.group_column, scored=split) if split != "all" else None
    return samples, split, unread + notes + ([leak] if leak else [])


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


def real_groups(samples: list[Sample]) -> set[str]:
    """The groups (patients, subjects) of ``samples`` that a group column names (without one each image is its own)."""
    return {s.group for s in samples if s.group != str(s.path)}


def shared_groups_note(scored: list[Sample], chosen: set[str], split: str, val_data: str | Path) -> str | None:
    """A warning when group names (patients, subjects) of the frames scored also name frames in ``--val-data``, on which
    the threshold was chosen (QA 83 #1: alternate frames of 6 patients in each, sensitivity and specificity 1.0 at that
    threshold, without a word: frames were compared by content only). Names alone: two sources that number their
    patients 1, 2, ... share names, not patients (rev80 #2), so it says what holds if they are the same."""
    groups = real_groups(scored)
    shared = sorted(groups & chosen, key=natural_key)
    if not shared:
        return None
    named = ", ".join(map(repr, shared[:3])) + (", ..." if len(shared) > 3 else "")
    return (f"{len(shared)} of the {len(groups)} group names (patients) of the frames scored ({split}) also name frames in "
            f"{val_data}, on which the threshold was chosen ({named}): if they are the same patients, the figures at that "
            "threshold are optimistic (choose it on other patients)")
