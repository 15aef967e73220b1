"""fastsoftmax on Dask arrays: every public function, lazy, for any chunking.

Imported only when a ``dask.array.Array`` reaches a public function (``import fastsoftmax`` never
imports Dask). Each function checks its options and dtypes at call time by running the NumPy
function on a one-element stand-in, then builds a graph; nothing is computed before ``.compute()``.

When the reduced axis is one chunk, every block is one call of the public NumPy function (CuPy
blocks run the GPU kernels). When chunks split the reduced axis, three steps with O(blocks) tasks:

1. each block reduces to partial row statistics (the ``(m, s)`` pair of ``logsumexp_stats`` and,
   per function, a few sums), a small array of the block's rows with a trailing "field" axis; the
   softmax and the cross-entropy gradient get them from one softmax call, whose result they keep;
2. the partials merge exactly in a tree (``dask.array.reduction``: ``merge_logsumexp_stats`` for
   the log-sum-exp, plain sums for the rest);
3. each output block is finished from its own input block (or its kept softmax), its own
   statistics and the merged row statistics (``dask.array.blockwise``).

No task ever reads more than one block of the input, or holds a whole row of the split axis.
"""

from __future__ import annotations

import importlib
import operator
import sys
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from . import _checks
from ._layout import sign_of, xp_of

# Dask's type information is partial (many functions untyped): it is used through `Any`, so that the
# strict type check still covers this module's own code. DArray stands for dask.array.Array.
da: Any = importlib.import_module("dask.array")
meta_from_array: Any = importlib.import_module("dask.array.utils").meta_from_array


def api() -> Any:
    """The package's public functions, which the adapters apply block by block. Looked up, not
    imported: they route Dask arrays to the adapters, so an import would close a cycle, and the
    package is always loaded before any of its modules runs."""
    return sys.modules[__package__]
DArray = Any

F64 = np.dtype(np.float64)
FIELD = "field"  # the index name of the trailing statistics axis of partial and merged arrays


# --------------------------------------------------------------------------------------------------
# shared machinery


def no_out(out: Any) -> None:
    if out is not None:
        raise TypeError(
            "out= is not supported for Dask arrays (Dask arrays are immutable); use the result"
        )


def as_dask(a: Any) -> DArray:
    """`a` as a Dask array (a NumPy/CuPy array becomes one chunk, rechunked where it is used)."""
    if isinstance(a, da.Array):
        return a
    return da.from_array(a, chunks=-1) if hasattr(a, "shape") else da.asarray(np.asarray(a))


def stand_in(a: DArray) -> np.ndarray:
    """A one-element NumPy array of `a`'s dtype and number of dimensions (for checking options)."""
    return np.ones((1,) * a.ndim, dtype=a.dtype)


def kernel_dtype(rdt: np.dtype) -> np.dtype:
    """The dtype the kernels compute in for a result dtype (float16/bfloat16 compute in float32)."""
    return np.dtype(np.float32) if rdt.itemsize < 4 else np.dtype(rdt)


def inds(ndim: int) -> Tuple[str, ...]:
    return tuple(f"d{i}" for i in range(ndim))


def axes_of(axis: Any, ndim: int) -> Tuple[int, ...]:
    """Normalised reduction axes (the NumPy stand-in call has already validated `axis`)."""
    if ndim == 0:
        return ()
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        return tuple(sorted(operator.index(a) % ndim for a in axis))
    return (operator.index(axis) % ndim,)


def is_split(x: DArray, axes: Sequence[int]) -> bool:
    return any(len(x.chunks[a]) > 1 for a in axes)


def meta(like: DArray, ndim: int, dtype: Any) -> Any:
    return meta_from_array(like._meta, ndim=ndim, dtype=dtype)


