"""The pass protocol: ``apply(model, input_shape, config) -> (new_model, PassRecord)``, and chaining.

A pass never changes the model it is given: it rewrites a deep copy, replacing ``nn.Module``
layers by dense chains in place (qualified names, as torch.fx ``call_module`` targets name them),
so the result is an ordinary module that ``medexport.exporter.export_onnx`` exports unchanged. Example::

    from medexport.compression import LowRankConfig, chain, get_pass
    small, record = get_pass("tucker").apply(model, (1, 1, 128, 128), LowRankConfig(budget=3))
    small, records = chain(model, (1, 1, 128, 128), [("tucker", LowRankConfig(budget=2)),
                                                    ("svd", LowRankConfig(energy=0.95))])
"""
from __future__ import annotations

import abc
import copy
from typing import TYPE_CHECKING, Any

from medexport.errors import DataError, InputError

if TYPE_CHECKING:
    from torch import nn

    from medexport.compression.options import PassData, PassOption
    from medexport.compression.record import PassRecord


class CompressionPass(abc.ABC):
    """One rewrite of a model into a smaller dense one; subclasses register with ``@register_pass``.

    Template method: ``apply`` checks the config type and hands ``apply_impl`` an eval-mode deep copy,
    so the caller's model is never changed.
    """

    name: str = ""
    family: str = ""  # "lowrank" | "pruning" | "rewrite" | ...: a chain runs at most one pass per family
    config_type: type = object  # LowRankConfig | PruneConfig | SubPixelConfig | ...
    needs_calibration: bool = False  # True: the config must carry real calibration images
    options: tuple["PassOption", ...] = ()  # the CLI options that fill config_type (see compression.options)
    exact: bool = False  # True: computes the same function (a rewrite for speed): runs last, never fine-tuned
    stepwise: bool = False  # True: takes steps a fine-tuning hook can follow (PassData.recover)

    def configure(self, given: dict[str, Any], *, backend: str) -> Any:
        """The validated config from the options the user gave (config field -> value; defaults for the rest).
        ``backend`` is where a pass that measures latency measures it unless the user said otherwise."""
        return self.config_type(**given)

    def bind(self, config: Any, data: "PassData") -> Any:
        """``config`` with the data this pass reads at run time (images, labelled data, hooks); default none."""
        return config

    def describe(self, config: Any) -> str:
        """A short label of what this pass is asked to do, for progress output."""
        return self.name

    def reads(self, field: str, config: Any) -> bool:
        """Whether ``config`` uses the option filling ``field`` (a given option no pass reads is refused)."""
        return any(option.field == field for option in self.options)

    def apply(self, model: "nn.Module", input_shape: tuple[int, ...], config: Any) -> tuple["nn.Module", "PassRecord"]:
        """A compressed copy of ``model`` (shapes taken at ``input_shape``) and the record of what changed."""
        if not isinstance(config, self.config_type):
            raise InputError(f"the {self.name} pass takes a {self.config_type.__name__}, got {type(config).__name__}")
        check_images(getattr(config, "calibration", None), input_shape, self.name)
        new, record = self.apply_impl(copy.deepcopy(model).eval(), input_shape, config)
        record.params_before, record.params_after = param_count(model), param_count(new)
        return new, record

    @abc.abstractmethod
    def apply_impl(self, model: "nn.Module", input_shape: tuple[int, ...],
                   config: Any) -> tuple["nn.Module", "PassRecord"]:
        """Rewrite ``model`` (already a private copy) in place and return it with its record."""


def check_images(images: Any, input_shape: tuple[int, ...], method: str) -> None:
    """Raise DataError unless ``images`` (if given) are (N, C, *spatial) with the model input's rank and channels.

    Checked once at pass entry, so a 3-channel image set fed to a 1-channel model is one clear message
    rather than a convolution's RuntimeError deep inside activation statistics.
    """
    if images is None:
        return
    shape = tuple(getattr(images, "shape", ()))
    if len(shape) != len(input_shape):
        raise DataError(f"{method}: calibration images have shape {shape}, but the model takes "
                        f"{len(input_shape)}-D input {tuple(input_shape)} (N, C, *spatial)")
    if shape[1] != input_shape[1]:
        raise DataError(f"{method}: calibration images have {shape[1]} channel(s), the model input has "
                        f"{input_shape[1]} (shape {tuple(input_shape)})")


def chain(model: "nn.Module", input_shape: tuple[int, ...],
          steps: list[tuple[str, Any]]) -> tuple["nn.Module", list["PassRecord"]]:
    """Run registered passes one after another: ``steps`` is ``[(method, config), ...]``.

    Latency targets (``config.latency``) are one budget, a fraction of the ORIGINAL's latency: after a latency
    pass that a later one follows, the chain so far is timed beside the original, and the later pass is asked for
    what is left (``svd`` at 0.5 then ``prune-l2`` at 0.5: if the low-rank pass measured 0.7x, pruning aims at
    0.5 / 0.7 of its input's time; if it already reached 0.5x, pruning keeps every channel)."""
    import dataclasses

    from medexport.compression._registry import get_pass

    original, spent, records = model, 1.0, []
    for index, (method, config) in enumerate(steps):
        target = getattr(config, "latency", None)
        if target is not None and spent < 1.0:
            config = dataclasses.replace(config, latency=min(1.0, target / spent))
        model, record = get_pass(method).apply(model, input_shape, config)
        records.append(record)
        later = [c for _, c in steps[index + 1:] if getattr(c, "latency", None) is not None]
        if target is not None and later:
            from medexport.compression._latency import compare

            before, after = compare([original, model], input_shape, config.backend, threads=config.threads)
            spent = after / before
    return model, records


def param_count(model: "nn.Module") -> int:
    """Every parameter of ``model`` (weights, biases, norm scales), the count a weights budget divides."""
    return sum(p.numel() for p in model.parameters())


def model_macs(model: "nn.Module", input_shape: tuple[int, ...]) -> int:
    """Total MACs by medexport.graph.profile, traced afresh (a wrapper so a stale GraphModule is re-traced)."""
    from torch import nn

    from medexport.graph import capture, profile

    class _Fresh(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    return profile(capture(_Fresh(model), tuple(input_shape))).macs
