"""build_on_device.sh: valid bash, shellcheck-clean, and the trtexec flags it picks per TensorRT version."""
from __future__ import annotations

import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from medexport.packaging.package import _trt_env
from medexport.runtimes import get_package_target

SCRIPT = resources.files("medexport.packaging") / "device" / "build_on_device.sh"
REMOVED_IN_11 = ("--int8", "--fp16", "--bf16", "--best", "--calib", "--precisionConstraints", "--layerPrecisions",
                 "--layerOutputTypes")
FAKE_TRTEXEC = """#!/usr/bin/env bash
# stands in for trtexec: prints the banner of TensorRT $FAKE_TRT_CODE, records its arguments, writes what it saves
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v$FAKE_TRT_CODE] # trtexec $*"
[ "$1" = --version ] && exit 0
echo "$*" >>"$FAKE_TRT_LOG"
for arg in "$@"; do
    case "$arg" in
        --saveEngine=*) echo engine >"${arg#*=}" ;;
        --timingCacheFile=*) [ -f "${arg#*=}" ] && echo reused >>"$FAKE_TRT_LOG.cache"; echo cache >"${arg#*=}" ;;
    esac
done
"""


def manifest(shape, roi=None):
    return {"input": {"shape": shape, "dynamic_batch": True}, "config": {"quantization": {"precision": "int8"},
                                                                        "latency": {"batch": 1}},
            "preprocessing": {"sliding_window_roi": roi}}


@pytest.fixture
def package(tmp_path):
    """A package folder for a target: the shipped script and a trt.env written by `medexport package`."""
    def make(target="jetson", shape=(1, 1, 128, 128), roi=None, fp16=True, not_ready=""):
        folder = tmp_path / target
        folder.mkdir()
        shutil.copyfile(SCRIPT, folder / "build_on_device.sh")
        models = {"fp32": Path("model.onnx"), "int8": Path("model.int8.qdq.onnx")}
        if fp16:
            models["fp16"] = Path("model.fp16.onnx")
        (folder / "trt.env").write_text(_trt_env(manifest(list(shape), roi), get_package_target(target), models,
                                                 "input", not_ready))
        return folder
    return make


def run(folder, code, *args, device="NVIDIA Jetson AGX Orin Developer Kit", jetpack="6.2"):
    bindir = folder / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "trtexec").write_text(FAKE_TRTEXEC)
    (bindir / "trtexec").chmod(0o755)
    log = folder / "trtexec.log"
    log.unlink(missing_ok=True)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_TRT_CODE": code, "FAKE_TRT_LOG": str(log),
           "DEVICE_MODEL": device, "JETPACK_VERSION": jetpack}
    result = subprocess.run(["bash", str(folder / "build_on_device.sh"), "--no-selftest", *args],
                            capture_output=True, text=True, env=env)
    flags = log.read_text().split() if log.exists() else []
    return result, flags


def test_script_is_valid_bash_and_shellcheck_clean():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("code,jetpack", [("100300", "6.2"), ("101300", "7.0"), ("101600", "7.2")])
def test_tensorrt_10_flags(package, code, jetpack):
    folder = package()
    device = "NVIDIA Jetson AGX Thor" if code == "101300" else "NVIDIA Jetson AGX Orin"
    common = ["--minShapes=input:1x1x128x128", "--optShapes=input:1x1x128x128", "--maxShapes=input:8x1x128x128",
              f"--timingCacheFile={folder}/engines/timing.cache", "--skipInference"]
    result, fp32 = run(folder, code, "--precision", "fp32", device=device, jetpack=jetpack)
    assert result.returncode == 0, result.stderr
    assert f"--onnx={folder}/model.onnx" in fp32 and set(common) <= set(fp32)
    assert not {"--fp16", "--int8", "--stronglyTyped"} & set(fp32)
    _, fp16 = run(folder, code, "--precision", "fp16", device=device, jetpack=jetpack)
    assert f"--onnx={folder}/model.onnx" in fp16 and "--fp16" in fp16 and "--stronglyTyped" not in fp16
    _, int8 = run(folder, code, device=device, jetpack=jetpack)   # the build's precision: int8
    assert f"--onnx={folder}/model.int8.qdq.onnx" in int8 and "--stronglyTyped" in int8 and "--int8" not in int8
    assert (folder / "engines" / "model.int8.plan").is_file()
    assert (folder / "trtexec.log.cache").read_text().count("reused") == 2   # the cache saved once, reused after


