"""Tensors to arrays and back, for the PyTorch adapter (``fastsoftmax.torch``).

CPU tensors become NumPy arrays that share their memory (``Tensor.numpy()``, any strides); CUDA
tensors become CuPy arrays through DLPack. NumPy and CuPy have no native bfloat16: its 16-bit words
are viewed as ``int16`` and then as ``ml_dtypes.bfloat16`` (the type fastsoftmax accepts), and when
ml_dtypes is missing a bfloat16 tensor is computed in float32 instead. Results come back the same
way, again without a copy.

Only this module and the two modules that import it know about PyTorch; ``import fastsoftmax``
never imports it.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Optional, TypeVar

import numpy as np
import torch
from torch.utils.dlpack import from_dlpack

try:
    import ml_dtypes

    _BF16: Optional[np.dtype] = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # bfloat16 tensors are then computed in float32
    _BF16 = None

T = TypeVar("T")

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _bf16_words(t: torch.Tensor) -> torch.Tensor:
    # Same element size, so this view is allowed for any strides.
    return t.view(torch.int16)


def to_array(t: torch.Tensor) -> Any:
    """`t` (detached) as a NumPy array (CPU) or a CuPy array (CUDA) sharing its memory."""
    if t.requires_grad:
        t = t.detach()
    if t.dtype == torch.bfloat16:
        if _BF16 is None:
            t = t.float()
        elif not t.is_cuda:
            return _bf16_words(t).numpy().view(_BF16)
    return _to_cupy(t) if t.is_cuda else t.numpy()


def _cupy() -> Any:
    return importlib.import_module("cupy")  # only when a CUDA tensor arrives


def _to_cupy(t: torch.Tensor) -> Any:
    cupy = _cupy()

    if t.dtype == torch.bfloat16:
        return cupy.from_dlpack(_bf16_words(t)).view(_BF16)
    return cupy.from_dlpack(t)


def from_array(a: Any, like: torch.Tensor) -> torch.Tensor:
    """A result array (or NumPy scalar) as a tensor of `like`'s dtype on `like`'s device."""
    wrap: Callable[[Any], torch.Tensor]
    if like.is_cuda:
        wrap = from_dlpack
    else:
        wrap = torch.from_numpy
        if type(a) is not np.ndarray:
            a = np.asarray(a)  # a NumPy scalar (a full reduction)
    if like.dtype is torch.bfloat16 and _BF16 is not None and a.dtype == _BF16:
        return wrap(a.view(np.int16)).view(torch.bfloat16)
    out = wrap(a)
    # Only bfloat16 without ml_dtypes was computed in another dtype.
    return out if out.dtype is like.dtype else out.to(like.dtype)


def on_device(like: torch.Tensor, fn: Callable[[], T]) -> T:
    """Runs `fn()`; for a CUDA tensor on its device with PyTorch's current stream as CuPy's
    current stream, so the kernels are ordered with PyTorch's work and nothing synchronises."""
    if not like.is_cuda:
        return fn()
    cupy = _cupy()
    index = like.device.index if like.device.index is not None else torch.cuda.current_device()
    with cupy.cuda.Device(index):
        stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(index).cuda_stream, index)
        with stream:
            return fn()
