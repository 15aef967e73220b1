"""The public functions: validation, dtype rules, axis/layout handling, and dispatch.

Every function brings its input to a C-contiguous 2-D ``(rows, cols)`` view with the reduced axes
last (zero-copy when they already are), calls the Rust kernel in ``_native``, and puts the result
where the caller wants it. Everything the user passed is checked before any kernel runs, so when an
exception is raised nothing has been written. CuPy arrays are handed to ``_cuda`` (imported on first
use only).
"""

from __future__ import annotations

import math
import operator
from typing import Any, Literal, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native

Axis = Union[int, Sequence[int], None]
Reduction = Literal["mean", "sum", "none"]

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_F16 = np.dtype(np.float16)
_KERNEL_DTYPES = (_F32, _F64)
_REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------------------------------
# dtype and array handling


def _is_cupy(x: Any) -> bool:
    return type(x).__module__.split(".", 1)[0] == "cupy"


def _cuda() -> Any:
    from . import _cuda as cuda  # CuPy is imported only when a CuPy array arrives.

    return cuda


def _is_dask(x: Any) -> bool:
    return type(x).__module__.split(".", 1)[0] == "dask"


def _dask() -> Any:
    from . import _dask as dask_backend  # Dask is imported only when a Dask array arrives.

    return dask_backend


def _is_bfloat16(dt: np.dtype) -> bool:
    return dt.name == "bfloat16"


def _dtypes(x: np.ndarray, what: str = "x") -> Tuple[np.dtype, np.dtype]:
    """(dtype the kernel computes in, dtype of the result) for an input array (API.md §2)."""
    dt = x.dtype
    if dt in _KERNEL_DTYPES:
        return dt, dt
    if dt.kind == "f" and dt.itemsize in (4, 8):
        # Non-native byte order: computed and returned in native order, as NumPy's ufuncs do.
        native = _F32 if dt.itemsize == 4 else _F64
        return native, native
    if dt == _F16 or _is_bfloat16(dt):
        return _F32, dt
    if dt.kind in "biu":
        return _F64, _F64
    raise TypeError(
        f"{what} has unsupported dtype {dt}; expected a floating, integer or bool array"
    )


def _c(a: Any, dtype: Any) -> np.ndarray:
    """`a` as a C-contiguous, aligned, native-order array of `dtype` (no copy when it already is)."""
    return np.require(a, dtype=dtype, requirements=("C", "A"))


def _asarray(x: Any, what: str = "x") -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if _is_cupy(x):
        raise TypeError(f"{what} is a CuPy array while the other arguments are on the CPU")
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} cannot be converted to a NumPy array: {e}") from None
    return a


def _normalize_axes(axis: Axis, ndim: int, allow_multiple: bool = True) -> Tuple[int, ...]:
    if axis is None:
        if not allow_multiple:
            raise TypeError("axis must be an int")
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        if not allow_multiple:
            raise TypeError("axis must be an int")
        axes = tuple(_one_axis(a, ndim) for a in axis)
        if len(set(axes)) != len(axes):
            raise ValueError(f"repeated axis in {axis!r}")
        return tuple(sorted(axes))
    return (_one_axis(axis, ndim),)


def _one_axis(a: Any, ndim: int) -> int:
    try:
        a = operator.index(a)
    except TypeError:
        raise TypeError(f"axis must be an int, a tuple of ints or None, got {a!r}") from None
    if not -ndim <= a < ndim:
        raise ValueError(f"axis {a} is out of bounds for an array of dimension {ndim}")
    return int(a) % ndim


