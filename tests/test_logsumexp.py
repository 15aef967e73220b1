"""logsumexp: values, b=, keepdims, return_sign, out=, return types, accuracy (docs/api.md §1, §2, §4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special as sps

import fastsoftmax as fs
from reference import assert_log_close, ref_logsumexp

COLS = [1, 3, 17, 1000, 4097, 65537]
DTYPES = [np.float32, np.float64]


def make_logits(rng, shape, dtype):
    spread = rng.choice([0.3, 1.0, 5.0], size=shape[:-1] + (1,))
    offset = rng.uniform(-30, 30, size=shape[:-1] + (1,))
    return (rng.standard_normal(shape) * spread + offset).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cols", COLS)
def test_logsumexp_matches_reference(each_backend, rng, cols, dtype):
    rows = 2 if cols >= 65537 else 5
    x = make_logits(rng, (rows, cols), dtype)
    x0 = x.copy()
    r = fs.logsumexp(x)
    assert isinstance(r, np.ndarray) and r.dtype == dtype and r.shape == (rows,)
    assert_log_close(r, ref_logsumexp(x), dtype, f"logsumexp cols={cols}")
    assert_log_close(r, sps.logsumexp(x.astype(np.float64), axis=-1), dtype, "logsumexp vs scipy")
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_full_reduction_returns_numpy_scalar(rng, dtype):
    x = make_logits(rng, (3, 7, 5), dtype)
    r = fs.logsumexp(x, axis=None)
    assert type(r) is np.dtype(dtype).type, type(r)
    assert_log_close(np.asarray(r), ref_logsumexp(x, axis=None), dtype, "axis=None")
    # a 1-D input reduced along its only axis is a 0-d result of the same dtype
    v = make_logits(rng, (1000,), dtype)
    r = fs.logsumexp(v)
    assert np.ndim(r) == 0 and np.asarray(r).dtype == dtype
    assert_log_close(np.asarray(r), ref_logsumexp(v), dtype, "1-D")


@pytest.mark.parametrize("dtype", [np.int16, np.int64, np.uint8, np.bool_])
def test_integer_and_bool_become_float64(dtype):
    x = np.array([[0, 1, 1, 0], [1, 1, 1, 1]]).astype(dtype)
    r = fs.logsumexp(x)
    assert r.dtype == np.float64
    assert_log_close(r, ref_logsumexp(x.astype(np.float64)), np.float64, str(np.dtype(dtype)))
    s = fs.logsumexp(x, axis=None)
    assert type(s) is np.float64


@pytest.mark.parametrize("bad", [np.ones((2, 3), np.complex128), np.ones((2, 3), object)])
def test_complex_object_type_error(bad):
    with pytest.raises(TypeError):
        fs.logsumexp(bad)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_keepdims(rng, dtype):
    x = make_logits(rng, (4, 6, 9), dtype)
    for axis in [0, 1, -1, (0, 2), None]:
        r = fs.logsumexp(x, axis=axis, keepdims=True)
        e = ref_logsumexp(x, axis=axis, keepdims=True)
        assert r.shape == e.shape == sps.logsumexp(x, axis=axis, keepdims=True).shape
        assert r.dtype == dtype
        assert_log_close(r, e, dtype, f"keepdims axis={axis}")


# --- b= --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cols", [1, 17, 1000, 4097])
def test_b_positive(each_backend, rng, cols, dtype):
    x = make_logits(rng, (4, cols), dtype)
    b = rng.uniform(0.1, 3.0, size=(4, cols)).astype(dtype)
    r = fs.logsumexp(x, b=b)
    assert r.dtype == dtype
    assert_log_close(r, ref_logsumexp(x, b=b), dtype, "b positive")
    assert_log_close(r, sps.logsumexp(x.astype(np.float64), axis=-1, b=b.astype(np.float64)), dtype, "b vs scipy")


def test_b_broadcasts(rng):
    x = make_logits(rng, (5, 33), np.float64)
    for b in [rng.uniform(0.5, 2, size=33), rng.uniform(0.5, 2, size=(5, 1)), 2.5]:
        r = fs.logsumexp(x, b=b)
        assert r.shape == (5,)
        assert_log_close(r, sps.logsumexp(x, axis=-1, b=b), np.float64, f"b shape {np.shape(b)}")
        assert_log_close(r, ref_logsumexp(x, b=b), np.float64, f"b shape {np.shape(b)}")


def test_b_zero_masks_elements(rng):
    x = make_logits(rng, (3, 50), np.float64)
    b = (rng.random((3, 50)) < 0.5).astype(np.float64)
    b[:, 0] = 1.0
    x[b == 0] = 1e300  # masked entries must not matter, even huge ones
    r = fs.logsumexp(x, b=b)
    e = np.array([sps.logsumexp(x[i][b[i] != 0]) for i in range(3)])
    assert_log_close(r, e, np.float64, "b == 0 masks")
    # a row masked completely is log(0) = -inf
    b[1] = 0.0
    r = fs.logsumexp(x, b=b)
    assert r[1] == -np.inf
    assert_log_close(r[[0, 2]], e[[0, 2]], np.float64, "other rows")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_b_negative_and_return_sign(rng, dtype):
    x = make_logits(rng, (6, 40), dtype)
    b = rng.uniform(-1.0, 1.0, size=(6, 40)).astype(dtype)
    # make row 0 clearly positive and row 1 clearly negative
    b[0] = np.abs(b[0]) + 0.1
    b[1] = -np.abs(b[1]) - 0.1
    r, s = fs.logsumexp(x, b=b, return_sign=True)
    er, es = ref_logsumexp(x, b=b, return_sign=True)
    sr, ss = sps.logsumexp(x.astype(np.float64), axis=-1, b=b.astype(np.float64), return_sign=True)
    np.testing.assert_array_equal(es, ss)  # the reference agrees with SciPy
    assert r.shape == s.shape == (6,)
    assert r.dtype == dtype
    # the sign and value of a sum that nearly cancels are ill-conditioned: check rows away from it
    x64, b64 = x.astype(np.float64), b.astype(np.float64)
    terms = b64 * np.exp(x64 - x64.max(-1, keepdims=True))
    well = np.abs(terms.sum(-1)) >= 0.05 * np.abs(terms).sum(-1)
    assert well[:2].all()
    np.testing.assert_array_equal(np.asarray(s)[well], es[well])
    assert_log_close(r[well], er[well], dtype, "return_sign values", atol=20 * np.finfo(dtype).eps * 20)
    assert_log_close(r[:2], er[:2], dtype, "return_sign value (one-signed rows)")
    # without return_sign a negative total is NaN (SciPy's rule)
    r2 = fs.logsumexp(x, b=b)
    assert np.isnan(r2[1])
    assert np.isnan(r2[es < 0]).all()
    assert_log_close(r2[0], er[0], dtype, "b positive row without return_sign")


def test_return_sign_without_b(rng):
    x = make_logits(rng, (3, 11), np.float64)
    r, s = fs.logsumexp(x, return_sign=True)
    np.testing.assert_array_equal(s, np.ones(3))
    assert_log_close(r, ref_logsumexp(x), np.float64, "return_sign no b")


# --- out= ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_out(each_backend, rng, dtype):
    x = make_logits(rng, (7, 333), dtype)
    out = np.full(7, 5.0, dtype)
    r = fs.logsumexp(x, out=out)
    assert r is out
    assert_log_close(out, ref_logsumexp(x), dtype, "out=")
    out2 = np.full((7, 1), 5.0, dtype)
    r = fs.logsumexp(x, keepdims=True, out=out2)
    assert r is out2
    assert_log_close(out2, ref_logsumexp(x, keepdims=True), dtype, "out= keepdims")
    out3 = np.full(333, 5.0, dtype)
    r = fs.logsumexp(x, axis=0, out=out3)
    assert r is out3
    assert_log_close(out3, ref_logsumexp(x, axis=0), dtype, "out= axis=0")


# --- accuracy (docs/api.md §4) -------------------------------------------------------------------

def test_log1p_split_f64(each_backend):
    expected = math.log1p(math.exp(-40.0))
    r = fs.logsumexp(np.array([0.0, -40.0]))
    assert abs(float(r) - expected) <= 1e-14 * expected, (float(r), expected)
    r = fs.logsumexp(np.array([[-40.0, 0.0], [0.0, -40.0]]))
    np.testing.assert_allclose(r, expected, rtol=1e-14, atol=0)
    # the same at any offset: logsumexp([a, a - 40]) - a
    r = fs.logsumexp(np.array([[-40.0] * 3 + [0.0] + [-40.0] * 20]))
    np.testing.assert_allclose(r, math.log1p(23 * math.exp(-40.0)), rtol=1e-14, atol=0)


def test_log1p_split_f32(each_backend):
    r = fs.logsumexp(np.array([0.0, -20.0], np.float32))
    assert r.dtype == np.float32
    expected = math.log1p(math.exp(-20.0))
    assert abs(float(r) - expected) <= 2e-6


def test_long_rows_accuracy(each_backend, rng):
    x32 = (rng.standard_normal((2, 262_144)) * 3).astype(np.float32)
    assert_log_close(fs.logsumexp(x32), ref_logsumexp(x32), np.float32, "f32 262144")
    x64 = rng.standard_normal((2, 262_144)) * 3
    assert_log_close(fs.logsumexp(x64), ref_logsumexp(x64), np.float64, "f64 262144")
    assert_log_close(np.asarray(fs.logsumexp(x32, axis=None)), ref_logsumexp(x32, axis=None), np.float32, "None")
