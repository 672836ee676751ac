"""subpixel: transposed convolutions rewritten exactly as convolution + pixel shuffle, where that measures faster."""
import numpy as np
import pytest
import torch
from torch import nn

from medexport.compression import get_pass
from medexport.compression.rewrite.subpixel import SubPixelConfig, subpixel_module, unsupported
from medexport.errors import InputError
from tests.compression.conftest import build_net

GEOMETRIES = [  # (kernel, stride, padding, output_padding): MONAI's 3/2/1/1, DynUNet's 2/2/0/0, odd strides, crops
    (3, 2, 1, 1), (2, 2, 0, 0), (4, 2, 1, 0), (3, 2, 0, 0), (3, 2, 1, 0), (5, 3, 2, 1), (3, 3, 1, 2), (1, 2, 0, 1),
    (4, 4, 0, 0)]


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kernel, stride, padding, output_padding", GEOMETRIES)
def test_the_rewrite_computes_what_the_transposed_conv_computes(dims, kernel, stride, padding, output_padding):
    torch.manual_seed(0)
    deconv = (nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d)(5, 4, kernel, stride=stride, padding=padding,
                                                                        output_padding=output_padding).eval()
    x = torch.randn(2, 5, *(5,) * dims)
    with torch.no_grad():
        expected, got = deconv(x), subpixel_module(deconv, tuple(x.shape[2:]))(x)
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) < 1e-5 * float(expected.abs().max())


def test_anisotropic_strides_and_no_bias():
    torch.manual_seed(0)
    deconv = nn.ConvTranspose3d(3, 2, (3, 3, 1), stride=(2, 2, 1), padding=(1, 1, 0), output_padding=(1, 1, 0),
                                bias=False).eval()
    x = torch.randn(1, 3, 4, 5, 6)
    with torch.no_grad():
        assert torch.allclose(subpixel_module(deconv, (4, 5, 6))(x), deconv(x), atol=1e-6)


@pytest.mark.parametrize("module, reason", [
    (nn.ConvTranspose2d(4, 4, 3, stride=2, groups=2), "grouped"),
    (nn.ConvTranspose2d(4, 4, 3, stride=2, dilation=2), "dilated"),
    (nn.ConvTranspose2d(4, 4, 3, stride=1), "stride 1"),
    (nn.Conv2d(4, 4, 3), "not a 2D/3D transposed convolution"),
])
def test_layers_it_cannot_rewrite_say_why(module, reason):
    assert reason in unsupported(module)
    with pytest.raises(InputError, match=reason):
        subpixel_module(module, (8, 8))


@pytest.mark.parametrize("net", ["unet2d", "unet3d", "dynunet", "brain-tissue-unet2d"])
def test_every_transposed_conv_of_a_unet_rewritten_keeps_its_outputs_and_exports(net, tmp_path):
    """measure=False rewrites every eligible layer: the network's outputs stay, and its ONNX (ordinary Conv,
    Reshape, Transpose) passes the checker and runs on ONNX Runtime with the same numbers."""
    from medexport.exporter import check_onnx, export_onnx
    from medexport.runtimes.onnxruntime.runner import Runner

    model, shape = build_net(net)
    deconvs = [n for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvTransposeNd)]
    fast, record = get_pass("subpixel").apply(model, shape, SubPixelConfig(measure=False))
    assert sorted(layer.name for layer in record.layers) == sorted(deconvs) and deconvs
    # the zero taps are counted, not hidden (DynUNet's 2x2 stride-2 up-convolutions have none: each phase is a 1x1)
    assert record.macs_after > record.macs_before or net == "dynunet" and record.macs_after == record.macs_before
    batch = np.random.default_rng(0).random((2, *shape[1:]), dtype=np.float32)
    with torch.no_grad():
        expected, got = model(torch.from_numpy(batch)), fast(torch.from_numpy(batch))
    scale = max(float(expected.abs().max()), 1.0)
    assert float((got - expected).abs().max()) / scale < 1e-5
    path = export_onnx(fast, shape, tmp_path / "model.onnx").path
    assert "ConvTranspose" not in {n.op_type for n in check_onnx(path).graph.node}
    with Runner(path) as runner:
        assert float(np.abs(runner.infer(batch) - expected.numpy()).max()) / scale < 1e-4


def _stand_in_clock(saves: dict[str, float]):
    """A clock for the pass in which the model takes 10 ms, less what each rewritten layer saves."""

    class Clock:
        def __init__(self, config, input_shape):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def open(self, model):
            return 10.0 - sum(s for name, s in saves.items() if type(model.get_submodule(name)).__name__ == "SubPixel")

        def close(self, handle):
            pass

        def compare(self, before, after):
            return before, after

    return Clock


