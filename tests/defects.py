"""Known defects of issue 9 that the generated-input tests reproduce, and how tests refer to them.

While a defect's number is in ``OPEN``:
- its reproductions (tests/test_defects.py, tests/test_scipy_suite.py) are strict xfails: they fail
  the run as soon as the defect is fixed (XPASS), so the fix removes the number here;
- the general properties of tests/test_generated.py keep out of the inputs that trigger it (each
  such place asks ``is_open(n)``), so they test everything else meanwhile.
Removing a number therefore turns its reproductions into plain tests AND widens the generated inputs.
"""

from __future__ import annotations

import pytest

DEFECTS = {
    1: "a NaN in a row longer than 2048 elements is lost (the block recurrence skips a NaN block max)",
    2: "0-d softmax/log_softmax return a 0-d array, not a NumPy scalar; "
       "logsumexp(float32 a, b=int) is float32, not np.result_type's float64",
    3: "float32 with temperature != 1: x*(1/T) rounded in float32 breaks the 2e-6 accuracy bound",
    4: "soft labels (or label smoothing) putting mass on a -inf logit give NaN instead of +inf",
    5: "logsumexp with b over +inf entries of both signs gives inf instead of NaN (inf - inf)",
    6: "big-endian float16 input raises TypeError",
    7: "float32 softcap >= 32 loses a float32 step of the capped logit (a negative loss)",
    8: "cross_entropy_with_grad(o, q, out=q) with C-ordered soft labels q raises 'already borrowed'",
}

#: defects not fixed yet in this tree; the fix of defect N removes N
OPEN: frozenset[int] = frozenset()


def is_open(n: int) -> bool:
    return n in OPEN


def xfail(n: int, detail: str = "", condition: bool = True) -> pytest.MarkDecorator:
    """A strict xfail while defect ``n`` is open (and ``condition`` holds), else no mark."""
    reason = f"defect {n}: {DEFECTS[n]}" + (f" ({detail})" if detail else "")
    return pytest.mark.xfail(is_open(n) and condition, strict=True, reason=reason)