class _Layout:
    """An array seen as a C-contiguous (rows, cols) matrix with `axes` last."""

    def __init__(self, x: np.ndarray, axes: Tuple[int, ...], dtype: np.dtype):
        self.shape = x.shape
        self.axes = axes
        self.keep = tuple(i for i in range(x.ndim) if i not in axes)
        self.trailing = axes == tuple(range(x.ndim - len(axes), x.ndim))
        self.batch_shape = tuple(x.shape[i] for i in self.keep)
        cols = 1
        for a in axes:
            cols *= x.shape[a]
        rows = 1
        for s in self.batch_shape:
            rows *= s
        self.rows, self.cols = rows, cols
        moved = x if self.trailing else np.transpose(x, self.keep + axes)
        # No copy for a C-contiguous, aligned array of the right dtype.
        self.x2d = _c(moved, dtype).reshape(rows, cols)

    def restore(self, y2d: np.ndarray) -> np.ndarray:
        """A (rows, cols) result back in the input's shape and axis order (a view when possible)."""
        moved_shape = self.batch_shape + tuple(self.shape[a] for a in self.axes)
        y = y2d.reshape(moved_shape)
        if self.trailing:
            return y
        return np.transpose(y, np.argsort(self.keep + self.axes))

    def out_view(self, out: np.ndarray) -> Optional[np.ndarray]:
        """`out` as a (rows, cols) C-contiguous view the kernel can write directly, or None."""
        if self.trailing and out.flags.c_contiguous and out.flags.aligned:
            return out.reshape(self.rows, self.cols)
        return None


