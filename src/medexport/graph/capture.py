"""Capture a PyTorch model as a shape-annotated torch.fx graph.

Why torch.fx first: ``symbolic_trace`` keeps ``nn.Conv*``/``nn.Linear`` as ``call_module`` nodes, so
compression passes can rewrite layers in place and the result is still an ordinary ``nn.Module`` that
exports to ONNX. It fails on Python control flow that depends on input shapes (MONAI's BasicUNet, for one);
then we trace again with a tracer that runs the example beside the proxies (``_concrete``: the graph
is valid for that input shape), and only if that fails fall back to ``torch.export``, whose ATen-level graph always traces but is harder to rewrite.
Both graphs carry output shapes on every node, which the profiler reads.
"""
from __future__ import annotations

import contextlib
import io

from dataclasses import dataclass
from typing import TYPE_CHECKING

from medexport.errors import InputError, ModelLoadError

if TYPE_CHECKING:
    import torch


@dataclass
class CapturedGraph:
    """A traced ``GraphModule`` plus how it was obtained and the example input it was shaped with."""

    module: "torch.fx.GraphModule"
    method: str  # "fx" | "export"
    input_shape: tuple[int, ...]

    def node_shape(self, node: "torch.fx.Node") -> tuple[int, ...] | None:
        """Output shape recorded for ``node`` (None when it is not a single tensor)."""
        meta = node.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape"):
            return tuple(int(s) for s in meta.shape)
        val = node.meta.get("val")
        if val is not None and hasattr(val, "shape"):
            return tuple(int(s) for s in val.shape)
        return None

    def node_dtype_size(self, node: "torch.fx.Node") -> int:
        meta = node.meta.get("tensor_meta")
        dtype = getattr(meta, "dtype", None) or getattr(node.meta.get("val"), "dtype", None)
        return dtype.itemsize if dtype is not None else 4


def check_runs(model: "torch.nn.Module", input_shape: tuple[int, ...]) -> None:
    """One forward pass on zeros of ``input_shape``; a one-line InputError if the model does not run on it."""
    import torch

    try:
        with torch.no_grad():
            model(torch.zeros(*input_shape))
    except Exception as exc:  # noqa: BLE001 - user model code
        raise InputError(
            f"the model does not run on an input of shape {'x'.join(map(str, input_shape))}: "
            f"{(str(exc).splitlines() or [type(exc).__name__])[0][:200]}"
        ) from exc


def capture(model: "torch.nn.Module", input_shape: tuple[int, ...]) -> CapturedGraph:
    """Trace ``model`` on a zero tensor of ``input_shape``; torch.fx first, torch.export if fx fails."""
    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    example = torch.zeros(*input_shape)
    model = model.eval()
    check_runs(model, input_shape)
    if isinstance(model, torch.fx.GraphModule) and _has_shapes(model):
        return CapturedGraph(model, "export" if _is_aten(model) else "fx", tuple(input_shape))
    try:
        # fx prints the failing node's traceback to stderr before raising; we fall back quietly.
        with contextlib.redirect_stderr(io.StringIO()):
            gm = torch.fx.symbolic_trace(model)
            with torch.no_grad():
                ShapeProp(gm).propagate(example)
        return CapturedGraph(gm, "fx", tuple(input_shape))
    except Exception:  # noqa: BLE001 - any fx failure means "try fx on concrete shapes"
        pass
    try:  # shape-dependent Python branches (BasicUNet's UpCat): record the branch this input shape takes
        from medexport.graph._concrete import concrete_trace

        with contextlib.redirect_stderr(io.StringIO()):
            gm = concrete_trace(model, example)
            with torch.no_grad():
                ShapeProp(gm).propagate(example)
        return CapturedGraph(gm, "fx", tuple(input_shape))
    except Exception:  # noqa: BLE001 - then torch.export
        pass
    try:
        with torch.no_grad():
            gm = torch.export.export(model, (example,)).module()
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"cannot trace the model with torch.fx or torch.export at input shape "
            f"{'x'.join(map(str, input_shape))}: {str(exc).splitlines()[0][:200]}"
        ) from exc
    return CapturedGraph(gm, "export", tuple(input_shape))


def _has_shapes(gm: "torch.fx.GraphModule") -> bool:
    return any("val" in n.meta or "tensor_meta" in n.meta for n in gm.graph.nodes if n.op == "call_function")


def _is_aten(gm: "torch.fx.GraphModule") -> bool:
    return any(str(n.target).startswith("aten.") for n in gm.graph.nodes if n.op == "call_function")