def test_only_rewrites_that_make_the_model_faster_are_kept(monkeypatch):
    """Each candidate is judged by the whole model's time with it rewritten. The clock is a stand-in (a latency is
    not a unit-test quantity); the decisions and the record are the pass's own, at the default 1.05x."""
    from medexport.compression.rewrite import subpixel

    saves = {"model.2.conv": 2.0, "model.1.submodule.2.conv": -1.0, "model.1.submodule.1.submodule.2.conv": 0.45}
    monkeypatch.setattr(subpixel, "_Clock", _stand_in_clock(saves))
    model, shape = build_net("brain-tissue-unet2d")
    fast, record = get_pass("subpixel").apply(model, shape, SubPixelConfig())
    assert [(layer.name, layer.ms_before, layer.ms_after) for layer in record.layers] == [("model.2.conv", 10.0, 8.0)]
    assert "below the 1.05x it must gain" in record.skipped["model.1.submodule.1.submodule.2.conv"]   # first: 10 -> 9.55
    assert set(record.skipped) == {"model.1.submodule.2.conv", "model.1.submodule.1.submodule.2.conv"}
    assert type(fast.get_submodule("model.2.conv")).__name__ == "SubPixel"
    _, lower = get_pass("subpixel").apply(model, shape, SubPixelConfig(min_speedup=1.04))
    assert len(lower.layers) == 2   # 10 -> 9.55 is 1.047x


def test_each_comparison_is_measured_twice_and_the_less_favourable_pair_kept():
    """One lucky run must not keep a rewrite: of two interleaved runs, the one with the smaller gain counts."""
    from medexport.compression.rewrite.subpixel import _Clock

    class Timer:
        runs = iter([(10.0, 8.0), (10.0, 9.5)])

        def time(self, handles, quantile):
            return next(self.runs)

    clock = _Clock(SubPixelConfig(), (1, 1, 8, 8))
    clock.timer = Timer()
    assert clock.compare(0, 1) == (10.0, 9.5)


def test_a_layer_whose_rewrite_changes_the_output_is_left_alone():
    """A transposed conv called with output_size= cannot be rewritten for the size it was made for: the copy fails
    or differs on one input, the layer is skipped with the reason, and the model is returned unchanged."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.down, self.up = nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1)

        def forward(self, x):
            return self.up(self.down(x), output_size=x.shape[2:])

    fast, record = get_pass("subpixel").apply(Net().eval(), (1, 1, 16, 16), SubPixelConfig(measure=False))
    assert not record.layers and "up" in record.skipped and "rewritten model" in record.skipped["up"]
    assert isinstance(fast.up, nn.ConvTranspose2d)


def test_models_with_several_outputs_are_rewritten_output_by_output():
    """A model returning a tuple (deep supervision, say) is compared on every tensor it returns."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Conv2d(1, 4, 3, stride=2, padding=1)
            self.up = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)

        def forward(self, x):
            y = self.down(x)
            return self.up(y), y

    torch.manual_seed(0)
    model = Net().eval()
    fast, record = get_pass("subpixel").apply(model, (1, 1, 16, 16), SubPixelConfig(measure=False))
    assert [layer.name for layer in record.layers] == ["up"]
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(model(x), fast(x)))


def test_the_rewrite_refuses_an_input_size_it_was_not_made_for():
    """The reshapes are specialised to the size the layer ran at (as the exported ONNX is): another size is an error,
    not a silently transposed output."""
    layer = subpixel_module(nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1), (4, 6))
    with pytest.raises(AssertionError, match="input size it was made for"):
        layer(torch.zeros(1, 4, 6, 4))


def test_fine_tuning_runs_before_the_exact_rewrite_and_not_for_it_alone(tmp_path):
    """tucker,subpixel --finetune: the low-rank model is fine-tuned, then rewritten (fine-tuned after, the zero
    taps would not stay zero); --finetune with subpixel alone has nothing to recover."""
    import contextlib

    from medexport.loading import ModelSpec
    from medexport.evaluation import GuardRails
    from medexport.pipeline import BuildConfig, CompressionConfig, run_compress

    labels = []

    @contextlib.contextmanager
    def stage(label):
        labels.append(label)
        yield

    result = run_compress(BuildConfig(model=ModelSpec(), out_dir=tmp_path / "a", compression=CompressionConfig.from_flags("tucker,subpixel", {"--budget": "1.5x"}, 20), rails=GuardRails(max_overall_drop=100, max_class_drop=100)),
                          stage)
    assert result["finetune"]["steps"] == 20 and [p["method"] for p in result["compression"]["passes"]] == [
        "tucker", "subpixel"]
    work = [label for label in labels if label != "load"][:3]   # (the images are read first, in "load")
    assert labels[0] == "load" and [label.split(" ")[0] + " " + label.split(" ")[1].strip("(,") for label in work] == [
        "compress tucker", "fine-tune 20", "compress subpixel"]
    with pytest.raises(InputError, match="--finetune recovers what a lossy pass changed"):
        run_compress(BuildConfig(model=ModelSpec(), out_dir=tmp_path / "b", compression=CompressionConfig.from_flags("subpixel", {}, 20)))
