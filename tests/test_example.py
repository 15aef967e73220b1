"""examples/softmax_regression.py in its reduced mode (--quick).

The example trains the same softmax-regression model twice on scikit-learn's digits: once with the
loss and logits gradient from ``fastsoftmax.cross_entropy_with_grad`` and once with a NumPy-only
reference. Both runs use the same data order and updates, so their loss curves must agree.
"""

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the example needs scikit-learn (fastsoftmax[examples])")

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "softmax_regression.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("softmax_regression_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_numpy_reference_gradient_matches_finite_differences(example):
    """The reference itself is checked independently, for hard and soft labels with smoothing."""
    rng = np.random.default_rng(1)
    o = rng.standard_normal((7, 5)) * 3
    hard = rng.integers(0, 5, size=7)
    soft = rng.random((7, 5))  # not normalised on purpose: the gradient carries sum(q)
    for target in (hard, soft):
        for eps in (0.0, 0.2):
            _, g = example.numpy_cross_entropy_with_grad(o, target, eps)
            h = 1e-6
            fd = np.empty_like(o)
            for i in range(o.shape[0]):
                for j in range(o.shape[1]):
                    op, om = o.copy(), o.copy()
                    op[i, j] += h
                    om[i, j] -= h
                    lp, _ = example.numpy_cross_entropy_with_grad(op, target, eps)
                    lm, _ = example.numpy_cross_entropy_with_grad(om, target, eps)
                    fd[i, j] = (lp - lm) / (2 * h)
            np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    # Loss against a direct formula (hard labels, no smoothing).
    loss, _ = example.numpy_cross_entropy_with_grad(o, hard)
    lse = np.log(np.exp(o).sum(axis=1))
    assert loss == pytest.approx(np.mean(lse - o[np.arange(7), hard]), rel=1e-12)


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--label-smoothing", "0.1"],
        ["--soft-labels", "smooth"],
        ["--soft-labels", "mixup", "--label-smoothing", "0.05"],
    ],
    ids=["hard", "label-smoothing", "soft-smooth", "soft-mixup"],
)
def test_quick_run_float64(example, extra, capsys):
    pytest.importorskip("fastsoftmax")
    res = example.main(["--quick", "--no-progress", *extra])
    out = capsys.readouterr().out
    assert "time ratio" in out

    assert res["test_acc"] >= 0.9
    assert res["ref_test_acc"] >= 0.9
    assert abs(res["test_acc"] - res["ref_test_acc"]) <= 1 / 450 + 1e-12  # at most one test sample
    assert len(res["losses"]) == len(res["ref_losses"]) == res["args"].epochs
    np.testing.assert_allclose(res["losses"], res["ref_losses"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(res["W"], res["ref_W"], rtol=0, atol=1e-6)
    # Training makes progress (the loss falls from epoch 1 to the last).
    assert res["losses"][-1] < res["losses"][0]


def test_quick_run_float32(example, capsys):
    pytest.importorskip("fastsoftmax")
    res = example.main(["--quick", "--no-progress", "--dtype", "float32"])
    capsys.readouterr()
    assert res["W"].dtype == np.float32
    assert res["test_acc"] >= 0.9
    np.testing.assert_allclose(res["losses"], res["ref_losses"], rtol=0, atol=1e-3)


def test_progress_fallback_without_tqdm(example, monkeypatch, capsys):
    """Without tqdm the example prints one line per epoch instead of a bar."""
    pytest.importorskip("fastsoftmax")
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    res = example.main(["--quick", "--epochs", "2"])
    out = capsys.readouterr().out
    assert res["args"].epochs == 2
    for name in ("fastsoftmax", "numpy"):
        assert f"{name} epoch   2/2:" in out


def test_clear_message_without_sklearn(example, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(SystemExit) as exc:
        example.main(["--quick", "--no-progress"])
    assert "scikit-learn" in str(exc.value)
    assert "fastsoftmax[examples]" in str(exc.value)
