"""The metric report: estimates with bootstrap SEs, overall and per class, JSON-able and printable."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from medexport.errors import InputError

_PERCENT_METRICS = {"accuracy", "macro_f1", "sensitivity", "specificity", "f1", "dice"}


@dataclass(frozen=True)
class Estimate:
    """A metric with its bootstrap standard error (NaN where undefined, e.g. a class with no cases)."""

    value: float
    se: float

    def to_dict(self) -> dict[str, float | None]:
        """JSON has no NaN: undefined numbers become None."""
        return {"value": _num_out(self.value), "se": _num_out(self.se)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Estimate":
        return cls(_num_in(d["value"]), _num_in(d["se"]))


@dataclass
class MetricReport:
    """How well a model reads a set of images, overall and per class.

    ``overall_metric`` names the entry of ``overall`` and ``class_metric`` the per-class entry
    that guard rails watch. ``spacing`` (mm per voxel) is set when HD95 is in mm.
    """

    task: str
    overall_metric: str
    class_metric: str
    overall: dict[str, Estimate]
    per_class: dict[str, dict[str, Estimate]]
    n: int
    spacing: tuple[float, ...] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "overall_metric": self.overall_metric,
            "class_metric": self.class_metric,
            "n": self.n,
            "spacing": list(self.spacing) if self.spacing is not None else None,
            "overall": {k: e.to_dict() for k, e in self.overall.items()},
            "per_class": {c: {k: e.to_dict() for k, e in m.items()} for c, m in self.per_class.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MetricReport":
        try:
            return cls(
                task=d["task"],
                overall_metric=d["overall_metric"],
                class_metric=d["class_metric"],
                overall={k: Estimate.from_dict(e) for k, e in d["overall"].items()},
                per_class={c: {k: Estimate.from_dict(e) for k, e in m.items()}
                           for c, m in d["per_class"].items()},
                n=int(d["n"]),
                spacing=tuple(float(s) for s in d["spacing"]) if d.get("spacing") is not None else None,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"not a MetricReport dict: missing or malformed {exc}") from None

    def table(self) -> str:
        """Markdown: a summary line, then one row per class; rates in percent with ± SE."""
        summary = ", ".join(f"{self._label(k)} {self._fmt(k, e)}" for k, e in self.overall.items())
        metrics = list(next(iter(self.per_class.values()), {}))
        header = ["class"] + [self._label(m) for m in metrics]
        lines = [f"**{self.task}** (n={self.n}): {summary}", "",
                 "| " + " | ".join(header) + " |",
                 "|" + "|".join(["---"] + ["---:"] * len(metrics)) + "|"]
        for name, row in self.per_class.items():
            lines.append("| " + " | ".join([name] + [self._fmt(m, row[m]) for m in metrics]) + " |")
        return "\n".join(lines)

    def _label(self, metric: str) -> str:
        if metric == "hd95":
            return "hd95 (mm)" if self.spacing is not None else "hd95 (voxels)"
        return f"{metric} (%)" if metric in _PERCENT_METRICS else metric

    @staticmethod
    def _fmt(metric: str, e: Estimate) -> str:
        if math.isnan(e.value):
            return "n/a"
        if metric == "support":
            return str(int(e.value))
        if metric in _PERCENT_METRICS:
            value, se, digits = 100 * e.value, 100 * e.se, 1
        else:
            value, se, digits = e.value, e.se, 2
        return f"{value:.{digits}f}" if math.isnan(se) else f"{value:.{digits}f} ± {se:.{digits}f}"


def _num_out(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _num_in(x: float | None) -> float:
    return math.nan if x is None else float(x)
