//! `log-proxy check`: what on this host would lose or cut container logs, one finding a line
//! (see [`daemon_kit::hostcheck`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use daemon_kit::hostcheck::{self, Finding, JournaldConf};

use crate::intake::Address;

/// What the check looks at: the proxy's own settings.
pub struct Settings {
    pub socket: Address,
    pub journal_socket: PathBuf,
    pub docker_host: String,
    /// Docker's daemon configuration (`/etc/docker/daemon.json`).
    pub daemon_json: PathBuf,
}

/// Run every check, print the findings; the exit status (1 if any FAILs).
pub fn run(s: &Settings) -> u8 {
    let namespace = namespace_of(&s.journal_socket);
    let journald = JournaldConf::read(namespace.as_deref());
    let findings = vec![
        hostcheck::dgram_qlen(),
        journal_socket(&s.journal_socket),
        journald.storage_finding(),
        rate_limit(&journald),
        listening_socket(&s.socket),
        if s.docker_host == crate::docker::NO_DOCKER {
            Finding::ok("Docker daemon.json", "not used (--docker-host none)")
        } else {
            daemon_json(&s.daemon_json, &s.socket)
        },
        docker_api(&s.docker_host),
    ];
    hostcheck::report(&findings)
}

/// `/run/systemd/journal.NS/socket` → `NS`.
fn namespace_of(socket: &Path) -> Option<String> {
    let dir = socket.parent()?.file_name()?.to_str()?;
    dir.strip_prefix("journal.").map(str::to_string)
}

fn journal_socket(path: &Path) -> Finding {
    const WHAT: &str = "journald socket";
    match hostcheck::socket_served(path, false) {
        Ok(true) => Finding::ok(WHAT, format!("{} answers", path.display())),
        Ok(false) => Finding::fail(
            WHAT,
            format!(
                "{} exists but nothing reads it: start journald (systemctl start \
                 systemd-journald), or point --journal-socket at the running one",
                path.display()
            ),
        ),
        Err(e) => Finding::fail(
            WHAT,
            format!(
                "{}: {e}: journald is not running there; start it, or point --journal-socket \
                 at its socket (a namespace NS listens on /run/systemd/journal.NS/socket)",
                path.display()
            ),
        ),
    }
}

/// journald limits each unit's messages; every container's lines come from log-proxy's unit.
fn rate_limit(journald: &JournaldConf) -> Finding {
    const WHAT: &str = "journald rate limit for log-proxy";
    let unit_setting = unit_files("log-proxy.service")
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.trim().strip_prefix("LogRateLimitIntervalSec="))
                .map(|v| v.trim().to_string())
                .collect::<Vec<_>>()
        })
        .last();
    let global = journald.rate_limit_interval.as_deref();
    let off = |v: &str| v == "0" || v == "0s";
    match (unit_setting.as_deref(), global) {
        (Some(v), _) if off(v) => {
            Finding::ok(WHAT, "log-proxy.service sets LogRateLimitIntervalSec=0")
        }
        (_, Some(g)) if off(g) => Finding::ok(WHAT, "journald's RateLimitIntervalSec=0 (no limit)"),
        (Some(v), _) => Finding::warn(
            WHAT,
            format!(
                "log-proxy.service sets LogRateLimitIntervalSec={v}: journald drops every \
                 container's lines beyond the unit's burst; set LogRateLimitIntervalSec=0 \
                 (systemctl edit log-proxy.service) — log-proxy limits per container itself"
            ),
        ),
        (None, _) => Finding::warn(
            WHAT,
            format!(
                "no log-proxy.service with LogRateLimitIntervalSec=0 is installed, so journald's \
                 limit applies to all containers together (RateLimitIntervalSec={}, \
                 RateLimitBurst={}); run log-proxy from the shipped unit (scripts/install.sh) or \
                 set LogRateLimitIntervalSec=0 in its unit",
                global.unwrap_or("30s"),
                journald.rate_limit_burst.as_deref().unwrap_or("10000")
            ),
        ),
    }
}

/// A unit's file and drop-ins, in systemd's order of precedence (lowest first).
fn unit_files(unit: &str) -> Vec<PathBuf> {
    let dirs = [
        "/lib/systemd/system",
        "/usr/lib/systemd/system",
        "/usr/local/lib/systemd/system",
        "/run/systemd/system",
        "/etc/systemd/system",
    ];
    let mut files: Vec<PathBuf> = Vec::new();
    for d in dirs {
        let f = Path::new(d).join(unit);
        if f.is_file() {
            files.push(f);
        }
    }
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(Path::new(d).join(format!("{unit}.d"))) {
            let mut drop_ins: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            drop_ins.sort();
            files.extend(drop_ins);
        }
    }
    files
}

