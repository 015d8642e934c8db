#!/usr/bin/env bash
# Sets everything up, then runs Veil's main job. Until the local network exists that is the onion
# benchmark: the primitive floor, a plain-Python peel, the Rust peel and the Rust batch peel, side by
# side, written as a table here and as JSON and PNG under bench-results/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
mkdir -p bench-results
exec .venv/bin/veil bench onion --json bench-results/onion.json --png bench-results/onion.png "$@"
