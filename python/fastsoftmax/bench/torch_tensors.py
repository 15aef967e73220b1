"""Benchmark of the PyTorch adapter: ``python -m fastsoftmax.bench.torch_tensors [--quick] [--repeats N]``.

Two targets, measured side by side in one process run, PyTorch with as many threads as fastsoftmax
(``torch.set_num_threads(fastsoftmax.get_num_threads())``):

- PT1: S1 (2048 × 32000 float32 CPU tensor, int64 labels): ``fastsoftmax.torch.cross_entropy``
  forward + ``backward()`` against ``torch.nn.functional.cross_entropy`` forward + ``backward()``;
  goal: PyTorch's time / ours ≥ 8.
- PT2: S4 (64 × 10): the same pair on a small batch, where the adapter's own cost (checks, tensor to
  array views, autograd bookkeeping) dominates; goal: ours / PyTorch's ≤ 1.5.

Method: one warm-up call each, then timed samples that alternate between the two implementations
(so a change in the machine's load hits both); the median of at least 7 samples each. A PT2 sample
is the median of 200 individually timed calls. The inputs are leaf
tensors with ``requires_grad=True`` (one per implementation) and their ``.grad`` is reset before
every call (a training loop's ``zero_grad()``). Also shown: the NumPy call ``fastsoftmax.cross_entropy_with_grad`` on the
same data, allocating its gradient and into a preallocated ``out=``: the adapter writes its large
gradients into cached buffers (``_torch_pool``), so its floor is the ``out=`` call.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastsoftmax as fs

# id -> (rows, classes); float32 as in the NumPy benchmarks.
WORKLOADS: Dict[str, Tuple[int, int]] = {"S1": (2048, 32000), "S4": (64, 10)}
QUICK_ROWS = {"S1": 256}  # --quick: fewer rows of S1 (same row length); S4 unchanged

PT1_MIN_SPEEDUP = 8.0  # PyTorch / fastsoftmax on S1, forward + backward
PT2_MAX_RATIO = 1.5  # fastsoftmax / PyTorch on S4, forward + backward
MIN_SAMPLES = 7
S4_CALLS_PER_SAMPLE = 200  # calls timed one by one per S4 sample (tens of µs each, ~0.1 µs timer)


@dataclass
class Result:
    target: str
    workload: str
    shape: Tuple[int, int]
    ours_ms: float
    torch_ms: float
    numpy_ms: float  # fastsoftmax.cross_entropy_with_grad, allocating its gradient
    numpy_out_ms: float  # the same into a preallocated out=
    ratio: float  # the target's own ratio (PT1: torch / ours; PT2: ours / torch)
    goal: str
    passed: bool


def _alternate(fns: List[Callable[[], None]], samples: int, calls: int) -> List[float]:
    """Median seconds per call of each function, timed in alternation after one warm-up each.

    A sample of several `calls` times each call on its own and keeps their median, so that the
    moments this process is descheduled (long on a shared machine) do not count against tens of
    microseconds of work."""
    for f in fns:
        f()
    perf = time.perf_counter
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(samples):
        for i, f in enumerate(fns):
            each = []
            for _ in range(calls):
                t0 = perf()
                f()
                each.append(perf() - t0)
            times[i].append(statistics.median(each))
    return [statistics.median(t) for t in times]


def measure(workload: str, rows: int, classes: int, samples: int) -> Result:
    import torch
    import torch.nn.functional as F

    import fastsoftmax.torch as ft

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(rows, classes, generator=gen) * 3).requires_grad_()
    # Each implementation frees its own previous gradient (as its training loop would), not the
    # other's: freeing 262 MB that PyTorch allocated costs tens of ms on its own.
    x_ref = x.detach().clone().requires_grad_()
    y = torch.randint(0, classes, (rows,), generator=gen)
    xn, yn = x.detach().numpy(), y.numpy()

    def ours() -> None:
        x.grad = None
        torch.autograd.backward(ft.cross_entropy(x, y))

    def reference() -> None:
        x_ref.grad = None
        torch.autograd.backward(F.cross_entropy(x_ref, y))

    out = np.empty_like(xn)

    def kernel() -> None:
        fs.cross_entropy_with_grad(xn, yn)

    def kernel_out() -> None:
        fs.cross_entropy_with_grad(xn, yn, out=out)

    calls = S4_CALLS_PER_SAMPLE if rows * classes < 1 << 16 else 1
    t_ours, t_ref, t_np, t_out = _alternate([ours, reference, kernel, kernel_out], samples, calls)
    ms = (t_ours * 1e3, t_ref * 1e3, t_np * 1e3, t_out * 1e3)
    if workload == "S1":
        ratio = t_ref / t_ours
        return Result("PT1", workload, (rows, classes), *ms, ratio,
                      f"torch / ours >= {PT1_MIN_SPEEDUP:g}", ratio >= PT1_MIN_SPEEDUP)
    ratio = t_ours / t_ref
    return Result("PT2", workload, (rows, classes), *ms, ratio,
                  f"ours / torch <= {PT2_MAX_RATIO:g}", ratio <= PT2_MAX_RATIO)


def run(quick: bool = False, repeats: int = MIN_SAMPLES) -> List[Result]:
    """PT1 and PT2, measured in this process (PyTorch must be importable)."""
    import torch

    torch.set_num_threads(fs.get_num_threads())
    samples = max(repeats, MIN_SAMPLES)
    out = []
    for name, (rows, classes) in WORKLOADS.items():
        if quick:
            rows = QUICK_ROWS.get(name, rows)
        out.append(measure(name, rows, classes, samples))
    return out


def table(results: Sequence[Result]) -> str:
    lines = [
        "| target | workload | fastsoftmax.torch ms | torch ms | NumPy call ms (alloc / out=) "
        "| ratio | goal | |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.target} | {r.workload} {r.shape[0]}x{r.shape[1]} float32 | {r.ours_ms:.4g} | "
            f"{r.torch_ms:.4g} | {r.numpy_ms:.4g} / {r.numpy_out_ms:.4g} | {r.ratio:.2f} | {r.goal} | "
            f"{'PASS' if r.passed else 'FAIL'} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastsoftmax.bench.torch_tensors", description=__doc__)
    p.add_argument("--quick", action="store_true", help=f"S1 with {QUICK_ROWS['S1']} rows")
    p.add_argument("--repeats", type=int, default=MIN_SAMPLES, help="timed samples (>= 7)")
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: pip install 'fastsoftmax[torch]'")
        return 0
    print(f"fastsoftmax {fs.__version__} ({fs.simd_backend()}), torch {torch.__version__}, "
          f"{fs.get_num_threads()} threads each")
    print(table(run(args.quick, args.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
