"""The public functions: each states its signature and contract, checks its arguments once
(`_checks`), and routes by array type to one backend: NumPy arrays (and anything array-like) to
`_cpu`, CuPy arrays to `_cuda`, imported on first use only.

A backend receives checked arguments (normalised axes, parsed options, a valid `out`) and imports
nothing from here. Everything the user passed is checked before any kernel runs, so when an
exception is raised nothing has been written.
"""

from __future__ import annotations

import operator
from types import ModuleType
from typing import Any, Literal, Optional, Tuple

import numpy as np

from . import _checks, _cpu, _native
from ._checks import Axis

Reduction = Literal["mean", "sum", "none"]


def _backend(x: Any) -> ModuleType:
    """The backend module for an input: by the module its array type comes from."""
    if type(x) is np.ndarray:
        return _cpu
    if type(x).__module__.split(".", 1)[0] == "cupy":
        from . import _cuda  # CuPy is imported only when a CuPy array arrives.

        return _cuda
    return _cpu


def _dask(*arrays: Any) -> Optional[ModuleType]:
    """The Dask adapter when any of `arrays` is a Dask array (it calls these functions per block),
    else None; Dask is imported only when a Dask array arrives."""
    for a in arrays:
        if type(a).__module__.split(".", 1)[0] == "dask":
            from . import _dask as dask_adapter

            return dask_adapter
    return None


def _out(be: ModuleType, out: Any, shape: Tuple[int, ...], dtype: np.dtype) -> Any:
    return None if out is None else be.out_array(out, shape, dtype)


# --------------------------------------------------------------------------------------------------
# softmax family


def _softmax(x: Any, axis: Axis, temperature: Any, out: Any, sign: float, log: bool) -> Any:
    if type(x) is np.ndarray and type(axis) is int and axis == -1:
        try:
            return _cpu.softmax_plain(x, out, sign * _checks.inv_temperature(temperature), log)
        except _cpu.LayoutError:
            pass  # not the kernels' layout: the general path makes it
    dk = _dask(x)
    if dk is not None:
        name = "log_softmax" if log else ("softmin" if sign < 0 else "softmax")
        return getattr(dk, name)(x, axis, temperature=temperature, out=out)
    be = _backend(x)
    x = be.asarray(x)
    rdt = _checks.result_dtype(x.dtype)
    scale = sign * _checks.inv_temperature(temperature)
    axes = _checks.axes(axis, x.ndim) if x.ndim else (0,)
    out = _out(be, out, x.shape, rdt)
    if x.ndim == 0:
        # A 0-d array is one row of one element (SciPy's rule for axis=None).
        res = be.softmax(x.reshape(1), axes, scale, log, None, rdt).reshape(())
        if out is not None:
            be.copy_into(out, res)
            return out
        return be.scalar(res)  # SciPy's rule: a NumPy scalar on the CPU
    return be.softmax(x, axes, scale, log, out, rdt)


def softmax(x: Any, axis: Axis = -1, *, temperature: float = 1.0, out: Any = None) -> Any:
    r"""Softmax along `axis`: :math:`\mathrm{softmax}(o)_j = e^{o_j/T} / \sum_k e^{o_k/T}`.

    Computed stably (the row maximum is subtracted first). `axis` may be an int, a tuple of ints or
    None (the whole array). float32 and float64 keep their dtype; float16/bfloat16 compute in
    float32 and return their own dtype; integer and bool inputs become float64.

    >>> import numpy as np, fastsoftmax as fs
    >>> fs.softmax(np.array([[1.0, 2.0, 3.0]])).round(4)
    array([[0.09  , 0.2447, 0.6652]])
    """
    return _softmax(x, axis, temperature, out, 1.0, False)


