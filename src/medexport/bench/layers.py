"""Per-layer MACs (from :mod:`medexport.graph.profile`) beside per-layer measured time (from the runtime's
profiler): where the time goes against where the arithmetic is.

Measured nodes carry ONNX names; torch's exporter names a node by its module scope
(``/model/model.1/submodule/conv/conv.0/Conv`` for module ``model.1.submodule.conv.0``), so a node's scope,
folded back into the dotted module path, finds the profiled layer. A runtime that fuses a conv with its
activation names the fused node after the activation's output (ONNX Runtime:
``/model/model.0/adn/A/Relu_output_0_nchwc``); such a node gets the MACs of the one layer left unmatched under
the nearest common module (``model.0`` -> ``model.0.conv``). Nodes still ambiguous keep ``macs`` None rather
than a guess.
"""
from __future__ import annotations

from typing import Any


def module_path(node: str) -> str:
    """The dotted torch module path of an ONNX node name: ``/model/model.1/conv/conv.0/Conv`` -> ``model.1.conv.0``."""
    parts: list[str] = []
    for part in node.strip("/").split("/")[:-1]:
        if parts and part.startswith(parts[-1] + "."):
            parts[-1] = part
        else:
            parts.append(part)
    return ".".join(parts)


def with_macs(times: list[dict[str, Any]], profile_layers: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """``times`` (``node``, ``op_type``, ``precision``, ``ms``) with each node's ``macs`` from ``profile_layers``
    (``node``: the torch module path, ``macs``). A layer's MACs go to one node of its scope: the first whose
    op type does the arithmetic (Conv, MatMul, Gemm, FullyConnected), else the first (not a Quantize beside it)."""
    macs = {layer["node"]: layer["macs"] for layer in profile_layers or []}
    out = [{**row, "macs": None} for row in times]
    for arithmetic_only in (True, False):
        for row in out:
            path = module_path(row["node"])
            if path in macs and (not arithmetic_only or _does_macs(row.get("op_type"))):
                row["macs"] = macs.pop(path)
    for row in out:
        if row["macs"] is None and _does_macs(row.get("op_type")):
            layer = _only_layer_under(module_path(row["node"]), macs)
            if layer is not None:
                row["macs"] = macs.pop(layer)
    return out


def _only_layer_under(path: str, macs: dict[str, Any]) -> str | None:
    """The one unmatched layer under the nearest ancestor module of ``path`` that has any; None if several."""
    parts = path.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:depth]) + "."
        under = [name for name in macs if name.startswith(prefix)]
        if under:
            return under[0] if len(under) == 1 else None
    return None


def _does_macs(op_type: str | None) -> bool:
    return any(word in (op_type or "") for word in ("Conv", "MatMul", "Gemm", "FullyConnected"))


def measured_layers(path, target: str, *, input_shape: tuple[int, ...] | None, threads: int | None,
                    profile_layers: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Per-node times of ``path`` on one real image from the runtime's profiler (``medexport.bench.node_times``),
    joined with MACs. ``input_shape``: the input when the artifact's is dynamic beyond the batch."""
    from medexport.bench.node_times import node_times
    from medexport.runtimes import open_runner
    from medexport.zoo.samples import real_inputs

    if input_shape is None:
        with open_runner(path, target) as runner:
            input_shape = tuple(runner.input_shape)
    inputs = real_inputs((1, *input_shape[1:]), 1)
    return with_macs(node_times(path, target, inputs, threads=threads), profile_layers)
