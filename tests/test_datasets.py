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
from capsule_triage.stills import load_images
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
    _image(root / "overview.png", 42)  # QA 56 #11: an image at the root of a tree of split folders went unnamed
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
        "2 images outside the class folders: train/stray.png, overview.png",
        "1 folder beside the split folders train/, val/, test/: extra/",
        "1 gif file: train/non-bleeding/clip.gif (frames are .bmp, .jfif, .jpe, .jpeg, .jpg, .png, .pnm, .ppm, .tif, .tiff, .webp)",
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
    assert len(data_warnings) == 2 and "train/masks_bleeding/" in str(data_warnings[0].message)
    assert ": few training frames of classes non-bleeding (4), bleeding (4) (fewer than 20)" in str(data_warnings[1].message)
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
    assert lines[0] == f"Warning: {published_layout}: not read: " + "; ".join(read_samples(published_layout).unread)
    assert len(lines) == 2 and lines[1].startswith(f"Warning: {published_layout}: few training frames of classes")  # 4 of each
    assert trained.output.index("Warning:") < trained.output.index("Best epoch")  # said before training, not after
    assert "Classes non-bleeding, bleeding; abnormal (flagged by triage run): bleeding" in trained.output
    assert (f"Operating threshold 0.5 on P(bleeding), not chosen on data: `triage eval {tmp_path / 'm'} DATA --target-sensitivity S` "
            "chooses it on validation frames") in " ".join(trained.output.split())  # QA 44: a 3-class model at 0.5 flagged every frame
    evaluated = runner.invoke(app, ["eval", str(tmp_path / "m"), str(published_layout), "--out", str(published_layout / "train" / "eval 1")])
    assert evaluated.exit_code == 0, evaluated.output
    assert "train/masks_bleeding/" in evaluated.output and "on test (8 frames" in evaluated.output
    # QA 69 #8: an evaluation written into the data tree became a class (its roc.png) at the next train or eval; a run's
    # output in a class folder added its thumbnails to that class
    from conftest import DEMO_CLIP, triage

    ran = triage("run", DEMO_CLIP, "--weights", tmp_path / "m", "--out", published_layout / "train" / "bleeding" / "run", "--quiet")
    assert ran.returncode == 0 and list((published_layout / "train" / "bleeding" / "run").rglob("*.jpg")), ran.stderr
    again = read_samples(published_layout)
    assert {s.label for s in again.samples} == {"bleeding", "non-bleeding"} and len(again.samples) == 16
    assert "2 output folders of triage eval or run (not a class, not frames): train/bleeding/run/, train/eval 1/" in again.unread
    assert runner.invoke(app, ["eval", str(tmp_path / "m"), str(published_layout)]).exit_code == 0


def test_dataset_layouts_as_published_are_read_as_meant(tmp_path):
    """QA 14: Train/ and Test/ were trained as two classes (the test frames trained on); valid/ was not
    a split; 0_mask.png beside 0.png was trained as a frame; an empty class folder vanished without a
    word; HyperKvasir's nested folders became two classes without a word; .jfif frames were dropped."""
    root = tmp_path / "caps"
    for split in ("Train", "VALID", "Test"):
        for label in ("bleeding", "normal"):
            for i in range(2):
                _image(root / split / label / f"{i}.png", i)
    _image(root / "Train" / "bleeding" / "0_mask.png", 9, mask=True)
    (root / "Train" / "ulcer").mkdir()
    (root / "Train" / "normal" / "2.jfif").write_bytes(cv2.imencode(".jpg", np.full((48, 48, 3), 90, np.uint8))[1].tobytes())
    source = read_samples(root)
    assert sorted({s.label for s in source.samples}) == ["bleeding", "normal"]
    assert {s.split for s in source.samples} == {"train", "val", "test"} and len(source.samples) == 13
    assert source.unread == ["1 mask image (by name, not frames): Train/bleeding/0_mask.png",
                             "1 class folder without images (not a class): Train/ulcer/"] and source.notes == []
    jfif = [s for s in source.samples if s.path.suffix == ".jfif"]
    assert load_images(jfif, size=32, class_names=["bleeding", "normal"]).images.float().mean() == pytest.approx(90, abs=2)
    nested = tmp_path / "labeled-images"
    for i, leaf in enumerate(("lower-gi-tract/pathological-findings/polyps", "lower-gi-tract/anatomical-landmarks/cecum",
                              "upper-gi-tract/anatomical-landmarks/pylorus")):
        _image(nested / leaf / f"{i}.jpg", i)
    assert read_samples(nested).notes == [
        "1 class folder holding several image folders, each read as one class: lower-gi-tract/ (anatomical-landmarks/cecum/, "
        "pathological-findings/polyps/) (if those folders are classes of their own, point DATA at the folder that holds them "
        "or list the frames in a manifest)"]
    quality = tmp_path / "quality"  # review: classes called valid/ and invalid/ (images inside) are classes, not a split
    for label in ("valid", "invalid"):
        _image(quality / label / "frame_gt_001.png", 1)  # and 'gt' in a frame's name does not make it a mask
    assert sorted({s.label for s in read_samples(quality).samples}) == ["invalid", "valid"]


