"""`triage hard-cases`: the frames several evaluated models get wrong (seed B's hard cases), from real
`triage eval --out` folders of three models on the same real test frames."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from conftest import WCE, manifest_rows, needs_shared, triage

pytestmark = needs_shared


def test_hard_cases_of_three_evaluations_are_the_frames_they_all_get_wrong(tmp_path, shipped_weights, probe_weights, random_weights):
    data = tmp_path / "test.csv"
    with open(data, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "split"])
        for row in manifest_rows("test", "bleeding")[:30] + manifest_rows("test", "non-bleeding")[:30]:
            writer.writerow([WCE / row["path"], row["label"], "test"])
    folders = []
    for name, weights in (("shipped", shipped_weights), ("probe", probe_weights), ("random", random_weights)):
        done = triage("eval", weights, data, "--out", tmp_path / name)
        assert done.returncode == 0, done.stderr
        folders.append(tmp_path / name)
    done = triage("hard-cases", *folders, "--out", tmp_path / "hard.parquet", "--show", "5")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    # what the three predictions.parquet say, joined here by path
    tables = [pq.read_table(f / "predictions.parquet").to_pydict() for f in folders]
    wrong = {}
    for table in tables:
        for path, flagged, abnormal in zip(table["path"], table["flagged"], table["abnormal"]):
            wrong[path] = wrong.get(path, 0) + (flagged != abnormal)
    by_all, by_any = sum(w == 3 for w in wrong.values()), sum(w > 0 for w in wrong.values())
    assert by_any > by_all and by_any > 0  # the random model alone gets frames wrong
    lines = done.stdout.splitlines()
    assert lines[0] == f"{by_all:,} of 60 frames wrong in all 3 evaluations (shipped, probe, random); {by_any:,} wrong in at least one"
    assert len(lines) == 1 + min(5, by_any) + 1 and lines[-1] == f"Wrote {tmp_path / 'hard.parquet'}"
    hard = pq.read_table(tmp_path / "hard.parquet").to_pydict()
    assert hard["path"] and sorted(hard["path"]) == sorted(wrong) and list(hard["wrong"]) == sorted(hard["wrong"], reverse=True)
    assert {p: w for p, w in zip(hard["path"], hard["wrong"])} == wrong
    shipped = dict(zip(tables[0]["path"], tables[0]["score"]))
    assert np.allclose([shipped[p] for p in hard["path"]], hard["score_shipped"])
    first = lines[1].split()
    assert first[0] == f"{hard['wrong'][0]}/3" and first[-1] == hard["path"][0]
    two = triage("hard-cases", folders[0], folders[1])  # the two trained models: the frames both get wrong
    both = [p for p in tables[0]["path"] if sum(t["flagged"][t["path"].index(p)] != t["abnormal"][t["path"].index(p)] for t in tables[:2]) == 2]
    assert two.returncode == 0 and two.stdout.startswith(f"{len(both):,} of 60 frames wrong in both evaluations (shipped, probe); ")
    assert [line.split()[-1] for line in two.stdout.splitlines()[1:1 + len(both)]] == [p for p in tables[0]["path"] if p in both]


def test_hard_cases_refusals_are_one_line(tmp_path):
    (tmp_path / "a").mkdir()
    done = triage("hard-cases", tmp_path / "a")
    assert done.returncode == 2 and done.stderr.strip() == f"Error: {tmp_path / 'a'}: give at least two `triage eval --out` folders to compare"
    (tmp_path / "b").mkdir()
    done = triage("hard-cases", tmp_path / "a", tmp_path / "b")
    assert done.returncode == 2 and done.stderr.strip() == (f"Error: {tmp_path / 'a'}: no predictions.parquet (write one with "
                                                            f"`triage eval WEIGHTS DATA --out {tmp_path / 'a'}`)")
    assert not Path(tmp_path / "hard.parquet").exists()
