#!/usr/bin/env bash
# `make wheel-check`: installs the x86_64 wheel from WHEEL_DIR, with its `test` and `half` extras, into a
# fresh virtual environment of each given interpreter and runs the whole test suite against the
# INSTALLED package: pytest runs in a temporary folder holding a copy of tests/ and examples/, so the source tree is
# never on the path, and the run stops unless `fastsoftmax` is imported from the venv's site-packages.
# Usage: scripts/wheel-check.sh WHEEL_DIR PYTHON...
set -euo pipefail
cd "$(dirname "$0")/.."
WHEEL_DIR=$1
shift
wheel=$(ls "$WHEEL_DIR"/fastsoftmax-*x86_64*.whl)
status=0
for py in "$@"; do
    work=$(mktemp -d)
    t0=$SECONDS
    "$py" -m venv "$work/venv"
    "$work/venv/bin/python" -m pip install --quiet --upgrade pip
    "$work/venv/bin/python" -m pip install --quiet "$(realpath "$wheel")[test,half]"
    cp -r tests examples "$work/"  # tests/test_lm_head.py runs examples/lm_head.py
    cd "$work"
    venv/bin/python -c "
import sys, sysconfig, numpy, scipy, fastsoftmax
site = sysconfig.get_paths()['platlib']
assert fastsoftmax.__file__.startswith(site), (fastsoftmax.__file__, site)
print('fastsoftmax', fastsoftmax.__version__, 'from', fastsoftmax.__file__, 'on Python', sys.version.split()[0],
      'NumPy', numpy.__version__, 'SciPy', scipy.__version__)
"
    rc=0
    venv/bin/python -m pytest -q -ra -p no:cacheprovider tests || rc=$?
    echo "== wheel-check $("$py" -V 2>&1): pytest exit $rc in $((SECONDS - t0)) s (venv + install included)"
    [ $rc -eq 0 ] || status=1
    cd - >/dev/null
    rm -rf "$work"
done
exit $status
