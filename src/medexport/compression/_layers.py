"""Find the layers a low-rank pass may rewrite, with their input/output shapes, and swap them in place.

Shapes come from one forward pass with hooks on every Linear/Conv/ConvTranspose, which works on any
``nn.Module`` (MONAI networks that torch.fx cannot trace included) and gives the same qualified names
as the ``call_module`` targets of a torch.fx capture. Calls are seen in execution order, so the first
layer (reads the input) and the head (last layer run) are known. A module called twice is shared and
is never rewritten: one replacement would change both uses.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

    from medexport.compression.lowrank.config import LowRankConfig


@dataclass
class LayerInfo:
    """A Linear/Conv/ConvTranspose as it ran once at the example input shape."""

    name: str
    module: "nn.Module"
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    order: int

    @property
    def kind(self) -> str:
        return type(self.module).__name__

    @property
    def transposed(self) -> bool:
        from torch import nn

        return isinstance(self.module, nn.modules.conv._ConvTransposeNd)

    @property
    def out_channels(self) -> int:
        return self.std_weight().shape[0]

    @property
    def in_channels(self) -> int:
        return self.std_weight().shape[1]

    @property
    def kernel(self) -> tuple[int, ...]:
        return tuple(self.std_weight().shape[2:])

    @property
    def n_in(self) -> int:
        """Input positions (batch x spatial, or batch x leading dims for Linear)."""
        return math.prod(self.in_shape) // self.in_channels

    @property
    def n_out(self) -> int:
        """Output positions."""
        return math.prod(self.out_shape) // self.out_channels

    @property
    def macs(self) -> int:
        """MACs with medexport.graph.profile's conventions (a transposed conv counts input elements)."""
        kvol = math.prod(self.kernel)
        positions = self.n_in if self.transposed else self.n_out
        return positions * self.out_channels * self.in_channels * kvol

    @property
    def params(self) -> int:
        """Weights (bias aside): the MACs of one output position."""
        return self.at_one_position().macs

    def at_one_position(self) -> "LayerInfo":
        """This layer seen at one input and one output position, where any chain's MACs equal its weight count."""
        import dataclasses

        ones = (1,) * (len(self.in_shape) - 2)   # channel counts from the weight: Linear on (B, T, C) too
        return dataclasses.replace(self, in_shape=(1, self.in_channels, *ones), out_shape=(1, self.out_channels, *ones))

    def std_weight(self) -> "torch.Tensor":
        """The weight as (out, in, *kernel) whatever the layer type (a transposed conv stores (in, out, ...))."""
        w = self.module.weight.detach()
        return w.transpose(0, 1) if self.transposed else w


def discover(model: "nn.Module", input_shape: tuple[int, ...]) -> list[LayerInfo]:
    """Every Linear/Conv/ConvTranspose that runs at ``input_shape``, in call order, with its shapes."""
    import torch
    from torch import nn

    kinds = (nn.Linear, nn.modules.conv._ConvNd)
    seen: dict[str, LayerInfo] = {}
    calls: dict[str, int] = {}
    handles = []

    def hook(name: str):
        def record(module, inputs, output):
            calls[name] = calls.get(name, 0) + 1
            if name not in seen and torch.is_tensor(inputs[0]) and torch.is_tensor(output):
                seen[name] = LayerInfo(name, module, tuple(inputs[0].shape), tuple(output.shape), len(seen))
        return record

    for name, module in model.named_modules():
        if isinstance(module, kinds):
            handles.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(*input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return [info for name, info in seen.items() if calls[name] == 1]


def excluded(layers: list[LayerInfo], config: "LowRankConfig") -> dict[str, str]:
    """Names the config keeps out of the pass, each with the reason (for the record)."""
    reasons: dict[str, str] = {}
    ordered = sorted(layers, key=lambda layer: layer.order)
    if config.keep_first and ordered:
        reasons[ordered[0].name] = "first layer"
    if config.keep_head and ordered:
        reasons[ordered[-1].name] = "head"
    for layer in ordered:
        if layer.kind in config.exclude_types:
            reasons.setdefault(layer.name, f"excluded type {layer.kind}")
        elif any(fnmatch.fnmatchcase(layer.name, pattern) for pattern in config.exclude):
            reasons.setdefault(layer.name, "excluded by name")
    return reasons


def replace(model: "nn.Module", name: str, new: "nn.Module") -> None:
    """Put ``new`` where the submodule ``name`` is (setattr on its parent)."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)
