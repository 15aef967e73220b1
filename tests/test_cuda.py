"""GPU (CuPy) path: every function against float64 references and against the CPU path.

Skipped cleanly when CuPy or a GPU is absent (only the import test runs everywhere).
References are computed in float64 with NumPy on the host from the same (rounded) inputs.
"""

from __future__ import annotations

import subprocess
import sys
import zlib

import numpy as np
import pytest

import fastsoftmax as fs

try:
    import cupy as cp

    _NGPU = cp.cuda.runtime.getDeviceCount()
except Exception:  # no CuPy, no driver, no device
    cp = None
    _NGPU = 0

try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:
    ml_dtypes = None
    BF16 = None

gpu = pytest.mark.skipif(cp is None or _NGPU == 0, reason="needs CuPy and a CUDA GPU")

if cp is not None and _NGPU:
    from fastsoftmax import _cuda
else:
    _cuda = None


def fn(name):
    """The public function (dispatching to the GPU), or the CUDA module's when not exported yet."""
    f = getattr(fs, name, None)
    return f if f is not None else getattr(_cuda, name)


DTYPES = ["float32", "float64", "float16", "bfloat16"]


def np_dtype(name):
    if name == "bfloat16":
        if BF16 is None:
            pytest.skip("ml_dtypes not installed")
        return BF16
    return np.dtype(name)


def rounded(a, dt):
    """a (float64) rounded to dt, back as float64: the values the GPU really sees."""
    return np.asarray(a, dtype=np.float64).astype(dt).astype(np.float64)


def to_gpu(a, dt):
    a = np.asarray(a, dtype=np.float64).astype(dt)
    if dt == BF16:
        return cp.asarray(a.view(np.uint16)).view(dt)
    return cp.asarray(a)


def to_host(g):
    if g.dtype.name == "bfloat16":
        return g.view(cp.uint16).get().view(BF16).astype(np.float64)
    return cp.asnumpy(g).astype(np.float64)


def tol(dt):
    """(rtol, atol) for outputs rounded to dt (float32 / float64 per docs/api.md §4)."""
    return {
        "float32": (2e-6, 1e-37),
        "float64": (1e-14, 1e-300),
        "float16": (1.5e-3, 1e-6),
        "bfloat16": (1e-2, 1e-6),
    }[np.dtype(dt).name]


def abs_tol(dt):
    """absolute tolerance factor for log-domain results: err <= f * max(1, |ref|)."""
    return {"float32": 2e-6, "float64": 1e-14, "float16": 2e-3, "bfloat16": 1.6e-2}[
        np.dtype(dt).name
    ]


def assert_log_close(got, ref, dt):
    f = abs_tol(dt)
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    same_nonfinite = (np.isnan(got) & np.isnan(ref)) | (got == ref)
    err = np.abs(got - ref)
    ok = same_nonfinite | (err <= f * np.maximum(1.0, np.abs(ref)))
    assert ok.all(), f"max err {np.nanmax(np.where(same_nonfinite, 0, err))}"


def assert_prob_close(got, ref, dt):
    rtol, atol = tol(dt)
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol, equal_nan=True)


# ------------------------------------------------------------------------------------------------
# float64 references


