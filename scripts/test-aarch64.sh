#!/usr/bin/env bash
# `make test-aarch64`: the NEON backend, tested on an x86-64 machine under qemu-user.
#   1. `cargo test --release` cross-built for aarch64-unknown-linux-gnu, each test binary run by
#      qemu-aarch64 (the exhaustive f32 sweeps of tests/simd.rs sampled: FASTSOFTMAX_SWEEP_STRIDE);
#   2. the abi3 wheel cross-built as released (scripts/build-wheel.sh), unpacked, and the whole
#      pytest suite run against it by Debian's arm64 Python 3.11 + NumPy + SciPy
#      (scripts/aarch64-setup.sh unpacks them).
# Both parts always run; the exit status is non-zero when either failed.
# Usage: scripts/test-aarch64.sh VENV_BIN   (the host virtual environment holding maturin)
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=$(cd "${1:-.venv/bin}" && pwd)
TARGET=aarch64-unknown-linux-gnu
ROOT=$PWD/target/aarch64-root        # the unpacked arm64 Python (made once, reused)
WHEEL_DIR=$PWD/target/aarch64-wheel
SITE=$PWD/target/aarch64-site        # the wheel, unpacked: what the Python tests import
# Every 61st float of each sweep: the full sweeps take 7-11 min under emulation, the whole of
# tests/simd.rs about a minute sampled.
export FASTSOFTMAX_SWEEP_STRIDE=${FASTSOFTMAX_SWEEP_STRIDE:-61}
# Generated-input examples per property (tests/test_generated.py): 10 instead of 40 under emulation.
export FASTSOFTMAX_GENERATED_EXAMPLES=${FASTSOFTMAX_GENERATED_EXAMPLES:-10}
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"

scripts/aarch64-setup.sh "$ROOT" "$BIN/python" || exit 1

t0=$SECONDS
cargo test --release --target $TARGET
rust_rc=$?
echo "== aarch64 cargo test: exit $rust_rc in $((SECONDS - t0)) s"

t0=$SECONDS
rm -rf "$WHEEL_DIR" "$SITE"
# the wheel as `make wheels` builds it (zig-linked, manylinux2014, auditwheel-checked)
scripts/build-wheel.sh "$BIN" $TARGET "$WHEEL_DIR" || exit 1
"$BIN/python" -m zipfile -e "$WHEEL_DIR"/fastsoftmax-*.whl "$SITE"
# A host script that starts the emulated interpreter: tests that spawn `sys.executable` use it
# (there is no binfmt_misc to start an arm64 binary directly). tests/conftest.py reads both variables.
LAUNCHER=$ROOT/python3-qemu
printf '#!/bin/sh\nexec qemu-aarch64 -L "%s" "%s/usr/bin/python3.11" "$@"\n' "$ROOT" "$ROOT" > "$LAUNCHER"
chmod +x "$LAUNCHER"
export FASTSOFTMAX_EMULATED=1 FASTSOFTMAX_PYTHON_LAUNCHER=$LAUNCHER PYTHONPATH=$SITE:$ROOT/pylib
"$LAUNCHER" -c "
import platform, fastsoftmax
assert platform.machine() == 'aarch64', platform.machine()
assert fastsoftmax.__file__.startswith('$SITE'), fastsoftmax.__file__
assert fastsoftmax.simd_backend() == 'neon', fastsoftmax.simd_backend()
print('fastsoftmax', fastsoftmax.__version__, 'on', platform.machine(), 'simd', fastsoftmax.simd_backend())
" || exit 1
"$LAUNCHER" -m pytest -q -p no:cacheprovider --durations=15 tests ${PYTEST_ARGS:-}
py_rc=$?
echo "== aarch64 pytest: exit $py_rc in $((SECONDS - t0)) s (wheel build included)"
[ $rust_rc -eq 0 ] && [ $py_rc -eq 0 ]
