"""Knowledge distillation (`triage train --distill`): the loss, the teacher's checks (classes, weights, the same
teacher on resume), real tiny runs toward a teacher (one reading its own input size), and the CLI's one-line refusal."""

from __future__ import annotations

import copy
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch
import typer
from safetensors.torch import save_file
from typer.testing import CliRunner

from capsule_triage.cli_models import register
from capsule_triage.datasets import read_samples, select
from capsule_triage.stills import load_images
from capsule_triage.distill import Distillation, load_teacher, mismatch
from capsule_triage.errors import InputError, WeightsError
from capsule_triage.card_training import write_training_section
from capsule_triage.model_config import ModelConfig
from capsule_triage.preprocess import Preprocessor
from capsule_triage.train import TrainOptions, make_config, train
from capsule_triage.weights import create_model, load_model, save_weights
from conftest import WCE, needs_shared, write_train_manifest

torch.set_num_threads(2)
CLASSES = ["non-bleeding", "bleeding"]


def _config(**kwargs) -> ModelConfig:
    base = dict(architecture="test_efficientnet", class_names=CLASSES, abnormal_classes=["bleeding"], input_size=64, border="circle")
    return ModelConfig(**{**base, **kwargs})


def _teacher_folder(folder: Path, config: ModelConfig, p_bleeding: float) -> Path:
    """A model that says P(bleeding) = p_bleeding of every frame (a zero classifier with that bias)."""
    model = create_model(config)
    head = model.get_classifier()
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, math.log(p_bleeding / (1 - p_bleeding))]))
    return save_weights(folder, model, config)


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory) -> Path:
    """8 real wcebleedgen/train frames per class."""
    if not WCE.exists():
        pytest.skip(f"real data not found at {WCE}")
    return write_train_manifest(tmp_path_factory.mktemp("data") / "tiny.csv", every=90, per_class=8)


def test_the_loss_is_the_weighted_kl_divergence_to_the_teacher_which_gets_no_gradient():
    torch.manual_seed(0)
    config = _config()
    teacher = timm.create_model("test_efficientnet", num_classes=2)
    loss = Distillation(copy.deepcopy(teacher), Preprocessor(config), weight=3.0).train()
    assert not loss.teacher.training and not any(p.requires_grad for p in loss.teacher.parameters())
    frames = torch.randint(0, 256, (4, 3, 80, 80), dtype=torch.uint8)
    with torch.no_grad():
        own = loss.teacher(Preprocessor(config)(frames))
    assert float(loss(own, frames)) == pytest.approx(0.0, abs=1e-7)  # the teacher's own scores: nothing to learn
    logits = torch.randn(4, 2, requires_grad=True)
    p, q = torch.softmax(own, 1), torch.softmax(logits.detach(), 1)
    by_hand = 3.0 * float((p * (p.log() - q.log())).sum(1).mean())
    value = loss(logits, frames)
    assert float(value.detach()) == pytest.approx(by_hand, rel=1e-5)
    value.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.teacher.parameters())


