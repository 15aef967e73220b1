"""PyTorch tensors in, PyTorch tensors out: fastsoftmax's kernels as differentiable functions and
``torch.nn`` loss modules.

``import fastsoftmax.torch as ft`` gives :func:`softmax`, :func:`log_softmax`, :func:`cross_entropy`,
:func:`linear_cross_entropy` and the modules :class:`CrossEntropyLoss` and
:class:`LinearCrossEntropyLoss`, with PyTorch's names, shapes, defaults and conventions (classes
along dim 1 for the cross-entropy), plus ``z_loss`` and ``softcap``.

- Autograd: the cross-entropy's forward pass computes the loss and its gradient in one pass over the
  logits when an input requires a gradient; backward scales the saved gradient by the upstream one.
  ``softmax``/``log_softmax`` backward run the fused vector-Jacobian kernels.
- ``torch.compile``: the functions are ``torch.library`` custom ops (``torch.ops.fastsoftmax.*``)
  with fake kernels and registered autograd, so ``fullgraph=True`` traces them without a graph
  break. Eager calls skip the op dispatcher (its cost would dominate small batches).
- Devices: CPU tensors are computed in place of their memory through NumPy (no copy); CUDA tensors
  through CuPy (DLPack) on PyTorch's current stream. float32, float64, float16 and bfloat16 (half
  types compute in float32 and return their own dtype).
- Memory: large CPU results (a gradient, a softmax) are written into cached buffers that return to
  the cache when their last tensor is freed, so a training loop does not page-fault a fresh
  gradient at every step; :func:`empty_cache` releases the free ones (at most 1 GiB is kept).
- Differences from ``torch.nn.functional``: a "mean" over rows that are all ``ignore_index`` is 0.0
  (PyTorch gives NaN); ``weight`` and soft targets are not differentiated (a soft target that
  requires a gradient raises ``NotImplementedError``).

Importing ``fastsoftmax`` never imports PyTorch; only this module does.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Literal, Optional

import torch
from torch import Tensor

from ._torch_bridge import FLOAT_DTYPES
from ._torch_pool import empty_cache
from ._torch_ops import (
    CrossEntropyFunction,
    LinearCrossEntropyFunction,
    SoftmaxFunction,
    LossOptions,
    ce_impl,
    linear_impl,
    softmax_impl,
)

__all__ = [
    "CrossEntropyLoss",
    "LinearCrossEntropyLoss",
    "cross_entropy",
    "empty_cache",
    "linear_cross_entropy",
    "log_softmax",
    "softmax",
]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")
_PLAIN_TYPES = (Tensor, torch.nn.Parameter)


class DimensionError(IndexError, ValueError):
    """A `dim` out of range: an ``IndexError`` as in PyTorch, and a ``ValueError`` as in the rest of
    fastsoftmax."""


# --------------------------------------------------------------------------------------------------
# which path runs a call


_is_in_mode: Optional[Callable[[], bool]]
try:
    from torch.utils._python_dispatch import is_in_torch_dispatch_mode as _is_in_mode
except ImportError:  # a PyTorch without it: the custom op is always correct, only slower
    _is_in_mode = None


def _in_dispatch_mode() -> bool:
    return _is_in_mode is None or _is_in_mode()


_functorch = getattr(torch._C, "_functorch", None)
_is_wrapped: Callable[[Tensor], bool] = getattr(
    _functorch, "is_functorch_wrapped_tensor", lambda t: False
)


def _use_custom_op(*tensors: Optional[Tensor]) -> bool:
    """True while tracing (torch.compile, export, fake tensors, dispatch modes, subclasses,
    torch.func transforms); the eager autograd functions run on real tensors only."""
    if torch.compiler.is_compiling():
        return True
    for t in tensors:
        if t is not None and (type(t) not in _PLAIN_TYPES or t.is_meta or _is_wrapped(t)):
            return True
    return _in_dispatch_mode()


def _needs_grad(*tensors: Optional[Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# --------------------------------------------------------------------------------------------------
# argument checks (before any work)


def _check_float(t: Any, what: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{what} must be a floating point tensor (float32, float64, float16 or bfloat16), "
            f"got {t.dtype}"
        )
    if not (t.is_cpu or t.is_cuda or t.is_meta):
        raise TypeError(f"{what} is on {t.device}; fastsoftmax runs on CPU and CUDA tensors")
    return t


def _same_device(t: Tensor, x: Tensor, what: str) -> None:
    if t.is_cpu and x.is_cpu:
        return
    if t.device != x.device:
        raise ValueError(
            f"Expected all tensors to be on the same device, but found input on {x.device} and "
            f"{what} on {t.device}"
        )


def _dim(dim: Any, ndim: int) -> int:
    try:
        d = operator.index(dim)
    except TypeError:
        raise TypeError(f"dim must be an int, got {type(dim).__name__}") from None
    n = max(ndim, 1)  # a 0-d tensor accepts dim 0 and -1, as in PyTorch
    if not -n <= d < n:
        raise DimensionError(
            f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {d})"
        )
    return d % n


def _float(v: Any, what: str) -> float:
    if isinstance(v, Tensor) or not isinstance(v, (int, float)) or isinstance(v, bool):
        raise TypeError(f"{what} must be a Python number, got {type(v).__name__}")
    return float(v)


def _options(
    ignore_index: Any, reduction: Any, label_smoothing: Any, z_loss: Any, softcap: Any
) -> LossOptions:
    """The scalar options as the custom ops take them; their ranges are checked by the kernels'
    own validation (ValueError) before any work."""
    try:
        ignore = operator.index(ignore_index)
    except TypeError:
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}") from None
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction!r} is not a valid value for reduction")
    eps = _float(label_smoothing, "label_smoothing")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    cap = None if softcap is None else _float(softcap, "softcap")
    return LossOptions(int(ignore), str(reduction), eps, _float(z_loss, "z_loss"), cap)


def _check_weight(weight: Any, x: Tensor, classes: int) -> Optional[Tensor]:
    if weight is None:
        return None
    w = _check_float(weight, "weight")
    _same_device(w, x, "weight")
    if tuple(w.shape) != (classes,):
        raise ValueError(f"weight tensor should be defined either for all {classes} classes or no "
                         f"classes but got weight tensor of shape: {list(w.shape)}")
    return w.detach()  # class weights are constants here, as in torch.nn.functional


def _check_labels(target: Any, x: Tensor, shape: tuple[int, ...]) -> Tensor:
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    _same_device(target, x, "target")
    dt = target.dtype
    if dt.is_floating_point or dt.is_complex or dt == torch.bool:
        raise TypeError(f"target must hold integer class indices, got {dt}")
    if tuple(target.shape) != shape:
        raise ValueError(f"Expected target size {list(shape)}, got {list(target.shape)}")
    return target


def _check_ce_target(target: Any, x: Tensor) -> Tensor:
    """Class indices of the input's shape without dim 1, or soft labels of the input's shape."""
    if isinstance(target, Tensor) and target.dtype.is_floating_point:
        _same_device(target, x, "target")
        if target.dtype not in FLOAT_DTYPES:
            raise TypeError(f"soft targets must be float32, float64, float16 or bfloat16, got "
                            f"{target.dtype}")
        if target.shape != x.shape:
            raise ValueError(
                f"soft targets must have the input's shape {list(x.shape)}, got {list(target.shape)}"
            )
        if _needs_grad(target):
            raise NotImplementedError(
                "fastsoftmax.torch.cross_entropy does not differentiate soft targets; "
                "pass target.detach()"
            )
        return target
    return _check_labels(target, x, () if x.dim() < 2 else (x.shape[0], *x.shape[2:]))


# --------------------------------------------------------------------------------------------------
# functions


def _softmax(input: Tensor, dim: Any, log: bool) -> Tensor:
    x = _check_float(input, "input")
    d = _dim(dim, x.dim())
    if _use_custom_op(x):
        op = torch.ops.fastsoftmax.log_softmax if log else torch.ops.fastsoftmax.softmax
        return op(x, d)  # type: ignore[no-any-return]
    if _needs_grad(x):
        return SoftmaxFunction.apply(x, d, log)  # type: ignore[no-any-return]
    return softmax_impl(x, d, log)


def softmax(input: Tensor, dim: int = -1) -> Tensor:
    r"""Softmax along `dim`: :math:`\mathrm{softmax}(x)_i = e^{x_i - m} / \sum_j e^{x_j - m}`,
    :math:`m = \max_j x_j` (as ``torch.softmax``), differentiable.

    `input`: any shape, float32/float64/float16/bfloat16, CPU or CUDA; the result has its shape and
    dtype. Backward runs the fused kernel :math:`y \odot (g - \sum_k g_k y_k)`.

    >>> import torch, fastsoftmax.torch as ft
    >>> ft.softmax(torch.tensor([1.0, 2.0, 3.0]))
    tensor([0.0900, 0.2447, 0.6652])
    """
    return _softmax(input, dim, False)


def log_softmax(input: Tensor, dim: int = -1) -> Tensor:
    r"""Log-softmax along `dim`: :math:`x_i - \log \sum_j e^{x_j}` (as ``torch.log_softmax``),
    differentiable; backward is :math:`g - e^{y} \sum_k g_k`.

    Shapes and dtypes as :func:`softmax`.

    >>> import torch, fastsoftmax.torch as ft
    >>> ft.log_softmax(torch.tensor([[0.0, 0.0]]), dim=1)
    tensor([[-0.6931, -0.6931]])
    """
    return _softmax(input, dim, True)


def cross_entropy(
    input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
    ignore_index: int = -100, reduction: Reduction = "mean", label_smoothing: float = 0.0,
    *, z_loss: float = 0.0, softcap: Optional[float] = None,
) -> Tensor:
    r"""Cross-entropy loss, as ``torch.nn.functional.cross_entropy`` (plus `z_loss` and `softcap`).

    Per element :math:`l = \mathrm{logsumexp}(o) - o_y` (class indices) or
    :math:`l = -\sum_c q_c \log \mathrm{softmax}(o)_c` (soft targets), over the classes along dim 1.

    Parameters
    ----------
    input : Tensor
        ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)``; float32, float64, float16 or bfloat16.
    target : Tensor
        Class indices (any integer dtype) of shape ``(N,)``, ``(N, d1, ...)`` or ``()``; or soft
        targets (floating) of the input's shape.
    weight : Tensor, optional
        ``(C,)`` per-class weights; "mean" divides by the summed weight of the counted elements.
    ignore_index, reduction, label_smoothing
        As in PyTorch. "none" returns the losses in the target's (batch) shape.
    z_loss : float
        Adds ``z_loss * logsumexp(o)**2`` per counted element (PaLM's auxiliary loss).
    softcap : float, optional
        Replaces the logits by ``softcap * tanh(o / softcap)`` first (Gemma 2).

    Returns
    -------
    Tensor of the input's dtype: 0-d for "mean"/"sum", the target's batch shape for "none".

    >>> import torch, fastsoftmax.torch as ft
    >>> o = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    >>> loss = ft.cross_entropy(o, torch.tensor([0, 2]))
    >>> loss
    tensor(0.6691, grad_fn=<CrossEntropyFunctionBackward>)
    >>> loss.backward(); o.grad
    tensor([[-0.1065,  0.0533,  0.0533],
            [ 0.1667,  0.1667, -0.3333]])
    """
    x = _check_float(input, "input")
    if x.dim() == 0:
        raise ValueError("input must have at least one dimension (the classes)")
    t = _check_ce_target(target, x)
    w = None if weight is None else _check_weight(weight, x, x.shape[1 if x.dim() >= 2 else 0])
    opts = _options(ignore_index, reduction, label_smoothing, z_loss, softcap)
    with_grad = _needs_grad(x)
    if _use_custom_op(x, t, w):
        loss, _ = torch.ops.fastsoftmax.cross_entropy(x, t, w, *opts, with_grad)
        return loss  # type: ignore[no-any-return]
    if with_grad:
        return CrossEntropyFunction.apply(x, t, w, *opts, True)  # type: ignore[no-any-return]
    return ce_impl(x, t, w, opts, False)[0]


def linear_cross_entropy(
    input: Tensor, classifier: Tensor, target: Tensor, bias: Optional[Tensor] = None,
    weight: Optional[Tensor] = None,
    ignore_index: int = -100, reduction: Reduction = "mean", label_smoothing: float = 0.0,
    *, z_loss: float = 0.0, softcap: Optional[float] = None, chunk_size: Optional[int] = None,
) -> Tensor:
    r"""The classifier head fused with its loss:
    ``cross_entropy(input @ classifier.T + bias, target, ...)`` without ever holding all the logits.

    The logits are made and consumed one chunk of `chunk_size` rows at a time; when an input requires
    a gradient, the forward pass computes the gradients of `input`, `classifier` and `bias` in the
    same pass (saved for backward). With ``reduction="none"`` backward recomputes the logits chunk by
    chunk (each row's upstream gradient has to be applied before the classifier's gradient sums the
    rows).

    Parameters
    ----------
    input : Tensor
        ``(..., D)`` hidden states.
    classifier : Tensor
        ``(V, D)``, the layout of ``torch.nn.Linear(D, V).weight``; the input's dtype.
    target : Tensor
        Integer class indices of shape ``input.shape[:-1]``.
    bias : Tensor, optional
        ``(V,)``.
    weight, ignore_index, reduction, label_smoothing, z_loss, softcap
        As in :func:`cross_entropy` (the classes are the last dim of the logits).
    chunk_size : int, optional
        Rows of logits per chunk; None picks one from V and the dtype.

    Returns
    -------
    Tensor of the input's dtype: 0-d for "mean"/"sum", the target's shape for "none".

    >>> import torch, fastsoftmax.torch as ft
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> head = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    >>> ft.linear_cross_entropy(x, head, torch.tensor([0, 2]))
    tensor(0.6691, grad_fn=<LinearCrossEntropyFunctionBackward>)
    """
    x = _check_float(input, "input")
    w = _check_float(classifier, "classifier")
    _same_device(w, x, "classifier")
    if x.dim() < 1 or w.dim() != 2 or w.shape[1] != x.shape[-1]:
        raise ValueError(
            f"input (..., D) and classifier (V, D) do not match: input {list(x.shape)}, "
            f"classifier {list(w.shape)}"
        )
    if w.dtype != x.dtype:
        raise TypeError(f"classifier has dtype {w.dtype}, input {x.dtype}; they must be the same")
    b = None
    if bias is not None:
        b = _check_float(bias, "bias")
        _same_device(b, x, "bias")
        if tuple(b.shape) != (w.shape[0],) or b.dtype != x.dtype:
            raise ValueError(
                f"bias must have shape [{w.shape[0]}] and dtype {x.dtype}, got "
                f"{list(b.shape)} {b.dtype}"
            )
    t = _check_labels(target, x, tuple(x.shape[:-1]))
    cw = _check_weight(weight, x, w.shape[0])
    opts = _options(ignore_index, reduction, label_smoothing, z_loss, softcap)
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    # "none" computes no gradient in the forward pass: backward needs each row's upstream value.
    with_grad = _needs_grad(x, w, b) and opts[1] != "none"
    args = (x, w, t, b, cw, *opts, chunk_size)
    if _use_custom_op(x, w, t, b, cw):
        return torch.ops.fastsoftmax.linear_cross_entropy(*args, with_grad)[0]  # type: ignore[no-any-return]
    if _needs_grad(x, w, b):
        return LinearCrossEntropyFunction.apply(*args, with_grad)  # type: ignore[no-any-return]
    return linear_impl(x, w, t, b, cw, opts, chunk_size, False)[0]


# --------------------------------------------------------------------------------------------------
# modules


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` computed by :func:`cross_entropy`, with `z_loss` and `softcap`.

    The constructor takes ``torch.nn.CrossEntropyLoss``'s arguments (`size_average` and `reduce` are
    deprecated there and here) plus the keyword-only `z_loss` and `softcap`; called as
    ``loss(input, target)``. It is a subclass, so it drops in wherever that module is expected.

    >>> import torch, fastsoftmax.torch as ft
    >>> loss = ft.CrossEntropyLoss(label_smoothing=0.1)
    >>> loss(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]))
    tensor(0.3729)
    """

    def __init__(
        self, weight: Optional[Tensor] = None, size_average: Optional[bool] = None,
        ignore_index: int = -100, reduce: Optional[bool] = None, reduction: str = "mean",
        label_smoothing: float = 0.0, *, z_loss: float = 0.0, softcap: Optional[float] = None,
    ) -> None:
        super().__init__(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
        _options(ignore_index, self.reduction, label_smoothing, z_loss, softcap)
        self.z_loss = z_loss
        self.softcap = softcap

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(
            input, target, self.weight, self.ignore_index, self.reduction,  # type: ignore[arg-type]
            self.label_smoothing, z_loss=self.z_loss, softcap=self.softcap,
        )

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, z_loss={self.z_loss}, softcap={self.softcap}"


class LinearCrossEntropyLoss(torch.nn.modules.loss._WeightedLoss):
    """The loss module of :func:`linear_cross_entropy`, called as
    ``loss(input, classifier, target, bias=None)``.

    The constructor takes ``torch.nn.CrossEntropyLoss``'s arguments plus the keyword-only `z_loss`,
    `softcap` and `chunk_size`.

    >>> import torch, fastsoftmax.torch as ft
    >>> head = torch.nn.Linear(2, 3)
    >>> loss = ft.LinearCrossEntropyLoss(reduction="sum")
    >>> loss(torch.randn(4, 2), head.weight, torch.tensor([0, 1, 2, 0]), head.bias).shape
    torch.Size([])
    """

    def __init__(
        self, weight: Optional[Tensor] = None, size_average: Optional[bool] = None,
        ignore_index: int = -100, reduce: Optional[bool] = None, reduction: str = "mean",
        label_smoothing: float = 0.0, *, z_loss: float = 0.0, softcap: Optional[float] = None,
        chunk_size: Optional[int] = None,
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        _options(ignore_index, self.reduction, label_smoothing, z_loss, softcap)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.softcap = softcap
        self.chunk_size = chunk_size

    def forward(
        self, input: Tensor, classifier: Tensor, target: Tensor, bias: Optional[Tensor] = None
    ) -> Tensor:
        return linear_cross_entropy(
            input, classifier, target, bias, self.weight, self.ignore_index,
            self.reduction,  # type: ignore[arg-type]
            self.label_smoothing, z_loss=self.z_loss, softcap=self.softcap,
            chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        return (f"reduction={self.reduction!r}, z_loss={self.z_loss}, softcap={self.softcap}, "
                f"chunk_size={self.chunk_size}")
