"""The build configuration: nested configs that round-trip through the manifest, options routed to their passes."""
import json

import click
import pytest

from medexport.errors import InputError
from medexport.evaluation import GuardRails
from medexport.loading import ModelSpec
from medexport.pipeline import (BuildConfig, CompressionConfig, DataConfig, LatencyConfig, ParityConfig,
                                QuantizationConfig)


def _rich_config(tmp_path) -> BuildConfig:
    return BuildConfig(
        model=ModelSpec(model="monai.networks.nets:UNet", input_shape=(1, 1, 64, 64),
                        model_kwargs={"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": [8, 16],
                                      "strides": [2]}),
        out_dir=tmp_path, target="openvino", parity=ParityConfig(tolerance=2e-4, samples=4),
        rails=GuardRails(0.5, 2.0),
        data=DataConfig(data="labelled.npz", task="segmentation", classes=("background", "lesion"), calib="scans"),
        compression=CompressionConfig.from_flags("tucker,prune-l2,subpixel", {"--budget": "2x", "--ratio": 0.25,
                                                 "--iterative": 2, "--rollback": True, "--exclude-layer": ("model.0*",)},
                                                 finetune_steps=100),
        quantization=QuantizationConfig(precision="int8", method="percentile", exclude=("Conv_3",)),
        latency=LatencyConfig(batch=4, iterations=10))


def test_a_config_round_trips_through_json_without_the_image_paths(tmp_path):
    config = _rich_config(tmp_path)
    data = json.loads(json.dumps(config.to_dict()))
    again = BuildConfig.from_dict(data, tmp_path)
    assert again.to_dict() == config.to_dict()
    assert again.passes == config.passes   # the same validated pass configs, options and defaults alike
    assert (again.data.calib, again.data.data, again.data.classes) == ("<given>", "<given>", ("background", "lesion"))
    assert "scans" not in json.dumps(data) and "labelled.npz" not in json.dumps(data)
    assert again.data.missing() == ["--data", "--calib"]
    assert data["compression"]["chain"][1] == {"method": "prune-l2", "options": {"ratio": 0.25, "steps": 2,
                                                                                 "rollback": True, "exclude": ["model.0*"]}}
    assert data["quantization"]["layout"] == "openvino"   # the target's default, written down


def test_shared_options_reach_every_pass_that_declares_them(tmp_path):
    (_, tucker), (_, prune), (_, subpixel) = _rich_config(tmp_path).passes
    assert tucker.exclude == prune.exclude == subpixel.exclude == ("model.0*",)
    assert tucker.budget == 2.0 and prune.ratio == 0.25 and subpixel.backend == "openvino"


def test_a_recipe_key_this_version_does_not_know_is_refused(tmp_path):
    data = _rich_config(tmp_path).to_dict()
    data["quantum"] = True
    with pytest.raises(InputError, match="does not know: quantum"):
        BuildConfig.from_dict(data, tmp_path)
    data = _rich_config(tmp_path).to_dict()
    data["compression"]["chain"][0]["options"]["ratio"] = 0.5
    with pytest.raises(InputError, match="tucker has no option ratio"):
        BuildConfig.from_dict(data, tmp_path)


def test_guard_rail_defaults_live_in_one_place():
    """Every verb that takes guard rails shows GuardRails' own defaults."""
    from medexport.cli import cli

    defaults = GuardRails()
    verbs = [cmd for cmd in cli.commands.values() if any(p.name == "max_class_drop" for p in cmd.params)]
    assert {cmd.name for cmd in verbs} >= {"build", "compress", "quantize", "validate"}
    for cmd in verbs:
        params = {p.name: p.default for p in cmd.params}
        assert (params["max_overall_drop"], params["max_class_drop"]) == (defaults.max_overall_drop,
                                                                        defaults.max_class_drop)


def test_the_cli_passes_only_the_options_given(tmp_path):
    """A default is not a choice: options left at their defaults are not routed (nor refused) as if given."""
    from medexport.cli._options import PassOptionsCommand

    seen = {}

    @click.command(cls=PassOptionsCommand)
    def probe(pass_options):
        seen.update(pass_options)

    probe.main(["--ratio", "0.3", "--exclude-layer", "a*", "--exclude-layer", "b*"], standalone_mode=False)
    assert seen == {"--ratio": 0.3, "--exclude-layer": ("a*", "b*")}
