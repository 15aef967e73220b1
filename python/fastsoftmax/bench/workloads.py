"""The row workloads S1-S5 and S1d, the operations timed on them, and the bytes each must move."""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Tuple

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


class Workload(NamedTuple):
    """A 2-D input: ``rows × cols`` of ``dtype``, and what it stands for."""

    n: int
    c: int
    dtype: str
    desc: str


WORKLOADS: Dict[str, Workload] = {
    "S1": Workload(2048, 32000, "float32", "a batch of LLM logits"),
    "S2": Workload(32768, 1000, "float32", "ImageNet-sized classification"),
    "S3": Workload(1_000_000, 10, "float32", "many tiny rows"),
    "S4": Workload(64, 10, "float32", "one small call: overhead dominates"),
    "S5": Workload(4, 1_048_576, "float32", "a few huge rows"),
    "S1d": Workload(2048, 32000, "float64", "double precision"),
}

# --quick: smaller shapes with the same character (S4 is unchanged).
QUICK_WORKLOADS: Dict[str, Workload] = {
    "S1": Workload(64, 32000, "float32", "a batch of LLM logits (quick: 64 rows)"),
    "S2": Workload(2048, 1000, "float32", "ImageNet-sized classification (quick: 2048 rows)"),
    "S3": Workload(50_000, 10, "float32", "many tiny rows (quick: 50k rows)"),
    "S4": Workload(64, 10, "float32", "one small call: overhead dominates"),
    "S5": Workload(4, 131_072, "float32", "a few huge rows (quick: 131,072 columns)"),
    "S1d": Workload(64, 32000, "float64", "double precision (quick: 64 rows)"),
}

OPS: Tuple[str, ...] = (
    "softmax",
    "log_softmax",
    "logsumexp",
    "cross_entropy",
    "cross_entropy_with_grad",
)

LABEL_DTYPE = np.int64  # PyTorch's F.cross_entropy needs int64 class indices; used for every impl.
LABEL_BYTES = np.dtype(LABEL_DTYPE).itemsize

# op -> (ceiling it is compared with, formula printed in the legend)
OP_CEILING: Dict[str, str] = {
    "softmax": "copy",
    "log_softmax": "copy",
    "logsumexp": "read",
    "cross_entropy": "read",
    "cross_entropy_with_grad": "copy",
}
OP_BYTES_FORMULA: Dict[str, str] = {
    "softmax": "N*C*s (read x) + N*C*s (write y)",
    "log_softmax": "N*C*s (read x) + N*C*s (write y)",
    "logsumexp": "N*C*s (read x) + N*s (write one value per row)",
    "cross_entropy": "N*C*s (read logits) + 8*N (read int64 labels); the scalar loss is not counted",
    "cross_entropy_with_grad": "N*C*s (read logits) + 8*N (read int64 labels) + N*C*s (write grad)",
}

# The spread of the generated logits: LLM-like, so that softmax outputs span many decades.
LOGIT_SCALE = 3.0
INPUT_SEED = 0


def bytes_moved(op: str, n: int, c: int, itemsize: int) -> int:
    """Bytes an ideal kernel must move: each input read once, each output written once."""
    nc = n * c * itemsize
    if op in ("softmax", "log_softmax"):
        return 2 * nc
    if op == "logsumexp":
        return nc + n * itemsize
    if op == "cross_entropy":
        return nc + n * LABEL_BYTES
    if op == "cross_entropy_with_grad":
        return 2 * nc + n * LABEL_BYTES
    raise ValueError(op)


def make_inputs(w: Workload, n_inputs: int) -> Tuple[List[Array], List[Array]]:
    """``n_inputs`` pairs of (logits, int64 labels uniform over the classes), the same on every run."""
    rng = np.random.default_rng(INPUT_SEED)
    dtype = np.dtype(w.dtype)
    xs: List[Array] = []
    ys: List[Array] = []
    for _ in range(n_inputs):
        xs.append((rng.standard_normal((w.n, w.c), dtype=np.float32) * LOGIT_SCALE).astype(dtype, copy=False))
        ys.append(rng.integers(0, w.c, size=w.n, dtype=LABEL_DTYPE))
    return xs, ys