@pytest.mark.parametrize("classes", [2, 3])
def test_the_logits_loss_is_the_squared_error_of_the_logits_pairwise_differences(classes):
    """``--distill-loss logits``: for two classes the squared error of the logit margin (the score is its sigmoid), for K
    the mean over class pairs; a shift of all logits changes nothing (a softmax ignores it), halving the teacher's
    logits costs a quarter of its margins squared (the KL's reward for flatter scores is not there)."""
    torch.manual_seed(classes)
    config = _config(class_names=[f"c{i}" for i in range(classes)], abnormal_classes=["c1"])
    teacher = timm.create_model("test_efficientnet", num_classes=classes)
    with torch.no_grad():  # logits of order 1, varying with the frame (a random head's are ~1e-3: the checks below would compare noise)
        teacher.get_classifier().weight.mul_(300.0)
        teacher.get_classifier().bias.copy_(torch.tensor([0.0, 2.0, -1.0][:classes]))
    loss = Distillation(teacher, Preprocessor(config), weight=3.0, loss="logits")
    frames = torch.randint(0, 256, (5, 3, 80, 80), dtype=torch.uint8)
    with torch.no_grad():
        own = loss.teacher(Preprocessor(config)(frames).contiguous(memory_format=torch.channels_last))
    assert 0.5 < float(own.abs().max()) < 20 and float((own[:, 1] - own[:, 0]).std()) > 0.1
    logits = torch.randn(5, classes, requires_grad=True)
    pairs = [(i, j) for i in range(classes) for j in range(i + 1, classes)]
    by_hand = 3.0 * sum(float(((logits[:, i] - logits[:, j]) - (own[:, i] - own[:, j])).detach().pow(2).mean()) for i, j in pairs) / len(pairs)
    value = loss(logits, frames)
    assert float(value.detach()) == pytest.approx(by_hand, rel=1e-5)
    assert float(loss(logits.detach() + 7.0, frames)) == pytest.approx(by_hand, rel=1e-5)
    assert float(loss(own, frames)) == pytest.approx(0.0, abs=1e-9)
    margins = [float((own[:, i] - own[:, j]).pow(2).mean()) for i, j in pairs]
    assert float(loss(own / 2, frames)) == pytest.approx(3.0 * 0.25 * sum(margins) / len(pairs), rel=1e-5)
    value.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0 and all(p.grad is None for p in loss.teacher.parameters())
    with pytest.raises(ValueError, match=r"loss must be one of \('kl', 'logits'\), got 'mse'"):
        Distillation(loss.teacher, Preprocessor(config), loss="mse")


@pytest.mark.parametrize(("extra", "said"), [
    ({"distill_weight": 2.0}, "--distill-weight weighs the --distill loss: give the teacher, --distill WEIGHTS"),
    ({"distill_loss": "logits"}, "--distill-loss chooses the --distill loss: give the teacher, --distill WEIGHTS"),
    ({"distill": "teacher", "distill_loss": "mse"}, "--distill-loss must be one of ('kl', 'logits'), got 'mse'"),
    ({"distill": "teacher", "distill_weight": 0.0}, "--distill-weight must be > 0, got 0"),  # QA 75: was distill_weight
])
def test_the_teachers_options_are_refused_without_a_teacher_or_with_an_unknown_loss(tmp_path, extra, said):
    from capsule_triage.train_options import check_options

    with pytest.raises(InputError) as caught:
        check_options(TrainOptions(data=tmp_path / "data.csv", output=tmp_path / "out", **extra))
    assert said in str(caught.value)


def test_a_teacher_must_have_the_models_classes_in_order_and_may_read_its_own_input():
    config = _config()
    assert mismatch(_config(input_size=96, std=(0.5, 0.5, 0.5), border="none", interpolation="bicubic"), config) is None
    said = mismatch(_config(class_names=["bleeding", "non-bleeding"]), config)
    assert said == "the teacher's classes ['bleeding', 'non-bleeding'] are not the model's ['non-bleeding', 'bleeding'] (in this order)"


