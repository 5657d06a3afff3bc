//! log-proxy: Docker syslog driver -> per-container rate limit -> journald.
fn main() {}
