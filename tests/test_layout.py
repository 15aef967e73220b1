"""Every layout gives the same answer (docs/api.md §2): Fortran order, strided and negative-stride views,
every axis, tuple axes and axis=None; out= in any layout and in place on views."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sps

import fastsoftmax as fs
from reference import (
    assert_log_close,
    assert_prob_close,
    ref_log_softmax,
    ref_logsumexp,
    ref_softmax,
    ref_softmin,
)

DTYPES = [np.float32, np.float64]

FUNCS = {
    "softmax": (fs.softmax, ref_softmax, assert_prob_close),
    "log_softmax": (fs.log_softmax, ref_log_softmax, assert_log_close),
    "softmin": (fs.softmin, ref_softmin, assert_prob_close),
    "logsumexp": (fs.logsumexp, ref_logsumexp, assert_log_close),
}


def views(rng, dtype):
    """(name, array) pairs of one logical shape family in many memory layouts."""
    base = (rng.standard_normal((14, 34, 10)) * 3).astype(dtype)
    b2 = base[:, :, 0].copy()
    yield "C 2-D", b2
    yield "F 2-D", np.asfortranarray(b2)
    yield "strided cols", b2[:, ::2]
    yield "strided rows", b2[::3]
    yield "neg strides", b2[::-1, ::-1]
    yield "neg stride cols", b2[:, ::-3]
    yield "transposed", b2.T
    yield "column slice", base[:, :, 3]
    yield "C 3-D", base
    yield "F 3-D", np.asfortranarray(base)
    yield "3-D strided neg", base[::-2, 1::3, ::-1]
    yield "broadcast (zero stride)", np.broadcast_to(b2[:1], (5, 34))
    yield "1-D strided", base[0, ::-2, 1]


AXES = [-1, 0, 1, 2, (0, 1), (1, 2), (0, 2), (-1, 0), (0, 1, 2), None]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(FUNCS))
def test_every_layout_and_axis(each_backend, rng, name, dtype):
    func, ref, check = FUNCS[name]
    n = 0
    for vname, x in views(rng, dtype):
        x0 = x.copy()
        for axis in AXES:
            if axis is not None:
                ax = [int(a) for a in np.atleast_1d(axis)]
                if any(a >= x.ndim or a < -x.ndim for a in ax) or len({a % x.ndim for a in ax}) < len(ax):
                    continue
            y = func(x, axis=axis)
            e = ref(x, axis=axis)
            assert np.shape(y) == np.shape(e), (vname, axis, np.shape(y), np.shape(e))
            assert np.asarray(y).dtype == dtype
            check(np.asarray(y), e, dtype, f"{name} {vname} axis={axis}")
            n += 1
        np.testing.assert_array_equal(x, x0)
    assert n > 50


@pytest.mark.parametrize("name", list(FUNCS))
def test_layouts_against_scipy(rng, name):
    func, _, check = FUNCS[name]
    sfunc = {"softmax": sps.softmax, "log_softmax": sps.log_softmax, "logsumexp": sps.logsumexp,
             "softmin": lambda x, axis: sps.softmax(-x, axis=axis)}[name]
    x = np.asfortranarray(rng.standard_normal((6, 7, 8)))[:, ::-1]
    for axis in [0, 1, -1, (0, 2), None]:
        check(np.asarray(func(x, axis=axis)), sfunc(x, axis=axis), np.float64, f"{name} axis={axis} vs scipy")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_axis_tuple_equals_reshape(rng, dtype):
    """A tuple of adjacent axes is the same as merging them."""
    x = (rng.standard_normal((5, 6, 7)) * 2).astype(dtype)
    y = fs.softmax(x, axis=(1, 2))
    z = fs.softmax(x.reshape(5, 42), axis=-1).reshape(5, 6, 7)
    assert_prob_close(y, z.astype(np.float64), dtype, "tuple vs reshape", rel=2 * 2e-6 if dtype == np.float32
                      else 2e-14)
    r = fs.logsumexp(x, axis=(1, 2))
    assert_log_close(r, fs.logsumexp(x.reshape(5, 42)).astype(np.float64), dtype, "lse tuple vs reshape")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_out_in_any_layout(each_backend, rng, name, dtype):
    func, ref, check = FUNCS[name]
    x = (rng.standard_normal((9, 21)) * 3).astype(dtype)
    for axis in [-1, 0]:
        e = ref(x, axis=axis)
        outs = {
            "C": np.full((9, 21), 9.0, dtype),
            "F": np.full((9, 21), 9.0, dtype, order="F"),
            "strided": np.full((18, 42), 9.0, dtype)[::2, ::2],
            "negative": np.full((9, 21), 9.0, dtype)[::-1, ::-1],
        }
        for oname, out in outs.items():
            r = func(x, axis=axis, out=out)
            assert r is out
            check(out, e, dtype, f"{name} out={oname} axis={axis}")
        # the parent of a strided out is untouched outside the view
        parent = np.full((18, 42), 9.0, dtype)
        func(x, axis=axis, out=parent[::2, ::2])
        assert np.all(parent[1::2] == 9.0) and np.all(parent[:, 1::2] == 9.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_in_place_on_views(each_backend, rng, name, dtype):
    func, ref, check = FUNCS[name]
    base = (rng.standard_normal((16, 50)) * 3).astype(dtype)
    for vname, sl in [("rows", np.s_[::2]), ("cols", np.s_[:, ::3]), ("neg", np.s_[::-1, ::-2]),
                      ("full", np.s_[:, :])]:
        for axis in [-1, 0, None, (0, 1)]:
            buf = base.copy()
            view = buf[sl]
            e = ref(view, axis=axis)
            r = func(view, axis=axis, out=view)
            assert r is view
            check(view, e, dtype, f"{name} in place {vname} axis={axis}")
            # the rest of the buffer is untouched
            mask = np.ones(buf.shape, bool)
            mask[sl] = False
            np.testing.assert_array_equal(buf[mask], base[mask])
    # in place on a Fortran array along axis 0
    f = np.asfortranarray(base.copy())
    e = ref(f, axis=0)
    assert func(f, axis=0, out=f) is f
    check(f, e, dtype, f"{name} in place F axis=0")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_logsumexp_out_layouts(rng, dtype):
    x = (rng.standard_normal((8, 6, 5)) * 3).astype(dtype)
    e = ref_logsumexp(x, axis=1)
    for out in [np.full((8, 5), 9.0, dtype, order="F"), np.full((16, 10), 9.0, dtype)[::2, ::-2]]:
        r = fs.logsumexp(x, axis=1, out=out)
        assert r is out
        assert_log_close(out, e, dtype, "lse out layout")


def test_b_in_any_layout(rng):
    x = rng.standard_normal((7, 12))
    b = rng.uniform(0.1, 2.0, size=(12, 7)).T  # Fortran-ordered b
    for axis in [-1, 0, None]:
        r = fs.logsumexp(x, axis=axis, b=b)
        assert_log_close(np.asarray(r), sps.logsumexp(x, axis=axis, b=b), np.float64, f"b layout axis={axis}")
        r2 = fs.logsumexp(np.asfortranarray(x)[::-1], axis=axis, b=b[::-1])
        assert_log_close(np.asarray(r2), sps.logsumexp(x[::-1], axis=axis, b=b[::-1]), np.float64, "neg b")


# --- empty arrays (docs/api.md §2) -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_empty_rows(dtype):
    x = np.zeros((4, 0), dtype)
    for func in [fs.softmax, fs.log_softmax, fs.softmin]:
        y = func(x)
        assert y.shape == (4, 0) and y.dtype == dtype
    r = fs.logsumexp(x)
    assert r.shape == (4,) and r.dtype == dtype
    assert np.all(r == -np.inf)
    r = fs.logsumexp(x, keepdims=True)
    assert r.shape == (4, 1) and np.all(r == -np.inf)
    s = fs.logsumexp(x, axis=None)
    assert type(s) is np.dtype(dtype).type and s == -np.inf
    # reducing along the non-empty axis gives an empty result
    r = fs.logsumexp(x, axis=0)
    assert r.shape == (0,) and r.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_empty_batch(dtype):
    x = np.zeros((0, 7), dtype)
    for func in [fs.softmax, fs.log_softmax, fs.softmin]:
        y = func(x)
        assert y.shape == (0, 7) and y.dtype == dtype
        out = np.zeros((0, 7), dtype)
        assert func(x, out=out) is out
        for axis in [0, None, (0, 1)]:
            assert func(x, axis=axis).shape == (0, 7)
    r = fs.logsumexp(x)
    assert r.shape == (0,) and r.dtype == dtype
    r = fs.logsumexp(x, axis=0)
    assert r.shape == (7,) and np.all(r == -np.inf)
    assert fs.logsumexp(np.zeros((0, 3, 5), dtype), axis=(1, 2)).shape == (0,)
    assert fs.logsumexp(np.zeros((2, 0, 5), dtype), axis=(1, 2)).shape == (2,)
    assert fs.softmax(np.zeros(0, dtype)).shape == (0,)


# --- byte order and alignment ------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("dtype", [">f4", ">f8"])
def test_non_native_byte_order(rng, name, dtype):
    func, ref, check = FUNCS[name]
    x = (rng.standard_normal((5, 19)) * 3).astype(dtype)
    native = x.astype(np.dtype(dtype).newbyteorder("="))
    y = np.asarray(func(x))
    assert y.dtype.kind == "f" and y.dtype.itemsize == np.dtype(dtype).itemsize
    check(y.astype(native.dtype), ref(native), native.dtype, f"{name} {dtype}")


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_unaligned_input(rng, name, dtype):
    func, ref, check = FUNCS[name]
    n = 7 * 33
    item = np.dtype(dtype).itemsize
    raw = np.zeros(n * item + 1, np.uint8)
    x = np.frombuffer(raw.data, dtype=dtype, count=n, offset=1).reshape(7, 33)
    assert not x.flags.aligned
    x[...] = rng.standard_normal((7, 33)) * 3
    e = ref(x.copy())
    check(np.asarray(func(x)), e, dtype, f"{name} unaligned")
    if name != "logsumexp":
        xa = x.copy()  # aligned input, unaligned out=
        assert func(xa, out=x) is x
        check(x, e, dtype, f"{name} unaligned out=")
        x[...] = xa
        assert func(x, out=x) is x
        check(x, e, dtype, f"{name} unaligned in place")


def test_b_broadcasts_x_like_scipy(rng):
    """b may broadcast x to a larger shape (SciPy broadcasts a and b together)."""
    x = rng.standard_normal(6)
    b = rng.uniform(0.5, 2.0, size=(4, 6))
    r = fs.logsumexp(x, b=b)
    e = sps.logsumexp(x, axis=-1, b=b)
    assert np.shape(r) == e.shape == (4,)
    assert_log_close(np.asarray(r), e, np.float64, "b broadcasts x")


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_out_overlapping_input_is_right_or_refused(rng, name):
    """out= sharing memory with the input in another layout: a right answer (as NumPy's ufuncs give) or
    a ValueError with nothing written, never a silently wrong answer (docs/api.md §5)."""
    func, ref, check = FUNCS[name]
    x = rng.standard_normal((6, 6)) * 3
    for label, make_out in [("reversed rows", lambda b: b[::-1]), ("transpose", lambda b: b.T),
                            ("reversed cols", lambda b: b[:, ::-1])]:
        buf = x.copy()
        out = make_out(buf)
        e = ref(x)
        try:
            r = func(buf, out=out)
        except ValueError:
            np.testing.assert_array_equal(buf, x, err_msg=f"{name} {label}: wrote before refusing")
            continue
        assert r is out
        check(out, e, np.float64, f"{name} out= overlapping the input ({label})")
