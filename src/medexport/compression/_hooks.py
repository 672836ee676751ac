"""Run a model on calibration images and hand each watched layer's input to a callback.

The one forward-hook loop behind every statistic the compression passes take from activations
(channel importance, merge samples, hybrid-filter patches, HSC co-activation): hooks are always removed,
and images go through in batches so a 3D network's activations never all sit in memory at once. Example::

    def visit(module, x):          # x: the module's first input, detached
        sums[id(module)] = sums.get(id(module), 0) + x.sum()
    each_input(model, [conv_a, conv_b], images, visit, batch_size=4)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn


def each_input(model: "nn.Module", modules: Iterable["nn.Module"], images: np.ndarray,
               visit: Callable[["nn.Module", "torch.Tensor"], None], batch_size: int | None = None) -> None:
    """Call ``visit(module, input)`` for every module in ``modules`` on every batch of ``images``.

    ``batch_size=None`` runs all images in one forward pass (callers that sample fixed positions per call).
    """
    import torch

    unique = {id(m): m for m in modules}
    handles = [m.register_forward_pre_hook(lambda module, inputs: visit(module, inputs[0].detach()))
               for m in unique.values()]
    step = len(images) if batch_size is None else max(1, batch_size)
    try:
        with torch.no_grad():
            for start in range(0, len(images), max(step, 1)):
                model(torch.from_numpy(np.ascontiguousarray(images[start:start + step], np.float32)))
    finally:
        for handle in handles:
            handle.remove()
