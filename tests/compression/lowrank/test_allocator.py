"""The budget allocator on a network built so the right answer is known."""
import pytest
import torch
from torch import nn

from medexport.compression import LowRankConfig, get_pass
from medexport.compression._layers import discover
from medexport.compression.lowrank.allocator import allocate_budget
from medexport.compression.lowrank.decompositions import SVD
from medexport.errors import InputError


def _net() -> nn.Sequential:
    """stem, a conv of exact rank 8, a full-rank random conv of the same size, head."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1),
                        nn.Conv2d(64, 64, 3, padding=1), nn.Conv2d(64, 2, 1))
    low = torch.randn(64, 8) @ torch.randn(8, 64 * 9)
    net[1].weight.data = (low / low.norm() * net[2].weight.norm()).reshape(64, 64, 3, 3)
    return net.eval()


def test_the_low_rank_layer_is_cut_first_and_losslessly():
    shape = (1, 1, 16, 16)
    small, record = get_pass("svd").apply(_net(), shape, LowRankConfig(budget=1.8))
    by_name = {layer.name: layer for layer in record.layers}
    assert by_name["1"].ranks == (8,) and by_name["1"].weight_error < 1e-6
    assert abs(record.ratio / 1.8 - 1) <= 0.05
    assert set(record.skipped) == {"0", "3"} and record.skipped["0"] == "first layer"


def test_least_energy_lost_beats_a_uniform_rank_at_the_same_macs():
    shape = (1, 1, 16, 16)
    net = _net()
    _, greedy = get_pass("svd").apply(net, shape, LowRankConfig(budget=2.5))
    _, uniform = get_pass("svd").apply(net, shape, LowRankConfig(rank_ratio=0.1))
    assert uniform.macs_after <= greedy.macs_after * 1.1  # comparable budgets
    lost = [sum(layer.weight_error**2 for layer in r.layers) for r in (greedy, uniform)]
    assert lost[0] < 0.7 * lost[1]


def test_layers_that_do_not_pay_are_never_offered():
    shape = (1, 1, 16, 16)
    layers = discover(_net(), shape)
    decomps = {"3": SVD(layers[3])}  # 64 -> 2 pointwise head: no rank is cheaper
    with pytest.raises(InputError, match="out of reach"):
        allocate_budget(decomps, sum(layer.macs for layer in layers), 2.0, 8, 0.05)


@pytest.mark.parametrize("method", ["svd", "tucker"])
def test_a_3x_budget_on_the_2d_reference_model_is_found_in_under_a_minute(method):
    import time

    from medexport.zoo import get_model

    ref = get_model("brain-tissue-unet2d")
    model = ref.build()
    start = time.perf_counter()
    _, record = get_pass(method).apply(model, ref.input_shape, LowRankConfig(budget=3))
    assert time.perf_counter() - start < 60  # measured 1-4 s on the shared 2-core machine
    assert abs(record.ratio / 3 - 1) <= 0.05


@pytest.mark.parametrize("method, budget", [("svd", 3), ("tucker", 3), ("tucker", 6)])
def test_a_weights_budget_divides_the_parameter_count(method, budget):
    """--budget-metric params: the whole model's parameters (biases and norms included) / budget, within 5%."""
    from medexport.zoo import get_model

    ref = get_model("brain-tissue-unet2d")
    model = ref.build()
    small, record = get_pass(method).apply(model, ref.input_shape, LowRankConfig(budget=budget, budget_metric="params"))
    assert record.params_before == sum(p.numel() for p in model.parameters())
    assert record.params_after == sum(p.numel() for p in small.parameters())
    assert abs(record.params_ratio / budget - 1) <= 0.05
    assert record.ratio < record.params_ratio   # the big low-resolution layers hold most weights, fewer MACs


def _weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if getattr(m, "weight", None) is not None)


@pytest.mark.parametrize("net, shape, cases", [
    (_net(), (1, 1, 16, 16), [("svd", (8,)), ("tucker", (16, 24)), ("tucker", (64, 24)), ("spatial-svd", (12,)),
                              ("hsc", (8,))]),
    (nn.Sequential(nn.Conv3d(1, 32, 3, padding=1), nn.ConvTranspose3d(32, 48, 3, stride=2, padding=1,
                                                                      output_padding=1), nn.Conv3d(48, 2, 1)),
     (1, 1, 6, 6, 6), [("svd", (8,)), ("tucker", (16, 32)), ("hsc", (4,))]),
    (nn.Sequential(nn.Linear(16, 48), nn.Linear(48, 40), nn.Linear(40, 4)), (1, 10, 16), [("svd", (8,))]),
])
def test_every_chain_counts_its_weights_as_its_macs_at_one_position(net, shape, cases):
    """Option.params (what the weights budget reads) equals the emitted chain's real weight count, for convs,
    a transposed 3D conv, HSC's grouped chain and a Linear on (batch, tokens, channels)."""
    import numpy as np

    from medexport.compression.lowrank.decompositions import SpatialSVD, Tucker2
    from medexport.compression.lowrank.hsc import HSC

    layer = discover(net.eval(), shape)[1]
    assert layer.params == layer.module.weight.numel()
    for method, ranks in cases:
        d = {"svd": lambda: SVD(layer), "tucker": lambda: Tucker2(layer), "spatial-svd": lambda: SpatialSVD(layer),
             "hsc": lambda: HSC(layer, np.arange(layer.in_channels), 4)}[method]()
        assert d.params(ranks) == _weights(d.build(ranks)), (method, ranks)


def test_a_weights_budget_never_makes_a_layer_dearer_in_macs():
    """Tucker-2 on a strided conv runs its first 1x1 at the input resolution: ranks that save weights can cost more
    MACs there, and a weights budget must not pick them."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 64, 3, padding=1), nn.Conv3d(64, 64, 3, stride=2, padding=1),
                        nn.Conv3d(64, 64, 3, padding=1), nn.Conv3d(64, 2, 1)).eval()
    _, record = get_pass("tucker").apply(net, (1, 1, 8, 8, 8), LowRankConfig(budget=1.3, budget_metric="params"))
    assert record.layers and all(layer.macs_after < layer.macs_before for layer in record.layers)
    assert abs(record.params_ratio / 1.3 - 1) <= 0.05
