"""Metrics against hand-checked values (seed A's published confusion matrix) and brute force."""

import math

import numpy as np
import pytest

from capsule_triage import metrics

SEED_A_CM = np.array([[143, 7, 0], [11, 120, 19], [0, 4, 146]])  # rows true GC / GU / CG
SEED_A_CLASSES = ["GC", "GU", "CG"]


def _labels_from_cm(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true, pred = [], []
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            true += [i] * cm[i, j]
            pred += [j] * cm[i, j]
    return np.array(true), np.array(pred)


def test_confusion_matrix_rebuilds_seed_a():
    y_true, y_pred = _labels_from_cm(SEED_A_CM)
    assert metrics.confusion_matrix(y_true, y_pred, 3).tolist() == SEED_A_CM.tolist()


def test_seed_a_published_precision_sensitivity_f1():
    report = metrics.per_class_report(SEED_A_CM, SEED_A_CLASSES)
    per = report["per_class"]
    assert [round(100 * per[c]["precision"]) for c in SEED_A_CLASSES] == [93, 92, 88]
    assert [round(100 * per[c]["sensitivity"]) for c in SEED_A_CLASSES] == [95, 80, 97]
    assert {k: round(100 * report["macro"][k]) for k in ("precision", "sensitivity", "f1")} == {"precision": 91, "sensitivity": 91, "f1": 91}
    assert report["accuracy"] == pytest.approx(409 / 450)
    assert per["GU"]["f1"] == pytest.approx(2 * 120 / (2 * 120 + 11 + 30))  # F1 = 2TP/(2TP+FP+FN)
    assert per["GC"]["specificity"] == pytest.approx((120 + 19 + 4 + 146) / 300)
    assert [per[c]["support"] for c in SEED_A_CLASSES] == [150, 150, 150]


def test_macro_averages_cover_the_classes_present_in_the_data_for_every_metric():
    """QA 14: with a class absent from the test frames, macro specificity averaged its trivial 1.0
    over 3 classes while macro precision/sensitivity/F1 averaged 2."""
    cm = np.array([[8, 2, 0], [1, 9, 0], [0, 0, 0]])  # no frame of class c, none predicted as c
    report = metrics.per_class_report(cm, ["a", "b", "c"])
    assert report["macro_classes"] == ["a", "b"]
    assert report["macro"]["specificity"] == pytest.approx((9 / 10 + 8 / 10) / 2)
    assert report["macro"]["sensitivity"] == pytest.approx((8 / 10 + 9 / 10) / 2)
    assert report["per_class"]["c"]["support"] == 0 and report["per_class"]["c"]["specificity"] == 1.0
    predicted = metrics.per_class_report(np.array([[5, 0, 5], [0, 10, 0], [0, 0, 0]]), ["a", "b", "c"])  # c predicted, never true
    assert predicted["macro_classes"] == ["a", "b", "c"] and predicted["macro"]["precision"] == pytest.approx((1 + 1 + 0) / 3)
    assert predicted["macro"]["sensitivity"] == pytest.approx((0.5 + 1 + 0) / 3)  # c's undefined sensitivity counts 0 (review rev23)


def test_undefined_ratio_is_nan_not_zero():
    report = metrics.per_class_report(np.array([[5, 0], [0, 0]]), ["a", "b"])
    assert math.isnan(report["per_class"]["b"]["precision"])
    assert math.isnan(report["per_class"]["b"]["sensitivity"])


def _auc_brute_force(positive: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[positive], scores[~positive]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (pos.size * neg.size)


def test_roc_auc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    positive = rng.random(300) < 0.4
    scores = np.round(rng.random(300) + 0.5 * positive, 1)  # coarse values: many ties
    assert metrics.roc_auc(positive, scores) == pytest.approx(_auc_brute_force(positive, scores))
    fpr, tpr, thresholds = metrics.roc_curve(positive, scores)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0) and np.all(np.diff(thresholds) < 0)


def test_roc_auc_extremes_and_single_class():
    positive = np.array([False, False, True, True])
    assert metrics.roc_auc(positive, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert metrics.roc_auc(positive, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert math.isnan(metrics.roc_auc(np.ones(3, bool), np.array([0.1, 0.2, 0.3])))
    # QA 83 #4: summed in rates, a perfect separation of 5 abnormal over 15 (or 22) normal frames was 0.9999999999999999
    for normal in (15, 22):
        positive = np.r_[np.ones(5, bool), np.zeros(normal, bool)]
        scores = np.r_[np.linspace(0.6, 0.9, 5), np.linspace(0.01, 0.5, normal)]
        assert metrics.roc_auc(positive, scores) == 1.0 and metrics.roc_auc(positive, -scores) == 0.0
    assert metrics.roc_auc(np.array([1, 1, 0, 0, 0], bool), np.array([0.9, 0.2, 0.5, 0.1, 0.05])) == 5 / 6


def test_one_vs_rest_auc():
    y = np.array([0, 1, 2, 0, 1, 2])
    probs = np.eye(3)[y] * 0.8 + 0.1
    result = metrics.auc_one_vs_rest(y, probs, ["a", "b", "c"])
    assert result["per_class"] == {"a": 1.0, "b": 1.0, "c": 1.0} and result["macro"] == 1.0


def test_one_vs_rest_auc_of_one_class_data_is_nan_without_a_runtime_warning():
    """Evaluating frames of one class printed numpy's "RuntimeWarning: Mean of empty slice" into eval's output."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = metrics.auc_one_vs_rest(np.zeros(4, int), np.full((4, 2), 0.5), ["a", "b"])
    assert math.isnan(result["macro"]) and all(map(math.isnan, result["per_class"].values()))


def test_threshold_for_sensitivity_is_the_highest_that_reaches_target():
    rng = np.random.default_rng(1)
    positive = rng.random(500) < 0.3
    scores = rng.random(500) * 0.6 + 0.4 * positive
    for target in (0.5, 0.9, 0.97, 1.0):
        t = metrics.threshold_for_sensitivity(positive, scores, target)
        assert metrics.binary_report(positive, scores, t)["sensitivity"] >= target
        above = scores[scores > t]
        if above.size:  # any higher threshold (the next score up) misses the target
            assert metrics.binary_report(positive, scores, above.min())["sensitivity"] < target
    with pytest.raises(ValueError, match="target sensitivity"):
        metrics.threshold_for_sensitivity(positive, scores, 0)


def test_binary_report_and_threshold_table():
    positive = np.array([True, True, False, False, False])
    scores = np.array([0.9, 0.4, 0.6, 0.1, 0.2])
    r = metrics.binary_report(positive, scores, 0.5)
    assert (r["tp"], r["fn"], r["fp"], r["tn"]) == (1, 1, 1, 2)
    assert r["sensitivity"] == 0.5 and r["specificity"] == pytest.approx(2 / 3) and r["f1"] == pytest.approx(0.5)
    table = metrics.threshold_table(positive, scores)
    assert table["threshold"].size == 101 and table["sensitivity"][0] == 1 and table["specificity"][-1] == 1
    assert np.all(np.diff(table["sensitivity"]) <= 0) and np.all(np.diff(table["flagged_fraction"]) <= 0)


def test_group_aggregation():
    groups = np.array(["p1", "p1", "p2", "p2", "p3"])
    positive = np.array([False, True, False, False, False])
    scores = np.array([0.2, 0.7, 0.6, 0.1, 0.3])
    table = metrics.group_table(groups, positive, scores, 0.5)
    assert table["group"].tolist() == ["p1", "p2", "p3"]
    assert table["n_frames"].tolist() == [2, 2, 1] and table["abnormal"].tolist() == [True, False, False]
    assert table["score_max"].tolist() == [0.7, 0.6, 0.3] and table["score_mean"].tolist() == pytest.approx([0.45, 0.35, 0.3])
    seen = metrics.group_table(groups, positive, np.where([True, True, False, True, False], scores, 0.0), 0.5,
                               view=np.array([True, True, False, True, False]))  # QA 128 #5: the unseen frames' 0.0 averaged in
    assert seen["score_mean"][:2].tolist() == pytest.approx([0.45, 0.1]) and np.isnan(seen["score_mean"][2])
    summary = metrics.group_summary(table, 0.5)
    assert summary["n_groups"] == 3 and summary["sensitivity"] == 1.0 and summary["specificity"] == 0.5
    # QA 63 #3: a group none of whose frames shows a field of view (scored 0.0 as triage run) is not flagged at 0.0 either
    view = np.array([True, True, True, True, False])
    scores[4] = 0.0
    table = metrics.group_table(groups, positive, scores, 0.0, view)
    assert table["n_with_view"].tolist() == [2, 2, 0] and table["flagged"].tolist() == [True, True, False]
    summary = metrics.group_summary(table, 0.0)
    assert (summary["tp"], summary["fp"], summary["tn"], summary["fn"]) == (1, 1, 1, 0)
    assert metrics.group_summary(metrics.group_table(groups, positive, scores, 0.0), 0.0)["tn"] == 0  # no view given: all seen


def test_ratios_near_the_ends_are_not_printed_onto_them():
    """QA 63 #4: triage eval printed an AUC of 0.9999714 as "AUC 1.0000"; the model card's percentages could read 100.00%."""
    from capsule_triage.model_card import card_numbers, percent_text
    from capsule_triage.report_svg import score_text

    assert [score_text(v, 4) for v in (0.9999714, 0.99994, 1.0, 0.00003, 0.5)] == [">0.9999", "0.9999", "1.0000", "<0.0001", "0.5000"]
    assert [percent_text(v) for v in (0.99997, 0.9999, 1.0, 0.00003, 0.0, None)] == [">99.99%", "99.99%", "100.00%", "<0.01%", "0.00%", "n/a"]
    numbers = card_numbers({"auc": 0.9999714, "accuracy": 0.98663, "sensitivity": 1.0, "specificity": 0.000012, "f1": 0.0})
    assert numbers == {"auc": 0.99997, "accuracy": 0.9866, "sensitivity": 1.0, "specificity": 0.00001, "f1": 0.0}  # the card's JSON said 1.0


def test_macro_precision_counts_a_class_never_predicted_as_zero():
    """QA 25: with CG in the data but never predicted, macro precision was the mean of the two other classes
    (0.175 for 0.117 over three): undefined precision (or sensitivity) of a counted class is 0, as scikit-learn's."""
    import numpy as np

    from capsule_triage import metrics

    cm = np.array([[4, 1, 0], [2, 3, 0], [1, 2, 0]])  # rows true GC, GU, CG; CG never predicted
    report = metrics.per_class_report(cm, ["GC", "GU", "CG"])
    assert report["per_class"]["CG"]["precision"] is None or np.isnan(report["per_class"]["CG"]["precision"])
    assert report["macro"]["precision"] == pytest.approx((4 / 7 + 3 / 6 + 0) / 3)
    assert report["macro"]["sensitivity"] == pytest.approx((4 / 5 + 3 / 5 + 0) / 3)


def test_accuracy_curve_gives_seed_c_figures_of_a_configuration():
    """rev24: seed C reports per configuration the best accuracy, the mean and variance after convergence
    and the first epoch reaching that mean; train_log.csv held the accuracies, nothing summarised them."""
    acc = [0.50, 0.70, 0.82, 0.78, 0.80, 0.84]  # last third = epochs 5-6: mean 0.82, variance 0.0004
    curve = metrics.accuracy_curve(acc)
    assert (curve["best_accuracy"], curve["best_epoch"], curve["epochs"], curve["converged_from_epoch"]) == (0.84, 6, 6, 5)
    assert curve["mean_after_convergence"] == pytest.approx(0.82) and curve["variance_after_convergence"] == pytest.approx(0.0004)
    assert curve["first_epoch_at_mean"] == 3  # 0.82 reached first at epoch 3
    assert metrics.accuracy_curve([0.6])["converged_from_epoch"] == 1 and metrics.accuracy_curve([]) is None
    assert metrics.accuracy_curve([0.5, None]) is None and metrics.accuracy_curve([0.5, math.nan]) is None  # no validation in some epochs


def test_a_class_without_frames_is_named_with_how_the_averages_treat_it():
    """QA 39: a 3-class evaluation on data without ulcer frames gave ulcer a null sensitivity that the macro
    sensitivity averaged as 0, and the one-vs-rest AUC's macro left out, with nothing said."""
    from capsule_triage.metrics import absent_classes_note

    predicted = np.array([[7, 2, 1], [1, 9, 0], [0, 0, 0]])  # c: no frames, predicted once
    assert absent_classes_note(predicted, ["a", "b", "c"]) == (
        "no frame of c among the 20 scored: per-class sensitivity undefined (null); yet predicted (frames: c 1), so "
        "counted in the macro averages with sensitivity 0 (as scikit-learn's zero_division); the one-vs-rest AUC's macro "
        "leaves it out. Score frames of every class for per-class figures")
    assert metrics.per_class_report(predicted, ["a", "b", "c"])["macro"]["sensitivity"] == pytest.approx((0.7 + 0.9 + 0) / 3)  # as said
    never = np.array([[8, 2, 0], [1, 9, 0], [0, 0, 0]])
    assert "never predicted, so left out of the macro averages" in absent_classes_note(never, ["a", "b", "c"])
    assert metrics.per_class_report(never, ["a", "b", "c"])["macro_classes"] == ["a", "b"]  # as said
    mixed = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 3, 7, 0], [0, 0, 0, 10]])  # QA 108 #1: b predicted, a never
    assert absent_classes_note(mixed, ["a", "b", "c", "d"]) == (
        "no frame of a, b among the 20 scored: per-class sensitivity undefined (null); yet predicted (frames: b 3), so counted "
        "in the macro averages with sensitivity 0 (as scikit-learn's zero_division); a never predicted, so left out of the "
        "macro averages; the one-vs-rest AUC's macro leaves them out. Score frames of every class for per-class figures")
    assert metrics.per_class_report(mixed, ["a", "b", "c", "d"])["macro_classes"] == ["b", "c", "d"]  # as said
    assert absent_classes_note(np.array([[8, 2, 0], [1, 9, 0], [1, 0, 3]]), ["a", "b", "c"]) is None
    assert absent_classes_note(np.array([[8, 2], [0, 0]]), ["a", "b"]) is None  # two classes: triage eval's one-sided note


