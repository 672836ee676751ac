"""Channel co-activation on calibration images, and balanced channel clusters from it (HSC's analysis step).

Each layer's input feature map is split into a grid of spatial regions (``regions`` per axis); a
channel's descriptor is its mean activation in every region of every calibration image. Channels
whose descriptors correlate fire together in the same places: k-means on the standardised
descriptors (Euclidean distance there is a monotone function of correlation) groups them, and a
capacity-bounded assignment makes the clusters equal in size, which a grouped convolution needs.
Example::

    desc = region_descriptors(model, layers, images, regions=2)   # {name: (C, N * 4)}
    order = balanced_clusters(desc["features.2.0"], groups=4)       # channel indices, cluster by cluster
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from medexport.compression._layers import LayerInfo


def region_descriptors(model: "nn.Module", layers: list["LayerInfo"], images: np.ndarray, regions: int,
                       batch: int = 4) -> dict[str, np.ndarray]:
    """(channels, images x regions) mean input activation of each layer in ``layers``, in one pass over ``images``."""
    import torch.nn.functional as F

    from medexport.compression._hooks import each_input

    parts: dict[str, list[np.ndarray]] = {layer.name: [] for layer in layers}
    names: dict[int, list[str]] = {}
    for layer in layers:
        names.setdefault(id(layer.module), []).append(layer.name)

    def visit(module, x):
        x = x.float()
        pool = F.adaptive_avg_pool3d if x.dim() == 5 else F.adaptive_avg_pool2d
        pooled = pool(x, regions)  # (B, C, regions, regions[, regions])
        descriptor = pooled.flatten(2).permute(1, 0, 2).reshape(x.shape[1], -1).double().numpy()
        for name in names[id(module)]:
            parts[name].append(descriptor)

    each_input(model, [layer.module for layer in layers], images, visit, batch)
    return {name: np.concatenate(chunks, axis=1) for name, chunks in parts.items() if chunks}


def balanced_clusters(descriptor: np.ndarray, groups: int, seed: int = 0) -> np.ndarray:
    """A channel order listing ``groups`` equal clusters of co-activating channels one after another.

    Channels with a constant descriptor (dead on the calibration set) correlate with nothing and fill
    the clusters last.
    """
    from scipy.cluster.vq import kmeans2

    channels = descriptor.shape[0]
    if groups <= 1:
        return np.arange(channels)
    centred = descriptor - descriptor.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    unit = np.divide(centred, norms, out=np.zeros_like(centred), where=norms > 1e-12)
    centres, _ = kmeans2(unit, groups, minit="++", seed=seed)
    dist = ((unit[:, None, :] - centres[None, :, :]) ** 2).sum(-1)  # (channels, groups)
    capacity, members = channels // groups, [[] for _ in range(groups)]
    assigned = np.zeros(channels, dtype=bool)
    for flat in np.argsort(dist, axis=None, kind="stable"):
        channel, cluster = divmod(int(flat), groups)
        if not assigned[channel] and len(members[cluster]) < capacity:
            members[cluster].append(channel)
            assigned[channel] = True
    return np.array([c for cluster in members for c in sorted(cluster)], dtype=np.int64)
