"""Fine-tune a timm classifier on labelled frames with the recipes of the seed studies.

``train(TrainOptions(...)) -> Path`` writes a weights folder (``config.json`` + ``model.safetensors``
holding the best epoch by validation metric: ROC AUC for two classes, macro-F1 otherwise) that
``load_model`` and ``triage run`` accept as it is, plus ``train_log.csv`` (one row per epoch) and
``checkpoint/`` (``state.safetensors`` + ``state.json``: model, SGD momentum, phase, step, RNG and
log; no pickle) from which ``resume=True`` continues after an interruption (a finished run keeps only
``state.json``).

Frames go uint8 -> augmentation -> the model's own Preprocessor -> model, exactly as in inference.
Every random draw (batch order, augmentation, dropout) is derived from (seed, phase, step), so a
resumed run repeats the uninterrupted one (on the CPU; on a GPU up to its kernels' non-deterministic backward passes).

Strategies: ``head`` (seed B "local": only the new classifier trains), ``full`` (seed B "global"),
``two-stage`` (seed A: head first, then everything). ``lock`` K freezes logical blocks 1..K of 6
(seed C) in the full stage; frozen BatchNorm layers keep their running statistics. The starting
weights (``init``) and the logical blocks of each architecture family live in ``transfer.py``.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import torch
from torch import nn

from .augment import augment, pixel_noise
from .bf16_weights import rounded_in_place
from .checkpoint import drop_resume_tensors, load_checkpoint, mark_finished, restore, save_checkpoint
from .cpu_info import bf16_emulated
from .datasets import class_weights, looks_normal, read_samples, samples_digest, select
from .device import autocast, out_of_memory_raises, to_device
from .distill import Distillation, load_teacher
from .errors import DataWarning, DeviceError, InputError
from .evaluate import as_run_scores, frames_with_view, predict_probs, summarize
from .field_of_view import NO_VIEW_KINDS
from .interrupts import deferring_interrupts
from .metrics import accuracy_curve
from .card_training import refresh_training_section
from .model_card import check_card
from .model_config import ModelConfig
from .preprocess import Preprocessor
from .progress import progress_bar
from .report_svg import score_text
from .recompress import recompress_augment
from .stability import bf16_copies, stability_loss
from .schedule import SGD_MOMENTUM, Phase, bit_hyperrule, epoch_schedule, plan_phases
from .presets import preset_order_note
from .splits import NO_GROUPS, assign_validation, check_training_splits, few_frames_note, label_typo, split_leak
from .stills import LabelledImages, load_for_model
from .train_options import (LOG_NAME, RUNTIME_FIELDS, SCHEDULES, TrainOptions, check_model, check_options, check_output, check_threads, device_label, make_config, with_strategy,
                            recipe, training_device)
from .training_images import TRAINING_IMAGES, copies_note, images_sha256, inherited_images, write_training_images
from .transfer import init_record, initial_model, local_init, set_trainable, train_mode
from .versions import package_versions
from .weights import create_model, save_weights

__all__ = ["RUNTIME_FIELDS", "SCHEDULES", "TrainOptions", "make_config", "recipe", "train", "stability_loss", "validation_metrics"]

# rev54: training has no backends (the inference warning said "use an fp32 backend"); measured by QA 60 on an AVX2-only
# EPYC: 1.5 min against 0.2 for the same recipe
EMULATED_TRAINING = ("this CPU has no native bf16 (AVX-512-BF16 or AMX): PyTorch emulates bf16, several times slower than "
                     "fp32 here; use --precision fp32")
LOSS_SYNC_STEPS = 20  # the running loss is read back from the device every N steps (each read waits for the GPU)


@dataclass
class _Run:
    options: TrainOptions
    config: ModelConfig
    model: nn.Module
    preprocess: Preprocessor
    train_set: LabelledImages
    val_set: LabelledImages | None
    val_view: np.ndarray | None  # which validation stills show a field of view (evaluate.frames_with_view)
    loss_fn: nn.Module
    phases: list[Phase]
    steps_per_epoch: int
    device: torch.device = torch.device("cpu")
    scaler: torch.amp.GradScaler | None = None  # fp16: scales the loss so small gradients do not underflow
    state: dict = field(default_factory=dict)
    identity: dict = field(default_factory=dict)  # data_sha256 (datasets.samples_digest), images_sha256: a resumed run must see the same data
    images: tuple = ()  # (samples, SHA-256 of their files) of the training and validation images, for training_images.parquet
    distillation: Distillation | None = None  # --distill: the loss on the labels becomes the teacher's (distill.py)


def train(options: TrainOptions) -> Path:
    """Train and write the weights folder ``options.output``; returns it.

    Raises:
        TriageError: bad data, options, init weights, or an output folder that exists without resume.
        ValueError: a device this machine does not have, or a precision it cannot train in.
        DeviceError: the device ran out of memory.
    """
    started = time.perf_counter()
    given, options = options, with_strategy(options)  # QA 98 #2: checked as given, which says when a default was taken
    check_options(given)
    device = training_device(options)
    if options.precision == "bf16" and device.type == "cpu" and bf16_emulated():  # QA 60 #1
        warnings.warn(f"--precision bf16: {EMULATED_TRAINING}", DataWarning, stacklevel=2)
    torch.set_num_threads(options.threads)
    out = Path(options.output)
    saved = load_checkpoint(out) if options.resume else None
    if options.resume and saved is None:  # QA 44: trained from the beginning without a word
        check_options(replace(given, resume=False))  # rev76 #1: refused as a new run is (--init none --lock K, ignored options)
        warnings.warn(f"{out}: --resume: no checkpoint there; training starts from the beginning", DataWarning, stacklevel=2)
    check_output(out, options, saved)
    source = read_samples(options.data) if saved is None or not saved.get("finished") or "data_sha256" in saved else None
    if saved is not None and saved.get("finished"):  # rev52: another manifest was accepted here, the weights returned as they were
        drawn = assign_validation(source.samples, val_fraction=options.val_fraction, seed=options.seed) if source is not None else None
        if drawn is not None and saved["data_sha256"] != samples_digest(drawn):
            raise _changed_data(options, ["data_sha256"])
        return out
    if saved is not None:
        check_threads(out, options, saved)
    check_card(out, ("training",), only_begun=True)  # a resumed run's card is rewritten at the end (review rev34: refused only then)
    data_warnings: list[str] = []  # QA 56 #6: printed only; now in the provenance and the card's training section too

    def warn(note: str) -> None:
        data_warnings.append(note)
        warnings.warn(f"{options.data}: {note}", DataWarning, stacklevel=3)

    init, hub_note = local_init(options.init, resumed=saved is not None)  # an hf-hub: weights folder as its cached snapshot
    if hub_note:  # a cached copy stands in for a Hub that could not be reached
        warnings.warn(hub_note, DataWarning, stacklevel=2)
    for message in source.messages():
        warn(message)
    samples = assign_validation(source.samples, val_fraction=options.val_fraction, seed=options.seed)
    config = make_config(options, samples)
    check_training_splits(options.data, samples, config.class_names, val_fraction=options.val_fraction)
    distillation, teacher = load_teacher(options.distill, config, device, options.distill_weight, saved, options.distill_loss) if options.distill else (None, None)
    drawn_alone = (source.group_column is None and options.val_fraction > 0 and not any(s.split == "val" for s in source.samples)
                   and f"{NO_GROUPS}, so validation was drawn image by image: near-identical frames of one video or patient can "
                       "fall on both sides and the validation figures are optimistic; give a manifest CSV with a group column "
                       "(path,label,group: each frame's video or patient)")  # QA 65 #9: said by `triage split TREE`, not here
    guessed = (options.abnormal_classes is None and options.class_names is None  # QA 69 #2: which class is normal, a guess
               and not any(map(looks_normal, config.class_names))
               and f"no class name looks normal (normal, negative, healthy, non-..., no ...): {config.class_names[0]} is taken "
                   f"as the normal class by name order and {', '.join(config.abnormal_classes)} as abnormal (flagged by "
                   "triage run); give --abnormal to say which classes are")
    typo = options.class_names is None and label_typo(select(samples, "train") + select(samples, "val"), config.class_names)
    for note in (split_leak(samples, source.group_column), drawn_alone, guessed, preset_order_note(config.class_names),
                 few_frames_note(samples, config.class_names), typo):
        if note:
            warn(note)
    sets = [load_for_model(select(samples, s), config, progress=options.progress, source=options.data) if select(samples, s) else None
            for s in ("train", "val")]
    pool = select(samples, "train") + select(samples, "val")
    digests = [d for images in sets if images is not None for d in images.sha256]  # by content, from the bytes just decoded
    identity = {"data_sha256": samples_digest(samples), "images_sha256": images_sha256(pool, digests)}
    changed = [key for key, value in identity.items() if saved is not None and saved.get(key, value) != value]
    if changed:
        raise _changed_data(options, changed)
    if copies := copies_note(pool, digests):
        warn(copies)
    torch.manual_seed(options.seed)
    model = create_model(config) if saved else initial_model(config, init)  # (then a hub:TAG checkpoint is in the cache)
    base = saved.get("init_weights") if saved else init_record(init, options.init if init != options.init else None)  # resumed: the weights the run began from
    val_from = "manifest" if any(s.split == "val" for s in source.samples) else "drawn" if options.val_fraction > 0 else "none"
    config.provenance["training"].update(**identity, data_path=str(Path(options.data).resolve()), unread=source.unread, val_from=val_from,
                                         data_warnings=data_warnings, **({"distill": teacher} if teacher else {}),
                                         **({"init_weights": base} if base else {}),
                                         device=device_label(device), versions=package_versions())  # the code that trained (rev23)
    check_model(options, model, config.input_size)
    weight = class_weights(sets[0].labels, len(config.class_names)) if options.class_weighting == "balanced" else None
    run = _Run(options, config, model.to(device, memory_format=torch.channels_last), Preprocessor(config).to(device), sets[0], sets[1],
               frames_with_view(sets[1].images) if sets[1] is not None else None,
               nn.CrossEntropyLoss(weight=weight.to(device) if weight is not None else None), [], max(1, len(sets[0].labels) // options.batch_size),
               device, torch.amp.GradScaler("cuda") if options.precision == "fp16" else None)
    run.identity = {**identity, **({'distill_sha256': teacher['weights_sha256']} if teacher else {}), **({'init_weights': base} if base else {})}
    run.images, run.distillation = (pool, digests, inherited_images(init, base)), distillation
    if run.val_view is not None and not run.val_view.all():  # as triage eval says it of the frames it scores
        warn(f"{int((~run.val_view).sum())} of the {len(run.val_view)} validation frames show no field of view ({NO_VIEW_KINDS}): "
             "they count as never flagged in the validation metric, as triage run treats them")
    run.phases = _phases(options, run.steps_per_epoch, len(sets[0].labels))
    if run.scaler is not None and (saved or {}).get("grad_scaler"):
        run.scaler.load_state_dict(saved["grad_scaler"])
    run.state = saved or {"phase": 0, "step": 0, "global_step": 0, "best": None, "log": [], "epoch_loss": [0.0, 0], "elapsed_seconds": 0.0, "finished": False}
    run.state["session_start"] = started - run.state["elapsed_seconds"]
    lower = "" if options.precision != "fp32" else " or --precision bf16/fp16"
    with out_of_memory_raises(lambda: DeviceError(device_label(device), f"out of memory training {config.architecture} at "
                                                  f"{config.input_size} px in batches of {options.batch_size}: use a smaller "
                                                  f"--batch-size{lower} (a new --output: the batch size is part of the recipe)")):
        _loop(run, out)
    return out



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
        bar = progress_bar(range(state["step"], total), show=o.progress, initial=state["step"], total=total, desc=f"{phase.name} ({pi + 1}/{len(run.phases)})")
        losses = []  # of the steps since the last read-back: on a GPU, reading each would wait for it every step
        for step in bar:
            losses.append(_train_step(run, optimizer, pi, step, head_only=phase.name == "head"))
            state.update(step=step + 1, global_step=state["global_step"] + 1)
            steps_this_session += 1
            epoch_end = (step + 1) % run.steps_per_epoch == 0 or step + 1 == total
            last = pi + 1 == len(run.phases) and step + 1 == total  # (QA 69 #9: at a phase's end it ran one step on)
            stop = o.stop_after_steps is not None and steps_this_session >= o.stop_after_steps and not last
            shown = epoch_end or stop or (step + 1) % o.checkpoint_every == 0 or len(losses) == LOSS_SYNC_STEPS
            if shown:
                _add_losses(state, losses)
                loss = f"{state['epoch_loss'][0] / state['epoch_loss'][1]:.4f}"  # before _end_epoch starts the next epoch's sum
            if epoch_end:
                _end_epoch(run, out, phase, optimizer.param_groups[0]["lr"])
            if shown:  # after _end_epoch: the validation figure of the epoch just ended (QA 31: the one before it)
                bar.set_postfix(loss=loss, **_last_val(state))
            if (step + 1) % o.checkpoint_every == 0 or epoch_end or stop:
                _save_checkpoint(run, out, optimizer, names)
            if stop:
                return
        bar.close()
        state.update(phase=pi + 1, step=0)
    state["finished"] = True
    _finish(run, out)


def _add_losses(state: dict, losses: list[torch.Tensor]) -> None:
    """Add the steps' losses to the epoch's running sum (in step order, as Python floats: one copy from
    the device for all of them) and clear the list."""
    for value in torch.stack(losses).tolist() if losses else []:
        state["epoch_loss"] = [state["epoch_loss"][0] + value, state["epoch_loss"][1] + 1]
    losses.clear()


def _train_step(run: _Run, optimizer: torch.optim.Optimizer, pi: int, step: int, *, head_only: bool) -> torch.Tensor:
    """One SGD step; returns the loss (on the device, not waited for)."""
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
    bf16_copy = bool(run.options.stability) and run.options.stability_copy == "bf16"
    if run.options.stability:  # the copies go through the same forward pass, after the clean frames
        frames = torch.cat([frames, frames if bf16_copy else pixel_noise(frames, run.options.stability_sigma, generator)])
    labels = to_device(run.train_set.labels[batch], run.device)
    frames = to_device(frames, run.device)
    x = run.preprocess(frames).contiguous(memory_format=torch.channels_last)
    with autocast(run.device, run.options.precision), bf16_copies(run.model, bf16_copy):
        if head_only:
            with torch.no_grad():
                features = run.model.forward_features(x)
            logits = run.model.forward_head(features)
        else:
            logits = run.model(x)
        logits, copies = logits.chunk(2) if run.options.stability else (logits, None)
        loss = run.distillation(logits, frames[: len(logits)]) if run.distillation is not None else run.loss_fn(logits.float(), labels)
        if copies is not None:
            loss = loss + run.options.stability * stability_loss(logits, copies)
    optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.step(optimizer)
        run.scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach()


def validation_metrics(labels: np.ndarray, probs: np.ndarray, config: ModelConfig, view: np.ndarray | None = None) -> dict:
    """Loss, accuracy, AUC of the suspicion score and macro-F1; ``metric`` = AUC (2 classes) or macro-F1.

    ``view``: which stills show a field of view; the others count as triage run and triage eval count them, never
    flagged (:func:`capsule_triage.evaluate.as_run_scores`), in every figure but the loss (the model's own output)."""
    summary = summarize(labels, probs if view is None else as_run_scores(probs, view, config), config)
    out = {"val_loss": float(-np.log(probs[np.arange(len(labels)), labels] + 1e-12).mean()), "val_accuracy": summary["accuracy"],
           "val_auc": summary["auc"], "val_macro_f1": summary["macro"]["f1"]}
    return {**out, "val_metric": out["val_auc"] if len(config.class_names) == 2 else out["val_macro_f1"]}


def _last_val(state: dict) -> dict:
    rows = [r for r in state["log"] if r.get("val_metric") is not None]
    return {"val": score_text(rows[-1]["val_metric"], 4)} if rows else {}  # rev56: 0.99997 read "1.0000"


def _end_epoch(run: _Run, out: Path, phase: Phase, lr: float) -> None:
    state = run.state
    row = {"phase": phase.name, "epoch": len(state["log"]) + 1, "global_step": state["global_step"], "lr": lr,
           "train_loss": state["epoch_loss"][0] / max(state["epoch_loss"][1], 1)}
    # validated and saved as stored: with --weights-precision bf16 rounded (bf16_weights.py), then unrounded again to train on
    with rounded_in_place(run.model, run.config.input_size, run.options.weights_precision == "bf16"):
        if run.val_set is not None:
            probs = predict_probs(run.model, run.preprocess, run.val_set.images)
            row.update(validation_metrics(run.val_set.labels.numpy(), probs, run.config, run.val_view))
        key = [row.get("val_metric", 0.0), -row.get("val_loss", 0.0)] if run.val_set is not None else [row["epoch"], 0]
        if any(math.isnan(v) for v in key):
            key = [-1.0, -1e9]
        row["best"] = state["best"] is None or key > state["best"]["key"]
        row["elapsed_seconds"] = time.perf_counter() - state["session_start"]
        if row["best"]:
            state["best"] = {"key": key, "epoch": row["epoch"], "phase": phase.name}
            _save_best(run, out)
    train_mode(run.model)
    state["log"].append(row)
    state["epoch_loss"] = [0.0, 0]
    _write_log(out / LOG_NAME, state["log"])


def _save_best(run: _Run, out: Path) -> None:
    provenance = dict(run.config.provenance)
    provenance["training"] = {**provenance["training"], "finished": False, "best": run.state["best"], "split": {
        "val_fraction": run.options.val_fraction, "seed": run.options.seed,
        "n_train": len(run.train_set.labels), "n_val": len(run.val_set.labels) if run.val_set else 0,
        "n_val_without_view": int((~run.val_view).sum()) if run.val_view is not None else 0},
        "phases": [{"name": p.name, "lock": p.lock, **p.schedule.to_dict()} for p in run.phases]}  # the card's Recipe line (QA 75 #3)
    run.config.provenance = provenance
    save_weights(out, run.model, run.config)
    if not (out / TRAINING_IMAGES).exists():
        write_training_images(out, *run.images)


def _changed_data(options: TrainOptions, changed: list[str]) -> InputError:
    return InputError(options.data, f"the data changed since the checkpoint ({'images, labels, groups or splits differ' if 'data_sha256' in changed else 'an image changed in place'}); "
                                    "--resume continues a run only on the data it started with")


def _write_log(path: Path, rows: list[dict]) -> None:
    pa_csv.write_csv(pa.Table.from_pylist(rows), str(path.with_suffix(".tmp")))
    os.replace(path.with_suffix(".tmp"), path)


def _save_checkpoint(run: _Run, out: Path, optimizer: torch.optim.Optimizer, names: list[str]) -> None:
    state = {k: v for k, v in run.state.items() if k != "session_start"}
    state.update(recipe=recipe(run.options), threads=run.options.threads, **run.identity, elapsed_seconds=time.perf_counter() - run.state["session_start"],
                 schedules=[p.schedule.to_dict() for p in run.phases])
    if run.scaler is not None:
        state["grad_scaler"] = run.scaler.state_dict()
    save_checkpoint(out, run.model, optimizer, names, state)


def _finish(run: _Run, out: Path) -> None:
    """Record the total wall time in the best model's config and in the checkpoint; an interrupt waits for the end
    (QA 112 #9: one in between left the run said finished in config.json and not in the checkpoint)."""
    with deferring_interrupts():  # then raises InterruptedAfterWriting
        _record_finish(run, out)


def _record_finish(run: _Run, out: Path) -> None:
    wall = round(time.perf_counter() - run.state["session_start"], 1)
    config = ModelConfig.load(out / "config.json")
    curve = accuracy_curve([row.get("val_accuracy") for row in run.state["log"]]) if run.val_set is not None else None
    if curve and run.state["best"]:  # QA 30: the card's "best" accuracy read as the saved weights', chosen by another metric
        saved = next(row for row in run.state["log"] if row["epoch"] == run.state["best"]["epoch"])
        curve.update(saved_epoch=saved["epoch"], saved_accuracy=saved.get("val_accuracy"),
                     saved_by="validation ROC AUC" if len(run.config.class_names) == 2 else "validation macro F1")
    config.provenance["training"].update(wall_seconds=wall, finished=True, **({"accuracy_curve": curve} if curve else {}))
    config.save(out / "config.json")
    refresh_training_section(out, config, create=True)  # rev24: a trained folder said "research use only" nowhere until an eval
    if not (out / TRAINING_IMAGES).exists():  # killed between the best weights and their list, or resumed from before the list
        write_training_images(out, *run.images)
    mark_finished(out, wall)
    drop_resume_tensors(out)
