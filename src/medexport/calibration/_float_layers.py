"""Layers kept in float in a QDQ model really run in float (mixed precision).

onnxruntime's ``nodes_to_exclude`` only leaves an excluded node's *own* inputs unquantized: a tensor
it shares with a quantized reader goes through one Q/DQ pair for every reader, so the "float"
layer still reads int8-rounded activations, and a Concat or Add in front of it still quantizes its
inputs for nobody. Two steps fix that:

1. :func:`with_glue` widens the exclusion to the Concat/Add nodes whose outputs only reach float
   layers (or the graph output), so no Q/DQ is placed in front of them;
2. :func:`float_inputs` rewires every excluded node to the float tensor behind a Q -> DQ pair and
   drops the pairs nobody reads any more. Example::

       excluded = with_glue(OnnxGraph.load("model.onnx"), ("/model/head/ConvTranspose",))
       # ... quantize_static(..., nodes_to_exclude=excluded) ...
       float_inputs(qdq_model, excluded)   # in place
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

from medexport.calibration._graph import OnnxGraph, drop_unread_initializers

if TYPE_CHECKING:
    import onnx

GLUE_OPS = ("Concat", "Add")


def with_glue(graph: OnnxGraph, excluded: Iterable[str], quantized_ops: Iterable[str]) -> tuple[str, ...]:
    """``excluded`` plus every Concat/Add whose output reaches only excluded nodes or graph outputs.

    Readers that are not quantized ops themselves (ReLU, pooling, reshapes) are looked through.
    """
    out = list(dict.fromkeys(excluded))
    if not out:
        return ()
    quantized_ops = set(quantized_ops)
    readers: dict[str, list] = {}
    for node in graph.nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def only_float(tensor: str, float_names: set[str]) -> bool:
        for reader in readers.get(tensor, []):
            if reader.name in float_names:
                continue
            if reader.op_type in quantized_ops or not all(only_float(o, float_names) for o in reader.output):
                return False
        return True

    changed = True
    while changed:   # a glue node turned float may make the glue before it float too
        changed = False
        for node in graph.nodes:
            if node.op_type in GLUE_OPS and node.name not in out and all(only_float(o, set(out)) for o in node.output):
                out.append(node.name)
                changed = True
    return tuple(out)


def float_inputs(model: "onnx.ModelProto", excluded: Iterable[str]) -> None:
    """Point excluded nodes at the float tensors behind their Q -> DQ inputs; drop unread Q/DQ (in place)."""
    excluded = set(excluded)
    nodes = model.graph.node
    producer = {out: node for node in nodes for out in node.output}
    for node in nodes:
        if node.name not in excluded:
            continue
        for index, name in enumerate(node.input):
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[index] = q.input[0]
    _drop_unread_qdq(model)


def _drop_unread_qdq(model: "onnx.ModelProto") -> None:
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    drop_unread_initializers(graph)


def float_norm_parameters(model: "onnx.ModelProto") -> int:
    """Give each InstanceNormalization its scale and bias as float constants, not as DQ of int8 ones (in place).

    onnxruntime quantizes a norm's scale like a weight; OpenVINO then keeps the affine step as a separate f32
    Multiply instead of folding it into the MVN (profiled on MONAI's SegResNet, whose GroupNorms export as
    instance norms: a Multiply per norm in ours, none in NNCF's IR). A Constant quantized at run time goes back
    to the Constant (the float values); an int8 initializer becomes its dequantized float values. Returns how many parameters changed.
    """
    from onnx import numpy_helper

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    inits = {init.name: init for init in graph.initializer}
    changed = 0
    for norm in [n for n in graph.node if n.op_type == "InstanceNormalization"]:
        for index in (1, 2):
            dq = producer.get(norm.input[index]) if len(norm.input) > index else None
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":   # a Constant node's output, quantized at run time
                norm.input[index] = q.input[0]
            elif all(name in inits for name in dq.input[:2]):      # an int8 initializer
                scale = numpy_helper.to_array(inits[dq.input[1]])
                zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float32) if len(dq.input) > 2 else 0.0
                data = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float32)
                name = f"{norm.input[index]}_float"
                graph.initializer.append(numpy_helper.from_array(((data - zero) * scale).astype(np.float32), name))
                norm.input[index] = name
            else:
                continue
            changed += 1
    if changed:
        _drop_unread_qdq(model)
    return changed
