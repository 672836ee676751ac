"""Turn what the user hands us (factory + checkpoint, a torch.export .pt2, an ONNX file, a MONAI bundle folder or
zip (:mod:`medexport.bundles`), a model spec file, or nothing: the bundled reference model) into a model ready for
the chain.

Checkpoints are loaded with ``torch.load(weights_only=True)``; a pickled module is refused unless
the user passes ``trust_pickle=True`` (``--trust-pickle``), because unpickling runs arbitrary code.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import logging
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medexport._io import sha256
from medexport.errors import InputError, ModelLoadError

if TYPE_CHECKING:
    import torch

LAYOUTS = {4: "NCHW", 5: "NCDHW"}


@dataclass
class ModelSpec:
    """How to obtain the model; everything a manifest needs to rebuild it (no absolute paths)."""

    model: str | None = None  # "pkg.module:factory", "file.pt2", "file.onnx", "file.pt" (pickled, trusted), a MONAI
    # bundle folder or .zip, or None
    weights: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] | None = None
    dynamic_batch: bool = True
    trust_pickle: bool = False
    name: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.input_shape, str):
            self.input_shape = parse_shape(self.input_shape)
        if self.input_shape is not None:
            try:
                self.input_shape = tuple(int(d) for d in self.input_shape)
            except (TypeError, ValueError):
                raise InputError(f"input shape {self.input_shape!r} must be a list of sizes, e.g. 1x1x128x128") from None
            if len(self.input_shape) not in LAYOUTS or min(self.input_shape) < 1:
                raise InputError(
                    f"input shape {'x'.join(map(str, self.input_shape))} must be NxCxHxW or NxCxDxHxW "
                    "with positive sizes"
                )

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelSpec":
        """Read a YAML or JSON model spec: keys model, weights, model_kwargs, input_shape, dynamic_batch, name."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"model spec not found: {path}")
        try:
            text = path.read_text()
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:  # noqa: BLE001 - YAML and JSON raise different types
            raise InputError(f"cannot parse model spec {path.name}: {str(exc).splitlines()[0]}") from exc
        if not isinstance(data, dict):
            raise InputError(f"model spec {path.name} must be a mapping")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown keys in model spec {path.name}: {', '.join(sorted(unknown))}")
        for key in ("model", "weights"):  # relative paths are relative to the spec file
            value = data.get(key)
            if value and ":" not in str(value) and not Path(value).is_absolute() and (path.parent / value).exists():
                data[key] = str(path.parent / value)
        return cls(**data)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape) if self.input_shape else None
        for key in ("model", "weights"):
            if d[key] and ":" not in d[key]:
                d[key] = Path(d[key]).name
        return d


@dataclass
class LoadedModel:
    """A model ready for the chain: a torch module (or None for ONNX input) and its input shape."""

    name: str
    kind: str  # "reference" | "factory" | "exported" | "pickle" | "onnx" | "bundle"
    input_shape: tuple[int, ...]
    module: "torch.nn.Module | None" = None
    onnx_path: Path | None = None
    reference: Any = None  # the zoo ReferenceModel when the bundled model is used
    provenance: dict[str, Any] = field(default_factory=dict)


def parse_shape(text: str) -> tuple[int, ...]:
    """'1x1x128x128' -> (1, 1, 128, 128)."""
    try:
        return tuple(int(p) for p in text.lower().replace(",", "x").split("x") if p)
    except ValueError:
        raise InputError(f"cannot parse input shape '{text}': use sizes joined by x, e.g. 1x1x128x128") from None


def load_model(spec: ModelSpec) -> LoadedModel:
    """Dispatch on what ``spec.model`` names; see the module docstring. A torch model given an ``input_shape``
    runs once on it (batch 1), so a shape it cannot take is a one-line error before any verb works on it."""
    loaded = _load(spec)
    if spec.input_shape is not None and loaded.module is not None:
        from medexport.graph.capture import check_runs

        check_runs(loaded.module, (1, *loaded.input_shape[1:]))
    return loaded


