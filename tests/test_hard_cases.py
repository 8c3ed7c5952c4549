"""`triage hard-cases`: the frames several evaluated models get wrong (seed B's hard cases), from real
`triage eval --out` folders of three models on the same real test frames."""

from __future__ import annotations

import csv
import json
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


def test_unreadable_or_foreign_predictions_are_one_line(tmp_path):
    """review rev28: tracebacks (ArrowInvalid, KeyError) for a file that is not an evaluation's predictions."""
    import pyarrow as pa

    good = {"path": ["a.png", "b.png"], "label": ["x", "y"], "group": ["1", "2"], "score": [0.1, 0.9], "flagged": [False, True],
            "abnormal": [False, True]}
    for name, write in (("junk", lambda p: p.write_text("junk")),
                        ("other", lambda p: pq.write_table(pa.table({"path": ["a.png"], "wrong": [1]}), p)),
                        ("twice", lambda p: pq.write_table(pa.table({k: v * 2 for k, v in good.items()}), p)),
                        # QA 57 #5: counted every frame (or the empty one) as wrong
                        ("strflag", lambda p: pq.write_table(pa.table({**good, "flagged": ["False", "True"]}), p)),
                        ("nullflag", lambda p: pq.write_table(pa.table({**good, "flagged": [None, True]}), p))):
        (tmp_path / name).mkdir()
        write(tmp_path / name / "predictions.parquet")
    (tmp_path / "ok").mkdir()
    pq.write_table(pa.table(good), tmp_path / "ok" / "predictions.parquet")
    for name, problem in (("junk", "cannot read it as Parquet ("), ("other", "not the predictions.parquet of `triage eval --out` (no column "
                                                                              "label, group, score, flagged, abnormal)"),
                          ("twice", "lists a frame more than once, which `triage eval` never writes"),
                          *((n, "column flagged is not what `triage eval` writes (true/false flags, float scores, no empty values)")
                            for n in ("strflag", "nullflag"))):
        done = triage("hard-cases", tmp_path / "ok", tmp_path / name)
        assert done.returncode == 2 and done.stderr.startswith(f"Error: {tmp_path / name / 'predictions.parquet'}: {problem}"), done.stderr
        assert len(done.stderr.splitlines()) == 1
    # files given directly are named after their folders (review rev28: both were "predictions.parquet")
    (tmp_path / "ok2").mkdir()
    pq.write_table(pa.table({**good, "flagged": [True, True]}), tmp_path / "ok2" / "predictions.parquet")
    done = triage("hard-cases", tmp_path / "ok" / "predictions.parquet", tmp_path / "ok2" / "predictions.parquet", "--out", tmp_path / "h.parquet")
    assert done.returncode == 0 and done.stdout.startswith("0 of 2 frames wrong in both evaluations (ok, ok2); 1 wrong in at least one"), done.stderr
    # --out: an existing file only with --force, an evaluation's own predictions never (review rev28: replaced, then a KeyError)
    before = (tmp_path / "ok" / "predictions.parquet").read_bytes()
    for out, force, message in ((tmp_path / "h.parquet", (), "exists; --force replaces it"),
                                (tmp_path / "ok" / "predictions.parquet", ("--force",), "is the predictions of an evaluation being compared; write elsewhere"),
                                (tmp_path, (), f"is a folder: give the Parquet file to write, e.g. {tmp_path / 'hard_cases.parquet'}")):
        done = triage("hard-cases", tmp_path / "ok", tmp_path / "ok2", "--out", out, *force)
        assert done.returncode == 2 and done.stderr.strip() == f"Error: {out}: {message}", done.stderr
    assert (tmp_path / "ok" / "predictions.parquet").read_bytes() == before
    done = triage("hard-cases", tmp_path / "ok", tmp_path / "ok2", "--out", tmp_path / "h.parquet", "--force")
    assert done.returncode == 0 and pq.read_table(tmp_path / "h.parquet").num_rows == 2
    # QA 57 #3: --force replaced an evaluation's metrics.json with the Parquet; an unreadable one then dropped its warnings unsaid
    (tmp_path / "ok" / "metrics.json").write_text('{"warnings": ["3 of the 2 frames were training frames"]}')
    (tmp_path / "ok2" / "metrics.json").write_text("[1, 2")
    for out in (tmp_path / "ok" / "metrics.json", tmp_path / "ok2" / "groups.parquet"):
        done = triage("hard-cases", tmp_path / "ok", tmp_path / "ok2", "--out", out, "--force")
        assert done.returncode == 2 and done.stderr.strip() == (f"Error: {out}: is inside the evaluation folder {out.parent} (`triage "
                                                                "eval --out` writes and replaces it whole); write elsewhere"), done.stderr
    done = triage("hard-cases", tmp_path / "ok", tmp_path / "ok2", "--out", tmp_path / "h.parquet", "--force")
    assert done.returncode == 0 and "Warning: ok: 3 of the 2 frames were training frames" in done.stderr, done.stderr
    assert ("Warning: ok2: its metrics.json cannot be read (") in done.stderr and "so what triage eval warned of these frames is unknown" in done.stderr
    (tmp_path / "afile").write_text("x")
    done = triage("hard-cases", tmp_path / "ok", tmp_path / "ok2", "--out", tmp_path / "afile" / "h.parquet")
    assert done.returncode == 2 and done.stderr.strip() == f"Error: {tmp_path / 'afile' / 'h.parquet'}: its folder {tmp_path / 'afile'} is a file"


