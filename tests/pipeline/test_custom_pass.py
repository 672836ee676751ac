"""A pass defined only here, with its own config and one option, goes through `compress` and `build --compress`
and into the manifest, with no edit to medexport: passes own their options."""
import json
from dataclasses import asdict, dataclass

import pytest

from medexport.cli import cli
from medexport.compression import _registry
from medexport.compression.base import CompressionPass, model_macs
from medexport.compression.options import PassOption
from medexport.compression.record import PassRecord


@dataclass(frozen=True)
class ScaleConfig:
    factor: float = 1.0


class ScaleHeadPass(CompressionPass):
    """Scales the head's weights and bias (near 1: the same segmentation, so the guard rails hold)."""

    family = "test-scale"
    config_type = ScaleConfig
    options = (PassOption("--head-scale", "factor", "Test pass: scale of the head.", type=float, default=1.0),)

    def apply_impl(self, model, input_shape, config):
        import torch

        macs = model_macs(model, input_shape)
        head = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1]
        with torch.no_grad():
            head.weight.mul_(config.factor)
            if head.bias is not None:
                head.bias.mul_(config.factor)
        return model, PassRecord(self.name, asdict(config), macs, macs)


@pytest.fixture
def scale_pass():
    _registry.register_pass("scale-head")(ScaleHeadPass)
    yield "scale-head"
    del _registry._PASSES["scale-head"]


def run(*args: str) -> None:
    cli.main(args=list(args), prog_name="medexport", standalone_mode=False)


def test_its_option_is_in_the_help(scale_pass, capsys):
    run("compress", "--help")
    shown = capsys.readouterr().out
    assert "--head-scale" in shown and "scale-head" in shown


def test_it_runs_through_compress(scale_pass, tmp_path):
    run("compress", "--method", "scale-head", "--head-scale", "0.999", "--out", str(tmp_path))
    record = json.loads((tmp_path / "compress.json").read_text())
    assert record["compression"]["method"] == "scale-head" and record["compression"]["config"] == {"factor": 0.999}
    assert record["validation"]["guard_rails"]["passed"]


def test_it_runs_through_build_and_is_recorded_in_the_manifest(scale_pass, tmp_path):
    run("build", "--compress", "scale-head", "--head-scale", "0.999", "--no-latency", "--out", str(tmp_path))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["compression"]["chain"] == [{"method": "scale-head", "options": {"factor": 0.999}}]
    assert manifest["compression"]["config"] == {"factor": 0.999}
    assert manifest["compression"]["method"] == "scale-head" and manifest["metrics"]["guard_rails"]["passed"]


def test_its_option_is_refused_for_other_passes(scale_pass):
    from medexport.errors import InputError

    with pytest.raises(InputError, match="--head-scale is not used by svd"):
        run("compress", "--method", "svd", "--head-scale", "2", "--out", "unused")
