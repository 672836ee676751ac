"""Latency harness (warm-up, percentiles, throughput) and environment capture."""
from medexport.benchmarks.environment import environment
from medexport.benchmarks.latency import LatencyResult, measure_latency

__all__ = ["LatencyResult", "environment", "measure_latency"]
