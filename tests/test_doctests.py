"""The examples in the public docstrings run and print what they say (API.md: "an example that runs").

NumPy's print options are fixed for the run, so the expected reprs do not depend on the caller's
settings. Every public function must have at least one example.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import fastsoftmax

PUBLIC = [n for n in fastsoftmax.__all__ if n != "__version__"]


@pytest.fixture
def fixed_printoptions():
    with np.printoptions(precision=8, suppress=False, linewidth=75, threshold=1000, legacy=False):
        yield


def _examples(name: str) -> list[doctest.DocTest]:
    obj = getattr(fastsoftmax, name)
    finder = doctest.DocTestFinder(recurse=False)
    return [t for t in finder.find(obj, name, globs={"np": np, "fs": fastsoftmax}) if t.examples]


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_examples_run(name, fixed_printoptions):
    tests = _examples(name)
    assert tests, f"{name} has no runnable example in its docstring"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    res = runner.summarize(verbose=False)
    assert res.failed == 0, f"{res.failed} of {res.attempted} examples of {name} failed (see output)"
