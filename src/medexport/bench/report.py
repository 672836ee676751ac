"""Markdown rendering of a build report: what a person reads after `medexport build`."""
from __future__ import annotations

from typing import Any

from medexport.calibration.choices import LAYOUTS


def build_markdown(report: dict[str, Any]) -> str:
    """A short human report: interface, parity, validation table, latency, stage timings."""
    lines = [f"# medexport build: {report['model']} -> {report['target']}", ""]
    inp = report.get("input", {})
    lines += [f"Input: `{'x'.join(map(str, inp.get('shape', [])))}` ({inp.get('layout')}, "
              f"{'dynamic' if inp.get('dynamic_batch') else 'static'} batch)", ""]
    prof = report.get("profile")
    if prof:
        lines += [f"Cost: {prof['macs'] / 1e9:.3f} GMACs, {prof['params'] / 1e6:.3f} M params, "
                  f"peak activations {prof['peak_activation_bytes'] / 2**20:.1f} MiB", ""]
    lines += _compression_lines(report.get("compression"), report.get("finetune"))
    lines += _int8_lines(report.get("calibration"))
    lines += ["## Parity (FP32)", "", "| comparison | max abs error | max rel error | atol | rtol | ok |",
              "|---|---:|---:|---:|---:|:---:|"]
    for name, key in (("torch vs ONNX (ONNX Runtime)", "onnx_parity"), (f"reference vs {report['target']}", "backend_parity")):
        p = report.get(key)
        if p and "not_applicable" in p:
            kept = (f" (decisions kept: {100 * p['decisions']['agreement']:.2f}% on {p['n_inputs']} images)"
                    if p.get("decisions") else "")
            lines.append(f"| {name} | {_error(p)} | – | – | – | n/a: {p['not_applicable']}{kept} |")
        elif p:
            lines.append(f"| {name} | {p['max_abs_error']:.2e} | {p['max_rel_error']:.2e} | {p['tolerance']:.0e} | "
                         f"{p['rtol']:.0e} | "
                         f"{'✓' if p['passed'] else '✗'} |")
    src = report.get("parity_inputs")
    if src:
        lines += ["", f"Parity inputs: {src['count']} {src['source']}."]
    val = report.get("validation")
    if val and "skipped" in val:
        lines += ["", "## Validation", "", f"**{val['skipped']}.**"]
    elif val:
        lines += ["", "## Validation on held-out images", "", val["data"], "", val["table"], ""]
    lat = report.get("latency")
    if lat:
        lines += ["", "## Latency", "", "| runtime | batch | median ms | p90 ms | p99 ms | images/s |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, r in lat.items():
            if isinstance(r, dict) and "median_ms" in r:
                lines.append(f"| {name} | {r['batch']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | "
                             f"{r['throughput_per_s']:.1f} |")
        lines += ["", f"Speedup over the reference: {lat.get('speedup_vs_reference')}x on {', '.join(lat.get('devices', []))}."]
        if lat.get("speedup_vs_fp32") is not None:
            lines += ["", f"Speedup over the same runtime in FP32: {lat['speedup_vs_fp32']}x."]
        if lat.get("speedup_vs_original") is not None:
            lines += ["", f"Speedup over the uncompressed original in FP32 on the same runtime: "
                          f"{lat['speedup_vs_original']}x."]
        if lat.get("warning"):
            lines += ["", f"**Warning:** {lat['warning']}."]
    env = report.get("environment")
    if env:
        lines += ["", f"Measured on {env['cpu']} ({env['logical_cores']} logical cores), load {env['load_average_1m']}."]
    lines += ["", "## Stage times (s)", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in report.get("stage_seconds", {}).items()]
    return "\n".join(lines) + "\n"


def _compression_lines(record: dict[str, Any] | None, tuned: dict[str, Any] | None) -> list[str]:
    """What compression changed: totals, then one row per factorized layer or pruned group; the fine-tuning."""
    if not record:
        return []
    lines = ["## Compression", "", f"`{record['method']}`: {record['macs_before'] / 1e6:.1f} -> "
             f"{record['macs_after'] / 1e6:.1f} MMACs ({record['ratio']:.2f}x), {record['params_before']:,} -> "
             f"{record['params_after']:,} parameters ({record['params_ratio']:.2f}x).", "",
             "| pass | layer or group | change | MMACs before | MMACs after |", "|---|---|---|---:|---:|"]
    for layer in record["layers"]:
        if "ranks" in layer:
            change = f"ranks {tuple(layer['ranks'])}, weight error {layer['weight_error']:.3f}"
        elif "kept" in layer:
            change = f"{layer['kept']} of {layer['channels']} channels kept"
        else:
            timed = (f", model {layer['ms_before']:.2f} -> {layer['ms_after']:.2f} ms"
                     if layer.get("ms_before") is not None else "")
            change = f"sub-pixel convolution (exact){timed}"
        lines.append(f"| {layer['method']} | `{layer['name']}` | {change} | {layer['macs_before'] / 1e6:.2f} | "
                     f"{layer['macs_after'] / 1e6:.2f} |")
    if tuned and tuned["method"] == "labels":
        schedule = f" ({tuned['schedule']})" if tuned.get("schedule") else ""
        early = tuned.get("early_stopping")
        kept = (f" Early stopping on {tuned['val_images']} images held aside kept step {early['best_step']} "
                f"({early['best_points']:+.1f} points of {early['metric']})." if early else "")
        lines += ["", f"Fine-tuned on labelled images ({tuned['data']['source']}): {tuned['steps']} steps{schedule} on "
                      f"{tuned['images']} of them, {tuned['loss']} {tuned['loss_first']:.3f} -> "
                      f"{tuned['loss_last']:.3f}.{kept}"]
    elif tuned:
        schedule = f" ({tuned['schedule']})" if tuned.get("schedule") else ""
        lines += ["", f"Fine-tuned by {tuned['method']} from the original: {tuned['steps']} steps{schedule} on "
                      f"{tuned['images']} images ({tuned.get('data', {}).get('source', 'the --calib images')}), "
                      f"loss {tuned['loss_first']:.3f} -> {tuned['loss_last']:.3f}."]
    return lines + [""]


def _int8_lines(calibration: dict[str, Any] | None) -> list[str]:
    """Which INT8 artifact the build made and how: engine, QDQ layout, int8 and float layers."""
    quant = (calibration or {}).get("quantization")
    if not quant:
        return []
    if "engine" in quant:
        return ["## INT8", "", f"`{quant['path']}`: NNCF post-training quantization (OpenVINO IR), "
                f"{quant['calibration_images']} calibration images.", ""]
    layout = LAYOUTS[quant.get("config", {}).get("layout", "tensorrt")]
    floats = calibration.get("float_layers") or []
    return ["## INT8", "", f"`{quant['path']}`: {layout.name} QDQ layout for {layout.scope} ({layout.help}); "
            f"{quant['method']} calibration on {quant['calibration_images']} images, {quant['quantized_nodes']} int8 nodes, "
            f"{len(floats)} layer(s) kept in float.", ""]


def _error(parity: dict) -> str:
    return f"{parity['max_abs_error']:.2e}" if "max_abs_error" in parity else "–"



def bench_markdown(report: dict[str, Any]) -> str:
    """The comparison of a bench report: speed-ups against the baseline, every latency statistic, guard rails,
    and where each number came from."""
    from medexport.bench.views import stat_keys

    entries = report["entries"]
    lines = [f"# medexport bench: {len(entries)} result(s) against {report['baseline']}", "",
             "| result | batch | median ms | speed-up | MMACs | ideal | realized/ideal | MiB | overall | worst class | "
             "guard rails |", "|---|---:|---:|---:|---:|---:|---:|---:|---|---|:---:|"]
    for r in report["comparison"]:
        worst = f"{r['worst_class']['name']} {100 * r['worst_class']['value']:.1f}%" if r["worst_class"] else "–"
        overall = f"{r['overall']['metric']} {100 * r['overall']['value']:.1f}%" if r.get("overall") else "–"
        lines.append(f"| {r['name']} | {r['batch']} | {r['median_ms']:.3f} | {_num(r['speedup'], '.2f', 'x')} | "
                     f"{_num(r['macs'] and r['macs'] / 1e6, '.1f')} | {_num(r['ideal_speedup'], '.2f', 'x')} | "
                     f"{_num(r['realized_over_ideal'], '.2f')} | "
                     f"{_num(r['size_bytes'] and r['size_bytes'] / 2**20, '.2f')} | "
                     f"{overall} | {worst} | "
                     f"{_MARK[r['guard_rails_passed']]} |")
    keys = stat_keys(entries)
    lines += ["", "## Latency (ms)", "", "| result | source | runtime | batch | " + " | ".join(keys) + " |",
              "|---|---|---|---:|" + "---:|" * len(keys)]
    for e in entries:
        for r in e["latency"]:
            lines.append(f"| {e['name']} | {e['source']} | {e['target']} ({', '.join(e.get('devices') or [])}) | "
                         f"{r['batch']} | " + " | ".join(_num(r.get(k), '.3f') for k in keys) + " |")
    for e in entries:
        if e.get("warning"):
            lines += ["", f"**Warning ({e['name']}):** {e['warning']}"]
    env = report["environment"]
    lines += ["", f"Measured here on {env['cpu']} ({env.get('logical_cores')} logical cores), Python {env['python']}, "
                  f"{', '.join(f'{k} {v}' for k, v in env['versions'].items())}."]
    return "\n".join(lines) + "\n"


_MARK = {True: "✓", False: "✗", None: "–"}


def _num(value: float | None, spec: str, unit: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{unit}"