fn listening_socket(addr: &Address) -> Finding {
    const WHAT: &str = "syslog socket";
    let (path, stream) = match addr {
        Address::Unixgram(p) => (p, false),
        Address::Unix(p) => (p, true),
        other => return Finding::ok(WHAT, format!("{other:?} (network: not checked)")),
    };
    let mode = std::fs::metadata(path)
        .map(|m| format!("mode {:o}", m.permissions().mode() & 0o7777))
        .unwrap_or_default();
    match hostcheck::socket_served(path, stream) {
        Ok(true) => Finding::ok(WHAT, format!("{} is served ({mode})", path.display())),
        Ok(false) => Finding::fail(
            WHAT,
            format!(
                "{} exists but nothing serves it: containers logging there fail to start; start \
                 log-proxy (systemctl start log-proxy.socket)",
                path.display()
            ),
        ),
        Err(_) => Finding::warn(
            WHAT,
            format!(
                "{} does not exist: log-proxy is not listening, and containers using it fail to \
                 start; start log-proxy.socket (or log-proxy)",
                path.display()
            ),
        ),
    }
}

/// Docker's defaults for containers: the syslog driver, our socket, `tag={{.ID}}`.
fn daemon_json(path: &Path, socket: &Address) -> Finding {
    const WHAT: &str = "Docker daemon.json";
    let want_addr = match socket {
        Address::Unixgram(p) => format!("unixgram://{}", p.display()),
        Address::Unix(p) => format!("unix://{}", p.display()),
        Address::Udp(a) => format!("udp://{a}"),
        Address::Tcp(a) => format!("tcp://{a}"),
    };
    let example = format!(
        "{{\"log-driver\": \"syslog\", \"log-opts\": {{\"syslog-address\": \"{want_addr}\", \
         \"syslog-format\": \"rfc5424micro\", \"tag\": \"{{{{.ID}}}}\"}}}}"
    );
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Finding::fail(
                WHAT,
                format!(
                    "{}: {e}: containers use Docker's default log driver, not log-proxy (unless \
                     each sets --log-driver syslog); write {example} there and restart dockerd",
                    path.display()
                ),
            )
        }
    };
    let v: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            return Finding::fail(
                WHAT,
                format!(
                    "{} is not valid JSON ({e}): dockerd will not start; fix it",
                    path.display()
                ),
            )
        }
    };
    let driver = v
        .get("log-driver")
        .and_then(|d| d.as_str())
        .unwrap_or("json-file");
    let opt = |k: &str| {
        v.pointer(&format!("/log-opts/{k}"))
            .and_then(|x| x.as_str())
    };
    if driver != "syslog" {
        return Finding::fail(
            WHAT,
            format!(
                "{}: log-driver is {driver:?}, so containers do not log to log-proxy; set {example}",
                path.display()
            ),
        );
    }
    if opt("syslog-address") != Some(want_addr.as_str()) {
        return Finding::fail(
            WHAT,
            format!(
                "{}: syslog-address is {:?}, not log-proxy's {want_addr:?}; set it so",
                path.display(),
                opt("syslog-address").unwrap_or("(unset)")
            ),
        );
    }
    if opt("tag") != Some("{{.ID}}") {
        return Finding::fail(
            WHAT,
            format!(
                "{}: tag is {:?}: log-proxy needs tag \"{{{{.ID}}}}\" to know each line's \
                 container (without it every container shares one budget); set it",
                path.display(),
                opt("tag").unwrap_or("(unset)")
            ),
        );
    }
    Finding::ok(
        WHAT,
        format!(
            "{}: syslog driver to {want_addr}, tag {{{{.ID}}}}",
            path.display()
        ),
    )
}

fn docker_api(host: &str) -> Finding {
    const WHAT: &str = "Docker API";
    if host == crate::docker::NO_DOCKER {
        return Finding::ok(
            WHAT,
            "not used (--docker-host none): lines carry their tag only",
        );
    }
    let Some(path) = host.strip_prefix("unix://") else {
        return Finding::ok(WHAT, format!("{host} (network: not checked)"));
    };
    match hostcheck::socket_served(Path::new(path), true) {
        Ok(true) => Finding::ok(WHAT, format!("{path} answers")),
        _ => Finding::warn(
            WHAT,
            format!(
                "{path} does not answer: lines still flow, but without container names, images \
                 or labels (only the tag); start dockerd or set --docker-host"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_from_socket_path() {
        assert_eq!(
            namespace_of(Path::new("/run/systemd/journal.ns1/socket")).as_deref(),
            Some("ns1")
        );
        assert_eq!(namespace_of(Path::new("/run/systemd/journal/socket")), None);
    }
}
