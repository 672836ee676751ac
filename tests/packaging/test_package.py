"""`medexport package`: packages that run, with only their runtime and numpy, in a fresh virtual environment."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from medexport.cli import cli
from medexport.packaging.archive import extract_package
from tests.packaging.conftest import PATIENT_ID, PATIENT_NAME


@pytest.fixture(scope="module")
def packages(int8_build, tmp_path_factory):
    """package target -> its folder, made once through the CLI (short names where they exist)."""
    root = tmp_path_factory.mktemp("packages")
    made = {}
    for name, target in (("ort", "onnxruntime"), ("ov", "openvino-cpu"), ("jetson", "jetson")):
        result = CliRunner().invoke(cli, ["package", str(int8_build), "--target", name, "--out", str(root / target)])
        assert result.exit_code == 0, result.output
        made[target] = root / target
    return made


def device_python(tmp_path, runtime: str) -> Path:
    """A fresh virtual environment that sees only numpy and ``runtime`` (symlinked from this one's site-packages)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    here = Path(sysconfig.get_paths()["purelib"])
    libs = tmp_path / "libs"
    libs.mkdir()
    for name in ("numpy", "numpy.libs", runtime, f"{runtime}.libs"):
        if (here / name).exists():
            (libs / name).symlink_to(here / name)
    python = tmp_path / "venv" / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, env={}).stdout.strip()
    Path(purelib, "device_libs.pth").write_text(f"{libs}\n")
    return python