def ref_log_softmax(x, axis=-1, t=1.0):
    x = np.asarray(x, dtype=np.float64) / t
    with np.errstate(all="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        sh = np.where(np.isfinite(m), m, 0.0)
        s = np.sum(np.exp(x - sh), axis=axis, keepdims=True)
        r = x - sh - np.log(s)
        r = np.where(np.isposinf(m), np.nan, r)
    return r


def ref_softmax(x, axis=-1, t=1.0):
    with np.errstate(all="ignore"):
        x = np.asarray(x, dtype=np.float64) / t
        m = np.max(x, axis=axis, keepdims=True)
        e = np.exp(x - m)
        r = e / np.sum(e, axis=axis, keepdims=True)
    return r


def ref_lse(x, axis=-1, t=1.0, keepdims=False):
    with np.errstate(all="ignore"):
        x = np.asarray(x, dtype=np.float64) / t
        m = np.max(x, axis=axis, keepdims=True)
        sh = np.where(np.isfinite(m), m, 0.0)
        r = sh + np.log(np.sum(np.exp(x - sh), axis=axis, keepdims=True))
        r = np.where(np.isposinf(m), np.inf, r)
        r = np.where(np.isnan(x).any(axis=axis, keepdims=True), np.nan, r)
    if not keepdims:
        r = np.squeeze(r, axis=axis)
    return r * t


def ref_ce(o, y, *, weight=None, ignore_index=-100, reduction="mean", eps=0.0, z=0.0, cap=None):
    """Cross-entropy loss and gradient in float64 (rows on axis 0, classes on axis 1)."""
    o = np.asarray(o, dtype=np.float64)
    N, C = o.shape
    if cap is not None:
        oc = cap * np.tanh(o / cap)
        dcap = 1.0 - np.tanh(o / cap) ** 2
    else:
        oc, dcap = o, np.ones_like(o)
    w = np.ones(C) if weight is None else np.asarray(weight, dtype=np.float64)
    ls = ref_log_softmax(oc, axis=1)
    lse = ref_lse(oc, axis=1)
    p = np.exp(ls)
    soft = np.asarray(y).dtype.kind == "f"
    if soft:
        q = (1 - eps) * np.asarray(y, dtype=np.float64) + eps / C
        main = -(w[None, :] * q * ls).sum(axis=1)
        dmain = (w[None, :] * q).sum(axis=1)[:, None] * p - w[None, :] * q
        valid = np.ones(N, bool)
        den_main = float(N)
        den_z = float(N)
    else:
        y = np.asarray(y).astype(np.int64)
        valid = y != ignore_index
        yc = np.where(valid, y, 0)
        wy = np.where(valid, w[yc], 0.0)
        onehot = np.eye(C)[yc]
        main = wy * (1 - eps) * (-ls[np.arange(N), yc]) + eps / C * (w[None, :] * -ls).sum(axis=1)
        dmain = wy[:, None] * (1 - eps) * (p - onehot) + eps / C * (w.sum() * p - w[None, :])
        den_main = wy.sum()
        den_z = float(valid.sum())
    zt = z * lse**2
    dz = 2 * z * lse[:, None] * p
    main = np.where(valid, main, 0.0)
    zt = np.where(valid, zt, 0.0)
    dmain = np.where(valid[:, None], dmain, 0.0)
    dz = np.where(valid[:, None], dz, 0.0)
    if reduction == "mean":
        im = 1.0 / den_main if den_main != 0 else 0.0
        iz = 1.0 / den_z if den_z != 0 else 0.0
        loss = main.sum() * im + zt.sum() * iz
        grad = dmain * im + dz * iz
    elif reduction == "sum":
        loss = main.sum() + zt.sum()
        grad = dmain + dz
    else:
        loss = main + zt
        grad = dmain + dz
    return loss, grad * dcap


# ------------------------------------------------------------------------------------------------
# import without CuPy


def test_import_never_imports_cupy():
    code = "import sys, fastsoftmax; assert 'cupy' not in sys.modules, 'cupy imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------------------------------------
# softmax family

SHAPES = [(3, 1), (5, 7), (64, 10), (33, 1000), (7, 4096), (3, 32000), (2, 100003), (1, 300000)]


def _rand(shape, seed, scale=3.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_softmax_family_vs_float64(dtype, shape, name):
    dt = np_dtype(dtype)
    x = rounded(_rand(shape, zlib.crc32(repr((dtype, shape, name)).encode())), dt)
    t = 0.7 if shape[1] == 1000 else 1.0
    g = fn(name)(to_gpu(x, dt), temperature=t)
    assert isinstance(g, cp.ndarray) and g.dtype == dt and g.shape == x.shape
    got = to_host(g)
    if name == "log_softmax":
        assert_log_close(got, ref_log_softmax(x, t=t), dt)
    else:
        ref = ref_softmax(-x if name == "softmin" else x, t=t)
        big = ref >= 1e-30
        assert_prob_close(got[big], ref[big], dt)
        np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=0, atol=shape[1] * tol(dt)[0] + 1e-6)


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_matches_cpu_path(dtype, name):
    x = _rand((17, 3001), 5).astype(dtype)
    got = cp.asnumpy(fn(name)(cp.asarray(x)))
    cpu = fn(name)(x)
    if name == "softmax":
        np.testing.assert_allclose(got, cpu, rtol=4 * tol(dtype)[0], atol=1e-37)
    else:
        assert_log_close(got, cpu, dtype)


@gpu
@pytest.mark.parametrize(
    "force", [(1, 16, False), (4, 4, False), (32, 2, False), (64, 4, False), (128, 2, True),
              (256, 4, True), (1024, 1, True)]
)
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_every_kernel_shape(force, name, monkeypatch):
    """Threads-per-row / vectors-per-thread / split variants all compute the same function."""
    tpr, vpt, split = force
    # non-split kernels hold tpr * vpt * vec elements per row; vec is 1 for the unaligned case
    cols = 5000 if split else min(68, tpr * vpt)
    x = _rand((9, cols), 11)
    xf = x.astype(np.float32)
    monkeypatch.setattr(_cuda.launch, "_force_config", force)
    for xs in (xf, xf[:, 1:]):  # aligned (vector loads) and unaligned (scalar loads)
        g = fn(name)(cp.asarray(np.ascontiguousarray(xs)))
        ref = {"softmax": ref_softmax, "log_softmax": ref_log_softmax, "logsumexp": ref_lse}[name](
            xs.astype(np.float64)
        )
        if name == "softmax":
            assert_prob_close(cp.asnumpy(g), ref, "float32")
        else:
            assert_log_close(cp.asnumpy(g), ref, "float32")


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("cols", [9, 3000, 70000])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_special_values(dtype, cols, name):
    dt = np_dtype(dtype)
    x = rounded(_rand((7, cols), 3), dt)
    x[0, cols // 2] = np.nan
    x[1, :] = -np.inf
    x[2, cols - 1] = np.inf
    x[3, ::2] = -np.inf
    big = 1e30 if dtype != "float64" else 1e300
    x[4, :] = rounded(np.linspace(-1, 1, cols) * big, dt) if dtype != "bfloat16" else 1e30
    x[5, 0] = big
    x[6, :] = 0.0
    got = to_host(fn(name)(to_gpu(x, dt)))
    if name == "logsumexp":
        ref = ref_lse(x)
        assert np.isnan(got[0]) and got[1] == -np.inf and got[2] == np.inf
        assert_log_close(got, ref, dt)
        return
    assert np.isnan(got[0]).all() and np.isnan(got[1]).all() and np.isnan(got[2]).all()
    if name == "softmax":
        assert (got[3, ::2] == 0).all()
        ref = ref_softmax(x[3:])
        sel = ref >= 1e-30
        assert_prob_close(got[3:][sel], ref[sel], dt)
        assert np.isfinite(got[3:]).all()
    else:
        assert (got[3, ::2] == -np.inf).all()
        assert_log_close(got[3:], ref_log_softmax(x[3:]), dt)


@gpu
def test_float64_log1p_split():
    x = cp.asarray([0.0, -40.0])
    r = fn("logsumexp")(x)
    assert float(r) == 4.248354255291589e-18
    ls = cp.asnumpy(fn("log_softmax")(cp.asarray(np.array([[0.0, -40.0]] * 3))))
    np.testing.assert_allclose(ls[:, 0], -4.248354255291589e-18, rtol=1e-14)


# ------------------------------------------------------------------------------------------------
# layouts, axes, out=


@gpu
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_layouts_and_axes(name):
    x = _rand((6, 5, 130), 8).astype(np.float32)
    f = fn(name)
    ref_f = {"softmax": ref_softmax, "log_softmax": ref_log_softmax,
             "softmin": lambda a, axis: ref_softmax(-a, axis=axis)}[name]
    cases = [
        (np.asfortranarray(x), -1),
        (x[:, ::2, ::-1], -1),
        (x, 0),
        (x, 1),
        (x, (0, 2)),
        (x, None),
    ]
    for xs, ax in cases:
        g = f(cp.asarray(xs), ax)
        ref = ref_f(xs.astype(np.float64), axis=ax)
        if name == "log_softmax":
            assert_log_close(cp.asnumpy(g), ref, "float32")
        else:
            assert_prob_close(cp.asnumpy(g), ref, "float32")
    # the GPU array itself non-contiguous
    gx = cp.asarray(x)[:, 1:4, ::-3]
    ref = ref_f(x[:, 1:4, ::-3].astype(np.float64), axis=1)
    got = cp.asnumpy(f(gx, 1))
    if name == "log_softmax":
        assert_log_close(got, ref, "float32")
    else:
        assert_prob_close(got, ref, "float32")


@gpu
def test_out_and_in_place():
    x = _rand((20, 333), 9).astype(np.float32)
    ref = ref_softmax(x)
    gx = cp.asarray(x)
    out = cp.empty_like(gx)
    r = fs.softmax(gx, out=out)
    assert r is out
    assert_prob_close(cp.asnumpy(out), ref, "float32")
    r = fs.softmax(gx, out=gx)  # in place
    assert r is gx
    assert_prob_close(cp.asnumpy(gx), ref, "float32")
    # non-contiguous out and axis 0
    gx = cp.asarray(x)
    outT = cp.empty((333, 20), dtype=cp.float32).T
    fs.log_softmax(gx, 0, out=outT)
    assert_log_close(cp.asnumpy(outT), ref_log_softmax(x, axis=0), "float32")
    # in place on a transposed view
    gt = cp.asarray(x.T.copy()).T
    fs.softmax(gt, out=gt)
    assert_prob_close(cp.asnumpy(gt), ref, "float32")


@gpu
def test_out_errors_write_nothing():
    gx = cp.asarray(_rand((4, 8), 1).astype(np.float32))
    keep = gx.copy()
    with pytest.raises(ValueError):
        fs.softmax(gx, out=cp.empty((4, 7), cp.float32))
    with pytest.raises(ValueError):
        fs.softmax(gx, out=cp.empty((4, 8), cp.float64))
    with pytest.raises(ValueError):
        fs.softmax(gx, temperature=0.0, out=gx)
    with pytest.raises(ValueError):
        fs.softmax(gx, axis=2)
    with pytest.raises(TypeError):
        fs.softmax(gx.astype(cp.complex64))
    assert (gx == keep).all()


@gpu
def test_integer_input_becomes_float64():
    x = np.arange(12).reshape(3, 4)
    g = fs.softmax(cp.asarray(x))
    assert g.dtype == cp.float64
    assert_prob_close(cp.asnumpy(g), ref_softmax(x), "float64")


@gpu
def test_empty_inputs():
    g = fs.softmax(cp.empty((3, 0), cp.float32))
    assert g.shape == (3, 0)
    r = fs.logsumexp(cp.empty((3, 0), cp.float32))
    assert r.shape == (3,) and bool((r == -cp.inf).all())
    assert fs.softmax(cp.empty((0, 5), cp.float32)).shape == (0, 5)
    loss = fs.cross_entropy(cp.empty((0, 5), cp.float32), cp.empty((0,), cp.int64))
    assert isinstance(loss, cp.ndarray) and loss.shape == () and float(loss) == 0.0


# ------------------------------------------------------------------------------------------------
# logsumexp


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 7), (33, 1000), (3, 32000), (1, 300000)])
def test_logsumexp_vs_float64(dtype, shape):
    dt = np_dtype(dtype)
    x = rounded(_rand(shape, 21), dt)
    g = fs.logsumexp(to_gpu(x, dt), temperature=1.3)
    assert g.dtype == dt and g.shape == shape[:1]
    assert_log_close(to_host(g), ref_lse(x, t=1.3), dt)


