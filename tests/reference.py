"""Independent float64 NumPy references and the accuracy checks of docs/api.md §4.

Nothing here calls fastsoftmax. Every reference computes in float64 from the inputs cast to float64
(docs/api.md §4: "reference = the same formula in float64").
"""

from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------------------------
# Accuracy bounds (docs/api.md §4)
# ----------------------------------------------------------------------------------------------

#: relative error bound on probabilities, absolute*max(1,|ref|) bound on logs and losses
TOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-14}
#: softmax outputs at or above this are held to the relative bound
PROB_FLOOR = {np.dtype(np.float32): 1e-30, np.dtype(np.float64): 1e-300}


def tol(dtype) -> float:
    return TOL[np.dtype(dtype)]


def _check_special(actual: np.ndarray, expected: np.ndarray, ctx: str) -> np.ndarray:
    """NaN where the reference is NaN, the same infinity where it is infinite; returns the finite mask."""
    assert actual.shape == expected.shape, f"{ctx}: shape {actual.shape} != {expected.shape}"
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    nan_e = np.isnan(e)
    nan_a = np.isnan(a)
    bad = np.argwhere(nan_e != nan_a)
    assert bad.size == 0, (
        f"{ctx}: NaN mismatch at {bad[:5].tolist()}: actual {a[tuple(bad[0])]} expected {e[tuple(bad[0])]}"
    )
    inf_e = np.isinf(e)
    bad = np.argwhere(inf_e & (a != e))
    assert bad.size == 0, (
        f"{ctx}: infinity mismatch at {bad[:5].tolist()}: actual {a[tuple(bad[0])]} expected {e[tuple(bad[0])]}"
    )
    bad = np.argwhere(~inf_e & ~nan_e & ~np.isfinite(a))
    assert bad.size == 0, f"{ctx}: non-finite output at {bad[:5].tolist()} where the reference is finite"
    return ~nan_e & ~inf_e


def assert_prob_close(actual, expected, dtype, ctx: str = "", rel: float | None = None) -> None:
    """softmax-like outputs: relative error <= rel for every reference output >= the floor."""
    dtype = np.dtype(dtype)
    rel = tol(dtype) if rel is None else rel
    floor = PROB_FLOOR[dtype]
    actual = np.asarray(actual)
    fin = _check_special(actual, np.asarray(expected), ctx)
    a = actual.astype(np.float64)[fin]
    e = np.asarray(expected, dtype=np.float64)[fin]
    big = e >= floor
    err = np.zeros_like(e)
    err[big] = np.abs(a[big] - e[big]) / e[big]
    worst = float(err.max()) if err.size else 0.0
    assert worst <= rel, f"{ctx}: softmax relative error {worst:.3g} > {rel:.3g}"
    small = ~big
    if small.any():
        # below the floor only the absolute size matters
        abs_err = float(np.abs(a[small] - e[small]).max())
        assert abs_err <= floor * rel * 2 + np.finfo(dtype).tiny, f"{ctx}: tiny outputs off by {abs_err:.3g}"
    assert np.all(a >= 0), f"{ctx}: negative probability"


def assert_log_close(actual, expected, dtype, ctx: str = "", atol: float | None = None) -> None:
    """logs and losses: |actual - ref| <= atol * max(1, |ref|)."""
    dtype = np.dtype(dtype)
    atol = tol(dtype) if atol is None else atol
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    fin = _check_special(actual, expected, ctx)
    a = actual.astype(np.float64)[fin]
    e = expected[fin]
    if e.size == 0:
        return
    err = np.abs(a - e) / np.maximum(1.0, np.abs(e))
    i = int(np.argmax(err))
    assert err[i] <= atol, (
        f"{ctx}: error {err[i]:.3g} > {atol:.3g} (actual {a[i]!r}, reference {e[i]!r}, flat index {i})"
    )