@pytest.mark.parametrize("target,runtime", [("onnxruntime", "onnxruntime"), ("openvino-cpu", "openvino")])
def test_a_package_passes_selftest_and_benches_with_only_its_runtime_and_numpy(packages, target, runtime, tmp_path):
    if runtime == "openvino":
        pytest.importorskip("openvino")
    folder = extract_package(packages[target].with_name(f"{target}.tar.gz"), tmp_path)   # what a device unpacks
    python = device_python(tmp_path, runtime)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}   # no PYTHONPATH: medexport's src is not reachable
    for module, importable in (("numpy", True), (runtime, True), ("torch", False), ("medexport", False)):
        probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, env=env)
        assert (probe.returncode == 0) == importable, (module, probe.stderr)

    run = subprocess.run([python, "run.py", "selftest"], cwd=folder, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["selftest"] == "passed" and result["precision"] == "int8"
    assert result["max_abs_error"] <= result["atol"] and result["decision_agreement"] >= result["min_agreement"]

    bench = subprocess.run([python, "run.py", "bench", "--batch", "2", "--iterations", "5", "--warmup", "1",
                            "--json", "bench.json"], cwd=folder, capture_output=True, text=True, env=env)
    assert bench.returncode == 0, bench.stderr
    numbers = json.loads((folder / "bench.json").read_text())
    assert numbers["iterations"] == 5 and numbers["batch"] == 2 and numbers["runtime"] == runtime
    assert 0 < numbers["p50_ms"] <= numbers["p90_ms"] <= numbers["p99_ms"]
    assert numbers["throughput_per_s"] == pytest.approx(2000 / numbers["mean_ms"])


def test_selftest_fails_when_the_model_no_longer_gives_the_validated_output(packages, tmp_path):
    """A package whose expected output is off by more than the tolerance fails selftest (exit 1, FAILED)."""
    folder = extract_package(packages["onnxruntime"].with_name("onnxruntime.tar.gz"), tmp_path)
    package = json.loads((folder / "package.json").read_text())
    expected = folder / package["selftest"]["int8"]["expected"]
    np.save(expected, np.load(expected) + 2 * package["selftest"]["int8"]["atol"])
    run = subprocess.run([sys.executable, "run.py", "selftest"], cwd=folder, capture_output=True, text=True)
    assert run.returncode == 1 and json.loads(run.stdout)["selftest"] == "FAILED"
    (folder / package["models"]["int8"]).write_bytes(b"not a model")
    run = subprocess.run([sys.executable, "run.py", "selftest"], cwd=folder, capture_output=True, text=True)
    assert run.returncode == 1 and "does not match the package manifest" in run.stderr


def test_tolerances_and_metrics_come_from_the_build(int8_build, packages):
    manifest = json.loads((int8_build / "manifest.json").read_text())
    package = json.loads((packages["jetson"] / "package.json").read_text())
    measured = manifest["parity"]["onnxruntime"]
    assert package["selftest"]["int8"]["atol"] == pytest.approx(measured["max_abs_error"])
    assert package["selftest"]["int8"]["min_agreement"] == pytest.approx(measured["decisions"]["agreement"])
    assert package["selftest"]["fp32"]["atol"] == pytest.approx(manifest["parity"]["onnx"]["allowed_error"])
    assert package["tensorrt_readiness"] == {name: {v: "passes" for v in ("10.3", "10.13", "10.16", "11")}
                                             for name in package["models"].values()}
    card = (packages["jetson"] / "MODEL_CARD.md").read_text()
    for row in manifest["metrics"]["guard_rails"]["rows"]:
        assert f"| {row['name']} | {row['metric']} | {100 * row['reference']:.2f}% | " in card
        assert f"{row['delta_points']:+.2f}" in card
    labels = json.loads((packages["onnxruntime"] / "labels.json").read_text())["labels"]
    assert labels == {"0": "background", "1": "grey_matter", "2": "white_matter"}
    pre = json.loads((packages["onnxruntime"] / "preprocessing.json").read_text())
    assert pre["input"] == {"name": "input", "shape": [1, 1, 128, 128], "layout": "NCHW", "dtype": "float32",
                            "dynamic_batch": True}
    assert pre["spacing_mm"] == [1.5, 1.5]


def test_each_target_gets_the_files_it_needs(packages):
    listed = {t: set(json.loads((f / "manifest.json").read_text())["files"]) for t, f in packages.items()}
    assert {"model.int8.qdq.onnx", "run.py"} <= listed["onnxruntime"]
    assert not {"model.onnx", "build_on_device.sh"} & listed["onnxruntime"]
    assert {"model.int8.qdq.xml", "model.int8.qdq.bin"} <= listed["openvino-cpu"]
    assert not any(n.endswith(".onnx") for n in listed["openvino-cpu"])
    assert {"model.onnx", "model.int8.qdq.onnx", "build_on_device.sh", "trt.env", "selftest.fp32.expected.npy",
            "selftest.int8.expected.npy"} <= listed["jetson"]
    for folder in packages.values():   # every file of the folder is listed (the manifest itself aside)
        assert {p.name for p in folder.iterdir()} == listed[folder.name] | {"manifest.json"}
    assert os.access(packages["jetson"] / "build_on_device.sh", os.X_OK)


def test_packages_hold_no_patient_identifiers(int8_build, packages):
    """The build was calibrated on DICOM files with PatientName/PatientID in their tags and file names."""
    calibration = json.loads((packages["jetson"] / "calibration.json").read_text())
    assert calibration["data"]["count"] == 8 and len(calibration["data"]["sha256"]) == 8
    assert calibration["data"]["files_by_format"] == {"dicom": 8}
    secrets = [s.encode() for s in (PATIENT_NAME, PATIENT_ID, "Doe", "4711")]
    for folder in packages.values():
        for path in folder.iterdir():
            data = path.read_bytes()
            assert not [s for s in secrets if s in data], path.name
        tarball = gzip.decompress(folder.with_name(folder.name + ".tar.gz").read_bytes())
        assert not [s for s in secrets if s in tarball]


def test_package_refuses_a_folder_that_is_not_a_build_and_a_changed_build(int8_build, tmp_path):
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "model.onnx").write_bytes((int8_build / "model.onnx").read_bytes())
    for source, fragment in ((lone / "model.onnx", "not in a build folder"),):
        result = CliRunner().invoke(cli, ["package", str(source), "--target", "ort", "--out", str(tmp_path / "p")])
        assert result.exit_code == 1 and fragment in result.output.strip().splitlines()[-1], result.output
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in int8_build.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / "report.md").write_text("edited")
    result = CliRunner().invoke(cli, ["package", str(copy), "--target", "ort", "--out", str(tmp_path / "p")])
    assert result.exit_code == 1 and "report.md is changed" in result.output, result.output
    assert not (tmp_path / "p").exists() and not (tmp_path / "p.tar.gz").exists()
