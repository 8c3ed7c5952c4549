"""The model card's "training" section: written from the provenance that training (and eval's chosen threshold) stored in
config.json, with the evaluation sections it marks as measured at another threshold or on other weights
(:mod:`capsule_triage.model_card` holds the card and its evaluation sections)."""

from __future__ import annotations

import warnings
from pathlib import Path

from .digests import file_sha256
from .errors import DataWarning
from .model_card import CARD_NAME, at_other_thresholds, markers, on_other_weights, replace_section, percent_text
from .model_config import WEIGHTS_NAME, ModelConfig
from .report_svg import fmt_duration


def refresh_training_section(folder: Path, config: ModelConfig, *, create: bool) -> None:
    """Rewrite the card's training section where the card has one (a new threshold, a finished run), or
    make the card when there is none and ``create``; a card of one's own without the section stays as it
    is (review rev20)."""
    card = folder / CARD_NAME
    if (create and not card.exists()) or (card.is_file() and markers("training")[0] in card.read_text()):
        write_training_section(folder, config)
    elif create and card.is_file():  # QA 112 #5: the card stayed without its data, figures and intended use, unsaid
        begin, end = markers("training")
        warnings.warn(f"{card}: a card of your own, left as it is: the training section (data, recipe, validation figures, "
                      f"research use only) goes only between the lines {begin} and {end}, which it lacks; add them where "
                      "it should go (a threshold chosen by `triage eval --target-sensitivity` fills them)", DataWarning, stacklevel=2)


def _code(versions) -> str:
    """", capsule-triage 0.1.0 at commit 535e783a1b2c" from the versions training recorded (none before they were)."""
    if not isinstance(versions, dict) or "capsule-triage" not in versions:
        return ""
    commit = versions.get("capsule-triage-commit")
    return f", capsule-triage {versions['capsule-triage']}" + (f" at commit {str(commit)[:12]}" if commit else "")


VALIDATION_FROM = {"manifest": "the data's own val rows", "none": "none (--val-fraction 0)"}
DISTILL_LOSSES = {"kl": "KL divergence of the probabilities", "logits": "squared error of the logits' pairwise differences"}


def _data_line(training: dict) -> str:
    """Frames per split and class, where the validation frames came from, and the saved epoch, in words (QA 31: JSON
    dumps, and a --val-fraction 0.2 stated beside a manifest's own val rows, which training used instead)."""
    counts = training.get("data_counts") if isinstance(training.get("data_counts"), dict) else {}
    frames = "; ".join(f"{split} " + ", ".join(f"{label} {n:,}" for label, n in labels.items()) for split, labels in counts.items()
                       if isinstance(labels, dict))
    split = training.get("split") if isinstance(training.get("split"), dict) else {}
    drawn = f"whole groups drawn from the training rows ({split.get('val_fraction')} of each label's frames, seed {split.get('seed')})"
    source = {**VALIDATION_FROM, "drawn": drawn}.get(training.get("val_from"),
                                                     drawn + ", or the data's own val rows if it had them (not recorded before 2026-12-02)")
    best = training.get("best") if isinstance(training.get("best"), dict) else {}
    blank = (f" ({split['n_val_without_view']} without a field of view, counted as never flagged as triage run does)"
             if split.get("n_val_without_view") else "")
    return (f"Frames per split and class: {frames or 'not recorded'}. Validation: {split.get('n_val', '?')} frames{blank}, {source}. "
            f"Saved checkpoint: epoch {best.get('epoch', '?')} ({best.get('phase', '?')} phase).")


def _recipe_line(training: dict) -> str | None:
    """What training did, in words (QA 75 #3: said only in the quoted command; a BiT-HyperRule's lr nowhere). None without the
    phases (provenance before 2026-12-06) or with values of another kind (hand-edited: no line rather than a traceback)."""
    recipe, phases = training.get("recipe"), training.get("phases")
    if not isinstance(recipe, dict) or not isinstance(phases, list) or not all(isinstance(p, dict) for p in phases):
        return None
    try:
        stages = []
        for phase in phases:
            frozen = {0: "", 1: ", block 1 frozen"}.get(lock := int(phase.get("lock") or 0), f", blocks 1-{lock} frozen")
            decay = (f", /10 at steps {', '.join(f'{int(s):,}' for s in phase['decay_steps'])} (BiT-HyperRule)"
                     if phase.get("kind") == "bit" else f", {phase['kind']}")
            stages.append(f"{phase['name']} stage{frozen}: {int(phase['total_steps']):,} steps from lr {float(phase['base_lr']):.6g}{decay}")
        parts = ["; ".join(stages), f"augmentation {recipe.get('augment')}", f"class weighting {recipe.get('class_weighting')}"]
        if recipe.get("recompress"):
            parts.append(f"lossy {recipe.get('recompress_codec')} round trips of {100 * float(recipe['recompress']):g}% of the frames")
        if recipe.get("stability"):
            copy = ("the same frames with every layer's input rounded to bf16" if recipe.get("stability_copy") == "bf16"
                    else f"a copy with Gaussian noise of {float(recipe['stability_sigma']):g} grey levels")
            parts.append(f"stability loss (weight {float(recipe['stability']):g}) toward {copy}")
    except (KeyError, TypeError, ValueError):
        return None
    if recipe.get("precision", "fp32") != "fp32":
        parts.append(f"arithmetic {recipe['precision']} (autocast)")
    if recipe.get("weights_precision") == "bf16":
        parts.append("weights stored as a graph backend's bf16 rounds them (each convolution's, folded with its batch norm, and the "
                     "linear layer's are bf16 values: a different model from the unrounded one, evaluated as such)")
    return "Recipe: " + "; ".join(parts) + "."


