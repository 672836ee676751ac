"""Where an artifact that failed parity first leaves the torch model: the first ONNX node whose output differs.

The artifact's intermediate tensors are compared with the torch model's own intermediate outputs, not with a
float64 run of the same ONNX: a graph with a wrong weight or op agrees perfectly with itself in float64, so
only the torch model can show where it goes wrong. The ONNX exporter names each node after the torch module
it comes from (``/down_1/convs/conv_0/conv/Conv`` for ``down_1.convs.conv_0.conv``), so each leaf module's
output, caught with a forward hook, is compared with the output of the last node of its scope, in the order
torch calls them. A leaf with no node of its own that takes the previous leaf's output was folded into it (a BatchNorm
into its Conv, an eval-mode Dropout) and stands for that node's output. Runs only when parity fails, on one input. Example::

    found = first_divergence(module, "model.onnx", batch, backend="onnxruntime")
    found["message"]   # 'first diverging node /up_1/convs/conv_0/conv/Conv (Conv): ... report a bug ...'
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DIVERGED = 1e-2  # relative error (of the node output's max |value|) from which a node computes something else
# ops whose FP32 result depends on a long reduction, so that runtimes legitimately differ from torch there
REDUCTIONS = {"InstanceNormalization", "GroupNormalization", "LayerNormalization", "BatchNormalization",
              "ReduceMean", "ReduceSum", "Softmax", "MatMul", "Gemm", "Conv", "ConvTranspose"}


def leaf_outputs(module, batch: np.ndarray) -> list[tuple[str, np.ndarray | None, np.ndarray]]:
    """(module path, first input, output) of every leaf module called exactly once with a tensor output, in call order."""
    import torch

    calls: list[tuple[str, np.ndarray | None, np.ndarray | None]] = []
    names = {m: name for name, m in module.named_modules() if name and not any(True for _ in m.children())}

    def value(t):
        return t.detach().float().cpu().numpy().copy() if isinstance(t, torch.Tensor) else None

    hooks = [m.register_forward_hook(lambda m, args, out: calls.append(
        (names[m], value(args[0]) if args else None, value(out)))) for m in names]
    try:
        with torch.no_grad():
            module.eval()(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
    finally:
        for hook in hooks:
            hook.remove()
    counts: dict[str, int] = {}
    for name, *_ in calls:
        counts[name] = counts.get(name, 0) + 1
    return [(name, arg, out) for name, arg, out in calls if counts[name] == 1 and out is not None]


def scope_outputs(onnx_path: Path, leaves: list[str]) -> dict[str, tuple[str, str, str]]:
    """module path -> (tensor, node name, op) of the last node in that module's scope, for leaves that have one."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    last: dict[str, tuple[str, str, str]] = {}
    for node in proto.graph.node:   # topological order: the last node of a scope makes the module's output
        if node.output:
            last[module_path(node.name)] = (node.output[0], node.name, node.op_type)
    return {name: last[name] for name in leaves if name in last}


def module_path(node_name: str) -> str:
    """The torch module a node was exported from: ``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1`` (the
    exporter writes a numbered child with its parent's name in front)."""
    parts: list[str] = []
    for segment in node_name.strip("/").split("/")[:-1]:
        if parts and segment.startswith(parts[-1] + "."):
            parts[-1] = segment
        else:
            parts.append(segment)
    return ".".join(parts)


def intermediates(onnx_path: Path, tensors: list[str], batch: np.ndarray, backend: str) -> dict[str, np.ndarray]:
    """The values of ``tensors`` when ``backend`` (onnxruntime or openvino) runs the ONNX on ``batch``."""
    if backend == "openvino":
        import openvino as ov

        from medexport.runtimes.openvino.util import compile_config

        core = ov.Core()
        model = core.read_model(str(onnx_path))
        model.add_outputs(tensors)
        compiled = core.compile_model(model, "CPU", compile_config("CPU", "fp32"))
        result = compiled(batch)
        return {name: np.asarray(result[out]) for out in compiled.outputs for name in tensors
                if name in out.get_names()}
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(onnx_path))
    known = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors if t not in known)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    values = session.run(tensors, {session.get_inputs()[0].name: batch})
    return dict(zip(tensors, values))


def first_divergence(module, onnx_path: Path, batch: np.ndarray, backend: str = "onnxruntime") -> dict:
    """The first node whose output is off by more than ``DIVERGED`` of its range, and what to do about it; if
    none is, the node where the error grew the most (float noise accumulating, no single wrong node)."""
    batch = np.ascontiguousarray(batch[:1], dtype=np.float32)
    leaves = leaf_outputs(module, batch)
    mapped = scope_outputs(Path(onnx_path), [name for name, *_ in leaves])
    pairs: list[tuple[str, np.ndarray]] = []   # (module path whose node is compared, torch value)
    for name, arg, value in leaves:
        if name in mapped:
            pairs.append((name, value))
        elif pairs and arg is not None and arg.shape == pairs[-1][1].shape and np.array_equal(arg, pairs[-1][1]):
            pairs[-1] = (pairs[-1][0], value)   # folded into the node before, whose output it takes
    if not pairs:
        return {"node": None, "message": "no ONNX node could be matched to a torch module to find where the "
                                         "artifact diverges"}
    got = intermediates(Path(onnx_path), [mapped[name][0] for name, _ in pairs], batch, backend)
    steps, previous = [], 0.0
    for name, value in pairs:
        tensor, node, op = mapped[name]
        out = got[tensor]
        if out.shape != value.shape:
            continue
        error = float(np.abs(out.astype(np.float64) - value).max()) / (float(np.abs(value).max()) or 1.0)
        steps.append({"node": node, "op": op, "module": name, "relative_error": error,
                      "growth": error / previous if previous else float("inf")})
        if error > DIVERGED:
            last = steps[-2]["node"] if len(steps) > 1 else "the input"
            return {**steps[-1], "diverged": True, "backend": backend, "message": (
                f"first diverging node {node} ({op}, torch module {name}): off by {error:.2g} of its range on "
                f"{backend}, while everything up to {last} agrees; the graph computes something else there than "
                "torch does: report a bug with this node (a --tolerance will not fix it)")}
        previous = max(previous, error)
    if not steps:
        return {"node": None, "message": "no matched ONNX node had the torch module's output shape"}
    worst = max(steps[1:] or steps, key=lambda s: s["growth"])
    known = (f"{worst['op']} sums long reductions, which {backend} orders differently from torch"
             if worst["op"] in REDUCTIONS else f"{worst['op']} on {backend}")
    return {**worst, "diverged": False, "backend": backend, "message": (
        f"no node diverges (every node within {DIVERGED:g} of its range; the last off by "
        f"{steps[-1]['relative_error']:.2g}): float noise that grows most at {worst['node']} ({known}); if the "
        "decisions agree, raise --tolerance or --rtol")}
