"""Type stubs for ``fastsoftmax._native``, the Rust extension module (``src/python/``).

These functions are private: ``fastsoftmax._cpu`` brings every array to the layout they require
(C-contiguous, aligned, native-order float32 or float64, one dtype per call, the reduced axis last)
and they reduce over the last axis. With ``half="float16"`` or ``"bfloat16"`` the arrays are that
type's uint16 words instead, computed in float32 block by block; per-row results are then float32. An output left as None is allocated by the kernel. Called with
anything else they raise ``ValueError``/``TypeError``; they never crash.
"""

from typing import Any, Optional, Tuple

import numpy.typing as npt

_Array = npt.NDArray[Any]

__version__: str

def softmax(
    x: _Array, out: Optional[_Array], scale: float, log: bool, half: Optional[str] = None
) -> _Array:
    """``softmax(x * scale)`` (``log=True``: log-softmax) over the last axis, into `out` (which
    may be `x`) or a new array; returns the result. A `scale` that remembers its temperature
    (``_checks.InvTemperature``) is taken as the exact ``±1/T``."""

def softmax_backward(
    g: _Array, y: _Array, out: Optional[_Array], log: bool, half: Optional[str] = None
) -> _Array:
    """Vector-Jacobian product over the last axis of two arrays of one shape and dtype:
    ``y * (g - sum(g * y))``, or with ``log=True`` (`y` = log-softmax output)
    ``g - exp(y) * sum(g)``; into `out` (which may be `g` or `y`) or a new array."""

def logsumexp(
    x: _Array, out: Optional[_Array], scale: float, half: Optional[str] = None
) -> _Array:
    """``logsumexp(x * scale) / scale`` over the last axis, into `out` (shape ``x.shape[:-1]``)
    or a new array; returns the result (`scale` as in :func:`softmax`)."""

def logsumexp_b(
    x: _Array, b: _Array, scale: float, half: Optional[str] = None
) -> Tuple[_Array, _Array]:
    """SciPy's weighted logsumexp of ``x' = x * scale`` (the product rounded to `x`'s type, float32
    for the half types) over the last axis: ``(log|sum(b * exp(x'))|, sign(sum(b * exp(x'))))``;
    `b` has `x`'s shape and dtype."""

def cross_entropy(
    logits: _Array,
    target: _Array,
    weight: Optional[_Array],
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: Optional[float],
    reduction: str,
    want_grad: bool,
    out: Optional[_Array] = None,
    half: Optional[str] = None,
) -> Tuple[float, Optional[_Array], Optional[_Array]]:
    """The cross-entropy over the last axis of `logits` (int64 class indices, one per row, or
    soft labels of the logits' shape and dtype). Returns ``(total, losses, grad)``: `losses`
    (shape ``logits.shape[:-1]``) for ``reduction="none"`` only, `grad` when `want_grad` (into
    `out`, which may be `logits`, or a new array). With `half`, the logits, soft labels and
    gradient are that type's words; weights and per-row losses are float32."""

def entropy(
    p: _Array, q: Optional[_Array], from_logits: bool, scale: float, half: Optional[str] = None
) -> _Array:
    """Over the last axis: ``scale * H(p)``, or with `q` (same shape and dtype)
    ``scale * KL(p || q)``; `from_logits` uses the softmax of the rows. A new array of shape
    ``p.shape[:-1]``."""

def convert_half(src: _Array, dst: _Array, half: str) -> None:
    """``dst[...] = src`` converted: widened when `src` holds the uint16 words of `half`
    (``"float16"`` or ``"bfloat16"``) and `dst` is float32, rounded to nearest even the other way
    round; same size, both aligned, C-contiguous and at least 1-D."""

def set_num_threads(n: int) -> None:
    """Sets the number of worker threads (``ValueError`` if `n` < 1)."""

def get_num_threads() -> int:
    """The number of worker threads."""

def simd_backend() -> str:
    """The instruction set the kernels run on now."""

class LayoutError(ValueError):
    """An array the kernels cannot read or write as it is; the Python layer then makes the layout."""

def supported_backends() -> list[str]:
    """The instruction sets this CPU supports, lowest first."""

def _set_simd_backend(name: str) -> None:
    """Forces an instruction set (tests); ``ValueError`` if unknown or unsupported."""

__all__ = [
    "softmax",
    "softmax_backward",
    "logsumexp",
    "logsumexp_b",
    "cross_entropy",
    "entropy",
    "convert_half",
    "set_num_threads",
    "get_num_threads",
    "simd_backend",
    "supported_backends",
    "_set_simd_backend",
    "LayoutError",
    "__version__",
]
