"""OpenVINO helpers: the compile configuration that keeps FP32 builds in FP32."""
from __future__ import annotations


MODES = ("latency", "throughput")


def compile_config(device: str, precision: str, mode: str = "latency", streams: int | None = None) -> dict[str, str]:
    """The performance hint of ``mode`` (latency: one request at a time; throughput: several streams, each
    running requests in parallel), ``streams`` overriding the hint's count. FP32 pins the inference precision:
    on CPUs with bf16 or AMX, OpenVINO would otherwise run in bf16 by default and quietly change the numbers."""
    config = {"PERFORMANCE_HINT": mode.upper()}
    if streams:
        config["NUM_STREAMS"] = str(streams)
    if device.upper().startswith("CPU"):
        config["INFERENCE_PRECISION_HINT"] = "f32" if precision in ("fp32", "int8") else "f16"
    return config