def log_softmax(x: Any, axis: Axis = -1, *, temperature: float = 1.0, out: Any = None) -> Any:
    r"""Log-softmax along `axis`: :math:`o_j/T - \mathrm{logsumexp}(o/T)`.

    Same axes, dtypes and `out=` rules as :func:`softmax`.

    >>> import numpy as np, fastsoftmax as fs
    >>> fs.log_softmax(np.array([0.0, 0.0])).round(4)
    array([-0.6931, -0.6931])
    """
    return _softmax(x, axis, temperature, out, 1.0, True)


def softmin(x: Any, axis: Axis = -1, *, temperature: float = 1.0, out: Any = None) -> Any:
    r"""Softmin along `axis`: ``softmax(-x)``, i.e. :math:`e^{-o_j/T} / \sum_k e^{-o_k/T}`.

    >>> import numpy as np, fastsoftmax as fs
    >>> fs.softmin(np.array([1.0, 2.0])).round(4)
    array([0.7311, 0.2689])
    """
    return _softmax(x, axis, temperature, out, -1.0, False)


def logsumexp(
    x: Any,
    axis: Axis = -1,
    *,
    b: Any = None,
    keepdims: bool = False,
    return_sign: bool = False,
    temperature: float = 1.0,
    out: Any = None,
) -> Any:
    r"""Log of the sum of exponentials along `axis`: :math:`T \log \sum_j b_j e^{o_j/T}`.

    SciPy's semantics: `b` broadcasts against `x`, may be negative, and `b == 0` leaves an element
    out; with ``return_sign=True`` the result is ``(log|s|, sign(s))``, otherwise a negative sum gives
    NaN. The largest term is split off and ``log1p`` used, so ``logsumexp([0, -40])`` keeps its
    digits. A full reduction returns a NumPy scalar; `keepdims` keeps the reduced axes as size 1.

    >>> import numpy as np, fastsoftmax as fs
    >>> float(fs.logsumexp(np.array([0.0, 0.0])))
    0.6931471805599453
    >>> float(fs.logsumexp(np.array([0.0, -40.0])))
    4.248354255291589e-18
    """
    if type(x) is np.ndarray and type(axis) is int and axis == -1 and b is None:
        if not (keepdims or return_sign):
            try:
                return _cpu.logsumexp_plain(x, _checks.inv_temperature(temperature), out)
            except _cpu.LayoutError:
                pass  # not the kernels' layout: the general path makes it
    dk = _dask(x, b)
    if dk is not None:
        return dk.logsumexp(
            x, axis, b=b, keepdims=keepdims, return_sign=return_sign, temperature=temperature,
            out=out,
        )
    be = _backend(x)
    x = be.asarray(x)
    rdt = _checks.result_dtype(x.dtype)
    inv_t = _checks.inv_temperature(temperature)
    if b is not None:
        b = be.asarray(b, "b")
        if b.dtype.kind not in "biuf" and not _checks.is_bf16(b.dtype):
            raise TypeError(f"b has unsupported dtype {b.dtype}")
        shape = _checks.weights_shape(x.shape, b.shape)
        rdt = _checks.lse_result_dtype(x.dtype, b.dtype)
        if shape != x.shape:
            x = be.broadcast_to(x, shape)
        b = be.broadcast_to(b, shape)
    ndim = x.ndim
    if ndim == 0:
        x = x.reshape(1)
        b = None if b is None else b.reshape(1)
        axes: Tuple[int, ...] = (0,)
        res_shape: Tuple[int, ...] = ()
    else:
        axes = _checks.axes(axis, ndim)
        if keepdims:
            res_shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
        else:
            res_shape = tuple(s for i, s in enumerate(x.shape) if i not in axes)
    out = _out(be, out, res_shape, rdt)
    res, sign = be.logsumexp(x, axes, b, inv_t, res_shape, return_sign, out, rdt)
    if not return_sign:
        return res
    if sign is None:
        sign = be.sign_of_lse(res)
    return res, sign


# --------------------------------------------------------------------------------------------------
# cross-entropy family


