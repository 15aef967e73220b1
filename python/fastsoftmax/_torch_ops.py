"""The PyTorch operators behind ``fastsoftmax.torch``: kernels on tensors, their ``torch.library``
registrations (fake kernels and autograd, for ``torch.compile``), and eager autograd functions.

Two ways to run the same code:

- ``torch.library`` custom ops (namespace ``fastsoftmax``), used while ``torch.compile`` traces,
  under fake tensors and dispatch modes, and for tensor subclasses. Their fake kernels give the
  output shapes, so a compiled model has no graph break.
- plain ``torch.autograd.Function`` subclasses, used in ordinary eager code: the custom-op dispatcher
  costs tens of microseconds a call, which would be most of the time of a small batch.

Both save what the forward pass computed and run the same backward functions. The cross-entropy
forward pass computes the loss and its gradient in one pass over the logits
(``fastsoftmax.cross_entropy_with_grad``) when an input needs a gradient, and backward only scales
that gradient by the upstream one; eagerly, an upstream gradient of exactly one (``loss.backward()``)
returns the saved gradient itself, with no further pass over it. Large CPU results are written
into cached buffers (``_torch_pool``), so a training step does not page-fault a fresh gradient.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Tuple, Type

import torch
from torch import Tensor

from . import (
    cross_entropy,
    cross_entropy_grad,
    cross_entropy_with_grad,
    linear_cross_entropy,
    linear_cross_entropy_with_grad,
    log_softmax,
    log_softmax_backward,
    softmax,
    softmax_backward,
)
from ._torch_bridge import from_array, on_device, to_array
from ._torch_pool import out_like

NS = "fastsoftmax"

# Rows of logits per chunk when the linear head's "none" backward recomputes them: about this many
# bytes of logits at a time (the same order as the default chunk of the fused forward pass).
LINEAR_CHUNK_BYTES = 32 << 20

_EMPTY_SHAPE = (0,)  # a custom op cannot return None: "no gradient computed" is an empty tensor


class LossOptions(NamedTuple):
    """The scalar loss options, in the order the custom ops' schemas list them (`_CE_ARGS`)."""

    ignore_index: int
    reduction: str
    label_smoothing: float
    z_loss: float
    softcap: Optional[float]


# --------------------------------------------------------------------------------------------------
# kernels on tensors (real tensors only)


def softmax_impl(x: Tensor, dim: int, log: bool) -> Tensor:
    f = log_softmax if log else softmax

    def run() -> Tensor:
        xa = to_array(x)
        return from_array(f(xa, axis=dim, out=out_like(xa)), x)

    return on_device(x, run)


def softmax_backward_impl(g: Tensor, y: Tensor, dim: int, log: bool) -> Tensor:
    f = log_softmax_backward if log else softmax_backward

    def run() -> Tensor:
        ya = to_array(y)
        return from_array(f(to_array(g), ya, axis=dim, out=out_like(ya)), y)

    return on_device(y, run)


def ce_impl(
    x: Tensor, target: Tensor, weight: Optional[Tensor], opts: LossOptions, with_grad: bool
) -> Tuple[Tensor, Optional[Tensor]]:
    """(loss, gradient of the loss, or None): the gradient of the sum for reduction="none"."""

    def run() -> Tuple[Tensor, Optional[Tensor]]:
        xa, ta = to_array(x), to_array(target)
        wa = None if weight is None else to_array(weight)
        axis = 1 if x.dim() > 2 else -1  # classes along dim 1; -1 is the fast path for (N, C), (C,)
        kw: Any = opts._asdict()
        if with_grad:
            loss, grad = cross_entropy_with_grad(
                xa, ta, axis=axis, weight=wa, out=out_like(xa), **kw)
            return from_array(loss, x), from_array(grad, x)
        return from_array(cross_entropy(xa, ta, axis=axis, weight=wa, **kw), x), None

    return on_device(x, run) if x.is_cuda else run()


def ce_loss_shape(x: Tensor, reduction: str) -> Tuple[int, ...]:
    if reduction != "none" or x.dim() < 2:
        return ()
    return (x.shape[0], *x.shape[2:])


def scale_grad(grad: Tensor, up: Tensor, reduction: str, eager: bool) -> Tensor:
    """The saved gradient (of the sum, for "none") times the upstream gradient of the loss."""
    if reduction == "none" and grad.dim() >= 2:
        up = up.unsqueeze(1)  # one upstream value per row, broadcast over the classes (dim 1)
    if eager and not up.is_cuda and _all_one(up):  # (a CUDA check would synchronise)
        return grad  # loss.backward(): no pass over the gradient
    return grad * up


