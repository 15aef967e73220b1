"""The half-precision route (float16, bfloat16): the conversions over every 16-bit value on every
instruction set, and every function's answer equal, bit for bit, to the float32 answer on the widened
input rounded back (NaN as NaN), for odd sizes, special values, row lengths on each kernel path and
every layout (C, Fortran, strided, reduced axes elsewhere, ``out=`` new, in place, overlapping)."""

from __future__ import annotations

import numpy as np
import pytest

import fastsoftmax as fs
import fastsoftmax._native as native

HALF = [np.dtype(np.float16)]
try:
    import ml_dtypes

    HALF.append(np.dtype(ml_dtypes.bfloat16))
except ImportError:  # pragma: no cover - optional
    ml_dtypes = None

U16 = np.dtype(np.uint16)

# NaN and out-of-range values are part of what is converted on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:(invalid value|overflow) encountered:RuntimeWarning")

#: rows x cols on each kernel path: tiny rows (tiles, a partial tile), ordinary rows, rows longer
#: than one block, and rows split across threads (widened whole)
SHAPES = [(37, 1), (1041, 7), (300, 64), (33, 65), (9, 1000), (3, 70_001), (2, (1 << 17) + 3)]


def _ids(dt):
    return dt.name


def every_value(dt):
    return np.arange(1 << 16, dtype=np.uint32).astype(U16).view(dt)


def probes(dt):
    """float32 values around every rounding decision of `dt`: its values, the midpoints between
    neighbours and one float32 ulp either side, specials, float32 subnormals, random bit patterns."""
    v = every_value(dt).astype(np.float64)
    v = np.sort(v[np.isfinite(v)])
    mid = ((v[1:] + v[:-1]) / 2).astype(np.float32)
    base = np.concatenate([v.astype(np.float32), mid])
    up, down = np.nextafter(base, np.float32(np.inf)), np.nextafter(base, np.float32(-np.inf))
    bits = np.random.default_rng(7).integers(0, 1 << 32, 1 << 18, dtype=np.uint64).astype(np.uint32)
    special = np.array([np.inf, -np.inf, np.nan, 65504, 65520, 2.0**-25, 2.0**-24, 1e-45, -1e-45,
                        3.4e38], np.float32)
    return np.concatenate([base, up, down, bits.view(np.float32), special])


