"""Dependency analysis: which channels of which layers must be removed together.

Every channel of every tensor in the torch.fx graph carries an integer *label*. A conv, transposed
conv or Linear makes fresh labels for its outputs; shape-preserving ops pass labels on; ``torch.cat``
along channels concatenates them (so a U-Net skip keeps its own labels, at an offset into the
consumer's input); an element-wise add/mul unites its operands' labels position by position (a
residual join). United labels form a *class*, the atom of removal: dropping a class drops the
matching filter rows of every producer, input columns of every consumer and entries of every
per-channel layer (norms, PReLU, depthwise convs) that carry one of its labels. GroupNorm unites the
labels of each of its groups (``group_norm="groups"``), so only whole norm groups go and the others' statistics
are unchanged: exact, but a group of 2 channels goes or stays as one. ``group_norm="channels"`` (the default)
leaves them apart: single channels go, the norm keeps its number of groups and each group's statistics change
(the pruned model then differs from the original with those channels zeroed; fine-tuning takes the rest back).
A *group* is the set of classes one producer's outputs span (joined through residual adds); it is the
unit a ratio is applied to. Anything not understood, the network input and output (heads), shared
modules and grouped convs lock the labels they touch.

A torch.export capture (for models torch.fx cannot trace, e.g. MONAI's HighResNet and SwinUNETR) is read
the same way: its graph holds ATen calls (``aten.conv3d``, ``aten.batch_norm``, ...) whose parameters are
``get_attr`` nodes named by the model's own qualified names, so a call is mapped back to the layer that
owns its weight, and that layer of the model is the member that is narrowed. Example::

    graph = analyze(capture(model, (1, 1, 64, 64)))
    [(g.name, g.channels, g.locked) for g in graph.groups]
"""
from __future__ import annotations

import collections
import functools
import math
import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medexport.errors import InputError
from medexport.graph.profile import op_name

if TYPE_CHECKING:
    import torch

    from medexport.graph.capture import CapturedGraph

Labels = list[int]


@dataclass
class Member:
    """One way a layer touches channels: ``role`` is ``out`` (filters), ``in`` (input columns) or ``channel``."""

    name: str
    module: "torch.nn.Module"
    role: str
    labels: Labels


@dataclass
class Group:
    """Classes spanned by coupled producers; ``locked`` says why the group may not be pruned (None: it may)."""

    classes: list[int]
    members: list[Member]
    locked: str | None = None

    @property
    def name(self) -> str:
        """The group is named after its first producer."""
        return next(m.name for m in self.members if m.role == "out")

    @property
    def channels(self) -> int:
        """Output channels of the first producer (every producer of a group has as many)."""
        return len(next(m.labels for m in self.members if m.role == "out"))


@dataclass
class DependencyGraph:
    """The result of :func:`analyze`: labels united into classes, members and groups."""

    members: list[Member] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    root: "torch.nn.Module | None" = None  # the analysed model (members' modules are its layers)

    def find(self, label: int) -> int:
        """The class (root label) of ``label``."""
        while self.parent[label] != label:
            self.parent[label] = self.parent[self.parent[label]]
            label = self.parent[label]
        return label

    def keep_positions(self, labels: Labels, removed: set[int]) -> list[int]:
        """Positions of ``labels`` whose class is not in ``removed``."""
        return [i for i, label in enumerate(labels) if self.find(label) not in removed]


def analyze(captured: "CapturedGraph", root: "torch.nn.Module | None" = None,
            group_norm: str = "channels") -> DependencyGraph:
    """Label every channel of ``captured`` (a torch.fx or torch.export capture of ``root``), then group the classes.

    ``root`` is required for a torch.export capture: its layers, not the capture's copies, are the members.
    ``group_norm``: ``"groups"`` (whole norm groups go) or ``"channels"`` (single channels go; see the module)."""
    import torch

    if root is None and captured.method == "export":
        raise InputError("analysing a torch.export capture needs the model it was captured from (root)")
    if isinstance(root, torch.fx.GraphModule) and captured.method == "export":
        raise InputError("structured pruning narrows a model's layers, and a torch.export program (.pt2) keeps "
                         "none: give the model as pkg.module:factory with --weights")
    graph = _Analysis(captured, root if root is not None else captured.module, group_norm).run()
    graph.root = root if root is not None else captured.module
    return graph


