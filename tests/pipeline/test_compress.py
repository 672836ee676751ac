"""`medexport compress` and `build --compress`: budget met, guard rails against the ORIGINAL model."""
import json
import subprocess
import sys

import pytest

from medexport.errors import GuardRailError
from medexport.loading import ModelSpec
from medexport.evaluation import GuardRails
from medexport.pipeline import BuildConfig, CompressionConfig, run_build, run_compress


def test_compress_is_checked_against_the_original_and_refused_when_it_hurts(tmp_path):
    config = BuildConfig(model=ModelSpec(), out_dir=tmp_path, compression=CompressionConfig.from_flags("svd", {"--budget": "6x"}))
    with pytest.raises(GuardRailError, match="guard rail broken for 'model.compressed.onnx'"):
        run_compress(config)
    record = json.loads((tmp_path / "compress.json").read_text())  # the user still sees what happened
    assert record["compression"]["macs_before"] / record["compression"]["macs_after"] == pytest.approx(6, rel=0.05)
    assert record["onnx_parity"]["passed"]


def test_build_with_compression_validates_against_the_uncompressed_model(tmp_path):
    config = BuildConfig(model=ModelSpec(), out_dir=tmp_path, compression=CompressionConfig.from_flags("tucker", {"--budget": "1.5x"}), rails=GuardRails(max_overall_drop=100, max_class_drop=100))
    report = run_build(config).to_dict()
    ref = report["validation"]["reference"]["overall"]["dice"]["value"]
    assert ref == pytest.approx(0.909, abs=2e-3)  # the original model's card value, not the compressed one's
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["artifact"] == "model.compressed.onnx"
    assert manifest["compression"]["method"] == "tucker" and manifest["compression"]["layers"]
    assert manifest["finetune"] is None   # not fine-tuned: said so, not left out
    markdown = (tmp_path / "report.md").read_text()   # what changed, in the report a person reads
    assert "## Compression" in markdown and f"({report['compression']['ratio']:.2f}x)" in markdown
    assert all(f"`{layer['name']}`" in markdown for layer in manifest["compression"]["layers"])
    latency = report["latency"]   # the uncompressed original, exported and timed in alternation on the same runtime
    assert latency["onnxruntime FP32 original"]["median_ms"] > 0
    assert latency["speedup_vs_original"] == pytest.approx(
        latency["onnxruntime FP32 original"]["median_ms"] / latency["onnxruntime"]["median_ms"], rel=1e-2)


def test_pruning_that_breaks_the_rails_holds_them_after_fine_tuning(tmp_path):
    config = BuildConfig(model=ModelSpec(), out_dir=tmp_path, compression=CompressionConfig.from_flags("prune-l2", {"--ratio": 0.5}))
    with pytest.raises(GuardRailError):   # one-shot L2 at 50% loses most of the white matter
        run_compress(config)
    config.compression.finetune_steps = 200
    result = run_compress(config)
    assert result["validation"]["guard_rails"]["passed"]   # 100 steps measured -1.2 points: broken
    assert result["compression"]["macs_before"] / result["compression"]["macs_after"] > 3.8
    tuned = json.loads((tmp_path / "compress.json").read_text())["finetune"]
    assert tuned["steps"] == 200 and tuned["images"] == 32 and "bundled calibration" in tuned["data"]["source"]
    assert tuned["loss_last"] < tuned["loss_first"]


def test_cli_prunes_the_reference_model_within_the_guard_rails(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "medexport", "compress", "--method", "prune-act", "--ratio", "0.25",
                           "--iterative", "2", "--rollback", "--out", "p"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "p" / "compress.json").read_text())
    assert record["compression"]["method"] == "prune-act"
    assert record["compression"]["config"]["steps"] == 2 and record["compression"]["log"]
    # activation scores keep the plain U-Net within the rails at 1.56x; L1 at this ratio gets rolled back whole
    assert record["compression"]["macs_before"] / record["compression"]["macs_after"] > 1.3
    assert record["validation"]["guard_rails"]["passed"]
    assert "not independent" in record["validation"]["note"]  # the search chose its steps on these images


