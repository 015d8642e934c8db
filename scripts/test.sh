#!/usr/bin/env bash
# Sets everything up, then runs every check: rustfmt, clippy (pedantic), cargo test, ruff, mypy
# (strict, with stubtest for veil._core), pytest (unit, property, interop, vector and benchmark
# smoke tests, and a 20 s soak of node processes), the benchmark gate (same-run ratios against
# bench/baseline.json) and the Rust core's fuzz targets (cargo fuzz, 20 s each). Stops at the first
# failure.
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
# The fuzz harness (rust/veil-core/fuzz, its own workspace) is checked and its seed corpus replayed
# without libFuzzer, in the workspace's target dir (reusing its dependencies).
FUZZ_MANIFEST=rust/veil-core/fuzz/Cargo.toml
step "cargo fmt (fuzz)" cargo fmt --manifest-path "$FUZZ_MANIFEST" --check
step "cargo clippy (fuzz)" cargo clippy --manifest-path "$FUZZ_MANIFEST" --no-default-features \
    --all-targets --locked --quiet --target-dir target -- -D warnings
step "cargo test (fuzz)" cargo test --manifest-path "$FUZZ_MANIFEST" --no-default-features \
    --locked --quiet --target-dir target
step "ruff check" .venv/bin/ruff check .
step "ruff format" .venv/bin/ruff format --check .
step "mypy" .venv/bin/mypy
step "stubtest" .venv/bin/python -m mypy.stubtest veil._core
step "pytest" .venv/bin/python -m pytest -p no:cacheprovider
# Same-run ratios of hot paths against bench/baseline.json (~1-2 min): bench/README.md, CI gate.
step "bench gate" .venv/bin/python bench/gate.py
# Coverage-guided fuzzing of every parser of network bytes in the Rust core: 20 s per target, two
# at a time (~2 min, plus ~2 min to build); any finding fails. rust/veil-core/fuzz/README.md.
step "cargo fuzz" bash rust/veil-core/fuzz/run.sh 20