_CE_DOC_OPTIONS = """
    Options (PyTorch's names): `weight` per-class weights of shape (C,); `ignore_index` rows whose
    label equals it add nothing and get a zero gradient; `reduction` "mean" (divides by the summed
    weight of the counted rows; 0.0 when every row is ignored), "sum" or "none";
    `label_smoothing` ε in [0, 1]; `z_loss` adds z·logsumexp(o)² per counted row; `softcap` c replaces
    the logits by c·tanh(o/c) first. `target` holds class indices (the logits' shape without `axis`) or
    soft labels (the logits' shape).
"""


def _ce(
    logits: Any,
    target: Any,
    axis: Any,
    weight: Any,
    ignore_index: Any,
    reduction: Any,
    label_smoothing: Any,
    z_loss: Any,
    softcap: Any,
    want_grad: bool,
    out: Any,
    with_loss: bool = True,
) -> Tuple[Any, Any]:
    """`(loss, grad or None)` of the three cross-entropy entry points (`with_loss=False`: only the
    gradient is wanted, which an adapter may use to skip the loss)."""
    if type(logits) is np.ndarray and weight is None and type(axis) is int and axis == -1:
        opts = _checks.ce_options(reduction, label_smoothing, z_loss, softcap, ignore_index)
        try:
            return _cpu.ce_plain(logits, target, opts, want_grad, out)
        except _cpu.LayoutError:
            pass  # not the kernels' layout: the general path makes it
    if _dask(logits, target) is not None:
        from . import _dask_ce  # the cross-entropy family's Dask adapter

        kind = "loss" if not want_grad else ("both" if with_loss else "grad")
        r = _dask_ce.ce(kind, logits, target, axis, weight, ignore_index, reduction, label_smoothing,
                  z_loss, softcap, out)
        return (r, None) if kind == "loss" else ((None, r) if kind == "grad" else r)
    be = _backend(logits)
    logits = be.asarray(logits, "logits")
    rdt = _checks.result_dtype(logits.dtype, "logits")
    if logits.ndim == 0:
        raise ValueError("logits must have at least one dimension (the classes)")
    (cax,) = _checks.axes(axis, logits.ndim, allow_multiple=False)
    opts = _checks.ce_options(reduction, label_smoothing, z_loss, softcap, ignore_index)
    target = be.asarray(target, "target")
    soft = _checks.target_is_soft(target.dtype, target.shape, logits.shape, cax)
    if weight is not None:
        weight = be.asarray(weight, "weight")
        _checks.check_weight(weight.dtype, weight.shape, logits.shape[cax])
    if want_grad:
        out = _out(be, out, logits.shape, rdt)
    return be.cross_entropy(logits, target, soft, weight, cax, opts, want_grad, out, rdt)  # type: ignore[no-any-return]


def cross_entropy(
    logits: Any, target: Any, *, axis: int = -1, weight: Any = None,
    ignore_index: int = -100, reduction: Reduction = "mean", label_smoothing: float = 0.0,
    z_loss: float = 0.0, softcap: Optional[float] = None,
) -> Any:
    r"""Cross-entropy loss: per row :math:`l = \mathrm{logsumexp}(o) - o_y` (hard labels) or
    :math:`l = -\sum_j q_j \log \mathrm{softmax}(o)_j` (soft labels), reduced over the rows.

    Shapes: `logits` ``(..., C, ...)`` with the classes along `axis`; `target` the logits' shape
    without `axis` (integer class indices, any integer dtype) or the logits' shape (soft labels).
    dtypes: float32/float64 keep their dtype; float16/bfloat16 compute in float32 and return their
    own dtype; integer and bool logits become float64. Returns a NumPy scalar of that dtype for
    "mean"/"sum", an array of the target's batch shape for "none".

    >>> import numpy as np, fastsoftmax as fs
    >>> o = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> round(float(fs.cross_entropy(o, np.array([0, 2]))), 6)
    0.669079
    >>> fs.cross_entropy(o, np.array([0, 2]), reduction="none").round(4)
    array([0.2395, 1.0986])
    """
    return _ce(
        logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss, softcap,
        False, None,
    )[0]


