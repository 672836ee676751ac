"""The report's figures as inline SVG, drawn with matplotlib (the ``report`` extra).

Why matplotlib: it draws static SVG that a browser shows with no script, offline, printed or archived, with
nothing to load and no JavaScript to fail; Plotly, Bokeh or Vega would inline megabytes of JavaScript per page
for interaction a report does not need. Each function returns an ``<svg>`` string, or None when matplotlib is
not installed (the HTML then says so and keeps its tables).
"""
from __future__ import annotations

import io
import math
import re
from typing import Any

_PERCENTILE = re.compile(r"p(\d+)(?:[._](\d+))?_ms")
_TOP_LAYERS = 15   # layers drawn in the per-layer chart, by measured time (else MACs)


def quantile_of(key: str) -> float | None:
    """The quantile (0..100) a latency key states: min 0, median 50, p90 90, p99_9/p99.9/p999 99.9, max 100."""
    fixed = {"min_ms": 0.0, "median_ms": 50.0, "max_ms": 100.0}
    if key in fixed:
        return fixed[key]
    match = _PERCENTILE.fullmatch(key)
    if not match:
        return None
    whole, frac = match[1], match[2]
    value = float(f"{whole}.{frac}") if frac else float(whole)
    while value > 100:                      # p999 -> 99.9
        value /= 10
    return value


def nines(q: float) -> float:
    """Position of quantile ``q`` on a "nines" axis: 90 -> 1, 99 -> 2, 99.9 -> 3; the maximum one step further."""
    return 0.0 if q <= 0 else -math.log10(1 - q / 100) if q < 100 else math.inf


def latency_distribution(series: dict[str, dict[str, Any]]) -> str | None:
    """Latency against percentile (nines axis), one line per series (an artifact at one batch size), from every
    ``*_ms`` percentile key the measurement carries."""
    fig = _figure(7.5, 3.6)
    if fig is None:
        return None
    ax = fig.subplots()
    points = {name: sorted((nines(q), stats[k]) for k in stats if (q := quantile_of(k)) is not None
                           and isinstance(stats[k], (int, float))) for name, stats in series.items()}
    finite = [x for pts in points.values() for x, _ in pts if x != math.inf]
    has_max = any(x == math.inf for pts in points.values() for x, _ in pts)
    top = max(finite + [2.0]) + 0.5
    for name, pts in points.items():
        xs = [top if x == math.inf else x for x, _ in pts]
        ax.plot(xs, [y for _, y in pts], marker="o", label=name)
    labels = {0: "min", 0.301: "50%", 1: "90%", 2: "99%", 3: "99.9%", 4: "99.99%"}
    ticks = [t for t in labels if t < top]
    ax.set_xticks(ticks + [top] * has_max, [labels[t] for t in ticks] + ["max"] * has_max)
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _svg(fig)


def pareto(points: list[dict[str, Any]]) -> str | None:
    """Median latency against the worst class's metric (``value``, ``metric``, ``class``), one point per artifact
    (``name``, ``median_ms``); the Pareto front (nothing both
    faster and better) joined by a line."""
    fig = _figure(6.5, 3.8)
    if fig is None:
        return None
    ax = fig.subplots()
    for p in points:
        ax.scatter(p["median_ms"], p["value"], s=36)
        ax.annotate(f"{p['name']} ({p['class']})", (p["median_ms"], p["value"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    front = pareto_front(points)
    ax.plot([p["median_ms"] for p in front], [p["value"] for p in front], linestyle="--", color="grey",
            label="Pareto front")
    ax.margins(x=0.25, y=0.2)   # room for the labels
    metric = points[0]["metric"] if points else "metric"
    ax.set_xlabel("median latency (ms)")
    ax.set_ylabel(f"worst class {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _svg(fig)


def pareto_front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points no other point beats on both median latency (lower) and metric (higher), fastest first."""
    front, best = [], -math.inf
    for p in sorted(points, key=lambda p: (p["median_ms"], -p["value"])):
        if p["value"] > best:
            front.append(p)
            best = p["value"]
    return front


def layer_shares(layers: list[dict[str, Any]]) -> str | None:
    """Each layer's share of the measured time beside its share of the MACs (the top layers by time, else MACs)."""
    fig = _figure(7.5, 0.6 + 0.28 * min(len(layers), _TOP_LAYERS))
    if fig is None:
        return None
    timed = any(layer.get("ms") for layer in layers)
    total_ms = sum(layer.get("ms") or 0 for layer in layers) or 1.0
    total_macs = sum(layer.get("macs") or 0 for layer in layers) or 1
    top = sorted(layers, key=lambda l: (l.get("ms") or 0) if timed else (l.get("macs") or 0), reverse=True)
    top = top[:_TOP_LAYERS][::-1]
    ax = fig.subplots()
    ys = range(len(top))
    height = 0.4 if timed else 0.8
    ax.barh([y + (height / 2 if timed else 0) for y in ys], [100 * (l.get("macs") or 0) / total_macs for l in top],
            height=height, label="% of MACs")
    if timed:
        ax.barh([y - height / 2 for y in ys], [100 * (l.get("ms") or 0) / total_ms for l in top], height=height,
                label="% of measured time")
    ax.set_yticks(list(ys), [_short(l["node"]) for l in top], fontsize=7)
    ax.set_xlabel("share of the model (%)")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize="small")
    return _svg(fig)


def _short(name: str, width: int = 48) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(figsize=(width, height), layout="constrained")


def _svg(fig) -> str:
    """The figure as an ``<svg>`` element (text kept as text; no XML prolog, metadata or timestamp)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "medexport"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)   # RDF credits: not for an inline figure
    return text[text.index("<svg"):]
