#!/usr/bin/env bash
# The suite's test command: installs what the tests need, then checks formatting and lints,
# builds every program and runs every test against real journald, Docker and moto.
set -euo pipefail
cd "$(dirname "$0")/.."

# A full run needs ~6 GB for target/ and ~2 GB under /var/lib/docker (the vfs storage driver
# copies whole layers). Without it, tests fail deep inside with ENOSPC, far from the cause.
need_gb=${LOGSUITE_MIN_FREE_GB:-10}
for place in . /var/lib/docker; do
  while [ ! -e "$place" ]; do place=$(dirname "$place"); done
  free_gb=$(( $(df -Pk "$place" | awk 'NR==2 {print $4}') / 1024 / 1024 ))
  if [ "$free_gb" -lt "$need_gb" ]; then
    echo "scripts/test.sh: only ${free_gb} GB free on the filesystem of $place; the tests need" \
      "about ${need_gb} GB (target/ and Docker's vfs layers). Free space first (e.g." \
      "\`docker builder prune -af\`, \`cargo clean\` in old checkouts), or set" \
      "LOGSUITE_MIN_FREE_GB to run anyway." >&2
    exit 1
  fi
done

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
