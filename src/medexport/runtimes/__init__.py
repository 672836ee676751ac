"""Backends: one subpackage per runtime, each with the same two roles (builder, runner), described in one registry.

Backends are imported lazily through :func:`get_backend`, so ``import medexport`` works with none of
OpenVINO or TensorRT installed.
"""
from medexport.runtimes._base import BuildResult, Builder, Runner
from medexport.runtimes._packages import (PACKAGE_TARGETS, PackageTarget, get_package_target,
                                          package_target_choices, register_package_target, resolve_package_target)
from medexport.runtimes._registry import (BACKENDS, PRECISIONS, BackendSpec, artifact_suffixes, get_backend,
                                          get_spec, list_backends, list_targets, make_builder, open_runner,
                                          register_backend, resolve_backend, resolve_target, target_choices,
                                          target_for, timed_backends, unregister_backend)

__all__ = ["BACKENDS", "PACKAGE_TARGETS", "PRECISIONS", "BackendSpec", "BuildResult", "Builder", "PackageTarget",
           "Runner", "artifact_suffixes", "get_backend", "get_package_target", "get_spec", "list_backends",
           "list_targets", "make_builder", "open_runner", "package_target_choices", "register_backend",
           "register_package_target", "resolve_backend", "resolve_package_target", "resolve_target",
           "target_choices", "target_for", "timed_backends", "unregister_backend"]