def test_load_teacher_refuses_other_classes_other_weights_and_another_teacher_on_resume(tmp_path):
    folder = _teacher_folder(tmp_path / "teacher", _config(), 0.9)
    distillation, record = load_teacher(folder, _config(), torch.device("cpu"), 2.0)
    assert distillation.weight == 2.0 and record["name"] == "test_efficientnet" and len(record["weights_sha256"]) == 64
    assert load_teacher(folder, _config(), torch.device("cpu"), 1.0, saved={"distill_sha256": record["weights_sha256"]})
    with pytest.raises(InputError, match=r"teacher: --distill: the teacher's weights changed since the checkpoint .*--resume continues"):
        load_teacher(folder, _config(), torch.device("cpu"), 1.0, saved={"distill_sha256": "0" * 64})
    with pytest.raises(InputError, match=r"teacher: --distill: the teacher's classes \['non-bleeding', 'bleeding'\] are not the model's"):
        load_teacher(folder, _config(class_names=["normal", "bleeding"]), torch.device("cpu"), 1.0)
    bare = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("resnet18", num_classes=2).state_dict().items()}, str(bare))
    with pytest.raises(WeightsError, match=r"resnet.safetensors: --distill: a bare weights file states no classes"):
        load_teacher(bare, _config(), torch.device("cpu"), 1.0)
    # QA 75 #1: the teacher folder's own weights as a bare file were read with the student's description, so a student of the
    # classes in the other order "agreed" with it and learnt the opposite labels without a word
    loose = tmp_path / "loose.safetensors"
    shutil.copy(folder / "model.safetensors", loose)
    with pytest.raises(WeightsError, match=r"loose.safetensors: --distill: a bare weights file states no classes, so whether they "
                                           r"are the data's, in the same order, cannot be checked .*give the teacher's weights folder"):
        load_teacher(loose, _config(class_names=["bleeding", "non-bleeding"]), torch.device("cpu"), 1.0)
    with pytest.raises(WeightsError, match=r"writes it\); this run began from the file before such files were refused \(its classes "
                                           r"never checked\): train it again from the beginning, with the folder$"):  # rev76 #3
        load_teacher(loose, _config(), torch.device("cpu"), 1.0, saved={"distill_sha256": record["weights_sha256"]})
    assert load_teacher(folder / "model.safetensors", _config(), torch.device("cpu"), 1.0)[1]["weights_sha256"] == record["weights_sha256"]


@needs_shared
def test_distillation_trains_toward_the_teachers_scores_not_the_labels(tiny_manifest, tmp_path):
    """Balanced labels keep P(bleeding) near 0.5 on average; a teacher saying 0.9 of every frame pulls it there, by its
    probabilities or its logits (measured with these options: 0.50, 0.86 and 0.98; the teacher's pull grows with
    --distill-weight and the epochs)."""
    base = dict(data=tiny_manifest, arch="test_efficientnet", init="none", strategy="full", epochs=6, lr=0.005, input_size=64,
                batch_size=8, val_fraction=0.0, augment="none", class_weighting="none", progress=False, border="circle")
    teacher = _teacher_folder(tmp_path / "teacher", _run_config(TrainOptions(output=tmp_path / "x", **base)), 0.9)
    means = {}
    for name, extra in (("labels", {}), ("teacher", {"distill": str(teacher), "distill_weight": 4.0}),
                        ("logits", {"distill": str(teacher), "distill_weight": 0.5, "distill_loss": "logits"})):
        out = train(TrainOptions(output=tmp_path / f"student-{name}", **base, **extra))
        model, config = load_model(out)
        means[name] = _mean_p_bleeding(model, config, tiny_manifest)
        if name != "labels":
            recorded = config.provenance["training"]["distill"]
            assert recorded["weights"] == str(teacher) and recorded["name"] == "test_efficientnet" and recorded["loss"] == ("kl" if name == "teacher" else "logits")
            assert config.provenance["training"]["recipe"]["distill_weight"] == extra["distill_weight"]
            write_training_section(out, config)
            said = "squared error of the logits' pairwise differences" if name == "logits" else "KL divergence of the probabilities"
            assert f"Distilled from test_efficientnet (`{teacher}`, weights SHA-256 {recorded['weights_sha256']}; loss: {said})." in (out / "MODEL_CARD.md").read_text()
    assert abs(means["labels"] - 0.5) < 0.1, means
    assert all(means[name] > means["labels"] + 0.2 and abs(means[name] - 0.9) < 0.2 for name in ("teacher", "logits")), means


def _run_config(options: TrainOptions) -> ModelConfig:
    """The model description training makes of ``options`` (so a teacher built from it takes the same input)."""
    return make_config(options, read_samples(options.data).samples)


