"""One layer at a time: exact rewiring at full rank, MACs formulas against the profiler, error formulas."""
import math

import pytest
import torch
from torch import nn

from medexport.compression import LowRankConfig, get_pass
from medexport.compression._layers import discover
from medexport.compression.base import model_macs
from medexport.compression.lowrank.decompositions import SVD, SpatialSVD, Tucker2, energy_rank, rank_grid, round_rank

FULL = LowRankConfig(rank_ratio=1.0, only_if_smaller=False, keep_first=False, keep_head=False, round_to=1)

LAYERS = {
    "conv2d": (lambda: nn.Conv2d(6, 10, 3, stride=2, padding=1), (2, 6, 13, 11)),
    "conv2d-rect-dilated": (lambda: nn.Conv2d(5, 7, (3, 5), padding=(2, 1), dilation=(2, 1), bias=False),
                            (1, 5, 12, 9)),
    "conv3d": (lambda: nn.Conv3d(4, 6, 3, padding=1), (1, 4, 7, 6, 5)),
    "convT2d": (lambda: nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1), (1, 6, 5, 7)),
    "convT3d": (lambda: nn.ConvTranspose3d(6, 4, 2, stride=2), (1, 6, 3, 4, 5)),
    "conv1x1": (lambda: nn.Conv2d(12, 8, 1), (1, 12, 6, 6)),
    "linear": (lambda: nn.Linear(20, 9), (3, 20)),
}
SUPPORTS = {"svd": set(LAYERS), "spatial-svd": {"conv2d", "conv2d-rect-dilated"},
            "tucker": {"conv2d", "conv2d-rect-dilated", "conv3d", "convT2d", "convT3d"}}


def _net(key: str) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    factory, shape = LAYERS[key]
    return nn.Sequential(factory()).eval(), shape


@pytest.mark.parametrize("method", sorted(SUPPORTS))
@pytest.mark.parametrize("key", sorted(LAYERS))
def test_full_rank_is_exact_and_macs_match_the_profiler(method, key):
    net, shape = _net(key)
    x = torch.randn(*shape)
    small, record = get_pass(method).apply(net, shape, FULL)
    if key not in SUPPORTS[method]:
        assert not record.layers and "0" in record.skipped
        return
    (layer,) = record.layers
    assert layer.ranks and layer.weight_error < 1e-6
    with torch.no_grad():
        assert (small(x) - net(x)).abs().max().item() < 1e-4
    # the analytic MACs the allocator uses are the profiler's MACs of the emitted chain
    assert record.macs_after == layer.macs_after
    assert record.macs_before == layer.macs_before
    assert isinstance(small[0], nn.Sequential) and isinstance(net[0], (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d,
                                                                       nn.ConvTranspose3d, nn.Linear))


@pytest.mark.parametrize("cls,key,ranks", [(SVD, "conv2d", (4,)), (SVD, "convT3d", (3,)), (SVD, "linear", (5,)),
                                            (SpatialSVD, "conv2d", (7,)), (Tucker2, "conv3d", (3, 2)),
                                            (Tucker2, "convT2d", (2, 5))])
def test_error_formula_matches_the_weight_of_the_built_chain(cls, key, ranks):
    net, shape = _net(key)
    (layer,) = discover(net, shape)
    d = cls(layer)
    w = layer.std_weight().double()
    chain = d.build(ranks)
    w_hat = _composed_weight(chain, layer)
    actual = float(((w - w_hat) ** 2).sum() / (w**2).sum())
    assert 0.0 < d.error2(ranks) < 1.0
    assert d.error2(ranks) == pytest.approx(actual, rel=1e-6, abs=1e-10)


def _composed_weight(chain: nn.Sequential, layer) -> torch.Tensor:
    """The (out, in, *kernel) weight a chain applies, read back from its layers."""
    std = [m.weight.detach().double() for m in chain]
    std = [w.transpose(0, 1) if isinstance(m, nn.modules.conv._ConvTransposeNd) else w for m, w in zip(chain, std)]
    if len(chain) == 3:  # tucker: 1x1, core, 1x1
        u_in, core, u_out = (s.reshape(s.shape[0], s.shape[1], -1) for s in std)
        w = torch.einsum("ab...,oa,bi->oi...", core, u_out[..., 0], u_in[..., 0])
        return w.reshape(layer.std_weight().shape)
    first, last = std
    if math.prod(first.shape[2:]) == 1 and math.prod(last.shape[2:]) > 1:  # one-sided tucker: 1x1, then core
        return torch.einsum("ob...,bi->oi...", last, first.reshape(first.shape[0], -1))
    if first.shape[2:] != last.shape[2:] and first.dim() == 4 and last.shape[-1] > 1:  # spatial: kh x 1, 1 x kw
        return torch.einsum("rih,orw->oihw", first[..., 0], last[:, :, 0])
    return (last.reshape(last.shape[0], -1) @ first.reshape(first.shape[0], -1)).reshape(layer.std_weight().shape)


