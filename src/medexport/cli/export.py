"""`medexport export`: torch -> checked, simplified ONNX, with parity against torch on real images."""
from __future__ import annotations

from pathlib import Path

import click

from medexport.cli._options import console, model_options, model_spec, stage_printer
from medexport.pipeline import FP32_RTOL, FP32_TOLERANCE


@click.command("export")
@model_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out", show_default=True)
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim simplification.")
@click.option("--tolerance", type=float, default=FP32_TOLERANCE, show_default=True,
              help="FP32 parity: absolute error bound.")
@click.option("--rtol", type=float, default=FP32_RTOL, show_default=True,
              help="FP32 parity: extra bound relative to the output range (max |reference|).")
def command(out_dir, no_simplify, tolerance, rtol, **model_kw) -> None:
    """Export the model to OUT/model.onnx and check it against torch on real images."""
    from medexport.pipeline import BuildConfig, run_export

    config = BuildConfig(model=model_spec(**model_kw), out_dir=Path(out_dir), simplify=not no_simplify,
                         tolerance=tolerance, rtol=rtol)
    out = console()
    result = run_export(config, stage_printer(out))
    parity = result["parity"]
    checked = (f"max abs error vs torch {parity['max_abs_error']:.2e}" if parity
               else "copied and checked; no torch model to compare with")
    out.print(f"wrote {result['path']} (opset {result['opset']}, {checked})")
