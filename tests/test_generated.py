"""Generated inputs (hypothesis) for every function, layout and option, against SciPy and PyTorch in
float64, within the accuracy bounds of the docs (float32: 2e-6; float64: 1e-14; tests/reference.py).

Each example draws a shape, a dtype (float32/float64, either byte order), a memory layout (C, Fortran,
strided, reversed, the axis not last), a row length near a SIMD width or a block boundary, a scale,
special values (NaN, +-inf, huge) at any position, and the function's options. The reference is the
same formula evaluated by SciPy (``scipy.special``) or PyTorch (``torch.nn.functional``, autograd for
gradients) in float64 on the same values. Known defects (tests/defects.py) are kept out of the draws
while open; tests/test_defects.py reproduces each.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import scipy.special as sps
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastsoftmax as fs
from defects import is_open
from reference import assert_grad_close, assert_log_close, assert_prob_close

# Examples per property: enough to cover the option grid over runs, few enough for a few seconds each
# on 2 cores; FASTSOFTMAX_GENERATED_EXAMPLES raises it for a longer search.
EXAMPLES = int(os.environ.get("FASTSOFTMAX_GENERATED_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Row lengths around the vector widths (4/8/16 lanes, unrolled x4) and the kernels' 2048-element blocks.
ROW_LENGTHS = [1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 127, 129, 255, 257, 1000,
               2047, 2048, 2049, 4095, 4097, 6145]
# Above this, a row is "long": the other dimensions stay small so an example stays cheap.
LONG_ROW = 300
BLOCK = 2048  # the row block of the kernels' online recurrence (defect 1)
FLOATS = ["<f4", ">f4", "<f8", ">f8"]
LAYOUTS = ["C", "F", "strided", "reversed"]
TEMPERATURES = [1.0, 1.0, 0.25, 0.7, 3.0, 10.0]
# Extended precision for the references of float64 results (80-bit on x86-64, 128-bit on aarch64).
WIDE = np.longdouble
# A logit standing in for -inf (exp underflows to 0 next to any other logit), and the size beyond which
# PyTorch's float64 reference of the z-loss gradient loses its digits.
MASKED = 1e4


def native(dtype: np.dtype) -> np.dtype:
    return np.dtype(dtype).newbyteorder("=")


def huge(dtype: np.dtype) -> float:
    """Finite values that overflow a naive exp, far from the dtype's overflow (the docs' 1e30 / 1e300)."""
    return 1e30 if native(dtype) == np.float32 else 1e300


def with_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """The same values as ``x`` in another memory layout."""
    if layout == "F":
        return np.asfortranarray(x)
    if layout == "strided":
        buf = np.zeros(tuple(2 * s for s in x.shape), dtype=x.dtype)
        view = buf[tuple(slice(None, None, 2) for _ in x.shape)]
        view[...] = x
        return view
    if layout == "reversed":
        flip = tuple(slice(None, None, -1) for _ in x.shape)
        return np.ascontiguousarray(x[flip])[flip]
    return np.ascontiguousarray(x)


@st.composite
def cases(draw, *, max_ndim: int = 3, specials: tuple[str, ...] = ("nan", "inf", "-inf", "huge", "-huge"),
          temperature: bool = False):
    """(x, axis, temperature, rng): x in some dtype and layout, axis the row axis (an int)."""
    dtype = np.dtype(draw(st.sampled_from(FLOATS)))
    ndim = draw(st.integers(1, max_ndim))
    axis = draw(st.integers(-ndim, ndim - 1))
    n = draw(st.sampled_from(ROW_LENGTHS))
    others = [draw(st.integers(1, 2 if n > LONG_ROW else 9)) for _ in range(ndim)]
    shape = tuple(n if d == axis % ndim else s for d, s in enumerate(others))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-3, 1.0, 3.0, 30.0]))
    offset = draw(st.sampled_from([0.0, -60.0, 1e4]))
    x = rng.standard_normal(shape) * scale + offset
    t = draw(st.sampled_from(TEMPERATURES)) if temperature else 1.0
    if is_open(3):
        t = 1.0
    kinds = list(specials)
    if is_open(1) and n > BLOCK and "nan" in kinds:
        kinds.remove("nan")
    for _ in range(draw(st.integers(0, 3)) if kinds else 0):
        kind = draw(st.sampled_from(kinds))
        value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "huge": huge(dtype), "-huge": -huge(dtype)}[kind]
        x.flat[draw(st.integers(0, x.size - 1))] = value
    if draw(st.booleans()):  # a whole row of one special value
        kind = draw(st.sampled_from(kinds)) if kinds else "huge"
        row = rng.integers(0, x.size // n)
        moved = np.moveaxis(x, axis, -1).reshape(-1, n)
        moved[row] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}.get(kind, huge(dtype))
        x = np.moveaxis(moved.reshape(np.moveaxis(x, axis, -1).shape), -1, axis)
    x = with_layout(x.astype(dtype), draw(st.sampled_from(LAYOUTS)))
    return x, axis, t, rng


def shifted(x: np.ndarray, axis, t: float) -> tuple[np.ndarray, np.ndarray]:
    """((x - m) / t, m) in extended precision (np.longdouble), m the row's largest finite value.

    The float64 formula is no reference for float64 results: x / t rounds x's digits away (1e4 / 0.7
    loses 2e-12), and x - max rounds to half an ulp of |x - max| (1.4e-14 relative in exp(-145)), which
    the kernels avoid. SciPy's functions run on the extended-precision values.
    """
    x = f64(x).astype(WIDE)
    with quiet():
        m = np.max(np.where(np.isfinite(x), x, -np.inf), axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return (x - m) / t, m


def as_result(ref: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The float64 reference as the result dtype can hold it: beyond its range, the infinity."""
    ref = f64(ref)
    with quiet():
        return np.where(np.abs(ref) > np.finfo(dtype).max, np.sign(ref) * np.inf, ref)


