"""Pruning to a latency: the knapsack, the per-layer latency tables and their cache, and the pass end to end."""
import itertools

import pytest
import torch
from torch import nn

from medexport.compression.pruning.knapsack import snap, solve
from medexport.errors import InputError


def _brute_force(options, budget):
    best = None
    for combo in itertools.product(*options.values()):
        cost, value = sum(c for _, c, _ in combo), sum(v for _, _, v in combo)
        if cost <= budget + 1e-12 and (best is None or value > best[0]):
            best = (value, {n: k for n, (k, _, _) in zip(options, combo)})
    return best


def _ratio_greedy(options, budget):
    """HALP-style greedy: from the widest, take the next narrower option with least value lost per cost saved."""
    at = {n: 0 for n in options}
    ordered = {n: sorted(o, key=lambda x: -x[0]) for n, o in options.items()}
    while sum(ordered[n][i][1] for n, i in at.items()) > budget:
        steps = [((o[i][2] - o[i + 1][2]) / max(o[i][1] - o[i + 1][1], 1e-9), n) for n, i in at.items()
                 for o in [ordered[n]] if i + 1 < len(o)]
        at[min(steps)[1]] += 1
    return {n: ordered[n][i][0] for n, i in at.items()}


def test_knapsack_finds_the_known_optimum_where_the_ratio_greedy_does_not():
    # "a" is a staircase: 16 -> 12 channels buys almost no time, 16 -> 8 buys half of it
    options = {"a": [(16, 10.0, 1.0), (12, 9.9, 0.9), (8, 5.0, 0.8)], "b": [(16, 10.0, 1.0), (8, 7.0, 0.6)]}
    assert solve(options, budget=15.0) == {"a": 8, "b": 16} == _brute_force(options, 15.0)[1]  # value 1.8
    assert _ratio_greedy(options, 15.0) == {"a": 8, "b": 8}  # value 1.4: it narrowed b first, then could not undo


def test_knapsack_respects_the_budget_and_matches_brute_force_on_random_tables():
    rng = torch.Generator().manual_seed(0)
    for trial in range(30):
        options = {}
        for g in range(4):
            costs = sorted(torch.rand(4, generator=rng).tolist())
            values = sorted(torch.rand(4, generator=rng).tolist())
            options[f"g{g}"] = [(8 * (i + 1), c, v) for i, (c, v) in enumerate(zip(costs, values))]
        budget = sum(o[0][1] for o in options.values()) + float(torch.rand(1, generator=rng)) * 1.5
        choice = solve(options, budget, bins=4000)
        cost = sum(next(c for k, c, _ in options[n] if k == kept) for n, kept in choice.items())
        value = sum(next(v for k, _, v in options[n] if k == kept) for n, kept in choice.items())
        assert cost <= budget + 1e-9
        assert value >= _brute_force(options, budget)[0] - 1e-3  # exact up to the cost grid


def test_knapsack_refuses_an_unreachable_budget_and_snap_drops_flat_steps():
    with pytest.raises(InputError, match="out of reach"):
        solve({"a": [(8, 2.0, 1.0), (16, 3.0, 2.0)]}, budget=1.0)
    stairs = [(16, 10.0, 4), (12, 9.99, 3), (8, 6.0, 2), (4, 5.999, 1)]
    assert [k for k, _, _ in snap(stairs, step=0.1)] == [16, 8]


def test_table_predicts_from_the_product_model():
    from medexport.compression.pruning.latency_table import LatencyTable, LayerCost

    layer = LayerCost("conv", (), 32, 64, out_group="b", in_groups={"a": 32},
                      rows={8: 0.25, 16: 0.5, 32: 1.0}, cols={16: 0.25, 32: 0.5, 64: 1.0})
    table = LatencyTable([layer], whole=2.0, channels={"a": 32, "b": 64})
    assert table.predict({}) == 1.0
    assert table.predict({"a": 16}) == pytest.approx(0.75)  # the conv takes half as long: 2.0 - 0.5
    assert table.predict({"a": 16, "b": 32}) == pytest.approx(0.625)  # a quarter: 2.0 - 0.75



