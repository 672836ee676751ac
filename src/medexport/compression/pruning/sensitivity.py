"""What narrowing one group alone does to the model's output on calibration images: the latency knapsack's value.

The latency mode (:mod:`.latency_mode`) chooses a width per group; what it keeps must say what each width costs
the *output*, comparably across groups. Summed, group-normalised channel scores do not: normalised, every
channel is worth about one, and the knapsack then keeps the cheapest channels whatever they carry (the 2D
reference U-Net lost a class outright that way). So, as in the sensitivity analysis of Distiller and AMC,
each candidate width of each group is applied alone by the pass's own step (its criterion picks the channels)
to a copy of the model, and the copy's output on the calibration images is compared with the model's:

    distortion = mean over classes c of the mean KL(p || q) over the positions the model assigns to c

(p, q: the model's and the copy's class probabilities, softmax over the channel axis, sigmoid for one channel;
positions: pixels or voxels of a segmentation, images of a classifier). Averaging per class first keeps a small
structure as heavy as the background. Distortions of different groups are summed (a first-order, additive
model; the schedule's steps re-measure on the narrowed model). Example::

    distortion = Sensitivity(images).of(model)
    distortion(narrowed_copy)   # 0.0 for an identical output
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch
    from torch import nn

IMAGES = 8  # calibration images a width is judged on (evenly spaced over those given)
BATCH = 4


class Sensitivity:
    """Output distortion of narrowed copies of a model against the model, on up to ``IMAGES`` calibration images."""

    def __init__(self, images: np.ndarray) -> None:
        picks = np.linspace(0, len(images) - 1, min(IMAGES, len(images))).round().astype(int)
        self.images = np.ascontiguousarray(np.asarray(images)[np.unique(picks)], np.float32)

    def of(self, model: "nn.Module") -> "Callable[[nn.Module], float]":
        """The distortion of a narrowed copy against ``model`` as it is now: class-balanced mean KL divergence
        of the copy's class probabilities from ``model``'s (0: the same output)."""
        import torch

        p = self._probabilities(model)
        label = p.argmax(1)
        log_p = torch.log(p.clamp_min(1e-12))
        present = [label == c for c in range(p.shape[1]) if bool((label == c).any())]

        def distortion(narrowed: "nn.Module") -> float:
            kl = (p * (log_p - torch.log(self._probabilities(narrowed).clamp_min(1e-12)))).sum(1)
            return float(torch.stack([kl[mask].mean() for mask in present]).mean())

        return distortion

    def _probabilities(self, model: "nn.Module") -> "torch.Tensor":
        """Class probabilities, channel axis 1 (a one-channel output becomes background/foreground)."""
        import torch

        from medexport._outputs import prediction

        was_training = model.training
        model.eval()
        outs = []
        with torch.no_grad():
            for start in range(0, len(self.images), BATCH):
                out = prediction(model(torch.from_numpy(self.images[start:start + BATCH]))).double()
                out = out if out.dim() > 1 else out[:, None]
                if out.shape[1] == 1:
                    s = torch.sigmoid(out)
                    outs.append(torch.cat([1 - s, s], 1))
                else:
                    outs.append(torch.softmax(out, 1))
        model.train(was_training)
        return torch.cat(outs)
