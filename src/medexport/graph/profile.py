"""Per-layer cost of a captured graph: MACs, FLOPs, parameters and activation memory.

Conventions (the ones compression budgets are stated in):
- conv / linear: MACs = output elements x (input channels / groups) x kernel volume; a transposed conv
  counts input elements x (output channels / groups) x kernel volume. FLOPs = 2 x MACs (+1 per output
  element for a bias).
- norms (BatchNorm, InstanceNorm, GroupNorm, LayerNorm): 2 FLOPs per element (scale and shift at
  inference), no MACs.
- pooling: one FLOP per input element read per output (output elements x kernel volume);
  adaptive pooling counts input elements.
- activations and element-wise add/mul: 1 FLOP per output element.
- activation memory: bytes of every node's output; the peak is the largest set of outputs alive at
  once when the graph runs in order (inputs included, parameters excluded).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from medexport.graph.capture import CapturedGraph

_NORMS = ("batch_norm", "instance_norm", "group_norm", "layer_norm", "native_batch_norm", "native_layer_norm",
          "native_group_norm")
_POOLS = ("max_pool", "avg_pool")
_ADAPTIVE = ("adaptive_avg_pool", "adaptive_max_pool")
_ACTIVATIONS = ("relu", "prelu", "leaky_relu", "sigmoid", "tanh", "softmax", "gelu", "silu", "elu", "hardtanh",
                "_prelu_kernel", "log_softmax")
_ELEMENTWISE = ("add", "mul", "sub", "div")


@dataclass
class LayerCost:
    """Cost of one node of the graph."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    macs: int
    flops: int
    params: int
    activation_bytes: int


@dataclass
class Profile:
    """Per-layer and total cost of a model at one input shape."""

    input_shape: tuple[int, ...]
    method: str
    layers: list[LayerCost] = field(default_factory=list)
    params: int = 0
    peak_activation_bytes: int = 0

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def flops(self) -> int:
        return sum(layer.flops for layer in self.layers)

    @property
    def activation_bytes(self) -> int:
        return sum(layer.activation_bytes for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "capture": self.method,
            "totals": {
                "macs": self.macs,
                "flops": self.flops,
                "params": self.params,
                "activation_bytes": self.activation_bytes,
                "peak_activation_bytes": self.peak_activation_bytes,
            },
            "layers": [asdict(layer) for layer in self.layers],
        }


def profile(graph: "CapturedGraph") -> Profile:
    """Walk ``graph`` in execution order and cost every node; see the module docstring for conventions."""
    gm = graph.module
    modules = dict(gm.named_modules())
    result = Profile(tuple(graph.input_shape), graph.method, params=sum(p.numel() for p in gm.parameters()))
    last_use = _last_uses(gm)
    live: dict[Any, int] = {}
    peak = 0
    for node in gm.graph.nodes:
        shape = graph.node_shape(node)
        if node.op in ("placeholder", "call_module", "call_function", "call_method") and shape is not None:
            live[node] = math.prod(shape) * graph.node_dtype_size(node)
            peak = max(peak, sum(live.values()))
        for dead in [n for n, last in last_use.items() if last is node and n in live]:
            del live[dead]
        if shape is None or node.op not in ("call_module", "call_function", "call_method"):
            continue
        cost = _cost(graph, node, modules, shape)
        if cost is not None:
            result.layers.append(cost)
    result.peak_activation_bytes = peak
    return result


def _last_uses(gm: "torch.fx.GraphModule") -> dict:
    last: dict = {}
    for node in gm.graph.nodes:
        for arg in node.all_input_nodes:
            last[arg] = node
    return last


def _cost(graph: "CapturedGraph", node, modules: dict, out_shape: tuple[int, ...]) -> LayerCost | None:
    out_numel = math.prod(out_shape)
    in_shape = graph.node_shape(node.args[0]) if node.args and hasattr(node.args[0], "op") else None
    act_bytes = out_numel * graph.node_dtype_size(node)
    if node.op == "call_module":
        module = modules[node.target]
        kind, macs, flops, params = _module_cost(module, in_shape, out_shape)
        name = str(node.target)
    else:
        kind, macs, flops, params = _function_cost(graph, node, in_shape, out_shape)
        name = _export_name(node)
    if kind is None:
        return None
    return LayerCost(name, kind, out_shape, int(macs), int(flops), int(params), act_bytes)


