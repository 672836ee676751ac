"""What the numbers were measured on: CPU, cores, load, library versions."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import time


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
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "versions": versions,
    }
    gpu = _gpu()
    if gpu:
        info["gpu"] = gpu
    return info


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform reports."""
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


def busy_warning(window_s: float = 0.3) -> str | None:
    """A warning when other processes keep the CPU busy, which makes latency numbers unreliable.

    Call it while this process is idle: it samples the whole machine's CPU use over ``window_s``
    (from /proc/stat; the load average would also count our own earlier stages). On a shared
    workstation this matters: with both cores taken by another job, PyTorch's OpenMP threads were
    seen running 30x slower here while ONNX Runtime lost far less, so a ratio measured under load lies.
    """
    busy = _cpu_busy_fraction(window_s)
    if busy is None or busy <= 0.5:
        return None
    return (f"other processes were using {100 * busy:.0f}% of the CPU just before latency was measured: latency "
            "figures and ratios are unreliable; rerun on an idle machine")


def _cpu_busy_fraction(window_s: float) -> float | None:
    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return idle, sum(fields)

    first = sample()
    time.sleep(window_s)
    second = sample()
    if first is None or second is None or second[1] == first[1]:
        return None
    return 1.0 - (second[0] - first[0]) / (second[1] - first[1])
