"""`medexport package`: a verified build folder -> an edge package folder and its .tar.gz, for one package target.

The package holds the model files the target needs (:mod:`._contents`), the standalone runner ``run.py`` and, for
TensorRT targets, ``build_on_device.sh`` with its ``trt.env`` (both shipped in ``packaging/device`` and copied, not
generated), a real reference input with each model's expected output and tolerance (:mod:`._selftest`),
preprocessing, label map, calibration record and model card (:mod:`._describe`), ``package.json`` (what run.py
reads) and ``manifest.json`` with the sha256 of every file, written last. The folder is written through a staging
folder beside it and the tarball atomically, so a failure leaves neither half-written. Example::

    make_package(Path("out/brain-tissue-unet2d-onnxruntime"), "jetson", Path("out/pkg-jetson"))
"""
from __future__ import annotations

import json
import shlex
import shutil
from importlib import resources
from pathlib import Path

from medexport import __version__
from medexport._io import sha256, write_json, write_text
from medexport.errors import InputError
from medexport.packaging import _describe
from medexport.packaging._contents import build_precision, package_models
from medexport.packaging._selftest import INPUT, write_selftest
from medexport.packaging.archive import write_tarball
from medexport.packaging.verify import PACKAGE_FORMAT, verify_path
from medexport.pipeline._outdir import check_out, staged
from medexport.pipeline.manifest import MANIFEST, verify_folder
from medexport.runtimes import PackageTarget, get_package_target

DEVICE_FILES = ("run.py",)
TRT_DEVICE_FILES = ("build_on_device.sh",)


def make_package(source: Path, target: str, out: Path) -> dict:
    """Package the build folder ``source`` (or the folder of a file in it) for ``target`` into ``out`` and
    ``out.tar.gz``; the build is verified against its manifest first. Returns the package's description."""
    source = Path(source)
    build = source if source.is_dir() else source.parent
    if not (build / MANIFEST).is_file():
        raise InputError(f"{source} is not in a build folder (no {MANIFEST}): package needs what `medexport build` "
                         "validated (its metrics, tolerances and reference outputs go into the package)")
    checked = verify_path(build)
    if checked["kind"] != "build":
        raise InputError(f"{build} is already a package; give the build folder it was made from")
    if source.is_file() and source.name != MANIFEST:
        verify_folder(source)   # a file the build's manifest does not list is refused, named
    manifest = json.loads((build / MANIFEST).read_text())
    spec = get_package_target(target)
    out = Path(out)
    if out.resolve() == build.resolve():
        raise InputError("--out must not be the build folder itself")
    check_out(out)
    with staged(out, build=True) as tmp:
        description = _fill(tmp, build, manifest, spec)
    tarball = write_tarball(out, out.with_name(out.name + ".tar.gz"))
    return {**description, "folder": str(out), "tarball": str(tarball)}


