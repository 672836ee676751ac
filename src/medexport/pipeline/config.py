"""The build configuration: a few nested, validated dataclasses that round-trip through the manifest.

``BuildConfig.to_dict()`` is what a manifest stores and ``BuildConfig.from_dict()`` rebuilds it, so a build
can be re-run from its manifest (``medexport build --recipe out/manifest.json``). Paths to the user's
images are not stored (a folder name can name a patient): the dict says that they were given, and the
manifest keeps the digests of what was read, which a re-run checks. Example::

    config = BuildConfig(model=ModelSpec(), out_dir="out/x", target="openvino",
                         compression=CompressionConfig((("prune-l2", {"ratio": 0.5}),), finetune_steps=300),
                         quantization=QuantizationConfig(precision="int8"))
    BuildConfig.from_dict(config.to_dict(), out_dir="out/x") == config
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medexport.errors import InputError
from medexport.exporter.parity import MIN_AGREEMENT, NOISE_FACTOR
from medexport.evaluation.guardrails import GuardRails
from medexport.loading import ModelSpec

FP32_TOLERANCE = 1e-4
FP32_RTOL = 1e-4
GIVEN = "<given>"  # stands for a path to the user's images in a serialised config
MIN_CALIB = 8  # fewer usable --calib images than this (or than --calib-samples, if lower) is refused


@dataclass
class ParityConfig:
    """FP32 parity on ``samples`` real images, against the float64 torch model where it runs in float64:
    ``max |ref - out| <= max(tolerance + rtol * max |ref|, noise_factor * torch FP32's own error)`` and at least
    ``min_agreement`` of the argmax decisions unchanged (see :class:`~medexport.exporter.parity.ParityResult`)."""

    tolerance: float = FP32_TOLERANCE
    rtol: float = FP32_RTOL
    samples: int = 8
    noise_factor: float = NOISE_FACTOR
    min_agreement: float = MIN_AGREEMENT

    def __post_init__(self) -> None:
        if self.tolerance <= 0 or self.rtol < 0:
            raise InputError("--tolerance must be positive and --rtol not negative")
        if self.noise_factor < 1 or not 0 < self.min_agreement <= 1:
            raise InputError("the parity noise factor must be at least 1 and the decision agreement in (0, 1]")
        if self.samples < 1:
            raise InputError("the number of parity samples must be at least 1")


@dataclass
class DataConfig:
    """The user's images: labelled ones for the guard rails (``data``/``labels``), unlabelled ones for calibration
    and fine-tuning (``calib``; at most ``calib_samples``, and refused below ``min_calib`` usable ones). None: the
    reference model's bundled images. ``finetune_data``/``finetune_labels``: labelled images (the forms ``data``
    takes) to fine-tune on instead of distilling; never the ones the guard rails judge."""

    data: str | None = None
    labels: str | None = None
    task: str | None = None
    classes: tuple[str, ...] | None = None
    calib: str | None = None
    calib_samples: int = 256
    min_calib: int = MIN_CALIB
    finetune_data: str | None = None
    finetune_labels: str | None = None

    def __post_init__(self) -> None:
        if self.classes is not None:
            self.classes = tuple(self.classes)
        if self.finetune_labels is not None and self.finetune_data is None:
            raise InputError("--finetune-labels pairs masks with --finetune-data; give the images too")
        given = [p for p in (self.data, self.finetune_data) if p is not None and p != GIVEN]
        if len(given) == 2 and Path(given[0]).resolve() == Path(given[1]).resolve():
            raise InputError("--finetune-data are the images the guard rails judge (--data): fine-tuning on them "
                             "would make the validation meaningless; give other labelled images")
        if self.calib_samples < 1:
            raise InputError("--calib-samples must be at least 1")
        if self.min_calib < 1:
            raise InputError("--min-calib must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("data", "labels", "calib", "finetune_data", "finetune_labels"):
            out[key] = GIVEN if out[key] is not None else None
        out["classes"] = list(self.classes) if self.classes else None
        return out

    def missing(self) -> list[str]:
        """Options that stand for the user's images in a recipe and must be given again."""
        return [f"--{key.replace('_', '-')}" for key in ("data", "labels", "calib", "finetune_data", "finetune_labels")
                if getattr(self, key) == GIVEN]


