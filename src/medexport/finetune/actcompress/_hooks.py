"""The mechanism: saved-tensor hooks that store the chosen layers' activations compressed and rebuild them in the
backward pass (the paper's Figure 2: transform, top-k, sparse; dense, inverse transform), and a ledger of what the
forward pass left saved for backward.

One ``torch.autograd.graph.saved_tensors_hooks`` pair is active around the whole forward; forward pre/post hooks on
the selected layers mark when a chosen layer is saving. Every tensor autograd saves passes through ``pack``: the
activations a chosen layer saves are compressed (never its weights, and never the model's input, which the caller
holds anyway), everything else is kept as it is; a tensor two chosen layers save (a ReLU's output, the next conv's
input) is compressed once and shared. The layer's backward formula then runs unchanged on the
reconstruction X_l, so all its gradients (weights and input) are those of X_l, as in the paper. Where the sparse form
would take more bytes than the dense tensor (lambda < 2 with 4-byte values and indices) the dense reconstruction is
stored instead: the paper's own remedy (its Sec. 6.2), same gradients, no overhead.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from medexport.finetune.actcompress._sparse import TopK, kept
from medexport.finetune.actcompress._transforms import TRANSFORMS


@dataclass
class Ledger:
    """Bytes saved for backward by the last forward pass: dense storages once each (autograd often saves one tensor
    for two layers), compressed ones as the bytes of their values and indices. Parameters, buffers and the model's
    inputs existed before the forward and are not counted."""

    dense: dict[int, int] = field(default_factory=dict)
    compressed_bytes: int = 0
    compressed_tensors: int = 0
    kept_values: int = 0

    def reset(self) -> None:
        self.dense.clear()
        self.compressed_bytes = self.compressed_tensors = self.kept_values = 0

    @property
    def total(self) -> int:
        return sum(self.dense.values()) + self.compressed_bytes


@dataclass
class _Packed:
    """A compressed saved tensor: top-k coefficients, or (where that is no smaller) the dense reconstruction."""

    sparse: TopK | None
    dense: torch.Tensor | None
    dtype: torch.dtype
    uses: int = 1                          # saved-tensor slots sharing it; the rebuilt tensor is kept until the last
    rebuilt: torch.Tensor | None = None    # has unpacked it (backward), then dropped

    @property
    def nbytes(self) -> int:
        return self.sparse.nbytes if self.sparse is not None else self.dense.untyped_storage().nbytes()


class Packer:
    """``pack``/``unpack`` for saved-tensor hooks; compresses while one of ``layers`` is in its forward."""

    def __init__(self, model: nn.Module, layers: list[nn.Module], method: str, ratio: float) -> None:
        self.transform, self.ratio, self.layers = TRANSFORMS[method], ratio, layers
        self.ledger = Ledger()
        self.active: list[nn.Module] = []
        self.before: set[int] = set()
        self.done: dict[int, tuple[weakref.ref, _Packed]] = {}
        self.frozen = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}

    def start(self, inputs: tuple[Any, ...]) -> None:
        """A new forward pass of the model: forget the last one's ledger, note its inputs."""
        self.ledger.reset()
        self.active.clear()
        self.done.clear()
        self.before = self.frozen | {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor)}

    def pack(self, t: torch.Tensor) -> Any:
        ptr = t.untyped_storage().data_ptr()
        if ptr in self.before:
            return t
        # lambda 1 keeps every coefficient, so X_l is X: kept as is, not as a transform round trip, whose float
        # round-off (1e-7) would flip a ReLU's ``output > 0`` test where the output is exactly 0
        if self.active and t.is_floating_point() and t.ndim > 2 and kept(t.numel(), self.ratio) < t.numel():
            ref, packed = self.done.get(ptr, (None, None))
            same = ref is not None and ref() is not None and ref()._version == t._version and ref().shape == t.shape
            if same:   # a ReLU's output is also the next conv's input: compressed and stored once
                packed.uses += 1
                return packed
            packed = self._compress(t.detach())
            self.done[ptr] = (weakref.ref(t), packed)
            self.ledger.compressed_bytes += packed.nbytes
            self.ledger.compressed_tensors += 1
            self.ledger.kept_values += packed.sparse.values.numel() if packed.sparse is not None else t.numel()
            return packed
        self.ledger.dense[ptr] = t.untyped_storage().nbytes()
        return t

    def unpack(self, packed: Any) -> torch.Tensor:
        if not isinstance(packed, _Packed):
            return packed
        if packed.dense is not None:
            return packed.dense
        rebuilt = packed.rebuilt
        if rebuilt is None:
            rebuilt = self.transform.inverse(packed.sparse.dense()).to(packed.dtype)
        packed.uses -= 1
        packed.rebuilt = rebuilt if packed.uses > 0 else None
        return rebuilt

    def _compress(self, t: torch.Tensor) -> _Packed:
        coeffs = self.transform.forward(t.float() if t.dtype in (torch.float16, torch.bfloat16) else t)
        sparse = TopK.of(coeffs, self.ratio)
        if sparse.nbytes < t.numel() * t.element_size():
            return _Packed(sparse, None, t.dtype)
        return _Packed(None, self.transform.inverse(sparse.dense()).to(t.dtype), t.dtype)

    def hooks(self, model: nn.Module) -> list:
        """Register the forward hooks that tell ``pack`` when a chosen layer is saving; returns their handles."""
        def enter(layer: nn.Module, _args: tuple) -> None:
            self.active.append(layer)

        def leave(_layer: nn.Module, _args: tuple, _output: Any) -> None:   # returns None: the output is kept
            self.active.pop()

        handles = [model.register_forward_pre_hook(lambda _model, args: self.start(args))]
        for layer in self.layers:
            handles += [layer.register_forward_pre_hook(enter), layer.register_forward_hook(leave)]
        return handles
