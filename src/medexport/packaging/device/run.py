#!/usr/bin/env python3
"""Standalone runner of a medexport edge package: needs only numpy and the package's runtime.

ONNX Runtime or OpenVINO run the model in this process; TensorRT runs through ``trtexec`` (the engine that
``build_on_device.sh`` built), so no CUDA Python bindings are needed either. Never imports torch or medexport.

    python3 run.py selftest [--precision int8]     # the reference input against the validated build's output
    python3 run.py bench [--batch 4] [--json bench.json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


class PackageError(Exception):
    """Something the user can fix (missing runtime, engine not built, file changed); printed on one line."""


def read_json(name):
    with open(os.path.join(HERE, name)) as f:
        return json.load(f)


def check_hash(name):
    """The file ``name`` still has the sha256 the package manifest recorded (a changed model fails here)."""
    expected = read_json("manifest.json")["files"][name]["sha256"]
    digest = hashlib.sha256()
    with open(os.path.join(HERE, name), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise PackageError(f"{name} does not match the package manifest: unpack the package again")


# ---------------------------------------------------------------- runtimes: a callable batch -> output


def ort_session(model, device):
    try:
        import onnxruntime as ort
    except ImportError:
        raise PackageError("this package needs onnxruntime: pip install onnxruntime (or onnxruntime-gpu)") from None
    available = ort.get_available_providers()
    wanted = ["CUDAExecutionProvider"] if device == "cuda" else []
    if wanted and wanted[0] not in available:
        raise PackageError(f"--device cuda needs onnxruntime-gpu (available providers: {', '.join(available)})")
    session = ort.InferenceSession(os.path.join(HERE, model), providers=[*wanted, "CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0], session.get_providers()


def openvino_model(model, device):
    try:
        import openvino as ov
    except ImportError:
        raise PackageError("this package needs openvino: pip install openvino") from None
    compiled = ov.Core().compile_model(os.path.join(HERE, model), device or "CPU")
    request = compiled.create_infer_request()
    return lambda batch: np.array(request.infer([batch])[compiled.output(0)]), [device or "CPU"]


def trtexec():
    found = shutil.which("trtexec") or next((p for p in ("/usr/src/tensorrt/bin/trtexec",) if os.path.isfile(p)), None)
    if found is None:
        raise PackageError("trtexec not found: install TensorRT (on Jetson: JetPack) or put trtexec on PATH")
    return found


def engine_path(precision):
    path = os.path.join(HERE, "engines", f"model.{precision}.plan")
    if not os.path.isfile(path):
        raise PackageError(f"no {precision} engine: run ./build_on_device.sh --precision {precision} first")
    return path


def shape_text(shape):
    return "x".join(str(int(d)) for d in shape)


def trt_infer(package, precision, batch):
    """Run the engine once on ``batch`` through trtexec (--loadInputs/--exportOutput) and return the output."""
    name = package["input"]["name"]
    with tempfile.TemporaryDirectory() as tmp:
        data, out = os.path.join(tmp, "input.bin"), os.path.join(tmp, "output.json")
        np.ascontiguousarray(batch, np.float32).tofile(data)
        cmd = [trtexec(), f"--loadEngine={engine_path(precision)}", f"--shapes={name}:{shape_text(batch.shape)}",
               f"--loadInputs={name}:{data}", f"--exportOutput={out}", "--iterations=1", "--warmUp=0",
               "--duration=0"]
        run_checked(cmd)
        outputs = json.load(open(out))
    first = outputs[0]
    dims = [int(d) for d in str(first["dimensions"]).split("x")]
    return np.asarray(first["values"], np.float32).reshape(dims)


def run_checked(cmd):
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise PackageError(f"{os.path.basename(cmd[0])} failed ({result.returncode}): {tail[0][:300]}")
    return result


def open_model(package, precision, device):
    """``(infer, devices)`` for the package's runtime at ``precision``."""
    runtime, model = package["runtime"], package["models"].get(precision)
    if model is None:
        raise PackageError(f"this package has no {precision} model (it has: {', '.join(package['models'])})")
    if runtime == "tensorrt":
        return (lambda batch: trt_infer(package, precision, batch)), ["tensorrt"]
    check_hash(model)
    if runtime == "onnxruntime":
        return ort_session(model, device)
    if runtime == "openvino":
        return openvino_model(model, device or package.get("device"))
    raise PackageError(f"unknown runtime {runtime!r} in package.json")


# ---------------------------------------------------------------- commands


