"""A model's return value as the flat, named list of tensors its ONNX export has; the first is the prediction.

Networks return a tensor, a tuple or list (MONAI's SegResNetVAE returns ``(logits, None)`` in eval mode), or a
dict. Export, the torch runner and the pruning guard rails all read outputs through here, so torch and every
backend agree on the order: depth first, tuples and lists in order, dicts in insertion order, ``None`` dropped.
The first tensor is *the prediction*: the output that parity, validation and quantization judge (the ONNX
runners read output 0). Names: the key path joined by ``.`` when a dict is on the path, else ``output`` for
the first tensor and ``output_<i>`` for the i-th. Example::

    [(o.name, o.source) for o in flatten_outputs({"seg": s, "aux": (a, None)})]
    # [("seg", "out['seg']"), ("aux.0", "out['aux'][0]")]
    prediction((x, None))  # x
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medexport.errors import ExportError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class FlatOutput:
    """One tensor of a model's return value: its export name, where it sits (``out[1]['seg']``) and the value."""

    name: str
    source: str
    value: "torch.Tensor"


def flatten_outputs(out: Any) -> list[FlatOutput]:
    """The tensors of ``out`` in export order, ``None`` dropped; ExportError for any other kind of value."""
    found: list[tuple[tuple, bool, Any]] = []  # (path, a dict is on the path, tensor)
    _walk(out, (), False, found)
    if not found:
        raise ExportError("the model returns no tensor (only None or empty containers)")
    names: list[str] = []
    for index, (path, keyed, _) in enumerate(found):
        name = ".".join(str(p) for p in path) if keyed else ("output" if index == 0 else f"output_{index}")
        names.append(name if name not in names else f"{name}_{index}")
    return [FlatOutput(name, "out" + "".join(f"[{p!r}]" for p in path), value)
            for name, (path, _, value) in zip(names, found)]


def prediction(out: Any) -> "torch.Tensor":
    """The first tensor of ``out`` (``out`` itself when it is one): what the pipeline judges."""
    import torch

    return out if isinstance(out, torch.Tensor) else flatten_outputs(out)[0].value


def flat_module(model: "torch.nn.Module") -> "torch.nn.Module":
    """``model`` returning the tuple of its flattened tensors (what torch.onnx.export is given)."""
    from torch import nn

    class Flat(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.model = inner

        def forward(self, x):
            return tuple(o.value for o in flatten_outputs(self.model(x)))

    return Flat(model).eval()


def _walk(value: Any, path: tuple, keyed: bool, found: list) -> None:
    import torch

    if value is None:
        return
    if isinstance(value, torch.Tensor):
        found.append((path, keyed, value))
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            _walk(item, (*path, i), keyed, found)
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(item, (*path, key), True, found)
    else:
        where = "out" + "".join(f"[{p!r}]" for p in path)
        raise ExportError(f"model output {where} is a {type(value).__name__}; medexport exports tensors, "
                          "tuples, lists and dicts of them (None is dropped)")
