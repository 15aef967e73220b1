#!/usr/bin/env bash
# `make wheels`: into OUT, the sdist and the abi3 manylinux2014 wheels (any CPython >= 3.10) for
# x86_64 and aarch64 Linux (scripts/build-wheel.sh says how they are linked and checked).
# Usage: scripts/wheels.sh VENV_BIN OUT
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1
OUT=$2
rm -rf "$OUT"
mkdir -p "$OUT"
"$BIN/maturin" sdist --out "$OUT"
for t in x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu; do
    scripts/build-wheel.sh "$BIN" "$t" "$OUT"
done
ls -l "$OUT"
