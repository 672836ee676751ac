"""Options shared by several verbs (how the model is given) and the progress display."""
from __future__ import annotations

import contextlib
import json
import time
from typing import Callable

import click

from medexport.errors import InputError
from medexport.loading import ModelSpec


def model_options(func: Callable) -> Callable:
    """--model/--weights/--model-kwargs/--spec/--input-shape/--static-batch/--trust-pickle."""
    options = [
        click.option("--model", "model", default=None,
                     help="pkg.module:factory, a torch.export .pt2, an .onnx file, or a reference model name "
                          "(default: the bundled reference model)."),
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


# the BuildConfig fields the compression options fill, handed to a command as one ``compression`` dict
COMPRESSION_FIELDS = ("compress", "budget", "budget_metric", "rank_ratio", "energy", "vbmf", "compress_latency",
                      "compress_backend", "compress_payoff", "prune_ratio", "prune_steps", "prune_scope",
                      "prune_max_ratio", "prune_rollback", "finetune_steps", "compress_exclude",
                      "compress_exclude_types")


class PassChain(click.ParamType):
    """A registered compression pass, or several joined by commas (run in that order)."""

    name = "pass"

    def __init__(self, passes: list[str]) -> None:
        self.passes = passes

    def get_metavar(self, param, ctx=None) -> str:
        return f"[{'|'.join(self.passes)}][,...]"

    def convert(self, value, param, ctx):
        names = [part.strip() for part in str(value).split(",")]
        unknown = [n for n in names if n not in self.passes]
        if unknown:
            self.fail(f"unknown pass {unknown[0]!r}; choose from {', '.join(self.passes)}", param, ctx)
        return ",".join(names)


def compression_options(required: bool) -> Callable:
    """--method (or --compress) and every option of the pass families, with methods from the compression registry;
    the command receives them as ``compression``, a dict of BuildConfig fields."""
    import functools

    from medexport.compression import list_passes

    def decorate(func: Callable) -> Callable:
        options = [
            click.option("--compress" if not required else "--method", "compress", required=required, default=None,
                         type=PassChain(list_passes()),
                         help="Compression pass: low-rank (svd, spatial-svd, tucker, hsc), channel pruning (prune-*), "
                              "filter merging (merge: hybrid crossover, merge-medoid), or subpixel (transposed convs "
                              "rewritten exactly as convs + pixel shuffle where that measures faster). A comma-"
                              "separated chain (e.g. tucker,prune-l2 or prune-l2,subpixel) runs at most one pass per "
                              "family in the order given, subpixel last, each with its own options."),
            click.option("--budget", default=None,
                         help="Low-rank passes: reduction target of --budget-metric, e.g. 3x or 6x (default 3x, "
                              "unless another rank rule is given)."),
            click.option("--budget-metric", "budget_metric", type=click.Choice(["macs", "params"]), default="macs",
                         show_default=True, help="Low-rank --budget: what it divides, MACs or parameters."),
            click.option("--rank-ratio", "rank_ratio", type=float, default=None,
                         help="Low-rank passes: keep this fraction of every layer's full rank (Tucker-2: of its "
                              "channel counts) (replaces --budget)."),
            click.option("--energy", type=float, default=None,
                         help="Low-rank passes: smallest ranks keeping this fraction of each layer's squared singular "
                              "values, e.g. 0.9 (replaces --budget)."),
            click.option("--vbmf", is_flag=True,
                         help="Low-rank passes: ranks from analytic variational Bayesian matrix factorization "
                              "(EVBMF) of each layer (replaces --budget)."),
            click.option("--latency", "compress_latency", type=float, default=None,
                         help="Low-rank passes: target latency as a fraction of the original's, measured on "
                              "--latency-backend (e.g. 0.5); replaces --budget."),
            click.option("--latency-backend", "compress_backend", type=click.Choice(["openvino", "onnxruntime"]),
                         default=None,
                         help="Backend --latency and subpixel are measured on (default: build's --target when it is "
                              "one of these, else openvino; compress: openvino)."),
            click.option("--latency-payoff", "compress_payoff", type=float, default=0.85, show_default=True,
                         help="Low-rank --latency: least measured realized/ideal speed-up (latency ratio over MACs "
                              "ratio) the chosen factorizations keep; lower it to reach deeper targets."),
            click.option("--ratio", "prune_ratio", type=float, default=0.5, show_default=True,
                         help="Pruning passes: share of channels removed from every prunable group."),
            click.option("--iterative", "prune_steps", type=int, default=1, is_flag=False, flag_value=4,
                         help="Pruning/merging: reach --ratio in this many steps, re-scoring after each "
                              "(--iterative alone: 4 steps)."),
            click.option("--scope", "prune_scope", type=click.Choice(["layer", "global"]), default="layer",
                         show_default=True,
                         help="Pruning/merging: same ratio in every group, or per-group ratios from one global "
                              "ranking capped by --max-ratio."),
            click.option("--max-ratio", "prune_max_ratio", type=float, default=0.75, show_default=True,
                         help="Pruning/merging with --scope global: most a single group may lose."),
            click.option("--rollback", "prune_rollback", is_flag=True,
                         help="Pruning/merging: validate every step on the labelled images; a step that breaks "
                              "the guard rails is undone and its group locked."),
            click.option("--finetune", "finetune_steps", type=int, default=0, is_flag=False, flag_value=300,
                         help="Fine-tune this many steps by distillation from the original on the calibration "
                              "images (--calib; --finetune alone: 300 steps, about 40 s on the 2D reference model on "
                              "2 CPU cores): after a low-rank pass; with a pruning pass, spread over its --iterative "
                              "steps, each step fine-tuned before it is judged and before the next."),
            click.option("--exclude-layer", "compress_exclude", multiple=True,
                         help="Layer name glob kept as it is by every pass of the chain (repeatable; low-rank and "
                              "pruning passes also keep the first conv and the head)."),
            click.option("--exclude-type", "compress_exclude_types", multiple=True,
                         help="Low-rank passes: layer class kept uncompressed, e.g. Linear or ConvTranspose3d "
                              "(repeatable)."),
        ]

        @functools.wraps(func)
        def collect(*args, **kwargs):
            compression = {name: kwargs.pop(name) for name in COMPRESSION_FIELDS}
            compression["compress_exclude"] = tuple(compression["compress_exclude"])
            compression["compress_exclude_types"] = tuple(compression["compress_exclude_types"])
            return func(*args, compression=compression, **kwargs)

        for option in reversed(options):
            collect = option(collect)
        return collect

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


def int8_engine_options(fn):
    """``--int8-engine``, ``--accuracy-control`` (NNCF's OpenVINO-only INT8 path beside our QDQ ONNX) and
    ``--int8-layout`` (one-backend layouts: onnxruntime's own U8S8, OpenVINO's uint8 ReLU outputs)."""
    fn = click.option("--int8-layout", type=click.Choice(["tensorrt", "ort-u8s8", "openvino"]), default=None,
                      help="qdq engine: tensorrt = one QDQ ONNX for every backend (default, except for --target "
                           "openvino); ort-u8s8 = onnxruntime's own uint8-activation layout, faster on ONNX Runtime "
                           "CPU, ONNX Runtime only; openvino = uint8 ReLU outputs as NNCF places them, OpenVINO only "
                           "(default for --target openvino).")(fn)
    fn = click.option("--accuracy-control", is_flag=True,
                      help="With --int8-engine nncf: nncf.quantize_with_accuracy_control on the labelled data, "
                           "allowing at most --max-overall-drop points.")(fn)
    return click.option("--int8-engine", type=click.Choice(["qdq", "nncf"]), default="qdq", show_default=True,
                        help="qdq: our QDQ ONNX for every backend; nncf: NNCF post-training quantization into an "
                             "OpenVINO IR (OpenVINO only).")(fn)
