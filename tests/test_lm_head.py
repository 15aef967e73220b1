"""examples/lm_head.py in its reduced mode (--quick), run as a user would: in a subprocess.

The example trains the output layer of a next-word model on the standard library's source with
``linear_cross_entropy_with_grad``; the held-out loss must fall, and the summary must report the
memory the chunked call did not need.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "lm_head.py"

# The example trains for a few seconds natively and for minutes under qemu (make test-aarch64),
# where the kernels it calls are covered by the unit tests already.
pytestmark = pytest.mark.skipif(
    os.environ.get("FASTSOFTMAX_EMULATED", "") not in ("", "0"),
    reason="a training run: minutes under emulation; its kernels are tested on their own there",
)


def _run(*args, env=None):
    return subprocess.run([sys.executable, str(EXAMPLE), "--quick", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_quick_run_learns_and_reports_the_memory_saved(tmp_path):
    plot = tmp_path / "curve.png"
    r = _run("--no-progress", "--plot", str(plot))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    m = re.search(r"held-out loss\s+([\d.]+) -> ([\d.]+)", out)
    assert m, out
    before, after = float(m.group(1)), float(m.group(2))
    assert before == pytest.approx(6.931, abs=1e-3)  # untrained: uniform over 1024 words, ln 1024
    assert after < before - 1.0  # the output layer has learnt the frequent words at least
    m = re.search(r"\(([\d.]+) MiB\) against one chunk of (\d+) rows \(([\d.]+) MiB\)", out)
    assert m, out
    full, rows, held = float(m.group(1)), int(m.group(2)), float(m.group(3))
    assert rows == 4096 // 8
    assert full == pytest.approx(4096 * 1024 * 4 * 2 / 2**20, abs=0.05)
    assert held == pytest.approx(rows * 1024 * 4 / 2**20, abs=0.05)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "needs matplotlib" in r.stderr
    else:
        assert plot.exists() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_falls_back_to_lines_without_tqdm(tmp_path):
    """With tqdm hidden (a stub package that fails to import), the bar becomes printed lines."""
    stub = tmp_path / "tqdm"
    stub.mkdir()
    (stub / "__init__.py").write_text("raise ImportError('hidden for the test')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    r = _run("--steps", "10", env=env)
    assert r.returncode == 0, r.stderr
    assert "training 10/10 loss" in r.stdout
