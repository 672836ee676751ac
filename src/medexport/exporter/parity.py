"""Numerical parity between a reference and a converted model on the same real inputs."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from medexport.errors import ParityError


@dataclass
class ParityResult:
    """Worst-case disagreement over all inputs. ``max_rel_error`` is max |a-b| / max |a|.

    Passes when max |a-b| <= tolerance + rtol * max |a|: an absolute bound for outputs of unit scale
    that grows with the output's range. The relative part exists because some runtimes' kernels are
    not bit-compatible: OpenVINO's instance norm (MVN), for one, differs from torch by ~2e-5 of the
    output range, which for logits of size 6 is over 1e-4 absolute.
    """

    max_abs_error: float
    mean_abs_error: float
    max_rel_error: float
    output_range: float  # max |reference|
    tolerance: float
    rtol: float
    n_inputs: int

    @property
    def passed(self) -> bool:
        return self.max_abs_error <= self.tolerance + self.rtol * self.output_range

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def raise_if_failed(self, what: str) -> None:
        if not self.passed:
            raise ParityError(
                f"{what} disagrees with its reference: max abs error {self.max_abs_error:.3g} > tolerance "
                f"{self.tolerance:.3g} + {self.rtol:.3g} x output range (relative error {self.max_rel_error:.3g}, "
                f"{self.n_inputs} real inputs)"
            )


def compare_outputs(reference: np.ndarray, candidate: np.ndarray, *, tolerance: float,
                    rtol: float = 0.0) -> ParityResult:
    """Compare two output arrays computed on the same inputs."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ParityError(f"output shapes differ: reference {reference.shape}, candidate {candidate.shape}")
    if not np.isfinite(candidate).all():
        raise ParityError("candidate output contains NaN or Inf")
    diff = np.abs(reference - candidate)
    scale = float(np.abs(reference).max()) or 1.0
    return ParityResult(
        max_abs_error=float(diff.max()),
        mean_abs_error=float(diff.mean()),
        max_rel_error=float(diff.max()) / scale,
        output_range=scale,
        tolerance=tolerance,
        rtol=rtol,
        n_inputs=int(reference.shape[0]),
    )