@gpu
def test_logsumexp_axes_keepdims_full_reduction():
    x = _rand((4, 5, 6), 22)
    gx = cp.asarray(x)
    r = fs.logsumexp(gx, axis=None)
    assert isinstance(r, cp.ndarray) and r.shape == ()
    assert_log_close(float(r), ref_lse(x.reshape(-1)), "float64")
    r = fs.logsumexp(gx, axis=(0, 2), keepdims=True)
    assert r.shape == (1, 5, 1)
    assert_log_close(cp.asnumpy(r), ref_lse(x, axis=(0, 2), keepdims=True), "float64")
    out = cp.empty((4, 6))
    assert fs.logsumexp(gx, axis=1, out=out) is out
    assert_log_close(cp.asnumpy(out), ref_lse(x, axis=1), "float64")


@gpu
def test_logsumexp_b_and_sign():
    scipy_special = pytest.importorskip("scipy.special")
    x = _rand((6, 9), 23)
    b = np.random.default_rng(1).standard_normal((6, 9))
    b[:, 0] = 0.0
    x[:, 0] = np.inf  # masked out by b == 0
    r, s = fs.logsumexp(cp.asarray(x), b=cp.asarray(b), return_sign=True)
    rr, ss = scipy_special.logsumexp(x, b=b, axis=-1, return_sign=True)
    assert_log_close(cp.asnumpy(r), rr, "float64")
    np.testing.assert_array_equal(cp.asnumpy(s), ss)
    r = fs.logsumexp(cp.asarray(x), b=cp.asarray(b))
    with np.errstate(all="ignore"):
        rr = scipy_special.logsumexp(x, b=b, axis=-1)
    np.testing.assert_array_equal(np.isnan(cp.asnumpy(r)), np.isnan(rr))
    # broadcasting b
    bb = np.abs(b[0])
    r = fs.logsumexp(cp.asarray(x), b=cp.asarray(bb))
    assert_log_close(cp.asnumpy(r), scipy_special.logsumexp(x, b=bb, axis=-1), "float64")
    # without b the sign is 1 (0 for -inf)
    x[1, :] = -np.inf
    r, s = fs.logsumexp(cp.asarray(x[:, 1:]), return_sign=True)
    assert cp.asnumpy(s).tolist() == [1.0, 0.0, 1.0, 1.0, 1.0, 1.0]


