"""The cross-entropy family on Dask arrays (see ``_dask`` for the three-step scheme).

"mean" without a second pass over the logits: its denominators (the summed weight and the count of
the non-ignored rows) depend on the labels only, so a small reduction over the labels runs first,
and every block computes its share of the mean directly: the per-class weights are divided by the
weight sum and ``z_loss`` by the row count, and the block is reduced with "sum". The block losses
then add up to the mean and the block gradients are those of the mean.

Per row, with per-class target weights ``t_c`` (hard labels: ``(1-eps) w_y [c = y] + eps/C w_c``,
soft labels: ``w_c ((1-eps) q_c + eps/C)``), ``A = sum_c t_c`` and ``L`` the log-sum-exp of the
(soft-capped) logits ``o``:

    loss = A L - sum_c t_c o_c + z L**2,    grad_c = p_c (A + 2 z L) - t_c,    p = exp(o - L)

so a block split off the class axis contributes ``(m, s)``, ``sum t``, ``sum t o`` and finishes its
own gradient from ``softmax(block)`` rescaled by ``exp(lse_block - L)``.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np

from ._dask import (
    api,
    F64,
    FIELD,
    DArray,
    da,
    as_dask,
    axes_of,
    finish,
    inds,
    is_split,
    kernel_dtype,
    lse_from_softmax,
    merge,
    merge_lse_fields,
    meta,
    no_out,
    partials_with_blocks,
    scale_rows,
    stack_fields,
    stand_in,
)
from ._layout import sign_of, xp_of

PUBLIC = ("cross_entropy", "cross_entropy_grad", "cross_entropy_with_grad")
NFIELDS = 5  # m, s, A = sum t, T = sum t o, V = the row counts (1 if not ignored)


def starts(chunks: Tuple[int, ...]) -> DArray:
    """The first index of every chunk, one per block (each block learns where it sits)."""
    return da.from_array(np.cumsum((0,) + chunks[:-1]), chunks=1)


class _Plan:
    """The validated arguments of one Dask cross-entropy call and the blockwise arguments."""

    def __init__(self, logits: Any, target: Any, axis: Any, weight: Any, ignore_index: Any,
                 reduction: Any, label_smoothing: Any, z_loss: Any, softcap: Any):
        o = as_dask(logits)
        t = as_dask(target)
        w = None if weight is None else as_dask(weight)
        soft = t.dtype.kind == "f" or t.dtype.name == "bfloat16"
        # The NumPy function on one-element stand-ins checks every option and dtype (and `axis`).
        st = np.zeros((1,) * (o.ndim if soft else max(o.ndim - 1, 0)), dtype=t.dtype)
        probe = api().cross_entropy(
            stand_in(o), st, axis=axis, weight=None if w is None else np.ones(1, w.dtype),
            ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
            z_loss=z_loss, softcap=softcap)
        self.rdt = np.asarray(probe).dtype
        self.kdt = kernel_dtype(self.rdt)
        (self.cax,) = axes_of(axis, o.ndim)
        self.C = o.shape[self.cax]
        batch = o.shape[:self.cax] + o.shape[self.cax + 1:]
        if not soft and t.shape != batch:
            raise ValueError(
                f"class-index target must have shape {batch} "
                f"(logits {o.shape} without axis {self.cax}), got {t.shape}")
        if soft and t.shape != o.shape:
            raise ValueError(
                f"soft-label target must have the logits' shape {o.shape}, got {t.shape}")
        if w is not None and w.shape != (self.C,):
            raise ValueError(f"weight must have shape ({self.C},) (one per class), got {w.shape}")
        self.logits, self.soft, self.batch = o, soft, batch
        self.N = int(np.prod(batch))
        ix = inds(o.ndim)
        self.ix = ix
        self.bix = ix[:self.cax] + ix[self.cax + 1:]
        bchunks = o.chunks[:self.cax] + o.chunks[self.cax + 1:]
        self.target = t.rechunk(o.chunks if soft else bchunks)
        self.weight = None if w is None else w.rechunk((o.chunks[self.cax],))
        self.ignore = int(ignore_index)
        self.opts = dict(ignore=self.ignore, eps=float(label_smoothing),
                         z=float(z_loss), cap=None if softcap is None else float(softcap))
        self.reduction = reduction
        self.starts = [(starts(c), (i,)) for c, i in zip(bchunks, self.bix)]
        self.denoms = self._denominators()

    def _denominators(self) -> List[Any]:
        if self.soft:  # soft labels: "mean" divides by the number of rows
            n = 1.0 if self.reduction != "mean" else float(self.N)
            return [n, None, n, None]
        w = None if self.weight is None else self.weight.rechunk(-1)
        return denominators(self.target, self.bix, w, self.ignore, self.reduction)

    def block_args(self, whole_weight: bool) -> List[Any]:
        """The blockwise arguments after the logits: target, weight, class offset, D1, D2 and the
        first index of the block along each batch axis."""
        cls = self.ix[self.cax]
        args: List[Any] = [self.target, self.ix if self.soft else self.bix]
        if self.weight is None:
            args += [None, None]
        elif whole_weight:
            args += [self.weight.rechunk(-1), (cls,)]
        else:
            args += [self.weight, (cls,)]
        args += [starts(self.logits.chunks[self.cax]), (cls,)] + self.denoms
        for a, i in self.starts:
            args += [a, i]
        return args

    def kw(self) -> dict[str, Any]:
        return dict(cax=self.cax, soft=self.soft, C=self.C, batch=self.batch, kdt=self.kdt,
                    rdt=self.rdt, **self.opts)


def denominators(t: DArray, tix: Tuple[str, ...], weight: Optional[DArray], ignore: int,
                 reduction: str) -> List[Any]:
    """``[D1, index, D2, index]`` (blockwise arguments): what "mean" divides the class-weighted
    losses (D1: the summed weight of the counted rows) and the z-loss (D2: their number) by;
    literal 1.0 for "sum" and "none". `weight` is one chunk or None."""
    if reduction != "mean":
        return [1.0, None, 1.0, None]
    valid = t != ignore
    d2 = valid.sum(dtype=F64)
    if weight is None:
        return [d2, (), d2, ()]
    wy = da.blockwise(_row_weight, tix, t, tix, weight, ("cls",), ignore=ignore, dtype=F64,
                      concatenate=True, meta=meta(t, t.ndim, F64))
    return [wy.sum(), (), d2, ()]


def _row_weight(tb: Any, w: Any, *, ignore: int) -> Any:
    xp = xp_of(tb)
    valid = tb != ignore
    idx = xp.where(valid & (tb >= 0) & (tb < w.shape[0]), tb, 0).astype(np.int64)
    return xp.where(valid, w[idx].astype(F64), 0.0)


def check_labels(tb: Any, starts: Tuple[Any, ...], *, C: int, ignore: int,
                  batch: Tuple[int, ...]) -> None:
    bad = (tb != ignore) & ((tb < 0) | (tb >= C))
    if bool(bad.any()):
        first = int(np.argmax(np.asarray(bad).reshape(-1)))
        local = np.unravel_index(first, tb.shape)
        pos = int(np.ravel_multi_index(tuple(int(s[0]) + i for s, i in zip(starts, local)), batch)
                  ) if batch else 0
        label = int(np.asarray(tb).reshape(-1)[first])
        raise IndexError(f"target {label} at position {pos} is out of bounds for {C} classes")


def scales(d1: Any, d2: Any) -> Tuple[float, float]:
    """1/D1, 1/D2 of "mean" (1 for "sum"/"none"); 0 when no row counts (nothing contributes)."""
    d1, d2 = float(d1), float(d2)
    if d2 == 0.0:
        return 0.0, 0.0
    with np.errstate(divide="ignore"):
        return float(np.float64(1.0) / d1), 1.0 / d2


# --------------------------------------------------------------------------------------------------
# the class axis in one chunk: one fused call per block


def _fused(ob: Any, tb: Any, wb: Any, off: Any, d1: Any, d2: Any, *starts: Any, kind: str,
           reduction: str, cax: int, soft: bool, C: int, batch: Tuple[int, ...], kdt: np.dtype,
           rdt: np.dtype, ignore: int, eps: float, z: float, cap: Optional[float]) -> Any:
    if not soft:
        check_labels(tb, starts, C=C, ignore=ignore, batch=batch)
    s1, s2 = scales(d1, d2)
    if reduction == "mean" and (wb is not None or s1 != 1.0):
        xp = xp_of(ob)
        base = xp.ones(C, dtype=kdt) if wb is None else wb.astype(kdt)
        with np.errstate(invalid="ignore"):
            wb = base * kdt.type(s1)
    opts = dict(axis=cax, weight=wb, ignore_index=ignore, label_smoothing=eps, z_loss=z * s2,
                softcap=cap, reduction="none" if reduction == "none" else "sum")
    if kind == "grad":
        return api().cross_entropy_grad(ob, tb, **opts)
    if kind == "loss":
        return _loss_block(api().cross_entropy(ob, tb, **opts), reduction, len(batch))
    loss, grad = api().cross_entropy_with_grad(ob, tb, **opts)
    return _loss_block(loss, reduction, len(batch)), grad


def _loss_block(loss: Any, reduction: str, nbatch: int) -> Any:
    xp = xp_of(loss)
    loss = xp.asarray(loss)
    return loss if reduction == "none" else loss.reshape((1,) * nbatch)


def loss_of(pairs: Any) -> Any:
    """The loss of the single (loss, grad) block along the class axis (handed over in a list)."""
    return pairs[0][0]


def _grad_of(pair: Any) -> Any:
    return pair[1]


def _reduce_loss(plan: _Plan, losses: DArray) -> DArray:
    if plan.reduction == "none":
        return losses.astype(plan.rdt)
    return losses.sum(dtype=plan.kdt).astype(plan.rdt)


def _scaled(a: Any, d1: Any, d2: Any, *, part: Optional[int] = None, loss: bool = False) -> Any:
    """A block result of "sum" (or part `part` of a (loss, grad) pair) times 1/D1: its share of
    the mean. In place: the block is an intermediate of this graph that only this task reads."""
    r = a if part is None else a[part]
    s1 = scales(d1, d2)[0]
    with np.errstate(invalid="ignore"):  # zero class weights: 0 * inf = NaN, as unsharded
        if loss:
            return r * r.dtype.type(s1)
        r *= r.dtype.type(s1)
    return r


def _fused_graph(plan: _Plan, kind: str) -> Tuple[Optional[DArray], Optional[DArray]]:
    o, ix = plan.logits, plan.ix
    kw = dict(plan.kw(), reduction=plan.reduction)
    args = plan.block_args(whole_weight=True)
    denoms = plan.denoms
    # "mean" without class weights, or without z_loss, has one denominator: the blocks then run
    # "sum" at once (not after the reduction over the labels) and their results are scaled after.
    late = plan.reduction == "mean" and (plan.weight is None or plan.opts["z"] == 0.0)
    if late:
        kw["reduction"] = "sum"
        args = args[:6] + [1.0, None, 1.0, None] + args[10:]
    grad = loss = None
    if kind == "grad":
        grad = da.blockwise(_fused, ix, o, ix, *args, kind="grad", align_arrays=False,
                            concatenate=True, dtype=plan.rdt, meta=meta(o, o.ndim, plan.rdt),
                            **kw)
        if late:
            grad = da.blockwise(_scaled, ix, grad, ix, *denoms, dtype=plan.rdt,
                                meta=meta(o, o.ndim, plan.rdt))
        return None, grad
    adjust = {} if plan.reduction == "none" else {i: 1 for i in plan.bix}
    if kind == "loss":
        losses = da.blockwise(_fused, plan.bix, o, ix, *args, kind="loss", adjust_chunks=adjust,
                              align_arrays=False, concatenate=True, dtype=plan.rdt,
                              meta=meta(o, len(plan.bix), plan.rdt), **kw)
    else:
        # One task per block returns (loss, grad); two light tasks per block pick the parts.
        both = da.blockwise(_fused, ix, o, ix, *args, kind="both", align_arrays=False,
                            concatenate=True, dtype=plan.rdt, meta=meta(o, o.ndim, plan.rdt),
                            **kw)
        if late:
            grad = da.blockwise(_scaled, ix, both, ix, *denoms, part=1, dtype=plan.rdt,
                                meta=meta(o, o.ndim, plan.rdt))
        else:
            grad = both.map_blocks(_grad_of, dtype=plan.rdt, meta=meta(o, o.ndim, plan.rdt))
        losses = da.blockwise(loss_of, plan.bix, both, ix, adjust_chunks=adjust,
                              align_arrays=False, concatenate=False, dtype=plan.rdt,
                              meta=meta(o, len(plan.bix), plan.rdt))
    loss = _reduce_loss(plan, losses)
    if late:
        loss = da.blockwise(_scaled, (), loss, (), *denoms, loss=True, dtype=plan.rdt,
                            meta=meta(o, 0, plan.rdt))
    return loss, grad


# --------------------------------------------------------------------------------------------------
# the class axis split: partial statistics, tree merge, finishing


class _Block:
    """One block seen with its classes last: the (soft-capped) logits and the target weights."""

    def __init__(self, ob: Any, tb: Any, wb: Any, off: Any, d1: Any, d2: Any, *, cax: int,
                 soft: bool, C: int, kdt: np.dtype, ignore: int, eps: float, z: float,
                 cap: Optional[float], reduction: str, **_: Any):
        xp = self.xp = xp_of(ob)
        o = xp.moveaxis(ob, cax, -1).astype(kdt, copy=False)
        if cap is not None:
            o = kdt.type(cap) * xp.tanh(o * kdt.type(1.0 / cap))
        self.o, self.cap, self.kdt = o, cap, kdt
        s1, s2 = scales(d1, d2) if reduction == "mean" else (1.0, 1.0)
        self.s1, self.z = s1, z * s2
        cb = o.shape[-1]
        w = xp.ones(cb, dtype=F64) if wb is None else wb.astype(F64)
        with np.errstate(invalid="ignore"):
            w = w * s1
        self.first = int(off[0]) == 0
        self.soft = soft
        if soft:
            q = xp.moveaxis(tb, cax, -1).astype(kdt, copy=False)
            self.t = (q * kdt.type(1.0 - eps) + kdt.type(eps / C)) * w.astype(kdt)
            self.valid = xp.ones(o.shape[:-1], dtype=bool)
            return
        self.valid = tb != ignore
        local = tb.astype(np.int64) - int(off[0])
        self.inb = self.valid & (local >= 0) & (local < cb)
        self.local = xp.where(self.inb, local, 0)
        # (1-eps) w_y on the rows whose label is in this block
        self.wy = xp.where(self.inb, w[self.local] * (1.0 - eps), 0.0)
        self.wsmooth = w * (eps / C)  # eps/C w_c

    def sums(self) -> Tuple[Any, Any]:
        """A = sum_c t_c and T = sum_c t_c o_c of this block's classes (float64, 0 if ignored)."""
        xp, o = self.xp, self.o
        if self.soft:
            return self.t.sum(axis=-1, dtype=F64), (self.t * o).sum(axis=-1, dtype=F64)
        oy = xp.take_along_axis(o, self.local[..., None], axis=-1)[..., 0].astype(F64)
        with np.errstate(invalid="ignore"):
            a = self.wy + self.wsmooth.sum()
            t = xp.where(self.wy != 0, self.wy * oy, 0.0)
            if float(self.wsmooth.sum()) != 0.0:
                t = t + o.astype(F64) @ self.wsmooth
        return xp.where(self.valid, a, 0.0), xp.where(self.valid, t, 0.0)

    def subtract_targets(self, g: Any) -> Any:
        xp = self.xp
        """g - t in place (the rows of ignored labels are left for the caller to zero)."""
        if self.soft:
            g -= self.t
            return g
        rows = xp.nonzero(self.inb)
        g[rows + (self.local[rows],)] -= self.wy[rows].astype(self.kdt)
        if float(self.wsmooth.sum()) != 0.0:
            g -= self.wsmooth.astype(self.kdt)
        return g


