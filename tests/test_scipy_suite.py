"""SciPy's own tests of ``logsumexp``, ``softmax`` and ``log_softmax``, run against fastsoftmax.

The test file ships inside SciPy's wheel (``scipy/special/tests/test_logsumexp.py``). It is loaded from
the installed SciPy as a module, its three names are rebound to the thin adapters below (SciPy's default
``axis`` is ``None``, fastsoftmax's is ``-1``; every other keyword has the same name), and its test
classes are collected here with NumPy as the only array namespace (SciPy's ``xp`` fixture).

Cases that exercise what fastsoftmax does not offer are skipped with the reason (``_NOT_OFFERED``);
cases failing because of a known defect are strict xfails (``_KNOWN_DEFECTS``) while the defect is open
(tests/defects.py): they turn into failures as soon as it is fixed, until its number leaves that list.
"""

from __future__ import annotations

import importlib.util
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fastsoftmax as fs
from defects import is_open

pytest.importorskip("scipy")

# The file's layout (the ``xp`` fixture, ``make_xp_test_case``) is that of SciPy >= 1.15; older SciPy
# keeps different tests there, which the lists below do not describe.
_MIN_SCIPY = (1, 15)


def logsumexp(a: Any, axis: Any = None, b: Any = None, keepdims: bool = False,
              return_sign: bool = False) -> Any:
    return fs.logsumexp(a, axis=axis, b=b, keepdims=keepdims, return_sign=return_sign)


def softmax(x: Any, axis: Any = None) -> Any:
    return fs.softmax(x, axis=axis)


def log_softmax(x: Any, axis: Any = None) -> Any:
    return fs.log_softmax(x, axis=axis)


def _load_scipy_module() -> Any:
    import scipy
    import scipy.special

    version = tuple(int(p) for p in re.findall(r"\d+", scipy.__version__)[:2])
    if version < _MIN_SCIPY:
        pytest.skip(f"SciPy {scipy.__version__}: the adapter lists cases of SciPy >= 1.15's file",
                    allow_module_level=True)
    path = Path(scipy.special.__file__).parent / "tests" / "test_logsumexp.py"
    if not path.exists():
        pytest.skip(f"{path} is not installed", allow_module_level=True)
    spec = importlib.util.spec_from_file_location("scipy_test_logsumexp_for_fastsoftmax", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        # SciPy's own markers (xfail_xp_backends, ...) are registered by SciPy's conftest only
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        spec.loader.exec_module(module)
    _listify_parametrize(module)
    module.logsumexp, module.softmax, module.log_softmax = logsumexp, softmax, log_softmax
    return module


def _listify_parametrize(module: Any) -> None:
    """Turns an iterator of parameters (``itertools.product``) into a list, as pytest now asks."""
    for cls in vars(module).values():
        for fn in vars(cls).values() if isinstance(cls, type) else ():
            marks = getattr(fn, "pytestmark", [])
            for i, m in enumerate(marks):
                if m.name == "parametrize" and not isinstance(m.args[1], (list, tuple)):
                    args = (m.args[0], list(m.args[1]), *m.args[2:])
                    marks[i] = pytest.mark.parametrize(*args, **m.kwargs).mark


_scipy = _load_scipy_module()
# every test class of the file, whichever its SciPy version holds (1.15 has no TestLogSoftmax)
globals().update({k: v for k, v in vars(_scipy).items() if k.startswith("Test") and isinstance(v, type)})

_COMPLEX = "complex input (fastsoftmax takes real floating, integer and bool arrays; complex is a TypeError)"
# (test-name regular expression, reason): skipped, not run.
_NOT_OFFERED = [
    (r"test_wrap_radians", "a private SciPy helper for complex results"),
    (r"test_logsumexp_complex_sign|test_gh21610|test_gh21709_small_imaginary", _COMPLEX),
    (r"test_dtypes_ab?\[.*complex", _COMPLEX),
    (r"test_gh22601_infinite_elements\[.*\(", _COMPLEX),
    (r"test_device\[.*1j", _COMPLEX),
]
# (test-name regular expression, reason): expected to fail until the defect is fixed.
_KNOWN_DEFECTS = [
    # ids are [dtype_b-dtype_a] (SciPy 1.15: [dtype_b-dtype_a-numpy])
    (r"test_dtypes_ab\[int(32|64)-float32(-numpy)?\]",
     "defect 2: logsumexp(float32 a, b=int32/int64) returns float32; np.result_type gives float64"),
    (r"TestSoftmax::test_softmax_scalar$",
     "defect 2: softmax of a 0-d input returns a 0-d array, SciPy returns a NumPy scalar"),
    (r"TestLogSoftmax::test_log_softmax_scalar$",
     "defect 2: log_softmax of a 0-d input returns a 0-d array, SciPy returns a NumPy scalar"),
]


@pytest.fixture
def xp() -> Any:
    """SciPy's array-namespace fixture, reduced to the one namespace fastsoftmax's CPU path takes."""
    return np


@pytest.fixture
def devices() -> list[Any]:
    return [None]


@pytest.fixture
def skip_xp_backends() -> None:
    """SciPy 1.15's file asks for it by name; it only skips other array libraries."""


@pytest.fixture
def xfail_xp_backends() -> None:
    """As skip_xp_backends."""


@pytest.fixture(autouse=True)
def _scipy_case_marks(request: pytest.FixtureRequest) -> None:
    node_id = request.node.nodeid.split("::", 1)[1]
    for pattern, reason in _NOT_OFFERED:
        if re.search(pattern, node_id):
            pytest.skip(f"SciPy-only feature: {reason}")
    for pattern, reason in _KNOWN_DEFECTS:
        if re.search(pattern, node_id) and is_open(int(reason.split()[1].rstrip(":"))):
            request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))


def test_adapters_reach_fastsoftmax() -> None:
    """The loaded suite calls fastsoftmax, not SciPy (a test that cannot fail is a defect)."""
    assert _scipy.logsumexp is logsumexp and _scipy.softmax is softmax
    assert _scipy.log_softmax is log_softmax
    with pytest.raises(TypeError):
        _scipy.logsumexp(np.array([1 + 1j]))  # SciPy accepts complex input; fastsoftmax does not
