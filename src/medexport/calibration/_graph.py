"""Read-only views of an ONNX graph shared by the quantizer and the QDQ checker.

Example::

    graph = OnnxGraph.load("model.int8.qdq.onnx")
    graph.const("conv1.weight_scale")    # np.ndarray, or None if the tensor is computed at run time
    graph.producer["x_DequantizeLinear_Output"].op_type   # 'DequantizeLinear'
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medexport.errors import ModelLoadError

if TYPE_CHECKING:
    import onnx

# ops whose weights TensorRT, ONNX Runtime and OpenVINO run in int8 when Q/DQ feed them
LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# ops that pass int8 data on unchanged when all their inputs are DQ outputs of one scale
INT8_PASSING_OPS = ("MaxPool", "Concat", "Reshape", "Flatten")
FLOAT_NODES_KEY = "medexport.float_nodes"   # metadata: nodes kept in float on purpose (JSON list)
LAYOUT_KEY = "medexport.qdq_layout"   # metadata: "tensorrt" (every backend), "ort-u8s8" / "openvino" (one backend)
# metadata (openvino layout): graph inputs that no calibration image took below 0 (JSON list)
NON_NEGATIVE_KEY = "medexport.calibrated_non_negative"
# ops whose output is >= 0 whatever their input
_NON_NEGATIVE_OPS = ("Relu", "Sigmoid", "Softmax", "Abs", "Exp", "Sqrt")
# ops whose output is >= 0 when their first input is (order-preserving, or copy/select values)
_SIGN_KEEPING_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Resize", "Upsample",
                     "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Slice", "Split",
                     "QuantizeLinear", "DequantizeLinear")


@dataclass
class OnnxGraph:
    """An ONNX model with its initializers, constants and tensor producers indexed by name."""

    model: "onnx.ModelProto"

    @classmethod
    def load(cls, path: str | Path) -> "OnnxGraph":
        import onnx

        try:
            return cls(onnx.load(str(path)))
        except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types
            raise ModelLoadError(f"cannot read ONNX model {Path(path).name}: {str(exc).splitlines()[0][:200]}") from exc

    def __post_init__(self) -> None:
        from onnx import numpy_helper

        graph = self.model.graph
        self.nodes = list(graph.node)
        self.producer = {out: node for node in self.nodes for out in node.output}
        self._consts = {init.name: init for init in graph.initializer}
        for node in self.nodes:
            if node.op_type == "Constant":
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self._consts[node.output[0]] = value
        self._to_array = numpy_helper.to_array

    def const(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant output; None for a run-time tensor."""
        tensor = self._consts.get(name)
        return None if tensor is None else self._to_array(tensor)

    def input(self) -> tuple[str, list[int | None]]:
        """Name and shape (None for symbolic dims) of the single real graph input."""
        inputs = [i for i in self.model.graph.input if i.name not in self._consts]
        if len(inputs) != 1:
            raise ModelLoadError(f"expected a model with one input, found {len(inputs)}")
        dims = inputs[0].type.tensor_type.shape.dim
        return inputs[0].name, [d.dim_value if d.HasField("dim_value") else None for d in dims]

    def float_nodes(self) -> list[str]:
        """Nodes the quantizer recorded as kept in float on purpose (metadata written by ``quantize_qdq``)."""
        for prop in self.model.metadata_props:
            if prop.key == FLOAT_NODES_KEY:
                return list(json.loads(prop.value))
        return []

    def layout(self) -> str:
        """The QDQ layout ``quantize_qdq`` recorded; files from elsewhere are held to the TensorRT rules."""
        return next((p.value for p in self.model.metadata_props if p.key == LAYOUT_KEY), "tensorrt")

    def non_negative(self) -> set[str]:
        """Tensors that are >= 0 by construction: ReLU-like outputs and what pooling, resizing, reshaping,
        Concat of such tensors, and Q/DQ with zero point 0 pass on (nodes are in topological order).

        A structural proof inside the graph; the only calibration statistic it takes is which graph inputs
        no calibration image took below 0 (metadata ``NON_NEGATIVE_KEY``: images scaled to [0, 1], as
        NNCF also makes such an input unsigned). Anywhere else a uint8 activation with zero point 0 could
        clip real negative values to 0 on images the calibration set did not show.
        """
        seeds = next((json.loads(p.value) for p in self.model.metadata_props if p.key == NON_NEGATIVE_KEY), [])
        graph_inputs = {i.name for i in self.model.graph.input}
        out: set[str] = {name for name in seeds if name in graph_inputs}
        for node in self.nodes:
            if node.op_type in _NON_NEGATIVE_OPS:
                positive = True
            elif node.op_type == "Clip":
                low = self.const(node.input[1]) if len(node.input) > 1 and node.input[1] else attr(node, "min", None)
                positive = low is not None and float(np.min(low)) >= 0
            elif node.op_type in _SIGN_KEEPING_OPS:
                zero = self.const(node.input[2]) if node.op_type.endswith("Linear") and len(node.input) > 2 else None
                positive = node.input[0] in out and (zero is None or not np.any(zero))
            elif node.op_type == "Concat":
                positive = all(name in out for name in node.input)
            else:
                positive = False
            if positive:
                out.update(node.output)
        return out


def attr(node, name: str, default):
    """Integer/float/string attribute ``name`` of ``node``, or ``default``."""
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def int8_tensors(graph: OnnxGraph) -> set[str]:
    """DequantizeLinear outputs, and what a MaxPool, Reshape, Flatten or Concat makes of them alone: the tensors a backend
    holds in int8 (max pooling, reshaping and concatenation of one scale move int8 values without changing them;
    the openvino layout drops the Q/DQ pairs after them). Nodes are in topological order."""
    out: set[str] = set()
    for node in graph.nodes:
        data = node.input if node.op_type == "Concat" else node.input[:1]   # a Reshape's shape is no data
        if node.op_type == "DequantizeLinear" or (
                node.op_type in INT8_PASSING_OPS and all(name in out for name in data if name)):
            out.update(node.output[:1])
    return out


def quantized_nodes(graph: OnnxGraph, excluded=()) -> list:
    """Compute nodes of a QDQ model that read an int8 tensor (:func:`int8_tensors`) and are not ``excluded``:
    the int8 layers.

    (A layer kept in float may still read a DQ: the quantized output of the layer before it.)
    """
    int8 = int8_tensors(graph)
    excluded = set(excluded)
    return [n for n in graph.nodes if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and n.name not in excluded and any(i in int8 for i in n.input)]


def drop_unread_initializers(graph) -> None:
    """Remove the initializers of an ONNX ``GraphProto`` that no node and no graph output reads."""
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)
