"""The torch runtime: FP16 and torch.compile variants, and GPU latency where a GPU exists (tests marked gpu are
skipped on machines without CUDA)."""
import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from medexport.bench.latency import WarmupRule, measure_latency
from medexport.runtimes.torch import Runner
from medexport.zoo.samples import real_inputs


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet(2, 1, 3, (8, 16, 32), (2, 2), num_res_units=1).eval()


def test_describe_says_dtype_compile_and_threads(unet):
    images = real_inputs((2, 1, 64, 64), 2)
    threads = torch.get_num_threads()   # process-wide in torch: the test must leave it as it was
    runner = Runner(unet, (1, 1, 64, 64), threads=threads)
    info = runner.describe()
    assert info == {"backend": "torch", "devices": ["cpu"], "dtype": "float32", "compiled": False, "threads": threads}
    assert runner(images).shape == (2, 3, 64, 64) and runner.peak_gpu_memory_mib() is None


@pytest.mark.slow
def test_torch_compile_matches_eager_on_cpu(unet):
    images = real_inputs((1, 1, 64, 64), 1)
    eager = Runner(unet, (1, 1, 64, 64))(images)
    compiled = Runner(unet, (1, 1, 64, 64), compile=True)
    assert compiled.describe()["compiled"] is True
    assert np.abs(compiled(images) - eager).max() < 1e-4


def test_onnxruntime_without_cuda_names_the_gpu_wheel(tmp_path):
    import onnxruntime as ort

    from medexport.errors import BackendUnavailableError
    from medexport.exporter import export_onnx
    from medexport.runtimes.onnxruntime import Runner as OrtRunner

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has the CUDA provider")
    path = export_onnx(torch.nn.Conv2d(1, 2, 3), (1, 1, 8, 8), tmp_path / "c.onnx").path
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        OrtRunner(path, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,compile", [("float32", False), ("float16", False), ("float32", True)])
def test_gpu_latency_and_memory(unet, dtype, compile):
    images = real_inputs((1, 1, 64, 64), 1)
    eager_cpu = Runner(unet, (1, 1, 64, 64))(images)
    runner = Runner(unet, (1, 1, 64, 64), device="cuda", dtype=dtype, compile=compile)
    result = measure_latency(runner.infer, images, warmup=WarmupRule(), iterations=20, min_seconds=0)
    assert result.median_ms > 0 and runner.peak_gpu_memory_mib() > 0
    assert np.abs(runner(images) - eager_cpu).max() < (5e-2 if dtype == "float16" else 1e-3)


@pytest.mark.gpu
def test_onnxruntime_cuda_provider(tmp_path, unet):
    from medexport.exporter import export_onnx
    from medexport.runtimes.onnxruntime import Runner as OrtRunner

    path = export_onnx(unet, (1, 1, 64, 64), tmp_path / "u.onnx").path
    images = real_inputs((1, 1, 64, 64), 1)
    with OrtRunner(path, device="cuda") as runner:
        assert runner.devices()[0] == "CUDAExecutionProvider"
        assert np.abs(runner(images) - Runner(unet, (1, 1, 64, 64))(images)).max() < 1e-3
