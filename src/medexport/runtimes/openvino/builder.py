"""ONNX -> OpenVINO IR (.xml/.bin), compiled once to prove the target device accepts it."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from medexport.errors import ExportError
from medexport.runtimes._base import BuildResult
from medexport.runtimes._base import Builder as _Builder
from medexport.runtimes.openvino.runner import Runner


class Builder(_Builder):
    """Converts ONNX with ``openvino.convert_model`` and saves the IR without FP16 weight compression."""

    backend = "openvino"

    def __init__(self, *, device: str | None = None, precision: str = "fp32", max_batch: int = 8):
        """``device``: the OpenVINO device to compile for (default CPU); ``precision`` "fp16" saves an FP16 IR
        and asks for f16 inference; the batch stays dynamic, so ``max_batch`` is not used."""
        self.device = device or "CPU"
        self.precision = precision

    def build_impl(self, onnx_path: Path, out_dir: Path) -> BuildResult:
        import openvino as ov

        xml = out_dir / f"{onnx_path.stem}.xml"
        bin_ = xml.with_suffix(".bin")
        try:
            model = ov.convert_model(str(onnx_path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO's frontends raise generic errors
            raise ExportError(f"OpenVINO cannot convert {onnx_path.name}: {str(exc).splitlines()[0][:200]}") from exc
        # save into a scratch folder, then move the .bin before the .xml: never an .xml without its .bin
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".ov-") as scratch:
            staged = Path(scratch) / xml.name
            ov.save_model(model, str(staged), compress_to_fp16=self.precision == "fp16")
            os.replace(staged.with_suffix(".bin"), bin_)
            os.replace(staged, xml)
        with Runner(xml, device=self.device, precision=self.precision) as runner:
            info = runner.describe()
        if self.precision == "fp16" and "16" not in str(info.get("inference_precision", "")):
            info["note"] = (f"{self.device} has no FP16 arithmetic (OpenVINO's CPU plugin needs AVX512-FP16 or "
                            f"AMX-FP16): the FP16 IR (half the size on disk) runs in "
                            f"{info.get('inference_precision', 'f32')}, so expect FP32 speed")
        return BuildResult(self.backend, xml, [xml, bin_], info)

