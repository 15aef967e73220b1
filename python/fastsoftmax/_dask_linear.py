"""``linear_cross_entropy`` on Dask arrays: data-parallel over the rows of `x`.

`x` is chunked by rows (its feature axis is made one chunk), the classifier (and bias, weight) are
one chunk each, shipped once to every worker. Each row block is ONE call of the NumPy (or CuPy)
``linear_cross_entropy_with_grad`` with reduction "sum" (or "none"); "mean" divides the class
weights and ``z_loss`` by their global denominators first (a small reduction over the labels), so
the block results are already shares of the mean. The block losses and the blocks' gradients of
the classifier and bias are summed by the scheduler in a tree; ``grad_x`` keeps `x`'s chunks.
Each block's classifier gradient is a full ``V x D`` array: that is what a data-parallel head
moves per row block (see docs/dask.md).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from ._dask import DArray, api, as_dask, da, inds, meta
from ._dask_ce import check_labels, denominators, scales, starts
from ._layout import xp_of

# Positions of the parts in the (loss, grad_x, grad_classifier, grad_bias) tuple of one block.
LOSS, GRAD_X, GRAD_W, GRAD_B = range(4)


def _block(xb: Any, tb: Any, W: Any, b: Any, w: Any, d1: Any, d2: Any, *starts_: Any,
           want_grad: bool, reduction: str, ignore: int, eps: float, z: float,
           cap: Optional[float], chunk_size: Optional[int], batch: Tuple[int, ...]) -> Any:
    V = W.shape[0]
    check_labels(tb, starts_, C=V, ignore=ignore, batch=batch)
    s1, s2 = scales(d1, d2)
    if reduction == "mean" and (w is not None or s1 != 1.0):
        with np.errstate(invalid="ignore"):
            w = (xp_of(xb).ones(V) if w is None else w.astype(np.float64)) * s1
    opts = dict(bias=b, weight=w, ignore_index=ignore, label_smoothing=eps, z_loss=z * s2,
                softcap=cap, chunk_size=chunk_size,
                reduction="none" if reduction == "none" else "sum")
    if not want_grad:
        return (api().linear_cross_entropy(xb, W, tb, **opts),)
    return api().linear_cross_entropy_with_grad(xb, W, tb, **opts)


def _part(pairs: Any, i: int, nbatch: int) -> Any:
    """Part `i` of a block's tuple (handed over in a list), with one leading 1 per batch axis."""
    r = pairs[0][i]
    return r.reshape((1,) * nbatch + r.shape)


def _grad_x(pair: Any) -> Any:
    return pair[GRAD_X]