def test_class_names_equal_but_for_case_or_unicode_form_are_refused(tmp_path):
    import unicodedata

    from capsule_triage.splits import assign_validation, check_training_splits
    from capsule_triage.errors import InputError

    for a, b in (("Ulcer", "ulcer"), (unicodedata.normalize("NFC", "Blutung_ä"), unicodedata.normalize("NFD", "Blutung_ä")),
                 ("Blood-fresh", "blood_fresh"), ("grade 1", "grade1")):  # rev107 #2: separators
        root = tmp_path / a
        for label in ("normal", a, b):
            for i in range(3):
                _image(root / label / f"{i}.png", i)
        samples = assign_validation(read_samples(root).samples, val_fraction=0.0, seed=0)
        with pytest.raises(InputError, match="class names that differ only in case, Unicode form or separators: "):
            check_training_splits(root, samples, sorted({s.label for s in samples}), val_fraction=0.0)
    from capsule_triage.datasets import Sample, check_label_twins

    for pair in (("grade-1-2", "grade-12"), ("bbps-0-1", "bbps-01")):  # rev108 #3: a separator between digits tells them apart
        check_label_twins(tmp_path, [Sample(tmp_path / f"{label}.png", label, label, "") for label in pair])


def test_manifests_from_excel_windows_and_macs_are_read(tmp_path):
    import unicodedata

    root = tmp_path / unicodedata.normalize("NFC", "Universitätsklinik")  # review: a non-ASCII folder above the manifest
    name = unicodedata.normalize("NFD", "Läsion_1.png")  # stored decomposed, as a Mac writes it
    _image(root / "imgs" / "bleeding" / name, 1)
    _image(root / "imgs" / "normal" / "0.png", 2)
    _image(root / "imgs" / "normal" / "a\\b.png", 3)  # a POSIX name holding a backslash is found as written
    nfc = unicodedata.normalize("NFC", name)
    (root / "m.csv").write_bytes(("\ufeffpath,label\r\n" + f"imgs\\bleeding\\{nfc},bleeding\r\nimgs\\normal\\0.png,normal\r\n"
                                  "imgs/normal/a\\b.png,normal\r\n").encode())
    samples = read_samples(root / "m.csv").samples
    assert [s.path.name for s in samples] == [name, "0.png", "a\\b.png"] and all(s.path.is_file() for s in samples)


