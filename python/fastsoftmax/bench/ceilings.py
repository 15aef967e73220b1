"""The machine's memory ceilings, measured with NumPy in the same process as the kernels.

Copy: ``np.copyto`` of a 256 MiB float32 array into an existing one, counting bytes read + written.
Read: the same array reduced by several NumPy calls, counting the bytes read. A NumPy reduction can
only understate the bus (on a fast memory system ``np.sum`` is bound by its additions, not by DRAM), so
each estimator is a lower bound of the true read ceiling and the fastest one is kept: with ``np.sum``
alone, kernels that read faster than it showed rooflines above 1.0.

Each ceiling splits the array into one slice per thread (the thread count fastsoftmax uses) and runs
one call per slice in a thread pool.
"""

from __future__ import annotations

import concurrent.futures
import gc
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from .timing import measure
from .workloads import Array

# Well above every last-level cache this runs on, so the ceilings are DRAM's.
CEILING_BYTES = 256 << 20
# Slices start on multiples of this many elements (16 KiB: whole pages); also the row width of the
# matrix-vector estimator, whose vector of ones stays in L1.
SLICE_ALIGN = 4096
CEILING_REPS = 7


def _dot_ones(s: Array) -> Any:
    return np.dot(s.reshape(-1, SLICE_ALIGN), np.ones(SLICE_ALIGN, dtype=s.dtype))


# name -> (how it is shown, the read of one slice). Integer max: no floating-point compare or NaN
# handling, so it is the cheapest per byte on most machines; dot: BLAS's matrix-vector product.
READ_ESTIMATORS: Dict[str, Tuple[str, Callable[[Array], Any]]] = {
    "sum": (".sum()", lambda s: s.sum()),
    "max": (".max()", lambda s: s.max()),
    "uint32 max": (".view(np.uint32).max()", lambda s: s.view(np.uint32).max()),
    "dot": (f"np.dot(rows of {SLICE_ALIGN}, ones)", _dot_ones),
}


@dataclass
class Ceilings:
    copy_bps: float  # bytes read + written per second
    read_bps: float  # bytes read per second: the best estimator's
    nbytes: int
    threads: int
    copy_ms: float
    read_ms: float
    read_best: str = "sum"  # name of the estimator that gave read_bps
    read_ms_by_estimator: Dict[str, float] = field(default_factory=dict)


def measure_ceilings(threads: int, reps: int = CEILING_REPS) -> Ceilings:
    """Copy and read bandwidth of a 256 MiB float32 array, one slice per thread in a thread pool."""
    n = CEILING_BYTES // 4
    src = np.full(n, 0.5, dtype=np.float32)  # the values do not matter; pages are touched
    dst = np.zeros_like(src)
    blocks = n // SLICE_ALIGN
    bounds = [(blocks * t) // threads * SLICE_ALIGN for t in range(threads + 1)]
    src_slices = [src[bounds[t] : bounds[t + 1]] for t in range(threads)]
    dst_slices = [dst[bounds[t] : bounds[t + 1]] for t in range(threads)]
    read_ms: Dict[str, float] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:

        def run(futs: List["concurrent.futures.Future[Any]"]) -> None:
            for f in futs:
                f.result()

        def copy(_i: int) -> None:
            run([pool.submit(np.copyto, d, s) for d, s in zip(dst_slices, src_slices)])

        tc = measure(copy, 1, reps, 0.0, reps)
        for name, (_, read_one) in READ_ESTIMATORS.items():

            def read(_i: int, f: Callable[[Array], Any] = read_one) -> None:
                run([pool.submit(f, s) for s in src_slices])

            read_ms[name] = measure(read, 1, reps, 0.0, reps).median_s * 1e3
    nbytes = src.nbytes
    del src, dst, src_slices, dst_slices
    gc.collect()
    best = min(read_ms, key=lambda k: read_ms[k])
    return Ceilings(
        copy_bps=2 * nbytes / tc.median_s,
        read_bps=nbytes / (read_ms[best] / 1e3),
        nbytes=nbytes,
        threads=threads,
        copy_ms=tc.median_s * 1e3,
        read_ms=read_ms[best],
        read_best=best,
        read_ms_by_estimator=read_ms,
    )