@dataclass
class CompressionConfig:
    """A chain of registered passes, each with the options the user gave it (config field -> value), run in order;
    then ``finetune_steps`` of distillation from the original, or of training on labelled images (spread over the
    steps of a stepwise pass). On labels, ``finetune_val`` of the images is held aside for early stopping after
    ``patience`` checks without a better guard-rail headroom (see :class:`~medexport.finetune.LabelledConfig`).
    Distillation can store its activations compressed (``act_compress``) and train on the largest patch whose
    activations fit ``max_memory`` bytes."""

    chain: tuple[tuple[str, dict[str, Any]], ...] = ()
    finetune_steps: int = 0
    finetune_val: float = 0.2
    patience: int = 5
    act_compress: Any = None     # an ActCompressSpec (medexport.finetune.actcompress); torch-free to import here
    max_memory: int | None = None

    def __post_init__(self) -> None:
        from medexport.compression import get_pass

        self.chain = tuple((method, dict(options)) for method, options in self.chain)
        families = [get_pass(method).family for method in self.methods]
        if len(set(families)) != len(families):
            raise InputError(f"a compression chain takes at most one pass per family (one low-rank, one pruning, one "
                             f"rewrite pass; each reads its own options), got {self.label}")
        exact = [get_pass(method).exact for method in self.methods]
        if True in exact[:-1]:
            raise InputError(f"{self.methods[exact.index(True)]} rewrites layers exactly for speed and must come last "
                             f"in a chain (e.g. prune-l2,subpixel), got {self.label}")
        if self.finetune_steps < 0:
            raise InputError(f"--finetune takes a number of steps (0: off), got {self.finetune_steps}")
        if self.finetune_steps and not self.chain:
            raise InputError("--finetune recovers a compressed model's accuracy; add a compression method "
                             "(--compress for build, --method for compress)")
        if self.finetune_steps and all(exact):
            raise InputError(f"--finetune recovers what a lossy pass changed; {self.label} is exact: drop --finetune "
                             "or add a compression pass before it")
        from medexport.finetune import LabelledConfig

        LabelledConfig(val_fraction=self.finetune_val, patience=self.patience)   # checks them
        if (self.act_compress is not None or self.max_memory is not None) and not self.finetune_steps:
            raise InputError("--act-compress and --max-memory act on fine-tuning; add --finetune STEPS")
        for method, options in self.chain:
            known = {option.field for option in get_pass(method).options}
            unknown = sorted(set(options) - known)
            if unknown:
                raise InputError(f"{method} has no option {', '.join(unknown)}; it takes "
                                 f"{', '.join(sorted(known)) or 'none'}")

    @classmethod
    def from_flags(cls, methods: str | None, given: dict[str, Any], finetune_steps: int = 0,
                   **finetune: Any) -> "CompressionConfig":
        """Route the command-line options the user gave (flag -> value) to the passes of ``methods`` that declare
        them; an option no pass of the chain declares is refused."""
        from medexport.compression import get_pass

        names = [m.strip() for m in methods.split(",")] if methods else []
        if not names and given:
            raise InputError(f"{', '.join(given)} configure compression; add --compress METHOD or drop them")
        chain, used = [], set()
        for name in names:
            declared = {option.flag: option.field for option in get_pass(name).options}
            chain.append((name, {declared[flag]: value for flag, value in given.items() if flag in declared}))
            used |= set(declared) & set(given)
        stray = [flag for flag in given if flag not in used]
        if stray:
            _refuse_unused(stray, names)
        return cls(tuple(chain), finetune_steps, **finetune)

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(method for method, _ in self.chain)

    @property
    def label(self) -> str:
        return ",".join(self.methods)

    def configured(self, backend: str) -> list[tuple[str, Any]]:
        """Each pass's validated config, without data: ``[(method, config), ...]``. ``backend`` is where a pass
        that measures latency measures it unless its options say otherwise. An option given that no pass of the
        chain reads as configured (``--latency-backend`` to a low-rank pass without ``--latency``) is refused."""
        from medexport.compression import get_pass

        configs = [get_pass(method).configure(options, backend=backend) for method, options in self.chain]
        given = {field for _, options in self.chain for field in options}
        unread = [field for field in given if not any(field in options and get_pass(method).reads(field, config)
                                                     for (method, options), config in zip(self.chain, configs))]
        if unread:
            flags = {option.field: option.flag for method in self.methods for option in get_pass(method).options}
            _refuse_unused(sorted(flags[field] for field in unread), list(self.methods), configured=True)
        return list(zip(self.methods, configs))

    def to_dict(self) -> dict[str, Any]:
        return {"chain": [{"method": method, "options": _plain(options)} for method, options in self.chain],
                "finetune_steps": self.finetune_steps, "finetune_val": self.finetune_val, "patience": self.patience,
                "act_compress": self.act_compress.to_dict() if self.act_compress is not None else None,
                "max_memory": self.max_memory}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CompressionConfig":
        act = data.get("act_compress")
        if act is not None:
            from medexport.finetune.actcompress.spec import ActCompressSpec

            act = ActCompressSpec.from_dict(act)
        return cls(tuple((step["method"], step["options"]) for step in data.get("chain", ())),
                   data.get("finetune_steps", 0), data.get("finetune_val", 0.2), data.get("patience", 5), act,
                   data.get("max_memory"))


