"""The command line: ``python -m fastsoftmax.bench [--quick] [--markdown] [--plot FILE.png] ...``."""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
import time
from typing import Dict, List, Optional, Sequence, Set

from .ceilings import CEILING_BYTES, measure_ceilings
from .machine import load_average, machine_lines
from .peers import load_impls, optional_import
from .report import ceilings_table, plot
from .run import WorkloadResult, short_error
from .suite import Context, Suite, load_suites
from .targets import Target, targets_table
from .workloads import OPS

# Timed calls per row at least, and the time one row may spend on extra calls (full / --quick).
MIN_REPS, QUICK_MIN_REPS = 7, 5
BUDGET_S, QUICK_BUDGET_S = 0.4, 0.05


def _parser(suites: Sequence[Suite]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fastsoftmax.bench",
        description="fastsoftmax vs NumPy / SciPy / PyTorch / JAX, against the machine's memory ceiling "
        "(the method of docs/benchmarks.md).",
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
    for suite in suites:
        suite.add_arguments(p)
    return p


def _split(s: Optional[str]) -> List[str]:
    return [w.strip() for w in (s or "").split(",") if w.strip()]


def _choose(args: argparse.Namespace, suites: Sequence[Suite]) -> Optional[Dict[str, List[str]]]:
    """suite name -> the workload ids it runs; None (after a message) when --only names an unknown one."""
    chosen = {s.name: s.ids(args) for s in suites}
    if not args.only:
        return chosen
    lower = {wid.lower(): wid for ids in chosen.values() for wid in ids}
    want = _split(args.only)
    bad = [w for w in want if w.lower() not in lower]
    if bad:
        print(f"unknown workload(s) {', '.join(bad)}; choose from {', '.join(lower.values())}", file=sys.stderr)
        return None
    wanted = {lower[w.lower()] for w in want}
    return {name: [w for w in ids if w in wanted] for name, ids in chosen.items()}


def _check_options(args: argparse.Namespace) -> Optional[str]:
    """What is wrong with the options that need no suite, or None."""
    bad = [o for o in _split(args.ops) if o not in OPS]
    if bad:
        return f"unknown op(s) {', '.join(bad)}; choose from {', '.join(OPS)}"
    if args.threads is not None and args.threads < 1:
        return "--threads must be >= 1"
    if args.plot:
        try:
            optional_import("matplotlib")
        except ImportError:
            return "--plot needs matplotlib (pip install matplotlib)"
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    suites = load_suites()
    args = _parser(suites).parse_args(argv)
    suites = [s for s in suites if s.enabled(args)]
    chosen = _choose(args, suites)
    if chosen is None:
        return 2
    problem = _check_options(args)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    skip: Set[str] = {s.lower() for s in _split(args.no_peers)}
    min_reps = args.repeats or (QUICK_MIN_REPS if args.quick else MIN_REPS)

    # Imported here (argument errors answer without loading it) and typed Any: the bench uses the
    # public functions only, and its type check does not depend on the backends'.
    fs = importlib.import_module("fastsoftmax")

    if args.threads is not None:
        fs.set_num_threads(args.threads)
    threads = int(fs.get_num_threads())

    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    impls, versions = load_impls(fs, threads, skip)
    # Everything imported so far lives for the whole run: keep it out of the collections that run
    # between rows (a full collection with PyTorch and JAX loaded costs tens of milliseconds).
    gc.collect()
    gc.freeze()

    def emit(s: str = "") -> None:
        print(s, flush=True)

    md = args.markdown
    quick = " (--quick: reduced shapes, indicative only)" if args.quick else ""
    emit(("# " if md else "") + "fastsoftmax benchmark" + quick)
    emit()
    for line in machine_lines(fs, threads, versions):
        emit(("- " if md else "") + line)
    emit()

    log(f"measuring the memory ceilings (256 MiB float32, {threads} threads)...")
    ceilings = measure_ceilings(threads)
    ctx = Context(args, fs, threads, ceilings, impls, _split(args.ops) or OPS, min_reps,
                  QUICK_BUDGET_S if args.quick else BUDGET_S, emit, log)
    ctx.heading(f"Ceilings (NumPy, {CEILING_BYTES >> 20} MiB float32, {threads} slices in a thread pool "
                f"of {threads})")
    emit(ceilings_table(ceilings).render(md))
    emit()

    targets: List[Target] = []
    results: Dict[str, WorkloadResult] = {}
    for suite in suites:
        if chosen[suite.name]:
            outcome = suite.run(ctx, chosen[suite.name])
            targets += outcome.targets
            results.update(outcome.results)

    tt, counts = targets_table(targets)
    ctx.heading("Targets (docs/benchmarks.md, 2-core x86-64 with AVX-512)"
                + (" — quick shapes, indicative only" if args.quick else ""))
    emit(tt.render(md))
    emit()
    emit(f"targets: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['N/A']} not measured")
    emit()
    emit(f"at the end: {load_average()}; a load above {threads} means other work shared the cores")
    if args.plot:
        try:
            plot(results, ceilings, args.plot)
            log(f"plot written to {args.plot}")
        except Exception as e:  # noqa: BLE001 -- the tables are printed already
            log(f"plot failed: {short_error(e)}")
    return 0
