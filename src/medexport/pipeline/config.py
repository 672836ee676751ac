"""The build configuration: every option of `medexport build` and its sibling verbs, validated, serialisable."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medexport.errors import InputError
from medexport.loading import ModelSpec
from medexport.runtimes._registry import TARGETS


FP32_TOLERANCE = 1e-4


FP32_RTOL = 1e-4
DEFAULT_BUDGET = "3x"
PRECISIONS = ("fp32", "fp16", "int8")
INT8_ENGINES = ("qdq", "nncf")
# the QDQ layout a target gets unless --int8-layout says otherwise: the portable TensorRT one, except on
# OpenVINO, where uint8 ReLU outputs (as NNCF makes them) measured faster (benchmarks/int8.py)
DEFAULT_LAYOUTS = {"openvino": "openvino"}


@dataclass
class BuildConfig:
    """Everything `medexport build` needs; serialised into the manifest."""

    model: ModelSpec
    out_dir: Path
    target: str = "onnxruntime"
    device: str | None = None  # backend device: ONNX Runtime provider ("cpu", "cuda") or OpenVINO device ("CPU")
    tolerance: float = FP32_TOLERANCE
    rtol: float = FP32_RTOL
    simplify: bool = True
    parity_samples: int = 8
    validate: bool = True
    max_overall_drop: float = 1.0
    max_class_drop: float = 3.0
    latency: bool = True
    latency_batch: int = 1
    latency_iterations: int = 30
    # a registered compression pass ("svd", "tucker", "prune-l2", ...), or a comma-separated chain of one low-rank
    # and one pruning pass, run in that order ("tucker,prune-l2")
    compress: str | None = None
    budget: str | None = None  # reduction factor of budget_metric for a low-rank pass (None: DEFAULT_BUDGET, unless
    # another rank rule is given)
    budget_metric: str = "macs"  # what budget divides: "macs" or "params"
    rank_ratio: float | None = None  # low-rank rank rules that replace the budget: a fraction of every full rank,
    energy: float | None = None  # the squared singular-value energy kept per layer,
    vbmf: bool = False  # or EVBMF's rank per layer
    compress_latency: float | None = None  # low-rank: latency target as a fraction of the original's (not budget)
    compress_backend: str | None = None  # where compress_latency and subpixel are measured (None: measure_backend)
    compress_payoff: float = 0.85  # latency mode: least measured realized/ideal speed-up a chosen factorization keeps
    prune_ratio: float = 0.5  # share of channels a pruning pass removes from every prunable group
    compress_exclude: tuple[str, ...] = ()  # layer name globs kept as they are
    compress_exclude_types: tuple[str, ...] = ()  # low-rank: layer class names kept as they are ("Linear")
    prune_steps: int = 1  # pruning/merging: iterative steps
    prune_scope: str = "layer"  # pruning/merging: "layer" (uniform) or "global" (capped global ranking)
    prune_max_ratio: float = 0.75  # pruning/merging, global scope: cap per group
    prune_rollback: bool = False  # pruning/merging: guard rails on every step, roll back and lock on a break
    finetune_steps: int = 0  # after compression: steps of distillation from the original on the calibration images
    data: str | None = None  # labelled images for the guard rails (default: the reference model's held-out set)
    labels: str | None = None
    task: str | None = None
    classes: tuple[str, ...] | None = None
    precision: str = "fp32"  # "fp32" | "fp16" | "int8" (one QDQ ONNX calibrated on real images)
    calib: str | None = None  # calibration images (default: the reference model's bundled ones)
    calib_samples: int = 256
    calib_method: str = "minmax"
    int8_engine: str = "qdq"  # "qdq" (our QDQ ONNX, every backend) | "nncf" (NNCF PTQ, OpenVINO only)
    accuracy_control: bool = False  # nncf engine: nncf.quantize_with_accuracy_control on the labelled data
    # qdq engine: "tensorrt" (every backend) | "ort-u8s8" (ONNX Runtime only) | "openvino" (OpenVINO only);
    # None: the target's default (DEFAULT_LAYOUTS)
    int8_layout: str | None = None
    int8_exclude: tuple[str, ...] = ()  # qdq engine: ONNX node names kept in float (`medexport quantize --exclude`)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.target not in TARGETS:
            raise InputError(f"unknown target '{self.target}'; choose one of: {', '.join(TARGETS)}")
        if self.tolerance <= 0 or self.rtol < 0:
            raise InputError("--tolerance must be positive and --rtol not negative")
        if self.parity_samples < 1 or self.latency_batch < 1:
            raise InputError("the number of parity samples and --batch must be at least 1")
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")
        if self.int8_engine not in INT8_ENGINES:
            raise InputError(f"--int8-engine must be one of {', '.join(INT8_ENGINES)}, got '{self.int8_engine}'")
        if self.int8_engine == "nncf" and self.target != "openvino":
            raise InputError("--int8-engine nncf makes an OpenVINO IR; use it with --target openvino "
                             "(the default qdq engine serves every backend)")
        self.int8_layout = self.int8_layout or DEFAULT_LAYOUTS.get(self.target, "tensorrt")
        if self.int8_layout == "ort-u8s8" and self.target != "onnxruntime":
            raise InputError("--int8-layout ort-u8s8 is onnxruntime's own layout (uint8 activations), which TensorRT "
                             "rejects; use it with --target onnxruntime only")
        if self.int8_layout == "openvino" and self.target != "openvino":
            raise InputError("--int8-layout openvino has uint8 activations, which TensorRT rejects; use it with "
                             "--target openvino only (the default tensorrt layout serves every backend)")
        if self.accuracy_control and self.int8_engine != "nncf":
            raise InputError("--accuracy-control is NNCF's; add --int8-engine nncf (the qdq engine always keeps "
                             "sensitive layers in float until the guard rails hold)")
        if self.finetune_steps < 0:
            raise InputError(f"--finetune takes a number of steps (0: off), got {self.finetune_steps}")
        if self.finetune_steps and not self.compress:
            raise InputError("--finetune recovers a compressed model's accuracy; add a compression method "
                             "(--compress for build, --method for compress)")
        if self.calib_samples < 1:
            raise InputError("--calib-samples must be at least 1")
        if not self.model.dynamic_batch and self.latency_batch != 1:
            raise InputError("--static-batch exports batch 1; use --batch 1 or drop --static-batch")

    @property
    def effective_budget(self) -> str | None:
        """The budget a low-rank pass meets: the one given, else DEFAULT_BUDGET when no other rank rule is given."""
        others = (self.compress_latency, self.rank_ratio, self.energy, self.vbmf or None)
        return self.budget or (DEFAULT_BUDGET if all(rule is None for rule in others) else None)

    @property
    def measure_backend(self) -> str:
        """Where --latency and subpixel are measured: --latency-backend, else the target when it is a runtime timed
        here (the artifact is then tuned for the runtime it is built for), else OpenVINO."""
        return self.compress_backend or (self.target if self.target in ("onnxruntime", "openvino") else "openvino")

    @property
    def compress_methods(self) -> tuple[str, ...]:
        """The compression passes to run, in order (empty: none)."""
        return tuple(m.strip() for m in self.compress.split(",")) if self.compress else ()

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "target": self.target, "device": self.device,
                "tolerance": self.tolerance, "rtol": self.rtol, "simplify": self.simplify, "parity_samples": self.parity_samples,
                "guard_rails": {"max_overall_drop": self.max_overall_drop, "max_class_drop": self.max_class_drop},
                "latency_batch": self.latency_batch,
                "precision": self.precision,
                "int8_engine": self.int8_engine if self.precision == "int8" else None,
                "int8_layout": self.int8_layout if self.precision == "int8" else None,
                "compression": {"method": self.compress, "budget": self.effective_budget,
                                "budget_metric": self.budget_metric,
                                "rank_ratio": self.rank_ratio, "energy": self.energy, "vbmf": self.vbmf,
                                "exclude_types": list(self.compress_exclude_types), "prune_ratio": self.prune_ratio,
                                "latency": self.compress_latency, "latency_backend": self.measure_backend,
                                "latency_payoff": self.compress_payoff,
                                "exclude": list(self.compress_exclude), "prune_steps": self.prune_steps,
                                "prune_scope": self.prune_scope, "prune_max_ratio": self.prune_max_ratio,
                                "prune_rollback": self.prune_rollback, "finetune_steps": self.finetune_steps}
                if self.compress else None}
