"""Options shared by several verbs (how the model is given) and the progress display."""
from __future__ import annotations

import contextlib
import functools
import json
import time
from typing import TYPE_CHECKING, Callable

import click

from medexport.errors import InputError
from medexport.loading import ModelSpec

if TYPE_CHECKING:
    from medexport.compression.options import PassOption


def model_options(func: Callable) -> Callable:
    """--model/--weights/--model-kwargs/--spec/--input-shape/--static-batch/--trust-pickle."""
    options = [
        click.option("--model", "model", default=None,
                     help="pkg.module:factory, a torch.export .pt2, an .onnx file, a MONAI bundle (folder or .zip), "
                          "or a reference model name (default: the bundled reference model)."),
        click.option("--weights", default=None, help="State-dict checkpoint for a factory (loaded with weights_only=True)."),
        click.option("--model-kwargs", default=None, help='JSON keyword arguments for the factory, e.g. \'{"spatial_dims": 2}\'.'),
        click.option("--spec", "spec_file", default=None, help="YAML/JSON model spec file (model, weights, model_kwargs, input_shape)."),
        click.option("--input-shape", default=None, help="Input shape, e.g. 1x1x128x128 (NCHW) or 1x1x64x64x64 (NCDHW)."),
        click.option("--static-batch", is_flag=True, help="Export with a fixed batch size instead of a dynamic batch axis."),
        click.option("--trust-pickle", is_flag=True,
                     help="Allow loading pickled Python objects (can run code). Only for files you trust."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


class RegistryChoice(click.ParamType):
    """One of the names a registry holds when the command runs (so a backend or pass registered later counts)."""

    name = "choice"

    def __init__(self, names: Callable[[], list[str]]) -> None:
        self.names = names

    def get_metavar(self, param, ctx=None) -> str:
        return f"[{'|'.join(self.names())}]"

    def convert(self, value, param, ctx):
        if value not in self.names():
            self.fail(f"{value!r} is not one of {', '.join(self.names())}", param, ctx)
        return value


class PassChain(RegistryChoice):
    """A registered compression pass, or several joined by commas (run in that order)."""

    name = "pass"

    def __init__(self) -> None:
        from medexport.compression import list_passes

        super().__init__(list_passes)

    def get_metavar(self, param, ctx=None) -> str:
        return f"{super().get_metavar(param, ctx)}[,...]"

    def convert(self, value, param, ctx):
        names = [part.strip() for part in str(value).split(",")]
        unknown = [n for n in names if n not in self.names()]
        if unknown:
            self.fail(f"unknown pass {unknown[0]!r}; choose from {', '.join(self.names())}", param, ctx)
        return ",".join(names)


def target_option(default: str | None, help_text: str) -> Callable:
    """--target: a build target or its alias, from the backend registry."""
    from medexport.runtimes import target_choices

    return click.option("--target", type=RegistryChoice(target_choices), default=default, show_default=default is not None,
                        help=help_text)


def _pass_params() -> list[click.Option]:
    """One click option per flag any registered pass declares, built from the registry each time it is asked
    (so a pass registered later, e.g. by a plugin or a test, gets its options)."""
    from medexport.compression import get_pass, list_passes

    declared: dict[str, PassOption] = {}
    for name in list_passes():
        for option in get_pass(name).options:
            seen = declared.setdefault(option.flag, option)
            if seen.field != option.field:
                raise InputError(f"{option.flag} fills {seen.field!r} in one pass and {option.field!r} in {name}")
    params = []
    for option in declared.values():
        choices = option.choice_list()
        kwargs = {"flag_value": option.flag_value} if option.flag_value is not None else {}
        params.append(click.Option([option.flag, option.param], type=click.Choice(choices) if choices else option.type,
                                   default=option.default, is_flag=option.is_flag, multiple=option.multiple,
                                   help=option.help, show_default=option.default not in (None, False), **kwargs))
    return params


class PassOptionsCommand(click.Command):
    """A command that takes every registered pass's options; the callback receives the ones the user gave as
    ``pass_options`` (flag -> value), which :meth:`CompressionConfig.from_flags` routes to the chain's passes."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        own = {name for param in self.params for name in (param.name, *param.opts)}
        passes = _pass_params()
        clash = [param.opts[0] for param in passes if param.name in own or param.opts[0] in own]
        if clash:
            raise InputError(f"a compression pass declares {', '.join(clash)}, which `{self.name}` already has")
        params = [*self.params, *passes]
        help_option = self.get_help_option(ctx)
        return [*params, help_option] if help_option is not None else params

    def invoke(self, ctx: click.Context):
        from click.core import ParameterSource

        given = {}
        for param in _pass_params():
            value = ctx.params.pop(param.name, None)
            if ctx.get_parameter_source(param.name) not in (None, ParameterSource.DEFAULT):
                given[param.opts[0]] = tuple(value) if param.multiple else value
        ctx.params["pass_options"] = given
        return super().invoke(ctx)


def compression_options(required: bool) -> Callable:
    """--method (compress) or --compress (build), and --finetune; the passes' own options come from the registry
    through :class:`PassOptionsCommand`, which the command must use (``@click.command(cls=PassOptionsCommand)``)."""

    def decorate(func: Callable) -> Callable:
        func = click.option("--resume", is_flag=True,
                            help="With --finetune-data: continue the fine-tuning that a failed or interrupted run "
                                 "with the same options and images left in OUT/finetune-checkpoints, instead of "
                                 "starting over.")(func)
        func = click.option("--patience", type=int, default=5, show_default=True,
                            help="With --finetune-data: stop after this many checks (one every tenth of the steps) "
                                 "without a better guard-rail headroom on the images held aside.")(func)
        func = click.option("--finetune-val", type=float, default=0.2, show_default=True,
                            help="With --finetune-data: the fraction of those images held aside; the guard-rail "
                                 "metric on them, relative to the original, keeps the best weights and stops early "
                                 "(0: train on all, keep the last weights).")(func)
        func = click.option("--finetune-labels", default=None,
                            help="Mask files/folder paired with --finetune-data (segmentation).")(func)
        func = click.option("--finetune-data", default=None,
                            help="Labelled images to fine-tune on instead of distilling, in the forms --data takes (an "
                                 ".npz with 'images' and 'labels', or image files/folder with --finetune-labels "
                                 "masks); loss: Dice + cross-entropy (segmentation) or cross-entropy. Never the --data "
                                 "images the guard rails judge.")(func)
        func = _activation_options(func)
        func = click.option("--finetune", "finetune_steps", type=int, default=0, is_flag=False, flag_value=300,
                            help="Fine-tune this many steps by distillation from the original on the calibration "
                                 "images (--calib), or on labelled images with --finetune-data (--finetune alone: 300 "
                                 "steps, about 40 s on the 2D reference model on 2 CPU cores): after a low-rank pass; "
                                 "with a pruning pass, spread over its --iterative steps, each step fine-tuned before "
                                 "it is judged and before the next.")(func)
        return click.option("--compress" if not required else "--method", "compress", required=required, default=None,
                            type=PassChain(),
                            help="Compression pass: low-rank (svd, spatial-svd, tucker, hsc), channel pruning (prune-*), "
                                 "filter merging (merge: hybrid crossover, merge-medoid), or subpixel (transposed convs "
                                 "rewritten exactly as convs + pixel shuffle where that measures faster), or any pass "
                                 "registered beside them. A comma-separated chain (e.g. tucker,prune-l2 or "
                                 "prune-l2,subpixel) runs at most one pass per family in the order given, an exact "
                                 "rewrite last, each with its own options.")(func)

    return decorate


_ACTIVATION_PARAMS = ("act_compress", "act_ratio", "act_layers", "act_types", "max_memory")


def _activation_options(func: Callable) -> Callable:
    """--act-compress/--act-ratio/--act-layers/--act-types/--max-memory, handed to the command as one
    ``finetune_memory`` dict (``act_compress``: an ActCompressSpec or None, ``max_memory``: bytes or None)."""

    @functools.wraps(func)
    def command(*args, **kwargs):
        given = {name: kwargs.pop(name) for name in _ACTIVATION_PARAMS}
        kwargs["finetune_memory"] = _finetune_memory(**given)
        return func(*args, **kwargs)

    options = [
        click.option("--act-compress", type=click.Choice(["dct", "wavelet", "threshold"]), default=None,
                     help="Fine-tune with compressed activation maps (Vu et al. 2024): the chosen layers keep their "
                          "activations for the backward pass as top-k block-DCT, Haar-wavelet or raw values, "
                          "rebuilt in the backward pass; 3D networks fine-tune in a fraction of the memory."),
        click.option("--act-ratio", type=float, default=10.0, show_default=True,
                     help="Compression ratio lambda of --act-compress: k = N / lambda values kept per activation map."),
        click.option("--act-layers", default="block0-1", show_default=True,
                     help="Conv blocks whose activations are compressed, by resolution level (block0: the largest "
                          "feature maps, encoder and decoder alike), e.g. block0, block0-1, block0,block2."),
        click.option("--act-types", default="conv,bn,relu", show_default=True,
                     help="Layer types compressed in those blocks: a subset of conv, bn, relu."),
        click.option("--max-memory", default=None,
                     help="Activation memory cap for a fine-tuning batch (e.g. 8GiB): fine-tune on the largest patch "
                          "whose activations fit it; the report says which."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _finetune_memory(act_compress, act_ratio, act_layers, act_types, max_memory) -> dict:
    from click.core import ParameterSource

    ctx = click.get_current_context()
    stray = [f"--{name.replace('_', '-')}" for name in ("act_ratio", "act_layers", "act_types")
             if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)]
    if stray and act_compress is None:
        raise InputError(f"{', '.join(stray)} configure --act-compress; add --act-compress dct|wavelet|threshold")
    spec = None
    if act_compress is not None:
        from medexport.finetune.actcompress.spec import ActCompressSpec

        spec = ActCompressSpec.from_flags(act_compress, act_ratio, act_layers, act_types)
    cap = None
    if max_memory is not None:
        from medexport.finetune.actcompress.memory import parse_bytes

        cap = parse_bytes(max_memory)
    return {"act_compress": spec, "max_memory": cap}


def memory_line(memory: dict) -> str:
    """One line on the fine-tuning's activation memory (a fine-tuning record's ``memory``)."""
    mib = 2 ** 20
    line = (f"activation memory per batch of {memory['batch']}: {memory['activation_bytes'] / mib:.1f} MiB "
            f"(uncompressed {memory['uncompressed_bytes'] / mib:.1f} MiB, eta {memory['eta']:+.0f}%)")
    if memory.get("patch"):
        line += (f"; patch {'x'.join(map(str, memory['patch']))} fits --max-memory {memory['cap'] / mib:.0f} MiB"
                 + ("" if memory["uncompressed_fits"] else " (uncompressed it would not)"))
    return line


def rail_options(func: Callable) -> Callable:
    """--max-overall-drop/--max-class-drop, with the defaults of :class:`~medexport.evaluation.GuardRails`."""
    from medexport.evaluation.guardrails import GuardRails

    defaults = GuardRails()
    func = click.option("--max-class-drop", type=float, default=defaults.max_class_drop, show_default=True,
                        help="Guard rail: largest allowed drop of any class's metric, in percentage points.")(func)
    return click.option("--max-overall-drop", type=float, default=defaults.max_overall_drop, show_default=True,
                        help="Guard rail: largest allowed drop of the overall metric, in percentage points.")(func)


def parity_options(func: Callable) -> Callable:
    """--tolerance/--rtol of FP32 parity, with the defaults of :class:`~medexport.pipeline.config.ParityConfig`."""
    from medexport.pipeline.config import FP32_RTOL, FP32_TOLERANCE

    func = click.option("--rtol", type=float, default=FP32_RTOL, show_default=True,
                        help="FP32 parity: extra bound relative to the output range (max |reference|).")(func)
    return click.option("--tolerance", type=float, default=FP32_TOLERANCE, show_default=True,
                        help="FP32 parity: absolute error bound.")(func)


def calib_options(help_text: str) -> Callable:
    """--calib/--calib-samples/--min-calib: the real unlabelled images calibration and fine-tuning read."""
    from medexport.pipeline.config import MIN_CALIB

    def decorate(func: Callable) -> Callable:
        func = click.option("--min-calib", type=int, default=MIN_CALIB, show_default=True,
                            help="Refuse --calib when fewer usable images than this remain after skipping the files "
                                 "that give none (or than --calib-samples, if lower).")(func)
        func = click.option("--calib-samples", type=int, default=256, show_default=True,
                            help="At most this many calibration images.")(func)
        return click.option("--calib", default=None, help=help_text)(func)

    return decorate


def data_options(func: Callable) -> Callable:
    """--data/--labels/--task/--classes: labelled images for validation and guard rails."""
    options = [
        click.option("--data", "data_path", default=None,
                     help="Labelled images: an .npz with 'images' and 'labels' arrays, or image files/folder with "
                          "--labels masks. Default: the reference model's held-out images."),
        click.option("--labels", "labels_path", default=None, help="Mask files/folder paired with --data (segmentation)."),
        click.option("--task", type=click.Choice(["segmentation", "classification"]), default=None,
                     help="Task of a non-reference model."),
        click.option("--classes", default=None, help="Class names, comma separated (segmentation: background first)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def data_config(data_path, labels_path, task, classes, calib=None, calib_samples=256, min_calib=None,
                finetune_data=None, finetune_labels=None):
    """The DataConfig of the image options a command received."""
    from medexport.pipeline import DataConfig
    from medexport.pipeline.config import MIN_CALIB

    return DataConfig(data=data_path, labels=labels_path, task=task,
                      classes=tuple(classes.split(",")) if classes else None, calib=calib, calib_samples=calib_samples,
                      min_calib=MIN_CALIB if min_calib is None else min_calib, finetune_data=finetune_data,
                      finetune_labels=finetune_labels)


def finetune_summary(tuned: dict) -> str:
    """One line on a fine-tuning record: what it trained on, its loss, and where early stopping kept the weights."""
    if tuned["method"] != "labels":
        return (f"fine-tuned {tuned['steps']} steps on {tuned['images']} images in {tuned['seconds']:.0f} s "
                f"(distillation loss {tuned['loss_first']:.3f} -> {tuned['loss_last']:.3f})")
    line = (f"fine-tuned {tuned['steps']} steps on {tuned['images']} labelled images in {tuned['seconds']:.0f} s "
            f"({tuned['loss']} {tuned['loss_first']:.3f} -> {tuned['loss_last']:.3f})")
    early = tuned.get("early_stopping")
    if early:
        line += (f"; kept step {early['best_step']} ({early['best_points']:+.1f} points of {early['metric']} on "
                 f"{tuned['val_images']} images held aside)")
    if tuned.get("resumed_from") is not None:
        line += f"; resumed from step {tuned['resumed_from']}"
    return line


def model_spec(model, weights, model_kwargs, spec_file, input_shape, static_batch, trust_pickle) -> ModelSpec:
    """Build a ModelSpec from the shared options; flags override a spec file."""
    spec = ModelSpec.from_file(spec_file) if spec_file else ModelSpec()
    if model_kwargs:
        try:
            kwargs = json.loads(model_kwargs)
        except json.JSONDecodeError as exc:
            raise InputError(f"--model-kwargs is not valid JSON: {exc.msg}") from None
        if not isinstance(kwargs, dict):
            raise InputError("--model-kwargs must be a JSON object")
        spec.model_kwargs = kwargs
    if model:
        spec.model = model
    if weights:
        spec.weights = weights
    if input_shape:
        spec = ModelSpec(**{**spec.__dict__, "input_shape": input_shape})
    spec.dynamic_batch = spec.dynamic_batch and not static_batch
    spec.trust_pickle = spec.trust_pickle or trust_pickle
    return spec


def stage_printer(console) -> Callable:
    """A stage context manager: a spinner while the stage runs, then '✓ stage (1.2 s)'."""

    @contextlib.contextmanager
    def stage(name: str):
        start = time.perf_counter()
        with console.status(f"{name}…", spinner="dots"):
            yield
        console.print(f"[green]✓[/green] {name} [dim]({time.perf_counter() - start:.1f} s)[/dim]")

    return stage


def console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _listed(table) -> str:
    return "; ".join(f"{name}: {option.help} ({option.scope})" for name, option in table.items())


def precision_options(fn):
    """--precision, --calib-method and the INT8 engine options, with choices from their registries."""
    from medexport.calibration.choices import METHODS
    from medexport.runtimes import PRECISIONS

    fn = click.option("--calib-method", type=click.Choice(list(METHODS)), default="minmax", show_default=True,
                      help=f"Activation ranges: {_listed(METHODS)}.")(fn)
    fn = int8_engine_options(fn)
    return click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
                        help="int8: one QDQ ONNX calibrated on real images, built for the target. fp16: FP16 ONNX "
                             "(ONNX Runtime, TensorRT) or FP16 IR + f16 hint (OpenVINO).")(fn)


def int8_engine_options(fn):
    """``--int8-engine``, ``--accuracy-control`` (NNCF's OpenVINO-only INT8 path beside our QDQ ONNX) and
    ``--int8-layout`` (one-backend layouts), with choices and help from ``calibration.choices``."""
    from medexport.calibration.choices import INT8_ENGINES, LAYOUTS

    fn = click.option("--int8-layout", type=click.Choice(list(LAYOUTS)), default=None,
                      help=f"qdq engine's layout (default: the target's; openvino for --target openvino, else "
                           f"tensorrt): {_listed(LAYOUTS)}.")(fn)
    fn = click.option("--accuracy-control", is_flag=True,
                      help="With --int8-engine nncf: nncf.quantize_with_accuracy_control on the labelled data, "
                           "allowing at most --max-overall-drop points.")(fn)
    return click.option("--int8-engine", type=click.Choice(list(INT8_ENGINES)), default="qdq", show_default=True,
                        help=f"{_listed(INT8_ENGINES)}.")(fn)