def assert_grad_close(actual, expected, dtype, ctx: str = "", scale: float | None = None) -> None:
    """Gradients: absolute error relative to the largest gradient entry (the row scale)."""
    dtype = np.dtype(dtype)
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    fin = _check_special(actual, expected, ctx)
    a = actual.astype(np.float64)[fin]
    e = expected[fin]
    if e.size == 0:
        return
    if scale is None:
        scale = float(np.abs(e).max())
    scale = max(scale, np.finfo(np.float64).tiny)
    # a gradient is a softmax minus a target: the softmax bound, a few roundings for the combination
    bound = 8 * tol(dtype) * scale
    err = np.abs(a - e)
    i = int(np.argmax(err))
    assert err[i] <= bound, (
        f"{ctx}: gradient error {err[i]:.3g} > {bound:.3g} (actual {a[i]!r}, reference {e[i]!r}, flat index {i})"
    )


# ----------------------------------------------------------------------------------------------
# softmax family
# ----------------------------------------------------------------------------------------------


def _axes(ndim: int, axis) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(a % ndim for a in axis)


def _rows(x, axes):
    """Move `axes` last and flatten them: returns (R, K) array and the kept shape."""
    keep = [i for i in range(x.ndim) if i not in axes]
    xt = np.transpose(x, keep + list(axes))
    kept_shape = tuple(x.shape[i] for i in keep)
    K = int(np.prod([x.shape[i] for i in axes], dtype=np.int64))
    R = int(np.prod(kept_shape, dtype=np.int64))
    return xt.reshape(R, K), kept_shape


def _restore(vals, x_shape, axes, kept_shape, keepdims):
    vals = vals.reshape(kept_shape)
    if keepdims:
        vals = vals.reshape([1 if i in axes else s for i, s in enumerate(x_shape)])
    return vals


def ref_logsumexp(x, axis=-1, b=None, keepdims=False, temperature=1.0, return_sign=False):
    """T * log(sum(b * exp(x / T))) in float64, the largest term split off and log1p used.

    Without return_sign a negative sum gives NaN (SciPy's rule); with it, (log|sum|, sign).
    """
    x = np.asarray(x, dtype=np.float64) / temperature
    if b is not None:
        shape = np.broadcast_shapes(x.shape, np.shape(b))
        b = np.broadcast_to(np.asarray(b, dtype=np.float64), shape)
        x = np.broadcast_to(x, shape)
    axes = _axes(x.ndim, axis)
    xr, kept = _rows(x, axes)
    br = None if b is None else _rows(b, axes)[0]
    R, K = xr.shape
    out = np.empty(R)
    sign = np.ones(R)
    for r in range(R):
        row = xr[r]
        if br is not None:
            mask = br[r] != 0
            row, brow = row[mask], br[r][mask]
        else:
            brow = None
        if np.isnan(row).any():
            out[r], sign[r] = np.nan, np.nan
            continue
        if row.size == 0 or np.all(np.isneginf(row)):
            out[r] = -np.inf
            sign[r] = 0.0 if brow is not None else 1.0
            continue
        m = row.max()
        if np.isposinf(m):
            s = np.sum(brow[np.isposinf(row)]) if brow is not None else 1.0
            out[r] = np.inf if s != 0 else np.nan
            sign[r] = np.sign(s) if s != 0 else np.nan
            continue
        k = int(np.argmax(row))
        e = np.exp(row - m)
        if brow is None:
            e[k] = 0.0
            out[r] = m + np.log1p(np.sum(e))
        else:
            bm = brow[k]
            e = e * brow
            e[k] = 0.0
            s = bm + np.sum(e)
            if s == 0:
                out[r], sign[r] = -np.inf, 0.0
                continue
            out[r] = m + np.log(abs(bm)) + np.log1p(np.sum(e) / bm) if abs(np.sum(e) / bm) < 0.5 and s * bm > 0 \
                else m + np.log(abs(s))
            sign[r] = np.sign(s)
    out = out * temperature
    out = _restore(out, x.shape, axes, kept, keepdims)
    sign = _restore(sign, x.shape, axes, kept, keepdims)
    if return_sign:
        return out, sign
    return np.where(sign < 0, np.nan, out)


