"""Shared fixtures for the fastsoftmax pytest suite.

- ``rng``: a NumPy Generator seeded from fresh entropy (or ``FASTSOFTMAX_TEST_SEED``); the seed is
  printed and attached to the failure report so a failing draw can be replayed.
- ``each_backend``: runs a test once per SIMD backend this CPU supports, through the private
  ``fastsoftmax._native._set_simd_backend``; restores the previous backend afterwards. When the private
  hooks do not exist the test runs once on the default backend.
- Emulation (``make test-aarch64`` runs the suite under qemu-user): ``FASTSOFTMAX_EMULATED=1`` says so.
  A child ``sys.executable`` cannot start there without binfmt_misc, so ``FASTSOFTMAX_PYTHON_LAUNCHER``
  may name a host script that starts the emulated interpreter; it becomes ``sys.executable``. Without
  one, a test that spawns a process is skipped, with the reason.
"""

from __future__ import annotations

import os
import secrets
import sys

import numpy as np
import pytest

# make `import reference` work whatever pytest's import mode is
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SEED_ENV = "FASTSOFTMAX_TEST_SEED"
EMULATED = os.environ.get("FASTSOFTMAX_EMULATED", "") not in ("", "0")
LAUNCHER = os.environ.get("FASTSOFTMAX_PYTHON_LAUNCHER", "")
if LAUNCHER:
    sys.executable = LAUNCHER


@pytest.fixture(autouse=True)
def _no_subprocess_under_emulation(monkeypatch):
    if EMULATED and not LAUNCHER:
        import subprocess

        def skip(*args, **kwargs):
            pytest.skip("spawns a process: needs binfmt_misc under emulation (FASTSOFTMAX_EMULATED=1)")

        monkeypatch.setattr(subprocess.Popen, "__init__", skip)
    yield


def _backends() -> list[str]:
    try:
        import fastsoftmax._native as native
    except ImportError:
        return ["default"]
    if not (hasattr(native, "supported_backends") and hasattr(native, "_set_simd_backend")):
        return ["default"]
    names = [str(n) for n in native.supported_backends()]
    return names or ["default"]


def pytest_generate_tests(metafunc):
    if "each_backend" in metafunc.fixturenames:
        metafunc.parametrize("each_backend", _backends(), indirect=True, ids=lambda n: f"simd={n}")


@pytest.fixture
def each_backend(request):
    name = request.param
    if name == "default":
        yield name
        return
    import fastsoftmax
    import fastsoftmax._native as native

    previous = fastsoftmax.simd_backend()
    native._set_simd_backend(name)
    try:
        assert fastsoftmax.simd_backend() == name
        yield name
    finally:
        native._set_simd_backend(previous)


@pytest.fixture
def rng(request):
    seed = int(os.environ.get(SEED_ENV, secrets.randbits(63)))
    request.node._fastsoftmax_seed = seed
    print(f"rng seed {seed}; replay with {SEED_ENV}={seed}")
    return np.random.default_rng(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    seed = getattr(item, "_fastsoftmax_seed", None)
    if seed is not None and report.failed:
        report.sections.append(("fastsoftmax rng seed", f"{SEED_ENV}={seed}"))


@pytest.fixture
def restore_threads():
    import fastsoftmax

    n = fastsoftmax.get_num_threads()
    yield n
    fastsoftmax.set_num_threads(n)
    assert fastsoftmax.get_num_threads() == n
