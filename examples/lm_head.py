#!/usr/bin/env python
"""Train the output layer of a small next-word model on Python's own source code.

The text is the standard library's ``.py`` files (they ship with every Python: no download). Words and
punctuation become tokens; the ``--vocab`` most frequent ones get an id, the rest share one "unknown"
id. The hidden state of position i is a FIXED random embedding of the previous ``--context`` tokens,
concatenated (so only the output layer learns); the model is

    logits = h @ W.T + b,    loss = cross_entropy(logits, next token)

and each Adam step gets the loss and all three gradients from ONE call that never holds the
``batch × vocab`` logits:

    loss, _, dW, db = fastsoftmax.linear_cross_entropy_with_grad(h, W, y, bias=b, chunk_size=c)

At the end the script prints the loss curve (training and held-out), the perplexity before and after,
and the memory the call did not need: the full logits and their gradient against the one chunk of
``c`` rows it held. ``--plot curve.png`` saves the curve as a picture (needs matplotlib); tqdm, when
installed, draws the progress bar.

Run::

    python examples/lm_head.py                    # a minute or two: vocab 8192, batches of 8192 tokens
    python examples/lm_head.py --quick            # a few seconds (used by the tests)
    python examples/lm_head.py --plot curve.png
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import pathlib
import re
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

import fastsoftmax

TOKEN = re.compile(r"[A-Za-z_][A-Za-z_0-9]*|\d+|[^\sA-Za-z_0-9]")
UNKNOWN = 0  # the id shared by every word outside the vocabulary
CHUNK_FRACTION = 8  # default chunk: 1/8 of the batch rows (the library's own rule from 4096 rows)
SPARK = "▁▂▃▄▅▆▇█"


def stdlib_tokens(max_bytes: int) -> List[str]:
    """Tokens of the standard library's top-level .py files, in sorted file order, up to max_bytes."""
    root = pathlib.Path(os.__file__).resolve().parent
    words: List[str] = []
    used = 0
    for path in sorted(root.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        words.extend(TOKEN.findall(text))
        used += len(text)
        if used >= max_bytes:
            break
    return words


def encode(words: List[str], vocab: int) -> np.ndarray:
    """Ids by frequency rank (1 = most frequent); words beyond the vocabulary get UNKNOWN."""
    counts = collections.Counter(words)
    ids = {w: i + 1 for i, (w, _) in enumerate(counts.most_common(vocab - 1))}
    return np.fromiter((ids.get(w, UNKNOWN) for w in words), dtype=np.int64, count=len(words))


def hidden_states(ids: np.ndarray, context: int, width: int, rng: np.random.Generator,
                  vocab: int) -> np.ndarray:
    """h[i] = the fixed random embeddings of tokens i-context .. i-1, concatenated and scaled."""
    emb = rng.standard_normal((vocab, width)).astype(np.float32) / np.float32(math.sqrt(width * context))
    n = len(ids) - context
    h = np.empty((n, context * width), np.float32)
    for k in range(context):
        h[:, k * width:(k + 1) * width] = emb[ids[k:k + n]]
    return h


class _Lines:
    """Stands in for a tqdm bar when tqdm is not installed: one line every tenth of the run."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.n, self.post = total, desc, 0, ""

    def set_postfix_str(self, s: str) -> None:
        self.post = s

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.n == self.total or self.n % max(1, self.total // 10) == 0:
            print(f"{self.desc} {self.n}/{self.total} {self.post}", flush=True)

    def close(self) -> None:
        pass


def progress(total: int, desc: str, enabled: bool) -> Any:
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, unit="step")
        except ImportError:
            pass
    bar = _Lines(total, desc)
    if not enabled:
        bar.update = lambda k=1: None  # type: ignore[method-assign]
    return bar


def sparkline(values: Sequence[float], width: int = 40) -> str:
    v = np.asarray(values, dtype=np.float64)
    if len(v) > width:
        v = np.array([c.mean() for c in np.array_split(v, width)])
    lo, hi = float(v.min()), float(v.max())
    scale = (len(SPARK) - 1) / (hi - lo) if hi > lo else 0.0
    return "".join(SPARK[int(round((x - lo) * scale))] for x in v)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", type=int, default=8192, help="vocabulary size V")
    p.add_argument("--context", type=int, default=4, help="previous tokens the hidden state sees")
    p.add_argument("--width", type=int, default=64, help="embedding width per context token")
    p.add_argument("--batch", type=int, default=8192, help="tokens per step (rows N)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate")
    p.add_argument("--chunk-size", type=int, default=None,
                   help=f"rows per chunk (default: batch / {CHUNK_FRACTION})")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--text-bytes", type=int, default=3_000_000, help="how much source to read")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default="", help="save the loss curve to this PNG (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--quick", action="store_true", help="a few seconds: small vocabulary and batches")
    if "--quick" in (sys.argv[1:] if argv is None else argv):  # new defaults; explicit flags win
        p.set_defaults(vocab=1024, batch=4096, steps=15, text_bytes=400_000, width=32)
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    a = parse_args(argv)
    rng = np.random.default_rng(a.seed)
    ids = encode(stdlib_tokens(a.text_bytes), a.vocab)
    h = hidden_states(ids, a.context, a.width, rng, a.vocab)
    y = ids[a.context:]
    split = int(0.9 * len(y))  # the last tenth of the text is held out
    h_train, y_train, h_test, y_test = h[:split], y[:split], h[split:], y[split:]
    V, D = a.vocab, h.shape[1]
    chunk = a.chunk_size or max(1, a.batch // CHUNK_FRACTION)
    print(f"{len(y):,} tokens from the standard library ({split:,} to train), vocabulary {V}, "
          f"hidden {D}, batches of {a.batch}, chunks of {chunk} rows")

    W = np.zeros((V, D), np.float32)
    b = np.zeros(V, np.float32)
    adam = [np.zeros_like(p) for p in (W, b, W, b)]  # first and second moments of W and b
    beta1, beta2, eps = 0.9, 0.999, 1e-8

    def test_loss() -> float:
        return float(fastsoftmax.linear_cross_entropy(h_test, W, y_test, bias=b, chunk_size=chunk))

    before = test_loss()
    losses: List[float] = []
    tests: List[float] = [before]
    test_steps: List[int] = [0]
    bar = progress(a.steps, "training", not a.no_progress)
    start = time.perf_counter()
    for step in range(1, a.steps + 1):
        rows = rng.integers(0, split, a.batch)
        loss, _, dW, db = fastsoftmax.linear_cross_entropy_with_grad(
            h_train[rows], W, y_train[rows], bias=b, label_smoothing=a.label_smoothing,
            chunk_size=chunk,
        )
        losses.append(float(loss))
        for p, g, m, v in ((W, dW, adam[0], adam[2]), (b, db, adam[1], adam[3])):
            m *= beta1
            m += (1 - beta1) * g
            v *= beta2
            v += (1 - beta2) * g * g
            p -= a.lr * (m / (1 - beta1**step)) / (np.sqrt(v / (1 - beta2**step)) + eps)
        if step % max(1, a.steps // 10) == 0 or step == a.steps:
            tests.append(test_loss())
            test_steps.append(step)
        bar.set_postfix_str(f"loss {loss:.3f}")
        bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - start

    after = tests[-1]
    full = a.batch * V * 4 * 2  # the float32 logits and their gradient
    held = chunk * V * 4
    print(f"\ntraining loss  {losses[0]:.3f} -> {losses[-1]:.3f}  {sparkline(losses)}")
    print(f"held-out loss  {before:.3f} -> {after:.3f}  (perplexity {math.exp(before):.0f} -> "
          f"{math.exp(after):.1f}; a uniform guess: {V})")
    print(f"{a.steps} steps in {elapsed:.1f} s ({a.steps * a.batch / elapsed:,.0f} tokens/s)")
    print(f"memory not needed per step: the {a.batch} x {V} logits and their gradient "
          f"({full / 2**20:.1f} MiB) against one chunk of {chunk} rows ({held / 2**20:.1f} MiB): "
          f"{full / held:.0f}x less")
    if a.plot:
        save_plot(a.plot, losses, test_steps, tests)
    return {"losses": losses, "tests": tests, "test_steps": test_steps, "before": before, "after": after, "chunk": chunk,
            "saved_bytes": full - held, "args": a}


def save_plot(path: str, losses: List[float], test_steps: List[int], tests: List[float]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib (pip install matplotlib); no picture saved", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses, label="training batch")
    ax.plot(test_steps, tests, "o-", label="held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title("next-word output layer on the standard library")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
