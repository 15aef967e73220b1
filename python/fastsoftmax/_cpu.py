"""The NumPy backend: brings checked arguments to the layout of the native kernels and calls them.

Every function receives arguments `_api` has already checked (axes normalised, options parsed,
`out` of the right shape and dtype), builds one `Layout` per input, calls the one native entry of
the operation, and places the result where the caller wants it. Half-precision inputs (float16,
bfloat16) are computed in float32: every operation hands the 16-bit words to the same native entry
(``half=`` names their type), which widens them block by block into a float32 scratch that stays in
cache and narrows row-shaped results straight into the output (one pass over the half-size memory).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from . import _native
from . import _checks
from ._checks import F32, CeOptions, compute_dtype, is_half
from ._layout import Layout, Xp

I64 = np.dtype(np.int64)
_U16 = np.dtype(np.uint16)
_I64_MAX = np.iinfo(np.int64).max


def _contig(a: Any, dtype: np.dtype) -> np.ndarray:
    """`a` as a C-contiguous, aligned, native-order array of `dtype` (no copy when it is one)."""
    if a.dtype == dtype:
        flags = a.flags
        if flags.c_contiguous and flags.aligned:
            return a  # type: ignore[no-any-return]
    if dtype == F32 and is_half(a.dtype):
        # Widened by the kernels' own conversion (NumPy's is several times slower).
        dst = np.empty(a.shape, F32)
        _native.convert_half(_flat(a).view(_U16), dst.reshape(-1), a.dtype.name)
        return dst
    return np.require(a, dtype=dtype, requirements=("C", "A"))


def _cast(y: Any, rdt: np.dtype) -> np.ndarray:
    """`y` in the result dtype `rdt`: float32 results of half inputs are rounded to nearest even
    by the kernels' conversion (NumPy's takes a slow path for results that are subnormal in
    float16, such as tiny probabilities)."""
    y = np.asarray(y)
    if y.dtype == rdt:
        return y  # type: ignore[no-any-return]
    if y.dtype == F32 and is_half(rdt):
        res = np.empty(y.shape, rdt)
        _native.convert_half(_flat(y), res.view(_U16).reshape(-1), rdt.name)
        return res
    return y.astype(rdt)  # type: ignore[no-any-return]


def _flat(a: np.ndarray) -> np.ndarray:
    """`a` as a 1-D, C-contiguous, aligned array (a view when it is one)."""
    return np.require(a, requirements=("C", "A")).reshape(-1)


def _half(rdt: np.dtype, *inputs: Optional[np.ndarray]) -> bool:
    """Whether the blocked half route takes these inputs: the result dtype is a half type and every
    input holds values exact in it (that type in any byte order, or bools and bytes), so reading
    them as that type first changes no answer."""
    if not is_half(rdt):
        return False
    for a in inputs:
        if a is None:
            continue
        dt = a.dtype
        if not (dt == rdt or (dt.kind in "biu" and dt.itemsize == 1)
                or (dt.kind == "f" and dt.newbyteorder("=") == rdt)):
            return False
    return True


def _words(a: Any) -> Any:
    """A C-contiguous half array as the 16-bit words the kernels take (None stays None); the
    kernels are told the type with ``half=dtype.name``."""
    return None if a is None else a.view(_U16)


def _address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


XP = Xp(
    contig=_contig,
    may_share=lambda a, b: bool(np.may_share_memory(a, b)),
    address=_address,
    aligned=lambda a: bool(a.flags.aligned),
)


def out_array(out: Any, shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return _checks.out_array(out, np.ndarray, "NumPy", shape, dtype)  # type: ignore[no-any-return]


def scalar(a: np.ndarray) -> Any:
    """A 0-d result as a NumPy scalar."""
    return a[()]


def copy_into(out: np.ndarray, src: Any) -> None:
    np.copyto(out, _cast(src, out.dtype), casting="unsafe")



def asarray(x: Any, what: str = "x") -> np.ndarray:
    """`x` as a NumPy array; arrays of other libraries are a ``TypeError``."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.split(".", 1)[0] == "cupy":
        raise TypeError(f"{what} is a CuPy array while the other arguments are on the CPU")
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} cannot be converted to a NumPy array: {e}") from None


# --------------------------------------------------------------------------------------------------
# the common call: `_api` first hands a NumPy array to the kernels as it is; when its layout is not
# theirs (dtype, order, alignment, shape of `out` or of the labels) they raise `LayoutError` before
# touching anything, and `_api` takes the general path, which makes the layout.

LayoutError = _native.LayoutError
softmax_plain = _native.softmax


