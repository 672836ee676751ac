"""Activation memory measured the paper's way, and the largest patch that fits a memory cap.

The paper's eta = (M - M_BL) / (M_BL - M_O): the change of memory after the forward pass relative to the baseline's
activation memory alone. Here M and M_BL are the bytes the forward pass leaves saved for backward (counted by the
saved-tensor hooks, compressed tensors as their values + indices, M_O = parameters and inputs excluded from both), so
eta = (M - M_BL) / M_BL. On a GPU the CUDA allocator's growth over the forward pass is reported beside it.

    base = activation_memory(model, x); comp = activation_memory(model, x, spec); eta(comp.saved, base.saved)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medexport.errors import InputError
from medexport.finetune.actcompress.compress import compressed_activations
from medexport.finetune.actcompress.spec import ActCompressSpec


@dataclass(frozen=True)
class ActivationMemory:
    saved: int            # bytes saved for backward by one forward pass (dense + compressed)
    compressed: int       # of which compressed (values + indices)
    tensors: int          # saved tensors compressed
    layers: int           # layers selected
    cuda: int | None      # growth of torch.cuda.memory_allocated over the forward (None on CPU)


def activation_memory(model: nn.Module, x: torch.Tensor, spec: ActCompressSpec | None = None) -> ActivationMemory:
    """One training-mode forward pass of ``model`` on ``x`` with ``spec``'s compression (None: baseline)."""
    was_training = model.training
    model.train()
    try:
        with compressed_activations(model, spec, x[:1]) as packer:
            cuda = x.is_cuda
            if cuda:
                torch.cuda.synchronize(x.device)
                before = torch.cuda.memory_allocated(x.device)
            out = model(x)
            grown = torch.cuda.memory_allocated(x.device) - before if cuda else None
            del out
    finally:
        model.train(was_training)
    ledger = packer.ledger
    return ActivationMemory(ledger.total, ledger.compressed_bytes, ledger.compressed_tensors, len(packer.layers),
                            grown)


def eta(memory: int, baseline: int) -> float:
    """The paper's eta in percent: -100 means the compressed activations take no memory."""
    return 100.0 * (memory - baseline) / baseline


def parse_bytes(text: str) -> int:
    """``8GiB``, ``512MiB``, ``2GB``, ``1e9`` -> bytes."""
    units = {"kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "b": 1}
    t = text.strip().lower()
    for unit, scale in units.items():
        if t.endswith(unit):
            t, factor = t[: -len(unit)], scale
            break
    else:
        factor = 1
    try:
        value = float(t) * factor
    except ValueError:
        raise InputError(f"--max-memory takes a size such as 8GiB or 512MiB; got {text!r}") from None
    if value <= 0:
        raise InputError(f"--max-memory must be positive; got {text!r}")
    return int(value)


@dataclass(frozen=True)
class PatchFit:
    patch: tuple[int, ...] | None    # the largest candidate that fits (None: none does)
    saved: int | None                # its activation bytes per batch
    tried: tuple[tuple[tuple[int, ...], int], ...]   # (patch, activation bytes) of every candidate measured


def fit_patch(model: nn.Module, channels: int, batch: int, candidates: list[tuple[int, ...]], cap: int,
              spec: ActCompressSpec | None = None) -> PatchFit:
    """The largest of ``candidates`` (patch sizes, tried largest first) whose activation memory for a batch of
    ``batch`` under ``spec`` fits in ``cap`` bytes; measured with a forward pass on zeros (the bytes of dense and
    top-k storage do not depend on the values)."""
    tried = []
    for patch in sorted(candidates, key=lambda p: -torch.Size(p).numel()):
        x = torch.zeros((batch, channels, *patch), device=next(model.parameters()).device)
        saved = activation_memory(model, x, spec).saved
        tried.append((tuple(patch), saved))
        if saved <= cap:
            return PatchFit(tuple(patch), saved, tuple(tried))
    return PatchFit(None, None, tuple(tried))
