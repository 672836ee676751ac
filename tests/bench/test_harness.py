"""The warm-up rule, the statistics and what a bench result records (memory, runtime, throughput modes)."""
import numpy as np
import pytest

from medexport.bench.latency import HIGH_CV, WarmupRule, latency_stats, measure_latency
from medexport.bench.run import bench_artifact
from medexport.errors import InputError


class FakeClock:
    """time.perf_counter for the harness, advanced only by the fake infer: the warm-up rule is tested on exact
    latencies, not on sleep() under whatever load the machine has."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr("medexport.bench.latency.time.perf_counter", fake)
    return fake


def _infer(clock, latencies_ms):
    """An infer whose n-th call takes ``latencies_ms(n)`` ms of the fake clock."""
    calls = []

    def infer(x):
        calls.append(1)
        clock.now += latencies_ms(len(calls)) / 1e3
    return infer, calls


def _cold_then_steady(n):
    return 20.0 if n <= 6 else 4.0 + 0.1 * (n % 3)   # 6 slow calls (allocation, JIT), then steady with jitter


def test_warmup_rule_stops_once_latency_settles(clock):
    infer, calls = _infer(clock, _cold_then_steady)
    rule = WarmupRule(window=5, cv=0.05, max_calls=100)
    result = measure_latency(infer, np.zeros((1, 1)), warmup=rule, iterations=10, min_seconds=0)
    # the 6 slow calls' own window looks steady too; the rule waits for two steady windows after them
    assert result.warmup_stable is True and result.warmup == 16
    assert result.warmup_cv <= 0.05 and result.first_call_ms == pytest.approx(20)
    assert 4.0 <= result.median_ms <= 4.2 and result.max_ms < 4.3 and "2 windows of 5 calls" in result.warmup_rule
    assert len(calls) == result.warmup + result.iterations and result.warning is None


def test_a_fixed_count_would_have_timed_the_cold_calls(clock):
    """The rule matters: 3 fixed warm-up calls leave slow calls in the timed set, and the mean and tail show them."""
    infer, _ = _infer(clock, _cold_then_steady)
    fixed = measure_latency(infer, np.zeros((1, 1)), warmup=3, iterations=10, min_seconds=0)
    assert fixed.warmup_stable is None and fixed.warmup_rule == "fixed: 3 calls"
    assert fixed.max_ms == pytest.approx(20) and fixed.mean_ms > 8 and fixed.cv > HIGH_CV and "CV" in fixed.warning


def test_latency_that_never_settles_is_reported(clock):
    noisy, _ = _infer(clock, lambda n: 1.0 if n % 2 else 5.0)
    result = measure_latency(noisy, np.zeros((1, 1)), warmup=WarmupRule(window=4, cv=0.05, max_calls=12),
                             iterations=8, min_seconds=0)
    assert result.warmup == 12 and result.warmup_stable is False and result.warmup_cv > 0.3
    assert "warm-up did not settle" in result.warning and "varied by" in result.warning
    with pytest.raises(InputError, match="warm-up rule"):
        WarmupRule(window=1)


def test_a_slow_drift_is_not_taken_for_stability(clock):
    """Each window of 5 calls of a latency still falling 2% a call has a CV under 5% (one window alone would pass),
    but consecutive windows' medians differ by about 10%."""
    drifting, _ = _infer(clock, lambda n: 10.0 * 0.98 ** min(n, 40))
    result = measure_latency(drifting, np.zeros((1, 1)), warmup=WarmupRule(window=5, cv=0.05, max_calls=100),
                             iterations=5, min_seconds=0)
    assert result.warmup_stable is True and result.warmup >= 40   # settles only once the drift has ended (call 40)


def test_statistics_of_known_latencies():
    ms = np.arange(1, 1001, dtype=float)   # 1..1000 ms
    stats = latency_stats(ms)
    assert stats["min_ms"] == 1 and stats["max_ms"] == 1000 and stats["median_ms"] == 500.5
    assert stats["p90_ms"] == pytest.approx(900.1) and stats["p95_ms"] == pytest.approx(950.05)
    assert stats["p99_ms"] == pytest.approx(990.01) and stats["p999_ms"] == pytest.approx(999.001)
    assert stats["cv"] == pytest.approx(ms.std() / ms.mean())


def test_bench_result_keeps_old_keys_and_records_how_it_measured(unet2d_onnx):
    result = bench_artifact(unet2d_onnx, target=None, device=None, batches=[1, 2], input_shape=None, iterations=5,
                            warmup=WarmupRule(window=3, cv=0.5, max_calls=20), threads=1, min_seconds=0)
    first = result["latency"][0]
    for key in ("batch", "iterations", "warmup", "median_ms", "mean_ms", "p90_ms", "p99_ms", "min_ms", "std_ms",
                "throughput_per_s", "p95_ms", "p999_ms", "max_ms", "cv", "first_call_ms", "warmup_stable"):
        assert key in first, key
    assert len(first["samples_ms"]) == first["iterations"] and min(first["samples_ms"]) == first["min_ms"]
    assert [r["batch"] for r in result["latency"]] == [1, 2]
    mem = result["memory"]
    assert 0 < mem["rss_before_open_mib"] <= mem["peak_rss_mib"] and mem["rss_after_open_mib"] > 0
    assert result["runtime"]["devices"] == ["CPUExecutionProvider"] and "windows of 3 calls" in result["warmup_rule"]
    env = result["environment"]
    assert env["affinity"] and set(env["isa"]) <= {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                                                  "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm"}
    with pytest.raises(InputError, match="OpenVINO settings"):
        bench_artifact(unet2d_onnx, target=None, device=None, batches=[1], input_shape=None, iterations=1,
                       warmup=0, threads=1, mode="throughput")


@pytest.mark.openvino
def test_openvino_throughput_mode_runs_async_requests(unet2d_onnx, tmp_path):
    from medexport.runtimes.openvino import Builder

    ir = Builder().build(unet2d_onnx, tmp_path).artifact
    result = bench_artifact(ir, target=None, device=None, batches=[1], input_shape=None, iterations=3, warmup=1,
                            threads=2, min_seconds=0.2, mode="throughput", streams=2, nireq=3)
    assert result["runtime"]["mode"] == "throughput" and result["runtime"]["streams"] == 2
    run = result["throughput"][0]
    assert run["nireq"] == 3 and run["requests"] >= 3 and run["throughput_per_s"] > 0
    latency = bench_artifact(ir, target=None, device=None, batches=[1], input_shape=None, iterations=3, warmup=1,
                             threads=2, min_seconds=0)
    assert latency["runtime"]["mode"] == "latency" and latency["runtime"]["streams"] == 1
    assert "throughput" not in latency
    # OpenVINO's own timer of the same calls (benchmark_app's) sees the inference only, never more than the wall
    first = latency["latency"][0]
    assert 0 < first["runtime_median_ms"] <= first["median_ms"]