def _refuse_unused(flags: list[str], methods: list[str], configured: bool = False) -> None:
    from medexport.compression import get_pass

    verb = "is" if len(flags) == 1 else "are"
    families = " and ".join(sorted({get_pass(m).family for m in methods}))
    what = f"a {families} pass" if len(methods) == 1 else f"a {families} chain"
    how = " as configured" if configured else ""
    raise InputError(f"{', '.join(flags)} {verb} not used by {','.join(methods)} ({what}){how}; drop the option or "
                     "choose a pass that uses it")


@dataclass
class QuantizationConfig:
    """Reduced precision: ``int8`` is one QDQ ONNX calibrated on real images (``engine="qdq"``, in ``layout``), or
    NNCF's OpenVINO IR (``engine="nncf"``); ``exclude`` are ONNX node names kept in float."""

    precision: str = "fp32"
    engine: str = "qdq"
    layout: str | None = None  # None: the target's default
    method: str = "minmax"
    exclude: tuple[str, ...] = ()
    accuracy_control: bool = False

    def __post_init__(self) -> None:
        from medexport.calibration.choices import INT8_ENGINES, LAYOUTS, METHODS, get_option
        from medexport.runtimes import PRECISIONS

        self.exclude = tuple(self.exclude)
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")
        get_option(INT8_ENGINES, self.engine)
        get_option(METHODS, self.method)
        if self.layout is not None:
            get_option(LAYOUTS, self.layout)
        if self.accuracy_control and self.engine != "nncf":
            raise InputError("--accuracy-control is NNCF's; add --int8-engine nncf (the qdq engine always keeps "
                             "sensitive layers in float until the guard rails hold)")

    @property
    def int8(self) -> bool:
        return self.precision == "int8"


@dataclass
class LatencyConfig:
    """The latency stage: on or off, the batch timed, the fewest calls per variant and round, and its time budget
    (``seconds``: a 3D network's timing stops there, after a few calls per variant and round at least)."""

    enabled: bool = True
    batch: int = 1
    iterations: int = 30
    seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.batch < 1 or self.iterations < 1:
            raise InputError("--batch and the latency iterations must be at least 1")
        if not self.seconds > 0:
            raise InputError(f"--latency-seconds must be more than 0, got {self.seconds}")