def test_table_fit_recovers_a_linear_model_of_time_and_macs_and_falls_back_when_macs_would_speed_it_up():
    from medexport.compression.pruning.latency_table import LatencyTable, LayerCost

    layers = [LayerCost("c1", (), 32, 64, out_group="a", macs=1000, rows={8: 0.3, 16: 0.5, 32: 1.0},
                        cols={16: 0.2, 32: 0.6, 64: 1.0}),
              LayerCost("c2", (), 64, 16, in_groups={"a": 64}, macs=3000, rows={16: 0.4, 32: 0.45, 64: 1.0})]
    table = LatencyTable(layers, whole=4.0, channels={"a": 64})
    widths = [{"a": k} for k in (16, 24, 32, 40, 48, 56)]
    truth = (1.0 - 0.7 * table.share({}) - 0.3, 0.7, 0.3)  # the original ({}) at 1.0

    def timed(w):
        return truth[0] + truth[1] * table.share(w) + truth[2] * table.macs(w)

    table.fit([(w, timed(w)) for w in widths[:1]])
    assert table.coefficients[2] == 0.0  # two points (with the original): the layers' time alone
    table.fit([(w, timed(w)) for w in widths[1:]])
    assert table.coefficients == pytest.approx(truth, abs=1e-9) and len(table.points) == 6
    assert table.predict({"a": 20}) == pytest.approx(timed({"a": 20}))
    table.fit([({"a": 44}, 0.6 * timed({"a": 44}))])  # a timing spoilt by a burst of load: left out
    assert table.outliers == 1 and table.coefficients == pytest.approx(truth, abs=1e-9)
    backwards = LatencyTable(layers, whole=4.0, channels={"a": 64})
    backwards.fit([(w, 1.0 + table.share(w) - table.share({}) - 0.5 * (table.macs(w) - 1)) for w in widths])
    assert backwards.coefficients[2] == 0.0 and backwards.coefficients[1] > 0  # fewer MACs never cost time


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 2, 1)).eval()


def test_latency_tables_are_cached_per_machine_and_remeasured_when_it_changes(tmp_path, monkeypatch):
    import importlib

    from medexport.compression.pruning.dependency import analyze
    from medexport.compression.pruning.latency_table import measure
    from medexport.graph import capture

    from medexport.compression.pruning import latency_table

    monkeypatch.setenv("MEDEXPORT_CACHE", str(tmp_path))
    monkeypatch.setattr(latency_table, "ROUNDS", 3)  # what is cached is asserted here, not how well it is timed
    monkeypatch.setattr(latency_table, "MIN_SECONDS", 0.01)
    model, shape = _tiny(), (1, 1, 16, 16)
    graph = analyze(capture(model, shape), model)
    groups = [g for g in graph.groups if not g.locked]
    first = measure(model, shape, graph, groups, "onnxruntime", threads=1)
    assert first.measured > 0 and {layer.name for layer in first.layers} == {"0", "2", "4"}
    assert sorted(first.layers[0].cols) == [4, 8, 12, 16]  # model.0 narrows its outputs only
    again = measure(model, shape, graph, groups, "onnxruntime", threads=1)
    assert again.measured == 0  # every layer from the cache
    assert [layer.cols for layer in again.layers] == [layer.cols for layer in first.layers]
    environment = importlib.import_module("medexport.bench.environment")
    monkeypatch.setattr(environment, "isa_flags", lambda: ["avx2"])  # same CPU name, no AVX-512: another machine
    assert measure(model, shape, graph, groups, "onnxruntime", threads=1).measured == first.measured
    monkeypatch.setattr(environment, "cpu_model", lambda: "another CPU")
    assert measure(model, shape, graph, groups, "onnxruntime", threads=1).measured == first.measured


def test_latency_options_are_one_rule():
    from medexport.compression import get_pass
    from medexport.pipeline.config import CompressionConfig

    config = get_pass("prune-l2").configure({"latency": 0.5}, backend="onnxruntime")
    assert config.latency == 0.5 and config.backend == "onnxruntime" and "ratio" not in config.to_dict()
    with pytest.raises(InputError, match="competing"):
        get_pass("prune-l1").configure({"latency": 0.5, "ratio": 0.3}, backend="openvino")
    with pytest.raises(InputError, match="--latency-backend is not used by merge"):
        CompressionConfig.from_flags("merge", {"--latency-backend": "openvino"}).configured("openvino")
    chained = CompressionConfig.from_flags("svd,prune-l2", {"--latency": 0.5}).configured("onnxruntime")
    assert [(m, c.latency, c.backend) for m, c in chained] == [("svd", 0.5, "onnxruntime"),
                                                               ("prune-l2", 0.5, "onnxruntime")]
    assert "latency" not in get_pass("prune-bn").configure({}, backend="openvino").to_dict()


