"""`medexport bench` options of the harness: warm-up rule, time budget, OpenVINO mode, clients, end to end."""
import json

import torch
from click.testing import CliRunner

from medexport.cli import cli
from medexport.exporter import export_onnx


def _onnx(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1)).eval()
    return export_onnx(model, (1, 1, 32, 32), tmp_path / "m.onnx").path


def test_bench_prints_the_full_distribution_and_writes_what_it_measured(tmp_path, shared_data):
    path = _onnx(tmp_path)
    scan = shared_data / "pyradiomics" / "breast1_image.nrrd"
    result = CliRunner().invoke(cli, ["bench", str(path), "--threads", "1", "--iterations", "5", "--min-seconds", "0",
                                      "--warmup-window", "3", "--warmup-cv", "0.5", "--warmup-max", "30",
                                      "--e2e-input", str(scan), "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert "p99.9" in result.output and "end to end on breast1_image.nrrd" in result.output
    report = json.loads((tmp_path / "b.json").read_text())
    assert "windows of 3 calls" in report["warmup_rule"] and report["end_to_end"]["images"] == 21
    assert report["memory"]["peak_rss_mib"] > 0 and report["latency"][0]["samples_ms"]


def test_bench_option_errors_are_one_line(tmp_path):
    path = _onnx(tmp_path)
    result = CliRunner().invoke(cli, ["bench", str(path), "--warmup-window", "10", "--warmup-max", "15"])
    assert result.exit_code != 0 and "twice --warmup-window" in result.stderr
    result = CliRunner().invoke(cli, ["bench", str(path), "--mode", "throughput"])
    assert result.exit_code != 0 and "OpenVINO settings" in result.stderr
    result = CliRunner().invoke(cli, ["bench", str(path), "--clients", "1,x"])
    assert result.exit_code != 0 and "--clients must be integers" in result.stderr
