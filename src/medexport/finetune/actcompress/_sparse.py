"""Top-k sparse storage of a coefficient tensor: the k = floor(N / ratio) largest magnitudes (the paper's Sec. 3.2)
kept as values plus flat indices (COO with one linearised coordinate: int32 where the tensor has fewer than 2^31
elements, else int64), everything else dropped. ``nbytes`` is what the two stored tensors' storages really hold.

    packed = TopK.of(y, ratio=10.0); y_l = packed.dense()
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def kept(numel: int, ratio: float) -> int:
    """k = floor(N / ratio), at least one value."""
    return max(1, int(numel // ratio))


@dataclass
class TopK:
    values: torch.Tensor
    indices: torch.Tensor
    shape: tuple[int, ...]

    @classmethod
    def of(cls, y: torch.Tensor, ratio: float) -> "TopK":
        flat = y.reshape(-1)
        k = kept(flat.numel(), ratio)
        if k >= flat.numel():
            indices = torch.arange(flat.numel(), device=y.device)
        else:
            indices = torch.topk(flat.abs(), k, sorted=False).indices
        index_dtype = torch.int32 if flat.numel() < 2 ** 31 else torch.int64
        # fresh tensors of exactly k elements: nothing here keeps the dense tensor's storage alive
        return cls(flat[indices].clone(), indices.to(index_dtype), tuple(y.shape))

    def dense(self) -> torch.Tensor:
        out = torch.zeros(self.shape, dtype=self.values.dtype, device=self.values.device)
        out.view(-1)[self.indices.long()] = self.values
        return out

    @property
    def nbytes(self) -> int:
        return self.values.untyped_storage().nbytes() + self.indices.untyped_storage().nbytes()
