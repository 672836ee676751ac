"""Per-layer MACs (from :mod:`medexport.graph.profile`) beside per-layer measured time (from the runtime's
profiler): where the time goes against where the arithmetic is.

Measured nodes carry ONNX names; torch's exporter names a node by its module scope
(``/model/model.1/submodule/conv/conv.0/Conv`` for module ``model.1.submodule.conv.0``), so a node's scope,
folded back into the dotted module path, finds the profiled layer. Nodes a runtime fused or renamed past
recognition keep ``macs`` None rather than a guess.
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
    return out


def _does_macs(op_type: str | None) -> bool:
    return any(word in (op_type or "") for word in ("Conv", "MatMul", "Gemm", "FullyConnected"))


def measured_layers(path, target: str, *, input_shape: tuple[int, ...] | None, threads: int | None,
                    profile_layers: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Per-node times of ``path`` on one real image from the runtime's profiler, joined with MACs; None when this
    medexport has no per-node profiling (``medexport.bench.node_times``). ``input_shape``: the input when the
    artifact's is dynamic beyond the batch."""
    try:
        from medexport.bench.node_times import node_times
    except ImportError:
        return None
    from medexport.runtimes import open_runner
    from medexport.zoo.samples import real_inputs

    if input_shape is None:
        with open_runner(path, target) as runner:
            input_shape = tuple(runner.input_shape)
    inputs = real_inputs((1, *input_shape[1:]), 1)
    return with_macs(node_times(path, target, inputs, threads=threads), profile_layers)
