"""Clinical guard rails: a deployed model may lose at most so many points overall and on any class.

Example::

    result = GuardRails(max_overall_drop=1.0, max_class_drop=3.0).check(ref, cand, artifact="int8")
    result.raise_if_failed()   # GuardRailError: guard rail broken for 'int8': class 'tumour' dice ...

Only drops count (a metric that goes up is fine). HD95 is reported, not guarded. A class whose
metric is undefined in either report (e.g. sensitivity of a class with no cases) is skipped and
listed in ``GuardRailResult.skipped``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from medexport.errors import GuardRailError, InputError
from medexport.evaluation.report import MetricReport

_TOLERANCE = 1e-9   # points; so that 0.90 -> 0.87 against a 3.0 limit is not failed by float rounding


@dataclass
class GuardRails:
    """Largest allowed drops, in percentage points (1.0 = 0.01 absolute) of each watched metric."""

    max_overall_drop: float = 1.0
    max_class_drop: float = 3.0

    def __post_init__(self) -> None:
        for name in ("max_overall_drop", "max_class_drop"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
                raise InputError(f"GuardRails.{name} must be a non-negative number of points, got {value!r}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def check(self, reference: MetricReport, candidate: MetricReport, *, artifact: str) -> "GuardRailResult":
        """Compare ``candidate`` (e.g. the INT8 engine) with ``reference`` (the original model)."""
        _check_comparable(reference, candidate)
        metric = reference.overall_metric
        rows = [_row("overall", metric, metric, reference.overall[metric].value,
                     candidate.overall[metric].value, self.max_overall_drop)]
        skipped = []
        metric = reference.class_metric
        for name, ref_metrics in reference.per_class.items():
            ref_value = ref_metrics[metric].value
            cand_value = candidate.per_class[name][metric].value
            if math.isnan(ref_value) or math.isnan(cand_value):
                skipped.append(name)
                continue
            rows.append(_row("class", name, metric, ref_value, cand_value, self.max_class_drop))
        return GuardRailResult(artifact=artifact, passed=all(r["ok"] for r in rows), rows=rows, skipped=skipped)


@dataclass
class GuardRailResult:
    """The outcome of one artifact's checks; ``reference``/``candidate`` in rows are fractions (0..1)."""

    artifact: str
    passed: bool
    rows: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)   # classes with an undefined metric, not guarded

    def violations(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if not r["ok"]]

    def message(self) -> str:
        """One line naming each broken check with its numbers, or saying that all held."""
        if self.passed:
            text = f"guard rails held for '{self.artifact}': {len(self.rows)} checks within limits"
        else:
            text = f"guard rail broken for '{self.artifact}': " + "; ".join(map(_describe, self.violations()))
        if self.skipped:
            text += f" (not guarded, metric undefined: {', '.join(map(repr, self.skipped))})"
        return text

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise GuardRailError(self.message())

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "passed": self.passed, "rows": [dict(r) for r in self.rows],
                "skipped": list(self.skipped)}

    def table(self) -> str:
        """Markdown: reference vs candidate vs delta vs limit per check, ✓/✗."""
        lines = [f"**guard rails for `{self.artifact}`: {'passed' if self.passed else 'FAILED'}**", "",
                 "| scope | name | metric | reference (%) | candidate (%) | Δ (points) | limit (points) | ok |",
                 "|---|---|---|---:|---:|---:|---:|:---:|"]
        for r in self.rows:
            lines.append(f"| {r['scope']} | {r['name']} | {r['metric']} | {100 * r['reference']:.1f} | "
                         f"{100 * r['candidate']:.1f} | {r['delta_points']:+.1f} | {r['limit_points']:.1f} | "
                         f"{'✓' if r['ok'] else '✗'} |")
        if self.skipped:
            lines += ["", f"Not guarded (metric undefined, e.g. no cases): {', '.join(self.skipped)}"]
        return "\n".join(lines)


def _row(scope: str, name: str, metric: str, reference: float, candidate: float, limit: float) -> dict[str, Any]:
    delta = 100.0 * (candidate - reference)
    return {"scope": scope, "name": name, "metric": metric, "reference": reference, "candidate": candidate,
            "delta_points": delta, "limit_points": float(limit), "ok": bool(delta >= -limit - _TOLERANCE)}


def _describe(row: dict[str, Any]) -> str:
    where = f"class '{row['name']}'" if row["scope"] == "class" else "overall"
    return (f"{where} {row['metric']} {100 * row['reference']:.1f}% -> {100 * row['candidate']:.1f}% "
            f"({row['delta_points']:+.1f} points, limit {row['limit_points']:.1f})")


def _check_comparable(reference: MetricReport, candidate: MetricReport) -> None:
    """Guard rails compare two models on the same images; anything else is a usage error."""
    for attr in ("task", "overall_metric", "class_metric", "n"):
        a, b = getattr(reference, attr), getattr(candidate, attr)
        if a != b:
            raise InputError(f"cannot compare reports with different {attr}: {a!r} vs {b!r}")
    if list(reference.per_class) != list(candidate.per_class):
        raise InputError(f"cannot compare reports with different classes: "
                         f"{list(reference.per_class)} vs {list(candidate.per_class)}")
    if math.isnan(reference.overall[reference.overall_metric].value):
        raise InputError(f"reference {reference.overall_metric} is undefined (NaN): nothing to guard")
