"""Running one row workload: every implementation on every operation, checked and timed."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .ceilings import Ceilings
from .machine import llc_bytes
from .peers import Impl, Unsupported
from .timing import measure
from .workloads import OP_CEILING, Array, Workload, bytes_moved, make_inputs

# Upper bound on timed calls of one row (S4 calls take about a microsecond).
MAX_REPS = 20000
# Rest between two implementations, so one library's spinning worker threads (OpenMP, XLA) do not
# steal the cores from the next one on a small machine.
REST_BETWEEN_IMPLS_S = 0.05
# Rows of the result compared between implementations, and the check's tolerances.
CHECK_ROWS = 4
# itemsize -> relative tolerance: float64, float32, and the half types (float16 has 11 bits).
RTOL_BY_ITEMSIZE = {8: 1e-9, 4: 1e-3, 2: 1e-2}
MAX_ERROR_CHARS = 60


@dataclass
class Row:
    workload: str
    op: str
    impl: str
    ms: Optional[float] = None
    reps: int = 0
    elem_per_s: Optional[float] = None
    bytes_per_s: Optional[float] = None
    roofline: Optional[float] = None
    check: str = ""
    error: Optional[str] = None  # why there is no timing


@dataclass
class WorkloadResult:
    wid: str
    n: int
    c: int
    dtype: str
    desc: str
    rotated: bool
    rows: List[Row] = field(default_factory=list)

    def get(self, op: str, impl: str) -> Optional[Row]:
        for r in self.rows:
            if r.op == op and r.impl == impl:
                return r
        return None

    def timed(self, op: str, impl: str) -> Optional[Row]:
        """The row if it has a timing."""
        r = self.get(op, impl)
        return r if r is not None and r.ms is not None else None


def _to_numpy(a: Any) -> Array:
    if hasattr(a, "detach"):  # torch
        a = a.detach().numpy()
    return np.array(a, dtype=np.float64, copy=True)  # never a view of an out= buffer


def summarize(result: Any, rows: int = CHECK_ROWS) -> Array:
    """A small float64 fingerprint of a result: the loss and/or the first rows."""
    if isinstance(result, tuple):
        loss, grad = result
        return np.concatenate([_to_numpy(loss).ravel(), _to_numpy(grad[:rows]).ravel()])
    a = _to_numpy(result)
    return a.ravel() if a.ndim == 0 else a[:rows].ravel()


def agrees(a: Array, ref: Array, dtype: np.dtype[Any]) -> bool:
    if a.shape != ref.shape:
        return False
    rtol = RTOL_BY_ITEMSIZE.get(dtype.itemsize, RTOL_BY_ITEMSIZE[4])
    scale = float(np.nanmax(np.abs(ref))) if ref.size and np.isfinite(ref).any() else 1.0
    return bool(np.allclose(a, ref, rtol=rtol, atol=rtol * 1e-3 * max(scale, 1e-30), equal_nan=True))


def short_error(e: BaseException) -> str:
    if isinstance(e, MemoryError):
        return "out of memory"
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    msg = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return msg if len(msg) <= MAX_ERROR_CHARS else msg[: MAX_ERROR_CHARS - 3] + "..."


def _time_row(
    row: Row,
    call: Callable[[int], Any],
    n_inputs: int,
    min_reps: int,
    budget_s: float,
    nbytes: int,
    elements: int,
    ceiling_bps: float,
) -> None:
    t = measure(call, n_inputs, min_reps, budget_s, MAX_REPS)
    row.ms = t.median_s * 1e3
    row.reps = t.reps
    row.elem_per_s = elements / t.median_s
    row.bytes_per_s = nbytes / t.median_s
    row.roofline = row.bytes_per_s / ceiling_bps


def run_workload(
    wid: str,
    spec: Workload,
    ops: Sequence[str],
    impls: List[Impl],
    ceilings: Ceilings,
    min_reps: int,
    budget_s: float,
    log: Callable[[str], None],
) -> WorkloadResult:
    """Each implementation's answer on input 0 is compared with the first one's (fastsoftmax), then
    timed; a failing peer becomes a row with its error, never a crash."""
    n, c, dtype_name, desc = spec
    dtype = np.dtype(dtype_name)
    rotated = n * c * dtype.itemsize <= llc_bytes()
    n_inputs = 2 if rotated else 1
    res = WorkloadResult(wid, n, c, dtype_name, desc, rotated)
    try:
        xs, ys = make_inputs(spec, n_inputs)
    except MemoryError:
        for op in ops:
            for name, _ in impls:
                res.rows.append(Row(wid, op, name, error="out of memory (inputs)"))
        return res

    refs: Dict[str, Array] = {}
    # Implementation-major order: each library runs all its operations back to back, then rests.
    for name, factory in impls:
        gc.collect()
        time.sleep(REST_BETWEEN_IMPLS_S)
        for op in ops:
            nbytes = bytes_moved(op, n, c, dtype.itemsize)
            ceiling = ceilings.copy_bps if OP_CEILING[op] == "copy" else ceilings.read_bps
            row = Row(wid, op, name)
            res.rows.append(row)
            if isinstance(factory, BaseException):  # import failed
                row.error = short_error(factory)
                continue
            log(f"  {wid} {op:<24} {name}")
            call = None
            try:
                call = factory(op, xs, ys)
                fp = summarize(call(0))
                if op not in refs:
                    refs[op] = fp
                    row.check = "ref"
                else:
                    row.check = "ok" if agrees(fp, refs[op], dtype) else "DIFFERS"
                _time_row(row, call, n_inputs, min_reps, budget_s, nbytes, n * c, ceiling)
            except Unsupported:
                row.error = "—"
            except BaseException as e:  # noqa: BLE001 -- a peer's failure is reported, never a crash
                if isinstance(e, KeyboardInterrupt):
                    raise
                row.error = short_error(e)
            finally:
                del call
    order = {op: k for k, op in enumerate(ops)}
    res.rows.sort(key=lambda r: order[r.op])  # stable: keeps the implementation order within an op
    for _, factory in impls:
        release = getattr(factory, "release", None)
        if release is not None:
            release()
    del xs, ys
    gc.collect()
    return res
