"""The model card's measured sections: ``triage eval --model-card NAME`` (re)writes a section of
``MODEL_CARD.md`` between ``<!-- triage-eval:NAME:begin/end -->`` markers with the numbers it
computed (and the SHA-256 of the tensors it measured), so a card never states a number that was not computed from data.
The "training" section, from the provenance that training and eval stored in config.json: :mod:`.card_training`."""

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
from .report_svg import score_text

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
    if result.get("tensors_sha256"):  # QA 89 #1: which weights were measured (a resumed run's card quoted a stopped run's)
        out["tensors_sha256"] = result["tensors_sha256"]
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
    lines = [f"Data: `{os.path.abspath(result['data'])}` split `{numbers['split']}` ({numbers['n']} frames), border mode `{numbers['border']}`, "
             f"operating threshold {numbers['threshold']}, backend `{result.get('backend', 'torch-fp32')}`"  # QA 89 #4: abspath
             + (f", weights' tensors SHA-256 `{numbers['tensors_sha256']}`" if numbers.get("tensors_sha256") else "")
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
    return replace_section(folder / CARD_NAME, section, "\n".join(lines), title=result["model"])


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


def markers(section: str) -> tuple[str, str]:
    return f"<!-- triage-eval:{section}:begin -->", f"<!-- triage-eval:{section}:end -->"


def check_card(folder: Path, sections: tuple[str, ...], *, only_begun: bool = False) -> None:
    """Refuse a card whose markers of one of ``sections`` are not one begin followed by one end (QA 39: with an end
    marker edited away, the next eval appended a second section and the one after replaced everything from the
    first begin to the next end: a clinician's notes between them were deleted without a word). ``only_begun``: the
    sections are rewritten only where the card has their begin marker (:func:`refresh_training_section`): check those."""
    card = Path(folder) / CARD_NAME
    if card.is_file():
        text = card.read_text()
        for section in sections:
            if not only_begun or markers(section)[0] in text:
                _section_span(card, text, section)


def _section_span(card: Path, text: str, section: str) -> tuple[int, int] | None:
    """Where the section's block (markers included) is in ``text``; None if the card has none.

    Raises:
        WeightsError: its markers are not one begin followed by one end.
    """
    begin, end = markers(section)
    starts, ends = [m.start() for m in re.finditer(re.escape(begin), text)], [m.end() for m in re.finditer(re.escape(end), text)]
    if not starts and not ends:
        return None
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise WeightsError(card, f"section {section!r} has {len(starts)} begin and {len(ends)} end markers ({begin} ... {end}), "
                                 "not one of each in that order; mend them by hand (nothing was written, so no text of yours is lost)")
    return starts[0], ends[0]


def replace_section(card: Path, section: str, body: str, *, title: str) -> Path:
    begin, end = markers(section)
    block = f"{begin}\n{body}\n{end}"
    text = card.read_text() if card.exists() else NEW_CARD.format(title=title)
    span = _section_span(card, text, section)
    text = text[: span[0]] + block + text[span[1]:] if span else text.rstrip("\n") + "\n\n" + block + "\n"
    card.write_text(text)
    return card


def unmarked_sections_note(folder: Path, threshold: float) -> str | None:
    """When a card has no training section (the place that marks them), one phrase naming its sections measured at
    another threshold than ``threshold`` (QA 65 #4: after `eval --target-sensitivity` a card of one's own still
    quoted its numbers "at operating threshold 0.5" with nothing saying the weights now flag at another), or None."""
    card = Path(folder) / CARD_NAME
    if not card.is_file() or markers("training")[0] in card.read_text() or not (other := at_other_thresholds(card, threshold)):
        return None
    return (f"{card}: {', '.join(f'section {name} was measured at threshold {measured:g}' for name, measured in other)}, not at "
            f"the new {threshold:g}, and the card has no training section to say so: `triage eval --model-card NAME` measures one again")


def _measured(card: Path, key: str) -> list[tuple[str, object]]:
    """(section, the value of ``key`` in its JSON numbers) for each evaluation section of ``card`` that records one."""
    if not card.is_file():
        return []
    found = []
    for name, body in re.findall(r"<!-- triage-eval:([A-Za-z0-9_.-]+):begin -->(.*?)<!-- triage-eval:\1:end -->", card.read_text(), re.S):
        block = re.search(r"```json\n(.*?)\n```", body, re.S)
        try:
            value = json.loads(block.group(1)).get(key) if block else None
        except (ValueError, AttributeError, RecursionError):  # not ours to judge: an edited or damaged block is left alone
            continue
        if value is not None:
            found.append((name, value))
    return found


def at_other_thresholds(card: Path, threshold: float) -> list[tuple[str, float]]:
    """The card's evaluation sections whose numbers were measured at another operating threshold (QA 31: after
    --target-sensitivity chose a new one, a section still quoted the metrics at 0.5 with nothing to mark it)."""
    return [(name, measured) for name, measured in _measured(card, "threshold")
            if isinstance(measured, (int, float)) and not math.isclose(measured, round(threshold, 4), abs_tol=1e-4)]


def on_other_weights(card: Path, tensors_sha256: str | None) -> list[tuple[str, str]]:
    """The card's evaluation sections measured on other tensors than ``tensors_sha256`` (QA 89 #1: a stopped run's
    section stayed on the card of the resumed run's weights); sections written before they recorded theirs are not judged."""
    return [(name, str(sha)) for name, sha in _measured(card, "tensors_sha256") if tensors_sha256 and sha != tensors_sha256]


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