def _ce_stats(ob: Any, tb: Any, wb: Any, off: Any, d1: Any, d2: Any, *starts: Any,
              **kw: Any) -> Tuple[Any, Any]:
    """The block's statistics, and its softmax (classes last), which step 3 scales in place."""
    blk = _Block(ob, tb, wb, off, d1, d2, **kw)
    xp = blk.xp
    if not blk.soft and blk.first:
        check_labels(tb, starts, C=kw["C"], ignore=kw["ignore"], batch=kw["batch"])
    if kw["want_grad"]:
        p = api().softmax(blk.o, -1)
        m = lse_from_softmax(blk.o, p, (blk.o.ndim - 1,), 1.0)[..., 0]
    else:  # the loss alone needs the log-sum-exp only
        p, m = None, xp.asarray(api().logsumexp(blk.o, -1), dtype=F64)
    a, t = blk.sums()
    v = blk.valid if blk.first else xp.zeros_like(blk.valid)
    fields = xp.expand_dims(stack_fields(xp, m, sign_of(xp, m), a, t, v), kw["cax"])
    return fields, p


def _merge_ce(a: Any, axis: Tuple[int, ...]) -> Any:
    m, s, _ = merge_lse_fields(a, axis)
    rest = a[..., 2:].sum(axis=axis, keepdims=True)
    return xp_of(a).concatenate([stack_fields(xp_of(a), m, s), rest], axis=-1)


