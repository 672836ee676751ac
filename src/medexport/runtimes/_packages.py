"""Package targets: where an edge package runs, each naming the backend (in ``_registry``) that runs it there.

One source of truth: a package target adds only what a package needs beyond its backend's spec (the device it is
for, whether the device builds its own engine, whether DLA can exist there). Example::

    resolve_package_target("ov")              # 'openvino-cpu'
    get_package_target("jetson").backend      # 'tensorrt'
"""
from __future__ import annotations

from dataclasses import dataclass

from medexport.errors import InputError
from medexport.runtimes._registry import resolve_backend


@dataclass(frozen=True)
class PackageTarget:
    """A device a package is made for.

    ``backend``: the registered backend that runs the package there. ``builds_on_device``: the package ships ONNX
    files and ``build_on_device.sh`` (TensorRT engines are tied to the GPU and TensorRT version they were built
    on); otherwise it ships the backend's artifact itself. ``dla``: the device may have DLA cores (Jetson Orin).
    ``device``: what the runner asks the backend for (ONNX Runtime provider, OpenVINO device); ``None``: its
    default. ``aliases``: short names :func:`resolve_package_target` accepts.
    """

    name: str
    backend: str
    description: str
    aliases: tuple[str, ...] = ()
    builds_on_device: bool = False
    dla: bool = False
    device: str | None = None


PACKAGE_TARGETS: dict[str, PackageTarget] = {}


def register_package_target(target: PackageTarget) -> PackageTarget:
    """Add ``target``; its backend must be registered, and its name and aliases new."""
    resolve_backend(target.backend)
    taken = {n for t in PACKAGE_TARGETS.values() if t.name != target.name for n in (t.name, *t.aliases)}
    clash = [n for n in (target.name, *target.aliases) if n in taken]
    if clash:
        raise InputError(f"package target '{target.name}' claims {', '.join(clash)}, which another target has")
    PACKAGE_TARGETS[target.name] = target
    return target


for _target in (
    PackageTarget("jetson", "tensorrt", "NVIDIA Jetson (JetPack 6.x: TensorRT 10.3; 7.x: 10.13/10.16, or 11 from "
                  "JetPack 7.2.2): ONNX files and build_on_device.sh", builds_on_device=True, dla=True),
    PackageTarget("trt-workstation", "tensorrt", "x86 workstation with an NVIDIA GPU, TensorRT 10 or 11: ONNX files "
                  "and build_on_device.sh", aliases=("trt",), builds_on_device=True),
    PackageTarget("openvino-cpu", "openvino", "OpenVINO IR on an x86/ARM CPU", aliases=("ov",), device="CPU"),
    PackageTarget("onnxruntime", "onnxruntime", "ONNX Runtime on the CPU (or CUDA with onnxruntime-gpu)",
                  aliases=("ort",)),
):
    register_package_target(_target)
del _target


def package_target_choices() -> list[str]:
    """Every package target name and alias (CLI choices)."""
    return [n for t in PACKAGE_TARGETS.values() for n in (t.name, *t.aliases)]


def resolve_package_target(name: str) -> str:
    """The canonical package target for a name or alias; InputError listing the choices otherwise."""
    for target in PACKAGE_TARGETS.values():
        if name == target.name or name in target.aliases:
            return target.name
    shown = ", ".join(f"{t.name} ({', '.join(t.aliases)})" if t.aliases else t.name for t in PACKAGE_TARGETS.values())
    raise InputError(f"unknown package target '{name}'; choose one of: {shown}")


def get_package_target(name: str) -> PackageTarget:
    """The package target ``name`` (or alias)."""
    return PACKAGE_TARGETS[resolve_package_target(name)]
