"""The images a model learned from, by content (training_images.parquet): evaluation of a copy of the
training data is named, images given twice are named, and --resume refuses images changed in place
(QA 12: a copy of the training data evaluated as held-out; --resume took a same-size edit)."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from capsule_triage.errors import DataWarning, InputError
from capsule_triage.evaluate import evaluate
from capsule_triage.train import TrainOptions, train
from capsule_triage.training_images import TRAINING_IMAGES
from conftest import REPO, WCE, needs_shared

SHIPPED = REPO / "weights" / "capsule-bleeding-lite0"


def _tree(root: Path, seed: int, n: int = 6) -> Path:
    rng = np.random.default_rng(seed)
    for label in ("non-bleeding", "bleeding"):
        (root / label).mkdir(parents=True)
        for i in range(n):
            assert cv2.imwrite(str(root / label / f"img_{i}.bmp"), rng.integers(0, 255, (40, 40, 3), np.uint8))  # BMP: a fixed size
    return root


def _options(data: Path, out: Path, **kwargs) -> TrainOptions:
    return TrainOptions(data=data, output=out, arch="test_efficientnet", init="none", strategy="head", epochs=1, batch_size=4,
                        input_size=32, val_fraction=0.25, progress=False, **kwargs)


def _train(data: Path, out: Path, **kwargs) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(_options(data, out, **kwargs))
    # these data are a handful of images per class in a tree (no groups), which few_frames_note and the drawn-alone note
    # name in every run (test_train tests both)
    return [str(w.message) for w in caught if issubclass(w.category, DataWarning)
            and not re.search(r": few (training|validation) frames of class|: no group column .* so validation was drawn image by image", str(w.message))]


def test_an_evaluation_on_a_copy_of_the_training_data_is_named_and_held_out_data_is_not(tmp_path, monkeypatch):
    from capsule_triage import training_images

    def second_read(path):
        raise AssertionError(f"{path} read a second time to hash it")

    monkeypatch.setattr(training_images, "file_sha256", second_read)  # review: hashed from the bytes decoded, each file read once
    data = _tree(tmp_path / "data", seed=1)
    assert _train(data, tmp_path / "m") == []
    table = pq.read_table(tmp_path / "m" / TRAINING_IMAGES)
    assert table.column_names == ["sha256", "split"] and table.num_rows == 12  # no names or labels: weights get shared
    assert sorted(table.column("split").to_pylist()) == ["train"] * 8 + ["val"] * 4
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(data, copy)
    (copy / "bleeding" / "img_0.bmp").rename(copy / "bleeding" / "renamed.bmp")
    result = evaluate(tmp_path / "m", copy, "all")
    assert [w for w in result["warnings"] if "bytes of this model's training data" in w] == [
        f"12 of the 12 frames scored (all) have the bytes of this model's training data (8 training and 4 validation frames; "
        f"e.g. {copy / 'bleeding' / 'img_1.bmp'}); these metrics are optimistic"]
    held_out = evaluate(tmp_path / "m", _tree(tmp_path / "new", seed=2), "all")
    assert not any("training data" in w for w in held_out.get("warnings", []))
    val_only = evaluate(tmp_path / "m", data, "val")  # the frames training held out: its validation frames are what is asked for
    assert not any("training data" in w for w in val_only.get("warnings", []))


def test_held_out_data_without_splits_is_checked_by_its_first_frame_and_a_copy_of_training_s_is_refused(tmp_path, monkeypatch):
    """QA 89 #3: data without splits whose every frame has training's bytes (a copy of the training folder) was scored as
    held-out data with a warning: refused, as the training data itself is. Review rev86 #2: the check hashed every image
    of held-out data before scoring read them again; it stops at the first frame training did not record."""
    from capsule_triage import eval_data

    data = _tree(tmp_path / "data", seed=1)
    assert _train(data, tmp_path / "m") == []
    hashed, real = [], eval_data.image_digests
    monkeypatch.setattr(eval_data, "image_digests", lambda samples: hashed.extend(samples) or real(samples))
    evaluate(tmp_path / "m", _tree(tmp_path / "new", seed=2))  # held out: scored whole
    assert len(hashed) == 1
    hashed.clear()
    shutil.copytree(data, tmp_path / "copy")
    with pytest.raises(InputError, match=r"copy: the model was trained on this data \(by its path, digest or every frame's bytes\)"):
        evaluate(tmp_path / "m", tmp_path / "copy")
    assert len(hashed) == 12


def test_frames_scored_twice_or_under_two_labels_are_said_by_the_evaluation(tmp_path):
    """QA 108 #2: `triage eval` scored the same bytes under both labels, and renamed copies, each counted in the metrics,
    without a word (`triage train` names such images)."""
    data = _tree(tmp_path / "data", seed=1)
    assert _train(data, tmp_path / "m") == []
    held_out = _tree(tmp_path / "new", seed=2)
    assert not any("held twice" in w for w in evaluate(tmp_path / "m", held_out, "all").get("warnings", []))
    shutil.copy(held_out / "bleeding" / "img_1.bmp", held_out / "non-bleeding" / "relabelled.bmp")
    shutil.copy(held_out / "bleeding" / "img_2.bmp", held_out / "bleeding" / "img_2 copy.bmp")
    warned = [w for w in evaluate(tmp_path / "m", held_out, "all")["warnings"] if "held twice" in w]
    assert warned == ["images held twice, by their bytes, among the 'all' frames: 1 image under two labels (img_1.bmp (bleeding) = "
                      "relabelled.bmp (non-bleeding)): correct the wrong label, or delete the copy; 1 image scored more than once "
                      "under other names (img_2 copy.bmp = img_2.bmp): each copy counts in the metrics; delete the copy"], warned
    shutil.copy(held_out / "bleeding" / "img_3.bmp", held_out / "non-bleeding" / "img_3.bmp")  # rev100 #10: alike by name too
    warned = [w for w in evaluate(tmp_path / "m", held_out, "all")["warnings"] if "held twice" in w]
    assert " bleeding/img_3.bmp (bleeding)" in warned[0] and "non-bleeding/img_3.bmp (non-bleeding)" in warned[0], warned
    shutil.copy(held_out / "bleeding" / "img_4.bmp", held_out / "bleeding" / "img_4 copy.bmp")  # rev101 #2: three copies,
    shutil.copy(held_out / "bleeding" / "img_4.bmp", held_out / "non-bleeding" / "img_4 other.bmp")  # two labels among them
    warned = [w for w in evaluate(tmp_path / "m", held_out, "all")["warnings"] if "held twice" in w][0]
    assert "img_4 copy.bmp (bleeding) = img_4 other.bmp (non-bleeding)" in warned and "img_4 copy.bmp = img_4.bmp" in warned, warned


def test_images_given_twice_are_named_before_training(tmp_path):
    data = _tree(tmp_path / "data", seed=3)
    shutil.copy(data / "bleeding" / "img_1.bmp", data / "non-bleeding" / "same_as_bleeding_1.bmp")
    messages = _train(data, tmp_path / "m")
    assert len(messages) == 1 and messages[0].startswith(f"{data}: images held twice, by their bytes: 1 image under two labels ("), messages
    assert "img_1.bmp (bleeding)" in messages[0] and "same_as_bleeding_1.bmp (non-bleeding)" in messages[0]


def test_resume_refuses_an_image_changed_in_place_at_the_same_size(tmp_path):
    data = _tree(tmp_path / "data", seed=4)
    out = tmp_path / "m"
    train(_options(data, out, stop_after_steps=1))
    image = data / "bleeding" / "img_2.bmp"
    size, original = image.stat().st_size, image.read_bytes()
    cv2.imwrite(str(image), np.zeros((40, 40, 3), np.uint8))
    assert image.stat().st_size == size
    with pytest.raises(InputError, match=r"the data changed since the checkpoint \(an image changed in place\)"):
        train(_options(data, out, resume=True))
    image.write_bytes(original)  # QA 14: the same images, two of them swapped between class folders (labels changed)
    swapped = data / "non-bleeding" / "img_2.bmp"
    image.rename(tmp_path / "x.bmp"), swapped.rename(image), (tmp_path / "x.bmp").rename(swapped)
    with pytest.raises(InputError, match=r"the data changed since the checkpoint \(an image changed in place\)"):
        train(_options(data, out, resume=True))


@needs_shared
def test_the_shipped_models_training_list_is_its_training_and_validation_frames():
    """Made once for the shipped model from its recorded data and split (it predates the list):
    recomputed here from the data, so it cannot drift from what the provenance says."""
    import json

    from capsule_triage.datasets import read_samples, select
    from capsule_triage.splits import assign_validation
    from capsule_triage.training_images import image_digests, read_training_images

    training = json.loads((SHIPPED / "config.json").read_text())["provenance"]["training"]
    samples = assign_validation(read_samples(WCE / "manifest.csv").samples, val_fraction=training["split"]["val_fraction"],
                                seed=training["split"]["seed"])
    pool = select(samples, "train") + select(samples, "val")
    assert read_training_images(SHIPPED) == {digest: s.split for s, digest in zip(pool, image_digests(pool))}
    assert (len(select(samples, "train")), len(select(samples, "val"))) == (training["split"]["n_train"], training["split"]["n_val"])
    test = select(read_samples(WCE / "manifest.csv").samples, "test")
    assert not set(image_digests(test)) & set(read_training_images(SHIPPED))  # the card's test frames are held out by content too


def test_bytes_both_trained_and_validated_on_count_as_training_frames(tmp_path):
    """Review: the list kept the last split of a digest (val), so `triage eval --split val` missed the
    very duplicate that training warned about."""
    import pyarrow as pa

    from capsule_triage.datasets import Sample
    from capsule_triage.digests import file_sha256
    from capsule_triage.training_images import overlap_warning, read_training_images

    frame = _tree(tmp_path / "data", seed=5, n=1) / "bleeding" / "img_0.bmp"
    digest = file_sha256(frame)
    pq.write_table(pa.table({"sha256": [digest, digest], "split": ["train", "val"]}), tmp_path / TRAINING_IMAGES)
    known = read_training_images(tmp_path)
    assert known == {digest: "train"}
    warning = overlap_warning(known, [Sample(frame, "bleeding", str(frame), "val")], "val", [digest])
    assert warning is not None and warning.startswith("1 of the 1 frames scored (val) have the bytes of this model's training data (1 training")


def test_resume_without_a_checkpoint_says_it_starts_from_the_beginning(tmp_path):
    """QA 44: --resume of a run interrupted before its first checkpoint trained from scratch without a word."""
    out = tmp_path / "m"
    assert _train(_tree(tmp_path / "data", 1), out, resume=True) == [f"{out}: --resume: no checkpoint there; training starts from the beginning"]
    assert (out / "model.safetensors").is_file()


def test_the_images_list_is_written_whole_or_not_at_all(tmp_path):
    """helper-127: a write that failed (a full disk; here the name taken by a folder) ended `triage train` in a raw
    IsADirectoryError and left `.training_images.parquet.partial` behind."""
    from capsule_triage.datasets import Sample
    from capsule_triage.errors import OutputError
    from capsule_triage.training_images import read_training_images, write_training_images

    samples = [Sample(tmp_path / "a.png", "bleeding", "a", "train"), Sample(tmp_path / "b.png", "normal", "b", "val")]
    (tmp_path / TRAINING_IMAGES / "taken").mkdir(parents=True)
    with pytest.raises(OutputError, match=rf"{TRAINING_IMAGES}: cannot write \(Is a directory\)"):
        write_training_images(tmp_path, samples, ["1" * 64, "2" * 64])
    assert sorted(p.name for p in tmp_path.iterdir()) == [TRAINING_IMAGES]
    shutil.rmtree(tmp_path / TRAINING_IMAGES)
    write_training_images(tmp_path, samples, ["1" * 64, "2" * 64])
    assert read_training_images(tmp_path) == {"1" * 64: "train", "2" * 64: "val"} and sorted(p.name for p in tmp_path.iterdir()) == [TRAINING_IMAGES]


def test_a_card_of_ones_own_is_left_as_it_is_and_said(tmp_path):
    """QA 112 #5: training into a folder whose MODEL_CARD.md was the group's own left the card without its training
    section (data, figures, research use only), without a word."""
    data = _tree(tmp_path / "data", seed=5)
    out = tmp_path / "m"
    out.mkdir()
    (out / "MODEL_CARD.md").write_text("# Our model\n")
    assert _train(data, out) == [
        f"{out / 'MODEL_CARD.md'}: a card of your own, left as it is: the training section (data, recipe, validation figures, "
        "research use only) goes only between the lines <!-- triage-eval:training:begin --> and <!-- triage-eval:training:end -->, "
        "which it lacks; add them where it should go (a threshold chosen by `triage eval --target-sensitivity` fills them)"]
    assert (out / "MODEL_CARD.md").read_text() == "# Our model\n"
