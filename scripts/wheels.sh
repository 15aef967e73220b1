#!/usr/bin/env bash
# `make wheels`: the sdist and the abi3 wheels (one per architecture, any CPython >= 3.10) into OUT.
# The wheels are linked by zig (`maturin --zig`) against glibc 2.17 symbols and tagged manylinux2014
# (= manylinux_2_17); maturin's auditwheel step (`--auditwheel check`) then fails the build if the
# library needs a newer glibc symbol or an external shared library.
# Usage: scripts/wheels.sh VENV_BIN OUT
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1
OUT=$2
# glibc 2.17 (CentOS 7): the oldest base zig can target that Rust's std still supports.
COMPAT=manylinux2014
TARGETS="x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu"

for t in $TARGETS; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done
rm -rf "$OUT"
mkdir -p "$OUT"
"$BIN/maturin" sdist --out "$OUT"
for t in $TARGETS; do
    # zig is found as `python -m ziglang` of the interpreter on PATH
    PATH="$(cd "$BIN" && pwd):$PATH" "$BIN/maturin" build --release --zig --target "$t" \
        --compatibility $COMPAT --auditwheel check --out "$OUT"
done
ls -l "$OUT"
