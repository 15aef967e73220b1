"""cross_entropy, cross_entropy_grad, cross_entropy_with_grad against a float64 NumPy reference of PyTorch's
semantics (docs/api.md §1), finite differences, return types, empty and all-ignored inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastsoftmax as fs
from reference import (
    assert_grad_close,
    assert_log_close,
    finite_difference_grad,
    ref_cross_entropy,
    ref_cross_entropy_grad,
    grad_scale,
)

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


def make_logits(rng, n, c, dtype, scale=3.0):
    offset = rng.uniform(-20, 20, size=(n, 1))
    return (rng.standard_normal((n, c)) * scale + offset).astype(dtype)


def hard_labels(rng, n, c, ignore_index=-100, frac_ignored=0.0, dtype=np.int64):
    y = rng.integers(0, c, size=n)
    if frac_ignored:
        y[rng.random(n) < frac_ignored] = ignore_index
    return y.astype(dtype)


def soft_labels(rng, n, c, dtype, normalised=True):
    q = rng.random((n, c))
    if normalised:
        q /= q.sum(-1, keepdims=True)
    return q.astype(dtype)


def check_loss(loss, expected, dtype, reduction, ctx):
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.dtype == dtype, (type(loss), getattr(loss, "dtype", None))
        assert loss.shape == np.shape(expected), (loss.shape, np.shape(expected))
        assert_log_close(loss, expected, dtype, ctx)
    else:
        assert type(loss) is np.dtype(dtype).type, f"{ctx}: {type(loss)} is not a NumPy {np.dtype(dtype)} scalar"
        assert_log_close(np.asarray(loss), np.asarray(expected), dtype, ctx)


def check_all(logits, target, dtype, ctx, **kw):
    """loss, grad and with_grad against the reference; inputs untouched."""
    lo0, t0 = logits.copy(), np.array(target, copy=True)
    reduction = kw.get("reduction", "mean")
    expected = ref_cross_entropy(logits, target, **kw)
    expected_g = ref_cross_entropy_grad(logits, target, **kw)
    scale = grad_scale(logits, target, **kw)
    loss = fs.cross_entropy(logits, target, **kw)
    check_loss(loss, expected, dtype, reduction, f"{ctx} loss")
    g = fs.cross_entropy_grad(logits, target, **kw)
    assert isinstance(g, np.ndarray) and g.dtype == dtype and g.shape == logits.shape
    assert_grad_close(g, expected_g, dtype, f"{ctx} grad", scale=scale)
    loss2, g2 = fs.cross_entropy_with_grad(logits, target, **kw)
    check_loss(loss2, expected, dtype, reduction, f"{ctx} with_grad loss")
    assert g2.dtype == dtype and g2.shape == logits.shape
    assert_grad_close(g2, expected_g, dtype, f"{ctx} with_grad grad", scale=scale)
    np.testing.assert_array_equal(logits, lo0)
    np.testing.assert_array_equal(target, t0)


# --- hard labels, plain --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("c", [1, 3, 17, 1000, 4097, 65537])
def test_hard_labels_sizes(each_backend, rng, c, dtype):
    n = 2 if c >= 65537 else (4 if c >= 4097 else 13)
    x = make_logits(rng, n, c, dtype)
    y = hard_labels(rng, n, c)
    for reduction in REDUCTIONS:
        check_all(x, y, dtype, f"C={c} {reduction}", reduction=reduction)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("c", [3, 17, 4097])
def test_soft_labels_sizes(each_backend, rng, c, dtype):
    x = make_logits(rng, 5, c, dtype)
    q = soft_labels(rng, 5, c, dtype)
    for reduction in REDUCTIONS:
        check_all(x, q, dtype, f"soft C={c} {reduction}", reduction=reduction)


# --- every option (PyTorch semantics) -------------------------------------------------------------------

OPTION_GRID = list(itertools.product(
    ["hard", "soft"],
    REDUCTIONS,
    [False, True],          # weight
    [0.0, 0.1],             # label_smoothing
    [0.0, 1e-3],            # z_loss
    [None, 5.0],            # softcap
))


def option_case(rng, kind, weighted, dtype, n=11, c=37):
    x = make_logits(rng, n, c, dtype, scale=2.0)
    if kind == "hard":
        t = hard_labels(rng, n, c, frac_ignored=0.3)
        t[0] = 1  # at least one row counts
    else:
        t = soft_labels(rng, n, c, dtype, normalised=bool(rng.integers(2)))
    w = rng.uniform(0.2, 2.0, size=c).astype(dtype) if weighted else None
    return x, t, w


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kind,reduction,weighted,eps,z,cap", OPTION_GRID)
def test_options_against_reference(rng, kind, reduction, weighted, eps, z, cap, dtype):
    x, t, w = option_case(rng, kind, weighted, dtype)
    check_all(x, t, dtype, f"{kind} {reduction} w={weighted} eps={eps} z={z} cap={cap}",
              weight=w, reduction=reduction, label_smoothing=eps, z_loss=z, softcap=cap)


@pytest.mark.parametrize("kind,reduction,weighted,eps,z,cap", OPTION_GRID)
def test_grad_finite_differences(rng, kind, reduction, weighted, eps, z, cap):
    """cross_entropy_grad and with_grad agree with central differences of cross_entropy (float64)."""
    n, c = 4, 5
    x = make_logits(rng, n, c, np.float64, scale=1.5)
    if kind == "hard":
        t = np.array([2, -100, 0, 4]) if n == 4 else hard_labels(rng, n, c)
    else:
        t = soft_labels(rng, n, c, np.float64, normalised=False)
    w = rng.uniform(0.2, 2.0, size=c) if weighted else None
    kw = dict(weight=w, reduction=reduction, label_smoothing=eps, z_loss=z, softcap=cap)

    def f(v):
        return np.sum(fs.cross_entropy(v, t, **kw))

    fd = finite_difference_grad(f, x)
    scale = max(1.0, abs(float(f(x))))
    g = fs.cross_entropy_grad(x, t, **kw)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7 * scale)
    _, g2 = fs.cross_entropy_with_grad(x, t, **kw)
    np.testing.assert_allclose(g2, fd, rtol=1e-5, atol=1e-7 * scale)
    # and the analytic reference
    assert_grad_close(g, ref_cross_entropy_grad(x, t, **kw), np.float64, "grad vs analytic",
                      scale=grad_scale(x, t, **kw))


def test_custom_ignore_index(rng):
    x = make_logits(rng, 9, 6, np.float64)
    y = hard_labels(rng, 9, 6)
    y[[1, 4]] = 3
    for ii in [3, -1, 7]:
        for reduction in REDUCTIONS:
            check_all(x, y, np.float64, f"ignore_index={ii} {reduction}", ignore_index=ii, reduction=reduction)
    # the ignored rows add 0 and get a zero gradient
    loss = fs.cross_entropy(x, y, ignore_index=3, reduction="none")
    assert loss[1] == 0 and loss[4] == 0
    g = fs.cross_entropy_grad(x, y, ignore_index=3)
    assert np.all(g[[1, 4]] == 0)


def test_negative_label_is_ignored_only_when_it_is_ignore_index(rng):
    x = make_logits(rng, 3, 4, np.float32)
    y = np.array([0, -1, 2])
    check_all(x, y, np.float32, "ignore_index=-1", ignore_index=-1, weight=np.arange(1, 5, dtype=np.float32))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                                   np.uint64])
def test_any_integer_target_dtype(rng, dtype):
    x = make_logits(rng, 6, 5, np.float32)
    y = rng.integers(0, 5, size=6).astype(dtype)
    for reduction in REDUCTIONS:
        check_all(x, y, np.float32, f"target {np.dtype(dtype)}", reduction=reduction)


def test_soft_labels_not_renormalised(rng):
    x = make_logits(rng, 4, 7, np.float64)
    q = rng.random((4, 7)) * 3.0  # rows sum to ~10
    expected = ref_cross_entropy(x, q, reduction="none")
    loss = fs.cross_entropy(x, q, reduction="none")
    assert_log_close(loss, expected, np.float64, "unnormalised soft labels")
    renorm = ref_cross_entropy(x, q / q.sum(-1, keepdims=True), reduction="none")
    assert not np.allclose(loss, renorm)


def test_label_smoothing_one_and_zero(rng):
    x = make_logits(rng, 5, 8, np.float64)
    y = hard_labels(rng, 5, 8)
    w = rng.uniform(0.5, 2, 8)
    for eps in [0.0, 1.0]:
        check_all(x, y, np.float64, f"eps={eps}", label_smoothing=eps, weight=w)
    # eps = 1: the loss no longer depends on the label
    a = fs.cross_entropy(x, y, label_smoothing=1.0, reduction="none")
    b = fs.cross_entropy(x, (y + 1) % 8, label_smoothing=1.0, reduction="none")
    np.testing.assert_allclose(a, b, rtol=1e-13)


def test_z_loss_mean_counts_non_ignored_rows(rng):
    """z_loss is unweighted and averaged over the non-ignored rows (docs/api.md §1)."""
    x = make_logits(rng, 8, 6, np.float64)
    y = hard_labels(rng, 8, 6)
    y[[2, 5]] = -100
    w = rng.uniform(0.1, 3.0, 6)
    z = 0.01
    base = fs.cross_entropy(x, y, weight=w)
    with_z = fs.cross_entropy(x, y, weight=w, z_loss=z)
    lse = np.log(np.sum(np.exp(x), -1))
    valid = y != -100
    np.testing.assert_allclose(with_z - base, z * np.mean(lse[valid] ** 2), rtol=1e-12)
    check_all(x, y, np.float64, "z_loss weighted mean", weight=w, z_loss=z)


def test_softcap_changes_logits(rng):
    x = make_logits(rng, 6, 9, np.float64, scale=20.0)
    y = hard_labels(rng, 6, 9)
    cap = 10.0
    capped = cap * np.tanh(x / cap)
    np.testing.assert_allclose(fs.cross_entropy(x, y, softcap=cap, reduction="none"),
                               ref_cross_entropy(capped, y, reduction="none"), rtol=1e-13, atol=1e-13)
    check_all(x, y, np.float64, "softcap", softcap=cap)


# --- layout of the class axis ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_class_axis_not_last(each_backend, rng, dtype):
    # (N, C, d) with axis=1, target (N, d), as PyTorch's K-dimensional loss
    x = (rng.standard_normal((3, 7, 5)) * 2).astype(dtype)
    y = rng.integers(0, 7, size=(3, 5))
    y[0, 0] = -100
    for reduction in REDUCTIONS:
        check_all(x, y, dtype, f"axis=1 {reduction}", axis=1, reduction=reduction, label_smoothing=0.05,
                  weight=rng.uniform(0.5, 1.5, 7).astype(dtype))
    q = rng.random((3, 7, 5)).astype(dtype)
    check_all(x, q, dtype, "axis=1 soft", axis=1)
    # (C, N) with axis=0 and axis=-2
    x2 = (rng.standard_normal((6, 10)) * 2).astype(dtype)
    y2 = rng.integers(0, 6, size=10)
    check_all(x2, y2, dtype, "axis=0", axis=0)
    check_all(x2, y2, dtype, "axis=-2", axis=-2, reduction="none")
    # a 1-D logits vector with a scalar target
    v = (rng.standard_normal(9)).astype(dtype)
    check_all(v, np.array(4), dtype, "1-D", reduction="sum")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_non_contiguous_logits(rng, dtype):
    base = make_logits(rng, 12, 40, dtype)
    y = hard_labels(rng, 6, 20)
    for x in [base[::2, ::2], base[::-2, ::-2], np.asfortranarray(base[:6, :20])]:
        check_all(x, y, dtype, "strided", reduction="none", label_smoothing=0.1)
        check_all(x, y, dtype, "strided mean")


# --- out= ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_grad_out_and_in_place(each_backend, rng, dtype):
    x = make_logits(rng, 9, 1003, dtype)
    y = hard_labels(rng, 9, 1003, frac_ignored=0.2)
    kw = dict(label_smoothing=0.1, z_loss=1e-4)
    eg = ref_cross_entropy_grad(x, y, **kw)
    el = ref_cross_entropy(x, y, **kw)

    out = np.full_like(x, 3.0)
    r = fs.cross_entropy_grad(x, y, out=out, **kw)
    assert r is out
    assert_grad_close(out, eg, dtype, "grad out=")

    out = np.full_like(x, 3.0)
    loss, g = fs.cross_entropy_with_grad(x, y, out=out, **kw)
    assert g is out
    assert_grad_close(out, eg, dtype, "with_grad out=")
    check_loss(loss, el, dtype, "mean", "with_grad out= loss")

    xi = x.copy()
    loss, g = fs.cross_entropy_with_grad(xi, y, out=xi, **kw)
    assert g is xi
    assert_grad_close(xi, eg, dtype, "with_grad out=logits")
    check_loss(loss, el, dtype, "mean", "with_grad in-place loss")

    xi = x.copy()
    r = fs.cross_entropy_grad(xi, y, out=xi, **kw)
    assert r is xi
    assert_grad_close(xi, eg, dtype, "grad out=logits")


# --- empty and all-ignored ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_all_ignored(rng, dtype):
    x = make_logits(rng, 5, 4, dtype)
    y = np.full(5, -100)
    for z in [0.0, 0.1]:
        for w in [None, np.ones(4, dtype)]:
            loss = fs.cross_entropy(x, y, z_loss=z, weight=w)
            assert type(loss) is np.dtype(dtype).type and loss == 0.0, loss
            assert not np.isnan(loss)
            loss = fs.cross_entropy(x, y, z_loss=z, weight=w, reduction="sum")
            assert type(loss) is np.dtype(dtype).type and loss == 0.0
            loss = fs.cross_entropy(x, y, z_loss=z, weight=w, reduction="none")
            np.testing.assert_array_equal(loss, np.zeros(5, dtype))
            g = fs.cross_entropy_grad(x, y, z_loss=z, weight=w, label_smoothing=0.2)
            np.testing.assert_array_equal(g, np.zeros_like(x))
            loss, g = fs.cross_entropy_with_grad(x, y, z_loss=z, weight=w)
            assert loss == 0.0 and not np.isnan(loss)
            np.testing.assert_array_equal(g, np.zeros_like(x))


def test_zero_weight_sum_is_not_a_crash(rng):
    # weights that are 0 for every label present: PyTorch gives NaN (0/0); we only require no crash and
    # that the "sum" and "none" reductions are exactly 0
    x = make_logits(rng, 4, 3, np.float64)
    y = np.array([0, 0, 1, 1])
    w = np.array([0.0, 0.0, 1.0])
    assert fs.cross_entropy(x, y, weight=w, reduction="sum") == 0.0
    np.testing.assert_array_equal(fs.cross_entropy(x, y, weight=w, reduction="none"), np.zeros(4))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_zero_rows(dtype):
    x = np.zeros((0, 5), dtype)
    for y in [np.zeros(0, np.int64), np.zeros((0, 5), dtype)]:
        for reduction in ["mean", "sum"]:
            loss = fs.cross_entropy(x, y, reduction=reduction)
            assert type(loss) is np.dtype(dtype).type and loss == 0.0, (reduction, loss)
            loss, g = fs.cross_entropy_with_grad(x, y, reduction=reduction)
            assert loss == 0.0 and g.shape == (0, 5) and g.dtype == dtype
        loss = fs.cross_entropy(x, y, reduction="none")
        assert loss.shape == (0,) and loss.dtype == dtype
        g = fs.cross_entropy_grad(x, y)
        assert g.shape == (0, 5) and g.dtype == dtype
    # (0, C, d) with the class axis in the middle
    x3 = np.zeros((0, 4, 3), dtype)
    assert fs.cross_entropy(x3, np.zeros((0, 3), np.int64), axis=1) == 0.0


def test_integer_logits_become_float64(rng):
    x = rng.integers(-5, 5, size=(4, 6))
    y = rng.integers(0, 6, size=4)
    loss = fs.cross_entropy(x, y)
    assert type(loss) is np.float64
    assert_log_close(np.asarray(loss), np.asarray(ref_cross_entropy(x, y)), np.float64, "int logits")
    assert fs.cross_entropy_grad(x, y).dtype == np.float64


def test_array_like_inputs():
    logits = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    target = [2, 0]
    loss = fs.cross_entropy(logits, target)
    assert type(loss) is np.float64
    assert_log_close(np.asarray(loss), np.asarray(ref_cross_entropy(np.array(logits), np.array(target))),
                     np.float64, "lists")


def test_special_values_in_logits(rng):
    """-inf on non-target classes (vocabulary masking) is finite; NaN in a row makes its loss NaN."""
    x = make_logits(rng, 4, 10, np.float64)
    y = np.array([1, 2, 3, 4])
    x[0, 5:] = -np.inf
    x[1, 0] = np.nan
    loss = fs.cross_entropy(x, y, reduction="none")
    assert np.isfinite(loss[0]) and np.isnan(loss[1]) and np.isfinite(loss[2:]).all()
    assert_log_close(loss[[0, 2, 3]], ref_cross_entropy(x[[0, 2, 3]], y[[0, 2, 3]], reduction="none"),
                     np.float64, "masked vocabulary")
    g = fs.cross_entropy_grad(x[[0]], y[[0]])
    assert np.all(g[0, 5:] == 0)
    assert_grad_close(g, ref_cross_entropy_grad(x[[0]], y[[0]]), np.float64, "masked grad")
    assert np.isnan(fs.cross_entropy(x, y))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_huge_vocabulary_in_place(each_backend, rng, dtype):
    """C large enough for a row to be split across threads; the gradient written over the logits."""
    c = 262_147
    x = make_logits(rng, 2, c, dtype)
    y = np.array([5, c - 1])
    kw = dict(label_smoothing=0.05, z_loss=1e-4)
    el, eg = ref_cross_entropy(x, y, **kw), ref_cross_entropy_grad(x, y, **kw)
    xi = x.copy()
    loss, g = fs.cross_entropy_with_grad(xi, y, out=xi, **kw)
    assert g is xi
    check_loss(loss, el, dtype, "mean", "huge C loss")
    assert_grad_close(xi, eg, dtype, "huge C grad")
    q = soft_labels(rng, 2, c, dtype)
    check_loss(fs.cross_entropy(x, q, reduction="none"), ref_cross_entropy(x, q, reduction="none"), dtype, "none",
               "huge C soft")


def test_byte_order_and_alignment(rng):
    x = make_logits(rng, 6, 9, np.float64)
    y = hard_labels(rng, 6, 9)
    e, eg = ref_cross_entropy(x, y, reduction="none"), ref_cross_entropy_grad(x, y)
    assert_log_close(fs.cross_entropy(x.astype(">f8"), y, reduction="none"), e, np.float64, "big-endian logits")
    assert_log_close(fs.cross_entropy(x, y.astype(">i4"), reduction="none"), e, np.float64, "big-endian target")
    raw = np.zeros(x.size * 8 + 1, np.uint8)
    xu = np.frombuffer(raw.data, np.float64, x.size, 1).reshape(x.shape)
    xu[...] = x
    assert_log_close(fs.cross_entropy(xu, y, reduction="none"), e, np.float64, "unaligned logits")
    assert fs.cross_entropy_grad(x, y, out=xu) is xu
    assert_grad_close(xu, eg, np.float64, "unaligned out=")
