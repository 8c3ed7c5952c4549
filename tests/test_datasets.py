"""Reading labelled data: what a folder tree holds that is not a class or not frames is named, never
trained or scored as one (QA: the published WCEBleedGen layout trained its masks as a third class)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from capsule_triage.cli_models import register
from capsule_triage.datasets import is_mask_folder, read_samples
from capsule_triage.errors import DataWarning
from capsule_triage.train import TrainOptions, train


def _image(path: Path, value: int, *, mask: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    pixels = np.where(rng.random((48, 48)) > 0.5, 255, 0).astype(np.uint8) if mask else rng.integers(0, 255, (48, 48, 3), np.uint8)
    assert cv2.imwrite(str(path), pixels)


@pytest.fixture()
def published_layout(tmp_path) -> Path:
    """WCEBleedGen as published (bleeding/Images + bleeding/Annotations) and as re-exported
    (masks_bleeding/ beside the classes), with a loose image, a GIF and an unrelated folder."""
    root = tmp_path / "data"
    for i in range(4):
        _image(root / "train" / "bleeding" / "Images" / f"img_{i}.png", i)
        _image(root / "train" / "bleeding" / "Annotations" / f"ann_{i}.png", i, mask=True)
        _image(root / "train" / "masks_bleeding" / f"img_{i}.png", i, mask=True)
        _image(root / "train" / "non-bleeding" / f"img_{i}.png", 10 + i)
        _image(root / "test" / "bleeding" / f"img_{i}.png", 20 + i)
        _image(root / "test" / "non-bleeding" / f"img_{i}.png", 30 + i)
    _image(root / "train" / "stray.png", 40)
    (root / "train" / "non-bleeding" / "clip.gif").write_bytes(b"GIF89a")
    (root / "train" / "bleeding" / "Bounding boxes").mkdir()
    (root / "train" / "bleeding" / "Bounding boxes" / "img_0.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    _image(root / "extra" / "x.png", 41)
    return root


def test_mask_folders_are_not_classes_and_whatever_is_not_read_is_named(published_layout):
    source = read_samples(published_layout)
    assert sorted({s.label for s in source.samples}) == ["bleeding", "non-bleeding"]
    assert not [s for s in source.samples if "Annotations" in str(s.path) or "masks" in str(s.path)]
    assert len(source.samples) == 16 and source.group_column is None
    assert source.unread == [
        "2 mask or annotation folders (not a class, not frames): train/bleeding/Annotations/, train/masks_bleeding/",
        "1 image outside the class folders: train/stray.png",
        "1 folder beside the split folders train/, val/, test/: extra/",
        "1 gif file: train/non-bleeding/clip.gif (frames are .bmp, .jpeg, .jpg, .png, .tif, .tiff, .webp)",
    ]
    assert read_samples(published_layout / "test").unread == []


@pytest.mark.parametrize("name, mask", [("masks_bleeding", True), ("Annotations", True), ("Ground Truth", True), ("GT", True),
                                        ("gt_masks", True), ("segmentation", True), ("bleeding", False), ("Images", False),
                                        ("gastritis", False), ("angiectasia", False), ("Mass", False), ("non-bleeding", False)])
def test_mask_folder_names(name, mask):
    assert is_mask_folder(name) is mask


def test_training_warns_before_it_trains_and_records_what_it_left_out(published_layout, tmp_path):
    options = TrainOptions(data=published_layout, output=tmp_path / "m", arch="test_efficientnet", init="none", strategy="head",
                           epochs=1, batch_size=4, input_size=32, val_fraction=0.0, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(options)
    data_warnings = [w for w in caught if issubclass(w.category, DataWarning)]
    assert len(data_warnings) == 1 and "train/masks_bleeding/" in str(data_warnings[0].message)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["class_names"] == ["non-bleeding", "bleeding"]
    assert config["provenance"]["training"]["unread"] == read_samples(published_layout).unread


def test_train_and_eval_print_one_warning_line_naming_the_data(published_layout, tmp_path):
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    trained = runner.invoke(app, ["train", str(published_layout), "-o", str(tmp_path / "m"), "--arch", "test_efficientnet", "--init", "none",
                                  "--strategy", "head", "--epochs", "1", "--batch-size", "4", "--input-size", "32",
                                  "--val-fraction", "0", "--quiet"])
    assert trained.exit_code == 0, trained.output
    lines = [line for line in trained.output.splitlines() if line.startswith("Warning:")]
    assert lines == [f"Warning: {published_layout}: not read: " + "; ".join(read_samples(published_layout).unread)]
    assert trained.output.index("Warning:") < trained.output.index("Best epoch")  # said before training, not after
    evaluated = runner.invoke(app, ["eval", str(tmp_path / "m"), str(published_layout)])
    assert evaluated.exit_code == 0, evaluated.output
    assert "train/masks_bleeding/" in evaluated.output and "on test (8 frames" in evaluated.output
