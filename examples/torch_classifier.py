#!/usr/bin/env python
"""A small PyTorch classifier on scikit-learn's digits, trained with two interchangeable losses.

The model is a one-hidden-layer MLP (64 pixels -> 128 -> 10 classes), trained twice in one run from
the same initial weights and the same minibatch order: once with ``torch.nn.CrossEntropyLoss`` and
once with ``fastsoftmax.torch.CrossEntropyLoss``, a drop-in subclass of it. The only line that
changes is::

    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=eps)          # PyTorch
    loss_fn = fastsoftmax.torch.CrossEntropyLoss(label_smoothing=eps)  # fastsoftmax

The fastsoftmax loss computes the loss and its gradient with respect to the logits in one pass in
the forward call and hands the saved gradient to autograd in ``backward()``. The script prints both
test accuracies (they agree up to floating-point rounding) and the time spent in each loss, forward
and backward. With a 10-class head the loss is a small part of a step; the difference grows with
the number of classes (``--classes-pad`` appends never-used classes to the head to show it).

Needs: ``pip install "fastsoftmax[torch,examples]"`` (PyTorch and scikit-learn; the digits data ship
with scikit-learn, no download).

Run::

    python examples/torch_classifier.py
    python examples/torch_classifier.py --label-smoothing 0.1 --classes-pad 30000
    python examples/torch_classifier.py --quick     # reduced mode, used by the tests
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, Optional, Sequence

import torch

import fastsoftmax
import fastsoftmax.torch as ft


def load_digits(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits as sk_load
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise SystemExit("this example needs scikit-learn: pip install 'fastsoftmax[examples]'")
    X, y = sk_load(return_X_y=True)
    X = X / 16.0  # pixels in [0, 1]
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    f32 = torch.float32
    return (torch.tensor(Xtr, dtype=f32), torch.tensor(ytr), torch.tensor(Xte, dtype=f32),
            torch.tensor(yte))


def train(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    data: tuple[torch.Tensor, ...],
    args: argparse.Namespace,
) -> tuple[float, float, float]:
    """(test accuracy, final training loss, seconds spent in the loss's forward + backward)."""
    Xtr, ytr, Xte, yte = data
    torch.manual_seed(args.seed)  # same initial weights and minibatch order for both losses
    classes = 10 + args.classes_pad
    model = torch.nn.Sequential(
        torch.nn.Linear(64, args.hidden), torch.nn.ReLU(), torch.nn.Linear(args.hidden, classes)
    )
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_time = 0.0
    last = float("nan")
    for _ in range(args.epochs):
        order = torch.randperm(len(Xtr))
        for i in range(0, len(Xtr), args.batch_size):
            idx = order[i : i + args.batch_size]
            logits = model(Xtr[idx])
            logits_leaf = logits.detach().requires_grad_()  # times the loss alone
            t0 = time.perf_counter()
            loss = loss_fn(logits_leaf, ytr[idx])
            loss.backward()
            loss_time += time.perf_counter() - t0
            opt.zero_grad()
            logits.backward(logits_leaf.grad)
            opt.step()
            last = float(loss.detach())
    with torch.no_grad():
        acc = float((model(Xte).argmax(1) == yte).float().mean())
    return acc, last, loss_time


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--classes-pad", type=int, default=0,
                   help="extra, never-used classes appended to the head (a wider softmax)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="reduced mode (4 epochs of batches of 128), for the tests")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.batch_size, args.lr = 4, 128, 0.1
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict[str, tuple[float, float, float]]:
    args = parse_args(argv)
    torch.set_num_threads(fastsoftmax.get_num_threads())  # both losses get the same threads
    data = load_digits(args.seed)
    losses = {
        "torch.nn.CrossEntropyLoss": torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing),
        "fastsoftmax.torch.CrossEntropyLoss": ft.CrossEntropyLoss(
            label_smoothing=args.label_smoothing
        ),
    }
    results = {}
    for name, fn in losses.items():
        acc, last, secs = train(fn, data, args)
        results[name] = (acc, last, secs)
        print(f"{name}: test accuracy {acc:.4f}  final batch loss {last:.4f}  "
              f"loss forward+backward {secs * 1e3:.1f} ms")
    (_, _, t_ref), (_, _, t_fs) = results.values()
    print(f"time ratio (torch / fastsoftmax, loss only): {t_ref / t_fs:.2f}")
    return results


if __name__ == "__main__":
    main()
