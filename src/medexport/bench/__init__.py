"""Latency harness (warm-up, percentiles, throughput) and environment capture."""
from medexport.bench.environment import busy_warning, environment
from medexport.bench.latency import LatencyResult, interleaved_medians, interleaved_rounds, measure_latency

__all__ = ["LatencyResult", "busy_warning", "environment", "interleaved_medians", "interleaved_rounds", "measure_latency"]