# ------------------------------------------------------------------------------------------------
# cross-entropy

CE_CASES = [
    dict(),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(weight=True),
    dict(weight=True, ignore=True),
    dict(ignore=True, reduction="none"),
    dict(eps=0.1),
    dict(eps=0.2, weight=True, ignore=True),
    dict(z=1e-3),
    dict(z=1e-2, ignore=True, weight=True),
    dict(cap=5.0),
    dict(cap=3.0, eps=0.1, z=1e-3, weight=True, ignore=True, reduction="sum"),
    dict(soft=True),
    dict(soft=True, weight=True, eps=0.1),
    dict(soft=True, z=1e-3, cap=4.0, reduction="none"),
]


def _ce_inputs(case, N, C, seed, dt):
    rng = np.random.default_rng(seed)
    o = rounded(rng.standard_normal((N, C)) * 3, dt)
    if case.get("soft"):
        q = rng.random((N, C))
        q /= q.sum(axis=1, keepdims=True)
        y = rounded(q, dt)
    else:
        y = rng.integers(0, C, N)
        if case.get("ignore"):
            y[::3] = -100
    w = rounded(rng.random(C) + 0.5, dt) if case.get("weight") else None
    return o, y, w


def _ce_kwargs(case, w):
    return dict(
        weight=w,
        reduction=case.get("reduction", "mean"),
        label_smoothing=case.get("eps", 0.0),
        z_loss=case.get("z", 0.0),
        softcap=case.get("cap"),
    )


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(37, 10), (19, 1003), (5, 40000)])
@pytest.mark.parametrize("case", CE_CASES, ids=[str(c) for c in CE_CASES])
def test_cross_entropy_vs_float64(dtype, shape, case):
    dt = np_dtype(dtype)
    N, C = shape
    o, y, w = _ce_inputs(case, N, C, zlib.crc32(repr((dtype, shape, case)).encode()), dt)
    kw = _ce_kwargs(case, w)
    ref_loss, ref_grad = ref_ce(
        o, y, weight=w, reduction=kw["reduction"], eps=kw["label_smoothing"], z=kw["z_loss"],
        cap=kw["softcap"],
    )
    gy = to_gpu(y, dt) if case.get("soft") else cp.asarray(y)
    gw = None if w is None else to_gpu(w, dt)
    kwg = dict(kw, weight=gw)
    loss, grad = fs.cross_entropy_with_grad(to_gpu(o, dt), gy, **kwg)
    assert isinstance(loss, cp.ndarray) and loss.dtype == dt
    assert grad.dtype == dt and grad.shape == o.shape
    if kw["reduction"] == "none":
        assert loss.shape == (N,)
    else:
        assert loss.shape == ()
    assert_log_close(to_host(loss), ref_loss, dt)
    gscale = np.abs(ref_grad).max()
    f = abs_tol(dt) * 4
    np.testing.assert_allclose(to_host(grad), ref_grad, rtol=0, atol=f * gscale)
    # the loss-only and gradient-only entry points agree
    l2 = fs.cross_entropy(to_gpu(o, dt), gy, **kwg)
    assert_log_close(to_host(l2), to_host(loss), dt)
    g2 = fs.cross_entropy_grad(to_gpu(o, dt), gy, **kwg)
    np.testing.assert_allclose(to_host(g2), to_host(grad), rtol=0, atol=f * gscale)


