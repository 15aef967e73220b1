"""The CuPy (CUDA) path of fastsoftmax.

Imported by ``fastsoftmax._api`` the first time a ``cupy.ndarray`` arrives (``import fastsoftmax``
never imports CuPy). Every function has the public signature of API.md §1, validates its arguments
itself (ValueError / TypeError as on the CPU) and returns CuPy arrays on the input's device, queued
on the current stream. Nothing here synchronises with the host: full reductions come back as 0-d CuPy
arrays and the ``"mean"`` denominators (summed weights, counted rows) are computed on the device and
read by the kernel from device memory.

Kernels: ``cuda/softmax.cu``, compiled by CuPy's RawModule (NVRTC) on first use, one instantiation
per (dtype, threads per row, vectors per thread, vector width, operation), cached in memory here and
on disk by CuPy. See that file for the algorithm.

Out-of-range labels. Raising ``IndexError`` (API.md §5) needs the labels on the host, which is a
host synchronisation (API.md §7 forbids one). The choice made here: by default the check is done
on the device and a row whose label is outside ``[0, C)`` (and is not ``ignore_index``) gets a NaN
loss and a NaN gradient row, so the error is never silent (a "mean"/"sum" loss becomes NaN). Set
``FASTSOFTMAX_CUDA_CHECK_LABELS=1`` in the environment (read at each call) to get the CPU
behaviour instead: one small device reduction and ONE host synchronisation per call, and an
``IndexError`` naming the first bad label and its position, raised before anything is written.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import cupy as cp
import numpy as np

from ._api import (
    _ce_options,
    _ce_target_is_soft,
    _check_weight,
    _normalize_axes,
    _one_axis,
)

Axis = Union[int, Sequence[int], None]

_HERE = os.path.dirname(os.path.abspath(__file__))
_SRC_PATH = os.path.join(_HERE, "cuda", "softmax.cu")

MODE_SOFTMAX, MODE_LOGSOFTMAX, MODE_LSE, MODE_CE = 0, 1, 2, 3

# Values a thread keeps in registers (the chunk it owns), under the 64 registers that the kernel's
# launch bounds allow (>= 50% occupancy). Measured on an H100 (benches/results/gpu.md): 32 floats
# per thread beat 16 for softmax (fewer blocks per row to merge).
_VALUES_PER_THREAD_F32 = 32
_VALUES_PER_THREAD_F64 = 16
# The cross-entropy kernel keeps more state per thread: half as many values, at most 256 threads.
_CE_VALUES_PER_THREAD_F32 = 16
_CE_VALUES_PER_THREAD_F64 = 8
_CE_MAX_TPR = 1024
# Largest threads-per-row of the one-block-per-row kernel; longer rows are split across blocks.
_MAX_TPR = 1024
# Threads of a split-row block.
_SPLIT_TPR = 256
# Rows shorter than this are never split just to fill the GPU (too little work per block).
_MIN_SPLIT_COLS = 4096
# A launch whose blocks hold fewer threads than this many per multiprocessor underfills the GPU.
_FILL_THREADS_PER_SM = 1024

# Test/bench hook: force (tpr, vpt, split) for the next launches; None = automatic.
_force_config: Optional[Tuple[int, int, bool]] = None

_src_cache: Optional[str] = None
_kernels: Dict[Tuple[int, str], Any] = {}
_sm_count: Dict[int, int] = {}
_workspaces: Dict[Tuple[int, int, str], Tuple[Any, Any, list]] = {}


def _on_device(fn: Any) -> Any:
    """Runs `fn` with the device of its first argument current (CuPy's launches go there)."""

    @functools.wraps(fn)
    def wrapper(x: Any, *args: Any, **kwargs: Any) -> Any:
        if type(x) is cp.ndarray and x.device.id != cp.cuda.runtime.getDevice():
            with x.device:
                return fn(x, *args, **kwargs)
        return fn(x, *args, **kwargs)

    return wrapper


def _source() -> str:
    global _src_cache
    if _src_cache is None:
        with open(_SRC_PATH, "r", encoding="utf-8") as f:
            _src_cache = f.read()
    return _src_cache


def _kernel(name: str) -> Any:
    dev = cp.cuda.Device().id
    key = (dev, name)
    k = _kernels.get(key)
    if k is None:
        mod = cp.RawModule(code=_source(), options=("-std=c++17",), name_expressions=[name])
        k = mod.get_function(name)
        _kernels[key] = k
    return k


def _num_sms() -> int:
    dev = cp.cuda.Device()
    n = _sm_count.get(dev.id)
    if n is None:
        n = int(dev.attributes["MultiProcessorCount"])
        _sm_count[dev.id] = n
    return n


# --------------------------------------------------------------------------------------------------
# dtypes


_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_U16 = np.dtype(np.uint16)


def _is_bf16(dt: np.dtype) -> bool:
    return dt.name == "bfloat16"


def _is_half(dt: np.dtype) -> bool:
    return dt == _F16 or _is_bf16(dt)


_CTYPE = {"float16": "fs_f16", "bfloat16": "fs_bf16", "float32": "float", "float64": "double"}


def _acc(dt: np.dtype) -> np.dtype:
    return _F64 if dt == _F64 else _F32


def _check_cupy(x: Any, what: str) -> Any:
    if not isinstance(x, cp.ndarray):
        raise TypeError(f"{what} must be a CuPy array when the input is on the GPU, got {type(x)}")
    return x


def _as_float(x: Any, what: str = "x") -> Any:
    """x as a CuPy array of a supported floating dtype (API.md §2's rules)."""
    x = _check_cupy(x, what)
    dt = x.dtype
    if dt in (_F32, _F64, _F16) or _is_bf16(dt):
        return x
    if dt.kind in "biu":
        return x.astype(_F64)
    raise TypeError(f"{what} has unsupported dtype {dt}; expected a floating, integer or bool array")


def _raw(a: Any) -> Any:
    """A view CuPy can copy/reshape whatever the float type (bfloat16 as raw 16-bit words)."""
    return a.view(_U16) if _is_bf16(a.dtype) else a


def _contig(a: Any) -> Any:
    if a.flags.c_contiguous:
        return a
    if _is_bf16(a.dtype):
        return cp.ascontiguousarray(a.view(_U16)).view(a.dtype)
    return cp.ascontiguousarray(a)


def _empty(shape: Tuple[int, ...], dtype: np.dtype) -> Any:
    return cp.empty(shape, dtype=dtype)


_bf16_to_f32_k = None
_f32_to_bf16_k = None


def _to_acc(a: Any) -> Any:
    """a converted to its accumulation dtype (float32 for the half types)."""
    global _bf16_to_f32_k
    if _is_bf16(a.dtype):
        if _bf16_to_f32_k is None:
            _bf16_to_f32_k = cp.ElementwiseKernel(
                "uint16 x", "float32 y", "y = __uint_as_float(((unsigned int)x) << 16)", "fs_bf16_f32"
            )
        return _bf16_to_f32_k(_raw(a))
    if a.dtype == _F16:
        return a.astype(_F32)
    return a


def _from_acc(a: Any, dt: np.dtype) -> Any:
    """a (float32/float64) rounded to dt (round to nearest even, NaN kept)."""
    global _f32_to_bf16_k
    if _is_bf16(dt):
        if _f32_to_bf16_k is None:
            _f32_to_bf16_k = cp.ElementwiseKernel(
                "float32 x",
                "uint16 y",
                """
                unsigned int u = __float_as_uint(x);
                if ((u & 0x7fffffffu) > 0x7f800000u) y = (unsigned short)((u >> 16) | 0x40u);
                else y = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
                """,
                "fs_f32_bf16",
            )
        return _f32_to_bf16_k(a.astype(_F32, copy=False)).view(dt)
    if a.dtype == dt:
        return a
    return a.astype(dt)


def _copy_into(out: Any, src: Any) -> None:
    """out[...] = src (same dtype; any layout; bfloat16 copied as raw words)."""
    if _is_bf16(out.dtype):
        cp.copyto(out.view(_U16), _raw(src))
    else:
        cp.copyto(out, src)


def _check_out(out: Any, shape: Tuple[int, ...], dtype: np.dtype) -> Any:
    if not isinstance(out, cp.ndarray):
        raise ValueError(f"out must be a CuPy ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"out has shape {out.shape}, expected {tuple(shape)}")
    if out.dtype != dtype:
        raise ValueError(f"out has dtype {out.dtype}, expected {dtype}")
    if out.device.id != cp.cuda.Device().id:
        raise ValueError("out is on another device than the input")
    return out


def _scale(temperature: Any) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(f"temperature must be a real number, got {temperature!r}") from None
    if not (t > 0.0 and math.isfinite(t)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return 1.0 / t


# --------------------------------------------------------------------------------------------------
# axes and layout


class _Layout:
    """x seen as a C-contiguous (rows, cols) matrix with `axes` last (zero-copy when possible)."""

    def __init__(self, x: Any, axes: Tuple[int, ...]):
        self.shape = x.shape
        self.axes = axes
        self.keep = tuple(i for i in range(x.ndim) if i not in axes)
        self.trailing = axes == tuple(range(x.ndim - len(axes), x.ndim))
        self.batch_shape = tuple(x.shape[i] for i in self.keep)
        self.rows = int(np.prod(self.batch_shape, dtype=np.int64))
        self.cols = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
        moved = x if self.trailing else x.transpose(self.keep + axes)
        self.x2d = _contig(moved).reshape(self.rows, self.cols)

    def restore(self, y2d: Any) -> Any:
        y = y2d.reshape(self.batch_shape + tuple(self.shape[a] for a in self.axes))
        if self.trailing:
            return y
        return y.transpose(tuple(np.argsort(self.keep + self.axes)))

    def out_view(self, out: Any) -> Optional[Any]:
        if self.trailing and out.flags.c_contiguous:
            return out.reshape(self.rows, self.cols)
        return None


def _writable_view(layout: _Layout, out: Optional[Any]) -> Tuple[Any, bool]:
    """(the (rows, cols) array the kernel writes, whether it is `out` itself)."""
    if out is not None:
        v = layout.out_view(out)
        if v is not None:
            same = v.data.ptr == layout.x2d.data.ptr
            if same or not cp.may_share_memory(v, layout.x2d):
                return v, True
    return _empty((layout.rows, layout.cols), layout.x2d.dtype), False


def _finish(layout: _Layout, y2d: Any, direct: bool, out: Optional[Any]) -> Any:
    if direct:
        return out
    y = layout.restore(y2d)
    if out is not None:
        _copy_into(out, y)
        return out
    return y


# --------------------------------------------------------------------------------------------------
# launching the row kernel


def _pow2ceil(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _workspace(rows: int, S: int, acc: np.dtype) -> Tuple[Any, Any, list]:
    """Split workspace for the current (device, stream): partials, counters, tickets issued.

    The per-row arrival counters are reset by the kernel (the last block of a row to leave); the
    ticket counter only grows and the host passes its value at each launch (tickets issued so far,
    modulo 2**32), so no block has to reset it. Launches on one stream run in order and share the
    workspace; each stream has its own, so concurrent streams never do."""
    dev = cp.cuda.runtime.getDevice()
    stream = cp.cuda.get_current_stream().ptr
    key = (dev, stream, acc.name)
    ws = _workspaces.get(key)
    need_p = rows * S * 5
    need_s = rows + 2
    if ws is None or ws[0].size < need_p or ws[1].size < need_s:
        old_p = 0 if ws is None else ws[0].size
        old_s = 0 if ws is None else ws[1].size
        part = cp.empty(max(need_p, old_p, 4096), dtype=acc)
        sync = cp.zeros(max(need_s, old_s, 4096), dtype=np.int32)
        ws = (part, sync, [0])
        _workspaces[key] = ws
    return ws


def _blocks_per_sm(kern: Any, block: int) -> int:
    regs = max(1, int(kern.num_regs))
    regs = (regs + 7) // 8 * 8
    return max(0, min(2048 // block, 32, 65536 // (regs * block)))


def _plan(rows: int, cols: int, itemsize: int, vec: int, mode: int = 0) -> Tuple[int, int, int, int]:
    """(threads per row chunk, vectors per thread, chunks per row S, chunk length)."""
    ce = mode == MODE_CE
    if ce:
        vals = _CE_VALUES_PER_THREAD_F64 if itemsize == 8 else _CE_VALUES_PER_THREAD_F32
    else:
        vals = _VALUES_PER_THREAD_F64 if itemsize == 8 else _VALUES_PER_THREAD_F32
    vpt_max = max(1, vals // vec) if vec > 1 else min(16, vals)
    max_tpr = _CE_MAX_TPR if ce else _MAX_TPR
    nvec = -(-cols // vec)
    nsm = _num_sms()
    if _force_config is not None:
        tpr, vpt, split = _force_config
        if not split:
            if tpr * vpt * vec < cols:
                raise ValueError(f"forced config {_force_config} holds fewer than {cols} columns")
            return tpr, vpt, 1, cols
    else:
        tpr = min(max_tpr, _pow2ceil(-(-nvec // 4)))
        vpt = _pow2ceil(-(-nvec // tpr))
        if vpt <= vpt_max:
            block = tpr if tpr > 32 else 128
            blocks = -(-rows // (block // tpr))
            fills = blocks * block >= nsm * _FILL_THREADS_PER_SM
            if fills or cols < _MIN_SPLIT_COLS:
                return tpr, vpt, 1, cols
        tpr, vpt = _SPLIT_TPR, vpt_max
    cap = tpr * vpt * vec
    s_min = -(-cols // cap)
    s_fill = -(-2 * nsm // rows)
    s_most = max(1, -(-cols // (tpr * vec)))  # at least one vector per thread
    S = max(s_min, min(s_fill, s_most))
    chunk = -(-cols // S)
    chunk = -(-chunk // vec) * vec
    S = -(-cols // chunk)
    return tpr, vpt, S, chunk


_launch_cache: Dict[Tuple[Any, ...], Tuple[Any, int, int, int, int]] = {}


def _launch_plan(rows: int, cols: int, dt: np.dtype, vec: int, mode: int) -> Tuple[Any, int, int, int, int]:
    """(kernel, block, S, chunk, grid) for a launch; cached (the host work of a call is small)."""
    key = (cp.cuda.runtime.getDevice(), rows, cols, dt, vec, mode, _force_config)
    hit = _launch_cache.get(key)
    if hit is not None:
        return hit
    tpr, vpt, S, chunk = _plan(rows, cols, dt.itemsize, vec, mode)
    kern = _kernel(f"fs_rows<{_CTYPE[dt.name]},{tpr},{vpt},{vec},{mode}>")
    block = tpr if tpr > 32 else 128
    if S > 1:
        resident = _blocks_per_sm(kern, block) * _num_sms()
        grid = rows * S if S <= resident else 0  # 0: fall back
    else:
        grid = -(-rows // (block // tpr))
    plan = (kern, block, S, chunk, grid)
    if len(_launch_cache) > 4096:
        _launch_cache.clear()
    _launch_cache[key] = plan
    return plan


def _run_rows(
    x2: Any,
    y2: Optional[Any],
    rowout: Optional[Any],
    mode: int,
    scale: float = 1.0,
    tgt: Optional[Any] = None,
    q: Optional[Any] = None,
    w: Optional[Any] = None,
    coef: Optional[Any] = None,
    ignore_index: int = -100,
    eps: float = 0.0,
    zl: float = 0.0,
    cap: float = 0.0,
) -> None:
    rows, cols = x2.shape
    dt = x2.dtype
    acc = _acc(dt)
    A = acc.type
    aligned = (cols * dt.itemsize) % 16 == 0 and x2.data.ptr % 16 == 0
    if y2 is not None:
        aligned = aligned and y2.data.ptr % 16 == 0
    vec = 16 // dt.itemsize if aligned else 1
    kern, block, S, chunk, grid = _launch_plan(rows, cols, dt, vec, mode)
    if grid == 0:
        _fallback_rows(x2, y2, rowout, mode, scale, tgt, q, w, coef, ignore_index, eps, zl, cap)
        return
    if S > 1:
        part, sync, issued = _workspace(rows, S, acc)
        part_p, sync_p = part.data.ptr, sync.data.ptr
        tbase = issued[0] & 0xFFFFFFFF
        issued[0] += grid
    else:
        part_p = sync_p = tbase = 0

    def ptr(a: Optional[Any]) -> np.uint64:
        return np.uint64(0 if a is None else a.data.ptr)

    args = (
        ptr(x2),
        ptr(y2),
        ptr(rowout),
        np.int64(rows),
        np.int64(cols),
        np.int64(chunk),
        np.int32(S),
        np.float64(scale),
        np.uint64(part_p),
        np.uint64(sync_p),
        np.uint32(tbase),
        ptr(tgt),
        ptr(q),
        ptr(w),
        ptr(coef),
        np.int64(ignore_index),
        A(eps),
        A(zl),
        A(cap),
        A(cols),
        np.int32(0 if y2 is None else 1),
    )
    kern((grid,), (block,), args)


def _fallback_rows(
    x2: Any,
    y2: Optional[Any],
    rowout: Optional[Any],
    mode: int,
    scale: float,
    tgt: Optional[Any],
    q: Optional[Any],
    w: Optional[Any],
    coef: Optional[Any],
    ignore_index: int,
    eps: float,
    zl: float,
    cap: float,
) -> None:
    """Rows too long to keep on chip (more chunks than can be resident): CuPy array operations on
    the device (several passes over memory; correct, not fast)."""
    dt = x2.dtype
    o = _to_acc(x2)
    if mode == MODE_CE:
        if cap > 0:
            o = cap * cp.tanh(o / cap)
    else:
        o = o * o.dtype.type(scale)
    lse = _lse_rows(o)
    if mode == MODE_LSE:
        rowout[...] = lse
        return
    if mode in (MODE_SOFTMAX, MODE_LOGSOFTMAX):
        ls = o - lse[:, None]
        pinf = cp.isposinf(lse)[:, None]
        r = cp.exp(ls) if mode == MODE_SOFTMAX else ls
        r = cp.where(pinf, cp.nan, r)
        _copy_into(y2, _from_acc(r, dt))
        return
    # cross-entropy
    rows, C = o.shape
    A = o.dtype
    inv_ce = coef[0] if coef is not None else A.type(1)
    inv_z = coef[1] if coef is not None else A.type(1)
    W = coef[2] if coef is not None else A.type(C)
    wv = w if w is not None else cp.ones(C, dtype=A)
    ls = o - lse[:, None]
    p = cp.exp(ls)
    if q is not None:
        qq = (1 - eps) * q + eps / C
        wq = wv[None, :] * qq
        loss = (-(wq * cp.where(wq != 0, ls, 0)).sum(axis=1)) * inv_ce
        g = (wq.sum(axis=1) * inv_ce)[:, None] * p - inv_ce * wq
        status = cp.zeros(rows, dtype=cp.int8)
    else:
        valid = tgt != ignore_index
        inb = (tgt >= 0) & (tgt < C)
        yc = cp.where(inb, tgt, 0)
        wy = wv[yc]
        oy = cp.take_along_axis(o, yc[:, None], axis=1)[:, 0]
        main = wy * (1 - eps) * (lse - oy)
        if eps > 0:
            main = main + eps / C * (W * lse - (wv[None, :] * o).sum(axis=1))
        loss = main * inv_ce
        alpha = inv_ce * (wy * (1 - eps) + eps / C * W)
        g = alpha[:, None] * p
        if eps > 0:
            g = g - inv_ce * eps / C * wv[None, :]
        onehot = cp.arange(C)[None, :] == yc[:, None]
        g = g - cp.where(onehot, (inv_ce * wy * (1 - eps))[:, None], 0)
        status = cp.where(valid, cp.where(inb, 0, 2), 1).astype(cp.int8)
    if zl != 0:
        loss = loss + zl * lse * lse * inv_z
        g = g + (inv_z * 2 * zl * lse)[:, None] * p
    if cap > 0:
        g = g * (1 - (o / cap) ** 2)
    loss = cp.where(status == 1, 0, cp.where(status == 2, cp.nan, loss))
    rowout[...] = loss
    if y2 is not None:
        g = cp.where((status == 1)[:, None], 0, cp.where((status == 2)[:, None], cp.nan, g))
        _copy_into(y2, _from_acc(g.astype(A), dt))


def _lse_rows(o: Any) -> Any:
    """Row-wise logsumexp of a float32/float64 (rows, cols) array with CuPy operations."""
    m = o.max(axis=1) if o.shape[1] else cp.full(o.shape[0], -cp.inf, dtype=o.dtype)
    nanrow = cp.isnan(o).any(axis=1)
    shift = cp.where(cp.isfinite(m), m, 0)
    s = cp.exp(o - shift[:, None]).sum(axis=1)
    lse = shift + cp.log(s)
    lse = cp.where(cp.isposinf(m), cp.inf, lse)
    return cp.where(nanrow, cp.nan, lse)


# --------------------------------------------------------------------------------------------------
# softmax family


_FAST_DTYPES = (_F32, _F64, _F16)


def _fast_rows(x: Any, axis: Axis, out: Any) -> Optional[Tuple[Any, Any]]:
    """(x, out) as (rows, cols) arrays for the common call (C-contiguous, last axis, out None or
    C-contiguous and equal to x or disjoint from it), else None: the general path handles it."""
    if type(x) is not cp.ndarray or not x.flags.c_contiguous or x.ndim == 0 or x.size == 0:
        return None
    if not (axis == -1 or axis == x.ndim - 1) or isinstance(axis, bool):
        return None
    dt = x.dtype
    if not (dt in _FAST_DTYPES or _is_bf16(dt)):
        return None
    cols = x.shape[-1]
    x2 = x.reshape(x.size // cols, cols)
    if out is None:
        return x2, _empty(x2.shape, dt)
    if (
        type(out) is not cp.ndarray
        or out.shape != x.shape
        or out.dtype != dt
        or not out.flags.c_contiguous
        or out.device.id != x.device.id
    ):
        return None
    a, b = x.data.ptr, out.data.ptr
    if a != b and a < b + out.nbytes and b < a + x.nbytes:
        return None
    return x2, out.reshape(x2.shape)


def _softmax_impl(x: Any, axis: Axis, temperature: Any, out: Any, sign: float, mode: int) -> Any:
    fast = _fast_rows(x, axis, out)
    if fast is not None:
        scale = sign * _scale(temperature)
        x2, y2 = fast
        _run_rows(x2, y2, None, mode, scale)
        return out if out is not None else y2.reshape(x.shape)
    x = _as_float(x)
    dt = x.dtype
    scale = sign * _scale(temperature)
    if out is not None:
        out = _check_out(out, x.shape, dt)
    if x.ndim == 0:
        res = _softmax_impl(x.reshape(1), 0, temperature, None, sign, mode).reshape(())
        if out is not None:
            _copy_into(out, res)
            return out
        return res
    axes = _normalize_axes(axis, x.ndim)
    layout = _Layout(x, axes)
    if layout.rows * layout.cols == 0:
        return out if out is not None else _empty(x.shape, dt)
    y2, direct = _writable_view(layout, out)
    _run_rows(layout.x2d, y2, None, mode, scale)
    return _finish(layout, y2, direct, out)


@_on_device
def softmax(x: Any, axis: Axis = -1, *, temperature: float = 1.0, out: Any = None) -> Any:
    """GPU softmax (API.md §1)."""
    return _softmax_impl(x, axis, temperature, out, 1.0, MODE_SOFTMAX)


@_on_device
def log_softmax(x: Any, axis: Axis = -1, *, temperature: float = 1.0, out: Any = None) -> Any:
    """GPU log_softmax (API.md §1)."""
    return _softmax_impl(x, axis, temperature, out, 1.0, MODE_LOGSOFTMAX)


@_on_device
def softmin(x: Any, axis: Axis = -1, *, temperature: float = 1.0, out: Any = None) -> Any:
    """GPU softmin, softmax(-x) (API.md §1)."""
    return _softmax_impl(x, axis, temperature, out, -1.0, MODE_SOFTMAX)


# --------------------------------------------------------------------------------------------------
# logsumexp


@_on_device
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
    """GPU logsumexp with SciPy's `b`, `keepdims` and `return_sign` (API.md §1)."""
    x = _as_float(x)
    dt = x.dtype
    inv_t = _scale(temperature)
    if b is not None:
        b = _as_float(b, "b")
        try:
            shape = np.broadcast_shapes(x.shape, b.shape)
        except ValueError:
            raise ValueError(
                f"b of shape {b.shape} does not broadcast against x of shape {x.shape}"
            ) from None
        if b.dtype.kind == "f" and b.dtype.itemsize > dt.itemsize and not _is_half(b.dtype):
            dt = np.result_type(_acc(dt), b.dtype)
        if shape != x.shape:
            x = cp.broadcast_to(x, shape)
    ndim = x.ndim
    if ndim == 0:
        x = x.reshape(1)
        if b is not None:
            b = cp.broadcast_to(b, ()).reshape(1)
        axes: Tuple[int, ...] = (0,)
    else:
        axes = _normalize_axes(axis, ndim)
    res_shape = tuple(x.shape[i] for i in range(x.ndim) if i not in axes)
    if keepdims:
        res_shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
        if ndim == 0:
            res_shape = ()
    if ndim == 0:
        res_shape = ()
    if out is not None:
        out = _check_out(out, res_shape, dt)
    acc = _acc(dt)
    sign = None
    if b is None:
        layout = _Layout(x, axes)
        res = cp.empty(layout.rows, dtype=acc)
        if layout.rows:
            if layout.cols == 0:
                res.fill(-np.inf)
            else:
                x2 = layout.x2d
                if x2.dtype != dt:
                    x2 = x2.astype(dt)
                _run_rows(x2, None, res, MODE_LSE, inv_t)
        if inv_t != 1.0:
            res *= acc.type(1.0 / inv_t)
    else:
        xa = _to_acc(x).astype(acc, copy=False)
        ba = _to_acc(cp.broadcast_to(b, x.shape)).astype(acc, copy=False)
        lx = _Layout(xa, axes)
        lb = _Layout(cp.ascontiguousarray(cp.broadcast_to(ba, x.shape)), axes)
        o = lx.x2d * acc.type(inv_t)
        bb = lb.x2d
        masked = cp.where(bb != 0, o, -cp.inf)
        if lx.cols:
            m = masked.max(axis=1)
        else:
            m = cp.full(lx.rows, -cp.inf, dtype=acc)
        shift = cp.where(cp.isfinite(m), m, 0)
        terms = cp.where(bb != 0, bb * cp.exp(masked - shift[:, None]), 0)
        s = terms.sum(axis=1)
        nan_in = (cp.isnan(o) & (bb != 0)).any(axis=1) | cp.isnan(bb).any(axis=1)
        res = shift + cp.log(cp.abs(s))
        res = cp.where(cp.isposinf(m), cp.inf, res)
        sign = cp.sign(s).astype(acc)
        sign = cp.where(cp.isposinf(m), 1.0, sign)
        res = cp.where(nan_in, cp.nan, res)
        sign = cp.where(nan_in, cp.nan, sign)
        if inv_t != 1.0:
            res = res * acc.type(1.0 / inv_t)
        if not return_sign:
            res = cp.where(sign < 0, cp.nan, res)
    res = _from_acc(res.astype(acc, copy=False), dt).reshape(res_shape)
    if out is not None:
        _copy_into(out, res)
        res = out
    if not return_sign:
        return res
    if sign is None:
        r = _to_acc(res).astype(acc, copy=False)
        sign = cp.where(cp.isnan(r), cp.nan, cp.where(r == -cp.inf, 0.0, 1.0)).astype(acc)
    sign = _from_acc(sign.reshape(res_shape).astype(acc, copy=False), dt)
    return res, sign


# --------------------------------------------------------------------------------------------------
# cross-entropy family


def _labels_checked() -> bool:
    return os.environ.get("FASTSOFTMAX_CUDA_CHECK_LABELS", "") not in ("", "0")


class _CeCall:
    """Validated arguments of one cross-entropy call on the GPU."""

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
        logits = _as_float(logits, "logits")
        dt = logits.dtype
        acc = _acc(dt)
        if logits.ndim == 0:
            raise ValueError("logits must have at least one dimension (the classes)")
        (cax,) = _normalize_axes(axis, logits.ndim, allow_multiple=False)
        eps, z, cap_opt, ignore = _ce_options(
            reduction, label_smoothing, z_loss, softcap, ignore_index
        )
        cap = 0.0 if cap_opt is None else cap_opt
        target = _check_cupy(target, "target")
        layout = _Layout(logits, (cax,))
        C = layout.cols
        soft = _ce_target_is_soft(target, logits.shape, layout.batch_shape, cax)
        if soft:
            t = _Layout(_to_acc(target).astype(acc, copy=False), (cax,)).x2d
        else:
            t = target.reshape(-1)
            if t.dtype == np.uint64:
                # labels beyond int64 become -1 (out of range) rather than wrapping to a valid class
                t = cp.where(t > np.uint64(np.iinfo(np.int64).max), np.int64(-1), t.astype(np.int64))
            t = cp.ascontiguousarray(t, dtype=np.int64)
            if ignore < -(2**63) or ignore >= 2**63:
                ignore = -(2**63)  # cannot match any int64 label... except this one:
                t = cp.where(t == ignore, np.int64(-1), t)  # keep it out of range
        w = None
        if weight is not None:
            if not isinstance(weight, cp.ndarray):
                try:
                    weight = cp.asarray(np.asarray(weight))
                except (TypeError, ValueError):
                    raise TypeError("weight must be an array") from None
            _check_weight(weight, C)
            w = cp.ascontiguousarray(_to_acc(weight).astype(acc, copy=False))
        if not soft and _labels_checked() and t.size:
            bad = (t != ignore) & ((t < 0) | (t >= C))
            pos = int(cp.argmax(bad))  # the one host synchronisation
            if bool(bad[pos]):
                raise IndexError(
                    f"target {int(t[pos])} at position {pos} is out of bounds for {C} classes"
                )
        self.logits = logits
        self.layout = layout
        self.dt, self.acc = dt, acc
        self.target, self.soft = t, soft
        self.weight = w
        self.ignore = ignore
        self.reduction = reduction
        self.eps, self.z, self.cap = eps, z, cap

    def run(self, grad2d: Optional[Any]) -> Any:
        """Runs the kernel (gradient into grad2d when given); returns the loss (CuPy array)."""
        lay = self.layout
        acc = self.acc
        rows, C = lay.rows, lay.cols
        mean = self.reduction == "mean"
        losses = cp.empty(rows, dtype=acc)
        coef = None
        need_coef = mean or (self.weight is not None and (self.eps > 0 or self.soft))
        if rows and need_coef:
            coef = cp.empty(3, dtype=acc)
            k = _kernel(f"fs_ce_coef<{'double' if acc == _F64 else 'float'}>")
            k(
                (1,),
                (1024,),
                (
                    np.uint64(0 if self.soft else self.target.data.ptr),
                    np.uint64(0 if self.weight is None else self.weight.data.ptr),
                    np.int64(rows),
                    np.int64(C),
                    np.int64(self.ignore),
                    np.int32(1 if mean else 0),
                    coef,
                ),
            )
        if rows and C:
            _run_rows(
                lay.x2d,
                grad2d,
                losses,
                MODE_CE,
                1.0,
                tgt=None if self.soft else self.target,
                q=self.target if self.soft else None,
                w=self.weight,
                coef=coef,
                ignore_index=self.ignore,
                eps=self.eps,
                zl=self.z,
                cap=self.cap,
            )
        elif rows:
            # C == 0: no class to predict; the loss of each counted row is logsumexp([]) = -inf
            # minus nothing; follow the CPU path: NaN-free zero-size gradient, loss from formula.
            self._empty_classes(losses)
        if self.reduction == "none":
            loss = _from_acc(losses, self.dt).reshape(lay.batch_shape)
            return loss
        total = losses.sum() if rows else cp.zeros((), dtype=acc)
        return _from_acc(total, self.dt)

    def _empty_classes(self, losses: Any) -> None:
        if self.soft:
            losses.fill(0)
        else:
            # every label is out of range unless ignored
            losses[...] = cp.where(self.target == self.ignore, 0, cp.nan).astype(self.acc)


@_on_device
def cross_entropy(
    logits: Any,
    target: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: Optional[float] = None,
) -> Any:
    """GPU cross-entropy loss (API.md §1)."""
    call = _CeCall(
        logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss, softcap
    )
    return call.run(None)


def _ce_with_grad(call: _CeCall, out: Any) -> Tuple[Any, Any]:
    lay = call.layout
    if out is not None:
        out = _check_out(out, call.logits.shape, call.dt)
    if lay.rows * lay.cols == 0:
        loss = call.run(None)
        grad = out if out is not None else _empty(call.logits.shape, call.dt)
        return loss, grad
    y2, direct = _writable_view(lay, out)
    loss = call.run(y2)
    return loss, _finish(lay, y2, direct, out)


@_on_device
def cross_entropy_grad(
    logits: Any,
    target: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: Optional[float] = None,
    out: Any = None,
) -> Any:
    """GPU gradient of the cross-entropy with respect to the logits (API.md §1)."""
    call = _CeCall(
        logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss, softcap
    )
    return _ce_with_grad(call, out)[1]


@_on_device
def cross_entropy_with_grad(
    logits: Any,
    target: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: Optional[float] = None,
    out: Any = None,
) -> Tuple[Any, Any]:
    """GPU (loss, gradient) in one pass over the logits; ``out=logits`` works in place."""
    call = _CeCall(
        logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss, softcap
    )
    return _ce_with_grad(call, out)


# --------------------------------------------------------------------------------------------------
# backward passes, entropy, KL (CuPy array operations in the accumulation dtype, on the device)


def _pair(a: Any, b: Any, what: Tuple[str, str]) -> Tuple[Any, Any, np.dtype]:
    a = _as_float(a, what[0])
    b = _as_float(b, what[1])
    if a.shape != b.shape:
        raise ValueError(f"{what[0]} of shape {a.shape} and {what[1]} of shape {b.shape} differ")
    dt = np.result_type(_acc(a.dtype), _acc(b.dtype))
    if a.dtype == b.dtype:
        dt = a.dtype
    elif not (_is_half(a.dtype) or _is_half(b.dtype)):
        dt = np.result_type(a.dtype, b.dtype)
    return a, b, np.dtype(dt)


def _write_elementwise(r: Any, dt: np.dtype, out: Any, shape: Tuple[int, ...]) -> Any:
    if out is not None:
        out = _check_out(out, shape, dt)
    res = _from_acc(r, dt)
    if out is not None:
        _copy_into(out, res)
        return out
    return res


@_on_device
def softmax_backward(grad_output: Any, y: Any, axis: int = -1, *, out: Any = None) -> Any:
    """Vector-Jacobian product of softmax: ``y * (g - sum(g * y))`` along `axis`."""
    g, yy, dt = _pair(grad_output, y, ("grad_output", "y"))
    ax = _one_axis(axis, g.ndim) if g.ndim else None
    if out is not None:
        _check_out(out, g.shape, dt)
    acc = _acc(dt)
    ga = _to_acc(g).astype(acc, copy=False)
    ya = _to_acc(yy).astype(acc, copy=False)
    s = (ga * ya).sum(axis=ax, keepdims=True)
    return _write_elementwise(ya * (ga - s), dt, out, g.shape)


@_on_device
def log_softmax_backward(grad_output: Any, log_y: Any, axis: int = -1, *, out: Any = None) -> Any:
    """Vector-Jacobian product of log_softmax: ``g - exp(log_y) * sum(g)`` along `axis`."""
    g, ly, dt = _pair(grad_output, log_y, ("grad_output", "log_y"))
    ax = _one_axis(axis, g.ndim) if g.ndim else None
    if out is not None:
        _check_out(out, g.shape, dt)
    acc = _acc(dt)
    ga = _to_acc(g).astype(acc, copy=False)
    la = _to_acc(ly).astype(acc, copy=False)
    s = ga.sum(axis=ax, keepdims=True)
    return _write_elementwise(ga - cp.exp(la) * s, dt, out, g.shape)


def _base_factor(base: Any) -> Optional[float]:
    if base is None:
        return None
    try:
        bv = float(base)
    except (TypeError, ValueError):
        raise TypeError(f"base must be a number or None, got {base!r}") from None
    if not bv > 0:
        raise ValueError(f"base must be > 0, got {base!r}")
    if bv == 1.0:
        raise ValueError("base must not be 1 (log(1) = 0)")
    return math.log(bv)


def _log_softmax_acc(x: Any, ax: int) -> Any:
    """log_softmax in the accumulation dtype (half inputs are widened first)."""
    xa = _to_acc(x)
    return log_softmax(xa, ax)


@_on_device
def entropy(p: Any, axis: int = -1, *, base: Any = None, from_logits: bool = False) -> Any:
    """Shannon entropy ``-sum p log p`` along `axis` (``from_logits``: of ``softmax(p)``)."""
    p = _as_float(p, "p")
    dt = p.dtype
    lb = _base_factor(base)
    if p.ndim == 0:
        p = p.reshape(1)
        ax = 0
    else:
        ax = _one_axis(axis, p.ndim)
    acc = _acc(dt)
    if from_logits:
        ls = _log_softmax_acc(p, ax)
        pr = cp.exp(ls)
        # A NaN row (NaN, +inf or only -inf logits) stays NaN, as on the CPU.
        h = -cp.where(pr > 0, pr * ls, cp.where(cp.isnan(pr), cp.nan, 0)).sum(axis=ax)
    else:
        pa = _to_acc(p).astype(acc, copy=False)
        # SciPy's entr: -p log p for p > 0, 0 at 0, -inf for p < 0, NaN for NaN.
        ent = cp.where(pa > 0, -pa * cp.log(cp.where(pa > 0, pa, 1)), cp.where(pa == 0, 0, -cp.inf))
        h = cp.where(cp.isnan(pa), cp.nan, ent).sum(axis=ax)
    if lb is not None:
        h = h / acc.type(lb)
    return _from_acc(h.astype(acc, copy=False), dt)


@_on_device
def kl_divergence(
    p: Any, q: Any, axis: int = -1, *, base: Any = None, from_logits: bool = False
) -> Any:
    """Kullback-Leibler divergence ``sum p log(p / q)`` along `axis`."""
    pa, qa, dt = _pair(p, q, ("p", "q"))
    lb = _base_factor(base)
    if pa.ndim == 0:
        pa, qa = pa.reshape(1), qa.reshape(1)
        ax = 0
    else:
        ax = _one_axis(axis, pa.ndim)
    acc = _acc(dt)
    if from_logits:
        lp = _log_softmax_acc(pa, ax).astype(acc, copy=False)
        lq = _log_softmax_acc(qa, ax).astype(acc, copy=False)
        pr = cp.exp(lp)
        d = cp.where(pr > 0, pr * (lp - lq), cp.where(cp.isnan(pr), cp.nan, 0)).sum(axis=ax)
    else:
        P = _to_acc(pa).astype(acc, copy=False)
        Q = _to_acc(qa).astype(acc, copy=False)
        term = cp.where(
            (P > 0) & (Q > 0),
            P * cp.log(P / Q),
            cp.where((P == 0) & (Q >= 0), 0, cp.inf),
        )
        term = cp.where(cp.isnan(P) | cp.isnan(Q), cp.nan, term)
        d = term.sum(axis=ax)
    if lb is not None:
        d = d / acc.type(lb)
    return _from_acc(d.astype(acc, copy=False), dt)
