"""logsumexp_stats / merge_logsumexp_stats: partial statistics of shards merge to the unsharded
log-sum-exp, for any split and grouping, with SciPy's special values."""

from __future__ import annotations

import numpy as np
import pytest

import fastsoftmax as fs


def _split_points(rng, n, parts):
    return np.sort(rng.choice(np.arange(n + 1), size=parts - 1, replace=True))


def _merged(x, cuts, b=None, temperature=1.0):
    """Shards of the last axis cut at `cuts`, their statistics, and the merge."""
    bs = [None] * (len(cuts) + 1) if b is None else np.split(b, cuts, axis=-1)
    stats = [fs.logsumexp_stats(p, b=bp, temperature=temperature, keepdims=True)
             for p, bp in zip(np.split(x, cuts, axis=-1), bs)]
    m = np.concatenate([np.asarray(a) for a, _ in stats], axis=-1)
    s = np.concatenate([np.asarray(c) for _, c in stats], axis=-1)
    return fs.merge_logsumexp_stats(m, s, -1)


@pytest.mark.parametrize("parts", [1, 2, 3, 7, 40])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_merge_equals_unsharded(rng, parts, dtype):
    x = (rng.standard_normal((9, 61)) * 20).astype(dtype)
    ref = fs.logsumexp(x.astype(np.float64), axis=-1)
    for _ in range(5):
        cuts = _split_points(rng, x.shape[1], parts)
        m, s = _merged(x, cuts)
        tol = 1e-13 if dtype == np.float64 else 2e-6
        np.testing.assert_allclose(m, ref, rtol=tol, atol=tol)
        np.testing.assert_array_equal(s, 1.0)


def test_temperature_and_signed_weights(rng):
    x = rng.standard_normal((5, 33))
    b = rng.standard_normal((5, 33))
    b[:, ::4] = 0.0
    T = 0.7
    ref, sign = fs.logsumexp(x, b=b, temperature=T, return_sign=True)
    for parts in (2, 5, 11):
        m, s = _merged(x, _split_points(rng, 33, parts), b=b, temperature=T)
        np.testing.assert_allclose(T * m, ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(s, sign)


def test_axis_zero_and_several_axes(rng):
    x = rng.standard_normal((8, 6, 5))
    m, s = fs.logsumexp_stats(x, (0, 2))
    np.testing.assert_allclose(m, fs.logsumexp(x, (0, 2)), rtol=1e-14)
    parts = [fs.logsumexp_stats(p, 0) for p in np.split(x, [3, 4], axis=0)]
    mm, ss = fs.merge_logsumexp_stats(np.stack([a for a, _ in parts]),
                                      np.stack([b for _, b in parts]), axis=0)
    np.testing.assert_allclose(mm, fs.logsumexp(x, 0), rtol=1e-14)


def test_tree_grouping_and_collectives_agree(rng):
    x = rng.standard_normal((4, 48)) * 5
    parts = [fs.logsumexp_stats(p) for p in np.split(x, 8, axis=1)]
    m = np.stack([a for a, _ in parts], axis=1)
    s = np.stack([b for _, b in parts], axis=1)
    flat = fs.merge_logsumexp_stats(m, s, 1)
    left = fs.merge_logsumexp_stats(m[:, :3], s[:, :3], 1, keepdims=True)
    right = fs.merge_logsumexp_stats(m[:, 3:], s[:, 3:], 1, keepdims=True)
    tree = fs.merge_logsumexp_stats(np.concatenate([left[0], right[0]], 1),
                                    np.concatenate([left[1], right[1]], 1), 1)
    # the MAX + SUM collectives of a message-passing library, then one normalising merge
    M = m.max(axis=1)
    S = (s * np.exp(m - M[:, None])).sum(axis=1)
    coll = fs.merge_logsumexp_stats(M[None], S[None])
    ref = fs.logsumexp(x)
    for got in (flat[0], tree[0], coll[0]):
        np.testing.assert_allclose(got, ref, rtol=1e-14)


def test_log1p_digits_survive_the_merge():
    m, s = fs.merge_logsumexp_stats(np.array([0.0, -40.0]), np.array([1.0, 1.0]))
    assert float(m) == 4.248354255291589e-18 and float(s) == 1.0


def test_special_values_in_shards():
    nan, inf = np.nan, np.inf
    x = np.array([
        [1.0, 2.0, nan, 3.0],       # NaN in the second shard
        [-inf, -inf, -inf, -inf],   # an all -inf row
        [1.0, 2.0, 3.0, inf],       # +inf in the second shard
        [-inf, -inf, 0.5, 1.5],     # a finite row whose first shard is all -inf
    ])
    ref = fs.logsumexp(x)
    for cuts in ([2], [1, 3], [0, 4], [3]):
        m, s = _merged(x, cuts)
        np.testing.assert_array_equal(np.isnan(m), np.isnan(ref))
        np.testing.assert_allclose(m[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=1e-14)
        np.testing.assert_array_equal(s, [nan, 0.0, 1.0, 1.0])


def test_empty_shard_is_neutral():
    m, s = fs.logsumexp_stats(np.empty((3, 0)))
    np.testing.assert_array_equal(m, -np.inf)
    np.testing.assert_array_equal(s, 0.0)
    mm, ss = fs.merge_logsumexp_stats(np.stack([m, np.zeros(3)]), np.stack([s, np.ones(3)]))
    np.testing.assert_array_equal(mm, 0.0)


def test_scalar_results_and_dtype():
    m, s = fs.logsumexp_stats(np.array([1.0, 2.0], dtype=np.float32))
    assert isinstance(m, np.float32) and isinstance(s, np.float32)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        fs.merge_logsumexp_stats(np.zeros(3), np.zeros(4))
