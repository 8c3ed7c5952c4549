"""Shared fixtures: real frames from ../shared/data, clips encoded with PyAV, test checkpoints."""

from __future__ import annotations

import csv
import os
import shutil
import time
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]



def _shared_data() -> Path:
    """Real data: $CAPSULE_TRIAGE_SHARED_DATA, else ../shared/data beside the checkout, else /work/shared/data."""
    if os.environ.get("CAPSULE_TRIAGE_SHARED_DATA"):
        return Path(os.environ["CAPSULE_TRIAGE_SHARED_DATA"])
    for candidate in (REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if candidate.exists():
            return candidate
    return REPO.parent / "shared" / "data"


SHARED_DATA = _shared_data()
WCE = SHARED_DATA / "wcebleedgen"
VIDEOS = SHARED_DATA / "videos"
MIXED_CLIP = VIDEOS / "wcebleedgen_mixed_triage_4fps.mp4"
ASSETS = REPO / "tests" / "assets"
DEMO_CLIP = ASSETS / "demo_capsule_4fps.mp4"
ARTIFACTS = REPO / "tests" / "artifacts"

needs_shared = pytest.mark.skipif(not WCE.exists(), reason=f"real data not found at {SHARED_DATA}")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def triage(*args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None, prefix: list[str] = ()) -> subprocess.CompletedProcess:
    """Run the ``triage`` CLI as a subprocess (the installed console script's module); ``env`` adds variables; ``prefix``
    runs it through a command (e.g. malformed.drop_dac_override_prefix: without root's permission bypass)."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "capsule_triage.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})},
    )


def manifest_rows(split: str, label: str | None = None) -> list[dict]:
    rows = list(csv.DictReader(open(WCE / "manifest.csv")))
    return [r for r in rows if r["split"] == split and (label is None or r["label"] == label)]


def write_train_manifest(path: Path, *, every: int, per_class: int) -> Path:
    """A manifest of real wcebleedgen/train frames (every ``every``-th, ``per_class`` of each class; absolute paths,
    their near-duplicate groups): the small training data of the training tests."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "near_dup_group", "split"])
        for label in ("non-bleeding", "bleeding"):
            for row in manifest_rows("train", label)[::every][:per_class]:
                writer.writerow([WCE / row["path"], label, row["near_dup_group"], "train"])
    return path


def load_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def mixed_clip_frames() -> list[np.ndarray]:
    """The 96 frames of the shared mixed clip, in order (from its _frames.csv)."""
    rows = list(csv.DictReader(open(VIDEOS / "wcebleedgen_mixed_triage_4fps_frames.csv")))
    by_orig = {(r["label"], r["orig_name"].rsplit("/", 1)[-1]): r["path"] for r in manifest_rows("test")}
    return [load_rgb(WCE / by_orig[r["label"], r["source_file (WCEBleedGen TrainData)"]]) for r in rows]


def demo_clip_frames() -> list[np.ndarray]:
    """The 64 RGB frames (224 x 224) of the committed demo clip, tests/assets/demo_capsule_4fps.mp4: real
    capsule frames (WCEBleedGen, CC BY 4.0, see tests/assets/make_assets.py) a fresh clone has without ../shared."""
    with av.open(str(DEMO_CLIP)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def encode_clip(frames: list[np.ndarray], path: Path, *, codec: str = "libx264", fps: int = 4,
                pts: list[int] | None = None, time_base: tuple[int, int] | None = None, options: dict | None = None,
                container_options: dict | None = None, display: dict | None = None) -> Path:
    """Encode RGB frames into a real video file with PyAV (optionally with explicit, irregular pts; ``display``: a display
    matrix, ``VideoStream.set_display_rotation``'s arguments: degrees counter-clockwise, then hflip / vflip)."""
    from fractions import Fraction

    pix_fmt = {"mjpeg": "yuvj420p", "mpeg4": "yuv420p", "libx264": "yuv420p", "libx265": "yuv420p"}.get(codec, "yuv420p")
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        h, w = frames[0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.options = options or ({"crf": "18"} if codec == "libx264" else {})
        if codec == "mjpeg":
            stream.codec_context.qmin = stream.codec_context.qmax = 2
        if display:
            stream.set_display_rotation(**display)
        if time_base:
            stream.codec_context.time_base = Fraction(*time_base)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = Fraction(*time_base)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def turned_clockwise(path: Path, out: Path) -> Path:
    """A copy of an MP4 written by :func:`encode_clip` whose display matrix (its track header's) turns its frames 90
    degrees clockwise, as a phone or recorder that stores them sideways writes it."""
    import struct

    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    assert data[at + 4] == 0  # version 0 box: the matrix follows 5 words of fields and 16 bytes of reserved/layer/volume
    matrix = at + 4 + 4 + 4 * 5 + 16
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    out.write_bytes(bytes(data))
    return out


def settled(*paths: Path, hours: float = 24) -> None:
    """Date files (every file under a folder, links left alone) ``hours`` back: a batch takes an input written in the last
    minute that cannot be read for a copy still coming in (pending, QA 79 #4), not for a bad input."""
    past = time.time_ns() - int(hours * 3600 * 10**9)
    for path in paths:
        for file in [path, *path.rglob("*")] if path.is_dir() else [path]:
            if file.is_file() and not file.is_symlink():
                os.utime(file, ns=(past, past))


def write_frame_folder(frames: list[np.ndarray], folder: Path, *, ext: str = ".png", pattern: str = "frame{}") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, rgb in enumerate(frames):
        cv2.imwrite(str(folder / (pattern.format(i) + ext)), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="session")
def probe_weights(tmp_path_factory) -> Path:
    """A real bleeding classifier made in seconds: ImageNet Lite0 backbone + a logistic head fitted
    on 192 wcebleedgen/train frames (border-masked), saved as a weights folder."""
    if not WCE.exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    from capsule_triage.imagenet_init import create_lite0_imagenet
    from capsule_triage.presets import load_pipeline
    from capsule_triage.preprocess import Preprocessor
    from capsule_triage.weights import save_weights

    torch.manual_seed(0)
    config = load_pipeline("capsule-bleeding").model
    config.name = "test-probe-lite0"
    config.threshold, config.interpolation = 0.5, "bilinear"  # the probe's own, not the shipped model's (the preset's)
    model = create_lite0_imagenet(num_classes=2).eval()
    rng = np.random.default_rng(0)
    images, labels = [], []
    for label_index, label in enumerate(config.class_names):
        rows = manifest_rows("train", label)
        for i in rng.choice(len(rows), 96, replace=False):
            images.append(load_rgb(WCE / rows[i]["path"]))
            labels.append(label_index)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    with torch.inference_mode():
        feats = model.forward_head(model.forward_features(Preprocessor(config)(x)), pre_logits=True)
    feats, y = feats.clone(), torch.tensor(labels)
    head = torch.nn.Linear(feats.shape[1], 2)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=100)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(feats), y) + 1e-2 * head.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    model.get_classifier().load_state_dict(head.state_dict())
    return save_weights(tmp_path_factory.mktemp("weights") / "probe", model, config)


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> Path:
    """A tiny random-init model with the default preset's classes (fast; scores are meaningless)."""
    from capsule_triage.model_config import ModelConfig
    from capsule_triage.weights import create_model, save_weights

    torch.manual_seed(0)
    config = ModelConfig(architecture="test_efficientnet", class_names=["non-bleeding", "bleeding"],
                         abnormal_classes=["bleeding"], input_size=64, name="test-random")
    return save_weights(tmp_path_factory.mktemp("weights") / "random", create_model(config), config)


def hub_cache(cache: Path, repo: str, folder: Path) -> str:
    """A Hugging Face cache holding ``folder`` as the ``main`` revision of model repository ``repo``
    (the layout huggingface_hub writes: refs/main -> snapshots/<commit>/<files>)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    shutil.copytree(folder, root / "snapshots" / commit)
    return commit


SHIPPED_WEIGHTS = REPO / "weights" / "capsule-bleeding-lite0"


@pytest.fixture(scope="session")
def shipped_weights() -> Path:
    """The default model shipped in weights/ (see its MODEL_CARD.md)."""
    if not (SHIPPED_WEIGHTS / "model.safetensors").exists():
        pytest.skip("shipped weights not present")
    return SHIPPED_WEIGHTS
