"""Benchmark of the fused classifier head: ``python -m fastsoftmax.bench.linear [--quick]``.

Workloads (float32; x: N × D, classifier: V × D):

- L1: N 4096, D 512, V 32000 (a small language-model head, one training step);
- L2: N 8192, D 256, V 131072 (a large vocabulary: logits of 4 GiB, their gradient 4 GiB more).

Methods, each run in its OWN fresh Python process (so that its peak memory is its own):

- ``fused``: ``linear_cross_entropy_with_grad`` with the default chunk;
- ``unfused``: the NumPy path that holds the logits: ``x @ W.T``, ``cross_entropy_with_grad(out=)``
  in place, ``g @ W`` and ``g.T @ x``;
- ``torch``: PyTorch CPU ``F.linear`` + ``F.cross_entropy`` + ``backward`` with as many threads as
  fastsoftmax uses (when PyTorch imports);
- ``floor``: the three matrix products alone on preallocated outputs, with NumPy's BLAS: the time
  any method must spend;
- ``chunked-gemm``: the same three products in the fused call's chunks, without the loss: what the
  chunking itself costs (a diagnostic beside the floor).

Each round runs every method once, each in a fresh process: a warm-up (thread pools, BLAS buffers),
a first full-size call that gives the peak memory, and one timed call; the time reported is the
median over the rounds, which interleave the methods so that a busy machine's drift falls on all of
them alike. The peak memory is the process's resident high-water mark during the first full-size
call, above its resident memory just before it (Linux: ``/proc/self/status``; the mark is reset
through ``/proc/self/clear_refs`` where the kernel allows). The fused call's peak is also given above its returned gradients, in units of the
full logits' bytes (the goal: at most 1/8).

Only NumPy and the public fastsoftmax API are needed; PyTorch is an optional peer.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastsoftmax as fs

from .._linear import _LayerGrads, default_chunk_rows

# id -> (N, D, V, what it stands for)
WORKLOADS: Dict[str, Tuple[int, int, int, str]] = {
    "L1": (4096, 512, 32000, "a small LM head, one training step"),
    "L2": (8192, 256, 131072, "a large vocabulary: logits 4 GiB, their gradient 4 GiB more"),
}
QUICK_WORKLOADS: Dict[str, Tuple[int, int, int, str]] = {
    # N stays at 4096 so that the default chunk is 1/8 of the rows, as in the full workloads
    "L1": (4096, 128, 8000, "L1 in small (quick)"),
    "L2": (4096, 32, 32768, "L2 in small (quick)"),
}
METHODS = ("fused", "unfused", "torch", "floor", "chunked-gemm")
# PyTorch's peak holds about 3 arrays of the logits' size (measured at L1: 3.0x the logits' bytes
# above the inputs); it is only run where that much memory is available.
TORCH_LOGITS_COPIES = 3
MEMORY_HEADROOM = 1.25  # asked of MemAvailable above an estimated peak before running a method
WARMUP_ROWS = 64  # a small call first starts the BLAS and kernel thread pools


# --------------------------------------------------------------------------------------------------
# the child process: one method, one workload


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size (Linux >= 4.0)
    except OSError:
        pass  # the first full-size call then comes right after a small warm-up call


def _inputs(n: int, d: int, v: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.standard_normal((v, d), dtype=np.float32) * np.float32(d**-0.5)
    t = rng.integers(0, v, n)
    return x, w, t


def _method(name: str, x: np.ndarray, w: np.ndarray, t: np.ndarray) -> Callable[[], Any]:
    """A callable doing one forward+backward of `name` on these arrays (outputs allocated inside,
    except for the floor, whose outputs are preallocated here)."""
    n, d = x.shape
    v = w.shape[0]
    if name == "fused":
        return lambda: fs.linear_cross_entropy_with_grad(x, w, t)
    if name == "unfused":

        def unfused() -> Any:
            o = x @ w.T
            loss, g = fs.cross_entropy_with_grad(o, t, out=o)
            return loss, g @ w, g.T @ x

        return unfused
    if name == "floor":
        o = np.empty((n, v), np.float32)
        gx = np.empty((n, d), np.float32)
        gw = np.empty((v, d), np.float32)

        def floor() -> None:
            np.matmul(x, w.T, out=o)
            np.matmul(o, w, out=gx)
            np.matmul(o.T, x, out=gw)

        return floor
    if name == "chunked-gemm":
        return lambda: _chunked_gemm(x, w)
    if name == "torch":
        torch: Any = importlib.import_module("torch")
        functional: Any = importlib.import_module("torch.nn.functional")
        torch.set_num_threads(fs.get_num_threads())
        xt = torch.from_numpy(x).requires_grad_()
        wt = torch.from_numpy(w).requires_grad_()
        tt = torch.from_numpy(t)

        def peer() -> Any:
            xt.grad = wt.grad = None
            loss = functional.cross_entropy(functional.linear(xt, wt), tt)
            loss.backward()
            return loss.item(), xt.grad, wt.grad

        return peer
    raise ValueError(f"unknown method {name!r}; expected one of {METHODS}")


def _chunked_gemm(x: np.ndarray, w: np.ndarray) -> None:
    """The fused call's matrix products alone, in its default chunks and with its choices of
    product orientation and accumulation (no loss)."""
    n, d = x.shape
    v = w.shape[0]
    rows = default_chunk_rows(n, v, d, 4)
    layer = _LayerGrads(np, n, v, d, x.dtype, rows, False)
    buf = np.empty((rows, v), np.float32)
    gx = np.empty((n, d), np.float32)
    for i in range(0, n, rows):
        j = min(n, i + rows)
        g = buf[: j - i]
        np.matmul(x[i:j], w.T, out=g)
        layer.grad_x(g, w, gx[i:j])
        layer.add_grad_classifier(g, x[i:j], first=i == 0)


def _warm_up(name: str, x: np.ndarray, w: np.ndarray, t: np.ndarray) -> None:
    """Starts the thread pools and touches the BLAS packing buffers that full-size products use
    (memory of the libraries, not of a call), then runs the method once on a few rows."""
    k = min(len(x), WARMUP_ROWS * 16)
    o = np.matmul(x[:k], w.T)
    np.matmul(o, w)
    np.matmul(o.T, x[:k])
    del o
    small = min(len(x), WARMUP_ROWS)
    _method(name, x[:small], w, t[:small])()


def child(name: str, n: int, d: int, v: int, repeats: int) -> Dict[str, Any]:
    """Runs one method in this process: {"times": [...], "first": s, "peak_extra": bytes}. The first
    full-size call gives the peak memory (and warms up); the `repeats` calls after it are timed."""
    x, w, t = _inputs(n, d, v)
    _warm_up(name, x, w, t)
    _reset_peak()
    before = _status("VmRSS")
    call = _method(name, x, w, t)
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    peak = _status("VmHWM") - before
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return {"times": times or [first], "first": first, "peak_extra": peak}


# --------------------------------------------------------------------------------------------------
# the parent: one subprocess per (workload, method), then the table


def _available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def _needed_bytes(method: str, n: int, d: int, v: int) -> int:
    logits = n * v * 4
    inputs = (n * d + v * d) * 4 * 3  # inputs and two gradients
    copies = {"torch": TORCH_LOGITS_COPIES, "unfused": 1, "floor": 1}.get(method, 0)
    return inputs + copies * logits


def measure(
    workloads: Dict[str, Tuple[int, int, int, str]],
    methods: Sequence[str] = METHODS,
    rounds: int = 3,
    log: Callable[[str], None] = print,
) -> List[Dict[str, Any]]:
    """`rounds` rounds; in each, every method of a workload runs in its own fresh subprocess (one
    warm-up call that gives the peak memory, one timed call). Rounds interleave the methods so a
    busy machine's drift falls on all of them alike. Returns one record per (workload, method) with
    "median_s" (over rounds), "times", "peak_extra" (bytes, the largest seen) or "skipped" (why)."""
    records = []
    for wid, (n, d, v, _) in workloads.items():
        recs: List[Dict[str, Any]] = [
            {"workload": wid, "method": m, "N": n, "D": d, "V": v, "times": [], "peaks": []}
            for m in methods
        ]
        records.extend(recs)
        for rnd in range(rounds):
            for rec in recs:
                if "skipped" not in rec:
                    _run_child(rec, n, d, v, log, f"round {rnd + 1}/{rounds}")
        for rec in recs:
            if rec["times"]:
                rec["median_s"] = statistics.median(rec["times"])
                rec["peak_extra"] = max(rec["peaks"])
    return records


def _run_child(rec: Dict[str, Any], n: int, d: int, v: int, log: Callable[[str], None],
               label: str) -> None:
    m, wid = rec["method"], rec["workload"]
    if m == "torch" and importlib.util.find_spec("torch") is None:
        rec["skipped"] = "PyTorch is not installed"
        return
    need = _needed_bytes(m, n, d, v)
    if need * MEMORY_HEADROOM > _available_bytes():
        rec["skipped"] = (
            f"needs about {need / 2**30:.1f} GiB, {_available_bytes() / 2**30:.1f} GiB available"
        )
        log(f"{wid} {m}: skipped ({rec['skipped']})")
        return
    cmd = [sys.executable, "-m", "fastsoftmax.bench.linear", "--child", m, str(n), str(d), str(v),
           "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if r.returncode != 0:
        rec["skipped"] = f"failed ({r.returncode}): {r.stderr.strip().splitlines()[-1:]}"
        log(f"{wid} {m}: {rec['skipped']}")
        return
    out = json.loads(r.stdout.strip().splitlines()[-1])
    rec["times"].extend(out["times"])
    rec["peaks"].append(out["peak_extra"])
    log(f"{wid} {m} {label}: {out['times'][0] * 1e3:.0f} ms, peak +{out['peak_extra'] / 2**20:.0f} MiB")


def _get(records: List[Dict[str, Any]], wid: str, m: str) -> Optional[Dict[str, Any]]:
    for r in records:
        if r["workload"] == wid and r["method"] == m and "median_s" in r:
            return r
    return None


def table(records: List[Dict[str, Any]]) -> str:
    """A Markdown table: time, time / floor, peak memory above the inputs and in logits' units."""
    lines = [
        "| workload | method | median ms | × floor | peak above inputs MiB | ÷ logits bytes |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        wid, m = r["workload"], r["method"]
        if "median_s" not in r:
            lines.append(f"| {wid} | {m} | skipped: {r.get('skipped', '?')} | | | |")
            continue
        floor = _get(records, wid, "floor")
        ratio = f"{r['median_s'] / floor['median_s']:.2f}" if floor else "-"
        logits = r["N"] * r["V"] * 4
        lines.append(
            f"| {wid} | {m} | {r['median_s'] * 1e3:.0f} | {ratio} | "
            f"{r['peak_extra'] / 2**20:.0f} | {r['peak_extra'] / logits:.3f} |"
        )
    return "\n".join(lines)


def summary(records: List[Dict[str, Any]]) -> str:
    """The goals: fused time / floor (<= 1.10), fused extra memory above its gradients / logits
    (<= 1/8), PyTorch peak / fused peak (>= 8), PyTorch time / fused time (>= 1.3 on L1)."""
    out = []
    for wid in dict.fromkeys(r["workload"] for r in records):
        fused, floor, torch = (_get(records, wid, m) for m in ("fused", "floor", "torch"))
        if fused is None:
            continue
        n, d, v = fused["N"], fused["D"], fused["V"]
        grads = (n * d + v * d) * 4
        parts = [f"{wid}:"]
        if floor:
            parts.append(f"fused/floor time {fused['median_s'] / floor['median_s']:.2f} (goal <= 1.10);")
        above = max(0, fused["peak_extra"] - grads) / (n * v * 4)
        parts.append(f"fused peak above inputs+grads = {above:.3f} x logits (goal <= 0.125);")
        if torch:
            parts.append(
                f"PyTorch/fused: time {torch['median_s'] / fused['median_s']:.2f}x, "
                f"peak {torch['peak_extra'] / max(1, fused['peak_extra']):.1f}x"
            )
        else:
            parts.append("PyTorch: not measured")
        out.append(" ".join(parts))
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastsoftmax.bench.linear", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small shapes, a few seconds")
    p.add_argument("--only", default="", help="workloads, e.g. L1")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    p.add_argument("--rounds", type=int, default=3,
                   help="fresh processes per method, interleaved; the median time is reported")
    p.add_argument("--json", default="", help="also write the records to this file")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for fastsoftmax, NumPy's BLAS and PyTorch alike (default: all)")
    p.add_argument("--child", nargs=5, metavar=("METHOD", "N", "D", "V", "REPEATS"),
                   help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        m, n, d, v, k = a.child
        print(json.dumps(child(m, int(n), int(d), int(v), int(k))))
        return 0
    if a.threads is not None:  # read by the child processes when their libraries load
        for var in ("FASTSOFTMAX_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                    "MKL_NUM_THREADS"):
            os.environ[var] = str(a.threads)
        fs.set_num_threads(a.threads)
    wl = QUICK_WORKLOADS if a.quick else WORKLOADS
    if a.only:
        wl = {k: wl[k] for k in a.only.split(",")}
    print(f"fastsoftmax {fs.__version__}, {fs.get_num_threads()} threads, {fs.simd_backend()}")
    recs = measure(wl, [m for m in a.methods.split(",") if m], a.rounds)
    print(table(recs))
    print(summary(recs))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(recs, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
