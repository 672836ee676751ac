"""report.html: one self-contained page (inline CSS and SVG, no script, nothing fetched) for a build or a bench.

Sections: what was compared and where it was measured, the latency table and its distribution per artifact,
latency against the worst class's metric (Pareto), per-layer MACs beside per-layer time, the guard-rail table.
"""
from __future__ import annotations

from html import escape
from typing import Any

from medexport.bench import plots
from medexport.bench.views import pareto_points, stat_keys, view

_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .5em;font-size:.9em}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}.bad{color:#b00}.ok{color:#070}
figure{margin:1em 0}figcaption{font-size:.9em;color:#555}.note{color:#555}"""
_NO_PLOTS = "plots need matplotlib: pip install 'medexport[report]'"


def report_html(report: dict[str, Any]) -> str:
    """The page for ``report`` (a stamped build or bench report)."""
    v = view(report)
    body = [f"<h1>{escape(v['title'])}</h1>"]
    body += [f"<p>{escape(line)}</p>" for line in v["summary"]]
    if v["comparison"]:
        body += ["<h2>Comparison</h2>", _comparison(v["comparison"], v["baseline"])]
    body += ["<h2>Latency</h2>", _latency_table(v["entries"])]
    series = {f"{e['name']} (batch {r['batch']})": r for e in v["entries"] for r in e["latency"]}
    body.append(_figure("plot-latency", plots.latency_distribution(series) if series else None,
                        "Latency at each percentile the harness recorded, per artifact and batch size."))
    points = pareto_points(v["entries"])
    if points:
        body += ["<h2>Latency against the worst class</h2>",
                 _figure("plot-pareto", plots.pareto(points), "Median latency against the lowest per-class metric; "
                         "dashed: the Pareto front (nothing else is both faster and better).")]
    for name, layers in v["layers"]:
        body += [f"<h2>Per layer: {escape(name)}</h2>",
                 _figure(f"plot-layers-{len(body)}", plots.layer_shares(layers),
                         "Share of MACs beside share of measured time, top layers." if _timed(layers) else
                         "Share of MACs, top layers (per-layer times: medexport bench --layers)."),
                 _layer_table(layers)]
    for name, rails in v["guard_rails"]:
        body += [f"<h2>Guard rails: {escape(name)}</h2>", _guard_rails(rails)]
    body.append("<h2>Where it was measured</h2>")
    body += [_environment(name, env) for name, env in v["environments"]]
    sources = sorted({e["source"] for e in v["entries"]})
    body.append(f"<p class='note'>Sources: {escape('; '.join(sources))}.</p>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(v['title'])}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _timed(layers: list[dict[str, Any]]) -> bool:
    return any(layer.get("ms") is not None for layer in layers)


def _figure(ident: str, svg: str | None, caption: str) -> str:
    if svg is None:
        return f"<p class='note'>{_NO_PLOTS}</p>"
    return f"<figure class='plot' id='{ident}'>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    cells = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{cells}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return f"<td class='{'ok' if value else 'bad'}'>{'✓' if value else '✗'}</td>"
    if isinstance(value, float):
        return f"<td class='n'>{value:.4g}</td>"
    if isinstance(value, int):
        return f"<td class='n'>{value:,}</td>"
    return f"<td>{escape('–' if value is None else str(value))}</td>"


def _latency_table(entries: list[dict[str, Any]]) -> str:
    keys = stat_keys(entries)
    rows = [[e["name"], e["source"], f"{e['target']} ({', '.join(e.get('devices') or [])})", r["batch"],
             r.get("iterations"), *(r.get(k) for k in keys), r.get("throughput_per_s")]
            for e in entries for r in e["latency"]]
    return _table(["result", "source", "runtime (devices)", "batch", "runs", *(k.replace("_ms", " ms") for k in keys),
                   "images/s"], rows)


def _comparison(rows: list[dict[str, Any]], baseline: str) -> str:
    return (f"<p>Speed-up: median of {escape(baseline)} over each median at the same batch. Ideal: MACs of the "
            "baseline over MACs of the result; realized/ideal: how much of the MACs saved became time saved.</p>"
            + _table(["result", "batch", "median ms", "speed-up", "MMACs", "ideal", "realized/ideal", "MiB on disk",
                      "overall", "worst class", "guard rails"],
                     [[r["name"], r["batch"], r["median_ms"], r["speedup"],
                       None if r["macs"] is None else r["macs"] / 1e6, r["ideal_speedup"], r["realized_over_ideal"],
                       None if r["size_bytes"] is None else r["size_bytes"] / 2**20, _worst(r.get("overall")),
                       _worst(r["worst_class"]),
                       r["guard_rails_passed"]] for r in rows]))


def _worst(metric: dict[str, Any] | None) -> str | None:
    """A guard-rail metric as text: "white_matter dice 89.7% (-0.8 pts)" (no name for the overall metric)."""
    if not metric:
        return None
    name = f"{metric['name']} " if "name" in metric else ""
    return f"{name}{metric['metric']} {100 * metric['value']:.1f}% ({metric['delta_points']:+.1f} pts)"


def _layer_table(layers: list[dict[str, Any]]) -> str:
    total_ms = sum(l.get("ms") or 0 for l in layers) or None
    total_macs = sum(l.get("macs") or 0 for l in layers) or None
    rows = [[l["node"], l.get("op_type"), l.get("precision"), l.get("macs"),
             None if not (total_macs and l.get("macs") is not None) else 100 * l["macs"] / total_macs,
             l.get("ms"), None if not (total_ms and l.get("ms") is not None) else 100 * l["ms"] / total_ms]
            for l in layers]
    return _table(["node", "op", "precision", "MACs", "% MACs", "ms", "% time"], rows)


def _guard_rails(rails: dict[str, Any]) -> str:
    rows = [[r["scope"], r["name"], r["metric"], 100 * r["reference"], 100 * r["candidate"], r["delta_points"],
             r["limit_points"], r["ok"]] for r in rails["rows"]]
    verdict = "held" if rails["passed"] else "BROKEN"
    return (f"<p>Guard rails {verdict}.</p>"
            + _table(["scope", "name", "metric", "reference %", "artifact %", "change (points)", "limit (points)",
                      "ok"], rows))


def _environment(name: str, env: dict[str, Any]) -> str:
    flat = {k: v for k, v in env.items() if not isinstance(v, dict)}
    versions = env.get("versions") or {}
    rows = [[k, str(v)] for k, v in flat.items()] + [[f"version {k}", v] for k, v in versions.items()]
    rows += [[f"{k}", str(v)] for k, v in env.items() if isinstance(v, dict) and k != "versions"]
    return f"<h3>{escape(name)}</h3>" + _table(["", ""], rows)