def test_wilson_intervals_of_frames_and_of_groups():
    """QA 83 #3: sensitivity and specificity were points alone (no interval claimed or computed anywhere), and the group
    figures metrics.json held were printed nowhere: the shipped model's 186/186 frames are 30/30 patients. Values checked
    against helper-162's own computation and Newcombe (1998) table I (81/263: 0.2553-0.3662)."""
    assert metrics.wilson_interval(81, 263) == pytest.approx([0.2553, 0.3662], abs=5e-5)
    assert metrics.wilson_interval(186, 186) == pytest.approx([0.9798, 1.0], abs=5e-5) and metrics.wilson_interval(186, 186)[1] == 1.0
    assert metrics.wilson_interval(30, 30) == pytest.approx([0.8865, 1.0], abs=5e-5)
    assert metrics.wilson_interval(86, 91) == pytest.approx([0.8778, 0.9763], abs=5e-5)
    assert metrics.wilson_interval(0, 10)[0] == 0.0 and metrics.wilson_interval(0, 0) is None
    positive = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    report = metrics.binary_report(positive, np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.1, 0.0]), 0.5)
    assert report["sensitivity_ci95"] == metrics.wilson_interval(2, 3) and report["specificity_ci95"] == metrics.wilson_interval(3, 4)
    groups = metrics.group_summary(metrics.group_table(np.array(["a", "a", "b", "c", "c", "d", "d"]), positive,
                                                       np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.1, 0.0]), 0.5), 0.5)
    lines = metrics.intervals_text({"triage": report, "groups": groups})
    low, high = metrics.wilson_interval(2, 3)
    assert lines[0] == (f"By frame, 95% Wilson intervals (frames taken as independent): sensitivity 2/3 ({low:.4f}-{high:.4f}), "
                        f"specificity 3/4 ({metrics.wilson_interval(3, 4)[0]:.4f}-{metrics.wilson_interval(3, 4)[1]:.4f})")
    assert lines[1].startswith("By group (4 groups, e.g. patients: abnormal if any frame is, flagged by its highest score), 95% "
                               "Wilson intervals: sensitivity 1/2 (") and "specificity 1/2 (" in lines[1]
    assert metrics.intervals_text({"triage": metrics.binary_report(positive[:3], np.ones(3), 0.5)})[0].endswith("specificity 0/0 (undefined)")


