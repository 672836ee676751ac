"""Structured pruning: dependency groups proven exact on real networks, narrower layers, ordinary ONNX.

THE test of the groups: zero every channel a pass removes (filters, biases and norm affine terms, so
each such channel is exactly zero everywhere it flows), then narrow the layers as the pass's plan says.
If a group missed a coupled layer (a residual operand, a skip at the wrong offset, a norm), the narrowed
network's output differs from the zeroed original's. Every registered pruning pass (``list_passes(
family="pruning")``, filter merging included) is held to it, to its export, and to its layer widths.
"""
import copy
import importlib

import numpy as np
import pytest
import torch
from torch import nn

from medexport.compression import get_pass, list_passes
from medexport.compression.pruning import PruneConfig, apply_plan, plan
from medexport.compression.pruning import importance
from medexport.errors import InputError
from tests.compression.conftest import build_net, pass_config

EXTRA = {  # networks beyond tests/_nets.py: residual units in 3D, and attention gates
    "unet3d-res2": ("monai.networks.nets:UNet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                                                "channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 2},
                    (1, 1, 16, 16, 16)),
    "attentionunet": ("monai.networks.nets:AttentionUnet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 2,
                                                           "channels": [8, 16, 32], "strides": [2, 2]},
                      (1, 1, 32, 32)),
    # up-transitions concatenate a transposed conv with the skip and add the block back onto both (16^3: its minimum)
    "vnet3d": ("monai.networks.nets:VNet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}, (1, 1, 16, 16, 16)),
    # torch.fx cannot trace it (its channel pad): captured with torch.export
    "highresnet": ("monai.networks.nets:HighResNet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 2},
                   (1, 1, 16, 16)),
}
NETS = ("unet2d", "unet3d", "unet3d-res2", "dynunet", "segresnet", "attentionunet", "densenet121", "resnet2d", "basicunet",
        "brain-tissue-unet2d", "brain-region-alexnet", "vnet3d", "highresnet")
HALF = PruneConfig(ratio=0.5)
PRUNING = list_passes(family="pruning")
# The groups are proven on every network with one pass; every pass (its own choice of channels and weight
# surgery) on a small 2D U-Net with concatenated skips and attention gates, so a newly registered pass is
# tested without multiplying the slowest cases.
GROUPS_PASS = "prune-l2"
EVERY_PASS_NETS = ("attentionunet",)
SLOW_NETS = ("vnet3d", "highresnet")  # 45M parameters in 3D; three torch.export captures per prune
CASES = [pytest.param(key, method, marks=[pytest.mark.slow] if key in SLOW_NETS else [])
         for key in NETS for method in PRUNING if method == GROUPS_PASS or key in EVERY_PASS_NETS]


@pytest.fixture(scope="module")
def net():
    """(model, input shape) per key: built once per module, handed out as a copy that the test may change."""
    cache: dict = {}

    def get(key: str):
        if key not in cache:
            if key in EXTRA:
                torch.manual_seed(0)
                factory, kwargs, shape = EXTRA[key]
                module, _, attr = factory.partition(":")
                cache[key] = getattr(importlib.import_module(module), attr)(**kwargs).eval(), shape
            else:
                cache[key] = build_net(key)
        model, shape = cache[key]
        return copy.deepcopy(model), shape

    return get


def _input(shape, batch=1):
    return torch.rand((batch, *shape[1:]), generator=torch.Generator().manual_seed(1))


def _zero_removed(model, chosen) -> None:
    """Make every channel ``chosen`` removes exactly zero: filter rows, biases, and norm affine terms."""
    keep = chosen.keep()
    for member in chosen.graph.members:
        if member.name not in keep or member.role not in keep[member.name] or member.role == "in":
            continue
        module = model.get_submodule(member.name)
        gone = sorted(set(range(len(member.labels))) - set(keep[member.name][member.role]))
        transposed = getattr(module, "transposed", False) and member.role == "out"
        with torch.no_grad():
            if isinstance(module, nn.PReLU):
                continue
            if getattr(module, "weight", None) is not None:
                module.weight[(slice(None), gone) if transposed else gone] = 0.0
            if getattr(module, "bias", None) is not None:
                module.bias[gone] = 0.0


