"""Fine-tune a timm classifier on labelled frames with the recipes of the seed studies.

``train(TrainOptions(...)) -> Path`` writes a weights folder (``config.json`` + ``model.safetensors``
holding the best epoch by validation metric: ROC AUC for two classes, macro-F1 otherwise) that
``load_model`` and ``triage run`` accept as it is, plus ``train_log.csv`` (one row per epoch) and
``checkpoint/`` (``state.safetensors`` + ``state.json``: model, SGD momentum, phase, step, RNG and
log; no pickle) from which ``resume=True`` continues after an interruption.

Frames go uint8 -> augmentation -> the model's own Preprocessor -> model, exactly as in inference.
Every random draw (batch order, augmentation, dropout) is derived from (seed, phase, step), so a
resumed run repeats the uninterrupted one.

Strategies: ``head`` (seed B "local": only the new classifier trains), ``full`` (seed B "global"),
``two-stage`` (seed A: head first, then everything). ``lock`` K freezes logical blocks 1..K of 6
(seed C) in the full stage; frozen BatchNorm layers keep their running statistics. The starting
weights (``init``) and the logical blocks of each architecture family live in ``transfer.py``.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import timm
import torch
from torch import nn
from tqdm import tqdm

from .augment import POLICIES, augment, pixel_noise
from .checkpoint import CHECKPOINT_DIR, load_checkpoint, restore, save_checkpoint
from .recompress import CODECS, recompress_augment
from .datasets import (assign_validation, check_training_splits, class_order, class_weights, read_samples, samples_digest, select,
                       split_counts)
from .errors import DataWarning, InputError, WeightsError
from .evaluate import predict_probs, summarize
from .outputs import check_creatable
from .imagenet_init import LITE0_ARCH
from .model_config import ModelConfig
from .preprocess import Preprocessor
from .stills import LabelledImages, load_for_model
from .schedule import SGD_MOMENTUM, STRATEGIES, Phase, bit_hyperrule, epoch_schedule, plan_phases
from .training_images import TRAINING_IMAGES, images_sha256, repeated_images, write_training_images
from .transfer import INIT_SOURCES, N_BLOCKS, initial_model, set_trainable, train_mode
from .weights import create_model, save_weights

SCHEDULES = ("epochs", "bit")
LOG_NAME = "train_log.csv"
RUNTIME_FIELDS = ("output", "resume", "stop_after_steps", "checkpoint_every", "threads", "progress", "command")


@dataclass
class TrainOptions:
    """A training run. Fields not in ``RUNTIME_FIELDS`` must match when resuming."""

    data: Path  # manifest CSV or image-folder tree (see datasets.py)
    output: Path  # weights folder to write
    arch: str = LITE0_ARCH  # timm architecture
    init: str = "imagenet"  # "none" | "imagenet" (Lite0 only) | "hub:<timm tag>" | weights file/folder | BiT .npz
    strategy: str = "two-stage"  # head | full | two-stage
    lock: int = 0  # freeze logical blocks 1..lock (0-5) in the full stage
    schedule: str = "epochs"  # "epochs" (cosine over `epochs`) | "bit" (BiT-HyperRule)
    epochs: int = 5  # full-stage (or head-strategy) epochs for the "epochs" schedule
    head_epochs: int = 2  # head stage of two-stage
    lr: float = 0.005  # SGD lr of the "epochs" schedule
    head_lr: float = 0.01  # SGD lr of the head stage of two-stage
    budget_scale: float = 1.0  # fraction of the BiT image budget (e.g. 0.03 for CPU runs)
    batch_size: int = 32
    weight_decay: float = 0.0
    augment: str = "bit"  # bit (seed B) | flip-rotate (seed C) | none
    recompress: float = 0.0  # probability of a lossy round trip per frame after augmentation (recompress.py)
    recompress_codec: str = "h264"  # h264 (a clip per batch, CRF 18-35) | jpeg (quality 30-95)
    stability: float = 0.0  # weight of the stability loss: KL between a frame's prediction and its noisy copy's
    stability_sigma: float = 2.0  # grey levels of the copy's Gaussian pixel noise
    class_weighting: str = "balanced"  # balanced (loss weights n/(C*n_c)) | none
    class_names: list[str] | None = None  # head order; default normal-looking first, then natural order
    abnormal_classes: list[str] | None = None  # default: every class but the first
    input_size: int | None = None  # default: the architecture's timm input size
    border: str = "circle"
    border_radius: float = 0.89
    val_fraction: float = 0.2  # of the training pool, by whole groups, when the data has no val split
    seed: int = 0
    name: str = ""
    resume: bool = False  # continue from output/checkpoint
    stop_after_steps: int | None = None  # stop this invocation after N steps (time boxes, tests)
    checkpoint_every: int = 50  # steps between checkpoints (and at every epoch end)
    threads: int = 2
    progress: bool = True
    command: str = ""  # the command line, recorded in provenance


@dataclass
class _Run:
    options: TrainOptions
    config: ModelConfig
    model: nn.Module
    preprocess: Preprocessor
    train_set: LabelledImages
    val_set: LabelledImages | None
    loss_fn: nn.Module
    phases: list[Phase]
    steps_per_epoch: int
    state: dict = field(default_factory=dict)
    identity: dict = field(default_factory=dict)  # data_sha256 (datasets.samples_digest), images_sha256: a resumed run must see the same data
    images: tuple = ()  # (samples, SHA-256 of their files) of the training and validation images, for training_images.parquet


def train(options: TrainOptions) -> Path:
    """Train and write the weights folder ``options.output``; returns it.

    Raises:
        TriageError: bad data, options, init weights, or an output folder that exists without resume.
    """
    started = time.perf_counter()
    _check_options(options)
    torch.set_num_threads(options.threads)
    out = Path(options.output)
    saved = load_checkpoint(out) if options.resume else None
    _check_output(out, options, saved)
    if saved is not None and saved.get("finished"):
        return out
    source = read_samples(options.data)
    for message in source.messages():
        warnings.warn(f"{options.data}: {message}", DataWarning, stacklevel=2)
    samples = assign_validation(source.samples, val_fraction=options.val_fraction, seed=options.seed)
    config = make_config(options, samples)
    check_training_splits(options.data, samples, config.class_names, val_fraction=options.val_fraction)
    sets = [load_for_model(select(samples, s), config, progress=options.progress, source=options.data) if select(samples, s) else None
            for s in ("train", "val")]
    pool = select(samples, "train") + select(samples, "val")
    digests = [d for images in sets if images is not None for d in images.sha256]  # by content, from the bytes just decoded
    identity = {"data_sha256": samples_digest(samples), "images_sha256": images_sha256(pool, digests)}
    changed = [key for key, value in identity.items() if saved is not None and saved.get(key, value) != value]
    if changed:
        raise InputError(options.data, f"the data changed since the checkpoint ({'images, labels, groups or splits differ' if 'data_sha256' in changed else 'an image changed in place'}); "
                                       "--resume continues a run only on the data it started with")
    for phrase in repeated_images(pool, digests):
        warnings.warn(f"{options.data}: {phrase}", DataWarning, stacklevel=2)
    config.provenance["training"].update(**identity, data_path=str(Path(options.data).resolve()), unread=source.unread)
    torch.manual_seed(options.seed)
    model = create_model(config) if saved else initial_model(config, options.init)
    run = _Run(options, config, model.to(memory_format=torch.channels_last), Preprocessor(config), sets[0], sets[1],
               nn.CrossEntropyLoss(weight=class_weights(sets[0].labels, len(config.class_names)) if options.class_weighting == "balanced" else None),
               [], max(1, len(sets[0].labels) // options.batch_size))
    run.identity, run.images = identity, (pool, digests)
    run.phases = _phases(options, run.steps_per_epoch, len(sets[0].labels))
    run.state = saved or {"phase": 0, "step": 0, "global_step": 0, "best": None, "log": [], "epoch_loss": [0.0, 0], "elapsed_seconds": 0.0, "finished": False}
    run.state["session_start"] = started - run.state["elapsed_seconds"]
    _loop(run, out)
    return out


def _check_options(o: TrainOptions) -> None:
    checks = [(o.strategy in STRATEGIES, f"strategy must be one of {STRATEGIES}, got {o.strategy!r}"),
              (o.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {o.schedule!r}"),
              (o.augment in POLICIES, f"augment must be one of {POLICIES}, got {o.augment!r}"),
              (0.0 <= o.recompress <= 1.0, f"recompress is a probability in [0, 1], got {o.recompress}"),
              (o.recompress_codec in CODECS, f"recompress_codec must be one of {CODECS}, got {o.recompress_codec!r}"),
              (o.stability >= 0 and o.stability_sigma > 0, f"stability must be >= 0 and stability_sigma > 0, got {o.stability}, {o.stability_sigma}"),
              (o.class_weighting in ("balanced", "none"), f"class_weighting must be 'balanced' or 'none', got {o.class_weighting!r}"),
              (0 <= o.lock < N_BLOCKS, f"lock must be in 0..{N_BLOCKS - 1}, got {o.lock}"),
              (not (o.lock and o.strategy == "head"), "lock applies to the full stage (strategy full or two-stage), not to head"),
              (o.batch_size >= 2 and o.epochs >= 1 and o.head_epochs >= 1, "batch_size must be >= 2, epochs and head_epochs >= 1"),
              (o.lr > 0 and o.head_lr > 0 and o.budget_scale > 0, "lr, head_lr and budget_scale must be > 0")]
    for ok, message in checks:
        if not ok:
            raise InputError("options", message)


def _check_output(out: Path, options: TrainOptions, saved: dict | None) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(out, "output path exists and is not a folder")
    if not out.exists():
        check_creatable(out)
    if saved is None and (out / CHECKPOINT_DIR).exists():
        raise InputError(out, "output folder already holds a training run; use --resume to continue it or choose another folder")
    if saved is None and (out / "config.json").exists():  # e.g. shipped weights: never overwritten by a new run
        raise InputError(out, "output folder already holds a model (config.json, no checkpoint to resume); choose another folder")
    if saved is not None:
        defaults = {f.name: f.default for f in fields(TrainOptions) if f.default is not MISSING}  # options newer than the checkpoint
        differ = sorted(k for k, v in recipe(options).items() if saved["recipe"].get(k, defaults.get(k)) != v)
        if differ:
            raise InputError(out, f"--resume with different options than the checkpoint: {differ} (rerun the same command)")


def recipe(options: TrainOptions) -> dict:
    """The options that define a run (all but the runtime ones), JSON-ready."""
    data = asdict(options)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items() if k not in RUNTIME_FIELDS}


def make_config(options: TrainOptions, samples: list) -> ModelConfig:
    """The model description: classes from the data, preprocessing from timm's config for the arch."""
    if not timm.is_model(options.arch):
        raise WeightsError(options.arch, "unknown architecture (not a timm model)")
    labels = {s.label for s in samples if s.split in ("train", "val")}
    class_names = list(options.class_names or class_order(labels))
    if labels - set(class_names):
        raise InputError(options.data, f"label(s) {sorted(labels - set(class_names))} missing from class_names {class_names}")
    if len(class_names) < 2:
        raise InputError(options.data, f"the data has one class ({', '.join(class_names) or 'none'}); a classifier needs "
                                       "frames of at least 2 classes")
    tag = options.init[4:] if options.init.startswith("hub:") else options.arch
    cfg = timm.models.get_pretrained_cfg(tag) or timm.models.get_pretrained_cfg(options.arch)
    data = {"input_size": cfg.input_size[-1], "mean": cfg.mean, "std": cfg.std, "interpolation": cfg.interpolation} if cfg else {}
    data["interpolation"] = data.get("interpolation") if data.get("interpolation") in ("bilinear", "bicubic") else "bilinear"
    config = ModelConfig(
        architecture=options.arch, class_names=class_names, abnormal_classes=list(options.abnormal_classes or class_names[1:]),
        **{**data, "input_size": options.input_size or data.get("input_size", 224)},
        border=options.border, border_radius=options.border_radius, name=options.name or options.arch,
        provenance={"training": {"command": options.command, "recipe": recipe(options), "init": INIT_SOURCES.get(options.init, options.init),
                                 "data_counts": split_counts(samples), "torch": torch.__version__, "timm": timm.__version__, "threads": options.threads}},
    )
    config.validate("options")
    return config