class _Analysis:
    """One walk over the graph in topological order, keeping a label list per tensor node."""

    def __init__(self, captured: "CapturedGraph", root: "torch.nn.Module", group_norm: str = "channels") -> None:
        self.captured = captured
        self.whole_norm_groups = group_norm == "groups"
        self.gm = captured.module
        self.root = root
        self.aten = captured.method == "export"
        self.graph = DependencyGraph()
        self.locks: dict[int, str] = {}
        self.env: dict[Any, Labels | None] = {}
        self.layers = {n: layer for n in self.gm.graph.nodes if (layer := self._layer(n)) is not None}
        calls = collections.Counter(name for name, _ in self.layers.values())
        self.shared = {name for name, module in self.layers.values() if calls[name] > 1 and
                       next(module.parameters(), None) is not None}  # one narrower copy would change every use

    def _layer(self, node) -> tuple[str, "torch.nn.Module"] | None:
        """``(qualified name, module)`` of the layer ``node`` calls: a ``call_module`` node, or an ATen call
        whose first parameter is a ``get_attr`` of a layer of the op's kind (torch.export); else None."""
        if node.op == "call_module":
            return node.target, self.gm.get_submodule(node.target)
        kinds = _aten_layers().get(op_name(node)) if self.aten and node.op == "call_function" else None
        params = [a for a in node.args[1:] if _is_node(a) and a.op == "get_attr"]
        if kinds is None or not params:
            return None
        name = params[0].target.rpartition(".")[0]
        try:
            module = self.root.get_submodule(name)
        except AttributeError:
            return None
        return (name, module) if isinstance(module, kinds) else None

    def run(self) -> DependencyGraph:
        for node in self.gm.graph.nodes:
            if node.op == "output":
                self._lock(_tensor_args(node, self.env), "network output (head)")
            elif node.op == "placeholder":
                self.env[node] = self._fresh(node, "network input")
            elif node.op == "get_attr":
                self.env[node] = self._fresh(node, "constant tensor")
            elif node in self.layers:
                self.env[node] = self._module(node, *self.layers[node])
            else:
                self.env[node] = self._function(node)
        self._group()
        return self.graph

    # -- labels -------------------------------------------------------------------------------------

    def _new(self, n: int) -> Labels:
        start = len(self.graph.parent)
        self.graph.parent.extend(range(start, start + n))
        return list(range(start, start + n))

    def _fresh(self, node, reason: str | None = None) -> Labels | None:
        shape = self.captured.node_shape(node)
        if shape is None or len(shape) < 2:
            return None
        labels = self._new(shape[1])
        if reason:
            self._lock([labels], reason)
        return labels

    def _lock(self, label_lists, reason: str) -> None:
        for labels in label_lists:
            for label in labels or ():
                self.locks.setdefault(label, reason)

    def _union(self, a: Labels, b: Labels) -> None:
        for x, y in zip(a, b):
            rx, ry = self.graph.find(x), self.graph.find(y)
            if rx != ry:
                self.graph.parent[ry] = rx

    def _member(self, name: str, module: "torch.nn.Module", role: str, labels: Labels) -> None:
        self.graph.members.append(Member(name, module, role, labels))

    def _unknown(self, node, why: str) -> Labels | None:
        self._lock(_tensor_args(node, self.env), why)
        return self._fresh(node, why)

    def _input(self, node) -> Labels | None:
        arg = node.args[0] if node.args else None
        return self.env.get(arg) if _is_node(arg) else None

    # -- call_module --------------------------------------------------------------------------------

    def _module(self, node, name: str, module: "torch.nn.Module") -> Labels | None:
        from torch import nn

        kind = type(module).__name__
        if name in self.shared:
            return self._unknown(node, f"shared module {name}")
        labels = self._input(node)
        if labels is None:
            return self._unknown(node, f"{kind} on an untracked input")
        if isinstance(module, nn.modules.conv._ConvNd):
            return self._conv(node, name, module, labels)
        if isinstance(module, nn.Linear):
            if len(self.captured.node_shape(node) or ()) != 2:
                return self._unknown(node, "Linear on a tensor of rank above 2")
            self._member(name, module, "in", labels)
            out = self._new(module.out_features)
            self._member(name, module, "out", out)
            return out
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
            self._member(name, module, "channel", labels)
            return labels
        if isinstance(module, nn.GroupNorm):
            size = module.num_channels // module.num_groups if self.whole_norm_groups else 1
            for start in range(0, len(labels), size):
                for label in labels[start + 1:start + size]:
                    self._union([labels[start]], [label])
            self._member(name, module, "channel", labels)
            return labels
        if isinstance(module, nn.PReLU):
            if module.num_parameters > 1:
                self._member(name, module, "channel", labels)
            return labels
        if isinstance(module, nn.Flatten):
            return self._flatten(node, labels) if module.start_dim == 1 and module.end_dim == -1 else \
                self._unknown(node, "Flatten not from dim 1")
        if isinstance(module, _pass_modules()):
            return self._same(node, labels, kind)
        return self._unknown(node, f"unsupported layer {kind}")

    def _conv(self, node, name: str, module, labels: Labels) -> Labels | None:
        out_channels = module.out_channels
        if module.groups == 1:
            self._member(name, module, "in", labels)
            out = self._new(out_channels)
            self._member(name, module, "out", out)
            return out
        if module.groups == module.in_channels == out_channels:
            self._member(name, module, "channel", labels)  # depthwise: channel i in, channel i out
            return labels
        return self._unknown(node, f"grouped convolution {name} (groups={module.groups})")

    # -- call_function / call_method ----------------------------------------------------------------

    def _function(self, node) -> Labels | None:
        shape = self.captured.node_shape(node)
        if shape is None:
            return None  # not a tensor (x.size(), getattr): nothing to track
        target = op_name(node)
        if (node.op == "call_function" and node.target in _elementwise()) or \
                ((node.op == "call_method" or self.aten) and target in _ELEMENTWISE_METHODS):
            return self._elementwise(node, shape)
        if target == "cat":
            return self._cat(node, shape)
        labels = self._input(node)
        if labels is None:
            return self._unknown(node, f"{target} on an untracked input")
        if self.aten and any(_is_node(a) and a.op == "get_attr" for a in node.args[1:]):
            return self._unknown(node, f"{target} with parameters of no layer it understands")
        if target in _PASS_FUNCTIONS:
            return self._same(node, labels, target)
        if target in _RESHAPES:
            in_shape = self.captured.node_shape(node.args[0])
            if tuple(in_shape) == tuple(shape):
                return labels
            if len(shape) == 2 and shape[0] == in_shape[0] and shape[1] == math.prod(in_shape[1:]):
                return self._flatten(node, labels)
            return self._unknown(node, f"{target} that mixes channels")
        return self._unknown(node, f"unsupported operation {target}")

    def _same(self, node, labels: Labels, what: str) -> Labels | None:
        shape = self.captured.node_shape(node)
        if shape is None or len(shape) < 2 or shape[1] != len(labels):
            return self._unknown(node, f"{what} that changes the channel count")
        return labels

    def _flatten(self, node, labels: Labels) -> Labels:
        in_shape = self.captured.node_shape(node.args[0])
        spatial = math.prod(in_shape[2:])
        return [label for label in labels for _ in range(spatial)]

    def _elementwise(self, node, shape: tuple[int, ...]) -> Labels | None:
        operands = [a for a in node.args if _is_node(a)]
        full = [a for a in operands if self.captured.node_shape(a) is not None and
                len(self.captured.node_shape(a)) == len(shape) and self.captured.node_shape(a)[1] == shape[1]]
        broadcast = [a for a in operands if a not in full and self.captured.node_shape(a) is not None and
                     len(self.captured.node_shape(a)) == len(shape) and self.captured.node_shape(a)[1] == 1]
        if len(shape) < 2 or not full or len(full) + len(broadcast) != len(operands) or \
                any(self.env.get(a) is None for a in full):
            return self._unknown(node, f"element-wise {node.target} with unaligned channels")
        first = self.env[full[0]]
        for other in full[1:]:
            self._union(first, self.env[other])
        return first

    def _cat(self, node, shape: tuple[int, ...]) -> Labels | None:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if not isinstance(tensors, (list, tuple)) or any(self.env.get(t) is None for t in tensors):
            return self._unknown(node, "cat of untracked tensors")
        dim = dim + len(shape) if dim < 0 else dim
        if dim == 1:
            return [label for t in tensors for label in self.env[t]]
        for other in tensors[1:]:
            self._union(self.env[tensors[0]], self.env[other])
        return self.env[tensors[0]]

    # -- groups -------------------------------------------------------------------------------------

    def _group(self) -> None:
        """Join the classes each producer spans into groups, and mark the groups holding a locked class."""
        graph = self.graph
        locked = {}
        for label, reason in self.locks.items():
            locked.setdefault(graph.find(label), reason)
        owner: dict[int, int] = {}  # class -> group index
        groups: list[Group] = []
        for member in graph.members:
            if member.role != "out":
                continue
            classes = list(dict.fromkeys(graph.find(label) for label in member.labels))
            hits = sorted({owner[c] for c in classes if c in owner})
            if hits:
                target = groups[hits[0]]
                for index in hits[1:]:  # a producer joining two earlier groups merges them
                    for c in groups[index].classes:
                        owner[c] = hits[0]
                    target.classes.extend(groups[index].classes)
                    groups[index].classes = []
            else:
                target = Group([], [])
                groups.append(target)
            index = groups.index(target)
            for c in classes:
                if c not in owner:
                    owner[c] = index
                    target.classes.append(c)
        groups = [g for g in groups if g.classes]
        by_class = {c: g for g in groups for c in g.classes}
        for member in graph.members:
            for g in {id(by_class[c]): by_class[c] for c in map(graph.find, member.labels) if c in by_class}.values():
                g.members.append(member)
        for g in groups:
            g.locked = next((locked[c] for c in g.classes if c in locked), None)
        graph.groups = groups


