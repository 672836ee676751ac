"""OpenVINO helpers: the compile configuration that keeps FP32 builds in FP32."""
from __future__ import annotations


def compile_config(device: str, precision: str) -> dict[str, str]:
    """Latency-oriented config. FP32 pins the inference precision: on CPUs with bf16 or AMX, OpenVINO
    would otherwise run in bf16 by default and quietly change the numbers."""
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if device.upper().startswith("CPU"):
        config["INFERENCE_PRECISION_HINT"] = "f32" if precision in ("fp32", "int8") else "f16"
    return config