def test_manifest_headers_and_encodings_as_spreadsheets_write_them_are_read_or_named(tmp_path):
    """QA 56 #12: 'Path,Label' was refused; a Latin-1 file was refused without its line; a ';'-separated file (a German
    Excel's CSV) without a hint; a header-only file said it found 'no rows' of a header it had read."""
    import re

    from capsule_triage.errors import InputError

    _image(tmp_path / "imgs" / "a.png", 1)
    _image(tmp_path / "imgs" / "b.png", 2)
    (tmp_path / "case.csv").write_text(" Path , Label ,Patient,Split\nimgs/a.png,normal,P1,train\nimgs/b.png,bleeding,P2,Test\n")
    source = read_samples(tmp_path / "case.csv")
    assert [(s.path.name, s.label, s.group, s.split) for s in source.samples] == [("a.png", "normal", "P1", "train"),
                                                                                   ("b.png", "bleeding", "P2", "test")]
    assert source.group_column == "Patient"
    # one split value alone is no split (rev106 #2/#3): training rows only, held-out data marked test, a QC or device column
    (tmp_path / "set.csv").write_text("path,label,set,held,qc,source\nimgs/a.png,normal,train,test,valid,dev\n"
                                      "imgs/b.png,bleeding,train,test,,dev\n")
    assert [s.split for s in read_samples(tmp_path / "set.csv").samples] == ["", ""]  # as without the column (QA 118 #1)
    cases = {
        "latin1.csv": ("path,label\nimgs/a.png,normal\nimgs/b.png,l\xe9sion\n".encode("latin-1"),
                       "line 3 is not UTF-8 text (a Latin-1 or Windows-1252 file?); save it as UTF-8 (Excel: CSV UTF-8)"),
        "utf16.csv": ("path,label\nimgs/a.png,normal\n".encode("utf-16"),  # QA 89 #5: called Latin-1
                      "is UTF-16 text (Excel: Unicode Text), not UTF-8; save it as UTF-8 (Excel: CSV UTF-8)"),
        "semicolon.csv": (b"path;label\nimgs/a.png;normal\n",
                          "manifest needs columns path,label (found ['path;label']) (separated by ';'? a manifest is comma-separated)"),
        "header.csv": (b"path,label\r\n", "manifest lists no images (a header only)"),
        "empty.csv": (b"", "manifest needs columns path,label (found an empty file)"),
        "windows.csv": (b"path,label\nimgs/a.png,normal\nC:\\lab\\b.png,bleeding\n",  # QA 56 #13: 'not found', joined to the folder
                        "row 3: C:\\lab\\b.png is an absolute Windows path; list the images relative to the manifest's folder "
                        "(as `triage split` writes them)"),
        "splt.csv": (b"path,label,patient_id,splt\nimgs/a.png,normal,P1,train\nimgs/b.png,bleeding,P2,Test\n",  # QA 118 #1: the test
                     "column 'splt' (test, train) holds split names, but only a column named split (in any case) is read: without "
                     "it every row is unsplit (`triage train` trains on the test rows too, `triage eval` scores the training rows): "
                     "rename it to split, or drop it"),  # rows were trained on
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match=f"^{re.escape(str(tmp_path / name))}: {re.escape(message)}$"):
            read_samples(tmp_path / name)