def _module_cost(module, in_shape, out_shape) -> tuple[str | None, int, int, int]:
    import torch.nn as nn

    out_numel = math.prod(out_shape)
    params = sum(p.numel() for p in module.parameters(recurse=False))
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        w = module.weight
        macs = math.prod(in_shape) * w.shape[1] * math.prod(w.shape[2:])
        return type(module).__name__, macs, 2 * macs + (out_numel if module.bias is not None else 0), params
    if isinstance(module, nn.modules.conv._ConvNd):
        w = module.weight
        macs = out_numel * w.shape[1] * math.prod(w.shape[2:])
        return type(module).__name__, macs, 2 * macs + (out_numel if module.bias is not None else 0), params
    if isinstance(module, nn.Linear):
        macs = out_numel * module.in_features
        return "Linear", macs, 2 * macs + (out_numel if module.bias is not None else 0), params
    if isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
        return type(module).__name__, 0, 2 * out_numel, params
    if isinstance(module, (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)):
        return type(module).__name__, 0, math.prod(in_shape), params
    if isinstance(module, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)):
        k = module.kernel_size
        kvol = math.prod(k) if isinstance(k, tuple) else k ** (len(out_shape) - 2)
        return type(module).__name__, 0, out_numel * kvol, params
    name = type(module).__name__.lower()
    if any(a == name or name.startswith(a.replace("_", "")) for a in _ACTIVATIONS):
        return type(module).__name__, 0, out_numel, params
    if isinstance(module, nn.Upsample):
        return "Upsample", 0, out_numel, params
    return (type(module).__name__, 0, 0, params) if params else (None, 0, 0, 0)


def _function_cost(graph: "CapturedGraph", node, in_shape, out_shape) -> tuple[str | None, int, int, int]:
    op = op_name(node)
    out_numel = math.prod(out_shape)
    if op in ("conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d"):
        w_shape = graph.node_shape(node.args[1])
        has_bias = len(node.args) > 2 and node.args[2] is not None
        transposed = op.startswith("conv_transpose") or (op == "convolution" and bool(node.args[6]))
        if transposed:
            macs = math.prod(in_shape) * w_shape[1] * math.prod(w_shape[2:])
        else:
            macs = out_numel * w_shape[1] * math.prod(w_shape[2:])
        params = math.prod(w_shape) + (w_shape[1 if transposed else 0] if has_bias else 0)
        kind = f"ConvTranspose{len(w_shape) - 2}d" if transposed else f"Conv{len(w_shape) - 2}d"
        return kind, macs, 2 * macs + (out_numel if has_bias else 0), params
    if op in ("linear", "addmm", "mm", "matmul"):
        w_shape = graph.node_shape(node.args[1] if op != "addmm" else node.args[2])
        in_features = w_shape[-1] if op == "linear" else w_shape[0]
        macs = out_numel * in_features
        params = math.prod(w_shape) if op == "linear" else 0
        return "Linear", macs, 2 * macs, params
    if any(op.startswith(n) or op == n for n in _NORMS):
        return op, 0, 2 * out_numel, 0
    if any(op.startswith(p) for p in _ADAPTIVE):
        return op, 0, math.prod(in_shape), 0
    if any(op.startswith(p) for p in _POOLS):
        kernel = node.args[1] if len(node.args) > 1 else node.kwargs.get("kernel_size")
        spatial = len(out_shape) - 2
        kvol = math.prod(kernel) if isinstance(kernel, (list, tuple)) else int(kernel) ** spatial
        if isinstance(kernel, (list, tuple)) and len(kernel) == 1:
            kvol = int(kernel[0]) ** spatial
        return op, 0, out_numel * kvol, 0
    if op in _ACTIVATIONS or op.rstrip("_") in _ACTIVATIONS or op in _ELEMENTWISE or op.rstrip("_") in _ELEMENTWISE:
        return op, 0, out_numel, 0
    if op.startswith("upsample") or op == "interpolate":
        return op, 0, out_numel, 0
    return None, 0, 0, 0


def op_name(node) -> str:
    """'aten.conv2d.default' -> 'conv2d'; torch.add / operator.add -> 'add'; F.relu -> 'relu'."""
    target = node.target
    if node.op == "call_method":
        return str(target)
    packet = getattr(target, "_opname", None)
    if packet:
        return packet
    return getattr(target, "__name__", str(target)).split(".")[-1]


def _export_name(node) -> str:
    stack = node.meta.get("nn_module_stack")
    if stack:
        path = list(stack.values())[-1][0]
        return f"{path}:{node.name}" if path else node.name
    return node.name
