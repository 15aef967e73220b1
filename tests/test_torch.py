"""fastsoftmax.torch: values and gradients against torch.nn.functional (float64 references built
from PyTorch's own ops), gradcheck, torch.compile, half types, layouts, partial requires_grad,
errors, and that ``import fastsoftmax`` does not import PyTorch.

Skipped when PyTorch is not installed (except the import check, which needs no PyTorch).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
F = torch.nn.functional

import fastsoftmax  # noqa: E402
import fastsoftmax.torch as ft  # noqa: E402

F64 = torch.float64
ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def gen(rng):
    """A torch.Generator seeded from the suite's (printed, replayable) NumPy seed."""
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


def randn(gen, *shape, dtype=F64, scale=3.0):
    return (torch.randn(shape, generator=gen, dtype=F64) * scale).to(dtype)


def test_import_fastsoftmax_does_not_import_torch():
    code = "import sys, fastsoftmax; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


# --------------------------------------------------------------------------------------------------
# softmax / log_softmax


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize(
    "shape,dim", [((7, 33), -1), ((3, 1031), 1), ((5, 17, 3), 1), ((4, 6), 0), ((9,), 0)]
)
def test_softmax_values_and_grad(gen, log, shape, dim):
    x = randn(gen, *shape).requires_grad_()
    up = randn(gen, *shape)
    ours = (ft.log_softmax if log else ft.softmax)(x, dim)
    ref = (torch.log_softmax if log else torch.softmax)(x, dim)
    torch.testing.assert_close(ours, ref, rtol=1e-13, atol=1e-14)
    (g,) = torch.autograd.grad(ours, x, up)
    (gr,) = torch.autograd.grad(ref, x, up)
    torch.testing.assert_close(g, gr, rtol=1e-12, atol=1e-13)


def test_softmax_special_values_and_0d():
    x = torch.tensor([[0.0, -float("inf"), 1.0], [float("nan"), 0.0, 0.0], [1e300, 0.0, -1e300]],
                     dtype=F64)
    torch.testing.assert_close(ft.softmax(x), torch.softmax(x, -1), equal_nan=True)
    torch.testing.assert_close(ft.log_softmax(x), torch.log_softmax(x, -1), equal_nan=True)
    t = torch.tensor([2, 0, 1])
    torch.testing.assert_close(ft.cross_entropy(x, t, reduction="none"),
                               F.cross_entropy(x, t, reduction="none"), equal_nan=True)
    assert ft.softmax(torch.tensor(5.0)).item() == 1.0
    assert ft.log_softmax(torch.tensor(5.0), dim=-1).item() == 0.0


def test_softmax_gradcheck(gen):
    x = randn(gen, 3, 4, 5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: ft.softmax(a, 1), (x,))
    assert torch.autograd.gradcheck(lambda a: ft.log_softmax(a.transpose(0, 2), -1), (x,))


# --------------------------------------------------------------------------------------------------
# cross_entropy against torch.nn.functional


def ref_cross_entropy(o, t, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0,
                      z_loss=0.0, softcap=None):
    """The documented semantics from PyTorch ops: softcap first, z_loss per counted element."""
    if softcap is not None:
        o = softcap * torch.tanh(o / softcap)
    loss = F.cross_entropy(o, t, weight=weight, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)
    if z_loss:
        lse = torch.logsumexp(o, dim=1 if o.dim() > 1 else 0)
        counted = torch.ones_like(lse) if t.is_floating_point() else (t != ignore_index).to(o.dtype)
        z = z_loss * lse**2 * counted
        loss = loss + (z if reduction == "none" else z.sum() / (counted.sum() if reduction == "mean"
                                                                 else 1.0))
    return loss