def _wall(training: dict) -> str:
    """Training's wall time; a stopped run's is recorded when it finishes (QA 89 #7: said "unknown")."""
    if training.get("wall_seconds") is None and not training.get("finished"):
        return "not recorded yet (a stopped run: recorded when `--resume` finishes it)"
    return fmt_duration(training.get("wall_seconds"))


def write_training_section(folder: Path, config: ModelConfig) -> None:
    """(Re)write the card's "training" section from the provenance that training and eval stored."""
    training = config.provenance.get("training", {})
    chosen = config.provenance.get("operating_threshold")
    lines = [f"Command: `{training.get('command') or '(library call)'}`", "",
             f"Wall time: {_wall(training)} (torch {training.get('torch')}, timm {training.get('timm')}, "
             f"{training.get('threads')} threads{_code(training.get('versions'))}).", "",
             _data_line(training)]
    if recipe_line := _recipe_line(training):
        lines += ["", recipe_line]
    if isinstance(teacher := training.get("distill"), dict):  # --distill: the path in the command may hold other weights later
        loss = DISTILL_LOSSES.get(teacher.get("loss"))  # not recorded before --distill-loss
        lines += ["", f"Distilled from {teacher.get('name')} (`{teacher.get('weights')}`, weights SHA-256 {teacher.get('weights_sha256')}"
                      f"{f'; loss: {loss}' if loss else ''})."]
    if isinstance(base := training.get("init_weights"), dict):  # QA 89 #2: said only as a path in the command
        lines += ["", f"Fine-tuned from {base.get('name') or 'the weights'} (`{base.get('weights')}`, weights SHA-256 "
                      f"{base.get('weights_sha256')}): their training data, its licence and their metrics are those their "
                      "model card states, where they have one."]  # (rev88 #9: a loose file or BiT .npz has none)
    if isinstance(noted := training.get("data_warnings"), list) and noted:  # QA 56 #6: said on the console only before
        lines += ["", "Warnings about the training data (as training printed them):", *(f"- {note}" for note in map(str, noted))]
    if isinstance(curve := training.get("accuracy_curve"), dict):  # seed C's per-configuration figures (rev24)
        lines += ["", f"Validation accuracy per epoch: best {percent_text(curve['best_accuracy'])} (epoch {curve['best_epoch']} of {curve['epochs']}); "
                  f"after convergence (epochs {curve['converged_from_epoch']}-{curve['epochs']}, the last third) mean "
                  f"{percent_text(curve['mean_after_convergence'])}, variance {curve['variance_after_convergence']:.6f}; first reached at epoch "
                  f"{curve['first_epoch_at_mean']}."
                  + (f" The saved weights are epoch {curve['saved_epoch']}'s (the best {curve['saved_by']}): validation accuracy "
                     f"{percent_text(curve['saved_accuracy'])}." if curve.get("saved_epoch") else "")]
    if chosen:
        lines += ["", f"Operating threshold {chosen['threshold']}: {chosen['method']}"
                  + (f", frames after a `{chosen['codec']}` round trip" if chosen.get("codec") else "") + f" (target {chosen['target_sensitivity']}; "
                  f"validation: {chosen['n_val']} frames, {chosen['n_val_abnormal']} abnormal"
                  + (f", {chosen['n_val_without_view']} without a field of view (never flagged)" if chosen.get("n_val_without_view") else "")
                  + f", sensitivity {percent_text(chosen['val_sensitivity'])}, "
                  f"specificity {percent_text(chosen['val_specificity'])})."]
    tensors = folder / WEIGHTS_NAME
    if other := on_other_weights(folder / CARD_NAME, file_sha256(tensors) if tensors.is_file() else None):
        lines += ["", "Sections measured on other weights than these (a stopped run's before `--resume`, or weights since replaced; "
                  "`triage eval --model-card NAME` measures one again): " + ", ".join(f"{name} (tensors SHA-256 {sha[:12]})" for name, sha in other) + "."]
    if other := at_other_thresholds(folder / CARD_NAME, config.threshold):
        lines += ["", "Sections measured at another threshold than this one (before it was chosen; `triage eval --model-card NAME` "
                  "measures one again): " + ", ".join(f"{name} ({threshold:g})" for name, threshold in other) + "."]
    replace_section(folder / CARD_NAME, "training", "\n".join(lines), title=config.name)
