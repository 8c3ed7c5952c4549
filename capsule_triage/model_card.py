"""The model card's measured sections: ``triage eval --model-card NAME`` (re)writes a section of
``MODEL_CARD.md`` between ``<!-- triage-eval:NAME:begin/end -->`` markers with the numbers it
computed, and the "training" section from the provenance that training and eval stored in config.json,
so a card never states a number that was not computed from data."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from pathlib import Path

import numpy as np

from .errors import InputError, WeightsError
from .metrics import intervals_text
from .model_config import ModelConfig
from .report_svg import fmt_duration, score_text

CARD_NAME = "MODEL_CARD.md"

NEW_CARD = """# {title}

**Research use only, not a diagnostic device.** The scores rank video frames for a physician to
review; they do not diagnose anything and must not replace reading the study.

## Intended use

Research triage: ranking frames of capsule-endoscopy or gastroscope video for review. Research use
only, not a diagnostic device; check it with `triage eval` on frames from the target device first.

## Data and metrics

The sections below are written by `triage eval --model-card` and training from the data they used.
"""


def json_ready(value):
    """``value`` with NaN as None and numpy scalars as Python numbers (strict JSON)."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def card_numbers(result: dict) -> dict:
    """The headline numbers a model card quotes (rounded to 4 decimals)."""
    keys = ("split", "border", "n", "threshold", "auc", "accuracy", "sensitivity", "specificity", "precision", "f1", "confusion_matrix", "class_names",
            "abnormal_classes")
    out = {k: (_rounded(result[k]) if isinstance(result[k], float) else result[k]) for k in keys if k in result}
    if result.get("codec"):
        out["codec"] = result["codec"]
    return json_ready(out)


def _rounded(value: float, places: int = 4) -> float:
    """``value`` to ``places`` decimals, or to more where that would put it on 0 or 1 it does not reach (QA 63 #4: an AUC
    of 0.99997 was quoted 1.0, which a reader takes for a perfect separation)."""
    out = round(value, places)
    while out in (0.0, 1.0) and out != value and places < 9:
        places += 1
        out = round(value, places)
    return out


