"""The CuPy backend: checked arguments in, CUDA launches (``launch.py``, ``softmax.cu``) out.

Imported by ``fastsoftmax._api`` the first time a ``cupy.ndarray`` arrives (``import fastsoftmax``
never imports CuPy). Every function receives what `_api` has checked and returns CuPy arrays on the
input's device, queued on the current stream. Nothing here synchronises with the host: full
reductions come back as 0-d CuPy arrays, and the ``"mean"`` denominators (summed weights, counted
rows) are computed on the device and read by the kernel from device memory.

Out-of-range labels. Raising ``IndexError`` needs the labels on the host, which is a host
synchronisation. The choice made here: by default the check is done on the device and a row whose
label is outside ``[0, C)`` (and is not ``ignore_index``) gets a NaN loss and a NaN gradient row, so
the error is never silent (a "mean"/"sum" loss becomes NaN). Set ``FASTSOFTMAX_CUDA_CHECK_LABELS=1``
in the environment (read at each call) to get the CPU behaviour instead: one small device reduction
and ONE host synchronisation per call, and an ``IndexError`` naming the first bad label and its
position, raised before anything is written.

The backward passes, entropy and KL are CuPy array operations in the accumulation dtype.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Tuple

import cupy as cp
import numpy as np

from .. import _checks
from .._checks import CeOptions
from .._layout import Layout, Xp
from . import launch as L
from .launch import MODE_CE, MODE_LOGSOFTMAX, MODE_LSE, MODE_SOFTMAX, on_device

ARRAY_TYPE = cp.ndarray
XP = Xp(
    contig=lambda a, dtype: L.contig(a),  # the kernels read every float type as it is
    may_share=lambda a, b: bool(cp.may_share_memory(a, b)),
    address=lambda a: int(a.data.ptr),
    aligned=lambda a: True,
)


def asarray(x: Any, what: str = "x") -> Any:
    """`x` as a CuPy array: per-class weights may come from the host; anything else must already
    be on the device (``TypeError``)."""
    if isinstance(x, cp.ndarray):
        return x
    if what == "weight":
        try:
            return cp.asarray(np.asarray(x))
        except (TypeError, ValueError):
            raise TypeError("weight must be an array") from None
    return L.check_cupy(x, what)


def out_array(out: Any, shape: Tuple[int, ...], dtype: np.dtype) -> Any:
    out = _checks.out_array(out, cp.ndarray, "CuPy", shape, dtype)
    if out.device.id != cp.cuda.Device().id:
        raise ValueError("out is on another device than the input")
    return out


broadcast_to = cp.broadcast_to


def scalar(a: Any) -> Any:
    """A 0-d result stays a 0-d CuPy array (no host synchronisation)."""
    return a

copy_into = L.copy_into


def _rows(a: Any, lay: Layout) -> Any:
    return a.reshape(lay.rows, lay.cols)


def _result(lay: Layout, out: Optional[Any], run: Any) -> Any:
    """Runs ``run(dst2d)`` into `out` directly when its layout allows, else into a temporary that is
    then placed in the caller's shape (and copied into `out`)."""
    view = lay.direct_out(out)
    if view is not None:
        run(_rows(view, lay))
        return out
    y = L.empty(lay.xk.shape, lay.xk.dtype)
    run(_rows(y, lay))
    y = lay.restore(y)
    if out is not None:
        L.copy_into(out, y)
        return out
    return y


# --------------------------------------------------------------------------------------------------
# softmax family, logsumexp


@on_device
def softmax(
    x: Any, axes: Tuple[int, ...], scale: float, log: bool, out: Optional[Any], rdt: np.dtype
) -> Any:
    x = L.as_float(x)
    lay = Layout(x, axes, x.dtype, XP)
    if lay.rows * lay.cols == 0:
        return out if out is not None else L.empty(x.shape, rdt)
    mode = MODE_LOGSOFTMAX if log else MODE_SOFTMAX
    return _result(lay, out, lambda y2: L.run_rows(_rows(lay.xk, lay), y2, None, mode, scale))


@on_device
def logsumexp(
    x: Any, axes: Tuple[int, ...], b: Optional[Any], inv_t: float, res_shape: Tuple[int, ...],
    return_sign: bool, out: Optional[Any], rdt: np.dtype,
) -> Tuple[Any, Optional[Any]]:
    x = L.as_float(x)
    acc = L.acc_dtype(rdt)
    sign = None
    if b is None:
        lay = Layout(x if x.dtype == rdt else x.astype(rdt), axes, rdt, XP)
        res = cp.empty(lay.rows, dtype=acc)
        if lay.rows:
            if lay.cols == 0:
                res.fill(-np.inf)
            else:
                L.run_rows(_rows(lay.xk, lay), None, res, MODE_LSE, inv_t)
        if inv_t != 1.0:
            res *= acc.type(1.0 / inv_t)
    else:
        res, sign = _weighted_lse(x, L.as_float(b, "b"), axes, inv_t, acc)
        if not return_sign:
            res = cp.where(sign < 0, cp.nan, res)
        sign = L.from_acc(sign.astype(acc, copy=False), rdt).reshape(res_shape)
    res = L.from_acc(res.astype(acc, copy=False), rdt).reshape(res_shape)
    if out is not None:
        L.copy_into(out, res)
        res = out
    return res, sign


