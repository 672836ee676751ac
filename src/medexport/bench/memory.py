"""Host memory of this process: resident set now and its high-water mark (what a workstation must spare)."""
from __future__ import annotations

import resource
import sys


def rss_mib() -> float | None:
    """Resident memory of this process now (MiB, from /proc/self/statm); None where /proc is absent."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    """The most resident memory this process has held since it started (getrusage's ru_maxrss: KiB on Linux,
    bytes on macOS). It includes the interpreter and imported libraries, and never goes down. Linux updates the
    high-water mark lazily (per-thread counters are folded in batches), so it can trail the resident size read a
    moment before by a few pages: the larger of the two is returned."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak / 2**20 if sys.platform == "darwin" else peak / 2**10
    return max(peak, rss_mib() or 0.0)