def _mean_p_bleeding(model, config, manifest: Path) -> float:
    data = load_images(select(read_samples(manifest).samples, "train"), size=config.input_size, class_names=config.class_names)
    with torch.no_grad():
        return float(torch.softmax(model.eval()(Preprocessor(config)(data.images)), 1)[:, 1].mean())


@needs_shared
def test_a_teacher_of_another_input_scores_the_clean_half_of_a_stability_batch_and_must_stay_on_resume(tiny_manifest, tmp_path, monkeypatch):
    options = dict(data=tiny_manifest, arch="test_efficientnet", init="none", strategy="full", epochs=1, input_size=64, batch_size=8,
                   val_fraction=0.0, augment="none", class_weighting="none", progress=False, stability=1.0)
    teacher_config = replace(_run_config(TrainOptions(output=tmp_path / "x", **options)), input_size=32, std=(0.5, 0.5, 0.5), border="none")
    teacher = _teacher_folder(tmp_path / "teacher", teacher_config, 0.9)
    seen, original = [], Distillation.forward

    def spy(self, logits, frames):
        seen.append((len(logits), len(frames), frames.dtype, tuple(self.preprocess(frames).shape[-2:])))
        return original(self, logits, frames)

    monkeypatch.setattr(Distillation, "forward", spy)
    out = tmp_path / "student"
    train(TrainOptions(output=out, **options, distill=str(teacher), stop_after_steps=1))
    assert seen == [(8, 8, torch.uint8, (32, 32))]  # the frames, not their copies; at the teacher's own size
    with pytest.raises(InputError) as caught:  # not on the labels instead
        train(TrainOptions(output=out, **options, resume=True))
    assert str(caught.value) == (f"{out}: --resume with other options than the checkpoint's: --distill (not given) (the "  # QA 75: fields, no values
                                 f"checkpoint's: {teacher}); rerun the same command")
    with pytest.raises(InputError) as caught:  # nor with another loss
        train(TrainOptions(output=out, **options, distill=str(teacher), distill_loss="logits", resume=True))
    assert str(caught.value).endswith("--resume with other options than the checkpoint's: --distill-loss logits (the checkpoint's: kl); "
                                      "rerun the same command")
    shutil.rmtree(teacher)
    _teacher_folder(teacher, teacher_config, 0.6)
    with pytest.raises(InputError, match="the teacher's weights changed since the checkpoint"):
        train(TrainOptions(output=out, **options, distill=str(teacher), resume=True))


@needs_shared
def test_cli_refuses_a_teacher_of_other_classes_in_one_line_before_training(tiny_manifest, tmp_path, monkeypatch):
    options = TrainOptions(data=tiny_manifest, output=tmp_path / "x", arch="test_efficientnet", input_size=64)
    teacher = _teacher_folder(tmp_path / "teacher", replace(_run_config(options), class_names=["normal", "bleeding"]), 0.9)
    app = typer.Typer()
    register(app)
    out = tmp_path / "student"
    monkeypatch.setattr("capsule_triage.train.load_for_model", lambda *a, **k: pytest.fail("images loaded before the teacher was checked"))
    result = CliRunner().invoke(app, ["train", str(tiny_manifest), "-o", str(out), "--arch", "test_efficientnet", "--init", "none",
                                      "--input-size", "64", "--distill", str(teacher), "-q"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(teacher) in lines[0] and "--distill: the teacher's classes ['normal', 'bleeding'] are not the model's" in lines[0], result.output
    assert not out.exists()
    result = CliRunner().invoke(app, ["train", str(tiny_manifest), "-o", str(out), "--arch", "test_efficientnet", "--init", "none",
                                      "--input-size", "64", "--distill-loss", "logits", "-q"])  # the option reaches the run's options
    assert result.exit_code != 0 and "--distill-loss chooses the --distill loss: give the teacher, --distill WEIGHTS" in result.output, result.output
    assert not out.exists()
