"""`medexport quantize`: real calibration data only, a QDQ model that passes the TensorRT rules."""
import json
import subprocess
import sys

import numpy as np
import pytest

from medexport.calibration.qdq_check import check_qdq

TINY = ["--model", "monai.networks.nets:UNet", "--input-shape", "1x1x64x64", "--model-kwargs",
        json.dumps({"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2]})]


def medexport(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "medexport", *args], capture_output=True, text=True, cwd=tmp_path)


def test_quantize_reference_model_holds_guard_rails(tmp_path):
    proc = medexport(tmp_path, "quantize", "--out", "q")
    assert proc.returncode == 0, proc.stderr
    assert check_qdq(tmp_path / "q" / "model.int8.qdq.onnx") == []
    recipe = json.loads((tmp_path / "q" / "quantize.json").read_text())
    assert recipe["guard_rails"]["passed"]
    assert recipe["quantization"]["calibration_images"] == 32
    assert len(recipe["quantization"]["calibration_sha256"]) == 64


def test_user_model_without_calibration_data_is_refused(tmp_path):
    proc = medexport(tmp_path, "quantize", "--out", "q", *TINY)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("medexport: error: no calibration data")
    assert not (tmp_path / "q" / "model.int8.qdq.onnx").exists()


def test_calibration_from_a_folder_of_real_scans(tmp_path, shared_data):
    proc = medexport(tmp_path, "quantize", "--out", "q", "--calib", str(shared_data / "pyradiomics"),
                     "--calib-samples", "16", *TINY)
    assert proc.returncode == 0, proc.stderr
    recipe = json.loads((tmp_path / "q" / "quantize.json").read_text())
    assert recipe["calibration_data"]["count"] == 16
    assert "brain1_image.nrrd" not in json.dumps(recipe)  # hashes and counts, never file names
    assert check_qdq(tmp_path / "q" / "model.int8.qdq.onnx") == []


def test_exclude_reaches_the_shared_quantize_stage(tmp_path, shared_data):
    """--exclude goes through BuildConfig into the stage `build --precision int8` uses: an unknown node is refused."""
    proc = medexport(tmp_path, "quantize", "--out", "q", "--calib", str(shared_data / "pyradiomics"),
                     "--calib-samples", "4", "--exclude", "no/such/Conv", *TINY)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == ("medexport: error: nodes_to_exclude names nodes that are not in "
                                                    "model.onnx: no/such/Conv")
    assert not (tmp_path / "q" / "model.int8.qdq.onnx").exists()


def test_build_int8_is_validated_against_the_fp32_original(tmp_path):
    from medexport.loading import ModelSpec
    from medexport.pipeline import BuildConfig, LatencyConfig, QuantizationConfig, run_build

    report = run_build(BuildConfig(model=ModelSpec(), out_dir=tmp_path, quantization=QuantizationConfig(precision="int8"), latency=LatencyConfig(enabled=False))).to_dict()
    assert report["validation"]["guard_rails"]["passed"]
    ref = report["validation"]["reference"]["overall"]["dice"]["value"]
    art = report["validation"]["artifact"]["overall"]["dice"]["value"]
    assert abs(ref - art) < 0.01  # int8 moves Dice by a fraction of a point, within the 1-point rail
    kept = report["backend_parity"]   # not a gate, but said in every build: what INT8 changed of FP32's decisions
    assert kept["n_inputs"] == 8 and 0.98 < kept["decisions"]["agreement"] < 1
    assert 0 < kept["max_abs_error"] < kept["output_range"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["artifact"] == "model.int8.qdq.onnx"
    assert manifest["calibration"]["quantization"]["calibration_images"] == 32
    assert check_qdq(tmp_path / "model.int8.qdq.onnx") == []


@pytest.mark.openvino
def test_nncf_engine_writes_an_openvino_ir_checked_by_the_guard_rails(tmp_path):
    proc = medexport(tmp_path, "quantize", "--int8-engine", "nncf", "--out", "q")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "q" / "model.int8.nncf.xml").is_file() and (tmp_path / "q" / "model.int8.nncf.bin").is_file()
    assert not (tmp_path / "q" / "model.int8.qdq.onnx").exists()
    recipe = json.loads((tmp_path / "q" / "quantize.json").read_text())
    assert recipe["quantization"]["engine"] == "nncf" and not recipe["quantization"]["accuracy_control"]
    assert recipe["guard_rails"]["passed"]
    rows = {r["name"]: r for r in recipe["guard_rails"]["rows"]}
    assert abs(rows["white_matter"]["delta_points"]) < 3.0


def test_accuracy_control_without_the_nncf_engine_is_refused(tmp_path):
    proc = medexport(tmp_path, "quantize", "--accuracy-control", "--out", "q")
    assert proc.returncode == 1
    assert "--accuracy-control is NNCF's; add --int8-engine nncf" in proc.stderr


@pytest.mark.openvino
@pytest.mark.slow
def test_build_with_the_nncf_engine_keeps_the_guard_rails(tmp_path):
    from medexport.loading import ModelSpec
    from medexport.pipeline import BuildConfig, LatencyConfig, QuantizationConfig, run_build

    report = run_build(BuildConfig(model=ModelSpec(), out_dir=tmp_path, target="openvino", quantization=QuantizationConfig(precision="int8", engine="nncf"), latency=LatencyConfig(enabled=False))).to_dict()
    assert report["build"]["artifact"] == "model.int8.nncf.xml"
    assert report["calibration"]["quantization"]["engine"] == "nncf"
    assert report["validation"]["guard_rails"]["passed"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {"model.int8.nncf.xml", "model.int8.nncf.bin"} <= set(manifest["files"])


@pytest.mark.openvino
def test_build_for_openvino_uses_the_openvino_layout_and_says_so(tmp_path):
    from medexport.loading import ModelSpec
    from medexport.pipeline import BuildConfig, LatencyConfig, QuantizationConfig, run_build

    report = run_build(BuildConfig(model=ModelSpec(), out_dir=tmp_path, target="openvino", quantization=QuantizationConfig(precision="int8"), latency=LatencyConfig(enabled=False))).to_dict()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["quantization"]["layout"] == "openvino"   # the OpenVINO target's default
    assert report["calibration"]["quantization"]["config"]["layout"] == "openvino"
    assert report["validation"]["guard_rails"]["passed"]
    rows = {r["name"]: r for r in report["validation"]["guard_rails"]["rows"]}
    assert abs(rows["white_matter"]["delta_points"]) < 3.0
    qdq = tmp_path / "model.int8.qdq.onnx"
    assert check_qdq(qdq) == [] and check_qdq(qdq, profile="tensorrt")   # OpenVINO's file, not TensorRT's
    assert "openvino QDQ layout for openvino only (the tensorrt placement with uint8 zero-point-0 ReLU" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_an_onnxruntime_int8_build_says_when_it_is_slower_than_fp32(tmp_path):
    from medexport.loading import ModelSpec
    from medexport.pipeline import BuildConfig, LatencyConfig, QuantizationConfig, run_build

    report = run_build(BuildConfig(model=ModelSpec(), out_dir=tmp_path, quantization=QuantizationConfig(precision="int8"), latency=LatencyConfig(iterations=10))).to_dict()
    latency = report["latency"]
    assert latency["onnxruntime FP32"]["median_ms"] > 0
    # measured 0.56x on the 2D reference U-Net (benchmarks/int8.py): the TensorRT-layout QDQ file is slow on ORT's CPU
    assert latency["speedup_vs_fp32"] < 1.0
    assert "ran slower than onnxruntime FP32" in latency["warning"] and "ort-u8s8" in latency["warning"]
    assert "Speedup over the same runtime in FP32" in (tmp_path / "report.md").read_text()


def in_process(capsys, tmp_path, *args) -> tuple[int, str]:
    """Run the CLI in this process (no interpreter start-up): its exit code and what it wrote to stderr."""
    from medexport.cli import main

    try:
        main([*args[:1], "--out", str(tmp_path / "q"), *args[1:]])
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.skipif(__import__("pydicom.pixels").pixels.get_decoder("1.2.840.10008.1.2.4.80").is_available,
                    reason="a JPEG-LS decoder is installed here")
def test_too_few_usable_calibration_images_are_refused_and_min_calib_accepts_them(tmp_path, capsys):
    """One readable MRI and one JPEG-LS file no decoder here reads: one image is too few to calibrate on unless
    --min-calib says so; either way the skipped file is reported with the package that reads it."""
    import shutil

    from pydicom.data import get_testdata_file

    calib = tmp_path / "calib"
    calib.mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), calib / "mr.dcm")
    shutil.copy(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"), calib / "mr_jls.dcm")
    code, err = in_process(capsys, tmp_path, "quantize", "--calib", str(calib), *TINY)
    assert code == 1
    assert err.strip().splitlines()[-1].startswith(
        "medexport: error: only 1 usable calibration image in --calib, fewer than the minimum of 8; 1 file gave "
        "none: mr_jls.dcm (no decoder installed for its JPEG-LS Lossless Image Compression pixel data: pip install "
        '"medexport[dicom]"')
    assert not (tmp_path / "q" / "model.int8.qdq.onnx").exists()

    code, err = in_process(capsys, tmp_path, "quantize", "--calib", str(calib), "--min-calib", "1", *TINY)
    assert code == 0, err
    assert "medexport: warning: skipped 1 of 2 image files: mr_jls.dcm (no decoder installed" in err
    data = json.loads((tmp_path / "q" / "quantize.json").read_text())["calibration_data"]
    assert data["count"] == 1 and data["skipped_files"] == 1
    assert any('"medexport[dicom]"' in reason for reason in data["skipped_reasons"])
    assert "mr_jls" not in json.dumps(data)


def test_a_3d_model_calibrates_on_npy_crops_saved_with_a_channel_axis(tmp_path, capsys, shared_data):
    """Crops of a real brain MRI saved as (1, D, H, W), as a 3D training pipeline saves them."""
    import SimpleITK as sitk

    vol = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "pyradiomics" / "brain1_image.nrrd")))
    calib = tmp_path / "crops"
    calib.mkdir()
    for i in range(8):
        y, x = 64 + 16 * (i // 4), 64 + 16 * (i % 4)
        np.save(calib / f"crop{i}.npy", vol[None, 4:20, y:y + 96, x:x + 96].astype(np.float32))
    net = json.dumps({"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2]})
    code, err = in_process(capsys, tmp_path, "quantize", "--calib", str(calib), "--model", "monai.networks.nets:UNet",
                           "--input-shape", "1x1x16x32x32", "--model-kwargs", net)
    assert code == 0, err
    data = json.loads((tmp_path / "q" / "quantize.json").read_text())["calibration_data"]
    assert data["count"] == 8 and data["skipped_files"] == 0
    assert {tuple(source["shape"]) for source in data["sources"]} == {(16, 96, 96)}
    assert check_qdq(tmp_path / "q" / "model.int8.qdq.onnx") == []
