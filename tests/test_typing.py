"""Static typing: the package ships a hand-written ``_native.pyi`` and ``py.typed``, so

- ``mypy --strict`` passes on the package's typed modules (the benchmark package included: it imports
  its optional frameworks untyped) and on a small typed usage file;
- a misuse of the public signatures is reported (so the check can fail);
- ``mypy.stubtest`` finds ``_native.pyi`` in agreement with the compiled module.

Skipped when mypy is not installed (CI installs it: the Makefile's DEV_DEPS). ``_cuda/`` (CuPy has
no stubs) is not part of the strict check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("mypy")

import fastsoftmax

PKG_DIR = os.path.dirname(os.path.abspath(fastsoftmax.__file__))
SRC_DIR = os.path.dirname(PKG_DIR)
STRICT_MODULES = [
    "__init__.py", "_api.py", "_checks.py", "_layout.py", "_cpu.py", "_native.pyi", "bench",
    "_partial.py", "_dask.py", "_dask_ce.py", "_dask_linear.py",
]

USAGE = '''
from __future__ import annotations

from typing import Any

import numpy as np

import fastsoftmax as fs

x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
y: Any = fs.softmax(x, -1, temperature=2.0)
ly: Any = fs.log_softmax(x, axis=(0, 1))
fs.softmin(x, None, out=np.empty_like(x))
lse: Any = fs.logsumexp(x, b=np.ones(5), keepdims=True, return_sign=False)
loss: Any = fs.cross_entropy(x, np.array([0, 1, 2, 3]), reduction="sum", label_smoothing=0.1)
grad: Any = fs.cross_entropy_grad(x, np.array([0, 1, 2, 3]), softcap=30.0, out=x)
pair: tuple[Any, Any] = fs.cross_entropy_with_grad(x, np.array([0, 1, 2, 3]), z_loss=1e-4)
dx: Any = fs.softmax_backward(np.ones_like(x), y, axis=-1, out=None)
dlx: Any = fs.log_softmax_backward(np.ones_like(x), ly, 1)
h: Any = fs.entropy(y, base=2.0, from_logits=False)
kl: Any = fs.kl_divergence(x, x, -1, from_logits=True)
fs.set_num_threads(2)
n: int = fs.get_num_threads()
isa: str = fs.simd_backend()
version: str = fs.__version__
'''

MISUSE = '''
import fastsoftmax as fs

fs.set_num_threads("2")
n: str = fs.get_num_threads()
fs.cross_entropy([[0.0]], [0], reduction="average")
fs.entropy([0.5, 0.5], bits=True)
'''


def _mypy(*args: str, cwd: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MYPYPATH=SRC_DIR)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--show-error-codes", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_package_is_strictly_typed(tmp_path):
    files = [os.path.join(PKG_DIR, m) for m in STRICT_MODULES]
    r = _mypy("--strict", "--cache-dir", str(tmp_path / "cache"), *files, cwd=SRC_DIR)
    assert r.returncode == 0, r.stdout + r.stderr


def test_typed_usage_passes_and_misuse_fails(tmp_path):
    good = tmp_path / "usage.py"
    good.write_text(textwrap.dedent(USAGE))
    r = _mypy("--strict", "--cache-dir", str(tmp_path / "cache"), str(good), cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr

    bad = tmp_path / "misuse.py"
    bad.write_text(textwrap.dedent(MISUSE))
    r = _mypy("--strict", "--cache-dir", str(tmp_path / "cache"), str(bad), cwd=str(tmp_path))
    assert r.returncode != 0
    lines = {int(line.split(":")[1]) for line in r.stdout.splitlines() if ": error:" in line}
    # each misuse is reported on its own line (file lines: 4, 5, 6, 7)
    assert {4, 5, 6, 7} <= lines, r.stdout


def test_stub_matches_native_module(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "fastsoftmax._native"],
        cwd=str(tmp_path),
        env=dict(os.environ, MYPYPATH=SRC_DIR),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
