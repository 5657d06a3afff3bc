//! Tokens that never print: `Debug` and `Display` show `****`, and URLs that carry a token are
//! only ever shown through the masking helpers here.

use std::fmt;

use anyhow::{bail, Context, Result};

/// How configuration reads the environment (a closure so tests need not touch the process env).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

/// A credential. The only way to see it is [`Secret::expose`], used where it goes on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the secret in `text` (e.g. a server's error body that
    /// echoes the request path) with `****`.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            return text.to_string();
        }
        text.replace(&self.0, "****")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// Reads a token from `VAR` or from the file named by `VAR_FILE` (trailing whitespace trimmed).
/// `Ok(None)` when neither is set; an error names the variable and never shows the value.
pub fn token_from_env(env: Env, var: &str) -> Result<Option<Secret>> {
    let file_var = format!("{var}_FILE");
    let token = match (env(var), env(&file_var)) {
        (Some(_), Some(_)) => bail!("both {var} and {file_var} are set: set only one of them"),
        (Some(t), None) => t,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the token file {path:?} named by {file_var}"))?,
        (None, None) => return Ok(None),
    };
    let token = token.trim();
    if token.is_empty() {
        bail!("{var} is empty: set it (or {file_var}) to the destination's token");
    }
    if let Some(c) = token.chars().find(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "{var} contains a {} character: a token is one word",
            describe(c)
        );
    }
    Ok(Some(Secret::new(token)))
}

fn describe(c: char) -> &'static str {
    if c.is_whitespace() {
        "whitespace"
    } else {
        "control"
    }
}

/// `scheme://user@host...` with the user part (ecs-logs puts tokens there) shown as `****`.
pub fn mask_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 && !url[s + 3..at].contains('/') => {
            format!("{}****{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("abc-123");
        assert_eq!(format!("{s} {s:?}"), "**** Secret(****)");
        assert_eq!(s.scrub("path /bulk/abc-123/tag"), "path /bulk/****/tag");
    }

    #[test]
    fn masks_user_part() {
        assert_eq!(
            mask_userinfo("tls://tok@logs-01.loggly.com:6514"),
            "tls://****@logs-01.loggly.com:6514"
        );
        assert_eq!(mask_userinfo("https://h/a@b"), "https://h/a@b");
    }

    #[test]
    fn token_file_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "sekrit\n").unwrap();
        let fp = f.to_str().unwrap().to_string();
        let env = move |k: &str| (k == "X_FILE").then(|| fp.clone());
        assert_eq!(
            token_from_env(&env, "X").unwrap().unwrap().expose(),
            "sekrit"
        );
        let env = |k: &str| (k == "X").then(|| "a b".to_string());
        let e = token_from_env(&env, "X").unwrap_err().to_string();
        assert!(
            e.contains("X contains a whitespace") && !e.contains("a b"),
            "{e}"
        );
        let env = |_: &str| None;
        assert!(token_from_env(&env, "X").unwrap().is_none());
    }
}
