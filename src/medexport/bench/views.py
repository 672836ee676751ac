"""One view of a build or bench report for its Markdown and HTML pages: the entries (an artifact or runtime
variant with its latency), comparison rows, guard rails, per-layer rows and where each number was measured."""
from __future__ import annotations

from typing import Any

from medexport.bench.compare import worst_class
from medexport.bench.plots import quantile_of


def view(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` (kind "build" or "bench") as the sections both pages show."""
    return _build_view(report) if report["kind"] == "build" else _bench_view(report)


def _bench_view(report: dict[str, Any]) -> dict[str, Any]:
    entries = report["entries"]
    layered = [e for e in entries if e.get("layers")]
    return {"title": f"medexport bench: {len(entries)} result(s) against {report['baseline']}",
            "summary": [], "entries": entries, "comparison": report["comparison"], "baseline": report["baseline"],
            "guard_rails": [(e["name"], e["guard_rails"]) for e in entries if e.get("guard_rails")],
            "layers": [(e["name"], e["layers"]) for e in layered],
            "environments": [("this machine", report["environment"])]
                            + [(e["name"], e["environment"]) for e in entries if e.get("environment")]}


def _build_view(report: dict[str, Any]) -> dict[str, Any]:
    target, latency = report["target"], report.get("latency") or {}
    validation = report.get("validation") or {}
    rails = validation.get("guard_rails")
    entries = []
    for name, stats in latency.items():
        if not (isinstance(stats, dict) and "median_ms" in stats):
            continue
        column = "candidate" if name == target else "reference" if name.startswith("reference") else None
        entries.append({"name": name, "source": "measured by medexport build", "target": target,
                        "devices": latency.get("devices", []), "latency": [stats],
                        "worst_class": worst_class(rails, column) if column else None})
    profile = report.get("profile") or {}
    summary = [f"Input {'x'.join(map(str, report['input']['shape']))} ({report['input']['layout']})",
               f"artifact {report['build']['artifact']} on {target}"]
    if profile:
        summary.append(f"{profile['macs'] / 1e9:.3f} GMACs, {profile['params'] / 1e6:.3f} M parameters")
    if report.get("compression"):
        c = report["compression"]
        summary.append(f"compressed by {c['method']}: {c['macs_before'] / 1e6:.1f} -> {c['macs_after'] / 1e6:.1f} "
                       f"MMACs ({c['ratio']:.2f}x)")
    if "skipped" in validation:
        summary.append(f"validation skipped: {validation['skipped']}")
    layers = report.get("layers") or profile.get("layers")
    return {"title": f"medexport build: {report['model']} -> {target}", "summary": summary, "entries": entries,
            "comparison": [], "baseline": None, "guard_rails": [(target, rails)] if rails else [],
            "layers": [(target, layers)] if layers else [], "environments": [("this machine", report["environment"])]}


def stat_keys(entries: list[dict[str, Any]]) -> list[str]:
    """Every ``*_ms`` statistic the entries carry: percentiles in order, then the others (mean, std...), then
    prefixed families (compute_*, end_to_end_*), so keys a newer harness adds show up unchanged."""
    keys = {k for e in entries for r in e["latency"] for k, v in r.items()
            if k.endswith("_ms") and isinstance(v, (int, float))}
    quantiled = sorted((k for k in keys if quantile_of(k) is not None), key=quantile_of)
    plain = sorted(k for k in keys if quantile_of(k) is None and k.count("_") == 1)
    return quantiled + plain + sorted(keys - set(quantiled) - set(plain))


def pareto_points(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """(median ms at the smallest batch, worst-class metric) of every entry that has both."""
    points = []
    for e in entries:
        if e.get("worst_class") and e["latency"]:
            first = min(e["latency"], key=lambda r: r["batch"] or 0)
            worst = e["worst_class"]
            points.append({"name": e["name"], "median_ms": first["median_ms"], "value": worst["value"],
                           "metric": worst["metric"], "class": worst["name"]})
    return points
