#!/usr/bin/env bash
# Sets everything up, then runs Veil's main job: a local network of service nodes on loopback
# (`veil devnet up`, 12 node processes by default, each with its own LMDB store), with a live status
# view until Ctrl-C. Arguments go to `veil devnet up` (e.g. --nodes 24, --detach).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/veil devnet up "$@"