def _load(spec: ModelSpec) -> LoadedModel:
    target = spec.model
    if target is None:
        return _load_reference(spec)
    path = Path(target)
    from medexport.bundles import is_bundle

    if is_bundle(path):
        return _load_bundle(path, spec)
    if path.suffix.lower() == ".onnx":
        return _load_onnx(path, spec)
    if path.suffix.lower() == ".pt2":
        return _load_exported(path, spec)
    if path.suffix.lower() in (".pt", ".pth", ".ckpt"):
        return _load_pickled_module(path, spec)
    if ":" in target:
        return _load_factory(target, spec)
    from medexport.zoo import list_models

    if target in list_models():
        return _load_reference(spec, target)
    raise InputError(
        f"cannot tell what model '{target}' is: give pkg.module:factory, a .pt2 torch.export file, an .onnx file, "
        f"or a reference model name ({', '.join(list_models())})"
    )


def _load_reference(spec: ModelSpec, name: str | None = None) -> LoadedModel:
    from medexport.zoo import DEFAULT_MODEL, get_model

    ref = get_model(name or DEFAULT_MODEL)
    if spec.weights or spec.model_kwargs:
        raise InputError(f"--weights and --model-kwargs apply to a factory (--model pkg.module:factory), not to the "
                         f"bundled reference model {ref.name}")
    shape = spec.input_shape or ref.input_shape
    return LoadedModel(ref.name, "reference", tuple(shape), module=ref.build(), reference=ref,
                       provenance={"reference_model": ref.name, "weights_sha256": sha256(ref.weights_path())})


