"""Latency tables for pruning: what each prunable group's layers cost on a backend at a few channel counts.

HALP (Shen et al., NeurIPS 2022) prunes to a latency with a per-layer lookup table measured on the device. Here
every conv, transposed conv and Linear that a prunable group narrows (as producer: its filters; as consumer: its
input columns) is built alone as a one-node ONNX model (``onnx.helper``, no torch export: milliseconds each) at its
input shape, with its input channels at a few fractions of the original (output channels whole) and its output
channels at those fractions (input channels whole). Each is timed interleaved beside one reference conv, and its
time is kept relative to the reference's (so a number measured under load on a shared machine still holds) in the
per-machine :class:`~medexport.compression._latency.LayerCache`, less the time of a model with the same input
and output sizes that computes almost nothing (ReduceMax then Expand, timed beside it): a call's overhead and
the copies of its input and output are paid once per inference of the whole model, not once per layer (a
1M-element Relu model takes 1.1 ms on OpenVINO CPU here, more than most convs of the 2D reference U-Net; without
this the layers timed alone summed to 1.4x the whole model): any layer of the same configuration, in any model,
is not measured again. A layer's time at (``cin``, ``cout``) is the product model
``t(cin, cout) = t_in(cin) * t_out(cout) / t(full)``, each factor piecewise linear between the measured counts
(exact for a MAC-bound conv, whose time is bilinear in its widths). The whole model is timed once beside the
reference; what the layers do not account for (norms, activations, concats, memory traffic), and how much
faster a layer runs inside the model than alone, are fitted on whole models of varied widths timed beside the
original (:meth:`LatencyTable.fit`: a line in the layers' time and their MACs).

The *staircase* is each layer's measured times by channel count (:meth:`LatencyTable.staircase`, stored in the
pass record): where time drops with fewer channels, and where it does not (a narrow conv is not faster). Example::

    table = measure(model, (1, 1, 128, 128), graph, groups, "openvino", threads=1)
    table.fit([(half_widths, measured_ratio_of_that_model), ...])   # whole models timed beside the original
    table.predict({"model.0.conv": 16})   # predicted latency / the original's with that group at 16 channels
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from medexport.compression.pruning.dependency import DependencyGraph, Group

FRACTIONS = (0.25, 0.5, 0.75, 1.0)  # of a layer's original channels, measured on each side
CHUNK = 12  # layers (each with its call-and-copies model) compiled and timed at once, each chunk beside the reference conv
ROUNDS = 21
MIN_SECONDS = 0.2  # of timing per chunk at least
OUTLIER = 4.0  # robust standard deviations of the fit's residuals beyond which a timed model is left out
REFERENCE = ("Conv", (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (), (64, 64), 32, 32)  # the reference op's key



@dataclass
class LayerCost:
    """One layer a prunable group narrows: its widths, who narrows which side, and its measured times.

    ``in_groups`` maps a group to how many of the layer's input channels it owns (a U-Net concat consumer's
    inputs come from two groups); ``rows``/``cols`` are relative times by input/output channel count."""

    name: str
    key: tuple  # (op, kernel, stride, pads, dilations, output_padding, input spatial shape)
    cin: int
    cout: int
    out_group: str | None = None
    in_groups: dict[str, int] = field(default_factory=dict)
    macs: int = 0  # multiply-accumulates at full width
    rows: dict[int, float] = field(default_factory=dict)  # cin -> time (cout whole)
    cols: dict[int, float] = field(default_factory=dict)  # cout -> time (cin whole)

    @property
    def full(self) -> float:
        return self.cols[self.cout] if self.cols else self.rows[self.cin]

    def time(self, cin: float, cout: float) -> float:
        """Relative time at ``cin`` input and ``cout`` output channels (product model, interpolated)."""
        t_in = _interp(self.rows, cin) if self.rows else self.full
        t_out = _interp(self.cols, cout) if self.cols else self.full
        return t_in * t_out / self.full if self.full > 0 else 0.0  # a layer as cheap as its copies: free

    def widths(self, kept: dict[str, float], channels: dict[str, int]) -> tuple[float, float]:
        """(cin, cout) when every group ``g`` keeps ``kept[g]`` of its ``channels[g]`` (the others: all)."""
        cin = self.cin - sum(n * (1 - kept.get(g, channels[g]) / channels[g]) for g, n in self.in_groups.items())
        cout = self.cout * kept[self.out_group] / channels[self.out_group] if self.out_group in kept else self.cout
        return cin, cout


def _line(features: np.ndarray, y: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Least-squares coefficients over the ``used`` rows: intercept, time and MACs, or intercept and time alone when
    the MACs term comes out negative (fewer MACs never cost time), or a slope of 1 when even that fails."""
    for columns in ([0, 1, 2], [0, 1]) if used.sum() > 3 else ([0, 1],):
        solution, *_ = np.linalg.lstsq(features[used][:, columns], y[used], rcond=None)
        if np.all(solution[1:] >= 0):
            return solution
    return np.array([float(np.mean(y[used] - features[used, 1])), 1.0])


