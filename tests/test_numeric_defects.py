"""Numeric cases that once went wrong, on every SIMD backend, through the public API.

- A NaN anywhere in a row makes the row's outputs NaN, also past the 2048-element blocks of the
  online (max, sum) pass and the 65536-element segments of split rows.
- Cross-entropy with label mass on a ``-inf`` logit is ``+inf`` (PyTorch), and finite without mass.
- ``logsumexp`` with ``b`` over ``+inf`` entries of both signs is NaN (SciPy: inf - inf).
- A temperature keeps the accuracy bounds (float32: softmax 2e-6 relative for outputs >= 1e-30;
  float64: 1e-14) on every path, for softmin too, and for huge inputs (1e10 in float32, 1e300 in
  float64), whose rounded ``x / T`` is off by more than the whole range of ``exp``.
- ``softcap`` >= 32 keeps a confident row's float32 loss within 2e-6 of the float64 reference.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastsoftmax as fs
from reference import assert_log_close, assert_prob_close

BLOCK = 2048
SEGMENT = 65536


def _row_outputs(x: np.ndarray) -> dict[str, np.ndarray]:
    """Every row-reducing function's output on the one-row matrix `x`."""
    cols = x.shape[-1]
    soft = np.full_like(x, 1.0 / cols)
    other = np.linspace(-1.0, 1.0, cols).astype(x.dtype)[None, :]
    y = fs.softmax(other)
    loss, grad = fs.cross_entropy_with_grad(x, np.array([0]), reduction="none")
    sloss, sgrad = fs.cross_entropy_with_grad(x, soft, reduction="none")
    return {
        "softmax": fs.softmax(x),
        "softmax T=0.5": fs.softmax(x, temperature=0.5),
        "log_softmax": fs.log_softmax(x),
        "softmin": fs.softmin(x),
        "logsumexp": fs.logsumexp(x, axis=-1),
        "logsumexp T=2": fs.logsumexp(x, axis=-1, temperature=2.0),
        "ce loss": loss,
        "ce grad": grad,
        "ce soft loss": sloss,
        "ce soft grad": sgrad,
        "entropy": fs.entropy(x, from_logits=True),
        "kl p": fs.kl_divergence(x, other, from_logits=True),
        "kl q": fs.kl_divergence(other, x, from_logits=True),
        "softmax_backward": fs.softmax_backward(x, y),
        "log_softmax_backward": fs.log_softmax_backward(x, np.log(y)),
    }


def _assert_row_nan(x: np.ndarray, what: str) -> None:
    for name, out in _row_outputs(x).items():
        out = np.asarray(out)
        assert np.isnan(out).all(), f"{name} of {what}: {np.count_nonzero(~np.isnan(out))} not NaN"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cols", [2047, 2048, 2049, 2050, 4095, 4096, 4097])
def test_nan_near_block_boundaries_poisons_the_row(each_backend, dtype, cols):
    near = {p for e in range(0, cols + 1, BLOCK) for p in range(e - 2, e + 2)} | {cols - 1}
    for pos in sorted(p for p in near if 0 <= p < cols):
        x = np.zeros((1, cols), dtype)
        x[0, 0 if pos else 1] = 5.0
        x[0, pos] = np.nan
        _assert_row_nan(x, f"zeros and 5 with NaN at {pos}")
        x = np.full((1, cols), -np.inf, dtype)
        x[0, pos] = np.nan
        _assert_row_nan(x, f"-inf with NaN at {pos}")
    if cols > BLOCK:
        x = np.ones((1, cols), dtype)
        x[0, :BLOCK] = np.nan
        _assert_row_nan(x, "a NaN first block")


@pytest.mark.parametrize("cols", [131071, 131072, 131073])
def test_nan_near_segment_boundaries_poisons_the_row(each_backend, cols):
    for pos in [0, BLOCK - 1, SEGMENT - 1, SEGMENT, SEGMENT + BLOCK - 1, cols - 1]:
        x = np.zeros((1, cols), np.float32)
        x[0, 0 if pos else 1] = 5.0
        x[0, pos] = np.nan
        _assert_row_nan(x, f"NaN at {pos}")


