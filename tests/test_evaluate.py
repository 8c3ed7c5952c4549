"""``evaluate`` / ``triage eval``: outputs, threshold selection, model card, and the shipped model."""

from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import typer
from typer.testing import CliRunner

from capsule_triage.cli_models import register
from capsule_triage.errors import InputError, WeightsError
from capsule_triage.evaluate import evaluate
from capsule_triage.model_card import intended_use, read_card_section
from capsule_triage.report_svg import score_text

from capsule_triage.cpu_info import machine
from capsule_triage.model_config import ModelConfig
from conftest import REPO, WCE, manifest_rows, needs_shared

torch.set_num_threads(2)
SHIPPED = REPO / "weights" / "capsule-bleeding-lite0"
CARD_KEYS = ("n", "threshold", "auc", "accuracy", "sensitivity", "specificity", "precision", "f1")


@pytest.fixture(scope="module")
def small_manifest(tmp_path_factory) -> Path:
    """20 val + 24 test real frames per class, with their near-duplicate groups."""
    if not WCE.exists():
        pytest.skip(f"real data not found at {WCE}")
    path = tmp_path_factory.mktemp("data") / "small.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "group", "split"])
        for label in ("non-bleeding", "bleeding"):
            for row in manifest_rows("train", label)[::35][:20]:
                writer.writerow([WCE / row["path"], label, row["near_dup_group"], "val"])
            for row in manifest_rows("test", label)[::7][:24]:
                writer.writerow([WCE / row["path"], label, row["near_dup_group"], "test"])
    return path


@pytest.fixture
def weights_copy(probe_weights, tmp_path) -> Path:
    return Path(shutil.copytree(probe_weights, tmp_path / "probe"))


@needs_shared
def test_evaluate_writes_metrics_tables_and_roc(weights_copy, small_manifest, tmp_path):
    result = evaluate(weights_copy, small_manifest, "test", out_dir=tmp_path / "eval")
    assert result["n"] == 48 and result["split"] == "test" and result["border"] == "circle"
    assert result["auc"] > 0.9 and sum(map(sum, result["confusion_matrix"])) == 48
    assert set(result["per_class"]) == {"non-bleeding", "bleeding"} and "groups" in result
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["auc"] == pytest.approx(result["auc"]) and saved["confusion_matrix"] == result["confusion_matrix"]
    predictions = pq.read_table(tmp_path / "eval" / "predictions.parquet")
    assert predictions.num_rows == 48 and {"path", "label", "score", "prob_bleeding", "group"} <= set(predictions.column_names)
    assert predictions.schema.metadata[b"split"] == b"test"
    thresholds = pq.read_table(tmp_path / "eval" / "thresholds.parquet").to_pylist()  # QA 128 #1: the operating point's
    assert len(thresholds) in (101, 102) and [r["threshold"] for r in thresholds if r["operating"]] == [result["threshold"]]  # row
    operating = next(r for r in thresholds if r["operating"])
    assert (operating["sensitivity"], operating["specificity"]) == (result["sensitivity"], result["specificity"])
    assert pq.read_table(tmp_path / "eval" / "groups.parquet").num_rows == result["groups"]["n_groups"]
    for table in ("predictions", "thresholds", "groups"):  # QA 20: thresholds and groups said nothing of what made them
        meta = pq.read_schema(tmp_path / "eval" / f"{table}.parquet").metadata
        assert meta[b"weights_sha256"].decode() == result["weights_sha256"] and meta[b"split"] == b"test"
        assert (meta[b"backend"], meta[b"codec"], meta[b"tensors_sha256"].decode()) == (b"torch-fp32", b"none", result["tensors_sha256"])
    assert (saved["weights"], saved["data"]) == (str(weights_copy.absolute()), str(small_manifest.absolute()))
    from capsule_triage.versions import package_versions  # which code computed the numbers (train/eval lacked the commit)

    assert saved["versions"] == package_versions() and saved["versions"]["capsule-triage"]
    assert saved["host"]["cpu"]["processor"] == machine()["processor"]  # QA 60 #3: which CPU computed them
    roc = cv2.imread(str(tmp_path / "eval" / "roc.png"))
    assert roc is not None and roc.shape == (480, 480, 3)


