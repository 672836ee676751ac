"""Accuracy-controlled mixed precision: keep the layers that break the guard rails in float.

Quantize everything; validate the INT8 model against the FP32 model (both on ONNX Runtime) on
held-out labelled images. If a guard rail breaks, measure each linear layer's sensitivity by
*excluding one layer at a time* (that layer float, all others int8; every node that reads a
DequantizeLinear is a layer: convs, matmuls, and also the Adds, Concats and activations) and recording how much the
worst guard-rail margin recovers, then keep the most sensitive layers in float, greedily, until the
rails hold. Exclude-one-at-a-time rather than quantize-one-at-a-time: both cost one quantization
and one evaluation per layer (the calibration ranges are computed once and cached), but excluding
measures a layer in the setting it will finally run in, with every other layer's int8 error
around it, which is what the greedy exclusion then relies on. Example::

    result = quantize_with_guard_rails("model.onnx", images, "model.int8.qdq.onnx", reference_data(ref),
                                       GuardRails())
    result.float_layers   # [{'node': '/model/model.2/...ConvTranspose', 'gain_points': 2.4, ...}]
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medexport.calibration._graph import OnnxGraph, quantized_nodes
from medexport.calibration._qdq import QuantConfig, QuantResult, quantize_qdq
from medexport.errors import GuardRailError, InputError
from medexport.evaluation.guardrails import GuardRails
from medexport.evaluation.validation import LabelledData, validate_against


@dataclass
class MixedPrecisionResult:
    """The INT8 model that holds the guard rails, which layers stayed float and why, and what was tried."""

    quant: QuantResult
    validation: dict[str, Any]                 # validate_against() of the final model
    float_layers: list[dict[str, Any]] = field(default_factory=list)   # node, op_type, gain_points
    sensitivity: list[dict[str, Any]] = field(default_factory=list)    # every layer, most sensitive first
    attempts: list[dict[str, Any]] = field(default_factory=list)       # excluded nodes -> margin, passed
    strategy: str = "exclude-one-at-a-time"

    def to_dict(self) -> dict[str, Any]:
        return {"quantization": self.quant.to_dict(), "guard_rails": self.validation["guard_rails"],
                "table": self.validation["table"], "float_layers": self.float_layers,
                "sensitivity": {"strategy": self.strategy, "layers": self.sensitivity}, "attempts": self.attempts}


def quantize_with_guard_rails(onnx_path: str | Path, calibration: np.ndarray, dest: str | Path, data: LabelledData,
                              rails: GuardRails | None = None, config: QuantConfig | None = None, *,
                              max_float_layers: int | None = None) -> MixedPrecisionResult:
    """Write to ``dest`` the most-quantized QDQ model whose guard rails hold on ``data``.

    ``max_float_layers`` caps how many layers may stay in float (default: all linear layers).
    Raises GuardRailError, naming what was tried, if no allowed exclusion holds the rails; ``dest``
    is then not written.
    """
    from medexport.runtimes.onnxruntime import Runner

    rails = rails or GuardRails()
    config = config or QuantConfig()
    onnx_path, dest = Path(onnx_path), Path(dest)
    if max_float_layers is not None and max_float_layers < 0:
        raise InputError(f"max_float_layers must be >= 0, got {max_float_layers}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with Runner(onnx_path) as fp32, tempfile.TemporaryDirectory(dir=dest.parent, prefix=".int8-") as scratch:
        trial = _Trial(onnx_path, calibration, config, rails, data, _Memo(fp32), Path(scratch))
        quant, validation = trial.run(())
        result = MixedPrecisionResult(quant, validation, attempts=[trial.attempt((), validation)])
        if not validation["guard_rails"]["passed"]:
            _fall_back(trial, result, max_float_layers)
        os.replace(result.quant.path, dest)
        result.quant = dataclasses.replace(result.quant, path=dest)
    return result


def _fall_back(trial: "_Trial", result: MixedPrecisionResult, max_float_layers: int | None) -> None:
    """Rank layers by sensitivity, then keep the top 1, 2, ... in float until the rails hold."""
    baseline = _margin(result.validation)
    candidates = quantized_nodes(OnnxGraph.load(result.quant.path), trial.config.nodes_to_exclude)
    # all of them in float would be the FP32 model: not an INT8 artifact
    limit = len(candidates) - 1 if max_float_layers is None else min(max_float_layers, len(candidates) - 1)
    if limit == 0:
        raise GuardRailError(f"INT8 breaks the guard rails ({result.validation['guard_rails']['message']}) "
                             "and no layer may stay in float (max_float_layers=0)")
    for node in candidates:
        _, validation = trial.run((node.name,))
        gain = _margin(validation) - baseline
        result.sensitivity.append({"node": node.name, "op_type": node.op_type,
                                   "margin_points": round(_margin(validation), 3), "gain_points": round(gain, 3),
                                   "why": f"keeping it alone in float moves the worst guard-rail margin by "
                                          f"{gain:+.2f} points (to {_margin(validation):+.2f})"})
    result.sensitivity.sort(key=lambda s: -s["gain_points"])
    for k in range(1, limit + 1):
        chosen = tuple(s["node"] for s in result.sensitivity[:k])
        quant, validation = trial.run(chosen)
        result.attempts.append(trial.attempt(chosen, validation))
        if validation["guard_rails"]["passed"]:
            result.quant, result.validation = quant, validation
            result.float_layers = result.sensitivity[:k]
            return
    raise GuardRailError(
        f"INT8 breaks the guard rails ({result.validation['guard_rails']['message']}); tried keeping the "
        f"1..{limit} most sensitive of {len(candidates)} quantized layers in float (ranked by excluding each "
        f"alone), best worst-margin {max(a['margin_points'] for a in result.attempts):+.2f} points")


def _margin(validation: dict[str, Any]) -> float:
    """Worst guard-rail margin in points: >= 0 when every check holds (delta + limit over all rows)."""
    return min(r["delta_points"] + r["limit_points"] for r in validation["guard_rails"]["rows"])


@dataclass
class _Trial:
    """Quantize with some nodes kept in float (ranges calibrated once, cached) and validate the result."""

    onnx_path: Path
    calibration: np.ndarray
    config: QuantConfig
    rails: GuardRails
    data: LabelledData
    reference: "_Memo"
    scratch: Path

    def run(self, float_nodes: tuple[str, ...]) -> tuple[QuantResult, dict[str, Any]]:
        from medexport.runtimes.onnxruntime import Runner

        config = dataclasses.replace(self.config, nodes_to_exclude=self.config.nodes_to_exclude + float_nodes)
        name = hashlib.sha1("\n".join(config.nodes_to_exclude).encode()).hexdigest()[:12]
        quant = quantize_qdq(self.onnx_path, self.calibration, self.scratch / f"{name}.onnx", config,
                             calibration_cache=self.scratch / "ranges.json")
        with Runner(quant.path) as int8:
            validation = validate_against(self.reference, int8, self.data, self.rails, artifact="int8 (onnxruntime)")
        return quant, validation

    @staticmethod
    def attempt(float_nodes: tuple[str, ...], validation: dict[str, Any]) -> dict[str, Any]:
        return {"float_nodes": list(float_nodes), "passed": validation["guard_rails"]["passed"],
                "margin_points": round(_margin(validation), 3)}


class _Memo:
    """The FP32 reference as a predictor that remembers its outputs: every trial shows it the same images."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        key = hashlib.sha1(repr(batch.shape).encode() + np.ascontiguousarray(batch).tobytes()).hexdigest()
        if key not in self.cache:
            self.cache[key] = self.runner(batch)
        return self.cache[key]
