"""linear_cross_entropy(_with_grad) on CuPy arrays: the same answers as the NumPy path, queued
without a host synchronisation. Skipped where CuPy or a CUDA device is missing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from test_linear import OPTIONS, _check_all, _problem, ml_dtypes

import fastsoftmax as fs


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cupy_matches_numpy_without_host_sync(rng, reduction):
    cp = pytest.importorskip("cupy")
    cupyx = pytest.importorskip("cupyx")
    try:
        cp.cuda.runtime.getDeviceCount()
    except Exception:  # pragma: no cover
        pytest.skip("no CUDA device")
    for bias, weight, opts in itertools.product((False, True), (False, True), OPTIONS):
        x, W, t, kw = _problem(rng, shape=(5, 9), D=12, V=301, ignored=(2, 30), bias=bias,
                               weight=weight, dtype=np.float32)
        ref = fs.linear_cross_entropy_with_grad(x, W, t, reduction=reduction, chunk_size=7, **kw,
                                                **opts)
        dev = {k: cp.asarray(v) for k, v in kw.items()}
        args = (cp.asarray(x), cp.asarray(W), cp.asarray(t))
        fs.linear_cross_entropy_with_grad(*args, reduction=reduction, chunk_size=7, **dev, **opts)
        with cupyx.allow_synchronize(False):
            got = fs.linear_cross_entropy_with_grad(*args, reduction=reduction, chunk_size=7,
                                                    **dev, **opts)
        assert all(isinstance(g, cp.ndarray) for g in got if g is not None)
        _check_all([None if g is None else cp.asnumpy(g) for g in got], ref, rtol=1e-4, atol=1e-6)


def test_cupy_half_inputs_and_mixed_arrays(rng):
    cp = pytest.importorskip("cupy")
    x, W, t, kw = _problem(rng, shape=(40,), D=8, V=50, bias=True, dtype=np.float32)
    types = [np.float16] + ([ml_dtypes.bfloat16] if ml_dtypes is not None else [])
    for dt in types:
        xh, Wh, bh = x.astype(dt), W.astype(dt), kw["bias"].astype(dt)
        ref = fs.linear_cross_entropy_with_grad(xh, Wh, t, bias=bh, chunk_size=16)
        got = fs.linear_cross_entropy_with_grad(
            cp.asarray(xh.view(np.uint16)).view(dt), cp.asarray(Wh.view(np.uint16)).view(dt),
            cp.asarray(t), bias=cp.asarray(bh.view(np.uint16)).view(dt), chunk_size=16,
        )
        for g, r in zip(got[1:], ref[1:]):
            assert g.dtype == np.dtype(dt)
            np.testing.assert_allclose(cp.asnumpy(g.view(np.uint16)).view(dt).astype(np.float32),
                                       r.astype(np.float32), rtol=2e-2, atol=1e-3)
    with pytest.raises(TypeError, match="target is not on the GPU"):
        fs.linear_cross_entropy(cp.asarray(x), cp.asarray(W), t)
