"""GPU benchmarks G1-G3 (docs/benchmarks.md, GPU section) for the CuPy path.

Run on a machine with CuPy and a CUDA GPU:  python benches/gpu_bench.py [--quick] [--variants]
Timed with CUDA events around 20 back-to-back calls (median of 5 such sets, after warm-up);
G3s rows: per-call events (cupyx.profiler.benchmark), which include the host overhead of one call.
Ceiling: a device-to-device copy of 1 GiB, counting bytes read + bytes written.
Peers: torch (when importable) on the same GPU: torch.softmax, and F.cross_entropy + backward.
Prints a markdown table (the last lines of the output) and, with --json PATH, writes the numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

import numpy as np

import cupy as cp
from cupyx.profiler import benchmark

import fastsoftmax as fs
from fastsoftmax import _cuda

try:
    import torch
    import torch.nn.functional as F

    HAVE_TORCH = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    torch = None
    HAVE_TORCH = False

try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    BF16 = None

N_REPEAT = 20
N_WARMUP = 3


def gpu_ms(f, n_repeat=N_REPEAT, n_sets=5):
    """Median over n_sets of (CUDA-event time around n_repeat back-to-back calls) / n_repeat.

    Back-to-back calls are the steady state of a training loop: the host work of one call overlaps
    the GPU work of the previous one (the same for torch)."""
    for _ in range(N_WARMUP):
        f()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    ts = []
    for _ in range(n_sets):
        start.record()
        for _ in range(n_repeat):
            f()
        end.record()
        end.synchronize()
        ts.append(cp.cuda.get_elapsed_time(start, end) / n_repeat)
    return float(np.median(ts))


def gpu_ms_single(f, n_repeat=N_REPEAT):
    """Per-call event time (host overhead included when the GPU waits for it)."""
    r = benchmark(f, (), n_repeat=n_repeat, n_warmup=N_WARMUP)
    return float(np.median(r.gpu_times[0])) * 1e3


def copy_ceiling():
    n = (1 << 30) // 4  # 1 GiB of float32
    a = cp.random.random(n, dtype=cp.float32)
    b = cp.empty_like(a)
    ms = gpu_ms(lambda: cp.copyto(b, a))
    del a, b
    return 2 * (1 << 30) / (ms * 1e-3)


def make(rows, cols, dtype, seed=0):
    """(cupy array, torch tensor or None) holding the same values."""
    g = cp.random.default_rng(seed).standard_normal((rows, cols), dtype=cp.float32) * 3
    if dtype == "bfloat16":
        u = _cuda.launch.from_acc(g, BF16)
        del g
        t = None
        if HAVE_TORCH:
            t = torch.from_dlpack(u.view(cp.int16)).view(torch.bfloat16)
        return u, t
    t = torch.from_dlpack(g) if HAVE_TORCH else None
    return g, t


def row(rec, name, shape, dtype, nbytes, ms, ceil, torch_ms=None):
    bw = nbytes / (ms * 1e-3)
    r = dict(
        id=name, shape=shape, dtype=dtype, ms=ms, gbps=bw / 1e9, frac=bw / ceil,
        torch_ms=torch_ms, speedup=(torch_ms / ms) if torch_ms else None,
    )
    rec.append(r)
    ts = f"{torch_ms:8.3f}" if torch_ms else "       -"
    su = f"{torch_ms / ms:5.2f}x" if torch_ms else "   - "
    print(f"{name:4s} {str(shape):>18s} {dtype:9s} {ms:9.4f} ms {bw / 1e9:8.1f} GB/s "
          f"{bw / ceil:5.2f} of copy | torch {ts} ms {su}", flush=True)
    return r


def g1(rec, ceil, quick):
    cols_list = [1024, 4096, 32768, 131072]
    for dtype in ["float32", "bfloat16"]:
        for cols in cols_list:
            rows = 4096
            x, tx = make(rows, cols, dtype)
            out = cp.empty_like(x)
            ms = gpu_ms(lambda: fs.softmax(x, out=out))
            tms = gpu_ms(lambda: torch.softmax(tx, dim=-1)) if tx is not None else None
            nbytes = 2 * x.nbytes
            row(rec, "G1", (rows, cols), dtype, nbytes, ms, ceil, tms)
            del x, tx, out


def g2(rec, ceil, quick):
    rows, cols = (2048, 131072) if quick else (8192, 131072)
    x, tx = make(rows, cols, "bfloat16", seed=1)
    y = cp.random.default_rng(2).integers(0, cols, rows, dtype=cp.int64)
    out = cp.empty_like(x)
    ms = gpu_ms(lambda: fs.cross_entropy_with_grad(x, y, out=out))
    tms = None
    if tx is not None:
        ty = torch.from_dlpack(y)
        tx.requires_grad_(True)

        def fwd_bwd():
            tx.grad = None
            loss = F.cross_entropy(tx, ty)
            loss.backward()

        tms = gpu_ms(fwd_bwd)
        tx.grad = None
    row(rec, "G2", (rows, cols), "bfloat16", 2 * x.nbytes + y.nbytes, ms, ceil, tms)
    # loss only (reads the logits once)
    ms = gpu_ms(lambda: fs.cross_entropy(x, y))
    row(rec, "G2l", (rows, cols), "bfloat16", x.nbytes + y.nbytes, ms, ceil, None)
    del x, tx, out


def g3(rec, ceil, quick):
    for rows, cols in [(1, 1 << 20), (8, 1 << 18)]:
        x, tx = make(rows, cols, "float32", seed=3)
        out = cp.empty_like(x)
        ms = gpu_ms(lambda: fs.softmax(x, out=out), n_repeat=100)
        tms = gpu_ms(lambda: torch.softmax(tx, dim=-1), n_repeat=100) if tx is not None else None
        row(rec, "G3", (rows, cols), "float32", 2 * x.nbytes, ms, ceil, tms)
        ms1 = gpu_ms_single(lambda: fs.softmax(x, out=out), n_repeat=100)
        row(rec, "G3s", (rows, cols), "float32", 2 * x.nbytes, ms1, ceil, None)
        del x, tx, out


def variants(rec, ceil):
    """Kernel-shape variants on the G1/G3 workloads (tuning table; not a target)."""
    cases = [
        ((4096, 32768), "float32", [None, (256, 8, True), (512, 4, True)]),
        ((4096, 131072), "bfloat16", [None, (256, 2, True), (128, 4, True)]),
        ((4096, 1024), "float32", [None, (128, 2, False)]),
        ((1, 1 << 20), "float32", [None, (128, 4, True)]),
    ]
    for shape, dtype, forces in cases:
        x, _ = make(*shape, dtype)
        out = cp.empty_like(x)
        for force in forces:
            _cuda.launch._force_config = force
            try:
                ms = gpu_ms(lambda: fs.softmax(x, out=out))
                row(rec, "var", shape, f"{dtype}:{force}", 2 * x.nbytes, ms, ceil)
            except Exception as e:  # a variant that does not compile or launch
                print("variant", shape, dtype, force, "failed:", repr(e)[:200])
            finally:
                _cuda.launch._force_config = None
        del x, out
    # cross-entropy variants (G2 shape, fewer rows)
    x, _ = make(2048, 131072, "bfloat16", seed=1)
    y = cp.random.default_rng(2).integers(0, 131072, 2048, dtype=cp.int64)
    out = cp.empty_like(x)
    for force in [None, (256, 4, True), (128, 2, True)]:
        _cuda.launch._force_config = force
        try:
            ms = gpu_ms(lambda: fs.cross_entropy_with_grad(x, y, out=out))
            row(rec, "varCE", (2048, 131072), f"bf16:{force}", 2 * x.nbytes, ms, ceil)
        except Exception as e:
            print("variant CE", force, "failed:", repr(e)[:200])
        finally:
            _cuda.launch._force_config = None
    del x, out
    # host overhead of one small call (no GPU wait): microseconds per call
    import time

    xs = cp.asarray(np.random.default_rng(0).standard_normal((64, 10), dtype=np.float32))
    fs.softmax(xs)
    t0 = time.perf_counter()
    for _ in range(2000):
        fs.softmax(xs)
    t1 = time.perf_counter()
    cp.cuda.Device().synchronize()
    print(f"host time per fs.softmax(64x10) call: {(t1 - t0) / 2000 * 1e6:.1f} us")
    import cProfile
    import pstats

    pr = cProfile.Profile()
    pr.enable()
    for _ in range(2000):
        fs.softmax(xs)
    pr.disable()
    cp.cuda.Device().synchronize()
    pstats.Stats(pr).sort_stats("tottime").print_stats(8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    dev = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    print(f"device: {dev}, {props['multiProcessorCount']} SMs; date "
          f"{datetime.date.today().isoformat()}; cupy {cp.__version__}; "
          f"torch {torch.__version__ if torch else None}", flush=True)
    ceil = copy_ceiling()
    print(f"copy ceiling: {ceil / 1e9:.1f} GB/s (read + write, 1 GiB)", flush=True)
    rec = []
    g1(rec, ceil, a.quick)
    g2(rec, ceil, a.quick)
    g3(rec, ceil, a.quick)
    if a.variants:
        variants(rec, ceil)
    print()
    print("| id | shape | dtype | ms | GB/s | of copy | torch ms | vs torch |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rec:
        ts = f"{r['torch_ms']:.3f}" if r["torch_ms"] else "-"
        su = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        print(f"| {r['id']} | {r['shape'][0]}x{r['shape'][1]} | {r['dtype']} | {r['ms']:.4f} | "
              f"{r['gbps']:.0f} | {r['frac']:.2f} | {ts} | {su} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(device=dev, ceiling_gbps=ceil / 1e9, rows=rec), f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
