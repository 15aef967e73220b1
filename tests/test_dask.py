"""fastsoftmax on Dask arrays: the same answers as the NumPy functions for any chunking (the class
axis whole, split in 2, in odd and uneven chunks; rows split; both), lazy graphs of O(blocks)
tasks in which no task reads more than one block of the input, call-time and compute-time errors,
and a run on a real ``distributed.LocalCluster`` of worker processes. Skipped without Dask."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastsoftmax as fs

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

N, C = 23, 37
# (rows chunks, class chunks): the class axis whole, split in 2, odd (5), uneven, one class a block
CHUNKINGS = [
    (N, C),
    (7, C),
    (N, 19),
    (9, 5),
    (N, (1, 20, 16)),
    ((4, 19), (30, 7)),
    (N, 1),
]
IDS = ["whole", "rows", "halves", "odd", "uneven", "both-uneven", "one-per-block"]


@pytest.fixture(autouse=True)
def _synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield


def close(got, want, rtol=2e-5, atol=4e-6, msg=""):
    """Both sides are within 2e-6 * max(1, |exact|) of the exact float32 answer: 4e-6 apart."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, msg
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=msg)


def logits(rng, dtype=np.float32, special=False):
    x = (rng.standard_normal((N, C)) * 3).astype(dtype)
    if special:
        x[1, 25] = np.nan  # a NaN in the middle of a finite row
        x[2, :] = -np.inf  # an all -inf row
        x[3, 31] = np.inf  # +inf in a block of its own
        x[4, :20] = -np.inf  # -inf filling whole blocks of a finite row
        x[5, 3] = -np.inf  # one -inf entry
    return x


# --------------------------------------------------------------------------------------------------
# softmax family, logsumexp


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=IDS)
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_softmax_family(rng, chunks, name):
    x = logits(rng, special=True)
    d = da.from_array(x, chunks=chunks)
    f = getattr(fs, name)
    for T in (1.0, 0.6):
        got = f(d, temperature=T)
        assert isinstance(got, da.Array) and got.chunks == d.chunks
        close(got.compute(), f(x, temperature=T), msg=f"{name} T={T}")


@pytest.mark.parametrize("chunks", [(4, 3, 5), (6, 7, 9), (2, 7, 2)])
@pytest.mark.parametrize("axis", [0, 1, -1, (0, 2), None])
def test_softmax_axes_3d(rng, chunks, axis):
    x = rng.standard_normal((6, 7, 9))
    d = da.from_array(x, chunks=chunks)
    close(fs.log_softmax(d, axis).compute(), fs.log_softmax(x, axis), rtol=1e-13, atol=1e-13)
    close(fs.softmax(d, axis).compute(), fs.softmax(x, axis), rtol=1e-13, atol=1e-15)
    close(fs.logsumexp(d, axis).compute(), fs.logsumexp(x, axis), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=IDS)
def test_logsumexp_options(rng, chunks):
    x = logits(rng, np.float64, special=True)
    d = da.from_array(x, chunks=chunks)
    b = rng.standard_normal(C)
    b[::5] = 0.0
    cases = [
        {}, dict(axis=None), dict(axis=0), dict(keepdims=True), dict(temperature=2.5),
        dict(return_sign=True), dict(b=b, return_sign=True), dict(b=b), dict(b=np.abs(b)),
        dict(axis=None, b=b[None, :], return_sign=True, keepdims=True),
    ]
    for kw in cases:
        got, want = fs.logsumexp(d, **kw), fs.logsumexp(x, **kw)
        if isinstance(want, tuple):
            for g, w in zip(got, want):
                close(g.compute(), w, rtol=1e-12, atol=1e-12, msg=str(kw))
        else:
            assert got.shape == np.shape(want)
            close(got.compute(), want, rtol=1e-12, atol=1e-12, msg=str(kw))


