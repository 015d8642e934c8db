#!/usr/bin/env bash
# Builds the fuzz targets with cargo-fuzz (libFuzzer, coverage-guided, no sanitizer: stable Rust)
# and runs each for a bounded time, starting from the committed seed corpus (seeds/<target>) and
# growing a local one (corpus/<target>, not committed). Fails on any finding: a panic, a crash, an
# input slower than 10 s or a process above 2 GB; cargo fuzz prints the input, saved in
# artifacts/<target>/, and the command that replays it.
#
#   run.sh [SECONDS_PER_TARGET [TARGET...]]     default: 10 seconds, every target
#   FUZZ_JOBS=N run.sh ...                       targets run N at a time (default: 2)
#   FUZZ_SANITIZER=address RUSTC_BOOTSTRAP=1 run.sh ...
#                                                with AddressSanitizer (a -Z flag: nightly, or
#                                                stable with RUSTC_BOOTSTRAP=1); builds in its own
#                                                target dir, runs 3-10x slower
#
# Installs cargo-fuzz into ~/.cargo/bin if that version is not there (once; ~1.5 min).
set -euo pipefail
cd "$(dirname "$0")"

CARGO_FUZZ_VERSION=0.13.2
seconds="${1:-10}"
shift || true
jobs="${FUZZ_JOBS:-2}"
sanitizer="${FUZZ_SANITIZER:-none}"
build=(-s "$sanitizer")
if [ "$sanitizer" != none ]; then
    build+=(--target-dir "target/$sanitizer")
fi

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION into ~/.cargo/bin (once)"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# cargo fuzz has no --locked: check Cargo.lock is current first, so that the build cannot change it.
cargo fetch --locked --quiet
cargo fuzz build "${build[@]}"
mkdir -p artifacts corpus

# "onion_peel: 94198 runs in 11 s; coverage 208 -> 226 edges; corpus 3 -> 20 inputs"
summary() {
    local start end
    start=$(grep -m1 'INITED' "$2" || true)
    end=$(grep -m1 'DONE ' "$2" || true)
    echo "$1: $(echo "$end" | sed -E 's/^#([0-9]+).*/\1/') runs in $(grep -m1 -oE 'in [0-9]+ second' "$2" | grep -oE '[0-9]+') s;" \
        "coverage $(field cov "$start") -> $(field cov "$end") edges;" \
        "corpus $(field corp "$start" | cut -d/ -f1) -> $(field corp "$end" | cut -d/ -f1) inputs"
}
field() { echo "$2" | grep -oE "$1: [^ ]+" | cut -d' ' -f2; }

fuzz() {
    local target="$1" log="artifacts/$1.log"
    mkdir -p "corpus/$target"
    if cargo fuzz run "${build[@]}" "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
        -print_final_stats=1 > "$log" 2>&1; then
        summary "$target" "$log"
    else
        echo "fuzz: $target failed (in rust/veil-core/fuzz; whole output in $log):" >&2
        if grep -q '^Failing input:' "$log"; then
            grep -m1 -A1 -E 'panicked at|ERROR: libFuzzer' "$log" >&2 || true
            sed -n '/^Failing input:/,/^Minimize/p' "$log" >&2
        else
            tail -n 40 "$log" >&2
        fi
        return 1
    fi
}

status=0
running=0
for target in "${targets[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || status=1
        running=$((running - 1))
    fi
    fuzz "$target" &
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
    wait -n || status=1
    running=$((running - 1))
done
exit "$status"
