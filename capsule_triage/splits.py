"""``triage split``: a manifest CSV with train / val / test splits drawn from labelled images, whole
groups (patients, subjects, near-duplicate runs) at a time and stratified by label, as the seeds split
their data (seed B: 70/15/15 stratified; seed C: by subject). ``triage train`` and ``triage eval`` then
read the splits from it.

Rows that already have a split keep it, and the unassigned rows of a group that has one join it (a
group on one side); the other unassigned rows are drawn with :func:`draw_groups`: test first, then
validation, the rest is training. ``triage train`` draws its validation frames the same way when the data
has none (:func:`assign_validation`) and refuses splits it could not train on (:func:`check_training_splits`).
"""

from __future__ import annotations

import csv
import difflib
import re
import shlex
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .datasets import MANIFEST_NAME, Sample, check_label_twins, named_as_we_read, read_samples
from .digests import file_sha256
from .errors import InputError, OutputError
from .frame_folder import natural_key, plural
from .outputs import written_whole
from .training_images import copies_note

NO_GROUPS = ("no group column (group, patient, subject or near_dup_group, any case, with or without an id suffix): every image is "
             "its own group")

SPLITS = ("train", "val", "test")


@dataclass
class SplitResult:
    """What :func:`split_dataset` wrote.

    Attributes:
        manifest: the CSV written.
        frames: split -> label -> frames.
        groups: split -> number of groups.
        group_column: the manifest's group column, or None (every image its own group).
        warnings: one line each (no groups; a group already in two splits; what a folder tree left unread).
    """

    manifest: Path
    frames: dict[str, Counter]
    groups: dict[str, int]
    group_column: str | None
    warnings: list[str] = field(default_factory=list)


DEFAULT_FRACTION = 0.15  # of the unassigned frames, for test and for validation: seed B's 70/15/15


def split_dataset(data: str | Path, out: str | Path, *, test_fraction: float | None = None, val_fraction: float | None = None,
                  seed: int = 0, force: bool = False) -> SplitResult:
    """Write ``out``: the manifest of ``data`` (a manifest CSV, its other columns kept, or an image-folder
    tree) with a ``split`` column, paths relative to ``out``'s folder.

    A fraction not given is :data:`DEFAULT_FRACTION`, or 0 when rows already hold that split (a dataset's
    own test set is not enlarged from its training frames unasked; review rev28).

    Raises:
        ValueError: fractions outside [0, 1) or summing to 1 or more.
        OutputError: ``out`` exists (without ``force``) or cannot be written.
        InputError: what :func:`~capsule_triage.datasets.read_samples` refuses.
    """
    out = Path(out)
    if out.is_dir():
        raise OutputError(out, "is a folder: give the manifest CSV to write, e.g. " + str(out / MANIFEST_NAME))
    if out.exists() and not force:
        raise OutputError(out, "exists; --force replaces it")
    source = read_samples(data)
    check_label_twins(data, source.samples)
    kept = sum(bool(s.split) for s in source.samples)
    held = Counter(s.split for s in source.samples if s.split)
    given = {"test": test_fraction is not None, "val": val_fraction is not None}
    not_drawn = [f"{held[split]:,} frames are already in {split}: none drawn for it (--{split}-fraction draws more)"
                 for split, f in (("test", test_fraction), ("val", val_fraction)) if f is None and held[split]]
    test_fraction = (0.0 if held["test"] else DEFAULT_FRACTION) if test_fraction is None else test_fraction
    val_fraction = (0.0 if held["val"] else DEFAULT_FRACTION) if val_fraction is None else val_fraction
    if not (0 <= test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):  # with the defaults (review rev29)
        raise ValueError(f"test and val fractions must be in [0, 1) and leave frames for training, got {test_fraction} and {val_fraction}")
    samples = _join_assigned_groups(source.samples)
    rng = np.random.default_rng(seed)
    undrawn = []
    for split, fraction in (("test", test_fraction), ("val", val_fraction / (1 - test_fraction))):
        pool = sum(not s.split for s in samples)
        samples = draw_groups(samples, into=split, fraction=fraction, rng=rng, pool=("",))
        if fraction > 0 and pool == sum(not s.split for s in samples) and (pool or given[split] or kept < len(samples)):
            # helper-127 #3: drew nothing, unsaid (a default with every row already split: "nothing was drawn" says it)
            undrawn.append(_undrawn(split, test_fraction if split == "test" else val_fraction, pool, samples, given=given[split]))
    samples = [replace(s, split=s.split or "train") for s in samples]
    copies = copies_note(samples, _contents(samples))  # QA 108 #2: a copy in train and test went unsaid
    rows, columns = _rows(data, samples, out.parent)
    _write_csv(out, rows, columns)
    frames = {split: Counter(s.label for s in samples if s.split == split) for split in SPLITS}
    groups = {split: len({s.group for s in samples if s.split == split}) for split in SPLITS}
    warnings = list(source.messages())
    if kept:
        warnings.append(f"{kept:,} of {len(samples):,} frames already had a split and keep it" + (": nothing was drawn" if kept == len(samples) else ""))
        warnings += not_drawn if kept < len(samples) else []
    warnings += undrawn
    if source.group_column is None:
        warnings.append(f"{NO_GROUPS}, so frames of one patient can fall on both sides of a split (the seeds split by patient and by subject)")
    leak = split_leak(samples, source.group_column)
    warnings += [note for note in (leak, copies) if note]
    if one := one_class_note({s.label for s in samples if s.split in ("train", "val")}, "the train and val frames have"):
        warnings.append(one)  # QA 65 #12, helper-127 #4: written without a word; `triage train` refused it later
    return SplitResult(out, frames, groups, source.group_column, warnings)


