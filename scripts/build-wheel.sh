#!/usr/bin/env bash
# One abi3 wheel for TARGET into OUT, as released: linked by zig (`maturin --zig`; zig from PyPI's
# ziglang, installed into the venv here) against glibc 2.17's symbols and tagged manylinux2014
# (= manylinux_2_17); maturin's auditwheel step (`--auditwheel check`) fails the build if the library
# needs a newer glibc symbol or a shared library outside the manylinux set.
# Usage: scripts/build-wheel.sh VENV_BIN TARGET OUT
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(cd "$1" && pwd)
TARGET=$2
OUT=$3
# glibc 2.17 (CentOS 7): the oldest that Rust's standard library supports, and the first for aarch64.
COMPAT=manylinux2014
"$BIN/python" -c "import ziglang" 2>/dev/null || "$BIN/python" -m pip install --quiet "ziglang>=0.11"
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
# zig must be the linker: a CARGO_TARGET_<triple>_LINKER from the environment (make test-aarch64 sets
# the gcc cross linker for cargo test) would win and link against the build machine's glibc.
triple_var=$(echo "$TARGET" | tr 'a-z-' 'A-Z_')
unset "CARGO_TARGET_${triple_var}_LINKER"
# maturin finds zig as `python -m ziglang` of the interpreter first on PATH
PATH="$BIN:$PATH" "$BIN/maturin" build --release --zig --target "$TARGET" \
    --compatibility $COMPAT --auditwheel check --out "$OUT"
