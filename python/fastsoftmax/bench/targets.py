"""Targets: named checks of measured values against goals, shown as one PASS/FAIL table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from .report import Table
from .run import Row, WorkloadResult
from .workloads import OP_CEILING


@dataclass
class Check:
    what: str
    value: Optional[float]
    goal: float
    kind: str  # "min" (value >= goal) or "max" (value <= goal)
    unit: str
    note: str = ""  # why there is no value

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
        return goal, f"{self.value:.2f}{self.unit}"


@dataclass
class Target:
    """One target id (T1, LT2, ...), the workload it is about, and its checks."""

    tid: str
    what: str
    checks: List[Check]


class RowChecks:
    """Checks over the rows of a set of workload results (the row workloads and any that reuse them)."""

    def __init__(self, results: Mapping[str, WorkloadResult]) -> None:
        self.results = results

    def row(self, wid: str, op: str, impl: str) -> Optional[Row]:
        res = self.results.get(wid)
        return res.timed(op, impl) if res is not None else None

    def missing(self, wid: str) -> str:
        return "workload not run" if wid not in self.results else "fastsoftmax failed"

    def roofline(self, wid: str, op: str, impl: str, goal: float) -> Check:
        r = self.row(wid, op, impl)
        return Check(f"roofline vs {OP_CEILING[op]}", r.roofline if r else None, goal, "min", "",
                     "" if r else self.missing(wid))

    def speedup(self, wid: str, op: str, impl: str, peer: str, goal: float) -> Check:
        r, p = self.row(wid, op, impl), self.row(wid, op, peer)
        note = ""
        if r is None:
            note = self.missing(wid)
        elif p is None:
            pr = self.results[wid].get(op, peer)
            note = f"{peer}: {pr.error}" if pr is not None and pr.error else f"{peer} not measured"
        val = p.ms / r.ms if (r and p and r.ms and p.ms) else None
        return Check(f"speed-up over {peer}", val, goal, "min", "×", note)

    def call_us(self, wid: str, op: str, impl: str, goal_us: float) -> Check:
        r = self.row(wid, op, impl)
        return Check("median call", r.ms * 1e3 if r and r.ms else None, goal_us, "max", " µs",
                     "" if r else self.missing(wid))


def targets_table(targets: List[Target]) -> Tuple[Table, Dict[str, int]]:
    t = Table(["target", "workload", "criterion", "goal", "measured", "result"], "lllrrl")
    counts = {"PASS": 0, "FAIL": 0, "N/A": 0}
    for target in targets:
        for ch in target.checks:
            goal, val = ch.shown()
            t.add([target.tid, target.what, ch.what, goal, val, ch.status])
            counts[ch.status] += 1
    return t, counts
