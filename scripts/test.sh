#!/usr/bin/env bash
# The suite's test command: installs what the tests need, then checks formatting and lints,
# builds every program and runs every test against real journald, Docker and moto.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
export LOGSUITE_VENV=${LOGSUITE_VENV:-/opt/logsuite-venv}

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> build all programs (tests run the real binaries)"
cargo build --workspace --bins
echo "==> cargo test"
cargo test --workspace --no-fail-fast
echo "==> all tests passed"
