"""The eight defects of issue 9, each as the property a generated-input test finds, on explicit inputs.

Strict xfails while the defect is open (tests/defects.py); a fix makes them XPASS, which fails the run
until the defect's number leaves ``defects.OPEN``. Kernel defects run on every SIMD backend of the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sps

import fastsoftmax as fs
from defects import xfail
from reference import assert_log_close, assert_prob_close

# ------------------------------------------------------------------------------------------------
# 1. a NaN in a row longer than the kernels' 2048-element block

BLOCK = 2048


def _nan_rows() -> dict[str, np.ndarray]:
    rows = {}
    x = np.zeros(4097)
    x[:BLOCK] = np.nan
    rows["first-block-all-nan-4097"] = x
    x = np.zeros(2049)
    x[:BLOCK] = np.nan
    rows["first-block-all-nan-2049"] = x
    x = np.full(2049, -np.inf)
    x[100] = np.nan
    rows["all-neg-inf-one-nan-2049"] = x
    x = np.zeros(4097)
    x[0], x[BLOCK - 1] = 5.0, np.nan
    rows["nan-at-2047-4097"] = x
    return rows


NAN_ROWS = _nan_rows()
# What loses the NaN today: the same on AVX2, AVX-512 (x86-64) and NEON (aarch64, under qemu-user);
# the scalar kernel only in the rows whose first block is all NaN.
_REDUCE = {"softmax", "softmin", "log_softmax", "logsumexp", "cross_entropy_soft", "cross_entropy_grad"}
_LOST = {
    ("first-block-all-nan-4097", "f32"): _REDUCE,
    ("first-block-all-nan-4097", "f64"): _REDUCE,
    ("first-block-all-nan-2049", "f32"): _REDUCE,
    ("first-block-all-nan-2049", "f64"): {"softmax", "softmin"},
    ("nan-at-2047-4097", "f32"): _REDUCE | {"cross_entropy"},
    ("nan-at-2047-4097", "f64"): _REDUCE | {"cross_entropy"},
}

def _loses_nan_today(backend: str, name: str, dtype: str, row: str) -> bool:
    if backend == "scalar" and not row.startswith("first-block"):
        return False
    return name in _LOST.get((row, dtype), set())


def _row_outputs(name: str, x: np.ndarray) -> list[np.ndarray]:
    """Every output of `name` on the (1, n) row x that a NaN must turn into NaN."""
    n = x.shape[-1]
    x2 = x[None, :]
    g = np.linspace(-1, 1, n, dtype=x.dtype)[None, :]
    if name in ("softmax", "log_softmax", "softmin", "logsumexp"):
        return [np.asarray(getattr(fs, name)(x2))]
    if name == "cross_entropy":
        return [np.asarray(fs.cross_entropy(x2, np.array([1]), reduction="none"))]
    if name == "cross_entropy_soft":
        q = np.full_like(x2, 1.0 / n)
        return [np.asarray(v) for v in fs.cross_entropy_with_grad(x2, q, reduction="none")]
    if name == "cross_entropy_grad":
        return [fs.cross_entropy_with_grad(x2, np.array([1]), reduction="none")[1]]
    if name == "entropy":
        return [np.asarray(fs.entropy(x2, from_logits=True))]
    if name == "kl_divergence":
        return [np.asarray(fs.kl_divergence(x2, np.zeros_like(x2), from_logits=True))]
    if name == "softmax_backward":  # the NaN in the upstream gradient
        y = np.full_like(x2, 1.0 / n)
        return [fs.softmax_backward(np.where(np.isnan(x2), np.nan, g), y)]
    if name == "log_softmax_backward":
        logy = np.full_like(x2, -np.log(n))
        return [fs.log_softmax_backward(np.where(np.isnan(x2), np.nan, g), logy)]
    raise AssertionError(name)


ROW_FUNCTIONS = ["softmax", "log_softmax", "softmin", "logsumexp", "cross_entropy", "cross_entropy_soft",
                 "cross_entropy_grad", "entropy", "kl_divergence", "softmax_backward", "log_softmax_backward"]


@pytest.mark.parametrize("row", list(NAN_ROWS))
@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("name", ROW_FUNCTIONS)
def test_defect1_nan_in_long_row(request, each_backend, name, dtype, row):
    x = NAN_ROWS[row].astype({"f32": np.float32, "f64": np.float64}[dtype])
    if name.endswith("_backward") and row == "all-neg-inf-one-nan-2049":
        pytest.skip("the backward kernels take the NaN in the upstream gradient: a -inf row is no case")
    request.applymarker(xfail(1, f"{name} {row} on {each_backend}",
                              condition=_loses_nan_today(each_backend, name, dtype, row)))
    for o in _row_outputs(name, x):
        assert np.isnan(o).all(), f"{name} on {each_backend}: a NaN in the row must make it NaN, got {o.ravel()[:4]}"


# ------------------------------------------------------------------------------------------------
# 2. NumPy's scalar and result_type rules (SciPy's)


@xfail(2)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_defect2_zero_d_input_gives_numpy_scalar(name):
    got = getattr(fs, name)(1000.0)
    assert type(got) is np.float64, type(got)
    assert got == getattr(sps, name)(1000.0)


@xfail(2)
@pytest.mark.parametrize("b_dtype", [np.int32, np.int64])
def test_defect2_logsumexp_result_type(b_dtype):
    a = np.array([2.0, 1.0], dtype=np.float32)
    b = np.array([1, -1], dtype=b_dtype)
    assert fs.logsumexp(a, b=b).dtype == np.result_type(a, b) == np.float64


# ------------------------------------------------------------------------------------------------
# 3. temperature keeps the accuracy bound


@pytest.mark.parametrize("name", [pytest.param("softmax", marks=xfail(3)),
                                  pytest.param("log_softmax", marks=xfail(3)), "logsumexp"])
def test_defect3_temperature_accuracy(each_backend, name):
    rng = np.random.default_rng(93)
    worst = []
    for dtype, offset in [(np.float32, 0.0), (np.float64, 1e4)]:
        x = (3 * rng.standard_normal((64, 257)) + offset).astype(dtype)
        xw = x.astype(np.longdouble)
        s = (xw - xw.max(axis=-1, keepdims=True)) / 0.1
        ref = {"softmax": lambda: sps.softmax(s, axis=-1), "log_softmax": lambda: sps.log_softmax(s, axis=-1),
               "logsumexp": lambda: 0.1 * sps.logsumexp(s, axis=-1) + xw.max(axis=-1)}[name]()
        got = getattr(fs, name)(x, temperature=0.1)
        check = assert_prob_close if name == "softmax" else assert_log_close
        try:
            check(got, ref.astype(np.float64), dtype, f"{name} {np.dtype(dtype)} T=0.1 on {each_backend}")
        except AssertionError as e:
            worst.append(str(e))
    assert not worst, worst


# ------------------------------------------------------------------------------------------------
# 4. soft labels on a -inf logit: +inf, as PyTorch and -q log 0


@xfail(4)
@pytest.mark.parametrize("case", ["soft", "one-hot", "soft-label-smoothing"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_defect4_mass_on_neg_inf_logit(case, dtype):
    o = np.array([[-np.inf, 0.5]], dtype=dtype)
    target, kw = {"soft": (np.array([[0.3, 0.7]], dtype=dtype), {}),
                  "one-hot": (np.array([[1.0, 0.0]], dtype=dtype), {}),
                  "soft-label-smoothing": (np.array([[0.0, 1.0]], dtype=dtype), {"label_smoothing": 0.1})}[case]
    assert fs.cross_entropy(o, target, reduction="none", **kw)[0] == np.inf


# ------------------------------------------------------------------------------------------------
# 5. logsumexp with b over +inf entries of both signs: inf - inf


@xfail(5)
@pytest.mark.parametrize("return_sign", [False, True])
def test_defect5_logsumexp_inf_both_signs(return_sign):
    a, b = np.array([np.inf, np.inf]), np.array([2.0, -1.0])
    got = fs.logsumexp(a, b=b, return_sign=return_sign)
    # SciPy (1.17) gives NaN, and a NaN sign: 2 inf - inf has no value and no sign
    assert np.isnan(np.asarray(got, dtype=float)).all(), got


# ------------------------------------------------------------------------------------------------
# 6. big-endian float16


@xfail(6)
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin", "logsumexp", "entropy"])
def test_defect6_big_endian_float16(name):
    x = np.array([[1.0, 2.0, 0.5]], dtype=">f2")
    got = getattr(fs, name)(x)
    want = getattr(fs, name)(x.astype("<f2"))
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------------------------
# 7. a large softcap keeps float32's digits of the capped logit


@xfail(7)
def test_defect7_softcap_50_float32(each_backend):
    torch = pytest.importorskip("torch")
    o = np.array([[170.66513, 0.9961158]], dtype=np.float32)
    loss = fs.cross_entropy(o, np.array([0]), softcap=50.0, reduction="none")
    capped = 50.0 * torch.tanh(torch.tensor(o.astype(np.float64)) / 50.0)
    ref = torch.nn.functional.cross_entropy(capped, torch.tensor([0]), reduction="none").numpy()
    assert loss[0] >= 0
    assert_log_close(loss, ref, np.float32, f"softcap=50 on {each_backend}")


# ------------------------------------------------------------------------------------------------
# 8. an output that aliases an input


@pytest.mark.parametrize("order", [pytest.param("C", marks=xfail(8)), "F"])
def test_defect8_out_aliases_soft_labels(order):
    rng = np.random.default_rng(8)
    o = rng.standard_normal((5, 7))
    q = np.asarray(sps.softmax(rng.standard_normal((5, 7)), axis=-1), order=order)
    want_loss, want_grad = fs.cross_entropy_with_grad(o, q.copy(order=order))
    loss, grad = fs.cross_entropy_with_grad(o, q, out=q)
    assert grad is q
    np.testing.assert_array_equal(loss, want_loss)
    np.testing.assert_array_equal(grad, want_grad)
