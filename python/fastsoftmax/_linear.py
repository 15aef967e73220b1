"""The classifier head fused with its loss: ``linear_cross_entropy`` and its gradient.

A language model's output layer ``o = x @ classifier.T + bias`` followed by the cross-entropy makes
an ``N × V`` logits array (and its gradient) that is usually the largest tensor of a training step.
Here the rows are processed in chunks: each chunk's logits are made by the BLAS that NumPy links
(cuBLAS through CuPy for CuPy arrays) into ONE reused buffer, the fused kernel of
:func:`fastsoftmax.cross_entropy_with_grad` turns that buffer into the loss and the logits'
gradient ``G`` in place, and the gradient is pushed through the layer at once
(``grad_x[chunk] = G @ classifier``, ``grad_classifier += G.T @ x[chunk]``, ``grad_bias += G.sum(0)``).

One code path serves NumPy and CuPy (``xp`` is the array module of the inputs). Nothing in it reads
a device value on the host, so the CuPy path queues its work without a host synchronisation (the
``"mean"`` denominator is a 0-d device array) unless label checking is asked for (see the CuPy
cross-entropy: ``FASTSOFTMAX_CUDA_CHECK_LABELS=1``).
"""

from __future__ import annotations

import importlib
import operator
import os
from typing import Any, Optional, Tuple

import numpy as np

from . import _checks
from ._api import cross_entropy, cross_entropy_with_grad

_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_U16 = np.dtype(np.uint16)
_U32 = np.dtype(np.uint32)
_MIB = 1 << 20

# The default chunk (number of rows of x per step), from three limits:
# - Below about 1024 rows the matrix products of a chunk lose efficiency (more synchronisation
#   points of the BLAS threads per flop; OpenBLAS, D=512, V=32000, measured on a 2-core AVX-512
#   machine); at 1024 rows they run as fast as the unchunked ones. So a chunk never needs more.
CHUNK_EFFICIENT_ROWS = 1024
# - The buffer never exceeds 256 MiB, whatever N: that is already hundreds of rows at the
#   largest vocabularies (512 rows of 128k float32 classes) and keeps big models' heads affordable.
CHUNK_MAX_BYTES = 256 * _MIB
# - From 4096 rows on, the extra memory (the chunk buffer, its transposed grad_x block and the
#   gradient block below) stays within 1/8 of the full logits' bytes: the point of fusing is to
#   never hold them.
LOGITS_FRACTION = 8
FRACTION_MIN_ROWS = 4096
# `grad_classifier += G.T @ x[chunk]`: NumPy/CuPy's matmul cannot accumulate into its output, so
# the product goes through a temporary, block by block of classes: 8 MiB on the CPU (blocks of 1024
# rows of 512 features ran at 60 % of the full product's speed, blocks of 4096 rows at 85-95 %;
# a BLAS gemm with beta=1 through SciPy measured no faster end to end), 32 MiB on a GPU (few, large
# cuBLAS calls).
GRAD_BLOCK_BYTES_CPU = 8 * _MIB
GRAD_BLOCK_BYTES_GPU = 32 * _MIB
GRAD_BLOCK_MIN_ROWS = 64  # below this a block's product is too thin to run at speed
# Also inside the 1/8: the per-row state (labels, masks: about 32 bytes a row) and the allocator's
# rounding, measured at about 1 MiB above the buffers at N=4096, V=32000.
CHUNK_SLACK_BYTES = 2 * _MIB
_CHECK_LABELS_ENV = "FASTSOFTMAX_CUDA_CHECK_LABELS"


def _dask_backend(x: Any) -> Any:
    """The Dask backend when `x` is a Dask array (Dask is imported only then), else None."""
    if type(x).__module__.split(".", 1)[0] != "dask":
        return None
    from . import _dask_linear

    return _dask_linear


def _is_cupy(a: Any) -> bool:
    return type(a).__module__.split(".", 1)[0] == "cupy"


def _is_bf16(dt: np.dtype) -> bool:
    return dt.name == "bfloat16"


def _float_dtypes(a: Any, what: str) -> Tuple[np.dtype, np.dtype]:
    """(dtype computed in, dtype returned) for a float input: float16/bfloat16 compute in float32,
    integers and bools become float64, float32/float64 stay (in native byte order)."""
    dt = a.dtype
    if dt == _F16 or _is_bf16(dt):
        return _F32, dt
    if dt.kind == "f" and dt.itemsize in (4, 8):
        native = _F32 if dt.itemsize == 4 else _F64
        return native, native
    if dt.kind in "biu":
        return _F64, _F64
    raise TypeError(f"{what} has unsupported dtype {dt}; expected a floating, integer or bool array")


