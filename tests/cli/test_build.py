"""`medexport build` with no arguments: the trained 2D model, per-class validation, a complete manifest."""
import json

import pytest

from medexport._io import sha256
from medexport.loading import ModelSpec
from medexport.pipeline import BuildConfig, DataConfig, LatencyConfig, run_build


@pytest.fixture(scope="module")
def default_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    run_build(BuildConfig(model=ModelSpec(), out_dir=out, latency=LatencyConfig(iterations=5)))
    return out


def test_default_build_validates_per_class_against_torch(default_build):
    report = json.loads((default_build / "report.json").read_text())
    assert report["model"] == "brain-tissue-unet2d" and report["target"] == "onnxruntime"
    assert report["backend_parity"]["max_abs_error"] < 1e-4
    rails = report["validation"]["guard_rails"]
    assert rails["passed"]
    classes = {row["name"] for row in rails["rows"] if row["scope"] == "class"}
    assert classes == {"grey_matter", "white_matter"}
    per_class = report["validation"]["artifact"]["per_class"]
    assert per_class["grey_matter"]["dice"]["value"] > 0.8
    assert "| class | grey_matter |" in (default_build / "report.md").read_text()
    assert report["latency"]["onnxruntime"]["median_ms"] > 0


def test_manifest_hashes_every_file(default_build):
    manifest = json.loads((default_build / "manifest.json").read_text())
    on_disk = {p.name for p in default_build.iterdir() if p.name != "manifest.json"}
    assert set(manifest["files"]) == on_disk
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256(default_build / name)
    assert manifest["input"]["shape"] == [1, 1, 128, 128]
    assert manifest["outputs"][0]["shape"] == ["batch", 3, 128, 128]


def test_validate_fails_on_a_damaged_model_and_names_the_class(tmp_path):
    """Zero the white-matter output channel of the last up-sampling layer: `validate` must fail on it."""
    import subprocess
    import sys

    import torch

    from medexport.zoo import get_model

    ref = get_model("brain-tissue-unet2d")
    state = torch.load(ref.weights_path(), weights_only=True)
    state["model.2.conv.weight"][:, 2].zero_()  # the head ConvTranspose (in, out, k, k): output channel 2 = white matter
    torch.save(state, tmp_path / "damaged.pt")

    def medexport(*args):
        return subprocess.run([sys.executable, "-c", "from medexport.cli import main; main()", *args],
                              capture_output=True, text=True, cwd=tmp_path)

    export = medexport("export", "--model", ref.factory, "--weights", "damaged.pt", "--input-shape", "1x1x128x128",
                       "--out", "damaged")
    assert export.returncode == 0, export.stderr
    proc = medexport("validate", "damaged/model.onnx")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("medexport: error: guard rail broken") and "white_matter" in last
    table = json.loads((tmp_path / "damaged" / "validation.json").read_text())
    rows = {row["name"]: row for row in table["guard_rails"]["rows"]}
    assert not rows["white_matter"]["ok"] and rows["white_matter"]["delta_points"] < -3
    assert "white_matter" in (tmp_path / "damaged" / "validation.md").read_text()


def test_manifest_vouches_only_for_what_the_build_wrote(tmp_path):
    (tmp_path / "stale_notes.txt").write_text("left over from something else")
    run_build(BuildConfig(model=ModelSpec(input_shape=None, dynamic_batch=False), out_dir=tmp_path, latency=LatencyConfig(enabled=False)))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "stale_notes.txt" not in manifest["files"]
    assert manifest["input"]["dynamic_batch"] is False  # static batch works through validation too
    assert manifest["metrics"]["guard_rails"]["passed"]


def test_user_model_with_user_data_runs_the_guard_rails(tmp_path):
    import numpy as np

    from medexport.zoo import get_model

    ref = get_model("brain-tissue-unet2d")
    images, labels = ref.heldout()
    np.savez(tmp_path / "heldout.npz", images=images[:8], labels=labels[:8])
    user_model = ModelSpec(model=ref.factory, weights=str(ref.weights_path()), input_shape="1x1x128x128")
    report = run_build(BuildConfig(model=user_model, out_dir=tmp_path / "with", data=DataConfig(data=str(tmp_path / "heldout.npz"), task="segmentation", classes=("background", "grey_matter", "white_matter")), latency=LatencyConfig(enabled=False))).to_dict()
    assert report["validation"]["guard_rails"]["passed"]
    assert "heldout.npz" not in json.dumps(report["validation"]["data"])  # a count and a hash, not a path
    user_model = ModelSpec(model=ref.factory, weights=str(ref.weights_path()), input_shape="1x1x128x128")
    report = run_build(BuildConfig(model=user_model, out_dir=tmp_path / "without", latency=LatencyConfig(enabled=False))).to_dict()
    assert report["validation"]["skipped"].startswith("guard rails not run: no labelled data")


def test_weights_do_not_apply_to_the_reference_model(tmp_path):
    from medexport.errors import InputError

    with pytest.raises(InputError, match="not to the bundled reference model"):
        run_build(BuildConfig(model=ModelSpec(weights="x.pt"), out_dir=tmp_path, latency=LatencyConfig(enabled=False)))
    assert not (tmp_path / "manifest.json").exists()