def _weighted_lse(x: Any, b: Any, axes: Tuple[int, ...], inv_t: float, acc: np.dtype) -> Any:
    """SciPy's weighted logsumexp per row with CuPy operations: `(log|Σ b·exp(x/T)|·T, sign)`."""
    xa = L.to_acc(x).astype(acc, copy=False)
    ba = cp.ascontiguousarray(L.to_acc(b).astype(acc, copy=False))
    lx, lb = Layout(xa, axes, acc, XP), Layout(ba, axes, acc, XP)
    o, bb = _rows(lx.xk, lx) * acc.type(inv_t), _rows(lb.xk, lb)
    masked = cp.where(bb != 0, o, -cp.inf)
    m = masked.max(axis=1) if lx.cols else cp.full(lx.rows, -cp.inf, dtype=acc)
    shift = cp.where(cp.isfinite(m), m, 0)
    s = cp.where(bb != 0, bb * cp.exp(masked - shift[:, None]), 0).sum(axis=1)
    nan_in = (cp.isnan(o) & (bb != 0)).any(axis=1) | cp.isnan(bb).any(axis=1)
    res = cp.where(cp.isposinf(m), cp.inf, shift + cp.log(cp.abs(s)))
    sign = cp.where(cp.isposinf(m), 1.0, cp.sign(s).astype(acc))
    res, sign = cp.where(nan_in, cp.nan, res), cp.where(nan_in, cp.nan, sign)
    if inv_t != 1.0:
        res = res * acc.type(1.0 / inv_t)
    return res, sign


def sign_of_lse(res: Any) -> Any:
    """The sign of an unweighted sum of exponentials from its log: 1, 0 for -inf, NaN for NaN."""
    r = L.to_acc(res)
    s = cp.where(cp.isnan(r), cp.nan, cp.where(r == -cp.inf, 0.0, 1.0)).astype(r.dtype)
    return L.from_acc(s, res.dtype)


# --------------------------------------------------------------------------------------------------
# cross-entropy family


def _labels_checked() -> bool:
    return os.environ.get("FASTSOFTMAX_CUDA_CHECK_LABELS", "") not in ("", "0")


def _hard_labels(target: Any, ignore: int, classes: int) -> Tuple[Any, int]:
    """int64 labels (beyond-int64 ones made out of range) and the ignore_index to pass."""
    t = target.reshape(-1)
    if t.dtype == np.uint64:
        # labels beyond int64 become -1 (out of range) rather than wrapping to a valid class
        t = cp.where(t > np.uint64(np.iinfo(np.int64).max), np.int64(-1), t.astype(np.int64))
    t = cp.ascontiguousarray(t, dtype=np.int64)
    if ignore < -(2**63) or ignore >= 2**63:
        ignore = -(2**63)  # cannot match any int64 label... except this one:
        t = cp.where(t == ignore, np.int64(-1), t)  # keep it out of range
    if _labels_checked() and t.size:
        bad = (t != ignore) & ((t < 0) | (t >= classes))
        pos = int(cp.argmax(bad))  # the one host synchronisation
        if bool(bad[pos]):
            raise IndexError(
                f"target {int(t[pos])} at position {pos} is out of bounds for {classes} classes"
            )
    return t, ignore


def _coefficients(t: Optional[Any], w: Optional[Any], rows: int, classes: int, ignore: int,
                  mean: bool, acc: np.dtype) -> Any:
    """The device-side denominators of "mean" and the weight sum: `[1/Σw_y, 1/n, Σw]`."""
    coef = cp.empty(3, dtype=acc)
    k = L.kernel(f"fs_ce_coef<{'double' if acc == np.float64 else 'float'}>")
    k((1,), (1024,), (
        np.uint64(0 if t is None else t.data.ptr), np.uint64(0 if w is None else w.data.ptr),
        np.int64(rows), np.int64(classes), np.int64(ignore), np.int32(1 if mean else 0), coef,
    ))
    return coef


