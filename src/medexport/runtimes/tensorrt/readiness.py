"""Will TensorRT's ONNX parser take this model? A static check that needs no TensorRT and no GPU.

TensorRT cannot run here, and an engine is built on the device it runs on, so the ONNX that leaves this machine
is checked against what the parser of a chosen TensorRT version accepts: operators, data types, attribute values,
inputs that must be constants, the opset, and the explicit-quantization rules of QDQ models (symmetric int8,
per-channel weight axes, no Q/DQ that blocks a fusion: :mod:`medexport.calibration.qdq_check`). The facts are data
(``onnx_support.json``), taken from onnx-tensorrt's ``docs/operators.md`` and ``docs/Changelog.md``; its
``about`` says which versions and what is assumed. Example::

    report = check_tensorrt_ready("out/model.int8.qdq.onnx", "10.3")
    report.passed                                  # True
    [(f.rule, f.node) for f in report.findings]    # [] or [("attribute", "Resize_3"), ...]

A pass is not a built engine: only a build on the device proves that (tactics, memory, DLA layers).
"""
from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medexport.errors import InputError, ModelLoadError

# the versions our users deploy to: JetPack 6.1/6.2, JetPack 7.0/7.1 (Thor), JetPack 7.2; 11: x86 and JetPack 7.2.2
VERSIONS = ("10.3", "10.13", "10.16", "11")
_DATA = Path(__file__).with_name("onnx_support.json")
_QDQ = ("QuantizeLinear", "DequantizeLinear")
# ONNX tensor element type -> the name operators.md gives it
_TYPE_NAMES = {1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64", 8: "STRING",
               9: "BOOL", 10: "FP16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64", 14: "COMPLEX64", 15: "COMPLEX128",
               16: "BF16", 17: "FP8", 18: "FP8", 19: "FP8", 20: "FP8", 21: "UINT4", 22: "INT4", 23: "FP4"}


@dataclass(frozen=True)
class Finding:
    """One rule the model breaks: ``rule`` (opset, operator, data-type, attribute, constant-input, int8-layout, or a
    ``qdq-*`` rule of the QDQ checker), the node's name and operator, and a one-line message."""

    rule: str
    node: str
    op: str
    message: str


@dataclass
class ReadinessReport:
    """The findings of one ONNX file against one TensorRT version; ``passed`` when there are none."""

    onnx: str
    version: str
    nodes: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict:
        return {"onnx": self.onnx, "tensorrt": self.version, "passed": self.passed, "nodes": self.nodes,
                "findings": [asdict(f) for f in self.findings], "source": support_source()}

    def summary(self) -> str:
        """One line: passes, or the first finding and how many more."""
        if self.passed:
            return f"{self.onnx} passes the TensorRT {self.version} readiness check ({self.nodes} nodes)"
        first = self.findings[0]
        more = f" (+{len(self.findings) - 1} more)" if len(self.findings) > 1 else ""
        return f"{self.onnx} fails the TensorRT {self.version} readiness check: [{first.rule}] {first.message}{more}"


def parse_version(text: str) -> tuple[int, int]:
    """'10.13' -> (10, 13), '11' -> (11, 0); InputError for anything but TensorRT 10.x or 11.x."""
    parts = str(text).strip().split(".")
    try:
        major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise InputError(f"TensorRT version '{text}' is not a version like 10.3 or 11") from None
    if major not in (10, 11):
        raise InputError(f"TensorRT {text}: the readiness check knows TensorRT 10.x and 11.x (explicit quantization, "
                         "strongly typed networks)")
    return major, minor


@functools.lru_cache(maxsize=1)
def _support() -> dict:
    return json.loads(_DATA.read_text())


def support_source() -> str:
    """Where the rules come from (versions, commit, assumptions), for reports and ``--help``."""
    return _support()["about"]


def check_tensorrt_ready(onnx_path: str | Path, version: str = VERSIONS[0]) -> ReadinessReport:
    """Check ``onnx_path`` against the ONNX parser of TensorRT ``version``; every finding names node and rule."""
    import onnx

    onnx_path = Path(onnx_path)
    wanted = parse_version(version)
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types
        raise ModelLoadError(f"cannot read ONNX model {onnx_path.name}: {str(exc).splitlines()[0][:200]}") from exc
    if not model.graph.node:
        raise ModelLoadError(f"{onnx_path.name} holds no ONNX graph (an empty or random file parses as an empty "
                             "model)")
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - an op ONNX cannot infer (a custom domain): the types the file states
        inferred = model
    data = _support()
    report = ReadinessReport(onnx_path.name, version, len(model.graph.node))
    add = report.findings.append
    for finding in _opset(model, wanted, data):
        add(finding)
    types = _tensor_types(inferred)
    for finding in _io_types(model, types, wanted, data):
        add(finding)
    consts = {init.name for init in model.graph.initializer}
    consts |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    for node in model.graph.node:
        for finding in _node(node, types, consts, wanted, data):
            add(finding)
    if any(node.op_type in _QDQ for node in model.graph.node):
        report.findings += _qdq(onnx_path, model)
    return report


def check_versions(onnx_path: str | Path, versions=VERSIONS) -> list[ReadinessReport]:
    """:func:`check_tensorrt_ready` for each of ``versions`` (default: the ones our users deploy to)."""
    return [check_tensorrt_ready(onnx_path, v) for v in versions]


def _at_least(wanted: tuple[int, int], version: str) -> bool:
    return wanted >= parse_version(version)


def _label(node) -> str:
    return f"{node.op_type} '{node.name or node.output[0]}'"


def _finding(rule: str, node, text: str) -> Finding:
    return Finding(rule, node.name or node.output[0], node.op_type, f"{_label(node)}: {text}")


