"""Max pooling in int8 (``--int8-layout openvino``): move the Q/DQ pair behind a MaxPool in front of it.

Our placement quantizes the inputs of convolutions, so a ``conv -> ReLU -> MaxPool -> conv`` stem runs its
MaxPool on float data and a FakeQuantize after it. Profiled on MONAI's 2D ResNet-18 at 224 x 224 (OpenVINO
CPU, one thread, ``medexport.bench.node_times``): the f32 MaxPool took 1.31 ms and its FakeQuantize 0.35 ms,
NNCF's u8 MaxPool 0.47 ms, as NNCF quantizes the pool's input, which folds into the conv before it as a u8
output. Max pooling commutes with a monotonic quantizer, ``maxpool(dq(q(x))) == dq(q(maxpool(x)))``, so
moving the pair is exact: the numbers do not change, only where the pair sits. Where the pool's input is
quantized already (a U-Net's encoder output also feeds a skip Concat), the pool reads that pair instead:
OpenVINO fuses one FakeQuantize into the layer before (a conv, or an instance norm), not two. Example::

    move_qdq_upstream(qdq_model)   # in place, before unsigned_activations
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

POOL_OPS = ("MaxPool", "Reshape", "Flatten")   # each commutes with a per-tensor quantizer


def move_qdq_upstream(model: "onnx.ModelProto") -> int:
    """:func:`_move_once` until no pair moves (MaxPool -> Flatten -> Q: the pair passes the Flatten, then the pool)."""
    total = 0
    while True:
        moved = _move_once(model)
        total += moved
        if not moved:
            return total


def _move_once(model: "onnx.ModelProto") -> int:
    """Rewrite ``x -> MaxPool -> Q -> DQ -> readers`` as ``x -> Q -> DQ -> MaxPool -> readers`` (in place) where
    the Q is the pool output's only reader, and the same for a Flatten (a classifier's head: its last MaxPool ran
    f32 on brain-region-alexnet) or a Reshape (a GroupNorm's, exported as Reshape -> InstanceNormalization ->
    Reshape: the conv before it then writes int8, not f32 that a Reorder copies, profiled on MONAI's SegResNet);
    returns how many pairs moved."""
    graph = model.graph
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    producer = {out: node for node in graph.node for out in node.output}
    moved = 0
    for pool in [n for n in graph.node if n.op_type in POOL_OPS and len(n.output) == 1]:
        after = readers.get(pool.output[0], [])
        if len(after) != 1 or after[0].op_type != "QuantizeLinear" or pool.output[0] in outputs:
            continue
        q = after[0]
        dqs = readers.get(q.output[0], [])
        if len(dqs) != 1 or dqs[0].op_type != "DequantizeLinear" or dqs[0].output[0] in outputs:
            continue
        dq = dqs[0]
        source, pooled, dq_out = pool.input[0], pool.output[0], dq.output[0]
        for reader in readers.get(dq_out, []):
            for i, name in enumerate(reader.input):
                if name == dq_out:
                    reader.input[i] = pooled   # the pool's readers now read it directly
        shared = source if producer.get(source) is not None and producer[source].op_type == "DequantizeLinear" \
            else _existing_dq(source, readers)
        if shared is not None:   # x is quantized already (a skip Concat's pair): one FakeQuantize on x, not two
            graph.node.remove(q)
            graph.node.remove(dq)
            pool.input[0] = shared
        else:
            q.input[0] = source                # x -> Q -> DQ -> MaxPool
            pool.input[0] = dq_out
        moved += 1
    if moved:
        _topological_sort(graph)
    return moved


def _existing_dq(tensor: str, readers: dict[str, list]) -> str | None:
    """The output of a DQ that reads a Q of ``tensor``, if ``tensor`` is quantized already."""
    for q in readers.get(tensor, []):
        if q.op_type == "QuantizeLinear":
            dq = next((r for r in readers.get(q.output[0], []) if r.op_type == "DequantizeLinear"), None)
            if dq is not None:
                return dq.output[0]
    return None


def _topological_sort(graph) -> None:
    """Reorder ``graph.node`` so every node follows the producers of its inputs (ONNX requires it)."""
    produced = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in produced for i in n.input)]
        if not ready:
            raise ValueError("the QDQ graph has a cycle after moving a pooling Q/DQ")
        for node in ready:
            ordered.append(node)
            produced.update(node.output)
        pending = [n for n in pending if all(n is not r for r in ready)]
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