def _fill(out: Path, build: Path, manifest: dict, spec: PackageTarget) -> dict:
    """Write every file of the package into ``out``, the manifest last."""
    precision = build_precision(manifest)
    models = package_models(build, manifest, spec, out)
    input_name = _input_name(build, manifest)
    tests = write_selftest(models, manifest, spec, out)
    for name in (*DEVICE_FILES, *(TRT_DEVICE_FILES if spec.builds_on_device else ())):
        _copy_device_file(name, out)
    readiness = _tensorrt_readiness(models) if spec.builds_on_device else None
    if spec.builds_on_device:
        write_text(out / "trt.env", _trt_env(manifest, spec, models, input_name, _not_ready(readiness)))
    write_json(out / "preprocessing.json", _describe.preprocessing(manifest, input_name))
    write_json(out / "labels.json", _describe.labels(manifest, _classes(manifest)))
    calibration = _describe.calibration(manifest)
    if calibration is not None:
        write_json(out / "calibration.json", calibration)
    write_text(out / "MODEL_CARD.md", _describe.model_card(manifest, spec.name, precision, tests))
    package = {"model": manifest["model"], "target": spec.name, "runtime": spec.backend, "device": spec.device,
               "precision": precision, "models": {p: path.name for p, path in models.items()},
               "input": {"name": input_name, "shape": manifest["input"]["shape"],
                         "dynamic_batch": bool(manifest["input"].get("dynamic_batch"))},
               "selftest_input": INPUT, "selftest": tests}
    if readiness is not None:
        package["tensorrt_readiness"] = readiness
    write_json(out / "package.json", package)
    files = sorted(p for p in out.iterdir() if p.name != MANIFEST)
    write_json(out / MANIFEST, {
        PACKAGE_FORMAT: 1, "medexport_version": __version__, "model": manifest["model"], "target": spec.name,
        "runtime": spec.backend, "precision": precision,
        "source_build": {"target": manifest["target"], "manifest_sha256": sha256(build / MANIFEST)},
        "files": {p.name: {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files}})
    return package


def _copy_device_file(name: str, out: Path) -> None:
    """A file of ``packaging/device`` (package data) into the package, executable."""
    with resources.as_file(resources.files("medexport.packaging") / "device" / name) as src:
        shutil.copyfile(src, out / name)
    (out / name).chmod(0o755)


def _input_name(build: Path, manifest: dict) -> str:
    import onnx

    fp32 = build / ("model.compressed.onnx" if "model.compressed.onnx" in manifest["files"] else "model.onnx")
    graph = onnx.load(str(fp32), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return next(i.name for i in graph.input if i.name not in weights)


def _classes(manifest: dict) -> list[str] | None:
    """Class names: the reference model's, or the ones the build was given (--classes)."""
    reference = (manifest.get("provenance") or {}).get("reference_model")
    if reference:
        from medexport.zoo import get_model

        return list(get_model(reference).classes)
    return ((manifest.get("config") or {}).get("data") or {}).get("classes")


def _tensorrt_readiness(models: dict[str, Path]) -> dict:
    """Each packaged ONNX against the TensorRT versions our users deploy to: refused when no version would parse
    one of them; the versions that would not are recorded, and build_on_device.sh refuses to build on them."""
    from medexport.runtimes.tensorrt.readiness import check_versions

    verdicts = {}
    for path in models.values():
        reports = check_versions(path)
        if not any(report.passed for report in reports):
            raise InputError(f"no TensorRT version this package targets would take it: {reports[0].summary()} "
                             "(`medexport trt-check` lists every finding)")
        verdicts[path.name] = {r.version: "passes" if r.passed else r.summary() for r in reports}
    return verdicts


def _not_ready(readiness: dict | None) -> str:
    """The TensorRT versions (``10.3``; ``11``: all of 11.x) some packaged ONNX fails the readiness check on."""
    failed = {version for verdicts in (readiness or {}).values() for version, verdict in verdicts.items()
              if verdict != "passes"}
    return " ".join(sorted(failed))


def _trt_env(manifest: dict, spec: PackageTarget, models: dict[str, Path], input_name: str,
             not_ready: str = "") -> str:
    """``trt.env``: the facts build_on_device.sh needs, as shell assignments (data, not code)."""
    shape = manifest["input"]["shape"]
    roi = (manifest.get("preprocessing") or {}).get("sliding_window_roi")
    sample = [shape[1], *(roi or shape[2:])]   # 3D: the sliding-window patch the device runs
    values = {
        "PACKAGE_TARGET": spec.name, "INPUT_NAME": input_name, "SAMPLE_SHAPE": "x".join(map(str, sample)),
        "DYNAMIC_BATCH": "1" if manifest["input"].get("dynamic_batch") else "0", "OPT_BATCH": "1",
        "MAX_BATCH": str(max(8, ((manifest.get("config") or {}).get("latency") or {}).get("batch", 1))),
        "ONNX_FP32": models["fp32"].name, "ONNX_FP16": models["fp16"].name if "fp16" in models else "",
        "ONNX_INT8": models["int8"].name if "int8" in models else "", "DEFAULT_PRECISION": build_precision(manifest),
        "NOT_READY_FOR": not_ready,
    }
    return "# written by medexport package: what build_on_device.sh builds\n" + "".join(
        f"{k}={shlex.quote(v)}\n" for k, v in values.items())