@pytest.mark.slow
@pytest.mark.openvino
def test_latency_mode_result_is_within_its_budget_when_measured(tmp_path, monkeypatch):
    from monai.networks.nets import UNet

    from medexport.compression import get_pass
    from medexport.compression._latency import compare
    from medexport.compression.pruning import PruneConfig
    from medexport.zoo.samples import real_inputs

    pytest.importorskip("openvino")
    monkeypatch.setenv("MEDEXPORT_CACHE", str(tmp_path))
    torch.manual_seed(0)
    net = UNet(spatial_dims=2, in_channels=1, out_channels=3, channels=(32, 64, 128), strides=(2, 2),
               num_res_units=0).eval()
    shape = (1, 1, 96, 96)
    images = real_inputs(shape, n=8)
    small, record = get_pass("prune-l2").apply(net, shape, PruneConfig(latency=0.7, threads=1, steps=2,
                                                                       calibration=images))
    latency = record.latency
    assert latency["measured"] <= 0.7 * 1.05 and latency["staircase"] and latency["table_seconds"] > 0
    before, after = compare([net, small], shape, "openvino", threads=1, rounds=15)
    assert after / before <= 0.7 * 1.15  # timed again, independently (the shared box's noise allowed for)


def test_a_chain_spends_one_latency_budget(monkeypatch):
    """svd then prune-l2 at --latency 0.5: after the low-rank pass measured 0.8x, pruning is asked for 0.5 / 0.8."""
    import dataclasses

    from medexport.compression import _latency, _registry
    from medexport.compression.base import chain

    @dataclasses.dataclass(frozen=True)
    class Config:
        latency: float | None
        backend: str = "openvino"
        threads: int | None = None

    asked = []

    class Pass:
        def apply(self, model, shape, config):
            asked.append(config.latency)
            return model, None

    monkeypatch.setattr(_registry, "get_pass", lambda name: Pass())
    monkeypatch.setattr(_latency, "compare", lambda models, *a, **k: [10.0, 8.0])
    chain(nn.Identity(), (1, 1, 8, 8), [("svd", Config(0.5)), ("prune-l2", Config(0.5))])
    assert asked == [0.5, pytest.approx(0.625)]
    asked.clear()
    monkeypatch.setattr(_latency, "compare", lambda models, *a, **k: [10.0, 4.0])  # the first pass overshot
    chain(nn.Identity(), (1, 1, 8, 8), [("svd", Config(0.5)), ("prune-l2", Config(0.5))])
    assert asked == [0.5, 1.0]  # nothing left to spend: pruning keeps every channel


def test_sensitivity_is_zero_for_the_same_output_and_grows_as_a_group_narrows():
    """The knapsack's value: class-balanced KL of a narrowed copy's output against the model's, on real slices."""
    import copy

    from medexport.compression import get_pass
    from medexport.compression.pruning import PruneConfig
    from medexport.compression.pruning.sensitivity import Sensitivity
    from medexport.zoo import get_model

    ref = get_model("brain-tissue-unet2d")
    model, shape = ref.build(), tuple(ref.input_shape)
    distortion = Sensitivity(ref.calibration()).of(model)
    assert distortion(copy.deepcopy(model)) == pytest.approx(0.0, abs=1e-12)
    group = "model.1.submodule.1.submodule.0.conv"  # 128 channels at 1/8 resolution

    def narrowed(k):
        small = copy.deepcopy(model)
        get_pass("prune-l2").step(small, shape, PruneConfig(), {group: k})
        return distortion(small)

    values = [narrowed(k) for k in (96, 64, 32)]
    assert 0 < values[0] < values[1] < values[2]


def test_latency_mode_keeps_the_slowest_result_within_the_tolerance():
    from medexport.compression.pruning.schedule import _closest

    assert _closest([(0.44, "a"), (0.52, "b"), (0.49, "c")], limit=0.525)[1] == "b"  # closest under the limit
    assert _closest([(0.6, "a"), (0.58, "b")], limit=0.525)[1] == "b"  # none within: the fastest


@pytest.mark.parametrize("method", [
    "merge-medoid",
    pytest.param("prune-l1", marks=pytest.mark.slow), pytest.param("prune-bn", marks=pytest.mark.slow),
    pytest.param("prune-act", marks=pytest.mark.slow), pytest.param("merge", marks=pytest.mark.slow)])
