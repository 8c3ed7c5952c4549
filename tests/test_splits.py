"""`triage split`: train / val / test drawn by group and stratified by label (seed B's 70/15/15, seed C's
split by subject), from real WCEBleedGen frames whose near-duplicate groups stand in for patients."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from capsule_triage.datasets import read_samples
from conftest import WCE, manifest_rows, needs_shared, triage

pytestmark = needs_shared


def _manifest(path: Path, rows: list[dict], *, split: bool = False) -> Path:
    """The shared frames as a lab's manifest: absolute paths, a patient column, no split unless ``split``."""
    columns = ["path", "label", "patient", "note"] + (["split"] if split else [])
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({"path": str(WCE / row["path"]), "label": row["label"], "patient": row["near_dup_group"], "note": "kept",
                             **({"split": row.get("new_split", "")} if split else {})})
    return path


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_splits_are_drawn_by_patient_stratified_by_label_and_read_back_by_training(tmp_path):
    rows = manifest_rows("train")  # 1,494 frames, 1,086 near-duplicate groups
    source = _manifest(tmp_path / "lab.csv", rows)
    done = triage("split", source, "-o", tmp_path / "out" / "split.csv")
    assert done.returncode == 2 and done.stderr.startswith("Error: ")  # its folder does not exist: one line, nothing written
    (tmp_path / "out").mkdir()
    done = triage("split", source, "-o", tmp_path / "out" / "split.csv", "--seed", "7")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    written = _read(tmp_path / "out" / "split.csv")
    assert [r["path"] for r in written] == [str(WCE / r["path"]) for r in rows]  # every row, in order, its columns kept
    assert b"\r" not in (tmp_path / "out" / "split.csv").read_bytes()  # QA 56 #14: CRLF line ends, as csv writes by default
    assert list(written[0]) == ["path", "label", "patient", "note", "split"] and {r["note"] for r in written} == {"kept"}
    sides = defaultdict(set)
    for r in written:
        sides[r["patient"]].add(r["split"])
    assert all(len(s) == 1 for s in sides.values())  # every patient on one side
    frames = Counter((r["split"], r["label"]) for r in written)
    for label in ("bleeding", "non-bleeding"):
        total = sum(frames[s, label] for s in ("train", "val", "test"))
        for split, share in (("test", 0.15), ("val", 0.15), ("train", 0.70)):
            assert frames[split, label] / total == pytest.approx(share, abs=0.02), (split, label, frames)
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"train {sum(frames['train', x] for x in ('bleeding', 'non-bleeding')):,} frames (70%), ")
    assert lines[-1] == f"Wrote {tmp_path / 'out' / 'split.csv'}"
    read = read_samples(tmp_path / "out" / "split.csv")  # what train and eval read
    assert read.group_column == "patient" and Counter(s.split for s in read.samples) == Counter(r["split"] for r in written)
    again = triage("split", source, "-o", tmp_path / "again.csv", "--seed", "7")
    other = triage("split", source, "-o", tmp_path / "other.csv", "--seed", "8")
    assert again.returncode == other.returncode == 0
    assert [r["split"] for r in _read(tmp_path / "again.csv")] == [r["split"] for r in written]  # seeded
    assert [r["split"] for r in _read(tmp_path / "other.csv")] != [r["split"] for r in written]


def test_rows_with_a_split_keep_it_and_their_patients_unassigned_rows_join_them(tmp_path):
    rows = manifest_rows("train", "bleeding")[:150] + manifest_rows("train", "non-bleeding")[:150]
    first = rows[0]["near_dup_group"]
    for row in rows:
        row["new_split"] = "test" if row is rows[0] else ""
    mates = [r for r in rows if r["near_dup_group"] == first]
    source = _manifest(tmp_path / "lab.csv", rows, split=True)
    done = triage("split", source, "-o", tmp_path / "split.csv", "--test-fraction", "0.2", "--val-fraction", "0")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "Warning: 1 of 300 frames already had a split and keep it"
    by_path = {r["path"]: r["split"] for r in _read(tmp_path / "split.csv")}
    assert {by_path[str(WCE / r["path"])] for r in mates} == {"test"}  # the patient's other frames joined it
    assert set(by_path.values()) == {"train", "test"}  # --val-fraction 0: training draws its own later


