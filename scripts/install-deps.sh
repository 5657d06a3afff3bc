#!/usr/bin/env bash
# Installs what the suite's tests, demo and benchmarks run against, on Debian 12 as root:
# journald (systemd), Docker (docker.io) with busybox-static for a local image, libsystemd
# for journal-fanout, rsyslog/hyperfine/time for benchmarks (rsyslog also relays in log-proxy's
# local-syslog test, next to the other real clients: logger from bsdutils, perl's Sys::Syslog,
# python3's SysLogHandler), and a Python venv with the
# CloudWatch Logs emulator (moto) and the peer CLIs (awslogs, awscli); debootstrap for the
# container image test's local base image, made here (binutils: strip); strace for the syscall-filter
# test; zsh, fish and man-db to check completions and man pages.
# Idempotent: a second run only checks.
# --no-image-base:    skip the image test's base (the demo does not need it).
# --no-docker-engine: start no Docker engine and import no image (the demo without Docker).
# A Docker engine it starts has its pid in /run/logsuite-dockerd.pid (the demo stops the one
# it caused to start).
set -euo pipefail
IMAGE_BASE=1 ENGINE=1
for arg in "$@"; do
  case $arg in
    --no-image-base) IMAGE_BASE=0 ;;
    --no-docker-engine) ENGINE=0 ;;
    *) echo "install-deps.sh: unknown argument '$arg' (known: --no-image-base, --no-docker-engine)" >&2; exit 2 ;;
  esac
done

VENV=${LOGSUITE_VENV:-/opt/logsuite-venv}
PKGS=(docker.io busybox-static libsystemd-dev pkg-config systemd rsyslog hyperfine time python3-venv python3-pip openssl curl ca-certificates
      bsdutils perl python3
      debootstrap binutils strace zsh fish man-db prometheus python3-matplotlib)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$VENV/bin/moto_server" ] || [ ! -x "$VENV/bin/awslogs" ] || [ ! -x "$VENV/bin/aws" ]; then
  echo "==> Python venv $VENV with moto[server], awslogs, awscli"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q 'moto[server]' awslogs awscli
fi

# A Docker engine for the tests (they also start one on demand): vfs storage, no networking,
# because this kind of machine has no overlayfs or iptables for it.
if [ "$ENGINE" = 1 ] && ! docker info >/dev/null 2>&1; then
  echo "==> starting dockerd"
  rm -f /run/logsuite-dockerd.pid
  # Its own session: a Ctrl-C in the demo that started it must not stop the engine.
  setsid nohup dockerd --storage-driver vfs --iptables=false --bridge=none >/tmp/logsuite-dockerd.log 2>&1 &
  echo $! >/run/logsuite-dockerd.pid
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /tmp/logsuite-dockerd.log" >&2; exit 1; }
fi
if [ "$ENGINE" = 1 ] && ! docker image inspect busybox:local >/dev/null 2>&1; then
  echo "==> importing busybox:local from busybox-static"
  root=$(mktemp -d)
  mkdir -p "$root/bin" && cp /bin/busybox "$root/bin/"
  for a in sh echo sleep seq cat printf yes head dd true false ls tr awk xargs env; do ln -s busybox "$root/bin/$a"; done
  tar -C "$root" -c . | docker import - busybox:local >/dev/null
  rm -rf "$root"
fi
# The container image test's runtime base: Debian with the runtime libraries, debootstrapped
# here (the one download the tests need; the tests themselves stay on loopback) and kept as a
# tarball the test imports into a Docker engine of its own. Its name lists the packages: the
# test looks for exactly this file (tests/tests/image.rs, BASE_PACKAGES).
BASE_PACKAGES=libsystemd0,ca-certificates
BASE_TAR=/var/cache/logsuite-tests/debian-bookworm-minbase+${BASE_PACKAGES//,/+}.tar
if [ "$IMAGE_BASE" = 1 ] && [ ! -s "$BASE_TAR" ]; then
  echo "==> debootstrap of the image test's base ($BASE_TAR, about a minute)"
  mkdir -p "$(dirname "$BASE_TAR")"
  # Beside the tarball, not in /tmp (which may be noexec); debootstrap makes the root itself
  # (0755): a mktemp -d root would be 0700, and the image's non-root user could reach nothing.
  work=$(mktemp -d "$(dirname "$BASE_TAR")/work.XXXXXX")
  trap 'rm -rf "$work" "$BASE_TAR.partial"' EXIT
  if debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$work/rootfs" http://deb.debian.org/debian >/tmp/logsuite-debootstrap.log 2>&1 \
    && tar -C "$work/rootfs" -cf "$BASE_TAR.partial" . \
    && mv "$BASE_TAR.partial" "$BASE_TAR"; then
    :
  else
    # Only the image test needs it, and it says so when the file is missing: the other
    # tests still run.
    echo "WARNING: could not make $BASE_TAR (is deb.debian.org reachable? see" \
      "/tmp/logsuite-debootstrap.log); the container image test will fail until it exists" >&2
  fi
  rm -rf "$work"
  trap - EXIT
fi
echo "==> dependencies ready"