def test_full_reduction_is_a_0d_dask_array(rng):
    x = rng.standard_normal((10, 12))
    got = fs.logsumexp(da.from_array(x, chunks=(3, 5)), axis=None)
    assert isinstance(got, da.Array) and got.shape == ()
    close(got.compute(), fs.logsumexp(x, axis=None), rtol=1e-14)
    loss = fs.cross_entropy(da.from_array(x, chunks=(3, 5)), rng.integers(0, 12, 10))
    assert isinstance(loss, da.Array) and loss.shape == ()


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int32])
def test_dtypes(rng, dtype):
    x = (rng.standard_normal((N, C)) * 3).astype(dtype)
    d = da.from_array(x, chunks=(9, 5))
    for f in (fs.softmax, fs.log_softmax, fs.logsumexp):
        got, want = f(d), f(x)
        assert got.dtype == want.dtype
        close(got.compute(), want, rtol=2e-3 if dtype == np.float16 else 1e-12, atol=1e-3)
    y = rng.integers(0, C, N)
    loss, grad = fs.cross_entropy_with_grad(d, y)
    wl, wg = fs.cross_entropy_with_grad(x, y)
    assert loss.dtype == wl.dtype and grad.dtype == wg.dtype
    close(grad.compute(), wg, rtol=2e-3, atol=1e-3)


# --------------------------------------------------------------------------------------------------
# cross-entropy family

CE_OPTIONS = [
    {},
    dict(weight="w"),
    dict(label_smoothing=0.15),
    dict(z_loss=0.01),
    dict(softcap=4.0),
    dict(ignore_index=3),
    dict(weight="w", label_smoothing=0.2, z_loss=0.02, softcap=6.0),
]


def _ce_inputs(rng, soft):
    x = logits(rng)
    if soft:
        t = rng.random((N, C)).astype(np.float32)
        t /= t.sum(axis=1, keepdims=True)
    else:
        t = rng.integers(0, C, N)
        t[[0, 11]] = -100
        t[[5, 6]] = 3
    return x, t, (rng.random(C) + 0.25).astype(np.float32)


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=IDS)
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_cross_entropy_every_option(rng, chunks, soft):
    x, t, w = _ce_inputs(rng, soft)
    d = da.from_array(x, chunks=chunks)
    # 37 blocks a row: the plain call and all options at once are enough (and keep the file fast)
    options = [CE_OPTIONS[0], CE_OPTIONS[-1]] if chunks == (N, 1) else CE_OPTIONS
    for opts in options:
        if soft and "ignore_index" in opts:
            continue
        kw = {k: (w if v == "w" else v) for k, v in opts.items()}
        if "ignore_index" in kw:
            t = np.where(t == -100, kw["ignore_index"], t)
        for red in ("mean", "sum", "none"):
            msg = f"{opts} {red}"
            wl, wg = fs.cross_entropy_with_grad(x, t, reduction=red, **kw)
            loss, grad = fs.cross_entropy_with_grad(d, t, reduction=red, **kw)
            assert grad.chunks == d.chunks
            close(loss.compute(), wl, msg=msg)
            close(grad.compute(), wg, msg=msg)
            if opts in (CE_OPTIONS[0], CE_OPTIONS[-1]):  # the same graphs, built separately
                close(fs.cross_entropy(d, t, reduction=red, **kw).compute(), wl, msg=msg)
                close(fs.cross_entropy_grad(d, t, reduction=red, **kw).compute(), wg, msg=msg)


