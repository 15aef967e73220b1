"""linear_cross_entropy(_with_grad): the classifier head fused with its loss, chunked over rows.

Checked against an independent float64 reference (the logits materialised in NumPy float64, the
loss and the three gradients by their formulas; the reference itself is checked by finite
differences), against the unfused fastsoftmax path and against PyTorch autograd when importable:
every option and combination, batch dimensions, chunk sizes, ignored rows, dtypes, every error (with
nothing computed), and the memory bound in a fresh subprocess.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastsoftmax as fs
from fastsoftmax import _linear

try:  # PyTorch is an optional peer
    import torch
    import torch.nn.functional as F
except Exception:  # pragma: no cover - depends on the environment
    torch = None

try:
    import ml_dtypes
except ImportError:  # pragma: no cover
    ml_dtypes = None


# ----------------------------------------------------------------------------------------------
# the reference (float64, formulas, no fastsoftmax)


def ref_linear_ce(x, W, t, bias=None, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, z_loss=0.0, softcap=None):
    """(loss, grad_x, grad_W, grad_b) in float64."""
    x = np.asarray(x, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    V, D = W.shape
    x2 = x.reshape(int(np.prod(x.shape[:-1])), D)
    t = np.asarray(t).reshape(-1).astype(np.int64)
    o = x2 @ W.T
    if bias is not None:
        o = o + np.asarray(bias, dtype=np.float64)
    u = o if softcap is None else softcap * np.tanh(o / softcap)
    m = u.max(axis=1, keepdims=True) if V else np.zeros((len(u), 1))
    lse = (m + np.log(np.exp(u - m).sum(axis=1, keepdims=True)))[:, 0]
    logp = u - lse[:, None]
    p = np.exp(logp)
    w = np.ones(V) if weight is None else np.asarray(weight, dtype=np.float64)
    counted = t != ignore_index
    y = np.where(counted, t, 0)
    rows = np.arange(len(t))
    eps = label_smoothing
    wy = w[y] * counted
    nll = -logp[rows, y]
    smooth = -(w * logp).sum(axis=1) / V
    ce = (1 - eps) * wy * nll + eps * smooth * counted
    zr = z_loss * lse**2 * counted
    onehot = np.zeros_like(u)
    onehot[rows, y] = 1.0
    g_ce = (1 - eps) * wy[:, None] * (p - onehot) + eps / V * (w.sum() * p - w) * counted[:, None]
    g_z = 2 * z_loss * (lse * counted)[:, None] * p
    if reduction == "mean":
        n = counted.sum()
        if n == 0:
            loss, a, b = 0.0, 0.0, 0.0
        else:
            loss = ce.sum() / wy.sum() + zr.sum() / n
            a, b = 1.0 / wy.sum(), 1.0 / n
    elif reduction == "sum":
        loss, a, b = ce.sum() + zr.sum(), 1.0, 1.0
    else:
        loss, a, b = (ce + zr).reshape(x.shape[:-1]), 1.0, 1.0
    G = a * g_ce + b * g_z
    if softcap is not None:
        G = G * (1 - (u / softcap) ** 2)
    gx = (G @ W).reshape(x.shape)
    return loss, gx, G.T @ x2, (None if bias is None else G.sum(axis=0))


def _problem(rng, shape=(13,), D=5, V=7, ignored=(), bias=False, weight=False, dtype=np.float64):
    x = rng.standard_normal((*shape, D)).astype(dtype)
    W = (rng.standard_normal((V, D)) * 0.7).astype(dtype)
    t = rng.integers(0, V, size=shape)
    flat = t.reshape(-1)
    for i in ignored:
        flat[i] = -100
    kw = {}
    if bias:
        kw["bias"] = rng.standard_normal(V).astype(dtype)
    if weight:
        kw["weight"] = rng.uniform(0.2, 2.0, V)
    return x, W, t, kw


def _close(actual, expected, rtol, atol, what):
    if expected is None:
        assert actual is None, what
        return
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=what)


def _check_all(got, ref, rtol, atol):
    for name, g, r in zip(("loss", "grad_x", "grad_classifier", "grad_bias"), got, ref):
        _close(g, r, rtol, atol, name)


def test_reference_gradient_matches_finite_differences(rng):
    """The reference's gradients are those of its loss (so the comparisons below mean something)."""
    x, W, t, kw = _problem(rng, shape=(4,), D=3, V=5, ignored=(2,), bias=True, weight=True)
    opts = dict(label_smoothing=0.3, z_loss=0.05, softcap=2.5, **kw)
    for reduction in ("mean", "sum"):
        _, gx, gW, gb = ref_linear_ce(x, W, t, reduction=reduction, **opts)
        for arr, g in ((x, gx), (W, gW), (kw["bias"], gb)):
            fd = np.empty_like(arr)
            for i in np.ndindex(arr.shape):
                old = arr[i]
                arr[i] = old + 1e-6
                lp = ref_linear_ce(x, W, t, reduction=reduction, **opts)[0]
                arr[i] = old - 1e-6
                lm = ref_linear_ce(x, W, t, reduction=reduction, **opts)[0]
                arr[i] = old
                fd[i] = (lp - lm) / 2e-6
            np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------------------------------------