def _phases(options: TrainOptions, steps_per_epoch: int, n_train: int) -> list[Phase]:
    if options.schedule == "bit":
        main = bit_hyperrule(n_train, options.batch_size, budget_scale=options.budget_scale)
    else:
        main = epoch_schedule(options.epochs, steps_per_epoch, options.lr)
    head = epoch_schedule(options.head_epochs, steps_per_epoch, options.head_lr)
    return plan_phases(options.strategy, main, lock=options.lock, head=head)


def _seed(*parts: int) -> int:
    value = 0
    for part in parts:
        value = (value * 1_000_003 + int(part)) % (2**62)
    return value


def _loop(run: _Run, out: Path) -> None:
    state, o = run.state, run.options
    steps_this_session = 0
    for pi in range(state["phase"], len(run.phases)):
        phase = run.phases[pi]
        names = set_trainable(run.model, lock=phase.lock, head_only=phase.name == "head")
        params = [p for n, p in run.model.named_parameters() if n in names]
        optimizer = torch.optim.SGD(params, lr=phase.schedule.base_lr, momentum=SGD_MOMENTUM, weight_decay=o.weight_decay)
        if state.get("resume_tensors") is not None:
            restore(run.model, optimizer, names, state.pop("resume_tensors"))
        train_mode(run.model)
        total = phase.schedule.total_steps
        bar = tqdm(range(state["step"], total), initial=state["step"], total=total, desc=f"{phase.name} ({pi + 1}/{len(run.phases)})", disable=not o.progress)
        for step in bar:
            loss = _train_step(run, optimizer, pi, step, head_only=phase.name == "head")
            state["epoch_loss"] = [state["epoch_loss"][0] + loss, state["epoch_loss"][1] + 1]
            state.update(step=step + 1, global_step=state["global_step"] + 1)
            steps_this_session += 1
            bar.set_postfix(loss=f"{state['epoch_loss'][0] / state['epoch_loss'][1]:.4f}", **_last_val(state))
            if (step + 1) % run.steps_per_epoch == 0 or step + 1 == total:
                _end_epoch(run, out, phase, optimizer.param_groups[0]["lr"])
            if (step + 1) % o.checkpoint_every == 0 or (step + 1) % run.steps_per_epoch == 0 or step + 1 == total:
                _save_checkpoint(run, out, optimizer, names)
            if o.stop_after_steps is not None and steps_this_session >= o.stop_after_steps and step + 1 < total:
                _save_checkpoint(run, out, optimizer, names)
                return
        bar.close()
        state.update(phase=pi + 1, step=0)
    state["finished"] = True
    _finish(run, out)