@pytest.mark.parametrize("code", ["110000", "110400"])
def test_tensorrt_11_takes_precision_from_the_onnx_and_no_removed_flag(package, code):
    folder = package("trt-workstation")
    for precision, onnx in (("fp32", "model.onnx"), ("fp16", "model.fp16.onnx"), ("int8", "model.int8.qdq.onnx")):
        result, flags = run(folder, code, "--precision", precision, device="", jetpack="")
        assert result.returncode == 0, result.stderr
        assert f"--onnx={folder}/{onnx}" in flags
        assert not [f for f in flags if f.split("=")[0] in REMOVED_IN_11] and "--stronglyTyped" not in flags
        assert "--maxShapes=input:8x1x128x128" in flags and f"--timingCacheFile={folder}/engines/timing.cache" in flags


def test_3d_models_are_profiled_on_their_patch_shape(package):
    folder = package(shape=(1, 1, 64, 64, 64), roi=[64, 64, 64])
    result, flags = run(folder, "100300", "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    assert {"--minShapes=input:1x1x64x64x64", "--maxShapes=input:8x1x64x64x64"} <= set(flags)


@pytest.mark.parametrize("code,device,jetpack,ok", [
    ("100300", "NVIDIA Jetson AGX Orin", "6.2", True),              # TensorRT 10 on Orin: DLA
    ("100300", "NVIDIA Jetson Orin NX", "6.1", True),
    ("101300", "NVIDIA Jetson AGX Thor", "7.0", False),             # Thor has no DLA
    ("110200", "NVIDIA Jetson AGX Orin", "7.2.2", False),           # 11.0-11.3: none
    ("110400", "NVIDIA Jetson AGX Orin", "7.2.2", True),            # 11.4+: AGX Orin with JetPack 7.2.2+
    ("110400", "NVIDIA Jetson Orin NX", "7.2.2", False),
])
def test_dla_only_where_supported(package, code, device, jetpack, ok):
    folder = package()
    result, flags = run(folder, code, "--dla", "0", device=device, jetpack=jetpack)
    if ok:
        assert result.returncode == 0, result.stderr
        assert {"--useDLACore=0", "--allowGPUFallback"} <= set(flags)
    else:
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and len(lines) == 1 and "DLA" in lines[0] and not flags, result.stderr


@pytest.mark.parametrize("target,code,args,jetpack,fragment", [
    ("trt-workstation", "100300", ["--dla", "0"], "", "DLA exists only on Jetson"),
    ("jetson", "110400", [], "7.1", "needs JetPack 7.2.2"),
    ("jetson", "90600", [], "5.1", "TensorRT 9.6 is not supported"),
    ("jetson", "120000", [], "8.0", "TensorRT 12.0 is not supported"),
    ("jetson", "100300", ["--precision", "fp32", "--dla", "0"], "6.2", "DLA runs FP16 or INT8 only"),
])
def test_unsupported_combinations_are_refused_on_one_line(package, target, code, args, jetpack, fragment):
    result, flags = run(package(target), code, *args, jetpack=jetpack)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and fragment in lines[0] and not flags, result.stderr


def test_fp16_on_tensorrt_11_needs_the_fp16_onnx(package):
    result, flags = run(package("trt-workstation", fp16=False), "110000", "--precision", "fp16")
    assert result.returncode != 0 and "no FP16 ONNX" in result.stderr and not flags


def test_a_version_the_readiness_check_failed_is_refused_and_the_others_build(package):
    folder = package("jetson", not_ready="10.3 11")
    for code in ("100300", "110400"):
        result, flags = run(folder, code, jetpack="7.2.2")
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and len(lines) == 1 and "readiness check" in lines[0] and not flags
    result, flags = run(folder, "101300", jetpack="7.1")
    assert result.returncode == 0, result.stderr
