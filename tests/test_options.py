"""temperature= on softmax / log_softmax / softmin / logsumexp, softmin, and cross-entropy's z_loss and
softcap (docs/api.md §1)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sps

import fastsoftmax as fs
from reference import (
    assert_grad_close,
    grad_scale,
    assert_log_close,
    assert_prob_close,
    ref_cross_entropy,
    ref_cross_entropy_grad,
    ref_log_softmax,
    ref_logsumexp,
    ref_softmax,
    ref_softmin,
)

DTYPES = [np.float32, np.float64]
TEMPS = [0.5, 0.7, 1.0, 2.0, 3.5]


def logits(rng, shape, dtype):
    return (rng.standard_normal(shape) * 2).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cols", [1, 17, 1000, 4097])
def test_temperature(each_backend, rng, cols, dtype):
    x = logits(rng, (5, cols), dtype)
    for t in TEMPS:
        ctx = f"T={t} cols={cols}"
        assert_prob_close(fs.softmax(x, temperature=t), ref_softmax(x, temperature=t), dtype, "softmax " + ctx)
        assert_log_close(fs.log_softmax(x, temperature=t), ref_log_softmax(x, temperature=t), dtype,
                         "log_softmax " + ctx)
        assert_prob_close(fs.softmin(x, temperature=t), ref_softmin(x, temperature=t), dtype, "softmin " + ctx)
        r = fs.logsumexp(x, temperature=t)
        assert r.dtype == dtype
        assert_log_close(r, ref_logsumexp(x, temperature=t), dtype, "logsumexp " + ctx)
        # T * log(sum(exp(x / T))) with SciPy
        assert_log_close(r, t * sps.logsumexp(x.astype(np.float64) / t, axis=-1), dtype, "lse vs scipy " + ctx)


def test_temperature_one_is_default(rng):
    x = logits(rng, (4, 33), np.float64)
    np.testing.assert_array_equal(fs.softmax(x, temperature=1.0), fs.softmax(x))
    np.testing.assert_array_equal(fs.log_softmax(x, temperature=1.0), fs.log_softmax(x))
    np.testing.assert_array_equal(fs.logsumexp(x, temperature=1.0), fs.logsumexp(x))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_temperature_with_axis_out_b(rng, dtype):
    x = logits(rng, (6, 7, 8), dtype)
    t = 1.7
    for axis in [0, (1, 2), None]:
        assert_prob_close(fs.softmax(x, axis=axis, temperature=t), ref_softmax(x, axis=axis, temperature=t),
                          dtype, f"softmax axis={axis}")
        assert_log_close(np.asarray(fs.logsumexp(x, axis=axis, temperature=t)),
                         ref_logsumexp(x, axis=axis, temperature=t), dtype, f"lse axis={axis}")
    xi = x.copy()
    assert fs.log_softmax(xi, temperature=t, out=xi) is xi
    assert_log_close(xi, ref_log_softmax(x, temperature=t), dtype, "in place with temperature")
    b = np.random.default_rng().uniform(0.5, 2.0, size=8).astype(dtype)
    assert_log_close(fs.logsumexp(x, b=b, temperature=t), ref_logsumexp(x, b=b, temperature=t), dtype,
                     "lse b + temperature")


def test_temperature_special_values():
    x = np.array([[1.0, np.nan, 2.0], [-np.inf, -np.inf, -np.inf], [0.0, -np.inf, 0.0]])
    with np.errstate(all="ignore"):
        sm = fs.softmax(x, temperature=0.5)
        lse = fs.logsumexp(x, temperature=0.5)
    assert np.isnan(sm[0]).all() and np.isnan(sm[1]).all()
    np.testing.assert_array_equal(sm[2], [0.5, 0.0, 0.5])
    assert np.isnan(lse[0]) and lse[1] == -np.inf
    np.testing.assert_allclose(lse[2], 0.5 * np.log(2), rtol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_softmin_is_softmax_of_negated(rng, dtype):
    x = logits(rng, (7, 129), dtype)
    assert_prob_close(fs.softmin(x), sps.softmax(-x.astype(np.float64), axis=-1), dtype, "softmin")
    assert_prob_close(fs.softmin(x, axis=0), ref_softmin(x, axis=0), dtype, "softmin axis=0")
    out = np.empty_like(x)
    assert fs.softmin(x, out=out) is out
    assert_prob_close(out, ref_softmin(x), dtype, "softmin out=")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_z_loss_and_softcap(each_backend, rng, reduction, dtype):
    x = (rng.standard_normal((33, 1003)) * 8).astype(dtype)
    y = rng.integers(0, 1003, size=33)
    y[::5] = -100
    q = rng.random((33, 1003)).astype(dtype)
    q /= q.sum(-1, keepdims=True)
    for target in [y, q]:
        for kw in [dict(z_loss=1e-4), dict(softcap=15.0), dict(z_loss=2e-3, softcap=30.0, label_smoothing=0.1)]:
            kw["reduction"] = reduction
            ctx = f"{kw} {'hard' if target is y else 'soft'}"
            loss = fs.cross_entropy(x, target, **kw)
            assert_log_close(np.asarray(loss), np.asarray(ref_cross_entropy(x, target, **kw)), dtype, ctx)
            g = fs.cross_entropy_grad(x, target, **kw)
            scale = grad_scale(x, target, **kw)
            assert_grad_close(g, ref_cross_entropy_grad(x, target, **kw), dtype, ctx, scale=scale)
            loss2, g2 = fs.cross_entropy_with_grad(x, target, **kw)
            assert_log_close(np.asarray(loss2), np.asarray(ref_cross_entropy(x, target, **kw)), dtype, ctx)
            assert_grad_close(g2, ref_cross_entropy_grad(x, target, **kw), dtype, ctx, scale=scale)


def test_softcap_bounds_logits(rng):
    """With a small cap, logits of 1e6 behave like logits at the cap."""
    x = np.array([[1e6, 0.0, -1e6], [1e6, 1e6, 0.0]])
    y = np.array([0, 2])
    cap = 2.0
    loss = fs.cross_entropy(x, y, softcap=cap, reduction="none")
    capped = cap * np.tanh(x / cap)
    assert_log_close(loss, ref_cross_entropy(capped, y, reduction="none"), np.float64, "softcap huge")
    g = fs.cross_entropy_grad(x, y, softcap=cap)
    assert np.isfinite(g).all()
    assert_grad_close(g, ref_cross_entropy_grad(x, y, softcap=cap), np.float64, "softcap huge grad",
                      scale=grad_scale(x, y, softcap=cap))
