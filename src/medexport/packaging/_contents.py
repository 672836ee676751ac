"""Which model files a package carries for its target, taken from a verified build folder (or made from its ONNX).

ONNX Runtime gets the ONNX of the build's precision; OpenVINO the IR (the build's own, or converted here from that
ONNX); TensorRT targets get the FP32 ONNX plus the validated reduced-precision one (the INT8 Q/DQ file, or the FP16
ONNX that TensorRT 11 needs, made with :func:`medexport.exporter.fp16.to_fp16` when the build has none), because
the device builds its own engine. Example::

    models = package_models(Path("out/build"), manifest, get_package_target("jetson"), Path("staging"))
    models  # {"fp32": Path("staging/model.onnx"), "int8": Path("staging/model.int8.qdq.onnx")}
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from medexport.errors import InputError
from medexport.runtimes import PackageTarget, make_builder


def build_precision(manifest: dict) -> str:
    """The precision the build validated (fp32, fp16 or int8)."""
    return manifest["config"]["quantization"]["precision"]


def package_models(build: Path, manifest: dict, target: PackageTarget, out: Path) -> dict[str, Path]:
    """Copy (or make) the model files ``target`` needs into ``out``; precision -> the file the runner opens."""
    precision = build_precision(manifest)
    files = manifest["files"]
    fp32 = build / ("model.compressed.onnx" if "model.compressed.onnx" in files else "model.onnx")
    if fp32.name not in files:
        raise InputError(f"the build folder {build} has no FP32 ONNX ({fp32.name}) to package")
    reduced = _reduced_onnx(build, manifest, precision, out if target.backend != "openvino" else None)
    if target.backend == "openvino":
        return {precision: _ir(build, manifest, reduced or fp32, precision, target, out)}
    if target.builds_on_device:
        chosen = {"fp32": fp32, **({precision: reduced} if reduced else {})}
    else:
        chosen = {precision: reduced or fp32}
    return {p: _copy_onnx(path, out) for p, path in chosen.items()}


def _reduced_onnx(build: Path, manifest: dict, precision: str, fp16_dest: Path | None) -> Path | None:
    """The build's FP16 or INT8 Q/DQ ONNX (None for FP32); an FP16 ONNX is made when the build has none (OpenVINO
    builds compress their own IR) and ``fp16_dest`` is given."""
    if precision == "fp32":
        return None
    if precision == "int8":
        path = (manifest.get("calibration") or {}).get("quantization", {}).get("path", "")
        if not path.endswith(".onnx"):
            raise InputError(f"the INT8 model of this build is {path or 'not recorded'}, not a Q/DQ ONNX (an NNCF "
                             "build): package it for openvino-cpu, or build with --int8-engine qdq")
        return build / path
    from medexport.exporter.fp16 import FP16_FILENAME, to_fp16

    if FP16_FILENAME in manifest["files"]:
        return build / FP16_FILENAME
    if fp16_dest is None:
        return None
    fp32 = build / ("model.compressed.onnx" if "model.compressed.onnx" in manifest["files"] else "model.onnx")
    return to_fp16(fp32, fp16_dest / FP16_FILENAME)


def _copy_onnx(path: Path, out: Path) -> Path:
    """``path`` and its external-data files into ``out`` (already there when made by this package)."""
    from medexport.pipeline._stages import external_files

    for name in (path.name, *external_files(path)):
        if not (out / name).exists():
            shutil.copy2(path.parent / name, out / name)
    return out / path.name


def _ir(build: Path, manifest: dict, onnx: Path, precision: str, target: PackageTarget, out: Path) -> Path:
    """The build's OpenVINO IR when it has one, else the IR converted here from ``onnx``, copied into ``out``."""
    artifact = build / manifest["artifact"]
    if artifact.suffix == ".xml":
        source = artifact
    else:
        scratch = Path(tempfile.mkdtemp(prefix="medexport-ir-", dir=out))
        source = make_builder(target.backend, device=target.device, precision=precision).build(onnx, scratch).artifact
    for path in (source, source.with_suffix(".bin")):
        shutil.copy2(path, out / path.name)
    if source.parent != build:
        shutil.rmtree(source.parent)
    return out / source.name
