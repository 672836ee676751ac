"""Backends: one subpackage per runtime, each with the same two roles (builder, runner).

Backends are imported lazily through :func:`get_backend`, so ``import medexport`` works with none of
OpenVINO or TensorRT installed.
"""
from medexport.runtimes._base import BuildResult, Builder, Runner
from medexport.runtimes._registry import BACKENDS, BackendSpec, get_backend, list_backends, make_builder, open_runner, timed_backends

__all__ = ["BACKENDS", "BackendSpec", "BuildResult", "Builder", "Runner", "get_backend", "list_backends",
           "make_builder", "open_runner", "timed_backends"]