def test_evaluations_in_folders_of_the_same_name_are_told_apart_by_their_parents(tmp_path):
    """QA 31: evals/A/test and evals/B/test were refused as "the same folder name", and so was a run folder
    without predictions beside an evaluation of its name; --out into a missing folder named the partial file."""
    import pyarrow as pa

    good = {"path": ["a.png", "b.png"], "label": ["x", "y"], "group": ["1", "2"], "score": [0.1, 0.9], "flagged": [False, True],
            "abnormal": [False, True]}
    for model in ("A", "B"):
        (tmp_path / "evals" / model / "test").mkdir(parents=True)
        pq.write_table(pa.table(good), tmp_path / "evals" / model / "test" / "predictions.parquet")
    a, b = tmp_path / "evals" / "A" / "test", tmp_path / "evals" / "B" / "test"
    trained = "2 of the 2 frames scored (test) were training frames of this model (m.csv); these metrics are optimistic"
    (a / "metrics.json").write_text(json.dumps({"warnings": [trained]}))  # QA 31: what eval warned of was not passed on
    done = triage("hard-cases", a, b, "--out", tmp_path / "h.parquet")
    assert done.returncode == 0 and done.stdout.startswith("0 of 2 frames wrong in both evaluations (A/test, B/test)"), done.stderr
    assert done.stderr.strip() == f"Warning: A/test: {trained}"
    assert pq.read_table(tmp_path / "h.parquet").column_names[-4:] == ["score_A/test", "wrong_A/test", "score_B/test", "wrong_B/test"]
    (tmp_path / "runs" / "test").mkdir(parents=True)
    done = triage("hard-cases", a, tmp_path / "runs" / "test")
    assert done.returncode == 2 and done.stderr.startswith(f"Error: {tmp_path / 'runs' / 'test'}: no predictions.parquet"), done.stderr
    done = triage("hard-cases", a, a / "predictions.parquet")
    assert done.returncode == 2 and done.stderr.strip() == f"Error: {a}: given twice", done.stderr
    done = triage("hard-cases", a, b, "--out", tmp_path / "nodir" / "h.parquet")
    assert done.returncode == 2 and done.stderr.strip() == f"Error: {tmp_path / 'nodir' / 'h.parquet'}: its folder {tmp_path / 'nodir'} does not exist"