def _torch_ce(x, target, **kw):
    torch = pytest.importorskip("torch")
    f = torch.nn.functional
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    if np.issubdtype(np.asarray(target).dtype, np.integer):
        tg = torch.tensor(target)
    else:
        tg = torch.tensor(target, dtype=torch.float64)
    loss = f.cross_entropy(t, tg, reduction="none", **kw)
    loss.sum().backward()
    return loss.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_with_mass_on_a_neg_inf_logit(each_backend, dtype):
    x = np.array([[-np.inf, 0.5, -1.0]], dtype)
    cases = [
        ({"target": np.array([[0.3, 0.7, 0.0]], dtype)}, np.inf),
        ({"target": np.array([[1.0, 0.0, 0.0]], dtype)}, np.inf),
        ({"target": np.array([1]), "label_smoothing": 0.1}, np.inf),
        ({"target": np.array([[0.0, 1.0, 0.0]], dtype), "label_smoothing": 0.1}, np.inf),
    ]
    for kw, expected in cases:
        kw = dict(kw)
        target = kw.pop("target")
        loss, grad = fs.cross_entropy_with_grad(x, target, reduction="none", **kw)
        assert loss[0] == expected, (kw, target, loss)
        _, tgrad = _torch_ce(x.astype(np.float64), target, **kw)
        np.testing.assert_allclose(grad, tgrad, rtol=2e-6, atol=2e-6)
        assert fs.cross_entropy(x, target, **kw) == expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_without_mass_on_a_neg_inf_logit_is_finite(each_backend, dtype):
    # 0·log 0 = 0: a zero label on a -inf logit adds nothing (PyTorch's own soft path gives NaN).
    x = np.array([[-np.inf, 0.5, -1.0]], dtype)
    q = np.array([[0.0, 0.75, 0.25]], dtype)
    loss, grad = fs.cross_entropy_with_grad(x, q, reduction="none")
    x64 = x.astype(np.float64)
    lse = np.log(np.exp(0.5) + np.exp(-1.0))
    expected = 0.75 * (lse - 0.5) + 0.25 * (lse + 1.0)
    np.testing.assert_allclose(loss, [expected], rtol=2e-6)
    p = np.exp(x64 - lse)
    np.testing.assert_allclose(grad, p - q, rtol=2e-6, atol=2e-6)
    onehot = np.array([[0.0, 1.0, 0.0]], dtype)
    np.testing.assert_allclose(fs.cross_entropy(x, onehot), lse - 0.5, rtol=2e-6)


@pytest.mark.parametrize(
    "b, expected",
    [([2.0, -1.0], (np.nan, np.nan)), ([-1.0, 3.0], (np.nan, np.nan)), ([2.0, 1.0], (np.inf, 1.0)),
     ([-2.0, -1.0], (np.inf, -1.0))],
)
def test_weighted_logsumexp_over_inf_of_both_signs(b, expected):
    scipy_special = pytest.importorskip("scipy.special")
    a = np.array([np.inf, np.inf])
    got = fs.logsumexp(a, b=np.array(b), return_sign=True)
    np.testing.assert_equal(np.array(got, dtype=float), np.array(expected))
    # Without return_sign a negative total has no real logarithm: NaN.
    plain = fs.logsumexp(a, b=np.array(b))
    np.testing.assert_equal(plain, expected[0] if expected[1] != -1.0 else np.nan)
    want = scipy_special.logsumexp(a, b=np.array(b), return_sign=True)
    if np.isnan(want[0]) == np.isnan(expected[0]):
        # SciPy agrees (releases before 1.16 summed inf - inf to inf instead of NaN).
        np.testing.assert_equal(np.array(got, dtype=float), np.array(want, dtype=float))
        np.testing.assert_equal(plain, scipy_special.logsumexp(a, b=np.array(b)))