def test_a_folder_tree_gives_paths_below_the_manifest_and_says_it_has_no_groups(tmp_path):
    import shutil

    tree = tmp_path / "data"
    for row in manifest_rows("test")[:40] + manifest_rows("test", "non-bleeding")[:40]:
        target = tree / row["label"] / Path(row["path"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(WCE / row["path"], target)
    done = triage("split", tree, "-o", tree / "manifest.csv")
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("Warning: no group column (group, patient, subject or near_dup_group, any case, with or without an id suffix): every image is its own group")
    written = _read(tree / "manifest.csv")
    assert list(written[0]) == ["path", "label", "split"] and all(not Path(r["path"]).is_absolute() for r in written)
    assert all((tree / r["path"]).is_file() and r["path"].startswith(r["label"] + "/") for r in written)
    assert read_samples(tree).group_column is None and {s.split for s in read_samples(tree).samples} == {"train", "val", "test"}


def test_refusals_are_one_line_and_leave_the_manifest_as_it_was(tmp_path):
    source = _manifest(tmp_path / "lab.csv", manifest_rows("train")[:50])
    before = source.read_bytes()
    for args, message in (((), f"Error: {source}: exists; --force replaces it"),
                          (("--test-fraction", "0.5", "--val-fraction", "0.5"), "Error: test and val fractions must be in [0, 1) and leave "
                                                                               "frames for training, got 0.5 and 0.5")):
        done = triage("split", source, "-o", source, *args, *(("--force",) if args else ()))
        assert done.returncode == 2 and done.stderr.strip() == message, done.stderr
        assert source.read_bytes() == before
    done = triage("split", source, "-o", tmp_path / "v.csv", "--val-fraction", "0.9")  # review rev29: with the default test 0.15
    assert done.returncode == 2 and done.stderr.strip() == ("Error: test and val fractions must be in [0, 1) and leave frames for "
                                                            "training, got 0.15 and 0.9"), done.stderr
    done = triage("split", source, "-o", tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == f"Error: {tmp_path}: is a folder: give the manifest CSV to write, e.g. {tmp_path / 'manifest.csv'}"
    done = triage("split", source, "-o", source, "--force")  # in place
    assert done.returncode == 0 and {r["split"] for r in _read(source)} == {"train", "val", "test"}
    assert not list(tmp_path.glob(".*partial*"))


def test_a_dataset_s_own_test_set_is_kept_as_it_is_unless_a_test_fraction_is_given(tmp_path):
    """review rev28: with the manifest's test rows kept, the default 0.15 drew ~225 more test frames from training."""
    train = manifest_rows("train", "bleeding")[:100] + manifest_rows("train", "non-bleeding")[:100]
    test = manifest_rows("test", "bleeding")[:30] + manifest_rows("test", "non-bleeding")[:30]
    for row in train + test:
        row["new_split"] = "test" if row in test else ""
    source = _manifest(tmp_path / "lab.csv", train + test, split=True)
    done = triage("split", source, "-o", tmp_path / "split.csv")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["Warning: 60 of 260 frames already had a split and keep it",
                                        "Warning: 60 frames are already in test: none drawn for it (--test-fraction draws more)"]
    splits = Counter(r["split"] for r in _read(tmp_path / "split.csv"))
    assert splits["test"] == 60 and 0 < splits["val"] < 60 and splits["train"] + splits["val"] == 200
    done = triage("split", source, "-o", tmp_path / "more.csv", "--test-fraction", "0.15")  # asked for: drawn
    assert done.returncode == 0 and Counter(r["split"] for r in _read(tmp_path / "more.csv"))["test"] > 60


def test_a_row_with_more_fields_than_the_header_is_one_line_and_leaves_nothing(tmp_path):
    source = _manifest(tmp_path / "lab.csv", manifest_rows("train")[:20])
    lines = source.read_text().splitlines()
    lines[3] += ",EXTRA"  # review rev28: "dict contains fields not in fieldnames: None" and a .partial file left
    source.write_text("\n".join(lines) + "\n")
    (tmp_path / "out").mkdir()
    done = triage("split", source, "-o", tmp_path / "out" / "split.csv")
    assert done.returncode == 2 and done.stderr.strip() == (f"Error: {source}: row 4 has more fields than the header's 4 "
                                                            "(a value holding a comma needs quotes)"), done.stderr
    assert list((tmp_path / "out").iterdir()) == []


def test_labels_differing_only_in_case_are_refused_before_a_manifest_is_written(tmp_path):
    """QA 31: split wrote 'Bleeding' and 'bleeding' as two classes; train refused them only later."""
    rows = manifest_rows("train")[:30]
    rows[0] = {**rows[0], "label": rows[0]["label"].capitalize()}
    source = _manifest(tmp_path / "lab.csv", rows)
    done = triage("split", source, "-o", tmp_path / "split.csv")
    twins = sorted({rows[0]["label"], rows[0]["label"].lower()})
    assert done.returncode == 2 and done.stderr.strip() == (f"Error: {source}: class names that differ only in case, Unicode form or separators: "
                                                            f"{twins[0]!r} / {twins[1]!r}; give each class one name (rename the folders or the labels)"), done.stderr
    assert not (tmp_path / "split.csv").exists()


def test_fractions_that_draw_nothing_and_data_of_one_class_are_said(tmp_path):
    """QA 65 #8: with every row already split an explicit --val-fraction drew nothing, unsaid; #12: a manifest of
    one class was written without a word (`triage train` refuses it later)."""
    rows = manifest_rows("train", "bleeding")[:20] + manifest_rows("train", "non-bleeding")[:20]
    for row in rows:
        row["new_split"] = "train"
    source = _manifest(tmp_path / "lab.csv", rows, split=True)
    done = triage("split", source, "-o", tmp_path / "split.csv", "--val-fraction", "0.2")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["Warning: 40 of 40 frames already had a split and keep it: nothing was drawn",
                                        "Warning: --val-fraction 0.2 drew no frames: no frame is left without a split (a frame of a "
                                        "group already in a split joins it); `triage train --val-fraction` draws validation from "
                                        "the train split"]
    done = triage("split", source, "-o", tmp_path / "same.csv")
    assert done.returncode == 0 and done.stderr.splitlines() == ["Warning: 40 of 40 frames already had a split and keep it: nothing was drawn"]
    one = manifest_rows("train", "bleeding")[:30]
    done = triage("split", _manifest(tmp_path / "one.csv", one), "-o", tmp_path / "one_split.csv")
    assert done.returncode == 0 and done.stderr.splitlines() == ["Warning: the train and val frames have one class (bleeding); a "
                                                                 "classifier needs frames of at least 2 classes"], done.stderr
    for row in rows:  # helper-127 #4: one class left for train and val (the other all in test) went unsaid
        row["new_split"] = "test" if row["label"] == "bleeding" else ""
    done = triage("split", _manifest(tmp_path / "tested.csv", rows, split=True), "-o", tmp_path / "tested_split.csv")
    assert done.returncode == 0 and done.stderr.splitlines()[-1] == ("Warning: the train and val frames have one class "
                                                                     "(non-bleeding); a classifier needs frames of at least 2 classes")
    # helper-127 #3: unassigned rows that all joined their patients' split, and too few patients, drew nothing unsaid
    two = [{**r, "near_dup_group": f"{r['label']}-{i % 2}"} for i, r in enumerate(rows)]  # 2 patients of each label
    done = triage("split", _manifest(tmp_path / "two.csv", two), "-o", tmp_path / "two_split.csv", "--test-fraction", "0.2")
    assert done.returncode == 0 and done.stderr.splitlines() == [
        "Warning: --val-fraction 0.15 (the default) drew no frames: it draws whole groups, keeping at least one of each label "
        "for training, and the 20 frames without a split have too few groups for that"], done.stderr  # rev63 #3: no hint (train refuses)
    seen = set()
    for row in two:  # one frame of each patient already in train: the others join it
        row["new_split"] = "" if row["near_dup_group"] in seen else "train"
        seen.add(row["near_dup_group"])
    done = triage("split", _manifest(tmp_path / "joined.csv", two, split=True), "-o", tmp_path / "joined_split.csv")
    assert done.returncode == 0 and done.stderr.splitlines()[1:] == [
        "Warning: --test-fraction 0.15 (the default) drew no frames: no frame is left without a split (a frame of a group already "
        "in a split joins it)",
        "Warning: --val-fraction 0.15 (the default) drew no frames: no frame is left without a split (a frame of a group already in a split "
        "joins it); `triage train --val-fraction` draws validation from the train split"], done.stderr


def test_a_manifest_with_capitalised_columns_is_written_elsewhere_with_its_own_columns(tmp_path):
    """QA 69 #4: 'Path' as the header and the output in another folder failed with "dict contains fields not in fieldnames:
    'path'"; #5: a 'Split' column got a second 'split' column beside it, and stayed blank."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        label = "bleeding" if i % 2 else "normal"
        cv2.imwrite(str(tmp_path / f"img_{i}.png"), rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        rows.append(f"img_{i}.png,{label},,p{i // 2}")
    (tmp_path / "lab.csv").write_text("Path,Label,Split,Patient ID\n" + "\n".join(rows) + "\n")
    out = tmp_path / "sub" / "out dir.csv"
    out.parent.mkdir()
    done = triage("split", tmp_path / "lab.csv", "-o", out, "--test-fraction", "0.25", "--val-fraction", "0.25")
    assert done.returncode == 0, done.stderr
    with open(out, newline="") as fh:
        reader = csv.DictReader(fh)
        written = list(reader)
    assert reader.fieldnames == ["Path", "Label", "Split", "Patient ID"]
    assert [r["Path"] for r in written] == [str(tmp_path / f"img_{i}.png") for i in range(16)]  # not below the new folder
    assert {r["Split"] for r in written} == {"train", "val", "test"}
    assert [(s.path.name, s.split) for s in read_samples(out).samples] == [(f"img_{i}.png", r["Split"]) for i, r in enumerate(written)]


def test_images_held_twice_are_said_under_two_labels_and_in_two_splits(tmp_path):
    """QA 108 #2: `triage split` put byte-identical files in train, val and test (a copy of a test frame trained on) and
    the same bytes under two labels without a word, where `triage train` names both."""
    import re
    import shutil

    tree = tmp_path / "data"
    rows = manifest_rows("test")[:30] + manifest_rows("test", "non-bleeding")[:30]
    for row in rows:
        target = tree / row["label"] / Path(row["path"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(WCE / row["path"], target)
    bleeding = sorted((tree / "bleeding").iterdir())
    shutil.copy(bleeding[0], tree / "non-bleeding" / "relabelled.png")  # the same bytes under the other label
    for i, original in enumerate(bleeding[1:11]):  # renamed copies under the same label: drawn apart, some of them
        shutil.copy(original, tree / "bleeding" / f"copy_{i}.png")
    done = triage("split", tree, "-o", tree / "manifest.csv")
    assert done.returncode == 0, done.stderr
    written = {Path(r["path"]).name: r["split"] for r in _read(tree / "manifest.csv")}
    apart = [i for i, original in enumerate(bleeding[1:11]) if written[original.name] != written[f"copy_{i}.png"]]
    relabelled_apart = written[bleeding[0].name] != written["relabelled.png"]
    assert 0 < len(apart) < 10, written  # the draw (seed 0) separates some copies: the case to say
    line = next(line for line in done.stderr.splitlines() if "held twice" in line)
    assert line.startswith(f"Warning: images held twice, by their bytes: 1 image under two labels ({bleeding[0].name} (bleeding) = "
                           "relabelled.png (non-bleeding)): correct the wrong label, or delete the copy; "), line
    assert f"; {len(apart) + relabelled_apart} images in two splits (" in line, line
    assert line.endswith(": the model is measured on frames it trained or was tuned on, so its figures are optimistic; delete the "
                         "copy, or give both one group (a group column)"), line
    assert re.search(rf"copy_{apart[0]}\.png \((train|val|test)\)", line), line
    shutil.rmtree(tree / "bleeding")  # one class, no copies: nothing said of them
    (tree / "non-bleeding" / "relabelled.png").unlink()
    done = triage("split", tree, "-o", tree / "manifest.csv", "--force")
    assert "held twice" not in done.stderr, done.stderr
