"""Every error of docs/api.md §5, and nothing written to out= or to the input when one is raised."""

from __future__ import annotations

import numpy as np
import pytest

import fastsoftmax as fs

SENTINEL = 12345.0


def raises_untouched(exc, func, *arrays, match=None, **kw):
    """func(*arrays, **kw) raises exc; every array argument (and out=) is unchanged afterwards."""
    watched = [a for a in arrays if isinstance(a, np.ndarray)]
    for v in kw.values():
        if isinstance(v, np.ndarray):
            watched.append(v)
    before = [a.copy() for a in watched]
    with pytest.raises(exc, match=match) as info:
        func(*arrays, **kw)
    for a, b in zip(watched, before):
        np.testing.assert_array_equal(a, b, err_msg=f"{func.__name__} wrote to an array before raising")
    return info


SOFTMAX_LIKE = [fs.softmax, fs.log_softmax, fs.softmin]
ALL_ROW_FUNCS = SOFTMAX_LIKE + [fs.logsumexp]


# --- ValueError -------------------------------------------------------------------------------------

@pytest.mark.parametrize("func", ALL_ROW_FUNCS)
@pytest.mark.parametrize("axis", [2, -3, 17, (0, 2), (0, -3), (0, 0), (1, -1)])
def test_axis_out_of_range_or_repeated(func, axis):
    x = np.random.default_rng().standard_normal((4, 5))
    raises_untouched(ValueError, func, x, axis=axis)


