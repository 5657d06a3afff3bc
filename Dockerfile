# One small runtime image holding the suite's three programs; `log-proxy` is the entrypoint.
#
#   docker build -t logsuite .                                # compile (pulls the Rust image)
#   docker build -t logsuite --build-arg BINARIES=prebuilt \
#     --build-arg BASE_IMAGE=LOCAL-IMAGE --network none .      # take dist/* instead: no registry
#
# Needs BuildKit (the default builder since Docker 23; on Debian's docker.io 20.10 set
# DOCKER_BUILDKIT=1): it builds only the stages the target uses, so the prebuilt path never
# pulls the Rust image. How to run it with the sockets and the journal: docs/container-image.md.

# Where the binaries come from: `build` (compile them) or `prebuilt` (dist/ in the context).
ARG BINARIES=build
# The runtime base. Any Debian-like image works; it needs network only if it lacks the
# runtime libraries (see the runtime stage).
ARG BASE_IMAGE=debian:bookworm-slim

# Binaries built elsewhere, e.g. `cargo build --release` copied to dist/ with the Dockerfile.
FROM scratch AS prebuilt
COPY dist/log-proxy dist/journal-fanout dist/cwlogs /out/

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libsystemd-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The context has no .git (see .dockerignore), so `--version` learns the revision from here:
#   --build-arg GIT_REV=$(git rev-parse --short=12 HEAD)      (empty: "rev unknown")
ARG GIT_REV=
# Debug info is stripped (symbols stay, so backtraces keep function names): 207 MB -> 46 MB.
RUN LOGSUITE_GIT_REV="$GIT_REV" cargo build --release --locked -p log-proxy -p journal-fanout -p cwlogs \
 && mkdir /out \
 && for p in log-proxy journal-fanout cwlogs; do strip --strip-debug -o "/out/$p" "target/release/$p"; done

FROM ${BINARIES} AS binaries

FROM ${BASE_IMAGE} AS runtime
# Runtime libraries only: libsystemd0 (journal-fanout reads the journal through it) and
# ca-certificates (the system roots that the CloudWatch Logs, Loggly and LogDNA clients trust).
# apt runs only when the base lacks them, so a base that holds them builds with --network none.
# The user is numeric in USER so that orchestrators can check it is not root.
RUN if ! dpkg -s libsystemd0 ca-certificates >/dev/null 2>&1; then \
      apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libsystemd0 ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --gid 10001 logsuite \
 && useradd --uid 10001 --gid logsuite --no-log-init --create-home --home-dir /home/logsuite \
      --shell /usr/sbin/nologin logsuite \
 && install -d -o logsuite -g logsuite /var/lib/journal-fanout /run/log-proxy
COPY --from=binaries /out/log-proxy /out/journal-fanout /out/cwlogs /usr/local/bin/
# The non-root user cannot create log-proxy's host default (/run/rate-limiting-log-proxy.sock):
# in the image the socket lives in a directory of its own, which the host mounts to reach it.
ENV LOG_PROXY_SYSLOG_ADDRESS=unixgram:///run/log-proxy/log-proxy.sock
USER 10001:10001
WORKDIR /home/logsuite
ENTRYPOINT ["log-proxy"]