def make_target(gen, shape, soft, ignore=False):
    C = shape[1] if len(shape) > 1 else shape[0]
    if soft:
        return torch.rand(*shape, generator=gen, dtype=F64)  # not normalised, as PyTorch allows
    batch = (shape[0], *shape[2:]) if len(shape) > 1 else ()
    t = torch.randint(0, C, batch, generator=gen)
    if ignore and t.dim():
        t.view(-1)[::3] = 7  # every third element ignored (ignore_index=7 is also a valid class)
    elif ignore:
        t = t % 7  # a lone element is counted (an all-ignored mean is 0 here, NaN in PyTorch)
    return t


OPTIONS = {
    "plain": {},
    "weight": {"weight": True},
    "ignore": {"ignore_index": 7},
    "smoothing": {"label_smoothing": 0.2},
    "weight-ignore-smoothing": {"weight": True, "ignore_index": 7, "label_smoothing": 0.1},
    "z_loss": {"z_loss": 1e-2},
    "softcap": {"softcap": 4.0},
    "all": {"weight": True, "ignore_index": 7, "label_smoothing": 0.3, "z_loss": 1e-3,
            "softcap": 2.5},
}
SHAPES = [(13, 9), (5, 1031), (3, 9, 4), (2, 9, 3, 2), (9,)]  # 1031: SIMD body + tail


