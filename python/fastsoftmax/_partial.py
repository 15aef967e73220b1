"""Partial log-sum-exp statistics and their exact merge: the building block of a sharded softmax.

When the reduced axis of a softmax or a cross-entropy is split over several shards (a vocabulary
sharded over GPUs or Dask workers), each shard summarises its part of every row as a pair
``(m, s)`` that stands for the sum ``s * exp(m)`` of its exponentials, the pairs of all shards are
merged, and each shard finishes its own outputs from the merged row statistics. The Dask backend
(``fastsoftmax._dask``) is built on these two functions; people with their own sharding (MPI,
``torch.distributed``) can use the same merge.

Written once for NumPy and CuPy arrays: the work is done by :func:`fastsoftmax.logsumexp`, which
runs the CPU or the GPU kernels depending on the array type.
"""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from . import _api
from ._checks import Axis
from ._layout import sign_of, xp_of


def logsumexp_stats(
    x: Any,
    axis: Axis = -1,
    *,
    b: Any = None,
    temperature: float = 1.0,
    keepdims: bool = False,
) -> Tuple[Any, Any]:
    r"""Partial statistics ``(m, s)`` of a log-sum-exp: the sum :math:`\sum_j b_j e^{x_j/T}` of
    each row of this shard, written as :math:`s \cdot e^{m}`.

    `m` is the shard's own :math:`\log|\sum_j b_j e^{x_j/T}|` (in units of :math:`x/T`), and `s`
    the sign of the sum: 1 (or -1 with a negative `b`), 0 for an empty sum (an empty or all
    ``-inf`` row), NaN for a row holding NaN. Any pair with the same ``s * exp(m)`` means the same
    sum, so the pairs of several shards can be merged by :func:`merge_logsumexp_stats`, or with
    two collectives: ``M = allreduce(m, MAX)``, ``S = allreduce(s * exp(m - M), SUM)`` (then
    ``merge_logsumexp_stats(M[None], S[None])`` brings ``(M, S)`` back to this form).
    The log-sum-exp of the whole row is ``T * m`` of the merged pair (NaN where ``s < 0``,
    as :func:`fastsoftmax.logsumexp` without ``return_sign``).

    Parameters
    ----------
    x : array_like (NumPy or CuPy)
        This shard's values; dtypes as in :func:`fastsoftmax.logsumexp`.
    axis, b, temperature, keepdims
        As in :func:`fastsoftmax.logsumexp` (`b` broadcasts against `x`, may be negative).

    Returns
    -------
    (m, s) : two arrays of the result shape and dtype of ``logsumexp(x, axis, b=b)``.

    Examples
    --------
    Three shards of a row of 10 values, merged, give the log-sum-exp of the whole row:

    >>> import numpy as np, fastsoftmax as fs
    >>> x = np.linspace(-3.0, 6.0, 10)
    >>> parts = [fs.logsumexp_stats(p) for p in np.split(x, [3, 4])]
    >>> m, s = fs.merge_logsumexp_stats(np.stack([m for m, _ in parts]),
    ...                                 np.stack([s for _, s in parts]))
    >>> bool(np.isclose(m, fs.logsumexp(x))), float(s)
    (True, 1.0)
    """
    xp = xp_of(x)
    if b is None:
        lse = _api.logsumexp(x, axis, keepdims=keepdims, temperature=temperature)
        lse = xp.asarray(lse)
        sign = sign_of(xp, lse)
    else:
        lse, sign = _api.logsumexp(
            x, axis, b=b, keepdims=keepdims, return_sign=True, temperature=temperature
        )
        lse, sign = xp.asarray(lse), xp.asarray(sign)
    if temperature != 1.0:
        lse = lse / lse.dtype.type(temperature)
    return _scalar(lse), _scalar(sign)


def _scalar(a: Any) -> Any:
    """A 0-d NumPy result as a NumPy scalar (SciPy's rule); CuPy arrays stay arrays."""
    return a[()] if isinstance(a, np.ndarray) and a.ndim == 0 else a


def merge_logsumexp_stats(
    m: Any, s: Any, axis: Axis = 0, *, keepdims: bool = False
) -> Tuple[Any, Any]:
    r"""Merges partial statistics ``(m, s)`` stacked along `axis` into one pair, exactly.

    The merged pair stands for the sum of the parts, :math:`\sum_i s_i e^{m_i}`, and is returned
    in the form of :func:`logsumexp_stats`: ``m`` the log of the sum's magnitude, ``s`` its sign
    (1, -1, 0 for an empty sum, NaN when a part holds NaN). The merge is a log-sum-exp over the
    parts (the largest one split off and ``log1p`` used), so merging in any grouping or order
    gives the unsharded answer within rounding: it is the merge of a tree reduction.
    A part holding ``+inf`` makes the merge ``+inf`` (NaN when ``+inf`` parts of both signs meet).

    Parameters
    ----------
    m, s : array_like (NumPy or CuPy), one shape
        Parts stacked along `axis` (any pair with ``s * exp(m)`` equal to the part's sum).
    axis : int, tuple of ints or None
        The axis (or axes) along which the parts are stacked.
    keepdims : bool
        Keep the merged axes as size 1.

    Returns
    -------
    (m, s) : the merged pair.

    Examples
    --------
    >>> import numpy as np, fastsoftmax as fs
    >>> m, s = fs.merge_logsumexp_stats(np.array([0.0, -40.0]), np.array([1.0, 1.0]))
    >>> float(m), float(s)
    (4.248354255291589e-18, 1.0)
    >>> fs.merge_logsumexp_stats(np.array([[2.0, -np.inf]]), np.array([[1.0, 0.0]]), axis=1)
    (array([2.]), array([1.]))
    """
    xp = xp_of(m)
    m = xp.asarray(m)
    s = xp.asarray(s)
    if m.shape != s.shape:
        raise ValueError(f"m has shape {m.shape}, s has shape {s.shape}")
    # A NaN sign is a part holding NaN: `b = NaN` alone would be read as a weight, so the NaN goes
    # into `m` too, where the log-sum-exp propagates it.
    m = xp.where(xp.isnan(s), xp.nan, m)
    lse, sign = _api.logsumexp(m, axis, b=s, keepdims=keepdims, return_sign=True)
    return _scalar(xp.asarray(lse)), _scalar(xp.asarray(sign))
