"""The rules a QDQ ONNX must follow to build as TensorRT explicit quantization (and run on ORT/OpenVINO).

Run on every QDQ model medexport emits; an empty list means the model follows them all::

    violations = check_qdq("out/model.int8.qdq.onnx")
    assert not violations, violations

Rules (TensorRT's explicit-quantization contract):

- every QuantizeLinear/DequantizeLinear is int8 with an explicit zero point of 0 (TensorRT is
  symmetric only; ONNX defaults a missing zero point to uint8);
- no int32 DequantizeLinear: biases stay float (TensorRT's parser rejects quantized int32 bias);
- scales are constant, finite and positive;
- every Conv/ConvTranspose/Gemm/MatMul reads each input through a DequantizeLinear, unless the
  node is listed as kept in float (``float_nodes``, or the metadata ``quantize_qdq`` writes);
- Conv weights are per-channel on axis 0 (output channels). ConvTranspose weights are per-tensor
  or per-channel on axis 0: ONNX stores them (C_in, C_out/group, k...), and TensorRT's deconvolution
  kernels only take per-input-channel scales (NVIDIA/TensorRT#2380, #1694), although axis 1 would be
  the output channels. Gemm/MatMul weights are per-tensor or per-channel on the output axis.
- no Q/DQ pair between a Conv/ConvTranspose/Gemm/MatMul and the activation that reads it: the
  pair would stop TensorRT and OpenVINO from fusing the layer with its ReLU (onnxruntime's default
  placement does this; OpenVINO then ran our 2D reference U-Net no faster than FP32).

Profiles for the one-backend layouts (chosen by ``profile`` or the model's metadata): ``ort-u8s8``
(onnxruntime's own) allows asymmetric uint8 activations and Q/DQ between a conv and its ReLU;
``openvino`` allows uint8 activations with zero point 0 only on tensors that are >= 0 by
construction (a ReLU output, a Concat of them, a model input no calibration image took below 0, as
the metadata records), ConvTranspose weights per-tensor or on axis 1
(OpenVINO runs an axis-0 deconvolution in f32), and a layer input that a MaxPool or Concat makes of DQ outputs
alone (the exact Q/DQ pair after it dropped, ``int8_tensors``); every other rule holds in both.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from medexport.calibration._graph import LINEAR_OPS, OnnxGraph, attr, int8_tensors

_QDQ = ("QuantizeLinear", "DequantizeLinear")
_ACTIVATIONS = ("Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "Tanh")


@dataclass(frozen=True)
class Violation:
    """One broken rule: its id (``qdq-zero-point``...), the node's name and the one-line message."""

    rule: str
    node: str
    message: str

    def __str__(self) -> str:
        return self.message


def _violation(rule: str, node, text: str) -> Violation:
    return Violation(rule, node.name or node.output[0], f"{_label(node)}: {text}")


def check_qdq(onnx_path: str | Path, *, float_nodes: Iterable[str] = (), profile: str | None = None) -> list[str]:
    """Violations of the TensorRT QDQ rules in ``onnx_path``, one line each; empty when the model is fine."""
    return [str(v) for v in qdq_violations(onnx_path, float_nodes=float_nodes, profile=profile)]


def qdq_violations(onnx_path: str | Path, *, float_nodes: Iterable[str] = (),
                   profile: str | None = None) -> list[Violation]:
    """As :func:`check_qdq`, each violation with its rule id and node name (the TensorRT readiness report).

    ``profile`` (default: the layout the model's metadata records, else ``tensorrt``): ``ort-u8s8``
    is onnxruntime's own layout, NOT TensorRT-compatible: uint8 asymmetric activations and Q/DQ
    between a conv and its ReLU are allowed there; ``openvino`` (OpenVINO only) allows uint8 zero-point-0
    activations on provably non-negative tensors; every other rule still holds.
    """
    graph = OnnxGraph.load(onnx_path)
    profile = profile or graph.layout()
    u8s8 = profile == "ort-u8s8"
    unsigned = graph.non_negative() if profile == "openvino" else None
    allowed_float = set(float_nodes) | set(graph.float_nodes())
    int8 = int8_tensors(graph) if profile == "openvino" else set()
    if not any(node.op_type in _QDQ for node in graph.nodes):
        return [Violation("qdq-none", "", "the model has no QuantizeLinear/DequantizeLinear nodes: it is not a QDQ "
                          "model")]
    problems: list[Violation] = []
    for node in graph.nodes:
        if node.op_type in _QDQ:
            problems += _check_qdq_node(graph, node, activations_u8=u8s8, unsigned=unsigned)
        elif node.op_type in LINEAR_OPS and node.name not in allowed_float:
            problems += _check_linear(graph, node, openvino=profile == "openvino", int8=int8)
        elif node.op_type in _ACTIVATIONS and not u8s8:
            problems += _check_fusion(graph, node)
    return problems


def _label(node) -> str:
    return f"{node.op_type} '{node.name or node.output[0]}'"