@needs_shared
def test_weights_that_score_nan_are_refused_not_evaluated(weights_copy, small_manifest, tmp_path):
    """rev91 #9: weights holding NaN gave metrics of NaN in metrics.json, naming nothing."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(weights_copy / "model.safetensors"))
    head = next(k for k in tensors if k.endswith("bias") and tensors[k].shape == (2,))
    tensors[head][1] = float("nan")
    save_file(tensors, str(weights_copy / "model.safetensors"))
    with pytest.raises(WeightsError, match=r"probe: torch-fp32 scored 48 of the 48 stills as NaN or infinity$"):
        evaluate(weights_copy, small_manifest, "test", out_dir=tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def test_the_auc_of_frames_none_of_which_the_model_scored_is_undefined():
    """QA 83 #6: six black stills (no field of view: given 0, as triage run gives them no score) had AUC 0.5000, the
    ties of those 0s; one still with a view makes it defined again."""
    from capsule_triage.evaluate import summarize

    config = ModelConfig.load(SHIPPED / "config.json")
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.tile([1.0, 0.0], (6, 1)) if config.class_names[0] != "bleeding" else np.tile([0.0, 1.0], (6, 1))
    result = summarize(labels, probs, config, view=np.zeros(6, bool), groups=["a", "a", "b", "b", "c", "c"])
    assert math.isnan(result["auc"]) and math.isnan(result["auc_one_vs_rest"]["macro"])
    assert math.isnan(result["groups"]["auc_max_score"])  # rev80 #4: the groups' was still 0.5
    assert all(math.isnan(v) for v in result["auc_one_vs_rest"]["per_class"].values())
    assert summarize(labels, probs, config, view=np.r_[True, np.zeros(5, bool)])["auc"] == 0.5


@needs_shared
def test_stills_without_a_view_count_as_triage_run_treats_them(weights_copy, small_manifest, tmp_path):
    # QA 53 #4: eval scored a black or flat still as any other, while triage run gives such a frame no score
    flat_red, black = tmp_path / "flat_red.png", tmp_path / "black.png"
    cv2.imwrite(str(flat_red), np.full((300, 300, 3), (20, 30, 200), np.uint8))  # a flat picture (BGR): no view
    cv2.imwrite(str(black), np.zeros((300, 300, 3), np.uint8))
    manifest = tmp_path / "with_blank.csv"
    manifest.write_text(small_manifest.read_text() + f"{flat_red},non-bleeding,blank1,test\n{black},bleeding,blank2,test\n")
    result = evaluate(weights_copy, manifest, "test", out_dir=tmp_path / "eval")
    assert result["n"] == 50 and result["frames_without_view"] == 2
    assert any(w.startswith("2 of the 50 frames scored show no field of view (black, too dark, ") for w in result["warnings"])
    rows = pq.read_table(tmp_path / "eval" / "predictions.parquet").to_pylist()
    blank = {Path(r["path"]).name: r for r in rows if not r["has_view"]}
    assert set(blank) == {"flat_red.png", "black.png"} and all(r["has_view"] for r in rows if r not in blank.values())
    for row in blank.values():  # never flagged, as in triage run; the model's own probabilities kept beside
        assert row["score"] == 0.0 and not row["flagged"]
        assert row["prob_bleeding"] + row["prob_non-bleeding"] == pytest.approx(1.0, abs=1e-5) and row["prob_bleeding"] > 0
    seen = evaluate(weights_copy, small_manifest, "test")  # the black bleeding still is a miss; the flat one a true negative
    assert np.array(result["confusion_matrix"]).tolist() == (np.array(seen["confusion_matrix"]) + [[1, 0], [1, 0]]).tolist()
    # QA 63 #3: thresholds.parquet's 0.0 row counted both as flagged (tp 26, fp 36 of 26 + 24 frames: sensitivity 1.0)
    table = pq.read_table(tmp_path / "eval" / "thresholds.parquet").to_pylist()
    first = table[0]
    positives = sum(r["abnormal"] for r in rows)
    assert first["threshold"] == 0.0 and (first["tp"], first["fn"], first["fp"], first["tn"]) == (positives - 1, 1, 50 - positives - 1, 1)
    assert first["flagged_fraction"] == pytest.approx(48 / 50) and first["sensitivity"] == pytest.approx((positives - 1) / positives)
    at = next(r for r in table if r["threshold"] == round(result["threshold"], 2))  # rows with a view are as before
    assert at["tp"] + at["fp"] == sum(r["flagged"] for r in rows if r["score"] >= at["threshold"])


@needs_shared
def test_the_threshold_is_chosen_on_validation_stills_counted_as_triage_run_counts_them(weights_copy, small_manifest, tmp_path, monkeypatch):
    """A validation still without a field of view is never flagged by triage run (and counts so in eval, QA 53 #4), so
    --target-sensitivity chooses as if it were not: left before, a black bleeding still's own score could set the
    threshold, and a flat red normal one the model scores high was a false positive in the stored specificity."""
    flat_red, black = tmp_path / "flat_red.png", tmp_path / "black.png"
    cv2.imwrite(str(flat_red), np.full((300, 300, 3), (20, 30, 200), np.uint8))
    cv2.imwrite(str(black), np.zeros((300, 300, 3), np.uint8))
    rows = [",".join(r.split(",")[:3]) for r in small_manifest.read_text().splitlines()[1:] if r.endswith(",val")]
    plain, with_flat, with_black = (tmp_path / f"{name}.csv" for name in ("plain", "flat", "black"))
    plain.write_text("path,label,group\n" + "\n".join(rows) + "\n")
    (weights_copy / "MODEL_CARD.md").write_text(TRAINED_CARD)  # a card triage train made: eval rewrites its training section
    with_flat.write_text(plain.read_text() + f"{flat_red},non-bleeding,blank1\n")
    with_black.write_text(plain.read_text() + f"{black},bleeding,blank2\n")
    chosen = lambda target, data: evaluate(weights_copy, small_manifest, "test", target_sensitivity=target, val_data=data)  # noqa: E731
    (seen, at), (flat, flat_at) = ((r["threshold_selection"], r["threshold"]) for r in (chosen(0.9, plain), chosen(0.9, with_flat)))
    assert f"validation: {flat['n_val']} frames, {flat['n_val_abnormal']} abnormal, 1 without a field of view (never flagged), " in (
        weights_copy / "MODEL_CARD.md").read_text()
    negatives = seen["n_val"] - seen["n_val_abnormal"]
    assert (seen["n_val_without_view"], flat["n_val_without_view"], flat["n_val"]) == (0, 1, seen["n_val"] + 1)
    assert flat_at == at and flat["val_sensitivity"] == seen["val_sensitivity"]
    assert flat["val_specificity"] == pytest.approx((seen["val_specificity"] * negatives + 1) / (negatives + 1))  # a true negative
    positives = seen["n_val_abnormal"] + 1
    reach = (positives - 1) * 10_000 // positives / 10_000
    with pytest.raises(InputError, match=rf"black.csv: sensitivity 1.0 is out of reach: 1 of the {positives} abnormal validation frames "
                                         rf"show no field of view, which triage run never flags; the highest reachable is {reach:g}$"):
        chosen(1.0, with_black)
    assert chosen(reach, with_black)["threshold"] == chosen(1.0, plain)["threshold"]  # the rest all flagged
    # rev51: a visible abnormal still scored 0.0 (float32 underflow) makes the threshold 0.0; the still without a view is
    # still never flagged in the stored specificity (it was counted flagged: 0 >= 0)
    from capsule_triage import evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "predict_probs", lambda model, pre, images, **kw: np.tile([[1.0, 0.0]], (len(images), 1)))
    zero = chosen(1.0, with_flat)
    assert zero["threshold"] == 0.0 and zero["threshold_selection"]["val_specificity"] == pytest.approx(1 / (negatives + 1))


TRAINED_CARD = "# probe\n\n<!-- triage-eval:training:begin -->\n<!-- triage-eval:training:end -->\n"


@needs_shared
def test_a_card_section_of_json_nested_past_the_parser_is_left_or_named_not_a_traceback(weights_copy, small_manifest):
    """QA 55's remainder: the model card's JSON blocks were parsed with nothing to stop RecursionError (100,000 nested
    brackets in a downloaded card: triage eval --target-sensitivity ended in a traceback after choosing)."""
    card = weights_copy / "MODEL_CARD.md"
    card.write_text(TRAINED_CARD + "\n<!-- triage-eval:damaged:begin -->\n```json\n{\"threshold\": " + "[" * 100_000
                    + "]" * 100_000 + "}\n```\n<!-- triage-eval:damaged:end -->\n")
    result = evaluate(weights_copy, small_manifest, "test", target_sensitivity=0.9)
    assert "Operating threshold" in card.read_text() and result["threshold"] > 0
    with pytest.raises(WeightsError, match=r"probe: the JSON of section 'damaged' in MODEL_CARD.md cannot be read \(nested too deeply\)$"):
        read_card_section(weights_copy, "damaged")


@needs_shared
def test_target_sensitivity_picks_threshold_on_validation_and_stores_it(weights_copy, small_manifest):
    result = evaluate(weights_copy, small_manifest, "test", target_sensitivity=0.95)
    selection = result["threshold_selection"]
    assert selection["n_val"] == 40 and selection["val_sensitivity"] >= 0.95
    config = ModelConfig.load(weights_copy / "config.json")
    assert config.threshold == pytest.approx(result["threshold"]) and config.threshold != 0.5
    assert config.provenance["operating_threshold"]["target_sensitivity"] == 0.95
    again = evaluate(weights_copy, small_manifest, "test")
    assert again["threshold"] == config.threshold and again["confusion_matrix"] == result["confusion_matrix"]
    # QA 20: metrics.json named the weights as they were before the new threshold (not what run.json records)
    from capsule_triage.digests import weights_sha256
    from capsule_triage.card_training import write_training_section

    assert result["weights_sha256"] == again["weights_sha256"] == weights_sha256(weights_copy)
    write_training_section(weights_copy, config)  # a card stating this threshold; a new one without --model-card updates it
    chosen = evaluate(weights_copy, small_manifest, "test", target_sensitivity=0.80)["threshold"]
    assert chosen != config.threshold and f"Operating threshold {chosen}:" in (weights_copy / "MODEL_CARD.md").read_text()
    other = evaluate(weights_copy, small_manifest, "test", target_sensitivity=0.80, backend="torch-bf16")  # QA 30: said nothing
    assert other["warnings"][:2] == ["--target-sensitivity chose the threshold on fp32 scores of the validation frames; the metrics are torch-bf16's",
                                     "torch-bf16 has not been checked against fp32 for these weights (`triage optimize` checks it); its scores "
                                     "may differ from fp32"]
    (weights_copy / "MODEL_CARD.md").write_text("# Our own card\n")  # review rev20: no training section is forced into it
    evaluate(weights_copy, small_manifest, "test", target_sensitivity=0.9)
    assert (weights_copy / "MODEL_CARD.md").read_text() == "# Our own card\n"


@needs_shared
def test_backend_auto_records_the_backend_that_scored(weights_copy, small_manifest):
    """QA 123 #9: `eval --backend auto` recorded "auto" in metrics.json (and on a card section), not the backend that scored
    (here torch-fp32: these weights have no backends.json, as `triage run --backend auto` takes it)."""
    from capsule_triage.classifier import Classifier

    auto, fp32 = (evaluate(weights_copy, small_manifest, "test", backend=b, device="cpu") for b in ("auto", "torch-fp32"))
    assert auto["backend"] == "torch-fp32" and auto["device"] == "cpu", auto
    assert auto["confusion_matrix"] == fp32["confusion_matrix"] and auto["auc"] == pytest.approx(fp32["auc"], abs=1e-6)
    shipped = evaluate(SHIPPED, small_manifest, "test", backend="auto", device="cpu")  # optimized: an ONNX or OpenVINO backend
    assert shipped["backend"] == Classifier.load(SHIPPED, device="cpu").backend.name != "torch-fp32", shipped["backend"]
    # rev109 #2: the threshold chosen makes optimize's choice stale (run then takes torch-fp32); #3: refused before the stills
    # load (rev110 #10: data that is not there is never read)
    for refused, match in (({"target_sensitivity": 0.9}, r"^--backend: auto with --target-sensitivity: the new threshold makes"),
                           ({"border": "none"}, r"^--backend: auto scores with the model's own border mode, circle .*--backend torch-fp32$")):
        with pytest.raises(InputError, match=match):
            evaluate(weights_copy, small_manifest.parent / "not-there.csv", "test", backend="auto", device="cpu", **refused)
    with pytest.raises(InputError, match=r"^--backend: auto or one of torch-fp32, .*, got 'ort-fp33'$"):  # rev110 #8: named as one
        evaluate(weights_copy, small_manifest.parent / "not-there.csv", "test", backend="ort-fp33", device="cpu", border="none")


@needs_shared
def test_model_card_section_round_trip_and_border_override(weights_copy, small_manifest):
    result = evaluate(weights_copy, small_manifest, "test", model_card="test")
    none = evaluate(weights_copy, small_manifest, "test", border="none", model_card="test-border-none")
    assert none["border"] == "none" and ModelConfig.load(weights_copy / "config.json").border == "circle"
    card = (weights_copy / "MODEL_CARD.md").read_text()
    assert card.count("triage-eval:test:begin") == 1 and "triage-eval:training:begin" in card
    # a card the tool starts says what every card must (it began with the title alone)
    assert card.startswith("# test-probe-lite0\n") and "Research use only, not a diagnostic device" in card
    assert "not a diagnostic device" in intended_use(card)
    numbers = read_card_section(weights_copy, "test")
    assert all(numbers[k] == pytest.approx(result[k], abs=1e-4) for k in CARD_KEYS)
    assert read_card_section(weights_copy, "test-border-none")["auc"] == pytest.approx(none["auc"], abs=1e-4)
    from capsule_triage.metrics import intervals_text  # QA 83 #3: points alone

    assert len(intervals_text(result)) == 3 and all(f"\n- {line}.\n" in card for line in intervals_text(result))
    evaluate(weights_copy, small_manifest, "test", model_card="test")  # rewriting keeps one section
    assert (weights_copy / "MODEL_CARD.md").read_text().count("triage-eval:test:begin") == 1
    assert "Measured with these warnings" not in (weights_copy / "MODEL_CARD.md").read_text()
    # the card says what `triage eval` warned of where it quotes the numbers (left for later, QA 30: it printed them only)
    bf16 = evaluate(weights_copy, small_manifest, "val", backend="torch-bf16", model_card="val-bf16")
    section = (weights_copy / "MODEL_CARD.md").read_text().split("triage-eval:val-bf16:begin")[1].split("triage-eval:val-bf16:end")[0]
    assert bf16["warnings"] and all(f"- {w}" in section for w in bf16["warnings"])
    assert "torch-bf16 has not been checked against fp32" in section
    # QA 60 #3: lower-precision scores depend on the CPU's instructions; the card and metrics.json say which computed them
    cpu = machine()
    said = lambda key: "yes" if cpu[key] else "no"
    assert bf16["host"]["cpu"] == {k: v for k, v in cpu.items() if k != "host"} and result["host"]["logical_cpus"] >= bf16["host"]["cpu"]["cpus"] >= 1
    assert (f", computed on {cpu['processor']} with {', '.join(cpu['cpu_features']) or 'none of avx2, avx-512, vnni, amx'} "
            f"(int8 dot products: {said('int8_dot_product')}, native bf16: {said('native_bf16')}).") in section.split("\n")[1]
    assert ", computed on" not in card  # fp32 sections: the same on every CPU
    assert read_card_section(weights_copy, "val-bf16")["auc"] == pytest.approx(bf16["auc"], abs=1e-4)
    # QA 31: after --target-sensitivity chose another threshold, the sections measured at the old one were unmarked
    assert "Sections measured at another threshold" not in (weights_copy / "MODEL_CARD.md").read_text()
    old = read_card_section(weights_copy, "test")["threshold"]
    chosen = evaluate(weights_copy, small_manifest, "test", target_sensitivity=0.8)["threshold"]
    assert round(chosen, 4) != old
    training = (weights_copy / "MODEL_CARD.md").read_text().split("triage-eval:training:begin")[1].split("triage-eval:training:end")[0]
    listed = "test ({0:g}), test-border-none ({0:g}), val-bf16 ({0:g})".format(old)
    assert f"Sections measured at another threshold than this one (before it was chosen; `triage eval --model-card NAME` measures one again): {listed}." in training


@needs_shared
def test_a_section_whose_markers_were_edited_is_refused_not_overwritten(weights_copy, small_manifest, tmp_path):
    """QA 39: with a section's end marker edited away, the next eval appended a second section and the one after
    replaced everything from the first begin marker to the next end: the text written between them was deleted."""
    from capsule_triage.errors import WeightsError

    evaluate(weights_copy, small_manifest, "val", model_card="group")
    card = weights_copy / "MODEL_CARD.md"
    edited = card.read_text().replace("<!-- triage-eval:group:end -->", "Our clinician's notes: reviewed by Dr. X.")
    card.write_text(edited + "\n<!-- triage-eval:training:end -->\n")
    config_before = (weights_copy / "config.json").read_bytes()
    for kwargs in ({"model_card": "group"}, {"target_sensitivity": 0.9}, {"model_card": "other"}):  # the training section: 2 ends
        with pytest.raises(WeightsError, match=r"MODEL_CARD.md: section '(group|training)' has 1 begin and [02] end markers .* mend them by hand"):
            evaluate(weights_copy, small_manifest, "val", out_dir=tmp_path / "e", **kwargs)
        assert card.read_text() == edited + "\n<!-- triage-eval:training:end -->\n" and not (tmp_path / "e").exists()
    assert (weights_copy / "config.json").read_bytes() == config_before  # no threshold chosen either
    card.write_text(edited.replace("Dr. X.", "Dr. X.\n<!-- triage-eval:group:end -->"))  # mended: rewritten between its markers only
    evaluate(weights_copy, small_manifest, "val", model_card="group")
    assert card.read_text().count("triage-eval:group:begin") == 1 and "Our clinician's notes" not in card.read_text()
    assert evaluate(weights_copy, small_manifest, "val")["n"] > 0  # a card it does not write is not checked
    # review rev34: --target-sensitivity alone rewrites the training section only where it begins: nothing else is refused
    text = card.read_text().replace("<!-- triage-eval:training:begin -->", "")
    card.write_text(text)
    measured = read_card_section(weights_copy, "group")["threshold"]
    chosen = evaluate(weights_copy, small_manifest, "val", target_sensitivity=0.9)
    assert card.read_text() == text and round(chosen["threshold"], 4) != measured
    # QA 65 #4: with no training section to mark it, the card's section at the old threshold went unsaid
    assert chosen["warnings"][-1] == (f"{card}: section group was measured at threshold {measured:g}, not at the new "
                                      f"{chosen['threshold']:g}, and the card has no training section to say so: "
                                      "`triage eval --model-card NAME` measures one again")


@needs_shared
def test_codec_round_trip_is_scored_recorded_and_used_for_the_threshold(weights_copy, small_manifest, tmp_path):
    clean = evaluate(weights_copy, small_manifest, "test", out_dir=tmp_path / "clean")
    coded = evaluate(weights_copy, small_manifest, "test", codec="jpeg:30", out_dir=tmp_path / "coded", model_card="test-jpeg-30")
    assert coded["codec"] == "jpeg:30" and "codec" not in clean
    before, after = (pq.read_table(tmp_path / name / "predictions.parquet") for name in ("clean", "coded"))
    assert before.column("path").to_pylist() == after.column("path").to_pylist()
    assert np.abs(before.column("score").to_numpy() - after.column("score").to_numpy()).max() > 1e-3  # other pixels were scored
    assert read_card_section(weights_copy, "test-jpeg-30")["codec"] == "jpeg:30"
    assert "after a `jpeg:30` round trip" in (weights_copy / "MODEL_CARD.md").read_text()
    chosen = evaluate(weights_copy, small_manifest, "test", target_sensitivity=0.95, codec="jpeg:30")["threshold_selection"]
    assert chosen["codec"] == "jpeg:30"
    assert ModelConfig.load(weights_copy / "config.json").provenance["operating_threshold"]["codec"] == "jpeg:30"
    with pytest.raises(InputError, match="expected h264:CRF or jpeg:QUALITY"):
        evaluate(weights_copy, small_manifest, "test", codec="png:3")


@needs_shared
def test_cli_eval_summary_and_errors(weights_copy, small_manifest, tmp_path):
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(weights_copy), str(small_manifest), "--split", "val", "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert "AUC" in result.output and "Confusion matrix" in result.output and "bleeding vs non-bleeding at threshold " in result.output
    assert "; 2-class accuracy " in result.output and (tmp_path / "e" / "metrics.json").exists()  # QA 25: the figures were unlabelled
    carded = runner.invoke(app, ["eval", str(weights_copy), str(small_manifest), "--split", "val", "--model-card", "val-check"])
    assert carded.exit_code == 0 and f"Wrote section val-check of {weights_copy / 'MODEL_CARD.md'}" in carded.output  # QA 65 #11
    bad = runner.invoke(app, ["eval", str(weights_copy), str(tmp_path / "missing.csv")])
    assert bad.exit_code == 2 and "Error:" in bad.output
    bad = runner.invoke(app, ["eval", str(tmp_path / "nowhere"), str(small_manifest)])
    assert bad.exit_code == 2 and "Error:" in bad.output
    bad = runner.invoke(app, ["eval", str(weights_copy), str(small_manifest), "--codec", "h264:99"])
    assert bad.exit_code == 2 and "--codec" in bad.output and "CRF must be in 0-51" in bad.output
    card, config = weights_copy / "MODEL_CARD.md", weights_copy / "config.json"
    before = (card.read_bytes() if card.exists() else None, config.read_bytes())
    for value in ("0", "1.5", "-0.2", "nan"):  # QA 56 #9: 0 was refused in the data file's name, after loading the model
        bad = runner.invoke(app, ["eval", str(weights_copy), str(small_manifest), "--target-sensitivity", value])
        assert bad.exit_code == 2 and bad.output.strip() == ("Error: --target-sensitivity: a sensitivity in (0, 1] (1: every "
                                                             f"abnormal validation frame flagged), got {float(value):g}"), bad.output
    for val_data in (small_manifest, tmp_path / "missing.csv"):  # QA 56 #8: ignored without --target-sensitivity, even missing
        bad = runner.invoke(app, ["eval", str(weights_copy), str(small_manifest), "--val-data", str(val_data)])
        assert bad.exit_code == 2 and bad.output.strip() == ("Error: --val-data: is the data --target-sensitivity chooses the "
                                                             "threshold on; give both, or neither (the evaluation itself scores "
                                                             "DATA's --split)"), bad.output
    bad = runner.invoke(app, ["eval", str(weights_copy), str(small_manifest), "--force"])  # QA 75: accepted, did nothing
    assert bad.exit_code == 2 and bad.output.strip() == ("Error: --force: replaces the --out folder of an earlier evaluation; "
                                                         "give --out DIR with it, or leave it out (config.json and "
                                                         "--model-card's section are rewritten without it)"), bad.output
    # QA 56 #4: the evaluation went into the training section, which the same command then rewrote: nothing, silently
    bad = runner.invoke(app, ["eval", str(weights_copy), str(small_manifest), "--model-card", "training"])
    assert bad.exit_code == 2 and bad.output.strip() == ("Error: training: the card's training section is written from config.json's "
                                                         "provenance (and rewritten by this very command); name the evaluation's "
                                                         "section otherwise, e.g. test"), bad.output
    assert (card.read_bytes() if card.exists() else None, config.read_bytes()) == before


@needs_shared
@pytest.mark.skipif(not SHIPPED.exists(), reason="shipped model not built yet")
def test_shipped_model_reproduces_its_model_card():
    """`triage eval` on wcebleedgen/test gives the numbers its MODEL_CARD.md quotes, and meets the targets."""
    card = read_card_section(SHIPPED, "test")
    result = evaluate(SHIPPED, WCE / "manifest.csv", "test")
    assert result["confusion_matrix"] == card["confusion_matrix"]
    assert all(result[k] == pytest.approx(card[k], abs=1e-4) for k in CARD_KEYS)
    assert result["auc"] >= 0.995 and result["sensitivity"] >= 0.97 and result["specificity"] >= 0.95
    raw = read_card_section(SHIPPED, "test-border-none")
    assert raw["border"] == "none" and result["auc"] >= raw["auc"] - 0.01


@needs_shared
@pytest.mark.parametrize("codec", ["h264:23", "h264:28"])
def test_shipped_model_card_states_its_results_on_compressed_frames(codec):
    """The test split after an H.264 round trip, as a study reaches the model: the card's numbers are
    what `triage eval --codec` computes, and the model meets its targets there too."""
    card = read_card_section(SHIPPED, f"test-{codec.replace(':', '-')}")
    result = evaluate(SHIPPED, WCE / "manifest.csv", "test", codec=codec)
    assert card["codec"] == result["codec"] == codec
    assert result["confusion_matrix"] == card["confusion_matrix"]
    assert all(result[k] == pytest.approx(card[k], abs=1e-4) for k in CARD_KEYS)
    assert result["auc"] >= 0.995 and result["sensitivity"] >= 0.97 and result["specificity"] >= 0.9
    chosen = ModelConfig.load(SHIPPED / "config.json").provenance["operating_threshold"]
    assert chosen["codec"] == "h264:23"  # the threshold was chosen on validation frames as video delivers them


@pytest.mark.parametrize("backend", ["ov-fp32", "ort-int8", "ov-bf16"])
def test_each_backends_model_card_section_is_what_eval_computes(backend):
    """The card's numbers for the backend `triage run` runs (ov-fp32) and for the rejected lower
    precisions are those `triage eval --backend` computes; what runs meets the targets."""
    from capsule_triage.backends import runs_here
    from capsule_triage.cpu_info import numerics

    if not runs_here(backend):
        pytest.skip(f"{backend} does not run on this CPU")
    section = f"test-{backend}"
    if backend == "ort-int8" and not numerics()["int8_dot_product"]:
        section += "-without-vnni"  # CI of 77c58f7: pre-VNNI x86 saturates uint8 x int8 pair sums; the card says both
    card = read_card_section(SHIPPED, section)
    result = evaluate(SHIPPED, WCE / "manifest.csv", "test", backend=backend)
    assert result["confusion_matrix"] == card["confusion_matrix"]
    rejected = [w for w in result.get("warnings", []) if "was rejected by the agreement check" in w]  # QA 30: said by run, not by eval
    assert len(rejected) == (backend != "ov-fp32") and all(w.startswith(f"{backend} was rejected") for w in rejected), result.get("warnings")
    assert all(result[k] == pytest.approx(card[k], abs=1e-4) for k in CARD_KEYS)
    assert result["auc"] >= 0.995 and result["sensitivity"] >= 0.97 and result["specificity"] >= 0.95
    with pytest.raises(InputError, match="omit --border"):
        evaluate(SHIPPED, WCE / "manifest.csv", "test", backend=backend, border="none")


def test_triage_run_scores_the_shipped_model_in_fp32_as_its_agreement_check_requires():
    """Only the fp32 backends passed the shipped model's agreement check (562 real frames incl. the
    374 test frames); auto runs one of them, which scores the test split exactly as PyTorch fp32."""
    from capsule_triage.classifier import BACKENDS_FILE, Classifier

    report = json.loads((SHIPPED / BACKENDS_FILE).read_text())
    assert report["check_frames"] == 562 and report["check_frames_uncertain"] >= 10
    accepted = {k for k, v in report["candidates"].items() if v["accepted"]}
    assert accepted and all(k.endswith("fp32") for k in accepted)
    name = Classifier.load(SHIPPED, device="cpu").backend.name
    assert name in accepted
    assert read_card_section(SHIPPED, "test")["confusion_matrix"] == evaluate(SHIPPED, WCE / "manifest.csv", "test", backend=name)["confusion_matrix"]


@needs_shared
def test_cli_eval_says_when_a_new_threshold_outdates_backends_json(weights_copy, small_manifest):
    from capsule_triage.classifier import BACKENDS_FILE
    from capsule_triage.digests import weights_sha256

    (weights_copy / BACKENDS_FILE).write_text(json.dumps({"weights_sha256": weights_sha256(weights_copy), "candidates": {}}))
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["eval", str(weights_copy), str(small_manifest), "--target-sensitivity", "0.95"])
    assert result.exit_code == 0, result.output
    assert f"Note: {weights_copy / BACKENDS_FILE} was checked with the previous config; until `triage optimize`" in result.output


@needs_shared
def test_threshold_needs_normal_validation_frames_and_out_must_be_a_folder(weights_copy, small_manifest, tmp_path):
    rows = small_manifest.read_text().splitlines()
    only_abnormal = tmp_path / "bleeding_only.csv"
    only_abnormal.write_text("\n".join([rows[0]] + [r for r in rows[1:] if ",bleeding," in r]) + "\n")
    before = (weights_copy / "config.json").read_text()
    with pytest.raises(InputError, match="bleeding_only.csv: no normal frame in the validation split"):
        evaluate(weights_copy, small_manifest, "test", target_sensitivity=0.9, val_data=only_abnormal)
    only_normal = tmp_path / "normal_only.csv"  # QA 118 #5: "no positive (abnormal) frame to choose a threshold on"
    only_normal.write_text("\n".join([rows[0]] + [r for r in rows[1:] if ",non-bleeding," in r]) + "\n")
    with pytest.raises(InputError, match=r"^\S*normal_only.csv: no abnormal frame \(bleeding\) in the validation split to choose a "
                                         "threshold on$"):
        evaluate(weights_copy, small_manifest, "test", target_sensitivity=0.9, val_data=only_normal)
    assert (weights_copy / "config.json").read_text() == before  # no NaN specificity stored
    (tmp_path / "a_file").write_text("x")
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["eval", str(weights_copy), str(small_manifest), "--out", str(tmp_path / "a_file")])
    assert result.exit_code == 2 and result.output.strip() == f"Error: {tmp_path / 'a_file'}: output path exists and is not a folder"


@needs_shared
def test_a_threshold_chosen_on_other_frames_of_the_patients_scored_is_said(weights_copy, small_manifest, tmp_path):
    """QA 83 #1: --val-data of other frames of the very patients scored (alternate frames of 6 patients each side: sensitivity
    and specificity 1.0 at its threshold) gave no word: frames were compared by content only."""
    scored = [r.split(",") for r in small_manifest.read_text().splitlines()[1:] if r.endswith(",test")]
    val = tmp_path / "val.csv"  # the next frame after each scored one: other images, their patients (near-duplicate groups)
    rows = [(WCE / row["path"], label, row["near_dup_group"]) for label in ("non-bleeding", "bleeding")
            for row in manifest_rows("test", label)[1::7][:24]]
    val.write_text("path,label,group\n" + "".join(f"{p},{label},{g}\n" for p, label, g in rows))
    groups = {r[2] for r in scored}
    shared = groups & {g for _, _, g in rows}
    assert shared and not {str(p) for p, _, _ in rows} & {r[0] for r in scored}
    result = evaluate(weights_copy, small_manifest, "test", target_sensitivity=0.9, val_data=val)
    said = [w for w in result["warnings"] if "group names (patients)" in w]
    assert said and said[0].startswith(f"{len(shared)} of the {len(groups)} group names (patients) of the frames scored (test) also "
                                        f"name frames in {val}, on which the threshold was chosen ("), said
    assert said[0].endswith("): if they are the same patients, the figures at that threshold are optimistic (choose it on other "
                            "patients)")  # rev80 #2: names alone (two sources numbering patients 1, 2, ... share names only)
    other = tmp_path / "other.csv"  # patients of the train split: no word
    other.write_text("path,label,group\n" + "".join(f"{WCE / row['path']},{label},{row['near_dup_group']}\n"
                                                     for label in ("non-bleeding", "bleeding") for row in manifest_rows("train", label)[::40][:12]))
    assert not any("group names (patients)" in w for w in evaluate(weights_copy, small_manifest, "test", target_sensitivity=0.9,
                                                               val_data=other).get("warnings", []))


def test_the_shipped_model_s_threshold_was_chosen_on_its_validation_frames_as_its_config_says(tmp_path, monkeypatch):
    """QA 83 #2: `triage eval --split val` of the shipped model gave the very figures its threshold was chosen to reach
    (sensitivity 0.9866, specificity 0.9276), without a word: it has no threshold_images.parquet (weights from before it
    was written), and its config.json says where the threshold was chosen: the validation split of its training data."""
    from capsule_triage.training_images import read_training_images, threshold_chosen_on

    config = ModelConfig.load(SHIPPED / "config.json")
    known = read_training_images(SHIPPED)
    chosen = threshold_chosen_on(SHIPPED, config, known)
    assert len(chosen) == config.provenance["operating_threshold"]["n_val"] == 301 and all(known[d] == "val" for d in chosen)
    hand_set = replace(config, threshold=0.5)  # a threshold set by hand since: chosen on nothing recorded
    assert threshold_chosen_on(SHIPPED, hand_set, known) == set()
    elsewhere = replace(config, provenance={**config.provenance, "operating_threshold": {
        **config.provenance["operating_threshold"], "data": "other.csv"}})  # chosen on another manifest's val split
    assert threshold_chosen_on(SHIPPED, elsewhere, known) == set() and threshold_chosen_on(SHIPPED, config, None) == set()
    recipe = config.provenance["training"]["recipe"]  # rev80 #5: the same manifest typed otherwise (absolute, from elsewhere)
    typed = replace(config, provenance={**config.provenance, "training": {**config.provenance["training"], "recipe": {
        **recipe, "data": str(tmp_path / "m.csv")}}, "operating_threshold": {**config.provenance["operating_threshold"], "data": "m.csv"}})
    (tmp_path / "m.csv").write_text("path,label\n")
    monkeypatch.chdir(tmp_path)
    assert threshold_chosen_on(SHIPPED, typed, known) == chosen


@needs_shared
def test_val_data_without_splits_is_used_whole_and_a_threshold_chosen_on_the_scored_frames_is_said(weights_copy, small_manifest, tmp_path):
    """QA 39: --val-data without splits chose the threshold on 12 of its 60 frames (training's val fraction redrawn
    from it), and a threshold chosen on the very frames then scored was not said."""
    rows = small_manifest.read_text().splitlines()
    unsplit = tmp_path / "val.csv"  # the 48 test frames with no split column
    unsplit.write_text("path,label,group\n" + "".join(",".join(r.split(",")[:3]) + "\n" for r in rows[1:] if r.endswith(",test")))
    result = evaluate(weights_copy, small_manifest, "test", target_sensitivity=0.9, val_data=unsplit)
    assert result["threshold_selection"]["n_val"] == 48 and "val_sha256" not in result["threshold_selection"]
    assert result["threshold_selection"]["method"] == "highest threshold with sensitivity >= 0.9 on every frame of the validation data"
    assert f"48 of the 48 frames scored (test) are frames the threshold was chosen on ({unsplit}): the figures at that threshold are optimistic" in result["warnings"]
    # QA 65 #3: a later evaluation of those frames, without --target-sensitivity, said nothing (sensitivity 1.0 unqualified)
    later = evaluate(weights_copy, small_manifest, "test")
    assert ("48 of the 48 frames scored (test) are frames the threshold was chosen on: the figures at that threshold are "
            "optimistic") in later["warnings"]
    split = evaluate(weights_copy, small_manifest, "test", target_sensitivity=0.9, val_data=small_manifest)  # its val split only
    assert split["threshold_selection"]["n_val"] == 40 and not any("chosen on" in w for w in split.get("warnings", []))
    assert not any("chosen on" in w for w in evaluate(weights_copy, small_manifest, "test").get("warnings", []))  # chosen on val now
    assert any("40 of the 40 frames scored (val) are frames the threshold" in w for w in evaluate(weights_copy, small_manifest, "val")["warnings"])
    # review rev34: --val-data of the model's own training frames chose the threshold on them without a word
    from capsule_triage.datasets import read_samples
    from capsule_triage.training_images import image_digests, write_training_images

    val_rows = [s for s in read_samples(small_manifest)[0] if s.split == "val"]  # recorded here as what the model trained on
    write_training_images(weights_copy, [replace(s, split="train") for s in val_rows], image_digests(val_rows))
    trained = evaluate(weights_copy, small_manifest, "test", target_sensitivity=0.9, val_data=small_manifest)
    assert (f"40 of the 40 frames the threshold was chosen on ({small_manifest}) are this model's training frames: it fits frames the "
            "model learned, so its sensitivity on new frames may fall short of the target") in trained["warnings"]
    test_only = tmp_path / "test_only.csv"  # review rev34: 'no training split record ... pass validation data', which it had;
    # rev35: with train rows, training's val fraction was drawn from them and chosen on, unsaid
    test_only.write_text("\n".join([rows[0]] + [r.replace(",val", ",train") for r in rows[1:] if r.endswith(",val")]
                                   + [r for r in rows[1:] if r.endswith(",test")]) + "\n")
    with pytest.raises(InputError, match=r"test_only.csv: no 'val' rows \(splits: test, train\); give validation data with a 'val' split, or "
                                         r"without splits to choose on all of it"):
        evaluate(weights_copy, small_manifest, "test", target_sensitivity=0.9, val_data=test_only)


@needs_shared
def test_a_failing_eval_leaves_the_operating_threshold_alone(weights_copy, small_manifest, tmp_path):
    """--target-sensitivity rewrites config.json only once the evaluation has succeeded: a bad --model-card
    name or an --out under a file rewrote it and then failed (the second with a traceback)."""
    from capsule_triage.errors import OutputError

    before = (weights_copy / "config.json").read_text()
    with pytest.raises(InputError, match="bad name: model card section names use"):
        evaluate(weights_copy, small_manifest, "test", target_sensitivity=0.9, model_card="bad name")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OutputError, match="a_file: is not a folder, so the output cannot be created under it"):
        evaluate(weights_copy, small_manifest, "test", target_sensitivity=0.9, out_dir=tmp_path / "a_file" / "sub")
    assert (weights_copy / "config.json").read_text() == before
    out = tmp_path / "eval"
    evaluate(weights_copy, small_manifest, "test", target_sensitivity=0.9, out_dir=out)
    assert (weights_copy / "config.json").read_text() != before and (out / "groups.parquet").exists()
    with pytest.raises(OutputError, match="eval: output already exists; use --force to replace it"):
        evaluate(weights_copy, small_manifest, "val", out_dir=out)
    evaluate(weights_copy, small_manifest, "val", out_dir=out, force=True)  # no groups this time: none left from the test split
    assert json.loads((out / "metrics.json").read_text())["split"] == "val"
    assert (out / "groups.parquet").exists() == ("groups" in json.loads((out / "metrics.json").read_text()))
    # QA 31: --out wrote into any folder, over its metrics.json, beside its other files
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.json").write_text("keep")
    (other / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    for force in (False, True):  # review rev29: not told to use --force, which would not help
        with pytest.raises(OutputError, match=r"other: folder holds files this command does not write \(notes.txt\); --force replaces only an earlier"):
            evaluate(weights_copy, small_manifest, "val", out_dir=other, force=force)
    (other / "metrics.json").unlink()
    with pytest.raises(OutputError, match=r"other: folder is not an earlier triage output \(no metrics.json\)"):
        evaluate(weights_copy, small_manifest, "val", out_dir=other, force=True)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"] and not list(tmp_path.glob(".other*"))
    evaluate(weights_copy, small_manifest, "val", out_dir=tmp_path / "empty")  # an empty folder is filled without --force
    assert (tmp_path / "empty" / "predictions.parquet").is_file() and not list(tmp_path.glob(".*partial*"))
    (out / ".DS_Store").write_text("finder")  # review rev29: a file browser's file kept an earlier evaluation from being replaced
    evaluate(weights_copy, small_manifest, "test", out_dir=out, force=True)
    assert json.loads((out / "metrics.json").read_text())["split"] == "test"


def test_the_model_card_of_a_three_class_model_says_what_its_numbers_are_and_gives_each_class(tmp_path):
    """QA 16: a 3-class card showed accuracy 33% (highest class) beside sensitivity 100% and
    specificity 0% (the suspicion score of two abnormal classes) without saying so, and no class's own numbers."""
    import numpy as np

    from capsule_triage.evaluate import summarize
    from capsule_triage.model_card import write_card_section
    from capsule_triage.model_config import ModelConfig

    config = ModelConfig(architecture="resnet50", class_names=["GC", "GU", "CG"], abnormal_classes=["GC", "GU"], name="three")
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    probs = np.array([[.7, .2, .1], [.2, .5, .3], [.1, .8, .1], [.3, .3, .4], [.1, .1, .8], [.2, .2, .6], [.5, .1, .4], [.1, .3, .6]])
    result = {**summarize(labels, probs, config), "model": "three", "data": "ds3", "split": "test", "border": "fov"}
    (tmp_path / "w").mkdir()
    card = write_card_section(tmp_path / "w", "test-results", result).read_text()
    assert "suspicion score (the summed probability of GC, GU) reaches the threshold" in card
    assert "Accuracy and the confusion matrix are those of the class with the highest probability." in card
    assert "| GC | 2 | 50.00% | 50.00% | 83.33% | 50.00% |" in card and "| CG | 4 | 75.00% | 75.00% | 75.00% | 75.00% |" in card
    assert "| macro average (3 classes) | 8 | 58.33% | 58.33% | 80.56% | 58.33% |" in card  # rev24: the card lacked seed A's averages
    assert "n/a counts as 0" not in card
    # QA 71 #1: the per-class sensitivity (of the class of highest probability) read as triage's; each abnormal class's
    # share flagged at the threshold was said nowhere
    assert "Per class, by the class of highest probability:" in card
    assert "Flagged at the operating threshold, by abnormal class: GC 2 of 2 (100.00%), GU 2 of 2 (100.00%)." in card
    picky = ModelConfig(architecture="resnet50", class_names=["GC", "GU", "CG"], abnormal_classes=["GC", "GU"], name="three", threshold=0.8)
    assert summarize(labels, probs, picky)["triage_by_class"] == {"GC": {"n": 2, "flagged": 1, "sensitivity": 0.5},
                                                                  "GU": {"n": 2, "flagged": 1, "sensitivity": 0.5}}
    two = ModelConfig(architecture="resnet50", class_names=["CG", "GC"], abnormal_classes=["GC"], name="two")
    assert "triage_by_class" not in summarize(labels % 2, probs[:, :2] / probs[:, :2].sum(1, keepdims=True), two)
    probs[:, 1] = 0  # GU never predicted: its precision is 0/0 (QA 65 #11: counted 0 in the macro average, unsaid)
    result = {**summarize(labels, probs, config), "model": "three", "data": "ds3", "split": "test", "border": "fov"}
    card = write_card_section(tmp_path / "w", "test-results", result).read_text()
    assert "| GU | 2 | n/a | 0.00% |" in card
    assert "n/a counts as 0 in the macro average (as scikit-learn's zero_division): GU (precision)." in card


