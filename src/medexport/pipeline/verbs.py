"""The verbs that run part of the chain: `export`, `quantize`, `compress`."""
from __future__ import annotations

import dataclasses
from typing import Any

from medexport._io import write_json
from medexport.errors import InputError
from medexport.loading import load_model
from medexport.pipeline._compress import check_compress_options, compress
from medexport.pipeline._stages import (Stage, calibration_images, check_parity, export,
                                        labelled_data, original_runner, parity_inputs,
                                        quantize, quiet_stage, raise_guard_rail, reference_runner, reject_on_failure,
                                        run_batched, validate)
from medexport.pipeline.config import BuildConfig


def run_export(config: BuildConfig, stage: Stage = quiet_stage) -> dict[str, Any]:
    """Only the first stages: load, export ``model.onnx`` into ``config.out_dir``, parity against torch."""
    loaded = load_model(config.model)
    onnx_path = config.out_dir / "model.onnx"
    with stage("export"):
        info = export(loaded, onnx_path, config)
    if loaded.module is None:
        info["parity"] = None  # an ONNX input has no torch model to compare with
    else:
        with stage("parity"):
            inputs, _ = parity_inputs(loaded, config.parity_samples)
            ref_out = run_batched(reference_runner(loaded, onnx_path), inputs)
            info["parity"] = check_parity(onnx_path, ref_out, inputs, config, "exported ONNX")
    info["path"] = str(onnx_path)
    return info


def run_quantize(config: BuildConfig, stage: Stage = quiet_stage) -> dict[str, Any]:
    """Export, calibrate on real images, write ``model.int8.qdq.onnx`` with the stage `build --precision int8`
    uses: with labelled data (a reference model's held-out images), sensitive layers stay float until the guard
    rails hold. Writes and returns the calibration recipe (``quantize.json``).

    With ``config.int8_engine == "nncf"``: NNCF's OpenVINO IR ``model.int8.nncf.xml`` instead, checked
    against the same guard rails (and removed if it breaks them)."""
    loaded = load_model(config.model)
    with stage("calibration images"):  # before any work: no real data is an error, never random data
        images, source = calibration_images(loaded, config.calib, config.calib_samples)
    onnx_path = config.out_dir / "model.onnx"
    with stage("export"):
        export(loaded, onnx_path, config)
    if loaded.module is not None:
        with stage("parity"):
            inputs, _ = parity_inputs(loaded, config.parity_samples)
            check_parity(onnx_path, run_batched(reference_runner(loaded, onnx_path), inputs), inputs, config,
                    "exported ONNX")
    data = labelled_data(loaded, config)
    nncf = config.int8_engine == "nncf"
    with stage("quantize (nncf)" if nncf else "quantize"):
        recipe = quantize(onnx_path, images, data, config)
    if nncf and data is not None and config.validate:
        recipe.update(_validate_ir(onnx_path, config.out_dir / recipe["quantization"]["path"], data, config, stage))
    recipe["calibration_data"] = source
    write_json(config.out_dir / "quantize.json", recipe)
    return recipe


def _validate_ir(onnx_path, xml, data, config: BuildConfig, stage: Stage) -> dict[str, Any]:
    """The guard rails on NNCF's IR against the FP32 ONNX; the IR is removed if it breaks them."""
    from medexport.runtimes.onnxruntime import Runner as OrtRunner
    from medexport.runtimes.openvino import Runner as OvRunner

    with stage("validate against FP32"), OrtRunner(onnx_path) as fp32, OvRunner(xml, precision="int8") as int8:
        result = validate(fp32, int8, data, config, artifact=xml.name)
    if not result["guard_rails"]["passed"]:
        reject_on_failure([xml, xml.with_suffix(".bin")], onnx_path, lambda: raise_guard_rail(result["guard_rails"]))
    return result


def run_compress(config: BuildConfig, stage: Stage = quiet_stage) -> dict[str, Any]:
    """Compress, export ``model.compressed.onnx``, check parity with the compressed torch model, and (for
    reference models) validate against the ORIGINAL model with the guard rails. Writes ``compress.json``."""
    from medexport.errors import GuardRailError

    if not config.compress:
        raise InputError("no compression method given")
    check_compress_options(config)
    # no target to tune for: --latency and subpixel are measured on OpenVINO unless --latency-backend says otherwise
    config = dataclasses.replace(config, compress_backend=config.compress_backend or "openvino")
    loaded = load_model(config.model)
    if loaded.module is None:
        raise InputError("compression rewrites torch layers; give a torch model, not an ONNX file")
    original = loaded.module
    record, tuned = compress(loaded, config, stage)
    result: dict[str, Any] = {"compression": record}
    if tuned is not None:
        result["finetune"] = tuned
    onnx_path = config.out_dir / "model.compressed.onnx"
    with stage("export"):
        result["export"] = export(loaded, onnx_path, config)
    with stage("parity"):
        inputs, _ = parity_inputs(loaded, config.parity_samples)
        compressed = reference_runner(loaded, onnx_path)
        result["onnx_parity"] = check_parity(onnx_path, run_batched(compressed, inputs), inputs, config, "compressed ONNX")
    data = labelled_data(loaded, config)
    if data is not None and config.validate:
        with stage("validate against the original"):
            result["validation"] = validate(original_runner(loaded, original, compressed), compressed, data, config,
                                             artifact=onnx_path.name)
    write_json(config.out_dir / "compress.json", result)
    rails = (result.get("validation") or {}).get("guard_rails")
    if rails and not rails["passed"]:
        raise GuardRailError(rails["message"] + " (relax with --max-overall-drop/--max-class-drop, or compress less)")
    return result
