"""The backends, each described once: what it needs, what it builds and opens, and how a build treats it.

A backend is one :class:`BackendSpec` here plus its subpackage; everything else (CLI choices, the target of an
artifact from its suffix, the default INT8 layout, who makes FP16, where latency can be measured on this CPU)
reads the spec. Subpackages are imported on first use only, so ``import medexport`` works with none of OpenVINO
or TensorRT installed. Example::

    resolve_target("ov")                          # 'openvino'
    target_for(Path("out/model.plan"))            # 'tensorrt'
    make_builder("ort").build("model.onnx", "out/")
    with open_runner("out/model.xml", "openvino", threads=2) as runner:
        runner(batch)
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from medexport.errors import BackendUnavailableError, InputError, ModelLoadError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class BackendSpec:
    """A backend: its subpackage, the package it needs and the extra that installs it, and what a build asks of it.

    ``module`` exposes ``Builder(*, device=None, precision="fp32", max_batch=8)`` and
    ``Runner(path, *, device=None, threads=None, precision="fp32")``; each ignores what it does not use.
    ``distributions``: the installed distributions that count as ``requires`` (default: ``requires`` itself).
    ``aliases``: short names ``resolve_target`` accepts ("ov"). ``suffixes``: artifact suffixes its runner opens,
    for :func:`target_for` (none: it opens no file, as torch runs a module). ``default_layout``: the INT8 QDQ
    layout a build for it gets unless asked otherwise (:mod:`medexport.calibration.choices`).
    ``fp16_by_builder``: its builder makes FP16 itself from the FP32 ONNX (OpenVINO's FP16 IR); otherwise the
    pipeline converts the ONNX to FP16 first. ``build_target``: a ``--target`` (torch is the reference, not one).
    ``timed_here``: runs on this CPU, so latency can be measured on it (same-runtime FP32 baselines,
    ``--latency-backend``). ``install_note``: what else it needs, added to the not-installed error.
    """

    name: str
    module: str
    requires: str
    extra: str | None
    description: str
    distributions: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    default_layout: str = "tensorrt"
    fp16_by_builder: bool = False
    build_target: bool = True
    timed_here: bool = False
    install_note: str = ""

    def available(self) -> bool:
        """Importable and installed as a distribution (a stray folder named like the package does not count)."""
        if importlib.util.find_spec(self.requires) is None:
            return False
        return any(_installed(dist) for dist in self.distributions or (self.requires,))

    def load(self) -> ModuleType:
        """Import the backend subpackage; raise BackendUnavailableError if its package is missing."""
        if not self.available():
            hint = f"pip install 'medexport[{self.extra}]'" if self.extra else f"pip install {self.requires}"
            raise BackendUnavailableError(f"the {self.name} backend needs the '{self.requires}' package, which is "
                                          f"not installed: {hint}{self.install_note}")
        return importlib.import_module(self.module)


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


BACKENDS: dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec) -> BackendSpec:
    """Add ``spec`` to the registry (again: a no-op). Its name, aliases and suffixes must be new."""
    known = BACKENDS.get(spec.name)
    if known == spec:
        return spec
    if known is not None:
        raise InputError(f"a different backend named '{spec.name}' is already registered")
    names = {n for s in BACKENDS.values() for n in (s.name, *s.aliases)}
    suffixes = {x for s in BACKENDS.values() for x in s.suffixes}
    taken = [n for n in (spec.name, *spec.aliases) if n in names] + [x for x in spec.suffixes if x in suffixes]
    if taken:
        raise InputError(f"backend '{spec.name}' claims {', '.join(taken)}, which another backend has")
    BACKENDS[spec.name] = spec
    return spec


def unregister_backend(name: str) -> None:
    """Remove a backend registered by :func:`register_backend` (tests that register a stand-in)."""
    BACKENDS.pop(resolve_backend(name))


for _spec in (
    BackendSpec("onnxruntime", "medexport.runtimes.onnxruntime", "onnxruntime", None,
                "ONNX Runtime session (CPU or the execution provider you ask for); the artifact is the ONNX itself",
                aliases=("ort",), suffixes=(".onnx",), timed_here=True),
    BackendSpec("openvino", "medexport.runtimes.openvino", "openvino", "openvino",
                "OpenVINO IR (.xml/.bin) compiled for CPU/GPU/NPU",
                aliases=("ov",), suffixes=(".xml",), default_layout="openvino", fp16_by_builder=True,
                timed_here=True),
    BackendSpec("tensorrt", "medexport.runtimes.tensorrt", "tensorrt", "tensorrt",
                "TensorRT engine (.plan) built on an NVIDIA GPU",
                distributions=("tensorrt", "tensorrt-cu12", "tensorrt-cu13"), aliases=("trt",),
                suffixes=(".plan", ".engine"), install_note=" (it also needs an NVIDIA GPU with CUDA)"),
    BackendSpec("torch", "medexport.runtimes.torch", "torch", None,
                "the PyTorch model itself (reference, and GPU latency where a GPU exists)", build_target=False),
):
    register_backend(_spec)
del _spec


def list_backends() -> list[str]:
    """Every registered backend, build targets and the torch reference alike."""
    return list(BACKENDS)


def list_targets() -> list[str]:
    """The backends a build can target, canonical names (what ``--target`` offers besides the aliases)."""
    return [s.name for s in BACKENDS.values() if s.build_target]


def timed_backends() -> list[str]:
    """The build targets whose latency can be measured on this CPU (``--latency-backend`` choices)."""
    return [s.name for s in BACKENDS.values() if s.build_target and s.timed_here]


def target_choices() -> list[str]:
    """Every name and alias ``resolve_target`` accepts: ``["onnxruntime", "ort", "openvino", "ov", ...]``."""
    return [n for s in BACKENDS.values() if s.build_target for n in (s.name, *s.aliases)]


def resolve_backend(name: str) -> str:
    """The canonical name of a registered backend or alias (``"trt"`` -> ``"tensorrt"``); InputError otherwise."""
    for spec in BACKENDS.values():
        if name == spec.name or name in spec.aliases:
            return spec.name
    raise InputError(f"unknown target '{name}'; choose one of: {_shown(BACKENDS.values())}")


def resolve_target(name: str) -> str:
    """As :func:`resolve_backend`, for build targets only (torch is refused, with the choices)."""
    known = [s.name for s in BACKENDS.values() if name in (s.name, *s.aliases)]
    if not known:
        raise InputError(f"unknown target '{name}'; choose one of: "
                         f"{_shown(s for s in BACKENDS.values() if s.build_target)}")
    canonical = known[0]
    if not BACKENDS[canonical].build_target:
        raise InputError(f"'{name}' is not a build target; choose one of: "
                         f"{_shown(s for s in BACKENDS.values() if s.build_target)}")
    return canonical


def _shown(specs) -> str:
    return ", ".join(f"{s.name} ({', '.join(s.aliases)})" if s.aliases else s.name for s in specs)


def get_spec(name: str) -> BackendSpec:
    """The spec of a backend, by name or alias."""
    return BACKENDS[resolve_backend(name)]


def get_backend(name: str) -> ModuleType:
    """The backend subpackage ``name`` (which exposes ``Builder`` and ``Runner``), imported on demand."""
    return get_spec(name).load()


def artifact_suffixes() -> dict[str, str]:
    """Artifact suffix -> the backend that opens it: ``{".onnx": "onnxruntime", ".xml": "openvino", ...}``."""
    return {suffix: s.name for s in BACKENDS.values() for suffix in s.suffixes}


def target_for(path: Path) -> str:
    """The backend that runs ``path``, from its suffix (``model.xml`` -> ``"openvino"``)."""
    known = artifact_suffixes()
    try:
        return known[Path(path).suffix.lower()]
    except KeyError:
        raise InputError(f"cannot tell the backend of {Path(path).name}: pass --target "
                         f"(known suffixes: {', '.join(known)})") from None


def make_builder(target: str, *, device: str | None = None, max_batch: int = 8, precision: str = "fp32"):
    """The builder of ``target`` (name or alias) for ``device`` (ONNX Runtime provider, OpenVINO device).

    ``precision`` matters to builders that make it themselves (``fp16_by_builder``: OpenVINO's FP16 IR); the
    others take it from the ONNX they are given (FP32, FP16 or QDQ INT8). ``max_batch``: TensorRT's profile.
    """
    spec = BACKENDS[resolve_target(target)]
    return spec.load().Builder(device=device, precision=precision, max_batch=max_batch)


def open_runner(path, target: str, *, device: str | None = None, threads: int | None = None,
                precision: str = "fp32", **options):
    """A runner for the artifact at ``path`` on ``target``; raises ModelLoadError if the file is missing.
    ``options``: backend-specific keywords of its Runner (OpenVINO's ``mode``, ``streams``, ``nireq``)."""
    spec = get_spec(target)
    if not spec.suffixes:
        raise InputError(f"the {spec.name} backend opens no artifact file ({spec.description})")
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"artifact not found: {path}")
    return spec.load().Runner(path, device=device, threads=threads, precision=precision, **options)
