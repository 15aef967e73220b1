"""What the run was made on: CPU, cores, memory, last-level cache, versions, load."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from typing import Any, Dict, List

import numpy as np

# Assumed when sysfs does not say (a common server LLC); only decides whether inputs rotate.
DEFAULT_LLC_BYTES = 32 << 20


def llc_bytes() -> int:
    """Size of the last-level cache (Linux sysfs), 32 MiB when unknown."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for d in os.listdir(base):
            try:
                with open(os.path.join(base, d, "size")) as fh:
                    s = fh.read().strip()
                mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
                v = int(s[:-1] if s[-1:] in "KMG" else s) * mult
                best = max(best, v)
            except (OSError, ValueError):
                continue
    except OSError:
        pass
    return best or DEFAULT_LLC_BYTES


def load_average() -> str:
    try:
        return "load average %.2f %.2f %.2f (1/5/15 min)" % os.getloadavg()
    except (AttributeError, OSError):
        return "load average unknown"


def _cpu_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def _memory() -> str:
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
        return f", {kb / (1 << 20):.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        return ""


def machine_lines(fs: Any, threads: int, peer_versions: Dict[str, str]) -> List[str]:
    """The header lines: date, command, machine, versions."""
    try:
        avail = len(os.sched_getaffinity(0))
    except AttributeError:
        avail = os.cpu_count() or 1
    simd = "?"
    try:
        simd = fs.simd_backend()
    except Exception:  # noqa: BLE001 -- an old build without it still benchmarks
        pass
    peers = ", ".join(f"{k} {v}" for k, v in peer_versions.items())
    return [
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"command: python -m fastsoftmax.bench {' '.join(sys.argv[1:])}".rstrip(),
        f"machine: {_cpu_name()}, {avail} cores available (of {os.cpu_count()}){_memory()}, "
        f"LLC {llc_bytes() >> 20} MiB, {platform.system()} {platform.machine()}; at start: {load_average()}",
        f"fastsoftmax {getattr(fs, '__version__', '?')}, SIMD backend {simd}, {threads} threads; "
        f"Python {platform.python_version()}, NumPy {np.__version__}" + (f"; {peers}" if peers else ""),
    ]
