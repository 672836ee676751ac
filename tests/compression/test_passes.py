"""Every registered pass on real networks: exact rewiring at full rank, budgets met, exclusions kept."""
import copy

import pytest
import torch

from medexport.compression import LowRankConfig, chain, get_pass, list_passes, model_macs, parse_budget
from medexport.errors import InputError
from tests.compression.conftest import NETS, pass_config

FULL = dict(rank_ratio=1.0, only_if_smaller=False, keep_first=False, keep_head=False, round_to=1)


def _run(model, shape, x=None):
    with torch.no_grad():
        return model(torch.randn(*shape, generator=torch.Generator().manual_seed(1)) if x is None else x)


@pytest.mark.parametrize("method", list_passes(family="lowrank"))
@pytest.mark.parametrize("net", NETS)
def test_full_rank_factorization_reproduces_the_output(nets, net, method):
    model, shape = nets(net)
    # ResNet's 512-channel layers at full spatial rank (1536 channels in between) would take a minute
    config = pass_config(method, shape, **FULL, exclude=("layer3.*", "layer4.*") if net == "resnet2d" else ())
    small, record = get_pass(method).apply(model, shape, config)
    if net == "unet3d" and method == "spatial-svd":
        assert not record.layers and all("Conv2d" in r for r in record.skipped.values())
        return
    assert len(record.layers) >= 4   # brain-tissue-unet2d has 4 Conv2d (and 3 ConvTranspose2d spatial SVD skips)
    ref, out = _run(model, shape), _run(small, shape)
    assert out.shape == ref.shape
    # float32 round-off grows with the logits (about 25 on the 32-256 channel reference U-Net)
    assert (out - ref).abs().max().item() < 1e-4 + 1e-5 * ref.abs().max().item()
    assert max(layer.weight_error for layer in record.layers) < 1e-5


BUDGETS = [("unet2d", "svd", 3), ("unet2d", "tucker", 3), ("unet2d", "tucker", 6), ("unet3d", "tucker", 3),
           ("dynunet", "spatial-svd", 3), ("dynunet", "spatial-svd", 6), ("dynunet", "svd", 3),
           ("dynunet", "tucker", 6), ("resnet2d", "svd", 6), ("brain-tissue-unet2d", "svd", 3),
           ("brain-tissue-unet2d", "tucker", 3), ("brain-tissue-unet2d", "tucker", 6), ("dynunet", "hsc", 3),
           ("resnet2d", "hsc", 3), ("resnet2d", "hsc", 6), ("unet3d", "hsc", 2)]


@pytest.mark.parametrize("net,method,budget", BUDGETS)
def test_budget_is_met_within_five_percent(nets, net, method, budget):
    model, shape = nets(net)
    small, record = get_pass(method).apply(model, shape, pass_config(method, shape, budget=budget))
    assert abs(record.ratio / budget - 1) <= 0.05, record.ratio
    # the allocator's analytic per-layer MACs add up to the profiler's total of the new model
    saved = sum(layer.macs_before - layer.macs_after for layer in record.layers)
    assert record.macs_before - saved == record.macs_after == model_macs(small, shape)
    assert all(layer.macs_after < layer.macs_before for layer in record.layers)
    big = [layer for layer in record.layers if min(layer.ranks) >= 32]
    assert all(r % 8 == 0 or r == max(layer.ranks) for layer in big for r in layer.ranks)
    assert _run(small, shape).shape == _run(model, shape).shape


def test_budget_out_of_reach_is_a_clear_error(nets):
    model, shape = nets("unet3d")
    with pytest.raises(InputError, match="3x MACs budget is out of reach"):
        get_pass("spatial-svd").apply(model, shape, LowRankConfig(budget=3))


def test_first_layer_and_head_are_kept_by_default_and_exclusions_apply(nets):
    model, shape = nets("resnet2d")
    config = LowRankConfig(rank_ratio=0.25, exclude=("layer4.*",), exclude_types=("Linear",))
    small, record = get_pass("svd").apply(model, shape, config)
    done = {layer.name for layer in record.layers}
    assert record.skipped["conv1"] == "first layer" and record.skipped["fc"] == "head"
    assert not any(name.startswith("layer4.") for name in done) and "layer4.0.conv1" in record.skipped
    assert "layer1.0.conv1" in done and isinstance(small.layer1[0].conv1, torch.nn.Sequential)
    assert type(small.layer4[0].conv1) is torch.nn.Conv2d and type(small.conv1) is torch.nn.Conv2d


