"""What a group of workloads plugs into: the run's shared state, and the registry of suites."""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence

from .ceilings import Ceilings
from .peers import Impl
from .run import WorkloadResult
from .targets import Target

# The modules of this package that define a ``SUITE``, in the order they run and print.
SUITE_MODULES: Sequence[str] = ("rows", "widths", "extras")


@dataclass
class Context:
    """What every suite gets: the options, fastsoftmax, the ceilings, the peers, and the output."""

    args: argparse.Namespace
    fs: Any  # the fastsoftmax module
    threads: int
    ceilings: Ceilings
    impls: List[Impl]  # fastsoftmax (out= and allocating) and the row peers, as loaded
    ops: Sequence[str]  # --ops, or every operation of the row workloads
    min_reps: int
    budget_s: float
    emit: Callable[[str], None]  # a line of the report (stdout)
    log: Callable[[str], None]  # a progress line (stderr)

    @property
    def markdown(self) -> bool:
        return bool(self.args.markdown)

    def heading(self, text: str) -> None:
        """A section title (``## `` in Markdown), followed by a blank line."""
        self.emit(("## " if self.markdown else "") + text)
        self.emit("")


@dataclass
class SuiteOutcome:
    targets: List[Target] = field(default_factory=list)
    results: Dict[str, WorkloadResult] = field(default_factory=dict)  # drawn by --plot


def _always(_args: argparse.Namespace) -> bool:
    return True


def _no_arguments(_parser: argparse.ArgumentParser) -> None:
    return None


@dataclass(frozen=True)
class Suite:
    """A group of workloads with its own tables and targets.

    ``ids(args)`` lists the workload ids it runs under these options (``--only`` picks among the ids
    of every enabled suite); ``run(ctx, ids)`` measures the chosen ones, prints its sections through
    ``ctx`` and returns its targets. ``add_arguments`` adds the suite's own flags; ``enabled`` says
    whether it runs at all (an opt-in suite checks its flag, e.g. ``--dask``).
    """

    name: str
    ids: Callable[[argparse.Namespace], List[str]]
    run: Callable[[Context, List[str]], SuiteOutcome]
    add_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    enabled: Callable[[argparse.Namespace], bool] = _always


def load_suites() -> List[Suite]:
    """Every module's ``SUITE`` (or ``SUITES``, a module that defines several)."""
    suites: List[Suite] = []
    for name in SUITE_MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        found = getattr(module, "SUITES", None) or [module.SUITE]
        for suite in found:
            assert isinstance(suite, Suite), name
            suites.append(suite)
    return suites
