"""`medexport inspect`: per-layer MACs/FLOPs, parameters and activation memory of a model."""
from __future__ import annotations

from pathlib import Path

import click

from medexport.cli._options import console, model_options, model_spec


@click.command("inspect")
@model_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the profile as JSON.")
@click.option("--top", type=int, default=25, show_default=True, help="Show the N most expensive layers (0: all).")
def command(json_path, top, **model_kw) -> None:
    """Trace the model and print its cost per layer and in total."""
    from rich.table import Table

    from medexport._io import write_json
    from medexport.errors import InputError
    from medexport.graph import capture, profile
    from medexport.loading import load_model

    loaded = load_model(model_spec(**model_kw))
    if loaded.module is None:
        raise InputError("inspect profiles torch models; an ONNX file has no torch graph to trace")
    graph = capture(loaded.module, (1, *loaded.input_shape[1:]))
    prof = profile(graph)
    layers = sorted(prof.layers, key=lambda layer: layer.flops, reverse=True)
    shown = layers if top <= 0 else layers[:top]
    table = Table(title=f"{loaded.name} at {'x'.join(map(str, prof.input_shape))} (captured with {graph.method})")
    for col in ("layer", "kind", "output", "MMACs", "MFLOPs", "params", "act KiB"):
        table.add_column(col, justify="left" if col in ("layer", "kind", "output") else "right")
    for layer in shown:
        table.add_row(layer.name, layer.kind, "x".join(map(str, layer.output_shape)), f"{layer.macs / 1e6:.2f}",
                      f"{layer.flops / 1e6:.2f}", f"{layer.params:,}", f"{layer.activation_bytes / 1024:.0f}")
    table.caption = (f"total: {prof.macs / 1e9:.4f} GMACs, {prof.flops / 1e9:.4f} GFLOPs, {prof.params:,} params, "
                     f"peak activations {prof.peak_activation_bytes / 2**20:.2f} MiB"
                     + ("" if len(shown) == len(layers) else f" (showing {len(shown)} of {len(layers)} layers)"))
    console_out = console()
    console_out.file = click.get_text_stream("stdout")
    console_out.print(table)
    if json_path:
        write_json(Path(json_path), {"model": loaded.name, **prof.to_dict()})
