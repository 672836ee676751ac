"""Where the time goes inside one model: per-node times and precisions from the runtime's own profiler.

OpenVINO reports each executed node of the compiled graph (``PERF_COUNT``, ``get_profiling_info``): its
fused name, its type and the kernel that ran, whose suffix is the precision it ran in (``brgconv_avx512_I8``:
int8; ``..._f32``: float). ONNX Runtime writes a profiling JSON with one event per kernel call, whose input
types tell the precision (``QLinearConv`` on uint8 inputs, a ``Conv`` on float ones). :func:`node_times`
gives both as the same rows; :func:`compare` sets two models' rows side by side (ours against NNCF's):
which convolutions run in float in one and in int8 in the other, and the time per op type. Example::

    ours = node_times(Path("model.int8.qdq.onnx"), "openvino", image)
    nncf = node_times(Path("model.int8.nncf.xml"), "openvino", image)
    diff = compare(ours, nncf)
    diff.float_in_a, diff.float_in_b     # conv layers in float on one side only
    print(diff.markdown("ours", "NNCF"))
"""
from __future__ import annotations

import json
import re
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medexport.errors import InputError, ModelLoadError

TARGETS = ("openvino", "onnxruntime")
INT8 = ("I8", "U8")
# convolution-like node types of both profilers (OpenVINO's names, then ONNX Runtime's)
CONV_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
              "FullyConnected", "MatMul", "Conv", "FusedConv", "ConvTranspose", "QLinearConv", "ConvInteger",
              "Gemm", "FusedGemm", "QLinearMatMul", "MatMulInteger")
# the precision token at the end of an OpenVINO kernel name, and an ONNX Runtime input type, in one vocabulary
_PRECISIONS = {"f32": "FP32", "fp32": "FP32", "float": "FP32", "i8": "I8", "int8": "I8", "u8": "U8", "uint8": "U8",
               "bf16": "BF16", "f16": "FP16", "fp16": "FP16", "float16": "FP16", "i32": "I32", "int32": "I32",
               "i64": "I64", "int64": "I64"}
# what the runtimes append to an ONNX node's name when they fuse or re-lay it out
_SUFFIXES = re.compile(r"(/WithoutBiases|_output_0_nchwc|_nchwc|_token_\d+|_kernel_time)+$")


def node_times(path: Path, target: str, inputs: np.ndarray, *, threads: int | None = None,
               runs: int = 20) -> list[dict]:
    """Median time (ms) over ``runs`` inferences of every executed node of ``path`` on ``target``, with its op type
    and the precision it ran in: ``[{"node", "op_type", "precision", "ms"}, ...]`` in execution order.

    ``target``: "openvino" (CPU, inference precision f32 as our runner compiles INT8 models, so a float
    layer shows as FP32, not bf16) or "onnxruntime" (CPU provider). A warm-up inference is not counted.
    """
    if target not in TARGETS:
        raise InputError(f"node_times: unknown target '{target}'; choose one of: {', '.join(TARGETS)}")
    if runs < 1:
        raise InputError(f"node_times: runs must be at least 1, got {runs}")
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    per_node = _openvino(path, inputs, threads, runs) if target == "openvino" else _onnxruntime(path, inputs, threads, runs)
    return [{"node": node, "op_type": op_type, "precision": precision, "ms": statistics.median(times)}
            for node, (op_type, precision, times) in per_node.items()]


def _openvino(path: Path, inputs: np.ndarray, threads: int | None, runs: int) -> dict[str, tuple]:
    import openvino as ov

    from medexport.runtimes.openvino.util import compile_config

    config = {**compile_config("CPU", "int8"), "PERF_COUNT": True}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    core = ov.Core()
    try:
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own RuntimeError subclasses
        raise ModelLoadError(f"OpenVINO cannot load {path.name}: {str(exc).splitlines()[0][:200]}") from exc
    request = compiled.create_infer_request()
    request.infer({0: inputs})   # warm-up: first-inference allocations and kernel creation
    out: dict[str, tuple] = {}
    for _ in range(runs):
        request.infer({0: inputs})
        for info in request.get_profiling_info():
            if info.status != info.Status.EXECUTED:
                continue
            precision = _PRECISIONS.get(info.exec_type.rsplit("_", 1)[-1].lower(), info.exec_type)
            entry = out.setdefault(info.node_name, (info.node_type, precision, []))
            entry[2].append(info.real_time.total_seconds() * 1e3)
    return out