def partials(
    fn: Callable[..., Any], x: DArray, reduced_axes: Sequence[int], nfields: int, *args: Any,
    **kw: Any
) -> DArray:
    """Step 1: ``fn(block, *other blocks, **kw)`` per block of `x`, returning the block's shape with
    `reduced_axes` reduced to 1 plus a trailing axis of `nfields` statistics (float64).

    `args` are pairs ``(array, index)`` as in ``dask.array.blockwise`` (index None for a literal).
    """
    ix = inds(x.ndim)
    return da.blockwise(
        fn, ix + (FIELD,), x, ix, *args,
        new_axes={FIELD: nfields}, adjust_chunks={ix[a]: 1 for a in reduced_axes},
        align_arrays=False, concatenate=True, dtype=F64, meta=meta(x, x.ndim + 1, F64), **kw,
    )


def _fields_of(pair: Any) -> Any:
    return pair[0]


def partials_with_blocks(
    fn: Callable[..., Any], x: DArray, reduced_axes: Sequence[int], nfields: int, *args: Any,
    **kw: Any
) -> Tuple[DArray, DArray]:
    """Step 1 when ``fn`` returns ``(statistics, intermediate)``: the intermediate (a softmax of the
    block) is kept for step 3, which then scales it instead of reading the block again.

    Returns the array of pairs (one per block, only for step 3) and the partial statistics."""
    ix = inds(x.ndim)
    pairs = da.blockwise(fn, ix, x, ix, *args, align_arrays=False, concatenate=True,
                         dtype=x.dtype, meta=meta(x, x.ndim, x.dtype), **kw)
    part = da.blockwise(
        _fields_of, ix + (FIELD,), pairs, ix, new_axes={FIELD: nfields},
        adjust_chunks={ix[a]: 1 for a in reduced_axes}, dtype=F64,
        meta=meta(x, x.ndim + 1, F64))
    return pairs, part


# A softmax value at or above this is accurate to a few ulps relatively (the kernels' contract), so
# its log gives the block's log-sum-exp to about 1e-7; rows whose first value is smaller are
# computed again with the log-sum-exp kernel.
SOFTMAX_LOG_FLOOR = 1e-30