def _monotone(points: dict[int, float]) -> dict[int, float]:
    """Times no higher at fewer channels (a running minimum from the widest down): a narrower conv measured slower
    is a spike of the shared machine's load or a layout the backend falls back to, and either way not worth
    choosing; levelled, the staircase's flat steps show it and :func:`.knapsack.snap` drops them."""
    out, low = {}, math.inf
    for count in sorted(points, reverse=True):
        low = min(low, points[count])
        out[count] = low
    return dict(sorted(out.items()))


def _interp(points: dict[int, float], x: float) -> float:
    xs = sorted(points)
    return float(np.interp(x, xs, [points[k] for k in xs]))


@dataclass
class LatencyTable:
    """Layer costs of the prunable groups, the whole model's time (both relative to the reference conv) and
    the groups' original channel counts; :meth:`predict` gives a latency ratio for any per-group widths.

    The prediction is linear in two features of the widths: ``share``, the layers' summed time over the whole
    model's, and ``macs``, the layers' multiply-accumulates over theirs at full width. Unfitted, the time is the
    layers' and the rest of the model (norms, activations, concats, memory traffic) a constant; :meth:`fit`
    sets the three coefficients from whole models timed."""

    layers: list[LayerCost]
    whole: float
    channels: dict[str, int]
    seconds: float = 0.0  # wall time spent building it (measuring what the cache did not hold)
    measured: int = 0  # layer models timed (0: all from the cache)
    coefficients: tuple[float, float, float] | None = None  # (intercept, per share, per macs) once fitted
    points: list[tuple[dict[str, int], float]] = field(default_factory=list)  # (widths, measured ratio) fitted
    outliers: int = 0  # points the last fit left out (residual beyond OUTLIER robust deviations)

    def share(self, kept: dict[str, float]) -> float:
        """The layers' summed time with these groups narrowed, over the original whole model's."""
        return sum(layer.time(*layer.widths(kept, self.channels)) for layer in self.layers) / self.whole

    def macs(self, kept: dict[str, float]) -> float:
        """The layers' multiply-accumulates with these groups narrowed, over theirs at full width."""
        full = sum(layer.macs for layer in self.layers)
        narrowed = sum(layer.macs * cin / layer.cin * cout / layer.cout
                       for layer in self.layers for cin, cout in [layer.widths(kept, self.channels)])
        return narrowed / full if full else 1.0

    def predict(self, kept: dict[str, float]) -> float:
        """Predicted latency over the original's with group ``g`` keeping ``kept[g]`` channels."""
        if self.coefficients is None:
            return 1.0 + self.share(kept) - self.share({})
        intercept, per_share, per_macs = self.coefficients
        return intercept + per_share * self.share(kept) + per_macs * self.macs(kept)

    def fit(self, points: list[tuple[dict[str, int], float]]) -> None:
        """Add measured ``(widths, latency ratio)`` points and fit the coefficients by least squares over all of
        them and the original (``{}``, 1.0).

        The layers timed alone are a poor absolute measure of a model: inside it, the backend converts layouts
        once per model and fuses norms and activations, and what is left (copies, concats) also narrows with
        the channels. On the 2D reference U-Net one scale fitted at half width predicted random widths 9-16%
        off; fitted on a dozen whole models, the layers' time alone left 11% (90th percentile of the error on
        other widths), the layers' time and MACs together 6%, the timing's own repeatability being 6%
        (3D: 5% and 4%). A fit whose MACs term comes out negative falls back to the time alone; points further
        from the first fit than ``OUTLIER`` robust standard deviations (1.4826 x the median residual, at least
        0.02) are left out of the second."""
        self.points += [(dict(kept), float(ratio)) for kept, ratio in points]
        widths = [{}] + [kept for kept, _ in self.points]
        y = np.array([1.0] + [ratio for _, ratio in self.points])
        features = np.array([[1.0, self.share(k), self.macs(k)] for k in widths])
        if np.ptp(features[:, 1]) <= 1e-9:
            return  # nothing narrowed: no slope to see
        used = np.ones(len(y), dtype=bool)
        solution = _line(features, y, used)
        residual = np.abs(features[:, :len(solution)] @ solution - y)
        spread = 1.4826 * np.median(residual)
        used = residual <= max(OUTLIER * spread, 0.02)
        used[0] = True  # the original is 1.0 by definition
        if not used.all():  # a timing a burst of load spoilt (one step measured 0.52 for 0.87 predicted, 3D, load 4)
            solution = _line(features, y, used)
        self.outliers = int((~used).sum())
        self.coefficients = tuple(float(v) for v in (*solution, 0.0, 0.0)[:3])

    def staircase(self) -> dict[str, dict[str, dict[int, float]]]:
        """Per layer, its measured times (in % of the whole model's) by input and output channel count."""
        scale = 100.0 / self.whole
        return {layer.name: {side: {k: round(v * scale, 3) for k, v in sorted(points.items())}
                             for side, points in (("in", layer.rows), ("out", layer.cols)) if points}
                for layer in self.layers}