def _graph(x: Any, classifier: Any, target: Any, bias: Any, weight: Any, ignore_index: Any,
            reduction: Any, label_smoothing: Any, z_loss: Any, softcap: Any, chunk_size: Any,
            want_grad: bool) -> Any:
    x = as_dask(x)
    W, t = as_dask(classifier).rechunk(-1), as_dask(target)
    b = None if bias is None else as_dask(bias).rechunk(-1)
    w = None if weight is None else as_dask(weight).rechunk(-1)
    if x.ndim < 1 or W.ndim != 2 or x.shape[-1] != W.shape[1] or t.shape != x.shape[:-1]:
        raise ValueError(
            f"x of shape {x.shape}, classifier of shape {W.shape} and target of shape {t.shape} "
            f"do not match: expected classifier (V, {x.shape[-1] if x.ndim else 'D'}) and "
            f"target {x.shape[:-1]}")
    for name, a in (("bias", b), ("weight", w)):
        if a is not None and a.shape != (W.shape[0],):
            raise ValueError(f"{name} must have shape ({W.shape[0]},) (one per class), "
                             f"got {a.shape}")
    # The NumPy function on one-element stand-ins checks every option and dtype with its own
    # messages, and gives the result dtypes.
    def one(a: Any, shape: Tuple[int, ...] = (1,)) -> Any:
        return None if a is None else np.ones(shape, a.dtype)

    probe = api().linear_cross_entropy_with_grad(
        one(x, (1, 1)), one(W, (1, 1)), np.zeros(1, t.dtype), bias=one(b), weight=one(w),
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap, chunk_size=chunk_size)
    dts = [None if r is None else np.asarray(r).dtype for r in probe]

    x = x.rechunk({x.ndim - 1: -1})
    ix = inds(x.ndim)
    bix = ix[:-1]
    t = t.rechunk(x.chunks[:-1])
    V, D = W.shape
    ignore = int(ignore_index)
    args: list[Any] = [t, bix, W, ("v", ix[-1])]
    args += [None, None] if b is None else [b, ("v",)]
    args += [None, None] if w is None else [w, ("v",)]
    args += denominators(t, bix, w, ignore, reduction)
    for c, i in zip(x.chunks[:-1], bix):
        args += [starts(c), (i,)]
    kw = dict(want_grad=want_grad, reduction=reduction, ignore=ignore,
              eps=float(label_smoothing), z=float(z_loss),
              cap=None if softcap is None else float(softcap), chunk_size=chunk_size,
              batch=x.shape[:-1])
    blocks = da.blockwise(_block, ix, x, ix, *args, align_arrays=False, concatenate=True,
                          dtype=dts[LOSS], meta=meta(x, x.ndim, dts[LOSS]), **kw)
    nb = len(bix)
    per_row = reduction == "none"
    losses = da.blockwise(_part, bix, blocks, ix, LOSS, None, 0 if per_row else nb, None,
                          adjust_chunks={} if per_row else {i: 1 for i in bix},
                          concatenate=False, dtype=dts[LOSS], meta=meta(x, nb, dts[LOSS]))
    if per_row:
        loss = losses
    else:
        loss = losses.sum(dtype=np.float64 if dts[LOSS] == np.float64 else np.float32)
        loss = loss.astype(dts[LOSS])
    if not want_grad:
        return loss
    gx = blocks.map_blocks(_grad_x, dtype=dts[GRAD_X], meta=meta(x, x.ndim, dts[GRAD_X]))

    def summed(i: int, shape: Tuple[int, ...], names: Tuple[str, ...]) -> DArray:
        parts = da.blockwise(_part, bix + names, blocks, ix, i, None, nb, None,
                             new_axes=dict(zip(names, shape)), adjust_chunks={k: 1 for k in bix},
                             concatenate=False, dtype=dts[i], meta=meta(x, nb + len(shape), dts[i]))
        return parts.sum(axis=tuple(range(nb)), dtype=dts[i])

    gW = summed(GRAD_W, (V, D), ("v", "f"))
    gb = None if b is None else summed(GRAD_B, (V,), ("v",))
    return loss, gx, gW, gb


def linear_cross_entropy(x: Any, classifier: Any, target: Any, *, bias: Any = None,
                         weight: Any = None, ignore_index: int = -100, reduction: str = "mean",
                         label_smoothing: float = 0.0, z_loss: float = 0.0,
                         softcap: Optional[float] = None,
                         chunk_size: Optional[int] = None) -> DArray:
    return _graph(x, classifier, target, bias, weight, ignore_index, reduction, label_smoothing,
                   z_loss, softcap, chunk_size, want_grad=False)


def linear_cross_entropy_with_grad(
    x: Any, classifier: Any, target: Any, *, bias: Any = None, weight: Any = None,
    ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
    z_loss: float = 0.0, softcap: Optional[float] = None, chunk_size: Optional[int] = None,
) -> Tuple[DArray, DArray, DArray, Optional[DArray]]:
    r: Tuple[DArray, DArray, DArray, Optional[DArray]] = _graph(
        x, classifier, target, bias, weight, ignore_index, reduction, label_smoothing, z_loss,
        softcap, chunk_size, want_grad=True)
    return r


__all__ = ["linear_cross_entropy", "linear_cross_entropy_with_grad"]
