"""A small cache of large CPU result buffers for the PyTorch adapter.

A training loop asks for a gradient of the same shape at every step (for the S1 cross-entropy, 2048 ×
32000 float32 = 262 MB) and frees the previous one (``optimizer.zero_grad()``). A fresh buffer of
that size comes from ``mmap`` and every page of it faults on first write: on a busy machine the page
faults cost as much as the kernel's whole pass over the logits, or more. So the adapter writes its
large results (``out=``) into buffers from this cache, and a buffer comes back to the cache when the
last tensor or array viewing it is freed, as PyTorch's CUDA caching allocator does for GPU memory.

Only buffers of at least :data:`MIN_BYTES` are cached (smaller ones come from malloc's arenas,
without fresh page faults), and at most :data:`MAX_FREE_BYTES` of free buffers are kept; the rest are
released at once. ``fastsoftmax.torch.empty_cache()`` releases every free buffer.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

MIN_BYTES = 8 << 20  # 8 MiB: above glibc's default mmap threshold range, where faults dominate
MAX_FREE_BYTES = 1 << 30  # 1 GiB of free buffers at most (four S1-sized gradients)

_lock = threading.RLock()  # reentrant: a lease may be freed (and returned) while the lock is held
_free: Dict[int, List[np.ndarray]] = {}
_free_bytes = 0


class _Lease:
    """Owner of one cached buffer while results view it; returns it to the cache when freed.

    Arrays made from it (``np.asarray(lease)``) keep it as their base: NumPy stops collapsing a view's
    base chain at the first object that is not an array, so the lease lives exactly as long as the
    last view of it (and a tensor made by ``torch.from_numpy`` keeps its array alive)."""

    __slots__ = ("raw", "__array_interface__")

    def __init__(self, raw: np.ndarray):
        self.raw = raw
        self.__array_interface__ = {
            "shape": raw.shape,
            "typestr": raw.dtype.str,
            "data": (raw.__array_interface__["data"][0], False),
            "version": 3,
        }

    def __del__(self) -> None:
        try:
            _give_back(self.raw)
        except Exception:  # interpreter shutdown: the module may already be gone
            pass


def _give_back(raw: np.ndarray) -> None:
    global _free_bytes
    with _lock:
        if _free_bytes + raw.nbytes <= MAX_FREE_BYTES:
            _free.setdefault(raw.nbytes, []).append(raw)
            _free_bytes += raw.nbytes


def _take(nbytes: int) -> np.ndarray:
    global _free_bytes
    with _lock:
        bufs = _free.get(nbytes)
        if bufs:
            _free_bytes -= nbytes
            return bufs.pop()
    return np.empty(nbytes, dtype=np.uint8)


def out_like(a: Any, shape: Optional[Tuple[int, ...]] = None) -> Optional[np.ndarray]:
    """A C-contiguous result buffer of `a`'s dtype (and shape, unless given) from the cache, or None
    when `a` is not a NumPy array or the result is small (the caller then lets the kernel allocate)."""
    if type(a) is not np.ndarray:
        return None
    if shape is None:
        shape, nbytes = a.shape, a.nbytes
    else:
        nbytes = math.prod(shape) * a.dtype.itemsize
    if nbytes < MIN_BYTES:
        return None
    flat = np.asarray(_Lease(_take(nbytes)))
    return flat.view(a.dtype).reshape(shape)


def empty_cache() -> int:
    """Releases every free cached result buffer of ``fastsoftmax.torch``; returns the bytes released.

    Buffers still viewed by a tensor are not affected (they return to the cache when freed).

    >>> import fastsoftmax.torch as ft
    >>> ft.empty_cache() >= 0
    True
    """
    global _free_bytes
    with _lock:
        released = _free_bytes
        _free.clear()
        _free_bytes = 0
    return released


def free_bytes() -> int:
    """Bytes held in free cached buffers now."""
    return _free_bytes
