"""A build for a backend that is not installed here but has a static readiness check (TensorRT).

The chain still runs up to the file the backend would build from (export, parity, INT8, FP16), that file is
checked against the backend's parser, and the build is then refused on one line that says what the check found:
the user learns before shipping whether the device will take the ONNX.
"""
from __future__ import annotations

from pathlib import Path
from typing import NoReturn

from medexport.errors import BackendUnavailableError
from medexport.runtimes import get_spec


def _tensorrt(onnx_path: Path) -> str:
    from medexport.runtimes.tensorrt.readiness import VERSIONS, check_versions

    reports = check_versions(onnx_path)
    failed = [r for r in reports if not r.passed]
    if not failed:
        return (f"{onnx_path.name} passes the TensorRT {'/'.join(VERSIONS)} readiness check (onnx-tensorrt operator "
                "support): build it on the device (trtexec, or a medexport package for jetson/trt-workstation)")
    return f"{failed[0].summary()}; see all with `medexport export` then `medexport trt-check`"


_CHECKS = {"tensorrt": _tensorrt}


def checked_without_backend(target: str) -> bool:
    """True when ``target``'s package is missing here but a static check can stand in for the build."""
    spec = get_spec(target)
    return spec.name in _CHECKS and not spec.available()


def refuse_after_check(target: str, onnx_path: Path) -> NoReturn:
    """Run ``target``'s static check on ``onnx_path``, then refuse the build naming the missing package."""
    spec = get_spec(target)
    try:
        spec.load()
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(f"{exc}; {_CHECKS[spec.name](onnx_path)}") from None
    raise AssertionError(f"{spec.name} is installed; nothing to refuse")
