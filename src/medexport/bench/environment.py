"""What the numbers were measured on: CPU and its INT8-relevant ISA, cores, threads and affinity, OS, library
versions, GPU (nvidia-smi) and Jetson power mode (nvpmodel). A number is never shown without where it came from."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import time

# /proc/cpuinfo flags that decide FP32/INT8 speed on a CPU: AVX2 and AVX-512 (wide FP32), VNNI (int8 dot
# products: avx512_vnni, or avx_vnni on client cores), AMX (int8/bf16 tiles), bf16
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
             "amx_bf16", "asimd", "asimddp", "i8mm")
_DISTRIBUTIONS = ("medexport", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "nncf", "tensorrt",
                  "monai", "numpy")
# environment variables that set thread counts or pinning behind the runtime's back
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KMP_AFFINITY", "OMP_PROC_BIND",
                     "OMP_PLACES", "CUDA_VISIBLE_DEVICES")


def environment() -> dict:
    """A JSON-able description of this machine and the versions that matter for latency."""
    versions = {}
    for dist in _DISTRIBUTIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    info = {
        "platform": platform.platform(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "isa": isa_flags(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "affinity": affinity(),
        "thread_variables": {k: os.environ[k] for k in _THREAD_VARIABLES if k in os.environ},
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "versions": versions,
    }
    gpu = _gpu()
    if gpu:
        info["gpu"] = gpu
    gpus = nvidia_smi()
    if gpus:
        info["nvidia_smi"] = gpus
    power = jetson_power_mode()
    if power:
        info["jetson_power_mode"] = power
    return info


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform reports."""
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def isa_flags() -> list[str]:
    """Which of :data:`ISA_FLAGS` this CPU has (from /proc/cpuinfo's flags, or Features on ARM)."""
    for line in _cpuinfo():
        if line.startswith(("flags", "Features")):
            have = set(line.split(":", 1)[1].split())
            return [f for f in ISA_FLAGS if f in have]
    return []


def physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; None where it does not say."""
    cores, package = set(), "0"
    for line in _cpuinfo():
        if line.startswith("physical id"):
            package = line.split(":", 1)[1].strip()
        elif line.startswith("core id"):
            cores.add((package, line.split(":", 1)[1].strip()))
    return len(cores) or None


def affinity() -> list[int] | None:
    """The CPUs this process may run on (what taskset/numactl or a container allowed); None where unknown."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _cpuinfo() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return f.readlines()
    except OSError:
        return []


def _gpu() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        return None


def nvidia_smi() -> list[dict] | None:
    """Name, driver, clocks (current and max, MHz), power limit and memory of each NVIDIA GPU; None without
    nvidia-smi. Clocks are read now, not during the run: a GPU left at a low clock shows here."""
    fields = ("name", "driver_version", "clocks.sm", "clocks.max.sm", "clocks.mem", "clocks.max.mem",
              "power.limit", "memory.total", "memory.used", "persistence_mode")
    out = _run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"])
    if out is None:
        return None
    return [dict(zip(fields, (v.strip() for v in line.split(",")))) for line in out.splitlines() if line.strip()]


def gpu_memory_used_mib() -> list[float] | None:
    """Memory in use on each NVIDIA GPU (MiB, device-wide: other processes count too); None without nvidia-smi."""
    out = _run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"])
    try:
        return [float(v) for v in out.split()] if out else None
    except ValueError:
        return None


def jetson_power_mode() -> str | None:
    """The Jetson power mode (``nvpmodel -q``, e.g. "NV Power Mode: MAXN"); None where nvpmodel is absent."""
    out = _run(["nvpmodel", "-q"])
    return " ".join(out.split()) if out else None


def _run(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


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
