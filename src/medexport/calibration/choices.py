"""The named INT8 options a user picks from: QDQ layouts, INT8 engines and calibration methods, each once.

Each option carries the backends it serves and its one-line help, so ``QuantConfig`` validates against these
tables, the CLI takes its choices and help from them, reports describe an artifact with them, and a build
checks an option against its target with :func:`check_serves`. Example::

    LAYOUTS["ort-u8s8"].serves("openvino")          # False: onnxruntime only
    check_serves(LAYOUTS["openvino"], "tensorrt")   # InputError: ... serves openvino only ...
    [name for name, layout in LAYOUTS.items() if layout.serves("openvino")]   # ['tensorrt', 'openvino']
"""
from __future__ import annotations

from dataclasses import dataclass

from medexport.errors import InputError


@dataclass(frozen=True)
class Option:
    """One choice of one kind ("QDQ layout"): its name, its help, and the backends it serves (None: every one)."""

    kind: str
    name: str
    help: str
    backends: tuple[str, ...] | None = None

    def serves(self, backend: str) -> bool:
        return self.backends is None or backend in self.backends

    @property
    def scope(self) -> str:
        """Whom it serves, in words: "every backend", "onnxruntime only"."""
        return f"{' and '.join(self.backends)} only" if self.backends else "every backend"


def _table(*options: Option) -> dict[str, Option]:
    return {option.name: option for option in options}


LAYOUTS = _table(
    Option("QDQ layout", "tensorrt", "signed int8, symmetric, Q/DQ on layer inputs (TensorRT's rules): the one QDQ "
           "ONNX for every backend"),
    Option("QDQ layout", "ort-u8s8", "onnxruntime's own layout (asymmetric uint8 activations, Q/DQ around every "
           "op): its fast x86 path; TensorRT rejects it", ("onnxruntime",)),
    Option("QDQ layout", "openvino", "the tensorrt placement with uint8 zero-point-0 ReLU outputs, as NNCF makes "
           "them, int8 max pooling and instance norms and no re-quantization after a Concat: faster on OpenVINO; "
           "TensorRT rejects uint8", ("openvino",)),
)
INT8_ENGINES = _table(
    Option("INT8 engine", "qdq", "our QDQ ONNX, calibrated on real images, in the layout asked for"),
    Option("INT8 engine", "nncf", "NNCF post-training quantization into an OpenVINO IR", ("openvino",)),
)
# the qdq engine's activation range estimators (onnxruntime's calibrators)
METHODS = _table(
    Option("calibration method", "minmax", "the range the calibration images reach"),
    Option("calibration method", "percentile", "the range clipped at a percentile of the activations"),
    Option("calibration method", "entropy", "the range whose clipped histogram keeps the most information (KL)"),
)


def get_option(table: dict[str, Option], name: str) -> Option:
    """``table[name]``; an unknown name is an InputError listing the choices."""
    if name not in table:
        kind = next(iter(table.values())).kind
        raise InputError(f"unknown {kind} '{name}'; choose one of: {', '.join(table)}")
    return table[name]


def check_serves(option: Option, backend: str) -> None:
    """Raise InputError if ``option`` does not serve ``backend`` (a one-backend layout on another target)."""
    if not option.serves(backend):
        raise InputError(f"{option.kind} '{option.name}' serves {option.scope}, not {backend}: use it with --target "
                         f"{' or '.join(option.backends)} ({option.help})")