@pytest.fixture(scope="module")
def pruned(net):
    """(model, input shape, pruned model, record) per network and pass at half the channels: pruned once, the
    models handed out as copies."""
    cache: dict = {}

    def get(key: str, method: str):
        if (key, method) not in cache:
            model, shape = net(key)
            cache[key, method] = model, shape, *get_pass(method).apply(model, shape, pass_config(
                method, shape, ratio=0.5, group_norm="groups"))
        model, shape, small, record = cache[key, method]
        return copy.deepcopy(model), shape, copy.deepcopy(small), record

    return get


@pytest.mark.parametrize("key,method", CASES)
def test_removing_zeroed_channels_leaves_the_output_unchanged(pruned, key, method):
    model, shape, small, record = pruned(key, method)
    stepped = copy.deepcopy(model)
    chosen = get_pass(method).step(stepped, shape, pass_config(method, shape, ratio=0.5, group_norm="groups"))
    assert chosen.removed, f"{method} found nothing to prune in {key}"
    assert [(g.name, g.kept) for g in record.layers] == [(g.name, g.kept) for g in chosen.groups]
    assert all(g.kept + g.removed == g.channels and g.macs_after < g.macs_before for g in record.layers)
    assert record.macs_after < 0.7 * record.macs_before
    assert "network output (head)" in record.skipped.values()
    _zero_removed(model, chosen)  # this test's own copy
    narrowed = apply_plan(copy.deepcopy(model), chosen)  # the plan's slicing alone, without the pass's weight surgery
    x = _input(shape, batch=2)
    with torch.no_grad():
        assert torch.equal(small(x), stepped(x))  # a one-step schedule is that step
        expected, actual = model.double()(x.double()), narrowed.double()(x.double())
    assert actual.shape == expected.shape == small(x).shape
    assert (actual - expected).abs().max().item() < 1e-5


@pytest.fixture(scope="module")
def exported(pruned, tmp_path_factory):
    """(onnx path, input batch, torch output of the pruned model) per network and pass, exported once."""
    from medexport.exporter import export_onnx

    cache: dict = {}

    def get(key: str, method: str):
        if (key, method) not in cache:
            model, shape, small, _ = pruned(key, method)
            x = _input(shape, batch=2)
            with torch.no_grad():
                expected = small(x).numpy()
                assert expected.shape == model(x).shape
            path = tmp_path_factory.mktemp(f"{key}-{method}") / "model.pruned.onnx"
            export_onnx(small, shape, path)
            cache[key, method] = path, x.numpy(), expected
        return cache[key, method]

    return get


def _assert_close(actual, expected) -> None:
    assert actual.shape == expected.shape
    assert float(np.abs(actual - expected).max()) / max(float(np.abs(expected).max()), 1.0) < 1e-4


@pytest.mark.parametrize("key,method", CASES)
def test_pruned_onnx_runs_on_onnxruntime(exported, key, method):
    from medexport.runtimes.onnxruntime.runner import Runner

    path, x, expected = exported(key, method)
    with Runner(path) as runner:
        _assert_close(runner.infer(x), expected)


@pytest.mark.openvino
@pytest.mark.parametrize("key,method", CASES)
def test_pruned_onnx_runs_on_openvino(exported, key, method):
    from medexport.runtimes.openvino.runner import Runner

    path, x, expected = exported(key, method)
    with Runner(path) as runner:
        _assert_close(runner.infer(x), expected)


def test_kept_counts_are_rounded_and_the_head_is_protected(pruned):
    _, shape, small, record = pruned("unet2d", GROUPS_PASS)
    kept = {g.channels: g.kept for g in record.layers}
    assert kept == {8: 4, 16: 8, 32: 16, 64: 32}
    assert all(g.kept + g.removed == g.channels and g.macs_after < g.macs_before for g in record.layers)
    assert "network output (head)" in record.skipped.values()
    assert small(_input(shape)).shape[1] == 3  # the number of classes never changes
    assert record.to_dict()["layers"][0]["kept"] > 0


