"""Launching the CUDA row kernel (``softmax.cu``) from CuPy: compiling it, planning a launch
(threads per row, values per thread, rows split across blocks), the split-row workspace, and a
CuPy-operations fallback for rows too long to keep on chip; plus the dtype helpers of the half
types (bfloat16 as raw 16-bit words, since CuPy has no bfloat16).

The kernel is compiled by CuPy's RawModule (NVRTC) on first use, one instantiation per (dtype,
threads per row, vectors per thread, vector width, operation), cached in memory here and on disk by
CuPy. Nothing here synchronises with the host.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Dict, Optional, Tuple

import cupy as cp
import numpy as np


_HERE = os.path.dirname(os.path.abspath(__file__))
_SRC_PATH = os.path.join(_HERE, "softmax.cu")

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


def on_device(fn: Any) -> Any:
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


def kernel(name: str) -> Any:
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


def is_bf16(dt: np.dtype) -> bool:
    return dt.name == "bfloat16"


def is_half(dt: np.dtype) -> bool:
    return dt == _F16 or is_bf16(dt)


_CTYPE = {"float16": "fs_f16", "bfloat16": "fs_bf16", "float32": "float", "float64": "double"}


def acc_dtype(dt: np.dtype) -> np.dtype:
    return _F64 if dt == _F64 else _F32


def check_cupy(x: Any, what: str) -> Any:
    if not isinstance(x, cp.ndarray):
        raise TypeError(f"{what} must be a CuPy array when the input is on the GPU, got {type(x)}")
    return x


def as_float(x: Any, what: str = "x") -> Any:
    """x as a CuPy array of a supported floating dtype (integers and bool become float64)."""
    x = check_cupy(x, what)
    dt = x.dtype
    if dt in (_F32, _F64, _F16) or is_bf16(dt):
        return x
    if dt.kind in "biu":
        return x.astype(_F64)
    raise TypeError(f"{what} has unsupported dtype {dt}; expected a floating, integer or bool array")


def raw(a: Any) -> Any:
    """A view CuPy can copy/reshape whatever the float type (bfloat16 as raw 16-bit words)."""
    return a.view(_U16) if is_bf16(a.dtype) else a


def contig(a: Any) -> Any:
    if a.flags.c_contiguous:
        return a
    if is_bf16(a.dtype):
        return cp.ascontiguousarray(a.view(_U16)).view(a.dtype)
    return cp.ascontiguousarray(a)


def empty(shape: Tuple[int, ...], dtype: np.dtype) -> Any:
    return cp.empty(shape, dtype=dtype)


_bf16_to_f32_k = None
_f32_to_bf16_k = None


def to_acc(a: Any) -> Any:
    """a converted to its accumulation dtype (float32 for the half types)."""
    global _bf16_to_f32_k
    if is_bf16(a.dtype):
        if _bf16_to_f32_k is None:
            _bf16_to_f32_k = cp.ElementwiseKernel(
                "uint16 x", "float32 y", "y = __uint_as_float(((unsigned int)x) << 16)", "fs_bf16_f32"
            )
        return _bf16_to_f32_k(raw(a))
    if a.dtype == _F16:
        return a.astype(_F32)
    return a


def from_acc(a: Any, dt: np.dtype) -> Any:
    """a (float32/float64) rounded to dt (round to nearest even, NaN kept)."""
    global _f32_to_bf16_k
    if is_bf16(dt):
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


def copy_into(out: Any, src: Any) -> None:
    """out[...] = src (same dtype; any layout; bfloat16 copied as raw words)."""
    if is_bf16(out.dtype):
        cp.copyto(out.view(_U16), raw(src))
    else:
        cp.copyto(out, src)


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
    kern = kernel(f"fs_rows<{_CTYPE[dt.name]},{tpr},{vpt},{vec},{mode}>")
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


def run_rows(
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
    acc = acc_dtype(dt)
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
    o = to_acc(x2)
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
        copy_into(y2, from_acc(r, dt))
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
        copy_into(y2, from_acc(g.astype(A), dt))


def _lse_rows(o: Any) -> Any:
    """Row-wise logsumexp of a float32/float64 (rows, cols) array with CuPy operations."""
    m = o.max(axis=1) if o.shape[1] else cp.full(o.shape[0], -cp.inf, dtype=o.dtype)
    nanrow = cp.isnan(o).any(axis=1)
    shift = cp.where(cp.isfinite(m), m, 0)
    s = cp.exp(o - shift[:, None]).sum(axis=1)
    lse = shift + cp.log(s)
    lse = cp.where(cp.isposinf(m), cp.inf, lse)
    return cp.where(nanrow, cp.nan, lse)
