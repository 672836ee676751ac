"""Which layers compress their saved activations: by type (conv, bn, relu) and by block, as the paper's "block0",
"block0-1".

A convolutional block is a conv layer with the layers that follow it up to the next conv, in the order the model
registers its layers (MONAI's Convolution: conv + norm + dropout + act). Blocks are numbered by resolution level:
block0 holds the blocks that touch the largest feature maps (input or output), block1 the next size, and so on. In a
U-Net that puts the encoder and the decoder of one level in the same block, which is how the paper's U-Net blocks
behave (block0 holds most of the activation memory: -71% of it at lambda 100 there); in a plain encoder it is the
n-th stage. The sizes come from one probing forward pass on an example input.

    modules = select_layers(model, example, blocks=(0, 1), types=("conv", "bn", "relu"))
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


def conv_blocks(model: nn.Module) -> list[list[nn.Module]]:
    """The model's leaf layers split at each conv layer (leaves before the first conv belong to no block)."""
    blocks: list[list[nn.Module]] = []
    for module in model.modules():
        if next(module.children(), None) is not None:
            continue
        if isinstance(module, LAYER_TYPES["conv"]):
            blocks.append([module])
        elif blocks:
            blocks[-1].append(module)
    return blocks


def block_levels(model: nn.Module, example: torch.Tensor) -> list[tuple[int, list[nn.Module]]]:
    """(resolution level, layers) for every conv block: level 0 touches the largest feature maps."""
    sizes: dict[nn.Module, int] = {}

    def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        tensors = [t for t in (*args, output) if isinstance(t, torch.Tensor) and t.ndim > 2]
        sizes[module] = max([sizes.get(module, 0)] + [math.prod(t.shape[2:]) for t in tensors])

    blocks = conv_blocks(model)
    handles = [m.register_forward_hook(record) for block in blocks for m in block]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    block_size = [max(sizes.get(m, 0) for m in block) for block in blocks]
    ranks = {size: rank for rank, size in enumerate(sorted(set(block_size), reverse=True))}
    return [(ranks[size], block) for size, block in zip(block_size, blocks)]


def select_layers(model: nn.Module, example: torch.Tensor, blocks: tuple[int, ...],
                  types: tuple[str, ...]) -> list[nn.Module]:
    """The layers of ``types`` in the conv blocks at resolution levels ``blocks``."""
    levels = block_levels(model, example)
    deepest = max((level for level, _ in levels), default=-1)
    if not levels or max(blocks) > deepest:
        raise InputError(f"--act-layers block{max(blocks)}: this model has conv blocks 0-{deepest} "
                         "(numbered by resolution level)" if levels else "--act-layers: this model has no conv layers")
    wanted = tuple(cls for t in types for cls in LAYER_TYPES[t])
    return [m for level, block in levels if level in blocks for m in block if isinstance(m, wanted)]