def _contents(samples: list[Sample]) -> list[str]:
    """What :func:`copies_note` compares: an image's SHA-256 where another file has its size (rev100 #5: only those can be
    copies, so a dataset without any is not read), else its path; a file that cannot be read stands for itself alone."""
    def size(path: Path) -> int | None:
        try:
            return path.stat().st_size
        except OSError:
            return None

    sizes = [size(s.path) for s in samples]
    shared = {n for n, count in Counter(sizes).items() if count > 1 and n is not None}
    digests = []
    for sample, n in zip(samples, sizes):
        try:
            digests.append(file_sha256(sample.path) if n in shared else f"alone {sample.path}")
        except OSError:
            digests.append(f"unread {sample.path}")
    return digests


def one_class_note(labels: set[str], holding: str = "the data has") -> str | None:
    """The phrase for data of fewer than two classes (what `triage train` refuses, `triage split` warns of), or None."""
    if len(labels) >= 2:
        return None
    return f"{holding} one class ({', '.join(sorted(labels)) or 'none'}); a classifier needs frames of at least 2 classes"


def _undrawn(split: str, fraction: float, pool: int, samples: list[Sample], *, given: bool) -> str:
    """Why a fraction drew no frames (QA 65 #8: an explicit --val-fraction with every row already split drew nothing,
    unsaid; helper-127 #3: nor with unassigned rows that joined their groups, or too few groups to draw from)."""
    why = ("no frame is left without a split (a frame of a group already in a split joins it)" if not pool else
           f"it draws whole groups, keeping at least one of each label for training, and the {pool:,} frames without a split "
           "have too few groups for that")
    hint = ("; `triage train --val-fraction` draws validation from the train split"  # rev63 #3: not from too few groups
            if split == "val" and not pool and not any(s.split == "val" for s in samples) else "")
    return f"--{split}-fraction {fraction:g}{'' if given else ' (the default)'} drew no frames: {why}{hint}"


def _join_assigned_groups(samples: list[Sample]) -> list[Sample]:
    """Unassigned rows of a group whose other rows are in one split join that split."""
    assigned: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        if s.split:
            assigned[s.group].add(s.split)
    return [replace(s, split=next(iter(assigned[s.group]))) if not s.split and len(assigned[s.group]) == 1 else s for s in samples]