@pytest.mark.parametrize("shape", [(9, 31), (40, 64), (3, 1000), (2, 4099), (1, 131075)])
# 0.2446...: 1/T in float32 errs by 5.5e-8 relative, enough to break the bound unless carried.
@pytest.mark.parametrize("temperature", [0.1, 0.05, 0.3, 0.7, 3.0, 0.2446193054257848])
def test_temperature_keeps_the_float32_bounds(each_backend, rng, shape, temperature):
    x = (3.0 * rng.standard_normal(shape)).astype(np.float32)
    x64 = x.astype(np.float64) / temperature
    ref_lse = np.log(np.exp(x64 - x64.max(-1, keepdims=True)).sum(-1)) + x64.max(-1)
    ref_log = x64 - ref_lse[:, None]
    ref = np.exp(ref_log)
    got = fs.softmax(x, temperature=temperature).astype(np.float64)
    big = ref >= 1e-30
    rel = np.abs(got - ref)[big] / ref[big]
    assert rel.max() <= 2e-6, rel.max()
    # Shifted by the largest exponent, max(-x)/T, so every exponent is <= 0. (Adding it instead
    # reaches -2·min(x)/T, which overflows once min(x)/T < -355: T = 0.05 on 131,075 normals can.)
    ref_min = np.exp(-x64 - (-x64).max(-1, keepdims=True))
    ref_min /= ref_min.sum(-1, keepdims=True)
    got_min = fs.softmin(x, temperature=temperature).astype(np.float64)
    big = ref_min >= 1e-30
    assert (np.abs(got_min - ref_min)[big] / ref_min[big]).max() <= 2e-6
    got_log = fs.log_softmax(x, temperature=temperature).astype(np.float64)
    assert (np.abs(got_log - ref_log) / np.maximum(1, np.abs(ref_log))).max() <= 2e-6
    got_lse = fs.logsumexp(x, axis=-1, temperature=temperature).astype(np.float64)
    ref_t = temperature * ref_lse
    assert (np.abs(got_lse - ref_t) / np.maximum(1, np.abs(ref_t))).max() <= 2e-6


def test_temperature_float32_bound_at_random_temperatures(each_backend, rng):
    for t in np.exp(rng.uniform(np.log(0.02), np.log(5.0), 60)):
        x = (3.0 * rng.standard_normal((4, 200))).astype(np.float32)
        x64 = x.astype(np.float64) / t
        ref = np.exp(x64 - x64.max(-1, keepdims=True))
        ref /= ref.sum(-1, keepdims=True)
        got = fs.softmax(x, temperature=float(t)).astype(np.float64)
        big = ref >= 1e-30
        rel = (np.abs(got - ref)[big] / ref[big]).max()
        assert rel <= 2e-6, (t, rel)


# Tile path (<= 64 columns), whole rows past a 2048-element block, a split row (>= 131072 columns).
TEMPERATURE_SHAPES = [(37, 7), (40, 64), (5, 65), (3, 2049), (1, 131075)]


def _temperature_data(rng, shape, dtype, kind: str) -> np.ndarray:
    """``3·randn``, or huge neighbours a few ulp apart (1e10 in float32, 1e300 in float64) with a few
    of the other sign."""
    if kind == "randn":
        return (3.0 * rng.standard_normal(shape)).astype(dtype)
    big = 1e10 if dtype == np.float32 else 1e300
    x = np.full(shape, big, dtype) + (rng.integers(-3, 4, shape) * np.spacing(dtype(big))).astype(dtype)
    x[rng.random(shape) < 0.1] = -big
    return x