def test_groupnorm_loses_whole_norm_groups(pruned):
    model, _, small, _ = pruned("segresnet", GROUPS_PASS)
    norms = [(m, s) for m, s in zip(model.modules(), small.modules()) if isinstance(m, nn.GroupNorm)]
    assert norms and all(s.num_channels == m.num_channels // 2 and s.num_groups == m.num_groups // 2 for m, s in norms)


def test_groupnorm_loses_single_channels_by_default_and_keeps_its_groups(net, tmp_path):
    """The default ``group_norm="channels"``: every norm keeps its 8 groups with half the channels (the 8-channel
    ones, one per group, stay whole), so its groups' statistics change (the pruned model is not the zeroed
    original, unlike with "groups"); it still computes the same on ONNX Runtime as in torch."""
    from medexport.compression.pruning.mutate import prune_layer
    from medexport.exporter import export_onnx
    from medexport.runtimes.onnxruntime.runner import Runner

    model, shape = net("segresnet")
    small, record = get_pass("prune-l2").apply(model, shape, PruneConfig(ratio=0.5))
    norms = [(m, s) for m, s in zip(model.modules(), small.modules()) if isinstance(m, nn.GroupNorm)]
    assert norms and all(s.num_groups == m.num_groups and s.num_channels == max(8, m.num_channels // 2)
                         for m, s in norms)
    whole, _ = get_pass("prune-l2").apply(model, shape, PruneConfig(ratio=0.5, group_norm="groups"))
    x = _input(shape, batch=2)
    with torch.no_grad():
        assert not torch.allclose(small(x), whole(x), atol=1e-3)
    export_onnx(small, shape, tmp_path / "small.onnx")
    with Runner(tmp_path / "small.onnx") as runner:
        _assert_close(runner.infer(x[:1].numpy()), small(x[:1]).detach().numpy())
    odd = nn.GroupNorm(4, 8)   # 6 of 8 channels, not whole groups: the most groups that divide them
    prune_layer(odd, {"channel": [0, 1, 2, 4, 5, 6]})
    assert (odd.num_groups, odd.num_channels, odd.weight.shape[0]) == (3, 6, 6)
    halves = nn.GroupNorm(4, 8)   # whole groups: the group size stays
    prune_layer(halves, {"channel": [2, 3, 6, 7]})
    assert (halves.num_groups, halves.num_channels) == (2, 4)


class _Residual(nn.Module):
    """conv -> two branches joined by add, a concatenated skip, and a head."""

    def __init__(self, softmax: bool = False) -> None:
        super().__init__()
        self.stem, self.a = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 1)
        self.bn = nn.BatchNorm2d(16)
        self.side = nn.Conv2d(16, 8, 1)
        self.head = nn.Conv2d(24, 2, 1)
        self.softmax = softmax

    def forward(self, x):
        x = self.stem(x)
        y = self.bn(self.a(x) + self.b(x))
        if self.softmax:
            y = torch.softmax(y, dim=1)
        return self.head(torch.cat([y, self.side(x)], dim=1))


def test_residual_operands_share_a_group_and_skips_keep_their_offsets():
    small, record = get_pass("prune-l2").apply(_Residual(), (1, 1, 8, 8), PruneConfig(ratio=0.5, round_to=1))
    groups = {g.name: g for g in record.layers}
    assert {"a", "b", "bn"} <= set(groups["a"].members) and groups["a"].kept == 8
    assert small.a.out_channels == small.b.out_channels == small.bn.num_features == 8
    assert small.head.in_channels == 8 + small.side.out_channels == 12


def test_an_op_it_does_not_understand_locks_its_channels():
    small, record = get_pass("prune-l2").apply(_Residual(softmax=True), (1, 1, 8, 8), PruneConfig(round_to=1))
    assert any("softmax" in reason for reason in record.skipped.values())
    assert small.a.out_channels == 16 and small.side.out_channels == 4


def test_bn_scale_keeps_the_channels_with_the_largest_gamma():
    model = _Residual().eval()
    with torch.no_grad():
        model.bn.weight.copy_(torch.arange(16, dtype=torch.float32))
    small, _ = get_pass("prune-bn").apply(model, (1, 1, 8, 8), PruneConfig(ratio=0.5, round_to=1))
    assert small.bn.weight.tolist() == list(range(8, 16))


def test_exclusions_leave_a_group_whole():
    small, record = get_pass("prune-l1").apply(_Residual(), (1, 1, 8, 8), PruneConfig(round_to=1, exclude=("side",)))
    assert small.side.out_channels == 8 and record.skipped["side"].startswith("excluded by name")


def test_config_is_validated_and_the_passes_are_registered():
    assert {"prune-l1", "prune-l2", "prune-bn"} <= set(list_passes("prune-*"))
    for bad in ({"ratio": 1.0}, {"ratio": -0.1}, {"round_to": 0}, {"min_channels": 0}):
        with pytest.raises(InputError):
            PruneConfig(**bad)
    from medexport.compression import LowRankConfig

    with pytest.raises(InputError, match="PruneConfig"):
        get_pass("prune-l2").apply(_Residual(), (1, 1, 8, 8), LowRankConfig(rank_ratio=0.5))


def test_basicunet_pads_its_skips_at_an_odd_size_and_still_prunes_exactly(net):
    """At 60x60 the 2x max-pools leave odd maps, so BasicUNet's UpCat takes its shape-dependent pad branch:
    the concrete-shape tracer records that branch, and pruning stays exact."""
    from medexport.graph import capture

    model, _ = net("basicunet")
    shape = (1, 1, 60, 60)
    captured = capture(model, shape)
    assert captured.method == "fx"
    pads = [n for n in captured.module.graph.nodes if getattr(n.target, "__name__", "") == "pad"]
    assert any(list(n.args[1]) != [0, 0, 0, 0] for n in pads)  # at least one skip needed padding
    chosen = plan(model, shape, HALF, importance.l1_norm)
    _zero_removed(model, chosen)
    small, _ = get_pass("prune-l1").apply(model, shape, HALF)
    x = _input(shape, batch=2)
    with torch.no_grad():
        assert (small(x) - model(x)).abs().max().item() < 1e-4


@pytest.mark.slow
def test_vnet_keeps_every_layer_at_least_min_channels_wide(pruned):
    """VNet's up-transition puts a transposed conv and the skip in one group; ranked together, the transposed conv
    used to lose every filter (a ConvTranspose3d with zero outputs, reported as a bad input shape)."""
    _, shape, small, record = pruned("vnet3d", GROUPS_PASS)
    widths = {n: m.out_channels for n, m in small.named_modules() if isinstance(m, nn.modules.conv._ConvNd)}
    assert min(widths.values()) >= 2 and widths["out_tr.conv_block.conv"] == 2  # the head: 2 classes
    assert min(w for n, w in widths.items() if not n.startswith("out_tr")) >= 4
    assert widths["up_tr256.up_conv"] == 64  # half of its 128, like the skip it is concatenated with
    assert record.macs_after < 0.45 * record.macs_before


class _UpCat(nn.Module):
    """VNet's pattern in miniature: a transposed conv concatenated with a skip, a conv over both added back."""

    def __init__(self) -> None:
        super().__init__()
        self.skip, self.down = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 2, stride=2)
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.ops, self.head = nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 2, 1)
        with torch.no_grad():
            self.up.weight.mul_(1e-3)  # its filters rank lowest in the group

    def forward(self, x):
        skip = self.skip(x)
        cat = torch.cat([self.up(self.down(skip)), skip], dim=1)
        return self.head(torch.relu(self.ops(cat) + cat))


