"""One line on where a benchmark's timings were taken, printed beside them: the CPU's instruction sets that
change OpenVINO's kernels (AVX2, AVX-512 VNNI, AMX) and the load average of the shared machine."""
from __future__ import annotations

import os
import re
from pathlib import Path


def machine() -> str:
    """``ISA: avx2, avx512_vnni; load average 3.5.``"""
    flags = set(re.findall(r"\b(avx512_vnni|avx2|amx\w*)\b", Path("/proc/cpuinfo").read_text()))
    return f"ISA: {', '.join(sorted(flags)) or 'none of avx2/avx512_vnni/amx'}; load average {os.getloadavg()[0]:.1f}."
