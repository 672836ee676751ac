"""Filter merging: duplicated channels are absorbed exactly, scaled copies through α, and the hybrid
crossover filter is fitted to the max of its parents."""
import pytest
import torch
from torch import nn

from medexport.compression import get_pass, list_passes
from medexport.compression.pruning import PruneConfig
from medexport.compression.pruning.merge import MergePass
from medexport.evaluation import evaluate
from medexport.zoo import get_model


MERGING = [name for name in list_passes(family="pruning") if isinstance(get_pass(name), MergePass)]


@pytest.fixture(scope="module")
def images():
    return get_model("brain-region-alexnet").calibration()[:16]


class _Block(nn.Module):
    """conv(1->8) -> BN -> ReLU -> conv(8->8) -> ReLU -> head conv(8->2): two merge-able groups."""

    def __init__(self, norm: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(1, 8, 3, padding=1, bias=not norm)
        self.bn = nn.BatchNorm2d(8) if norm else nn.Identity()
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.bn(self.a(x))))))


def _duplicate(model: _Block, scale: float = 1.0) -> _Block:
    """Channels 4..7 of ``a`` become copies of 0..3 (times ``scale``: exact with ReLU for scale > 0)."""
    with torch.no_grad():
        model.a.weight[4:] = scale * model.a.weight[:4]
        if model.a.bias is not None:
            model.a.bias[4:] = scale * model.a.bias[:4]
        if isinstance(model.bn, nn.BatchNorm2d):
            model.bn.running_mean.uniform_(-0.1, 0.1)
            model.bn.running_var.uniform_(0.5, 1.5)
            for t in (model.bn.weight, model.bn.bias, model.bn.running_mean, model.bn.running_var):
                t[4:] = t[:4]
    return model.eval()


def _merged(method, model, images):
    config = PruneConfig(ratio=0.5, round_to=1, calibration=images, exclude=("head",))
    small, record = get_pass(method).apply(model, (1, 1, 64, 64), config)
    x = torch.from_numpy(images)
    with torch.no_grad():
        return small, record, (small(x) - model(x)).abs().max().item() / model(x).abs().max().item()


@pytest.mark.parametrize("method", MERGING)
def test_duplicated_channels_merge_without_changing_the_output(method, images):
    model = _duplicate(_Block())
    small, record, error = _merged(method, model, images)
    assert small.a.out_channels == 4 and small.b.in_channels == 4 and small.bn.num_features == 4
    assert error < 1e-4
    assert [g.name for g in record.layers] == ["a"]


def test_scaled_copies_are_absorbed_by_the_least_squares_factor(images):
    model = _duplicate(_Block(norm=False), scale=2.0)
    small, _, error = _merged("merge-medoid", model, images)
    assert small.a.out_channels == 4 and error < 1e-4
    # plain pruning of the same model must lose the copies' contribution
    pruned, _ = get_pass("prune-l2").apply(model, (1, 1, 64, 64), PruneConfig(ratio=0.5, round_to=1, exclude=("head",)))
    x = torch.from_numpy(images)
    with torch.no_grad():
        assert (pruned(x) - model(x)).abs().max().item() / model(x).abs().max().item() > 0.05


def test_hybrid_filter_reproduces_the_max_of_its_parents(images):
    """Two correlated (not equal) filters: the hybrid's output is closer to max(parents) than either parent's."""
    from medexport.compression.pruning.merge import _patches_and_outputs, _fit_filter

    torch.manual_seed(1)
    conv = nn.Conv2d(1, 2, 3, padding=1)
    with torch.no_grad():
        noise = torch.randn_like(conv.weight[0])
        conv.weight[1] = conv.weight[0] + 0.3 * (noise - noise.mean())  # neither parent dominates the other
        conv.bias[1] = conv.bias[0]
    x = torch.from_numpy(images).double()
    patches, outputs = _patches_and_outputs(conv, x)
    target = outputs.max(dim=1).values
    parent_errors = [float((outputs[:, i] - target).pow(2).mean()) for i in range(2)]
    assert min(parent_errors) > 0
    _fit_filter(conv, None, 0, patches, target)
    _, refitted = _patches_and_outputs(conv, x)
    assert float((refitted[:, 0] - target).pow(2).mean()) < 0.7 * min(parent_errors)


def test_merging_beats_dropping_on_the_reference_classifier():
    ref = get_model("brain-region-alexnet")
    model, (images, labels), calibration = ref.build(), ref.heldout(), ref.calibration()
    images, labels = images[::2], labels[::2]  # 300 held-out patches keep the test fast

    def accuracy(m):
        def predict(x):
            with torch.no_grad():
                return m(torch.from_numpy(x)).numpy()
        report, _ = evaluate(predict, images, labels, task=ref.task, classes=ref.classes)
        return report.overall["accuracy"].value

    config = PruneConfig(ratio=0.5, calibration=calibration)
    dropped, r_drop = get_pass("prune-l2").apply(model, ref.input_shape, config)
    merged, r_merge = get_pass("merge").apply(model, ref.input_shape, config)
    assert r_merge.macs_after == r_drop.macs_after  # same widths: only which channels and which weights differ
    assert accuracy(merged) > accuracy(dropped) + 0.02


def _zero_gamma_block(affine: bool = True) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8, affine=affine), nn.ReLU(),
                          nn.Conv2d(8, 4, 3, padding=1))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.1, 0.1)
        model[1].running_var.uniform_(0.5, 1.5)
        if affine:
            model[1].weight[:4] = 0.0  # network slimming / zero-initialised norms
    return model.eval()


@pytest.mark.parametrize("affine", [True, False], ids=["zero-gamma", "affine-false"])
def test_hybrid_merge_survives_zero_gamma_and_plain_norms(affine, images):
    """A zero BatchNorm scale falls back to the medoid instead of writing NaN; affine=False norms merge."""
    model = _zero_gamma_block(affine)
    small, _ = get_pass("merge").apply(model, (1, 1, 64, 64), PruneConfig(ratio=0.5, round_to=1, calibration=images))
    assert small[0].out_channels == 4
    for t in (small[0].weight, small[1].running_mean, small[1].running_var):
        assert torch.isfinite(t).all()
    with torch.no_grad():
        assert torch.isfinite(small(torch.from_numpy(images))).all()


def test_hybrid_patches_are_gathered_at_sampled_positions_only():
    """3D, strided and dilated: the gathered patches times the weight equal the conv's own outputs there."""
    from medexport.compression.pruning.merge import _ROWS, _patches_and_outputs

    torch.manual_seed(2)
    conv = nn.Conv3d(2, 3, 3, stride=(1, 2, 1), padding=(1, 0, 2), dilation=(1, 1, 2)).double()
    x = torch.randn(2, 2, 40, 41, 42, dtype=torch.float64)
    patches, outputs = _patches_and_outputs(conv, x)
    assert patches.shape == (_ROWS, 2 * 27) and outputs.shape == (_ROWS, 3)
    full = conv(x).detach().movedim(1, -1).reshape(-1, 3)  # every position of the real conv
    nearest = torch.cdist(outputs[:64], full).min(dim=1).values
    assert float(nearest.max()) < 1e-6  # cdist rounding; a wrong patch is off by O(1)
