"""Metrics against hand-computed tiny examples, and bootstrap SEs against the analytical formula."""
import json
import math
import time

import numpy as np
import pytest

from medexport.errors import DataError, InputError
from medexport.evaluation import Estimate, MetricReport, classification_report, segmentation_report

# labels 0 0 0 1 1 2, predictions 0 0 1 1 2 2:
#   class 0: TP 2 of 3, no FP          -> sens 2/3, spec 3/3, F1 4/5
#   class 1: TP 1 of 2, FP 1, TN 3     -> sens 1/2, spec 3/4, F1 2/4
#   class 2: TP 1 of 1, FP 1, TN 4     -> sens 1,   spec 4/5, F1 2/3
LABELS = np.array([0, 0, 0, 1, 1, 2])
PRED = np.array([0, 0, 1, 1, 2, 2])


def test_classification_hand_computed_from_logits():
    logits = np.eye(3)[PRED] * 2.0 - 1.0
    r = classification_report(LABELS, logits, ["a", "b", "c"], n_boot=50)
    assert r.overall["accuracy"].value == pytest.approx(4 / 6)
    assert r.overall["macro_f1"].value == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    expected = {"a": (2 / 3, 1.0, 0.8, 3), "b": (0.5, 0.75, 0.5, 2), "c": (1.0, 0.8, 2 / 3, 1)}
    for name, (sens, spec, f1, support) in expected.items():
        row = r.per_class[name]
        assert row["sensitivity"].value == pytest.approx(sens)
        assert row["specificity"].value == pytest.approx(spec)
        assert row["f1"].value == pytest.approx(f1)
        assert row["support"] == Estimate(support, 0.0)
    assert (r.task, r.overall_metric, r.class_metric, r.n) == ("classification", "accuracy", "sensitivity", 6)


def test_classification_accepts_predicted_indices():
    r = classification_report(LABELS, PRED, ["a", "b", "c"], n_boot=0)
    assert r.overall["accuracy"].value == pytest.approx(4 / 6)
    assert math.isnan(r.overall["accuracy"].se)


def test_zero_support_class_is_nan_and_left_out_of_macro_f1():
    r = classification_report(LABELS, PRED, ["a", "b", "c", "absent"], n_boot=20)
    assert math.isnan(r.per_class["absent"]["sensitivity"].value)
    assert math.isnan(r.per_class["absent"]["f1"].value)
    assert r.per_class["absent"]["specificity"].value == 1.0
    assert r.overall["macro_f1"].value == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_predicted_but_absent_class_counts_zero_f1():
    pred = PRED.copy()
    pred[0] = 3   # one class-0 case predicted as the absent class
    r = classification_report(LABELS, pred, ["a", "b", "c", "absent"], n_boot=0)
    assert r.per_class["absent"]["f1"].value == 0.0
    # class 0 now TP 1 of 3, F1 = 2/4
    assert r.overall["macro_f1"].value == pytest.approx((0.5 + 0.5 + 2 / 3 + 0.0) / 4)


