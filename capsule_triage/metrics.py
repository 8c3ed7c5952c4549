"""Classification metrics in pure numpy: confusion matrix, per-class and averaged scores, ROC/AUC,
threshold tables and per-group aggregation.

Conventions: ``y_true`` and ``y_pred`` are int class indices [N]; ``scores`` are float [N] where a
higher value means "more abnormal"; ``positive`` [N] bool marks the abnormal (positive) frames.
Sensitivity = recall = TP/(TP+FN); specificity = TN/(TN+FP); F1 = 2TP/(2TP+FP+FN). A ratio whose
denominator is 0 is NaN (reported as null in JSON), never a silent 0.
"""

from __future__ import annotations

import math

import numpy as np


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """int64 [C, C]: rows = true class, columns = predicted class."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    if y_true.size and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= n_classes):
        raise ValueError(f"class indices must be in [0, {n_classes})")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def per_class_report(cm: np.ndarray, class_names: list[str]) -> dict:
    """Per-class precision, sensitivity, specificity, F1 and support, their macro averages over the
    classes in the data or predicted (``macro_classes``), and accuracy."""
    cm = np.asarray(cm, dtype=np.int64)
    total = cm.sum()
    classes = {}
    for i, name in enumerate(class_names):
        tp = cm[i, i]
        fn = cm[i].sum() - tp
        fp = cm[:, i].sum() - tp
        tn = total - tp - fn - fp
        classes[name] = {
            "precision": _ratio(tp, tp + fp),
            "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "support": int(tp + fn),
        }
    # Over the classes in the data or predicted (as scikit-learn's default), for every metric alike (QA 14:
    # with a class absent from the test frames and never predicted, macro specificity counted its
    # trivial 1.0 while the other three left it out).
    # A counted class never predicted has no precision (0/0), one predicted but absent no sensitivity: they count as 0
    # there, as scikit-learn's zero_division (QA 25: macro precision averaged the two classes predicted of three).
    counted = [name for i, name in enumerate(class_names) if cm[i].sum() or cm[:, i].sum()] or list(class_names)
    zero_if_undefined = lambda k, v: 0.0 if total and k in ("precision", "sensitivity") and np.isnan(v) else v  # noqa: E731
    macro = {k: float(np.nanmean(values)) if not np.isnan(values := [zero_if_undefined(k, classes[n][k]) for n in counted]).all()
             else float("nan") for k in ("precision", "sensitivity", "specificity", "f1")}
    return {"accuracy": _ratio(np.trace(cm), total), "per_class": classes, "macro": macro, "macro_classes": counted}


def one_sided_note(cm: np.ndarray, class_names: list[str], abnormal_classes: list[str], split: str) -> str | None:
    """Why AUC (and sensitivity or specificity) is nan: the scored frames hold no abnormal, or no normal,
    frame (QA 31: "AUC nan, sensitivity nan" and an "AUC nan" plot, unexplained); None when they hold both."""
    cm = np.asarray(cm)
    abnormal = [class_names.index(name) for name in abnormal_classes]
    positives = int(cm[abnormal].sum())
    if 0 < positives < cm.sum():
        return None
    missing = " or ".join(abnormal_classes) if positives == 0 else "normal (" + ", ".join(
        c for c in class_names if c not in abnormal_classes) + ")"
    return (f"none of the {int(cm.sum()):,} frames scored ({split}) is {missing}: AUC and "
            f"{'sensitivity' if positives == 0 else 'specificity'} are undefined (nan); score frames of both kinds")


def absent_classes_note(cm: np.ndarray, class_names: list[str]) -> str | None:
    """For a model of more than two classes: which classes have no frame among those scored, and how the averages
    treat them (QA 39: a null sensitivity counted 0 in the macro average, unexplained); None when every class has
    frames (two classes: the one-sided note of ``triage eval`` says it)."""
    cm = np.asarray(cm)
    absent = [i for i in range(len(class_names)) if not cm[i].sum()]
    if len(class_names) <= 2 or not absent or len(absent) == len(class_names):
        return None
    names = ", ".join(class_names[i] for i in absent)
    predicted = [i for i in absent if cm[:, i].sum()]
    never = [class_names[i] for i in absent if not cm[:, i].sum()]
    both = bool(predicted and never)  # QA 108 #1: each class its own clause (one said "counted" of one left out)
    counted = (f"yet predicted (frames: {', '.join(f'{class_names[i]} {int(cm[:, i].sum()):,}' for i in predicted)}), so counted "
               "in the macro averages with sensitivity 0 (as scikit-learn's zero_division)")  # the classes named in the brackets
    left_out = f"{', '.join(never) + ' ' if both else ''}never predicted, so left out of the macro averages"
    return (f"no frame of {names} among the {int(cm.sum()):,} scored: per-class sensitivity undefined (null); "
            + "; ".join([counted] * bool(predicted) + [left_out] * bool(never))
            + f"; the one-vs-rest AUC's macro leaves {'them' if len(absent) > 1 else 'it'} out. Score frames of every class for "
              "per-class figures")


def roc_curve(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve over the distinct score values.

    Returns:
        (fpr, tpr, thresholds), each float64 [K+1]; point i flags ``scores >= thresholds[i]``;
        the first point is (0, 0) at threshold +inf.
    """
    tps, fps, thresholds = _roc_counts(positive, scores)
    n_pos, n_neg = int(tps[-1]), int(fps[-1])
    tpr = tps / n_pos if n_pos else np.full(tps.size, np.nan)
    fpr = fps / n_neg if n_neg else np.full(fps.size, np.nan)
    return fpr, tpr, thresholds


