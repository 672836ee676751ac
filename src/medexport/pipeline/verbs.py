"""The verbs that run part of the chain: `export`, `quantize`, `compress`; compositions of the shared stages.

Each checks its output folder before any work and writes through a staging folder beside it (``_outdir``): a
failed or interrupted verb leaves the folder as it was, and one that writes into a build folder removes that
build's manifest and reports, which no longer describe the folder.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from medexport._io import write_json
from medexport.errors import GuardRailError, InputError
from medexport.pipeline._compress import compress
from medexport.pipeline._outdir import check_out, staged
from medexport.pipeline._stages import export_checked, original_runner, quantize, raise_guard_rail, reject_on_failure, validate
from medexport.pipeline.config import BuildConfig
from medexport.pipeline.context import RunContext, Stage, quiet_stage, reference_runner


def run_export(config: BuildConfig, stage: Stage = quiet_stage) -> dict[str, Any]:
    """Only the first stages: load, export ``model.onnx`` into ``config.out_dir``, parity against torch."""
    check_out(config.out_dir)
    ctx = RunContext(config, stage)
    with staged(config.out_dir, build=False) as out:
        info = export_checked(ctx, out / "model.onnx", "exported ONNX")
    info["parity"] = info.pop("onnx_parity", None)  # None: an ONNX input has no torch model to compare with
    info["path"] = str(config.out_dir / "model.onnx")
    return info


def run_quantize(config: BuildConfig, stage: Stage = quiet_stage) -> dict[str, Any]:
    """Export, calibrate on real images, write ``model.int8.qdq.onnx`` with the stage `build --precision int8`
    uses: with labelled data (a reference model's held-out images), sensitive layers stay float until the guard
    rails hold. Writes and returns the calibration recipe (``quantize.json``).

    With the nncf engine: NNCF's OpenVINO IR ``model.int8.nncf.xml`` instead, checked against the same guard
    rails (and removed if it breaks them)."""
    check_out(config.out_dir)
    ctx = RunContext(config, stage)
    with stage("load"):  # before any work: no real calibration data is an error, never random data
        ctx.read_inputs()
    with staged(config.out_dir, build=False) as out:
        onnx_path = out / "model.onnx"
        export_checked(ctx, onnx_path, "exported ONNX")
        nncf = config.quantization.engine == "nncf"
        with stage("quantize (nncf)" if nncf else "quantize"):
            recipe = quantize(ctx, onnx_path)
        if nncf and ctx.labelled() is not None and config.validate:
            recipe.update(_validate_ir(ctx, onnx_path, out / recipe["quantization"]["path"]))
        write_json(out / "quantize.json", recipe)
    return recipe


def _validate_ir(ctx: RunContext, onnx_path, xml) -> dict[str, Any]:
    """The guard rails on NNCF's IR against the FP32 ONNX; the IR is removed if it breaks them."""
    from medexport.runtimes import open_runner

    with (ctx.stage("validate against FP32"), open_runner(onnx_path, "onnxruntime") as fp32,
          open_runner(xml, "openvino", precision="int8") as int8):
        result = validate(ctx, fp32, int8, artifact=xml.name)
    if not result["guard_rails"]["passed"]:
        reject_on_failure([xml, xml.with_suffix(".bin")], onnx_path, lambda: raise_guard_rail(result["guard_rails"]))
    return result


def run_validate(config: BuildConfig, artifact: Path, stage: Stage = quiet_stage) -> dict[str, Any]:
    """``artifact`` on ``config.target`` against the original model on the run's labelled images, with its guard
    rails (the caller raises on a break: it writes the report first)."""
    from medexport.runtimes import open_runner

    ctx = RunContext(config, stage)
    with stage("load"):
        if ctx.labelled() is None:
            raise InputError("--data is required for a model that is not a bundled reference model")
    with open_runner(artifact, config.target, device=config.device) as runner, stage("validate"):
        reference = reference_runner(ctx.loaded, ctx.loaded.onnx_path or artifact)
        return validate(ctx, reference, runner, artifact=artifact.name)


def run_compress(config: BuildConfig, stage: Stage = quiet_stage) -> dict[str, Any]:
    """Compress, export ``model.compressed.onnx``, check parity with the compressed torch model, and (with labelled
    images) validate against the ORIGINAL model with the guard rails. Writes ``compress.json``."""
    if not config.compression.chain:
        raise InputError("no compression method given")
    if config.target is not None:   # no backend is built: passes measure on OpenVINO unless told otherwise
        config = dataclasses.replace(config, target=None)
    check_out(config.out_dir)
    ctx = RunContext(config, stage)
    with stage("load"):
        ctx.read_inputs()
    with staged(config.out_dir, build=False) as out:
        record, tuned = compress(ctx)
        result: dict[str, Any] = {"compression": record}
        if tuned is not None:
            result["finetune"] = tuned
        onnx_path = out / "model.compressed.onnx"
        result["export"] = export_checked(ctx, onnx_path, "compressed ONNX")
        result["onnx_parity"] = result["export"].pop("onnx_parity")
        if ctx.labelled() is not None and config.validate:
            with stage("validate against the original"):
                compressed = reference_runner(ctx.loaded, onnx_path)
                result["validation"] = validate(ctx, original_runner(ctx, compressed), compressed,
                                                artifact=onnx_path.name)
        write_json(out / "compress.json", result)
    # a broken guard rail is this verb's finding, not a failure to finish: its files stay for the user to see
    rails = (result.get("validation") or {}).get("guard_rails")
    if rails and not rails["passed"]:
        raise GuardRailError(rails["message"] + " (relax with --max-overall-drop/--max-class-drop, or compress less)")
    return result
