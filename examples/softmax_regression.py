#!/usr/bin/env python
"""Multinomial logistic (softmax) regression on scikit-learn's digits, trained with fastsoftmax.

The model is ``O = X W + b`` (n samples x 64 pixels -> 10 classes). Each minibatch step calls

    loss, G = fastsoftmax.cross_entropy_with_grad(O, y, reduction="mean", label_smoothing=eps)

which returns the mean cross-entropy *and* its gradient with respect to the logits in one pass over
``O``. With ``reduction="mean"`` the gradient already is ``(softmax(O) - Y) / n``, so the chain rule
through ``O = X W + b`` is just two lines: ``dW = X.T @ G`` and ``db = G.sum(0)``.

The same training is then repeated with NumPy only (the textbook loss and gradient, same data order,
same initialisation, same updates), and the script reports both accuracies, both loss curves and the
time each took, measured in the same run.

Needs the optional extras: ``pip install "fastsoftmax[examples]"`` (scikit-learn; tqdm for the
progress bar, without it one line is printed per epoch). The digits data ship with scikit-learn:
no download.

Run::

    python examples/softmax_regression.py                      # defaults: >= 95 % test accuracy
    python examples/softmax_regression.py --label-smoothing 0.1
    python examples/softmax_regression.py --soft-labels mixup  # soft (float) targets
    python examples/softmax_regression.py --quick              # reduced mode, used by the tests
"""

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

try:
    import fastsoftmax
except ImportError:  # reported by main() with a clear message
    fastsoftmax = None

SKLEARN_MISSING = (
    "This example needs scikit-learn (for the bundled digits data set and the train/test split).\n"
    "Install the example extras with:  pip install 'fastsoftmax[examples]'\n"
    "(or just:  pip install scikit-learn)"
)

# Class count of the digits data set.
N_CLASSES = 10


