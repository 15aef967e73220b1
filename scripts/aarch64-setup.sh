#!/usr/bin/env bash
# Installs what `make test-aarch64` needs, idempotently (each step is skipped when already done):
#   - the cross linker, the arm64 C library headers and qemu-user (apt-get);
#   - Rust's aarch64-unknown-linux-gnu standard library (rustup);
#   - a folder $ROOT holding Debian's arm64 Python, NumPy and SciPy, unpacked with `dpkg -x` (never
#     installed: python3:arm64 would replace the machine's amd64 Python), with the BLAS/LAPACK `.so.3`
#     links that Debian's alternatives system would have made;
#   - pytest and hypothesis (pure Python) for that interpreter, as wheels unpacked into $ROOT/pylib.
# Usage: scripts/aarch64-setup.sh ROOT HOST_PYTHON
set -euo pipefail
ROOT=$1
HOST_PYTHON=$2
TRIPLE=aarch64-linux-gnu
export DEBIAN_FRONTEND=noninteractive

# Debian bookworm's arm64 packages: the interpreter, its C-library closure, NumPy and SciPy (whose
# BLAS/LAPACK are the reference ones), but not SciPy's build-time compiler python3-pythran.
DEBS="libc6 libgcc-s1 libstdc++6 libgfortran5 gcc-12-base
  python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
  libexpat1 zlib1g libssl3 libffi8 libbz2-1.0 liblzma5 libuuid1 libsqlite3-0
  libncursesw6 libtinfo6 libreadline8 libcrypt1 libnsl2 libtirpc3 libdb5.3
  libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1
  python3-numpy libblas3 liblapack3 python3-scipy liblbfgsb0"
# Pure-Python test dependencies for the arm64 interpreter (pip download --no-deps, so listed in full).
PYPI="pytest iniconfig pluggy packaging pygments hypothesis attrs sortedcontainers"

host_pkgs="gcc-$TRIPLE libc6-dev-arm64-cross qemu-user"
if ! dpkg -s $host_pkgs >/dev/null 2>&1 || ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
    apt-get update -qq
    apt-get install -y -qq $host_pkgs >/dev/null
fi

if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    rustup target add aarch64-unknown-linux-gnu
fi

if [ ! -e "$ROOT/.complete" ]; then
    rm -rf "$ROOT"
    mkdir -p "$ROOT/debs" "$ROOT/pylib"
    # arm64 package lists (the `dpkg --add-architecture` above may be older than the last update)
    apt-cache show python3-numpy:arm64 >/dev/null 2>&1 || apt-get update -qq
    (cd "$ROOT/debs" && apt-get download -qq -o APT::Sandbox::User=root $(for p in $DEBS; do echo "$p:arm64"; done))
    for deb in "$ROOT"/debs/*.deb; do dpkg -x "$deb" "$ROOT"; done
    lib="$ROOT/usr/lib/$TRIPLE"
    ln -sf blas/libblas.so.3 "$lib/libblas.so.3"
    ln -sf lapack/liblapack.so.3 "$lib/liblapack.so.3"
    "$HOST_PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
        --implementation py --dest "$ROOT/pylib/wheels" $PYPI
    for whl in "$ROOT"/pylib/wheels/*.whl; do
        "$HOST_PYTHON" -m zipfile -e "$whl" "$ROOT/pylib"
    done
    rm -rf "$ROOT/debs" "$ROOT/pylib/wheels"
    touch "$ROOT/.complete"
fi
