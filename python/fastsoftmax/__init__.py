"""fastsoftmax: softmax, log-sum-exp and cross-entropy for NumPy (and CuPy) at the speed of memory.

The functions follow NumPy/SciPy/PyTorch semantics (see the README and docs/api.md); the work is done
by Rust kernels, parallel over rows and vectorised with an instruction set chosen at run time.
"""

from ._api import (
    cross_entropy,
    cross_entropy_grad,
    cross_entropy_with_grad,
    entropy,
    get_num_threads,
    kl_divergence,
    log_softmax,
    log_softmax_backward,
    logsumexp,
    set_num_threads,
    simd_backend,
    softmax,
    softmax_backward,
    softmin,
)
from ._linear import linear_cross_entropy, linear_cross_entropy_with_grad
from ._native import __version__
from ._partial import logsumexp_stats, merge_logsumexp_stats

__all__ = [
    "__version__",
    "cross_entropy",
    "cross_entropy_grad",
    "cross_entropy_with_grad",
    "entropy",
    "get_num_threads",
    "kl_divergence",
    "linear_cross_entropy",
    "linear_cross_entropy_with_grad",
    "log_softmax",
    "log_softmax_backward",
    "logsumexp",
    "logsumexp_stats",
    "merge_logsumexp_stats",
    "set_num_threads",
    "simd_backend",
    "softmax",
    "softmax_backward",
    "softmin",
]