def logsumexp_plain(x: np.ndarray, inv_t: float, out: Optional[np.ndarray]) -> Any:
    r = _native.logsumexp(x, out, inv_t)
    return r[()] if out is None and r.ndim == 0 else r


def ce_plain(
    logits: np.ndarray, target: Any, opts: CeOptions, want_grad: bool, out: Optional[np.ndarray]
) -> Tuple[Any, Any]:
    total, losses, grad = _native.cross_entropy(
        logits, target, None, opts.ignore_index, opts.label_smoothing, opts.z_loss, opts.softcap,
        opts.reduction, want_grad, out,
    )
    if losses is None:
        return logits.dtype.type(total), grad
    return (losses[()] if losses.ndim == 0 else losses), grad


def _place(lay: Layout, yk: np.ndarray, out: Optional[np.ndarray], rdt: np.dtype) -> Any:
    """A result computed into a temporary shaped like `lay.xk`: copied into `out`, or returned in
    the input's shape and the result dtype."""
    y = lay.restore(yk)
    if out is not None:
        copy_into(out, y)
        return out
    return _cast(y, rdt)


def _rowwise(
    lay: Layout, out: Optional[np.ndarray], rdt: np.dtype, call: Any,
    others: Tuple[Any, ...] = (), in_place: Tuple[Any, ...] = (), empty: Tuple[int, ...] = (),
) -> Any:
    """Runs ``call(dst)`` (dst: an array shaped like `lay.xk`, or None to let the kernel allocate)
    writing `out` directly when it can, and returns the result; an input with no elements gives
    `out`, or an empty array of shape `empty`, without a call."""
    if lay.rows * lay.cols == 0:
        return out if out is not None else np.empty(empty, dtype=rdt)
    if out is None:
        y = call(None)
        if lay.as_is and y.dtype == rdt:
            return y  # the common call: the kernel's own array is the result
        return _place(lay, y, None, rdt)
    view = lay.direct_out(out, others, in_place)
    if view is not None:
        call(view)
        return out
    return _place(lay, call(None), out, rdt)


# --------------------------------------------------------------------------------------------------
# softmax family, logsumexp


def softmax(
    x: np.ndarray, axes: Tuple[int, ...], scale: float, log: bool, out: Optional[np.ndarray],
    rdt: np.dtype,
) -> Any:
    half = _half(rdt, x)
    lay = Layout(x, axes, rdt if half else compute_dtype(rdt), XP)

    def call(dst: Optional[np.ndarray]) -> np.ndarray:
        if not half:
            return _native.softmax(lay.xk, dst, scale, log)
        return _native.softmax(
            _words(lay.xk), _words(dst), scale, log, half=rdt.name).view(rdt)

    return _rowwise(lay, out, rdt, call, empty=x.shape)


def logsumexp(
    x: np.ndarray, axes: Tuple[int, ...], b: Optional[np.ndarray], inv_t: float,
    res_shape: Tuple[int, ...], return_sign: bool, out: Optional[np.ndarray], rdt: np.dtype,
) -> Tuple[Any, Optional[np.ndarray]]:
    """`(T·log|Σ b·exp(x/T)|, sign or None)` over `axes`, shaped `res_shape`, into `out` when
    given. Without `b` every term is positive and the sign is None; with it, a negative sum gives
    NaN unless `return_sign`."""
    kdt = compute_dtype(rdt)
    half = _half(rdt, x, b)
    lay = Layout(x, axes, rdt if half else kdt, XP)
    if b is None:
        if half:
            res = _native.logsumexp(_words(lay.xk), None, inv_t, half=rdt.name)
            return _finish(res, res_shape, out, rdt), None
        if out is not None and out.dtype == kdt and out.flags.c_contiguous and out.flags.aligned:
            _native.logsumexp(lay.xk, out.reshape(lay.xk.shape[:-1]), inv_t)
            return out, None
        return _finish(_native.logsumexp(lay.xk, None, inv_t), res_shape, out, rdt), None
    bk = Layout(b, axes, rdt if half else kdt, XP).xk
    # `x / T` is rounded to the compute type (float32 for the half types) before SciPy's sum.
    if half:
        res, sign = _native.logsumexp_b(_words(lay.xk), _words(bk), inv_t, half=rdt.name)
    else:
        res, sign = _native.logsumexp_b(lay.xk, bk, inv_t)
    if inv_t != 1.0:
        res *= kdt.type(1.0 / inv_t)
    if not return_sign:
        res[sign < 0] = np.nan
    return _finish(res, res_shape, out, rdt), _finish(sign, res_shape, None, rdt)