def lse_from_softmax(x: Any, p: Any, axes: Tuple[int, ...], scale: float) -> Any:
    """The log-sum-exp of ``scale * x`` over `axes` (kept as size 1), in units of ``scale * x``,
    from a softmax `p` of it: ``scale * x_0 - log(p_0)`` with the first element of each row, so the
    statistics cost no second pass over the block. Rows where ``p_0`` is tiny, NaN or the result
    is not finite (NaN, +inf, only -inf) are recomputed with ``logsumexp``."""
    xp = xp_of(x)
    first = tuple(slice(0, 1) if i in axes else slice(None) for i in range(x.ndim))
    p0 = p[first].astype(F64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = x[first].astype(F64) * scale - xp.log(p0)
    bad = ~(p0 >= SOFTMAX_LOG_FLOOR) | ~xp.isfinite(lse)
    if bool(bad.any()):
        exact = api().logsumexp(x.astype(F64) * scale, axes, keepdims=True)
        lse = xp.where(bad, exact, lse)
    return lse


def scale_rows(p: Any, factor: Any, empty: Any) -> Any:
    """``p * factor`` in place (`p` is an intermediate of this graph that no other task reads
    after this one), and 0 where `empty` (rows of a block that holds only -inf while the row does
    not: their own softmax is NaN)."""
    xp = xp_of(p)
    xp.multiply(p, factor, out=p)
    if bool(empty.any()):
        xp.copyto(p, p.dtype.type(0), where=xp.broadcast_to(empty, p.shape))
    return p


def _identity(a: Any, axis: Any = None, keepdims: bool = True) -> Any:
    return a


def merge(part: DArray, axes: Sequence[int], combine: Callable[..., Any]) -> DArray:
    """Step 2: the tree merge of partial statistics along `axes` (kept as size 1).

    ``combine(a, axis)`` receives the partials of several blocks concatenated along `axis` and
    returns them merged (size 1 along `axis`, the trailing field axis unchanged)."""

    def agg(a: Any, axis: Any = None, keepdims: bool = True) -> Any:
        return combine(a, tuple(axis))

    return da.reduction(
        part, _identity, agg, combine=agg, axis=tuple(axes), keepdims=True, dtype=F64,
        concatenate=True, meta=part._meta,
    )


def finish(
    fn: Callable[..., Any], x: DArray, merged: DArray, dtype: Any, *args: Any, **kw: Any
) -> DArray:
    """Step 3: ``fn(block, merged row statistics, *other blocks, **kw)`` per block. The block's own
    statistics come with its intermediate (``partials_with_blocks``), so that the partials feed
    the merge alone and Dask fuses their extraction into the merge's first step."""
    ix = inds(x.ndim)
    return da.blockwise(
        fn, ix, x, ix, merged, ix + (FIELD,), *args,
        align_arrays=False, concatenate=True, dtype=dtype, meta=meta(x, x.ndim, dtype), **kw,
    )


def rows(
    merged: DArray, axes: Sequence[int], fn: Callable[..., Any], dtype: Any, keepdims: bool
) -> DArray:
    """Row results from the merged statistics: ``fn(merged block)`` drops the field axis; the
    reduced `axes` are dropped too unless `keepdims`."""
    r = merged.map_blocks(fn, drop_axis=merged.ndim - 1, dtype=dtype, meta=meta(merged, 1, dtype))
    if not keepdims:
        r = r.squeeze(axis=tuple(axes))
    return r


def stack_fields(xp: Any, *fields: Any) -> Any:
    return xp.stack([xp.asarray(f, dtype=F64) for f in fields], axis=-1)


def merge_lse_fields(a: Any, axis: Tuple[int, ...], n: int = 1) -> Tuple[Any, ...]:
    """Merges `n` (m, s) pairs held in fields (2i, 2i+1) of `a` along `axis`; returns the merged
    pairs and the weight ``exp(m_part - m_merged)`` of every part (0 for an empty part)."""
    xp = xp_of(a)
    out = []
    for i in range(n):
        m, s = a[..., 2 * i], a[..., 2 * i + 1]
        mm, ms = api().merge_logsumexp_stats(m, s, axis, keepdims=True)
        mm, ms = xp.asarray(mm), xp.asarray(ms)
        with np.errstate(invalid="ignore"):
            w = xp.where(s == 0, 0.0, s * xp.exp(m - mm))
        out += [mm, ms, w]
    return tuple(out)


def sum_fields(a: Any, axis: Tuple[int, ...]) -> Any:
    return a.sum(axis=axis, keepdims=True)


# --------------------------------------------------------------------------------------------------
# softmax, log_softmax, softmin


def _softmax_stats(xb: Any, *, axes: Tuple[int, ...], temperature: float, kind: str,
                   kdt: np.dtype) -> Any:
    xk = xb.astype(kdt, copy=False)
    if kind == "log_softmax":  # its finishing needs no softmax: the statistics alone
        m, s = api().logsumexp_stats(xk, axes, temperature=temperature, keepdims=True)
        return stack_fields(xp_of(xb), m, s), None
    p = getattr(api(), kind)(xk, axes, temperature=temperature)
    scale = (-1.0 if kind == "softmin" else 1.0) / temperature
    m = lse_from_softmax(xk, p, axes, scale)
    return stack_fields(xp_of(xb), m, sign_of(xp_of(xb), m)), p


def _softmax_finish(xb: Any, merged: Any, pair: Any, *, axes: Tuple[int, ...],
                    temperature: float, kind: str, kdt: np.dtype, rdt: np.dtype) -> Any:
    xp = xp_of(xb)
    own, total = pair[0][..., 0], merged[..., 0]
    finite = xp.isfinite(total)  # NaN, +inf or nothing but -inf in the row: NaN, as unsharded
    if kind == "log_softmax":
        # In float64: x/T - L cancels, and the rounding of x/T would show in float32.
        y = xb.astype(F64) * (1.0 / temperature) - xp.where(finite, total, xp.nan)
        return y.astype(rdt)
    with np.errstate(invalid="ignore", over="ignore"):
        factor = xp.where(finite, xp.exp(own - total), xp.nan).astype(kdt)
    y = scale_rows(pair[1], factor, finite & (own == -xp.inf))
    return y.astype(rdt, copy=False)


def _softmax_family(x: Any, axis: Any, temperature: float, out: Any, kind: str) -> DArray:
    no_out(out)
    fn = getattr(api(), kind)
    x = as_dask(x)
    rdt = np.asarray(fn(stand_in(x), axis, temperature=temperature)).dtype
    axes = axes_of(axis, x.ndim)
    if not is_split(x, axes):
        return x.map_blocks(fn, axis if x.ndim else None, temperature=temperature, dtype=rdt,
                            meta=meta(x, x.ndim, rdt))
    kdt = kernel_dtype(rdt)
    pairs, part = partials_with_blocks(_softmax_stats, x, axes, 2, axes=axes,
                                       temperature=temperature, kind=kind, kdt=kdt)
    merged = merge(part, axes, lambda a, ax: stack_fields(xp_of(a), *merge_lse_fields(a, ax)[:2]))
    return finish(_softmax_finish, x, merged, rdt, pairs, inds(x.ndim), axes=axes,
                  temperature=temperature, kind=kind, kdt=kdt, rdt=rdt)


def softmax(x: Any, axis: Any = -1, *, temperature: float = 1.0, out: Any = None) -> DArray:
    return _softmax_family(x, axis, temperature, out, "softmax")


def log_softmax(x: Any, axis: Any = -1, *, temperature: float = 1.0, out: Any = None) -> DArray:
    return _softmax_family(x, axis, temperature, out, "log_softmax")


def softmin(x: Any, axis: Any = -1, *, temperature: float = 1.0, out: Any = None) -> DArray:
    return _softmax_family(x, axis, temperature, out, "softmin")


# --------------------------------------------------------------------------------------------------
# logsumexp


def _lse_stats(xb: Any, bb: Any = None, *, axes: Tuple[int, ...], temperature: float,
               kdt: np.dtype) -> Any:
    xk = xb.astype(kdt, copy=False)
    m, s = api().logsumexp_stats(xk, axes, b=bb, temperature=temperature, keepdims=True)
    return stack_fields(xp_of(xb), m, s)


def _lse_value(a: Any, *, temperature: float, return_sign: bool, rdt: np.dtype) -> Any:
    xp = xp_of(a)
    m, s = a[..., 0], a[..., 1]
    lse = m * temperature if temperature != 1.0 else m
    if not return_sign:
        lse = xp.where(s < 0, xp.nan, lse)
    return lse.astype(rdt)


def logsumexp(
    x: Any, axis: Any = -1, *, b: Any = None, keepdims: bool = False, return_sign: bool = False,
    temperature: float = 1.0, out: Any = None,
) -> Any:
    no_out(out)
    x = as_dask(x)
    probe_b = None
    if b is not None:
        b = as_dask(b)
        shape = _checks.weights_shape(x.shape, b.shape)
        x = da.broadcast_to(x, shape) if x.shape != shape else x
        b = da.broadcast_to(b, shape).rechunk(x.chunks)
        probe_b = stand_in(b)
    probe = api().logsumexp(stand_in(x), axis, b=probe_b, return_sign=return_sign,
                           temperature=temperature)
    rdt = np.asarray(probe[0] if return_sign else probe).dtype
    kdt = kernel_dtype(rdt)
    if x.ndim == 0:
        x = x.reshape((1,))
        b = None if b is None else b.reshape((1,))
        axes: Tuple[int, ...] = (0,)
        keepdims = False
    else:
        axes = axes_of(axis, x.ndim)
    ix = inds(x.ndim)
    extra = () if b is None else (b, ix)
    part = partials(_lse_stats, x, axes, 2, *extra, axes=axes, temperature=temperature, kdt=kdt)
    merged = merge(part, axes, lambda a, ax: stack_fields(xp_of(a), *merge_lse_fields(a, ax)[:2]))
    lse = rows(merged, axes, lambda a: _lse_value(a, temperature=temperature,
                                                  return_sign=return_sign, rdt=rdt), rdt, keepdims)
    if not return_sign:
        return lse
    sign = rows(merged, axes, lambda a: a[..., 1].astype(rdt), rdt, keepdims)
    return lse, sign


# --------------------------------------------------------------------------------------------------
# softmax_backward, log_softmax_backward


def _pair(a: Any, b: Any, names: Tuple[str, str]) -> Tuple[DArray, DArray]:
    a, b = as_dask(a), as_dask(b)
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} has shape {a.shape}, {names[1]} has shape {b.shape}")
    return a, b.rechunk(a.chunks)


