"""End-to-end latency on real scans: every stage timed, volumes tiled by sliding window."""
import pytest

from medexport.bench.endtoend import end_to_end
from medexport.bench.run import bench_artifact
from medexport.errors import InputError
from medexport.imaging.spec import PreprocessSpec
from medexport.runtimes import open_runner


def test_2d_model_on_a_real_mri_volume_slice_by_slice(unet2d_onnx, shared_data):
    scan = shared_data / "pyradiomics" / "breast1_image.nrrd"   # 21 x 120 x 45 MRI
    with open_runner(unet2d_onnx, "onnxruntime", threads=1) as runner:
        result = end_to_end(runner.infer, scan, PreprocessSpec(spatial_size=(64, 64)), repeats=2)
    assert result["images"] == 21 and result["input_shape"] == [1, 64, 64] and result["sliding_window_roi"] is None
    stages = result["stages"]
    assert set(stages) == {"read_preprocess", "infer", "postprocess"}
    assert all(s["median_ms"] > 0 for s in stages.values())
    assert result["total"]["median_ms"] >= stages["infer"]["median_ms"] + stages["read_preprocess"]["median_ms"] * 0.5


def test_3d_model_tiles_a_larger_volume(unet3d_onnx, shared_data):
    scan = shared_data / "pyradiomics" / "breast1_image.nrrd"
    result = bench_artifact(unet3d_onnx, target=None, device=None, batches=[1], input_shape=None, iterations=2,
                            warmup=1, threads=1, min_seconds=0, e2e_input=scan, e2e_size=(24, 32, 32), e2e_repeats=1)
    e2e = result["end_to_end"]
    assert e2e["sliding_window_roi"] == [16, 16, 16] and e2e["input_shape"] == [1, 24, 32, 32]
    # compute-only is one 16^3 patch; end to end reads the scan and runs several overlapping patches
    assert e2e["stages"]["infer"]["median_ms"] > result["latency"][0]["median_ms"]
    with pytest.raises(InputError, match="one size per spatial axis"):
        bench_artifact(unet3d_onnx, target=None, device=None, batches=[1], input_shape=None, iterations=1,
                       warmup=0, threads=1, min_seconds=0, e2e_input=scan, e2e_size=(32, 32))
