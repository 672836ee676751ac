"""`medexport export`: torch -> checked, simplified ONNX, with parity against torch on real images."""
from __future__ import annotations

from pathlib import Path

import click

from medexport.cli._options import console, model_options, model_spec, parity_options, stage_printer


@click.command("export")
@model_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out", show_default=True)
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim simplification.")
@parity_options
def command(out_dir, no_simplify, tolerance, rtol, **model_kw) -> None:
    """Export the model to OUT/model.onnx and check it against torch on real images."""
    from medexport.pipeline import BuildConfig, ParityConfig, run_export

    config = BuildConfig(model=model_spec(**model_kw), out_dir=Path(out_dir), target=None, simplify=not no_simplify,
                         parity=ParityConfig(tolerance, rtol))
    out = console()
    result = run_export(config, stage_printer(out))
    parity = result["parity"]
    checked = (f"max abs error vs {parity['reference']} torch {parity['max_abs_error']:.2e} (allowed "
               f"{parity['allowed_error']:.2e})" if parity
               else "copied and checked; no torch model to compare with")
    out.print(f"wrote {result['path']} (opset {result['opset']}, {checked})")
