"""One view of an array for the row kernels, for NumPy and CuPy alike.

The kernels reduce over the last axis of a C-contiguous array. `Layout` moves the reduced axes of an
input there (a transpose, then one copy only when the memory is not already in that order), merges
them into one, and puts results back in the caller's shape and axis order. The array library comes
in as an `Xp` (a few functions each backend supplies), so this module imports none.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Callable, NamedTuple, Optional, Tuple

import numpy as np


class Xp(NamedTuple):
    """What a backend tells `Layout` about its arrays."""

    #: `a` as a C-contiguous array of `dtype` (no copy when it already is one)
    contig: Callable[[Any, np.dtype], Any]
    #: whether the memory of two arrays may overlap
    may_share: Callable[[Any, Any], bool]
    #: the address of an array's first element
    address: Callable[[Any], int]
    #: whether an array's elements are aligned for its dtype
    aligned: Callable[[Any], bool]


class Layout:
    """An input seen with its reduced `axes` merged into its last axis, C-contiguous, of the
    compute dtype: `xk`. With one reduced axis already last, `xk` keeps the input's shape; otherwise
    it is `(rows, cols)`."""

    __slots__ = (
        "shape", "axes", "keep", "trailing", "batch_shape", "rows", "cols", "xk", "xp", "as_is"
    )

    def __init__(self, x: Any, axes: Tuple[int, ...], dtype: np.dtype, xp: Xp):
        nd = x.ndim
        self.xp = xp
        self.shape: Tuple[int, ...] = x.shape
        self.axes = axes
        if len(axes) == 1 and axes[0] == nd - 1:
            # The common call: the classes are the last axis already.
            self.trailing = self.as_is = True
            self.keep: Tuple[int, ...] = tuple(range(nd - 1))
            self.batch_shape: Tuple[int, ...] = x.shape[:-1]
            self.cols: int = x.shape[-1]
            self.rows: int = math.prod(self.batch_shape)
            self.xk = xp.contig(x, dtype)
            return
        self.as_is = False
        self.keep = tuple(i for i in range(nd) if i not in axes)
        self.trailing = axes == tuple(range(nd - len(axes), nd))
        self.batch_shape = tuple(x.shape[i] for i in self.keep)
        self.rows = math.prod(self.batch_shape)
        self.cols = math.prod(x.shape[a] for a in axes)
        moved = x if self.trailing else x.transpose(self.keep + axes)
        self.xk = xp.contig(moved, dtype).reshape(self.rows, self.cols)

    def restore(self, yk: Any) -> Any:
        """A result shaped like `xk` back in the input's shape and axis order (a view)."""
        if self.as_is:
            return yk
        y = yk.reshape(self.batch_shape + tuple(self.shape[a] for a in self.axes))
        if self.trailing:
            return y
        return y.transpose(tuple(np.argsort(self.keep + self.axes)))

    def direct_out(
        self, out: Optional[Any], others: Tuple[Any, ...] = (), in_place: Tuple[Any, ...] = ()
    ) -> Optional[Any]:
        """`out` shaped like `xk` when the kernel can write it directly, else None (the caller
        then writes a temporary and copies). Direct means: the reduced axes last, C-contiguous,
        aligned, of the compute dtype, and sharing no memory with the inputs, except that it may be
        exactly `xk` or one of `in_place` (the kernel then works in place). `others` are inputs
        the kernel cannot overwrite while reading; entries may be None."""
        if out is None or not self.trailing or out.dtype != self.xk.dtype:
            return None
        xp = self.xp
        if not (out.flags.c_contiguous and xp.aligned(out)):
            return None
        view = out.reshape(self.xk.shape)
        here = xp.address(view)
        for a in (self.xk,) + in_place:
            if xp.address(a) != here and xp.may_share(view, a):
                return None
        for a in others:
            if a is not None and xp.may_share(view, a):
                return None
        return view


def xp_of(a: Any) -> Any:
    """The array module of `a`: CuPy for CuPy arrays (imported only then), else NumPy."""
    if type(a).__module__.split(".", 1)[0] == "cupy":
        return importlib.import_module("cupy")
    return np


def sign_of(xp: Any, lse: Any) -> Any:
    """The sign of a sum of exponentials given its log: 1, or 0 for an empty sum, NaN for NaN."""
    return xp.where(xp.isnan(lse), xp.nan, xp.where(lse == -xp.inf, 0.0, 1.0)).astype(lse.dtype)
