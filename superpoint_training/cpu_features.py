"""What the CPU can do, read from the operating system (never assumed).

Native bf16 (``avx512_bf16`` or AMX) makes bf16 convolutions several times faster than fp32 on a
CPU; without it PyTorch emulates bf16 and gains nothing. ``describe_cpu`` is what benchmarks and
weights cards print beside every CPU figure.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

NOTABLE_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty where that cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX-BF16)."""
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def describe_cpu() -> str:
    """One line: model, core count and the flags that matter here, e.g. for BENCHMARKS.md."""
    import os

    flags = cpu_flags()
    shown = [f for f in NOTABLE_FLAGS if f in flags]
    return f"{cpu_model()}, {os.cpu_count()} cores, flags: {' '.join(shown) or 'none of ' + '/'.join(NOTABLE_FLAGS)}"
