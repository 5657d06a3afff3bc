#!/usr/bin/env bash
# The suite's test command: installs what the tests need, then checks formatting and lints,
# builds every program and runs every test against real journald, Docker and moto.
set -euo pipefail
cd "$(dirname "$0")/.."

# Free space, checked first: without it tests fail deep inside with ENOSPC, far from the
# cause. A full run needs ~3 GB for target/ (the dev profile keeps line tables only), ~3 GB
# in the temporary directory (the image tests' private Docker engines: the vfs storage driver
# copies whole layers) and ~1 GB under /var/lib/docker; places on one filesystem add up.
# LOGSUITE_MIN_FREE_GB overrides the total.
declare -A need_gb=() where=() probe=()
for spec in ".:3" "${TMPDIR:-/tmp}:3" "/var/lib/docker:1"; do
  place=${spec%:*} gb=${spec##*:}
  while [ ! -e "$place" ]; do place=$(dirname "$place"); done
  dev=$(stat -c %d "$place") # one filesystem, however many mount points show it
  need_gb[$dev]=$(( ${need_gb[$dev]:-0} + gb ))
  where[$dev]="${where[$dev]:+${where[$dev]}, }${spec%:*}"
  probe[$dev]=$place
done
for dev in "${!need_gb[@]}"; do
  need=${LOGSUITE_MIN_FREE_GB:-${need_gb[$dev]}}
  free_gb=$(( $(df -Pk "${probe[$dev]}" | awk 'NR==2 {print $4}') / 1024 / 1024 ))
  if [ "$free_gb" -lt "$need" ]; then
    echo "scripts/test.sh: only ${free_gb} GB free on the filesystem of ${where[$dev]}; the tests" \
      "need about ${need} GB there. Free space first (old checkouts' target/, leftover" \
      "containers and images: \`docker system prune\`), or set LOGSUITE_MIN_FREE_GB." >&2
    exit 1
  fi
done

./scripts/install-deps.sh
export LOGSUITE_VENV=${LOGSUITE_VENV:-/opt/logsuite-venv}

echo "==> cargo fmt --check"
cargo fmt --all -- --check
# Dependency policy (deny.toml): where cargo-deny is installed. Advisories need the RustSec
# database from GitHub, which a test machine may not reach: they are a release step
# (docs/releasing.md).
if cargo deny --version >/dev/null 2>&1; then
  echo "==> cargo deny check bans licenses sources"
  cargo deny check bans licenses sources
else
  echo "==> cargo deny: not installed here, dependency policy not checked" \
    "(cargo install cargo-deny --locked; see docs/releasing.md)"
fi
echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> build all programs (tests run the real binaries)"
cargo build --workspace --bins
echo "==> cargo test"
cargo test --workspace --no-fail-fast
echo "==> all tests passed"
