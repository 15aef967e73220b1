"""The row workloads S1-S5 and S1d against NumPy, SciPy, PyTorch and JAX, and targets T1-T7."""

from __future__ import annotations

import argparse
from typing import Dict, List, Mapping

import numpy as np

from .peers import FS_ALLOC, FS_OUT
from .report import input_line, method_lines, workload_table
from .run import WorkloadResult, run_workload
from .suite import Context, Suite, SuiteOutcome
from .targets import RowChecks, Target
from .workloads import QUICK_WORKLOADS, WORKLOADS, Workload


def workloads(args: argparse.Namespace) -> Dict[str, Workload]:
    return QUICK_WORKLOADS if args.quick else WORKLOADS


def run_rows(ctx: Context, ids: List[str], table: Mapping[str, Workload]) -> Dict[str, WorkloadResult]:
    """Measure and print the workloads ``ids`` of ``table`` (usable by any suite of 2-D row inputs)."""
    results: Dict[str, WorkloadResult] = {}
    for wid in ids:
        spec = table[wid]
        ctx.log(f"{wid}: {spec.n} x {spec.c} {spec.dtype}")
        res = run_workload(wid, spec, ctx.ops, ctx.impls, ctx.ceilings, ctx.min_reps, ctx.budget_s, ctx.log)
        results[wid] = res
        ctx.heading(f"{wid}: {spec.n:,} × {spec.c:,} {spec.dtype} — {spec.desc}")
        ctx.emit(input_line(res, np.dtype(spec.dtype).itemsize))
        ctx.emit("")
        ctx.emit(workload_table(res).render(ctx.markdown))
        ctx.emit("")
    return results


def emit_method(ctx: Context) -> None:
    ctx.heading("Method")
    for line in method_lines(ctx.min_reps):
        if ctx.markdown:
            ctx.emit(("  - " + line.strip()) if line.startswith("  ") else "- " + line)
        else:
            ctx.emit(line)
    ctx.emit("")


def core_targets(results: Mapping[str, WorkloadResult]) -> List[Target]:
    """T1-T7 (docs/benchmarks.md), on a 2-core x86-64 machine with AVX-512."""
    c = RowChecks(results)
    sm, lse, ce, ceg = "softmax", "logsumexp", "cross_entropy", "cross_entropy_with_grad"
    return [
        Target("T1", "S1 softmax, out=", [
            c.roofline("S1", sm, FS_OUT, 0.80),
            c.speedup("S1", sm, FS_OUT, "PyTorch", 4),
            c.speedup("S1", sm, FS_OUT, "NumPy", 6),
        ]),
        Target("T2", "S1 logsumexp (allocating)", [
            c.roofline("S1", lse, FS_ALLOC, 0.70),
            c.speedup("S1", lse, FS_ALLOC, "JAX", 2),
            c.speedup("S1", lse, FS_ALLOC, "SciPy", 10),
        ]),
        Target("T3", "S1 cross_entropy_with_grad, out=", [
            c.roofline("S1", ceg, FS_OUT, 0.80),
            c.speedup("S1", ceg, FS_OUT, "PyTorch", 10),
        ]),
        Target("T4", "S3 softmax, out=", [
            c.roofline("S3", sm, FS_OUT, 0.60),
            c.speedup("S3", sm, FS_OUT, "PyTorch", 10),
        ]),
        Target("T5", "S4 softmax (allocating call)", [c.call_us("S4", sm, FS_ALLOC, 3.0)]),
        Target("T6", "S5 softmax, out=", [c.roofline("S5", sm, FS_OUT, 0.70)]),
        Target("T7", "S1 cross_entropy (loss only)", [
            c.roofline("S1", ce, FS_ALLOC, 0.70),
            c.speedup("S1", ce, FS_ALLOC, "PyTorch", 5),
        ]),
    ]


def run(ctx: Context, ids: List[str]) -> SuiteOutcome:
    emit_method(ctx)
    results = run_rows(ctx, ids, workloads(ctx.args))
    return SuiteOutcome(core_targets(results), results)


SUITE = Suite("rows", ids=lambda args: list(workloads(args)), run=run)