def check_section_name(section: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", section):
        raise InputError(section, "model card section names use ASCII letters, digits, '.', '_' and '-' only")
    if section == "training":  # QA 56 #4: the evaluation was written, then overwritten by the training section, silently
        raise InputError(section, "the card's training section is written from config.json's provenance (and rewritten by "
                                  "this very command); name the evaluation's section otherwise, e.g. test")


def write_card_section(folder: Path, section: str, result: dict) -> Path:
    """(Re)write section ``section`` of ``folder/MODEL_CARD.md`` with ``result``'s numbers."""
    if not folder.is_dir():
        raise WeightsError(folder, "--model-card needs a weights folder")
    check_section_name(section)
    numbers = card_numbers(result)
    cm = numbers["confusion_matrix"]
    lines = [f"Data: `{os.path.relpath(result['data'])}` split `{numbers['split']}` ({numbers['n']} frames), border mode `{numbers['border']}`, "
             f"operating threshold {numbers['threshold']}, backend `{result.get('backend', 'torch-fp32')}`"
             + (f", frames after a `{numbers['codec']}` round trip (`--codec`)" if numbers.get("codec") else "")
             + _computed_on(result) + ".", "",
             *_warning_lines(result),
             "| ROC AUC | accuracy | sensitivity | specificity | precision | F1 |", "|---|---|---|---|---|---|",
             "| " + " | ".join(percent_text(numbers[k]) if k != "auc" else score_text(numbers[k], 4) for k in ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1")) + " |",
             *(["", *(f"- {line}." for line in intervals)] if (intervals := intervals_text(result)) else []),  # QA 83 #3
             "", f"ROC AUC, sensitivity, specificity, precision and F1 are those of triage: a frame is abnormal when its suspicion score "
             f"(the summed probability of {', '.join(numbers.get('abnormal_classes', []))}) reaches the threshold. Accuracy and the "
             + ("confusion matrix are those of the class with the highest probability." if len(numbers["class_names"]) > 2 else
                "confusion matrix are those of the same decision."),
             *_per_class_rows(result),
             "", "Confusion matrix (rows true, columns predicted; " + ", ".join(numbers["class_names"]) + "): " + json.dumps(cm), "",
             "```json", json.dumps(numbers), "```"]
    return _replace_section(folder / CARD_NAME, section, "\n".join(lines), title=result["model"])


def _computed_on(result: dict) -> str:
    """", computed on an AMD EPYC with avx2 (int8 dot products: no, native bf16: no)" for a lower precision: its
    scores depend on the CPU's instructions (QA 60: the same int8 model scored the test split otherwise without VNNI)."""
    cpu = (result.get("host") or {}).get("cpu") if isinstance(result.get("host"), dict) else None
    if str(result.get("backend", "torch-fp32")).endswith("fp32") or not isinstance(cpu, dict):
        return ""
    if str(result.get("device", "cpu")).startswith("cuda"):  # rev54: a GPU computed them, not the CPU named
        return f", computed on the CUDA GPU {result['device']}"
    said = lambda key: "yes" if cpu.get(key) else "no"
    features = ", ".join(map(str, cpu.get("cpu_features") or [])) or "none of avx2, avx-512, vnni, amx"
    return (f", computed on {cpu.get('processor') or 'a CPU'} with {features} (int8 dot products: {said('int8_dot_product')}, "
            f"native bf16: {said('native_bf16')})")


def _warning_lines(result: dict) -> list[str]:
    """The evaluation's warnings, said where its numbers are quoted: a card must not state metrics of frames the
    model was trained on, or of a backend the agreement check rejected, without the caveat `triage eval` printed."""
    if not result.get("warnings"):
        return []
    return ["Measured with these warnings (`triage eval` printed them):", "", *(f"- {w}" for w in result["warnings"]), ""]


def _per_class_rows(result: dict) -> list[str]:
    """Per-class precision / sensitivity / specificity / F1 of a model of more than two classes (QA 16:
    a 3-class card quoted only the triage numbers and an accuracy beside them)."""
    if len(result["class_names"]) <= 2 or "per_class" not in result:
        return []
    rows = ["", "Per class, by the class of highest probability:", "",  # QA 71 #1: read as triage's sensitivity
            "| class | frames | precision | sensitivity | specificity | F1 |", "|---|---|---|---|---|---|"]
    for name in result["class_names"]:
        c = result["per_class"][name]
        rows.append(f"| {name} | {c['support']} | " + " | ".join(percent_text(c[k]) for k in ("precision", "sensitivity", "specificity", "f1")) + " |")
    if isinstance(result.get("macro"), dict):  # rev24: seed A reports the averages too (metrics.json had them, the card not)
        counted = result.get("macro_classes") or result["class_names"]
        rows.append(f"| macro average ({len(counted)} classes) | {sum(result['per_class'][n]['support'] for n in counted)} | "
                    + " | ".join(percent_text(result["macro"][k]) for k in ("precision", "sensitivity", "specificity", "f1")) + " |")
        undefined = [f"{n} ({k})" for n in counted for k in ("precision", "sensitivity") if percent_text(result["per_class"][n][k]) == "n/a"]
        if undefined:  # QA 65 #11: an n/a precision counted 0 in the macro average, unsaid (metrics.per_class_report)
            rows += ["", f"n/a counts as 0 in the macro average (as scikit-learn's zero_division): {', '.join(undefined)}."]
    if isinstance(result.get("triage_by_class"), dict):  # the triage sensitivity of each abnormal class
        rows += ["", "Flagged at the operating threshold, by abnormal class: " + ", ".join(
            f"{name} {c['flagged']} of {c['n']} ({percent_text(c['sensitivity'])})" for name, c in result["triage_by_class"].items()) + "."]
    return rows


def _markers(section: str) -> tuple[str, str]:
    return f"<!-- triage-eval:{section}:begin -->", f"<!-- triage-eval:{section}:end -->"


def refresh_training_section(folder: Path, config: ModelConfig, *, create: bool) -> None:
    """Rewrite the card's training section where the card has one (a new threshold, a finished run), or
    make the card when there is none and ``create``; a card of one's own without the section stays as it
    is (review rev20)."""
    card = folder / CARD_NAME
    if (create and not card.exists()) or (card.is_file() and _markers("training")[0] in card.read_text()):
        write_training_section(folder, config)


def check_card(folder: Path, sections: tuple[str, ...], *, only_begun: bool = False) -> None:
    """Refuse a card whose markers of one of ``sections`` are not one begin followed by one end (QA 39: with an end
    marker edited away, the next eval appended a second section and the one after replaced everything from the
    first begin to the next end: a clinician's notes between them were deleted without a word). ``only_begun``: the
    sections are rewritten only where the card has their begin marker (:func:`refresh_training_section`): check those."""
    card = Path(folder) / CARD_NAME
    if card.is_file():
        text = card.read_text()
        for section in sections:
            if not only_begun or _markers(section)[0] in text:
                _section_span(card, text, section)


def _section_span(card: Path, text: str, section: str) -> tuple[int, int] | None:
    """Where the section's block (markers included) is in ``text``; None if the card has none.

    Raises:
        WeightsError: its markers are not one begin followed by one end.
    """
    begin, end = _markers(section)
    starts, ends = [m.start() for m in re.finditer(re.escape(begin), text)], [m.end() for m in re.finditer(re.escape(end), text)]
    if not starts and not ends:
        return None
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise WeightsError(card, f"section {section!r} has {len(starts)} begin and {len(ends)} end markers ({begin} ... {end}), "
                                 "not one of each in that order; mend them by hand (nothing was written, so no text of yours is lost)")
    return starts[0], ends[0]


def _replace_section(card: Path, section: str, body: str, *, title: str) -> Path:
    begin, end = _markers(section)
    block = f"{begin}\n{body}\n{end}"
    text = card.read_text() if card.exists() else NEW_CARD.format(title=title)
    span = _section_span(card, text, section)
    text = text[: span[0]] + block + text[span[1]:] if span else text.rstrip("\n") + "\n\n" + block + "\n"
    card.write_text(text)
    return card


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


def write_training_section(folder: Path, config: ModelConfig) -> None:
    """(Re)write the card's "training" section from the provenance that training and eval stored."""
    training = config.provenance.get("training", {})
    chosen = config.provenance.get("operating_threshold")
    lines = [f"Command: `{training.get('command') or '(library call)'}`", "",
             f"Wall time: {fmt_duration(training.get('wall_seconds'))} (torch {training.get('torch')}, timm {training.get('timm')}, "
             f"{training.get('threads')} threads{_code(training.get('versions'))}).", "",
             _data_line(training)]
    if recipe_line := _recipe_line(training):
        lines += ["", recipe_line]
    if isinstance(teacher := training.get("distill"), dict):  # --distill: the path in the command may hold other weights later
        loss = DISTILL_LOSSES.get(teacher.get("loss"))  # not recorded before --distill-loss
        lines += ["", f"Distilled from {teacher.get('name')} (`{teacher.get('weights')}`, weights SHA-256 {teacher.get('weights_sha256')}"
                      f"{f'; loss: {loss}' if loss else ''})."]
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
    if other := _at_other_thresholds(folder / CARD_NAME, config.threshold):
        lines += ["", "Sections measured at another threshold than this one (before it was chosen; `triage eval --model-card NAME` "
                  "measures one again): " + ", ".join(f"{name} ({threshold:g})" for name, threshold in other) + "."]
    _replace_section(folder / CARD_NAME, "training", "\n".join(lines), title=config.name)


def unmarked_sections_note(folder: Path, threshold: float) -> str | None:
    """When a card has no training section (the place that marks them), one phrase naming its sections measured at
    another threshold than ``threshold`` (QA 65 #4: after `eval --target-sensitivity` a card of one's own still
    quoted its numbers "at operating threshold 0.5" with nothing saying the weights now flag at another), or None."""
    card = Path(folder) / CARD_NAME
    if not card.is_file() or _markers("training")[0] in card.read_text() or not (other := _at_other_thresholds(card, threshold)):
        return None
    return (f"{card}: {', '.join(f'section {name} was measured at threshold {measured:g}' for name, measured in other)}, not at "
            f"the new {threshold:g}, and the card has no training section to say so: `triage eval --model-card NAME` measures one again")


def _at_other_thresholds(card: Path, threshold: float) -> list[tuple[str, float]]:
    """The card's evaluation sections whose numbers were measured at another operating threshold (QA 31: after
    --target-sensitivity chose a new one, a section still quoted the metrics at 0.5 with nothing to mark it)."""
    if not card.is_file():
        return []
    found = []
    for name, body in re.findall(r"<!-- triage-eval:([A-Za-z0-9_.-]+):begin -->(.*?)<!-- triage-eval:\1:end -->", card.read_text(), re.S):
        block = re.search(r"```json\n(.*?)\n```", body, re.S)
        try:
            measured = json.loads(block.group(1)).get("threshold") if block else None
        except (ValueError, AttributeError, RecursionError):  # not ours to judge: an edited or damaged block is left alone
            continue
        if isinstance(measured, (int, float)) and not math.isclose(measured, round(threshold, 4), abs_tol=1e-4):
            found.append((name, measured))
    return found


def read_card_section(folder: Path, section: str) -> dict:
    """The JSON numbers of one section of ``folder/MODEL_CARD.md``."""
    text = (Path(folder) / CARD_NAME).read_text()
    match = re.search(rf"<!-- triage-eval:{re.escape(section)}:begin -->.*?```json\n(.*?)\n```", text, re.S)
    if match is None:
        raise WeightsError(folder, f"no triage-eval section {section!r} in {CARD_NAME}")
    try:
        return json.loads(match.group(1))
    except (ValueError, RecursionError) as exc:  # RecursionError: brackets nested past Python's parser
        raise WeightsError(folder, f"the JSON of section {section!r} in {CARD_NAME} cannot be read "
                                   f"({'nested too deeply' if isinstance(exc, RecursionError) else exc})") from None


def percent_text(value: float | None) -> str:
    """A ratio as a percentage to 2 places, never rounded onto 0 or 100 % it does not reach (as :func:`score_text`)."""
    if value is None or value != value:
        return "n/a"
    percent = 100 * value
    if 100 - 0.005 <= percent < 100:
        return ">99.99%"
    if 0 < percent < 0.005:
        return "<0.01%"
    return f"{percent:.2f}%"


def intended_use(card: str | None) -> str | None:
    """The intended-use statement of a model card (Markdown text, or a path to the card file).

    Accepts a line ``Intended use: ...`` (optionally bold or a list item) or the first paragraph
    under a heading ``Intended use`` (its lines joined).
    """
    if not card:
        return None
    if "\n" not in card and len(card) < 4096:
        try:
            card = Path(card).read_text(errors="replace") if Path(card).is_file() else card
        except OSError:  # not a readable path (e.g. a long one-line card): treat it as text
            pass
    lines = card.splitlines()
    for i, line in enumerate(lines):
        inline = re.match(r"\s*(?:[-*]\s+)?(?:\*\*|__)?intended use(?:\*\*|__)?\s*[:\u2014-]\s*(?:\*\*|__)?\s*(\S.*)$", line, re.I)
        if inline:
            return _plain(inline.group(1).strip())
        if re.match(r"\s*#+\s*intended use\b", line, re.I):
            paragraph = " ".join(itertools.takewhile(lambda rest: rest and not rest.startswith("#"),
                                                     itertools.dropwhile(lambda rest: not rest, (rest.strip() for rest in lines[i + 1:]))))
            return _plain(paragraph) or None
    return None


def use_beside(weights_dir: str | Path | None) -> str | None:
    """The intended-use statement of the card beside the weights: "" when the card states none, None when there is no
    card there (or it cannot be read). run.json records it: QA 67 #7, a report rewritten after the weights folder moved
    said "no model card given"."""
    try:
        return (intended_use((Path(weights_dir) / CARD_NAME).read_text(errors="replace")) or "") if weights_dir else None
    except OSError:  # none there (or a loose weights file's path)
        return None


def _plain(markdown: str) -> str:
    """Markdown's inline marks taken out (the page shows text: QA 34, '**screening**' shown with its asterisks):
    code ticks, bold/italic markers, links as their text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", markdown.replace("`", ""))
    text = re.sub(r"(\*\*|__)(.+?)\1", r"\2", text)
    return re.sub(r"(?<![\w*])[*_](?=\S)(.+?)(?<=\S)[*_](?![\w*])", r"\1", text).strip()