@dataclass
class BuildConfig:
    """Everything `medexport build` and its sibling verbs need; serialised into the manifest.

    ``target`` None: no backend is built (``compress``, ``export``, ``quantize`` alone); passes that measure
    latency then measure on OpenVINO unless told otherwise."""

    model: ModelSpec
    out_dir: Path
    target: str | None = "onnxruntime"
    device: str | None = None  # backend device: ONNX Runtime provider ("cpu", "cuda") or OpenVINO device ("CPU")
    simplify: bool = True
    validate: bool = True
    parity: ParityConfig = field(default_factory=ParityConfig)
    rails: GuardRails = field(default_factory=GuardRails)
    data: DataConfig = field(default_factory=DataConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    resume: bool = False  # continue fine-tuning from the checkpoints a failed run left in out_dir (not recorded)

    def __post_init__(self) -> None:
        from medexport.calibration.choices import INT8_ENGINES, LAYOUTS, check_serves
        from medexport.runtimes import resolve_target

        self.out_dir = Path(self.out_dir)
        quant = self.quantization
        if self.target is not None:
            self.target = resolve_target(self.target)
            check_serves(INT8_ENGINES[quant.engine], self.target)
            check_serves(LAYOUTS[self.int8_layout], self.target)
        elif quant.int8:
            raise InputError("INT8 quantization is for a target; give --target")
        if not self.model.dynamic_batch and self.latency.batch != 1:
            raise InputError("--static-batch exports batch 1; use --batch 1 or drop --static-batch")
        if self.data.finetune_data is not None and not self.compression.finetune_steps:
            raise InputError("--finetune-data are images to fine-tune on; add --finetune STEPS")
        tuned = (self.compression.finetune_val, self.compression.patience)
        if self.data.finetune_data is None and tuned != (CompressionConfig.finetune_val, CompressionConfig.patience):
            raise InputError("--finetune-val and --patience steer fine-tuning on labels; add --finetune-data or drop "
                             "them")
        if self.data.finetune_data is not None and (self.compression.act_compress is not None
                                                    or self.compression.max_memory is not None):
            raise InputError("--act-compress and --max-memory apply to distillation for now; drop them or "
                             "--finetune-data")
        if self.resume and self.data.finetune_data is None:
            raise InputError("--resume continues a fine-tuning on labels (--finetune-data) from its checkpoints; "
                             "distillation has none to continue from")
        self.passes = self.compression.configured(self.measure_backend)

    @property
    def int8_layout(self) -> str:
        """The QDQ layout: the one asked for, else the target's default (its backend spec says which)."""
        from medexport.runtimes import get_spec

        if self.quantization.layout is not None:
            return self.quantization.layout
        return get_spec(self.target).default_layout if self.target is not None else "tensorrt"

    @property
    def measure_backend(self) -> str:
        """Where passes that measure latency measure it unless told otherwise: the target when it is a runtime
        timed here (the artifact is then tuned for the runtime it is built for), else OpenVINO."""
        from medexport.runtimes import get_spec

        return self.target if self.target is not None and get_spec(self.target).timed_here else "openvino"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: what a manifest stores, and :meth:`from_dict` reads back (without ``out_dir``)."""
        return {"model": self.model.to_dict(), "target": self.target, "device": self.device,
                "simplify": self.simplify, "validate": self.validate,
                "parity": dataclasses.asdict(self.parity), "guard_rails": self.rails.to_dict(),
                "data": self.data.to_dict(), "compression": self.compression.to_dict(),
                "quantization": _plain({**dataclasses.asdict(self.quantization), "layout": self.int8_layout}),
                "latency": dataclasses.asdict(self.latency)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], out_dir: str | Path) -> "BuildConfig":
        """The config :meth:`to_dict` wrote; a key this version does not know, or a malformed value, is an
        InputError, not ignored."""
        if not isinstance(data, dict):
            raise InputError("the recipe's config is not a mapping of settings")
        known = {f.name for f in dataclasses.fields(cls)} - {"out_dir", "rails"} | {"guard_rails"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"the recipe has settings this medexport does not know: {', '.join(unknown)}")
        try:
            model = dict(data.get("model") or {})
            return cls(model=ModelSpec(**model), out_dir=Path(out_dir), target=data.get("target"),
                       device=data.get("device"), simplify=data.get("simplify", True),
                       validate=data.get("validate", True), parity=ParityConfig(**data.get("parity", {})),
                       rails=GuardRails(**data.get("guard_rails", {})), data=DataConfig(**data.get("data", {})),
                       compression=CompressionConfig.from_dict(data.get("compression") or {}),
                       quantization=QuantizationConfig(**data.get("quantization", {})),
                       latency=LatencyConfig(**data.get("latency", {})))
        except (TypeError, KeyError, AttributeError, ValueError) as exc:
            raise InputError(f"the recipe's settings do not fit this medexport: {type(exc).__name__}: {exc}") from None


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
