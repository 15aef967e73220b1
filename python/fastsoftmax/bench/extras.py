"""Opt-in suites that run in processes or clusters of their own: the fused classifier head (L1, L2;
``--linear``), Dask arrays on a LocalCluster (DT1-DT3; ``--dask``) and ``fastsoftmax.torch``
(PT1, PT2; ``--torch``). Each is a module of the package with its own command line
(``python -m fastsoftmax.bench.linear`` ...); here it runs with this run's ``--quick``, and prints
its own table and goals."""

from __future__ import annotations

import argparse
import importlib
from typing import Callable, List

from .suite import Context, Suite, SuiteOutcome


def _suite(name: str, flag: str, module: str, ids: List[str], quick_args: List[str],
           help_text: str) -> Suite:
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(f"--{flag}", action="store_true", help=help_text)

    def run(ctx: Context, chosen: List[str]) -> SuiteOutcome:
        ctx.heading(f"{name} ({', '.join(chosen)})")
        main: Callable[[List[str]], int] = importlib.import_module(f"fastsoftmax.{module}").main
        status = main(quick_args if ctx.args.quick else [])
        if status:
            ctx.emit(f"{name}: a goal was missed (exit status {status})")
        ctx.emit("")
        return SuiteOutcome()

    return Suite(
        name=name,
        ids=lambda args: list(ids) if getattr(args, flag, False) else [],
        run=run,
        add_arguments=add_arguments,
        enabled=lambda args: bool(getattr(args, flag)),
    )


LINEAR = _suite("fused classifier head", "linear", "bench.linear", ["L1", "L2"], ["--quick"],
                "also run L1/L2: linear_cross_entropy against the matmul floor and PyTorch")
DASK = _suite("Dask arrays", "dask", "bench.dask_cluster", ["DT"], ["--rows", "512"],
              "also run DT1-DT3 on a LocalCluster of 2 single-thread workers")
TORCH = _suite("fastsoftmax.torch", "torch", "bench.torch_tensors", ["PT"], ["--quick"],
               "also run PT1/PT2: fastsoftmax.torch against torch.nn.functional")
SUITES = [LINEAR, DASK, TORCH]
