"""Latency mode: hardware-sized candidate ranks, the greedy choice, and the cached single-layer timings."""
import pytest
import torch
from torch import nn

from medexport.compression._layers import discover
from medexport.compression.lowrank.decompositions import Tucker2
from medexport.compression.lowrank.latency_allocator import Row, _path, candidate_ranks, hardware_rank


def test_candidate_ranks_are_multiples_the_hardware_likes():
    assert [hardware_rank(x, 128) for x in (1, 17, 40, 128)] == [16, 32, 48, 128]
    assert [hardware_rank(x, 32) for x in (3, 9, 30)] == [8, 16, 32]
    net = nn.Sequential(nn.Conv2d(1, 128, 3, padding=1), nn.Conv2d(128, 96, 3, padding=1)).eval()
    layer = discover(net, (1, 1, 16, 16))[1]
    ranks = candidate_ranks(Tucker2(layer))
    assert ranks and all(r % 16 == 0 for pair in ranks for r in pair)
    assert all(Tucker2(layer).macs(pair) < layer.macs for pair in ranks)


def test_tucker_candidates_include_one_sided_chains():
    net = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.ConvTranspose2d(64, 32, 3, stride=2)).eval()
    layer = discover(net, (1, 1, 16, 16))[1]
    ranks = candidate_ranks(Tucker2(layer))
    assert (32, 16) in ranks and (8, 64) in ranks  # r_out = 32 channels: 1x1 (64 -> 16), then the core only


def _rows(*rows):
    return [Row((), 0.0, 0.0)] + [Row(*r) for r in rows]


def test_path_takes_least_damage_per_saving_while_predicted_realized_over_ideal_holds():
    table = {"a": _rows(((8,), 0.2, 0.2), ((4,), 0.3, 0.5)), "b": _rows(((8,), 0.1, 0.05))}
    damage = {("a", ()): 0, ("a", (8,)): 0.2, ("a", (4,)): 0.3, ("b", ()): 0, ("b", (8,)): 0.05}
    path = _path(table, damage, payoff=0.85, scale=1.0)
    # 0.5 damage per saved fraction for b, then 1.0 for a at 8; a at 4 would save 50 % of the MACs for 30 % of
    # the time: realized/ideal 0.5 / 0.6 < 0.85, never taken
    assert [choice for choice, _ in path] == [{"b": (8,)}, {"a": (8,), "b": (8,)}]
    assert path[-1][1] == pytest.approx(0.3)
    assert [c for c, _ in _path(table, damage, payoff=0.0, scale=1.0)][-1] == {"a": (4,), "b": (8,)}
    # savings scaled down (they were not additive): a at 8 now costs more MACs than the time it saves allows
    assert [c for c, _ in _path(table, damage, payoff=0.85, scale=0.3)] == [{"b": (8,)}]


def test_timer_compiles_once_and_times_side_by_side():
    from medexport.compression._latency import Timer, compare

    big, small = nn.Conv2d(64, 64, 3, padding=1).eval(), nn.Conv2d(64, 2, 3, padding=1).eval()  # 32x the MACs
    with Timer("onnxruntime", (1, 64, 64, 64), rounds=5, min_seconds=0.05) as timer:
        handles = [timer.open(big), timer.open(small)]
        first = timer.time(handles, quantile=10)
        assert first[1] < first[0]
        assert len(timer.time(handles[:1], quantile=20)) == 1  # the same compiled model, timed again
    assert timer.runners == {}
    assert len(compare([big, small], (1, 64, 16, 16), "onnxruntime", rounds=3, min_seconds=0.01)) == 2


def test_savings_are_cached_per_model_structure_and_swap(tmp_path, monkeypatch):
    from medexport.compression._latency import SavingsCache

    monkeypatch.setenv("MEDEXPORT_CACHE", str(tmp_path))
    net = nn.Sequential(nn.Conv2d(1, 32, 3), nn.Conv2d(32, 32, 3)).eval()
    chain = nn.Sequential(nn.Conv2d(32, 8, 3), nn.Conv2d(8, 32, 1))
    first = SavingsCache("onnxruntime", None, net, (1, 1, 32, 32))
    first.put("1", chain, 0.25)
    first.save()
    again = SavingsCache("onnxruntime", None, nn.Sequential(nn.Conv2d(1, 32, 3), nn.Conv2d(32, 32, 3)), (1, 1, 32, 32))
    assert again.get("1", nn.Sequential(nn.Conv2d(32, 8, 3), nn.Conv2d(8, 32, 1))) == 0.25  # weights do not matter
    assert again.get("1", nn.Sequential(nn.Conv2d(32, 16, 3), nn.Conv2d(16, 32, 1))) is None
    assert SavingsCache("onnxruntime", None, net, (1, 1, 16, 16)).get("1", chain) is None
    assert SavingsCache("onnxruntime", 7, net, (1, 1, 32, 32)).get("1", chain) is None  # other thread count


def test_savings_cache_is_per_machine_optional_and_merged_at_save(tmp_path, monkeypatch):
    """Keys carry CPU, backend version and thread count; a bad or unwritable cache warns; saves merge."""
    import json

    import onnxruntime

    from medexport.compression._latency import SavingsCache, cache_path

    monkeypatch.setenv("MEDEXPORT_CACHE", str(tmp_path))
    net = nn.Sequential(nn.Conv2d(8, 8, 3))
    one, two = SavingsCache("onnxruntime", 1, net, (1, 8, 8, 8)), SavingsCache("onnxruntime", 2, net, (1, 8, 8, 8))
    assert f"onnxruntime-{onnxruntime.__version__}" in one.prefix and one.prefix != two.prefix
    one.new, two.new = {"a": 1.0}, {"b": 2.0}  # two runs that measured different swaps
    one.save()
    two.save()
    assert json.loads(cache_path().read_text()) == {"a": 1.0, "b": 2.0}

    for bad in ("{not json", "[1, 2]"):
        cache_path().write_text(bad)
        with pytest.warns(UserWarning, match="layer latency cache"):
            assert SavingsCache("onnxruntime", 1, net, (1, 8, 8, 8)).cache == {}

    (tmp_path / "file").write_text("")
    monkeypatch.setenv("MEDEXPORT_CACHE", str(tmp_path / "file" / "sub"))  # a directory that cannot be made
    with pytest.warns(UserWarning, match="unreadable"):
        cache = SavingsCache("onnxruntime", 1, net, (1, 8, 8, 8))
    cache.new = {"c": 3.0}
    with pytest.warns(UserWarning, match="could not write"):
        cache.save()


@pytest.mark.slow
def test_latency_mode_meets_a_loose_target_on_onnxruntime(tmp_path, monkeypatch):
    from medexport.compression import LowRankConfig, get_pass

    monkeypatch.setenv("MEDEXPORT_CACHE", str(tmp_path))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 2, 1)).eval()
    config = LowRankConfig(latency=0.85, backend="onnxruntime", payoff=0.7)  # loose: the development box is shared
    small, record = get_pass("tucker").apply(net, (1, 1, 64, 64), config)
    assert record.layers and record.ratio > 1.0  # realized can beat ideal: the latency, not the MACs, is asked for
    assert all(r % 16 == 0 for layer in record.layers for r in layer.ranks)
