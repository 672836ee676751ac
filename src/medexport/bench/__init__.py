"""Latency harness (warm-up rule, percentiles, throughput), environment capture, end-to-end and contention runs."""
from medexport.bench.environment import busy_warning, environment
from medexport.bench.latency import (LatencyResult, WarmupRule, interleaved_medians, interleaved_rounds,
                                     latency_stats, measure_latency)

__all__ = ["LatencyResult", "WarmupRule", "busy_warning", "environment", "interleaved_medians", "interleaved_rounds",
           "latency_stats", "measure_latency"]