def _grad_block_rows(classes: int, hidden: int, itemsize: int, gpu: bool) -> int:
    limit = GRAD_BLOCK_BYTES_GPU if gpu else GRAD_BLOCK_BYTES_CPU
    rows = max(GRAD_BLOCK_MIN_ROWS, limit // max(1, hidden * itemsize))
    return max(1, min(classes, rows))


def default_chunk_rows(
    rows: int, classes: int, hidden: int, itemsize: int, block_bytes: Optional[int] = None
) -> int:
    """The rows per chunk that ``chunk_size=None`` picks for `rows` × `hidden` inputs, `classes`
    classes and a compute dtype of `itemsize` bytes:
    ``min(rows, 1024, 256 MiB / (classes·itemsize))``, and from 4096 rows on also at most what keeps
    the chunk buffer (``classes + hidden`` values per row) and the gradient block (`block_bytes`,
    by default the CPU's) within 1/8 of the full logits' bytes. At least 1.
    """
    row_bytes = max(1, classes) * itemsize
    cap = min(CHUNK_EFFICIENT_ROWS, CHUNK_MAX_BYTES // row_bytes)
    if rows >= FRACTION_MIN_ROWS:
        if block_bytes is None:
            block_bytes = _grad_block_rows(classes, hidden, itemsize, False) * hidden * itemsize
        budget = rows * row_bytes // LOGITS_FRACTION - block_bytes - CHUNK_SLACK_BYTES
        cap = min(cap, budget // (row_bytes + hidden * itemsize))
    return max(1, min(rows, cap))


# --------------------------------------------------------------------------------------------------
# conversions that work the same on NumPy and CuPy (bfloat16 handled as raw 16-bit words, which
# CuPy can slice and copy although it has no bfloat16 arithmetic)


def _raw(a: Any) -> Any:
    return a.view(_U16) if _is_bf16(a.dtype) else a


def _to_compute(xp: Any, a: Any, src: np.dtype, cdt: np.dtype) -> Any:
    """`a` (raw words when `src` is bfloat16) as a C-contiguous array of dtype `cdt`."""
    if _is_bf16(src):
        a = (a.astype(_U32) << 16).view(_F32)
    return xp.ascontiguousarray(a.astype(cdt, copy=False)).reshape(a.shape)


def _from_compute(xp: Any, a: Any, dst: np.dtype) -> Any:
    """`a` rounded to `dst`; bfloat16 comes back as raw words (round to nearest even, NaN kept)."""
    if not _is_bf16(dst):
        return a.astype(dst, copy=False)
    u = xp.ascontiguousarray(a.astype(_F32, copy=False)).view(_U32).reshape(a.shape)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    return xp.where(nan, (u >> 16) | 0x40, rounded).astype(_U16)


def _finish(xp: Any, a: Any, dst: np.dtype) -> Any:
    """A compute-dtype result as the user's dtype (a NumPy scalar for a 0-d NumPy result)."""
    r = _from_compute(xp, a, dst)
    if _is_bf16(dst):
        r = r.view(dst)
    return r[()] if (xp is np and r.ndim == 0) else r


# --------------------------------------------------------------------------------------------------
# validation


class _Call:
    """The checked arguments of one call (everything is validated here, before any work)."""

    def __init__(
        self, x: Any, classifier: Any, target: Any, bias: Any, weight: Any, ignore_index: Any,
        reduction: Any, label_smoothing: Any, z_loss: Any, softcap: Any, chunk_size: Any,
    ):
        self.gpu = _is_cupy(x)
        if self.gpu:
            xp: Any = importlib.import_module("cupy")  # only when a CuPy array arrives
        else:
            xp = np
        self.xp = xp
        args = {"x": x, "classifier": classifier, "target": target, "bias": bias, "weight": weight}
        arrays = {}
        for name, a in args.items():
            if a is None:
                continue
            if name == "weight" and self.gpu and not _is_cupy(a):
                a = xp.asarray(np.asarray(a))  # a few class weights: copied to the device
            if _is_cupy(a) != self.gpu:
                where = "on the GPU" if _is_cupy(a) else "not on the GPU"
                raise TypeError(f"{name} is {where} while x is {'' if self.gpu else 'not '}on the GPU")
            if not self.gpu:
                try:
                    a = np.asarray(a)
                except (TypeError, ValueError) as e:
                    raise TypeError(f"{name} cannot be converted to a NumPy array: {e}") from None
            arrays[name] = a
        x, classifier, target = arrays["x"], arrays["classifier"], arrays["target"]
        bias, weight = arrays.get("bias"), arrays.get("weight")

        kinds = {"x": _float_dtypes(x, "x"), "classifier": _float_dtypes(classifier, "classifier")}
        if bias is not None:
            kinds["bias"] = _float_dtypes(bias, "bias")
        self.cdt = np.dtype(np.result_type(*(k for k, _ in kinds.values())))
        self.rdts = {name: r for name, (_, r) in kinds.items()}
        same = len(set(self.rdts.values())) == 1
        self.loss_dt = self.rdts["x"] if same else self.cdt

        if x.ndim < 1:
            raise ValueError("x must have at least one dimension (the hidden features)")
        if classifier.ndim != 2:
            raise ValueError(f"classifier must be 2-D (classes, features), got shape {classifier.shape}")
        V, D = classifier.shape
        if x.shape[-1] != D:
            raise ValueError(
                f"x of shape {x.shape} and classifier of shape {classifier.shape} do not match: "
                f"x's last dimension must equal classifier's second ({D})"
            )
        if target.dtype.kind not in "iu":
            raise TypeError(
                f"target must hold integer class indices (hard labels only), got dtype {target.dtype}"
            )
        if target.shape != x.shape[:-1]:
            raise ValueError(
                f"target of shape {target.shape} does not match x of shape {x.shape}: "
                f"expected {x.shape[:-1]} (x's shape without the features)"
            )
        if bias is not None and bias.shape != (V,):
            raise ValueError(
                f"bias must have shape ({V},) (one per class of classifier {classifier.shape}), "
                f"got {bias.shape}"
            )
        if weight is not None:
            if weight.dtype.kind not in "biuf" and not _is_bf16(weight.dtype):
                raise TypeError(f"weight has unsupported dtype {weight.dtype}")
            if weight.shape != (V,):
                raise ValueError(f"weight must have shape ({V},) (one per class), got {weight.shape}")
        N = int(np.prod(x.shape[:-1], dtype=np.int64))
        if chunk_size is None:
            item = self.cdt.itemsize
            rows = default_chunk_rows(N, V, D, item, _grad_block_rows(V, D, item, self.gpu) * D * item)
        else:
            if isinstance(chunk_size, bool):
                raise TypeError(f"chunk_size must be an int or None, got {chunk_size!r}")
            try:
                rows = operator.index(chunk_size)
            except TypeError:
                raise TypeError(f"chunk_size must be an int or None, got {chunk_size!r}") from None
            if rows < 1:
                raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
        # The scalar options are checked by the cross-entropy itself (same rules, same messages),
        # on zero rows so that this costs nothing.
        cross_entropy(
            np.zeros((0, V), self.cdt), np.zeros(0, np.int64), reduction=reduction,
            label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
        )
        try:
            ignore = operator.index(ignore_index)
        except TypeError:
            raise TypeError(f"ignore_index must be an int, got {ignore_index!r}") from None

        t = target.reshape(-1)
        counted = t != ignore
        if not self.gpu or os.environ.get(_CHECK_LABELS_ENV, "") not in ("", "0"):
            bad = counted & ((t < 0) | (t >= V))
            pos = int(xp.argmax(bad)) if t.size else 0  # one host synchronisation on a GPU
            if t.size and bool(bad[pos]):
                at: Any = pos
                if target.ndim > 1:
                    at = tuple(int(k) for k in np.unravel_index(pos, target.shape))
                raise IndexError(
                    f"target {int(t[pos])} at position {at} is out of bounds for {V} classes"
                )
        # Labels as int64 with the ignored rows at -1 (then passed as ignore_index=-1); labels out of
        # range (possible on a GPU without the check) map to V so that the kernel flags them.
        if t.dtype == np.uint64:
            t = xp.minimum(t, np.uint64(V))
        t64 = t.astype(np.int64)
        t64 = xp.where(t64 < 0, np.int64(V), t64)
        self.t64 = xp.where(counted, t64, np.int64(-1))

        self.N, self.V, self.D = N, V, D
        self.rows = max(1, min(rows, N))
        self.reduction = reduction
        self.options = dict(
            ignore_index=-1, label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap
        )
        self.x, self.classifier, self.bias = x, classifier, bias
        self.weight = None if weight is None else _to_compute(xp, _raw(weight), weight.dtype, self.cdt)
        self._scale_for_mean(counted)

    def _scale_for_mean(self, counted: Any) -> None:
        """Chunks run with reduction "sum" (or "none"); "mean" then needs the TOTAL over all rows:
        the class-weighted loss divided by sum(weight[y]) over counted rows and the z-loss by their
        number n. Both come out of one scale s = 1/n applied after a "sum" whose class weights are
        multiplied by n / sum(weight[y]) (the loss and its gradient are linear in the weights)."""
        xp, cdt = self.xp, self.cdt
        self.scale: Optional[Any] = None
        if self.reduction != "mean":
            return
        n = xp.asarray(xp.count_nonzero(counted), dtype=_F64)  # a Python int on NumPy < 2
        self.scale = (1.0 / xp.maximum(n, 1.0)).astype(cdt)
        if self.weight is not None and self.V > 0:
            safe = xp.clip(self.t64, 0, self.V - 1)
            total = xp.where(counted, self.weight.astype(_F64)[safe], 0.0).sum()
            with np.errstate(divide="ignore", invalid="ignore"):  # all weights 0: NaN, as the kernel
                ratio = xp.where(n > 0, n / total, 1.0)
                self.weight = (self.weight * ratio).astype(cdt)


# --------------------------------------------------------------------------------------------------
# the chunked loop


def _run(call: _Call, want_grad: bool) -> Tuple[Any, Any, Any, Any]:
    xp, cdt, N, V, D = call.xp, call.cdt, call.N, call.V, call.D
    rdts = call.rdts
    x2 = _raw(call.x).reshape(N, D)
    W = _to_compute(xp, _raw(call.classifier), call.classifier.dtype, cdt)
    b = None if call.bias is None else _to_compute(xp, _raw(call.bias), call.bias.dtype, cdt)
    red = "none" if call.reduction == "none" else "sum"
    opts: dict[str, Any] = dict(call.options, weight=call.weight, reduction=red)

    rows = call.rows
    buf = xp.empty((rows, V), cdt)
    losses = xp.empty(N, cdt) if red == "none" else None
    total = xp.zeros((), _F64)
    gx_out: Any = None
    gx: Any = None
    gb: Any = None
    layer: Any = None
    direct_gx = True
    if want_grad:
        gx_out = xp.empty((N, D), _U16 if _is_bf16(rdts["x"]) else rdts["x"])
        direct_gx = rdts["x"] == cdt
        gx = gx_out if direct_gx else xp.empty((rows, D), cdt)
        gb = None if b is None else xp.zeros(V, cdt)
        layer = _LayerGrads(xp, N, V, D, cdt, rows, call.gpu)

    for i in range(0, N, rows):
        j = min(N, i + rows)
        xc = _to_compute(xp, x2[i:j], call.x.dtype, cdt)
        G = buf[: j - i]
        xp.matmul(xc, W.T, out=G)
        if b is not None:
            xp.add(G, b, out=G)
        tc = call.t64[i:j]
        if not want_grad:
            loss = cross_entropy(G, tc, **opts)
        else:
            loss, _ = cross_entropy_with_grad(G, tc, out=G, **opts)
            gxc = gx[i:j] if direct_gx else gx[: j - i]
            layer.grad_x(G, W, gxc)
            if call.scale is not None:
                xp.multiply(gxc, call.scale, out=gxc)
            if not direct_gx:
                gx_out[i:j] = _from_compute(xp, gxc, rdts["x"])
            layer.add_grad_classifier(G, xc, first=i == 0)
            if gb is not None:
                gb += G.sum(axis=0)
        if losses is not None:
            losses[i:j] = loss
        else:
            total = total + loss

    batch = call.x.shape[:-1]
    if losses is not None:
        loss_out = _finish(xp, losses.reshape(batch), call.loss_dt)
    else:
        s = 1.0 if call.scale is None else call.scale
        loss_out = _finish(xp, xp.asarray(total * s), call.loss_dt)
    if not want_grad:
        return loss_out, None, None, None
    grads: list[Any] = []
    for g, name, shape in ((layer.gW, "classifier", (V, D)), (gb, "bias", (V,))):
        if g is None:
            grads.append(None)
            continue
        if call.scale is not None:
            xp.multiply(g, call.scale, out=g)
        grads.append(_finish(xp, g.reshape(shape), rdts[name]))
    if not _is_bf16(rdts["x"]):
        grad_x = gx_out.reshape(call.x.shape)
    else:
        grad_x = gx_out.reshape(call.x.shape).view(rdts["x"])
    return loss_out, grad_x, grads[0], grads[1]


class _LayerGrads:
    """Pushes each chunk's logits gradient G through the layer: grad_x rows and grad_classifier."""

    def __init__(self, xp: Any, N: int, V: int, D: int, cdt: np.dtype, rows: int, gpu: bool):
        self.xp, self.D = xp, D
        self.gW = xp.zeros((V, D), cdt) if N == 0 else xp.empty((V, D), cdt)
        # OpenBLAS runs G @ W (rows × V by V × D) up to 4× slower when rows <= D than the same
        # product transposed, W.T @ G.T, and the other way round when rows > D (measured with
        # rows 495 and 512, D 512, and rows 512, D 256 on 2 threads); so the output with more
        # rows is made.
        # The choice is OpenBLAS's, so it is made on the CPU only.
        last = N - (N - 1) // rows * rows if N else rows
        self.transpose_upto = D if not gpu else -1  # chunks of at most this many rows
        self.flat: Any = None
        if min(rows, last) <= self.transpose_upto:
            self.flat = xp.empty(D * rows, cdt)
        self.tmp: Any = None
        if N > rows:
            self.tmp = xp.empty((_grad_block_rows(V, D, cdt.itemsize, gpu), D), cdt)

    def grad_x(self, G: Any, W: Any, out: Any) -> None:
        """out = G @ W."""
        c = G.shape[0]
        if c <= self.transpose_upto:
            t = self.flat[: self.D * c].reshape(self.D, c)
            self.xp.matmul(W.T, G.T, out=t)
            out[...] = t.T
        else:
            self.xp.matmul(G, W, out=out)

    def add_grad_classifier(self, G: Any, xc: Any, first: bool) -> None:
        """gW = G.T @ xc for the first chunk, else gW += G.T @ xc."""
        xp, gW = self.xp, self.gW
        if first:
            xp.matmul(G.T, xc, out=gW)
            return
        if not (G.size and xc.size):
            return  # nothing to add: no classes or no features
        vb = self.tmp.shape[0]
        for v0 in range(0, gW.shape[0], vb):
            v1 = min(gW.shape[0], v0 + vb)
            t = self.tmp[: v1 - v0]
            xp.matmul(G[:, v0:v1].T, xc, out=t)
            gW[v0:v1] += t


# --------------------------------------------------------------------------------------------------
# public functions

_DOC_COMMON = """
    Shapes: `x` ``(..., D)`` hidden states (any leading batch dimensions, N rows in all);
    `classifier` ``(V, D)`` (the layout of ``torch.nn.Linear.weight``); `bias` ``(V,)`` or None;
    `target` integer class indices of shape ``x.shape[:-1]`` (hard labels only).

    Options mean exactly what they mean for :func:`fastsoftmax.cross_entropy`: `weight` per-class
    weights ``(V,)``; `ignore_index` rows whose label equals it add nothing and get zero gradients;
    `reduction` "mean" (divides by the summed weight of the counted rows over ALL N rows; 0.0 when
    every row is ignored), "sum" or "none" (one loss per row, shape ``x.shape[:-1]``; the gradients
    are those of the sum); `label_smoothing` ε in [0, 1]; `z_loss` adds z·logsumexp(o)² per counted
    row (averaged over the counted rows for "mean"); `softcap` c replaces the logits by c·tanh(o/c).

    Memory: the logits are never held whole. Rows go in chunks of `chunk_size` rows; each chunk's
    logits are made by NumPy's BLAS (cuBLAS for CuPy arrays) in ONE reused ``chunk_size × V``
    buffer, which the fused cross-entropy kernel turns into the gradient in place. Beyond the inputs
    and the returned gradients the extra memory is that buffer, a ``chunk_size × D`` block for
    `grad_x`, an 8 MiB block (32 MiB on a GPU) for accumulating `grad_classifier` and O(N) per-row
    state. ``chunk_size=None`` picks
    ``min(N, 1024, 256 MiB / (V·itemsize))`` rows, and from N = 4096 on at most what keeps the extra
    memory within 1/8 of the full ``N × V`` logits (1024 rows is where the chunk's matrix products
    run as fast as unchunked ones; the rest bounds the memory). The result does not depend on
    `chunk_size` beyond rounding.

    dtypes: float32 and float64 compute in their dtype; float16 and bfloat16 (``ml_dtypes``) compute
    in float32 (their classifier, and the accumulator of its gradient, are then also held in
    float32); integer and bool inputs become float64. Mixed inputs compute in the promoted dtype.
    Gradients come back in the dtype of their input; the loss in the inputs' common dtype (the
    compute dtype when they differ), a NumPy scalar for "mean"/"sum" (a 0-d CuPy array on a GPU).

    CuPy arrays run on their GPU (cuBLAS and the CUDA cross-entropy kernel) with no host
    synchronisation: there, out-of-range labels give a NaN loss unless
    ``FASTSOFTMAX_CUDA_CHECK_LABELS=1`` asks for the ``IndexError`` (one synchronisation).

    Raises ValueError for shapes that do not match (the message names both), a bad option or
    `chunk_size` < 1; TypeError for unsupported dtypes or mixed CPU/GPU arrays; IndexError for a
    label outside ``[0, V)`` that is not `ignore_index` (naming the label and its position). Every
    check runs before any work.
"""


def linear_cross_entropy(
    x: Any, classifier: Any, target: Any, *, bias: Any = None, weight: Any = None,
    ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
    z_loss: float = 0.0, softcap: Optional[float] = None, chunk_size: Optional[int] = None,
) -> Any:
    r"""Cross-entropy of a linear classifier head without materialising its logits:
    ``cross_entropy(x @ classifier.T + bias, target, ...)``, i.e. per row
    :math:`l = \mathrm{logsumexp}(o) - o_y` with :math:`o = W x + b`.

    >>> import numpy as np, fastsoftmax as fs
    >>> x = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    >>> W = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> y = np.array([0, 1, 2])
    >>> round(float(fs.linear_cross_entropy(x, W, y, chunk_size=2)), 6)
    0.884328
    >>> round(float(fs.cross_entropy(x @ W.T, y)), 6)
    0.884328
    """
    return _entry(
        False, x, classifier, target, bias, weight, ignore_index, reduction, label_smoothing,
        z_loss, softcap, chunk_size,
    )


@_checks.same_parameters(linear_cross_entropy)
def linear_cross_entropy_with_grad(
    x: Any, classifier: Any, target: Any, **options: Any
) -> Tuple[Any, Any, Any, Any]:
    r"""``(loss, grad_x, grad_classifier, grad_bias)`` of :func:`linear_cross_entropy` in one
    chunked pass: with :math:`G = \partial l / \partial o` (``softmax(o) - onehot(y)`` per row,
    scaled as the reduction says), ``grad_x = G @ classifier``, ``grad_classifier = G.T @ x`` and
    ``grad_bias = G.sum(0)`` (None when `bias` is None).

    >>> import numpy as np, fastsoftmax as fs
    >>> x = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    >>> W = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> loss, gx, gW, gb = fs.linear_cross_entropy_with_grad(x, W, np.array([0, 1, 2]),
    ...                                                      bias=np.zeros(3), chunk_size=2)
    >>> round(float(loss), 6), gx.shape, gW.shape, gb.shape
    (0.884328, (3, 2), (3, 2), (3,))
    >>> loss2, g = fs.cross_entropy_with_grad(x @ W.T, np.array([0, 1, 2]))
    >>> bool(np.allclose(gW, g.T @ x)) and bool(np.allclose(gx, g @ W))
    True
    """
    kw = _checks.keywords(_DEFAULTS, options, "linear_cross_entropy_with_grad")
    return _entry(True, x, classifier, target, **kw)  # type: ignore[no-any-return]


_DEFAULTS = _checks.keyword_defaults(linear_cross_entropy)


def _entry(
    want_grad: bool, x: Any, classifier: Any, target: Any, bias: Any, weight: Any,
    ignore_index: int, reduction: str, label_smoothing: float, z_loss: float,
    softcap: Optional[float], chunk_size: Optional[int],
) -> Any:
    """Both public functions: Dask arrays go to their adapter, everything else to :func:`_run`."""
    if (dk := _dask_backend(x)) is not None:
        f = dk.linear_cross_entropy_with_grad if want_grad else dk.linear_cross_entropy
        return f(
            x, classifier, target, bias=bias, weight=weight, ignore_index=ignore_index,
            reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
            chunk_size=chunk_size)
    call = _Call(
        x, classifier, target, bias, weight, ignore_index, reduction, label_smoothing, z_loss,
        softcap, chunk_size,
    )
    r = _run(call, want_grad)
    return r if want_grad else r[0]


for _f in (linear_cross_entropy, linear_cross_entropy_with_grad):
    _f.__doc__ = (_f.__doc__ or "") + _DOC_COMMON
