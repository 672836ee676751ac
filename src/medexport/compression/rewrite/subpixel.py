"""``subpixel``: a transposed convolution rewritten as a convolution and a pixel shuffle, where that runs faster.

A ConvTranspose with stride ``s`` computes each output phase (output index mod ``s`` on every axis) from a
few neighbouring inputs and a subset of its kernel taps. One ordinary convolution gives every phase at
once, as ``prod(s) x out`` channels (kernel ``K`` per axis spanning the offsets any phase reads, the taps a
phase does not use set to zero), and a reshape/transpose interleaves the phases into the upsampled grid:
the sub-pixel convolution of Shi et al. (CVPR 2016), here an exact rewrite of a trained layer (float
rounding aside). It costs more MACs (the zero taps: 8 instead of 27/8 per output and channel pair for a
3x3x3 stride-2 layer), so it pays only where the backend runs the transposed conv badly: on OpenVINO CPU the
full-resolution 3-class ConvTranspose head of the 3D reference U-Net ran 1.5x faster alone this way and the
whole model 1.2x (FP32 and INT8, ``benchmarks/int8.py --subpixel``), while wide inner up-convolutions ran
slower and the 2D U-Net gained nothing measurable. Cost is measured, not assumed: for each
candidate the whole model is timed on the target backend as it is and with that layer rewritten, side by side,
and the rewrite kept only when the model runs at least ``min_speedup`` times faster. Example::

    fast, record = get_pass("subpixel").apply(model, (1, 1, 48, 48, 48), SubPixelConfig(backend="openvino"))
    [(layer.name, layer.ms_before, layer.ms_after) for layer in record.layers]
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from medexport.compression import _layers
from medexport.compression._registry import register_pass
from medexport.compression.options import EXCLUDE_LAYER, LATENCY_BACKEND
from medexport.compression.base import CompressionPass, model_macs
from medexport.errors import InputError
from medexport.runtimes import timed_backends

if TYPE_CHECKING:
    import torch
    from torch import nn

    from medexport.compression.record import PassRecord


@dataclass(frozen=True)
class SubPixelConfig:
    """Where the rewrite is measured, and when it is kept.

    Each candidate is kept when the whole model runs at least ``min_speedup`` times faster with it rewritten.
    ``measure=False`` rewrites every eligible layer untimed (to check the rewiring; not for deployment).
    ``exclude`` are shell globs on qualified module names."""

    backend: str = "openvino"
    threads: int | None = None
    min_speedup: float = 1.05
    measure: bool = True
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.backend not in timed_backends():
            raise InputError(f"subpixel is measured on {' or '.join(timed_backends())}, not {self.backend!r}")
        if not self.min_speedup > 0:
            raise InputError(f"min_speedup must be positive, got {self.min_speedup}")
        object.__setattr__(self, "exclude", tuple(self.exclude))

    def to_dict(self) -> dict:
        return {**asdict(self), "exclude": list(self.exclude)}


@dataclass
class RewriteRecord:
    """One rewritten layer: MACs before/after (the zero taps count) and the whole model's ms before/after."""

    name: str
    method: str
    kind: str
    macs_before: int
    macs_after: int
    ms_before: float | None  # None: rewritten untimed (measure=False)
    ms_after: float | None