def _train_step(run: _Run, optimizer: torch.optim.Optimizer, pi: int, step: int, *, head_only: bool) -> float:
    n, bs = len(run.train_set.labels), run.options.batch_size
    epoch, index = divmod(step, run.steps_per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(_seed(run.options.seed, pi, epoch)))
    batch = order[index * bs : (index + 1) * bs]
    step_seed = _seed(run.options.seed, pi, 10**9 + step)
    torch.manual_seed(step_seed)  # dropout / drop-path
    generator = torch.Generator().manual_seed(step_seed)
    frames = augment(run.train_set.images[batch], run.options.augment, generator)
    if run.options.recompress:
        frames = recompress_augment(frames, run.options.recompress, generator, run.options.recompress_codec)
    for group in optimizer.param_groups:
        group["lr"] = run.phases[pi].schedule.lr_at(step)
    if run.options.stability:  # the noisy copies go through the same forward pass, after the clean frames
        frames = torch.cat([frames, pixel_noise(frames, run.options.stability_sigma, generator)])
    x = run.preprocess(frames).contiguous(memory_format=torch.channels_last)
    if head_only:
        with torch.no_grad():
            features = run.model.forward_features(x)
        logits = run.model.forward_head(features)
    else:
        logits = run.model(x)
    if run.options.stability:
        logits, noisy = logits.chunk(2)
        loss = run.loss_fn(logits, run.train_set.labels[batch]) + run.options.stability * stability_loss(logits, noisy)
    else:
        loss = run.loss_fn(logits, run.train_set.labels[batch])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def stability_loss(logits: torch.Tensor, noisy_logits: torch.Tensor) -> torch.Tensor:
    """KL(p(x) || p(x')) over the batch, x' a noisy copy of x: the stability term of Zheng et al.,
    "Improving the robustness of deep neural networks via stability training" (CVPR 2016).

    The shipped model, trained without it, moves its score by up to 0.08 under Gaussian pixel noise of
    0.5 grey levels and by 0.26-0.30 under 1 level (wcebleedgen/test, benchmarks/fragility.py): as far
    as bf16 or int8 inference moves it, so precision checks fail and small decoder differences move events.
    """
    log_p = torch.log_softmax(logits.float(), dim=1)
    return nn.functional.kl_div(torch.log_softmax(noisy_logits.float(), dim=1), log_p, log_target=True, reduction="batchmean")