def _onnxruntime(path: Path, inputs: np.ndarray, threads: int | None, runs: int) -> dict[str, tuple]:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="medexport-profile-") as scratch:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "ort")
        if threads:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
            raise ModelLoadError(f"ONNX Runtime cannot load {path.name}: {str(exc).splitlines()[0][:200]}") from exc
        feed = {session.get_inputs()[0].name: inputs}
        for _ in range(runs + 1):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    out: dict[str, tuple] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        args = event.get("args", {})
        first = next(iter(args.get("input_type_shape", [{}])[0] or {"": None}), "")
        node = event["name"][: -len("_kernel_time")]
        entry = out.setdefault(node, (args.get("op_name", "?"), _PRECISIONS.get(first, first or "?"), []))
        entry[2].append(event["dur"] / 1e3)   # microseconds
    # the first call of each node is the warm-up run
    return {node: (op, precision, times[1:] or times) for node, (op, precision, times) in out.items()}


def layer_name(node: str) -> str:
    """The ONNX node name behind a profiler's node name (``/0/Conv/WithoutBiases``, ``/4/Conv_token_3``:
    ``/0/Conv``, ``/4/Conv``), so the same layer matches across runtimes and quantizers."""
    return _SUFFIXES.sub("", node)


@dataclass
class Comparison:
    """Two profiles of one network side by side (a: ours, b: theirs)."""

    float_in_a: list[str]   # conv layers that run in float in a and in int8 in b
    float_in_b: list[str]   # conv layers that run in int8 in a and in float in b
    op_ms: dict[str, tuple[float, float]] = field(default_factory=dict)   # op type -> (a ms, b ms), summed
    total_ms: tuple[float, float] = (0.0, 0.0)

    def markdown(self, a: str = "ours", b: str = "NNCF") -> str:
        """Time per op type (largest difference first) and the layers whose precision differs."""
        rows = sorted(self.op_ms.items(), key=lambda kv: -abs(kv[1][0] - kv[1][1]))
        lines = [f"| op type | {a} ms | {b} ms | {a} - {b} |", "|---|---:|---:|---:|"]
        lines += [f"| {op} | {x:.3f} | {y:.3f} | {x - y:+.3f} |" for op, (x, y) in rows]
        lines.append(f"| **total** | {self.total_ms[0]:.3f} | {self.total_ms[1]:.3f} | "
                     f"{self.total_ms[0] - self.total_ms[1]:+.3f} |")
        for side, other, layers in ((a, b, self.float_in_a), (b, a, self.float_in_b)):
            lines.append(f"\nConv layers in float in {side}, int8 in {other}: {', '.join(layers) or 'none'}")
        return "\n".join(lines)


def conv_precisions(rows: list[dict]) -> dict[str, str]:
    """Layer name -> precision of every convolution-like node of a :func:`node_times` profile."""
    return {layer_name(r["node"]): r["precision"] for r in rows if r["op_type"] in CONV_TYPES}


def compare(a: list[dict], b: list[dict]) -> Comparison:
    """Where two profiles of one network differ: convs in float on one side and int8 on the other (layers
    matched by :func:`layer_name`; a layer one runtime fused away is not compared), and time per op type."""
    conv_a, conv_b = conv_precisions(a), conv_precisions(b)
    both = [name for name in conv_a if name in conv_b]
    op_ms: dict[str, list[float]] = {}
    for side, rows in enumerate((a, b)):
        for r in rows:
            op_ms.setdefault(r["op_type"], [0.0, 0.0])[side] += r["ms"]
    return Comparison(
        float_in_a=[n for n in both if conv_a[n] not in INT8 and conv_b[n] in INT8],
        float_in_b=[n for n in both if conv_a[n] in INT8 and conv_b[n] not in INT8],
        op_ms={op: (x, y) for op, (x, y) in op_ms.items()},
        total_ms=(sum(r["ms"] for r in a), sum(r["ms"] for r in b)))
