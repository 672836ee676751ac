"""`medexport compress`: one compression pass or a chain, exported and checked against the original."""
from __future__ import annotations

from pathlib import Path

import click

from medexport.cli._options import (PassOptionsCommand, calib_options, compression_options, console, data_config,
                                    data_options, finetune_summary, memory_line, model_options, model_spec, rail_options,
                                    stage_printer)


@click.command("compress", cls=PassOptionsCommand)
@model_options
@compression_options(required=True)
@data_options
@calib_options("Real images for hsc, merge, prune-act, --latency and --finetune (default: the reference model's "
               "bundled calibration images).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out", show_default=True)
@rail_options
def command(compress, pass_options, finetune_steps, finetune_memory, finetune_data, finetune_labels, finetune_val, patience, resume,
            data_path, labels_path, task, classes, calib, calib_samples, min_calib, out_dir, max_overall_drop,
            max_class_drop, **model_kw) -> None:
    """Factorize layers (low-rank: to --budget, --latency or a rank rule) or remove --ratio of channels (prune-*,
    merge), or both in a chain; write OUT/model.compressed.onnx and compress.json (every layer or group changed)."""
    from medexport.evaluation import GuardRails
    from medexport.pipeline import BuildConfig, CompressionConfig, run_compress

    config = BuildConfig(model=model_spec(**model_kw), out_dir=Path(out_dir), target=None,
                         compression=CompressionConfig.from_flags(compress, pass_options, finetune_steps,
                                                                  finetune_val=finetune_val, patience=patience,
                                                                  **finetune_memory),
                         rails=GuardRails(max_overall_drop, max_class_drop), resume=resume,
                         data=data_config(data_path, labels_path, task, classes, calib, calib_samples, min_calib,
                                          finetune_data, finetune_labels))
    out = console()
    result = run_compress(config, stage_printer(out))
    record = result["compression"]
    out.print(f"{record['method']}: {record['macs_before'] / 1e6:.1f} -> {record['macs_after'] / 1e6:.1f} MMACs "
              f"({record['ratio']:.2f}x), {record['params_before']:,} -> {record['params_after']:,} parameters "
              f"({record['params_ratio']:.2f}x), {len(record['layers'])} layers or groups changed")
    for step in record.get("passes", [record]):
        if step.get("latency"):
            _print_latency(out, step["method"], step["latency"])
    if result.get("finetune"):
        out.print(finetune_summary(result["finetune"]))
        if result["finetune"].get("memory"):
            out.print(memory_line(result["finetune"]["memory"]))
    if result.get("validation"):
        out.print(result["validation"]["table"])
        if result["validation"].get("note"):
            out.print(f"note: {result['validation']['note']}")
    out.print(f"wrote {config.out_dir / 'model.compressed.onnx'} and compress.json")


def _print_latency(out, method: str, latency: dict) -> None:
    """A latency-mode pass: asked, predicted and measured latency, and its table's staircase (% of the model's
    time of each layer by channel count: where the time steps, and where fewer channels buy nothing)."""
    out.print(f"{method} on {latency['backend']}: latency asked {latency['target']:.2f}x, predicted "
              f"{latency['predicted']:.2f}x, measured {latency['measured']:.2f}x of the original's; latency table "
              f"{latency['table_seconds']:.0f} s ({latency['layers_measured']} layer models timed, the rest cached), "
              f"fitted on {latency['fit']['models']} whole models timed beside the original")
    chosen = [step for step in latency["steps"] if "chose" in step]
    if chosen:
        out.print("widths by step (least output distortion against the original, together): " + "; ".join(
            " ".join(f"{name}{'*' if name == step['chose'] else ''} {d:.3f}" for name, d in step["joint"].items())
            for step in chosen))
    norms = latency.get("batchnorm") or {}
    if sum(norms.values()):
        out.print(f"BatchNorm statistics re-estimated on the calibration images where they kept the output closer: "
                  f"{norms['adapted']} of {norms['adapted'] + norms['stale']} narrowed models")
    for warning in latency.get("warnings", []):
        out.print(f"warning: {warning}")
    for layer, sides in latency["staircase"].items():
        steps = "; ".join(f"{side} " + " ".join(f"{count}:{share:.1f}%" for count, share in points.items())
                          for side, points in sides.items())
        out.print(f"  {layer}: {steps}")