def _load_factory(target: str, spec: ModelSpec) -> LoadedModel:
    module_name, _, attr = target.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # a user's own factory module in the working folder
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"cannot import model factory '{target}': {exc}") from exc
    try:
        model = factory(**spec.model_kwargs)
    except Exception as exc:  # noqa: BLE001 - user code
        raise ModelLoadError(f"model factory '{target}' failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    provenance: dict[str, Any] = {"factory": target, "model_kwargs": spec.model_kwargs}
    if spec.weights:
        load_state_dict(model, spec.weights, trust_pickle=spec.trust_pickle)
        provenance["weights_sha256"] = sha256(spec.weights)
    shape = _require_shape(spec, target)
    return LoadedModel(spec.name or attr, "factory", shape, module=model.eval(), provenance=provenance)


def load_state_dict(model: "torch.nn.Module", path: str | Path, *, trust_pickle: bool = False) -> None:
    """Load a checkpoint into ``model``: a plain state dict, or one under 'state_dict'/'model'/'weights'."""
    import torch

    state = _torch_load(Path(path), trust_pickle=trust_pickle)
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model", "weights", "net"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{Path(path).name} does not hold a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise ModelLoadError(f"checkpoint {Path(path).name} does not fit the model: {detail[:250]}") from exc


def _torch_load(path: Path, *, trust_pickle: bool):
    import pickle

    import torch

    if not path.is_file():
        raise ModelLoadError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if not trust_pickle and "weights_only" in str(exc):
            raise ModelLoadError(
                f"{path.name} contains pickled Python objects, which can run code when loaded; refusing. "
                "Pass --trust-pickle only if you trust where this file came from"
            ) from exc
        raise ModelLoadError(f"{path.name} is not a readable PyTorch checkpoint: {str(exc).splitlines()[0][:200]}") from exc
    except Exception as exc:  # noqa: BLE001 - zip/EOF/runtime errors for corrupt files
        raise ModelLoadError(f"{path.name} is not a readable PyTorch checkpoint: {type(exc).__name__}: "
                             f"{(str(exc).splitlines() or [''])[0][:200]}") from exc


def _load_pickled_module(path: Path, spec: ModelSpec) -> LoadedModel:
    import torch

    if not spec.trust_pickle:
        raise ModelLoadError(
            f"{path.name} would be loaded as a pickled model, which can run code; give a factory with "
            "--model pkg.module:factory --weights ckpt.pt, or pass --trust-pickle if you trust this file"
        )
    obj = _torch_load(path, trust_pickle=True)
    if not isinstance(obj, torch.nn.Module):
        raise ModelLoadError(f"{path.name} holds a {type(obj).__name__}, not a model; use --model pkg.module:factory --weights {path.name}")
    return LoadedModel(spec.name or path.stem, "pickle", _require_shape(spec, path.name), module=obj.eval(),
                       provenance={"pickle_sha256": sha256(path)})


def _load_bundle(path: Path, spec: ModelSpec) -> LoadedModel:
    """A MONAI bundle folder or zip (:mod:`medexport.bundles`): its network, weights, input shape and classes."""
    from medexport.bundles import open_bundle

    with open_bundle(path) as bundle:
        model = bundle.network(trust=spec.trust_pickle)
        load_state_dict(model, bundle.weights, trust_pickle=spec.trust_pickle)
        shape, classes = bundle.data_format(spec.input_shape)
        provenance = {**bundle.provenance, "class_names": classes}
        name = spec.name or (path.stem if path.suffix.lower() == ".zip" else bundle.root.name)
    return LoadedModel(name, "bundle", ModelSpec(input_shape=shape).input_shape, module=model.eval(),
                       provenance=provenance)


def _load_exported(path: Path, spec: ModelSpec) -> LoadedModel:
    import torch

    if not path.is_file():
        raise ModelLoadError(f"torch.export file not found: {path}")
    try:
        with _quiet_logger("torch.export"):   # it logs the traceback of a file it cannot read before raising
            program = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{path.name} is not a loadable torch.export program: {(str(exc).splitlines() or [''])[0][:200]}") from exc
    example = program.example_inputs[0][0] if program.example_inputs and program.example_inputs[0] else None
    shape = spec.input_shape or (tuple(example.shape) if example is not None else None)
    if shape is None:
        raise InputError(f"{path.name} carries no example input: pass --input-shape")
    return LoadedModel(spec.name or path.stem, "exported", tuple(shape), module=program.module(),
                       provenance={"exported_sha256": sha256(path)})


@contextlib.contextmanager
def _quiet_logger(name: str):
    """Errors only from the logger ``name`` while the block runs (ours are the one-line messages)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _load_onnx(path: Path, spec: ModelSpec) -> LoadedModel:
    from medexport.exporter.onnx_export import describe_onnx

    info = describe_onnx(path)
    dims = info.input_shape
    if spec.input_shape:
        shape = spec.input_shape
        if len(shape) != len(dims):
            raise InputError(f"--input-shape {'x'.join(map(str, shape))} does not match {path.name}'s input "
                             f"{'x'.join(map(str, dims))}: {len(shape)} dimensions instead of {len(dims)}")
        for i, (d, s) in enumerate(zip(dims, shape)):
            if isinstance(d, int) and d > 0 and d != s:
                raise InputError(f"--input-shape {'x'.join(map(str, shape))} does not match {path.name}'s input "
                                 f"{'x'.join(map(str, dims))} at dimension {i}")
    elif all(isinstance(d, int) and d > 0 for d in dims[1:]):
        shape = (1, *dims[1:])
    else:
        raise InputError(f"{path.name} has a dynamic input {dims}; pass --input-shape")
    return LoadedModel(spec.name or path.stem, "onnx", tuple(int(s) for s in shape), onnx_path=path,
                       provenance={"onnx_sha256": sha256(path)})


def _require_shape(spec: ModelSpec, what: str) -> tuple[int, ...]:
    if spec.input_shape is None:
        raise InputError(f"{what}: pass --input-shape (e.g. 1x1x128x128) or give it in a model spec file")
    return spec.input_shape
