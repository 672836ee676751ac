"""`medexport build`: the whole chain for one target, into an output folder with a manifest."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from medexport.cli._options import (PassOptionsCommand, calib_options, compression_options, console, data_config,
                                    data_options, model_options, model_spec, parity_options, precision_options,
                                    rail_options, stage_printer, target_option)
from medexport.pipeline.config import LatencyConfig

# with --recipe, the options that may be given again (the files a manifest does not keep, and where to write)
_RECIPE_OPTIONS = {"recipe", "out_dir", "model", "weights", "trust_pickle", "data_path", "labels_path", "calib",
                   "finetune_data", "finetune_labels", "resume"}


@click.command("build", cls=PassOptionsCommand)
@model_options
@compression_options(required=False)
@data_options
@target_option("onnxruntime", "Backend to build for (short names: ort, ov, trt).")
@click.option("--device", default=None, help="ONNX Runtime provider (cpu, cuda) or OpenVINO device (CPU, GPU).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: out/<model>-<target>).")
@click.option("--recipe", type=click.Path(dir_okay=False), default=None,
              help="Re-run the build a manifest.json records (give --model/--weights, --calib, --data/--labels "
                   "again if it used your files; their hashes must match).")
@parity_options
@rail_options
@click.option("--batch", "latency_batch", type=int, default=1, show_default=True, help="Batch size for latency.")
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim simplification.")
@click.option("--no-latency", is_flag=True, help="Skip the latency measurement.")
@click.option("--latency-seconds", type=float, default=LatencyConfig.seconds, show_default=True,
              help="Time budget of the latency measurement: it stops there, after at least a few calls of each "
                   "variant (3D networks), and the report says it was capped.")
@precision_options
@calib_options("Real images for int8 calibration and --finetune (default: the reference model's bundled ones).")
def command(compress, pass_options, finetune_steps, finetune_memory, finetune_data, finetune_labels, finetune_val,
            patience, resume, data_path, labels_path, task, classes, target, device, out_dir,
            recipe, tolerance, rtol, max_overall_drop, max_class_drop, latency_batch, no_simplify, no_latency,
            latency_seconds, precision, calib, calib_samples, min_calib, calib_method, int8_engine, accuracy_control,
            int8_layout,
            **model_kw) -> None:
    """Export, build for TARGET, check parity and guard rails, measure latency, write a manifest."""
    from medexport.errors import InputError
    from medexport.evaluation import GuardRails
    from medexport.pipeline import (BuildConfig, CompressionConfig, ParityConfig, QuantizationConfig,
                                    read_recipe, run_build)

    expected = None
    if recipe:
        from click.core import ParameterSource

        ctx = click.get_current_context()
        extra = sorted(f"--{name.replace('_', '-')}" for name in ctx.params if name not in _RECIPE_OPTIONS
                       and ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT))
        if extra or pass_options:
            raise InputError(f"--recipe re-runs the recorded build as it was; {', '.join(extra + list(pass_options))} "
                             "would change it (drop them, or build without --recipe)")
        model = {k: v for k, v in (("model", model_kw["model"]), ("weights", model_kw["weights"])) if v}
        if model_kw["trust_pickle"]:
            model["trust_pickle"] = True
        folder = Path(recipe).parent   # by default the rebuild goes beside the recipe's build, never into it
        config, expected = read_recipe(recipe, out_dir=out_dir or folder.with_name(f"{folder.name}-rebuild"),
                                       model=model, calib=calib, data=data_path, labels=labels_path,
                                       finetune_data=finetune_data, finetune_labels=finetune_labels)
        if resume:
            config = dataclasses.replace(config, resume=True)
    else:
        config = BuildConfig(
            model=model_spec(**model_kw), out_dir=Path(out_dir or "out/pending"), target=target, device=device,
            simplify=not no_simplify, parity=ParityConfig(tolerance, rtol),
            rails=GuardRails(max_overall_drop, max_class_drop),
            data=data_config(data_path, labels_path, task, classes, calib, calib_samples, min_calib, finetune_data,
                             finetune_labels),
            compression=CompressionConfig.from_flags(compress, pass_options, finetune_steps, finetune_val=finetune_val,
                                                     patience=patience, **finetune_memory),
            resume=resume,
            quantization=QuantizationConfig(precision=precision, engine=int8_engine, layout=int8_layout,
                                            method=calib_method, accuracy_control=accuracy_control),
            latency=LatencyConfig(enabled=not no_latency, batch=latency_batch, seconds=latency_seconds))
    if out_dir is None and not recipe:
        config.out_dir = Path("out") / f"{_model_label(config.model)}-{config.target}"
    out = console()
    if expected and expected.get("note"):
        out.print(f"[yellow]note:[/yellow] {expected['note']}")
    report = run_build(config, stage_printer(out), expected=expected)
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
    if parity.get("not_applicable") and parity.get("decisions"):
        shown += (f"; it keeps {100 * parity['decisions']['agreement']:.2f}% of the FP32 model's decisions on "
                  f"{parity['n_inputs']} real images")
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
        budget = latency.get("budget") or {}
        if budget.get("capped"):
            out.print(f"[yellow]note:[/yellow] latency stopped at its {budget['seconds']:g} s budget "
                      f"({budget['timed_calls'][target]} timed calls of the artifact; --latency-seconds for more)")
    out.print(f"wrote {out_dir}/ (manifest.json, report.json, report.md, report.html)")