def _backward_stats(gb: Any, yb: Any, *, axis: int, log: bool, kdt: np.dtype) -> Any:
    g = gb.astype(kdt, copy=False)
    s = g if log else g * yb.astype(kdt, copy=False)
    return stack_fields(xp_of(gb), s.sum(axis=axis, keepdims=True, dtype=F64))


def _backward_finish(gb: Any, merged: Any, yb: Any, *, log: bool, kdt: np.dtype,
                     rdt: np.dtype) -> Any:
    xp = xp_of(gb)
    g, y = gb.astype(kdt, copy=False), yb.astype(kdt, copy=False)
    s = merged[..., 0].astype(kdt)
    r = g - xp.exp(y) * s if log else y * (g - s)
    return r.astype(rdt, copy=False)


def _backward(grad_output: Any, y: Any, axis: Any, out: Any, log: bool, yname: str) -> DArray:
    no_out(out)
    g, yy = _pair(grad_output, y, ("grad_output", yname))
    fn = api().log_softmax_backward if log else api().softmax_backward
    rdt = np.asarray(fn(stand_in(g), stand_in(yy), axis)).dtype
    if g.ndim == 0 or not is_split(g, axes_of(axis, g.ndim)):
        ix = inds(g.ndim)
        return da.blockwise(fn, ix, g, ix, yy, ix, axis if g.ndim else -1, None, dtype=rdt,
                            meta=meta(g, g.ndim, rdt))
    (ax,) = axes_of(axis, g.ndim)
    kdt = kernel_dtype(rdt)
    ix = inds(g.ndim)
    part = partials(_backward_stats, g, (ax,), 1, yy, ix, axis=ax, log=log, kdt=kdt)
    merged = merge(part, (ax,), sum_fields)
    return finish(_backward_finish, g, merged, rdt, yy, ix, log=log, kdt=kdt, rdt=rdt)


