"""The profiler's totals against hand counts, and against torch's own FLOP counter on MONAI networks."""
import pytest
import torch
from torch import nn

from medexport.graph import capture, profile


class Tiny2D(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.relu(self.bn(self.conv(x)))), 1))


class Tiny3D(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, padding=1, bias=False)
        self.up = nn.ConvTranspose3d(4, 2, 2, stride=2)
        self.norm = nn.GroupNorm(1, 2)

    def forward(self, x):
        return self.norm(self.up(self.conv(x)))


def test_hand_count_2d():
    prof = profile(capture(Tiny2D(), (1, 1, 8, 8)))
    by_kind = {layer.kind: layer for layer in prof.layers}
    # conv: 4x8x8 outputs x (1 channel x 3x3 kernel) = 2304 MACs; +256 bias adds
    assert by_kind["Conv2d"].macs == 2304 and by_kind["Conv2d"].flops == 2 * 2304 + 256
    assert by_kind["BatchNorm2d"].flops == 2 * 256
    assert by_kind["ReLU"].flops == 256
    assert by_kind["MaxPool2d"].flops == 64 * 4  # 4x4x4 outputs, 2x2 window each
    assert by_kind["Linear"].macs == 3 * 64
    assert prof.macs == 2304 + 192
    assert prof.params == (4 * 9 + 4) + 8 + (64 * 3 + 3)
    # peak: conv, bn and relu outputs are 1 KiB each; two are alive at once
    assert prof.peak_activation_bytes == 2 * 4 * 64 * 4


def test_hand_count_3d_with_transposed_conv():
    prof = profile(capture(Tiny3D(), (1, 2, 4, 4, 4)))
    by_kind = {layer.kind: layer for layer in prof.layers}
    assert by_kind["Conv3d"].macs == (4 * 64) * 2 * 27  # 13824
    # transposed: every input element (4x64) meets Cout(2) x kernel volume (8)
    assert by_kind["ConvTranspose3d"].macs == (4 * 64) * 2 * 8
    assert by_kind["ConvTranspose3d"].output_shape == (1, 2, 8, 8, 8)
    assert by_kind["GroupNorm"].flops == 2 * 1024
    assert prof.params == 2 * 4 * 27 + (4 * 2 * 8 + 2) + 4


@pytest.mark.parametrize("name", ["unet2d", "basicunet", "resnet3d"])
def test_conv_macs_match_torch_flop_counter(name):
    from monai.networks import nets
    from torch.utils.flop_counter import FlopCounterMode

    model, shape = {
        "unet2d": (lambda: nets.UNet(2, 1, 3, (8, 16, 32), (2, 2), num_res_units=1), (1, 1, 64, 64)),
        "basicunet": (lambda: nets.BasicUNet(2, 1, 2, features=(8, 8, 16, 32, 64, 8)), (1, 1, 64, 64)),
        "resnet3d": (lambda: nets.resnet10(spatial_dims=3, n_input_channels=1, num_classes=3), (1, 1, 32, 32, 32)),
    }[name]
    model = model().eval()
    graph = capture(model, shape)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(*shape))
    assert profile(graph).macs * 2 == counter.get_total_flops()
    if name == "basicunet":
        assert graph.method == "fx"  # plain fx fails on UpCat's shape-dependent branch; the concrete-shape tracer follows it


def test_a_branch_on_tensor_values_is_not_frozen_into_an_fx_graph():
    """Shape branches are followed at the example's shape; a value branch is never recorded as one path
    (fx refuses it, and so does torch.export here: a clear error rather than a graph missing a layer)."""
    from medexport.errors import ModelLoadError

    class ValueBranch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(1, 4, 1)

        def forward(self, x):
            return self.a(x) if x.shape[-1] > 8 and x.mean() > 0 else self.b(x)

    with pytest.raises(ModelLoadError, match="cannot trace"):
        capture(ValueBranch(), (1, 1, 16, 16))
