"""Fold a new input-channel order of a layer into the layer that produces its input: no runtime permute.

A torch.fx trace finds, for a conv, the chain that feeds it: channel-wise modules (BatchNorm,
activations including a single-slope PReLU, pooling, dropout) back to a producing conv, every node
with this single user. Permuting
the producer's output channels and the BatchNorm statistics on the chain then delivers the input in
the new order, and the exported ONNX has no Gather or Transpose for it. A layer fed by a shared
tensor (a U-Net skip, a residual add, a concat) has no such chain and keeps its channel order.
Example::

    chains = producer_chains(model, ["features.2.0"])
    fold_order(model, chains["features.2.0"], order)   # before: model(x); after: same output, permuted input
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class Chain:
    """The conv producing a layer's input and the BatchNorms between them (qualified module names)."""

    producer: str
    norms: tuple[str, ...]


def _channelwise_types() -> tuple[type, ...]:
    from torch import nn

    return (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid,
            nn.Tanh, nn.Hardswish, nn.Identity, nn.modules.dropout._DropoutNd, nn.modules.pooling._MaxPoolNd,
            nn.modules.pooling._AvgPoolNd)


def producer_chains(model: "nn.Module", names: list[str]) -> dict[str, Chain | None]:
    """For each layer name, the chain whose producer can absorb a permutation of its input (None: none can)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - untraceable models keep their channel order
        return dict.fromkeys(names)
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pointwise_fns = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, torch.sigmoid, torch.tanh,
                     F.dropout}
    channelwise = _channelwise_types()
    by_target = {node.target: node for node in graph.nodes if node.op == "call_module"}
    chains: dict[str, Chain | None] = {}
    for name in names:
        node, norms, chain = by_target.get(name), [], None
        x = node.args[0] if node is not None and node.args else None
        while isinstance(x, torch.fx.Node) and len(x.users) == 1:
            if x.op == "call_module":
                module = model.get_submodule(x.target)
                stateful = any(True for _ in module.parameters()) or any(True for _ in module.buffers())
                if stateful and calls[x.target] > 1:  # permuting a shared BatchNorm would change its other use
                    break
                if isinstance(module, nn.modules.conv._ConvNd) and module.groups == 1:
                    chain = Chain(x.target, tuple(norms))
                    break
                shared_prelu = isinstance(module, nn.PReLU) and module.num_parameters == 1
                if not (isinstance(module, channelwise) or shared_prelu):
                    break
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    norms.append(x.target)
            elif not (x.op == "call_function" and x.target in pointwise_fns):
                break
            x = x.args[0] if x.args else None
        chains[name] = chain
    return chains


def fold_order(model: "nn.Module", chain: Chain, order: "torch.Tensor") -> None:
    """Make ``chain.producer`` (or the last layer it was rewritten into) emit channels in ``order``."""
    import torch

    with torch.no_grad():
        _permute_outputs(model.get_submodule(chain.producer), order)
        for name in chain.norms:
            norm = model.get_submodule(name)
            for tensor in (norm.weight, norm.bias, norm.running_mean, norm.running_var):
                if tensor is not None:
                    tensor.copy_(tensor[order])


def _permute_outputs(module: "nn.Module", order: "torch.Tensor") -> None:
    from torch import nn

    if isinstance(module, nn.Sequential):  # a factorized producer: its last layer emits the channels
        _permute_outputs(module[-1], order)
        return
    transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
    module.weight.copy_(module.weight[:, order] if transposed else module.weight[order])
    if module.bias is not None:
        module.bias.copy_(module.bias[order])
