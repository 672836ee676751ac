"""The package's self-test: a real reference input, each model's output on it here, and the tolerance the device's
output must keep, all from the validated build.

The expected output is the packaged file run on this machine by the build's runtime (ONNX Runtime for ONNX files,
OpenVINO for an IR); the tolerance is what the build measured: for FP32 the error it allowed against float64 torch,
for FP16/INT8 the largest error and the decision agreement it kept against FP32 (another runtime's rounding should
move the output no further than the reduced precision moved it). Example::

    tests = write_selftest(models, manifest, target, out)   # writes selftest.input.npy, selftest.<p>.expected.npy
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medexport._io import atomic_path
from medexport.runtimes import PackageTarget, open_runner

INPUT = "selftest.input.npy"


def write_selftest(models: dict[str, Path], manifest: dict, target: PackageTarget, out: Path) -> dict[str, dict]:
    """Write the reference input and each model's expected output into ``out``; precision -> its test record."""
    from medexport.zoo.samples import real_inputs

    shape = manifest["input"]["shape"]
    sample = real_inputs((1, *shape[1:]), 1).astype(np.float32)
    _save(out / INPUT, sample)
    tests = {}
    for precision, path in models.items():
        backend = "openvino" if path.suffix == ".xml" else "onnxruntime"
        with open_runner(path, backend, device=target.device if backend == target.backend else None,
                         precision=precision) as runner:
            expected = np.asarray(runner(sample), np.float32)
        name = f"selftest.{precision}.expected.npy"
        _save(out / name, expected)
        tests[precision] = {"expected": name, "computed_with": backend, **tolerance(manifest, precision)}
    return tests


def tolerance(manifest: dict, precision: str) -> dict:
    """``{"atol", "min_agreement", "from"}`` for a device's output against the expected one, from the build."""
    parity = manifest.get("parity") or {}
    config = manifest["config"]["parity"]
    if precision == "fp32":
        onnx = parity.get("onnx") or {}
        return {"atol": float(onnx.get("allowed_error") or config["tolerance"]),
                "min_agreement": float(config["min_agreement"]),
                "from": "the error the build allowed the FP32 ONNX against float64 torch"}
    reduced = parity.get(manifest["target"]) or {}
    agreement = (reduced.get("decisions") or {}).get("agreement")
    if reduced.get("max_abs_error") is None or agreement is None:
        return {"atol": float(config["tolerance"]), "min_agreement": float(config["min_agreement"]),
                "from": "the build's parity settings (it recorded no reduced-precision error)"}
    return {"atol": float(reduced["max_abs_error"]), "min_agreement": float(agreement),
            "from": f"the {precision.upper()} model's largest error and decision agreement against FP32 in the build"}


def _save(dest: Path, array: np.ndarray) -> None:
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
