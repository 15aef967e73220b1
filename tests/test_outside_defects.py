"""Cases found by running the library against outside suites (SciPy's own tests, generated inputs
compared with SciPy and PyTorch); each was wrong once and stays pinned here."""

from __future__ import annotations

import numpy as np
import pytest

import fastsoftmax as fs

sps = pytest.importorskip("scipy.special")


@pytest.mark.parametrize("adt", [np.int32, np.int64])
@pytest.mark.parametrize("bdt", [np.float32, np.float64])
def test_logsumexp_weighted_dtype_is_numpy_promotion(adt, bdt):
    a, b = np.array([1, 2, 3], dtype=adt), np.array([1.0, 0.5, 2.0], dtype=bdt)
    r = fs.logsumexp(a, b=b)
    assert r.dtype == sps.logsumexp(a, b=b).dtype == np.result_type(a, b)
    np.testing.assert_allclose(r, sps.logsumexp(a, b=b), rtol=1e-14)


@pytest.mark.parametrize("f, arg", [(fs.softmax, 1000), (fs.log_softmax, 1.0), (fs.softmin, -3.0)])
def test_zero_d_input_gives_a_numpy_scalar(f, arg):
    r = f(arg)
    ref = {fs.softmax: sps.softmax, fs.log_softmax: sps.log_softmax}.get(f)
    assert isinstance(r, np.generic) and not isinstance(r, np.ndarray)
    if ref is not None:
        assert type(r) is type(ref(arg)) and r == ref(arg)


@pytest.mark.parametrize("order", [">", "<"])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp", "entropy"])
def test_any_byte_order_float16(order, name):
    x = np.array([1.0, 2.0, 0.5], dtype=order + "f2")
    native = x.astype(np.float16)
    r = getattr(fs, name)(x)
    assert r.dtype == np.float16
    np.testing.assert_array_equal(r, getattr(fs, name)(native))


@pytest.mark.parametrize("order", ["C", "F"])
def test_gradient_written_over_soft_labels(rng, order):
    o = rng.standard_normal((5, 7))
    q = np.asarray(fs.softmax(rng.standard_normal((5, 7))), order=order)
    loss_ref, grad_ref = fs.cross_entropy_with_grad(o, q.copy())
    loss, grad = fs.cross_entropy_with_grad(o, q, out=q)
    assert grad is q
    np.testing.assert_array_equal(grad, grad_ref)
    assert loss == loss_ref