def cross_entropy_with_grad(
    logits: Any, target: Any, *, axis: int = -1, weight: Any = None,
    ignore_index: int = -100, reduction: Reduction = "mean", label_smoothing: float = 0.0,
    z_loss: float = 0.0, softcap: Optional[float] = None, out: Any = None,
) -> Tuple[Any, Any]:
    r"""``(loss, grad)`` of :func:`cross_entropy` and :func:`cross_entropy_grad`, computed in one
    pass over each row of `logits` (:math:`l = \mathrm{logsumexp}(o) - o_y`,
    :math:`\partial l/\partial o = \mathrm{softmax}(o) - \mathrm{onehot}(y)`).

    Shapes and dtypes as in those two functions. ``out=logits`` is allowed and writes the gradient
    in place.

    >>> import numpy as np, fastsoftmax as fs
    >>> o = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> loss, grad = fs.cross_entropy_with_grad(o, np.array([0, 2]), out=o)
    >>> round(float(loss), 6), grad is o
    (0.669079, True)
    """
    return _ce(
        logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss, softcap,
        True, out,
    )


@_checks.same_parameters(cross_entropy_with_grad)
def cross_entropy_grad(logits: Any, target: Any, **options: Any) -> Any:
    r"""Gradient of :func:`cross_entropy` with respect to the logits:
    :math:`\partial l/\partial o = \mathrm{softmax}(o) - \mathrm{onehot}(y)` per row (soft labels:
    :math:`\mathrm{softmax}(o) \sum_j q_j - q`), divided by `N` for ``reduction="mean"`` without
    options; "none" gives the gradient of the sum.

    Returns an array of the logits' shape and result dtype (as :func:`cross_entropy`);
    ``out=logits`` writes it in place.

    >>> import numpy as np, fastsoftmax as fs
    >>> o = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> fs.cross_entropy_grad(o, np.array([0, 2])).round(4)
    array([[-0.1065,  0.0533,  0.0533],
           [ 0.1667,  0.1667, -0.3333]])
    """
    kw = _checks.keywords(_GRAD_DEFAULTS, options, "cross_entropy_grad")
    return _ce(logits, target, want_grad=True, with_loss=False, **kw)[1]


_GRAD_DEFAULTS = _checks.keyword_defaults(cross_entropy_with_grad)


for _f in (cross_entropy, cross_entropy_grad, cross_entropy_with_grad):
    _f.__doc__ = (_f.__doc__ or "") + _CE_DOC_OPTIONS


# --------------------------------------------------------------------------------------------------
# backward passes, entropy, KL divergence


def _backward(grad_output: Any, y: Any, axis: Any, out: Any, log: bool, yname: str) -> Any:
    dk = _dask(grad_output, y)
    if dk is not None:
        f = dk.log_softmax_backward if log else dk.softmax_backward
        return f(grad_output, y, axis, out=out)
    be = _backend(grad_output)
    g = be.asarray(grad_output, "grad_output")
    yy = be.asarray(y, yname)
    rdt = _checks.pair_dtypes(g.dtype, yy.dtype, ("grad_output", yname))
    if g.shape != yy.shape:
        raise ValueError(f"grad_output has shape {g.shape}, {yname} has shape {yy.shape}")
    out = _out(be, out, g.shape, rdt)
    if g.ndim == 0:
        res = be.softmax_backward(g.reshape(1), yy.reshape(1), 0, log, None, rdt).reshape(())
        if out is not None:
            be.copy_into(out, res)
            return out
        return res
    (ax,) = _checks.axes(axis, g.ndim, allow_multiple=False)
    return be.softmax_backward(g, yy, ax, log, out, rdt)


