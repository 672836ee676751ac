"""BatchNorm adaptation after pruning: statistics re-estimated on calibration images, nothing else changed, and kept
only where they bring the output closer to the original's."""
import copy

import numpy as np
import torch
from torch import nn

from medexport.compression.pruning.batchnorm import adapt_batchnorm, adapt_if_closer


def test_adapted_statistics_are_those_of_the_calibration_images_and_nothing_else_changes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.ReLU()).eval()
    images = np.random.default_rng(0).normal(3.0, 2.0, (16, 1, 8, 8)).astype(np.float32)
    weights = copy.deepcopy(model.state_dict())
    assert adapt_batchnorm(model, images) == 1
    with torch.no_grad():
        feats = model[0](torch.from_numpy(images))
    norm = model[1]
    # two batches of 8: the cumulative average of the batch means and (unbiased) batch variances
    means = torch.stack([feats[:8].mean((0, 2, 3)), feats[8:].mean((0, 2, 3))])
    variances = torch.stack([feats[:8].var((0, 2, 3)), feats[8:].var((0, 2, 3))])
    assert torch.allclose(norm.running_mean, means.mean(0), atol=1e-5)
    assert torch.allclose(norm.running_var, variances.mean(0), atol=1e-4)
    assert norm.momentum == 0.1 and not model.training and not norm.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items()
               if not k.startswith("1.running") and k != "1.num_batches_tracked")


def test_a_model_without_batchnorm_is_left_as_it_is():
    model = nn.Sequential(nn.Conv3d(1, 4, 3), nn.GroupNorm(2, 4)).eval()
    before = copy.deepcopy(model.state_dict())
    assert adapt_batchnorm(model, np.zeros((2, 1, 6, 6, 6), np.float32)) == 0
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def _net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 2, 1)).eval()
    model[1].running_mean.uniform_(-1.0, 1.0)  # the statistics the original was trained with
    return model


IMAGES = np.random.default_rng(1).normal(5.0, 3.0, (8, 1, 12, 12)).astype(np.float32)


def _gap(reference: nn.Module):
    """Mean squared difference of a model's output from ``reference``'s on IMAGES (lower: closer)."""
    with torch.no_grad():
        target = reference(torch.from_numpy(IMAGES))
        return lambda model: float(((model(torch.from_numpy(IMAGES)) - target) ** 2).mean())


def test_re_estimated_statistics_are_kept_only_where_they_bring_the_output_closer():
    original = _net()
    stale = copy.deepcopy(original)
    assert adapt_if_closer(stale, IMAGES, _gap(original))[1] is False  # the statistics it had are the reference's
    assert all(torch.equal(stale.state_dict()[k], v) for k, v in original.state_dict().items())
    adapted_reference = copy.deepcopy(original)
    adapt_batchnorm(adapted_reference, IMAGES)
    closer = copy.deepcopy(original)
    assert adapt_if_closer(closer, IMAGES, _gap(adapted_reference))[1] is True
    assert torch.allclose(closer[1].running_mean, adapted_reference[1].running_mean)
    assert adapt_if_closer(nn.Sequential(nn.Conv2d(1, 2, 1)), IMAGES, _gap(original))[1] is None


def test_latency_mode_steps_settle_their_statistics_and_the_ratio_mode_does_not():
    """A latency-mode step's result goes through the planner's ``settle`` (re-estimated statistics where they keep
    the output closer); a ratio-mode step keeps the original's statistics of the kept channels."""
    from medexport.compression import get_pass
    from medexport.compression.pruning import PruneConfig
    from medexport.compression.pruning.schedule import _try

    model = _net()
    prune, shape = get_pass("prune-l2"), (1, 1, 12, 12)
    latency = PruneConfig(latency=0.5, calibration=IMAGES, backend="onnxruntime")
    ratio = PruneConfig(ratio=0.5, calibration=IMAGES)
    settled = []

    def settle(narrowed):
        settled.append(adapt_batchnorm(narrowed, IMAGES))
        return narrowed

    adapted = _try(prune, model, shape, latency, {"0": 8}, None, "step 1", [], settle)[0]
    kept = _try(prune, model, shape, ratio, {"0": 8}, None, "step 1", [])[0]
    assert settled == [1]
    with torch.no_grad():
        feats = adapted[0](torch.from_numpy(IMAGES))
    assert torch.allclose(adapted[1].running_mean, feats.mean((0, 2, 3)), atol=1e-4)
    assert set(kept[1].running_mean.tolist()) <= set(model[1].running_mean.tolist())
    assert latency.to_dict()["adapt_bn"] is True and "adapt_bn" not in ratio.to_dict()
