"""How one row of the table is timed: a warm-up, then the median of several calls."""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

# Smallest duration the repetition estimate divides by (a call faster than the clock's resolution).
MIN_ESTIMATE_S = 1e-9


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
    samples, long calls exactly ``min_reps``. The garbage collector is off while timing.
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
        est = max(perf() - t0, MIN_ESTIMATE_S)
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
