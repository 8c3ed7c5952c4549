"""Evaluate a weights folder on labelled frames; choose and store its operating threshold.

``evaluate(weights, data, ...) -> dict`` scores one split of a manifest/folder (see datasets.py)
through the model's own Preprocessor and reports accuracy, per-class precision / sensitivity /
specificity / F1 with macro averages, ROC AUC (of the suspicion score = summed probability of the
abnormal classes; one-vs-rest per class), the confusion matrix, a threshold table and, when the data
has groups, per-group results. For two classes the predicted class is "abnormal" when the score
reaches the model's operating threshold; for more, the argmax.

With ``out_dir`` it writes ``metrics.json``, ``predictions.parquet``, ``thresholds.parquet``,
``groups.parquet`` (when groups exist) and ``roc.png``. With ``target_sensitivity`` it first picks the
highest threshold reaching that sensitivity on the validation split (never the evaluated split) and
stores it in the weights' ``config.json``. With ``model_card`` it writes the numbers into a section
of the weights' ``MODEL_CARD.md``, so the card never holds a hand-typed figure.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from . import metrics
from .training_images import (INHERITED, copies_note, inherited_digests, overlap_warning, read_training_images, threshold_chosen_on,
                              write_threshold_images)
from .device import exact_fp32, out_of_memory_raises, resolve_device, to_device
from .datasets import read_samples, select
from .digests import file_sha256, weights_sha256
from .eval_arguments import METRICS_FILE, OUTPUT_FILES, check_arguments
from .eval_data import as_trained, real_groups, shared_groups_note, split_to_score, training_overlap
from .errors import DeviceError, InputError, WeightsError
from .field_of_view import NO_VIEW_KINDS, has_view
from .hub import fetch_weights
from .outputs import StagedOutput
from .interrupts import deferring_interrupts
from .card_training import refresh_training_section, write_training_section
from .model_card import json_ready, unmarked_sections_note, write_card_section
from .model_config import CONFIG_NAME, WEIGHTS_NAME, ModelConfig, unfinished_training
from .preprocess import Preprocessor
from .recompress import Codec
from .report_svg import score_text
from .roc_plot import draw_roc
from .stills import LabelledImages, load_for_model
from .cpu_info import host_record
from .versions import package_versions
from .weights import load_model



def predict_probs(model: nn.Module, preprocess: Preprocessor, images: torch.Tensor, *, batch_size: int = 64) -> np.ndarray:
    """Softmax probabilities float32 [N, C] for uint8 [N,3,H,W] host images, in fp32 on the model's
    device (model left in eval mode; on CUDA each batch is copied from pinned memory without waiting)."""
    model.eval()
    device = next(model.parameters()).device
    exact_fp32(device)  # as triage run's torch-fp32: no TF32 on the GPU, so a threshold chosen here holds there
    preprocess = preprocess.to(device)
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = preprocess(to_device(images[start : start + batch_size], device)).contiguous(memory_format=torch.channels_last)
            out.append(torch.softmax(model(x).float(), dim=1))
    return torch.cat(out).cpu().numpy().astype(np.float32)


def backend_probs(weights: str | Path, backend: str, config: ModelConfig, images: torch.Tensor, *, batch_size: int = 64,
                  device: str = "cpu", notes: list[str] | None = None) -> tuple[np.ndarray, str]:
    """Softmax probabilities from an inference backend (uint8 NHWC in, as in ``triage run``) and the backend that
    scored (``auto`` chosen as ``triage run`` chooses it: QA 123 #9, metrics.json and the card said "auto"); ``notes``
    gets what ``triage run`` would warn of it (rejected by the agreement check, never checked).

    ``config`` is the weights folder's (:func:`evaluate` refuses another border mode for these backends).
    """
    from .classifier import Classifier, softmax

    classifier = Classifier.load(weights, backend=backend, device=device)
    if notes is not None:
        notes += classifier.selection.get("warnings", [])
    frames = images.permute(0, 2, 3, 1).contiguous().numpy()
    probs = np.concatenate([softmax(classifier.backend.logits(frames[i : i + batch_size])) for i in range(0, len(frames), batch_size)])
    return probs, classifier.selection["backend"]


def suspicion(probs: np.ndarray, config: ModelConfig) -> np.ndarray:
    return probs[:, config.abnormal_indices].sum(axis=1)


def as_run_scores(probs: np.ndarray, view: np.ndarray, config: ModelConfig) -> np.ndarray:
    """``probs`` with the frames that show no field of view (``view`` False) given all to the first normal class: triage
    run does not score such frames (black, flat or grey pictures, burned-in text), so no such frame is ever flagged."""
    out = probs.copy()
    normal = next(i for i in range(len(config.class_names)) if i not in config.abnormal_indices)
    out[~view] = 0.0
    out[~view, normal] = 1.0
    return out


def frames_with_view(images: torch.Tensor) -> np.ndarray:
    """bool [N]: which uint8 [N, 3, H, W] images (as the model is given them) show a field of view (:func:`has_view`)."""
    return has_view(images.permute(0, 2, 3, 1).numpy())


def summarize(labels: np.ndarray, probs: np.ndarray, config: ModelConfig, *, groups: list[str] | None = None,
              view: np.ndarray | None = None) -> dict:
    """All metrics of one set of predictions (JSON-ready; NaN for undefined ratios). ``view``: which frames show a field
    of view (None: all); the others are never flagged, at any threshold (as :func:`as_run_scores` and ``triage run``)."""
    names = config.class_names
    score = suspicion(probs, config)
    flaggable = reachable(score, view)
    positive = np.isin(labels, config.abnormal_indices)
    scored = view is None or bool(np.any(view))  # QA 83 #6: with none, the AUC (0.5) was of the ties of the 0s given instead
    if len(names) == 2:
        normal = next(i for i in range(2) if i not in config.abnormal_indices)
        pred = np.where(flaggable >= config.threshold, config.abnormal_indices[0], normal)
    else:
        pred = probs.argmax(axis=1)
    cm = metrics.confusion_matrix(labels, pred, len(names))
    report = metrics.per_class_report(cm, names)
    triage = metrics.binary_report(positive, flaggable, config.threshold)
    out = {
        "n": int(len(labels)), "class_names": names, "abnormal_classes": config.abnormal_classes, "threshold": config.threshold,
        "auc": metrics.roc_auc(positive, score) if scored else float("nan"), "accuracy": report["accuracy"],
        "auc_ci95": metrics.delong_interval(positive, score) if scored else None, "accuracy_ci95": metrics.wilson_interval(int(np.trace(cm)), int(cm.sum())),
        "sensitivity": triage["sensitivity"], "specificity": triage["specificity"], "f1": triage["f1"], "precision": triage["precision"],
        "confusion_matrix": cm.tolist(), "per_class": report["per_class"], "macro": report["macro"], "macro_classes": report["macro_classes"], "triage": triage,
        "auc_one_vs_rest": metrics.auc_one_vs_rest(labels, probs, names) if scored else
                           {"per_class": dict.fromkeys(names, float("nan")), "macro": float("nan")},
    }
    if len(config.abnormal_indices) > 1:  # QA 71 #1: each abnormal class's share flagged at the threshold
        out["triage_by_class"] = metrics.flagged_by_class(labels, flaggable, config.threshold, names, config.abnormal_indices)
    if groups is not None and len(set(groups)) < len(groups):
        out["groups"] = metrics.group_summary(metrics.group_table(np.array(groups), positive, score, config.threshold, view), config.threshold)
    return out


def reachable(score: np.ndarray, view: np.ndarray | None) -> np.ndarray:
    """``score`` with -inf for the frames without a field of view: no threshold flags them, not even 0.0 (rev51, QA 63 #3:
    a threshold of 0.0 counted them flagged)."""
    return score if view is None else np.where(view, score, -np.inf)


def evaluate(
    weights: str | Path,
    data: str | Path,
    split: str = "test",
    *,
    out_dir: str | Path | None = None,
    border: str | None = None,
    target_sensitivity: float | None = None,
    val_data: str | Path | None = None,
    model_card: str | None = None,
    batch_size: int = 64,
    backend: str = "torch-fp32",
    codec: str | None = None,
    device: str = "auto",
    progress: bool = False,
    force: bool = False,
) -> dict:
    """Evaluate ``weights`` on ``split`` ("test", "val", "train" or "all") of ``data``.

    Args:
        border: evaluate with this border mode instead of the model's (e.g. "none" for the border check).
        target_sensitivity: choose the operating threshold on validation data (``val_data``, else the
            ``val`` split of ``data`` as training made it) and store it in the weights' config.json.
        model_card: name of the MODEL_CARD.md section to (re)write with these results.
        backend: score with this inference backend (e.g. ``ort-int8``, as ``triage optimize`` made
            it) instead of the PyTorch fp32 model, to state the metrics of what ``triage run`` runs; ``auto``:
            the one ``triage run --backend auto`` takes, recorded by its name (not with ``target_sensitivity``).
        codec: score the frames after a lossy round trip (``"h264:23"``, ``"jpeg:75"``; see
            :mod:`~capsule_triage.recompress`), as video reaches the model; with
            ``target_sensitivity`` the validation frames go through it too.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``: where the model scores
            (an ONNX Runtime or OpenVINO backend scores on the CPU).
        force: replace ``out_dir`` if it is an earlier evaluation's (holds metrics.json) or empty.

    Raises:
        TriageError: bad weights or data; a threshold or card request for weights that are not a folder.
        ValueError: a device this machine does not have.
        DeviceError: the device ran out of memory.
    """
    where = resolve_device(device)  # ValueError, as triage run's: "--device cuda: CUDA is not available ..."
    split, parsed = check_arguments(weights, split, out_dir=out_dir, target_sensitivity=target_sensitivity, val_data=val_data,
                                    model_card=model_card, backend=backend, codec=codec, force=force)
    weights, hub_note = fetch_weights(weights)  # an hf-hub: repository as its cached folder
    if Path(weights).is_file():
        raise WeightsError(weights, "give a weights folder (config.json + model.safetensors): a bare weights file carries no "
                                    "classes, preprocessing or threshold to evaluate with")
    model, config = load_model(weights)
    tensors = file_sha256(Path(weights) / WEIGHTS_NAME)  # what was loaded (rev86 #7: hashed after scoring, a resumed run's)
    model = model.to(where, memory_format=torch.channels_last)
    if border is not None:
        if target_sensitivity is not None:
            raise InputError("--border", "choose the threshold with the model's own border mode (omit --border)")
        if backend != "torch-fp32" and border != config.border:  # rev109 #3: refused after the stills were loaded
            raise InputError("--backend", f"{backend} scores with the model's own border mode, {config.border} (its exported "
                                          "graph, or the weights folder's config.json): omit --border, or give it with --backend torch-fp32")
        config = ModelConfig.from_dict({**config.to_dict(), "border": border})
    hashed: dict = {}  # files hashed to find the validation frames training recorded: once for --split val and the threshold
    samples, split, unread = split_to_score(data, config, split, weights, hashed)
    selection, chosen_on, chosen_groups, drawn_notes = None, [], set(), []
    if target_sensitivity is not None:
        with _out_of_memory_in_one_line(where, config, batch_size):  # rev51: a traceback here, batch size not used
            selection, chosen_on, chosen_groups, drawn_notes = choose_threshold(model, config, val_data or data, target=target_sensitivity, weights=weights,
                                                    codec=parsed, whole=val_data is not None, batch_size=batch_size, digests=hashed)
    images = load_for_model(select(samples, split), config, progress=progress, source=data, codec=parsed)  # at the stills' size
    backend_notes: list[str] = []  # QA 30: `triage run` warned of a rejected or unchecked backend, eval did not
    with _out_of_memory_in_one_line(where, config, batch_size):
        if backend == "torch-fp32":
            probs = predict_probs(model, Preprocessor(config), images.images, batch_size=batch_size)
        else:  # ONNX Runtime and OpenVINO score on the CPU
            on = str(where) if backend.startswith("torch-") or backend == "auto" else "cpu"
            probs, backend = backend_probs(weights, backend, config, images.images, batch_size=batch_size, device=on, notes=backend_notes)
    result_device = str(where) if backend.startswith("torch-") else "cpu"
    if selection is not None and backend != "torch-fp32":
        backend_notes.insert(0, f"--target-sensitivity chose the threshold on fp32 scores of the validation frames; the metrics are {backend}'s")
    if not np.isfinite(probs).all():  # rev91 #9: NaN metrics, naming nothing (triage run stops at its first such batch)
        bad = int((~np.isfinite(probs).all(axis=1)).sum())
        raise WeightsError(weights, f"{backend} scored {bad} of the {len(probs)} stills as NaN or infinity")
    view = frames_with_view(images.images)  # QA 53 #4: what triage run leaves unscored counts as unflagged
    result = {"model": config.name, "architecture": config.architecture, "weights": str(Path(weights).absolute()), "backend": backend,
              "device": result_device,  # paths absolute: metrics.json is read later, from elsewhere (QA 20)
              "weights_sha256": None, "data": str(Path(data).absolute()), "split": split, "border": config.border,
              **({"codec": str(parsed)} if parsed else {}), "frames_without_view": int((~view).sum()),
              **summarize(images.labels.numpy(), as_run_scores(probs, view, config), config, groups=images.groups, view=view),
              "versions": package_versions(), "host": host_record()}
    known = read_training_images(weights)  # by content; weights trained before the list existed: by path
    inherited = inherited_digests(weights)  # its --init weights' frames, whatever its own split of them (rev88 #1)
    overlap = (overlap_warning(known, select(samples, split), split, images.sha256, inherited) if known is not None
               else training_overlap(select(samples, split), config, split))
    # QA 39: a threshold chosen on the frames scored (each frame counted); QA 65 #3: also by an earlier command
    chosen = set(chosen_on) if selection is not None else threshold_chosen_on(weights, config, known)  # (QA 83 #2: or by provenance)
    tuned = sum(d in chosen for d in images.sha256)
    chosen_in = f" ({val_data or data})" if selection is not None else ""
    tuned = (f"{tuned} of the {len(images.sha256)} frames scored ({split}) are frames the threshold was chosen on{chosen_in}: "
             "the figures at that threshold are optimistic" if tuned else None)
    patients = shared_groups_note(select(samples, split), chosen_groups, split, val_data) if val_data is not None else None  # QA 83 #1
    learned = sum(known.get(d) in ("train", INHERITED) or d in inherited for d in chosen_on) if known else 0  # rev34: --val-data
    learned = (f"{learned} of the {len(chosen_on)} frames the threshold was chosen on ({val_data or data}) are this model's training "
               "frames: it fits frames the model learned, so its sensitivity on new frames may fall short of the target" if learned else None)
    elsewhere = (f"--device {where}: backend {backend} scores on the CPU (ONNX Runtime and OpenVINO); the GPU chose only the "
                 "threshold" if where.type != "cpu" and not backend.startswith("torch-") else None)
    unseen = (f"{result['frames_without_view']} of the {len(view)} frames scored show no field of view ({NO_VIEW_KINDS}): "
              "triage run gives such frames no score, so they count as not flagged here (predictions.parquet: has_view)"
              if not view.all() else None)
    unmarked = unmarked_sections_note(Path(weights), config.threshold) if selection is not None and model_card is None else None
    warnings = [w for w in (hub_note, elsewhere, *backend_notes, unseen, unfinished_training(config), overlap, tuned, patients, learned,
                            unmarked, copies_note(select(samples, split), images.sha256, scored=split),  # QA 108 #2
                            metrics.one_sided_note(result["confusion_matrix"], config.class_names, config.abnormal_classes, split),
                            metrics.absent_classes_note(result["confusion_matrix"], config.class_names),
                            *(f"{data}: {message}" for message in unread),
                            *(f"{val_data or data}: {message}" for message in drawn_notes)) if w]
    warnings = list(dict.fromkeys(warnings))  # --split val and the threshold's validation frames: one note
    if warnings:
        result["warnings"] = warnings
    with deferring_interrupts():  # QA 56 #10: an interrupt waits for the last file, so that all or none are written
        if selection is not None:
            result["threshold_selection"] = selection
            write_threshold_images(Path(weights), chosen_on, config.threshold)
            config.save(Path(weights) / CONFIG_NAME)
            if model_card is None:
                refresh_training_section(Path(weights), config, create=False)  # the threshold it states is the new one (QA 20)
        config_sha = file_sha256(Path(weights) / CONFIG_NAME)  # after a new threshold: the id run.json will record (QA 20), of
        result["weights_sha256"] = weights_sha256(weights, {CONFIG_NAME: config_sha, WEIGHTS_NAME: tensors})  # the tensors measured
        result["tensors_sha256"] = tensors  # the card's sections name what they measured (QA 89 #1)
        if out_dir is not None:  # whole or not at all, and only over an earlier evaluation (QA 31: written into any folder)
            with StagedOutput(out_dir, force=force, marker=METRICS_FILE, only=OUTPUT_FILES) as staging:
                write_outputs(staging, result, images, probs, config, view)
        if model_card is not None:
            write_card_section(Path(weights), model_card, result)
            write_training_section(Path(weights), config)
    return result


def _out_of_memory_in_one_line(where, config: ModelConfig, batch_size: int):
    return out_of_memory_raises(lambda: DeviceError(str(where), f"out of memory scoring {config.input_size} px frames in batches "
                                                                f"of {batch_size}: use a smaller --batch-size"))


def choose_threshold(model: nn.Module, config: ModelConfig, data: str | Path, *, target: float, weights: str | Path,
                     codec: Codec | None = None, whole: bool = False, batch_size: int = 64,
                     digests: dict | None = None) -> tuple[dict, list[str], set[str], list[str]]:
    """Pick the highest threshold with validation sensitivity >= ``target`` (on the validation frames
    after ``codec``'s round trip, if given) and set it in ``config`` (saved by :func:`evaluate`).

    ``whole``: ``data`` is validation data of its own (``--val-data``): without splits, every frame of it validates;
    with splits, its ``val`` split. Otherwise the ``val`` split of ``data`` as training made it (:func:`as_trained`, with
    ``digests``, the files it hashed already).

    Returns:
        (the selection as config.json records it, the validation files' SHA-256: the caller says when they are
        frames it scores, or the model's training frames; their groups (:func:`~capsule_triage.eval_data.real_groups`);
        notes on how the validation frames were found).
    """
    folder = Path(weights)
    if not (folder / CONFIG_NAME).is_file():
        raise WeightsError(weights, "--target-sensitivity stores the threshold in a weights folder's config.json; give a folder")
    given = read_samples(data)[0]
    every = whole and not any(s.split for s in given)  # --val-data without splits: all of it (QA 39: 12 of 60 frames)
    # --val-data with splits: its own val rows (review rev35: training's fraction was drawn from its train rows, unsaid)
    samples, notes = ([replace(s, split="val") for s in given], []) if every else (given, []) if whole else as_trained(
        data, given, config, folder, instead="give validation data with --val-data", digests=digests)
    if not any(s.split == "val" for s in samples):
        raise InputError(data, f"no 'val' rows (splits: {', '.join(sorted({s.split for s in samples}))}); give validation data with a "
                               "'val' split, or without splits to choose on all of it" if whole else  # rev34: said none was passed
                         "no 'val' split and no training split record in the weights; pass validation data")
    val = load_for_model(select(samples, "val"), config, source=data, codec=codec)
    images = val.images
    # as triage run and the evaluation count them (QA 53 #4): a still without a field of view is never flagged
    view = frames_with_view(images)
    score = suspicion(as_run_scores(predict_probs(model, Preprocessor(config), images, batch_size=batch_size), view, config), config)
    flaggable = reachable(score, view)
    positive = np.isin(val.labels.numpy(), config.abnormal_indices)
    if positive.all():  # no specificity, no AUC: nothing would say what the threshold costs
        raise InputError(data, "no normal frame in the validation split to choose a threshold on")
    if not positive.any():  # QA 118 #5: said without naming the split or the classes
        raise InputError(data, f"no abnormal frame ({', '.join(config.abnormal_classes)}) in the validation split to choose a "
                               "threshold on")
    threshold = metrics.threshold_for_sensitivity(positive, flaggable, target)  # -inf: no threshold flags it
    if not math.isfinite(threshold):
        unseen, positives = int((positive & ~view).sum()), int(positive.sum())
        raise InputError(data, f"sensitivity {target} is out of reach: {unseen} of the {positives} abnormal validation frames show "
                               f"no field of view, which triage run never flags; the highest reachable is "
                               f"{(positives - unseen) * 10_000 // positives / 10_000:g}")
    report = metrics.binary_report(positive, flaggable, threshold)
    by_class = (metrics.flagged_by_class(val.labels.numpy(), flaggable, threshold, config.class_names, config.abnormal_indices)
                if len(config.abnormal_indices) > 1 else None)
    unseen_classes = [name for name, counts in (by_class or {}).items() if not counts["n"]]
    if unseen_classes:  # QA 71 #2: a threshold chosen without a frame of one abnormal class, unsaid
        notes = notes + [f"no validation frame of {', '.join(unseen_classes)}: the threshold's sensitivity {target} was reached "
                         f"without {'it' if len(unseen_classes) == 1 else 'them'}, and says nothing of how such frames score"]
    where = "every frame of the validation data" if every else "the validation split"
    selection = {"method": f"highest threshold with sensitivity >= {target} on {where}", "target_sensitivity": target,
                 "data": str(data), **({"codec": str(codec)} if codec else {}), "n_val": int(len(score)), "n_val_abnormal": int(positive.sum()),
                 "n_val_without_view": int((~view).sum()),
                 "val_sensitivity": report["sensitivity"], "val_specificity": report["specificity"], "val_auc": metrics.roc_auc(positive, score),
                 **({"val_by_class": by_class} if by_class else {})}
    config.threshold = threshold  # exact: rounding up would drop the positive that sets it
    config.provenance = {**config.provenance, "operating_threshold": {**selection, "threshold": config.threshold}}
    return selection, val.sha256, real_groups(select(samples, "val")), notes  # config.json is rewritten by evaluate() once the evaluation itself has succeeded


def write_outputs(out: Path, result: dict, images: LabelledImages, probs: np.ndarray, config: ModelConfig,
                  view: np.ndarray) -> None:
    """metrics.json, predictions/thresholds/groups Parquet and roc.png into ``out`` (a new folder). ``probs``: the model's;
    ``view``: which frames show a field of view (the others' score is 0, as :func:`as_run_scores`)."""
    (out / METRICS_FILE).write_text(json.dumps(json_ready(result), indent=2) + "\n")
    model_probs, probs = probs, as_run_scores(probs, view, config)
    score = suspicion(probs, config)
    flaggable = reachable(score, view)  # the tables count a frame without a view as never flagged, at 0.0 too (QA 63 #3)
    positive = np.isin(images.labels.numpy(), config.abnormal_indices)
    columns = {"path": images.paths, "group": images.groups, "label": [config.class_names[i] for i in images.labels.tolist()],
               "abnormal": positive, "has_view": view, "score": score, "flagged": flaggable >= config.threshold}
    columns.update({f"prob_{name}": model_probs[:, i] for i, name in enumerate(config.class_names)})  # the model's own
    meta = {"model": config.name, "weights_sha256": result["weights_sha256"], "tensors_sha256": result["tensors_sha256"],
            "threshold": str(config.threshold), "split": result["split"], "border": config.border, "backend": result["backend"],
            "codec": result.get("codec", "none")}  # on every table: each is read alone (QA 20; QA 128 #2/#3: which backend
    pq.write_table(pa.table(columns).replace_schema_metadata(meta), out / "predictions.parquet")  # and codec, the card's tensors)
    at = np.union1d(np.round(np.linspace(0, 1, 101), 2), [float(config.threshold)])  # QA 128 #1: the operating point's row too
    thresholds = {**metrics.threshold_table(positive, flaggable, at), "operating": at == float(config.threshold)}
    pq.write_table(pa.table(thresholds).replace_schema_metadata(meta), out / "thresholds.parquet")
    if "groups" in result:
        groups = metrics.group_table(np.array(images.groups), positive, score, config.threshold, view)
        pq.write_table(pa.table(groups).replace_schema_metadata(meta), out / "groups.parquet")
    curves = {"abnormal": metrics.roc_curve(positive, score)[:2]}
    if len(config.class_names) > 2:
        curves.update({c: metrics.roc_curve(images.labels.numpy() == i, probs[:, i])[:2] for i, c in enumerate(config.class_names)})
    op = (1 - result["specificity"], result["sensitivity"])
    cv2.imwrite(str(out / "roc.png"), draw_roc(curves, title=f"{config.name} {result['split']} AUC {score_text(result['auc'], 4)}", point=op))