@pytest.mark.parametrize("method", ["prune-l2", "merge"])
def test_every_producer_of_a_group_keeps_its_share_and_min_channels(method):
    model, shape = _UpCat().eval(), (1, 1, 8, 8)
    small, _ = get_pass(method).apply(model, shape, pass_config(method, shape, round_to=1))
    assert small.up.out_channels == small.skip.out_channels == 4  # half each, though `up` ranks lowest
    assert small.ops.in_channels == 8 and small(_input(shape)).shape == (1, 2, 8, 8)
    deep, _ = get_pass(method).apply(model, shape, pass_config(method, shape, round_to=1, ratio=0.9))
    assert deep.up.out_channels == deep.skip.out_channels == 4  # PruneConfig.min_channels (default 4)
    deeper, _ = get_pass(method).apply(model, shape, pass_config(method, shape, round_to=1, ratio=0.9, min_channels=1))
    assert deeper.up.out_channels == deeper.skip.out_channels == 1


def test_a_pruned_model_that_fails_names_the_layer_not_the_input():
    from medexport.compression.pruning.prune import check_runs

    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Conv2d(8, 4, 1)).eval()
    model[0] = nn.Conv2d(1, 6, 3)  # narrowed without its consumer
    with pytest.raises(InputError, match=r"prune-l2 left layer 1 \(Conv2d\) unable to run: .*--exclude-layer '1'"):
        check_runs(model, (1, 1, 8, 8), "prune-l2")


