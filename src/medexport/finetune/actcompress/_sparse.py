"""Top-k sparse storage of a coefficient tensor: the k = floor(N / ratio) largest magnitudes (the paper's Sec. 3.2)
kept as values plus flat indices (COO with one linearised coordinate: int32 where the tensor has fewer than 2^31
elements, else int64), everything else dropped. ``nbytes`` is what the two stored tensors' storages really hold.

    packed = TopK.of(y, ratio=10.0); y_l = packed.dense()
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

SAMPLE = 16384   # values sampled to guess the top-k threshold


def kept(numel: int, ratio: float) -> int:
    """k = floor(N / ratio), at least one value."""
    return max(1, int(numel // ratio))


def top_indices(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest of ``magnitude`` (1-D), exactly as ``torch.topk`` picks them, but faster on big
    tensors: a threshold read off a strided sample of 16k values keeps a candidate set a little above k (one
    comparison pass), and topk runs on the candidates only. Where the candidates fall short of k, or k is more than
    1/8 of the values (where this gains nothing), plain topk."""
    n = magnitude.numel()
    if n <= 16 * SAMPLE or 8 * k > n:
        return torch.topk(magnitude, k, sorted=False).indices
    sample = magnitude[:: n // SAMPLE]
    rank = max(1, min(sample.numel(), round(sample.numel() * (1 - 1.5 * k / n))))   # 1.5x the share kept
    candidates = torch.nonzero(magnitude >= torch.kthvalue(sample, rank).values).squeeze(1)
    if candidates.numel() < k:
        return torch.topk(magnitude, k, sorted=False).indices
    return candidates[torch.topk(magnitude[candidates], k, sorted=False).indices]


@dataclass
class TopK:
    values: torch.Tensor
    indices: torch.Tensor
    shape: tuple[int, ...]

    @classmethod
    def of(cls, y: torch.Tensor, ratio: float) -> "TopK":
        flat = y.reshape(-1)
        k = kept(flat.numel(), ratio)
        indices = torch.arange(flat.numel(), device=y.device) if k >= flat.numel() else top_indices(flat.abs(), k)
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