@needs_shared
def test_split_names_as_manifests_write_them_and_one_sided_frames_are_explained(tmp_path):
    """QA 31: --split validation was refused though a manifest's 'validation' rows are read as val; frames of one
    kind gave 'AUC nan, sensitivity nan' unexplained."""
    data = tmp_path / "neg.csv"
    with open(data, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "split"])
        for row in manifest_rows("test", "non-bleeding")[:10]:
            writer.writerow([WCE / row["path"], "non-bleeding", "Validation"])
    result = evaluate(SHIPPED, data, "validation")
    assert result["split"] == "val" and result["n"] == 10 and np.isnan(result["auc"])
    assert result["warnings"] == ["none of the 10 frames scored (val) is bleeding: AUC and sensitivity are undefined (nan); "
                                  "score frames of both kinds"]


_INTERRUPTED_EVAL = """
import signal, sys
import capsule_triage.evaluate as evaluation
stage, wrapped = sys.argv[1], {"scoring": "predict_probs", "writing": "write_outputs"}[sys.argv[1]]
original = getattr(evaluation, wrapped)
def interrupted(*args, **kwargs):  # Ctrl-C while the test split is scored, or half-way through the writes
    if stage == "writing" or args[2].shape[0] == 48:
        signal.raise_signal(signal.SIGINT)
    return original(*args, **kwargs)
setattr(evaluation, wrapped, interrupted)
sys.argv = ["triage", *sys.argv[2:]]
from capsule_triage.cli import main
main()
"""


