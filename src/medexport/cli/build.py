"""`medexport build`: the whole chain for one target, into an output folder with a manifest."""
from __future__ import annotations

from pathlib import Path

import click

from medexport.cli._options import (compression_options, console, data_options, int8_engine_options, model_options,
                                    model_spec, stage_printer)
from medexport.pipeline import FP32_RTOL, FP32_TOLERANCE
from medexport.runtimes._registry import TARGETS


@click.command("build")
@model_options
@compression_options(required=False)
@data_options
@click.option("--target", default="onnxruntime", show_default=True,
              help=f"Backend to build for: {', '.join(TARGETS)}.")
@click.option("--device", default=None, help="ONNX Runtime provider (cpu, cuda) or OpenVINO device (CPU, GPU).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: out/<model>-<target>).")
@click.option("--tolerance", type=float, default=FP32_TOLERANCE, show_default=True,
              help="FP32 parity: absolute error bound.")
@click.option("--rtol", type=float, default=FP32_RTOL, show_default=True,
              help="FP32 parity: extra bound relative to the output range (max |reference|).")
@click.option("--max-overall-drop", type=float, default=1.0, show_default=True,
              help="Guard rail: largest allowed drop of the overall metric, in percentage points.")
@click.option("--max-class-drop", type=float, default=3.0, show_default=True,
              help="Guard rail: largest allowed drop of any class's metric, in percentage points.")
@click.option("--batch", "latency_batch", type=int, default=1, show_default=True, help="Batch size for latency.")
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim simplification.")
@click.option("--no-latency", is_flag=True, help="Skip the latency measurement.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="int8: one QDQ ONNX calibrated on real images, built for the target. fp16: FP16 ONNX "
                   "(ONNX Runtime, TensorRT) or FP16 IR + f16 hint (OpenVINO).")
@int8_engine_options
@click.option("--calib", default=None,
              help="Real images for int8 calibration and --finetune (default: the reference model's bundled ones).")
@click.option("--calib-samples", type=int, default=256, show_default=True)
@click.option("--calib-method", type=click.Choice(["minmax", "percentile", "entropy"]), default="minmax",
              show_default=True)
def command(compression, data_path, labels_path, task, classes, target, device,
            out_dir, tolerance, rtol, max_overall_drop, max_class_drop, latency_batch, no_simplify, no_latency,
            precision, calib, calib_samples, calib_method, int8_engine, accuracy_control, int8_layout,
            **model_kw) -> None:
    """Export, build for TARGET, check parity and guard rails, measure latency, write a manifest."""
    from medexport.pipeline import BuildConfig, run_build

    spec = model_spec(**model_kw)
    config = BuildConfig(model=spec, out_dir=Path(out_dir or "out/pending"), target=target, device=device,
                         tolerance=tolerance, rtol=rtol, simplify=not no_simplify, max_overall_drop=max_overall_drop,
                         max_class_drop=max_class_drop, latency=not no_latency, latency_batch=latency_batch,
                         **compression, data=data_path, labels=labels_path, task=task,
                         classes=tuple(classes.split(",")) if classes else None, precision=precision, calib=calib,
                         calib_samples=calib_samples, calib_method=calib_method, int8_engine=int8_engine,
                         accuracy_control=accuracy_control, int8_layout=int8_layout)
    if out_dir is None:
        config.out_dir = Path("out") / f"{_model_label(spec)}-{target}"
    out = console()
    report = run_build(config, stage_printer(out))
    _summary(out, report.to_dict(), config.out_dir)


def _model_label(spec) -> str:
    from medexport.zoo import DEFAULT_MODEL

    if spec.name:
        return spec.name
    if spec.model is None:
        return DEFAULT_MODEL
    return Path(spec.model.split(":")[-1]).stem


def _summary(out, report: dict, out_dir: Path) -> None:
    parity = report.get("backend_parity", {})
    shown = parity.get("not_applicable") or f"parity max abs error {parity.get('max_abs_error', float('nan')):.2e}"
    out.print(f"[bold]{report['model']} → {report['target']}[/bold]: {shown}")
    validation = report.get("validation")
    if validation and "skipped" in validation:
        out.print(f"[yellow]{validation['skipped']}[/yellow]")
    elif validation:
        rails = validation["guard_rails"]
        out.print(f"guard rails {'passed' if rails['passed'] else 'FAILED'} on {validation['data']}")
        for row in rails["rows"]:
            out.print(f"  {row['scope']:7s} {row['name']:20s} {row['metric']:12s} {100 * row['reference']:6.2f}% → "
                      f"{100 * row['candidate']:6.2f}% ({row['delta_points']:+.2f} points)")
        if validation.get("note"):
            out.print(f"[yellow]note: {validation['note']}[/yellow]")
    latency = report.get("latency")
    if latency:
        art = latency[report["target"]]
        target = report["target"]
        ratios = [f"{latency['speedup_vs_reference']}x the {next(k for k in latency if k.startswith('reference'))}"]
        if "speedup_vs_fp32" in latency:
            ratios.append(f"{latency['speedup_vs_fp32']}x {target} FP32")
        if "speedup_vs_original" in latency:
            ratios.append(f"{latency['speedup_vs_original']}x the uncompressed original on {target} FP32")
        ratio = ", ".join(ratios)
        if latency.get("warning"):
            ratio += " (unreliable: the machine was busy)"
        out.print(f"latency: median {art['median_ms']:.2f} ms, p90 {art['p90_ms']:.2f} ms, p99 {art['p99_ms']:.2f} ms "
                  f"(batch {art['batch']}), {ratio}")
        if latency.get("warning"):
            out.print(f"[yellow]warning:[/yellow] {latency['warning']}")
    out.print(f"wrote {out_dir}/ (manifest.json, report.json, report.md)")