def softmax_backward(grad_output: Any, y: Any, axis: int = -1, *, out: Any = None) -> DArray:
    return _backward(grad_output, y, axis, out, False, "y")


def log_softmax_backward(
    grad_output: Any, log_y: Any, axis: int = -1, *, out: Any = None
) -> DArray:
    return _backward(grad_output, log_y, axis, out, True, "log_y")


# --------------------------------------------------------------------------------------------------
# entropy, kl_divergence


def _expand(xp: Any, r: Any, axis: int) -> Any:
    return xp.expand_dims(xp.asarray(r), axis)


def _entropy_stats(pb: Any, qb: Any = None, *, axis: int, from_logits: bool, kdt: np.dtype) -> Any:
    """Per block: the block's own (nats) entropy or KL, and with logits the (m, s) of each input."""
    xp = xp_of(pb)
    pk = pb.astype(kdt, copy=False)
    qk = None if qb is None else qb.astype(kdt, copy=False)
    h = api().entropy(pk, axis, from_logits=from_logits) if qk is None else api().kl_divergence(
        pk, qk, axis, from_logits=from_logits)
    fields = [] if not from_logits else list(api().logsumexp_stats(pk, axis, keepdims=True))
    if from_logits and qk is not None:
        fields += list(api().logsumexp_stats(qk, axis, keepdims=True))
    return stack_fields(xp, *fields, _expand(xp, h, axis))


def _merge_entropy(a: Any, axis: Tuple[int, ...]) -> Any:
    """Grouping rule of the entropy: H = sum_b w_b (H_b - log w_b), w_b the block's share."""
    xp = xp_of(a)
    m, s, w = merge_lse_fields(a, axis)
    with np.errstate(invalid="ignore"):
        h = xp.where(w > 0, w * (a[..., 2] - (a[..., 0] - m)), 0.0).sum(axis=axis, keepdims=True)
    return stack_fields(xp, m, s, h)