@gpu
@pytest.mark.parametrize("case", CE_CASES[:12], ids=[str(c) for c in CE_CASES[:12]])
def test_cross_entropy_matches_cpu_path(case):
    o, y, w = _ce_inputs(case, 23, 517, 3, np.float32)
    o = o.astype(np.float32)
    w = None if w is None else w.astype(np.float32)
    kw = _ce_kwargs(case, w)
    loss_c, grad_c = fs.cross_entropy_with_grad(o, y, **kw)
    kwg = dict(kw, weight=None if w is None else cp.asarray(w))
    loss_g, grad_g = fs.cross_entropy_with_grad(cp.asarray(o), cp.asarray(y), **kwg)
    assert_log_close(cp.asnumpy(loss_g), np.asarray(loss_c), "float32")
    np.testing.assert_allclose(cp.asnumpy(grad_g), grad_c, rtol=0,
                               atol=1e-5 * np.abs(grad_c).max())


@gpu
def test_cross_entropy_gradient_finite_difference():
    rng = np.random.default_rng(4)
    o = rng.standard_normal((6, 11))
    y = rng.integers(0, 11, 6)
    y[2] = -100
    w = rng.random(11) + 0.5
    kw = dict(weight=cp.asarray(w), label_smoothing=0.15, z_loss=0.01, softcap=2.5)
    _, g = fs.cross_entropy_with_grad(cp.asarray(o), cp.asarray(y), **kw)
    g = cp.asnumpy(g)
    h = 1e-6
    num = np.zeros_like(o)
    for i in range(6):
        for j in range(11):
            d = np.zeros_like(o)
            d[i, j] = h
            lp = float(fs.cross_entropy(cp.asarray(o + d), cp.asarray(y), **kw))
            lm = float(fs.cross_entropy(cp.asarray(o - d), cp.asarray(y), **kw))
            num[i, j] = (lp - lm) / (2 * h)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


@gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("C", [1000, 50000])
def test_cross_entropy_in_place(dtype, C):
    dt = np_dtype(dtype)
    o, y, _ = _ce_inputs({}, 9, C, 6, dt)
    ref_loss, ref_grad = ref_ce(o, y, eps=0.1)
    go = to_gpu(o, dt)
    loss, grad = fs.cross_entropy_with_grad(go, cp.asarray(y), label_smoothing=0.1, out=go)
    assert grad is go
    assert_log_close(to_host(loss), ref_loss, dt)
    np.testing.assert_allclose(to_host(go), ref_grad, rtol=0,
                               atol=4 * abs_tol(dt) * np.abs(ref_grad).max())


@gpu
def test_cross_entropy_axis_and_layout():
    rng = np.random.default_rng(7)
    o = rng.standard_normal((5, 12, 3)).astype(np.float32)  # classes on axis 1
    y = rng.integers(0, 12, (5, 3))
    loss, grad = fs.cross_entropy_with_grad(cp.asarray(o), cp.asarray(y), axis=1)
    o2 = np.moveaxis(o, 1, -1).reshape(-1, 12)
    rl, rg = ref_ce(o2, y.reshape(-1))
    assert_log_close(float(loss), rl, "float32")
    rg = np.moveaxis(rg.reshape(5, 3, 12), -1, 1)
    np.testing.assert_allclose(cp.asnumpy(grad), rg, rtol=0, atol=1e-6 * np.abs(rg).max())
    # int32 labels, unbatched
    l1 = fs.cross_entropy(cp.asarray(o[0, :, 0]), cp.asarray(np.int32(y[0, 0])))
    assert_log_close(float(l1), ref_ce(o[0, :, 0][None], y[0, :1])[0], "float32")


@gpu
def test_cross_entropy_all_ignored_is_zero():
    o = cp.asarray(_rand((4, 6), 1).astype(np.float32))
    y = cp.full(4, -100, dtype=cp.int64)
    loss, grad = fs.cross_entropy_with_grad(o, y, z_loss=0.1)
    assert float(loss) == 0.0 and not bool(grad.any())


@gpu
def test_cross_entropy_bad_label(monkeypatch):
    o = cp.asarray(_rand((4, 6), 1).astype(np.float32))
    y = cp.asarray([1, 2, 6, 0])
    monkeypatch.delenv("FASTSOFTMAX_CUDA_CHECK_LABELS", raising=False)
    loss, grad = fs.cross_entropy_with_grad(o, y, reduction="none")
    lh, gh = cp.asnumpy(loss), cp.asnumpy(grad)
    assert np.isnan(lh[2]) and np.isfinite(lh[[0, 1, 3]]).all()
    assert np.isnan(gh[2]).all() and np.isfinite(gh[[0, 1, 3]]).all()
    assert np.isnan(float(fs.cross_entropy(o, y)))
    monkeypatch.setenv("FASTSOFTMAX_CUDA_CHECK_LABELS", "1")
    out = cp.zeros_like(o)
    with pytest.raises(IndexError, match="6.*position 2"):
        fs.cross_entropy_with_grad(o, y, out=out)
    assert not bool(out.any())


@gpu
def test_cross_entropy_errors():
    o = cp.asarray(_rand((4, 6), 1).astype(np.float32))
    y = cp.asarray([1, 2, 3, 0])
    with pytest.raises(ValueError):
        fs.cross_entropy(o, y, reduction="avg")
    with pytest.raises(ValueError):
        fs.cross_entropy(o, y, label_smoothing=1.5)
    with pytest.raises(ValueError):
        fs.cross_entropy(o, y, weight=cp.ones(5, cp.float32))
    with pytest.raises(ValueError):
        fs.cross_entropy(o, cp.asarray([1, 2, 3]))
    with pytest.raises(ValueError):
        fs.cross_entropy(o, y, softcap=0.0)
    with pytest.raises(TypeError):
        fs.cross_entropy(o, y.astype(cp.complex64))


@gpu
def test_no_host_synchronisation():
    import cupyx

    x = cp.asarray(_rand((64, 5000), 2).astype(np.float32))
    y = cp.asarray(np.random.default_rng(0).integers(0, 5000, 64))
    w = cp.ones(5000, cp.float32)
    fs.cross_entropy_with_grad(x, y)  # compile outside the guard
    fs.softmax(x)
    fs.logsumexp(x, axis=None)
    with cupyx.allow_synchronize(False):
        fs.softmax(x)
        fs.log_softmax(x)
        r = fs.logsumexp(x, axis=None)
        loss, grad = fs.cross_entropy_with_grad(x, y, weight=w, label_smoothing=0.1, z_loss=1e-3)
        l2 = fs.cross_entropy(x, y, ignore_index=3)
    assert isinstance(r, cp.ndarray) and r.shape == ()
    assert isinstance(loss, cp.ndarray) and loss.shape == () and l2.shape == ()


