"""A bench report built from numbers the tests choose: two artifacts measured here, one imported from a device."""
from medexport.bench.compare import comparison, entry
from medexport.bench.environment import environment
from medexport.bench.schema import stamped

RAILS = {"passed": True, "rows": [
    {"scope": "overall", "name": "dice", "metric": "dice", "reference": 0.91, "candidate": 0.90,
     "delta_points": -1.0, "limit_points": 1.0, "ok": True},
    {"scope": "class", "name": "grey_matter", "metric": "dice", "reference": 0.92, "candidate": 0.91,
     "delta_points": -1.0, "limit_points": 3.0, "ok": True},
    {"scope": "class", "name": "white_matter", "metric": "dice", "reference": 0.90, "candidate": 0.88,
     "delta_points": -2.0, "limit_points": 3.0, "ok": True}]}

# what a per-node profiler returns (medexport.bench.node_times), with MACs joined
LAYERS = [{"node": "/model/model.0/conv/Conv", "op_type": "Conv", "precision": "FP32", "ms": 0.8, "macs": 2_000_000},
          {"node": "/model/model.0/adn/A/Relu", "op_type": "Relu", "precision": "FP32", "ms": 0.1, "macs": None},
          {"node": "/model/model.1/conv/Conv", "op_type": "Conv", "precision": "FP32", "ms": 2.4, "macs": 12_000_000},
          {"node": "/model/model.2/conv/ConvTranspose", "op_type": "ConvTranspose", "precision": "FP32", "ms": 1.1,
           "macs": 4_000_000}]


def stats(median: float, batch: int = 1, **extra) -> dict:
    return {"batch": batch, "iterations": 50, "min_ms": 0.8 * median, "median_ms": median, "mean_ms": 1.05 * median,
            "p90_ms": 1.2 * median, "p99_ms": 1.5 * median, "std_ms": 0.1 * median,
            "throughput_per_s": batch * 1e3 / median, **extra}


def bench_report() -> dict:
    """fp32 (baseline, 200 MMACs, 10 ms), compressed (100 MMACs, 8 ms, per-layer times), an edge device (5 ms)."""
    measured = {"target": "onnxruntime", "devices": ["CPUExecutionProvider"], "environment": environment()}
    entries = [
        entry("fp32", "measured here", {**measured, "latency": [stats(10.0), stats(30.0, batch=4)]},
              {"size_bytes": 2_600_000, "macs": 200_000_000, "macs_original": 200_000_000, "guard_rails": RAILS}),
        entry("compressed", "measured here", {**measured, "latency": [stats(8.0, p95_ms=9.5, p99_9_ms=14.0)]},
              {"size_bytes": 500_000, "macs": 100_000_000, "macs_original": 200_000_000, "guard_rails": RAILS}),
        entry("jetson.json", "edge package bench (jetson.json)",
              {"target": "tensorrt", "devices": ["tensorrt"], "latency": [stats(5.0)]}, {}),
    ]
    entries[1]["layers"] = LAYERS
    return stamped({"baseline": "fp32", "entries": entries, "comparison": comparison(entries, "fp32"),
                    "environment": environment()}, "bench")
