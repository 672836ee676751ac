"""The verbs that run part of the chain: `export`, `quantize`, `compress`."""
from __future__ import annotations

from typing import Any

from medexport._io import write_json
from medexport.errors import InputError
from medexport.loading import load_model
from medexport.pipeline._stages import (Stage, calibration_images, check_parity, compress, compress_label, export,
                                        finetune, finetune_label, labelled_data, original_runner, parity_inputs,
                                        quiet_stage, reference_runner, run_batched, validate)
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


def run_quantize(config: BuildConfig, quant, calib: str | None, max_samples: int,
                 stage: Stage = quiet_stage) -> dict[str, Any]:
    """Export, calibrate on real images, write ``model.int8.qdq.onnx``; for reference models, keep sensitive
    layers in float until the guard rails hold on the held-out images. Returns the calibration recipe.

    With ``config.int8_engine == "nncf"``: NNCF's OpenVINO IR ``model.int8.nncf.xml`` instead, checked
    against the same guard rails (and removed if it breaks them)."""
    from medexport.calibration.quantize import quantize_qdq, quantize_with_guard_rails

    loaded = load_model(config.model)
    with stage("calibration images"):  # before any work: no real data is an error, never random data
        images, source = calibration_images(loaded, calib, max_samples)
    onnx_path = config.out_dir / "model.onnx"
    with stage("export"):
        export(loaded, onnx_path, config)
    if loaded.module is not None:
        with stage("parity"):
            inputs, _ = parity_inputs(loaded, config.parity_samples)
            check_parity(onnx_path, run_batched(reference_runner(loaded, onnx_path), inputs), inputs, config,
                    "exported ONNX")
    if config.int8_engine == "nncf":
        recipe = _quantize_nncf(onnx_path, images, loaded, config, stage)
        recipe["calibration_data"] = source
        write_json(config.out_dir / "quantize.json", recipe)
        return recipe
    dest = config.out_dir / "model.int8.qdq.onnx"
    with stage("quantize"):
        if loaded.reference is not None:
            from medexport.evaluation import GuardRails
            from medexport.evaluation.validation import reference_data

            rails = GuardRails(config.max_overall_drop, config.max_class_drop)
            recipe = quantize_with_guard_rails(onnx_path, images, dest, reference_data(loaded.reference), rails,
                                               quant).to_dict()
        else:
            recipe = {"quantization": quantize_qdq(onnx_path, images, dest, quant).to_dict()}
    recipe["calibration_data"] = source
    write_json(config.out_dir / "quantize.json", recipe)
    return recipe


def _quantize_nncf(onnx_path, images, loaded, config: BuildConfig, stage: Stage) -> dict[str, Any]:
    """NNCF's IR, then the guard rails against the FP32 ONNX on the reference model's held-out images."""
    from medexport.pipeline._stages import quantize
    from medexport.runtimes.onnxruntime import Runner as OrtRunner
    from medexport.runtimes.openvino import Runner as OvRunner

    data = labelled_data(loaded, config)
    with stage("quantize (nncf)"):
        recipe = quantize(onnx_path, images, data, config)
    xml = config.out_dir / recipe["quantization"]["path"]
    if data is not None and config.validate:
        with stage("validate against FP32"), OrtRunner(onnx_path) as fp32, OvRunner(xml, precision="int8") as int8:
            recipe.update(validate(fp32, int8, data, config, artifact=xml.name))
        if not recipe["guard_rails"]["passed"]:
            from medexport.pipeline._stages import raise_guard_rail, reject_on_failure

            reject_on_failure([xml, xml.with_suffix(".bin")], onnx_path, lambda: raise_guard_rail(recipe["guard_rails"]))
    return recipe


def run_compress(config: BuildConfig, stage: Stage = quiet_stage) -> dict[str, Any]:
    """Compress, export ``model.compressed.onnx``, check parity with the compressed torch model, and (for
    reference models) validate against the ORIGINAL model with the guard rails. Writes ``compress.json``."""
    from medexport.errors import GuardRailError

    if not config.compress:
        raise InputError("no compression method given")
    loaded = load_model(config.model)
    if loaded.module is None:
        raise InputError("compression rewrites torch layers; give a torch model, not an ONNX file")
    original = loaded.module
    with stage(compress_label(config)):
        result: dict[str, Any] = {"compression": compress(loaded, config)}
    if config.finetune_steps:
        with stage(finetune_label(config)):
            result["finetune"] = finetune(loaded, original, config)
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
