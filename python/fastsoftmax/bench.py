"""Benchmark program of fastsoftmax: ``python -m fastsoftmax.bench``.

Implements the measuring method of BENCHMARKS.md in one process run:

1. the machine's memory ceilings, measured with NumPy on a 256 MiB float32 array split into one slice
   per thread (``np.copyto`` for copy bandwidth, ``.sum()`` for read bandwidth), thread count equal to
   ``fastsoftmax.get_num_threads()``;
2. workloads S1-S5 and S1d x operations softmax, log_softmax, logsumexp, cross_entropy (loss, integer
   labels) and cross_entropy_with_grad (loss + gradient, integer labels), for fastsoftmax (preallocated
   ``out=`` and allocating) and its peers: the NumPy textbook formula, SciPy, PyTorch CPU and JAX CPU
   when importable;
3. the targets T1-T7 with PASS/FAIL.

Options: ``--quick`` (smaller shapes, fewer repeats, under a minute), ``--markdown`` (Markdown tables),
``--plot FILE.png`` (needs matplotlib), ``--threads N``, ``--only S1,S3``, ``--ops softmax,logsumexp``,
``--no-peers torch,jax``, ``--repeats N``.

This module is never imported by ``import fastsoftmax``; it only needs NumPy. SciPy, PyTorch, JAX and
matplotlib are optional: a missing or failing peer is reported in the table.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import gc
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

# --------------------------------------------------------------------------------------------------
# Workloads, operations, byte counts
# --------------------------------------------------------------------------------------------------

# id -> (rows, columns, dtype, what it stands for)
WORKLOADS: Dict[str, Tuple[int, int, str, str]] = {
    "S1": (2048, 32000, "float32", "a batch of LLM logits"),
    "S2": (32768, 1000, "float32", "ImageNet-sized classification"),
    "S3": (1_000_000, 10, "float32", "many tiny rows"),
    "S4": (64, 10, "float32", "one small call: overhead dominates"),
    "S5": (4, 1_048_576, "float32", "a few huge rows"),
    "S1d": (2048, 32000, "float64", "double precision"),
}

# --quick: smaller shapes with the same character (S4 is unchanged).
QUICK_WORKLOADS: Dict[str, Tuple[int, int, str, str]] = {
    "S1": (64, 32000, "float32", "a batch of LLM logits (quick: 64 rows)"),
    "S2": (2048, 1000, "float32", "ImageNet-sized classification (quick: 2048 rows)"),
    "S3": (50_000, 10, "float32", "many tiny rows (quick: 50k rows)"),
    "S4": (64, 10, "float32", "one small call: overhead dominates"),
    "S5": (4, 131_072, "float32", "a few huge rows (quick: 131,072 columns)"),
    "S1d": (64, 32000, "float64", "double precision (quick: 64 rows)"),
}

OPS: Tuple[str, ...] = (
    "softmax",
    "log_softmax",
    "logsumexp",
    "cross_entropy",
    "cross_entropy_with_grad",
)

LABEL_DTYPE = np.int64  # PyTorch's F.cross_entropy needs int64 class indices; used for every impl.
LABEL_BYTES = np.dtype(LABEL_DTYPE).itemsize

# op -> (ceiling it is compared with, formula printed in the legend)
OP_CEILING: Dict[str, str] = {
    "softmax": "copy",
    "log_softmax": "copy",
    "logsumexp": "read",
    "cross_entropy": "read",
    "cross_entropy_with_grad": "copy",
}
OP_BYTES_FORMULA: Dict[str, str] = {
    "softmax": "N*C*s (read x) + N*C*s (write y)",
    "log_softmax": "N*C*s (read x) + N*C*s (write y)",
    "logsumexp": "N*C*s (read x) + N*s (write one value per row)",
    "cross_entropy": "N*C*s (read logits) + 8*N (read int64 labels); the scalar loss is not counted",
    "cross_entropy_with_grad": "N*C*s (read logits) + 8*N (read int64 labels) + N*C*s (write grad)",
}


def bytes_moved(op: str, n: int, c: int, itemsize: int) -> int:
    """Bytes an ideal kernel must move: each input read once, each output written once."""
    nc = n * c * itemsize
    if op in ("softmax", "log_softmax"):
        return 2 * nc
    if op == "logsumexp":
        return nc + n * itemsize
    if op == "cross_entropy":
        return nc + n * LABEL_BYTES
    if op == "cross_entropy_with_grad":
        return 2 * nc + n * LABEL_BYTES
    raise ValueError(op)


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


@dataclass
class Timing:
    median_s: float
    reps: int


def measure(
    call: Callable[[int], Any],
    n_inputs: int,
    min_reps: int,
    budget_s: float,
    max_reps: int,
) -> Timing:
    """Warm up once (per input), then the median of at least ``min_reps`` timed calls.

    ``call(i)`` runs the operation on input ``i``; consecutive timed calls rotate over the inputs.
    More calls are taken (up to ``max_reps``) while they fit in ``budget_s``: short calls get many
    samples, long calls exactly ``min_reps``.
    """
    perf = time.perf_counter
    t0 = perf()
    for i in range(n_inputs):
        call(i)
    warm = (perf() - t0) / n_inputs
    if warm * min_reps > budget_s:
        reps = min_reps  # slow call: no second estimate, it costs as much as a sample
    else:
        t0 = perf()
        call(0)
        est = max(perf() - t0, 1e-9)
        reps = int(min(max_reps, max(min_reps, budget_s / est)))
    times = [0.0] * reps
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for k in range(reps):
            i = k % n_inputs
            t0 = perf()
            call(i)
            times[k] = perf() - t0
    finally:
        if gc_was_enabled:
            gc.enable()
    return Timing(statistics.median(times), reps)


# --------------------------------------------------------------------------------------------------
# Ceilings
# --------------------------------------------------------------------------------------------------


@dataclass
class Ceilings:
    copy_bps: float  # bytes read + written per second
    read_bps: float  # bytes read per second
    nbytes: int
    threads: int
    copy_ms: float
    read_ms: float


def measure_ceilings(threads: int, reps: int = 7) -> Ceilings:
    """256 MiB float32: one slice per thread, one np.copyto / .sum() per slice in a thread pool."""
    n = (256 << 20) // 4
    src = np.full(n, 0.5, dtype=np.float32)  # the values do not matter; pages are touched
    dst = np.zeros_like(src)
    bounds = [(n * t) // threads for t in range(threads + 1)]
    src_slices = [src[bounds[t] : bounds[t + 1]] for t in range(threads)]
    dst_slices = [dst[bounds[t] : bounds[t + 1]] for t in range(threads)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:

        def copy(_i: int) -> None:
            futs = [pool.submit(np.copyto, d, s) for d, s in zip(dst_slices, src_slices)]
            for f in futs:
                f.result()

        def read(_i: int) -> float:
            futs = [pool.submit(s.sum) for s in src_slices]
            return float(sum(f.result() for f in futs))

        tc = measure(copy, 1, reps, 0.0, reps)
        tr = measure(read, 1, reps, 0.0, reps)
    nbytes = src.nbytes
    del src, dst, src_slices, dst_slices
    gc.collect()
    return Ceilings(
        copy_bps=2 * nbytes / tc.median_s,
        read_bps=nbytes / tr.median_s,
        nbytes=nbytes,
        threads=threads,
        copy_ms=tc.median_s * 1e3,
        read_ms=tr.median_s * 1e3,
    )


# --------------------------------------------------------------------------------------------------
# Implementations. Each factory gets (op, xs, ys) -- lists of inputs to rotate over -- and returns
# call(i) -> result, where result is what the check compares: an array, a scalar, or (loss, grad).
# --------------------------------------------------------------------------------------------------

Call = Callable[[int], Any]


class Unsupported(Exception):
    """The peer has no such operation (shown as "—" and not as an error)."""


def fastsoftmax_impl(fs: Any, with_out: bool) -> Callable[[str, List[np.ndarray], List[np.ndarray]], Call]:
    def make(op: str, xs: List[np.ndarray], ys: List[np.ndarray]) -> Call:
        x0 = xs[0]
        if op in ("softmax", "log_softmax"):
            f = getattr(fs, op)
            if with_out:
                out = np.empty_like(x0)
                return lambda i: f(xs[i], out=out)
            return lambda i: f(xs[i])
        if op == "logsumexp":
            f = fs.logsumexp
            if with_out:
                out = np.empty(x0.shape[0], dtype=x0.dtype)
                return lambda i: f(xs[i], out=out)
            return lambda i: f(xs[i])
        if op == "cross_entropy":
            if with_out:
                raise Unsupported("no out=")
            f = fs.cross_entropy
            return lambda i: f(xs[i], ys[i])
        if op == "cross_entropy_with_grad":
            f = fs.cross_entropy_with_grad
            if with_out:
                out = np.empty_like(x0)
                return lambda i: f(xs[i], ys[i], out=out)
            return lambda i: f(xs[i], ys[i])
        raise Unsupported(op)

    return make


def numpy_impl(op: str, xs: List[np.ndarray], ys: List[np.ndarray]) -> Call:
    """The textbook stable formula."""

    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def log_softmax(x: np.ndarray) -> np.ndarray:
        s = x - x.max(axis=-1, keepdims=True)
        return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))

    def logsumexp(x: np.ndarray) -> np.ndarray:
        m = x.max(axis=-1, keepdims=True)
        return (np.log(np.exp(x - m).sum(axis=-1, keepdims=True)) + m)[:, 0]

    def cross_entropy(x: np.ndarray, y: np.ndarray) -> Any:
        picked = x[np.arange(x.shape[0]), y]
        return (logsumexp(x) - picked).mean()

    def cross_entropy_with_grad(x: np.ndarray, y: np.ndarray) -> Tuple[Any, np.ndarray]:
        n = x.shape[0]
        rows = np.arange(n)
        m = x.max(axis=-1, keepdims=True)
        e = np.exp(x - m)
        s = e.sum(axis=-1, keepdims=True)
        lse = (np.log(s) + m)[:, 0]
        loss = (lse - x[rows, y]).mean()
        g = e
        g /= s
        g[rows, y] -= 1
        g /= n
        return loss, g

    if op in ("softmax", "log_softmax", "logsumexp"):
        f1 = {"softmax": softmax, "log_softmax": log_softmax, "logsumexp": logsumexp}[op]
        return lambda i: f1(xs[i])
    f2 = {"cross_entropy": cross_entropy, "cross_entropy_with_grad": cross_entropy_with_grad}[op]
    return lambda i: f2(xs[i], ys[i])


def scipy_impl(op: str, xs: List[np.ndarray], ys: List[np.ndarray]) -> Call:
    import scipy.special as sp

    if op == "softmax":
        return lambda i: sp.softmax(xs[i], axis=-1)
    if op == "log_softmax":
        return lambda i: sp.log_softmax(xs[i], axis=-1)
    if op == "logsumexp":
        return lambda i: sp.logsumexp(xs[i], axis=-1)
    raise Unsupported("SciPy has no cross-entropy")


def torch_impl(threads: int) -> Callable[[str, List[np.ndarray], List[np.ndarray]], Call]:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)

    def make(op: str, xs: List[np.ndarray], ys: List[np.ndarray]) -> Call:
        txs = [torch.from_numpy(x) for x in xs]  # zero-copy views of the same arrays
        tys = [torch.from_numpy(y) for y in ys]
        if op == "cross_entropy_with_grad":
            leaves = [t.detach().requires_grad_(True) for t in txs]

            def fwd_bwd(i: int) -> Tuple[Any, Any]:
                xg = leaves[i]
                xg.grad = None
                loss = F.cross_entropy(xg, tys[i])
                loss.backward()
                return loss.detach(), xg.grad

            return fwd_bwd

        fn: Callable[[int], Any]
        if op == "softmax":
            fn = lambda i: torch.softmax(txs[i], -1)  # noqa: E731
        elif op == "log_softmax":
            fn = lambda i: torch.log_softmax(txs[i], -1)  # noqa: E731
        elif op == "logsumexp":
            fn = lambda i: torch.logsumexp(txs[i], -1)  # noqa: E731
        elif op == "cross_entropy":
            fn = lambda i: F.cross_entropy(txs[i], tys[i])  # noqa: E731
        else:
            raise Unsupported(op)

        def no_grad(i: int) -> Any:
            with torch.inference_mode():
                return fn(i)

        return no_grad

    return make


def jax_impl() -> Callable[[str, List[np.ndarray], List[np.ndarray]], Call]:
    import jax

    jax.config.update("jax_enable_x64", True)  # for S1d; float32 inputs stay float32
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp as jlse

    cpu = jax.devices("cpu")[0]

    def ce(x: Any, y: Any) -> Any:
        picked = jnp.take_along_axis(x, y[:, None], axis=-1)[:, 0]
        return jnp.mean(jlse(x, axis=-1) - picked)

    fns = {
        "softmax": jax.jit(lambda x: jax.nn.softmax(x, axis=-1)),
        "log_softmax": jax.jit(lambda x: jax.nn.log_softmax(x, axis=-1)),
        "logsumexp": jax.jit(lambda x: jlse(x, axis=-1)),
        "cross_entropy": jax.jit(ce),
        "cross_entropy_with_grad": jax.jit(jax.value_and_grad(ce)),
    }

    def make(op: str, xs: List[np.ndarray], ys: List[np.ndarray]) -> Call:
        f = fns[op]
        jxs = [jax.device_put(x, cpu) for x in xs]  # one copy, outside the timing
        jys = [jax.device_put(y, cpu) for y in ys]
        make.live.extend(jxs + jys)  # type: ignore[attr-defined]
        if op in ("cross_entropy", "cross_entropy_with_grad"):
            return lambda i: jax.block_until_ready(f(jxs[i], jys[i]))
        return lambda i: jax.block_until_ready(f(jxs[i]))

    def release() -> None:
        for a in make.live:  # type: ignore[attr-defined]
            try:
                a.delete()
            except Exception:
                pass
        make.live.clear()  # type: ignore[attr-defined]

    make.live = []  # type: ignore[attr-defined]
    make.release = release  # type: ignore[attr-defined]
    return make


# --------------------------------------------------------------------------------------------------
# Result check: each impl's answer on input 0 is compared with the first impl's (fastsoftmax).
# --------------------------------------------------------------------------------------------------


def _to_numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):  # torch
        a = a.detach().numpy()
    return np.array(a, dtype=np.float64, copy=True)  # never a view of an out= buffer


def summarize(result: Any, rows: int = 4) -> np.ndarray:
    """A small float64 fingerprint of a result: the loss and/or the first rows."""
    if isinstance(result, tuple):
        loss, grad = result
        return np.concatenate([_to_numpy(loss).ravel(), _to_numpy(grad[:rows]).ravel()])
    a = _to_numpy(result)
    return a.ravel() if a.ndim == 0 else a[:rows].ravel()


def agrees(a: np.ndarray, ref: np.ndarray, dtype: np.dtype) -> bool:
    if a.shape != ref.shape:
        return False
    rtol = 1e-3 if dtype == np.float32 else 1e-9
    scale = float(np.nanmax(np.abs(ref))) if ref.size and np.isfinite(ref).any() else 1.0
    return bool(np.allclose(a, ref, rtol=rtol, atol=rtol * 1e-3 * max(scale, 1e-30), equal_nan=True))


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------

FS_OUT = "fastsoftmax out="
FS_ALLOC = "fastsoftmax alloc"


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
    return best or (32 << 20)


def _short_error(e: BaseException) -> str:
    if isinstance(e, MemoryError):
        return "out of memory"
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    msg = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return msg if len(msg) <= 60 else msg[:57] + "..."


def run_workload(
    wid: str,
    spec: Tuple[int, int, str, str],
    ops: Sequence[str],
    impls: List[Tuple[str, Any]],
    ceilings: Ceilings,
    min_reps: int,
    budget_s: float,
    log: Callable[[str], None],
) -> WorkloadResult:
    n, c, dtype_name, desc = spec
    dtype = np.dtype(dtype_name)
    rng = np.random.default_rng(0)
    in_bytes = n * c * dtype.itemsize
    rotated = in_bytes <= llc_bytes()
    n_inputs = 2 if rotated else 1
    res = WorkloadResult(wid, n, c, dtype_name, desc, rotated)
    xs: List[np.ndarray] = []
    ys: List[np.ndarray] = []
    try:
        for _ in range(n_inputs):
            # logits of an LLM-like spread; labels uniform over the classes
            xs.append((rng.standard_normal((n, c), dtype=np.float32) * 3.0).astype(dtype, copy=False))
            ys.append(rng.integers(0, c, size=n, dtype=LABEL_DTYPE))
    except MemoryError:
        for op in ops:
            for name, _ in impls:
                res.rows.append(Row(wid, op, name, error="out of memory (inputs)"))
        return res

    max_reps = 20000
    refs: Dict[str, np.ndarray] = {}
    # Implementation-major order: each library runs all its operations back to back, then the process
    # rests a moment, so that one library's spinning worker threads (OpenMP, XLA) do not steal the
    # cores from the next one on a small machine.
    for name, factory in impls:
        gc.collect()
        time.sleep(0.05)
        for op in ops:
            nbytes = bytes_moved(op, n, c, dtype.itemsize)
            ceiling = ceilings.copy_bps if OP_CEILING[op] == "copy" else ceilings.read_bps
            row = Row(wid, op, name)
            res.rows.append(row)
            if isinstance(factory, BaseException):  # import failed
                row.error = _short_error(factory)
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
                t = measure(call, n_inputs, min_reps, budget_s, max_reps)
            except Unsupported:
                row.error = "—"
                continue
            except BaseException as e:  # noqa: BLE001 -- a peer's failure is reported, never a crash
                if isinstance(e, KeyboardInterrupt):
                    raise
                row.error = _short_error(e)
                continue
            finally:
                del call
            row.ms = t.median_s * 1e3
            row.reps = t.reps
            row.elem_per_s = n * c / t.median_s
            row.bytes_per_s = nbytes / t.median_s
            row.roofline = row.bytes_per_s / ceiling
    order = {op: k for k, op in enumerate(ops)}
    res.rows.sort(key=lambda r: order[r.op])  # stable: keeps the implementation order within an op
    for _, factory in impls:
        release = getattr(factory, "release", None)
        if release is not None:
            release()
    del xs, ys
    gc.collect()
    return res


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------


def fmt_ms(ms: float) -> str:
    """Milliseconds with four significant digits (0.009610 = 9.61 µs)."""
    return f"{ms:#.4g}".rstrip(".") if ms >= 1e-4 else f"{ms:.3e}"


def fmt_rate(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.2f} {unit}"
    return f"{v:.0f} "


class Table:
    def __init__(self, header: Sequence[str], align: str) -> None:
        self.header = list(header)
        self.align = align  # one of "l"/"r" per column
        self.rows: List[List[str]] = []

    def add(self, cells: Sequence[str]) -> None:
        self.rows.append(list(cells))

    def render(self, markdown: bool) -> str:
        if markdown:
            esc = [[c.replace("|", "\\|") for c in r] for r in [self.header] + self.rows]
            sep = ["---:" if a == "r" else "---" for a in self.align]
            lines = ["| " + " | ".join(esc[0]) + " |", "| " + " | ".join(sep) + " |"]
            lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
            return "\n".join(lines)
        widths = [max(len(r[i]) for r in [self.header] + self.rows) for i in range(len(self.header))]

        def line(r: Sequence[str]) -> str:
            cells = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, self.align)]
            return "  ".join(cells).rstrip()

        out = [line(self.header), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in self.rows]
        return "\n".join(out)


def fs_reference_row(res: WorkloadResult, op: str, which: str) -> Optional[Row]:
    """The fastsoftmax row a peer is compared with: ``which`` = "out" (preallocated, falling back to
    the allocating call for functions without out=) or "alloc"."""
    if which == "out":
        r = res.get(op, FS_OUT)
        if r is not None and r.ms is not None:
            return r
    r = res.get(op, FS_ALLOC)
    return r if r is not None and r.ms is not None else None


def workload_table(res: WorkloadResult) -> Table:
    t = Table(
        ["op", "impl", "median ms", "elem/s", "GB/s", "roofline", "fastsoftmax speed-up (out= / alloc)", "check"],
        "llrrrrrl",
    )
    for r in res.rows:
        if r.ms is None:
            if r.error == "—" or r.error is None:
                continue  # operation the peer does not have, or a row that was never run
            t.add([r.op, r.impl, "—", "—", "—", "—", r.error, ""])
            continue
        speed = ""
        if not r.impl.startswith("fastsoftmax"):
            ro, ra = fs_reference_row(res, r.op, "out"), fs_reference_row(res, r.op, "alloc")
            parts = [f"{r.ms / x.ms:.1f}×" if x is not None and x.ms else "—" for x in (ro, ra)]
            speed = " / ".join(parts)
        t.add(
            [
                r.op,
                r.impl,
                fmt_ms(r.ms),
                fmt_rate(r.elem_per_s or 0.0),
                f"{(r.bytes_per_s or 0.0) / 1e9:.1f}",
                f"{r.roofline:.2f} {OP_CEILING[r.op]}",
                speed,
                r.check,
            ]
        )
    return t


@dataclass
class Check:
    what: str
    value: Optional[float]
    goal: float
    kind: str  # "min" (value >= goal) or "max" (value <= goal)
    unit: str
    note: str = ""

    @property
    def status(self) -> str:
        if self.value is None:
            return "N/A"
        ok = self.value >= self.goal if self.kind == "min" else self.value <= self.goal
        return "PASS" if ok else "FAIL"

    def shown(self) -> Tuple[str, str]:
        goal = f"{'≥' if self.kind == 'min' else '≤'} {self.goal:g}{self.unit}"
        if self.value is None:
            return goal, self.note or "not measured"
        if self.unit == " µs":
            return goal, f"{self.value:.2f} µs"
        return goal, f"{self.value:.2f}{self.unit}"


def evaluate_targets(results: Dict[str, WorkloadResult]) -> List[Tuple[str, str, List[Check]]]:
    def row(wid: str, op: str, impl: str) -> Optional[Row]:
        res = results.get(wid)
        if res is None:
            return None
        r = res.get(op, impl)
        return r if r is not None and r.ms is not None else None

    def roof(wid: str, op: str, impl: str, goal: float) -> Check:
        r = row(wid, op, impl)
        why = "workload not run" if wid not in results else "fastsoftmax failed"
        return Check(
            f"roofline vs {OP_CEILING[op]}",
            r.roofline if r else None,
            goal,
            "min",
            "",
            "" if r else why,
        )

    def speedup(wid: str, op: str, impl: str, peer: str, goal: float) -> Check:
        r, p = row(wid, op, impl), row(wid, op, peer)
        note = ""
        if wid not in results:
            note = "workload not run"
        elif r is None:
            note = "fastsoftmax failed"
        elif p is None:
            pr = results[wid].get(op, peer)
            note = f"{peer}: {pr.error}" if pr is not None and pr.error else f"{peer} not measured"
        val = p.ms / r.ms if (r and p and r.ms and p.ms) else None
        return Check(f"speed-up over {peer}", val, goal, "min", "×", note)

    s4 = row("S4", "softmax", FS_ALLOC)
    return [
        ("T1", "S1 softmax, out=", [
            roof("S1", "softmax", FS_OUT, 0.80),
            speedup("S1", "softmax", FS_OUT, "PyTorch", 4),
            speedup("S1", "softmax", FS_OUT, "NumPy", 6),
        ]),
        ("T2", "S1 logsumexp (allocating)", [
            roof("S1", "logsumexp", FS_ALLOC, 0.70),
            speedup("S1", "logsumexp", FS_ALLOC, "JAX", 2),
            speedup("S1", "logsumexp", FS_ALLOC, "SciPy", 10),
        ]),
        ("T3", "S1 cross_entropy_with_grad, out=", [
            roof("S1", "cross_entropy_with_grad", FS_OUT, 0.80),
            speedup("S1", "cross_entropy_with_grad", FS_OUT, "PyTorch", 10),
        ]),
        ("T4", "S3 softmax, out=", [
            roof("S3", "softmax", FS_OUT, 0.60),
            speedup("S3", "softmax", FS_OUT, "PyTorch", 10),
        ]),
        ("T5", "S4 softmax (allocating call)", [
            Check("median call", s4.ms * 1e3 if s4 and s4.ms else None, 3.0, "max", " µs",
                  "" if s4 else ("workload not run" if "S4" not in results else "fastsoftmax failed")),
        ]),
        ("T6", "S5 softmax, out=", [
            roof("S5", "softmax", FS_OUT, 0.70),
        ]),
        ("T7", "S1 cross_entropy (loss only)", [
            roof("S1", "cross_entropy", FS_ALLOC, 0.70),
            speedup("S1", "cross_entropy", FS_ALLOC, "PyTorch", 5),
        ]),
    ]


def targets_table(targets: List[Tuple[str, str, List[Check]]]) -> Tuple[Table, Dict[str, int]]:
    t = Table(["target", "workload", "criterion", "goal", "measured", "result"], "lllrrl")
    counts = {"PASS": 0, "FAIL": 0, "N/A": 0}
    for tid, what, checks in targets:
        for ch in checks:
            goal, val = ch.shown()
            t.add([tid, what, ch.what, goal, val, ch.status])
            counts[ch.status] += 1
    return t, counts


def plot(results: Dict[str, WorkloadResult], ceilings: Ceilings, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wids = list(results)
    ncols = min(3, len(wids))
    nrows = math.ceil(len(wids) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 4.5 * nrows), squeeze=False)
    impl_names: List[str] = []
    for res in results.values():
        for r in res.rows:
            if r.impl not in impl_names:
                impl_names.append(r.impl)
    colors = {name: f"C{i}" for i, name in enumerate(impl_names)}
    for k, wid in enumerate(wids):
        ax = axes[k // ncols][k % ncols]
        res = results[wid]
        ops = [op for op in OPS if any(r.op == op for r in res.rows)]
        width = 0.8 / max(1, len(impl_names))
        for j, name in enumerate(impl_names):
            xsv, hs = [], []
            for i, op in enumerate(ops):
                got = res.get(op, name)
                if got is not None and got.bytes_per_s:
                    xsv.append(i + (j - (len(impl_names) - 1) / 2) * width)
                    hs.append(got.bytes_per_s / 1e9)
            ax.bar(xsv, hs, width=width, color=colors[name], label=name)
        ax.axhline(ceilings.copy_bps / 1e9, color="k", ls="--", lw=1, label="copy ceiling")
        ax.axhline(ceilings.read_bps / 1e9, color="k", ls=":", lw=1, label="read ceiling")
        ax.set_xticks(range(len(ops)))
        ax.set_xticklabels([op.replace("cross_entropy", "CE").replace("_with_grad", "+grad") for op in ops],
                           rotation=20)
        ax.set_ylabel("GB/s (bytes an ideal kernel moves)")
        ax.set_title(f"{wid}: {res.n} × {res.c} {res.dtype}")
    for k in range(len(wids), nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_average() -> str:
    try:
        return "load average %.2f %.2f %.2f (1/5/15 min)" % os.getloadavg()
    except (AttributeError, OSError):
        return "load average unknown"


def machine_lines(fs: Any, threads: int, peer_versions: Dict[str, str]) -> List[str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        avail = len(os.sched_getaffinity(0))
    except AttributeError:
        avail = os.cpu_count() or 1
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
        mem = f", {kb / (1 << 20):.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    simd = "?"
    try:
        simd = fs.simd_backend()
    except Exception:
        pass
    peers = ", ".join(f"{k} {v}" for k, v in peer_versions.items())
    return [
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"command: python -m fastsoftmax.bench {' '.join(sys.argv[1:])}".rstrip(),
        f"machine: {cpu}, {avail} cores available (of {os.cpu_count()}){mem}, "
        f"LLC {llc_bytes() >> 20} MiB, {platform.system()} {platform.machine()}; at start: {load_average()}",
        f"fastsoftmax {getattr(fs, '__version__', '?')}, SIMD backend {simd}, {threads} threads; "
        f"Python {platform.python_version()}, NumPy {np.__version__}" + (f"; {peers}" if peers else ""),
    ]


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m fastsoftmax.bench",
        description="fastsoftmax vs NumPy / SciPy / PyTorch / JAX, against the machine's memory ceiling "
        "(the method of BENCHMARKS.md).",
    )
    p.add_argument("--quick", action="store_true", help="smaller shapes and fewer repeats (< 1 minute)")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--plot", metavar="FILE.png", help="draw GB/s per workload and peer (needs matplotlib)")
    p.add_argument("--threads", type=int, metavar="N", help="fastsoftmax/PyTorch/ceiling threads")
    p.add_argument("--only", metavar="S1,S3", help="comma-separated workloads to run")
    p.add_argument("--ops", metavar="OP,OP", help="comma-separated operations to run")
    p.add_argument("--no-peers", metavar="P,P", default="",
                   help="peers to leave out: any of numpy,scipy,torch,jax")
    p.add_argument("--repeats", type=int, metavar="N", help="minimum timed calls per row (default 7, quick 5)")
    args = p.parse_args(argv)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse(argv)
    workloads = QUICK_WORKLOADS if args.quick else WORKLOADS
    if args.only:
        want = [w.strip() for w in args.only.split(",") if w.strip()]
        lower = {k.lower(): k for k in workloads}
        bad = [w for w in want if w.lower() not in lower]
        if bad:
            print(f"unknown workload(s) {', '.join(bad)}; choose from {', '.join(workloads)}", file=sys.stderr)
            return 2
        wanted = {lower[w.lower()] for w in want}
        workloads = {k: v for k, v in workloads.items() if k in wanted}
    ops: Sequence[str] = OPS
    if args.ops:
        ops = [o.strip() for o in args.ops.split(",") if o.strip()]
        bad = [o for o in ops if o not in OPS]
        if bad:
            print(f"unknown op(s) {', '.join(bad)}; choose from {', '.join(OPS)}", file=sys.stderr)
            return 2
    skip = {s.strip().lower() for s in args.no_peers.split(",") if s.strip()}
    if args.threads is not None and args.threads < 1:
        print("--threads must be >= 1", file=sys.stderr)
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("--plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
            return 2
    min_reps = args.repeats or (5 if args.quick else 7)
    budget_s = 0.05 if args.quick else 0.4

    import fastsoftmax as fs

    if args.threads is not None:
        fs.set_num_threads(args.threads)
    threads = int(fs.get_num_threads())

    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    # Implementations; an import failure is kept and shown in the rows.
    impls: List[Tuple[str, Any]] = [
        (FS_OUT, fastsoftmax_impl(fs, True)),
        (FS_ALLOC, fastsoftmax_impl(fs, False)),
    ]
    versions: Dict[str, str] = {}
    if "numpy" not in skip:
        impls.append(("NumPy", numpy_impl))
    if "scipy" not in skip:
        try:
            import scipy

            versions["SciPy"] = scipy.__version__
            impls.append(("SciPy", scipy_impl))
        except Exception as e:  # noqa: BLE001
            impls.append(("SciPy", e))
    if "torch" not in skip:
        try:
            impls.append(("PyTorch", torch_impl(threads)))
            import torch

            versions["PyTorch"] = f"{torch.__version__} ({torch.get_num_threads()} threads)"
        except Exception as e:  # noqa: BLE001
            impls.append(("PyTorch", e))
    if "jax" not in skip:
        try:
            impls.append(("JAX", jax_impl()))
            import jax

            versions["JAX"] = f"{jax.__version__} (XLA's own CPU thread pool)"
        except Exception as e:  # noqa: BLE001
            impls.append(("JAX", e))

    # Everything imported so far lives for the whole run: keep it out of the collections that run
    # between rows (a full collection with PyTorch and JAX loaded costs tens of milliseconds).
    gc.collect()
    gc.freeze()

    out: List[str] = []
    md = args.markdown

    def emit(s: str = "") -> None:
        out.append(s)
        print(s, flush=True)

    emit("# fastsoftmax benchmark" + (" (--quick: reduced shapes, indicative only)" if args.quick else "")
         if md else "fastsoftmax benchmark" + (" (--quick: reduced shapes, indicative only)" if args.quick else ""))
    emit()
    for line in machine_lines(fs, threads, versions):
        emit(("- " if md else "") + line)
    emit()

    log(f"measuring the memory ceilings (256 MiB float32, {threads} threads)...")
    ceilings = measure_ceilings(threads)
    h = "## " if md else ""
    emit(f"{h}Ceilings (NumPy, 256 MiB float32, {threads} slices in a thread pool of {threads})")
    emit()
    ct = Table(["ceiling", "how", "median ms", "GB/s"], "llrr")
    ct.add(["copy", "np.copyto per slice; bytes read + written", f"{ceilings.copy_ms:.2f}",
            f"{ceilings.copy_bps / 1e9:.2f}"])
    ct.add(["read", ".sum() per slice; bytes read", f"{ceilings.read_ms:.2f}", f"{ceilings.read_bps / 1e9:.2f}"])
    emit(ct.render(md))
    emit()
    emit(f"{h}Method")
    emit()
    legend = [
        "median of >= %d timed calls (time.perf_counter) after one warm-up call; inputs that fit in the "
        "last-level cache rotate between two arrays; more calls are taken for short rows" % min_reps,
        "elem/s = N*C input elements per second; GB/s = bytes moved / median time, bytes moved (s = itemsize):",
    ]
    legend += [f"  {op}: {OP_BYTES_FORMULA[op]}  [ceiling: {OP_CEILING[op]}]" for op in OPS]
    legend += [
        "roofline = GB/s / the matching ceiling (copy for ops that write an array, read for reductions)",
        "speed-up = peer median / fastsoftmax median (with out= preallocated / allocating its result)",
        "check = the result on the first input agrees with fastsoftmax's (rtol 1e-3 float32, 1e-9 float64)",
        "NumPy = textbook formula (x - max, exp, sum, divide), single-threaded; PyTorch via torch.from_numpy "
        "(zero-copy), inference_mode, set_num_threads = ours; JAX under jax.jit + block_until_ready",
    ]
    for line in legend:
        if md:
            emit(("  - " + line.strip()) if line.startswith("  ") else "- " + line)
        else:
            emit(line)
    emit()

    results: Dict[str, WorkloadResult] = {}
    for wid, spec in workloads.items():
        n, c, dt, desc = spec
        log(f"{wid}: {n} x {c} {dt}")
        res = run_workload(wid, spec, ops, impls, ceilings, min_reps, budget_s, log)
        results[wid] = res
        size = n * c * np.dtype(dt).itemsize
        emit(f"{h}{wid}: {n:,} × {c:,} {dt} — {desc}")
        emit()
        emit(f"input {size / 1e6:.1f} MB, " if size >= 100_000 else f"input {size / 1e3:.2f} kB, "
             + ("fits in the LLC: calls rotate between two inputs (a roofline above 1 means the data "
               "stayed in cache; the ceilings are DRAM's)" if res.rotated else "one input (larger than the LLC)"))
        emit()
        emit(workload_table(res).render(md))
        emit()

    targets = evaluate_targets(results)
    tt, counts = targets_table(targets)
    emit(f"{h}Targets (BENCHMARKS.md, 2-core x86-64 with AVX-512)"
         + (" — quick shapes, indicative only" if args.quick else ""))
    emit()
    emit(tt.render(md))
    emit()
    emit(f"targets: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['N/A']} not measured")
    emit()
    emit(f"at the end: {load_average()}; a load above {threads} means other work shared the cores")
    if args.plot:
        try:
            plot(results, ceilings, args.plot)
            log(f"plot written to {args.plot}")
        except Exception as e:  # noqa: BLE001
            log(f"plot failed: {_short_error(e)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
