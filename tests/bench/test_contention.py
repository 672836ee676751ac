"""Contention: client processes sharing one CPU slow each other down, and the result says by how much."""
import pytest

from medexport.bench.contention import run_clients
from medexport.bench.latency import WarmupRule
from medexport.errors import BackendUnavailableError, InputError
from medexport.zoo.samples import real_inputs

RULE = WarmupRule(window=5, cv=0.5, max_calls=40)


@pytest.mark.slow
def test_two_clients_have_a_higher_p99_than_one(unet2d_onnx):
    """Each client asks for every core (2 threads here), as an application left to its defaults does: two of
    them oversubscribe the CPU. Measured alternately 1, 2, 1, 2 so that load from elsewhere hits both."""
    batch = real_inputs((1, 1, 64, 64), 1)
    threads = 2
    runs = {1: [], 2: []}
    for n in (1, 2, 1, 2):
        runs[n].append(run_clients(unet2d_onnx, "onnxruntime", clients=n, batch=batch, seconds=2.0,
                                   threads=threads, warmup=RULE))
    for n, results in runs.items():
        for r in results:
            assert r["n_clients"] == n and len(r["clients"]) == n
            assert r["pooled"]["calls"] == sum(c["calls"] for c in r["clients"])
    p99 = {n: min(r["pooled"]["p99_ms"] for r in results) for n, results in runs.items()}
    calls = {n: max(c["calls"] for r in results for c in r["clients"]) for n, results in runs.items()}
    # the median hardly moves (ONNX Runtime's threads spin, most calls still find a free core): the tail does
    assert p99[2] > p99[1] and calls[2] < calls[1]


def test_background_load_and_a_failing_client(tmp_path, unet2d_onnx):
    batch = real_inputs((1, 1, 64, 64), 1)
    result = run_clients(unet2d_onnx, "onnxruntime", clients=1, batch=batch, seconds=0.5, threads=1, warmup=RULE,
                         background_load=1)
    assert result["background_load"] == 1 and result["clients"][0]["calls"] > 0
    assert result["clients"][0]["peak_rss_mib"] > 0 and result["throughput_per_s"] > 0
    with pytest.raises(BackendUnavailableError, match="could not start: ModelLoadError"):
        run_clients(tmp_path / "missing.onnx", "onnxruntime", clients=2, batch=batch, seconds=0.5, warmup=RULE)
    with pytest.raises(InputError, match="clients >= 1"):
        run_clients(unet2d_onnx, "onnxruntime", clients=0, batch=batch, seconds=1)