def test_the_auc_and_accuracy_have_95_percent_intervals():
    """QA 104 #6: `triage eval` gave sensitivity and specificity Wilson intervals, but the AUC and the accuracy were points
    alone. DeLong's interval from its definition (placement values by pairs, ties one half) and against a bootstrap."""
    rng = np.random.default_rng(3)
    positive = np.r_[np.ones(60, bool), np.zeros(90, bool)]
    scores = np.round(np.r_[rng.normal(1.0, 1.0, 60), rng.normal(0.0, 1.0, 90)], 1)  # rounded: ties across the classes
    pos, neg = scores[positive], scores[~positive]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    auc = psi.mean()
    se = np.sqrt(psi.mean(axis=1).var(ddof=1) / 60 + psi.mean(axis=0).var(ddof=1) / 90)
    assert metrics.roc_auc(positive, scores) == pytest.approx(auc, abs=1e-12)
    assert metrics.delong_interval(positive, scores) == pytest.approx([auc - 1.959964 * se, auc + 1.959964 * se], abs=1e-12)
    draws = []  # a stratified bootstrap's spread agrees with DeLong's standard error
    for _ in range(2000):
        p, n = rng.choice(pos, pos.size), rng.choice(neg, neg.size)
        draws.append(((p[:, None] > n[None, :]) + 0.5 * (p[:, None] == n[None, :])).mean())
    assert np.std(draws) == pytest.approx(se, rel=0.1)
    assert metrics.delong_interval(positive, np.where(positive, 1.0, 0.0)) is None  # a perfect separation: variance 0
    assert metrics.delong_interval(positive[59:], scores[59:]) is None  # one abnormal frame
    few, spread = np.r_[np.ones(5, bool), np.zeros(5, bool)], np.array([5, 6, 7, 8, 0.5, 0, 1, 2, 3, 4])  # rev101 #1: AUC 0.84
    low, high = metrics.delong_interval(few, spread)  # SE 0.165: AUC + 1.96 SE passes 1, clipped there
    assert high == 1.0 and low == pytest.approx(0.84 - 1.959964 * 0.1650, abs=5e-4)
    assert metrics.delong_interval(few, -spread) == pytest.approx([0.0, 1 - low], abs=1e-12)  # mirrored: the lower end at 0
    cm = np.array([[80, 10], [5, 55]])
    result = {"auc": auc, "auc_ci95": metrics.delong_interval(positive, scores), "accuracy_ci95": metrics.wilson_interval(135, 150),
              "confusion_matrix": cm.tolist(), "n": 150}
    low, high = result["auc_ci95"]
    acc = metrics.wilson_interval(135, 150)
    assert metrics.intervals_text(result) == [f"ROC AUC with 95% DeLong intervals: by frame {auc:.5f} ({low:.4f}-{high:.4f}); "
                                              f"accuracy 135/150 ({acc[0]:.4f}-{acc[1]:.4f}, Wilson)"]
    result.update(auc=1.0, auc_ci95=None, triage={"tp": 60, "fn": 0, "tn": 90, "fp": 0})
    assert "by frame 1.00000 (no interval: a perfect separation, whose variance is 0)" in metrics.intervals_text(result)[-1]
    result.update(triage={"tp": 1, "fn": 0, "tn": 90, "fp": 0})  # rev101 #3: one abnormal frame, not a zero variance
    assert "by frame 1.00000 (no interval: fewer than two abnormal frames)" in metrics.intervals_text(result)[-1]
    result.update(auc=0.5, triage={"tp": 60, "fn": 0, "tn": 90, "fp": 0})  # rev102 #5: every score tied
    assert metrics.delong_interval(positive, np.zeros(150)) is None
    assert "by frame 0.50000 (no interval: scores without spread (all tied))" in metrics.intervals_text(result)[-1]
    result.update(auc=0.999996, auc_ci95=[0.99996, 1.0], class_names=["a", "b", "c"])  # rev101 #5: never rounded onto 1
    assert "by frame >0.99999 (>0.9999-1.0000); 3-class accuracy 135/150" in metrics.intervals_text(result)[-1]


def test_a_threshold_near_an_end_is_printed_in_full():
    """QA 108 #3: a threshold chosen at 0.99999994 (float32, just under 1) read "threshold 1.0000" beside hard cases whose
    scores of 1.000 were flagged by one model and not by the other."""
    from capsule_triage.report_svg import threshold_text

    near_one = float(np.float32(0.99999994))
    assert threshold_text(near_one) == repr(near_one) and float(threshold_text(near_one)) == near_one
    assert threshold_text(0.00001) == "1e-05" and threshold_text(0.18828243) == "0.1883"
    assert threshold_text(1.0) == "1.0000" and threshold_text(0.0) == "0.0000" and threshold_text(-0.0) == "0.0000"  # rev102 #7
    from capsule_triage.report_facts import _threshold  # rev102 #6: the page's Thresholds line, a score's rounding before

    assert _threshold(near_one) == repr(near_one) and _threshold(0.18828) == "0.188" and _threshold(None) == "\u2014"