def _opset(model, wanted, data) -> list[Finding]:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    top = max(limit for since, limit in data["opset_max"] if _at_least(wanted, since))
    if opset is not None and not data["opset_min"] <= opset <= top:
        return [Finding("opset", "", "", f"opset {opset} is outside the {data['opset_min']}..{top} this TensorRT "
                                         f"version's parser documents")]
    return []


def _tensor_types(model) -> dict[str, int]:
    """Element type of every tensor shape inference knows: graph inputs/outputs, intermediate values, constants."""
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.output, *graph.value_info)
             if v.type.HasField("tensor_type")}
    types.update({init.name: init.data_type for init in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                types[node.output[0]] = value.data_type
    return types


def _type_names(wanted, data) -> set[str]:
    return set(data["data_types"]) | {t for t, since in data["data_types_added"].items() if _at_least(wanted, since)}


def _io_types(model, types, wanted, data) -> list[Finding]:
    known = _type_names(wanted, data)
    out = []
    for value in (*model.graph.input, *model.graph.output):
        name = _TYPE_NAMES.get(types.get(value.name, 0))
        if name is not None and name not in known:
            out.append(Finding("data-type", value.name, "", f"graph input/output '{value.name}' is {name}; TensorRT "
                                                            f"takes {', '.join(sorted(known))}"))
    return out


def _node(node, types, consts, wanted, data) -> list[Finding]:
    if node.domain not in ("", "ai.onnx"):
        return [_finding("operator", node, f"custom operator of domain '{node.domain}': TensorRT needs a plugin "
                                           "for it on the device")]
    supported = _op_types(node.op_type, wanted, data)
    if supported is None:
        added = data["ops_added"].get(node.op_type)
        why = f"its parser supports it from TensorRT {added[0]}" if added else "TensorRT's ONNX parser does not " \
                                                                              "support it"
        return [_finding("operator", node, f"not supported by TensorRT {'.'.join(map(str, wanted))}: {why}")]
    out = []
    # the types column means the data an op computes on: its first input (Greater: FP32 in, BOOL out) or its output
    # (HannWindow: INT64 size in, FP32 out); Q/DQ types are the QDQ rules' (below)
    seen = [(n, _TYPE_NAMES.get(types.get(n, 0))) for n in (node.input[:1] + node.output[:1]) if n]
    seen = [(n, name) for n, name in seen if name is not None]
    if node.op_type not in _QDQ and seen and not any(name in supported for _, name in seen):
        tensor, name = seen[0]
        out.append(_finding("data-type", node, f"'{tensor}' is {name}; TensorRT runs {node.op_type} on "
                                               f"{', '.join(supported)}"))
    out += _attributes(node, data)
    for rule in data["constant_inputs"]:
        if rule["op"] == node.op_type and not ("until" in rule and _at_least(wanted, rule["until"])):
            index = rule["input"]
            if len(node.input) > index and node.input[index] and node.input[index] not in consts:
                out.append(_finding("constant-input", node, f"input '{rule['name']}' is computed at run time; "
                                                            "TensorRT's parser needs it as an initializer here"))
    return out


def _op_types(op: str, wanted, data) -> list[str] | None:
    """The types TensorRT ``wanted`` runs ``op`` on; None when it cannot parse it."""
    if op in data["ops"]:
        return data["ops"][op]
    added = data["ops_added"].get(op)
    if added and _at_least(wanted, added[0]):
        return added[1]
    return None


def _attributes(node, data) -> list[Finding]:
    from medexport.calibration._graph import attr

    out = []
    for name, allowed in data["attributes"].get(node.op_type, {}).items():
        value = attr(node, name, None)
        value = value.decode() if isinstance(value, bytes) else value
        if value is not None and value not in allowed:
            out.append(_finding("attribute", node, f"{name}={value!r}; TensorRT supports "
                                                   f"{', '.join(map(repr, allowed))}"))
    if node.op_type in data["dilations_all_ones"] and any(d != 1 for d in attr(node, "dilations", [])):
        out.append(_finding("attribute", node, f"dilations={attr(node, 'dilations', [])}; TensorRT pools only "
                                               "without dilation"))
    ranks = data["spatial_ranks"].get(node.op_type)
    kernel = attr(node, "kernel_shape", None)
    if ranks and kernel is not None and len(kernel) not in ranks:
        out.append(_finding("attribute", node, f"{len(kernel)}D pooling; TensorRT pools in 2D or 3D only"))
    extra = data["single_output"].get(node.op_type)
    if extra and len([o for o in node.output if o]) > 1:
        out.append(_finding("attribute", node, f"uses {extra}, which TensorRT does not produce"))
    return out


def _qdq(onnx_path: Path, model) -> list[Finding]:
    """The explicit-quantization rules (held to the tensorrt layout whatever the file says it is)."""
    from medexport.calibration._graph import LAYOUT_KEY
    from medexport.calibration.choices import LAYOUTS
    from medexport.calibration.qdq_check import qdq_violations

    out = []
    layout = next((p.value for p in model.metadata_props if p.key == LAYOUT_KEY), "tensorrt")
    if layout != "tensorrt":
        help_text = LAYOUTS[layout].help if layout in LAYOUTS else "not the tensorrt layout"
        out.append(Finding("int8-layout", "", "", f"the INT8 layout is '{layout}' ({help_text}); TensorRT needs "
                                                  "signed int8, symmetric: quantize with --int8-layout tensorrt"))
    ops = {node.name or node.output[0]: node.op_type for node in model.graph.node}
    return out + [Finding(v.rule, v.node, ops.get(v.node, ""), v.message)
                  for v in qdq_violations(onnx_path, profile="tensorrt")]
