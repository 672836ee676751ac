"""Environment capture: ISA flags from this CPU, and nvidia-smi / nvpmodel read when they exist."""
import os
import stat

from medexport.bench.environment import ISA_FLAGS, environment, isa_flags, jetson_power_mode, nvidia_smi


def test_isa_flags_are_this_cpus():
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith(("flags", "Features"))).split(":", 1)[1].split())
    assert isa_flags() == [f for f in ISA_FLAGS if f in flags]


def _fake_tool(folder, name, output):
    path = folder / name
    path.write_text("#!/bin/sh\n" + "".join(f"echo '{line}'\n" for line in output.splitlines()))  # builtins only
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_gpu_and_jetson_tools_are_read_when_present(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))   # only the fake tools: no real GPU answers here
    assert nvidia_smi() is None and jetson_power_mode() is None and "nvidia_smi" not in environment()
    _fake_tool(tmp_path, "nvidia-smi", "NVIDIA H200, 570.86, 1980, 1980, 3201, 3201, 700.00, 143771, 0, Enabled")
    _fake_tool(tmp_path, "nvpmodel", "NV Power Mode: MAXN\n0")
    gpu = nvidia_smi()[0]
    assert gpu["name"] == "NVIDIA H200" and gpu["driver_version"] == "570.86" and gpu["clocks.max.sm"] == "1980"
    env = environment()
    assert env["nvidia_smi"] == [gpu] and env["jetson_power_mode"] == "NV Power Mode: MAXN 0"


def test_thread_variables_and_affinity_are_recorded(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    env = environment()
    assert env["thread_variables"]["OMP_NUM_THREADS"] == "3"
    assert env["affinity"] == sorted(os.sched_getaffinity(0))
