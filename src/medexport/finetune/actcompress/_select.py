"""Which layers compress their saved activations: by type (conv, bn, relu) and by block, as the paper's "block0",
"block0-1".

Blocks are resolution levels: block0 holds the conv, BN and ReLU layers whose input (the activation each saves for
backward) is a feature map of the largest spatial size, block1 those of the next size, and so on (a layer that reads
the model's input itself goes to block0; that input is the caller's and is never compressed). In a U-Net that puts
the encoder and the decoder of one level together, as the paper's U-Net blocks behave (there block0 holds most of
the activation memory: eta -71% at lambda 100); in an encoder it is the n-th stage. The sizes come from one probing
forward pass on an example input.

    layers = select_layers(model, example, blocks=(0, 1), types=("conv", "bn", "relu"))
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn

from medexport.errors import InputError

LAYER_TYPES: dict[str, tuple[type[nn.Module], ...]] = {
    "conv": (nn.modules.conv._ConvNd,),
    "bn": (nn.modules.batchnorm._BatchNorm,),
    "relu": (nn.ReLU, nn.LeakyReLU),
}


def parse_blocks(text: str) -> tuple[int, ...]:
    """``"block0"`` -> (0,); ``"block0-1"`` -> (0, 1); ``"block0,block2"`` -> (0, 2)."""
    blocks: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*block(\d+)(?:\s*-\s*(?:block)?(\d+))?\s*", part)
        if not match:
            raise InputError(f"--act-layers takes blocks such as block0, block0-1 or block0,block2; got {text!r}")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise InputError(f"--act-layers block range {part.strip()!r} runs backwards")
        blocks.extend(range(first, last + 1))
    return tuple(sorted(set(blocks)))


def parse_types(text: str) -> tuple[str, ...]:
    types = tuple(sorted({t.strip().lower() for t in text.split(",") if t.strip()}))
    unknown = [t for t in types if t not in LAYER_TYPES]
    if unknown or not types:
        raise InputError(f"--act-types takes a comma-separated subset of {', '.join(LAYER_TYPES)}; got {text!r}")
    return types


def layer_levels(model: nn.Module, example: torch.Tensor) -> list[tuple[int, nn.Module]]:
    """(resolution level, layer) for every conv, BN and ReLU layer the forward pass runs, in registration order."""
    kinds = tuple(cls for classes in LAYER_TYPES.values() for cls in classes)
    layers = [m for m in model.modules() if isinstance(m, kinds)]
    sizes: dict[nn.Module, int | None] = {}

    def record(module: nn.Module, args: tuple) -> None:
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        sizes[module] = None if x is None or x is example or x.ndim < 3 else math.prod(x.shape[2:])

    handles = [m.register_forward_pre_hook(record) for m in layers]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    ranks = {size: rank for rank, size in enumerate(sorted({s for s in sizes.values() if s}, reverse=True))}
    return [(ranks.get(sizes[m], 0), m) for m in layers if m in sizes]


def select_layers(model: nn.Module, example: torch.Tensor, blocks: tuple[int, ...],
                  types: tuple[str, ...]) -> list[nn.Module]:
    """The layers of ``types`` at resolution levels ``blocks``."""
    levels = layer_levels(model, example)
    deepest = max((level for level, _ in levels), default=-1)
    if not levels or max(blocks) > deepest:
        raise InputError(f"--act-layers block{max(blocks)}: this model has blocks 0-{deepest} (numbered by "
                         "resolution level)" if levels else "--act-layers: this model has no conv, BN or ReLU layers")
    wanted = tuple(cls for t in types for cls in LAYER_TYPES[t])
    return [m for level, m in levels if level in blocks and isinstance(m, wanted)]
