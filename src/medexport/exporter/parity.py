"""Numerical parity between a reference and a converted model on the same real inputs, judged against float64.

A correct FP32 artifact is never exact: every runtime rounds, and one that sums an instance norm over a 64^3
volume in another order than torch lands further from the true values than torch does, without computing
anything else. So the artifact is judged against the *float64* run of the torch model where that is possible,
and allowed as much error as FP32 arithmetic plausibly makes there, measured by torch's own FP32 error; and the
verdict also says whether the artifact takes the same decisions (argmax) as the model. Example::

    result = compare_outputs(torch64, artifact, tolerance=1e-4, rtol=1e-4, float32_reference=torch32)
    result.passed, result.allowed_error, result.decisions["agreement"]
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from medexport.errors import ParityError

NOISE_FACTOR = 1000.0   # how many times torch's own FP32 error another correct FP32 runtime may make
MIN_AGREEMENT = 0.999   # share of decisions (inputs' top class, voxels' argmax) that must not change


@dataclass
class ParityResult:
    """Worst-case disagreement over all inputs, and the decisions that changed. Errors are against ``reference``:
    ``"float64"`` (the torch model run in float64: the true values up to float64 rounding) or ``"float32"`` (torch
    as it runs, when float64 is not possible; or an ONNX input's ONNX Runtime run).

    Passes when both hold:

    - numbers: max |reference - artifact| <= ``allowed_error`` = max(tolerance + rtol * max |reference|,
      noise_factor * ``torch_error``), where ``torch_error`` is max |float64 - torch FP32|: torch's own rounding
      error on these inputs. FP32 rounding grows with the length of the reductions (a sum in another order can
      be ~sqrt(n) to n times further off than torch's blocked sums; over a 64^3 instance norm ONNX Runtime is
      ~130x and OpenVINO ~470x further), so a correct runtime stays within ``noise_factor`` (1000) times torch's
      error, while a wrong graph (a changed weight, a wrong op) is off by a fair part of the output's range.
      With a float32 reference that term is absent and the rule is the plain tolerance + rtol * range.
    - decisions (outputs with a class axis of at least 2): the share of inputs (classification, ``(N, C)``) or
      voxels (segmentation, ``(N, C, *spatial)``) whose argmax differs from the reference's is at most
      1 - ``min_agreement``; so a loose --tolerance still cannot let through an artifact that decides otherwise.

    ``max_rel_error`` is max |a-b| / max |reference|. ``diverging`` is filled on failure by
    :func:`medexport.exporter.divergence.first_divergence`: where in the graph the artifact leaves the model.
    """

    max_abs_error: float
    mean_abs_error: float
    max_rel_error: float
    output_range: float  # max |reference|
    tolerance: float
    rtol: float
    n_inputs: int
    reference: str = "float32"
    torch_error: float | None = None  # max |float64 - torch FP32|, with a float64 reference
    noise_factor: float = NOISE_FACTOR
    decisions: dict | None = None
    min_agreement: float = MIN_AGREEMENT
    worst_input: int = 0  # index of the parity input with the largest error
    diverging: dict | None = None

    @property
    def allowed_error(self) -> float:
        bound = self.tolerance + self.rtol * self.output_range
        if self.torch_error is not None:
            bound = max(bound, self.noise_factor * self.torch_error)
        return bound

    @property
    def numbers_passed(self) -> bool:
        return self.max_abs_error <= self.allowed_error

    @property
    def decisions_passed(self) -> bool:
        return self.decisions is None or self.decisions["agreement"] >= self.min_agreement

    @property
    def passed(self) -> bool:
        return self.numbers_passed and self.decisions_passed

    def to_dict(self) -> dict:
        return {**asdict(self), "allowed_error": self.allowed_error, "numbers_passed": self.numbers_passed,
                "decisions_passed": self.decisions_passed, "passed": self.passed}

    def raise_if_failed(self, what: str) -> None:
        if self.passed:
            return
        bound = f"tolerance {self.tolerance:.3g} + {self.rtol:.3g} x output range {self.output_range:.3g}"
        if self.torch_error is not None:
            bound = f"max({bound}, {self.noise_factor:.3g} x torch FP32's own error {self.torch_error:.3g})"
        numbers = (f"max abs error {self.max_abs_error:.3g} against the {self.reference} reference "
                   f"{'<=' if self.numbers_passed else '>'} allowed {self.allowed_error:.3g} = {bound}")
        parts = [f"{what} disagrees with its reference ({self.n_inputs} real inputs): {numbers}"]
        if self.decisions is not None:
            parts.append(describe_decisions(self.decisions, self.min_agreement))
        if self.diverging is not None:
            parts.append(self.diverging["message"])
        elif self.numbers_passed:
            parts.append("the numbers are within float noise but decisions changed: check the output's "
                         "post-processing, or report a bug")
        raise ParityError("; ".join(parts))


def describe_decisions(decisions: dict, min_agreement: float) -> str:
    """One clause: how many decisions changed, and the worst class Dice of a segmentation."""
    unit = "voxels" if decisions["kind"] == "segmentation" else "inputs"
    text = (f"argmax agreement {100 * decisions['agreement']:.3f}% ({decisions['changed']} of {decisions['total']} "
            f"{unit} changed, at least {100 * min_agreement:.3g}% needed)")
    if decisions.get("dice"):
        worst = min(decisions["dice"], key=decisions["dice"].get)
        text += f", lowest class Dice {decisions['dice'][worst]:.4f} (class {worst})"
    return text


def decision_agreement(reference: np.ndarray, candidate: np.ndarray) -> dict | None:
    """How many argmax decisions ``candidate`` shares with ``reference``; None for outputs without a class axis.

    ``(N, C)``: classification, one decision per input. ``(N, C, *spatial)``: segmentation, one per voxel, with
    the Dice of each class's mask (a class in neither mask counts 1).
    """
    if reference.ndim < 2 or reference.shape[1] < 2:
        return None
    ref, cand = reference.argmax(1), candidate.argmax(1)
    changed = int((ref != cand).sum())
    result = {"kind": "classification" if reference.ndim == 2 else "segmentation",
              "agreement": 1.0 - changed / ref.size, "changed": changed, "total": int(ref.size)}
    if reference.ndim > 2:
        dice = {}
        for c in range(reference.shape[1]):
            a, b = ref == c, cand == c
            size = int(a.sum() + b.sum())
            dice[str(c)] = 2.0 * int((a & b).sum()) / size if size else 1.0
        result["dice"] = dice
    return result


def compare_outputs(reference: np.ndarray, candidate: np.ndarray, *, tolerance: float, rtol: float = 0.0,
                    float32_reference: np.ndarray | None = None, noise_factor: float = NOISE_FACTOR,
                    min_agreement: float = MIN_AGREEMENT) -> ParityResult:
    """Compare two output arrays computed on the same inputs.

    ``reference`` is the truth the candidate is judged against; when it is a float64 run, pass the same model's
    FP32 outputs as ``float32_reference`` so that torch's own rounding error sets the float-noise bound.
    """
    exact = np.asarray(reference).dtype == np.float64 and float32_reference is not None
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ParityError(f"output shapes differ: reference {reference.shape}, candidate {candidate.shape}")
    if not np.isfinite(candidate).all():
        raise ParityError("candidate output contains NaN or Inf")
    diff = np.abs(reference - candidate)
    scale = float(np.abs(reference).max()) or 1.0
    per_input = diff.reshape(diff.shape[0], -1).max(1)
    torch_error = (float(np.abs(reference - np.asarray(float32_reference, dtype=np.float64)).max())
                   if exact else None)
    return ParityResult(
        max_abs_error=float(diff.max()),
        mean_abs_error=float(diff.mean()),
        max_rel_error=float(diff.max()) / scale,
        output_range=scale,
        tolerance=tolerance,
        rtol=rtol,
        n_inputs=int(reference.shape[0]),
        reference="float64" if exact else "float32",
        torch_error=torch_error,
        noise_factor=noise_factor,
        decisions=decision_agreement(reference, candidate),
        min_agreement=min_agreement,
        worst_input=int(per_input.argmax()),
    )
