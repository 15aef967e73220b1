"""Special values (docs/api.md §3): NaN rows, all -inf rows, +inf, -inf entries, huge finite values."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sps

import fastsoftmax as fs
from reference import (
    assert_log_close,
    assert_prob_close,
    ref_log_softmax,
    ref_logsumexp,
    ref_softmax,
    ref_softmin,
)

DTYPES = [np.float32, np.float64]
HUGE = {np.float32: 1e30, np.float64: 1e300}


def special_rows(rng, cols, dtype):
    """A batch whose rows each hold one kind of special value at a position in the body or the tail."""
    x = (rng.standard_normal((0, cols)) * 2).astype(dtype)
    rows = []
    positions = sorted({0, cols // 2, cols - 1})
    for p in positions:
        r = (rng.standard_normal(cols) * 2).astype(dtype)
        r[p] = np.nan
        rows.append(r)
        r = (rng.standard_normal(cols) * 2).astype(dtype)
        r[p] = np.inf
        rows.append(r)
        if cols > 1:
            r = (rng.standard_normal(cols) * 2).astype(dtype)
            r[p] = -np.inf
            rows.append(r)
        r = (rng.standard_normal(cols) * 2).astype(dtype)
        r[p] = HUGE[dtype]
        rows.append(r)
        r = (rng.standard_normal(cols) * 2).astype(dtype)
        r[p] = -HUGE[dtype]
        rows.append(r)
    rows.append(np.full(cols, -np.inf, dtype))
    rows.append(np.full(cols, np.inf, dtype))
    rows.append(np.full(cols, np.nan, dtype))
    rows.append(np.full(cols, HUGE[dtype], dtype))
    rows.append(np.full(cols, -HUGE[dtype], dtype))
    r = np.full(cols, -np.inf, dtype)
    r[-1] = 1.0
    rows.append(r)  # one finite entry at the end of a -inf row
    r = (rng.standard_normal(cols) * 2).astype(dtype)
    r[::3] = -np.inf
    r[1::7] = HUGE[dtype]
    rows.append(r)
    mixed = (rng.standard_normal(cols) * 2).astype(dtype)
    mixed[0] = np.inf
    mixed[-1] = np.nan
    rows.append(mixed)  # NaN wins over +inf
    rows.append((rng.standard_normal(cols) * 2).astype(dtype))  # a plain row stays right
    return np.vstack([x] + [r[None] for r in rows])


FUNCS = [
    ("softmax", fs.softmax, ref_softmax, assert_prob_close),
    ("log_softmax", fs.log_softmax, ref_log_softmax, assert_log_close),
    ("softmin", fs.softmin, ref_softmin, assert_prob_close),
    ("logsumexp", fs.logsumexp, ref_logsumexp, assert_log_close),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cols", [1, 3, 17, 1000, 4097])
@pytest.mark.parametrize("name,func,ref,check", FUNCS, ids=[f[0] for f in FUNCS])
def test_special_values(each_backend, rng, name, func, ref, check, cols, dtype):
    x = special_rows(rng, cols, dtype)
    with np.errstate(all="ignore"):
        y = func(x)
    check(np.asarray(y), ref(x), dtype, f"{name} cols={cols}")
    # along axis 0 (the transposed problem) the same
    with np.errstate(all="ignore"):
        y0 = func(np.ascontiguousarray(x.T), axis=0)
    check(np.asarray(y0), ref(x.T, axis=0), dtype, f"{name} cols={cols} axis=0")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_rules_spelled_out(each_backend, dtype):
    """The rules of docs/api.md §3, written out without the reference."""
    h = HUGE[dtype]
    x = np.array([
        [1.0, np.nan, 2.0, 3.0],
        [-np.inf, -np.inf, -np.inf, -np.inf],
        [1.0, np.inf, 2.0, 3.0],
        [0.0, -np.inf, 0.0, -np.inf],
        [h, 0.0, -h, h],
        [-h, -h, -h, -h],
    ], dtype=dtype)
    sm, lsm, lse = fs.softmax(x), fs.log_softmax(x), fs.logsumexp(x)
    assert np.isnan(sm[0]).all() and np.isnan(lsm[0]).all() and np.isnan(lse[0])
    assert np.isnan(sm[1]).all() and np.isnan(lsm[1]).all() and lse[1] == -np.inf
    assert np.isnan(sm[2]).all() and np.isnan(lsm[2]).all() and lse[2] == np.inf
    np.testing.assert_array_equal(sm[3], [0.5, 0.0, 0.5, 0.0])
    assert lsm[3][1] == -np.inf and lsm[3][3] == -np.inf
    np.testing.assert_allclose(lsm[3][[0, 2]], -np.log(2), rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_allclose(lse[3], np.log(2), rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_array_equal(sm[4], [0.5, 0.0, 0.0, 0.5])
    np.testing.assert_allclose(lsm[4][[0, 3]], -np.log(2), rtol=4 * np.finfo(dtype).eps)
    assert np.isfinite(lse[4]) and lse[4] == dtype(h)
    np.testing.assert_allclose(sm[5], 0.25, rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_allclose(lsm[5], -np.log(4), rtol=4 * np.finfo(dtype).eps)
    assert np.isfinite(lse[5])
    np.testing.assert_allclose(lse[5], -h, rtol=4 * np.finfo(dtype).eps)
    sm_min = fs.softmin(x)
    assert np.isnan(sm_min[1]).all()  # -(-inf) = +inf in every entry
    assert np.isnan(sm_min[3]).all()  # a -inf entry becomes +inf
    np.testing.assert_array_equal(sm_min[4], [0.0, 0.0, 1.0, 0.0])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_huge_values_against_scipy(rng, dtype):
    h = HUGE[dtype]
    x = rng.uniform(-1, 1, size=(5, 37)) * h
    x = x.astype(dtype)
    with np.errstate(all="ignore"):
        assert_prob_close(fs.softmax(x), sps.softmax(x.astype(np.float64), axis=-1), dtype, "huge softmax")
        assert_log_close(fs.log_softmax(x), ref_log_softmax(x), dtype, "huge log_softmax")
        assert_log_close(fs.logsumexp(x), ref_logsumexp(x), dtype, "huge logsumexp")
    assert np.isfinite(fs.logsumexp(x)).all()
    # near the top of the range: max + log(n) must not overflow either
    x = np.full((2, 1000), np.finfo(dtype).max / 2, dtype)
    r = fs.logsumexp(x)
    assert np.isfinite(r).all()
    s = fs.softmax(x)
    np.testing.assert_allclose(s, 1e-3, rtol=1e-5)


def test_special_values_logsumexp_b(rng):
    x = rng.standard_normal((3, 9))
    b = np.ones((3, 9))
    x[0, 4] = np.nan
    x[1, 2] = np.inf
    x[2, :] = -np.inf
    with np.errstate(all="ignore"):
        r = fs.logsumexp(x, b=b)
        e = sps.logsumexp(x, axis=-1, b=b)
    assert np.isnan(r[0]) and np.isnan(e[0])
    assert r[1] == np.inf == e[1]
    assert r[2] == -np.inf == e[2]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_special_values_tuple_and_none(rng, dtype):
    x = (rng.standard_normal((4, 5, 6)) * 2).astype(dtype)
    x[1, 2, 3] = np.nan
    x[2, :, :] = -np.inf
    x[3, 0, 0] = np.inf
    for name, func, ref, check in FUNCS:
        with np.errstate(all="ignore"):
            for axis in [(1, 2), None, (0, 2)]:
                check(np.asarray(func(x, axis=axis)), ref(x, axis=axis), dtype, f"{name} axis={axis}")