class _EmptyGuard(nn.Module):
    """Returns early on an empty batch: torch.fx cannot branch on ``numel()``, torch.export can."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn, self.b = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Conv2d(16, 2, 1)

    def forward(self, x):
        if x.numel() == 0:
            return x.new_zeros((0, 2, *x.shape[2:]))
        return self.b(torch.relu(self.bn(self.a(x))))


def test_a_network_only_torch_export_traces_is_pruned_exactly():
    from medexport.graph import capture

    model, shape = _EmptyGuard().eval(), (1, 1, 8, 8)
    assert capture(model, shape).method == "export"
    chosen = plan(model, shape, PruneConfig(round_to=1), importance.l2_norm)
    assert {(m.name, m.role) for m in chosen.graph.members} == {("a", "in"), ("a", "out"), ("bn", "channel"),
                                                               ("b", "in"), ("b", "out")}
    zeroed = copy.deepcopy(model)
    _zero_removed(zeroed, chosen)
    narrowed = apply_plan(copy.deepcopy(zeroed), chosen)
    assert narrowed.a.out_channels == narrowed.bn.num_features == narrowed.b.in_channels == 8
    x = _input(shape, batch=2)
    with torch.no_grad():
        assert (narrowed(x) - zeroed(x)).abs().max().item() < 1e-6
    small, record = get_pass("prune-l2").apply(model, shape, PruneConfig(round_to=1))
    assert small.a.out_channels == 8 and record.layers[0].macs_after < record.layers[0].macs_before


@pytest.mark.slow
def test_a_monai_network_torch_fx_cannot_trace_is_pruned_through_torch_export(pruned):
    from medexport.graph import capture

    model, shape, small, record = pruned("highresnet", GROUPS_PASS)
    assert capture(model, shape).method == "export"
    assert {g.name: g.kept for g in record.layers}["blocks.7.layers.1.conv"] == 32
    assert small.blocks[7].layers[1].conv.out_channels == small.blocks[7].layers[3].conv.in_channels == 32
    assert all(g.macs_after < g.macs_before for g in record.layers)  # layer MACs found under torch.export names
    assert record.skipped["blocks.4.layers.3.conv"] == "pad that changes the channel count"


def test_a_network_with_nothing_to_prune_is_refused_in_one_line():
    """A ViT's channels all run through attention and flattening the analysis locks: refused, not "1.00x"."""
    from monai.networks.nets import ViT

    vit = ViT(1, img_size=(32, 32), patch_size=(8, 8), hidden_size=48, mlp_dim=96, num_layers=1, num_heads=4,
              spatial_dims=2, classification=True, num_classes=2).eval()
    with pytest.raises(InputError, match=r"^prune-l2 cannot prune this model: none of its 2 channel groups may lose "
                                         r"channels \(.*flatten that mixes channels") as caught:
        get_pass("prune-l2").apply(vit, (1, 1, 32, 32), HALF)
    assert "\n" not in str(caught.value)


def test_a_torch_export_program_is_refused_in_one_line():
    program = torch.export.export(_Residual().eval(), (torch.zeros(1, 1, 8, 8),)).module()
    with pytest.raises(InputError, match=r"torch.export program \(.pt2\) keeps none: give the model as pkg.module"):
        get_pass("prune-l2").apply(program, (1, 1, 8, 8), HALF)
