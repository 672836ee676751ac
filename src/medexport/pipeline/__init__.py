"""The chain behind the CLI verbs: configuration, the run context, shared stages, `build`, and the partial verbs."""
from medexport.pipeline.build import BuildReport, run_build
from medexport.pipeline.config import (FP32_RTOL, FP32_TOLERANCE, BuildConfig, CompressionConfig, DataConfig,
                                       LatencyConfig, ParityConfig, QuantizationConfig)
from medexport.pipeline.context import RunContext, reference_runner
from medexport.pipeline.recipe import read_recipe
from medexport.pipeline.verbs import run_compress, run_export, run_quantize, run_validate

__all__ = ["FP32_RTOL", "FP32_TOLERANCE", "BuildConfig", "BuildReport", "CompressionConfig", "DataConfig",
           "LatencyConfig", "ParityConfig", "QuantizationConfig", "RunContext", "read_recipe", "reference_runner",
           "run_build", "run_compress", "run_export", "run_quantize", "run_validate"]