def _check_out(out: Any, shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise ValueError(f"out must be a NumPy ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"out has shape {out.shape}, expected {tuple(shape)}")
    if out.dtype != dtype:
        raise ValueError(f"out has dtype {out.dtype}, expected {dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    return out


def _scale(temperature: Any) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(f"temperature must be a real number, got {temperature!r}") from None
    if not (t > 0.0 and np.isfinite(t)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return 1.0 / t


def _write_result(
    layout: _Layout,
    out: Optional[np.ndarray],
    res_dtype: np.dtype,
    run: Any,
) -> np.ndarray:
    """Runs `run(dst2d)` into `out` directly when it can, else into a fresh array, then places it."""
    kdt = layout.x2d.dtype
    if out is not None and res_dtype == kdt:
        view = layout.out_view(out)
        if view is not None and (
            view.__array_interface__["data"][0] == layout.x2d.__array_interface__["data"][0]
            or not np.may_share_memory(view, layout.x2d)
        ):
            run(view)
            return out
    dst = np.empty((layout.rows, layout.cols), dtype=kdt)
    run(dst)
    y = layout.restore(dst)
    if out is not None:
        np.copyto(out, y, casting="unsafe")
        return out
    if res_dtype != kdt:
        return y.astype(res_dtype)
    return y


# --------------------------------------------------------------------------------------------------
# softmax family


def _softmax_impl(x: Any, axis: Axis, temperature: Any, out: Any, sign: float, log: bool) -> Any:
    x = _asarray(x)
    kdt, rdt = _dtypes(x)
    scale = sign * _scale(temperature)
    axes = _normalize_axes(axis, x.ndim) if x.ndim else ()
    if out is not None:
        out = _check_out(out, x.shape, rdt)
    if x.ndim == 0:
        # A 0-d array is one row of one element (SciPy's rule for axis=None).
        res = _softmax_impl(x.reshape(1), 0, temperature, None, sign, log).reshape(())
        if out is not None:
            np.copyto(out, res)
            return out
        return res
    layout = _Layout(x, axes, kdt)
    if layout.rows * layout.cols == 0:
        res = np.empty(x.shape, dtype=rdt)
        return out if out is not None else res
    return _write_result(
        layout,
        out,
        rdt,
        lambda dst: _native.softmax(layout.x2d, dst, scale, log),
    )


def softmax(x: Any, axis: Axis = -1, *, temperature: float = 1.0, out: Any = None) -> Any:
    r"""Softmax along `axis`: :math:`\mathrm{softmax}(o)_j = e^{o_j/T} / \sum_k e^{o_k/T}`.

    Computed stably (the row maximum is subtracted first). `axis` may be an int, a tuple of ints or
    None (the whole array). float32 and float64 keep their dtype; float16/bfloat16 compute in
    float32 and return their own dtype; integer and bool inputs become float64.

    >>> import numpy as np, fastsoftmax as fs
    >>> fs.softmax(np.array([[1.0, 2.0, 3.0]])).round(4)
    array([[0.09  , 0.2447, 0.6652]])
    """
    if _is_dask(x):
        return _dask().softmax(x, axis, temperature=temperature, out=out)
    if axis == -1 and type(x) is np.ndarray:
        # The common call (T5): one native call, no layout work.
        y = _native.softmax_fast(x, out, 1.0 if temperature == 1.0 else _scale(temperature), False)
        if y is not None:
            return y
    if _is_cupy(x):
        return _cuda().softmax(x, axis, temperature=temperature, out=out)
    return _softmax_impl(x, axis, temperature, out, 1.0, False)


def log_softmax(x: Any, axis: Axis = -1, *, temperature: float = 1.0, out: Any = None) -> Any:
    r"""Log-softmax along `axis`: :math:`o_j/T - \mathrm{logsumexp}(o/T)`.

    Same axes, dtypes and `out=` rules as :func:`softmax`.

    >>> import numpy as np, fastsoftmax as fs
    >>> fs.log_softmax(np.array([0.0, 0.0])).round(4)
    array([-0.6931, -0.6931])
    """
    if _is_dask(x):
        return _dask().log_softmax(x, axis, temperature=temperature, out=out)
    if axis == -1 and type(x) is np.ndarray:
        y = _native.softmax_fast(x, out, 1.0 if temperature == 1.0 else _scale(temperature), True)
        if y is not None:
            return y
    if _is_cupy(x):
        return _cuda().log_softmax(x, axis, temperature=temperature, out=out)
    return _softmax_impl(x, axis, temperature, out, 1.0, True)


def softmin(x: Any, axis: Axis = -1, *, temperature: float = 1.0, out: Any = None) -> Any:
    r"""Softmin along `axis`: ``softmax(-x)``, i.e. :math:`e^{-o_j/T} / \sum_k e^{-o_k/T}`.

    >>> import numpy as np, fastsoftmax as fs
    >>> fs.softmin(np.array([1.0, 2.0])).round(4)
    array([0.7311, 0.2689])
    """
    if _is_dask(x):
        return _dask().softmin(x, axis, temperature=temperature, out=out)
    if axis == -1 and type(x) is np.ndarray:
        y = _native.softmax_fast(x, out, -_scale(temperature), False)
        if y is not None:
            return y
    if _is_cupy(x):
        return _cuda().softmin(x, axis, temperature=temperature, out=out)
    return _softmax_impl(x, axis, temperature, out, -1.0, False)


# --------------------------------------------------------------------------------------------------
# logsumexp


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
    if _is_dask(x) or _is_dask(b):
        return _dask().logsumexp(x, axis, b=b, keepdims=keepdims, return_sign=return_sign,
                                 temperature=temperature, out=out)
    if (
        axis == -1
        and b is None
        and not keepdims
        and not return_sign
        and type(x) is np.ndarray
        and (out is None or type(out) is np.ndarray)
    ):
        r = _native.logsumexp_fast(x, 1.0 if temperature == 1.0 else _scale(temperature), out)
        if r is not None:
            return r[()] if r.ndim == 0 and out is None else r
    if _is_cupy(x):
        return _cuda().logsumexp(
            x,
            axis,
            b=b,
            keepdims=keepdims,
            return_sign=return_sign,
            temperature=temperature,
            out=out,
        )
    x = _asarray(x)
    kdt, rdt = _dtypes(x)
    inv_t = _scale(temperature)
    if b is not None:
        b = _asarray(b, "b")
        if b.dtype.kind not in "biuf" and not _is_bfloat16(b.dtype):
            raise TypeError(f"b has unsupported dtype {b.dtype}")
        try:
            shape = np.broadcast_shapes(x.shape, b.shape)
        except ValueError:
            raise ValueError(
                f"b of shape {b.shape} does not broadcast against x of shape {x.shape}"
            ) from None
        if b.dtype.kind == "f" and b.dtype.itemsize > kdt.itemsize:
            kdt = rdt = np.result_type(kdt, b.dtype)
        if shape != x.shape:
            x = np.broadcast_to(x, shape)
        b = np.broadcast_to(b, shape)
    ndim = x.ndim
    if ndim == 0:
        x = x.reshape(1)
        if b is not None:
            b = b.reshape(1)
        axes: Tuple[int, ...] = (0,)
    else:
        axes = _normalize_axes(axis, ndim)
    layout = _Layout(x, axes, kdt)
    res_shape = layout.batch_shape
    if keepdims:
        res_shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
        if ndim == 0:
            res_shape = ()
    if out is not None:
        out = _check_out(out, res_shape, rdt)
    res = np.empty(layout.rows, dtype=kdt)
    sign = None
    if b is None:
        if layout.rows:
            _native.logsumexp(layout.x2d, res, inv_t)
    else:
        b2d = _Layout(b, axes, kdt).x2d
        x2d = layout.x2d if inv_t == 1.0 else layout.x2d * kdt.type(inv_t)
        sign = np.empty(layout.rows, dtype=kdt)
        if layout.rows:
            _native.logsumexp_b(_c(x2d, kdt), b2d, res, sign)
        if inv_t != 1.0:
            res *= kdt.type(1.0 / inv_t)
        if not return_sign:
            res[sign < 0] = np.nan
    res = res.reshape(res_shape)
    if rdt != kdt:
        res = res.astype(rdt)
    if out is not None:
        np.copyto(out, res)
        res = out
    elif res.ndim == 0:
        res = res[()]
    if not return_sign:
        return res
    if sign is None:
        # Without weights every term is positive: the sign is 1, or 0 for an empty/-inf sum, NaN for
        # NaN (SciPy's convention).
        r = np.asarray(res, dtype=kdt)
        sign = np.where(np.isnan(r), np.nan, np.where(r == -np.inf, 0.0, 1.0)).astype(kdt)
    sign = np.asarray(sign).reshape(res_shape).astype(rdt)
    return res, (sign[()] if sign.ndim == 0 else sign)


# --------------------------------------------------------------------------------------------------
# cross-entropy family


def _ce_options(
    reduction: Any, label_smoothing: Any, z_loss: Any, softcap: Any, ignore_index: Any
) -> Tuple[float, float, Optional[float], int]:
    """The scalar options of the cross-entropy family, checked (API.md §5); shared with `_cuda`."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    try:
        eps = float(label_smoothing)
    except (TypeError, ValueError):
        raise TypeError(f"label_smoothing must be a number, got {label_smoothing!r}") from None
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    try:
        z = float(z_loss)
    except (TypeError, ValueError):
        raise TypeError(f"z_loss must be a number, got {z_loss!r}") from None
    if not (z >= 0.0 and math.isfinite(z)):
        raise ValueError(f"z_loss must be a finite number >= 0, got {z_loss!r}")
    cap = None
    if softcap is not None:
        try:
            cap = float(softcap)
        except (TypeError, ValueError):
            raise TypeError(f"softcap must be a number or None, got {softcap!r}") from None
        if not (cap > 0.0 and math.isfinite(cap)):
            raise ValueError(f"softcap must be a finite number > 0, got {softcap!r}")
    try:
        ignore = operator.index(ignore_index)
    except TypeError:
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}") from None
    return eps, z, cap, ignore


def _ce_target_is_soft(
    target: Any, logits_shape: Tuple[int, ...], batch_shape: Tuple[int, ...], cax: int
) -> bool:
    """Whether `target` holds soft labels (else class indices), after checking its shape and dtype;
    shared with `_cuda` (works on the metadata of NumPy and CuPy arrays alike)."""
    if target.dtype.kind in "iu":
        if target.shape != batch_shape:
            raise ValueError(
                f"class-index target must have shape {batch_shape} "
                f"(logits {logits_shape} without axis {cax}), got {target.shape}"
            )
        return False
    if target.dtype.kind == "f" or _is_bfloat16(target.dtype):
        if target.shape != logits_shape:
            raise ValueError(
                f"soft-label target must have the logits' shape {logits_shape}, "
                f"got {target.shape}"
            )
        return True
    raise TypeError(
        f"target must hold integer class indices or floating probabilities, "
        f"got dtype {target.dtype}"
    )


def _check_weight(w: Any, classes: int) -> None:
    """`weight` must be a real array of one value per class; shared with `_cuda`."""
    if w.dtype.kind not in "biuf" and not _is_bfloat16(w.dtype):
        raise TypeError(f"weight has unsupported dtype {w.dtype}")
    if w.shape != (classes,):
        raise ValueError(f"weight must have shape ({classes},) (one per class), got {w.shape}")


class _CeCall:
    """The validated arguments of one cross-entropy call, as the kernel wants them."""

    def __init__(
        self,
        logits: Any,
        target: Any,
        axis: Any,
        weight: Any,
        ignore_index: Any,
        reduction: Any,
        label_smoothing: Any,
        z_loss: Any,
        softcap: Any,
    ):
        logits = _asarray(logits, "logits")
        kdt, rdt = _dtypes(logits, "logits")
        if logits.ndim == 0:
            raise ValueError("logits must have at least one dimension (the classes)")
        (cax,) = _normalize_axes(axis, logits.ndim, allow_multiple=False)
        eps, z, cap, ignore = _ce_options(
            reduction, label_smoothing, z_loss, softcap, ignore_index
        )

        target = _asarray(target, "target")
        layout = _Layout(logits, (cax,), kdt)
        C = layout.cols
        soft = _ce_target_is_soft(target, logits.shape, layout.batch_shape, cax)
        if soft:
            t = _Layout(target, (cax,), kdt).x2d
        else:
            t = target.reshape(-1)
            if t.dtype == np.uint64 and t.size and t.max() > np.iinfo(np.int64).max:
                pos = int(np.argmax(t > np.iinfo(np.int64).max))
                raise IndexError(
                    f"target {int(t[pos])} at position {pos} is out of bounds for {C} classes"
                )
            t = _c(t, np.int64)
        w = None
        if weight is not None:
            w = _asarray(weight, "weight")
            _check_weight(w, C)
            w = _c(w, kdt)
        self.logits = logits
        self.layout = layout
        self.kdt, self.rdt = kdt, rdt
        self.target, self.soft = t, soft
        self.weight = w
        self.ignore = ignore
        self.reduction = reduction
        self.eps, self.z, self.cap = eps, z, cap

    def run(self, grad: Optional[np.ndarray]) -> Tuple[Any, Any]:
        """Runs the kernel; returns (loss, losses-per-row array or None)."""
        lay = self.layout
        losses = None
        if self.reduction == "none":
            losses = np.empty(lay.rows, dtype=self.kdt)
        total = _native.cross_entropy(
            lay.x2d,
            self.target,
            self.weight,
            self.ignore,
            self.eps,
            self.z,
            self.cap,
            self.reduction,
            grad,
            losses,
        )
        if losses is not None:
            loss = losses.reshape(lay.batch_shape).astype(self.rdt, copy=False)
            return (loss[()] if loss.ndim == 0 else loss), losses
        return self.rdt.type(total), None


_CE_DOC_OPTIONS = """
    Options (PyTorch's names): `weight` per-class weights of shape (C,); `ignore_index` rows whose
    label equals it add nothing and get a zero gradient; `reduction` "mean" (divides by the summed
    weight of the counted rows; 0.0 when every row is ignored), "sum" or "none";
    `label_smoothing` ε in [0, 1]; `z_loss` adds z·logsumexp(o)² per counted row; `softcap` c replaces
    the logits by c·tanh(o/c) first. `target` holds class indices (the logits' shape without `axis`) or
    soft labels (the logits' shape).
"""


def cross_entropy(
    logits: Any,
    target: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: Optional[float] = None,
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
        "loss", logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss,
        softcap, None,
    )


def _ce_fast(
    logits: Any,
    target: Any,
    weight: Any,
    ignore_index: Any,
    reduction: Any,
    label_smoothing: Any,
    z_loss: Any,
    softcap: Any,
    want_grad: bool,
    out: Any,
) -> Optional[Tuple[Any, Any]]:
    """The common call (2-D C-contiguous logits, int64 labels) in one native call, or None."""
    if type(logits) is not np.ndarray or type(reduction) is not str:
        return None
    r = _native.cross_entropy_fast(
        logits, target, weight, ignore_index, label_smoothing, z_loss, softcap, reduction,
        want_grad, out,
    )
    if r is None:
        return None
    loss, grad = r
    if type(loss) is float:
        loss = logits.dtype.type(loss)
    return loss, grad


_CUDA_CE = {
    "loss": "cross_entropy",
    "grad": "cross_entropy_grad",
    "both": "cross_entropy_with_grad",
}


def _ce(
    kind: str,
    logits: Any,
    target: Any,
    axis: Any,
    weight: Any,
    ignore_index: Any,
    reduction: Any,
    label_smoothing: Any,
    z_loss: Any,
    softcap: Any,
    out: Any,
) -> Any:
    """The three cross-entropy entry points; `kind` is "loss", "grad" or "both"."""
    if _is_dask(logits) or _is_dask(target):
        return _dask().ce(kind, logits, target, axis, weight, ignore_index, reduction,
                          label_smoothing, z_loss, softcap, out)
    want_grad = kind != "loss"
    r = None
    if axis == -1:
        r = _ce_fast(
            logits, target, weight, ignore_index, reduction, label_smoothing, z_loss, softcap,
            want_grad, out,
        )
    if r is None:
        if _is_cupy(logits):
            opts: dict[str, Any] = dict(
                axis=axis, weight=weight, ignore_index=ignore_index, reduction=reduction,
                label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
            )
            if want_grad:
                opts["out"] = out
            return getattr(_cuda(), _CUDA_CE[kind])(logits, target, **opts)
        call = _CeCall(
            logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss, softcap
        )
        r = _ce_with_grad(call, out) if want_grad else call.run(None)
    if kind == "loss":
        return r[0]
    return r[1] if kind == "grad" else r


def _ce_with_grad(call: _CeCall, out: Any) -> Tuple[Any, Any]:
    lay = call.layout
    if out is not None:
        out = _check_out(out, call.logits.shape, call.rdt)
    result: dict[str, Any] = {}

    def run(dst: np.ndarray) -> None:
        result["loss"] = call.run(dst)[0]

    if lay.rows * lay.cols == 0:
        loss = call.run(np.empty((lay.rows, lay.cols), dtype=call.kdt))[0]
        grad = out if out is not None else np.empty(call.logits.shape, dtype=call.rdt)
        return loss, grad
    grad = _write_result(lay, out, call.rdt, run)
    return result["loss"], grad


def cross_entropy_grad(
    logits: Any,
    target: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: Optional[float] = None,
    out: Any = None,
) -> Any:
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
    return _ce(
        "grad", logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss,
        softcap, out,
    )


def cross_entropy_with_grad(
    logits: Any,
    target: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: Optional[float] = None,
    out: Any = None,
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
    loss, grad = _ce(
        "both", logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss,
        softcap, out,
    )
    return loss, grad


for _f in (cross_entropy, cross_entropy_grad, cross_entropy_with_grad):
    _f.__doc__ = (_f.__doc__ or "") + _CE_DOC_OPTIONS


# --------------------------------------------------------------------------------------------------
# backward passes, entropy, KL divergence


def _pair_dtypes(a: np.ndarray, b: np.ndarray, what: Tuple[str, str]) -> Tuple[np.dtype, np.dtype]:
    """(kernel dtype, result dtype) of two inputs: their common result dtype when it is the same
    (float16 stays float16, computed in float32), else the promotion of their kernel dtypes."""
    ka, ra = _dtypes(a, what[0])
    kb, rb = _dtypes(b, what[1])
    if ra == rb:
        return ka, ra
    k = np.dtype(np.result_type(ka, kb))
    return k, k


def _data_ptr(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def _backward(grad_output: Any, y: Any, axis: Any, out: Any, log: bool, yname: str) -> Any:
    g = _asarray(grad_output, "grad_output")
    yy = _asarray(y, yname)
    kdt, rdt = _pair_dtypes(g, yy, ("grad_output", yname))
    if g.shape != yy.shape:
        raise ValueError(f"grad_output has shape {g.shape}, {yname} has shape {yy.shape}")
    if g.ndim == 0:
        ax = 0
        g1, y1 = g.reshape(1), yy.reshape(1)
    else:
        (ax,) = _normalize_axes(axis, g.ndim, allow_multiple=False)
        g1, y1 = g, yy
    if out is not None:
        out = _check_out(out, g.shape, rdt)
    lg = _Layout(g1, (ax,), kdt)
    ly = _Layout(y1, (ax,), kdt)
    if lg.rows * lg.cols == 0:
        return out if out is not None else np.empty(g.shape, dtype=rdt)
    if out is not None and rdt == kdt and g.ndim:
        view = lg.out_view(out)
        # The kernel may write `out` directly when it is exactly `g` and/or `y` (in place) or shares
        # no memory with either; any other overlap goes through a temporary.
        if view is not None and all(
            _data_ptr(view) == _data_ptr(a) or not np.may_share_memory(view, a)
            for a in (lg.x2d, ly.x2d)
        ):
            _native.softmax_backward(lg.x2d, ly.x2d, view, log)
            return out
    dst = np.empty((lg.rows, lg.cols), dtype=kdt)
    _native.softmax_backward(lg.x2d, ly.x2d, dst, log)
    res = lg.restore(dst).reshape(g.shape)
    if out is not None:
        np.copyto(out, res, casting="unsafe")
        return out
    return res.astype(rdt) if rdt != kdt else res


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
    if _is_dask(grad_output) or _is_dask(y):
        return _dask().softmax_backward(grad_output, y, axis, out=out)
    if _is_cupy(grad_output):
        return _cuda().softmax_backward(grad_output, y, axis, out=out)
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
    if _is_dask(grad_output) or _is_dask(log_y):
        return _dask().log_softmax_backward(grad_output, log_y, axis, out=out)
    if _is_cupy(grad_output):
        return _cuda().log_softmax_backward(grad_output, log_y, axis, out=out)
    return _backward(grad_output, log_y, axis, out, True, "log_y")


def _base_scale(base: Any) -> float:
    """1 / ln(base): the factor from nats to `base` units."""
    if base is None:
        return 1.0
    try:
        b = float(base)
    except (TypeError, ValueError):
        raise TypeError(f"base must be a real number or None, got {base!r}") from None
    if not b > 0.0:
        raise ValueError(f"base must be > 0, got {base!r}")
    if b == 1.0:
        raise ValueError("base must not be 1 (log(1) = 0)")
    return 1.0 / math.log(b)


def _row_reduce(p: np.ndarray, q: Optional[np.ndarray], axis: Any, from_logits: bool, scale: float,
                kdt: np.dtype, rdt: np.dtype) -> Any:
    if p.ndim == 0:
        p = p.reshape(1)
        q = None if q is None else q.reshape(1)
        axes: Tuple[int, ...] = (0,)
    else:
        axes = _normalize_axes(axis, p.ndim, allow_multiple=False)
    lp = _Layout(p, axes, kdt)
    q2d = None if q is None else _Layout(q, axes, kdt).x2d
    res = np.empty(lp.rows, dtype=kdt)
    if lp.rows:
        _native.entropy(lp.x2d, q2d, res, bool(from_logits), scale)
    r = res.reshape(lp.batch_shape)
    if rdt != kdt:
        r = r.astype(rdt)
    return r[()] if r.ndim == 0 else r


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
    if _is_dask(p):
        return _dask().entropy(p, axis, base=base, from_logits=from_logits)
    if _is_cupy(p):
        return _cuda().entropy(p, axis, base=base, from_logits=from_logits)
    pa = _asarray(p, "p")
    kdt, rdt = _dtypes(pa, "p")
    scale = _base_scale(base)
    return _row_reduce(pa, None, axis, from_logits, scale, kdt, rdt)


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
    if _is_dask(p) or _is_dask(q):
        return _dask().kl_divergence(p, q, axis, base=base, from_logits=from_logits)
    if _is_cupy(p):
        return _cuda().kl_divergence(p, q, axis, base=base, from_logits=from_logits)
    pa = _asarray(p, "p")
    qa = _asarray(q, "q")
    kdt, rdt = _pair_dtypes(pa, qa, ("p", "q"))
    scale = _base_scale(base)
    try:
        shape = np.broadcast_shapes(pa.shape, qa.shape)
    except ValueError:
        raise ValueError(f"p of shape {pa.shape} and q of shape {qa.shape} do not broadcast") from None
    pa = np.broadcast_to(pa, shape) if pa.shape != shape else pa
    qa = np.broadcast_to(qa, shape) if qa.shape != shape else qa
    return _row_reduce(pa, qa, axis, from_logits, scale, kdt, rdt)


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