def softmax_backward(grad_output: Any, y: Any, axis: int = -1, *, out: Any = None) -> Any:
    r"""Vector-Jacobian product of :func:`softmax`: the gradient with respect to its input `o`.

    Given ``y = softmax(o, axis)`` and the upstream gradient :math:`g = \partial L/\partial y`,
    returns :math:`\partial L/\partial o = J^T g = y \odot (g - \sum_k g_k y_k)`, the sum taken along
    `axis` (the Jacobian is :math:`J = \mathrm{diag}(y) - y y^T`).

    Parameters
    ----------
    grad_output, y : array_like, one shape
        float32/float64 keep their dtype; float16/bfloat16 compute in float32 and return their own
        dtype; integer and bool inputs become float64; two different dtypes promote.
    axis : int
        The softmax axis.
    out : ndarray, optional
        Result of `grad_output`'s shape and the result dtype; may be `grad_output` or `y` itself.

    Returns
    -------
    ndarray of `grad_output`'s shape.

    >>> import numpy as np, fastsoftmax as fs
    >>> y = fs.softmax(np.array([1.0, 2.0, 3.0]))
    >>> fs.softmax_backward(np.array([1.0, 0.0, 0.0]), y).round(4)
    array([ 0.0819, -0.022 , -0.0599])
    """
    return _backward(grad_output, y, axis, out, False, "y")


def log_softmax_backward(grad_output: Any, log_y: Any, axis: int = -1, *, out: Any = None) -> Any:
    r"""Vector-Jacobian product of :func:`log_softmax`: the gradient with respect to its input `o`.

    Given ``log_y = log_softmax(o, axis)`` and the upstream gradient :math:`g`, returns
    :math:`g - e^{\log y} \sum_k g_k`, the sum taken along `axis`. With :math:`g` the negative
    one-hot label this is the cross-entropy gradient :math:`\mathrm{softmax}(o) - \mathrm{onehot}(y)`.

    Shapes, dtypes and `out=` (which may be `grad_output` or `log_y`) as in
    :func:`softmax_backward`.

    >>> import numpy as np, fastsoftmax as fs
    >>> log_y = fs.log_softmax(np.array([0.0, 0.0]))
    >>> fs.log_softmax_backward(np.array([-1.0, 0.0]), log_y)
    array([-0.5,  0.5])
    """
    return _backward(grad_output, log_y, axis, out, True, "log_y")


def _row_reduce(p: Any, q: Any, axis: Any, from_logits: bool, base: Any) -> Any:
    dk = _dask(p, q)
    if dk is not None:
        if q is None:
            return dk.entropy(p, axis, base=base, from_logits=from_logits)
        return dk.kl_divergence(p, q, axis, base=base, from_logits=from_logits)
    be = _backend(p)
    pa = be.asarray(p, "p")
    if q is None:
        rdt = _checks.result_dtype(pa.dtype, "p")
        qa = None
    else:
        qa = be.asarray(q, "q")
        rdt = _checks.pair_dtypes(pa.dtype, qa.dtype, ("p", "q"))
    scale = _checks.base_scale(base)
    if qa is not None:
        shape = _checks.pair_shape(pa.shape, qa.shape)
        pa = be.broadcast_to(pa, shape) if pa.shape != shape else pa
        qa = be.broadcast_to(qa, shape) if qa.shape != shape else qa
    if pa.ndim == 0:
        pa = pa.reshape(1)
        qa = None if qa is None else qa.reshape(1)
        ax = 0
    else:
        (ax,) = _checks.axes(axis, pa.ndim, allow_multiple=False)
    return be.entropy(pa, qa, ax, bool(from_logits), scale, rdt)


