"""Comparison against a baseline: speed-ups at equal batch, ideal speed-up from MACs, realized/ideal."""
from pathlib import Path

import pytest

from medexport.bench.compare import comparison, unique_names, worst_class
from medexport.errors import InputError
from tests.bench._reports import RAILS, bench_report


def test_speedups_are_against_the_baseline_at_the_same_batch():
    rows = {(r["name"], r["batch"]): r for r in bench_report()["comparison"]}
    assert rows["fp32", 1]["speedup"] == 1.0 and rows["fp32", 4]["speedup"] == 1.0
    compressed = rows["compressed", 1]
    assert compressed["speedup"] == 1.25                    # 10 ms / 8 ms
    assert compressed["ideal_speedup"] == 2.0               # 200 / 100 MMACs
    assert compressed["realized_over_ideal"] == 0.625       # half the MACs bought 1.25x, not 2x
    assert rows["fp32", 1]["realized_over_ideal"] is None   # nothing compressed: no ideal to realize
    assert rows["jetson.json", 1]["speedup"] == 2.0 and rows["jetson.json", 1]["ideal_speedup"] is None
    assert compressed["worst_class"] == {"name": "white_matter", "metric": "dice", "value": 0.88, "delta_points": -2.0}
    assert compressed["overall"] == {"metric": "dice", "value": 0.90, "delta_points": -1.0}
    assert compressed["guard_rails_passed"] is True and rows["jetson.json", 1]["guard_rails_passed"] is None


def test_a_batch_the_baseline_did_not_run_has_no_speedup():
    report = bench_report()
    report["entries"][1]["latency"][0]["batch"] = 4
    rows = {r["name"]: r for r in comparison(report["entries"], "fp32") if r["batch"] == 4}
    assert rows["compressed"]["speedup"] == 3.75            # against the baseline's batch-4 median (30 ms)
    assert "jetson.json" not in rows


def test_unknown_baseline_is_an_input_error():
    with pytest.raises(InputError, match="--baseline int8 is none of"):
        comparison(bench_report()["entries"], "int8")


def test_worst_class_and_names():
    assert worst_class(RAILS, "reference")["value"] == 0.90
    assert worst_class({"passed": True, "rows": RAILS["rows"][:1]})["name"] == "dice"   # no class rows: overall
    assert worst_class(None) is None
    paths = [Path("a/model.onnx"), Path("b/model.onnx"), Path("c")]
    assert unique_names(paths) == ["a/model.onnx", "b/model.onnx", "c"]