@gpu
def test_runs_on_current_stream():
    x = _rand((300, 7000), 3).astype(np.float32)
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        gx = cp.asarray(x)
        r = fs.softmax(gx)
        lse = fs.logsumexp(gx)
        s.synchronize()
    assert_prob_close(cp.asnumpy(r), ref_softmax(x), "float32")
    assert_log_close(cp.asnumpy(lse), ref_lse(x), "float32")


# ------------------------------------------------------------------------------------------------
# backward passes, entropy, KL


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_backward_entropy_kl(dtype):
    dt = np_dtype(dtype)
    rng = np.random.default_rng(12)
    o = rounded(rng.standard_normal((7, 301)) * 2, dt)
    o2 = rounded(rng.standard_normal((7, 301)) * 2, dt)
    g = rounded(rng.standard_normal((7, 301)), dt)
    p = ref_softmax(o)
    pr = rounded(p, dt)
    qr = rounded(ref_softmax(o2), dt)
    lp = rounded(ref_log_softmax(o), dt)
    f = 8 * abs_tol(dt)

    got = to_host(fn("softmax_backward")(to_gpu(g, dt), to_gpu(pr, dt)))
    ref = pr * (g - (g * pr).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(got, ref, rtol=0, atol=f * np.abs(ref).max())

    got = to_host(fn("log_softmax_backward")(to_gpu(g, dt), to_gpu(lp, dt)))
    ref = g - np.exp(lp) * g.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(got, ref, rtol=0, atol=f * np.abs(ref).max())

    got = to_host(fn("entropy")(to_gpu(o, dt), from_logits=True))
    ref = -(p * ref_log_softmax(o)).sum(axis=-1)
    assert_log_close(got, ref, dt)
    got = to_host(fn("entropy")(to_gpu(pr, dt), base=2))
    with np.errstate(all="ignore"):
        ref = -np.where(pr > 0, pr * np.log(pr), 0).sum(axis=-1) / np.log(2)
    assert_log_close(got, ref, dt)

    got = to_host(fn("kl_divergence")(to_gpu(o, dt), to_gpu(o2, dt), from_logits=True))
    ref = (p * (ref_log_softmax(o) - ref_log_softmax(o2))).sum(axis=-1)
    assert_log_close(got, ref, dt)
    got = to_host(fn("kl_divergence")(to_gpu(pr, dt), to_gpu(qr, dt)))
    with np.errstate(all="ignore"):
        ref = np.where(pr > 0, pr * np.log(pr / qr), 0).sum(axis=-1)
    assert_log_close(got, ref, dt)


# ------------------------------------------------------------------------------------------------
# backward products, entropy and KL: the GPU against the CPU path (itself tested against float64
# references in test_backward.py / test_entropy.py)


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_backward_matches_cpu_path(dtype, axis):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((37, 1001)).astype(dtype)
    g = rng.standard_normal((37, 1001)).astype(dtype)
    y = fs.softmax(x, axis=axis)
    ly = fs.log_softmax(x, axis=axis)
    for name, second in [("softmax_backward", y), ("log_softmax_backward", ly)]:
        cpu = fn(name)(g, second, axis)
        gpu_ = fn(name)(cp.asarray(g), cp.asarray(second), axis)
        assert isinstance(gpu_, cp.ndarray) and gpu_.dtype == cpu.dtype
        # Two implementations each within the docs/api.md §4 bound differ by at most twice it.
        scale = float(np.abs(cpu).max())
        np.testing.assert_allclose(to_host(gpu_), cpu, rtol=0, atol=4 * abs_tol(dtype) * scale)


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("base", [None, 2])
def test_entropy_and_kl_match_cpu_path(dtype, base):
    rng = np.random.default_rng(11)
    p = rng.random((9, 257))
    p /= p.sum(-1, keepdims=True)
    q = rng.random((9, 257))
    q /= q.sum(-1, keepdims=True)
    p[0, :5] = 0.0  # 0 log 0 = 0
    q[1, 3] = 0.0  # p > 0, q = 0: inf
    p[2, 4] = -0.1  # entr(p < 0) = -inf
    p[3, 6] = np.nan
    p, q = p.astype(dtype), q.astype(dtype)
    o = rng.standard_normal((9, 257)).astype(dtype) * 3
    r = rng.standard_normal((9, 257)).astype(dtype) * 3
    o[4, 0] = np.nan
    o[5, :] = -np.inf
    o[6, 2] = -np.inf
    cases = [
        (fn("entropy"), (p,), {}),
        (fn("kl_divergence"), (p, q), {}),
        (fn("entropy"), (o,), {"from_logits": True}),
        (fn("kl_divergence"), (o, r), {"from_logits": True}),
    ]
    for f, args, kw in cases:
        cpu = np.asarray(f(*args, base=base, **kw), dtype=np.float64)
        gpu_ = f(*(cp.asarray(a) for a in args), base=base, **kw)
        assert isinstance(gpu_, cp.ndarray)
        got = to_host(gpu_).astype(np.float64)
        same_special = np.isnan(cpu) == np.isnan(got)
        assert same_special.all(), f"{f.__name__} {kw}: NaN rows differ: {cpu} vs {got}"
        fin = np.isfinite(cpu)
        assert (got[~fin & ~np.isnan(cpu)] == cpu[~fin & ~np.isnan(cpu)]).all(), f"{f.__name__} infinities"
        np.testing.assert_allclose(
            got[fin], cpu[fin], rtol=2 * abs_tol(dtype), atol=2 * abs_tol(dtype)
        )


@gpu
def test_entropy_base_errors():
    p = cp.full((2, 3), 1 / 3, dtype=cp.float32)
    for bad in (0, -2.0, 1):
        with pytest.raises(ValueError):
            fn("entropy")(p, base=bad)
        with pytest.raises(ValueError):
            fn("kl_divergence")(p, p, base=bad)


# ------------------------------------------------------------------------------------------------
# fastsoftmax.torch on CUDA tensors (DLPack to CuPy on PyTorch's current stream)

try:
    import torch

    _TORCH_CUDA = torch.cuda.is_available()
except ImportError:
    torch = None
    _TORCH_CUDA = False

torch_gpu = pytest.mark.skipif(
    not (cp is not None and _NGPU and _TORCH_CUDA), reason="needs CuPy, PyTorch with CUDA and a GPU"
)
TORCH_TOL = {"float64": 1e-12, "float32": 2e-5, "float16": 2e-3, "bfloat16": 1.6e-2}


def _close(got, ref, dtype):
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.double(), ref.double(), rtol=TORCH_TOL[dtype],
                               atol=TORCH_TOL[dtype])