@needs_shared
def test_an_interrupted_eval_says_whether_it_wrote_nothing_or_everything(weights_copy, small_manifest, tmp_path):
    """QA 56 #10: Ctrl-C ended triage eval with exit 1 and no line. Now 130 and one line; an interrupt while the results
    are written (config.json's threshold, the card, --out) waits until all of them are, so it is never some of them.
    In a process of its own (`triage eval` with a SIGINT raised at that moment): run inside this test process after
    test_backends, the same test ended it with a SIGSEGV (no faulthandler output; cause not found, 2026-12-03)."""
    import subprocess
    import sys

    out, card, config = tmp_path / "e", weights_copy / "MODEL_CARD.md", weights_copy / "config.json"
    args = ["eval", str(weights_copy), str(small_manifest), "--target-sensitivity", "0.9", "--model-card", "test", "--out", str(out)]
    before = (card.read_bytes() if card.exists() else None, config.read_bytes())
    done = subprocess.run([sys.executable, "-c", _INTERRUPTED_EVAL, "scoring", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr
    said = f"{config}, {card} unchanged; {out} not created" if card.exists() else f"{config} unchanged; {card}, {out} not created"
    assert done.stderr.strip().splitlines()[-1] == f"Interrupted; nothing was written ({said}).", done.stderr  # QA 65 #11
    assert (card.read_bytes() if card.exists() else None, config.read_bytes()) == before and not out.exists()
    done = subprocess.run([sys.executable, "-c", _INTERRUPTED_EVAL, "writing", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"Interrupted after the results were written ({config}, {card}, {out}).", done.stderr
    assert (out / "metrics.json").is_file() and "<!-- triage-eval:test:begin -->" in card.read_text()
    assert json.loads(config.read_text())["provenance"]["operating_threshold"]["target_sensitivity"] == 0.9


@needs_shared
def test_the_validation_frames_are_the_ones_training_recorded_however_the_data_changed(weights_copy, tmp_path, monkeypatch):
    """QA 69 #3: `--split val` and `--target-sensitivity` redrew the validation share from DATA as it is now: with images
    added since training, training frames were scored (and the threshold chosen) as validation frames; and data that is
    not the model's, with train rows but no val rows, had a share drawn from its train rows and the threshold stored."""
    from capsule_triage.datasets import read_samples, select
    from capsule_triage.eval_data import ADDED, training_validation
    from capsule_triage.splits import assign_validation
    from capsule_triage.training_images import image_digests, write_training_images

    def write(path: Path, rows: list[dict], patient: dict | None = None) -> Path:  # each image its own patient but as given
        path.write_text("path,label,patient\n" + "".join(f"{WCE / r['path']},{r['label']},{(patient or {}).get(r['path'], r['path'])}\n"
                                                         for r in rows))
        return path

    first = [r for label in ("non-bleeding", "bleeding") for r in manifest_rows("train", label)[::40][:12]]
    data = write(tmp_path / "pool.csv", first)  # no split column: training drew its validation share
    trained = assign_validation(read_samples(data)[0], val_fraction=0.25, seed=0)
    write_training_images(weights_copy, trained, image_digests(trained))  # what triage train records
    config = ModelConfig.load(weights_copy / "config.json")
    config.provenance = {**config.provenance, "training": {"data_path": str(data), "split": {"val_fraction": 0.25, "seed": 0}}}
    config.save(weights_copy / "config.json")
    recorded = {str(s.path) for s in trained if s.split == "val"}
    scored = lambda out: set(pq.read_table(out / "predictions.parquet").column("path").to_pylist())  # noqa: E731
    same = evaluate(weights_copy, data, "val", out_dir=tmp_path / "same")
    assert scored(tmp_path / "same") == recorded and not any("validation share" in w for w in same.get("warnings", []))

    added = [r for label in ("non-bleeding", "bleeding") for r in manifest_rows("train", label)[5::40][:3]]
    val_patient = next(r["path"] for r in first if str(WCE / r["path"]) in recorded)
    write(data, added[:3] + first + added[3:], {added[0]["path"]: val_patient})  # images added since, one of a val patient
    now = read_samples(data)[0]
    assert {str(s.path) for s in select(training_validation(now, config), "val")} != recorded  # what was scored before
    grown = evaluate(weights_copy, data, "val", out_dir=tmp_path / "grown")
    assert scored(tmp_path / "grown") == recorded and grown["n"] == len(recorded)
    assert (f"{data}: not the data the model was trained on as it was then, so no validation share is redrawn from it: the "
            f"validation frames are the {len(recorded)} (of training's {len(recorded)}) whose bytes training recorded as validation "
            f"frames; 6 image(s) it did not record (added or changed since) are in neither share (split {ADDED!r})") in grown["warnings"]
    chosen = evaluate(weights_copy, data, "val", target_sensitivity=0.9)
    assert chosen["threshold_selection"]["n_val"] == len(recorded)
    assert sum("no validation share is redrawn" in w for w in chosen["warnings"]) == 1  # said once, for both
    # review rev65: the val patient's added frame was 'another split' (metrics called optimistic); it is in none
    assert not any("also has frames in another split" in w for w in grown["warnings"] + chosen["warnings"])
    from capsule_triage import eval_data
    from capsule_triage.digests import file_sha256

    hashed = []  # review rev65: --split val and --target-sensitivity hashed every training-pool image twice
    monkeypatch.setattr(eval_data, "image_digests", lambda samples: hashed.extend(s.path for s in samples) or
                        [file_sha256(s.path) for s in samples])
    evaluate(weights_copy, data, "val", target_sensitivity=0.9)
    assert len(hashed) == len(set(hashed)) == 30
    monkeypatch.undo()
    trained_frames = {str(s.path) for s in trained if s.split == "train"}  # review rev65: --split train redrew as well
    assert evaluate(weights_copy, data, "train", out_dir=tmp_path / "train")["n"] == len(trained_frames)
    assert scored(tmp_path / "train") == trained_frames

    before = (weights_copy / "config.json").read_bytes()
    other = tmp_path / "other.csv"  # held-out frames with train and test rows, no val rows, and one of training's val frames
    held_out = [r for label in ("non-bleeding", "bleeding") for r in manifest_rows("test", label)[:6]]
    other.write_text("path,label,split\n" + "".join(f"{WCE / r['path']},{r['label']},{('train', 'test')[i % 2]}\n" for i, r in
                                                    enumerate(held_out)) + f"{sorted(recorded)[0]},bleeding,train\n")
    with pytest.raises(InputError, match=r"other.csv: the data has no 'val' rows and is not recognised as this model's training data "
                                         r"\(by the path, the digest or the images' bytes training recorded\), so there is no validation "
                                         r"share of it to redraw; give validation data with --val-data$"):
        evaluate(weights_copy, other, "test", target_sensitivity=0.9)
    assert (weights_copy / "config.json").read_bytes() == before


def test_a_threshold_chosen_for_two_abnormal_classes_says_each_ones_share_and_a_class_it_never_saw(tmp_path):
    """QA 71 #1, #2: with two abnormal classes, `--target-sensitivity` printed a pooled validation sensitivity (bleeding 2 of 4
    and ulcer 4 of 4 read 0.75), and chose it on validation frames without a single polyp frame, without a word."""
    from conftest import demo_clip_frames
    from capsule_triage.weights import create_model, save_weights

    torch.manual_seed(0)
    config = ModelConfig(architecture="test_efficientnet", class_names=["normal", "bleeding", "ulcer", "polyp"],
                         abnormal_classes=["bleeding", "ulcer", "polyp"], input_size=32, name="four")
    weights = save_weights(tmp_path / "four", create_model(config), config)
    frames, rows = demo_clip_frames(), ["path,label,split"]
    for i, (label, split) in enumerate([("normal", "val")] * 4 + [("bleeding", "val")] * 3 + [("ulcer", "val")] * 3
                                       + [("normal", "test")] * 3 + [("polyp", "test")] * 3):
        assert cv2.imwrite(str(tmp_path / f"f{i}.png"), cv2.cvtColor(frames[i * 3], cv2.COLOR_RGB2BGR))
        rows.append(f"f{i}.png,{label},{split}")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    app = typer.Typer()
    register(app)
    done = CliRunner().invoke(app, ["eval", str(weights), str(tmp_path / "data.csv"), "--target-sensitivity", "0.5"])
    assert done.exit_code == 0, done.output
    selection = ModelConfig.load(weights / "config.json").provenance["operating_threshold"]
    by_class = selection["val_by_class"]
    assert {name: c["n"] for name, c in by_class.items()} == {"bleeding": 3, "ulcer": 3, "polyp": 0}
    assert sum(c["flagged"] for c in by_class.values()) / 6 == selection["val_sensitivity"]
    shown = ", ".join(f"{name} {c['flagged']}/{c['n']}" for name, c in by_class.items())
    assert f"sensitivity {score_text(selection['val_sensitivity'], 4)} ({shown} flagged), specificity" in done.output
    assert (f"Warning: {tmp_path / 'data.csv'}: no validation frame of polyp: the threshold's sensitivity 0.5 was reached without it, "
            "and says nothing of how such frames score") in done.output
    assert "Flagged at the threshold, by abnormal class: bleeding 0/0, ulcer 0/0, polyp " in done.output  # the test split: polyp only
