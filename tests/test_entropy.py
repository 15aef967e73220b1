"""entropy / kl_divergence (docs/api.md §1): SciPy's conventions (scipy.special.entr / rel_entr), no
normalisation, base, from_logits against float64 references, special values, layouts, dtypes, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special as sps
import scipy.stats

import fastsoftmax as fs

DTYPES = [np.float32, np.float64]
#: |err| <= TOL * max(1, |ref|) (docs/api.md §4, "losses")
TOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-14, np.dtype(np.float16): 2e-3}
COLS = [1, 2, 3, 7, 16, 17, 33, 100, 1000, 2049, 4099]


# ----------------------------------------------------------------------------------------------
# float64 references


def ref_entropy(p, axis=-1, base=None):
    h = np.sum(sps.entr(np.asarray(p, dtype=np.float64)), axis=axis)
    return h / math.log(base) if base else h


def ref_entropy_logits(o, axis=-1):
    o = np.asarray(o, dtype=np.float64)
    ls = sps.log_softmax(o, axis=axis)
    p = np.exp(ls)
    return -np.sum(np.where(p > 0, p * ls, 0.0), axis=axis)


def ref_kl(p, q, axis=-1, base=None):
    d = np.sum(sps.rel_entr(np.asarray(p, np.float64), np.asarray(q, np.float64)), axis=axis)
    return d / math.log(base) if base else d


def ref_kl_logits(o, r, axis=-1):
    lp = sps.log_softmax(np.asarray(o, np.float64), axis=axis)
    lq = sps.log_softmax(np.asarray(r, np.float64), axis=axis)
    p = np.exp(lp)
    with np.errstate(invalid="ignore"):
        return np.sum(np.where(p > 0, p * (lp - lq), 0.0), axis=axis)


def assert_close(actual, expected, dtype, ctx="", tol=None):
    tol = TOL[np.dtype(dtype)] if tol is None else tol
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{ctx}: shape {a.shape} != {e.shape}"
    assert np.array_equal(np.isnan(a), np.isnan(e)), f"{ctx}: NaN pattern {a} vs {e}"
    inf = np.isinf(e)
    assert np.array_equal(a[inf], e[inf]), f"{ctx}: infinities {a[inf]} vs {e[inf]}"
    fin = np.isfinite(e)
    assert np.isfinite(a[fin]).all(), f"{ctx}: non-finite where the reference is finite"
    if fin.any():
        err = np.abs(a[fin] - e[fin]) / np.maximum(1.0, np.abs(e[fin]))
        assert err.max() <= tol, f"{ctx}: error {err.max():.3g} > {tol:.3g}"


def random_probs(rng, shape, dtype, axis=-1, zeros=True):
    p = sps.softmax(rng.standard_normal(shape) * 3, axis=axis)
    if zeros:
        p[rng.random(shape) < 0.1] = 0.0
    return p.astype(dtype)


# ----------------------------------------------------------------------------------------------
# entropy


@pytest.mark.parametrize("dtype", DTYPES)
def test_entropy_probabilities(rng, dtype, each_backend):
    for cols in COLS:
        p = random_probs(rng, (int(rng.integers(1, 5)), cols), dtype)
        h = fs.entropy(p)
        assert h.dtype == dtype and h.shape == p.shape[:1]
        assert_close(h, ref_entropy(p), dtype, f"cols={cols}")
        assert_close(fs.entropy(p, base=2), ref_entropy(p, base=2), dtype, f"bits cols={cols}")
        assert_close(fs.entropy(p, base=10.0), ref_entropy(p, base=10), dtype)


def test_entropy_matches_scipy_stats_on_distributions(rng):
    p = sps.softmax(rng.standard_normal((4, 50)), axis=-1)
    np.testing.assert_allclose(fs.entropy(p), scipy.stats.entropy(p, axis=-1), rtol=1e-13)
    np.testing.assert_allclose(
        fs.entropy(p, base=2), scipy.stats.entropy(p, base=2, axis=-1), rtol=1e-13
    )
    p0 = p / p.sum(axis=0)
    np.testing.assert_allclose(fs.entropy(p0, axis=0), scipy.stats.entropy(p0, axis=0), rtol=1e-13)


def test_entropy_does_not_normalise():
    """Unlike scipy.stats.entropy, H = -Σ p log p exactly as given (docs/api.md §1)."""
    p = np.array([1.0, 1.0])
    assert float(fs.entropy(p)) == 0.0
    assert scipy.stats.entropy(p) == pytest.approx(math.log(2))
    p = np.array([0.2, 0.2])
    assert float(fs.entropy(p)) == pytest.approx(-2 * 0.2 * math.log(0.2), rel=1e-15)


def test_entropy_special_values():
    assert float(fs.entropy(np.array([0.0, 1.0]))) == 0.0  # 0 log 0 = 0
    assert float(fs.entropy(np.array([0.0, 0.0]))) == 0.0
    assert float(fs.entropy(np.array([0.5, -0.1]))) == -np.inf  # entr(<0) = -inf
    assert np.isnan(fs.entropy(np.array([0.5, np.nan])))
    assert float(fs.entropy(np.array([0.5, np.inf]))) == -np.inf
    got = fs.entropy(np.array([[0.5, 0.5], [np.nan, 1.0], [0.0, 0.0]]))
    assert got[0] == pytest.approx(math.log(2), rel=1e-15)
    assert np.isnan(got[1]) and got[2] == 0.0
    # empty axis: an empty sum
    np.testing.assert_array_equal(fs.entropy(np.zeros((3, 0))), np.zeros(3))
    np.testing.assert_array_equal(fs.entropy(np.zeros((3, 0)), from_logits=True), np.zeros(3))
    assert fs.entropy(np.zeros((0, 4))).shape == (0,)


@pytest.mark.parametrize("dtype", DTYPES)
def test_entropy_from_logits(rng, dtype, each_backend):
    for cols in COLS:
        o = (rng.standard_normal((int(rng.integers(1, 5)), cols)) * 4).astype(dtype)
        h = fs.entropy(o, from_logits=True)
        assert h.dtype == dtype
        assert_close(h, ref_entropy_logits(o), dtype, f"cols={cols}")
        assert_close(fs.entropy(o, from_logits=True, base=2), ref_entropy_logits(o) / math.log(2), dtype)
        # equals the entropy of the softmax
        assert_close(h, ref_entropy(sps.softmax(o.astype(np.float64), axis=-1)), dtype)


def test_entropy_from_logits_special_values():
    x = np.array(
        [
            [0.0, 0.0, -np.inf],  # -inf entries have probability 0: log 2
            [-np.inf, -np.inf, -np.inf],  # no softmax: NaN
            [0.0, np.inf, 1.0],  # no softmax: NaN
            [0.0, np.nan, 1.0],  # NaN
            [1e300, 1e300, -1e300],  # huge values do not overflow: log 2
            [5.0, 5.0, 5.0],  # uniform: log 3
        ]
    )
    h = fs.entropy(x, from_logits=True)
    np.testing.assert_allclose(h[[0, 4]], math.log(2), rtol=1e-15)
    assert np.isnan(h[1:4]).all()
    assert h[5] == pytest.approx(math.log(3), rel=1e-15)
    h32 = fs.entropy(np.array([[1e30, 1e30, -1e30]], np.float32), from_logits=True)
    assert h32[0] == pytest.approx(math.log(2), rel=1e-6)


def test_entropy_from_logits_dominant_entry_keeps_digits():
    """o = [0, -40]: H = log1p(e^-40) + 40 e^-40/(1 + e^-40) ≈ 1.8e-16; float64 keeps 1e-14."""
    t = math.exp(-40.0)
    expected = math.log1p(t) + 40.0 * t / (1.0 + t)
    got = float(fs.entropy(np.array([0.0, -40.0]), from_logits=True))
    assert got == pytest.approx(expected, rel=1e-14)


# ----------------------------------------------------------------------------------------------
# KL divergence


@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_probabilities(rng, dtype, each_backend):
    for cols in COLS:
        shape = (int(rng.integers(1, 5)), cols)
        p = random_probs(rng, shape, dtype)
        q = random_probs(rng, shape, dtype, zeros=False)
        d = fs.kl_divergence(p, q)
        assert d.dtype == dtype and d.shape == shape[:1]
        assert_close(d, ref_kl(p, q), dtype, f"cols={cols}")
        assert_close(fs.kl_divergence(p, q, base=2), ref_kl(p, q, base=2), dtype)
        np.testing.assert_array_equal(fs.kl_divergence(p, p), 0.0)


def test_kl_matches_scipy(rng):
    p = sps.softmax(rng.standard_normal((3, 40)), axis=-1)
    q = sps.softmax(rng.standard_normal((3, 40)), axis=-1)
    np.testing.assert_allclose(fs.kl_divergence(p, q), scipy.stats.entropy(p, q, axis=-1), rtol=1e-12)
    # KL = H(P, Q) - H(P)
    cross = -np.sum(p * np.log(q), axis=-1)
    np.testing.assert_allclose(fs.kl_divergence(p, q), cross - fs.entropy(p), rtol=1e-10)


def test_kl_special_values():
    p = np.array(
        [
            [0.5, 0.5, 0.0],  # p = 0, q > 0: 0
            [0.5, 0.5, 0.0],  # p = 0, q = 0: 0
            [0.5, 0.5, 0.0],  # p > 0, q = 0: inf
            [0.5, -0.5, 1.0],  # negative p: inf
            [0.5, 0.5, 0.0],  # NaN in q
            [np.nan, 0.5, 0.5],  # NaN in p
        ]
    )
    q = np.array(
        [
            [0.25, 0.25, 0.5],
            [0.5, 0.5, 0.0],
            [0.0, 1.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, np.nan, 0.0],
            [0.5, 0.5, 0.5],
        ]
    )
    d = fs.kl_divergence(p, q)
    expected = ref_kl(p, q)
    assert_close(d, expected, np.float64)
    assert d[0] == pytest.approx(math.log(2), rel=1e-15)
    assert d[1] == 0.0 and d[2] == np.inf and d[3] == np.inf
    assert np.isnan(d[4]) and np.isnan(d[5])
    # an empty axis: 0
    np.testing.assert_array_equal(fs.kl_divergence(np.zeros((2, 0)), np.zeros((2, 0))), 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_from_logits(rng, dtype, each_backend):
    for cols in COLS:
        shape = (int(rng.integers(1, 5)), cols)
        o = (rng.standard_normal(shape) * 3).astype(dtype)
        r = (rng.standard_normal(shape) * 3).astype(dtype)
        d = fs.kl_divergence(o, r, from_logits=True)
        assert d.dtype == dtype
        assert_close(d, ref_kl_logits(o, r), dtype, f"cols={cols}")
        # identical logits, and logits shifted by a constant, give the same distribution: KL = 0
        assert_close(fs.kl_divergence(o, o, from_logits=True), np.zeros(shape[0]), dtype)
        assert_close(fs.kl_divergence(o, o + dtype(2), from_logits=True), np.zeros(shape[0]), dtype)
        assert_close(
            fs.kl_divergence(o, r, from_logits=True, base=2), ref_kl_logits(o, r) / math.log(2), dtype
        )


def test_kl_from_logits_special_values():
    o = np.array(
        [
            [0.0, -np.inf, 1.0],  # p = 0 where q anything: adds 0
            [0.0, 0.0, 1.0],  # q = 0 (r = -inf) where p > 0: inf
            [0.0, 0.0, 1.0],  # r has +inf: NaN
            [-np.inf, -np.inf, -np.inf],  # p has no softmax: NaN
            [0.0, 0.0, 1.0],  # r all -inf: NaN
            [1e300, 0.0, -1e300],  # huge: finite
        ]
    )
    r = np.array(
        [
            [0.0, -np.inf, 0.0],
            [0.0, -np.inf, 0.0],
            [0.0, np.inf, 0.0],
            [0.0, 0.0, 0.0],
            [-np.inf, -np.inf, -np.inf],
            [1e300, 1e300, 0.0],
        ]
    )
    d = fs.kl_divergence(o, r, from_logits=True)
    assert_close(d[0], ref_kl_logits(o[0], r[0]), np.float64)
    assert d[1] == np.inf
    assert np.isnan(d[2:5]).all()
    assert d[5] == pytest.approx(math.log(2), rel=1e-14)


def test_kl_broadcasts_and_promotes(rng):
    p = sps.softmax(rng.standard_normal((5, 8)), axis=-1)
    q = sps.softmax(rng.standard_normal(8))
    np.testing.assert_allclose(fs.kl_divergence(p, q), ref_kl(p, q[None, :]), rtol=1e-13)
    d = fs.kl_divergence(p.astype(np.float32), q)
    assert d.dtype == np.float64
    d = fs.kl_divergence(p.astype(np.float32), q.astype(np.float32))
    assert d.dtype == np.float32
    with pytest.raises(ValueError):
        fs.kl_divergence(p, q[:5])


# ----------------------------------------------------------------------------------------------
# layouts, dtypes, long rows, errors


@pytest.mark.parametrize("dtype", DTYPES)
def test_layouts(rng, dtype):
    o = (rng.standard_normal((6, 10, 12)) * 2).astype(dtype)
    r = (rng.standard_normal((6, 10, 12)) * 2).astype(dtype)
    views = [
        ("C", o, r),
        ("F", np.asfortranarray(o), np.asfortranarray(r)),
        ("strided", o[:, ::2, ::-1], r[:, ::2, ::-1]),
        ("transposed", o.transpose(2, 0, 1), r.transpose(2, 0, 1)),
    ]
    for name, a, b in views:
        for axis in (0, 1, 2, -1):
            ctx = f"{name} axis={axis}"
            h = fs.entropy(a, axis=axis, from_logits=True)
            assert h.shape == tuple(s for i, s in enumerate(a.shape) if i != axis % 3)
            assert_close(h, ref_entropy_logits(a, axis), dtype, ctx)
            assert_close(fs.kl_divergence(a, b, axis, from_logits=True), ref_kl_logits(a, b, axis), dtype, ctx)
            pa = sps.softmax(a.astype(np.float64), axis=axis).astype(dtype)
            pb = sps.softmax(b.astype(np.float64), axis=axis).astype(dtype)
            assert_close(fs.entropy(pa, axis), ref_entropy(pa, axis), dtype, ctx)
            assert_close(fs.kl_divergence(pa, pb, axis=axis), ref_kl(pa, pb, axis), dtype, ctx)


def test_scalar_results_and_dtypes():
    h = fs.entropy(np.array([0.25, 0.75], dtype=np.float32))
    assert isinstance(h, np.float32)
    h = fs.entropy([0.25, 0.75])
    assert isinstance(h, np.float64)
    assert fs.entropy(np.array([1, 0, 0])).dtype == np.float64  # integers become float64
    assert float(fs.entropy(np.float64(0.5))) == pytest.approx(0.5 * math.log(2))  # 0-d: one row
    h16 = fs.entropy(np.array([[0.25, 0.75]], dtype=np.float16))
    assert h16.dtype == np.float16
    assert_close(h16, ref_entropy(np.array([[0.25, 0.75]], np.float16)), np.float16)
    k16 = fs.kl_divergence(np.array([0.3, 0.7], np.float16), np.array([0.5, 0.5], np.float16), from_logits=True)
    assert k16.dtype == np.float16


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_rows(rng, dtype, restore_threads):
    cols = (1 << 17) + 7
    o = (rng.standard_normal((2, cols)) * 3).astype(dtype)
    r = (rng.standard_normal((2, cols)) * 3).astype(dtype)
    p = sps.softmax(o.astype(np.float64), axis=-1).astype(dtype)
    q = sps.softmax(r.astype(np.float64), axis=-1).astype(dtype)
    results = []
    for n in (1, 2):
        fs.set_num_threads(n)
        res = (
            fs.entropy(o, from_logits=True),
            fs.kl_divergence(o, r, from_logits=True),
            fs.entropy(p),
            fs.kl_divergence(p, q),
        )
        assert_close(res[0], ref_entropy_logits(o), dtype, "H logits")
        assert_close(res[1], ref_kl_logits(o, r), dtype, "KL logits")
        assert_close(res[2], ref_entropy(p), dtype, "H probs")
        assert_close(res[3], ref_kl(p, q), dtype, "KL probs")
        results.append(res)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_errors(rng):
    p = np.full((2, 3), 1 / 3)
    for base in (0, -1.0, 0.0, float("nan"), 1):
        with pytest.raises(ValueError):
            fs.entropy(p, base=base)
        with pytest.raises(ValueError):
            fs.kl_divergence(p, p, base=base)
    with pytest.raises(TypeError):
        fs.entropy(p, base="two")
    with pytest.raises(ValueError):
        fs.entropy(p, axis=2)
    with pytest.raises(TypeError):
        fs.entropy(p, axis=(0, 1))
    with pytest.raises(TypeError):
        fs.entropy(p.astype(complex))
    with pytest.raises(TypeError):
        fs.kl_divergence(p, np.array([["a", "b", "c"]] * 2))
    with pytest.raises(ValueError):
        fs.kl_divergence(p, np.ones((2, 4)))