def _roc_counts(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true positives, false positives, thresholds) at each point of :func:`roc_curve`, counts from (0, 0)."""
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, p = scores[order], positive[order]
    last_of_value = np.r_[np.nonzero(np.diff(s))[0], s.size - 1] if s.size else np.array([], dtype=np.int64)
    return np.r_[0, np.cumsum(p)[last_of_value]], np.r_[0, np.cumsum(~p)[last_of_value]], np.r_[np.inf, s[last_of_value]]


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); NaN unless both classes are present. Summed in whole counts and
    divided once (QA 83 #4: in rates, 5 abnormal frames all above 15 normal ones gave 0.9999999999999999, said
    '>0.9999' on the console and 1.0000 in the card)."""
    tps, fps, _ = _roc_counts(positive, scores)
    n_pos, n_neg = int(tps[-1]), int(fps[-1])
    if not n_pos or not n_neg:
        return float("nan")
    return int(np.sum(np.diff(fps) * (tps[1:] + tps[:-1]))) / (2 * n_pos * n_neg)


def auc_one_vs_rest(y_true: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    """AUC of each class against the rest, and their macro average."""
    y_true = np.asarray(y_true)
    per_class = {name: roc_auc(y_true == i, probs[:, i]) for i, name in enumerate(class_names)}
    defined = [v for v in per_class.values() if not np.isnan(v)]  # NaN where data holds one class only
    return {"per_class": per_class, "macro": float(np.mean(defined)) if defined else float("nan")}


def binary_report(positive: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Counts and rates when frames with ``score >= threshold`` are flagged abnormal."""
    positive = np.asarray(positive, dtype=bool)
    flagged = np.asarray(scores) >= threshold
    tp, fp = int((flagged & positive).sum()), int((flagged & ~positive).sum())
    fn, tn = int((~flagged & positive).sum()), int((~flagged & ~positive).sum())
    return {
        "threshold": float(threshold), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn), "accuracy": _ratio(tp + tn, positive.size),
        "sensitivity_ci95": wilson_interval(tp, tp + fn), "specificity_ci95": wilson_interval(tn, tn + fp),
    }


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> list[float] | None:
    """The 95% Wilson score interval of a proportion (Newcombe 1998, method 3): [low, high]; None for n = 0. It takes
    the n as independent draws, which frames of one patient are not: the interval of the groups (patients) is the one to
    read where a manifest names them (QA 83 #3: the figures were points alone; 186/186 frames are 30/30 patients)."""
    if not n:
        return None
    p, z2 = successes / n, z * z
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [0.0 if successes == 0 else max(0.0, centre - half), 1.0 if successes == n else min(1.0, centre + half)]


def delong_interval(positive: np.ndarray, scores: np.ndarray, z: float = 1.959964) -> list[float] | None:
    """The 95% interval of the ROC AUC from DeLong, DeLong and Clarke-Pearson (1988)'s variance of its placement values
    (ties count one half, as :func:`roc_auc`), AUC +- z SE clipped to [0, 1]; None with fewer than two frames of either
    kind, or at a perfect separation, whose variance is 0 (an interval there would claim certainty). It takes the
    frames as independent draws (QA 104 #6: the AUC was a point alone)."""
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        return None
    pos, neg = scores[positive], scores[~positive]
    joint = _midranks(np.concatenate([pos, neg]))
    below_pos = (joint[:m] - _midranks(pos)) / n  # per abnormal frame: the share of normal frames scored below it
    above_neg = 1 - (joint[m:] - _midranks(neg)) / m  # per normal frame: the share of abnormal frames scored above it
    auc, se = float(below_pos.mean()), math.sqrt(below_pos.var(ddof=1) / m + above_neg.var(ddof=1) / n)
    return None if se == 0 else [max(0.0, auc - z * se), min(1.0, auc + z * se)]


def _midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    return ranks


def intervals_text(result: dict) -> list[str]:
    """``triage eval``'s sensitivity and specificity with their 95% Wilson intervals, by frame and, where the data names
    groups (patients), by group (a group abnormal when any frame is, flagged by its highest score): one line each; then one
    line of the ROC AUC's 95% DeLong intervals (by frame, by group) and the accuracy's Wilson interval."""
    from .report_svg import score_text

    def rates(report: dict) -> str:
        def one(name: str, hits: str, total: str) -> str:
            interval = report.get(f"{name}_ci95")
            return (f"{name} {report[hits]}/{report[hits] + report[total]}"
                    + (f" ({interval[0]:.4f}-{interval[1]:.4f})" if interval else " (undefined)"))
        return f"{one('sensitivity', 'tp', 'fn')}, {one('specificity', 'tn', 'fp')}"

    def area(auc, interval, counts: dict, unit: str) -> str:  # rev101 #3/#5: why there is none, never rounded onto 1
        if auc is None or math.isnan(auc):
            return "undefined"
        few = [kind for kind, keys in (("abnormal", ("tp", "fn")), ("normal", ("tn", "fp"))) if sum(counts.get(k, 0) for k in keys) < 2]
        why = (f"fewer than two {' or '.join(few)} {unit}" if few else "a perfect separation, whose variance is 0" if auc in (0.0, 1.0)
               else "scores without spread (all tied)")  # rev102 #5
        return score_text(auc, 5) + (f" ({score_text(interval[0], 4)}-{score_text(interval[1], 4)})" if interval else f" (no interval: {why})")

    lines = [f"By frame, 95% Wilson intervals (frames taken as independent): {rates(result['triage'])}"] if "triage" in result else []
    groups = result.get("groups") if isinstance(result.get("groups"), dict) and "tp" in result["groups"] else None
    if groups:
        lines.append(f"By group ({groups['n_groups']} groups, e.g. patients: abnormal if any frame is, flagged by its highest "
                     f"score), 95% Wilson intervals: {rates(groups)}")
    if "auc_ci95" in result:  # QA 104 #6: the AUC and accuracy were points alone (metrics.json before 2026-12-07: none)
        accuracy, correct = result.get("accuracy_ci95"), int(np.trace(np.asarray(result["confusion_matrix"])))
        classes = len(result.get("class_names") or ()) if len(result.get("class_names") or ()) > 2 else None
        lines.append(f"ROC AUC with 95% DeLong intervals: by frame {area(result['auc'], result['auc_ci95'], result.get('triage', {}), 'frames')}"
                     + (f", by group (highest score) {area(groups['auc_max_score'], groups.get('auc_max_score_ci95'), groups, 'groups')}"
                        if groups else "")
                     + f"; {f'{classes}-class ' if classes else ''}accuracy {correct}/{result['n']} "
                     + (f"({accuracy[0]:.4f}-{accuracy[1]:.4f}, Wilson)" if accuracy else "(undefined)"))
    return lines


def flagged_by_class(labels: np.ndarray, scores: np.ndarray, threshold: float, class_names: list[str],
                     abnormal_indices: list[int]) -> dict:
    """Of each abnormal class's frames, how many ``score >= threshold`` flags: the triage sensitivity per abnormal class
    (QA 71 #1: with two abnormal classes a pooled sensitivity of 0.75 was bleeding 2 of 4 and ulcer 4 of 4, said nowhere;
    the per-class table's sensitivity is of the most probable class, another thing)."""
    labels, flagged = np.asarray(labels), np.asarray(scores) >= threshold
    return {class_names[i]: {"n": int((labels == i).sum()), "flagged": int(((labels == i) & flagged).sum()),
                             "sensitivity": _ratio(int(((labels == i) & flagged).sum()), int((labels == i).sum()))}
            for i in abnormal_indices}


def by_class_text(counts: dict) -> str:
    """``flagged_by_class`` as "bleeding 2/4, ulcer 4/4" (a class without frames: "polyp 0/0")."""
    return ", ".join(f"{name} {c['flagged']}/{c['n']}" for name, c in counts.items())


def threshold_table(positive: np.ndarray, scores: np.ndarray, thresholds: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, precision and flagged fraction per threshold (default 0.00..1.00 by 0.01)."""
    thresholds = np.round(np.linspace(0, 1, 101), 2) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    rows = [binary_report(positive, scores, t) for t in thresholds]
    n = max(len(np.asarray(scores)), 1)
    table = {k: np.array([r[k] for r in rows]) for k in ("threshold", "sensitivity", "specificity", "precision", "tp", "fp", "tn", "fn")}
    table["flagged_fraction"] = (table["tp"] + table["fp"]) / n
    return table


def threshold_for_sensitivity(positive: np.ndarray, scores: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity (``score >= threshold``) is at least ``target``.

    Raises:
        ValueError: ``target`` outside (0, 1] or no positive frame.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    pos_scores = np.sort(np.asarray(scores, dtype=np.float64)[np.asarray(positive, dtype=bool)])[::-1]
    if pos_scores.size == 0:
        raise ValueError("no positive (abnormal) frame to choose a threshold on")
    k = max(1, math.ceil(target * pos_scores.size - 1e-9))
    return float(pos_scores[k - 1])


def group_table(groups: np.ndarray, positive: np.ndarray, scores: np.ndarray, threshold: float,
                view: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One row per group: frame count, abnormal frames, frames with a field of view, max score, mean score of its frames
    with a view (NaN: none; QA 128 #5: the 0.0 of those without one was averaged in), flagged (max >= threshold, and a
    frame with a view: ``view`` None counts every frame as seen).

    A group (patient, video, near-duplicate run) is abnormal when any of its frames is.
    """
    groups = np.asarray(groups).astype(str)
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    seen = np.ones(scores.size, dtype=bool) if view is None else np.asarray(view, dtype=bool)
    names, inverse = np.unique(groups, return_inverse=True)
    count = np.bincount(inverse, minlength=names.size)
    n_abnormal = np.bincount(inverse, weights=positive, minlength=names.size).astype(np.int64)
    n_with_view = np.bincount(inverse, weights=seen, minlength=names.size).astype(np.int64)
    score_max = np.full(names.size, -np.inf)
    np.maximum.at(score_max, inverse, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        score_mean = np.bincount(inverse, weights=np.where(seen, scores, 0.0), minlength=names.size) / n_with_view
    return {
        "group": names, "n_frames": count, "n_abnormal": n_abnormal, "abnormal": n_abnormal > 0, "n_with_view": n_with_view,
        "score_max": score_max, "score_mean": score_mean, "flagged": (score_max >= threshold) & (n_with_view > 0),
    }


def group_summary(table: dict[str, np.ndarray], threshold: float) -> dict:
    """Group-level binary metrics on each group's maximum score (a group without a frame with a view: never flagged)."""
    flaggable = np.where(table["n_with_view"] > 0, table["score_max"], -np.inf)
    report = binary_report(table["abnormal"], flaggable, threshold)
    auc = roc_auc(table["abnormal"], table["score_max"]) if table["n_with_view"].any() else float("nan")  # (rev80 #4, as summarize's)
    interval = delong_interval(table["abnormal"], table["score_max"]) if table["n_with_view"].any() else None
    return {"n_groups": int(table["group"].size), "auc_max_score": auc, "auc_max_score_ci95": interval, **report}


def accuracy_curve(accuracies: list[float], *, tail: float = 1 / 3) -> dict | None:
    """Seed C's figures of one training configuration from its validation accuracy per epoch: the best
    accuracy (and its epoch), the mean and variance "after convergence" — taken here as the last
    ``tail`` of the epochs (at least one) — and the first epoch whose accuracy reaches that mean.
    Epochs are numbered from 1; None without validation."""
    values = np.asarray([a for a in accuracies if a is not None and not math.isnan(a)], dtype=float)
    if len(values) != len(accuracies) or not len(values):
        return None
    last = values[-max(1, math.ceil(len(values) * tail)):]
    mean = float(last.mean())
    return {"best_accuracy": float(values.max()), "best_epoch": int(values.argmax()) + 1, "epochs": len(values),
            "converged_from_epoch": len(values) - len(last) + 1, "mean_after_convergence": mean,
            "variance_after_convergence": float(last.var()), "first_epoch_at_mean": int(np.argmax(values >= mean - 1e-12)) + 1}
