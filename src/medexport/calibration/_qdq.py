"""FP32 ONNX + real calibration images -> one QDQ ONNX (``model.int8.qdq.onnx``) for every backend.

The file follows TensorRT's explicit-quantization contract (see ``qdq_check``): int8 symmetric
activations and weights (zero point 0), per-channel weights (per-tensor for ConvTranspose), float
biases, Q/DQ on the inputs of Conv/ConvTranspose/Gemm/MatMul/Add/Concat and not on their outputs,
so conv + bias + ReLU (+ residual add) fuse. ONNX Runtime and OpenVINO run the same file. Two
one-backend layouts sit beside it (``QuantConfig.layout``): ``ort-u8s8`` for ONNX Runtime and
``openvino`` (the same placement with uint8 zero-point-0 ReLU outputs, as NNCF's, MaxPool and instance-norm
inputs quantized and no Q/DQ after a Concat of one scale: OpenVINO's int8 paths, found with
``medexport.bench.node_times``). Fast bias correction (``_bias_correction``) then shifts the int8 convs' biases.
Calibration is onnxruntime's (``quantize_static`` with min-max, percentile or entropy ranges); the
resulting model is checked by ``check_qdq`` before it replaces ``dest``. Example::

    images = get_model("brain-tissue-unet2d").calibration()
    result = quantize_qdq("out/model.onnx", images, "out/model.int8.qdq.onnx", QuantConfig(method="percentile"))
    result.quantized_nodes, result.calibration_sha256
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from medexport._io import atomic_path
from medexport.calibration._calib_data import batch_reader, checked_images, images_sha256
from medexport.calibration._concat_scales import drop_exact_concat_requantization, unify_concat_scales
from medexport.calibration._float_layers import float_inputs, float_norm_parameters, with_glue
from medexport.calibration._memory import check_fits
from medexport.calibration._pool_qdq import move_qdq_upstream
from medexport.calibration._graph import (FLOAT_NODES_KEY, LAYOUT_KEY, NON_NEGATIVE_KEY, OnnxGraph,
                                          drop_unread_initializers, quantized_nodes)
from medexport.calibration._unsigned import unsigned_activations
from medexport.calibration.choices import LAYOUTS, METHODS, get_option
from medexport.errors import ExportError, InputError, ModelLoadError

QDQ_FILENAME = "model.int8.qdq.onnx"
# Q/DQ go on the *inputs* of these ops only (TensorRT's placement recommendation): never between a
# conv and its ReLU, which would stop OpenVINO and TensorRT from fusing them (measured: with Q/DQ on
# conv outputs and ReLUs, OpenVINO ran the 2D reference U-Net no faster than FP32). Concat inputs are
# quantized so a U-Net's skip concatenation runs in int8; pooling, resize and activations stay
# unquantized and the next quantized op's input Q/DQ covers them.
QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Concat")
# the openvino layout also quantizes the inputs of instance norms (MONAI's InstanceNorm, and GroupNorm, which
# exports as one), as NNCF does: the conv before writes int8 and OpenVINO's MVN reads it (profiled on MONAI's 2D
# BasicUNet: f32 MVN in ours, I8 in NNCF's IR; alternated rounds, one thread: 17.46 -> 16.83 ms, NNCF 16.55 ms)
OPENVINO_QUANTIZED_OPS = (*QUANTIZED_OPS, "InstanceNormalization")


@dataclass
class QuantConfig:
    """How to calibrate and which nodes stay in float; serialised into the manifest.

    ``percentile`` is the activation percentile kept by the ``percentile`` method (ignored otherwise).
    ``nodes_to_exclude`` are ONNX node names kept in float (mixed precision). ``layout``:
    ``tensorrt`` (default) is the one file for every backend; ``ort-u8s8`` is onnxruntime's own
    layout (asymmetric uint8 activations, Q/DQ around every op), its fast x86 path, for ONNX Runtime
    only: TensorRT rejects it and OpenVINO gains less from it. ``openvino`` is the TensorRT placement
    with the Q/DQ of non-negative activations (ReLU outputs, and the skip Concats of them) made uint8
    with zero point 0, as NNCF's FakeQuantize nodes are: OpenVINO only (TensorRT rejects uint8).
    ``bias_correction`` shifts each int8 conv's bias by its mean output error on the calibration images
    (``_bias_correction``, as NNCF's fast bias correction); every layout.
    """

    method: str = "minmax"
    percentile: float = 99.999
    batch_size: int = 8
    nodes_to_exclude: tuple[str, ...] = ()
    layout: str = "tensorrt"
    bias_correction: bool = True

    def __post_init__(self) -> None:
        get_option(LAYOUTS, self.layout)
        get_option(METHODS, self.method)
        if not 50.0 < self.percentile <= 100.0:
            raise InputError(f"percentile must be in (50, 100], got {self.percentile}")
        if self.batch_size < 1:
            raise InputError(f"calibration batch size must be at least 1, got {self.batch_size}")
        self.nodes_to_exclude = tuple(self.nodes_to_exclude)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "nodes_to_exclude": list(self.nodes_to_exclude)}


@dataclass
class QuantResult:
    """What ``quantize_qdq`` wrote and from what: the calibration recipe of the manifest."""

    path: Path
    method: str
    calibration_images: int
    calibration_sha256: str
    excluded_nodes: list[str]
    quantized_nodes: int
    glue_float_nodes: list[str] = field(default_factory=list)   # Concat/Add that only feed float layers
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": self.path.name}


def quantize_qdq(onnx_path: str | Path, calibration: np.ndarray, dest: str | Path,
                 config: QuantConfig | None = None, *, calibration_cache: str | Path | None = None) -> QuantResult:
    """Calibrate ``onnx_path`` on ``calibration`` (float32, N x model input) and write the QDQ model to ``dest``.

    ``calibration_cache`` (a JSON file) stores the activation ranges: a second call with the same
    images, method and cache skips calibration (the sensitivity analysis quantizes many variants).
    Raises DataError for missing, NaN or wrong-shape images and InputError for unknown node names.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    config = config or QuantConfig()
    onnx_path, dest = Path(onnx_path), Path(dest)
    if not onnx_path.is_file():
        raise ModelLoadError(f"ONNX file not found: {onnx_path}")
    graph = OnnxGraph.load(onnx_path)
    input_name, input_shape = graph.input()
    images = checked_images(calibration, input_shape)
    names = {n.name for n in graph.nodes}
    unknown = [n for n in config.nodes_to_exclude if n not in names]
    if unknown:
        raise InputError(f"nodes_to_exclude names nodes that are not in {onnx_path.name}: {', '.join(unknown)}")

    if calibration_cache is None or not Path(calibration_cache).is_file():
        check_fits(onnx_path, len(images))
    ops = OPENVINO_QUANTIZED_OPS if config.layout == "openvino" else QUANTIZED_OPS
    excluded = with_glue(graph, config.nodes_to_exclude, ops)
    batch = input_shape[0] if input_shape[0] is not None else config.batch_size
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    trt = config.layout != "ort-u8s8"   # tensorrt and openvino: symmetric int8 on layer inputs, then _finish
    options: dict[str, Any] = {
        "ActivationSymmetric": trt,
        "WeightSymmetric": True,
        "QuantizeBias": False,   # TensorRT rejects int32 bias DQ; ORT re-quantizes float biases itself
        "QDQDisableWeightAdjustForInt32Bias": True,   # no int32 bias, so no reason to widen weight scales
        "TensorQuantOverrides": _conv_transpose_per_tensor(graph, excluded),
    }
    if trt:
        options["OpTypesToExcludeOutputQuantization"] = list(ops)
    if config.method == "percentile":
        options["CalibPercentile"] = config.percentile
    with atomic_path(dest) as tmp, _quiet_ort_logging():
        try:
            quantize_static(
                str(onnx_path), str(tmp), batch_reader(images, input_name, batch),
                quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8 if trt else QuantType.QUInt8,
                weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=list(excluded),
                op_types_to_quantize=list(ops) if trt else None,
                calibrate_method=methods[config.method], extra_options=options,
                calibration_cache_path=str(calibration_cache) if calibration_cache else None,
            )
        except (ValueError, RuntimeError) as exc:
            raise ExportError(f"onnxruntime quantization of {onnx_path.name} failed: "
                              f"{str(exc).splitlines()[0][:200]}") from exc
        # a model input no calibration image takes below 0 (intensities scaled to [0, 1]) may go unsigned too
        calibrated = [input_name] if float(images.min()) >= 0.0 else []
        quantized = _finish_float_nodes(tmp, excluded, config.layout, calibrated)
        if config.bias_correction:
            _correct_biases(onnx_path, tmp, images, batch)
        from medexport.calibration.qdq_check import check_qdq

        problems = check_qdq(tmp)
        if problems:
            raise ExportError(f"the QDQ model breaks {len(problems)} {config.layout} rule(s): {problems[0]}")
    return QuantResult(path=dest, method=config.method, calibration_images=len(images),
                       calibration_sha256=images_sha256(images), excluded_nodes=list(config.nodes_to_exclude),
                       quantized_nodes=quantized, config=config.to_dict(),
                       glue_float_nodes=[n for n in excluded if n not in config.nodes_to_exclude])


def _conv_transpose_per_tensor(graph: OnnxGraph, excluded: tuple[str, ...]) -> dict[str, list[dict[str, bool]]]:
    """Per-tensor ConvTranspose weights: the one layout both TensorRT and OpenVINO run in int8.

    TensorRT's deconvolution only takes per-tensor or axis-0 (input-channel) weight scales
    (NVIDIA/TensorRT#2380); OpenVINO's CPU plugin only runs per-tensor or axis-1 (output-channel)
    scales in int8 and silently runs an axis-0 one in f32 (measured: all three up-sampling layers
    of the 2D reference U-Net). An override without ``axis`` makes onnxruntime quantize per tensor.
    """
    return {node.input[1]: [{"symmetric": True}] for node in graph.nodes
            if node.op_type == "ConvTranspose" and node.name not in excluded and graph.const(node.input[1]) is not None}


def _finish_float_nodes(path: Path, excluded: tuple[str, ...], layout: str, calibrated_non_negative: list[str]) -> int:
    """Make the float-kept nodes read float tensors, record the float nodes, the layout and (openvino layout)
    the inputs calibration found >= 0 in the model metadata (so the checker knows), give each Concat one
    scale (symmetric layouts); in the openvino layout drop the exact re-quantization after a Concat, quantize
    MaxPool inputs instead of outputs and make non-negative activations uint8; count the quantized nodes."""
    import onnx

    model = onnx.load(str(path))
    float_inputs(model, excluded)
    keys = (FLOAT_NODES_KEY, LAYOUT_KEY, NON_NEGATIVE_KEY)
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in keys]
    del model.metadata_props[:]
    for key, value in kept:
        model.metadata_props.add(key=key, value=value)
    model.metadata_props.add(key=FLOAT_NODES_KEY, value=json.dumps(list(excluded)))
    model.metadata_props.add(key=LAYOUT_KEY, value=layout)
    if layout != "ort-u8s8":
        unify_concat_scales(model)
    if layout == "openvino":
        model.metadata_props.add(key=NON_NEGATIVE_KEY, value=json.dumps(calibrated_non_negative))
        drop_exact_concat_requantization(model)
        move_qdq_upstream(model)
        float_norm_parameters(model)
        unsigned_activations(model)
        drop_unread_initializers(model.graph)
    onnx.save(model, str(path))
    return len(quantized_nodes(OnnxGraph(model), excluded))


def _correct_biases(fp32: Path, path: Path, images: np.ndarray, batch: int) -> None:
    import onnx

    from medexport.calibration._bias_correction import correct_biases

    model = onnx.load(str(path))
    if correct_biases(fp32, model, images, batch):
        onnx.save(model, str(path))


@contextlib.contextmanager
def _quiet_ort_logging() -> Iterator[None]:
    """onnxruntime.quantization logs a pre-processing hint on the root logger and prints histogram
    progress to stdout at every call; keep both out of the CLI's output.

    (Its ``quant_pre_process`` is not run: the exporter already folded and simplified the graph, and
    its optimizer may rename nodes, which would break ``nodes_to_exclude``.)
    """
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
