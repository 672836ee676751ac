"""The latency harness measures what it claims, and `bench` runs real artifacts."""
import os
import time

import numpy as np
import pytest
import torch

from medexport.bench import interleaved_medians, measure_latency
from medexport.bench.run import bench_artifact, target_for
from medexport.errors import InputError


def test_harness_percentiles_on_a_known_delay():
    result = measure_latency(lambda x: time.sleep(0.005), np.zeros((2, 1)), warmup=1, iterations=20, min_seconds=0)
    assert result.iterations == 20 and result.batch == 2
    assert 4.9 <= result.median_ms < 15
    assert result.min_ms <= result.median_ms <= result.p90_ms <= result.p99_ms
    assert result.throughput_per_s == pytest.approx(2e3 / result.median_ms)


def test_interleaved_medians_alternate_the_order_and_keep_the_ratio():
    calls = []

    def sleeper(name, seconds):
        def infer(x):
            calls.append(name)
            time.sleep(seconds)
        return infer

    ms = interleaved_medians({"fast": sleeper("fast", 0.002), "slow": sleeper("slow", 0.006)}, np.zeros((1, 1)),
                             rounds=3, warmup=1, iterations=3, min_seconds=0)
    assert list(ms) == ["fast", "slow"]
    assert 1.9 <= ms["fast"] < ms["slow"] and 1.5 < ms["slow"] / ms["fast"] < 4.0
    blocks = [calls[i] for i in range(0, len(calls), 4)]   # 1 warm-up + 3 timed calls per variant and round
    assert blocks == ["fast", "slow", "slow", "fast", "fast", "slow"]   # every other round reversed
    with pytest.raises(InputError, match="rounds"):
        interleaved_medians({"fast": sleeper("fast", 0.0)}, np.zeros((1, 1)), rounds=0)


def test_bench_onnx_artifact_at_two_batch_sizes(tmp_path):
    from medexport.exporter import export_onnx

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU()).eval()
    path = export_onnx(model, (1, 1, 32, 32), tmp_path / "m.onnx").path
    result = bench_artifact(path, target=None, device=None, batches=[1, 2], input_shape=None, iterations=5,
                            warmup=1, threads=1)
    assert result["target"] == "onnxruntime" and result["devices"] == ["CPUExecutionProvider"]
    assert [r["batch"] for r in result["latency"]] == [1, 2]
    assert all(r["median_ms"] > 0 for r in result["latency"])
    assert result["environment"]["versions"]["onnxruntime"]


def test_unknown_artifact_suffix():
    from pathlib import Path

    with pytest.raises(InputError, match="pass --target"):
        target_for(Path("model.tflite"))


def test_busy_machine_is_detected(tmp_path):
    import subprocess
    import sys

    from medexport.bench.environment import _cpu_busy_fraction, busy_warning

    idle = _cpu_busy_fraction(0.2)
    assert idle is None or 0.0 <= idle <= 1.0
    spin = "import time\nend = time.time() + 3\nwhile time.time() < end: pass\n"
    hogs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 2)]  # every core
    try:
        time.sleep(0.5)
        warning = busy_warning(0.5)
    finally:
        for hog in hogs:
            hog.wait()
    if idle is not None:
        assert warning is not None and "unreliable" in warning
