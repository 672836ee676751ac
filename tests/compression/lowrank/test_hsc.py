"""HSC on the AlexNet-style reference classifier: exact at full rank with the channel order folded away,
co-activation clusters, budgets met, dense ONNX, and a clear error without calibration images."""
import numpy as np
import pytest
import torch

from medexport.compression import get_pass
from medexport.compression.lowrank._coactivation import balanced_clusters
from medexport.compression.lowrank.hsc import HSCConfig
from medexport.errors import InputError

NAME = "brain-region-alexnet"


@pytest.fixture(scope="module")
def alexnet():
    from medexport.zoo import get_model

    ref = get_model(NAME)
    return ref.build(), tuple(ref.input_shape), ref.calibration(), ref.heldout()[0][:16]


def test_full_rank_hsc_is_exact_and_folds_the_channel_order_into_the_producer(alexnet):
    model, shape, calib, images = alexnet
    config = HSCConfig(rank_ratio=1.0, only_if_smaller=False, round_to=1, calibration=calib)
    small, record = get_pass("hsc").apply(model, shape, config)
    x = torch.from_numpy(images)
    with torch.no_grad():
        assert (small(x) - model(x)).abs().max().item() < 1e-4
    first = small.features[2][0][0]  # the grouped conv of the second conv layer
    assert isinstance(first, torch.nn.Conv2d) and first.groups == 4
    # the producer (first conv + its BatchNorm) now emits the clustered order: its weights were permuted
    assert not torch.equal(small.features[0][0].weight, model.features[0][0].weight)
    assert torch.equal(small.features[0][0].weight.sort(0).values, model.features[0][0].weight.sort(0).values)


@pytest.mark.parametrize("budget", [3, 6])
def test_budget_is_met_and_the_onnx_is_dense(alexnet, tmp_path, budget):
    from medexport.exporter import check_onnx, export_onnx
    from medexport.runtimes.onnxruntime.runner import Runner

    model, shape, calib, images = alexnet
    small, record = get_pass("hsc").apply(model, shape, HSCConfig(budget=budget, calibration=calib))
    assert abs(record.ratio / budget - 1) <= 0.05
    export_onnx(small, shape, tmp_path / "m.onnx")
    ops = {n.op_type for n in check_onnx(tmp_path / "m.onnx").graph.node}
    assert "Conv" in ops and not ops & {"Gather", "Transpose", "GatherElements"}
    with Runner(tmp_path / "m.onnx") as runner, torch.no_grad():
        np.testing.assert_allclose(runner.infer(images), small(torch.from_numpy(images)).numpy(), atol=1e-4)


def test_hsc_keeps_more_accuracy_than_global_svd_at_3x(alexnet):
    from medexport.compression import LowRankConfig
    from medexport.zoo import get_model

    model, shape, calib, _ = alexnet
    images, labels = get_model(NAME).heldout()

    def accuracy(m):
        with torch.no_grad():
            return float((m(torch.from_numpy(images)).argmax(1).numpy() == labels).mean())

    hsc, _ = get_pass("hsc").apply(model, shape, HSCConfig(budget=3, calibration=calib))
    svd, _ = get_pass("svd").apply(model, shape, LowRankConfig(budget=3))
    assert accuracy(hsc) > accuracy(svd) + 0.1  # measured 0.50 vs 0.27 (post-training, no fine-tuning)


def test_clusters_are_equal_and_group_channels_that_fire_together():
    rng = np.random.default_rng(0)
    patterns = rng.random((4, 40))  # four co-activation patterns over 40 region x image cells
    members = rng.permutation(np.repeat(np.arange(4), 6))  # 24 channels, 6 per pattern, shuffled
    descriptor = patterns[members] * rng.uniform(0.5, 2.0, (24, 1)) + 0.01 * rng.random((24, 40))
    order = balanced_clusters(descriptor, groups=4)
    assert sorted(order.tolist()) == list(range(24))
    for cluster in order.reshape(4, 6):
        assert len(set(members[cluster])) == 1


def test_hsc_without_calibration_images_is_a_clear_error(alexnet):
    model, shape, _, _ = alexnet
    with pytest.raises(InputError, match="calibration images"):
        get_pass("hsc").apply(model, shape, HSCConfig(budget=3))


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 6])
def test_cluster_rank_step_keeps_the_total_width_on_the_rounding_grid(groups):
    """clusters x r must be a multiple of round_to (groups=3 with round_to=8 used to give r steps of 2: width 6)."""
    from medexport.compression._layers import discover
    from medexport.compression.lowrank.hsc import HSC

    net = torch.nn.Sequential(torch.nn.Conv2d(48, 64, 3, padding=1)).eval()
    layer = discover(net, (1, 48, 8, 8))[0]
    d = HSC(layer, np.arange(48), groups)
    for round_to in (1, 4, 8, 16):
        step = d.step(round_to)
        assert (groups * step) % round_to == 0
        assert step == min(s for s in range(1, round_to + 1) if (groups * s) % round_to == 0)  # the finest such step
