"""Activation compression inside recovery fine-tuning: the distillation loop, the recipe and the CLI options."""
import contextlib

import numpy as np
import pytest
from click.testing import CliRunner

from medexport.errors import InputError
from medexport.finetune import DistillConfig, distill
from medexport.finetune.actcompress import ActCompressSpec


def test_distillation_runs_with_compressed_activations_on_patches(monkeypatch):
    import torch

    from medexport.finetune.actcompress import compressed_activations
    from medexport.zoo.architectures import brain_tissue_unet3d

    torch.manual_seed(0)
    teacher, student = brain_tissue_unet3d(), brain_tissue_unet3d()
    images = np.random.default_rng(0).normal(size=(3, 1, 32, 32, 32)).astype(np.float32)
    spec = ActCompressSpec("dct", 10.0, (0, 1), ("bn", "conv", "relu"))
    packers = []

    @contextlib.contextmanager
    def spy(*args):   # the loop's own context, kept to read what the last forward compressed
        with compressed_activations(*args) as packer:
            packers.append(packer)
            yield packer

    monkeypatch.setattr("medexport.finetune.actcompress.compressed_activations", spy)
    _, record = distill(student, teacher, images, DistillConfig(steps=2, batch=2, act_compress=spec,
                                                                patch=(16, 16, 16)))
    assert record.act_compress == spec.to_dict() and record.patch == (16, 16, 16)
    assert np.isfinite(record.loss_last)
    (packer,) = packers
    # block0-1 of the U-Net: the 13 conv/BN/ReLU layers reading 16^3 and 8^3 maps (7 + 6) save 12 activations (the
    # first conv's is the input itself); two ReLU outputs are also the next conv's input: 10 compressed tensors
    assert len(packer.layers) == 13 and packer.ledger.compressed_tensors == 10


def test_the_recipe_keeps_the_spec_and_refuses_it_without_finetuning():
    from medexport.pipeline import CompressionConfig

    spec = ActCompressSpec.from_flags("wavelet", 100, "block0", "bn")
    config = CompressionConfig((("prune-l2", {"ratio": 0.5}),), 10, act_compress=spec, max_memory=8 * 2 ** 30)
    again = CompressionConfig.from_dict(config.to_dict())
    assert again.act_compress == spec and again.max_memory == 8 * 2 ** 30
    with pytest.raises(InputError, match="--finetune"):
        CompressionConfig((("prune-l2", {"ratio": 0.5}),), 0, act_compress=spec)


def test_act_options_without_act_compress_are_refused_in_one_line():
    from medexport.cli import cli

    result = CliRunner().invoke(cli, ["compress", "--method", "prune-l2", "--finetune", "5", "--act-ratio", "100"])
    assert result.exit_code != 0 and "--act-ratio configure --act-compress" in result.output


def test_the_budget_names_the_patch_that_fits_a_cap_the_uncompressed_model_breaks():
    from medexport.pipeline._finetune import activation_budget
    from medexport.zoo.architectures import brain_tissue_unet3d

    model = brain_tissue_unet3d()   # the 3D reference's network: the bytes do not depend on its weights
    images = np.random.default_rng(0).normal(size=(2, 1, 32, 32, 32)).astype(np.float32)   # 2 per batch
    spec = ActCompressSpec.from_flags("dct", 10, "block0-1", "conv,bn,relu")
    budget = activation_budget(model, images, DistillConfig(act_compress=spec), cap=4 * 2 ** 20)
    assert budget["patch"] == (32, 32, 32) and budget["activation_bytes"] <= 4 * 2 ** 20
    assert budget["uncompressed_bytes"] > 4 * 2 ** 20 and not budget["uncompressed_fits"]
    assert budget["eta"] < -60
    with pytest.raises(InputError, match="even a 16x16x16 patch"):
        activation_budget(model, images, DistillConfig(act_compress=spec), cap=2 ** 16)
