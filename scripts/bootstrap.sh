#!/usr/bin/env bash
# Sets up a development environment on a fresh machine (Python 3.11 + cargo): a virtual environment in
# .venv with every Python dependency, and the Rust extension veil._core built in release mode.
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip "maturin>=1.9,<2"
# Builds the extension with the release profile (lto = "fat", codegen-units = 1) from the locked
# Cargo.lock, and installs the package (editable) with its test and benchmark extras.
# Its output (pip's and cargo's) goes to .venv/bootstrap.log, shown only if the build fails.
if ! .venv/bin/maturin develop --release --locked --extras test,bench > .venv/bootstrap.log 2>&1; then
    cat .venv/bootstrap.log >&2
    echo "bootstrap: building veil failed (log above, also in .venv/bootstrap.log)" >&2
    exit 1
fi
.venv/bin/python -c "import veil._core" # fail here, loudly, if the extension did not build