def validation_metrics(labels: np.ndarray, probs: np.ndarray, config: ModelConfig) -> dict:
    """Loss, accuracy, AUC of the suspicion score and macro-F1; ``metric`` = AUC (2 classes) or macro-F1."""
    summary = summarize(labels, probs, config)
    out = {"val_loss": float(-np.log(probs[np.arange(len(labels)), labels] + 1e-12).mean()), "val_accuracy": summary["accuracy"],
           "val_auc": summary["auc"], "val_macro_f1": summary["macro"]["f1"]}
    return {**out, "val_metric": out["val_auc"] if len(config.class_names) == 2 else out["val_macro_f1"]}


def _last_val(state: dict) -> dict:
    rows = [r for r in state["log"] if r.get("val_metric") is not None]
    return {"val": f"{rows[-1]['val_metric']:.4f}"} if rows else {}


def _end_epoch(run: _Run, out: Path, phase: Phase, lr: float) -> None:
    state = run.state
    row = {"phase": phase.name, "epoch": len(state["log"]) + 1, "global_step": state["global_step"], "lr": lr,
           "train_loss": state["epoch_loss"][0] / max(state["epoch_loss"][1], 1)}
    if run.val_set is not None:
        probs = predict_probs(run.model, run.preprocess, run.val_set.images)
        row.update(validation_metrics(run.val_set.labels.numpy(), probs, run.config))
        train_mode(run.model)
    key = [row.get("val_metric", 0.0), -row.get("val_loss", 0.0)] if run.val_set is not None else [row["epoch"], 0]
    if any(math.isnan(v) for v in key):
        key = [-1.0, -1e9]
    row["best"] = state["best"] is None or key > state["best"]["key"]
    row["elapsed_seconds"] = time.perf_counter() - state["session_start"]
    if row["best"]:
        state["best"] = {"key": key, "epoch": row["epoch"], "phase": phase.name}
        _save_best(run, out)
    state["log"].append(row)
    state["epoch_loss"] = [0.0, 0]
    _write_log(out / LOG_NAME, state["log"])