def _tensor_args(node, env) -> list[Labels]:
    """Label lists of every tracked node among ``node``'s (possibly nested) arguments."""
    import torch

    found: list[Labels] = []
    torch.fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(env.get(n)) or n)
    return [labels for labels in found if labels]


@functools.cache
def _pass_modules() -> tuple[type, ...]:
    from torch import nn

    return (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardtanh,
            nn.Identity, nn.modules.dropout._DropoutNd, nn.modules.pooling._MaxPoolNd,
            nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
            nn.modules.pooling._AdaptiveMaxPoolNd, nn.Upsample, nn.modules.padding._ConstantPadNd,
            nn.modules.padding._ReplicationPadNd, nn.modules.padding._ReflectionPadNd)


@functools.cache
def _aten_layers() -> dict[str, tuple[type, ...]]:
    """ATen op name -> the layer types whose parameters it may be called with (torch.export graphs)."""
    from torch import nn

    conv, norm = (nn.modules.conv._ConvNd,), (nn.modules.batchnorm._BatchNorm,)
    return {**dict.fromkeys(("conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d", "conv_transpose2d",
                             "conv_transpose3d"), conv),
            "linear": (nn.Linear,), "batch_norm": norm, "_native_batch_norm_legit_no_training": norm,
            "instance_norm": (nn.modules.instancenorm._InstanceNorm,), "group_norm": (nn.GroupNorm,),
            "prelu": (nn.PReLU,)}


