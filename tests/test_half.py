"""Half-precision inputs (docs/api.md §2): float16 (and bfloat16 where ml_dtypes is installed) compute in
float32 and return their own dtype, for every function, with out= of the half dtype, in place, reductions
returning half scalars, and the cross-entropy losses."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sps

import fastsoftmax as fs

HALF = [np.dtype(np.float16)]
try:
    import ml_dtypes

    HALF.append(np.dtype(ml_dtypes.bfloat16))
except ImportError:  # pragma: no cover - optional
    ml_dtypes = None

#: the half types' unit roundoff: a float32 result rounded to the half type is within this (relative)
ROUND = {"float16": 2.0**-11, "bfloat16": 2.0**-8}


def _ids(dt):
    return dt.name


def half_close(actual, expected, dt, ctx="", rel=None, abs_=None):
    """`actual` (half) within a couple of roundings of the float64 reference."""
    u = ROUND[dt.name]
    rel = 4 * u if rel is None else rel
    abs_ = 4 * u if abs_ is None else abs_
    a = np.asarray(actual).astype(np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, ctx
    assert np.array_equal(np.isnan(a), np.isnan(e)), f"{ctx}: NaN pattern"
    fin = np.isfinite(e)
    assert np.array_equal(a[~fin & ~np.isnan(e)], e[~fin & ~np.isnan(e)]), f"{ctx}: infinities"
    err = np.abs(a[fin] - e[fin])
    lim = abs_ + rel * np.abs(e[fin])
    assert (err <= lim).all(), f"{ctx}: error {err.max():.3g}"


def as_f32_result(f, *args, dt, **kw):
    """What a half call must return: the same call on the float32-widened inputs, rounded to `dt`."""
    wide = [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == dt else a for a in args]
    r = f(*wide, **kw)
    if isinstance(r, tuple):
        return tuple(np.asarray(v).astype(dt) for v in r)
    return np.asarray(r).astype(dt)


def logits(rng, shape, dt):
    return (rng.standard_normal(shape) * 2).astype(dt)


# ----------------------------------------------------------------------------------------------
# elementwise-shaped results


@pytest.mark.parametrize("dt", HALF, ids=_ids)
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_softmax_family(rng, dt, name):
    f = getattr(fs, name)
    ref = {
        "softmax": lambda x, ax: sps.softmax(x, axis=ax),
        "log_softmax": lambda x, ax: sps.log_softmax(x, axis=ax),
        "softmin": lambda x, ax: sps.softmax(-x, axis=ax),
    }[name]
    x = logits(rng, (5, 37), dt)
    for axis in (-1, 0, (0, 1), None):
        y = f(x, axis)
        assert y.dtype == dt and y.shape == x.shape
        np.testing.assert_array_equal(y, as_f32_result(f, x, axis, dt=dt))
        half_close(y, ref(x.astype(np.float64), axis), dt, f"{name} axis={axis}")
    # temperature
    y = f(x, temperature=2.5)
    assert y.dtype == dt
    half_close(y, ref(x.astype(np.float64) / 2.5, -1), dt, f"{name} T")
    # out= of the half dtype, in another layout, and in place
    expected = f(x)
    out = np.empty_like(x)
    assert f(x, out=out) is out
    np.testing.assert_array_equal(out, expected)
    out_f = np.asfortranarray(np.empty_like(x))
    f(x, out=out_f)
    np.testing.assert_array_equal(out_f, expected)
    xx = x.copy()
    assert f(xx, out=xx) is xx
    np.testing.assert_array_equal(xx, expected)
    # a float32 out for a half input is the wrong dtype: ValueError, nothing written
    bad = np.full(x.shape, 7.0, np.float32)
    with pytest.raises(ValueError):
        f(x, out=bad)
    assert (bad == 7.0).all()


@pytest.mark.parametrize("dt", HALF, ids=_ids)
def test_backward(rng, dt):
    o = rng.standard_normal((4, 21))
    y = sps.softmax(o, axis=-1).astype(dt)
    ly = sps.log_softmax(o, axis=-1).astype(dt)
    g = rng.standard_normal((4, 21)).astype(dt)
    for f, second, ref in (
        (fs.softmax_backward, y, lambda g, y: y * (g - (g * y).sum(-1, keepdims=True))),
        (fs.log_softmax_backward, ly, lambda g, l: g - np.exp(l) * g.sum(-1, keepdims=True)),
    ):
        r = f(g, second)
        assert r.dtype == dt
        np.testing.assert_array_equal(r, as_f32_result(f, g, second, dt=dt))
        half_close(r, ref(g.astype(np.float64), second.astype(np.float64)), dt, f.__name__,
                   abs_=8 * ROUND[dt.name] * float(np.abs(g.astype(np.float64)).max()))
        out = np.empty_like(g)
        assert f(g, second, out=out) is out
        np.testing.assert_array_equal(out, r)
        gg = g.copy()
        f(gg, second, out=gg)
        np.testing.assert_array_equal(gg, r)
        # axis=0 on the transpose
        np.testing.assert_array_equal(f(g.T, second.T, axis=0), r.T)


# ----------------------------------------------------------------------------------------------
# reductions


@pytest.mark.parametrize("dt", HALF, ids=_ids)
def test_logsumexp(rng, dt):
    x = logits(rng, (6, 33), dt)
    x64 = x.astype(np.float64)
    r = fs.logsumexp(x)
    assert r.dtype == dt and r.shape == (6,)
    half_close(r, sps.logsumexp(x64, axis=-1), dt, "lse")
    np.testing.assert_array_equal(r, as_f32_result(fs.logsumexp, x, dt=dt))
    r = fs.logsumexp(x, axis=None)
    assert isinstance(r, np.generic) and r.dtype == dt
    half_close(r, sps.logsumexp(x64), dt, "lse all")
    r = fs.logsumexp(x, axis=0, keepdims=True)
    assert r.dtype == dt and r.shape == (1, 33)
    half_close(r, sps.logsumexp(x64, axis=0, keepdims=True), dt, "keepdims")
    b = rng.standard_normal(33).astype(dt)
    r, sgn = fs.logsumexp(x, b=b, return_sign=True)
    assert r.dtype == dt and sgn.dtype == dt
    er, es = sps.logsumexp(x64, b=b.astype(np.float64), axis=-1, return_sign=True)
    half_close(r, er, dt, "lse b")
    np.testing.assert_array_equal(sgn.astype(np.float64), es)
    r = fs.logsumexp(x, temperature=3.0)
    half_close(r, 3.0 * sps.logsumexp(x64 / 3.0, axis=-1), dt, "lse T")
    out = np.empty(6, dtype=dt)
    assert fs.logsumexp(x, out=out) is out
    np.testing.assert_array_equal(out, fs.logsumexp(x))
    with pytest.raises(ValueError):
        fs.logsumexp(x, out=np.empty(6, np.float32))


@pytest.mark.parametrize("dt", HALF, ids=_ids)
def test_entropy_kl(rng, dt):
    o = logits(rng, (5, 19), dt)
    r = logits(rng, (5, 19), dt)
    p = sps.softmax(o.astype(np.float64), axis=-1).astype(dt)
    q = sps.softmax(r.astype(np.float64), axis=-1).astype(dt)
    cases = [
        (fs.entropy, (p,), {}, sps.entr(p.astype(np.float64)).sum(-1)),
        (fs.entropy, (o,), {"from_logits": True},
         -(sps.softmax(o.astype(np.float64), axis=-1) * sps.log_softmax(o.astype(np.float64), axis=-1)).sum(-1)),
        (fs.kl_divergence, (p, q), {}, sps.rel_entr(p.astype(np.float64), q.astype(np.float64)).sum(-1)),
        (fs.kl_divergence, (o, r), {"from_logits": True, "base": 2}, None),
    ]
    for f, args, kw, ref in cases:
        res = f(*args, **kw)
        assert res.dtype == dt and res.shape == (5,)
        np.testing.assert_array_equal(res, as_f32_result(f, *args, dt=dt, **kw))
        if ref is not None:
            half_close(res, ref, dt, f.__name__)
    s = fs.entropy(p[0])
    assert isinstance(s, np.generic) and s.dtype == dt


# ----------------------------------------------------------------------------------------------
# cross-entropy family


@pytest.mark.parametrize("dt", HALF, ids=_ids)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(rng, dt, reduction):
    x = logits(rng, (7, 11), dt)
    x64 = x.astype(np.float64)
    t = rng.integers(0, 11, size=7)
    ls = sps.log_softmax(x64, axis=-1)
    per_row = -ls[np.arange(7), t]
    ref = {"mean": per_row.mean(), "sum": per_row.sum(), "none": per_row}[reduction]
    loss = fs.cross_entropy(x, t, reduction=reduction)
    assert np.asarray(loss).dtype == dt
    if reduction != "none":
        assert isinstance(loss, np.generic)
    else:
        assert loss.shape == (7,)
    half_close(loss, ref, dt, f"ce {reduction}", abs_=8 * ROUND[dt.name] * max(1.0, float(np.abs(ref).max())))
    np.testing.assert_array_equal(
        np.asarray(loss), as_f32_result(fs.cross_entropy, x, t, dt=dt, reduction=reduction)
    )
    # gradient: the half dtype, equal to the float32 computation rounded
    n = {"mean": 7.0, "sum": 1.0, "none": 1.0}[reduction]
    gref = (np.exp(ls) - np.eye(11)[t]) / n
    g = fs.cross_entropy_grad(x, t, reduction=reduction)
    assert g.dtype == dt
    half_close(g, gref, dt, "grad")
    np.testing.assert_array_equal(
        g, as_f32_result(fs.cross_entropy_grad, x, t, dt=dt, reduction=reduction)
    )
    l2, g2 = fs.cross_entropy_with_grad(x, t, reduction=reduction)
    assert np.asarray(l2).dtype == dt and g2.dtype == dt
    np.testing.assert_array_equal(g2, g)
    np.testing.assert_array_equal(np.asarray(l2), np.asarray(loss))
    # out= of the half dtype and in place
    out = np.empty_like(x)
    assert fs.cross_entropy_grad(x, t, reduction=reduction, out=out) is out
    np.testing.assert_array_equal(out, g)
    xx = x.copy()
    l3, g3 = fs.cross_entropy_with_grad(xx, t, reduction=reduction, out=xx)
    assert g3 is xx
    np.testing.assert_array_equal(xx, g)
    np.testing.assert_array_equal(np.asarray(l3), np.asarray(loss))


@pytest.mark.parametrize("dt", HALF, ids=_ids)
def test_cross_entropy_soft_labels_and_options(rng, dt):
    x = logits(rng, (6, 9), dt)
    q = sps.softmax(rng.standard_normal((6, 9)), axis=-1).astype(dt)
    loss = fs.cross_entropy(x, q)
    assert loss.dtype == dt
    ref = -(q.astype(np.float64) * sps.log_softmax(x.astype(np.float64), axis=-1)).sum(-1).mean()
    half_close(loss, ref, dt, "soft")
    w = rng.random(9).astype(dt) + dt.type(0.5)
    t = rng.integers(0, 9, size=6)
    kw = dict(weight=w, label_smoothing=0.1, z_loss=1e-3, softcap=5.0)
    loss = fs.cross_entropy(x, t, **kw)
    assert loss.dtype == dt
    np.testing.assert_array_equal(np.asarray(loss), as_f32_result(fs.cross_entropy, x, t, dt=dt, **kw))
    g = fs.cross_entropy_grad(x, t, **kw)
    assert g.dtype == dt
    np.testing.assert_array_equal(g, as_f32_result(fs.cross_entropy_grad, x, t, dt=dt, **kw))


@pytest.mark.parametrize("dt", HALF, ids=_ids)
def test_half_special_values(dt):
    x = np.array([[0.0, -np.inf, 1.0], [np.nan, 0.0, 0.0], [-np.inf, -np.inf, -np.inf]], dtype=dt)
    y = fs.softmax(x)
    assert y.dtype == dt
    assert y[0, 1] == 0 and np.isnan(y[1]).all() and np.isnan(y[2]).all()
    lse = fs.logsumexp(x)
    assert np.isnan(lse[1]) and lse[2] == -np.inf
    # values beyond float16's range after widening stay finite in float32 arithmetic
    big = np.array([60000.0, 60000.0], dtype=np.float16)
    np.testing.assert_array_equal(fs.softmax(big), np.array([0.5, 0.5], np.float16))
