"""One run context per command: the model and every image set it reads, each read once and shared by all stages.

Stages ask the context; it reads on first use and keeps the result: the loaded model (and the original
before compression), calibration images, labelled images, parity inputs and the reference outputs on them.
What a recipe recorded (``expected``: the model's ``provenance``, the images' ``data_digests``) is checked as
each is read, so a different model or a changed file is a one-line error before any work on it. Example::

    ctx = RunContext(config)
    ctx.calibration()          # read once, from --calib or the reference model's bundled images
    ctx.calibration()          # the same array, not read again
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import TYPE_CHECKING, Any, Callable, ContextManager

import numpy as np

from medexport.errors import DataError, InputError
from medexport.pipeline.config import GIVEN, BuildConfig

if TYPE_CHECKING:
    from medexport.evaluation.validation import LabelledData
    from medexport.loading import LoadedModel

Stage = Callable[[str], ContextManager[None]]


def quiet_stage(name: str) -> ContextManager[None]:
    """A stage printer that prints nothing (library use, tests)."""
    return contextlib.nullcontext()


class RunContext:
    """What one command reads, read once; also a :class:`~medexport.compression.options.PassData` for passes."""

    def __init__(self, config: BuildConfig, stage: Stage = quiet_stage, expected: dict[str, Any] | None = None) -> None:
        self.config = config
        self.stage = stage
        self.expected = dict((expected or {}).get("data_digests") or {})  # checked as each image set is read
        self.provenance = (expected or {}).get("provenance")  # checked when the model is loaded
        self.digests: dict[str, str] = {}  # digests of what this run read, for its manifest
        self.recover: Callable[[Any], Any] | None = None  # set by the compress stage while a stepwise pass runs
        self._loaded: LoadedModel | None = None
        self._calibration: tuple[np.ndarray, dict] | None = None
        self._labelled: tuple[LabelledData | None] | None = None
        self._finetune_labelled: LabelledData | None = None
        self._parity: tuple[np.ndarray, str] | None = None
        self._reference_outputs: tuple[Any, np.ndarray] | None = None
        self._exact_outputs: tuple[Any, np.ndarray | None] | None = None
        self.original = None  # the torch module before compression

    @property
    def loaded(self) -> "LoadedModel":
        if self._loaded is None:
            from medexport.loading import load_model

            loaded = load_model(self.config.model)
            if self.provenance is not None and self.provenance != loaded.provenance:
                differ = sorted(k for k in set(self.provenance) | set(loaded.provenance)
                                if self.provenance.get(k) != loaded.provenance.get(k))
                raise DataError(f"the model differs from the one the recipe was built with ({', '.join(differ)}): "
                                "give the same model and weights, or run a new build without --recipe")
            self._loaded, self.original = loaded, loaded.module
        return self._loaded

    @property
    def rails(self):
        return self.config.rails

    @property
    def compressed(self) -> bool:
        """Whether the model now in ``loaded`` is not the original."""
        return self.loaded.module is not self.original

    def read_inputs(self) -> None:
        """Read, before any work, every image set the run will need, so that missing, unreadable or changed images
        are an error before a folder loses its manifest or minutes go into compression."""
        from medexport.compression import get_pass

        config = self.config
        self.labelled()
        if config.data.finetune_data is not None:
            self.finetune_labelled()
        distills = config.compression.finetune_steps and config.data.finetune_data is None
        if (config.quantization.int8 or distills or "calibration" in self.expected
                or any(get_pass(method).needs_calibration for method in config.compression.methods)):
            self.calibration()

    def calibration(self) -> np.ndarray:
        """Real unlabelled images: the user's --calib, or the reference model's bundled training-side images."""
        return self._read_calibration()[0]

    def calibration_source(self) -> dict:
        """The calibration images' anonymous manifest (counts and hashes, no paths or patient identifiers)."""
        return self._read_calibration()[1]

    def _read_calibration(self) -> tuple[np.ndarray, dict]:
        if self._calibration is None:
            data, loaded = self.config.data, self.loaded
            if data.calib == GIVEN:
                raise InputError("this recipe was built with your own calibration images: pass them again with --calib")
            if data.calib is not None:
                from medexport.imaging import PreprocessSpec, load_images

                spec = PreprocessSpec(spatial_size=tuple(loaded.input_shape[2:]), channels=loaded.input_shape[1])
                dataset = load_images(data.calib, spec, max_samples=data.calib_samples, progress=True)
                _check_enough(dataset, min(data.min_calib, data.calib_samples))
                images, source = dataset.images, dataset.manifest()
            elif loaded.reference is None:
                raise DataError("no calibration data: pass --calib with a folder of real images "
                                "(medexport never calibrates on random data)")
            else:
                images = loaded.reference.calibration()[:data.calib_samples]
                source = {"count": int(len(images)),
                          "source": f"bundled calibration images of {loaded.reference.name}"}
            self._check("calibration", images)
            self._calibration = images, source
        return self._calibration

    def labelled(self) -> "LabelledData | None":
        """Labelled images for the guard rails: the user's --data, else the reference model's held-out set."""
        if self._labelled is None:
            from medexport.evaluation.validation import reference_data, user_data

            data, loaded = self.config.data, self.loaded
            if GIVEN in (data.data, data.labels):
                raise InputError("this recipe was validated on your own labelled images: pass them again with --data "
                                 "(and --labels)")
            if data.data is not None:
                result = user_data(data.data, data.labels, loaded.input_shape, task=data.task, classes=data.classes,
                                   reference_model=loaded.reference)
            else:
                result = reference_data(loaded.reference) if loaded.reference is not None else None
            if result is not None:
                self._check("labelled", result.images, result.labels)
            self._labelled = (result,)
        return self._labelled[0]

    def finetune_labelled(self) -> "LabelledData":
        """The user's labelled images to fine-tune on (--finetune-data/--finetune-labels), read like --data."""
        if self._finetune_labelled is None:
            from medexport.evaluation.validation import user_data

            data, loaded = self.config.data, self.loaded
            if GIVEN in (data.finetune_data, data.finetune_labels):
                raise InputError("this recipe was fine-tuned on your own labelled images: pass them again with "
                                 "--finetune-data (and --finetune-labels)")
            result = user_data(data.finetune_data, data.finetune_labels, loaded.input_shape, task=data.task,
                               classes=data.classes, reference_model=loaded.reference)
            self._check("finetune", result.images, result.labels)
            if self.labelled() is not None and self.digests.get("labelled") == self.digests["finetune"]:
                raise DataError("--finetune-data are the images the guard rails judge: fine-tuning on them would "
                                "make the validation meaningless; give other labelled images")
            self._finetune_labelled = result
        return self._finetune_labelled

    def parity_inputs(self) -> tuple[np.ndarray, str]:
        """Real images for parity: the reference model's held-out images, or bundled real images resized."""
        if self._parity is None:
            loaded, n = self.loaded, self.config.parity.samples
            images = None
            if loaded.reference is not None:
                # the held-out images the guard rails read (read once, by labelled()), unless --data replaced them
                heldout = (self.labelled().images if self.config.data.data is None
                           else loaded.reference.heldout()[0])
                if tuple(heldout.shape[1:]) == tuple(loaded.input_shape[1:]):
                    images = heldout[:n].astype(np.float32), f"held-out images of {loaded.reference.name}"
            if images is None:
                from medexport.zoo.samples import real_inputs

                images = real_inputs(tuple(loaded.input_shape), n), "bundled real MRI images resized to the input shape"
            self._parity = images
        return self._parity

    def reference_outputs(self, onnx_path) -> np.ndarray:
        """The reference's outputs on the parity inputs: the torch model as it is now (compressed or not), or ONNX
        Runtime on ``onnx_path`` for an ONNX input; computed again only when the model changed."""
        module = self.loaded.module
        if self._reference_outputs is None or self._reference_outputs[0] is not module:
            self._reference_outputs = module, run_batched(reference_runner(self.loaded, onnx_path),
                                                          self.parity_inputs()[0])
        return self._reference_outputs[1]

    def exact_outputs(self) -> np.ndarray | None:
        """The torch model (as it is now) run in float64 on the parity inputs: the values an FP32 artifact is
        judged against. A deep copy is cast, so the model itself stays FP32. None for an ONNX input, or for a
        model with a part that has no float64 kernel (parity then judges against its FP32 outputs)."""
        module = self.loaded.module
        if self._exact_outputs is None or self._exact_outputs[0] is not module:
            exact = None
            if module is not None:
                import copy

                from medexport.runtimes.torch import Runner

                try:
                    exact = run_batched(Runner(copy.deepcopy(module).double(), self.loaded.input_shape,
                                               dtype="float64"), self.parity_inputs()[0])
                except (RuntimeError, TypeError, NotImplementedError):  # no float64 kernel for some part
                    exact = None
            self._exact_outputs = module, exact
        return self._exact_outputs[1]

    def _check(self, name: str, *arrays: np.ndarray) -> None:
        digest = hashlib.sha256()
        for array in arrays:
            digest.update(np.ascontiguousarray(array).tobytes())
        self.digests[name] = digest.hexdigest()
        expected = self.expected.get(name)
        if expected is not None and expected != self.digests[name]:
            raise DataError(f"the {name} images differ from the ones the recipe was built with (sha256 "
                            f"{self.digests[name][:12]}… instead of {expected[:12]}…): give the same images, or "
                            "run a new build without --recipe")