def test_stills_of_a_field_of_view_model_are_cropped_to_the_view_as_a_run_crops_frames(tmp_path):
    """QA 16: stills were centre-cropped square before the field-of-view crop, so a model for 16:9
    gastroscope frames trained and was evaluated on half its view plus black border, where triage run
    crops each frame to its view. Now a still is read as the run reads a frame (short side twice the
    input size, shape kept) and cropped to its view there; the model's Preprocessor takes it as cropped."""
    import torch

    from capsule_triage.datasets import Sample
    from capsule_triage.model_config import ModelConfig
    from capsule_triage.preprocess import Preprocessor
    from capsule_triage.reader import ReadOptions, read_frames
    from capsule_triage.stills import load_for_model

    rng = np.random.default_rng(0)
    view = cv2.resize(rng.integers(40, 255, (8, 8, 3), dtype=np.uint8), (300, 300), interpolation=cv2.INTER_CUBIC)
    canvas = np.zeros((450, 800, 3), np.uint8)
    canvas[75:375, 20:320] = view  # the view left of centre, as some scopes record it
    folder = tmp_path / "still"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    config = ModelConfig(architecture="resnet50", class_names=["a", "b"], abnormal_classes=["b"], input_size=64, border="fov",
                         border_radius=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    still = load_for_model([Sample(folder / "a.png", "a", "a", "test")], config).images
    frame = next(read_frames(folder, ReadOptions(short_side=128, square_crop=False))).data
    preprocess = Preprocessor(config)
    trained = preprocess(still)
    scored = preprocess(torch.from_numpy(frame).permute(0, 3, 1, 2))
    assert still.shape == (1, 3, 64, 64) and (trained - scored).abs().mean() < 0.01
    centre = load_for_model([Sample(folder / "a.png", "a", "a", "test")], ModelConfig.from_dict({**config.to_dict(), "border": "circle"}))
    assert (preprocess(centre.images) - scored).abs().mean() > 0.1  # the centre square: what was trained before


def test_16_bit_stills_share_one_depth_and_a_guess_is_warned(tmp_path):
    """rev46: training stills were scaled each on its own, so a dark full-range 16-bit still was brightened 4x
    (read as 10-bit). A split's stills share one depth, as a frame folder's frames do, and a depth guessed below 16
    bits, or changed on the way, is a DataWarning naming the stills."""
    from capsule_triage.datasets import Sample

    bright = np.full((48, 48, 3), 60000, np.uint16)
    dark = np.full((48, 48, 3), 1000, np.uint16)  # 1/65 of full range: 10 bits would hold it
    for name, image in (("0bright.png", bright), ("1dark.png", dark)):
        cv2.imwrite(str(tmp_path / name), image)
    samples = [Sample(path=tmp_path / name, label="normal", group=name, split="train") for name in ("0bright.png", "1dark.png")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # full range: nothing guessed, nothing said
        images = load_images(samples, size=32, class_names=["normal"]).images
    assert images[1].float().mean() == pytest.approx(1000 * 255 / 65535, abs=1)  # as dark as it is
    twelve = [Sample(path=tmp_path / f"t{i}.png", label="normal", group=str(i), split="train") for i in range(2)]
    cv2.imwrite(str(twelve[0].path), np.full((48, 48, 3), 4000, np.uint16))
    cv2.imwrite(str(twelve[1].path), np.full((48, 48, 3), 400, np.uint16))
    with pytest.warns(DataWarning, match=r"^\(data\): 16-bit images \(e\.g\. t0\.png\) hold values only up to 4,095: read as "
                      r"12-bit data"):
        images = load_images(twelve, size=32, class_names=["normal"]).images
    assert images[1].float().mean() == pytest.approx(400 * 255 / 4095, abs=1)


def test_an_image_name_that_is_not_utf8_is_named_before_any_work(tmp_path, random_weights):
    """QA 55: a frame exported under another encoding's name (Latin-1 'fréquence.png', a byte that is not UTF-8)
    failed `triage split`, `eval` (after all its scoring) and `train` with "'utf-8' codec can't encode character
    '\\udce9'", naming no file."""
    import os
    import subprocess
    import sys

    for label in ("bleeding", "non-bleeding"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(tmp_path / "data" / label / f"{i}.png"), np.full((64, 64, 3), 40 * i, np.uint8))
    odd = os.fsencode(tmp_path / "data" / "bleeding") + b"/fr\xe9quence.png"
    with open(odd, "wb") as fh:
        fh.write((tmp_path / "data" / "bleeding" / "0.png").read_bytes())
    for args in (("split", tmp_path / "data", "--output", tmp_path / "m.csv"), ("eval", random_weights, tmp_path / "data", "--split", "all")):
        result = subprocess.run([sys.executable, "-m", "capsule_triage.cli", *map(str, args)], capture_output=True, timeout=300)
        assert result.returncode == 2 and result.stderr.strip() == (
            b"Error: " + odd + b": its name is not UTF-8 text (written on a system with another encoding?), which the tables "
            b"written from it cannot hold: rename it, e.g. with convmv"), result.stderr
    assert not (tmp_path / "m.csv").exists()


def test_a_symlinked_image_is_its_own_frame_by_its_own_name(tmp_path):
    """QA 69 #1: a link beside its target (or in another class) was read as the target: the target listed twice, so eval's
    predictions and split's manifest held a frame twice (which hard-cases and eval then refused), and a link in another
    class was named by its target's name."""
    root = tmp_path / "data"
    _image(root / "test" / "bleeding" / "img_1.png", 200)
    _image(root / "test" / "non-bleeding" / "img_1.png", 20)
    (root / "test" / "bleeding" / "link.png").symlink_to(root / "test" / "bleeding" / "img_1.png")
    (root / "test" / "non-bleeding" / "zz.png").symlink_to(root / "test" / "bleeding" / "img_1.png")
    paths = [(str(s.path.relative_to(root)), s.label) for s in read_samples(root).samples]
    assert sorted(paths) == [("test/bleeding/img_1.png", "bleeding"), ("test/bleeding/link.png", "bleeding"),
                             ("test/non-bleeding/img_1.png", "non-bleeding"), ("test/non-bleeding/zz.png", "non-bleeding")]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,split\ndata/test/bleeding/link.png,bleeding,test\n")
    assert [s.path for s in read_samples(manifest).samples] == [root / "test" / "bleeding" / "link.png"]


def test_a_folder_read_as_its_manifest_names_the_images_it_does_not_list(published_layout, tmp_path):
    """QA 69 #7: a folder holding manifest.csv is read as that manifest; frames added to its class folders later were
    never read, without a word."""
    listed = ["train/non-bleeding/img_0.png", "train/bleeding/Images/img_0.png"]
    (published_layout / "manifest.csv").write_text("path,label\n" + "".join(f"{p},{p.split('/')[1]}\n" for p in listed))
    source = read_samples(published_layout)
    assert [s.path for s in source.samples] == [published_layout / p for p in listed]
    # 19 images below it (masks and annotations not counted), 2 listed
    note = (f"read as {published_layout / 'manifest.csv'}: 17 images below {published_layout} are not listed in it and not read "
            "(e.g. extra/x.png): list them there, or move it away to read the folder tree")
    assert source.messages() == [note]
    app = typer.Typer()
    register(app)
    done = CliRunner().invoke(app, ["split", str(published_layout), "-o", str(tmp_path / "split.csv"), "--val-fraction", "0",
                                    "--test-fraction", "0.5"])
    assert done.exit_code == 0 and f"Warning: {note}" in done.output.splitlines(), done.output
    (published_layout / "manifest.csv").write_text("path,label\n" + "".join(f"{p.relative_to(published_layout)},x\n" for p in
                                                                          sorted(published_layout.rglob("*.png")) if "mask" not in str(p)
                                                                          and "Annotations" not in str(p)))
    assert read_samples(published_layout).messages() == []


def test_a_manifest_row_naming_a_folder_a_label_in_another_case_and_blank_groups_are_said_as_such(tmp_path):
    """QA 69 #9: a row naming a folder was 'not found'; a label 'Bleeding' for the class 'bleeding' got no hint; blank
    patient cells each made a group of their own, unsaid."""
    from capsule_triage.errors import InputError

    _image(tmp_path / "frames" / "a.png", 1)
    (tmp_path / "frames" / "sub").mkdir()
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nframes/a.png,Bleeding\nframes/sub,normal\n")
    with pytest.raises(InputError, match=f"^{tmp_path / 'frames' / 'sub'}: listed in m.csv as an image, but it is a folder$"):
        read_samples(manifest)
    manifest.write_text("path,label\nframes/a.png,Bleeding\nframes/gone.png,normal\n")
    with pytest.raises(InputError, match=r"gone.png: image listed in m.csv not found \(1 missing\)$"):
        read_samples(manifest)
    manifest.write_text("path,label\nframes/a.png,Bleeding\n")
    with pytest.raises(InputError, match=r"^m.csv: label\(s\) \['Bleeding'\] are not model classes \['normal', 'bleeding'\] "
                                         r"\('Bleeding' is 'bleeding'\? labels are matched exactly\)$"):
        load_images(read_samples(manifest).samples, size=32, class_names=["normal", "bleeding"], source="m.csv")
    assert cv2.imwrite(str(tmp_path / "frames" / "tiny.png"), np.full((4, 3, 3), 90, np.uint8))  # 1x1-4x4 stills were scored unsaid
    manifest.write_text("path,label\nframes/a.png,bleeding\nframes/tiny.png,normal\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_images(read_samples(manifest).samples, size=32, class_names=["normal", "bleeding"], source="m.csv")
        load_images(read_samples(manifest).samples[:1], size=32, class_names=["normal", "bleeding"], source="m.csv")  # 48 px: none
    assert [str(w.message) for w in caught if issubclass(w.category, DataWarning)] == [
        "m.csv: images as small as 3x4 (tiny.png): this model reads 32x32, so such an image is enlarged 10.7x and scored on detail "
        "it does not hold; use the original frames, not previews or thumbnails"]
    _image(tmp_path / "frames" / "b.png", 2)  # and rows with a blank patient: each its own group, said
    manifest.write_text("path,label,patient\nframes/a.png,bleeding,P1\nframes/b.png,normal,\n")
    assert read_samples(manifest).messages() == ["1 row with no patient (e.g. b.png): each such image is its own group, so frames "
                                                 "of one patient can fall on both sides of a split"]
    manifest.write_text("path,label,patient\nframes/a.png,bleeding,P1\nframes/b.png,normal,P2\n")
    assert read_samples(manifest).messages() == []
    for name in ("c.png", "d.png"):  # only the first image that cannot be read was named: one more run per image
        (tmp_path / "frames" / name).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    manifest.write_text("path,label\nframes/c.png,bleeding\nframes/a.png,normal\nframes/d.png,normal\n")
    with pytest.raises(InputError, match=f"^{tmp_path / 'frames' / 'c.png'}: not a decodable image \\(and 1 other image that cannot be "
                                         "read: d.png\\)$"):
        load_images(read_samples(manifest).samples, size=32, class_names=["normal", "bleeding"], source="m.csv")
