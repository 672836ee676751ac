"""The machine-wide benchmark lock: benchmarks that time things take it, so that no two latency measurements of
ours overlap on a shared machine (other people's jobs still can: each benchmark prints the load)."""
from __future__ import annotations

import contextlib
import fcntl


@contextlib.contextmanager
def bench_lock(path: str = "/tmp/bench.lock"):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
