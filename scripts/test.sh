#!/usr/bin/env bash
# Sets everything up, then runs every check: rustfmt, clippy (pedantic), cargo test, ruff, mypy
# (strict, with stubtest for veil._core) and pytest (unit, property, interop, vector and benchmark
# smoke tests). Stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

export PYO3_PYTHON="$PWD/.venv/bin/python"
export VEIL_HYPOTHESIS_PROFILE="${VEIL_HYPOTHESIS_PROFILE:-fast}"
step() {
    echo "==> $1"
    shift
    "$@"
}
step "cargo fmt" cargo fmt --all --check
step "cargo clippy" cargo clippy --workspace --all-targets --locked --quiet -- -D warnings
step "cargo test" cargo test -p veil-core --locked --quiet
step "ruff check" .venv/bin/ruff check .
step "ruff format" .venv/bin/ruff format --check .
step "mypy" .venv/bin/mypy
step "stubtest" .venv/bin/python -m mypy.stubtest veil._core
step "pytest" .venv/bin/python -m pytest -p no:cacheprovider