@torch_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_cuda_cross_entropy_softmax(dtype):
    import fastsoftmax.torch as ft

    F = torch.nn.functional
    dt = getattr(torch, dtype)
    g = torch.Generator(device="cuda").manual_seed(zlib.crc32(dtype.encode()))
    x = (torch.randn(37, 11, 3, device="cuda", generator=g) * 3).to(dt).requires_grad_()
    t = torch.randint(0, 11, (37, 3), device="cuda", generator=g)
    x64 = x.detach().double().requires_grad_()
    for reduction in ("mean", "none"):
        loss = ft.cross_entropy(x, t, reduction=reduction, label_smoothing=0.1)
        ref = F.cross_entropy(x64, t, reduction=reduction, label_smoothing=0.1)
        assert loss.dtype == dt and loss.shape == ref.shape
        _close(loss, ref, dtype)
        up = torch.rand(ref.shape, device="cuda", generator=g, dtype=torch.float64)
        (gx,) = torch.autograd.grad(loss, x, up.to(dt))
        (gr,) = torch.autograd.grad(ref, x64, up)
        assert gx.dtype == dt
        _close(gx, gr, dtype)
    for fn, ref_fn in ((ft.softmax, torch.softmax), (ft.log_softmax, torch.log_softmax)):
        y = fn(x, 1)
        _close(y, ref_fn(x64, 1), dtype)
        (gx,) = torch.autograd.grad(y[:, 0].sum(), x)
        (gr,) = torch.autograd.grad(ref_fn(x64, 1)[:, 0].sum(), x64)
        _close(gx, gr, dtype)


@torch_gpu
def test_torch_cuda_linear_cross_entropy_and_side_stream():
    import fastsoftmax.torch as ft

    F = torch.nn.functional
    g = torch.Generator(device="cuda").manual_seed(1)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # the work is queued on PyTorch's current (side) stream
        x = torch.randn(300, 64, device="cuda", generator=g).requires_grad_()
        W = torch.randn(1000, 64, device="cuda", generator=g).requires_grad_()
        t = torch.randint(0, 1000, (300,), device="cuda", generator=g)
        loss = ft.linear_cross_entropy(x, W, t, chunk_size=128)
        loss.backward()
        ref = F.cross_entropy(x.detach().double() @ W.detach().double().T, t)
    stream.synchronize()
    _close(loss, ref, "float32")
    x64, W64 = (a.detach().double().requires_grad_() for a in (x, W))
    F.cross_entropy(x64 @ W64.T, t).backward()
    _close(x.grad, x64.grad, "float32")
    _close(W.grad, W64.grad, "float32")
