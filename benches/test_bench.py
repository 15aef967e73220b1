"""pytest-benchmark comparisons of fastsoftmax with NumPy's textbook formula.

Not part of the test suite (``testpaths = ["tests"]``); run explicitly:

    pytest benches/test_bench.py                        # all shapes
    pytest benches/test_bench.py -k "S4 or S3"          # some shapes
    pytest benches/test_bench.py --benchmark-group-by=group --benchmark-columns=median,ops

Each benchmark is grouped as ``<op>-<shape>`` so fastsoftmax and NumPy appear side by side. After timing,
each result is checked against a float64 computation of the same formula on a few rows, so a benchmark
of a wrong answer fails. The full measuring method (ceilings, peers, targets) is
``python -m fastsoftmax.bench``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import pytest

pytest.importorskip("pytest_benchmark")
np = pytest.importorskip("numpy")
fs = pytest.importorskip("fastsoftmax")

# S1..S4 of docs/benchmarks.md (S1 reduced to 512 rows to keep a run short; its rows are as long)
SHAPES: Dict[str, Tuple[int, int]] = {
    "S1": (512, 32000),
    "S2": (32768, 1000),
    "S3": (1_000_000, 10),
    "S4": (64, 10),
}
CHECK_ROWS = 8

_cache: Dict[str, Tuple[Any, Any]] = {}


def _inputs(shape_id: str) -> Tuple[Any, Any]:
    """float32 logits and int64 labels, made once per shape (the previous shape is released)."""
    if shape_id not in _cache:
        _cache.clear()
        n, c = SHAPES[shape_id]
        rng = np.random.default_rng(12345)
        x = rng.standard_normal((n, c), dtype=np.float32) * 3.0
        y = rng.integers(0, c, size=n, dtype=np.int64)
        _cache[shape_id] = (x, y)
    return _cache[shape_id]


# ---- NumPy textbook formulas: the NumPy peer of `python -m fastsoftmax.bench` --------------------

from fastsoftmax.bench.peers import np_cross_entropy_with_grad, np_logsumexp, np_softmax  # noqa: E402


# ---- float64 references on the first rows (independent of both implementations) ----------------


def ref_softmax_rows(x: Any) -> Any:
    x64 = x[:CHECK_ROWS].astype(np.float64)
    e = np.exp(x64 - x64.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ref_logsumexp_rows(x: Any) -> Any:
    x64 = x[:CHECK_ROWS].astype(np.float64)
    m = x64.max(axis=-1)
    return np.log(np.exp(x64 - m[:, None]).sum(axis=-1)) + m


def ref_loss(x: Any, y: Any) -> float:
    # the full mean in float64, row block by row block to bound memory
    total = 0.0
    for lo in range(0, x.shape[0], 4096):
        blk = x[lo : lo + 4096].astype(np.float64)
        m = blk.max(axis=-1)
        lse = np.log(np.exp(blk - m[:, None]).sum(axis=-1)) + m
        total += float((lse - blk[np.arange(blk.shape[0]), y[lo : lo + 4096]]).sum())
    return total / x.shape[0]


def ref_grad_rows(x: Any, y: Any) -> Any:
    g = ref_softmax_rows(x)
    g[np.arange(g.shape[0]), y[:CHECK_ROWS]] -= 1.0
    return g / x.shape[0]


# ---- benchmarks ----------------------------------------------------------------------------------

IMPLS = ["fastsoftmax", "numpy"]


def _softmax_call(impl: str, x: Any) -> Callable[[], Any]:
    if impl == "fastsoftmax":
        out = np.empty_like(x)
        return lambda: fs.softmax(x, out=out)
    return lambda: np_softmax(x)


def _logsumexp_call(impl: str, x: Any) -> Callable[[], Any]:
    if impl == "fastsoftmax":
        return lambda: fs.logsumexp(x)
    return lambda: np_logsumexp(x)


def _ce_call(impl: str, x: Any, y: Any) -> Callable[[], Any]:
    if impl == "fastsoftmax":
        out = np.empty_like(x)
        return lambda: fs.cross_entropy_with_grad(x, y, out=out)
    return lambda: np_cross_entropy_with_grad(x, y)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape_id", list(SHAPES))
def test_softmax(benchmark: Any, shape_id: str, impl: str) -> None:
    x, _ = _inputs(shape_id)
    benchmark.group = f"softmax-{shape_id}"
    benchmark.extra_info["bytes_moved"] = 2 * x.nbytes
    result = benchmark(_softmax_call(impl, x))
    np.testing.assert_allclose(result[:CHECK_ROWS], ref_softmax_rows(x), rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape_id", list(SHAPES))
def test_logsumexp(benchmark: Any, shape_id: str, impl: str) -> None:
    x, _ = _inputs(shape_id)
    benchmark.group = f"logsumexp-{shape_id}"
    benchmark.extra_info["bytes_moved"] = x.nbytes + x.shape[0] * x.itemsize
    result = benchmark(_logsumexp_call(impl, x))
    assert result.shape == (x.shape[0],)
    ref = ref_logsumexp_rows(x)
    np.testing.assert_allclose(result[:CHECK_ROWS], ref, rtol=0, atol=2e-5 * np.maximum(1, np.abs(ref)).max())


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape_id", list(SHAPES))
def test_cross_entropy_with_grad(benchmark: Any, shape_id: str, impl: str) -> None:
    x, y = _inputs(shape_id)
    benchmark.group = f"cross_entropy_with_grad-{shape_id}"
    benchmark.extra_info["bytes_moved"] = 2 * x.nbytes + y.nbytes
    loss, grad = benchmark(_ce_call(impl, x, y))
    ref = ref_loss(x, y)
    assert abs(float(loss) - ref) <= 2e-5 * max(1.0, abs(ref))
    g_ref = ref_grad_rows(x, y)
    np.testing.assert_allclose(grad[:CHECK_ROWS], g_ref, rtol=1e-4, atol=1e-6 * np.abs(g_ref).max())
