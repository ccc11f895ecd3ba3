"""What the host CPU is: its model, its flags, and how many cores this process may use."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty off Linux)."""
    out: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return out
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def cpu_model() -> str:
    """e.g. ``AMD EPYC 9R14 96-Core Processor``."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags the kernel reports (``avx2``, ``avx512_bf16``, ``amx_bf16``...)."""
    return frozenset(_cpuinfo().get("flags", "").split())


def vector_isa() -> str:
    """A short name of the best vector and matrix units: for tables and logs."""
    f = cpu_flags()
    parts = []
    if "avx512f" in f:
        parts.append("AVX-512")
    elif "avx2" in f:
        parts.append("AVX2")
    parts += [
        name
        for flag, name in (
            ("avx512_bf16", "AVX512-BF16"),
            ("avx512_vnni", "VNNI"),
            ("amx_bf16", "AMX-BF16"),
            ("amx_int8", "AMX-INT8"),
        )
        if flag in f
    ]
    return " ".join(parts) or platform.machine()


def usable_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads counted once)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for c in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
        try:
            cores.add(
                (
                    (topo / "physical_package_id").read_text().strip(),
                    (topo / "core_id").read_text().strip(),
                )
            )
        except OSError:
            cores.add(("", str(c)))
    return max(1, len(cores))


def resolve_threads(threads: int) -> int:
    """``threads`` if positive, else one per usable physical core."""
    return int(threads) if threads and threads > 0 else usable_cores()