@pytest.mark.parametrize("func", SOFTMAX_LIKE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_wrong_shape_dtype_readonly(func, dtype):
    x = np.random.default_rng().standard_normal((6, 9)).astype(dtype)
    raises_untouched(ValueError, func, x, out=np.full((6, 8), SENTINEL, dtype))
    raises_untouched(ValueError, func, x, out=np.full((9, 6), SENTINEL, dtype))
    raises_untouched(ValueError, func, x, out=np.full((6, 9, 1), SENTINEL, dtype))
    raises_untouched(ValueError, func, x, out=np.full(54, SENTINEL, dtype))
    other = np.float64 if dtype == np.float32 else np.float32
    raises_untouched(ValueError, func, x, out=np.full((6, 9), SENTINEL, other))
    ro = np.full((6, 9), SENTINEL, dtype)
    ro.flags.writeable = False
    raises_untouched(ValueError, func, x, out=ro)
    # in place on a read-only input
    xr = x.copy()
    xr.flags.writeable = False
    raises_untouched(ValueError, func, xr, out=xr)
    # a bad axis with a valid out=x: the input is left as it was
    xi = x.copy()
    raises_untouched(ValueError, func, xi, axis=3, out=xi)
    raises_untouched(ValueError, func, xi, temperature=0.0, out=xi)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logsumexp_out_errors(dtype):
    x = np.random.default_rng().standard_normal((6, 9)).astype(dtype)
    raises_untouched(ValueError, fs.logsumexp, x, out=np.full(9, SENTINEL, dtype))
    raises_untouched(ValueError, fs.logsumexp, x, out=np.full((6, 1), SENTINEL, dtype))  # keepdims=False
    raises_untouched(ValueError, fs.logsumexp, x, keepdims=True, out=np.full(6, SENTINEL, dtype))
    other = np.float64 if dtype == np.float32 else np.float32
    raises_untouched(ValueError, fs.logsumexp, x, out=np.full(6, SENTINEL, other))
    ro = np.full(6, SENTINEL, dtype)
    ro.flags.writeable = False
    raises_untouched(ValueError, fs.logsumexp, x, out=ro)
    # b that does not broadcast
    raises_untouched(ValueError, fs.logsumexp, x, b=np.ones(8, dtype), out=np.full(6, SENTINEL, dtype))
    raises_untouched(ValueError, fs.logsumexp, x, b=np.ones((7, 9), dtype))


@pytest.mark.parametrize("func", ALL_ROW_FUNCS)
@pytest.mark.parametrize("t", [0.0, -1.0, -0.0])
def test_temperature_not_positive(func, t):
    x = np.random.default_rng().standard_normal((3, 5))
    raises_untouched(ValueError, func, x, temperature=t)


def ce_inputs(n=20, c=7, dtype=np.float64):
    rng = np.random.default_rng()
    return rng.standard_normal((n, c)).astype(dtype), rng.integers(0, c, size=n)


CE_FUNCS = [fs.cross_entropy, fs.cross_entropy_grad, fs.cross_entropy_with_grad]


@pytest.mark.parametrize("func", CE_FUNCS)
def test_cross_entropy_value_errors(func):
    x, y = ce_inputs()
    raises_untouched(ValueError, func, x, y, reduction="avg")
    raises_untouched(ValueError, func, x, y, reduction="MEAN")
    for eps in [-0.1, 1.5, float("nan")]:
        raises_untouched(ValueError, func, x, y, label_smoothing=eps)
    raises_untouched(ValueError, func, x, y, weight=np.ones(6))
    raises_untouched(ValueError, func, x, y, weight=np.ones(8))
    raises_untouched(ValueError, func, x, y, weight=np.ones((7, 1)))
    # target shapes
    raises_untouched(ValueError, func, x, y[:-1])
    raises_untouched(ValueError, func, x, y[:, None])
    raises_untouched(ValueError, func, x, np.zeros((20, 6)))          # soft labels of the wrong shape
    raises_untouched(ValueError, func, x, np.zeros(20))               # soft labels without a class axis
    raises_untouched(ValueError, func, x, y, axis=2)
    raises_untouched(ValueError, func, x, y, axis=-3)


@pytest.mark.parametrize("func", [fs.cross_entropy_grad, fs.cross_entropy_with_grad])
def test_cross_entropy_out_errors(func):
    x, y = ce_inputs()
    raises_untouched(ValueError, func, x, y, out=np.full((20, 6), SENTINEL))
    raises_untouched(ValueError, func, x, y, out=np.full((20, 7), SENTINEL, np.float32))
    ro = np.full((20, 7), SENTINEL)
    ro.flags.writeable = False
    raises_untouched(ValueError, func, x, y, out=ro)
    # a valid out= with another bad option: nothing written, even in place
    raises_untouched(ValueError, func, x, y, reduction="bad", out=np.full((20, 7), SENTINEL))
    xi = x.copy()
    raises_untouched(ValueError, func, xi, y, label_smoothing=2.0, out=xi)
    raises_untouched(ValueError, func, xi, y, weight=np.ones(3), out=xi)


# --- IndexError -------------------------------------------------------------------------------------

@pytest.mark.parametrize("func", CE_FUNCS)
@pytest.mark.parametrize("bad_label", [5, 123, -2, -101])
def test_label_out_of_range(func, bad_label):
    rng = np.random.default_rng()
    x = rng.standard_normal((60, 5))
    y = rng.integers(0, 5, size=60)
    y[41] = bad_label
    info = raises_untouched(IndexError, func, x, y)
    msg = str(info.value)
    assert str(bad_label) in msg and "41" in msg, msg
    for reduction in ["sum", "none"]:
        raises_untouched(IndexError, func, x, y, reduction=reduction)
    # -100 is the default ignore_index; with another ignore_index it is out of range
    y2 = rng.integers(0, 5, size=60)
    y2[7] = -100
    raises_untouched(IndexError, func, x, y2, ignore_index=-1)


@pytest.mark.parametrize("func", [fs.cross_entropy_grad, fs.cross_entropy_with_grad])
@pytest.mark.parametrize("pos", ["first", "middle", "last"])
def test_label_error_writes_nothing_large(func, pos):
    """A bad label anywhere in a large batch (several threads' worth): out= and the logits untouched."""
    rng = np.random.default_rng()
    n, c = 4096, 257
    x = rng.standard_normal((n, c)).astype(np.float32)
    y = rng.integers(0, c, size=n)
    i = {"first": 0, "middle": n // 2 + 3, "last": n - 1}[pos]
    y[i] = c
    raises_untouched(IndexError, func, x, y, out=np.full((n, c), SENTINEL, np.float32))
    xi = x.copy()
    raises_untouched(IndexError, func, xi, y, out=xi)
    raises_untouched(IndexError, func, xi, y, out=xi, label_smoothing=0.1, z_loss=1e-3)


def test_uint64_label_does_not_wrap_to_ignore_index():
    x = np.random.default_rng().standard_normal((3, 4))
    y = np.array([0, 2**64 - 100, 1], dtype=np.uint64)  # -100 if reinterpreted as int64
    for func in CE_FUNCS:
        raises_untouched(IndexError, func, x, y)
    y = np.array([0, 2**63 + 1, 1], dtype=np.uint64)
    for func in CE_FUNCS:
        raises_untouched(IndexError, func, x, y)


def test_label_error_position_in_nd_target():
    rng = np.random.default_rng()
    x = rng.standard_normal((3, 6, 4))
    y = rng.integers(0, 6, size=(3, 4))
    y[2, 1] = 99
    info = raises_untouched(IndexError, fs.cross_entropy, x, y, axis=1)
    assert "99" in str(info.value)


# --- TypeError ----------------------------------------------------------------------------------------

BAD_DTYPES = [np.complex64, np.complex128, object]


@pytest.mark.parametrize("func", ALL_ROW_FUNCS)
@pytest.mark.parametrize("dtype", BAD_DTYPES + ["U3"])
def test_unsupported_dtypes(func, dtype):
    x = np.ones((3, 4)).astype(dtype)
    with pytest.raises(TypeError):
        func(x)


@pytest.mark.parametrize("func", CE_FUNCS)
@pytest.mark.parametrize("dtype", BAD_DTYPES)
def test_cross_entropy_unsupported_dtypes(func, dtype):
    x, y = ce_inputs()
    with pytest.raises(TypeError):
        func(x.astype(dtype), y)
    with pytest.raises(TypeError):
        func(x, y.astype(dtype))


def test_complex_out_rejected():
    x = np.ones((3, 4))
    out = np.full((3, 4), SENTINEL, np.complex128)
    with pytest.raises((TypeError, ValueError)):
        fs.softmax(x, out=out)
    assert np.all(out == SENTINEL)


def test_out_must_be_an_ndarray():
    x = np.ones((2, 3))
    with pytest.raises((TypeError, ValueError)):
        fs.softmax(x, out=[[0.0] * 3] * 2)


def test_errors_are_not_panics():
    """A Rust panic surfaces as pyo3's PanicException (a BaseException); every error must be an Exception."""
    x = np.ones((2, 3))
    for call in [
        lambda: fs.softmax(x, axis=5),
        lambda: fs.cross_entropy(x, np.array([0, 9])),
        lambda: fs.cross_entropy(x, np.array([0])),
        lambda: fs.logsumexp(x, out=np.zeros(5)),
    ]:
        try:
            call()
        except Exception:
            pass
        except BaseException as e:  # pragma: no cover - reports a panic
            pytest.fail(f"non-Exception error {type(e).__name__}: {e}")
        else:
            pytest.fail("no error raised")
