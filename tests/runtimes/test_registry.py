"""The backend registry: lazy backends, a missing one names its extra, names and aliases, artifact suffixes, what a
build asks of each backend, one constructor signature, and a backend registered by a test."""
import dataclasses
import importlib
import importlib.util
import inspect
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from medexport.errors import BackendUnavailableError, InputError
from medexport.runtimes import (BackendSpec, Builder, BuildResult, get_backend, get_spec, list_backends,
                                list_targets, make_builder, open_runner, register_backend, resolve_target,
                                target_choices, target_for, timed_backends, unregister_backend)


def test_import_medexport_loads_no_backend_or_torch():
    code = ("import sys, medexport, medexport.runtimes, medexport.cli; "
            "print(sorted(m for m in ('torch','openvino','tensorrt','onnxruntime','monai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_missing_tensorrt_names_the_extra():
    with pytest.raises(BackendUnavailableError, match=r"medexport\[tensorrt\]"):
        get_backend("tensorrt")


def test_unknown_backend():
    with pytest.raises(InputError, match="unknown target 'tflite'"):
        get_backend("tflite")


def test_every_backend_has_the_same_files():
    import medexport.runtimes as rt

    root = Path(rt.__file__).parent
    for name in list_backends():
        files = {p.name for p in (root / name).glob("*.py")}
        assert {"__init__.py", "runner.py"} <= files, name
        if name != "torch":  # torch is a runner only: there is nothing to build
            assert {"builder.py", "util.py"} <= files, name


def test_names_and_aliases_resolve_to_the_canonical_target():
    assert [resolve_target(n) for n in ("ort", "ov", "trt", "onnxruntime", "openvino", "tensorrt")] == \
        ["onnxruntime", "openvino", "tensorrt", "onnxruntime", "openvino", "tensorrt"]
    assert get_spec("ov") is get_spec("openvino")


def test_an_unknown_target_lists_the_choices_with_their_aliases():
    """Only build targets: torch is a backend (the reference) that no --target takes."""
    with pytest.raises(InputError, match=r"unknown target 'tflite'; choose one of: onnxruntime \(ort\), "
                                         r"openvino \(ov\), tensorrt \(trt\)$"):
        resolve_target("tflite")


def test_torch_is_a_backend_but_neither_a_target_nor_an_artifact(tmp_path):
    assert "torch" in list_backends() and "torch" not in list_targets()
    with pytest.raises(InputError, match=r"'torch' is not a build target; choose one of: onnxruntime \(ort\)"):
        resolve_target("torch")
    with pytest.raises(InputError, match="not a build target"):
        make_builder("torch")
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(InputError, match="opens no artifact file"):
        open_runner(tmp_path / "model.pt", "torch")


def test_targets_and_the_backends_timed_on_this_cpu():
    assert list_targets() == ["onnxruntime", "openvino", "tensorrt"]
    assert timed_backends() == ["onnxruntime", "openvino"]
    assert target_choices() == ["onnxruntime", "ort", "openvino", "ov", "tensorrt", "trt"]


@pytest.mark.parametrize("name, target", [("model.onnx", "onnxruntime"), ("model.int8.qdq.onnx", "onnxruntime"),
                                          ("model.xml", "openvino"), ("model.plan", "tensorrt"),
                                          ("MODEL.ENGINE", "tensorrt")])
def test_target_for_each_artifact_suffix(name, target):
    assert target_for(Path("out") / name) == target


def test_an_unknown_suffix_names_the_known_ones():
    with pytest.raises(InputError, match=r"model.tflite: pass --target \(known suffixes: .onnx, .xml, .plan, "
                                         r".engine\)"):
        target_for(Path("model.tflite"))


def test_what_a_build_asks_of_each_target():
    from medexport.calibration.choices import LAYOUTS

    assert {t: get_spec(t).default_layout for t in list_targets()} == \
        {"onnxruntime": "tensorrt", "openvino": "openvino", "tensorrt": "tensorrt"}
    assert all(LAYOUTS[get_spec(t).default_layout].serves(t) for t in list_targets())
    # OpenVINO writes its own FP16 IR; the pipeline hands the others an FP16 ONNX
    assert [t for t in list_targets() if get_spec(t).fp16_by_builder] == ["openvino"]


# ids that are not marker names: the classes are read without the runtime, so the tensorrt case runs here too
@pytest.mark.parametrize("name", list_targets(), ids=lambda name: f"target={name}")
def test_every_target_takes_the_one_constructor_signature(name):
    """Read from the classes themselves: the subpackages import their runtime only when they build or run."""
    module = importlib.import_module(get_spec(name).module)
    builder = inspect.signature(module.Builder).parameters
    runner = inspect.signature(module.Runner).parameters
    keyword = inspect.Parameter.KEYWORD_ONLY
    assert {p: (builder[p].kind, builder[p].default) for p in ("device", "precision", "max_batch")} == \
        {"device": (keyword, None), "precision": (keyword, "fp32"), "max_batch": (keyword, 8)}
    assert next(iter(runner.values())).kind == inspect.Parameter.POSITIONAL_OR_KEYWORD   # the artifact's path
    assert {p: (runner[p].kind, runner[p].default) for p in ("device", "threads", "precision")} == \
        {"device": (keyword, None), "threads": (keyword, None), "precision": (keyword, "fp32")}


class _CopyBuilder(Builder):
    """The stand-in backend's builder: its artifact is a copy of the ONNX under its own suffix."""

    backend = "fake"

    def __init__(self, *, device=None, precision="fp32", max_batch=8):
        self.asked = {"device": device, "precision": precision, "max_batch": max_batch}

    def build_impl(self, onnx_path, out_dir):
        artifact = out_dir / f"{onnx_path.stem}.fake"
        shutil.copyfile(onnx_path, artifact)
        return BuildResult(self.backend, artifact, [artifact], self.asked)


@pytest.fixture
def fake_backend(monkeypatch):
    """A backend registered for one test, with ONNX Runtime running its artifact; unregistered afterwards."""
    from medexport.runtimes.onnxruntime import Runner

    module = types.ModuleType("medexport_fake_backend")
    module.Builder = _CopyBuilder
    module.Runner = type("FakeRunner", (Runner,), {"backend": "fake"})
    monkeypatch.setitem(sys.modules, module.__name__, module)
    spec = register_backend(BackendSpec("fake", module.__name__, "onnxruntime", None, "a copy run by ONNX Runtime",
                                        aliases=("fk",), suffixes=(".fake",), timed_here=True))
    yield spec
    unregister_backend("fake")
    assert "fake" not in list_backends()


def test_a_registered_backend_is_a_target_that_builds_and_runs(fake_backend, unet_onnx, tmp_path):
    import numpy as np
    import torch

    from medexport.compression.rewrite.subpixel import SubPixelConfig
    from medexport.zoo.samples import real_inputs

    assert list_targets()[-1] == "fake" and timed_backends()[-1] == "fake" and resolve_target("fk") == "fake"
    path, model = unet_onnx
    result = make_builder("fk", device="cpu", precision="fp16", max_batch=2).build(path, tmp_path)
    assert result.artifact == tmp_path / "model.fake" and result.artifact.read_bytes() == path.read_bytes()
    assert result.info == {"device": "cpu", "precision": "fp16", "max_batch": 2}
    assert target_for(result.artifact) == "fake"
    images = real_inputs((2, 1, 64, 64), 2)
    with open_runner(result.artifact, "fake", device="cpu", threads=1) as runner:
        assert runner.backend == "fake"
        got = runner(images)
    with torch.no_grad():
        assert np.abs(got - model(torch.from_numpy(images)).numpy()).max() < 1e-4
    assert SubPixelConfig(backend="fake").backend == "fake"   # latency checks follow timed_backends()


def test_a_name_alias_or_suffix_cannot_be_registered_twice(fake_backend):
    assert register_backend(fake_backend) is fake_backend   # the same spec again: nothing changes
    with pytest.raises(InputError, match="a different backend named 'fake'"):
        register_backend(dataclasses.replace(fake_backend, description="another"))
    with pytest.raises(InputError, match="claims ov, .xml"):
        register_backend(dataclasses.replace(fake_backend, name="fake2", aliases=("ov",), suffixes=(".xml",)))
    assert "fake2" not in list_backends()


def test_a_backend_whose_package_is_missing_names_its_extra(fake_backend):
    missing = dataclasses.replace(fake_backend, name="absent", aliases=(), suffixes=(),
                                  requires="medexport_no_such_package", extra="absent", install_note=" (and a GPU)")
    register_backend(missing)
    try:
        with pytest.raises(BackendUnavailableError, match=r"pip install 'medexport\[absent\]' \(and a GPU\)$"):
            make_builder("absent")
    finally:
        unregister_backend("absent")


def test_a_registered_backend_is_a_build_target_of_the_cli(fake_backend, tmp_path, capsys):
    """Registered in this test only: named by --target (or its alias), built, checked and validated by `build`."""
    import json

    from medexport.cli import cli

    cli.main(args=["build", "--help"], prog_name="medexport", standalone_mode=False)
    assert "fake|fk" in capsys.readouterr().out
    cli.main(args=["build", "--target", "fk", "--no-latency", "--out", str(tmp_path)], prog_name="medexport",
             standalone_mode=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["target"] == "fake" and manifest["artifact"] == "model.fake"
    assert manifest["parity"]["fake"]["passed"] and manifest["metrics"]["guard_rails"]["passed"]
    assert {"model.onnx", "model.fake"} <= set(manifest["files"])