def _temperature_refs(x: np.ndarray, t: float, sign: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """softmax, log-softmax and ``T·logsumexp`` of ``sign·x / T`` in extended precision, the
    difference to the row's extreme taken first (a rounded ``x / T`` would be the error itself)."""
    y = sign * x.astype(np.longdouble)
    m = y.max(-1, keepdims=True)
    d = (y - m) / t
    ls = np.log(np.exp(d).sum(-1, keepdims=True))
    lse = (m + t * ls)[:, 0]
    return np.exp(d - ls).astype(np.float64), (d - ls).astype(np.float64), lse.astype(np.float64)


@pytest.mark.parametrize("kind", ["randn", "huge"])
@pytest.mark.parametrize("shape", TEMPERATURE_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_temperature_keeps_the_bounds_on_every_path(each_backend, rng, dtype, shape, kind):
    x = _temperature_data(rng, shape, dtype, kind)
    for t in [0.1, 0.3, 0.7, 1.7, 3.0]:
        ctx = f"{np.dtype(dtype)} {shape} {kind} T={t} on {each_backend}"
        p, logp, lse = _temperature_refs(x, t, 1.0)
        assert_prob_close(fs.softmax(x, temperature=t), p, dtype, f"softmax {ctx}")
        assert_log_close(fs.log_softmax(x, temperature=t), logp, dtype, f"log_softmax {ctx}")
        assert_log_close(fs.logsumexp(x, axis=-1, temperature=t), lse, dtype, f"logsumexp {ctx}")
        p_min, _, _ = _temperature_refs(x, t, -1.0)
        assert_prob_close(fs.softmin(x, temperature=t), p_min, dtype, f"softmin {ctx}")


@pytest.mark.parametrize("dtype, big", [(np.float32, 1e10), (np.float64, 1e300)])
def test_temperature_of_huge_ties_is_exact(each_backend, dtype, big):
    # A rounded x·(1/T) errs by up to 512 at 1e10 in float32: carried against the maximum's own
    # product it once overflowed exp (inf), and NaN in float64.
    x = np.array([[big, big], [-big, -big]], dtype)
    rtol = 2e-6 if dtype == np.float32 else 1e-14
    for t in [0.1, 0.7, 1.7]:
        np.testing.assert_allclose(fs.log_softmax(x, temperature=t), -np.log(2.0), rtol=rtol)
        np.testing.assert_allclose(fs.softmax(x, temperature=t), 0.5, rtol=rtol)
        np.testing.assert_allclose(fs.softmin(x, temperature=t), 0.5, rtol=rtol)
        want = np.array([big, -big]) + t * np.log(2.0)
        np.testing.assert_allclose(fs.logsumexp(x, axis=-1, temperature=t), want, rtol=rtol)


def _softcap_ce_ref(x: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    o = c * np.tanh(x.astype(np.float64) / c)
    m = o.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(o - m).sum(-1, keepdims=True)))[:, 0]
    return lse - o[np.arange(len(y)), y]


@pytest.mark.parametrize("softcap", [30.0, 50.0, 100.0])
def test_softcap_confident_rows_keep_the_bound(each_backend, rng, softcap):
    x = np.array([[170.66513, 0.9961158]], np.float32)
    got = fs.cross_entropy(x, np.array([0]), softcap=50.0, reduction="none")
    ref = _softcap_ce_ref(x, np.array([0]), 50.0)
    assert abs(got[0] - ref[0]) <= 2e-6 and got[0] >= 0.0, (got, ref)
    rows = 1000
    x = rng.standard_normal((rows, 7)).astype(np.float32)
    y = rng.integers(0, 7, rows)
    x[np.arange(rows), y] += rng.uniform(2.0, 6.0, rows).astype(np.float32) * softcap
    got = fs.cross_entropy(x, y, softcap=softcap, reduction="none").astype(np.float64)
    ref = _softcap_ce_ref(x, y, softcap)
    assert (np.abs(got - ref) / np.maximum(1, np.abs(ref))).max() <= 2e-6
    assert got.min() >= -2e-6
    total = fs.cross_entropy(x, y, softcap=softcap, reduction="sum")
    assert abs(total - ref.sum()) <= 2e-6 * max(1.0, abs(ref.sum()))
