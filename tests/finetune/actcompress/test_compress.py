"""Activation-map compression: lambda 1 changes nothing, the gradients are those of the reconstructed activations,
the sparse storage holds k values and frees the dense tensor; 2D and 3D, on the MONAI reference U-Nets."""
import gc
import weakref

import pytest
import torch
from torch import nn

from medexport.errors import InputError
from medexport.finetune.actcompress import (TRANSFORMS, ActCompressSpec, activation_memory, compressed_activations,
                                            eta, fit_patch, parse_bytes)
from medexport.finetune.actcompress._select import layer_levels
from medexport.finetune.actcompress._sparse import TopK, kept, top_indices

SHAPES = {2: (2, 1, 32, 32), 3: (2, 1, 16, 16, 16)}


def _unet(dims: int) -> nn.Module:
    from medexport.zoo.architectures import brain_tissue_unet2d, brain_tissue_unet3d

    torch.manual_seed(0)
    return (brain_tissue_unet2d if dims == 2 else brain_tissue_unet3d)().train()


def _grads(model: nn.Module, x: torch.Tensor, spec: ActCompressSpec | None) -> dict[str, torch.Tensor]:
    model.zero_grad()
    with compressed_activations(model, spec, x[:1]):
        model(x).square().mean().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("method", sorted(TRANSFORMS))