def _finish(r: np.ndarray, shape: Tuple[int, ...], out: Optional[np.ndarray], rdt: np.dtype) -> Any:
    """A per-row result reshaped, in the result dtype, copied into `out` when given; a NumPy
    scalar when 0-d."""
    r = _cast(r.reshape(shape), rdt)
    if out is not None:
        copy_into(out, r)
        return out
    return r[()] if r.ndim == 0 else r


# --------------------------------------------------------------------------------------------------
# cross-entropy family


def cross_entropy(
    logits: np.ndarray, target: np.ndarray, soft: bool, weight: Optional[np.ndarray], cax: int,
    opts: CeOptions, want_grad: bool, out: Optional[np.ndarray], rdt: np.dtype,
) -> Tuple[Any, Any]:
    """`(loss, grad or None)`: the loss a NumPy scalar (an array of the batch shape for "none")."""
    kdt = compute_dtype(rdt)
    # Half logits (and soft labels) stay 16-bit: the kernels widen them block by block.
    half = _half(rdt, logits, target if soft else None)
    lay = Layout(logits, (cax,), rdt if half else kdt, XP)
    if soft:
        t = Layout(target, (cax,), rdt if half else kdt, XP).xk
    else:
        t = target.reshape(-1)
        if t.dtype == np.uint64 and t.size and t.max() > _I64_MAX:
            pos = int(np.argmax(t > _I64_MAX))
            raise IndexError(
                f"target {int(t[pos])} at position {pos} is out of bounds for {lay.cols} classes"
            )
        t = _contig(t, I64).reshape(lay.xk.shape[:-1])
    w = None if weight is None else _contig(weight, kdt)
    res: dict[str, Any] = {}

    def call(dst: Optional[np.ndarray]) -> Any:
        x, tk = (_words(lay.xk), _words(t) if soft else t) if half else (lay.xk, t)
        total, losses, grad = _native.cross_entropy(
            x, tk, w, opts.ignore_index, opts.label_smoothing, opts.z_loss, opts.softcap,
            opts.reduction, want_grad, _words(dst) if half else dst,
            half=rdt.name if half else None,
        )
        res["loss"] = rdt.type(total) if losses is None else _finish(losses, lay.batch_shape, None, rdt)
        return grad if grad is None or not half else grad.view(rdt)

    if not want_grad:
        call(None)
        return res["loss"], None
    if lay.rows * lay.cols == 0:
        call(None)
        return res["loss"], out if out is not None else np.empty(logits.shape, dtype=rdt)
    # The gradient may overwrite the logits (in place), never the labels or weights.
    grad = _rowwise(lay, out, rdt, call, others=(t, w))
    return res["loss"], grad


# --------------------------------------------------------------------------------------------------
# backward passes, entropy and KL


def softmax_backward(
    g: np.ndarray, y: np.ndarray, ax: int, log: bool, out: Optional[np.ndarray], rdt: np.dtype
) -> Any:
    half = _half(rdt, g, y)
    kdt = rdt if half else compute_dtype(rdt)
    lg = Layout(g, (ax,), kdt, XP)
    yk = Layout(y, (ax,), kdt, XP).xk

    def call(dst: Optional[np.ndarray]) -> np.ndarray:
        if not half:
            return _native.softmax_backward(lg.xk, yk, dst, log)
        return _native.softmax_backward(
            _words(lg.xk), _words(yk), _words(dst), log, half=rdt.name).view(rdt)

    return _rowwise(lg, out, rdt, call, in_place=(yk,), empty=g.shape)


def entropy(
    p: np.ndarray, q: Optional[np.ndarray], ax: int, from_logits: bool, scale: float,
    rdt: np.dtype,
) -> Any:
    half = _half(rdt, p, q)
    kdt = rdt if half else compute_dtype(rdt)
    lp = Layout(p, (ax,), kdt, XP)
    qk = None if q is None else Layout(q, (ax,), kdt, XP).xk
    if half:
        r = _native.entropy(_words(lp.xk), _words(qk), from_logits, scale, half=rdt.name)
    else:
        r = _native.entropy(lp.xk, qk, from_logits, scale)
    return _finish(r, lp.batch_shape, None, rdt)


def broadcast_to(a: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(a, shape)


def sign_of_lse(res: Any) -> Any:
    """The sign of an unweighted sum of exponentials from its log: 1, or 0 for an empty or all
    -inf sum, NaN for NaN (SciPy's convention)."""
    r = np.asarray(res)
    s = np.where(np.isnan(r), np.nan, np.where(r == -np.inf, 0.0, 1.0)).astype(r.dtype)
    return s[()] if s.ndim == 0 else s
