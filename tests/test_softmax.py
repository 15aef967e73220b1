"""softmax / log_softmax / softmin on C-contiguous input: values, dtypes, out=,
accuracy (docs/api.md §1, §2, §4)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sps

import fastsoftmax as fs
from reference import (
    assert_log_close,
    assert_prob_close,
    ref_log_softmax,
    ref_softmax,
    ref_softmin,
)

COLS = [1, 3, 17, 1000, 4097, 65537]
DTYPES = [np.float32, np.float64]


def make_logits(rng, rows, cols, dtype, scale=3.0):
    """Rows with different spreads and offsets (a large offset checks the max is subtracted)."""
    spread = rng.choice([0.3, 1.0, scale], size=(rows, 1))
    offset = rng.uniform(-30, 30, size=(rows, 1))
    return (rng.standard_normal((rows, cols)) * spread + offset).astype(dtype)


def rows_for(cols):
    return 2 if cols >= 65537 else (3 if cols >= 4097 else 7)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cols", COLS)
def test_softmax_matches_reference(each_backend, rng, cols, dtype):
    x = make_logits(rng, rows_for(cols), cols, dtype)
    x0 = x.copy()
    y = fs.softmax(x)
    assert isinstance(y, np.ndarray) and y.dtype == dtype and y.shape == x.shape
    assert_prob_close(y, ref_softmax(x), dtype, f"softmax cols={cols}")
    np.testing.assert_array_equal(x, x0)  # input untouched
    # rows sum to one
    np.testing.assert_allclose(y.astype(np.float64).sum(-1), 1.0, rtol=0, atol=cols * 4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cols", COLS)
def test_log_softmax_matches_reference(each_backend, rng, cols, dtype):
    x = make_logits(rng, rows_for(cols), cols, dtype)
    x0 = x.copy()
    y = fs.log_softmax(x)
    assert isinstance(y, np.ndarray) and y.dtype == dtype and y.shape == x.shape
    assert_log_close(y, ref_log_softmax(x), dtype, f"log_softmax cols={cols}")
    np.testing.assert_array_equal(x, x0)
    assert np.all(y <= 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cols", [1, 17, 4097])
def test_softmin_matches_reference(each_backend, rng, cols, dtype):
    x = make_logits(rng, 5, cols, dtype)
    y = fs.softmin(x)
    assert y.dtype == dtype and y.shape == x.shape
    assert_prob_close(y, ref_softmin(x), dtype, f"softmin cols={cols}")
    assert_prob_close(y, sps.softmax(-x.astype(np.float64), axis=-1), dtype, "softmin vs scipy")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cols", [3, 1000, 4097])
def test_against_scipy(rng, cols, dtype):
    x = make_logits(rng, 4, cols, dtype)
    x64 = x.astype(np.float64)
    assert_prob_close(fs.softmax(x), sps.softmax(x64, axis=-1), dtype, "softmax vs scipy")
    assert_log_close(fs.log_softmax(x), sps.log_softmax(x64, axis=-1), dtype, "log_softmax vs scipy")


@pytest.mark.parametrize("func,ref,kind", [
    (fs.softmax, ref_softmax, "prob"),
    (fs.log_softmax, ref_log_softmax, "log"),
    (fs.softmin, ref_softmin, "prob"),
])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_1d_and_3d(rng, func, ref, kind, dtype):
    check = assert_prob_close if kind == "prob" else assert_log_close
    for shape in [(1,), (33,), (4, 5, 129), (2, 1, 1)]:
        x = (rng.standard_normal(shape) * 4).astype(dtype)
        y = func(x)
        assert y.shape == shape and y.dtype == dtype
        check(y, ref(x), dtype, f"{func.__name__} shape={shape}")


def test_single_column_rows(rng):
    x = rng.standard_normal((9, 1))
    np.testing.assert_array_equal(fs.softmax(x), np.ones((9, 1)))
    np.testing.assert_array_equal(fs.log_softmax(x), np.zeros((9, 1)))


def test_shift_invariance(rng):
    x = rng.standard_normal((4, 100))
    a = fs.softmax(x)
    b = fs.softmax(x + 1000.0)
    assert_prob_close(b, a, np.float64, "softmax(x + 1000) vs softmax(x)", rel=1e-11)


# --- out= ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("func,ref,kind", [
    (fs.softmax, ref_softmax, "prob"),
    (fs.log_softmax, ref_log_softmax, "log"),
    (fs.softmin, ref_softmin, "prob"),
])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_out_and_in_place(each_backend, rng, func, ref, kind, dtype):
    check = assert_prob_close if kind == "prob" else assert_log_close
    x = make_logits(rng, 6, 1001, dtype)
    expected = ref(x)
    out = np.full_like(x, 7.0)
    r = func(x, out=out)
    assert r is out
    check(out, expected, dtype, f"{func.__name__} out=")
    # in place
    xi = x.copy()
    r = func(xi, out=xi)
    assert r is xi
    check(xi, expected, dtype, f"{func.__name__} out=x")
    # in place and out= give the same bits as the plain call
    np.testing.assert_array_equal(xi, func(x))


# --- dtypes and array-likes --------------------------------------------------------------------------

@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax, fs.softmin])
@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.bool_])
def test_integer_and_bool_become_float64(func, dtype):
    x = np.array([[0, 1, 2, 3], [1, 1, 0, 0]]).astype(dtype)
    y = func(x)
    assert y.dtype == np.float64
    ref = {"softmax": ref_softmax, "log_softmax": ref_log_softmax, "softmin": ref_softmin}[func.__name__]
    assert_log_close(y, ref(x.astype(np.float64)), np.float64, f"{func.__name__} {np.dtype(dtype)}")


@pytest.mark.parametrize("func,ref", [(fs.softmax, ref_softmax), (fs.log_softmax, ref_log_softmax)])
def test_array_likes(func, ref):
    lst = [[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]]
    y = func(lst)
    assert isinstance(y, np.ndarray) and y.dtype == np.float64
    assert_log_close(y, ref(np.array(lst)), np.float64, "list input")
    y = func((1, 2, 3))
    assert y.dtype == np.float64
    assert_log_close(y, ref(np.array([1.0, 2.0, 3.0])), np.float64, "tuple of ints")


@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax, fs.softmin])
@pytest.mark.parametrize("bad", [
    np.array([[1 + 1j, 2]]),
    np.array([[1.0, 2.0]], dtype=object),
    np.array([[1.0, 2.0]], dtype=np.complex64),
])
def test_complex_object_raise_type_error(func, bad):
    with pytest.raises(TypeError):
        func(bad)


# --- accuracy (docs/api.md §4) ------------------------------------------------------------------------

def test_f32_accuracy_long_rows(each_backend, rng):
    """f32 softmax rel err <= 2e-6 (outputs >= 1e-30) and log_softmax abs err on rows of 262,144."""
    n = 262_144
    x = (rng.standard_normal((2, n)) * np.array([[1.0], [3.0]])).astype(np.float32)
    assert_prob_close(fs.softmax(x), ref_softmax(x), np.float32, "f32 softmax 262144")
    assert_log_close(fs.log_softmax(x), ref_log_softmax(x), np.float32, "f32 log_softmax 262144")


def test_f32_accuracy_wide_dynamic_range(each_backend, rng):
    """Rows whose outputs span 1e-30..1: every output >= 1e-30 within 2e-6 relative (docs/api.md §4)."""
    x = rng.uniform(-69.0, 0.0, size=(3, 20_000)) + rng.uniform(-40, 40, size=(3, 1))
    x[:, 0] = x.max(axis=1) + 1.0  # a clear maximum
    x = x.astype(np.float32)
    assert_prob_close(fs.softmax(x), ref_softmax(x), np.float32, "f32 softmax wide range")
    assert_log_close(fs.log_softmax(x), ref_log_softmax(x), np.float32, "f32 log_softmax wide range")


def test_f64_accuracy_long_rows(each_backend, rng):
    x = rng.standard_normal((2, 262_144)) * 4.0
    assert_prob_close(fs.softmax(x), ref_softmax(x), np.float64, "f64 softmax 262144")
    assert_log_close(fs.log_softmax(x), ref_log_softmax(x), np.float64, "f64 log_softmax 262144")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_long_rows_in_place_and_axis0(each_backend, rng, dtype):
    """Rows long enough to be split across threads, in place and along axis 0."""
    x = (rng.standard_normal((2, 300_001)) * 3).astype(dtype)
    esm, elsm = ref_softmax(x), ref_log_softmax(x)
    xi = x.copy()
    assert fs.softmax(xi, out=xi) is xi
    assert_prob_close(xi, esm, dtype, "long rows softmax in place")
    xi = x.copy()
    assert fs.log_softmax(xi, out=xi) is xi
    assert_log_close(xi, elsm, dtype, "long rows log_softmax in place")
    xt = np.ascontiguousarray(x.T)
    assert_prob_close(fs.softmax(xt, axis=0), esm.T, dtype, "long columns softmax axis=0")
    xt2 = xt.copy()
    assert fs.log_softmax(xt2, axis=0, out=xt2) is xt2
    assert_log_close(xt2, elsm.T, dtype, "long columns log_softmax axis=0 in place")
