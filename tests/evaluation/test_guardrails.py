"""Guard rails: per-class and overall drops, in the harmful direction only, with clear messages."""
import math

import numpy as np
import pytest

from medexport.errors import GuardRailError, InputError
from medexport.evaluation import Estimate, GuardRails, MetricReport, classification_report


def seg_report(overall: float, white: float, grey: float) -> MetricReport:
    e = lambda v: Estimate(v, 0.01)
    return MetricReport(task="segmentation", overall_metric="dice", class_metric="dice",
                        overall={"dice": e(overall), "hd95": Estimate(2.0, 0.1)},
                        per_class={"white matter": {"dice": e(white), "hd95": Estimate(2.0, 0.1)},
                                   "grey matter": {"dice": e(grey), "hd95": Estimate(2.0, 0.1)}},
                        n=20)


def test_class_drop_breaks_rail_with_numbers_in_message():
    result = GuardRails().check(seg_report(0.88, 0.912, 0.85), seg_report(0.885, 0.861, 0.86),
                                artifact="onnxruntime")
    assert not result.passed
    assert [v["name"] for v in result.violations()] == ["white matter"]
    assert result.message() == ("guard rail broken for 'onnxruntime': class 'white matter' dice "
                                "91.2% -> 86.1% (-5.1 points, limit 3.0)")
    with pytest.raises(GuardRailError, match="white matter"):
        result.raise_if_failed()
    row = result.violations()[0]
    assert row["delta_points"] == pytest.approx(-5.1) and row["limit_points"] == 3.0
    assert "| class | white matter | dice | 91.2 | 86.1 | -5.1 | 3.0 | ✗ |" in result.table()


def test_several_violations_joined():
    result = GuardRails(max_overall_drop=1.0, max_class_drop=3.0).check(
        seg_report(0.88, 0.912, 0.85), seg_report(0.85, 0.861, 0.80), artifact="int8")
    assert result.message().count("; ") == 2
    assert result.message().startswith("guard rail broken for 'int8': overall dice 88.0% -> 85.0% (-3.0 points")


def test_improvement_and_drop_at_the_limit_pass():
    rails = GuardRails(max_overall_drop=1.0, max_class_drop=3.0)
    better = rails.check(seg_report(0.80, 0.80, 0.80), seg_report(0.95, 0.99, 0.90), artifact="fp16")
    assert better.passed and better.violations() == []
    assert all(r["delta_points"] > 0 for r in better.rows)
    at_limit = rails.check(seg_report(0.90, 0.90, 0.90), seg_report(0.89, 0.87, 0.87), artifact="int8")
    assert at_limit.passed, at_limit.message()
    at_limit.raise_if_failed()
    assert "held" in at_limit.message()


def test_zero_support_class_is_skipped_and_said():
    labels = np.array([0, 0, 1, 1])
    ref = classification_report(labels, np.array([0, 0, 1, 1]), ["a", "b", "rare"], n_boot=0)
    cand = classification_report(labels, np.array([0, 0, 1, 0]), ["a", "b", "rare"], n_boot=0)
    result = GuardRails(max_overall_drop=30.0, max_class_drop=60.0).check(ref, cand, artifact="ov")
    assert result.skipped == ["rare"]
    assert [r["name"] for r in result.rows] == ["accuracy", "a", "b"]
    assert result.passed and "'rare'" in result.message()
    tight = GuardRails().check(ref, cand, artifact="ov")
    assert "class 'b' sensitivity 100.0% -> 50.0% (-50.0 points, limit 3.0)" in tight.message()
    assert tight.to_dict()["passed"] is False


def test_invalid_limits_and_mismatched_reports():
    with pytest.raises(InputError, match="max_class_drop"):
        GuardRails(max_class_drop=-1.0)
    with pytest.raises(InputError, match="max_overall_drop"):
        GuardRails(max_overall_drop=math.nan)
    other = seg_report(0.9, 0.9, 0.9)
    other.n = 10
    with pytest.raises(InputError, match="n: 20 vs 10"):
        GuardRails().check(seg_report(0.9, 0.9, 0.9), other, artifact="x")
