"""What a package says about its model, from the build manifest: preprocessing, label map, calibration record and
the model card. Nothing here holds patient data: the calibration record keeps counts and hashes only (an allow-list,
so a field added to the build manifest later cannot leak into a package unnoticed)."""
from __future__ import annotations

from medexport.loading import LAYOUTS

# the keys of the build's calibration record a package may carry: counts, hashes and the recipe, never file names,
# paths or DICOM tags
_CALIBRATION_KEYS = ("method", "calibration_images", "calibration_sha256", "quantized_nodes")
_CALIBRATION_DATA_KEYS = ("count", "files_by_format", "sha256", "skipped_files")


def preprocessing(manifest: dict, input_name: str) -> dict:
    """The input the model expects and how raw images become it (what the build recorded)."""
    shape = manifest["input"]["shape"]
    recorded = manifest.get("preprocessing") or {}
    data = ((manifest.get("calibration") or {}).get("calibration_data") or {}).get("preprocess")
    return {
        "input": {"name": input_name, "shape": shape, "layout": manifest["input"].get("layout", LAYOUTS[len(shape)]),
                  "dtype": manifest["input"].get("dtype", "float32"),
                  "dynamic_batch": bool(manifest["input"].get("dynamic_batch"))},
        "orientation": (data or {}).get("orientation"),
        "spacing_mm": recorded.get("spacing_mm") or (data or {}).get("spacing"),
        "intensity": _intensity(recorded, data),
        "sliding_window_roi": recorded.get("sliding_window_roi"),
        "image_preprocessing": data,   # the full recipe the build read the user's images with, when it had one
    }


def _intensity(recorded: dict, data: dict | None) -> dict:
    if data:
        keep = {"mode": data.get("intensity")}
        if data.get("intensity") == "window":
            keep["window_center_width"] = data.get("window")
        if data.get("intensity") == "percentile":
            keep["percentiles"] = data.get("percentiles")
        keep["output_range"] = [0.0, 1.0]
        return keep
    return {"mode": "scaled", "output_range": recorded.get("intensity_range")}


def labels(manifest: dict, classes: list[str] | None) -> dict:
    """The label map: output channel -> class name, and how to read the output."""
    outputs = manifest.get("outputs") or [{}]
    channels = (outputs[0].get("shape") or [None, None])[1]
    names = list(classes) if classes else [f"class_{i}" for i in range(channels or 0)]
    task = "segmentation" if len(manifest["input"]["shape"]) == len(outputs[0].get("shape") or []) else "classification"
    return {"task": task, "output": {"name": outputs[0].get("name"), "shape": outputs[0].get("shape"),
                                     "class_axis": 1, "decision": "argmax over the class axis"},
            "labels": {str(i): name for i, name in enumerate(names)}}


def calibration(manifest: dict) -> dict | None:
    """The calibration record: method, image count and hashes; None for a build without INT8."""
    recorded = manifest.get("calibration")
    if not recorded:
        return None
    quant = recorded.get("quantization") or {}
    data = recorded.get("calibration_data") or {}
    out = {k: quant[k] for k in _CALIBRATION_KEYS if k in quant}
    out["data"] = {k: data[k] for k in _CALIBRATION_DATA_KEYS if k in data}
    if str(data.get("source", "")).startswith("bundled "):   # medexport's own sample images, named as such
        out["data"]["source"] = data["source"]
    out["float_layers"] = len(recorded.get("float_layers") or [])
    return out


def model_card(manifest: dict, target: str, precision: str, tests: dict[str, dict]) -> str:
    """Markdown: what the model is, what it was validated on, its metrics and their deltas against the original."""
    shape = "x".join(str(d) for d in manifest["input"]["shape"])
    lines = [f"# {manifest['model']} for {target}", "",
             f"Built by medexport {manifest.get('medexport_version', '?')} for `{manifest['target']}` at "
             f"{precision.upper()}; packaged for `{target}`. Input {shape} "
             f"({manifest['input'].get('layout', '')}, float32{', dynamic batch' if manifest['input'].get('dynamic_batch') else ''}).",
             ""]
    metrics = manifest.get("metrics") or {}
    if "skipped" in metrics or not metrics:
        lines += ["## Validation", "", f"Not validated: {metrics.get('skipped', 'no metrics recorded')}.", ""]
    else:
        rails = metrics["guard_rails"]
        lines += ["## Validation against the original model", "",
                  f"Guard rails {'passed' if rails['passed'] else 'FAILED'}.", "",
                  "| scope | name | metric | original | this model | delta (points) | limit (points) |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for row in rails["rows"]:
            lines.append(f"| {row['scope']} | {row['name']} | {row['metric']} | {100 * row['reference']:.2f}% | "
                         f"{100 * row['candidate']:.2f}% | {row['delta_points']:+.2f} | {row['limit_points']:g} |")
        lines += ["", "| overall metric | original | this model | delta |", "|---|---:|---:|---:|"]
        for name, ref in metrics["reference"].items():
            art = metrics["artifact"].get(name)
            if art:
                lines.append(f"| {name} | {ref['value']:.4g} ± {ref['se']:.2g} | {art['value']:.4g} ± {art['se']:.2g} "
                             f"| {art['value'] - ref['value']:+.4g} |")
        lines.append("")
    lines += ["## Self-test", "", "`python3 run.py selftest` runs `selftest.input.npy` (a real image) and compares "
              "the output with the validated build's:", "", "| precision | max abs error | min decision agreement | from |",
              "|---|---:|---:|---|"]
    for p, test in tests.items():
        lines.append(f"| {p} | {test['atol']:.3g} | {test['min_agreement']:.4f} | {test['from']} |")
    calib = calibration(manifest)
    if calib:
        lines += ["", "## Calibration", "",
                  f"{calib.get('method', '?')} on {calib['data'].get('count', '?')} images "
                  f"(sha256 of the set {str(calib.get('calibration_sha256', '?'))[:16]}…); counts and hashes in "
                  "`calibration.json`, no patient identifiers."]
    return "\n".join(lines) + "\n"