# --------------------------------------------------------------------------------------------------
# Loss + logits gradient: the fastsoftmax call and its NumPy-only twin
# --------------------------------------------------------------------------------------------------
def numpy_cross_entropy_with_grad(
    logits: np.ndarray, target: np.ndarray, label_smoothing: float = 0.0
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and d(loss)/d(logits), written with NumPy only (the reference).

    ``target`` holds integer class indices (shape ``(n,)``) or soft labels (shape ``(n, C)``, not
    renormalised). Label smoothing follows PyTorch: the target distribution ``q`` becomes
    ``(1 - eps) q + eps / C``. Loss ``-sum(q * log_softmax(o)) / n``; gradient
    ``(softmax(o) * sum(q) - q) / n``, i.e. ``(softmax(o) - q) / n`` when the rows of ``q`` sum
    to 1.
    """
    n, c = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)  # stable: the largest exponent is exp(0)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    log_p = shifted - np.log(s)
    p = e / s
    if target.ndim == 1:
        q = np.zeros_like(logits)
        q[np.arange(n), target] = 1.0
    else:
        q = target.astype(logits.dtype, copy=False)
    if label_smoothing:
        q = (1.0 - label_smoothing) * q + label_smoothing / c
    loss = -(q * log_p).sum() / n
    grad = (p * q.sum(axis=1, keepdims=True) - q) / n
    return float(loss), grad


def fastsoftmax_cross_entropy_with_grad(
    logits: np.ndarray, target: np.ndarray, label_smoothing: float = 0.0
) -> tuple[float, np.ndarray]:
    """The same loss and gradient from fastsoftmax, in one pass, written over ``logits``."""
    # `out=logits` is allowed (API §1): the gradient overwrites the logits, which the training step
    # does not need afterwards, so no array is allocated per step.
    loss, grad = fastsoftmax.cross_entropy_with_grad(
        logits, target, reduction="mean", label_smoothing=label_smoothing, out=logits
    )
    return float(loss), grad


LossFn = Callable[[np.ndarray, np.ndarray, float], "tuple[float, np.ndarray]"]


# --------------------------------------------------------------------------------------------------
# Progress display: tqdm when installed, else one printed line per epoch
# --------------------------------------------------------------------------------------------------
class _LinePrinter:
    """Minimal stand-in for a tqdm bar: prints one line per epoch."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.n = total, desc, 0

    def set_postfix(self, ordered_dict: dict) -> None:
        self._postfix = ", ".join(f"{k}={v:.4f}" for k, v in ordered_dict.items())

    def update(self, k: int = 1) -> None:
        self.n += k
        print(f"{self.desc} epoch {self.n:3d}/{self.total}: {self._postfix}", flush=True)

    def close(self) -> None:
        pass


class _Silent(_LinePrinter):
    def update(self, k: int = 1) -> None:
        self.n += k


def make_progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _Silent(total, desc)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _LinePrinter(total, desc)
    return tqdm(total=total, desc=desc, unit="epoch", leave=True)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def load_digits_split(seed: int, dtype: np.dtype, test_size: float = 0.25):
    """Digits (1797 x 64, 10 classes), stratified train/test split, features standardised on the
    training part."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise SystemExit(SKLEARN_MISSING) from None

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    scaler = StandardScaler().fit(x_tr)  # constant pixels (always 0) get scale 1, stay 0
    x_tr = scaler.transform(x_tr).astype(dtype)
    x_te = scaler.transform(x_te).astype(dtype)
    return x_tr, x_te, y_tr.astype(np.int64), y_te.astype(np.int64)


def make_soft_targets(
    kind: str, yb: np.ndarray, xb: np.ndarray, rng: np.random.Generator, args, dtype
) -> tuple[np.ndarray, np.ndarray]:
    """Return (inputs, targets) for one batch: hard labels, or soft labels of the logits' shape."""
    if kind == "none":
        return xb, yb
    onehot = np.zeros((yb.shape[0], N_CLASSES), dtype=dtype)
    onehot[np.arange(yb.shape[0]), yb] = 1.0
    if kind == "smooth":
        # A smoothed one-hot given explicitly as a float array (--label-smoothing may still apply
        # on top of it, as in PyTorch).
        eps = args.soft_eps
        return xb, ((1.0 - eps) * onehot + eps / N_CLASSES).astype(dtype)
    if kind == "mixup":
        # mixup (Zhang et al. 2018): convex combinations of pairs of examples and of their targets.
        lam = rng.beta(args.mixup_alpha, args.mixup_alpha)
        perm = rng.permutation(yb.shape[0])
        xm = (lam * xb + (1.0 - lam) * xb[perm]).astype(dtype)
        qm = (lam * onehot + (1.0 - lam) * onehot[perm]).astype(dtype)
        return xm, qm
    raise ValueError(f"unknown --soft-labels {kind!r}")


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    name: str
    W: np.ndarray
    b: np.ndarray
    epoch_loss: list = field(default_factory=list)  # mean training loss per epoch
    epoch_train_acc: list = field(default_factory=list)
    epoch_test_acc: list = field(default_factory=list)
    train_seconds: float = 0.0  # minibatch steps only (no evaluation, no progress display)
    loss_seconds: float = 0.0  # inside the loss+gradient call only


def accuracy(W: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    return float(((x @ W + b).argmax(axis=1) == y).mean())


def train(
    name: str,
    loss_fn: LossFn,
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_te: np.ndarray,
    y_te: np.ndarray,
    args,
    progress: bool,
) -> TrainResult:
    """Minibatch SGD with momentum and L2 weight decay. Deterministic given ``args.seed``, so two
    calls that differ only in ``loss_fn`` perform the same arithmetic apart from the loss itself."""
    dtype = x_tr.dtype
    rng = np.random.default_rng(args.seed)
    n, d = x_tr.shape
    W = np.zeros((d, N_CLASSES), dtype=dtype)  # the problem is convex: zeros is a fine start
    b = np.zeros(N_CLASSES, dtype=dtype)
    vW = np.zeros_like(W)
    vb = np.zeros_like(b)
    lr, mu, wd = dtype.type(args.lr), dtype.type(args.momentum), dtype.type(args.weight_decay)
    res = TrainResult(name, W, b)
    bar = make_progress(args.epochs, name, progress)
    perf = time.perf_counter
    for _epoch in range(args.epochs):
        order = rng.permutation(n)
        loss_sum = 0.0
        t_epoch = perf()
        for start in range(0, n, args.batch_size):
            idx = order[start : start + args.batch_size]
            xb, yb = x_tr[idx], y_tr[idx]
            xb, target = make_soft_targets(args.soft_labels, yb, xb, rng, args, dtype)
            O = xb @ W
            O += b

            t0 = perf()
            loss, G = loss_fn(O, target, args.label_smoothing)
            res.loss_seconds += perf() - t0

            # G = d(mean loss)/dO = (softmax(O) - Y) / m for this batch of m rows: the 1/m of the
            # mean is already inside G, so the chain rule through O = X W + b needs no further
            # division:
            #   dW = X^T G   (d x C),   db = sum over rows of G   (C,)
            gW = xb.T @ G
            gW += wd * W
            gb = G.sum(axis=0)

            vW *= mu
            vW += gW
            vb *= mu
            vb += gb
            W -= lr * vW
            b -= lr * vb
            loss_sum += loss * idx.shape[0]
        res.train_seconds += perf() - t_epoch

        res.epoch_loss.append(loss_sum / n)
        res.epoch_train_acc.append(accuracy(W, b, x_tr, y_tr))
        res.epoch_test_acc.append(accuracy(W, b, x_te, y_te))
        bar.set_postfix(  # a dict keeps this order (tqdm sorts keyword arguments)
            {"loss": res.epoch_loss[-1], "train_acc": res.epoch_train_acc[-1],
             "test_acc": res.epoch_test_acc[-1]}
        )
        bar.update(1)
    bar.close()
    return res


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=0.02, help="learning rate")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-3, help="L2 penalty on W")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--label-smoothing", type=float, default=0.0, help="epsilon in [0, 1]")
    p.add_argument(
        "--soft-labels",
        choices=("none", "smooth", "mixup"),
        default="none",
        help="train on float soft targets of the logits' shape instead of class indices: "
        "'smooth' = explicitly smoothed one-hot rows, 'mixup' = mixup of pairs of examples",
    )
    p.add_argument("--soft-eps", type=float, default=0.1, help="smoothing of --soft-labels smooth")
    p.add_argument("--mixup-alpha", type=float, default=0.2, help="Beta(a, a) of mixup")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="timed runs; best kept")
    p.add_argument("--quick", action="store_true", help="reduced mode (5 epochs), for tests")
    p.add_argument("--no-progress", action="store_true", help="no progress bar / per-epoch lines")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs = min(args.epochs, 5)
        args.repeats = 1
    if args.epochs < 1 or args.batch_size < 1 or args.repeats < 1:
        p.error("--epochs, --batch-size and --repeats must be positive")
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the example; returns a summary dict (used by tests/test_example.py)."""
    args = parse_args(argv)
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise SystemExit(SKLEARN_MISSING) from None
    if fastsoftmax is None:
        raise SystemExit("fastsoftmax is not installed: pip install fastsoftmax")

    dtype = np.dtype(args.dtype)
    x_tr, x_te, y_tr, y_te = load_digits_split(args.seed, dtype)
    print(
        f"digits: {x_tr.shape[0]} train / {x_te.shape[0]} test, {x_tr.shape[1]} features, "
        f"{N_CLASSES} classes, {dtype}; fastsoftmax {fastsoftmax.__version__} "
        f"({fastsoftmax.simd_backend()})"
    )
    progress = not args.no_progress
    # Warm up both code paths once (first-call costs: thread pool, imports, caches) before timing.
    warm = x_tr[: args.batch_size] @ np.zeros((x_tr.shape[1], N_CLASSES), dtype)
    warm_target = make_soft_targets(
        args.soft_labels, y_tr[: args.batch_size], x_tr[: args.batch_size],
        np.random.default_rng(0), args, dtype,
    )[1]
    numpy_cross_entropy_with_grad(warm.copy(), warm_target, args.label_smoothing)
    fastsoftmax_cross_entropy_with_grad(warm.copy(), warm_target, args.label_smoothing)

    fast = train("fastsoftmax", fastsoftmax_cross_entropy_with_grad,
                 x_tr, y_tr, x_te, y_te, args, progress)
    ref = train("numpy", numpy_cross_entropy_with_grad, x_tr, y_tr, x_te, y_te, args, progress)
    # Training is deterministic, so further runs give the same model; they only steady the timing
    # (best of --repeats, the two trainings alternating).
    for _ in range(args.repeats - 1):
        for r, fn in (
            (fast, fastsoftmax_cross_entropy_with_grad),
            (ref, numpy_cross_entropy_with_grad),
        ):
            again = train(r.name, fn, x_tr, y_tr, x_te, y_te, args, False)
            r.train_seconds = min(r.train_seconds, again.train_seconds)
            r.loss_seconds = min(r.loss_seconds, again.loss_seconds)

    train_acc = accuracy(fast.W, fast.b, x_tr, y_tr)
    test_acc = accuracy(fast.W, fast.b, x_te, y_te)
    ref_train_acc = accuracy(ref.W, ref.b, x_tr, y_tr)
    ref_test_acc = accuracy(ref.W, ref.b, x_te, y_te)
    max_loss_diff = float(np.max(np.abs(np.subtract(fast.epoch_loss, ref.epoch_loss))))
    max_w_diff = float(np.max(np.abs(fast.W - ref.W)))

    print()
    print(f"{'':12s} {'final loss':>11s} {'train acc':>10s} {'test acc':>9s} "
          f"{'train time':>11s} {'loss+grad time':>15s}")
    for r, tra, tea in ((fast, train_acc, test_acc), (ref, ref_train_acc, ref_test_acc)):
        print(f"{r.name:12s} {r.epoch_loss[-1]:11.6f} {tra:10.2%} {tea:9.2%} "
              f"{r.train_seconds * 1e3:9.1f}ms {r.loss_seconds * 1e3:13.1f}ms")
    print(f"NumPy / fastsoftmax time ratio (best of {args.repeats}): "
          f"training {ref.train_seconds / fast.train_seconds:.2f}x, "
          f"loss+grad calls {ref.loss_seconds / fast.loss_seconds:.2f}x "
          f"({args.epochs} epochs x {-(-x_tr.shape[0] // args.batch_size)} steps of "
          f"{args.batch_size} x {N_CLASSES} logits)")
    print(f"max |loss difference| over epochs: {max_loss_diff:.2e}; "
          f"max |W difference|: {max_w_diff:.2e}")

    return {
        "train_acc": train_acc,
        "test_acc": test_acc,
        "ref_train_acc": ref_train_acc,
        "ref_test_acc": ref_test_acc,
        "losses": fast.epoch_loss,
        "ref_losses": ref.epoch_loss,
        "W": fast.W,
        "ref_W": ref.W,
        "train_seconds": fast.train_seconds,
        "ref_train_seconds": ref.train_seconds,
        "loss_seconds": fast.loss_seconds,
        "ref_loss_seconds": ref.loss_seconds,
        "args": args,
    }


if __name__ == "__main__":
    main()
