//! Exit statuses the units rely on: 2 for a configuration error (systemd's
//! `RestartPreventExitStatus=2` then leaves the unit failed instead of restarting it every few
//! seconds), 1 for a runtime failure (worth a restart). Each error is printed once, on one line.

use std::fmt;
use std::process::ExitCode;

/// Marks an error as the operator's to fix in the configuration (a flag, a file, the
/// environment, a directory's permissions): the process exits 2.
///
/// Attach it as context (`.context(ConfigError::new(...))` or `.map_err(config)`) anywhere
/// in the chain; [`exit_code`] finds it.
#[derive(Debug)]
pub struct ConfigError(String);

impl ConfigError {
    pub fn new(what: impl Into<String>) -> ConfigError {
        ConfigError(what.into())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Turn any error into a configuration error, keeping its message and causes.
pub fn config(e: impl Into<anyhow::Error>) -> anyhow::Error {
    let e: anyhow::Error = e.into();
    if is_config(&e) {
        return e;
    }
    // The message is already in the chain; the marker adds nothing to it when printed.
    e.context(Marker)
}

/// A configuration error with this message.
pub fn config_error(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(ConfigError::new(msg))
}

/// Invisible context that marks a chain as a configuration error.
#[derive(Debug)]
struct Marker;

impl fmt::Display for Marker {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }
}

/// Whether the chain holds a [`ConfigError`] (or was passed through [`config`]).
pub fn is_config(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ConfigError>().is_some() || e.downcast_ref::<Marker>().is_some()
}

/// 2 for a configuration error, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if is_config(e) {
        2
    } else {
        1
    }
}

/// The error as one line: its causes joined by ": " (empty markers skipped), newlines folded.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
        // A cause that repeats its predecessor's tail (common with io errors) is shown once.
        if s.is_empty() || parts.last().is_some_and(|p| p.ends_with(&s)) {
            continue;
        }
        parts.push(s);
    }
    parts.join(": ")
}

/// Print `PROGRAM: error` once on stderr and return the matching exit status.
pub fn report(program: &str, e: &anyhow::Error) -> ExitCode {
    eprintln!("{program}: {}", one_line(e));
    ExitCode::from(exit_code(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn marked_anywhere_in_the_chain_exits_2() {
        let e = anyhow::anyhow!("io failed").context(ConfigError::new("bad --state-dir"));
        assert_eq!(exit_code(&e.context("starting")), 2);
        let e = config(std::io::Error::other("denied")).context("opening the socket");
        assert_eq!(exit_code(&e), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("network down")), 1);
    }

    #[test]
    fn one_line_skips_markers_and_folds_newlines() {
        let e = config(anyhow::anyhow!("line one\nline two")).context("cannot start");
        assert_eq!(one_line(&e), "cannot start: line one line two");
        let r: Result<(), std::io::Error> = Err(std::io::Error::other("denied"));
        let e = r.context("cannot open x").unwrap_err();
        assert_eq!(one_line(&e), "cannot open x: denied");
    }
}
