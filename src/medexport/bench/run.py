"""Benchmark a built artifact at one or more batch sizes on real images."""
from __future__ import annotations

from pathlib import Path

from medexport.errors import InputError
from medexport.runtimes import open_runner, resolve_target, target_for


def bench_artifact(path: Path, *, target: str | None, device: str | None, batches: list[int],
                   input_shape: str | None, iterations: int, warmup: int, threads: int | None) -> dict:
    """Latency per batch size plus the environment it was measured in."""
    from medexport.bench import busy_warning, environment, measure_latency
    from medexport.loading import parse_shape
    from medexport.zoo.samples import real_inputs

    target = resolve_target(target) if target else target_for(path)
    warning = busy_warning()
    with open_runner(path, target, device=device, threads=threads) as runner:
        dims = runner.input_shape
        if input_shape:
            given = parse_shape(input_shape)
            if len(given) != len(dims) or any(d is not None and d != g for d, g in zip(dims[1:], given[1:])):
                raise InputError(f"--input-shape {input_shape} does not match the artifact's input {dims}")
            dims = [None, *given[1:]]
        if any(d is None for d in dims[1:]):
            raise InputError(f"{path.name} has dynamic dimensions besides the batch ({dims}); pass --input-shape")
        results = []
        for batch in batches:
            if dims[0] is not None and dims[0] != batch:
                raise InputError(f"{path.name} has a fixed batch of {dims[0]}; cannot run batch {batch}")
            data = real_inputs((batch, *dims[1:]), batch)
            results.append(measure_latency(runner.infer, data, warmup=warmup, iterations=iterations).to_dict())
        devices = runner.devices()
    return {"artifact": path.name, "target": target, "devices": devices, "threads": threads,
            "latency": results, "warning": warning, "environment": environment()}