# ignore_index applies to class indices only
CASES = [
    pytest.param(shape, soft, opt, id=f"{shape}-{'soft' if soft else 'labels'}-{opt}")
    for shape in SHAPES
    for soft in (False, True)
    for opt in OPTIONS
    if not (soft and "ignore_index" in OPTIONS[opt])
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape,soft,opt", CASES)
def test_cross_entropy_matches_torch(gen, shape, soft, opt, reduction):
    kw = dict(OPTIONS[opt])
    C = shape[1] if len(shape) > 1 else shape[0]
    if kw.pop("weight", False):
        kw["weight"] = torch.rand(C, generator=gen, dtype=F64) + 0.1
    x = randn(gen, *shape).requires_grad_()
    t = make_target(gen, shape, soft, ignore="ignore_index" in kw)
    extra = {k: kw.pop(k) for k in ("z_loss", "softcap") if k in kw}
    ours = ft.cross_entropy(x, t, reduction=reduction, **kw, **extra)
    ref = ref_cross_entropy(x, t, reduction=reduction, **kw, **extra)
    assert ours.shape == ref.shape and ours.dtype == F64
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-13)
    up = randn(gen, *ref.shape)  # "none": each element scaled by its own upstream gradient
    (g,) = torch.autograd.grad(ours, x, up)
    (gr,) = torch.autograd.grad(ref, x, up)
    torch.testing.assert_close(g, gr, rtol=1e-11, atol=1e-13)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 6), c=st.integers(1, 70), d=st.integers(0, 3),
    eps=st.floats(0.0, 1.0), z=st.sampled_from([0.0, 1e-3, 0.5]),
    cap=st.sampled_from([None, 0.5, 30.0]), reduction=st.sampled_from(["mean", "sum", "none"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_cross_entropy_generated(n, c, d, eps, z, cap, reduction, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (n, c) + ((d,) if d else ())
    x = randn(g, *shape).requires_grad_()
    t = make_target(g, shape, False)
    ours = ft.cross_entropy(x, t, reduction=reduction, label_smoothing=eps, z_loss=z, softcap=cap)
    ref = ref_cross_entropy(x, t, reduction=reduction, label_smoothing=eps, z_loss=z, softcap=cap)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    up = randn(g, *ref.shape)
    (gx,) = torch.autograd.grad(ours, x, up)
    (gr,) = torch.autograd.grad(ref, x, up)
    torch.testing.assert_close(gx, gr, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_gradcheck(gen, reduction):
    x = randn(gen, 4, 5, 3).requires_grad_()
    t = make_target(gen, (4, 5, 3), False, ignore=True)
    w = torch.rand(5, generator=gen, dtype=F64) + 0.5
    soft = make_target(gen, (4, 5, 3), True)
    opts = dict(reduction=reduction, label_smoothing=0.1, z_loss=0.01, softcap=3.0)
    assert torch.autograd.gradcheck(
        lambda a: ft.cross_entropy(a, t, w, ignore_index=7, **opts), (x,))
    assert torch.autograd.gradcheck(lambda a: ft.cross_entropy(a, soft, w, **opts), (x,))


def test_upstream_gradient_scaling_and_retain_graph(gen):
    x = randn(gen, 6, 4).requires_grad_()
    t = make_target(gen, (6, 4), False)
    loss = ft.cross_entropy(x, t)
    (3.0 * loss).backward(retain_graph=True)
    g3 = x.grad.clone()
    loss.backward()  # the saved gradient was not consumed by the first pass
    (gr,) = torch.autograd.grad(F.cross_entropy(x, t), x)
    torch.testing.assert_close(g3, 3 * gr)
    torch.testing.assert_close(x.grad, 4 * gr)


def test_double_backward_is_refused(gen):
    """A second derivative through the saved (constant) gradients would be silently wrong."""
    x = randn(gen, 4, 5).requires_grad_()
    t = make_target(gen, (4, 5), False)
    W = randn(gen, 3, 5)
    for f in (lambda: ft.cross_entropy(x, t), lambda: ft.softmax(x)[:, 0].sum(),
              lambda: ft.log_softmax(x, 0)[0].sum(),
              lambda: ft.linear_cross_entropy(x, W, t % 3, reduction="none").sum()):
        with pytest.raises(RuntimeError, match="double backward"):
            torch.autograd.grad(f(), x, create_graph=True)
        (g,) = torch.autograd.grad(f(), x)  # first order still works
        assert g.shape == x.shape


def test_all_ignored_mean_is_zero_not_nan(gen):
    x = randn(gen, 3, 4).requires_grad_()
    t = torch.full((3,), -100)
    loss = ft.cross_entropy(x, t)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(x.grad) == 0


def test_cached_result_buffers(gen, monkeypatch):
    """Large results are written into cached buffers (every size here, by lowering the threshold):
    a buffer is reused only after every tensor viewing it is gone."""
    from fastsoftmax import _torch_pool

    monkeypatch.setattr(_torch_pool, "MIN_BYTES", 0)
    ft.empty_cache()
    x = randn(gen, 9, 7).requires_grad_()
    t = make_target(gen, (9, 7), False)
    ft.cross_entropy(x, t).backward()
    g1, kept = x.grad, x.grad.clone()
    x.grad = None  # g1 still alive: its buffer must not be handed out again
    for _ in range(3):
        x.grad = None
        ft.cross_entropy(x, t, reduction="sum").backward()
        assert x.grad.data_ptr() != g1.data_ptr()
    s = ft.softmax(x.detach())
    s2 = ft.log_softmax(x.detach() * 2)
    assert torch.equal(g1, kept) and s.data_ptr() != s2.data_ptr()
    torch.testing.assert_close(s, torch.softmax(x.detach(), -1), rtol=1e-13, atol=0)
    ptr = x.grad.data_ptr()
    x.grad = None  # freed: the next gradient of that size reuses the buffer
    ft.cross_entropy(x, t).backward()
    assert x.grad.data_ptr() == ptr
    torch.testing.assert_close(x.grad, torch.autograd.grad(F.cross_entropy(x, t), x)[0])
    del g1
    assert _torch_pool.free_bytes() > 0
    assert ft.empty_cache() > 0 and _torch_pool.free_bytes() == 0
    monkeypatch.setattr(_torch_pool, "MAX_FREE_BYTES", 0)  # nothing is kept beyond the cap
    del s, s2
    x.grad = None
    assert _torch_pool.free_bytes() == 0


# --------------------------------------------------------------------------------------------------
# dtypes, layouts, partial requires_grad


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float16, 2e-3),
                                       (torch.bfloat16, 1.6e-2)], ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("cached", [False, True], ids=["fresh", "cached-buffers"])
def test_dtypes_against_float64(gen, dtype, tol, cached, monkeypatch):
    if cached:
        from fastsoftmax import _torch_pool

        monkeypatch.setattr(_torch_pool, "MIN_BYTES", 0)
    x = randn(gen, 37, 11, dtype=dtype).requires_grad_()
    t = make_target(gen, (37, 11), False)
    x64 = x.detach().to(F64).requires_grad_()
    for reduction in ("mean", "none"):
        loss = ft.cross_entropy(x, t, reduction=reduction, label_smoothing=0.1)
        ref = F.cross_entropy(x64, t, reduction=reduction, label_smoothing=0.1)
        assert loss.dtype == dtype
        torch.testing.assert_close(loss.to(F64), ref, rtol=tol, atol=tol)
        (g,) = torch.autograd.grad(loss.sum(), x)
        (gr,) = torch.autograd.grad(ref.sum(), x64)
        assert g.dtype == dtype
        torch.testing.assert_close(g.to(F64), gr, rtol=tol, atol=tol)
    y = ft.softmax(x, 0)
    assert y.dtype == dtype
    torch.testing.assert_close(y.to(F64), torch.softmax(x64, 0), rtol=tol, atol=tol)
    (g,) = torch.autograd.grad(ft.log_softmax(x, 1)[:, 0].sum(), x)
    (gr,) = torch.autograd.grad(torch.log_softmax(x64, 1)[:, 0].sum(), x64)
    torch.testing.assert_close(g.to(F64), gr, rtol=tol, atol=tol)


def test_bfloat16_without_ml_dtypes(gen, monkeypatch):
    from fastsoftmax import _torch_bridge

    monkeypatch.setattr(_torch_bridge, "_BF16", None)  # computed through float32 instead
    x = randn(gen, 8, 5, dtype=torch.bfloat16).requires_grad_()
    t = make_target(gen, (8, 5), False)
    loss = ft.cross_entropy(x, t)
    loss.backward()
    assert loss.dtype == x.grad.dtype == torch.bfloat16
    x32 = x.detach().float().requires_grad_()
    F.cross_entropy(x32, t).backward()
    torch.testing.assert_close(x.grad.float(), x32.grad, rtol=1.6e-2, atol=1e-3)


def test_non_contiguous_inputs(gen):
    base = randn(gen, 12, 30, dtype=torch.float32)
    x = base[::2, ::3].detach().requires_grad_()  # strided, not a view of a contiguous block
    xt = randn(gen, 10, 6, dtype=torch.float32).t().detach().requires_grad_()  # transposed
    for v in (x, xt):
        assert not v.is_contiguous()
        t = torch.randint(0, v.shape[1], (v.shape[0],), generator=gen)
        tt = t.repeat_interleave(2)[::2]  # a non-contiguous target too
        torch.testing.assert_close(ft.cross_entropy(v, tt), F.cross_entropy(v, t))
        (g,) = torch.autograd.grad(ft.cross_entropy(v, tt, reduction="sum"), v)
        (gr,) = torch.autograd.grad(F.cross_entropy(v, t, reduction="sum"), v)
        torch.testing.assert_close(g, gr)
        torch.testing.assert_close(ft.softmax(v, 0), torch.softmax(v, 0))
    up = randn(gen, 10, 6, dtype=torch.float32).t()  # a non-contiguous upstream gradient
    (g,) = torch.autograd.grad(ft.softmax(xt, 1), xt, up)
    (gr,) = torch.autograd.grad(torch.softmax(xt, 1), xt, up)
    torch.testing.assert_close(g, gr)


def test_requires_grad_on_some_inputs_only(gen):
    x = randn(gen, 5, 4)
    t = make_target(gen, (5, 4), False)
    w = (torch.rand(4, generator=gen, dtype=F64) + 0.5).requires_grad_()
    loss = ft.cross_entropy(x, t, w)
    assert loss.grad_fn is None  # nothing to differentiate: the loss-only kernel ran
    with torch.no_grad():
        assert ft.cross_entropy(x.requires_grad_(), t, w).grad_fn is None
    ft.cross_entropy(x, t, w).backward()
    assert w.grad is None and x.grad is not None  # class weights are constants
    soft = torch.rand(5, 4, dtype=F64, requires_grad=True)
    with pytest.raises(NotImplementedError, match="soft targets"):
        ft.cross_entropy(x, soft)
    ft.cross_entropy(x, soft.detach()).backward()


def test_loss_modules(gen):
    w = torch.rand(4, generator=gen, dtype=F64) + 0.5
    ours = ft.CrossEntropyLoss(w, ignore_index=1, label_smoothing=0.1)
    ref = torch.nn.CrossEntropyLoss(w, ignore_index=1, label_smoothing=0.1)
    assert isinstance(ours, torch.nn.CrossEntropyLoss)
    assert "weight" in ours.state_dict() and "z_loss=0.0" in repr(ours)
    x = randn(gen, 6, 4).requires_grad_()
    t = make_target(gen, (6, 4), False)
    torch.testing.assert_close(ours(x, t), ref(x, t))
    with pytest.warns(UserWarning, match="deprecated"):
        legacy = ft.CrossEntropyLoss(size_average=False)
    assert legacy.reduction == "sum"
    torch.testing.assert_close(legacy(x, t), F.cross_entropy(x, t, reduction="sum"))
    z = ft.CrossEntropyLoss(reduction="none", z_loss=0.5, softcap=2.0)
    torch.testing.assert_close(z(x, t), ref_cross_entropy(x, t, reduction="none", z_loss=0.5,
                                                          softcap=2.0))
    with pytest.raises(ValueError, match="reduction"):
        ft.CrossEntropyLoss(reduction="avg")

    head = torch.nn.Linear(3, 4).double()
    h = randn(gen, 6, 3)
    lin = ft.LinearCrossEntropyLoss(w, label_smoothing=0.1, chunk_size=4, z_loss=1e-3)
    assert "chunk_size=4" in repr(lin)
    torch.testing.assert_close(
        lin(h, head.weight, t, head.bias),
        ref_cross_entropy(head(h), t, w, label_smoothing=0.1, z_loss=1e-3),
    )


# --------------------------------------------------------------------------------------------------
# linear_cross_entropy


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_linear_cross_entropy_matches_torch(gen, reduction, bias):
    x = randn(gen, 3, 7, 5, scale=1.0).requires_grad_()
    W = randn(gen, 11, 5, scale=1.0).requires_grad_()
    b = randn(gen, 11).requires_grad_() if bias else None
    t = make_target(gen, (3, 11, 7), False, ignore=True)
    w = torch.rand(11, generator=gen, dtype=F64) + 0.5
    opts = dict(reduction=reduction, label_smoothing=0.1, z_loss=1e-2, softcap=5.0)
    ours = ft.linear_cross_entropy(x, W, t, b, w, 7, chunk_size=4, **opts)
    logits = F.linear(x, W, b)
    ref = ref_cross_entropy(logits.reshape(-1, 11), t.reshape(-1), w, 7, **opts)
    ref = ref.reshape(t.shape) if reduction == "none" else ref
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-13)
    params = [x, W] + ([b] if bias else [])
    up = randn(gen, *ref.shape)
    for g, gr in zip(torch.autograd.grad(ours, params, up), torch.autograd.grad(ref, params, up)):
        torch.testing.assert_close(g, gr, rtol=1e-11, atol=1e-12)


def test_linear_cross_entropy_gradcheck_and_partial_grads(gen):
    x = randn(gen, 5, 3, scale=1.0).requires_grad_()
    W = randn(gen, 4, 3, scale=1.0).requires_grad_()
    b = randn(gen, 4).requires_grad_()
    t = make_target(gen, (5, 4), False)
    for red in ("mean", "none"):
        assert torch.autograd.gradcheck(
            lambda a, c, d: ft.linear_cross_entropy(a, c, t, d, reduction=red, chunk_size=2,
                                                    label_smoothing=0.2), (x, W, b))
    # only the classifier is trained (frozen features)
    W2 = W.detach().requires_grad_()
    ft.linear_cross_entropy(x.detach(), W2, t).backward()
    (gr,) = torch.autograd.grad(F.cross_entropy(x.detach() @ W2.T, t), W2)
    torch.testing.assert_close(W2.grad, gr)
    assert ft.linear_cross_entropy(x.detach(), W.detach(), t).grad_fn is None


def test_linear_half_types(gen):
    x = randn(gen, 9, 8, dtype=torch.bfloat16, scale=1.0).requires_grad_()
    W = randn(gen, 6, 8, dtype=torch.bfloat16, scale=1.0).requires_grad_()
    t = make_target(gen, (9, 6), False)
    loss = ft.linear_cross_entropy(x, W, t)
    loss.backward()
    assert loss.dtype == x.grad.dtype == W.grad.dtype == torch.bfloat16
    x64, W64 = (a.detach().to(F64).requires_grad_() for a in (x, W))
    F.cross_entropy(x64 @ W64.T, t).backward()
    torch.testing.assert_close(loss.to(F64), F.cross_entropy(x64 @ W64.T, t), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(W.grad.to(F64), W64.grad, rtol=2e-2, atol=2e-3)


# --------------------------------------------------------------------------------------------------
# torch.compile and the custom ops


def test_custom_ops_opcheck(gen):
    x = randn(gen, 4, 5).requires_grad_()
    t = make_target(gen, (4, 5), False)
    torch.library.opcheck(torch.ops.fastsoftmax.softmax.default, (x, 1))
    torch.library.opcheck(torch.ops.fastsoftmax.log_softmax.default, (x, 0))
    torch.library.opcheck(
        torch.ops.fastsoftmax.cross_entropy.default, (x, t, None, -100, "none", 0.1, 0.0, 2.0, True))
    W = randn(gen, 3, 5).requires_grad_()
    b = randn(gen, 3).requires_grad_()
    y = torch.tensor([0, 1, 2, 0])
    torch.library.opcheck(
        torch.ops.fastsoftmax.linear_cross_entropy.default,
        (x, W, y, None, None, -100, "mean", 0.0, 0.0, None, 2, True))
    torch.library.opcheck(
        torch.ops.fastsoftmax.linear_cross_entropy.default,
        (x, W, y, b, None, -100, "none", 0.1, 0.0, 3.0, 3, False))
    torch.library.opcheck(
        torch.ops.fastsoftmax.linear_cross_entropy_backward.default,
        (randn(gen, 4), x.detach(), W.detach(), y, b.detach(), None, -100, 0.1, 0.01, None, 3))
    # the backward ops have no autograd formula of their own (no double backward)


def _model_step(lin, x, y):
    o = lin(x)
    p = ft.softmax(o, -1)
    lp = ft.log_softmax(o, 1)
    loss = ft.cross_entropy(o, y, label_smoothing=0.1, z_loss=1e-3, reduction="none").mean()
    head = ft.linear_cross_entropy(x, lin.weight, y, lin.bias, reduction="sum", chunk_size=3)
    return loss + p[:, 0].sum() + lp[:, 1].mean() + 0.1 * head


def _ref_step(lin, x, y):
    o = lin(x)
    loss = ref_cross_entropy(o, y, label_smoothing=0.1, z_loss=1e-3, reduction="none").mean()
    head = F.cross_entropy(o, y, reduction="sum")
    return loss + torch.softmax(o, -1)[:, 0].sum() + torch.log_softmax(o, 1)[:, 1].mean() + 0.1 * head


def _check_compiled(backend, gen):
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    lin = torch.nn.Linear(8, 5).double()
    counter = CompileCounterWithBackend(backend)
    step = torch.compile(_model_step, fullgraph=True, backend=counter)
    x = randn(gen, 6, 8)
    y = torch.randint(0, 5, (6,), generator=gen)
    loss = step(lin, x, y)
    grads = torch.autograd.grad(loss, list(lin.parameters()))
    ref = _ref_step(lin, x, y)
    grads_ref = torch.autograd.grad(ref, list(lin.parameters()))
    assert counter.frame_count == 1  # one graph, no break
    torch.testing.assert_close(loss, ref)
    for g, gr in zip(grads, grads_ref):
        torch.testing.assert_close(g, gr)


def test_torch_compile_fullgraph(gen):
    """Dynamo + AOT autograd (fake kernels, registered autograd) with an eager backend: the part
    that fails on a graph break, without Inductor's C++ build time."""
    _check_compiled("aot_eager", gen)


@pytest.mark.skipif(not os.environ.get("FASTSOFTMAX_TEST_INDUCTOR"),
                    reason="Inductor compiles C++ (about a minute); set FASTSOFTMAX_TEST_INDUCTOR=1")
def test_torch_compile_inductor(gen):
    _check_compiled("inductor", gen)


# --------------------------------------------------------------------------------------------------
# errors


def test_errors(gen):
    x = randn(gen, 4, 3)
    t = torch.tensor([0, 1, 2, 0])
    with pytest.raises(IndexError, match=r"5.*position 2|position 2.*5"):
        ft.cross_entropy(x, torch.tensor([0, 1, 5, 0]))
    with pytest.raises(IndexError):
        ft.linear_cross_entropy(x, randn(gen, 2, 3), t)
    with pytest.raises(ValueError, match="Expected target size"):
        ft.cross_entropy(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="soft targets"):
        ft.cross_entropy(x, torch.rand(4, 4, dtype=F64))
    with pytest.raises(TypeError, match="floating point"):
        ft.cross_entropy(t.reshape(2, 2), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="torch.Tensor"):
        ft.softmax(np.zeros(3))
    with pytest.raises(TypeError, match="integer class indices"):
        ft.cross_entropy(x, torch.tensor([True, False, True, True]))
    with pytest.raises(ValueError, match="reduction"):
        ft.cross_entropy(x, t, reduction="average")
    with pytest.raises(ValueError, match="label_smoothing"):
        ft.cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="z_loss"):
        ft.cross_entropy(x, t, z_loss=-1.0)
    with pytest.raises(ValueError, match="softcap"):
        ft.cross_entropy(x, t, softcap=0.0)
    with pytest.raises(ValueError, match="weight"):
        ft.cross_entropy(x, t, torch.ones(4, dtype=F64))
    with pytest.raises(ValueError, match="at least one dimension"):
        ft.cross_entropy(torch.tensor(1.0), torch.tensor(0))
    with pytest.raises(ValueError, match="same device"):
        ft.cross_entropy(x, t.to("meta"))
    for bad in (2, -3):
        with pytest.raises(IndexError, match="Dimension out of range"):
            ft.softmax(x, bad)
        with pytest.raises(ValueError, match="Dimension out of range"):
            ft.log_softmax(x, bad)
    with pytest.raises(ValueError, match="do not match"):
        ft.linear_cross_entropy(x, randn(gen, 5, 4), t)
    with pytest.raises(TypeError, match="dtype"):
        ft.linear_cross_entropy(x, randn(gen, 5, 3, dtype=torch.float32), t)
    with pytest.raises(ValueError, match="chunk_size"):
        ft.linear_cross_entropy(x, randn(gen, 5, 3), t, chunk_size=0)
    with pytest.raises(ValueError, match="bias"):
        ft.linear_cross_entropy(x, randn(gen, 5, 3), t, torch.zeros(4, dtype=F64))


def test_docstring_examples():
    import doctest

    res = doctest.testmod(ft, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted >= 6 and res.failed == 0


def test_torch_example_quick():
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "torch_classifier.py"), "--quick"],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    assert r.returncode == 0, r.stderr
    lines = {line.split(":")[0]: line for line in r.stdout.splitlines() if ":" in line}
    for name in ("torch.nn.CrossEntropyLoss", "fastsoftmax.torch.CrossEntropyLoss"):
        acc = float(lines[name].split("accuracy")[1].split()[0])
        assert acc >= 0.85, r.stdout