def _check_qdq_node(graph: OnnxGraph, node, activations_u8: bool = False,
                    unsigned: set[str] | None = None) -> list[Violation]:
    """Scale and zero-point rules; ``activations_u8`` accepts asymmetric uint8 on activations (not weights),
    ``unsigned`` (openvino profile) the tensors that may be uint8 with zero point 0."""
    out: list[Violation] = []
    scale = graph.const(node.input[1])
    if scale is None:
        out.append(_violation("qdq-scale", node, "scale is not a constant"))
    elif not (np.isfinite(scale).all() and (scale > 0).all()):
        out.append(_violation("qdq-scale", node, f"scales must be finite and positive (min {float(np.min(scale)):.3g})"))
    zero_name = node.input[2] if len(node.input) > 2 else ""
    zero = graph.const(zero_name) if zero_name else None
    if zero_name and zero is None:
        out.append(_violation("qdq-zero-point", node, "zero point is not a constant"))
    elif zero is None:
        dtype = _implicit_dtype(graph, node)
        if dtype != np.int8:
            out.append(_violation("qdq-type", node, f"no zero point, so the type is {np.dtype(dtype).name}; "
                                  "TensorRT needs int8"))
    elif activations_u8 and zero.dtype == np.uint8 and graph.const(node.input[0]) is None:
        pass   # an activation in onnxruntime's U8S8 layout
    elif unsigned is not None and zero.dtype == np.uint8 and graph.const(node.input[0]) is None:
        if np.any(zero != 0):
            out.append(_violation("qdq-zero-point", node,
                                  f"uint8 zero point {int(zero.flat[np.flatnonzero(zero)[0]])} is not 0"))
        if node.input[0] not in unsigned:
            out.append(_violation("qdq-unsigned", node, f"uint8 on '{node.input[0]}', which can be negative "
                                  "(negatives would clip to 0); only ReLU-like outputs may be unsigned"))
    else:
        if zero.dtype == np.int32 and node.op_type == "DequantizeLinear":
            out.append(_violation("qdq-int32-bias", node, "int32 DequantizeLinear (a quantized bias); TensorRT "
                                  "rejects it, keep biases float"))
        elif zero.dtype != np.int8:
            out.append(_violation("qdq-type", node, f"type {zero.dtype.name}; TensorRT needs int8"))
        if np.any(zero != 0):
            out.append(_violation("qdq-zero-point", node, f"zero point {int(zero.flat[np.flatnonzero(zero)[0]])} "
                                  "is not 0 (asymmetric quantization; TensorRT is symmetric only)"))
    return out


def _implicit_dtype(graph: OnnxGraph, node) -> type:
    """Integer type of a Q output / DQ input when no zero point says it (ONNX's default is uint8)."""
    import onnx

    if node.op_type == "QuantizeLinear":
        code = attr(node, "output_dtype", 0)
        return onnx.helper.tensor_dtype_to_np_dtype(code).type if code else np.uint8
    value = graph.const(node.input[0])
    if value is not None:
        return value.dtype.type
    producer = graph.producer.get(node.input[0])
    return _implicit_dtype(graph, producer) if producer is not None and producer.op_type == "QuantizeLinear" else np.uint8


def _check_linear(graph: OnnxGraph, node, openvino: bool = False, int8: set[str] = frozenset()) -> list[Violation]:
    """``int8`` (openvino profile): tensors that count as quantized without a DQ of their own."""
    out: list[Violation] = []
    for index in range(min(2, len(node.input))):   # data and weight; a bias stays float
        producer = graph.producer.get(node.input[index])
        if index == 0 and node.input[0] in int8:
            continue
        if producer is None or producer.op_type != "DequantizeLinear":
            role = "input" if index == 0 else "weight"
            out.append(_violation("qdq-float-layer", node, f"{role} '{node.input[index]}' is not fed by a "
                                  "DequantizeLinear (the layer would run in float)"))
        elif index == 1:
            out += _check_weight_axis(graph, node, producer, openvino)
    return out


def _check_fusion(graph: OnnxGraph, node) -> list[Violation]:
    """An activation must read its layer directly, not through Q -> DQ."""
    dq = graph.producer.get(node.input[0])
    q = graph.producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
    layer = graph.producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
    if layer is None or layer.op_type not in LINEAR_OPS:
        return []
    return [_violation("qdq-fusion", node, f"reads {_label(layer)} through Q/DQ; the pair blocks the layer + "
                       "activation fusion (quantize the activation's output instead)")]


def _check_weight_axis(graph: OnnxGraph, node, dq, openvino: bool = False) -> list[Violation]:
    weight = graph.const(dq.input[0])
    scale = graph.const(dq.input[1])
    if weight is None or scale is None:
        return []   # an activation-times-activation MatMul: no weight to check
    rank = weight.ndim
    axis = attr(dq, "axis", 1)
    axis = axis + rank if axis < 0 else axis
    per_tensor = scale.size == 1
    if node.op_type == "Conv":
        if weight.shape[0] > 1 and (per_tensor or axis != 0):
            where = "per-tensor" if per_tensor else f"on axis {axis}"
            return [_violation("qdq-weight-axis", node, f"weights quantized {where}; TensorRT wants per-channel on "
                               "axis 0 (output channels)")]
        return []
    if node.op_type == "ConvTranspose" and openvino:
        if not per_tensor and axis != 1:
            return [_violation("qdq-weight-axis", node, f"weights per-channel on axis {axis}; OpenVINO runs a "
                               "deconvolution in int8 only with per-tensor or axis-1 (output-channel) weight scales")]
        return []
    if node.op_type == "ConvTranspose":
        if not per_tensor and axis != 0:
            return [_violation("qdq-weight-axis", node, f"weights per-channel on axis {axis}; TensorRT's "
                               "deconvolution only takes per-tensor or axis-0 (input-channel) weight scales")]
        return []
    out_axis = (0 if attr(node, "transB", 0) else 1) if node.op_type == "Gemm" else rank - 1
    if not per_tensor and axis != out_axis:
        return [_violation("qdq-weight-axis", node, f"weights per-channel on axis {axis}; expected the output axis "
                           f"{out_axis}")]
    return []
