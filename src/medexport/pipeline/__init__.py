"""The chain behind the CLI verbs: configuration, shared stages, `build`, and the partial verbs."""
from medexport.pipeline._stages import reference_runner
from medexport.pipeline.build import BuildReport, run_build
from medexport.pipeline.config import FP32_RTOL, FP32_TOLERANCE, BuildConfig
from medexport.pipeline.verbs import run_compress, run_export, run_quantize

__all__ = ["FP32_RTOL", "FP32_TOLERANCE", "BuildConfig", "BuildReport", "reference_runner", "run_build",
           "run_compress", "run_export", "run_quantize"]
