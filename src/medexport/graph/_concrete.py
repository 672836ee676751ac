"""A torch.fx tracer that carries a real example tensor beside every proxy, for shape-dependent code.

``torch.fx.symbolic_trace`` cannot follow Python branches on tensor shapes, e.g. MONAI's BasicUNet
``UpCat``, which pads the upsampled map when it is one pixel short of the skip and tests
``torch.jit.isinstance(x_e, torch.Tensor)``. Here every node is also executed on the example input as
it is recorded, so ``x.shape``/``x.size()``/``x.dim()`` answer with the example's concrete sizes and the
branch taken for that input shape is recorded. Branches on tensor values still fail, as in fx. The graph is therefore valid for
that input shape only, which is what compression analysis needs (it reads one input shape anyway);
``call_module`` targets keep the model's qualified layer names. Example::

    gm = concrete_trace(BasicUNet(spatial_dims=2), torch.zeros(1, 1, 64, 64))
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import fx


class ConcreteProxy(fx.Proxy):
    """An fx proxy that knows the value its node took on the example input."""

    value: Any = None

    @property
    def shape(self):
        return self.value.shape

    @property
    def ndim(self) -> int:
        return self.value.ndim

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def device(self):
        return self.value.device

    def size(self, dim: int | None = None):
        return self.value.size() if dim is None else self.value.size(dim)

    def dim(self) -> int:
        return self.value.dim()

    def __len__(self) -> int:
        return len(self.value)

    # No __bool__: a branch on tensor *values* (not shapes) would be frozen at the example's values and
    # could hide layers; fx's own error is raised instead and capture falls back to torch.export.


def _concrete(value: Any) -> Any:
    return fx.node.map_aggregate(value, lambda v: v.value if isinstance(v, ConcreteProxy) else v)


class ConcreteTracer(fx.Tracer):
    """Record nodes like ``fx.Tracer`` and execute each on the example values at the same time."""

    def __init__(self, example: tuple[Any, ...]) -> None:
        super().__init__()
        self.example = list(example)
        self._calls: list[Any] = []  # forward of the leaf module being recorded (innermost last)
        self._raw_getattr = False

    def proxy(self, node: fx.Node) -> ConcreteProxy:
        return ConcreteProxy(node, self)

    def call_module(self, m, forward, args, kwargs):
        self._calls.append(forward)
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self._calls.pop()

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        return attr_val if self._raw_getattr else super().getattr(attr, attr_val, parameter_proxy_cache)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        if not isinstance(proxy, ConcreteProxy):
            return proxy
        values, named = _concrete(args), _concrete(kwargs)
        self._raw_getattr = True
        try:
            with torch.no_grad():
                if kind == "placeholder":
                    proxy.value = self.example.pop(0)
                elif kind == "get_attr":
                    proxy.value = _attr(self.root, target)
                elif kind == "call_module":
                    proxy.value = self._calls[-1](*values, **named)
                elif kind == "call_function":
                    proxy.value = target(*values, **named)
                elif kind == "call_method":
                    proxy.value = getattr(values[0], target)(*values[1:], **named)
        finally:
            self._raw_getattr = False
        return proxy


def _attr(root: torch.nn.Module, target: str) -> Any:
    value: Any = root
    for atom in target.split("."):
        value = getattr(value, atom)
    return value


@contextlib.contextmanager
def _jit_isinstance_sees_values():
    """``torch.jit.isinstance(proxy, torch.Tensor)`` is False for a plain proxy; judge its value instead."""
    original = torch.jit.isinstance

    def patched(obj, target_type):
        return original(obj.value if isinstance(obj, ConcreteProxy) else obj, target_type)

    torch.jit.isinstance = patched
    try:
        yield
    finally:
        torch.jit.isinstance = original


def concrete_trace(model: torch.nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """A GraphModule of ``model`` recorded on ``example`` (valid for that input shape)."""
    tracer = ConcreteTracer((example,))
    with _jit_isinstance_sees_values():
        graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph, type(model).__name__)