def _save_best(run: _Run, out: Path) -> None:
    provenance = dict(run.config.provenance)
    provenance["training"] = {**provenance["training"], "finished": False, "best": run.state["best"], "split": {
        "val_fraction": run.options.val_fraction, "seed": run.options.seed,
        "n_train": len(run.train_set.labels), "n_val": len(run.val_set.labels) if run.val_set else 0}}
    run.config.provenance = provenance
    save_weights(out, run.model, run.config)
    if not (out / TRAINING_IMAGES).exists():
        write_training_images(out, *run.images)


def _write_log(path: Path, rows: list[dict]) -> None:
    pa_csv.write_csv(pa.Table.from_pylist(rows), str(path.with_suffix(".tmp")))
    os.replace(path.with_suffix(".tmp"), path)


def _save_checkpoint(run: _Run, out: Path, optimizer: torch.optim.Optimizer, names: list[str]) -> None:
    state = {k: v for k, v in run.state.items() if k != "session_start"}
    state.update(recipe=recipe(run.options), **run.identity, elapsed_seconds=time.perf_counter() - run.state["session_start"],
                 schedules=[p.schedule.to_dict() for p in run.phases])
    save_checkpoint(out, run.model, optimizer, names, state)


def _finish(run: _Run, out: Path) -> None:
    """Record the total wall time in the best model's config and in the checkpoint."""
    wall = round(time.perf_counter() - run.state["session_start"], 1)
    config = ModelConfig.load(out / "config.json")
    config.provenance["training"].update(wall_seconds=wall, finished=True)
    config.save(out / "config.json")
    if not (out / TRAINING_IMAGES).exists():  # killed between the best weights and their list, or resumed from before the list
        write_training_images(out, *run.images)
    path = out / CHECKPOINT_DIR / "state.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "finished": True, "elapsed_seconds": wall}, indent=1))