def unsupported(module: "nn.Module") -> str | None:
    """Why ``module`` cannot be rewritten (None when it can)."""
    from torch import nn

    if not isinstance(module, (nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return "not a 2D/3D transposed convolution"
    if module.groups != 1:
        return f"grouped (groups={module.groups})"
    if any(d != 1 for d in module.dilation):
        return f"dilated (dilation={module.dilation})"
    if module.padding_mode != "zeros":
        return f"padding mode {module.padding_mode!r}"
    if all(s == 1 for s in module.stride):
        return "stride 1: nothing to interleave"
    if any(p > k - 1 for p, k in zip(module.padding, module.kernel_size)):
        return "padding not smaller than the kernel"
    return None


def _phase_taps(k: int, s: int, p: int) -> tuple[dict[int, dict[int, int]], int, int]:
    """Per output phase r (0..s-1): {input offset q: kernel tap}, with out[s*m + r] = sum_q x[m - q] w[tap];
    and the lowest and highest q any phase reads."""
    taps = {r: {q: s * q + r + p for q in range(-k, k + 1) if 0 <= s * q + r + p < k} for r in range(s)}
    qs = [q for phase in taps.values() for q in phase]
    return taps, min(qs), max(qs)


def subpixel_module(deconv: "nn.Module", size: tuple[int, ...]) -> "nn.Module":
    """The convolution + pixel shuffle computing exactly what ``deconv`` (a ConvTranspose2d/3d) computes on inputs
    of spatial ``size``. The reshapes are specialised to that size (static, as the exported ONNX is), so that shape
    inference downstream (an InstanceNorm's channel count, say) sees plain numbers."""
    import torch
    from torch import nn

    reason = unsupported(deconv)
    if reason:
        raise InputError(f"cannot rewrite {type(deconv).__name__} as a sub-pixel convolution: {reason}")
    dims = deconv.weight.dim() - 2
    cin, cout = deconv.in_channels, deconv.out_channels
    geometry = [_phase_taps(k, s, p) for k, s, p in zip(deconv.kernel_size, deconv.stride, deconv.padding)]
    kernel = tuple(qmax - qmin + 1 for _, qmin, qmax in geometry)
    phases = list(itertools.product(*(range(s) for s in deconv.stride)))
    weight = torch.zeros(len(phases), cout, cin, *kernel, dtype=deconv.weight.dtype)
    w = deconv.weight.detach()  # (cin, cout, *k)
    for index, phase in enumerate(phases):
        per_axis = [sorted(g[0][r].items()) for g, r in zip(geometry, phase)]
        for combo in itertools.product(*per_axis):
            j = tuple(g[2] - q for g, (q, _) in zip(geometry, combo))   # kernel position reading x[m - q]
            tap = tuple(t for _, t in combo)
            weight[(index, slice(None), slice(None), *j)] = w[(slice(None), slice(None), *tap)].T
    conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(cin, len(phases) * cout, kernel, bias=deconv.bias is not None)
    conv = conv.to(device=deconv.weight.device, dtype=deconv.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(len(phases) * cout, cin, *kernel))
        if deconv.bias is not None:
            conv.bias.copy_(deconv.bias.detach().repeat(len(phases)))
    # per axis: pad qmax before (the window reads x[m - qmax .. m - qmin]) and, after, enough for M = ceil(L_out / s)
    # outputs; L_out = (L - 1) s - 2p + k + op, so M - L = c - 1 with c = ceil((k + op - 2p) / s) for any L. What the
    # interleaved grid holds beyond L_out (s c - (k + op - 2p), plus s per output an unpadded end adds) is cut off.
    before, after, grid, out = [], [], [], []
    for (_, qmin, qmax), n, k, s, p, op in zip(geometry, size, deconv.kernel_size, deconv.stride, deconv.padding,
                                                deconv.output_padding):
        c = math.ceil((k + op - 2 * p) / s)
        before.append(qmax)
        after.append(max(c - 1 - qmin, 0))
        grid.append(n + qmax + after[-1] - (qmax - qmin))   # the convolution's output positions
        out.append((n - 1) * s - 2 * p + k + op)
    return _subpixel_class()(conv, tuple(deconv.stride), cout, tuple(before), tuple(after), tuple(size),
                             tuple(grid), tuple(out))


@functools.cache
def _subpixel_class() -> type:
    """The module class, made on first use so that importing this file does not import torch."""
    from torch import nn

    class SubPixel(nn.Module):
        """Convolution over the zero-padded input, then the phases interleaved into the upsampled grid."""

        def __init__(self, conv: "nn.Module", stride: tuple[int, ...], channels: int, before: tuple[int, ...],
                     after: tuple[int, ...], size: tuple[int, ...], grid: tuple[int, ...], out: tuple[int, ...]) -> None:
            super().__init__()
            self.conv, self.stride, self.channels, self.grid, self.out = conv, stride, channels, grid, out
            self.size = size
            self.pad = [n for axis in reversed(range(len(stride))) for n in (before[axis], after[axis])]  # F.pad order

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            import torch
            import torch.nn.functional as F

            torch._assert(x.shape[2:] == self.size, "a sub-pixel rewrite takes the input size it was made for")
            dims, batch = len(self.stride), x.shape[0]   # the batch, not -1: ONNX then infers every other size
            y = self.conv(F.pad(x, self.pad)).reshape(batch, *self.stride, self.channels, *self.grid)
            order = [0, dims + 1] + [i for axis in range(dims) for i in (dims + 2 + axis, 1 + axis)]
            y = y.permute(*order).reshape(batch, self.channels, *(g * s for g, s in zip(self.grid, self.stride)))
            if any(g * s != o for g, s, o in zip(self.grid, self.stride, self.out)):
                y = y[(slice(None), slice(None), *(slice(0, o) for o in self.out))]
            return y

        def extra_repr(self) -> str:
            return f"stride={self.stride}, channels={self.channels}, input={self.size}, output={self.out}"

    return SubPixel


@register_pass("subpixel")
class SubPixelPass(CompressionPass):
    """Rewrite the transposed convolutions that measure faster as sub-pixel convolutions (exact; no data needed)."""

    family = "rewrite"
    config_type = SubPixelConfig
    options = (LATENCY_BACKEND, EXCLUDE_LAYER)
    exact = True

    def configure(self, given: dict, *, backend: str) -> SubPixelConfig:
        return SubPixelConfig(**{"backend": backend, **given})

    def describe(self, config: SubPixelConfig) -> str:
        return f"{self.name}, measured on {config.backend}"

    def apply_impl(self, model: "nn.Module", input_shape: tuple[int, ...],
                   config: SubPixelConfig) -> tuple["nn.Module", "PassRecord"]:
        import fnmatch

        from medexport.compression.record import PassRecord

        macs_before = model_macs(model, input_shape)
        records, skipped = [], {}
        with _Clock(config, input_shape) as clock:
            current = None
            for layer in _layers.discover(model, input_shape):
                if not layer.transposed:
                    continue
                reason = unsupported(layer.module)
                if reason is None and any(fnmatch.fnmatchcase(layer.name, pattern) for pattern in config.exclude):
                    reason = "excluded by name"
                trial, reason = (None, reason) if reason else _rewritten(model, layer, input_shape)
                if trial is None:
                    skipped[layer.name] = reason
                    continue
                current = clock.open(model) if current is None else current
                candidate = clock.open(trial)
                ms = clock.compare(current, candidate)
                if ms[0] is not None and ms[0] < config.min_speedup * ms[1]:
                    skipped[layer.name] = (f"the model measured {ms[0]:.3f} ms as is, {ms[1]:.3f} ms with it rewritten "
                                           f"on {config.backend}: below the {config.min_speedup:g}x it must gain")
                    clock.close(candidate)
                    continue
                clock.close(current)
                model, current = trial, candidate
                records.append(RewriteRecord(layer.name, self.name, layer.kind, layer.macs,
                                             model_macs(trial.get_submodule(layer.name), layer.in_shape), *ms))
        return model, PassRecord(self.name, config.to_dict(), macs_before, model_macs(model, input_shape), records,
                                 skipped)


def _rewritten(model: "nn.Module", layer: "_layers.LayerInfo", input_shape: tuple[int, ...]
               ) -> tuple["nn.Module | None", str | None]:
    """A copy of ``model`` with ``layer`` rewritten, or None and why, when the copy fails on one input or its
    outputs (every tensor of a tuple or dict) are not the same: a layer called with ``output_size=`` or a shape the
    rewrite did not see would show it."""
    import copy

    import torch
    from torch.utils._pytree import tree_flatten

    trial = copy.deepcopy(model)
    _layers.replace(trial, layer.name, subpixel_module(layer.module, layer.in_shape[2:]))
    weight = layer.module.weight
    x = torch.linspace(0, 1, math.prod(input_shape), dtype=weight.dtype, device=weight.device).reshape(input_shape)
    try:
        with torch.no_grad():
            (expected, tree), (got, got_tree) = tree_flatten(model(x)), tree_flatten(trial(x))
    except (RuntimeError, TypeError) as error:
        return None, f"the rewritten model fails on an input of shape {tuple(input_shape)}: {error}"
    if tree == got_tree and all(_same(a, b) for a, b in zip(expected, got)):
        return trial, None
    return None, "the rewritten model's output differs (a call with output_size?)"


def _same(expected, got) -> bool:
    """One output leaf equal up to float rounding (1e-4 of its largest magnitude); non-tensor leaves exactly."""
    import torch

    if not torch.is_tensor(expected):
        return not torch.is_tensor(got) and expected == got
    if not torch.is_tensor(got) or got.shape != expected.shape:
        return False
    if not expected.numel():
        return True
    return float((got - expected).abs().max()) <= 1e-4 * max(float(expected.abs().max()), 1e-12)


class _Clock:
    """Whole models timed side by side on the backend (a layer timed alone misleads: the backend picks layouts and
    fusions for the whole graph; measured here, the 2D U-Net head ran 1.3x faster rewritten alone and no faster in
    the model). ``measure=False``: nothing is compiled and every comparison is (None, None)."""

    def __init__(self, config: SubPixelConfig, input_shape: tuple[int, ...]) -> None:
        self.config, self.input_shape = config, (1, *input_shape[1:])

    def __enter__(self) -> "_Clock":
        from medexport.compression._latency import Timer

        self.timer = Timer(self.config.backend, self.input_shape, threads=self.config.threads, rounds=15, calls=3,
                           min_seconds=0.5) if self.config.measure else None
        if self.timer is not None:
            self.timer.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.timer is not None:
            self.timer.__exit__(*exc)

    def open(self, model: "nn.Module") -> int | None:
        return self.timer.open(model) if self.timer is not None else None

    def close(self, handle: int | None) -> None:
        if self.timer is not None:
            self.timer.close([handle])

    def compare(self, before: int | None, after: int | None) -> tuple[float | None, float | None]:
        """Both models' ms, interleaved (the 25th percentile, the better estimate of each alone on a busy machine),
        measured twice; the pair of the two that favours the rewrite less, so one lucky run does not keep it."""
        if self.timer is None:
            return None, None
        runs = [self.timer.time([before, after], quantile=25) for _ in range(2)]
        a, b = min(runs, key=lambda pair: pair[0] / pair[1])
        return round(a, 4), round(b, 4)