def test_apply_leaves_the_input_model_untouched(nets):
    model, shape = nets("unet2d")
    before = copy.deepcopy(model.state_dict())
    get_pass("tucker").apply(model, shape, LowRankConfig(rank_ratio=0.5))
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_passes_chain(nets):
    model, shape = nets("dynunet")
    small, (first, second) = chain(model, shape, [("tucker", LowRankConfig(budget=2)),
                                                  ("svd", LowRankConfig(energy=0.9))])
    assert second.macs_before == first.macs_after
    # the second pass factorizes layers the first one emitted (Tucker cores are "<name>.1")
    emitted = {f"{layer.name}.{i}" for layer in first.layers for i in range(3)}
    assert any(layer.name in emitted for layer in second.layers)
    assert second.macs_after < first.macs_after
    assert _run(small, shape).shape == _run(model, shape).shape


@pytest.mark.parametrize("kwargs,match", [({}, "exactly one"), ({"budget": 3, "energy": 0.9}, "exactly one"),
                                          ({"budget": 3, "vbmf": True}, "exactly one"), ({"latency": 1.5}, "latency"),
                                          ({"latency": 0.5, "backend": "tensorrt"}, "onnxruntime or openvino"),
                                          ({"budget": 1.0}, "above 1"), ({"rank_ratio": 0.0}, "rank_ratio"),
                                          ({"energy": 1.5}, "energy"), ({"budget": 3, "round_to": 0}, "round_to")])
def test_config_is_validated(kwargs, match):
    with pytest.raises(InputError, match=match):
        LowRankConfig(**kwargs)


def test_parse_budget():
    assert parse_budget("3x") == 3.0 and parse_budget(" 6X ") == 6.0 and parse_budget(2.5) == 2.5
    with pytest.raises(InputError):
        parse_budget("fast")
    with pytest.raises(InputError):
        parse_budget("1x")


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(InputError, match="known methods: hsc, .*spatial-svd, subpixel, svd, tucker"):
        get_pass("cp-als")


@pytest.mark.parametrize("method", [name for name in list_passes() if get_pass(name).needs_calibration])
@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (2, 64, 64)], ids=["channels", "rank"])
def test_calibration_images_of_the_wrong_shape_are_a_data_error(method, shape):
    """Checked at pass entry, before any activation statistics: one clear DataError, not a RuntimeError."""
    import numpy as np

    from medexport.compression import get_pass
    from medexport.errors import DataError
    from medexport.zoo import get_model

    model = get_model("brain-region-alexnet").build()
    images = np.zeros(shape, np.float32)
    extra = {"budget": 2} if get_pass(method).family == "lowrank" else {}
    config = get_pass(method).config_type(calibration=images, **extra)
    with pytest.raises(DataError, match="calibration images"):
        get_pass(method).apply(model, (1, 1, 64, 64), config)


def test_lowrank_recipe_lists_only_the_rule_in_use_and_the_images_read():
    import numpy as np

    from medexport.compression.lowrank.hsc import HSCConfig

    images = np.zeros((48, 1, 64, 64), np.float32)
    budget = LowRankConfig(budget=3, calibration=images).to_dict()
    assert budget["budget"] == 3 and budget["calibration_images"] is None  # a budget rule reads no images
    assert not {"rank_ratio", "energy", "vbmf", "latency", "backend", "threads", "payoff"} & set(budget)
    latency = LowRankConfig(latency=0.5, backend="onnxruntime", calibration=images).to_dict()
    assert latency["backend"] == "onnxruntime" and "payoff" in latency and "budget" not in latency
    assert latency["calibration_images"] == 8  # the allocator's damage sample
    assert HSCConfig(budget=3, calibration=images).to_dict()["calibration_images"] == 32
    assert HSCConfig(budget=3, calibration=images[:10]).to_dict()["calibration_images"] == 10