def ref_log_softmax(x, axis=-1, temperature=1.0):
    x = np.asarray(x, dtype=np.float64)
    axes = _axes(x.ndim, axis)
    if x.size == 0:
        return x.copy()
    xt = x / temperature
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(xt, axis=axes, keepdims=True)
        m_safe = np.where(np.isfinite(m), m, 0.0)
        d = xt - m_safe
        s = np.sum(np.exp(d), axis=axes, keepdims=True)
        out = d - np.log(s)
    bad = ~np.isfinite(m) | np.any(np.isnan(xt), axis=axes, keepdims=True)
    out = np.where(bad, np.nan, out)
    return out


def ref_softmax(x, axis=-1, temperature=1.0):
    x = np.asarray(x, dtype=np.float64)
    axes = _axes(x.ndim, axis)
    if x.size == 0:
        return x.copy()
    xt = x / temperature
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(xt, axis=axes, keepdims=True)
        m_safe = np.where(np.isfinite(m), m, 0.0)
        e = np.exp(xt - m_safe)
        out = e / np.sum(e, axis=axes, keepdims=True)
    bad = ~np.isfinite(m) | np.any(np.isnan(xt), axis=axes, keepdims=True)
    return np.where(bad, np.nan, out)


def ref_softmin(x, axis=-1, temperature=1.0):
    return ref_softmax(-np.asarray(x, dtype=np.float64), axis=axis, temperature=temperature)


# ----------------------------------------------------------------------------------------------
# cross-entropy (PyTorch semantics as docs/api.md §1 states them)
# ----------------------------------------------------------------------------------------------


def _to_rows(logits, target, axis):
    """Move the class axis last and flatten: (N, C) logits, (N,) or (N, C) target."""
    o = np.moveaxis(np.asarray(logits, dtype=np.float64), axis, -1)
    C = o.shape[-1]
    t = np.asarray(target)
    soft = np.issubdtype(t.dtype, np.floating)
    if soft:
        t = np.moveaxis(t.astype(np.float64), axis, -1).reshape(-1, C)
    else:
        t = t.reshape(-1).astype(np.int64)
    return o.reshape(-1, C), t, soft, o.shape[:-1]