@pytest.mark.parametrize("chunks", CHUNKINGS[:4], ids=IDS[:4])
def test_cross_entropy_special_rows(rng, chunks):
    x = logits(rng, special=True)
    t = rng.integers(0, C, N)
    t[4] = 2  # its label sits on a -inf logit: loss +inf
    t[2] = -100  # an ignored all -inf row: 0 and a zero gradient
    x[6, :] = -np.inf  # ... and one that counts: NaN
    d = da.from_array(x, chunks=chunks)
    for red, eps in (("none", 0.0), ("sum", 0.0), ("none", 0.1)):
        wl, wg = fs.cross_entropy_with_grad(x, t, reduction=red, label_smoothing=eps)
        loss, grad = fs.cross_entropy_with_grad(d, t, reduction=red, label_smoothing=eps)
        np.testing.assert_allclose(loss.compute(), wl, rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(grad.compute(), wg, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("chunks", [(N, C), (9, 5)], ids=["whole", "split"])
def test_mean_edge_cases(rng, chunks):
    x = logits(rng)
    d = da.from_array(x, chunks=chunks)
    ignored = np.full(N, -100)
    loss, grad = fs.cross_entropy_with_grad(d, ignored)
    assert float(loss.compute()) == 0.0 and not grad.compute().any()
    zero_w = np.zeros(C, dtype=np.float32)
    t = rng.integers(0, C, N)
    assert np.isnan(fs.cross_entropy(d, t, weight=zero_w).compute())
    assert np.isnan(fs.cross_entropy(x, t, weight=zero_w))


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("chunks", [(6, 7, 9), (4, 3, 5)], ids=["whole", "split"])
def test_cross_entropy_class_axis_not_last(rng, axis, chunks):
    x = rng.standard_normal((6, 7, 9))
    shape = list(x.shape)
    classes = shape.pop(axis)
    t = rng.integers(0, classes, shape)
    d = da.from_array(x, chunks=chunks)
    for red in ("mean", "none"):
        kw = dict(axis=axis, reduction=red, label_smoothing=0.1, weight=rng.random(classes))
        wl, wg = fs.cross_entropy_with_grad(x, t, **kw)
        loss, grad = fs.cross_entropy_with_grad(d, t, **kw)
        close(loss.compute(), wl, rtol=1e-12, atol=1e-12)
        close(grad.compute(), wg, rtol=1e-12, atol=1e-12)


def test_dask_targets_and_weights(rng):
    x, t, w = _ce_inputs(rng, False)
    d = da.from_array(x, chunks=(9, 5))
    got = fs.cross_entropy(d, da.from_array(t, chunks=4), weight=da.from_array(w, chunks=11))
    close(got.compute(), fs.cross_entropy(x, t, weight=w))


def _chunks_of(draw_cuts, n):
    cuts = sorted(set(draw_cuts))
    edges = [0] + [c for c in cuts if 0 < c < n] + [n]
    return tuple(b - a for a, b in zip(edges, edges[1:]))


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(row_cuts=st.lists(st.integers(1, N - 1), max_size=3),
       class_cuts=st.lists(st.integers(1, C - 1), max_size=5),
       eps=st.sampled_from([0.0, 0.3]), z=st.sampled_from([0.0, 0.05]),
       reduction=st.sampled_from(["mean", "sum", "none"]))
def test_generated_chunkings(rng, row_cuts, class_cuts, eps, z, reduction):
    x, t, w = _ce_inputs(rng, False)
    d = da.from_array(x, chunks=(_chunks_of(row_cuts, N), _chunks_of(class_cuts, C)))
    kw = dict(weight=w, label_smoothing=eps, z_loss=z, reduction=reduction)
    wl, wg = fs.cross_entropy_with_grad(x, t, **kw)
    loss, grad = fs.cross_entropy_with_grad(d, t, **kw)
    close(loss.compute(), wl)
    close(grad.compute(), wg)
    close(fs.log_softmax(d).compute(), fs.log_softmax(x))


# --------------------------------------------------------------------------------------------------
# backward passes, entropy, KL


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=IDS)
def test_backward(rng, chunks):
    x = rng.standard_normal((N, C))
    g = rng.standard_normal((N, C))
    y, ly = fs.softmax(x), fs.log_softmax(x)
    D = lambda a: da.from_array(a, chunks=chunks)  # noqa: E731
    close(fs.softmax_backward(D(g), D(y)).compute(), fs.softmax_backward(g, y), rtol=1e-12)
    close(fs.log_softmax_backward(D(g), ly).compute(), fs.log_softmax_backward(g, ly),
          rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=IDS)
def test_entropy_and_kl(rng, chunks):
    o = logits(rng, special=True)
    r = logits(rng)
    r[6, 20:] = -np.inf  # Q without mass where P has some: KL = inf
    p, q = fs.softmax(rng.standard_normal((N, C))), fs.softmax(rng.standard_normal((N, C)))
    D = lambda a: da.from_array(a, chunks=chunks)  # noqa: E731
    for base in (None, 2.0):
        close(fs.entropy(D(p), base=base).compute(), fs.entropy(p, base=base))
        close(fs.kl_divergence(D(p), D(q), base=base).compute(), fs.kl_divergence(p, q, base=base))
        for a, b in ((o, r), (r, o)):
            close(fs.entropy(D(a), base=base, from_logits=True).compute(),
                  fs.entropy(a, base=base, from_logits=True))
            close(fs.kl_divergence(D(a), D(b), base=base, from_logits=True).compute(),
                  fs.kl_divergence(a, b, base=base, from_logits=True))


# --------------------------------------------------------------------------------------------------
# the classifier head fused with its loss: data-parallel over row blocks


@pytest.mark.parametrize("xshape,chunks", [((29, 6), (7, 3)), ((5, 6, 4), (2, 4, 4)),
                                           ((29, 6), (29, 6))], ids=["rows", "3d", "one-block"])
def test_linear_cross_entropy(rng, xshape, chunks):
    V = 11
    x = rng.standard_normal(xshape).astype(np.float32)
    W = rng.standard_normal((V, xshape[-1])).astype(np.float32)
    b = rng.standard_normal(V).astype(np.float32)
    w = (rng.random(V) + 0.2).astype(np.float32)
    t = rng.integers(0, V, xshape[:-1])
    t.reshape(-1)[3] = -100
    d = da.from_array(x, chunks=chunks)
    for red in ("mean", "sum", "none"):
        for opts in ({}, dict(bias=b, chunk_size=2),
                     dict(bias=b, weight=w, label_smoothing=0.1, z_loss=0.01, softcap=3.0)):
            want = fs.linear_cross_entropy_with_grad(x, W, t, reduction=red, **opts)
            got = fs.linear_cross_entropy_with_grad(d, da.from_array(W), t, reduction=red, **opts)
            assert got[1].chunks == d.rechunk({d.ndim - 1: -1}).chunks
            for g, ref in zip(dask.compute(*got), want):
                if ref is None:
                    assert g is None
                else:
                    assert g.dtype == ref.dtype
                    close(g, ref, msg=f"{red} {opts}")
            close(fs.linear_cross_entropy(d, W, t, reduction=red, **opts).compute(), want[0])


def test_linear_cross_entropy_errors(rng):
    x = da.from_array(rng.standard_normal((10, 4)), chunks=3)
    W = rng.standard_normal((5, 4))
    t = rng.integers(0, 5, 10)
    with pytest.raises(ValueError, match="do not match"):
        fs.linear_cross_entropy(x, W[:, :3], t)
    with pytest.raises(ValueError, match="bias"):
        fs.linear_cross_entropy(x, W, t, bias=np.ones(4))
    with pytest.raises(ValueError, match="reduction"):
        fs.linear_cross_entropy(x, W, t, reduction="avg")
    with pytest.raises(TypeError):
        fs.linear_cross_entropy(x, W, t.astype(np.float32))
    t[8] = 9
    loss = fs.linear_cross_entropy(x, W, t)
    with pytest.raises(IndexError, match="target 9 at position 8 "):
        loss.compute()


# --------------------------------------------------------------------------------------------------
# laziness, graph size, errors


def _exploding(shape, chunks):
    def boom(block):
        raise RuntimeError("computed")

    return da.zeros(shape, chunks=chunks, dtype=np.float32).map_blocks(boom, dtype=np.float32)


@pytest.mark.parametrize("chunks", [(N, C), (9, 5)], ids=["whole", "split"])
def test_nothing_is_computed_at_call_time(chunks):
    x = _exploding((N, C), chunks)
    t = np.zeros(N, dtype=np.int64)
    results = [
        fs.softmax(x), fs.log_softmax(x), fs.softmin(x), fs.logsumexp(x), fs.logsumexp(x, b=x),
        fs.cross_entropy(x, t), fs.cross_entropy_grad(x, t, label_smoothing=0.1),
        *fs.cross_entropy_with_grad(x, t, weight=np.ones(C)), fs.cross_entropy(x, x),
        fs.softmax_backward(x, x), fs.log_softmax_backward(x, x), fs.entropy(x),
        fs.entropy(x, from_logits=True), fs.kl_divergence(x, x, from_logits=True),
        *fs.linear_cross_entropy_with_grad(x, np.ones((3, C)), t, bias=np.ones(3))[:4],
    ]
    for r in results:
        assert isinstance(r, da.Array)
    with pytest.raises(RuntimeError, match="computed"):
        results[5].compute()


def test_task_count_grows_with_blocks_and_no_task_reads_two_blocks(rng):
    counts = {}
    for nb in (2, 4, 8):
        x = da.from_array(rng.standard_normal((64, 96)), chunks=(64 // nb, 96 // nb))
        loss, grad = fs.cross_entropy_with_grad(x, rng.integers(0, 96, 64))
        graph = {**dict(loss.__dask_graph__()), **dict(grad.__dask_graph__())}
        counts[nb] = len(graph)
        x_keys = {k for k in graph if isinstance(k, tuple) and k[0] == x.name}
        for key in graph:
            deps = dask.core.get_dependencies(graph, key)
            assert len(deps & x_keys) <= 1, f"task {key} reads {len(deps & x_keys)} blocks"
    per_block = {nb: counts[nb] / nb**2 for nb in counts}
    # O(blocks): a constant number of tasks per block (the tree adds fewer than one per block).
    assert per_block[8] <= per_block[4] * 1.1 <= per_block[2] * 1.3, counts


def test_call_time_errors(rng):
    x = da.from_array(logits(rng), chunks=(9, 5))
    t = np.zeros(N, dtype=np.int64)
    with pytest.raises(TypeError, match="out="):
        fs.softmax(x, out=np.empty((N, C)))
    with pytest.raises(TypeError, match="out="):
        fs.cross_entropy_with_grad(x, t, out=x)
    with pytest.raises(ValueError, match="temperature"):
        fs.softmax(x, temperature=0.0)
    with pytest.raises(ValueError, match="out of bounds"):
        fs.log_softmax(x, axis=2)
    with pytest.raises(TypeError):
        fs.softmax(x.astype(np.complex64))
    with pytest.raises(ValueError, match="reduction"):
        fs.cross_entropy(x, t, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        fs.cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="weight"):
        fs.cross_entropy(x, t, weight=np.ones(C + 1))
    with pytest.raises(ValueError, match="target"):
        fs.cross_entropy(x, t[:-1])
    with pytest.raises(ValueError, match="base"):
        fs.entropy(x, base=-1.0)
    with pytest.raises(ValueError, match="broadcast"):
        fs.logsumexp(x, b=np.ones(C + 1))
    with pytest.raises(ValueError, match="shape"):
        fs.softmax_backward(x, x[:, :-1])


@pytest.mark.parametrize("chunks", [(N, C), (9, 5), (5, C)], ids=["whole", "split", "rows"])
def test_bad_label_raises_at_compute_time_naming_it(rng, chunks):
    x = da.from_array(logits(rng), chunks=chunks)
    t = rng.integers(0, C, N)
    t[17] = C + 4
    loss, grad = fs.cross_entropy_with_grad(x, t)  # no error yet: it depends on values
    with pytest.raises(IndexError, match=rf"target {C + 4} at position 17 "):
        loss.compute()
    with pytest.raises(IndexError, match=rf"target {C + 4} at position 17 "):
        fs.cross_entropy_grad(x, t, reduction="none").compute()


@pytest.mark.parametrize("module", ["_dask_ce", "_dask_linear", "_dask"])
def test_backend_modules_import_in_any_order(module):
    # A worker process may unpickle a function of any of them first.
    code = f"import fastsoftmax.{module} as m; import fastsoftmax._dask_ce as c, fastsoftmax._dask as d; c.ce, d.softmax"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_fastsoftmax_does_not_import_dask():
    code = "import sys, fastsoftmax; print(any(m.split('.')[0] in ('dask', 'distributed') " \
           "for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------------
# GPU blocks (only where CuPy and a device are present) and a real cluster


def test_cupy_blocks_run_on_the_gpu(rng):
    cp = pytest.importorskip("cupy")
    try:
        cp.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001 - no driver or device
        pytest.skip("no CUDA device")
    x = logits(rng)
    t = rng.integers(0, C, N)
    d = da.from_array(cp.asarray(x), chunks=(9, 5))
    loss, grad = fs.cross_entropy_with_grad(d, cp.asarray(t), label_smoothing=0.1)
    g = grad.compute()
    assert isinstance(g, cp.ndarray)
    wl, wg = fs.cross_entropy_with_grad(x, t, label_smoothing=0.1)
    close(cp.asnumpy(g), wg)
    close(float(loss.compute()), wl)
    close(cp.asnumpy(fs.softmax(d).compute()), fs.softmax(x))


def test_local_cluster_of_worker_processes(rng):
    distributed = pytest.importorskip("distributed")
    x = logits(rng, special=True)
    t = rng.integers(0, C, N)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        d = da.from_array(x, chunks=(9, 10))
        loss, grad, sm = client.compute(
            [*fs.cross_entropy_with_grad(d, t, reduction="none", label_smoothing=0.1),
             fs.softmax(d)], sync=True)
        wl, wg = fs.cross_entropy_with_grad(x, t, reduction="none", label_smoothing=0.1)
        close(loss, wl)
        close(grad, wg)
        close(sm, fs.softmax(x))
        t[3] = -7
        with pytest.raises(IndexError, match="target -7 at position 3"):
            client.compute(fs.cross_entropy(d, t), sync=True)