def counts(full: int) -> list[int]:
    """The channel counts a side of ``full`` channels is measured at: FRACTIONS of it, rounded to 8 from 32 on."""
    step = 8 if full >= 32 else 1
    return sorted({min(full, max(1, round(f * full / step) * step)) for f in FRACTIONS})


def layer_costs(model: "nn.Module", input_shape: tuple[int, ...], graph: "DependencyGraph",
                groups: list["Group"]) -> list[LayerCost]:
    """The conv, transposed-conv and Linear layers ``groups`` narrow, with their input shapes (one forward pass)."""
    import torch
    from torch import nn

    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
    costs: dict[str, LayerCost] = {}
    for group in groups:
        classes = set(group.classes)
        for member in group.members:
            if not isinstance(member.module, kinds) or member.role not in ("in", "out"):
                continue
            if isinstance(member.module, nn.Linear) or getattr(member.module, "groups", 1) != 1:
                continue  # a head's Linear or a grouped conv: left to the constant
            layer = costs.setdefault(member.name, LayerCost(member.name, (), 0, 0))
            if member.role == "out":
                layer.out_group = group.name
            else:
                owned = sum(graph.find(label) in classes for label in member.labels)
                layer.in_groups[group.name] = layer.in_groups.get(group.name, 0) + owned
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(module, args) -> None:
            shapes.setdefault(name, tuple(args[0].shape))
        return hook

    hooks = [modules[name].register_forward_pre_hook(record(name)) for name in costs]
    try:
        with torch.no_grad():
            model(torch.zeros(*input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    out = []
    for name, layer in costs.items():
        if name not in shapes:
            continue  # never called on this input
        m = modules[name]
        transposed = isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
        layer.key = ("ConvTranspose" if transposed else "Conv", tuple(m.kernel_size), tuple(m.stride), _pads(m),
                     tuple(m.dilation), tuple(m.output_padding) if transposed else (), shapes[name][2:])
        layer.cin, layer.cout = m.in_channels, m.out_channels
        inputs, outputs = _io_sizes(layer.key, layer.cin, layer.cout)
        layer.macs = int(np.prod(m.kernel_size)) * (inputs * layer.cout if transposed else outputs * layer.cin)
        out.append(layer)
    return out


def _pads(conv) -> tuple[int, ...] | str:
    """ONNX ``pads`` (begins then ends) of a torch conv, or "same"."""
    if conv.padding == "same":
        return "same"
    if conv.padding == "valid":
        return (0,) * 2 * len(conv.kernel_size)
    return tuple(conv.padding) * 2


def _onnx_layer(key: tuple, cin: int, cout: int, path) -> tuple[int, ...]:
    """Write the one-node ONNX model of a layer ``key`` at (``cin``, ``cout``); returns its input shape."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    op, kernel, stride, pads, dilations, output_padding, spatial = key
    shape = (1, cin, *spatial)
    w_shape = (cin, cout, *kernel) if op == "ConvTranspose" else (cout, cin, *kernel)
    weight = np.random.default_rng(0).standard_normal(w_shape).astype(np.float32) * 0.05
    attrs = {"kernel_shape": list(kernel), "strides": list(stride), "dilations": list(dilations)}
    if isinstance(pads, str):
        attrs["auto_pad"] = "SAME_UPPER"
    else:
        attrs["pads"] = list(pads)
    if output_padding:
        attrs["output_padding"] = list(output_padding)
    node = helper.make_node(op, ["x", "w"], ["y"], **attrs)
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"d{i}" for i in range(len(shape))])],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return shape


def _onnx_io(n_in: int, n_out: int, path) -> tuple[int, ...]:
    """Write a model taking ``n_in`` floats and giving ``n_out`` that computes (almost) nothing: the cost of a
    call and its copies, what a layer timed alone pays and a layer inside a model does not."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=1),
             helper.make_node("Expand", ["m", "shape"], ["y"])]
    graph = helper.make_graph(nodes, "io", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_out])],
                              [numpy_helper.from_array(np.array([1, n_out], dtype=np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return (1, n_in)


def _io_sizes(key: tuple, cin: int, cout: int) -> tuple[int, int]:
    """(input, output) elements of layer ``key`` at (``cin``, ``cout``)."""
    op, kernel, stride, pads, dilations, output_padding, spatial = key
    if pads == "same":
        out = spatial
    elif op == "ConvTranspose":
        out = tuple((n - 1) * s - p0 - p1 + d * (k - 1) + o + 1 for n, s, p0, p1, d, k, o in
                    zip(spatial, stride, pads[:len(spatial)], pads[len(spatial):], dilations, kernel, output_padding))
    else:
        out = tuple((n + p0 + p1 - d * (k - 1) - 1) // s + 1 for n, s, p0, p1, d, k in
                    zip(spatial, stride, pads[:len(spatial)], pads[len(spatial):], dilations, kernel))
    return cin * int(np.prod(spatial)), cout * int(np.prod(out))


def _config_key(key: tuple, cin: int, cout: int) -> str:
    return "|".join(map(str, (*key, cin, cout)))


def measure(model: "nn.Module", input_shape: tuple[int, ...], graph: "DependencyGraph", groups: list["Group"],
            backend: str, threads: int | None = None) -> LatencyTable:
    """The latency table of ``groups`` of ``model`` on ``backend``: layer times from the cache or measured now
    (in chunks, beside the reference conv), and the whole model timed beside the reference."""
    from medexport.compression._latency import LayerCache, Timer

    start = time.perf_counter()
    layers = layer_costs(model, input_shape, graph, groups)
    cache = LayerCache(backend, threads)
    wanted: dict[str, tuple] = {}
    for layer in layers:
        if layer.in_groups:
            for c in counts(layer.cin):
                wanted.setdefault(_config_key(layer.key, c, layer.cout), (layer.key, c, layer.cout))
        if layer.out_group:
            for c in counts(layer.cout):
                wanted.setdefault(_config_key(layer.key, layer.cin, c), (layer.key, layer.cin, c))
    pending = [k for k in wanted if cache.lookup(k) is None]
    with Timer(backend, tuple(input_shape), threads=threads, rounds=ROUNDS, min_seconds=MIN_SECONDS) as timer:
        def compile_layer(name: str, key: tuple, cin: int, cout: int) -> tuple[int, int]:
            """Handles of the layer's model and of its call-and-copies model."""
            path, io = timer.scratch(f"{name}.onnx"), timer.scratch(f"{name}.io.onnx")
            return (timer.open_onnx(path, _onnx_layer(key, cin, cout, path)),
                    timer.open_onnx(io, _onnx_io(*_io_sizes(key, cin, cout), io)))

        reference = compile_layer("reference", REFERENCE[:7], *REFERENCE[7:])
        for first in range(0, len(pending), CHUNK):
            part = pending[first:first + CHUNK]
            handles = [compile_layer(f"l{first + i}", *wanted[k]) for i, k in enumerate(part)]
            ref_ms, ref_io, *times = timer.time([*reference, *(h for pair in handles for h in pair)], quantile=20)
            timer.close([h for pair in handles for h in pair])
            for i, k in enumerate(part):
                cache.store(k, max(times[2 * i] - times[2 * i + 1], 0.0) / (ref_ms - ref_io))
        whole = timer.open(model)
        ref_ms, ref_io, whole_ms = timer.time([*reference, whole], quantile=20)
    cache.save()
    for layer in layers:
        if layer.in_groups:
            layer.rows = _monotone({c: cache.lookup(_config_key(layer.key, c, layer.cout)) for c in counts(layer.cin)})
        if layer.out_group:
            layer.cols = _monotone({c: cache.lookup(_config_key(layer.key, layer.cin, c)) for c in counts(layer.cout)})
    return LatencyTable(layers, whole_ms / (ref_ms - ref_io), {g.name: g.channels for g in groups},
                        time.perf_counter() - start, len(pending))
