"""The columns of a manifest CSV as they are read: path, label and split in any case, the group column (patient,
subject, near-duplicate run) by its several spellings, and a split column that would not be read."""

from __future__ import annotations

import re

GROUP_COLUMNS = ("group", "patient", "subject", "near_dup_group")  # in this order of preference
GROUP_SUFFIXES = ("", "_id", "id")  # "Patient", "patient_id", "Patient ID", "PatientID" name the same column (QA 31)
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "validation": "val", "valid": "val",
                 "dev": "val", "test": "test", "testing": "test", "": ""}


def group_column(columns) -> str | None:
    """The manifest column that names each image's group (patient, subject, near-duplicate run): the first of
    :data:`GROUP_COLUMNS` named exactly, else the first named in another case or with an id suffix ("Patient ID",
    "patient_id"), else None."""
    def plain(name: str) -> str:
        return re.sub(r"[\s_-]+", "_", name.strip().casefold())

    exact = next((g for g in GROUP_COLUMNS if g in columns), None)  # as before 2026-12-02: a 'Group' beside 'patient' stays a
    if exact is not None:                                            # label of its own (review rev29: a study arm took over)
        return exact
    named = {plain(c): c for c in sorted(c for c in columns if c)}
    return next((named[g + suffix] for g in GROUP_COLUMNS for suffix in GROUP_SUFFIXES if g + suffix in named), None)


def named_as_we_read(header: list[str]) -> list[str]:
    """'Path', ' Label ', 'SPLIT' as path, label, split (QA 56 #12: refused) where the exact name is absent; other columns
    as written (a 'Group' beside 'patient' stays a column of its own: :func:`group_column`)."""
    for key in ("path", "label", "split"):
        if key not in header:
            header = [key if (name or "").strip().casefold() == key else name for name in header]
    return header


def unread_split_column(columns: set[str], rows: list[dict], group: str | None) -> str | None:
    """Why a manifest without a ``split`` column is refused: other columns hold nothing but split names, at least two of
    them (train, val, test) with val or test among them (QA 118 #1: 'splt', 'set' or 'fold' was passed over, every row was
    one unsplit pool, the test rows trained on); None when there is a split column or no such column. One value alone is
    no split (rev106 #2/#3: held-out data marked 'test' throughout, a QC column 'valid', a device column 'dev')."""
    if "split" in columns:
        return None
    found = {}
    for column in sorted(columns - {"path", "label", group}):
        values = {(row.get(column) or "").strip().casefold() for row in rows} - {""}
        splits = {SPLIT_ALIASES[v] for v in values} if values <= SPLIT_ALIASES.keys() else set()
        if len(splits) > 1 and splits & {"val", "test"}:
            found[column] = ", ".join(sorted(values))
    if not found:
        return None
    named = "; ".join(f"{column!r} ({values})" for column, values in found.items())
    return (f"column{'s' if len(found) > 1 else ''} {named} hold{'s' if len(found) == 1 else ''} split names, but only a column "
            "named split (in any case) is read: without it every row is unsplit (`triage train` trains on the test rows too, "
            f"`triage eval` scores the training rows): rename {'it' if len(found) == 1 else 'the one to use'} to split, or drop "
            f"{'it' if len(found) == 1 else 'them'}")
