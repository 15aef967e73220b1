"""Row widths (``--widths``): the five row operations on float32 rows of 1 to 1001 columns, the same
number of elements each, as a fraction of the run's memory ceilings. Tiny rows take the tile path up
to a kernel's own width, and rows that are not a whole number of vectors have a tail: a slow width
shows here first, where S1-S5 (10, 1000, 32000 and 1M columns) would miss it."""

from __future__ import annotations

import argparse
from typing import List

import numpy as np

from .report import Table
from .suite import Context, Suite, SuiteOutcome
from .timing import measure
from .workloads import OP_CEILING, OPS, Workload, bytes_moved, make_inputs

# Each width's workload holds about this many elements (128 MiB of float32: well past the LLC,
# so every width is measured against memory; quick: 16 MiB).
ELEMENTS = 1 << 25
QUICK_ELEMENTS = 1 << 22

# Tiny rows on and off the tile path (4, 10, 40 | 48, 56 | 64), whole vectors and tails on the
# row path (64 | 65, 1000 | 1001).
WIDTHS = (1, 2, 3, 4, 8, 10, 16, 32, 40, 48, 56, 64, 65, 100, 1000, 1001)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--widths", action="store_true",
                        help=f"also time the row operations on rows of {WIDTHS[0]} to {WIDTHS[-1]} columns")


def _run(ctx: Context, _chosen: List[str]) -> SuiteOutcome:
    fs = ctx.fs
    total = QUICK_ELEMENTS if ctx.args.quick else ELEMENTS
    ops = [op for op in OPS if op in ctx.ops]
    ceiling = {"copy": ctx.ceilings.copy_bps, "read": ctx.ceilings.read_bps}
    ctx.heading(f"Row widths: float32, {total:,} elements per width, fastsoftmax with out= where "
                "it applies; fraction of the copy or read ceiling")
    table = Table(["columns", "rows"] + ops, "r" * (2 + len(ops)))
    for c in WIDTHS:
        n = total // c
        ctx.log(f"widths: {n} x {c}")
        (x,), (y,) = make_inputs(Workload(n, c, "float32", f"{c} columns"), 1)
        out = np.empty_like(x)
        calls = {
            "softmax": lambda _i: fs.softmax(x, out=out),
            "log_softmax": lambda _i: fs.log_softmax(x, out=out),
            "logsumexp": lambda _i: fs.logsumexp(x, axis=-1),
            "cross_entropy": lambda _i: fs.cross_entropy(x, y),
            "cross_entropy_with_grad": lambda _i: fs.cross_entropy_with_grad(x, y, out=out),
        }
        cells = [str(c), f"{n:,}"]
        for op in ops:
            t = measure(calls[op], 1, ctx.min_reps, ctx.budget_s, max_reps=50)
            bps = bytes_moved(op, n, c, 4) / t.median_s
            cells.append(f"{bps / ceiling[OP_CEILING[op]]:.2f}")
        table.add(cells)
    ctx.emit(table.render(ctx.markdown))
    ctx.emit("")
    return SuiteOutcome()


SUITE = Suite(
    name="row widths",
    ids=lambda args: ["W"] if args.widths else [],
    run=_run,
    add_arguments=_add_arguments,
    enabled=lambda args: bool(args.widths),
)