def test_every_pruning_and_merging_pass_prunes_to_a_latency_on_onnx_runtime(tmp_path, monkeypatch, method):
    """The latency mode is the passes' shared schedule: each narrows a MONAI U-Net 3D toward its budget, timed on
    ONNX Runtime (prune-l2 on OpenVINO is the slow test above; timing kept short: what is asserted is that it runs
    and narrows, not how well the shared box times it)."""
    from monai.networks.nets import UNet

    from medexport.compression import get_pass
    from medexport.compression.pruning import PruneConfig, latency_mode, latency_table
    from medexport.zoo.samples import real_inputs

    monkeypatch.setenv("MEDEXPORT_CACHE", str(tmp_path))
    monkeypatch.setattr(latency_table, "ROUNDS", 3)
    monkeypatch.setattr(latency_table, "MIN_SECONDS", 0.01)
    monkeypatch.setattr(latency_mode, "TIMING_SECONDS", 0.05)
    monkeypatch.setattr(latency_mode, "MIXES", 3)
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32), strides=(2,), num_res_units=0,
               norm="batch").eval()
    shape = (1, 1, 16, 16, 16)
    config = PruneConfig(latency=0.6, threads=1, backend="onnxruntime", calibration=real_inputs(shape, n=4))
    small, record = get_pass(method).apply(net, shape, config)
    assert record.latency["backend"] == "onnxruntime" and record.latency["fit"]["models"] >= 4
    assert sum(record.latency["batchnorm"].values()) > 0  # every narrowed model judged had its statistics settled
    assert record.macs_after < record.macs_before and small(torch.zeros(shape)).shape == (1, 2, 16, 16, 16)
    with pytest.raises(InputError, match="calibration images"):
        get_pass(method).apply(net, shape, PruneConfig(latency=0.6, threads=1, backend="onnxruntime"))


@pytest.mark.parametrize("joint, chosen", [
    (lambda w: (64 - w["a"]) ** 2 + (64 - w["b"]) ** 2, "uniform"),  # narrowing one group far costs most jointly
    (lambda w: 0.01 * (w["a"] < 64) + (0.01 if w["b"] >= 48 else 0.5), "knapsack")])  # the additive model holds
def test_latency_mode_takes_the_widths_least_distorted_together(monkeypatch, joint, chosen):
    """The knapsack sums single-group distortions; the widths it picks, widths halfway to uniform and uniform widths
    at the same budget are applied together and judged against the original: the least distorted is taken.
    Table, distortion and graph are stand-ins (a latency linear in the widths; two groups of 64 channels)."""
    from types import SimpleNamespace

    from medexport.compression.pruning import PruneConfig
    from medexport.compression.pruning.latency_mode import LatencyPlanner

    planner = object.__new__(LatencyPlanner)
    planner.config = PruneConfig(latency=0.5)
    planner.original = {"a": 64, "b": 64}
    planner.table = SimpleNamespace(predict=lambda w: (w["a"] + w["b"]) / 128)
    planner.sensitivity = SimpleNamespace(of=lambda model: None)
    planner.reference = joint
    planner.narrow = lambda model, kept, graph: {**model, **kept}
    planner.judge = lambda model, distortion=None: joint(model)  # no BatchNorm in a stand-in
    planner.history = []
    graph = SimpleNamespace(groups=[SimpleNamespace(name=n, channels=64, members=[]) for n in "ab"])
    monkeypatch.setattr(planner, "_analyze", lambda model: graph)
    options = {"a": [(64, 0.0, 0.0), (16, -0.375, -0.01)],  # (kept, cost change, minus summed distortion)
               "b": [(64, 0.0, 0.0), (48, -0.125, -0.01), (32, -0.25, -0.5)]}
    monkeypatch.setattr(planner, "_options", lambda model, graph, name, current, distortion: options[name])

    kept = planner.targets({"a": 64, "b": 64}, 0.5, {})
    step = planner.history[-1]
    assert step["chose"] == chosen and kept == {"uniform": {"a": 32, "b": 32}, "knapsack": {"a": 16, "b": 48}}[chosen]
    assert step["joint"] == pytest.approx({"knapsack": joint({"a": 16, "b": 48}), "halfway": joint({"a": 24, "b": 40}),
                                           "uniform": joint({"a": 32, "b": 32})})
    assert step["predicted"] <= 0.5
