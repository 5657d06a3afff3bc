# Shared by the journal-fanout benchmarks (sourced, not run): a private journald namespace,
# volatile and without a rate limit, so every entry written is stored.

# start_namespace NS: write its configuration, start its journald (pid in JOURNALD_PID) and
# wait for its socket (path in SOCK); stop the script if the socket does not appear.
start_namespace() {
    printf '[Journal]\nStorage=volatile\nRateLimitIntervalSec=0\nRateLimitBurst=0\nRuntimeMaxUse=4G\nRuntimeMaxFileSize=512M\n' \
        >"/etc/systemd/journald@$1.conf"
    /lib/systemd/systemd-journald "$1" >/dev/null 2>&1 &
    JOURNALD_PID=$!
    SOCK=/run/systemd/journal.$1/socket
    for _ in $(seq 100); do
        [ -S "$SOCK" ] && return 0
        sleep 0.1
    done
    echo "journald for namespace $1 did not create $SOCK within 10 s" >&2
    exit 1
}

# remove_namespace NS: stop its journald, remove its configuration and its files.
remove_namespace() {
    if [ -n "${JOURNALD_PID:-}" ]; then kill "$JOURNALD_PID" 2>/dev/null || true; fi
    rm -f "/etc/systemd/journald@$1.conf"
    rm -rf "/run/log/journal/$(cat /etc/machine-id).$1" "/run/systemd/journal.$1"
}