def _all_one(up: Tensor) -> bool:
    if up.dim() == 0:
        return float(up) == 1.0
    return bool(torch.all(up == 1))


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def linear_impl(
    x: Tensor,
    classifier: Tensor,
    target: Tensor,
    bias: Optional[Tensor],
    weight: Optional[Tensor],
    opts: LossOptions,
    chunk_size: Optional[int],
    with_grad: bool,
) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """(loss, grad_x, grad_classifier, grad_bias) of the fused linear head; grads None unless
    `with_grad`, grad_bias None without a bias."""
    def run() -> Tuple[Tensor, Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
        kw: Any = dict(
            opts._asdict(),
            bias=None if bias is None else to_array(bias),
            weight=None if weight is None else to_array(weight),
            chunk_size=chunk_size,
        )
        arrays = (to_array(x), to_array(classifier), to_array(target))
        if not with_grad:
            return from_array(linear_cross_entropy(*arrays, **kw), x), None, None, None
        loss, gx, gw, gb = linear_cross_entropy_with_grad(*arrays, **kw)
        return (
            from_array(loss, x),
            from_array(gx, x),
            from_array(gw, classifier),
            None if bias is None else from_array(gb, bias),
        )

    return on_device(x, run)


def linear_none_backward_impl(
    up: Tensor,
    x: Tensor,
    classifier: Tensor,
    target: Tensor,
    bias: Optional[Tensor],
    weight: Optional[Tensor],
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: Optional[float],
    chunk_size: Optional[int],
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Gradients of ``sum(up * losses)`` for the linear head with reduction="none".

    The classifier's gradient sums over rows, so per-row upstream values cannot be applied to a
    gradient saved by the forward pass: the logits are recomputed chunk by chunk, each chunk's
    gradient (the fused kernel, in place) scaled by its rows' upstream values, then multiplied out.
    """
    ct = _compute_dtype(x)
    d, v = x.shape[-1], classifier.shape[0]
    x2 = x.detach().reshape(-1, d).to(ct)
    w2 = classifier.detach().to(ct)
    b2 = None if bias is None else bias.detach().to(ct)
    t1 = target.reshape(-1)
    u = up.detach().reshape(-1, 1).to(ct)
    gx = torch.empty_like(x2)
    gw = torch.zeros_like(w2)
    gb = None if b2 is None else torch.zeros_like(b2)
    rows = chunk_size or max(1, LINEAR_CHUNK_BYTES // (max(v, 1) * x2.element_size()))

    def run() -> None:
        wa = None if weight is None else to_array(weight)
        for s in range(0, x2.shape[0], rows):
            xc = x2[s : s + rows]
            logits = xc @ w2.T if b2 is None else torch.addmm(b2, xc, w2.T)
            la = to_array(logits)
            cross_entropy_grad(
                la, to_array(t1[s : s + rows]), weight=wa, ignore_index=ignore_index,
                reduction="none", label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
                out=la,
            )
            logits.mul_(u[s : s + rows])
            gx[s : s + rows] = logits @ w2
            gw.addmm_(logits.T, xc)
            if gb is not None:
                gb.add_(logits.sum(0))

    on_device(x, run)
    return (
        gx.reshape(x.shape).to(x.dtype),
        gw.to(classifier.dtype),
        None if gb is None or bias is None else gb.to(bias.dtype),
    )


# --------------------------------------------------------------------------------------------------
# backward functions, shared by the custom ops (eager=False) and the eager autograd functions


def _first_order_only() -> None:
    # Backward runs with grad mode on only under create_graph=True. The saved gradients are constants
    # to autograd, so a second derivative through them would be silently wrong: refuse it.
    if torch.is_grad_enabled():
        raise RuntimeError("fastsoftmax.torch: double backward (create_graph=True) is not supported")


def _setup_softmax(ctx: Any, inputs: Tuple[Any, ...], output: Tensor) -> None:
    ctx.save_for_backward(output)
    ctx.dim = inputs[1]


def _softmax_backward(ctx: Any, g: Tensor, log: bool, eager: bool) -> Tuple[Optional[Tensor], ...]:
    _first_order_only()
    (y,) = ctx.saved_tensors
    if eager:
        return softmax_backward_impl(g, y, ctx.dim, log), None, None
    op = torch.ops.fastsoftmax.log_softmax_backward if log else torch.ops.fastsoftmax.softmax_backward
    return op(g, y, ctx.dim), None


def _setup_ce(ctx: Any, inputs: Tuple[Any, ...], output: Tuple[Tensor, Tensor]) -> None:
    ctx.save_for_backward(output[1])
    ctx.reduction, ctx.with_grad = inputs[4], inputs[8]


def _ce_backward(ctx: Any, up: Tensor, eager: bool) -> Tuple[Optional[Tensor], ...]:
    _first_order_only()
    (grad,) = ctx.saved_tensors
    if not ctx.with_grad:
        raise RuntimeError("fastsoftmax: the forward pass ran without computing the gradient")
    return (scale_grad(grad, up, ctx.reduction, eager),) + (None,) * 8


def _setup_linear(ctx: Any, inputs: Tuple[Any, ...], output: Tuple[Tensor, ...]) -> None:
    ctx.reduction = inputs[6]
    ctx.has_bias = inputs[3] is not None
    if ctx.reduction == "none":
        x, w, t, b, cw = inputs[:5]
        ctx.save_for_backward(x, w, t, b, cw)
        ctx.options = inputs[5:6] + inputs[7:11]  # ignore_index, smoothing, z_loss, softcap, chunk
    else:
        ctx.save_for_backward(*output[1:])


def _linear_backward(ctx: Any, up: Tensor, eager: bool) -> Tuple[Optional[Tensor], ...]:
    _first_order_only()
    if ctx.reduction == "none":
        x, w, t, b, cw = ctx.saved_tensors
        if eager:
            gx, gw, gb = linear_none_backward_impl(up, x, w, t, b, cw, *ctx.options)
        else:
            gx, gw, gb = torch.ops.fastsoftmax.linear_cross_entropy_backward(
                up, x, w, t, b, cw, *ctx.options
            )
    else:
        gx, gw, gb = (scale_grad(g, up, ctx.reduction, eager) for g in ctx.saved_tensors)
    return (gx, gw, None, gb if ctx.has_bias else None) + (None,) * 8


# --------------------------------------------------------------------------------------------------
# torch.library custom ops


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(_EMPTY_SHAPE)


def _or_empty(t: Optional[Tensor], like: Tensor) -> Tensor:
    return _empty(like) if t is None else t


_CE_ARGS = (
    "Tensor? weight, int ignore_index, str reduction, float label_smoothing, float z_loss, "
    "float? softcap"
)


def _ce_op(x: Tensor, target: Tensor, weight: Optional[Tensor], *args: Any) -> Tuple[Tensor, Tensor]:
    """The op with the schema's flat arguments: the five options, then `with_grad`."""
    loss, grad = ce_impl(x, target, weight, LossOptions(*args[:5]), args[5])
    return loss, _or_empty(grad, x)


def _ce_fake(x: Tensor, target: Tensor, *args: Any) -> Tuple[Tensor, Tensor]:
    reduction, with_grad = args[2], args[6]
    loss = x.new_empty(ce_loss_shape(x, reduction))
    return loss, (x.new_empty(x.shape) if with_grad else _empty(x))


def _linear_op(
    x: Tensor, classifier: Tensor, target: Tensor, bias: Optional[Tensor], *args: Any
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    weight, opts, (chunk_size, with_grad) = args[0], LossOptions(*args[1:6]), args[6:]
    loss, gx, gw, gb = linear_impl(x, classifier, target, bias, weight, opts, chunk_size, with_grad)
    return loss, _or_empty(gx, x), _or_empty(gw, x), _or_empty(gb, x)


def _linear_fake(
    x: Tensor, classifier: Tensor, target: Tensor, bias: Optional[Tensor], *args: Any
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    reduction, with_grad = args[2], args[7]
    loss = x.new_empty(tuple(target.shape) if reduction == "none" else ())
    if not with_grad:
        return loss, _empty(x), _empty(x), _empty(x)
    gb = _empty(x) if bias is None else bias.new_empty(bias.shape)
    return loss, x.new_empty(x.shape), classifier.new_empty(classifier.shape), gb


def _linear_backward_op(
    up: Tensor, x: Tensor, classifier: Tensor, target: Tensor, bias: Optional[Tensor], *args: Any
) -> Tuple[Tensor, Tensor, Tensor]:
    gx, gw, gb = linear_none_backward_impl(up, x, classifier, target, bias, *args)
    return gx, gw, _or_empty(gb, x)


def _linear_backward_fake(
    up: Tensor, x: Tensor, classifier: Tensor, target: Tensor, bias: Optional[Tensor], *args: Any
) -> Tuple[Tensor, Tensor, Tensor]:
    gb = _empty(x) if bias is None else bias.new_empty(bias.shape)
    return x.new_empty(x.shape), classifier.new_empty(classifier.shape), gb


def _contiguous(result: Any) -> Any:
    # The fake kernels promise contiguous outputs (a strided NumPy result would break that promise
    # under torch.compile); the eager functions need no such copy.
    if isinstance(result, Tensor):
        return result.contiguous()
    return tuple(t.contiguous() for t in result)


def _register(
    name: str, fn: Callable[..., Any], fake: Callable[..., Any], schema: str,
    backward: Optional[Callable[..., Any]] = None, setup: Optional[Callable[..., Any]] = None,
) -> None:
    op = torch.library.custom_op(
        f"{NS}::{name}", lambda *args: _contiguous(fn(*args)), mutates_args=(), schema=schema
    )
    op.register_fake(fake)
    if backward is not None:
        op.register_autograd(backward, setup_context=setup)


def _register_softmax(name: str, log: bool) -> None:
    _register(
        f"{name}_backward",
        lambda grad_output, output, dim: softmax_backward_impl(grad_output, output, dim, log),
        lambda grad_output, output, dim: output.new_empty(output.shape),
        "(Tensor grad_output, Tensor output, int dim) -> Tensor",
    )
    _register(
        name,
        lambda input, dim: softmax_impl(input, dim, log),
        lambda input, dim: input.new_empty(input.shape),
        "(Tensor input, int dim) -> Tensor",
        lambda ctx, g: _softmax_backward(ctx, g, log, False),
        _setup_softmax,
    )


_register_softmax("softmax", False)
_register_softmax("log_softmax", True)
_register(
    "cross_entropy", _ce_op, _ce_fake,
    f"(Tensor input, Tensor target, {_CE_ARGS}, bool with_grad) -> (Tensor, Tensor)",
    lambda ctx, up, _: _ce_backward(ctx, up, False), _setup_ce,
)
_register(
    "linear_cross_entropy", _linear_op, _linear_fake,
    f"(Tensor input, Tensor classifier, Tensor target, Tensor? bias, {_CE_ARGS}, int? chunk_size, "
    "bool with_grad) -> (Tensor, Tensor, Tensor, Tensor)",
    lambda ctx, up, *_: _linear_backward(ctx, up, False), _setup_linear,
)
_register(
    "linear_cross_entropy_backward", _linear_backward_op, _linear_backward_fake,
    "(Tensor grad_loss, Tensor input, Tensor classifier, Tensor target, Tensor? bias, "
    "Tensor? weight, int ignore_index, float label_smoothing, float z_loss, float? softcap, "
    "int? chunk_size) -> (Tensor, Tensor, Tensor)",
)


# --------------------------------------------------------------------------------------------------
# eager autograd functions: the same forward and backward, without the dispatcher


# forward(ctx, ...) rather than a separate setup_context: Function.apply binds the arguments of
# the latter through inspect.signature, which costs more than a small kernel call.


class SoftmaxFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, dim: int, log: bool) -> Tensor:
        y = softmax_impl(x, dim, log)
        _setup_softmax(ctx, (x, dim), y)
        ctx.log = log
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tuple[Optional[Tensor], ...]:
        return _softmax_backward(ctx, g, ctx.log, True)


def _loss_function(
    name: str, op: Callable[..., Any], setup: Callable[..., None], backward: Callable[..., Any],
) -> Type[torch.autograd.Function]:
    """An eager autograd Function for a loss op: forward runs `op` (the loss first, then what the
    backward needs), `setup` saves it, `backward` turns the upstream gradient into the inputs'. Made
    with the Function metaclass so the name is set before it names the backward node."""

    def forward(ctx: Any, *args: Any) -> Tensor:
        out = op(*args)
        setup(ctx, args, out)
        return out[0]  # type: ignore[no-any-return]

    def backward_(ctx: Any, up: Tensor) -> Tuple[Optional[Tensor], ...]:
        return backward(ctx, up, True)  # type: ignore[no-any-return]

    namespace = {"forward": staticmethod(forward), "backward": staticmethod(backward_)}
    meta: Any = type(torch.autograd.Function)
    return meta(name, (torch.autograd.Function,), namespace)  # type: ignore[no-any-return]


CrossEntropyFunction = _loss_function("CrossEntropyFunction", _ce_op, _setup_ce, _ce_backward)
LinearCrossEntropyFunction = _loss_function(
    "LinearCrossEntropyFunction", _linear_op, _setup_linear, _linear_backward
)