def _rows(data: str | Path, samples: list[Sample], folder: Path) -> tuple[list[dict], list[str]]:
    """The manifest's own rows (one per sample, in order) with their split, or path,label,split rows for a tree."""
    data = Path(data)
    manifest = data / MANIFEST_NAME if data.is_dir() and (data / MANIFEST_NAME).is_file() else data
    def where(sample: Sample) -> str:  # relative below the manifest's folder, else absolute
        path = sample.path.absolute()
        return (path.relative_to(folder.absolute()) if path.is_relative_to(folder.absolute()) else path).as_posix()

    if not manifest.is_file():
        return [{"path": where(s), "label": s.label, "split": s.split} for s in samples], ["path", "label", "split"]
    with open(manifest, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        rows, columns = list(reader), list(reader.fieldnames or [])
    same_folder = manifest.parent.absolute() == folder.absolute()
    named = named_as_we_read(columns)  # QA 69 #4, #5: 'Path' and 'Split' as read ('path' added beside 'Path' failed the
    own = {key: columns[named.index(key)] if key in named else key for key in ("path", "split")}  # writer; a 2nd split column)
    for row, sample in zip(rows, samples, strict=True):
        row[own["split"]] = sample.split
        if not same_folder:
            row[own["path"]] = where(sample)
    return rows, columns + ([] if own["split"] in columns else ["split"])


def _write_csv(out: Path, rows: list[dict], columns: list[str]) -> None:
    """Whole or not at all (review rev28: a failure left a .partial file)."""
    with written_whole(out, " the manifest") as partial, open(partial, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")  # QA 56 #14: not CRLF on every system
        writer.writeheader()
        writer.writerows(rows)


def describe(result: SplitResult) -> list[str]:
    """The lines ``triage split`` prints: frames, groups and labels per split."""
    total = sum(sum(c.values()) for c in result.frames.values())
    lines = []
    for split in SPLITS:
        count = sum(result.frames[split].values())
        labels = ", ".join(f"{label} {n:,}" for label, n in sorted(result.frames[split].items()))
        share = f" ({100 * count / total:.0f}%)" if total else ""
        groups = result.groups[split]
        lines.append(f"{split:<5} {count:,} frames{share}, {groups:,} group{'s' if groups != 1 else ''}" + (f": {labels}" if labels else ""))
    return lines


def assign_validation(samples: list[Sample], *, val_fraction: float, seed: int) -> list[Sample]:
    """Move whole groups of the training pool to "val", stratified by each group's majority label.

    Keeps an existing "val" split as it is. Pool = samples with split "train" or "". Each label stratum
    gets about ``val_fraction`` of its pool frames (whole groups, drawn in a seeded random order).
    """
    if any(s.split == "val" for s in samples) or val_fraction <= 0:
        return [replace(s, split=s.split or "train") for s in samples]
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    drawn = draw_groups(samples, into="val", fraction=val_fraction, rng=np.random.default_rng(seed), pool=("train", ""))
    return [replace(s, split=s.split or "train") for s in drawn]


def draw_groups(samples: list[Sample], *, into: str, fraction: float, rng: np.random.Generator,
                pool: tuple[str, ...]) -> list[Sample]:
    """Move whole groups of the pool (samples whose split is in ``pool``) to the split ``into``: about
    ``fraction`` of each label stratum's pool frames, a stratum being the groups whose majority label it
    is, groups drawn in ``rng``'s order; every stratum keeps at least one group in the pool."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        if s.split in pool:
            members[s.group].append(i)
    strata: dict[str, list[str]] = defaultdict(list)
    for group in sorted(members, key=natural_key):
        labels = Counter(samples[i].label for i in members[group])
        strata[max(sorted(labels), key=labels.get)].append(group)
    drawn: set[str] = set()
    for label in sorted(strata):
        groups = [strata[label][j] for j in rng.permutation(len(strata[label]))]
        target = fraction * sum(len(members[g]) for g in groups)
        taken = 0
        for group in groups[:-1]:  # the stratum always keeps at least one group in the pool
            if taken >= target:
                break
            drawn.add(group)
            taken += len(members[group])
    return [replace(s, split=into) if s.group in drawn and s.split in pool else s for s in samples]


def check_training_splits(data: str | Path, samples: list[Sample], class_names: list[str], *, val_fraction: float) -> None:
    """Refuse splits that would train something other than what was asked, before any image is loaded.

    Raises:
        InputError: class names equal but for case, Unicode form or separators, no training frames, a class without
            training frames, no validation frames although
            ``val_fraction`` asks for them, or validation frames of one class only (no AUC to pick an epoch by).
    """
    check_label_twins(data, samples)
    train_labels = {s.label for s in samples if s.split == "train"}
    if not train_labels:
        raise InputError(data, "no training images (all rows are val/test)")
    absent = [c for c in class_names if c not in train_labels]
    if absent:
        raise InputError(data, f"no training frames of class(es) {', '.join(absent)}; the head would learn nothing for "
                               "them (label some training frames, or leave the class out of --classes and its frames out of the data)")
    val_labels = {s.label for s in samples if s.split == "val"}
    if val_fraction > 0 and not val_labels:
        raise InputError(data, "no validation frames: validation takes whole groups and every class has only one group "
                               "in the training pool (add 'val' rows, more groups, or --val-fraction 0 to train without validation)")
    if len(val_labels) == 1:
        raise InputError(data, f"the validation frames are all of class {next(iter(val_labels))}; choosing the best "
                               "epoch needs frames of at least 2 classes (add 'val' rows or more groups of the other classes)")


MIN_TRAIN_FRAMES = 20  # of a class, below which `triage train` says so
MIN_VAL_FRAMES = 5
TYPO_SIMILARITY = 0.75  # difflib ratio from which two words of class names read as one misspelt ('bleding'/'bleeding': 0.93)


def label_typo(samples: list[Sample], class_names: list[str]) -> str | None:
    """A warning when a rare label (fewer than :data:`MIN_TRAIN_FRAMES` frames and at most a tenth of the other's) is
    spelt as another class but for one misspelt word (QA 118 #2: one row labelled 'bleding' made a third class beside
    'bleeding', flagged with it, said only among the classes with few frames); None when none is. Grades, numbers and a
    changed first letter or two are taken as classes of their own ('esophagitis-a'/'-d', 'ascending-'/'descending-colon');
    a warning, not a refusal (rev107 #1: such classes were refused), since some opposites still read as one misspelt
    ('hyperplastic'/'hypoplastic')."""
    counts = Counter(s.label for s in samples)
    for rare in sorted(counts, key=lambda c: (counts[c], natural_key(c))):
        near = [(ratio, other) for other in counts if counts[rare] < MIN_TRAIN_FRAMES and counts[rare] * 10 <= counts[other]
                and (ratio := _misspelt(rare, other))]
        if near:  # the closest name, not the largest class (rev107 #3: 'bleding' named beside 'nonbleeding')
            other = max(near, key=lambda n: (n[0], counts[n[1]]))[1]
            example = next(s.path for s in samples if s.label == rare)
            return (f"label {rare!r} ({plural(counts[rare], 'frame')}, e.g. {example}) is spelt nearly as class {other!r} "
                    f"({plural(counts[other], 'frame')}): if it is a misspelling, correct it (it trains as a class of its own); "
                    f"--classes {shlex.quote(','.join(class_names))} says these classes are meant")
    return None


def _misspelt(a: str, b: str) -> float:
    """How alike two class names are where they are one but for a word of 4 letters or more spelt otherwise from its third
    letter on (neither within the other): the difflib ratio of the two words; else 0."""
    words = [_words(name) for name in (a, b)]
    differ = [(x, y) for x, y in zip(*words) if x != y] if len(words[0]) == len(words[1]) else []
    if len(differ) != 1:
        return 0.0
    x, y = differ[0]
    ratio = difflib.SequenceMatcher(None, x, y).ratio()
    return ratio if (x.isalpha() and y.isalpha() and min(len(x), len(y)) >= 4 and x[:2] == y[:2] and x not in y and y not in x
                     and ratio >= TYPO_SIMILARITY) else 0.0


def _words(name: str) -> list[str]:
    """A class name's words, casefolded: split at separators, between letters and digits and where a capital follows a
    small letter ('esophagitisA': esophagitis, a). Not :func:`~capsule_triage.datasets.check_label_twins`'s key, on
    purpose: that one joins names across separators to find one class written two ways, this one splits them to compare
    two classes word for word."""
    spaced = re.sub(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])", " ", unicodedata.normalize("NFC", name))
    spaced = "".join(f" {c}" if c.isupper() and i and spaced[i - 1].islower() else c for i, c in enumerate(spaced))
    return re.findall(r"[^\W_]+", spaced.casefold())


def split_leak(samples: list[Sample], group_column: str | None, scored: str | None = None) -> str | None:
    """One phrase when a manifest's groups (patients, subjects) have frames in more than one split (rev24:
    seed C keeps every image of one subject on one side; a patient in both train and test went unsaid),
    or None. With ``scored``, only the groups of that split are counted (``triage eval``)."""
    if group_column is None:
        return None
    splits: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        splits[s.group].add(s.split or "train")
    leaking = sorted((g for g, where in splits.items() if len(where) > 1 and (scored is None or scored in where)), key=natural_key)
    if not leaking:
        return None
    kinds = Counter(" + ".join(sorted(splits[g])) for g in leaking)
    named = ", ".join(map(repr, leaking[:3])) + (", ..." if len(leaking) > 3 else "")
    counted = "; ".join(f"{n} in {kind}" for kind, n in sorted(kinds.items()))
    if scored is not None:
        return (f"{plural(len(leaking), group_column + ' value')} of the {scored!r} frames also {'has' if len(leaking) == 1 else 'have'} "
                f"frames in another split ({counted}: {named}): the model was chosen or trained on these {group_column}s, so these "
                f"metrics are optimistic (keep each {group_column} in one split)")
    return (f"{plural(len(leaking), group_column + ' value')} {'has' if len(leaking) == 1 else 'have'} frames in more than one split "
            f"({counted}: {named}): validation or test frames of a {group_column} the model trains on measure it on what it has "
            f"seen (keep each {group_column} in one split, as seed C splits by subject)")


def few_frames_note(samples: list[Sample], class_names: list[str]) -> str | None:
    """One phrase naming the classes with few training (< :data:`MIN_TRAIN_FRAMES`) or, when there is validation,
    few validation frames (< :data:`MIN_VAL_FRAMES`), or None: a class of 3 frames trained without a word. Each
    shortage is said for what it weakens (rev37: one sentence blamed both on every class named)."""
    counts = {split: Counter(s.label for s in samples if s.split == split) for split in ("train", "val")}
    train = [f"{c} ({counts['train'][c]})" for c in class_names if counts["train"][c] < MIN_TRAIN_FRAMES]
    val = [f"{c} ({counts['val'][c]})" for c in class_names if counts["val"] and counts["val"][c] < MIN_VAL_FRAMES]
    parts = [f"few training frames of {_classes(train)} (fewer than {MIN_TRAIN_FRAMES}): the model learns "
             f"{'them' if len(train) > 1 else 'it'} from a handful of examples"] if train else []
    parts += [f"few validation frames of {_classes(val)} (fewer than {MIN_VAL_FRAMES}): the choice of the best epoch "
              "(and of a --target-sensitivity threshold) barely sees " + ("them" if len(val) > 1 else "it")
              + (", or not at all where 0" if any(counts["val"][c] == 0 for c in class_names) else "")] if val else []
    return "; ".join(parts) + "; label more, or merge such a class into another" if parts else None


def _classes(named: list[str]) -> str:
    return ("classes " if len(named) > 1 else "class ") + ", ".join(named)