def test_hsc_compress_uses_the_bundled_calibration_images_and_reports_every_class_delta(tmp_path):
    config = BuildConfig(model=ModelSpec(model="brain-region-alexnet"), out_dir=tmp_path, compression=CompressionConfig.from_flags("hsc", {"--budget": "3x"}), rails=GuardRails(max_overall_drop=100, max_class_drop=100))
    result = run_compress(config)
    record = result["compression"]
    assert record["method"] == "hsc" and record["config"]["calibration_images"] == 32  # HSC reads its first 32 of the 48
    assert record["macs_before"] / record["macs_after"] == pytest.approx(3, rel=0.05)
    rows = result["validation"]["guard_rails"]["rows"]
    classes = {r["name"] for r in rows if r["scope"] == "class"}
    assert classes == {"frontal", "parietal", "temporal", "occipital", "deep_grey", "cerebellum"}
    assert all(isinstance(r["delta_points"], float) for r in rows)


def test_hsc_on_a_user_model_without_calibration_images_is_a_clear_error(tmp_path):
    from medexport.errors import DataError

    spec = ModelSpec(model="monai.networks.nets:UNet", input_shape=(1, 1, 64, 64),
                     model_kwargs={"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": [8, 16, 32],
                                   "strides": [2, 2]})
    with pytest.raises(DataError, match="--calib"):
        run_compress(BuildConfig(model=spec, out_dir=tmp_path, compression=CompressionConfig.from_flags("hsc", {"--budget": "2x"})))


@pytest.mark.parametrize("method, options, named", [
    ("svd", {"--rollback": True}, "--rollback"),
    ("tucker", {"--iterative": 4, "--scope": "global"}, "--iterative, --scope"),
    ("hsc", {"--max-ratio": 0.5}, "--max-ratio"),
    ("subpixel", {"--latency": 0.5}, "--latency"),
])
def test_options_the_pass_family_ignores_are_refused(method, options, named):
    """Raised when the options are routed, before any compression work, instead of being silently dropped."""
    from medexport.errors import InputError

    with pytest.raises(InputError, match=f"{named} (is|are) not used by {method}"):
        CompressionConfig.from_flags(method, options)


