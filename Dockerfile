# Builds the suite's three programs and ships them in one slim image.
#   docker build -t logsuite .
#   docker run -v /var/run:/var/run -v /run/systemd/journal:/run/systemd/journal logsuite log-proxy
#   docker run -v /var/log/journal:/var/log/journal:ro -v /var/lib/journal-fanout:/var/lib/journal-fanout \
#     -e JOURNAL_FANOUT_DST=cloudwatchlogs -e AWS_REGION=us-east-1 logsuite journal-fanout
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libsystemd-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p log-proxy -p journal-fanout -p cwlogs

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libsystemd0 ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/log-proxy /src/target/release/journal-fanout /src/target/release/cwlogs /usr/local/bin/
# No default program: the image serves all three (`docker run logsuite log-proxy --help`).
CMD ["log-proxy", "--help"]
