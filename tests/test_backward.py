"""softmax_backward / log_softmax_backward (docs/api.md §1): the vector-Jacobian products of softmax and
log_softmax, against float64 references, the explicit Jacobian, finite differences of softmax, every
layout, out= (in place into either input), special values, errors with nothing written."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sps

import fastsoftmax as fs

DTYPES = [np.float32, np.float64]
EPS = {np.dtype(np.float32): 2.0**-23, np.dtype(np.float64): 2.0**-52, np.dtype(np.float16): 2.0**-10}
COLS = [1, 2, 3, 7, 15, 16, 17, 31, 33, 64, 100, 1000, 2049, 4099]


# ----------------------------------------------------------------------------------------------
# float64 references (independent of fastsoftmax)


def ref_softmax_backward(g, y, axis=-1):
    g = np.asarray(g, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return y * (g - np.sum(g * y, axis=axis, keepdims=True))


def ref_log_softmax_backward(g, ly, axis=-1):
    g = np.asarray(g, dtype=np.float64)
    ly = np.asarray(ly, dtype=np.float64)
    return g - np.exp(ly) * np.sum(g, axis=axis, keepdims=True)


def bound_softmax(g, y, dtype, axis=-1, c=16.0):
    """Elementwise error bound: c·eps·y·(|g| + Σ|g·y|) (the rounding of the dot and the subtraction)."""
    g = np.abs(np.asarray(g, dtype=np.float64))
    y = np.abs(np.asarray(y, dtype=np.float64))
    n = g.shape[axis] if g.ndim else 1
    return c * EPS[np.dtype(dtype)] * (1 + np.log2(max(n, 2))) * y * (
        g + np.sum(g * y, axis=axis, keepdims=True)
    ) + np.finfo(dtype).tiny


def bound_log_softmax(g, ly, dtype, axis=-1, c=16.0):
    """c·eps·(|g| + exp(ly)·Σ|g|)."""
    g = np.abs(np.asarray(g, dtype=np.float64))
    e = np.exp(np.asarray(ly, dtype=np.float64))
    n = g.shape[axis] if g.ndim else 1
    return c * EPS[np.dtype(dtype)] * (1 + np.log2(max(n, 2))) * (
        g + e * np.sum(g, axis=axis, keepdims=True)
    ) + np.finfo(dtype).tiny


def assert_within(actual, expected, bound, ctx=""):
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{ctx}: shape {a.shape} != {e.shape}"
    nan_e, nan_a = np.isnan(e), np.isnan(a)
    assert np.array_equal(nan_e, nan_a), f"{ctx}: NaN pattern differs"
    fin = ~nan_e
    err = np.abs(a[fin] - e[fin])
    excess = err - np.broadcast_to(bound, e.shape)[fin]
    if excess.size:
        i = int(np.argmax(excess))
        assert excess[i] <= 0, (
            f"{ctx}: error {err[i]:.3g} > bound {np.broadcast_to(bound, e.shape)[fin][i]:.3g} "
            f"(actual {a[fin][i]!r}, expected {e[fin][i]!r})"
        )


def probs(rng, shape, dtype, axis=-1, spread=3.0):
    o = rng.standard_normal(shape) * spread
    return sps.softmax(o, axis=axis).astype(dtype), o


# ----------------------------------------------------------------------------------------------
# values


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_backward_matches_reference(rng, dtype, each_backend):
    for cols in COLS:
        rows = int(rng.integers(1, 6))
        y, _ = probs(rng, (rows, cols), dtype)
        g = rng.standard_normal((rows, cols)).astype(dtype)
        got = fs.softmax_backward(g, y)
        assert got.dtype == dtype and got.shape == g.shape
        assert_within(got, ref_softmax_backward(g, y), bound_softmax(g, y, dtype), f"cols={cols}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax_backward_matches_reference(rng, dtype, each_backend):
    for cols in COLS:
        rows = int(rng.integers(1, 6))
        o = rng.standard_normal((rows, cols)) * 4
        ly = sps.log_softmax(o, axis=-1).astype(dtype)
        g = rng.standard_normal((rows, cols)).astype(dtype)
        got = fs.log_softmax_backward(g, ly)
        assert got.dtype == dtype and got.shape == g.shape
        assert_within(
            got, ref_log_softmax_backward(g, ly), bound_log_softmax(g, ly, dtype), f"cols={cols}"
        )


def test_softmax_backward_is_jacobian_transpose_product(rng):
    """J = diag(y) - y yᵀ, so Jᵀg must match the kernel for every row."""
    for cols in (1, 5, 19, 40):
        o = rng.standard_normal(cols) * 2
        y = sps.softmax(o)
        g = rng.standard_normal(cols)
        J = np.diag(y) - np.outer(y, y)
        np.testing.assert_allclose(fs.softmax_backward(g, y), J.T @ g, rtol=1e-12, atol=1e-15)


def _fd_vjp(f, o, g, h=1e-6):
    """Σ_i g_i ∂f_i/∂o_j by central differences of the float64 function f."""
    grad = np.empty_like(o)
    for j in range(o.size):
        e = np.zeros_like(o)
        e.flat[j] = h
        grad.flat[j] = np.sum(g * (f(o + e) - f(o - e))) / (2 * h)
    return grad


@pytest.mark.parametrize("cols", [1, 2, 7, 17, 40])
def test_softmax_backward_finite_differences(rng, cols):
    o = rng.standard_normal((2, cols)) * 2
    g = rng.standard_normal((2, cols))
    fd = _fd_vjp(lambda v: sps.softmax(v, axis=-1), o, g)
    got = fs.softmax_backward(g, sps.softmax(o, axis=-1))
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-8)
    # and float32 inputs (the same derivative to float32 accuracy)
    got32 = fs.softmax_backward(g.astype(np.float32), sps.softmax(o, axis=-1).astype(np.float32))
    np.testing.assert_allclose(got32, fd, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cols", [1, 2, 7, 17, 40])
def test_log_softmax_backward_finite_differences(rng, cols):
    o = rng.standard_normal((3, cols)) * 2
    g = rng.standard_normal((3, cols))
    fd = _fd_vjp(lambda v: sps.log_softmax(v, axis=-1), o, g)
    got = fs.log_softmax_backward(g, sps.log_softmax(o, axis=-1))
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-8)


def test_log_softmax_backward_of_nll_is_cross_entropy_grad(rng):
    """With g = -onehot(t) the VJP of log_softmax is softmax(o) - onehot(t)."""
    o = rng.standard_normal((9, 13))
    t = rng.integers(0, 13, size=9)
    g = -np.eye(13)[t]
    got = fs.log_softmax_backward(g, fs.log_softmax(o))
    np.testing.assert_allclose(got, sps.softmax(o, axis=-1) - np.eye(13)[t], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        got / 9, fs.cross_entropy_grad(o, t), rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_rows_split_across_threads(rng, dtype, restore_threads):
    """Rows of >= 2**17 entries take the segmented path; the result must not depend on threads."""
    cols = (1 << 17) + 5
    y, _ = probs(rng, (2, cols), dtype)
    g = rng.standard_normal((2, cols)).astype(dtype)
    results = []
    for n in (1, 2, 3):
        fs.set_num_threads(n)
        got = fs.softmax_backward(g, y)
        assert_within(got, ref_softmax_backward(g, y), bound_softmax(g, y, dtype), f"threads={n}")
        got_l = fs.log_softmax_backward(g, np.log(y))
        assert_within(
            got_l,
            ref_log_softmax_backward(g, np.log(y)),
            bound_log_softmax(g, np.log(y), dtype),
            f"log, threads={n}",
        )
        results.append((got, got_l))
    for got, got_l in results[1:]:
        np.testing.assert_array_equal(got, results[0][0])
        np.testing.assert_array_equal(got_l, results[0][1])


def test_many_rows_parallel(rng, restore_threads):
    y, _ = probs(rng, (700, 301), np.float32)
    g = rng.standard_normal((700, 301)).astype(np.float32)
    fs.set_num_threads(1)
    one = fs.softmax_backward(g, y)
    fs.set_num_threads(2)
    two = fs.softmax_backward(g, y)
    np.testing.assert_array_equal(one, two)
    assert_within(two, ref_softmax_backward(g, y), bound_softmax(g, y, np.float32))


# ----------------------------------------------------------------------------------------------
# special values


def test_special_values():
    # y holding exact zeros (softmax of -inf logits): their gradient is exactly 0
    y = np.array([[0.25, 0.0, 0.75]])
    g = np.array([[1.0, 5.0, -2.0]])
    got = fs.softmax_backward(g, y)
    np.testing.assert_allclose(got, ref_softmax_backward(g, y), rtol=1e-15)
    assert got[0, 1] == 0.0
    # log_y = -inf: exp(-inf) = 0, so the output is g there
    with np.errstate(divide="ignore"):
        ly = np.log(y)
    got = fs.log_softmax_backward(g, ly)
    np.testing.assert_allclose(got, ref_log_softmax_backward(g, ly), rtol=1e-15)
    assert got[0, 1] == 5.0
    # NaN in a row makes that row NaN, other rows untouched
    y2 = np.array([[0.5, np.nan], [0.5, 0.5]])
    g2 = np.array([[1.0, 2.0], [1.0, 2.0]])
    got = fs.softmax_backward(g2, y2)
    assert np.isnan(got[0]).all()
    np.testing.assert_allclose(got[1], [-0.25, 0.25])
    got = fs.log_softmax_backward(np.array([[np.nan, 1.0], [1.0, 2.0]]), np.log(np.full((2, 2), 0.5)))
    assert np.isnan(got[0]).all() and np.isfinite(got[1]).all()


def test_empty_and_zero_d():
    for shape in [(0, 5), (4, 0), (0,)]:
        g = np.zeros(shape)
        assert fs.softmax_backward(g, g).shape == shape
        assert fs.log_softmax_backward(g, g).shape == shape
    # 0-d: one row of one element: y(g - g·y)
    got = fs.softmax_backward(np.float64(2.0), np.float64(1.0))
    assert np.shape(got) == () and float(got) == 0.0
    got = fs.log_softmax_backward(np.float64(2.0), np.float64(0.0))
    assert np.shape(got) == () and float(got) == 0.0


# ----------------------------------------------------------------------------------------------
# layouts


def _layouts(rng, dtype):
    o = rng.standard_normal((6, 10, 12)) * 2
    for axis in (0, 1, 2, -1, -2):
        y = sps.softmax(o, axis=axis).astype(dtype)
        g = rng.standard_normal(o.shape).astype(dtype)
        yield f"C axis={axis}", g, y, axis
        yield f"F axis={axis}", np.asfortranarray(g), np.asfortranarray(y), axis
        yield f"mixed axis={axis}", np.asfortranarray(g), y, axis
    y2 = sps.softmax(o[:, ::2, ::-3], axis=-1).astype(dtype)
    g2 = rng.standard_normal((6, 20, 12)).astype(dtype)[:, ::4, ::-3]
    yield "strided/negative", g2, y2, -1
    y3 = sps.softmax(o[0].T, axis=-1).astype(dtype)
    yield "transposed", rng.standard_normal((10, 12)).astype(dtype).T, y3, -1


@pytest.mark.parametrize("dtype", DTYPES)
def test_layouts(rng, dtype):
    for name, g, y, axis in _layouts(rng, dtype):
        got = fs.softmax_backward(g, y, axis=axis)
        assert got.shape == g.shape and got.dtype == dtype
        assert_within(
            got, ref_softmax_backward(g, y, axis), bound_softmax(g, y, dtype, axis), name
        )
        ly = np.log(y)
        got = fs.log_softmax_backward(g, ly, axis)
        assert_within(
            got,
            ref_log_softmax_backward(g, ly, axis),
            bound_log_softmax(g, ly, dtype, axis),
            "log " + name,
        )


def test_array_likes_and_promotion(rng):
    y = sps.softmax(rng.standard_normal((3, 4)), axis=-1)
    g = rng.standard_normal((3, 4))
    got = fs.softmax_backward(g.tolist(), y.tolist())
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref_softmax_backward(g, y), rtol=1e-13, atol=1e-15)
    # float32 with float64 promotes to float64; integers become float64
    got = fs.softmax_backward(g.astype(np.float32), y)
    assert got.dtype == np.float64
    got = fs.softmax_backward(np.ones((3, 4), dtype=np.int32), y.astype(np.float32))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, 0.0, atol=1e-6)  # y·(1 - Σy) with Σy = 1


# ----------------------------------------------------------------------------------------------
# out=


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("log", [False, True])
def test_out_and_in_place(rng, dtype, log):
    f = fs.log_softmax_backward if log else fs.softmax_backward
    ref = ref_log_softmax_backward if log else ref_softmax_backward
    o = rng.standard_normal((5, 37)) * 2
    y0 = (sps.log_softmax(o, axis=-1) if log else sps.softmax(o, axis=-1)).astype(dtype)
    g0 = rng.standard_normal((5, 37)).astype(dtype)
    expected = f(g0, y0)
    np.testing.assert_allclose(expected, ref(g0, y0), rtol=1e-4 if dtype == np.float32 else 1e-12,
                               atol=1e-6 if dtype == np.float32 else 1e-15)

    out = np.full_like(g0, 7.0)
    assert f(g0, y0, out=out) is out
    np.testing.assert_array_equal(out, expected)

    g = g0.copy()
    assert f(g, y0, out=g) is g  # into grad_output
    np.testing.assert_array_equal(g, expected)

    y = y0.copy()
    assert f(g0, y, out=y) is y  # into y
    np.testing.assert_array_equal(y, expected)

    # g, y and out all one array
    b = y0.copy()
    np.testing.assert_array_equal(f(b, b, out=b), f(y0, y0))

    # out in another layout, and a strided view of a bigger array
    out_f = np.asfortranarray(np.zeros_like(g0))
    f(g0, y0, out=out_f)
    np.testing.assert_array_equal(out_f, expected)
    big = np.zeros((5, 74), dtype=dtype)
    f(g0, y0, out=big[:, ::2])
    np.testing.assert_array_equal(big[:, ::2], expected)
    assert (big[:, 1::2] == 0).all()

    # in place on a non-contiguous view, along axis 0
    gt = g0.T.copy().T  # F-ordered copy
    f(gt, y0, axis=-1, out=gt)
    np.testing.assert_array_equal(gt, expected)
    yT = y0.T.copy()
    gT = g0.T.copy()
    f(gT, yT, axis=0, out=gT)
    np.testing.assert_array_equal(gT, expected.T)

    # out overlapping an input without being it: computed through a temporary, still right
    buf = np.concatenate([g0, g0], axis=1)
    view_g = buf[:, :37]
    out_shift = buf[:, 1:38]
    f(view_g, y0, out=out_shift)
    np.testing.assert_array_equal(out_shift, expected)


def test_out_half(rng):
    y = sps.softmax(rng.standard_normal((4, 9)), axis=-1).astype(np.float16)
    g = rng.standard_normal((4, 9)).astype(np.float16)
    expected = fs.softmax_backward(g, y)
    assert expected.dtype == np.float16
    out = np.empty_like(g)
    fs.softmax_backward(g, y, out=out)
    np.testing.assert_array_equal(out, expected)
    fs.softmax_backward(g, y, out=g)
    np.testing.assert_array_equal(g, expected)


# ----------------------------------------------------------------------------------------------
# errors: the right exception, nothing written


@pytest.mark.parametrize("f", [fs.softmax_backward, fs.log_softmax_backward])
def test_errors_write_nothing(rng, f):
    g = rng.standard_normal((3, 5))
    y = sps.softmax(rng.standard_normal((3, 5)), axis=-1)
    g_copy, y_copy = g.copy(), y.copy()
    out = np.full((3, 5), 3.0)
    cases = [
        (ValueError, lambda: f(g, y[:, :4], out=out)),  # shape mismatch
        (ValueError, lambda: f(g, y, out=np.empty((3, 4)))),  # out shape
        (ValueError, lambda: f(g, y, out=np.empty((3, 5), np.float32))),  # out dtype
        (ValueError, lambda: f(g, y, axis=2, out=out)),  # axis out of range
        (TypeError, lambda: f(g, y, axis=(0, 1), out=out)),  # axis must be an int
        (TypeError, lambda: f(g.astype(complex), y, out=out)),
        (TypeError, lambda: f(g, np.array([["a"] * 5] * 3), out=out)),
        (ValueError, lambda: f(g, y, out=[[0.0] * 5] * 3)),
    ]
    for exc, call in cases:
        with pytest.raises(exc):
            call()
        np.testing.assert_array_equal(out, 3.0)
        np.testing.assert_array_equal(g, g_copy)
        np.testing.assert_array_equal(y, y_copy)
    ro = np.zeros((3, 5))
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        f(g, y, out=ro)
    assert (ro == 0).all()