@functools.cache
def _elementwise() -> frozenset:
    import torch

    return frozenset({operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.imul,
                      torch.add, torch.sub, torch.mul, torch.div})


def _is_node(value: Any) -> bool:
    import torch

    return isinstance(value, torch.fx.Node)


_ELEMENTWISE_METHODS = frozenset({"add", "sub", "mul", "div", "add_", "sub_", "mul_", "div_"})
_PASS_FUNCTIONS = frozenset({"relu", "relu_", "leaky_relu", "elu", "gelu", "silu", "sigmoid", "tanh", "hardtanh",
                             "dropout", "interpolate", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d",
                             "avg_pool2d", "avg_pool3d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
                             "adaptive_max_pool2d", "adaptive_max_pool3d", "contiguous", "clone", "pad",
                             # ATen spellings (torch.export); norms here have no parameters (else they are layers)
                             "leaky_relu_", "hardtanh_", "elu_", "silu_", "sigmoid_", "tanh_", "dropout_", "alias",
                             "to", "_to_copy", "batch_norm", "instance_norm", "upsample_nearest1d",
                             "upsample_nearest2d", "upsample_nearest3d", "upsample_linear1d", "upsample_bilinear2d",
                             "upsample_trilinear3d"})
_RESHAPES = frozenset({"flatten", "view", "reshape"})