def test_max_ratio_without_global_scope_is_one_line_error(tmp_path):
    """--max-ratio only caps the global ranking; with the default --scope layer it would be silently ignored."""
    proc = subprocess.run([sys.executable, "-m", "medexport", "compress", "--method", "prune-l2", "--max-ratio", "0.6",
                           "--out", "c"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["medexport: error: --max-ratio caps groups in the global ranking; add "
                                                "--scope global (--scope layer removes --ratio from every group)"]
    assert not (tmp_path / "c").exists()


def test_a_pruning_pass_without_rollback_claims_no_guard_rails(tmp_path):
    from medexport.compression import get_pass
    from medexport.pipeline import RunContext

    config = BuildConfig(model=ModelSpec(), out_dir=tmp_path, compression=CompressionConfig.from_flags("prune-l1", {}))
    (method, pass_config), = config.passes
    bound = get_pass(method).bind(pass_config, RunContext(config))
    assert bound.rails is None and bound.heldout is None and "guard_rails" not in bound.to_dict()


@pytest.mark.parametrize("method, kwargs, message", [
    ("svd", {"--latency-payoff": 0.7}, "--latency-payoff applies to --latency mode"),
    ("prune-l2", {"--latency-payoff": 0.7}, "--latency-payoff is not used by prune-l2"),
])
def test_latency_payoff_outside_latency_mode_is_refused(tmp_path, method, kwargs, message):
    from medexport.errors import InputError

    with pytest.raises(InputError, match=message):
        BuildConfig(model=ModelSpec(), out_dir=tmp_path, compression=CompressionConfig.from_flags(method, kwargs))
    assert not (tmp_path / "compress.json").exists()


def test_a_chain_runs_tucker_then_pruning_and_records_both(tmp_path):
    """--method tucker,prune-l2: each pass reads its own options; the record spans the chain, each pass kept."""
    proc = subprocess.run([sys.executable, "-m", "medexport", "compress", "--method", "tucker,prune-l2", "--budget",
                           "1.5x", "--ratio", "0.25", "--finetune", "100", "--out", "c"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "c" / "compress.json").read_text())
    record = result["compression"]
    first, second = record["passes"]
    assert (first["method"], second["method"]) == ("tucker", "prune-l2") and record["method"] == "tucker,prune-l2"
    assert first["macs_before"] / first["macs_after"] == pytest.approx(1.5, rel=0.05)
    assert second["macs_before"] == first["macs_after"]   # pruning ran on the factorized model
    assert record["ratio"] == pytest.approx(first["macs_before"] / second["macs_after"], rel=1e-3)
    assert record["ratio"] > 2.0
    assert record["params_after"] == second["params_after"] < record["params_before"]
    assert len(record["layers"]) == len(first["layers"]) + len(second["layers"])
    assert result["validation"]["guard_rails"]["passed"]   # measured +0.8 Dice points after 100 fine-tuning steps


@pytest.mark.parametrize("options, message", [
    (["--energy", "0.9", "--budget", "3x"], "--budget and --energy are competing rank rules"),
    (["--vbmf", "--rank-ratio", "0.5", "--budget", "6x"], "--budget, --rank-ratio and --vbmf are competing rank rules"),
    (["--energy", "0.9", "--budget-metric", "params"], "--budget-metric says what --budget divides"),
    (["--ratio", "0.3"], "--ratio is not used by svd (a lowrank pass); drop the option or choose a pass that uses it"),
])
def test_conflicting_rank_rules_are_one_line_errors(tmp_path, options, message):
    proc = subprocess.run([sys.executable, "-m", "medexport", "compress", "--method", "svd", *options, "--out", "c"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and message in proc.stderr
    assert not (tmp_path / "c").exists()


def test_a_chain_of_two_low_rank_passes_is_refused(tmp_path):
    from medexport.errors import InputError

    with pytest.raises(InputError, match="at most one pass per family"):
        CompressionConfig.from_flags("tucker,svd", {})


@pytest.mark.parametrize("rule, check", [
    ({"energy": 0.95}, lambda layers: all(layer["weight_error"] ** 2 <= 0.05 + 1e-9 for layer in layers)),
    ({"rank_ratio": 0.5}, lambda layers: all(layer["ranks"][0] <= 128 for layer in layers)),
    ({"vbmf": True}, lambda layers: len(layers) > 0),
])
def test_rank_rules_other_than_a_budget_reach_the_pass(tmp_path, rule, check):
    config = BuildConfig(model=ModelSpec(), out_dir=tmp_path, compression=CompressionConfig((("svd", rule),)),
                         rails=GuardRails(max_overall_drop=100, max_class_drop=100))
    record = run_compress(config)["compression"]
    assert {k: v for k, v in record["config"].items() if k in rule} == rule and "budget" not in record["config"]
    assert check(record["layers"])


def test_compression_options_without_a_pass_are_refused_before_the_folder_loses_its_manifest(tmp_path):
    """`build --energy 0.9` without --compress would silently build the uncompressed model; and a refused option
    must not unverify an existing build folder (its manifest is removed only once work starts)."""

    out = tmp_path / "b"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    for args, message in ((["--energy", "0.9"], "--energy configure compression; add --compress"),
                          (["--compress", "svd", "--energy", "0.9", "--budget", "3x"], "competing rank rules")):
        proc = subprocess.run([sys.executable, "-m", "medexport", "build", *args, "--out", str(out)],
                              capture_output=True, text=True)
        assert proc.returncode == 1 and message in proc.stderr
        assert (out / "manifest.json").read_text() == "{}"


def test_finetune_with_iterative_pruning_recovers_every_step_before_it_is_judged(tmp_path):
    """--iterative 2 --finetune 200 --rollback: 100 distillation steps after each pruning step (the prune /
    fine-tune loop), each step judged by the guard rails once recovered, so a quarter of every group, which
    breaks the rails when pruned at once without recovery, stays pruned; recorded per round."""
    config = BuildConfig(model=ModelSpec(), out_dir=tmp_path, compression=CompressionConfig.from_flags("prune-l2", {"--ratio": 0.25, "--iterative": 2, "--rollback": True}, 200))
    result = run_compress(config)
    tuned, record = result["finetune"], result["compression"]
    assert tuned["steps"] == 200 and [r["steps"] for r in tuned["rounds"]] == [100, 100]
    assert tuned["schedule"] == "100 steps after each pruning step tried"
    assert [entry["passed"] for entry in record["log"] if "passed" in entry] == [True, True]
    assert not any(reason.startswith("locked") for reason in record["skipped"].values())
    assert result["validation"]["guard_rails"]["passed"]


def test_subpixel_comes_last_in_a_chain_and_changes_no_numbers(tmp_path):
    """prune-l2,subpixel: the exact rewrite of the transposed convs that measure faster runs on the pruned model;
    whether the head pays is the backend's answer here, so either way the record says what was measured."""
    config = BuildConfig(model=ModelSpec(), out_dir=tmp_path, compression=CompressionConfig.from_flags("prune-l2,subpixel", {"--ratio": 0.25, "--latency-backend": "onnxruntime"}, 100))
    result = run_compress(config)
    pruned, rewrite = result["compression"]["passes"]
    assert (pruned["method"], rewrite["method"]) == ("prune-l2", "subpixel") and rewrite["config"]["backend"] == "onnxruntime"
    decided = {layer["name"]: layer["ms_before"] / layer["ms_after"] for layer in rewrite["layers"]}
    decided.update({name: why for name, why in rewrite["skipped"].items() if "measured" in why})
    assert "model.2.conv" in decided   # the 3-class full-resolution head was timed both ways
    assert all(ratio >= rewrite["config"]["min_speedup"] for ratio in decided.values() if isinstance(ratio, float))
    assert result["onnx_parity"]["passed"] and result["validation"]["guard_rails"]["passed"]


def test_a_rewrite_before_another_pass_is_refused(tmp_path):
    from medexport.errors import InputError

    with pytest.raises(InputError, match="must come last in a chain"):
        run_compress(BuildConfig(model=ModelSpec(), out_dir=tmp_path, compression=CompressionConfig.from_flags("subpixel,prune-l2", {})))


@pytest.mark.parametrize("target, given, measured", [
    ("openvino", None, "openvino"), ("onnxruntime", None, "onnxruntime"), ("tensorrt", None, "openvino"),
    ("onnxruntime", "openvino", "openvino")])
def test_the_backend_that_measures_follows_the_target_unless_named(tmp_path, target, given, measured):
    """--latency and subpixel tune for the runtime being built for when it can be timed here (TensorRT cannot)."""
    flags = {"--latency-backend": given} if given else {}
    config = BuildConfig(model=ModelSpec(), out_dir=tmp_path, target=target,
                         compression=CompressionConfig.from_flags("subpixel", flags))
    assert config.passes[0][1].backend == measured


@pytest.mark.parametrize("compress", ["prune-l2", "svd", None])
def test_a_latency_backend_nothing_measures_on_is_refused(tmp_path, compress):
    from medexport.errors import InputError

    with pytest.raises(InputError, match="--latency-backend (is not used by|configure)"):
        run_build(BuildConfig(model=ModelSpec(), out_dir=tmp_path, compression=CompressionConfig.from_flags(
            compress, {"--latency-backend": "onnxruntime"})))
    assert not tmp_path.joinpath("manifest.json").exists()


def test_finetune_runs_after_a_pruning_pass_that_found_nothing_to_prune(tmp_path):
    """--finetune is never dropped silently: a pruning pass with every group excluded never calls its per-step
    fine-tuning, so the steps run after compression (what a low-rank pass before it changed is recovered)."""
    result = run_compress(BuildConfig(model=ModelSpec(), out_dir=tmp_path, compression=CompressionConfig.from_flags("prune-l2", {"--exclude-layer": ("*",)}, 10), rails=GuardRails(max_overall_drop=100, max_class_drop=100)))
    assert result["finetune"]["steps"] == 10 and "rounds" not in result["finetune"]