# every option and combination against the reference

OPTIONS = [
    {},
    {"label_smoothing": 0.15},
    {"z_loss": 1e-2},
    {"softcap": 3.0},
    {"label_smoothing": 0.2, "z_loss": 1e-3, "softcap": 5.0},
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("weight", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_every_option_float64(rng, reduction, bias, weight, opts):
    x, W, t, kw = _problem(rng, shape=(23,), D=6, V=11, ignored=(0, 5, 6, 22), bias=bias,
                           weight=weight)
    got = fs.linear_cross_entropy_with_grad(x, W, t, reduction=reduction, chunk_size=5, **kw,
                                            **opts)
    ref = ref_linear_ce(x, W, t, reduction=reduction, **kw, **opts)
    _check_all(got, ref, rtol=1e-10, atol=1e-12)
    assert got[1].dtype == got[2].dtype == np.float64
    loss = fs.linear_cross_entropy(x, W, t, reduction=reduction, chunk_size=5, **kw, **opts)
    _close(loss, ref[0], 1e-10, 1e-12, "loss only")
    if reduction != "none":
        assert isinstance(loss, np.float64) and isinstance(got[0], np.float64)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", OPTIONS[::2], ids=lambda o: ",".join(o) or "plain")
def test_float32_matches_reference_and_unfused(rng, reduction, opts):
    x, W, t, kw = _problem(rng, shape=(50,), D=17, V=301, ignored=(3, 4), bias=True, weight=True,
                           dtype=np.float32)
    got = fs.linear_cross_entropy_with_grad(x, W, t, reduction=reduction, chunk_size=16, **kw,
                                            **opts)
    assert got[0].dtype == got[1].dtype == got[2].dtype == got[3].dtype == np.float32
    ref = ref_linear_ce(x, W, t, reduction=reduction, **kw, **opts)
    _check_all(got, ref, rtol=2e-5, atol=2e-6)
    # the unfused path: the same kernels on the materialised logits
    o = x @ W.T + kw["bias"]
    loss, g = fs.cross_entropy_with_grad(o, t, weight=kw["weight"], reduction=reduction, **opts)
    _check_all(got, (loss, g @ W, g.T @ x, g.sum(0)), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("chunk", [1, 2, 7, 36, 37, 38, 1000, None])
def test_chunk_sizes_dividing_or_not(rng, chunk):
    x, W, t, kw = _problem(rng, shape=(37,), D=4, V=9, ignored=(36,), bias=True, weight=True)
    for reduction in ("mean", "sum", "none"):
        got = fs.linear_cross_entropy_with_grad(x, W, t, reduction=reduction, chunk_size=chunk,
                                                z_loss=0.01, **kw)
        ref = ref_linear_ce(x, W, t, reduction=reduction, z_loss=0.01, **kw)
        _check_all(got, ref, rtol=1e-10, atol=1e-12)


def test_ignored_rows_in_a_chunk_of_their_own(rng):
    x, W, t, kw = _problem(rng, shape=(12,), D=5, V=6, ignored=range(4, 8), weight=True)
    for reduction in ("mean", "sum", "none"):
        got = fs.linear_cross_entropy_with_grad(x, W, t, reduction=reduction, chunk_size=4,
                                                label_smoothing=0.1, z_loss=0.1, **kw)
        ref = ref_linear_ce(x, W, t, reduction=reduction, label_smoothing=0.1, z_loss=0.1, **kw)
        _check_all(got, ref, rtol=1e-10, atol=1e-12)
        assert np.all(got[1][4:8] == 0.0)
        if reduction == "none":
            assert np.all(got[0][4:8] == 0.0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_rows_ignored(rng, reduction):
    x, W, t, kw = _problem(rng, shape=(9,), D=3, V=4, ignored=range(9), bias=True, weight=True)
    loss, gx, gW, gb = fs.linear_cross_entropy_with_grad(
        x, W, t, reduction=reduction, chunk_size=4, z_loss=0.5, label_smoothing=0.3, **kw
    )
    assert np.all(np.asarray(loss) == 0.0)  # mean: 0.0, not NaN (the cross-entropy's rule)
    assert not np.any(gx) and not np.any(gW) and not np.any(gb)


def test_zero_total_weight_is_nan_like_the_cross_entropy(rng):
    x, W, t, _ = _problem(rng, shape=(5,), D=3, V=4)
    w = np.ones(4)
    w[np.unique(t)] = 0.0
    o = x @ W.T
    assert np.isnan(fs.cross_entropy(o, t, weight=w))
    assert np.isnan(fs.linear_cross_entropy(x, W, t, weight=w, chunk_size=2))


def test_batch_dimensions(rng):
    x, W, t, kw = _problem(rng, shape=(2, 3, 5), D=4, V=6, ignored=(7,), bias=True)
    for reduction in ("mean", "sum", "none"):
        got = fs.linear_cross_entropy_with_grad(x, W, t, reduction=reduction, chunk_size=4, **kw)
        ref = ref_linear_ce(x, W, t, reduction=reduction, **kw)
        _check_all(got, ref, rtol=1e-10, atol=1e-12)
        assert got[1].shape == x.shape
    assert fs.linear_cross_entropy(x, W, t, reduction="none", **kw).shape == (2, 3, 5)


def test_one_row_without_batch_dims_and_zero_rows(rng):
    x, W, t, _ = _problem(rng, shape=(), D=4, V=6)
    loss = fs.linear_cross_entropy(x, W, t, reduction="none")
    assert isinstance(loss, np.float64)
    _close(loss, ref_linear_ce(x, W, t, reduction="none")[0], 1e-12, 0, "0-d")
    x0 = np.zeros((0, 4))
    for reduction in ("mean", "sum"):
        loss, gx, gW, gb = fs.linear_cross_entropy_with_grad(
            x0, W, np.zeros(0, np.int64), bias=np.ones(6), reduction=reduction
        )
        assert loss == 0.0 and gx.shape == (0, 4) and not np.any(gW) and not np.any(gb)
    assert fs.linear_cross_entropy(x0, W, np.zeros(0, int), reduction="none").shape == (0,)


def test_zero_features(rng):
    """D = 0: the logits are the bias alone."""
    x = np.zeros((5, 0))
    W = np.zeros((3, 0))
    t = rng.integers(0, 3, 5)
    b = rng.standard_normal(3)
    got = fs.linear_cross_entropy_with_grad(x, W, t, bias=b, chunk_size=2)
    _check_all(got, ref_linear_ce(x, W, t, bias=b), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("tdtype", [np.uint8, np.int16, np.int32, np.uint32, np.uint64])
def test_label_dtypes(rng, tdtype):
    x, W, t, _ = _problem(rng, shape=(10,), D=3, V=5)
    got = fs.linear_cross_entropy_with_grad(x, W, t.astype(tdtype), chunk_size=3)
    _check_all(got, ref_linear_ce(x, W, t), rtol=1e-10, atol=1e-12)


def test_uint64_labels_with_a_huge_ignore_index(rng):
    x, W, t, _ = _problem(rng, shape=(6,), D=3, V=5)
    tu = t.astype(np.uint64)
    tu[2] = np.iinfo(np.uint64).max
    got = fs.linear_cross_entropy(x, W, tu, ignore_index=int(np.iinfo(np.uint64).max))
    t2 = t.copy()
    t2[2] = -100
    _close(got, ref_linear_ce(x, W, t2)[0], 1e-12, 0, "uint64 ignore")


def test_any_layout_gives_the_same_answer(rng):
    x, W, t, kw = _problem(rng, shape=(11,), D=5, V=7, bias=True)
    ref = fs.linear_cross_entropy_with_grad(x, W, t, chunk_size=4, **kw)
    xf = np.asfortranarray(x)
    Wv = np.ascontiguousarray(W.T).T  # Fortran-ordered view
    xs = np.repeat(x, 2, axis=1)[:, ::2]  # strided
    for xx, WW in ((xf, W), (x, Wv), (xs, Wv), (x[::-1][::-1], W[::-1][::-1])):
        got = fs.linear_cross_entropy_with_grad(xx, WW, t, chunk_size=4, **kw)
        _check_all(got, ref, rtol=1e-13, atol=1e-15)


def test_nan_row_makes_the_loss_nan(rng):
    x, W, t, _ = _problem(rng, shape=(6,), D=3, V=5)
    x[2, 1] = np.nan
    losses = fs.linear_cross_entropy(x, W, t, reduction="none", chunk_size=4)
    assert np.isnan(losses[2]) and np.all(np.isfinite(np.delete(losses, 2)))
    assert np.isnan(fs.linear_cross_entropy(x, W, t))


# ----------------------------------------------------------------------------------------------
# dtypes


def _half_types():
    types = [np.float16]
    if ml_dtypes is not None:
        types.append(ml_dtypes.bfloat16)
    return types


@pytest.mark.parametrize("dtype", _half_types(), ids=lambda d: np.dtype(d).name)
def test_half_inputs_compute_in_float32(rng, dtype):
    x, W, t, kw = _problem(rng, shape=(3, 7), D=8, V=33, ignored=(4,), bias=True, weight=True)
    xh, Wh, bh = x.astype(dtype), W.astype(dtype), kw["bias"].astype(dtype)
    opts = dict(weight=kw["weight"], label_smoothing=0.1, z_loss=1e-3, softcap=4.0)
    for reduction in ("mean", "none"):
        got = fs.linear_cross_entropy_with_grad(xh, Wh, t, bias=bh, reduction=reduction,
                                                chunk_size=5, **opts)
        assert [g.dtype for g in got[1:]] == [np.dtype(dtype)] * 3
        assert np.asarray(got[0]).dtype == np.dtype(dtype)
        assert got[1].shape == x.shape
        # the reference sees the same (rounded) inputs; what is left is the output rounding
        ref = ref_linear_ce(xh, Wh, t, bias=bh, reduction=reduction, **opts)
        rel = 2e-2 if np.dtype(dtype).name == "bfloat16" else 2e-3
        _check_all(got, ref, rtol=rel, atol=rel * 0.05)
        # and the float32 computation, rounded once, is what comes back
        f32 = fs.linear_cross_entropy_with_grad(xh.astype(np.float32), Wh.astype(np.float32), t,
                                                bias=bh.astype(np.float32), reduction=reduction,
                                                chunk_size=5, **opts)
        for g, f in zip(got[1:], f32[1:]):
            np.testing.assert_array_equal(g, f.astype(dtype))


@pytest.mark.skipif(ml_dtypes is None, reason="needs ml_dtypes")
def test_bfloat16_rounding_matches_ml_dtypes(rng):
    """The xp-generic bfloat16 conversions (bit operations that CuPy runs too) round as ml_dtypes."""
    bf16 = np.dtype(ml_dtypes.bfloat16)
    a = rng.standard_normal(10000).astype(np.float32) * np.float32(1e3)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.4e38, -3.4e38, 1e-40, 1.00390625,
                         1.01171875], np.float32)  # the last two: ties to even, down and up
    a = np.concatenate([a, specials])
    raw = _linear._from_compute(np, a, bf16)
    np.testing.assert_array_equal(raw.view(bf16).astype(np.float32), a.astype(bf16).astype(np.float32))
    back = _linear._to_compute(np, raw, bf16, np.dtype(np.float32))
    np.testing.assert_array_equal(back, a.astype(bf16).astype(np.float32))


def test_mixed_dtypes_promote_and_keep_each_gradient_dtype(rng):
    x, W, t, kw = _problem(rng, shape=(9,), D=4, V=5, bias=True)
    got = fs.linear_cross_entropy_with_grad(x.astype(np.float32), W, t,
                                            bias=kw["bias"].astype(np.float16), chunk_size=4)
    assert (got[1].dtype, got[2].dtype, got[3].dtype) == (np.float32, np.float64, np.float16)
    assert isinstance(got[0], np.float64)  # computed in float64
    ref = ref_linear_ce(x.astype(np.float32), W, t, bias=kw["bias"].astype(np.float16))
    _check_all(got, ref, rtol=1e-3, atol=1e-6)


def test_integer_inputs_become_float64(rng):
    x = rng.integers(-2, 3, (6, 3))
    W = rng.integers(-1, 2, (4, 3))
    t = rng.integers(0, 4, 6)
    got = fs.linear_cross_entropy_with_grad(x, W, t)
    assert got[1].dtype == got[2].dtype == np.float64
    _check_all(got, ref_linear_ce(x, W, t), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------------------
# PyTorch autograd


def _torch_linear_ce(x, W, t, bias, weight, ignore_index, reduction, label_smoothing, z_loss,
                     softcap):
    xt = torch.tensor(x, requires_grad=True)
    Wt = torch.tensor(W, requires_grad=True)
    bt = None if bias is None else torch.tensor(bias, requires_grad=True)
    tt = torch.tensor(t.reshape(-1))
    o = F.linear(xt.reshape(-1, W.shape[1]), Wt, bt)
    if softcap is not None:
        o = softcap * torch.tanh(o / softcap)
    wt = None if weight is None else torch.tensor(weight, dtype=o.dtype)
    loss = F.cross_entropy(o, tt, weight=wt, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)
    if z_loss:
        counted = (tt != ignore_index).to(o.dtype)
        zr = z_loss * torch.logsumexp(o, dim=1) ** 2 * counted
        if reduction == "mean":
            loss = loss + zr.sum() / counted.sum()
        elif reduction == "sum":
            loss = loss + zr.sum()
        else:
            loss = loss + zr
    loss.sum().backward()
    if reduction == "none":
        lv = loss.detach().numpy().reshape(t.shape)
    else:
        lv = loss.item()
    return lv, xt.grad.numpy(), Wt.grad.numpy(), None if bt is None else bt.grad.numpy()


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_pytorch_autograd(rng, reduction):
    for bias, weight, opts in itertools.product((False, True), (False, True), OPTIONS):
        x, W, t, kw = _problem(rng, shape=(3, 7), D=6, V=13, ignored=(2, 9), bias=bias,
                               weight=weight)
        got = fs.linear_cross_entropy_with_grad(x, W, t, reduction=reduction, chunk_size=4,
                                                **kw, **opts)
        full = dict(bias=None, weight=None, ignore_index=-100, reduction=reduction,
                    label_smoothing=0.0, z_loss=0.0, softcap=None)
        full.update(kw)
        full.update(opts)
        ref = _torch_linear_ce(x, W, t, **full)
        _check_all(got, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
def test_matches_pytorch_float32(rng):
    x, W, t, kw = _problem(rng, shape=(64,), D=32, V=1000, ignored=(1,), bias=True,
                           dtype=np.float32)
    got = fs.linear_cross_entropy_with_grad(x, W, t, chunk_size=10, label_smoothing=0.1, **kw)
    ref = _torch_linear_ce(x, W, t, kw["bias"], None, -100, "mean", 0.1, 0.0, None)
    _check_all(got, ref, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# generated shapes and options


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(0, 20), d=st.integers(0, 6), v=st.integers(1, 9),
    chunk=st.one_of(st.none(), st.integers(1, 25)),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    bias=st.booleans(), weight=st.booleans(),
    eps=st.sampled_from([0.0, 0.1, 1.0]), z=st.sampled_from([0.0, 0.01]),
    cap=st.sampled_from([None, 2.0]), ignore_frac=st.sampled_from([0.0, 0.3, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_generated_against_reference(n, d, v, chunk, reduction, bias, weight, eps, z, cap,
                                     ignore_frac, seed):
    r = np.random.default_rng(seed)
    ignored = [i for i in range(n) if r.random() < ignore_frac]
    x, W, t, kw = _problem(r, shape=(n,), D=d, V=v, ignored=ignored, bias=bias, weight=weight)
    opts = dict(reduction=reduction, label_smoothing=eps, z_loss=z, softcap=cap, **kw)
    got = fs.linear_cross_entropy_with_grad(x, W, t, chunk_size=chunk, **opts)
    _check_all(got, ref_linear_ce(x, W, t, **opts), rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# the default chunk


@pytest.mark.parametrize("n,v,d,item", [(4096, 32000, 512, 4), (8192, 131072, 256, 4),
                                        (4096, 50, 3, 8), (100000, 1000, 64, 4),
                                        (1 << 20, 262144, 4096, 8), (5000, 7, 9000, 4)])
def test_default_chunk_bounds_the_extra_memory(n, v, d, item):
    rows = _linear.default_chunk_rows(n, v, d, item)
    assert 1 <= rows <= min(n, _linear.CHUNK_EFFICIENT_ROWS)
    assert rows * v * item <= _linear.CHUNK_MAX_BYTES or rows == 1
    block = _linear._grad_block_rows(v, d, item, False) * d * item
    if rows > 1:
        assert rows * v * item + block <= n * v * item / 8


def test_default_chunk_for_small_inputs_is_the_whole_batch():
    assert _linear.default_chunk_rows(100, 32000, 512, 4) == 100
    assert _linear.default_chunk_rows(3000, 1000, 64, 4) == _linear.CHUNK_EFFICIENT_ROWS
    assert _linear.default_chunk_rows(1000, 8_000_000, 64, 8) == 4  # 256 MiB of float64 rows


# ----------------------------------------------------------------------------------------------
# errors: the right exception, before any work


@pytest.fixture
def no_work(monkeypatch):
    """Counts the cross-entropy calls a failing call made (must be none)."""
    calls = []
    real_with_grad, real_loss = fs.cross_entropy_with_grad, fs.cross_entropy

    def spy_with_grad(*a, **k):
        calls.append(a[0].shape)
        return real_with_grad(*a, **k)

    def spy_loss(*a, **k):
        if a[0].shape[0]:  # the option check runs on zero rows
            calls.append(a[0].shape)
        return real_loss(*a, **k)

    monkeypatch.setattr(fs, "cross_entropy_with_grad", spy_with_grad)
    monkeypatch.setattr(fs, "cross_entropy", spy_loss)
    return calls


def _bad_calls(rng):
    x, W, t, kw = _problem(rng, shape=(6,), D=3, V=5, bias=True)
    bad_last = t.copy()
    bad_last[-1] = 5
    yield ValueError, "(6, 4).*(5, 3)", (x[:, :2].repeat(2, 1), W, t), {}
    yield ValueError, "classifier must be 2-D", (x, W[None], t), {}
    yield ValueError, "at least one dimension", (np.float64(1.0), W, t), {}
    yield ValueError, r"target of shape \(5,\).*x of shape \(6, 3\)", (x, W, t[:5]), {}
    yield ValueError, r"bias must have shape \(5,\)", (x, W, t), {"bias": np.ones(4)}
    yield ValueError, r"weight must have shape \(5,\)", (x, W, t), {"weight": np.ones(6)}
    yield ValueError, "reduction", (x, W, t), {"reduction": "avg"}
    yield ValueError, "label_smoothing", (x, W, t), {"label_smoothing": 1.5}
    yield ValueError, "z_loss", (x, W, t), {"z_loss": -1.0}
    yield ValueError, "softcap", (x, W, t), {"softcap": 0.0}
    yield ValueError, "chunk_size", (x, W, t), {"chunk_size": 0}
    yield TypeError, "chunk_size", (x, W, t), {"chunk_size": 2.5}
    yield TypeError, "chunk_size", (x, W, t), {"chunk_size": True}
    yield TypeError, "ignore_index", (x, W, t), {"ignore_index": 1.5}
    yield TypeError, "integer class indices", (x, W, t.astype(np.float64)), {}
    yield TypeError, "x has unsupported dtype complex128", (x.astype(complex), W, t), {}
    yield TypeError, "classifier has unsupported dtype", (x, W.astype(object), t), {}
    yield TypeError, "bias has unsupported dtype", (x, W, t), {"bias": np.array(["a"] * 5)}
    yield TypeError, "weight has unsupported dtype", (x, W, t), {"weight": np.ones(5, complex)}
    yield IndexError, "target 5 at position 5 is out of bounds for 5 classes", (x, W, bad_last), {
        "chunk_size": 1}
    neg = t.copy()
    neg[2] = -1
    yield IndexError, "target -1 at position 2", (x, W, neg), {}
    yield IndexError, r"target 7 at position \(1, 0\)", (x.reshape(2, 3, 3), W,
                                                         np.array([[0, 1, 2], [7, 0, 0]])), {}


def test_every_error_before_any_work(rng, no_work):
    for exc, match, args, kw in _bad_calls(rng):
        saved = [np.array(a, copy=True) for a in args]
        for f in (fs.linear_cross_entropy, fs.linear_cross_entropy_with_grad):
            with pytest.raises(exc, match=match):
                f(*args, **kw)
        assert no_work == [], f"work done before raising {exc.__name__}({match})"
        for a, s in zip(args, saved):
            np.testing.assert_array_equal(np.asarray(a), s)


def test_a_cupy_array_among_numpy_ones_is_a_type_error():
    class FakeCupy:  # only the module name matters for the routing
        __module__ = "cupy._core.core"

    x = np.zeros((2, 3))
    with pytest.raises(TypeError, match="classifier is on the GPU"):
        fs.linear_cross_entropy(x, FakeCupy(), np.zeros(2, int))


# ----------------------------------------------------------------------------------------------
# memory: the resident high-water mark of a fresh process

MEMORY_SCRIPT = textwrap.dedent(
    """
    import gc, sys
    import numpy as np
    import fastsoftmax as fs

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(key)

    N, D, V = 8192, 64, 8192
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D), dtype=np.float32)
    W = rng.standard_normal((V, D), dtype=np.float32) * 0.1
    t = rng.integers(0, V, N)
    t[::7] = -100
    # start the BLAS and kernel thread pools (their stacks and buffers are not the call's memory)
    warm = fs.linear_cross_entropy_with_grad(x[:1024], W, t[:1024])
    del warm
    gc.collect()
    before = status("VmRSS")  # the high-water mark cannot be reset: count from the resident set
    loss, gx, gW, gb = fs.linear_cross_entropy_with_grad(x, W, t)
    extra = status("VmHWM") - before
    print(extra, N * V * 4, gx.nbytes + gW.nbytes, float(loss))
    """
)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (Linux)")
@pytest.mark.skipif(
    os.environ.get("FASTSOFTMAX_EMULATED", "") not in ("", "0"),
    reason="over two minutes under qemu, whose resident-set accounting is the emulator's",
)
def test_memory_high_water_mark_in_a_fresh_process():
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    extra, logits_bytes, grads_bytes = int(out[0]), int(out[1]), int(out[2])
    slack = 4 << 20  # allocator rounding, BLAS packing buffers, interpreter noise
    assert extra <= logits_bytes / 8 + grads_bytes + slack, (extra, logits_bytes)
    assert extra < logits_bytes / 4  # an unchunked call needs > 2 x logits_bytes
    assert np.isfinite(float(out[3]))


# ----------------------------------------------------------------------------------------------
# typing


def test_mypy_strict_on_the_new_modules():
    pytest.importorskip("mypy")
    pkg = os.path.dirname(os.path.abspath(fs.__file__))
    files = [os.path.join(pkg, f) for f in ("_linear.py", os.path.join("bench", "linear.py"))
             if os.path.exists(os.path.join(pkg, f))]
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                        "--follow-imports=silent", *files], capture_output=True, text=True,
                       cwd=os.path.dirname(pkg))
    assert r.returncode == 0, r.stdout + r.stderr


def test_grad_classifier_accumulated_over_many_class_blocks(rng, monkeypatch):
    """The block-by-block accumulation of grad_classifier, with blocks that do not divide V."""
    monkeypatch.setattr(_linear, "GRAD_BLOCK_BYTES_CPU", 7 * 5 * 8)
    monkeypatch.setattr(_linear, "GRAD_BLOCK_MIN_ROWS", 1)
    assert _linear._grad_block_rows(30, 5, 8, False) == 7
    x, W, t, kw = _problem(rng, shape=(17,), D=5, V=30, ignored=(3,), bias=True, weight=True)
    got = fs.linear_cross_entropy_with_grad(x, W, t, chunk_size=4, label_smoothing=0.1, **kw)
    _check_all(got, ref_linear_ce(x, W, t, label_smoothing=0.1, **kw), rtol=1e-10, atol=1e-12)