def test_bootstrap_se_matches_binomial_and_is_fast():
    n, p = 500, 0.8
    labels = np.zeros(n, dtype=int)
    labels[: n // 2] = 1
    pred = labels.copy()
    pred[:100] = 1 - pred[:100]      # 100 wrong of 500
    start = time.perf_counter()
    r = classification_report(labels, pred, ["neg", "pos"], n_boot=1000, seed=3)
    assert time.perf_counter() - start < 1.0
    assert r.overall["accuracy"].value == pytest.approx(p)
    assert r.overall["accuracy"].se == pytest.approx(math.sqrt(p * (1 - p) / n), rel=0.1)


def test_bootstrap_is_reproducible_with_seed():
    a = classification_report(LABELS, PRED, ["a", "b", "c"], n_boot=100, seed=7)
    b = classification_report(LABELS, PRED, ["a", "b", "c"], n_boot=100, seed=7)
    assert a.to_dict() == b.to_dict()


def test_classification_rejects_bad_input():
    with pytest.raises(DataError, match="0..2"):
        classification_report(np.array([0, 3]), np.array([0, 1]), ["a", "b", "c"])
    with pytest.raises(InputError, match=r"\(2, 3\)"):
        classification_report(np.array([0, 1]), np.zeros((2, 2)), ["a", "b", "c"])


def _two_images():
    """Image 0: class a Dice 0.5, b absent in both. Image 1: a Dice 1.0, b missed (Dice 0)."""
    labels = np.zeros((2, 6, 6), dtype=int)
    pred = np.zeros((2, 6, 6), dtype=int)
    labels[0, 0, 0:4] = 1            # 4 pixels
    pred[0, 0, 2:6] = 1              # 2 overlap, 2 extra -> 2*2/(4+4)
    labels[1, 2, 0:4] = 1
    pred[1, 2, 0:4] = 1
    labels[1, 5, 0:2] = 2            # b present, not predicted
    return labels, pred


def test_dice_skips_empty_in_both():
    labels, pred = _two_images()
    r = segmentation_report(labels, pred, ["background", "a", "b"], n_boot=50, hd95=False)
    assert r.per_class["a"]["dice"].value == pytest.approx(0.75)
    assert r.per_class["b"]["dice"].value == pytest.approx(0.0)    # 0.5 if empty-in-both counted as 1
    assert r.overall["dice"].value == pytest.approx(0.375)
    assert set(r.per_class["a"]) == {"dice"} and set(r.overall) == {"dice"}
    assert (r.task, r.overall_metric, r.class_metric) == ("segmentation", "dice", "dice")


def test_hd95_of_parallel_lines_in_voxels_and_mm():
    labels = np.zeros((1, 12, 10), dtype=int)
    pred = np.zeros((1, 12, 10), dtype=int)
    labels[0, 4, :] = 1
    pred[0, 7, :] = 1                # every point is 3 rows from the other line
    assert segmentation_report(labels, pred, ["bg", "a"], n_boot=0).per_class["a"]["hd95"].value == 3.0
    mm = segmentation_report(labels, pred, ["bg", "a"], spacing=(2.0, 1.0), n_boot=0)
    assert mm.per_class["a"]["hd95"].value == 6.0
    assert mm.spacing == (2.0, 1.0)
    assert segmentation_report(labels, pred, ["bg", "a"], spacing=(1.0, 2.0),
                               n_boot=0).per_class["a"]["hd95"].value == 3.0


def test_hd95_undefined_when_a_mask_is_empty():
    labels, pred = _two_images()
    r = segmentation_report(labels, pred, ["bg", "a", "b"], n_boot=0)
    assert math.isnan(r.per_class["b"]["hd95"].value)     # b never in both masks
    assert "n/a" in r.table()


def test_segmentation_rejects_bad_spacing():
    labels, pred = _two_images()
    with pytest.raises(InputError, match="spacing"):
        segmentation_report(labels, pred, ["bg", "a", "b"], spacing=(1.0, 1.0, 1.0))


def test_report_round_trip_through_json():
    r = classification_report(LABELS, PRED, ["a", "b", "c", "absent"], n_boot=30)
    text = json.dumps(r.to_dict(), allow_nan=False)       # NaN must not reach JSON
    back = MetricReport.from_dict(json.loads(text))
    assert back.to_dict() == r.to_dict()
    assert back.overall["accuracy"] == r.overall["accuracy"]
    assert math.isnan(back.per_class["absent"]["sensitivity"].value)
    seg = segmentation_report(*_two_images(), ["bg", "a", "b"], spacing=(1.0, 0.5), n_boot=10)
    assert MetricReport.from_dict(json.loads(json.dumps(seg.to_dict()))).spacing == (1.0, 0.5)


def test_table_shows_percent_with_se():
    r = classification_report(LABELS, PRED, ["a", "b", "c"], n_boot=50)
    table = r.table()
    se = r.per_class["a"]["sensitivity"].se * 100
    assert f"| a | 66.7 ± {se:.1f} | 100.0 ± 0.0 | 80.0 ± " in table
    assert table.count("\n| ") == 4   # header + 3 classes