@on_device
def cross_entropy(
    logits: Any, target: Any, soft: bool, weight: Optional[Any], cax: int, opts: CeOptions,
    want_grad: bool, out: Optional[Any], rdt: np.dtype,
) -> Tuple[Any, Any]:
    logits = L.as_float(logits, "logits")
    dt = logits.dtype
    acc = L.acc_dtype(dt)
    lay = Layout(logits, (cax,), dt, XP)
    rows, C = lay.rows, lay.cols
    ignore = opts.ignore_index
    if soft:
        t = _rows(Layout(L.to_acc(target).astype(acc, copy=False), (cax,), acc, XP).xk, lay)
    else:
        t, ignore = _hard_labels(target, ignore, C)
    w = None if weight is None else cp.ascontiguousarray(L.to_acc(weight).astype(acc, copy=False))
    mean = opts.reduction == "mean"
    coef = None
    if rows and (mean or (w is not None and (opts.label_smoothing > 0 or soft))):
        coef = _coefficients(None if soft else t, w, rows, C, ignore, mean, acc)
    losses = cp.empty(rows, dtype=acc)

    def run(g2: Optional[Any]) -> None:
        if rows and C:
            L.run_rows(
                _rows(lay.xk, lay), g2, losses, MODE_CE, 1.0,
                tgt=None if soft else t, q=t if soft else None, w=w, coef=coef,
                ignore_index=ignore, eps=opts.label_smoothing, zl=opts.z_loss,
                cap=0.0 if opts.softcap is None else opts.softcap,
            )
        elif rows:
            # No class to predict: a counted hard label is out of range (NaN), soft rows add 0.
            losses[...] = 0 if soft else cp.where(t == ignore, 0, cp.nan).astype(acc)

    grad = None
    if not want_grad:
        run(None)
    elif rows * C == 0:
        run(None)
        grad = out if out is not None else L.empty(logits.shape, rdt)
    else:
        grad = _result(lay, out, run)
    if opts.reduction == "none":
        return L.from_acc(losses, dt).reshape(lay.batch_shape), grad
    total = losses.sum() if rows else cp.zeros((), dtype=acc)
    return L.from_acc(total, dt), grad


# --------------------------------------------------------------------------------------------------
# backward passes, entropy, KL (CuPy array operations in the accumulation dtype, on the device)


def _write(r: Any, rdt: np.dtype, out: Optional[Any]) -> Any:
    res = L.from_acc(r.astype(L.acc_dtype(rdt), copy=False), rdt)
    if out is not None:
        L.copy_into(out, res)
        return out
    return res


@on_device
def softmax_backward(
    g: Any, y: Any, ax: int, log: bool, out: Optional[Any], rdt: np.dtype
) -> Any:
    acc = L.acc_dtype(rdt)
    ga = L.to_acc(L.as_float(g, "grad_output")).astype(acc, copy=False)
    ya = L.to_acc(L.as_float(y, "y")).astype(acc, copy=False)
    if log:
        return _write(ga - cp.exp(ya) * ga.sum(axis=ax, keepdims=True), rdt, out)
    return _write(ya * (ga - (ga * ya).sum(axis=ax, keepdims=True)), rdt, out)


def _log_softmax_acc(x: Any, ax: int) -> Any:
    """log_softmax in the accumulation dtype (half inputs are widened first)."""
    xa = L.to_acc(x)
    return softmax(xa, (ax,), 1.0, True, None, xa.dtype)


@on_device
def entropy(
    p: Any, q: Optional[Any], ax: int, from_logits: bool, scale: float, rdt: np.dtype
) -> Any:
    acc = L.acc_dtype(rdt)
    pa = L.as_float(p, "p")
    if q is None:
        if from_logits:
            ls = _log_softmax_acc(pa, ax)
            pr = cp.exp(ls)
            # A NaN row (NaN, +inf or only -inf logits) stays NaN, as on the CPU.
            terms = -cp.where(pr > 0, pr * ls, cp.where(cp.isnan(pr), cp.nan, 0))
        else:
            P = L.to_acc(pa).astype(acc, copy=False)
            # SciPy's entr: -p log p for p > 0, 0 at 0, -inf for p < 0, NaN for NaN.
            e = cp.where(P > 0, -P * cp.log(cp.where(P > 0, P, 1)), cp.where(P == 0, 0, -cp.inf))
            terms = cp.where(cp.isnan(P), cp.nan, e)
    else:
        qa = L.as_float(q, "q")
        if from_logits:
            lp = _log_softmax_acc(pa, ax).astype(acc, copy=False)
            lq = _log_softmax_acc(qa, ax).astype(acc, copy=False)
            pr = cp.exp(lp)
            terms = cp.where(pr > 0, pr * (lp - lq), cp.where(cp.isnan(pr), cp.nan, 0))
        else:
            P = L.to_acc(pa).astype(acc, copy=False)
            Q = L.to_acc(qa).astype(acc, copy=False)
            t = cp.where(
                (P > 0) & (Q > 0), P * cp.log(P / Q), cp.where((P == 0) & (Q >= 0), 0, cp.inf)
            )
            terms = cp.where(cp.isnan(P) | cp.isnan(Q), cp.nan, t)
    h = terms.sum(axis=ax)
    if scale != 1.0:
        h = h * acc.type(scale)
    return L.from_acc(h.astype(acc, copy=False), rdt)
