"""MONAI bundles in: a bundle written here from a MONAI network builds through `medexport build`, folder and zip;
untrusted configs and archives are refused with one line and nothing written."""
import json
import os
import zipfile

import pytest
import torch
from click.testing import CliRunner

from medexport.bundles import unpack_zip
from medexport.cli import cli
from medexport.errors import InputError, ModelLoadError
from medexport.loading import ModelSpec, load_model

NETWORK = {"_target_": "UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [4, 8, 16],
           "strides": [2, 2], "num_res_units": 1}


def _write_bundle(root, network=NETWORK):
    from monai.bundle import ConfigParser

    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps({"network_def": network, "device": "cpu"}))
    metadata = {"name": "tiny_tissue_unet", "version": "0.1.0", "network_data_format": {
        "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": [64, 64]}},
        "outputs": {"pred": {"type": "image", "num_channels": 3,
                             "channel_def": {"0": "background", "1": "grey_matter", "2": "white_matter"}}}}}
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata))
    torch.manual_seed(0)
    net = ConfigParser({"network_def": NETWORK}).get_parsed_content("network_def")
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


@pytest.fixture
def bundle(tmp_path):
    return _write_bundle(tmp_path / "tiny_tissue_unet")


def _zip(bundle, dest):
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(bundle.rglob("*")):
            zf.write(path, path.relative_to(bundle.parent).as_posix())
    return dest


def test_a_bundle_folder_loads_with_its_shape_classes_and_weights(bundle):
    loaded = load_model(ModelSpec(model=str(bundle)))
    assert loaded.kind == "bundle" and loaded.input_shape == (1, 1, 64, 64)
    assert loaded.provenance["class_names"] == ["background", "grey_matter", "white_matter"]
    saved = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(loaded.module.state_dict()[k], v) for k, v in saved.items())


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_a_bundle_builds_on_onnxruntime(bundle, tmp_path, form):
    model = bundle if form == "folder" else _zip(bundle, tmp_path / "tiny_tissue_unet.zip")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["build", "--model", str(model), "--no-latency", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["backend_parity"]["max_abs_error"] < 1e-4
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["shape"] == [1, 1, 64, 64]
    assert report["provenance"]["monai_bundle"] == "tiny_tissue_unet"
    assert not list(tmp_path.glob("medexport-bundle-*"))


@pytest.mark.parametrize("network, what", [
    ({**NETWORK, "_target_": "os.system"}, "'os.system', which is not a monai.networks class"),
    ({**NETWORK, "channels": "$__import__('os').system('touch pwned') or [4, 8, 16]"}, "an expression"),
    ({**NETWORK, "_requires_": "$print('hi')"}, "'_requires_'"),
])
def test_a_config_that_would_run_code_is_refused_unless_trusted(tmp_path, network, what):
    root = _write_bundle(tmp_path / "b", network)
    with pytest.raises(ModelLoadError, match="--trust-pickle") as info:
        load_model(ModelSpec(model=str(root)))
    assert what in str(info.value)
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


def _evil_zip(path, name, data=b"x", link=False):
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo(name)
        if link:
            info.external_attr = 0o120777 << 16
        zf.writestr(info, data)
    return path


@pytest.mark.parametrize("name, link, message", [
    ("../escaped.txt", False, "points outside the bundle folder"),
    ("b/../../escaped.txt", False, "points outside the bundle folder"),
    ("/tmp/escaped.txt", False, "points outside the bundle folder"),
    ("b/configs/link", True, "is a link"),
])
def test_unsafe_zip_entries_are_refused_and_nothing_is_written(tmp_path, name, link, message):
    archive = _evil_zip(tmp_path / "evil.zip", name, b"../../etc" if link else b"x", link)
    dest = tmp_path / "unpack" / "here"
    dest.mkdir(parents=True)
    with pytest.raises(InputError, match=message):
        load_model(ModelSpec(model=str(archive)))
    with pytest.raises(InputError, match=message):
        unpack_zip(archive, dest)
    assert list(dest.iterdir()) == [] and not (tmp_path / "unpack" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()


def test_a_zip_that_unpacks_far_beyond_reason_is_refused(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("b/models/model.pt", b"\0" * (4 << 20))
    assert archive.stat().st_size < 64 << 10
    dest = tmp_path / "unpack"
    dest.mkdir()
    with pytest.raises(InputError, match="4194304 bytes, beyond the 1048576 a bundle may hold"):
        unpack_zip(archive, dest, limit=1 << 20)
    assert not any(p.is_file() for p in dest.rglob("*"))


def test_the_cli_refuses_an_unsafe_bundle_on_one_line(tmp_path):
    archive = _evil_zip(tmp_path / "evil.zip", "../escaped.txt")
    result = CliRunner().invoke(cli, ["export", "--model", str(archive), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "medexport: error: evil.zip: entry '../escaped.txt' points outside the bundle folder; refusing the archive"]