def _row_loss(mb: Any, d1: Any, d2: Any, *, cax: int, z: float, reduction: str,
              rdt: np.dtype) -> Any:
    """Per-row losses (the mean's share for "mean") from merged statistics."""
    xp = xp_of(mb)
    r = xp.moveaxis(mb, cax, -2)[..., 0, :]
    L, a, t, v = r[..., 0], r[..., 2], r[..., 3], r[..., 4]
    s1, s2 = scales(d1, d2) if reduction == "mean" else (1.0, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        loss = xp.where(xp.isfinite(L), s1 * (a * L - t) + z * s2 * L * L, xp.nan)
    return xp.where(v > 0, loss, 0.0).astype(rdt)


def _ce_finish(ob: Any, merged: Any, pair: Any, tb: Any, wb: Any, off: Any, d1: Any, d2: Any,
               *starts: Any, **kw: Any) -> Any:
    blk = _Block(ob, tb, wb, off, d1, d2, **kw)
    xp, kdt, cax = blk.xp, blk.kdt, kw["cax"]
    own = xp.moveaxis(pair[0], cax, -2)[..., 0, 0]
    mrow = xp.moveaxis(merged, cax, -2)[..., 0, :]
    L, a = mrow[..., 0], mrow[..., 2] * blk.s1  # the statistics were summed unscaled
    finite = xp.isfinite(L)  # NaN, +inf or only -inf in the row: a NaN gradient
    with np.errstate(invalid="ignore", over="ignore"):
        f = xp.where(finite, xp.exp(own - L) * (a + 2.0 * blk.z * L), xp.nan)
    g = scale_rows(pair[1], f.astype(kdt)[..., None], (finite & (own == -xp.inf))[..., None])
    g = blk.subtract_targets(g)
    g[~blk.valid] = 0  # ignored rows
    if blk.cap is not None:
        g *= 1 - (blk.o * kdt.type(1.0 / blk.cap)) ** 2
    return xp.moveaxis(g, -1, cax).astype(kw["rdt"], copy=False)


def _split_graph(plan: _Plan, kind: str) -> Tuple[Optional[DArray], Optional[DArray]]:
    o, cax = plan.logits, plan.cax
    kw = dict(plan.kw(), reduction=plan.reduction, want_grad=kind != "loss")
    args = plan.block_args(whole_weight=False)
    # The statistics are summed unscaled (the share of the mean is applied by the loss and the
    # finishing), so the blocks start at once, not after the reduction over the labels.
    stats_args = args[:6] + [1.0, None, 1.0, None] + args[10:]
    pairs, part = partials_with_blocks(_ce_stats, o, (cax,), NFIELDS, *stats_args, **kw)
    merged = merge(part, (cax,), _merge_ce)
    loss = grad = None
    if kind != "grad":
        rows = da.blockwise(
            _row_loss, plan.bix, merged, plan.ix + (FIELD,), *plan.denoms,
            cax=cax, z=plan.opts["z"], reduction=plan.reduction, rdt=plan.rdt,
            align_arrays=False, concatenate=True, dtype=plan.rdt,
            meta=meta(o, len(plan.bix), plan.rdt))
        loss = _reduce_loss(plan, rows)
    if kind != "loss":
        grad = finish(_ce_finish, o, merged, plan.rdt, pairs, plan.ix, *args, **kw)
    return loss, grad


# --------------------------------------------------------------------------------------------------
# the public entry points


def ce(kind: str, logits: Any, target: Any, axis: Any, weight: Any, ignore_index: Any,
       reduction: Any, label_smoothing: Any, z_loss: Any, softcap: Any, out: Any) -> Any:
    """`kind` "loss", "grad" or "both" (a (loss, grad) pair), as the NumPy entry points."""
    no_out(out)
    plan = _Plan(logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss,
                 softcap)
    build = _split_graph if is_split(plan.logits, (plan.cax,)) else _fused_graph
    loss, grad = build(plan, kind)
    return loss if kind == "loss" else grad if kind == "grad" else (loss, grad)


def cross_entropy(logits: Any, target: Any, *, axis: int = -1, weight: Any = None,
                  ignore_index: int = -100, reduction: Any = "mean", label_smoothing: float = 0.0,
                  z_loss: float = 0.0, softcap: Optional[float] = None) -> DArray:
    return ce("loss", logits, target, axis, weight, ignore_index, reduction, label_smoothing,
              z_loss, softcap, None)


def cross_entropy_grad(logits: Any, target: Any, *, axis: int = -1, weight: Any = None,
                       ignore_index: int = -100, reduction: Any = "mean",
                       label_smoothing: float = 0.0, z_loss: float = 0.0,
                       softcap: Optional[float] = None, out: Any = None) -> DArray:
    return ce("grad", logits, target, axis, weight, ignore_index, reduction, label_smoothing,
              z_loss, softcap, out)


def cross_entropy_with_grad(logits: Any, target: Any, *, axis: int = -1, weight: Any = None,
                            ignore_index: int = -100, reduction: Any = "mean",
                            label_smoothing: float = 0.0, z_loss: float = 0.0,
                            softcap: Optional[float] = None,
                            out: Any = None) -> Tuple[DArray, DArray]:
    loss, grad = ce("both", logits, target, axis, weight, ignore_index, reduction,
                    label_smoothing, z_loss, softcap, out)
    return loss, grad