def same(a, b, ctx=""):
    """Equal bits, NaN matching NaN (payloads are not part of the answer)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, ctx
    wa, wb = a.astype(np.float64), b.astype(np.float64)
    nan = np.isnan(wa)
    assert np.array_equal(nan, np.isnan(wb)), f"{ctx}: NaN pattern"
    bits = a.view(U16) if a.dtype.itemsize == 2 else a.view(np.uint32)
    other = b.view(U16) if b.dtype.itemsize == 2 else b.view(np.uint32)
    bad = (bits != other) & ~nan
    assert not bad.any(), f"{ctx}: {bad.sum()} differ, first at {np.argwhere(bad)[0]}"


# --------------------------------------------------------------------------------------------------
# conversions


@pytest.mark.parametrize("dt", HALF, ids=_ids)
def test_every_half_value_widens_exactly(each_backend, dt):
    h = every_value(dt)
    wide = np.empty(h.shape, np.float32)
    native.convert_half(h.view(U16), wide, dt.name)
    same(wide, h.astype(np.float32), f"{dt} widen on {each_backend}")


@pytest.mark.parametrize("dt", HALF, ids=_ids)
def test_narrowing_rounds_like_numpy(each_backend, dt):
    x = probes(dt)
    h = np.empty(x.shape, dt)
    native.convert_half(x, h.view(U16), dt.name)
    same(h, x.astype(dt), f"{dt} narrow on {each_backend}")
    # NaN stays NaN of its sign; finite values beyond the range become infinities of their sign.
    assert np.array_equal(np.signbit(h.astype(np.float32)), np.signbit(x))


# --------------------------------------------------------------------------------------------------
# every function against the float32 route


def _data(rng, dt, shape, lo=-8.0, hi=8.0, specials=True):
    x = rng.uniform(lo, hi, shape)
    if specials and x.size > 8:
        flat = x.reshape(-1)
        flat[[x.size // 3, x.size // 2, x.size - 1]] = [np.nan, np.inf, -np.inf]
        if x.ndim == 2 and x.shape[0] > 2:
            x[1] = -np.inf
    return x.astype(dt)


def _via_f32(f, *args, dt, **kw):
    """The float32 route: widen, call, round each result back to `dt`."""
    wide = [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == dt else a
            for a in args]
    r = f(*wide, **kw)
    if isinstance(r, tuple):
        return tuple(np.asarray(v).astype(dt) for v in r)
    return np.asarray(r).astype(dt)


def _probs(rng, dt, shape):
    p = rng.uniform(0, 1, shape)
    p[p < 0.05] = 0.0
    return p.astype(dt)


FUNCS = {
    "softmax": lambda x, y: fs.softmax(x),
    "log_softmax_T": lambda x, y: fs.log_softmax(x, temperature=1.7),
    "softmin": lambda x, y: fs.softmin(x),
    "logsumexp": lambda x, y: fs.logsumexp(x, axis=-1),
    "logsumexp_T": lambda x, y: fs.logsumexp(x, axis=-1, temperature=0.3),
    "logsumexp_b": lambda x, y: fs.logsumexp(x, axis=-1, b=y, return_sign=True),
    "logsumexp_b_T": lambda x, y: fs.logsumexp(x, axis=-1, b=y, temperature=3.0),
    "softmax_backward": lambda x, y: fs.softmax_backward(x, y),
    "log_softmax_backward": lambda x, y: fs.log_softmax_backward(x, y),
    "entropy": lambda x, y: fs.entropy(y),
    "entropy_logits": lambda x, y: fs.entropy(x, from_logits=True),
    "kl": lambda x, y: fs.kl_divergence(y, y[::-1].copy()),
    "kl_logits": lambda x, y: fs.kl_divergence(x, x[::-1].copy(), from_logits=True),
}


@pytest.mark.parametrize("dt", HALF, ids=_ids)
@pytest.mark.parametrize("name", sorted(FUNCS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_function_matches_float32(rng, dt, name, shape):
    f = FUNCS[name]
    x, y = _data(rng, dt, shape), _probs(rng, dt, shape)
    same(f(x, y), _via_f32(f, x, y, dt=dt), f"{name} {dt} {shape}")


#: the cross-entropy options, each on every path (tiles, rows, split rows)
CE_CASES = {
    "hard": {},
    "hard_sum_weight": {"reduction": "sum", "weight": True},
    "hard_none_ignored": {"reduction": "none", "ignore_index": 3},
    "smoothing_z_loss": {"label_smoothing": 0.1, "z_loss": 1e-3, "weight": True},
    "softcap": {"softcap": 5.0},
    "soft": {"soft": True},
    "soft_none_smoothing": {"soft": True, "reduction": "none", "label_smoothing": 0.2},
}


@pytest.mark.parametrize("dt", HALF, ids=_ids)
@pytest.mark.parametrize("case", sorted(CE_CASES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_cross_entropy_matches_float32(rng, dt, case, shape):
    """Half logits go through the float32 kernel block by block: the gradient and per-row losses
    are the float32 answers rounded, bit for bit; the reduced loss is rounded once from float64
    (the float32 route rounds it twice), so it may sit one half ulp away."""
    kw = dict(CE_CASES[case])
    rows, cols = shape
    x = _data(rng, dt, shape)
    if kw.pop("soft", False):
        target = _probs(rng, dt, shape)
    else:
        target = rng.integers(0, cols, rows)
        target[::5] = kw.get("ignore_index", -100)
    if kw.pop("weight", False):
        kw["weight"] = rng.uniform(0.5, 2.0, cols).astype(dt)
    loss, grad = fs.cross_entropy_with_grad(x, target, **kw)
    wide = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    t32 = target.astype(np.float32) if target.dtype == dt else target
    loss32, grad32 = fs.cross_entropy_with_grad(x.astype(np.float32), t32, **wide)
    assert grad.dtype == dt and np.asarray(loss).dtype == dt
    same(grad, grad32.astype(dt), f"{case} gradient")
    if kw.get("reduction") == "none":
        same(loss, loss32.astype(dt), f"{case} losses")
    else:
        want = np.float64(loss32)
        assert (np.isnan(want) and np.isnan(np.float64(loss))) or abs(np.float64(loss) - want) <= \
            np.spacing(np.abs(dt.type(want))).astype(np.float64), f"{case} loss {loss} vs {loss32}"
    # the loss alone and the gradient alone are the same numbers
    same(fs.cross_entropy(x, target, **kw), loss, f"{case} loss only")
    same(fs.cross_entropy_grad(x, target, **kw), grad, f"{case} gradient only")


@pytest.mark.parametrize("dt", HALF, ids=_ids)
def test_cross_entropy_gradient_in_place_and_into_out(rng, dt):
    x = _data(rng, dt, (300, 70))
    y = rng.integers(0, 70, 300)
    loss, grad = fs.cross_entropy_with_grad(x, y)
    out = np.empty_like(x)
    assert fs.cross_entropy_with_grad(x, y, out=out)[1] is out
    same(out, grad, "out=")
    inplace = x.copy()
    assert fs.cross_entropy_with_grad(inplace, y, out=inplace)[1] is inplace
    same(inplace, grad, "out=logits")
    strided = np.empty((300, 140), dt)[:, ::2]
    fs.cross_entropy_with_grad(x, y, out=strided)
    same(strided, grad, "strided out=")


@pytest.mark.parametrize("dt", HALF, ids=_ids)
def test_the_blocked_route_is_taken(monkeypatch, rng, dt):
    calls = []
    for entry in ("softmax", "softmax_backward", "logsumexp", "logsumexp_b", "entropy",
                  "cross_entropy"):
        real = getattr(native, entry)

        def spy(*a, _r=real, _n=entry, **kw):
            if kw.get("half") == np.dtype(dt).name:
                calls.append(_n)
            return _r(*a, **kw)

        monkeypatch.setattr(native, entry, spy)
    real_convert = native.convert_half

    def narrow_only(src, dst, half):  # the whole-array widening is not used
        assert src.dtype != U16, "an input was widened whole"
        real_convert(src, dst, half)

    monkeypatch.setattr(native, "convert_half", narrow_only)
    x, y = _data(rng, dt, (6, 50)), _probs(rng, dt, (6, 50))
    for f in FUNCS.values():
        f(x, y)
    fs.cross_entropy_with_grad(x, rng.integers(0, 50, 6))
    fs.cross_entropy_with_grad(x, y)
    assert sorted(set(calls)) == ["cross_entropy", "entropy", "logsumexp", "logsumexp_b",
                                  "softmax", "softmax_backward"]


def test_a_half_entry_names_its_type():
    words = np.zeros((2, 3), U16)
    with pytest.raises(ValueError, match="half must be"):
        native.softmax(words, None, 1.0, False, half="float8")
    with pytest.raises(ValueError, match="half must be"):
        native.convert_half(words, np.empty((2, 3), np.float32), "half")


@pytest.mark.parametrize("dt", HALF, ids=_ids)
def test_every_backend(each_backend, rng, dt):
    x, y = _data(rng, dt, (67, 301)), _probs(rng, dt, (67, 301))
    for name, f in FUNCS.items():
        same(f(x, y), _via_f32(f, x, y, dt=dt), f"{name} {dt} on {each_backend}")
    for target in (rng.integers(0, 301, 67), y):
        t32 = target.astype(np.float32) if target.dtype == dt else target
        grad32 = fs.cross_entropy_grad(x.astype(np.float32), t32, reduction="sum")
        same(fs.cross_entropy_grad(x, target, reduction="sum"), grad32.astype(dt),
             f"cross_entropy_grad {target.dtype} on {each_backend}")


def _layouts(rng, dt):
    """The same values in several memory layouts."""
    base = _data(rng, dt, (2, 9, 31))
    yield "C", base
    yield "F", np.asfortranarray(base)
    yield "strided", _data(rng, dt, (2, 18, 62))[:, ::2, ::2]
    yield "byteswapped", base.astype(base.dtype.newbyteorder()) if dt.kind == "f" else base


@pytest.mark.parametrize("dt", HALF, ids=_ids)
@pytest.mark.parametrize("axis", [-1, 0, 1, (0, 2), None])
def test_layouts_and_axes(rng, dt, axis):
    for what, x in _layouts(rng, dt):
        xn = x.astype(dt)
        for f in (fs.softmax, fs.log_softmax):
            same(f(x, axis), _via_f32(f, xn, axis, dt=dt), f"{f.__name__} {what} axis={axis}")
        same(fs.logsumexp(x, axis), _via_f32(fs.logsumexp, xn, axis, dt=dt), f"lse {what}")
        if axis in (-1, 0, 1):
            y = fs.softmax(xn, axis)
            same(fs.softmax_backward(x, y, axis), _via_f32(fs.softmax_backward, xn, y, axis, dt=dt),
                 f"backward {what} axis={axis}")
            same(fs.entropy(x, axis, from_logits=True),
                 _via_f32(fs.entropy, xn, axis, dt=dt, from_logits=True), f"entropy {what}")


@pytest.mark.parametrize("dt", HALF, ids=_ids)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_out_new_in_place_and_overlapping(rng, dt, name):
    f = getattr(fs, name)
    x = _data(rng, dt, (13, 333))
    want = _via_f32(f, x, dt=dt)
    out = np.empty_like(x)
    assert f(x, out=out) is out
    same(out, want, "out=")
    inplace = x.copy()
    assert f(inplace, out=inplace) is inplace
    same(inplace, want, "in place")
    fortran = np.empty(x.shape, dt, order="F")
    f(x, out=fortran)
    same(fortran, want, "Fortran out=")
    strided = np.empty((13, 666), dt)[:, ::2]
    f(x, out=strided)
    same(strided, want, "strided out=")
    # `out` overlapping the input one row further on: the answer of a separate `out`.
    buf = np.empty((14, 333), dt)
    buf[:13] = x
    f(buf[:13], out=buf[1:])
    same(buf[1:], want, "overlapping out=")
    # a column view of the input written in place, the reduced axis not last in memory
    xt = np.ascontiguousarray(x.T)
    f(xt, axis=0, out=xt)
    same(xt, want.T, "in place along axis 0")


@pytest.mark.parametrize("dt", HALF, ids=_ids)
def test_backward_in_place(rng, dt):
    g, y = _data(rng, dt, (7, 301)), _probs(rng, dt, (7, 301))
    want = _via_f32(fs.softmax_backward, g, y, dt=dt)
    for target in ("g", "y"):
        gg, yy = g.copy(), y.copy()
        out = gg if target == "g" else yy
        assert fs.softmax_backward(gg, yy, out=out) is out
        same(out, want, f"out={target}")
    same_arr = g.copy()
    same(fs.softmax_backward(same_arr, same_arr, out=same_arr),
         _via_f32(fs.softmax_backward, g, g, dt=dt), "g is y is out")


@pytest.mark.parametrize("dt", HALF, ids=_ids)
def test_reductions_into_out_and_small_ints(rng, dt):
    x = _data(rng, dt, (5, 77))
    out = np.empty(5, dt)
    assert fs.logsumexp(x, axis=1, out=out) is out
    same(out, _via_f32(fs.logsumexp, x, dt=dt, axis=1), "lse out=")
    # int8 weights are exact in either half type: the blocked route takes them
    b = rng.integers(-3, 4, x.shape).astype(np.int8)
    r = fs.logsumexp(x, axis=1, b=b, return_sign=True)
    want = fs.logsumexp(x.astype(np.float32), axis=1, b=b.astype(np.float32), return_sign=True)
    same(r[0], np.asarray(want[0]).astype(dt), "lse b int8")
    same(r[1], np.asarray(want[1]).astype(dt), "sign b int8")


@pytest.mark.parametrize("dt", HALF, ids=_ids)
def test_empty_and_zero_width(dt):
    for shape in [(0, 5), (4, 0), (0,)]:
        x = np.zeros(shape, dt)
        assert fs.softmax(x).shape == shape
        assert fs.logsumexp(x, axis=-1).shape == shape[:-1]
        assert fs.entropy(x).shape == shape[:-1]
