"""`medexport compress` and `build --compress`: budget met, guard rails against the ORIGINAL model."""
import json

import pytest

from medexport.errors import GuardRailError
from medexport.loading import ModelSpec
from medexport.pipeline import BuildConfig, run_build, run_compress


def test_compress_is_checked_against_the_original_and_refused_when_it_hurts(tmp_path):
    config = BuildConfig(model=ModelSpec(), out_dir=tmp_path, compress="svd", budget="3x")
    with pytest.raises(GuardRailError, match="guard rail broken for 'model.compressed.onnx'"):
        run_compress(config)
    record = json.loads((tmp_path / "compress.json").read_text())  # the user still sees what happened
    assert record["compression"]["macs_before"] / record["compression"]["macs_after"] == pytest.approx(3, rel=0.05)
    assert record["onnx_parity"]["passed"]


def test_build_with_compression_validates_against_the_uncompressed_model(tmp_path):
    config = BuildConfig(model=ModelSpec(), out_dir=tmp_path, compress="tucker", budget="1.5x", latency=False,
                         max_overall_drop=100, max_class_drop=100)
    report = run_build(config).to_dict()
    ref = report["validation"]["reference"]["overall"]["dice"]["value"]
    assert ref == pytest.approx(0.885, abs=2e-3)  # the original model's card value, not the compressed one's
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["artifact"] == "model.compressed.onnx"
    assert manifest["compression"]["method"] == "tucker" and manifest["compression"]["layers"]


def test_cli_prunes_the_reference_model_within_the_guard_rails(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "medexport", "compress", "--method", "prune-l1", "--ratio", "0.25",
                           "--out", "p"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "p" / "compress.json").read_text())
    assert record["compression"]["method"] == "prune-l1"
    assert record["compression"]["macs_before"] / record["compression"]["macs_after"] > 1.3
    assert record["validation"]["guard_rails"]["passed"]