def _check_enough(dataset, minimum: int) -> None:
    """Refuse calibrating on fewer usable images than ``minimum``: INT8 ranges from one or two images (what is left
    when the other files could not be read) quietly clip the rest of the domain."""
    if len(dataset) >= minimum:
        return
    n, skipped = len(dataset), len(dataset.skipped)
    why = f"; {skipped} file{'s' * (skipped != 1)} gave none: {dataset.skipped_summary()}" if skipped else ""
    raise DataError(f"only {n} usable calibration image{'s' * (n != 1)} in --calib, fewer than the minimum of "
                    f"{minimum}{why}; add images, or lower --min-calib")


def reference_runner(loaded: "LoadedModel", onnx_path):
    """torch for torch models; ONNX Runtime on the ONNX itself when the user started from an ONNX file."""
    if loaded.module is not None:
        from medexport.runtimes.torch import Runner

        return Runner(loaded.module, loaded.input_shape)
    from medexport.runtimes import open_runner

    return open_runner(onnx_path, "onnxruntime")


def run_batched(runner, inputs: np.ndarray, batch: int = 4) -> np.ndarray:
    """``runner`` over ``inputs`` in batches of ``batch`` (or the runner's fixed batch), outputs concatenated."""
    fixed = runner.input_shape[0]
    step = fixed if fixed else batch
    return np.concatenate([runner.infer(inputs[i:i + step]) for i in range(0, len(inputs), step)])
