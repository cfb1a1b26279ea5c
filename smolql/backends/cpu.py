"""Facts about the host CPU that decide which precisions are worth offering."""

from __future__ import annotations

import os
import platform
from functools import cache


@cache
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_bf16() -> bool:
    """Native bf16 arithmetic (AVX-512 BF16 or AMX); without it bf16 is emulated and slow."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def has_vnni() -> bool:
    """int8 dot products that accumulate without saturating (AVX-512 VNNI, AVX-VNNI, AMX)."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


@cache
def machine_id() -> str:
    """Identifies the hardware a measurement was made on."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    return f"{platform.machine()}|{model or platform.processor()}|{os.cpu_count()} cpus"
