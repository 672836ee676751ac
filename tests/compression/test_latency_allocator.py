"""Latency mode: hardware-sized candidate ranks, the greedy choice, and the cached single-layer timings."""
import pytest
import torch
from torch import nn

from medexport.compression._layers import discover
from medexport.compression.decompositions import Tucker2
from medexport.compression.latency_allocator import _greedy, candidate_ranks, hardware_rank


def test_candidate_ranks_are_multiples_the_hardware_likes():
    assert [hardware_rank(x, 128) for x in (1, 17, 40, 128)] == [16, 32, 48, 128]
    assert [hardware_rank(x, 32) for x in (3, 9, 30)] == [8, 16, 32]
    net = nn.Sequential(nn.Conv2d(1, 128, 3, padding=1), nn.Conv2d(128, 96, 3, padding=1)).eval()
    layer = discover(net, (1, 1, 16, 16))[1]
    ranks = candidate_ranks(Tucker2(layer))
    assert ranks and all(r % 16 == 0 for pair in ranks for r in pair)
    assert all(Tucker2(layer).macs(pair) < layer.macs for pair in ranks)


def test_greedy_takes_the_least_damage_per_millisecond_until_the_saving_is_met():
    table = {"a": [((), 4.0), ((8,), 2.0), ((4,), 1.0)], "b": [((), 4.0), ((8,), 3.0)]}
    damage = {("a", ()): 0, ("a", (8,)): 0.2, ("a", (4,)): 0.9, ("b", ()): 0, ("b", (8,)): 0.05}
    chosen, saved = _greedy(table, damage, wanted=2.5)
    assert chosen == {"a": (8,), "b": (8,)} and saved == pytest.approx(3.0)  # 0.05/ms, then 0.1/ms, not 0.23/ms
    chosen, saved = _greedy(table, damage, wanted=10)  # out of reach: everything that saves time
    assert chosen == {"a": (4,), "b": (8,)} and saved == pytest.approx(4.0)


def test_layer_timings_are_cached_by_structure_and_shape(tmp_path, monkeypatch):
    from medexport.compression._latency import LayerTimer

    monkeypatch.setenv("MEDEXPORT_CACHE", str(tmp_path))
    conv, small = nn.Conv2d(32, 32, 3, padding=1), nn.Conv2d(32, 8, 3, padding=1)
    first = LayerTimer("onnxruntime", rounds=3, min_seconds=0.05)
    times = first.times([conv, small], (1, 32, 32, 32))
    first.save()
    assert first.measured == 2 and all(t > 0 for t in times)
    again = LayerTimer("onnxruntime")
    assert again.times([nn.Conv2d(32, 32, 3, padding=1), small], (1, 32, 32, 32)) == times
    assert again.measured == 0  # same structures and shape: read from the cache, nothing run
    again.times([conv], (1, 32, 16, 16))
    assert again.measured == 1


def test_latency_cache_is_per_machine_optional_and_merged_at_save(tmp_path, monkeypatch):
    """Keys carry CPU, backend version and thread count; a bad or unwritable cache warns; saves merge."""
    import json

    import onnxruntime

    from medexport.compression._latency import LayerTimer, cache_path

    monkeypatch.setenv("MEDEXPORT_CACHE", str(tmp_path))
    conv = nn.Conv2d(8, 8, 3)
    one, two = LayerTimer("onnxruntime", threads=1), LayerTimer("onnxruntime", threads=2)
    assert f"onnxruntime-{onnxruntime.__version__}" in one.key(conv, (1, 8, 8, 8))
    assert one.key(conv, (1, 8, 8, 8)) != two.key(conv, (1, 8, 8, 8))
    one.new, two.new = {"a": 1.0}, {"b": 2.0}  # two runs that measured different layers
    one.save()
    two.save()
    assert json.loads(cache_path().read_text()) == {"a": 1.0, "b": 2.0}

    for bad in ("{not json", "[1, 2]"):
        cache_path().write_text(bad)
        with pytest.warns(UserWarning, match="layer latency cache"):
            assert LayerTimer("onnxruntime").cache == {}

    (tmp_path / "file").write_text("")
    monkeypatch.setenv("MEDEXPORT_CACHE", str(tmp_path / "file" / "sub"))  # a directory that cannot be made
    with pytest.warns(UserWarning, match="unreadable"):
        timer = LayerTimer("onnxruntime")
    timer.new = {"c": 3.0}
    with pytest.warns(UserWarning, match="could not write"):
        timer.save()


@pytest.mark.slow
def test_latency_mode_meets_a_loose_target_on_onnxruntime(tmp_path, monkeypatch):
    from medexport.compression import LowRankConfig, get_pass

    monkeypatch.setenv("MEDEXPORT_CACHE", str(tmp_path))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 2, 1)).eval()
    small, record = get_pass("tucker").apply(net, (1, 1, 64, 64), LowRankConfig(latency=0.8, backend="onnxruntime"))
    assert record.layers and record.ratio > 1.3
    assert all(r % 16 == 0 for layer in record.layers for r in layer.ranks)
