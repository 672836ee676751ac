"""The entry point: ``with compressed_activations(model, spec, example): loss = f(model(x)); loss.backward()``.

Inside the block every forward pass of ``model`` saves the activations of the layers ``spec`` selects in compressed
form and the backward pass rebuilds them; ``ctx.ledger`` holds the bytes the last forward left saved for backward.
With ``spec`` None nothing is compressed and the ledger measures the uncompressed baseline.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from medexport.finetune.actcompress._hooks import Packer
from medexport.finetune.actcompress._select import select_layers
from medexport.finetune.actcompress.spec import ActCompressSpec


@contextmanager
def compressed_activations(model: nn.Module, spec: ActCompressSpec | None,
                           example: torch.Tensor) -> Iterator[Packer]:
    """Compress the saved activations of ``spec``'s layers of ``model`` (chosen with one probing forward pass on
    ``example``, e.g. one input image) for every forward pass inside the block."""
    layers = select_layers(model, example, spec.blocks, spec.types) if spec is not None else []
    packer = Packer(model, layers, spec.method if spec else "threshold", spec.ratio if spec else 1.0)
    handles = packer.hooks(model)
    try:
        with torch.autograd.graph.saved_tensors_hooks(packer.pack, packer.unpack):
            yield packer
    finally:
        for handle in handles:
            handle.remove()
