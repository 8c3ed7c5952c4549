"""``triage hard-cases``: the frames that several evaluated models get wrong, as seed B reports the test
images every model misclassifies. Reads the ``predictions.parquet`` of ``triage eval --out`` folders;
a frame is wrong for a model when its triage decision is (flagged at the model's operating threshold,
but not of an abnormal class, or the other way round)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.parquet as pq

from .json_files import read_json
from .errors import InputError, OutputError
from .outputs import written_whole

PREDICTIONS = "predictions.parquet"


@dataclass
class HardCases:
    """What :func:`hard_cases` found.

    Attributes:
        models: one name per evaluation (its folder's name), in the order given.
        table: one row per frame every evaluation scored: path, label, group, ``wrong`` (how many models
            got it wrong), then ``score_<model>`` and ``wrong_<model>`` per model; most often wrong first.
        warnings: one line each (frames not in every evaluation, evaluations of different splits or labels).
    """

    models: list[str]
    table: pa.Table
    warnings: list[str] = field(default_factory=list)

    @property
    def wrong_by_all(self) -> int:
        return int(np.count_nonzero(self.table["wrong"].to_numpy() == len(self.models)))


def hard_cases(evaluations: list[str | Path]) -> HardCases:
    """Join the evaluations' predictions on the frame's path.

    Raises:
        InputError: fewer than two evaluations, a folder without predictions.parquet, one given twice,
            a file that is not an evaluation's predictions, or no frame in common.
    """
    folders = [Path(e) for e in evaluations]
    if len(folders) < 2:
        raise InputError(folders[0] if folders else Path("."), "give at least two `triage eval --out` folders to compare")
    paths = [predictions_path(f) for f in folders]
    for folder, path in zip(folders, paths):
        if not path.is_file():
            raise InputError(folder, f"no {PREDICTIONS} (write one with `triage eval WEIGHTS DATA --out {shlex.quote(str(folder))}`)")
    names = model_names(paths)
    tables, splits = [], set()
    for path in paths:
        table = _read_predictions(path)
        splits.add((table.schema.metadata or {}).get(b"split", b"?").decode())
        tables.append(table)
    common = set(tables[0]["path"].to_pylist()).intersection(*(t["path"].to_pylist() for t in tables[1:]))
    if not common:  # name the first evaluation that shares no frame with those before it (QA 39: the second was blamed)
        seen, odd = set(tables[0]["path"].to_pylist()), len(tables) - 1
        for i, table in enumerate(tables[1:], 1):
            if not seen.intersection(table["path"].to_pylist()):
                odd = i
                break
            seen.intersection_update(table["path"].to_pylist())
        before = ", ".join(str(f) for f in folders[:odd])
        raise InputError(folders[odd], f"none of its frames is among those {before} {'all ' if odd > 1 else ''}scored "
                                       "(the evaluations scored different data)")
    order = [p for p in tables[0]["path"].to_pylist() if p in common]
    picked = [_in_order(table, order) for table in tables]
    per_model, wrong = {}, np.zeros(len(order), np.int32)
    for name, rows in zip(names, picked):
        miss = rows["flagged"].to_numpy(zero_copy_only=False) != rows["abnormal"].to_numpy(zero_copy_only=False)
        per_model[f"score_{name}"], per_model[f"wrong_{name}"] = rows["score"], miss
        wrong += miss
    columns = {"path": picked[0]["path"], "label": picked[0]["label"], "group": picked[0]["group"], "wrong": wrong, **per_model}
    table = pa.table(columns).take(pa.array(np.argsort(-wrong, kind="stable")))
    warnings = []
    left_out = len(set().union(*(t["path"].to_pylist() for t in tables)) - common)  # QA 66 #7: rows of every evaluation summed
    if left_out:
        warnings.append(f"{left_out:,} scored frames are not in every evaluation and are left out (the evaluations scored different data)")
    if len(splits) > 1:
        warnings.append(f"the evaluations scored different splits ({', '.join(sorted(splits))})")
    disagree = _label_disagreement(names, picked)
    if disagree:
        warnings.append(disagree)
    warnings += [f"{name}: {line}" for name, path in zip(names, paths) for line in _evaluation_warnings(path)]
    return HardCases(names, table, warnings)


def _label_disagreement(names: list[str], picked: list[pa.Table]) -> str | None:
    """One line when the evaluations label a frame differently (QA 69 #6: two manifests of one frame, one saying
    bleeding, the other normal: each model's ``wrong`` was counted against its own truth, and the table showed the first's
    label, unsaid); None when every evaluation gives every frame the same label and abnormal-ness."""
    labels = [rows["label"].to_pylist() for rows in picked]
    truths = [rows["abnormal"].to_numpy(zero_copy_only=False) for rows in picked]
    odd = [i for i in range(len(labels[0])) if len({t[i] for t in truths}) > 1 or len({lab[i] for lab in labels}) > 1]
    if not odd:
        return None
    first = odd[0]
    said = ", ".join(f"{labels[m][first]!r}{' (abnormal)' if truths[m][first] else ''} in {name}" for m, name in enumerate(names))
    truth = sum(len({t[i] for t in truths}) > 1 for i in odd)
    truth = f"{truth:,} of them abnormal in one and not in another; " if truth else ""  # review rev65: "0 of them ..."
    return (f"{len(odd):,} frame(s) are labelled differently by the evaluations ({truth}e.g. {picked[0]['path'][first].as_py()}: "
            f"{said}): each model's wrong_ column is against its own evaluation's label, the label column is {names[0]}'s")


def _evaluation_warnings(predictions: Path) -> list[str]:
    """What `triage eval` warned of for these predictions (metrics.json beside them): frames the model was trained
    on, a backend not checked against fp32... (QA 31: a model's training frames were listed as its hard cases unsaid)."""
    metrics = predictions.parent / "metrics.json"
    if not metrics.exists():
        return []
    try:  # QA 57 #3: an unreadable one dropped its warnings (trained-on frames...) unsaid
        found = read_json(metrics)
    except (OSError, ValueError) as exc:
        found = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
    if not isinstance(found, dict):
        return [f"its metrics.json cannot be read ({found if isinstance(found, str) else 'not a JSON object'}), so what triage "
                "eval warned of these frames is unknown"]
    found = found.get("warnings", [])
    return [w for w in found if isinstance(w, str)] if isinstance(found, list) else []


COLUMNS = ("path", "label", "group", "score", "flagged", "abnormal")  # of an evaluation's predictions, read here


def model_names(paths: list[Path]) -> list[str]:
    """A name per evaluation: its folder's name (a predictions file given directly: the folder holding it, review
    rev28), with as many parent folders as tell them apart (QA 31: evals/A/test and evals/B/test were refused)."""
    folders = [p.resolve().parent for p in paths]
    if len(set(folders)) < len(folders):
        raise InputError(next(f for f in folders if folders.count(f) > 1), "given twice")
    for depth in range(1, max(len(f.parts) for f in folders) + 1):
        names = ["/".join(f.parts[-depth:]) for f in folders]
        if len(set(names)) == len(names):
            return names
    return [str(f) for f in folders]  # unreachable: distinct folders differ in some trailing part


def predictions_path(evaluation: str | Path) -> Path:
    """An evaluation folder's predictions.parquet (or the file itself, given directly)."""
    evaluation = Path(evaluation)
    return evaluation / PREDICTIONS if evaluation.is_dir() else evaluation


def _read_predictions(path: Path) -> pa.Table:
    """An evaluation's predictions, or one line on what else the file is (review rev28: tracebacks)."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(path, f"cannot read it as Parquet ({str(exc).splitlines()[0][:160]})") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(path, f"not the {PREDICTIONS} of `triage eval --out` (no column {', '.join(missing)})")
    kinds = {"flagged": pa.types.is_boolean, "abnormal": pa.types.is_boolean, "score": pa.types.is_floating}
    odd = [c for c, is_kind in kinds.items() if not is_kind(table[c].type) or table[c].null_count]  # QA 57 #5: "True" strings, nulls
    if odd:                                                                                    # counted every frame as wrong
        raise InputError(path, f"column {', '.join(odd)} is not what `triage eval` writes (true/false flags, float scores, "
                               "no empty values)")
    paths = table["path"]
    if pa.compute.count_distinct(paths).as_py() < len(paths):
        raise InputError(path, "lists a frame more than once, which `triage eval` never writes")
    return table


def _in_order(table: pa.Table, order: list[str]) -> pa.Table:
    """The table's rows in ``order`` of paths (one take, the columns stay Arrow)."""
    at = {p: i for i, p in enumerate(table["path"].to_pylist())}
    return table.take(pa.array([at[p] for p in order]))


def check_output(out: str | Path, evaluations: list[str | Path], *, force: bool = False) -> None:
    """Refuse ``--out`` before anything is read: a folder, an existing file without ``force``, or one of the
    evaluations' own predictions (review rev28: replaced without a word, and the next run failed on it)."""
    out = Path(out)
    if out.is_dir():
        raise OutputError(out, "is a folder: give the Parquet file to write, e.g. " + str(out / "hard_cases.parquet"))
    if any(out.exists() and predictions_path(e).exists() and out.samefile(predictions_path(e)) for e in evaluations):
        raise OutputError(out, "is the predictions of an evaluation being compared; write elsewhere")
    if (out.absolute().parent / "metrics.json").is_file():  # QA 57 #3: --force replaced an evaluation's metrics.json
        raise OutputError(out, f"is inside the evaluation folder {out.absolute().parent} (`triage eval --out` writes and "
                               "replaces it whole); write elsewhere")
    if out.exists() and not force:
        raise OutputError(out, "exists; --force replaces it")
    if not out.absolute().parent.is_dir():  # QA 31: "Failed to open local file 'nodir/.hc.parquet.partial'"
        raise OutputError(out, f"its folder {out.absolute().parent} " + ("is a file" if out.absolute().parent.exists() else "does not exist"))


def write_hard_cases(result: HardCases, out: str | Path) -> Path:
    """The table as Parquet, whole or not at all."""
    out = Path(out)
    with written_whole(out) as partial:
        pq.write_table(result.table.replace_schema_metadata({"models": ",".join(result.models)}), partial)
    return out
