#!/usr/bin/env bash
# README command 2: set up everything (idempotent) and run the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
# Tests that spawn the CLI use the binary cargo builds alongside them.
cargo build --bin pretext
cargo nextest run --workspace --no-fail-fast --status-level fail --final-status-level fail "$@"