@pytest.mark.parametrize("key,ranks,kinds", [("convT2d", (4, 3), ("Conv2d", "ConvTranspose2d")),
                                             ("conv2d", (4, 6), ("Conv2d", "Conv2d")),
                                             ("conv3d", (6, 2), ("Conv3d", "Conv3d"))])
def test_tucker_rank_equal_to_the_channels_folds_that_sides_1x1_into_the_core(key, ranks, kinds):
    net, shape = _net(key)
    (layer,) = discover(net, shape)
    d = Tucker2(layer)
    chain = d.build(ranks)
    assert tuple(type(m).__name__ for m in chain) == kinds
    w = layer.std_weight().double()
    actual = float(((w - _composed_weight(chain, layer)) ** 2).sum() / (w**2).sum())
    assert d.error2(ranks) == pytest.approx(actual, rel=1e-6, abs=1e-10)
    assert d.macs(ranks) < layer.macs
    assert d.macs(ranks) == model_macs(chain, shape)  # the profiler's MACs of the emitted chain


def test_rank_grid_and_rounding():
    assert rank_grid(64, 8) == [8, 16, 24, 32, 40, 48, 56, 64]
    assert rank_grid(20, 8) == list(range(1, 21))  # too small to round
    assert rank_grid(70, 8)[-2:] == [64, 70]
    assert round_rank(17.2, 64, 8) == 24 and round_rank(17.2, 20, 8) == 18 and round_rank(0.1, 64, 8) == 8
    assert round_rank(63.5, 70, 8) == 64 and round_rank(69, 70, 8) == 70


def test_energy_rank():
    s = torch.tensor([3.0, 2.0, 1.0, 0.5]) ** 2  # energies 9, 4, 1, 0.25 of 14.25
    assert energy_rank(s, 9 / 14.25) == 1
    assert energy_rank(s, 0.9) == 2
    assert energy_rank(s, 1.0) == 4


def test_tucker_ratio_ranks_follow_channels_and_energy_ranks_per_mode():
    torch.manual_seed(0)
    base = torch.randn(16, 2, 3, 3)
    weight = torch.einsum("oa,aikl->oikl", torch.randn(32, 16), base)  # output mode of rank 16
    conv = nn.Conv2d(2, 32, 3)
    conv.weight.data = weight.float()
    net = nn.Sequential(conv)
    (layer,) = discover(net, (1, 2, 8, 8))
    d = Tucker2(layer)
    assert d.full_ranks() == (min(32, 18), 2)
    assert d.ratio_ranks(0.5, 1) == (16, 1)
    assert d.energy_ranks(1.0)[0] == 16  # exact low rank is found by the mode-0 HOSVD
    assert d.error2((16, 2)) < 1e-10


def test_macs_of_a_transposed_svd_count_input_positions():
    net, shape = _net("convT2d")
    (layer,) = discover(net, shape)
    assert layer.macs == math.prod(shape) * 4 * 9


def test_evbmf_finds_the_planted_rank_under_noise():
    from medexport.compression.lowrank.vbmf import evbmf_rank

    g = torch.Generator().manual_seed(0)
    for rank, noise in [(8, 0.01), (8, 0.3), (20, 0.05)]:
        signal = torch.randn(64, rank, generator=g) @ torch.randn(rank, 576, generator=g) / 8
        noisy = signal + noise * torch.randn(64, 576, generator=g)
        assert evbmf_rank(noisy) == evbmf_rank(noisy.T) == rank
    assert evbmf_rank(torch.randn(64, 576, generator=g)) <= 2  # pure noise: (almost) nothing to keep


def test_vbmf_rule_gives_tucker_ranks_below_full_on_a_trained_network():
    from medexport.compression import LowRankConfig, get_pass
    from medexport.zoo import get_model

    ref = get_model("brain-tissue-unet2d")
    small, record = get_pass("tucker").apply(ref.build(), ref.input_shape, LowRankConfig(vbmf=True))
    assert record.layers and record.ratio > 1.2
    assert all(1 <= r for layer in record.layers for r in layer.ranks)
    assert record.config["vbmf"] is True
