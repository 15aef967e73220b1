# The two quick-start commands (README): `make bench` and `make test`. Each builds the Rust extension
# in release mode, installs it into a virtual environment (.venv, made on first use with python3),
# then runs the benchmark table or the whole test suite (cargo test + pytest).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# What building and testing need. PyTorch (CPU use of the PyPI wheel) and Dask are here because the
# suite tests fastsoftmax.torch, the Dask adapter and compares with PyTorch; JAX and CuPy stay
# optional peers, never installed here.
DEV_DEPS := "maturin>=1.7,<2" "numpy>=1.23" "scipy>=1.10" "pytest>=7" "hypothesis>=6" \
            "scikit-learn>=1.2" "mypy>=1.8" "ml_dtypes>=0.3" "torch>=2.4" \
            "dask[array]>=2023.1" "distributed>=2023.1"
ARGS ?=

.PHONY: bench test install deps rust-test py-test lint clean

bench: install
	$(BIN)/python -m fastsoftmax.bench $(ARGS)

test: install rust-test py-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# PyPI's torch wheel brings about 3 GB of CUDA libraries: a dropped connection resumes the download,
# and the whole install is tried three times, rather than failing the run.
deps: $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	for i in 1 2 3; do \
	  $(BIN)/python -m pip install --quiet --resume-retries 20 $(DEV_DEPS) && break; \
	  [ $$i = 3 ] && exit 1; echo "pip install failed (attempt $$i of 3); retrying" >&2; sleep 10; \
	done

install: deps
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH $(BIN)/maturin develop --release --quiet

rust-test:
	cargo test --release

# Formatting and lints, with the Python bindings off (what `cargo test` builds) and on.
lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings

py-test:
	$(BIN)/python -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) target

# ---------------------------------------------------------------------------------------------------
# Platforms and wheels (docs/platforms.md). Each target installs what it needs, idempotently.
#   make test-aarch64   cargo test + the pytest suite on aarch64 (NEON) under qemu-user
#   make wheels         sdist + abi3 manylinux wheels for x86_64 and aarch64 into target/wheels/
#   make wheel-check    the x86_64 wheel installed into fresh CPython 3.10 and 3.13 venvs, suite run
.PHONY: test-aarch64 wheels wheel-check

WHEEL_DIR    := target/wheels
# The interpreters `make wheel-check` installs the wheel into (pyenv's, present on the CI machines).
CHECK_PYTHONS ?= /root/.pyenv/versions/3.10.13/bin/python /root/.pyenv/versions/3.13.0/bin/python

test-aarch64: deps
	scripts/test-aarch64.sh $(BIN)

wheels: deps
	scripts/wheels.sh $(BIN) $(WHEEL_DIR)

wheel-check: wheels
	scripts/wheel-check.sh $(WHEEL_DIR) $(CHECK_PYTHONS)
