"""Type stubs for ``fastsoftmax._native``, the Rust extension module (``src/python.rs``).

These functions are private: ``fastsoftmax._api`` validates every argument and brings arrays to the
layout they require (C-contiguous, float32 or float64, 2-D unless stated, one dtype per call). Called
with anything else they raise ``ValueError``/``TypeError``; they never crash.
"""

from typing import Any, Optional, Tuple

import numpy.typing as npt

_Array = npt.NDArray[Any]

__version__: str

def softmax(x: _Array, out: _Array, scale: float, log: bool) -> None:
    """``out = softmax(x * scale)`` (``log=True``: log-softmax) over the rows of 2-D `x`; `out` has
    `x`'s shape and dtype and may be `x` itself."""

def softmax_fast(x: Any, out: Optional[Any], scale: float, log: bool) -> Optional[_Array]:
    """Softmax (or its log) of `x` times `scale` over the last axis, into `out` or a new array; `None`
    when the arrays are not in the layout the kernels read in place."""

def logsumexp(x: _Array, out: _Array, scale: float) -> None:
    """``out[r] = logsumexp(x[r] * scale) / scale`` for each row of 2-D `x`; `out` is 1-D."""

def logsumexp_fast(x: Any, scale: float, out: Any = None) -> Optional[_Array]:
    """``logsumexp(x * scale) / scale`` over the last axis into `out` (or a new array), or `None`
    (see `softmax_fast`)."""

def logsumexp_b(x: _Array, b: _Array, out: _Array, sign: _Array) -> None:
    """SciPy's weighted logsumexp per row: ``out = log|sum(b * exp(x))|``,
    ``sign = sign(sum(b * exp(x)))``; `b` has `x`'s shape."""

def cross_entropy(
    logits: _Array,
    target: _Array,
    weight: Optional[_Array],
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: Optional[float],
    reduction: str,
    grad: Optional[_Array] = None,
    losses: Optional[_Array] = None,
) -> float:
    """The cross-entropy of 2-D logits (hard int64 targets of shape (rows,) or soft targets of the
    logits' shape); the gradient goes to `grad` (which may be `logits`) and, for
    ``reduction="none"``, the per-row losses to `losses`. Returns the reduced loss."""

def cross_entropy_fast(
    logits: Any,
    target: Any,
    weight: Optional[Any],
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: Optional[float],
    reduction: str,
    want_grad: bool,
    out: Optional[Any] = None,
) -> Optional[Tuple[Any, Optional[_Array]]]:
    """The cross-entropy of 2-D C-contiguous logits with int64 labels (and its gradient when
    `want_grad`), or `None` for any other layout: ``(loss, grad or None)``."""

def softmax_backward(g: _Array, y: _Array, out: _Array, log: bool) -> None:
    """Vector-Jacobian product over the rows of 2-D arrays of one shape and dtype:
    ``out = y * (g - sum(g * y))``, or with ``log=True`` (`y` = log-softmax output)
    ``out = g - exp(y) * sum(g)``. `out` may be `g` or `y`."""

def entropy(
    p: _Array, q: Optional[_Array], out: _Array, from_logits: bool, scale: float
) -> None:
    """Per row of 2-D `p`: ``out[r] = scale * H(p[r])``, or with `q` (same shape and dtype)
    ``out[r] = scale * KL(p[r] || q[r])``; `from_logits` uses the softmax of the rows. `out` is
    1-D."""

def set_num_threads(n: int) -> None:
    """Sets the number of worker threads (``ValueError`` if `n` < 1)."""

def get_num_threads() -> int:
    """The number of worker threads."""

def simd_backend() -> str:
    """The instruction set the kernels run on now."""

def supported_backends() -> list[str]:
    """The instruction sets this CPU supports, lowest first."""

def _set_simd_backend(name: str) -> None:
    """Forces an instruction set (tests); ``ValueError`` if unknown or unsupported."""

__all__ = [
    "softmax",
    "softmax_fast",
    "logsumexp_fast",
    "cross_entropy_fast",
    "logsumexp",
    "logsumexp_b",
    "cross_entropy",
    "softmax_backward",
    "entropy",
    "set_num_threads",
    "get_num_threads",
    "simd_backend",
    "supported_backends",
    "_set_simd_backend",
    "__version__",
]
