"""Mutation: make one layer narrower in place, per layer type, keeping only the given channel positions.

The table maps a layer type to its pruner; ``keep`` holds one index list per role the layer plays
(``out``: filters, ``in``: input columns, ``channel``: per-channel entries). The result is the same
ordinary layer class with fewer channels. Example::

    prune_layer(conv, {"out": [0, 2, 3], "in": [1, 4]})
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from medexport.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn


def prune_layer(module: "nn.Module", keep: dict[str, list[int]]) -> None:
    """Slice ``module``'s parameters and buffers to the kept positions and update its size attributes."""
    for kind, pruner in _table():
        if isinstance(module, kind):
            pruner(module, keep)
            return
    raise InputError(f"no pruner for layer type {type(module).__name__}")


def _conv(module, keep: dict[str, list[int]]) -> None:
    transposed = getattr(module, "transposed", False)
    if "channel" in keep:  # depthwise: weight (C, 1, ...) in both conv and transposed conv
        idx = keep["channel"]
        module.weight = _param(module.weight, 0, idx)
        module.bias = _param(module.bias, 0, idx)
        module.in_channels = module.out_channels = module.groups = len(idx)
        return
    out_dim, in_dim = (1, 0) if transposed else (0, 1)
    if "out" in keep:
        module.weight = _param(module.weight, out_dim, keep["out"])
        module.bias = _param(module.bias, 0, keep["out"])
        module.out_channels = len(keep["out"])
    if "in" in keep:
        module.weight = _param(module.weight, in_dim, keep["in"])
        module.in_channels = len(keep["in"])


def _linear(module, keep: dict[str, list[int]]) -> None:
    if "out" in keep:
        module.weight = _param(module.weight, 0, keep["out"])
        module.bias = _param(module.bias, 0, keep["out"])
        module.out_features = len(keep["out"])
    if "in" in keep:
        module.weight = _param(module.weight, 1, keep["in"])
        module.in_features = len(keep["in"])


def _norm(module, keep: dict[str, list[int]]) -> None:
    """BatchNorm and InstanceNorm: affine parameters and running statistics, where present."""
    idx = keep["channel"]
    module.weight = _param(module.weight, 0, idx)
    module.bias = _param(module.bias, 0, idx)
    for name in ("running_mean", "running_var"):
        buffer = getattr(module, name, None)
        if buffer is not None:
            setattr(module, name, buffer[idx].clone())
    module.num_features = len(idx)


def _group_norm(module, keep: dict[str, list[int]]) -> None:
    """Whole norm groups removed (``group_norm="groups"``): the group size stays, the kept groups compute as before.
    Single channels removed (``"channels"``): the number of groups stays and the survivors are regrouped in order,
    as many per group (the plan keeps a multiple of it; should it not, the most groups that divide them)."""
    idx = keep["channel"]
    size = module.num_channels // module.num_groups
    kept = set(idx)
    if all(kept.issuperset(range(g * size, g * size + size)) or kept.isdisjoint(range(g * size, g * size + size))
           for g in range(module.num_groups)):
        groups = len(idx) // size
    else:
        groups = max(d for d in range(1, module.num_groups + 1) if len(idx) % d == 0)
    module.weight = _param(module.weight, 0, idx)
    module.bias = _param(module.bias, 0, idx)
    module.num_groups, module.num_channels = groups, len(idx)


def _prelu(module, keep: dict[str, list[int]]) -> None:
    idx = keep["channel"]
    module.weight = _param(module.weight, 0, idx)
    module.num_parameters = len(idx)


def _param(param: "torch.nn.Parameter | None", dim: int, idx: list[int]) -> "torch.nn.Parameter | None":
    import torch

    if param is None:
        return None
    index = torch.tensor(idx, dtype=torch.long, device=param.device)
    return torch.nn.Parameter(param.detach().index_select(dim, index).clone(), requires_grad=param.requires_grad)


def _table() -> list[tuple[type, Callable]]:
    from torch import nn

    return [(nn.modules.conv._ConvNd, _conv), (nn.Linear, _linear),
            (nn.modules.batchnorm._BatchNorm, _norm), (nn.modules.instancenorm._InstanceNorm, _norm),
            (nn.GroupNorm, _group_norm), (nn.PReLU, _prelu)]