def selftest(package, args):
    """The reference input through the model; its output against the validated build's, within its tolerance."""
    precision = args.precision or package["precision"]
    test = package["selftest"][precision]
    inputs = np.load(os.path.join(HERE, package["selftest_input"]))
    expected = np.load(os.path.join(HERE, test["expected"]))
    infer, devices = open_model(package, precision, args.device)
    got = np.asarray(infer(inputs), np.float32)
    if got.shape != expected.shape:
        raise PackageError(f"selftest output has shape {got.shape}, expected {expected.shape}")
    error = float(np.max(np.abs(got - expected)))
    agreement = float(np.mean(np.argmax(got, axis=1) == np.argmax(expected, axis=1)))
    passed = error <= test["atol"] and agreement >= test["min_agreement"]
    result = {"selftest": "passed" if passed else "FAILED", "precision": precision, "devices": devices,
              "max_abs_error": error, "atol": test["atol"], "decision_agreement": agreement,
              "min_agreement": test["min_agreement"]}
    print(json.dumps(result, indent=2))
    return 0 if passed else 1


def percentiles(ms, batch):
    ms = np.asarray(ms, float)
    return {"batch": batch, "iterations": int(ms.size), "mean_ms": float(ms.mean()),
            "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "throughput_per_s": float(1000.0 * batch / ms.mean())}


def bench(package, args):
    """Latency of the model on this device as JSON: warm-up, then timed calls (TensorRT: trtexec --exportTimes)."""
    precision = args.precision or package["precision"]
    sample = np.load(os.path.join(HERE, package["selftest_input"]))
    batch = np.ascontiguousarray(np.repeat(sample[:1], args.batch, axis=0))
    if package["runtime"] == "tensorrt":
        result = trt_bench(package, precision, batch, args)
    else:
        infer, devices = open_model(package, precision, args.device)
        for _ in range(args.warmup):
            infer(batch)
        times = []
        for _ in range(args.iterations):
            start = time.perf_counter()
            infer(batch)
            times.append(1000.0 * (time.perf_counter() - start))
        result = {**percentiles(times, args.batch), "warmup": args.warmup, "devices": devices}
    result = {"model": package["model"], "runtime": package["runtime"], "precision": precision, **result}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


# trtexec's timing flags, stated explicitly: TensorRT 11 turned CUDA graphs and spin-wait on and host/device copies
# off by default, 10 had them the other way, so numbers from the two compare only when set (TensorRT 11 migration
# guide, "Migrating trtexec Usage from TensorRT 10.x to 11.x"; the flag names are in trtexec's README/--help)
TRT_TIMING_FLAGS = ("--useCudaGraph", "--useSpinWait", "--noDataTransfers")


def trt_bench(package, precision, batch, args):
    name = package["input"]["name"]
    with tempfile.TemporaryDirectory() as tmp:
        times = os.path.join(tmp, "times.json")
        run_checked([trtexec(), f"--loadEngine={engine_path(precision)}", f"--shapes={name}:{shape_text(batch.shape)}",
                     f"--warmUp={max(args.warmup, 1) * 10}", f"--iterations={args.iterations}", "--duration=0",
                     *TRT_TIMING_FLAGS, f"--exportTimes={times}"])
        records = json.load(open(times))
    ms = [r.get("latencyMs", r.get("computeMs")) for r in records]
    return {**percentiles([m for m in ms if m is not None], int(batch.shape[0])),
            "warmup_ms": max(args.warmup, 1) * 10, "timing_flags": list(TRT_TIMING_FLAGS), "devices": ["tensorrt"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("selftest", "bench"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None,
                         help="which model of the package (default: the validated build's precision)")
        cmd.add_argument("--device", default=None, help="onnxruntime: cpu or cuda; openvino: CPU, GPU, NPU")
        if name == "bench":
            cmd.add_argument("--batch", type=int, default=1)
            cmd.add_argument("--iterations", type=int, default=50)
            cmd.add_argument("--warmup", type=int, default=10)
            cmd.add_argument("--json", default=None, help="also write the result to this file")
    args = parser.parse_args(argv)
    if getattr(args, "batch", 1) < 1 or getattr(args, "iterations", 1) < 1 or getattr(args, "warmup", 0) < 0:
        parser.error("--batch and --iterations must be at least 1, --warmup at least 0")
    package = read_json("package.json")
    try:
        return selftest(package, args) if args.command == "selftest" else bench(package, args)
    except PackageError as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
