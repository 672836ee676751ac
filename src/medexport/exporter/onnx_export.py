"""Export a torch model to ONNX at a pinned opset with a dynamic batch axis, simplify and check it.

Opset 17 is pinned: it is the newest opset every target we ship to accepts (TensorRT 8.6 on
JetPack 5 up to TensorRT 11, OpenVINO, ONNX Runtime), and it has LayerNormalization and per-channel
Q/DQ. We use the TorchScript-based exporter: it exports every MONAI network we test in about a
second and needs no onnxscript; the dynamo exporter is not needed for these CNNs.

A model that returns a tuple, list or dict (``None`` entries dropped) is exported with one ONNX output per
tensor, in the order and with the names of :mod:`medexport._outputs`; the first is the prediction the rest of
the chain judges, and the manifest records where each output came from (``out[0]``, ``out['seg']``).
"""
from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from medexport._io import atomic_path
from medexport._outputs import flat_module, flatten_outputs
from medexport.errors import ExportError, ModelLoadError

if TYPE_CHECKING:
    import onnx
    import torch

OPSET = 17
DYNAMO_OPSET = 18   # the oldest opset torch's torch.export-based exporter writes
INPUT_NAME = "input"
_TWO_GB = 2 * 1024**3


@dataclass
class ExportResult:
    """What export produced: the file, its interface, and whether onnxsim simplified it."""

    path: Path
    opset: int
    input_name: str
    input_shape: list[int | str]
    output_names: list[str]
    output_shapes: list[list[int | str]]
    simplified: bool
    notes: list[str] = field(default_factory=list)
    output_sources: dict[str, str] = field(default_factory=dict)  # output name -> place in the model's return value

    def to_dict(self) -> dict:
        outputs = [{"name": n, "shape": s, **({"source": self.output_sources[n]} if n in self.output_sources else {})}
                   for n, s in zip(self.output_names, self.output_shapes)]
        return {
            "path": self.path.name,
            "opset": self.opset,
            "input": {"name": self.input_name, "shape": self.input_shape},
            "outputs": outputs,
            "prediction": self.output_names[0] if self.output_names else None,
            "simplified": self.simplified,
            "notes": self.notes,
        }


def export_onnx(model: "torch.nn.Module", input_shape: tuple[int, ...], dest: str | Path, *,
                dynamic_batch: bool = True, simplify: bool = True, opset: int = OPSET) -> ExportResult:
    """Export ``model`` to ``dest`` (written atomically), simplified with onnxsim when it can be, and checked."""
    import onnx
    import torch

    dest = Path(dest)
    example = torch.zeros(*input_shape)
    model = model.eval()
    with torch.no_grad():
        outputs = model(example)
    flat = flatten_outputs(outputs)
    output_names = [o.name for o in flat]
    kwargs = {"input_names": [INPUT_NAME], "output_names": output_names, "opset_version": opset,
              "do_constant_folding": True}
    if dynamic_batch:  # outputs without the batch axis (a scalar, a per-model tensor) stay static
        kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, **{o.name: {0: "batch"} for o in flat
                                  if o.value.dim() and o.value.shape[0] == example.shape[0]}}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    notes: list[str] = []
    if not isinstance(outputs, torch.Tensor):
        model = flat_module(model)
        notes.append(f"the model returns {type(outputs).__name__}: exported as {len(flat)} output(s) "
                     f"{', '.join(f'{o.name}={o.source}' for o in flat)} (None dropped); {flat[0].name} is the "
                     "prediction")
    with atomic_path(dest) as tmp:
        opset = _write_onnx(model, example, tmp, kwargs, dynamic_batch, notes)
        proto = onnx.load(str(tmp))
        simplified = False
        if simplify:
            proto, simplified, note = _simplify(proto)
            if note:
                notes.append(note)
        _save(proto, tmp, data_name=f"{dest.name}.data")
        check_onnx(tmp)
    result = _describe(dest, opset, simplified, notes)
    result.output_sources = {o.name: o.source for o in flat} if not isinstance(outputs, torch.Tensor) else {}
    return result


def _write_onnx(model, example, tmp: Path, kwargs: dict, dynamic_batch: bool, notes: list[str]) -> int:
    """Write the ONNX with the TorchScript exporter; where it fails and ``onnxscript`` is installed, with torch's
    torch.export-based exporter (it needs opset 18 and is much slower, so it is the fallback, not the default).
    Returns the opset written."""
    import torch

    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), **kwargs)
        return kwargs["opset_version"]
    except Exception as exc:  # noqa: BLE001 - any exporter failure is reported as one line
        failure = f"torch.onnx.export failed: {_first_line(exc)}"
    if importlib.util.find_spec("onnxscript") is None:
        raise ExportError(f"{failure} (pip install 'medexport[dynamo]' adds torch's torch.export-based exporter, "
                          "which medexport then tries)")
    batch = torch.cat([example, example])   # a batch of 1 would be specialized away by torch.export
    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    try:
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (batch,), dynamo=True, opset_version=DYNAMO_OPSET, verbose=False,
                                        input_names=kwargs["input_names"], output_names=kwargs["output_names"],
                                        dynamic_shapes=shapes)
            program.save(str(tmp))
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{failure}; the torch.export-based exporter failed too: {_first_line(exc)}") from exc
    notes.append(f"exported by torch's torch.export-based exporter at opset {DYNAMO_OPSET}: the TorchScript exporter "
                 f"failed ({failure[len('torch.onnx.export failed: '):][:120]})")
    return DYNAMO_OPSET


def check_onnx(path: str | Path) -> "onnx.ModelProto":
    """Load ``path`` and run the full ONNX checker; raise ModelLoadError naming the problem."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"ONNX file not found: {path}")
    try:
        onnx.checker.check_model(str(path), full_check=True)
        return onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types
        raise ModelLoadError(f"{path.name} is not a valid ONNX model: {_first_line(exc)}") from exc


def describe_onnx(path: str | Path) -> ExportResult:
    """Interface of an existing ONNX file (one that enters the chain without torch)."""
    proto = check_onnx(path)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return _describe(Path(path), opset, False, [])


def _simplify(proto: "onnx.ModelProto") -> tuple["onnx.ModelProto", bool, str | None]:
    try:
        import onnxsim

        simple, ok = onnxsim.simplify(proto)
    except Exception as exc:  # noqa: BLE001 - onnxsim fails in many ways; the unsimplified model is fine
        return proto, False, f"onnxsim failed, kept the unsimplified model: {_first_line(exc)}"
    if not ok:
        return proto, False, "onnxsim's own check failed, kept the unsimplified model"
    return simple, True, None


def _save(proto: "onnx.ModelProto", path: Path, *, data_name: str) -> None:
    """Save ``proto``; over 2 GB the weights go to ``data_name`` beside it (named for the final file)."""
    import onnx

    if proto.ByteSize() > _TWO_GB - (64 << 20):
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name)
    else:
        onnx.save_model(proto, str(path))


def _describe(path: Path, opset: int, simplified: bool, notes: list[str]) -> ExportResult:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelLoadError(f"{path.name} has {len(inputs)} inputs; medexport handles single-input models")
    return ExportResult(
        path=path,
        opset=opset,
        input_name=inputs[0].name,
        input_shape=_shape(inputs[0]),
        output_names=[o.name for o in proto.graph.output],
        output_shapes=[_shape(o) for o in proto.graph.output],
        simplified=simplified,
        notes=notes,
    )


def _shape(value_info) -> list[int | str]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