def test_lambda_one_reproduces_the_uncompressed_gradients(dims, method):
    model = _unet(dims)
    x = torch.randn(SHAPES[dims], generator=torch.Generator().manual_seed(1))
    base = _grads(model, x, None)
    spec = ActCompressSpec(method, 1.0, (0, 1, 2), ("bn", "conv", "relu"))
    tuned = _grads(model, x, spec)
    for name, grad in base.items():
        torch.testing.assert_close(tuned[name], grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("method", ["dct", "wavelet"])
def test_conv_weight_gradient_equals_the_one_computed_by_hand_from_the_reconstructed_input(dims, method):
    conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
    torch.manual_seed(0)
    model = nn.Sequential(conv(1, 4, 3, padding=1), norm(4), nn.ReLU(), conv(4, 3, 3, padding=1)).train()
    x = torch.randn(SHAPES[dims])
    seen = {}
    model[3].register_forward_hook(lambda m, args, out: seen.update(x=args[0].detach().clone(), out=out))
    base = _grads(model, x, None)
    spec = ActCompressSpec(method, 10.0, (0,), ("conv",))
    with compressed_activations(model, spec, x[:1]):
        model.zero_grad()
        out = model(x)
        seen["out"].retain_grad()
        out.square().mean().backward()
    transform = TRANSFORMS[method]
    x_l = transform.inverse(TopK.of(transform.forward(seen["x"]), 10.0).dense())
    grad_fn = torch.nn.grad.conv2d_weight if dims == 2 else torch.nn.grad.conv3d_weight
    by_hand = grad_fn(x_l, model[3].weight.shape, seen["out"].grad, padding=1)
    torch.testing.assert_close(model[3].weight.grad, by_hand, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(model[3].weight.grad, base["3.weight"], rtol=1e-2, atol=1e-4)
    # the first conv's input is the model's input (held by the caller, never compressed): its gradient is unchanged
    torch.testing.assert_close(model[0].weight.grad, base["0.weight"], rtol=1e-4, atol=1e-6)


def test_relu_gradient_is_masked_by_the_thresholded_output_as_in_the_paper():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU()).train()
    x = torch.randn(SHAPES[3])
    seen = {}
    model[1].register_forward_hook(lambda m, args, out: seen.update(pre=args[0], out=out.detach().clone()))
    with compressed_activations(model, ActCompressSpec("threshold", 4.0, (0,), ("relu",)), x[:1]):
        out = model(x)
        seen["pre"].retain_grad()
        g = torch.randn_like(out)
        out.backward(g)
    out_l = TopK.of(seen["out"], 4.0).dense()
    torch.testing.assert_close(seen["pre"].grad, g * (out_l > 0))


@pytest.mark.parametrize("dims", [2, 3])
def test_sparse_storage_holds_k_values_and_the_dense_activation_is_freed(dims):
    model = _unet(dims)
    x = torch.randn(SHAPES[dims])
    refs = []
    model.model[0].conv.register_forward_hook(lambda m, args, out: refs.append(weakref.ref(out)))
    # block0's BatchNorms: the encoder's (input: the first conv's output) and the decoder's, 32 channels at 1/2 size
    spec = ActCompressSpec("dct", 10.0, (0,), ("bn",))
    with compressed_activations(model, spec, x[:1]) as packer:
        out = model(x)
        gc.collect()
        assert refs[-1]() is None      # nothing holds the dense conv output any more
        n = x.shape[0] * 32 * (x[0, 0].numel() // 2 ** dims)
        assert packer.ledger.compressed_tensors == 2 and packer.ledger.kept_values == 2 * kept(n, 10.0) == 2 * (n // 10)
        assert packer.ledger.compressed_bytes == 2 * 8 * (n // 10)   # 4-byte values + int32 indices, off storage
        out.mean().backward()
    base, comp = activation_memory(model, x), activation_memory(model, x, spec)
    assert base.saved - comp.saved == 2 * (4 * n - 8 * (n // 10))
    assert eta(comp.saved, base.saved) < 0


@pytest.mark.parametrize("shape", [(2, 3, 24, 40), (1, 4, 24, 12, 20), (1, 2, 7, 9, 5)])
def test_transforms_are_orthogonal_round_trips_in_2d_and_3d(shape):
    x = torch.randn(shape)
    for name, t in TRANSFORMS.items():
        y = t.forward(x)
        assert y.shape == x.shape, name
        torch.testing.assert_close(y.norm(), x.norm(), rtol=1e-5, atol=0, msg=name)
        torch.testing.assert_close(t.inverse(y), x, rtol=0, atol=1e-5, msg=name)


def test_topk_keeps_the_largest_magnitudes_and_dct_keeps_more_of_a_smooth_map_than_thresholding():
    y = torch.tensor([[[[0.1, -5.0, 2.0, 0.0], [3.0, -0.2, 0.0, 1.0]]]])
    packed = TopK.of(y, 2.5)
    assert packed.values.numel() == 3 and packed.indices.dtype == torch.int32
    assert torch.equal(packed.dense(), torch.tensor([[[[0.0, -5.0, 2.0, 0.0], [3.0, 0.0, 0.0, 0.0]]]]))
    grid = torch.linspace(0, 3, 32)
    smooth = torch.sin(grid)[:, None, None] * torch.cos(grid)[None, :, None] * grid[None, None, :]
    smooth = smooth.expand(1, 2, 32, 32, 32)
    errors = {}
    for name, t in TRANSFORMS.items():
        rebuilt = t.inverse(TopK.of(t.forward(smooth), 10.0).dense())
        errors[name] = (rebuilt - smooth).norm() / smooth.norm()
    assert errors["dct"] < 0.05 < errors["threshold"]
    assert errors["wavelet"] < errors["threshold"]


@pytest.mark.parametrize("n,ratio", [(1000, 10.0), (300_000, 10.0), (300_000, 100.0), (300_000, 1.1)])
def test_sampled_top_k_selects_the_same_set_as_torch_topk(n, ratio):
    # distinct magnitudes (a permutation), heavy-tailed like DCT coefficients, and a structured run of equal
    # small values; small n and small lambda take plain topk, the others the sampled candidate set
    torch.manual_seed(1)
    magnitude = (torch.randperm(n).double() / n).pow(8).float() + 1e-3 * (torch.arange(n) % 24 == 0)
    k = kept(n, ratio)
    expected = torch.topk(magnitude, k, sorted=False).indices.sort().values
    state = torch.get_rng_state()
    assert torch.equal(top_indices(magnitude, k).sort().values, expected)
    assert torch.equal(torch.get_rng_state(), state)   # the training's random stream is not drawn from


def test_haar_coefficients_are_the_textbook_sums_and_differences():
    # one level of a 2 x 2 map (a b / c d), low/high along the rows, then the columns:
    # (a+b+c+d)/2, (a-b+c-d)/2, (a+b-c-d)/2, (a-b-c+d)/2
    coeffs = TRANSFORMS["wavelet"].forward(torch.tensor([[[[1.0, 2.0], [3.0, 5.0]]]]))
    assert torch.allclose(coeffs.reshape(-1), torch.tensor([5.5, -1.5, -2.5, 0.5]))
    # three levels of an 8^3 map: the coarsest low band is the sum of all values / 8^(3/2)
    x = torch.rand(1, 2, 8, 8, 8)
    coeffs = TRANSFORMS["wavelet"].forward(x)
    assert torch.allclose(coeffs.reshape(2, -1)[:, 0], x.reshape(2, -1).sum(1) / 8 ** 1.5)
    assert torch.allclose(coeffs.norm(), x.norm())


def test_blocks_are_resolution_levels_encoder_and_decoder_together():
    model = _unet(3)
    names = {m: n for n, m in model.named_modules()}
    levels = {}
    for level, layer in layer_levels(model, torch.zeros(1, 1, 32, 32, 32)):
        levels.setdefault(level, []).append(names[layer])
    # block0: every layer reading a 16^3 feature map (encoder BN/ReLU, the next conv, the decoder's, the last conv)
    assert levels[0] == ["model.0.conv", "model.0.adn.N", "model.0.adn.A", "model.1.submodule.0.conv",
                         "model.1.submodule.2.adn.N", "model.1.submodule.2.adn.A", "model.2.conv"]
    assert "model.1.submodule.2.conv" in levels[1] and sorted(levels) == [0, 1, 2]


def test_spec_flags_and_errors():
    spec = ActCompressSpec.from_flags("dct", 10, "block0-1", "conv,bn,relu")
    assert spec.blocks == (0, 1) and spec.types == ("bn", "conv", "relu") and spec.layers == "block0-1"
    assert ActCompressSpec.from_dict(spec.to_dict()) == spec
    assert ActCompressSpec.from_flags("wavelet", 2, "block0,block2", "bn").layers == "block0,block2"
    for bad in [("fft", 10, "block0", "bn"), ("dct", 0.5, "block0", "bn"), ("dct", 10, "layer0", "bn"),
                ("dct", 10, "block0", "gelu"), ("dct", 10, "block2-1", "bn")]:
        with pytest.raises(InputError):
            ActCompressSpec.from_flags(*bad)
    with pytest.raises(InputError, match="blocks 0-2"):
        with compressed_activations(_unet(3), ActCompressSpec(blocks=(5,)), torch.zeros(1, 1, 16, 16, 16)):
            pass
    assert parse_bytes("8GiB") == 8 * 2 ** 30 and parse_bytes("512MB") == 512 * 10 ** 6
    with pytest.raises(InputError):
        parse_bytes("lots")


def test_compression_fits_a_bigger_patch_under_the_same_cap():
    model = _unet(3)
    candidates = [(16, 16, 16), (32, 32, 32)]
    base = fit_patch(model, 1, 1, candidates, cap=2 ** 20)
    spec = ActCompressSpec("dct", 100.0, (0, 1), ("bn", "conv", "relu"))
    comp = fit_patch(model, 1, 1, candidates, cap=2 ** 20, spec=spec)
    assert base.patch == (16, 16, 16) and comp.patch == (32, 32, 32)
    assert base.tried[0][1] > 2 ** 20 >= comp.saved