def test_the_evaluation_of_other_frames_is_the_one_named(tmp_path):
    """QA 39: of three evaluations, the third of other frames, the error named the second ('no frame in common with
    the first'), which shared every frame with it."""
    import pyarrow as pa

    from capsule_triage.errors import InputError
    from capsule_triage.hard_cases import hard_cases

    def evaluation(name, paths):
        (tmp_path / name).mkdir()
        pq.write_table(pa.table({"path": paths, "label": ["x"] * len(paths), "group": ["1"] * len(paths), "score": [0.1] * len(paths),
                                 "flagged": [False] * len(paths), "abnormal": [False] * len(paths)}), tmp_path / name / "predictions.parquet")
        return tmp_path / name

    a, b, other = evaluation("a", ["1.png", "2.png"]), evaluation("b", ["1.png", "2.png"]), evaluation("other", ["3.png"])
    for order, named, before in (((a, b, other), other, f"{a}, {b}"), ((other, a, b), a, f"{other}"), ((a, other, b), other, f"{a}")):
        try:
            hard_cases(list(order))
        except InputError as exc:
            everyone = "all " if before.count(",") else ""
            assert str(exc) == f"{named}: none of its frames is among those {before} {everyone}scored (the evaluations scored different data)"
        else:
            raise AssertionError("no error")
    # QA 66 #7: 24, 24 and 4 of the same frames: 40 "scored frames not in every evaluation" (rows summed), 20 of them
    many = [f"{i}.png" for i in range(24)]
    full, again, few = evaluation("full", many), evaluation("again", many), evaluation("few", many[:4])
    assert hard_cases([full, again, few]).warnings[0] == ("20 scored frames are not in every evaluation and are left out (the "
                                                          "evaluations scored different data)")


def test_evaluations_that_label_a_frame_differently_are_said(tmp_path):
    """QA 69 #6: two evaluations of the same frames from manifests that disagree on a frame's label were joined without
    a word: each model's wrong_ column counted against its own truth, the label column the first evaluation's."""
    import pyarrow as pa

    from capsule_triage.hard_cases import hard_cases

    def evaluation(name, labels):
        (tmp_path / name).mkdir()
        abnormal = [label == "bleeding" for label in labels]
        pq.write_table(pa.table({"path": ["1.png", "2.png", "3.png"], "label": labels, "group": ["1", "2", "3"], "score": [0.9, 0.1, 0.2],
                                 "flagged": [True, False, False], "abnormal": abnormal}), tmp_path / name / "predictions.parquet")
        return tmp_path / name

    same = evaluation("a", ["bleeding", "normal", "normal"]), evaluation("b", ["bleeding", "normal", "normal"])
    assert hard_cases(list(same)).warnings == []
    other = evaluation("relabelled", ["bleeding", "bleeding", "Normal"])
    found = hard_cases([same[0], other])
    assert found.warnings == ["2 frame(s) are labelled differently by the evaluations (1 of them abnormal in one and not in another; "
                              "e.g. 2.png: 'normal' in a, 'bleeding' (abnormal) in relabelled): each model's wrong_ column is against "
                              "its own evaluation's label, the label column is a's"]
    assert found.table.to_pydict()["wrong_relabelled"] == [True, False, False]  # 2.png, wrong against its own label
    done = triage("hard-cases", same[0], other)
    assert done.returncode == 0 and done.stderr.strip() == f"Warning: {found.warnings[0]}", done.stderr
    spaced = tmp_path / "eval two"  # QA 69 #9: the hint's command was not quoted for a path with a space
    spaced.mkdir()
    done = triage("hard-cases", same[0], spaced)
    assert done.returncode == 2 and done.stderr.strip() == (f"Error: {spaced}: no predictions.parquet (write one with `triage eval WEIGHTS "
                                                            f"DATA --out '{spaced}'`)"), done.stderr