def f64(a: np.ndarray) -> np.ndarray:
    """A C-ordered float64 copy (PyTorch takes no negative strides)."""
    return np.array(a, dtype=np.float64, order="C")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """References meet inf - inf and log 0 on purpose: no warnings."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# ------------------------------------------------------------------------------------------------
# softmax family and logsumexp against SciPy


@SETTINGS
@given(cases(temperature=True), st.sampled_from(["softmax", "log_softmax", "softmin"]))
def test_softmax_family_matches_scipy(case, name):
    x, axis, t, _ = case
    ref_x, _ = shifted(-f64(x) if name == "softmin" else x, axis, t)
    with quiet():
        ref = (sps.log_softmax if name == "log_softmax" else sps.softmax)(ref_x, axis=axis)
    # a NaN or +inf makes the whole row NaN (SciPy's log_softmax keeps -inf beside +inf)
    poisoned = np.any(np.isnan(ref_x) | np.isposinf(ref_x), axis=axis, keepdims=True)
    ref = np.where(poisoned, np.nan, ref)
    got = getattr(fs, name)(x, axis=axis, temperature=t)
    assert got.dtype == native(x.dtype) and got.shape == x.shape
    ctx = f"{name} {x.dtype} {x.shape} axis={axis} T={t}"
    if name == "log_softmax":
        assert_log_close(got, ref, native(x.dtype), ctx)
    else:
        assert_prob_close(got, ref, native(x.dtype), ctx)


# SciPy before 1.16 summed +inf terms of both signs to +inf; fastsoftmax (and SciPy since) gives NaN.
with np.errstate(invalid="ignore"):
    SCIPY_INF_MINUS_INF_IS_NAN = bool(np.isnan(sps.logsumexp([np.inf, np.inf], b=[1.0, -1.0])))


@SETTINGS
@given(cases(temperature=True), st.sampled_from(["none", "ones", "positive", "signed"]),
       st.booleans(), st.booleans(), st.sampled_from(["int", "tuple", "None"]))
def test_logsumexp_matches_scipy(case, b_kind, keepdims, return_sign, axis_kind):
    x, axis, t, rng = case
    ax = {"int": axis, "tuple": (axis,) if x.ndim == 1 else (axis, (axis + 1) % x.ndim), "None": None}[axis_kind]
    b = None
    if b_kind != "none":
        # broadcast along a kept axis (size 1) or the full shape; zeros mask an element
        shape = tuple(1 if (d != axis % x.ndim and rng.random() < 0.5) else s for d, s in enumerate(x.shape))
        b = {"ones": np.ones(shape), "positive": rng.uniform(0, 3, shape) * (rng.random(shape) > 0.2),
             "signed": rng.uniform(-3, 3, shape)}[b_kind].astype(native(x.dtype))
        if (is_open(5) or not SCIPY_INF_MINUS_INF_IS_NAN) and b_kind == "signed":
            x = np.where(np.isposinf(x), huge(x.dtype), x).astype(x.dtype)
    kw = dict(keepdims=keepdims, return_sign=return_sign)
    # b == 0 masks an element, whatever its value (SciPy would give 0 * exp(nan) = nan)
    xr, m = shifted(x if b is None else np.where(b == 0, -np.inf, f64(x)), ax, t)
    if not keepdims:
        m = np.squeeze(m, axis=ax)
    with quiet():
        ref = sps.logsumexp(xr, axis=ax, b=None if b is None else f64(b), **kw)
        # |sum b e^x| against sum |b| e^x: how much cancellation amplifies the rounding of each term
        mag = sps.logsumexp(xr, axis=ax, b=None if b is None else np.abs(f64(b)), keepdims=keepdims)
    got = fs.logsumexp(x, axis=ax, b=b, temperature=t, **kw)
    r_ref, s_ref = ref if return_sign else (ref, None)
    r_got, s_got = got if return_sign else (got, None)
    r_ref = np.asarray(r_ref) * t + m
    ctx = f"logsumexp {x.dtype} {x.shape} axis={ax} T={t} b={b_kind} keepdims={keepdims}"
    assert np.shape(r_got) == np.shape(r_ref), ctx
    assert np.asarray(r_got).dtype == native(x.dtype), ctx
    with quiet():
        cond = np.exp(np.abs(mag * t + m - r_ref) / t)
    cond = np.where(np.isfinite(cond), cond, 1.0)
    # 2 ulp of float32/float64 per unit of cancellation; rows cancelling by > 1e3 are not accuracy cases
    keep = cond < 1e3
    tol = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-14}[native(x.dtype)]
    assert_log_close(np.asarray(r_got)[keep], r_ref[keep], native(x.dtype), ctx,
                     atol=tol * float(cond[keep].max(initial=1.0)))
    if return_sign:
        fin = np.isfinite(r_ref) & keep
        np.testing.assert_array_equal(np.asarray(s_got)[fin], np.asarray(s_ref)[fin], err_msg=ctx)


# ------------------------------------------------------------------------------------------------
# backward against PyTorch autograd


@SETTINGS
@given(cases(specials=("-inf",)), st.sampled_from(["softmax", "log_softmax"]))
def test_backward_matches_torch_autograd(case, name):
    torch = pytest.importorskip("torch")
    x, axis, _, rng = case
    xt = torch.tensor(f64(x), requires_grad=True)
    fn = torch.softmax if name == "softmax" else torch.log_softmax
    yt = fn(xt, dim=axis)
    assume(bool(torch.isfinite(yt).any(dim=axis).all()))  # a row of all -inf has no gradient
    g = with_layout(rng.standard_normal(x.shape).astype(x.dtype), "F" if rng.random() < 0.5 else "C")
    (ref,) = torch.autograd.grad(yt, xt, torch.tensor(f64(g)))
    y = yt.detach().numpy().astype(x.dtype)
    got = (fs.softmax_backward if name == "softmax" else fs.log_softmax_backward)(g, y, axis)
    ref = ref.numpy()
    if name == "log_softmax":  # the formula g - exp(log y) * sum g: -inf entries give g there
        ref = np.where(np.isneginf(f64(y)), f64(g), ref)
    # y is rounded to x's dtype: its rounding reaches the result through sum(g * y) (softmax) or
    # sum(g) (log_softmax), so the error is measured against the size of those terms
    terms = np.abs(f64(g)) if name == "softmax" else np.abs(f64(g)).sum(axis=axis)
    scale = max(float(terms.max()), float(np.abs(ref).max()))
    assert_grad_close(got, ref, native(x.dtype), f"{name}_backward {x.dtype} {x.shape} axis={axis}", scale=scale)


# ------------------------------------------------------------------------------------------------
# cross-entropy against PyTorch


@st.composite
def ce_options(draw, dtype: np.dtype):
    soft = draw(st.booleans())
    opts = dict(
        reduction=draw(st.sampled_from(["mean", "sum", "none"])),
        label_smoothing=draw(st.sampled_from([0.0, 0.0, 0.1, 0.5])),
        z_loss=draw(st.sampled_from([0.0, 0.0, 1e-4, 0.1])),
        softcap=draw(st.sampled_from([None, None, 5.0, 30.0, 50.0])),
    )
    if is_open(7) and native(dtype) == np.float32 and (opts["softcap"] or 0) >= 32:
        opts["softcap"] = 30.0
    return soft, draw(st.booleans()), draw(st.sampled_from([-100, 1])), opts


def torch_cross_entropy(o, target, soft, weight, ignore_index, reduction, label_smoothing, z_loss, softcap):
    """(loss, d loss / d o, per-row losses) in float64 by PyTorch; o is (N, C), classes last."""
    import torch
    import torch.nn.functional as F

    ot = torch.tensor(o, requires_grad=True)
    capped = softcap * torch.tanh(ot / softcap) if softcap else ot
    tt = torch.tensor(target)
    wt = None if weight is None else torch.tensor(weight)
    common = dict(weight=wt, label_smoothing=label_smoothing)
    if not soft:
        common["ignore_index"] = ignore_index
    rows = F.cross_entropy(capped, tt, reduction="none", **common)
    kept = torch.ones(len(o), dtype=torch.bool) if soft else tt != ignore_index
    zero = torch.zeros(len(o), dtype=ot.dtype)
    z = torch.where(kept, z_loss * torch.logsumexp(capped, dim=-1) ** 2, zero) if z_loss else zero
    rows = rows + z
    if reduction == "none":
        loss, total = rows, rows.sum()
    else:
        ce = F.cross_entropy(capped, tt, reduction=reduction, **common)
        zz = z.sum() / kept.sum() if reduction == "mean" else z.sum()
        loss = total = ce + zz
    (grad,) = torch.autograd.grad(total, ot)
    return loss.detach().numpy(), grad.numpy(), rows.detach().numpy()


@SETTINGS
@given(cases(max_ndim=2, specials=("-inf", "huge", "-huge", "nan")), st.data())
def test_cross_entropy_matches_torch(case, data):
    pytest.importorskip("torch")
    x, axis, _, rng = case
    dtype = native(x.dtype)
    soft, weighted, ignore_index, opts = data.draw(ce_options(x.dtype))
    o = np.moveaxis(f64(x), axis, -1).reshape(-1, x.shape[axis])
    n, c = o.shape
    if soft:
        kind = data.draw(st.sampled_from(["probabilities", "one-hot", "unnormalised"]))
        q = {"probabilities": sps.softmax(rng.standard_normal((n, c)) * 2, axis=-1),
             "one-hot": np.eye(c)[rng.integers(0, c, n)],
             "unnormalised": rng.uniform(0, 2, (n, c))}[kind]
        target_rows = q.astype(dtype)
        if is_open(4):
            o = np.where(np.isneginf(o), -MASKED, o)
    else:
        target_rows = rng.integers(0, c, n)
        target_rows[rng.random(n) < 0.2] = ignore_index
        assume(ignore_index != 1 or c > 1)
        assume((target_rows != ignore_index).any())  # PyTorch's all-ignored mean is NaN, ours 0.0
        if is_open(4) and opts["label_smoothing"] > 0:
            o = np.where(np.isneginf(o), -MASKED, o)
    if opts["z_loss"]:
        # PyTorch's float64 logsumexp backward rounds lse - o to 0 at |o| ~ 1e30 (each p_i becomes 1)
        o = np.where(np.isfinite(o) & (np.abs(o) > MASKED), np.sign(o) * MASKED, o)
    o_ref = o
    if soft and opts["label_smoothing"] == 0:
        # A class with no target mass adds 0 even at a -inf logit (docs/api.md §3); PyTorch's
        # 0 · log 0 is NaN there, so its reference sees a finite stand-in for such a logit.
        # (With smoothing every class has mass ε/C, and the loss is +inf in both.)
        has_softmax = np.isfinite(o).any(axis=-1, keepdims=True)
        o_ref = np.where(np.isneginf(o) & (target_rows == 0) & has_softmax, -MASKED, o)
    weight = rng.uniform(0.2, 2.0, c).astype(dtype) if weighted else None
    # the same values in the drawn layout, classes back on `axis`
    moved_shape = np.moveaxis(np.empty(x.shape), axis, -1).shape
    logits = with_layout(np.moveaxis(o.reshape(moved_shape), -1, axis).astype(dtype), "F" if x.flags.f_contiguous else "C")
    target = (np.moveaxis(target_rows.reshape(moved_shape), -1, axis) if soft
              else target_rows.reshape(moved_shape[:-1]))
    kw = dict(axis=axis, weight=weight, ignore_index=ignore_index, **opts)
    with quiet():
        ref_loss, ref_grad, ref_rows = torch_cross_entropy(
            o_ref.astype(dtype).astype(np.float64), f64(target_rows) if soft else target_rows, soft,
            None if weight is None else f64(weight), ignore_index, **opts)
    ctx = f"cross_entropy {dtype} {x.shape} axis={axis} soft={soft} weight={weighted} {opts}"
    loss = fs.cross_entropy(logits, target, **kw)
    if opts["reduction"] == "none":
        ref_loss = ref_loss.reshape(moved_shape[:-1])
    # PyTorch computes o - logsumexp(o) in float64: a few ulp of the largest |o| in every exponent,
    # which matters next to float64's own bound when logits are large
    finite = np.abs(o[np.isfinite(o)])
    unc = 8 * np.finfo(np.float64).eps * float(finite.max(initial=1.0))
    tol = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-14}[dtype]
    assert_log_close(loss, as_result(ref_loss, dtype), dtype, ctx, atol=tol + unc)
    loss2, grad = fs.cross_entropy_with_grad(logits, target, **kw)
    np.testing.assert_array_equal(loss2, loss, err_msg=ctx)
    # an infinite or NaN row loss has no gradient to compare
    ok = np.isfinite(ref_rows) & np.isfinite(ref_grad).all(axis=1)
    grad_rows = np.moveaxis(np.asarray(grad), axis, -1).reshape(n, c)
    # the scale of a row's terms p - q (weighted, over the mean's denominator), which may cancel
    wmax = 1.0 if weight is None else float(weight.max())
    if opts["reduction"] != "mean":
        den = 1.0
    elif soft:
        den = float(n)
    else:
        kept_w = np.ones(n) if weight is None else f64(weight)[np.where(target_rows == ignore_index, 0, target_rows)]
        den = float(kept_w[target_rows != ignore_index].sum())
    qmax = float(np.abs(target_rows).max()) if soft else 1.0
    scale = max(wmax * max(1.0, qmax) / den, float(np.abs(ref_grad[ok]).max(initial=0.0))) * (1 + unc / tol)
    assert_grad_close(grad_rows[ok], ref_grad[ok], dtype, ctx, scale=scale)
    np.testing.assert_array_equal(fs.cross_entropy_grad(logits, target, **kw), grad, err_msg=ctx)
    # out=logits: the gradient in place, the same values
    inplace = logits.copy(order="K")
    loss3, g3 = fs.cross_entropy_with_grad(inplace, target, out=inplace, **kw)
    assert g3 is inplace
    np.testing.assert_array_equal(g3, grad, err_msg=ctx + " out=logits")


# ------------------------------------------------------------------------------------------------
# entropy and KL divergence against scipy.special.entr / rel_entr


@SETTINGS
@given(cases(specials=("huge", "-inf")), st.booleans(), st.sampled_from([None, 2.0, 10.0]),
       st.sampled_from(["entropy", "kl"]))
def test_entropy_and_kl_match_scipy(case, from_logits, base, name):
    x, axis, _, rng = case
    dtype = native(x.dtype)
    y = with_layout(rng.standard_normal(x.shape).astype(x.dtype) * 2, "C")
    if from_logits:
        assume(bool(np.isfinite(sps.logsumexp(f64(x), axis=axis)).all()))
        p, q, args = sps.softmax(f64(x), axis=axis), sps.softmax(f64(y), axis=axis), (x, y)
    else:
        p = np.abs(np.nan_to_num(f64(x), posinf=0, neginf=0)) * (rng.random(x.shape) > 0.1)
        q = np.abs(f64(y)) * (rng.random(x.shape) > 0.05) + (p > 0) * 1e-3
        p = (p / np.maximum(p.sum(axis=axis, keepdims=True), 1e-300)).astype(dtype)
        q = (q / np.maximum(q.sum(axis=axis, keepdims=True), 1e-300)).astype(dtype)
        args = (with_layout(p, "F"), q)
        p, q = f64(p), f64(q)
    # The terms summed exactly: NumPy sums a strided axis one by one, which drifts by ~100 ulp
    # over a thousand equal terms (hypothesis found such a row).
    terms = sps.entr(p) if name == "entropy" else sps.rel_entr(p, q)
    ref = np.apply_along_axis(math.fsum, axis, terms) if terms.size else terms.sum(axis=axis)
    if name == "entropy":
        got = fs.entropy(args[0], axis, base=base, from_logits=from_logits)
    else:
        got = fs.kl_divergence(*args, axis, base=base, from_logits=from_logits)
    if base is not None:
        ref = ref / np.log(base)
    assert_log_close(got, ref, dtype, f"{name} {x.dtype} {x.shape} axis={axis} logits={from_logits} base={base}")
