"""Results from a device join the comparison: the edge package's bench JSON and trtexec --exportTimes."""
import importlib.util
import json
from importlib import resources

import numpy as np
import pytest

from medexport.bench.imports import read_import
from medexport.errors import InputError


def edge_run_module():
    """The standalone run.py an edge package carries."""
    path = resources.files("medexport").joinpath("packaging/device/run.py")
    spec = importlib.util.spec_from_file_location("edge_run", str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_edge_package_bench_result_is_read_with_its_median(tmp_path):
    ms = np.linspace(4.0, 6.0, 21)
    result = {"model": "brain-tissue-unet2d", "runtime": "openvino", "precision": "int8",
              **edge_run_module().percentiles(ms, 2), "warmup": 5, "devices": ["CPU"]}
    (tmp_path / "edge.json").write_text(json.dumps(result))
    name, imported = read_import(str(tmp_path / "edge.json"))
    stats = imported["latency"][0]
    assert name == "edge.json" and imported["target"] == "openvino" and imported["devices"] == ["CPU"]
    assert stats["batch"] == 2 and stats["median_ms"] == pytest.approx(5.0) and stats["p99_ms"] == pytest.approx(5.98)
    assert "edge package bench (edge.json, model brain-tissue-unet2d)" == imported["source"]
    with pytest.raises(InputError, match="the file says batch 2"):
        read_import(f"{tmp_path / 'edge.json'}:4")


def test_trtexec_times_give_latency_compute_and_batch(tmp_path):
    records = [{"startEnqMs": i, "latencyMs": 1.0 + i / 100, "computeMs": 0.5 + i / 200, "endToEndMs": 2.0 + i / 100}
               for i in range(101)]
    (tmp_path / "times.json").write_text(json.dumps(records))
    name, imported = read_import(f"{tmp_path / 'times.json'}:4")
    stats = imported["latency"][0]
    assert imported["target"] == "tensorrt" and stats["batch"] == 4 and stats["iterations"] == 101
    assert stats["median_ms"] == pytest.approx(1.5) and stats["compute_median_ms"] == pytest.approx(0.75)
    assert stats["end_to_end_max_ms"] == pytest.approx(3.0) and stats["p99_ms"] == pytest.approx(1.99)
    assert stats["throughput_per_s"] == pytest.approx(4000 / 1.5)
    assert read_import(str(tmp_path / "times.json"))[1]["latency"][0]["batch"] == 1   # none given: 1


@pytest.mark.parametrize("content", ["[]", "{\"a\": 1}", "not json", "[{\"startEnqMs\": 1}]"])
def test_other_files_are_refused_in_one_line(tmp_path, content):
    (tmp_path / "x.json").write_text(content)
    with pytest.raises(InputError, match="--import"):
        read_import(str(tmp_path / "x.json"))
