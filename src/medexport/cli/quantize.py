"""`medexport quantize`: one INT8 QDQ ONNX calibrated on real images, for every backend."""
from __future__ import annotations

from pathlib import Path

import click

from medexport.calibration.choices import METHODS
from medexport.cli._options import (calib_options, console, int8_engine_options, model_options, model_spec,
                                    rail_options, stage_printer)


@click.command("quantize")
@model_options
@calib_options("Real images for calibration: a folder or file of DICOM, NIfTI, NRRD, PNG/JPEG or NPY (default: the "
               "reference model's bundled calibration images).")
@click.option("--method", type=click.Choice(list(METHODS)), default="minmax", show_default=True,
              help="Activation range calibration.")
@click.option("--exclude", multiple=True, help="ONNX node name to keep in float (repeatable).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out", show_default=True)
@rail_options
@int8_engine_options
def command(calib, calib_samples, min_calib, method, exclude, out_dir, max_overall_drop, max_class_drop, int8_engine,
            accuracy_control, int8_layout, **model_kw) -> None:
    """Calibrate and write OUT/model.int8.qdq.onnx (symmetric int8, per-channel weights, TensorRT-ready unless
    --int8-layout picks a one-backend layout)."""
    from medexport.calibration.choices import INT8_ENGINES, LAYOUTS
    from medexport.evaluation import GuardRails
    from medexport.pipeline import BuildConfig, DataConfig, QuantizationConfig, run_quantize

    # the backend a one-backend layout or engine serves (the default: the portable TensorRT layout, any backend)
    picked = [option.backends[0] for option in (LAYOUTS.get(int8_layout), INT8_ENGINES[int8_engine])
              if option is not None and option.backends]
    config = BuildConfig(model=model_spec(**model_kw), out_dir=Path(out_dir),
                         rails=GuardRails(max_overall_drop, max_class_drop),
                         data=DataConfig(calib=calib, calib_samples=calib_samples, min_calib=min_calib),
                         quantization=QuantizationConfig(precision="int8", engine=int8_engine, layout=int8_layout,
                                                         method=method, exclude=tuple(exclude),
                                                         accuracy_control=accuracy_control),
                         target=picked[0] if picked else "onnxruntime")
    out = console()
    recipe = run_quantize(config, stage_printer(out))
    quant = recipe["quantization"]
    done = (f"{quant['quantized_nodes']} nodes in int8" if "quantized_nodes" in quant
            else "NNCF post-training quantization" + (" with accuracy control" if quant["accuracy_control"] else ""))
    out.print(f"wrote {config.out_dir / quant['path']}: {done}, {quant['calibration_images']} calibration images")
    for layer in recipe.get("float_layers", []):
        out.print(f"kept in float: {layer['node']} ({layer['op_type']}): {layer['why']}")
    if quant.get("glue_float_nodes"):
        out.print(f"also float (they only feed float layers): {', '.join(quant['glue_float_nodes'])}")
    if recipe.get("table"):
        out.print(recipe["table"])
