"""What the numbers were measured on: CPU, cores, load, library versions."""
from __future__ import annotations

import importlib.metadata
import os
import platform


def environment() -> dict:
    """A JSON-able description of this machine and the versions that matter for latency."""
    versions = {}
    for dist in ("medexport", "torch", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt", "monai", "numpy"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "versions": versions,
    }
    gpu = _gpu()
    if gpu:
        info["gpu"] = gpu
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        return None


def busy_warning() -> str | None:
    """A warning when other processes keep the CPU busy, which makes latency numbers unreliable.

    On a shared workstation this matters: with two cores both taken, PyTorch's OpenMP threads were seen
    running 30x slower here while ONNX Runtime lost far less, so a speedup ratio measured under load lies.
    """
    if not hasattr(os, "getloadavg"):
        return None
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * cores:
        return (f"the machine was busy (load average {load:.1f} on {cores} cores): latency figures and ratios "
                "are unreliable; rerun on an idle machine")
    return None