def _merge_kl(a: Any, axis: Tuple[int, ...]) -> Any:
    """Grouping rule of KL(P||Q): sum_b w_b (KL_b + log w_b - log v_b), w and v the block shares
    of P and Q; a block where Q has no mass but P has gives +inf."""
    xp = xp_of(a)
    mp, sp, w, mq, sq, v = merge_lse_fields(a, axis, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        term = w * (a[..., 4] + (a[..., 0] - mp) - (a[..., 2] - mq))
        term = xp.where(v == 0, xp.inf, term)
        k = xp.where(w > 0, term, 0.0).sum(axis=axis, keepdims=True)
    return stack_fields(xp, mp, sp, mq, sq, k)


def _entropy_value(a: Any, *, from_logits: bool, pair: bool, scale: float, rdt: np.dtype) -> Any:
    xp = xp_of(a)
    h = a[..., -1] * scale
    if from_logits:
        ok = xp.isfinite(a[..., 0])
        if pair:
            ok &= xp.isfinite(a[..., 2])
        h = xp.where(ok, h, xp.nan)
    return h.astype(rdt)


def _row_reduce(p: DArray, q: Optional[DArray], axis: Any, base: Any, from_logits: bool,
                rdt: np.dtype) -> DArray:
    fn: Callable[..., Any]
    if q is None:
        fn = lambda pb, **kw: api().entropy(pb, **kw)  # noqa: E731
    else:
        fn = lambda pb, qb, **kw: api().kl_divergence(pb, qb, **kw)  # noqa: E731
    ix = inds(p.ndim)
    extra = () if q is None else (q, ix)
    if p.ndim == 0:
        return da.blockwise(fn, (), p, (), *extra, axis=-1, base=base, from_logits=from_logits,
                            dtype=rdt, meta=meta(p, 0, rdt))
    (ax,) = axes_of(axis, p.ndim)
    if not is_split(p, (ax,)):
        out_ix = tuple(i for k, i in enumerate(ix) if k != ax)
        return da.blockwise(fn, out_ix, p, ix, *extra, axis=ax, base=base,
                            from_logits=from_logits, concatenate=True, dtype=rdt,
                            meta=meta(p, p.ndim - 1, rdt))
    kdt = kernel_dtype(rdt)
    nf = 1 if not from_logits else (3 if q is None else 5)
    part = partials(_entropy_stats, p, (ax,), nf, *extra, axis=ax, from_logits=from_logits,
                    kdt=kdt)
    combine: Callable[..., Any] = sum_fields
    if from_logits:
        combine = _merge_entropy if q is None else _merge_kl
    merged = merge(part, (ax,), combine)
    scale = 1.0 if base is None else 1.0 / float(np.log(float(base)))
    return rows(merged, (ax,), lambda a: _entropy_value(
        a, from_logits=from_logits, pair=q is not None, scale=scale, rdt=rdt), rdt, False)


def entropy(p: Any, axis: int = -1, *, base: Any = None, from_logits: bool = False) -> DArray:
    p = as_dask(p)
    rdt = np.asarray(api().entropy(stand_in(p), axis, base=base, from_logits=from_logits)).dtype
    return _row_reduce(p, None, axis, base, from_logits, rdt)


def kl_divergence(
    p: Any, q: Any, axis: int = -1, *, base: Any = None, from_logits: bool = False
) -> DArray:
    p, q = as_dask(p), as_dask(q)
    shape = _checks.pair_shape(p.shape, q.shape)
    rdt = np.asarray(api().kl_divergence(stand_in(p), stand_in(q), axis, base=base,
                                        from_logits=from_logits)).dtype
    p = da.broadcast_to(p, shape) if p.shape != shape else p
    q = (da.broadcast_to(q, shape) if q.shape != shape else q).rechunk(p.chunks)
    return _row_reduce(p, q, axis, base, from_logits, rdt)