def ref_cross_entropy_parts(logits, target, *, axis=-1, weight=None, ignore_index=-100,
                            label_smoothing=0.0, z_loss=0.0, softcap=None, chain=True):
    """Per-row losses (N,), the per-row gradient of each row loss (N, C), and the mean denominators.

    Returns (ce_rows, z_rows, g_ce, g_z, ce_den, z_den, row_shape, soft).
    ce_rows / g_ce: the (weighted, smoothed) cross-entropy part; z_rows / g_z: the z-loss part.
    ce_den: sum(weight[y]) over non-ignored rows (hard) or N (soft); z_den: non-ignored row count.
    The gradients are with respect to the raw logits (softcap's chain rule included unless chain=False).
    """
    o_raw, t, soft, row_shape = _to_rows(logits, target, axis)
    N, C = o_raw.shape
    if softcap is not None:
        th = np.tanh(o_raw / softcap)
        o = softcap * th
        with np.errstate(over="ignore"):
            dcap = 1.0 / np.cosh(o_raw / softcap) ** 2  # 1 - tanh^2 without its cancellation
    else:
        o = o_raw
        dcap = np.ones_like(o)
    w = np.ones(C) if weight is None else np.asarray(weight, dtype=np.float64)
    eps = float(label_smoothing)
    logp = ref_log_softmax(o, axis=-1) if N else np.zeros((0, C))
    p = np.exp(logp)
    lse = ref_logsumexp(o, axis=-1) if N else np.zeros(0)
    if soft:
        q = t * (1.0 - eps) + eps / C
        with np.errstate(invalid="ignore"):
            ce = -np.sum(np.where(w * q == 0, 0.0, w * q * logp), axis=-1)
        valid = np.ones(N, dtype=bool)
        g = np.sum(w * q, axis=-1, keepdims=True) * p - w * q
        ce_den = float(N)
    else:
        valid = t != ignore_index
        y = np.where(valid, t, 0)
        wy = w[y]
        nll = -logp[np.arange(N), y]
        ce = (1.0 - eps) * wy * nll
        if eps:
            ce = ce + eps / C * -np.sum(w * logp, axis=-1)
        onehot = np.zeros((N, C))
        onehot[np.arange(N), y] = 1.0
        g = (1.0 - eps) * wy[:, None] * (p - onehot) + eps / C * (np.sum(w) * p - w)
        ce = np.where(valid, ce, 0.0)
        g = np.where(valid[:, None], g, 0.0)
        ce_den = float(np.sum(np.where(valid, wy, 0.0)))
    zr = np.where(valid, z_loss * lse**2, 0.0)
    gz = np.where(valid[:, None], 2.0 * z_loss * lse[:, None] * p, 0.0)
    if not chain:
        dcap = np.ones_like(dcap)
    return ce, zr, g * dcap, gz * dcap, ce_den, float(np.sum(valid)), row_shape, soft


def ref_cross_entropy(logits, target, *, axis=-1, weight=None, ignore_index=-100, reduction="mean",
                      label_smoothing=0.0, z_loss=0.0, softcap=None):
    """The loss in float64: a float for "mean"/"sum", an array of the target's row shape for "none"."""
    ce, zr, _, _, ce_den, z_den, row_shape, _ = ref_cross_entropy_parts(
        logits, target, axis=axis, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap)
    if reduction == "none":
        return (ce + zr).reshape(row_shape)
    if reduction == "sum":
        return float(np.sum(ce) + np.sum(zr))
    assert reduction == "mean"
    total = 0.0
    if ce_den != 0:
        total += float(np.sum(ce)) / ce_den
    if z_den != 0:
        total += float(np.sum(zr)) / z_den
    return total


def ref_cross_entropy_grad(logits, target, *, axis=-1, weight=None, ignore_index=-100, reduction="mean",
                           label_smoothing=0.0, z_loss=0.0, softcap=None, chain=True):
    """d loss / d logits in float64, in the layout of `logits`. "none": the gradient of the sum.

    chain=False leaves out softcap's factor 1 - tanh^2 (the gradient with respect to the capped logits).
    """
    _, _, g, gz, ce_den, z_den, row_shape, _ = ref_cross_entropy_parts(
        logits, target, axis=axis, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap, chain=chain)
    if reduction == "mean":
        g = g / ce_den if ce_den != 0 else np.zeros_like(g)
        gz = gz / z_den if z_den != 0 else np.zeros_like(gz)
    total = g + gz
    C = total.shape[-1]
    return np.moveaxis(total.reshape(row_shape + (C,)), -1, axis)


def finite_difference_grad(f, x, h=1e-6):
    """Central differences of the scalar function f at the float64 array x."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    flat = x.reshape(-1)
    gflat = g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        step = h * max(1.0, abs(old))
        flat[i] = old + step
        fp = float(f(x))
        flat[i] = old - step
        fm = float(f(x))
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * step)
    return g


def grad_scale(logits, target, **kw):
    """The scale a gradient's error is measured against: the largest entry before softcap's factor
    1 - tanh^2, which a float implementation can only know to a few ulp in absolute terms."""
    kw = {k: v for k, v in kw.items()}
    g = ref_cross_entropy_grad(logits, target, chain=False, **kw)
    return float(np.abs(g).max()) if g.size else 0.0