def entropy(p: Any, axis: int = -1, *, base: Optional[float] = None, from_logits: bool = False) -> Any:
    r"""Shannon entropy along `axis`: :math:`H[P] = -\sum_j p_j \log p_j`.

    In nats by default, in bits with ``base=2`` (the result is divided by :math:`\log b`).
    SciPy's ``entr`` convention per element: :math:`0 \log 0 = 0`, a negative entry gives
    :math:`-\infty`. Unlike ``scipy.stats.entropy``, `p` is **not** normalised to sum to 1.
    With ``from_logits=True``, `p` holds logits `o` and the result is :math:`H[\mathrm{softmax}(o)]`,
    computed stably as :math:`\mathrm{logsumexp}(o) - \sum_j \mathrm{softmax}(o)_j o_j` (a row
    that has no softmax, one holding NaN or +inf or only -inf, gives NaN).

    Parameters
    ----------
    p : array_like
        Probabilities (or logits). float32/float64 keep their dtype; float16/bfloat16 compute in
        float32 and return their own dtype; integer and bool inputs become float64.
    axis : int
        The axis summed over. An empty axis gives 0.
    base : float, optional
        Logarithm base; ``ValueError`` unless ``base > 0`` and ``base != 1``.
    from_logits : bool
        Whether `p` holds logits.

    Returns
    -------
    ndarray of `p`'s shape without `axis` (a NumPy scalar for a 1-D `p`).

    >>> import numpy as np, fastsoftmax as fs
    >>> float(fs.entropy(np.array([0.5, 0.5]), base=2))
    1.0
    >>> fs.entropy(np.array([[0.0, 0.0], [0.0, -np.inf]]), from_logits=True).round(4)
    array([0.6931, 0.    ])
    """
    return _row_reduce(p, None, axis, from_logits, base)


def kl_divergence(
    p: Any, q: Any, axis: int = -1, *, base: Optional[float] = None, from_logits: bool = False
) -> Any:
    r"""Kullback-Leibler divergence along `axis`: :math:`KL(P\|Q) = \sum_j p_j \log(p_j / q_j)
    = H(P, Q) - H(P)`.

    SciPy's ``rel_entr`` convention per element: :math:`0 \log(0/q) = 0` for :math:`q \ge 0`,
    :math:`p > 0, q = 0 \to +\infty`, a negative entry gives :math:`+\infty`; `p` and `q` are not
    normalised. With ``from_logits=True``, `p` and `q` hold logits `o` and `r` and the result is
    :math:`\sum_j \mathrm{softmax}(o)_j\,(\mathrm{log\_softmax}(o)_j - \mathrm{log\_softmax}(r)_j)`.
    `base` as in :func:`entropy`.

    Parameters
    ----------
    p, q : array_like
        Broadcast against each other. dtypes as in :func:`entropy`; two different dtypes promote.

    Returns
    -------
    ndarray of the broadcast shape without `axis` (a NumPy scalar for 1-D inputs).

    >>> import numpy as np, fastsoftmax as fs
    >>> float(fs.kl_divergence(np.array([0.5, 0.5]), np.array([0.25, 0.75]))).__round__(6)
    0.143841
    >>> float(fs.kl_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])))
    inf
    """
    return _row_reduce(p, q, axis, from_logits, base)


# --------------------------------------------------------------------------------------------------
# threads and instruction sets


def set_num_threads(n: int) -> None:
    """Sets the number of worker threads of the CPU kernels (default: the cores available, or
    ``FASTSOFTMAX_NUM_THREADS``). `n` is an int >= 1 (``ValueError`` otherwise). Results do not
    depend on it.

    >>> import fastsoftmax as fs
    >>> n = fs.get_num_threads()
    >>> fs.set_num_threads(1); fs.get_num_threads()
    1
    >>> fs.set_num_threads(n)
    """
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an int, got {n!r}") from None
    _native.set_num_threads(n)


def get_num_threads() -> int:
    """The number of worker threads of the CPU kernels (an int >= 1).

    >>> import fastsoftmax as fs
    >>> fs.get_num_threads() >= 1
    True
    """
    return int(_native.get_num_threads())


def simd_backend() -> str:
    """The instruction set the CPU kernels run on now: "avx512", "avx2", "neon" or "scalar"
    (``FASTSOFTMAX_SIMD`` forces a lower one).

    >>> import fastsoftmax as fs
    >>> fs.simd_backend() in ("avx512", "avx2", "neon", "scalar")
    True
    """
    return str(_native.simd_backend())
