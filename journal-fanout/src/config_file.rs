//! The configuration file (`--config`, TOML): naming templates, CloudWatch retention and
//! routes. Read at start and on every reload; an unknown key is an error (a typo must not
//! silently become "no rule"). Flags and environment variables win over the file.
//!
//! ```toml
//! [naming]
//! group = "{{ecs_family | default(CONTAINER_TAG)}}"
//! stream = "{{CONTAINER_NAME}}"
//!
//! [destination.cloudwatchlogs]
//! retention_days = 30
//!
//! [[route]]
//! match.group = "payments-*"
//! to = ["cloudwatchlogs"]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::routes::RouteSpec;

/// Where the file is looked for when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/journal-fanout/config.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    naming: Naming,
    #[serde(default)]
    destination: Destinations,
    #[serde(default)]
    route: Vec<RawRoute>,
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Naming {
    pub group: Option<String>,
    pub stream: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Destinations {
    #[serde(default)]
    cloudwatchlogs: CloudWatch,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloudWatch {
    retention_days: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(rename = "match", default)]
    matches: RawMatch,
    to: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    group: Option<String>,
    priority: Option<String>,
    #[serde(default)]
    field: BTreeMap<String, String>,
}

/// What a file says, parsed but not yet checked against the running destinations.
#[derive(Debug, Default, Clone)]
pub struct FileConfig {
    /// The file it came from (`None`: no file).
    pub path: Option<PathBuf>,
    pub naming: Naming,
    pub retention_days: Option<i32>,
    pub routes: Vec<RouteSpec>,
}

/// The file to read: `--config` if given (it must exist), else [`DEFAULT_PATH`] if it exists.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => Path::new(DEFAULT_PATH)
            .exists()
            .then(|| PathBuf::from(DEFAULT_PATH)),
    }
}

/// Read and parse `path`. Errors name the file and, for TOML errors, the line.
pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the configuration file {} (fix the path given to --config / \
             JOURNAL_FANOUT_CONFIG)",
            path.display()
        )
    })?;
    let mut f = parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    f.path = Some(path.to_path_buf());
    Ok(f)
}

/// Parse a file's text.
pub fn parse(text: &str) -> Result<FileConfig, String> {
    let raw: Raw = toml::from_str(text).map_err(|e| {
        // toml's message spans several lines (a snippet of the file): keep it to one.
        let msg = e.message().to_string();
        match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: {msg}")
            }
            None => msg,
        }
    })?;
    Ok(FileConfig {
        path: None,
        naming: raw.naming,
        retention_days: raw.destination.cloudwatchlogs.retention_days,
        routes: raw
            .route
            .into_iter()
            .map(|r| RouteSpec {
                group: r.matches.group,
                priority: r.matches.priority,
                fields: r.matches.field.into_iter().collect(),
                to: r.to,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_parses() {
        let f = parse(
            r#"
[naming]
group = "{{ecs_family | default(CONTAINER_TAG)}}"
stream = "{{CONTAINER_NAME}}"

[destination.cloudwatchlogs]
retention_days = 30

[[route]]
match.group = "payments-*"
to = ["cloudwatchlogs"]

[[route]]
match.priority = "debug"
to = []

[[route]]
match.field.CONTAINER_NAME = "*-canary"
to = ["loggly", "logdna"]
"#,
        )
        .unwrap();
        assert_eq!(
            f.naming.group.as_deref(),
            Some("{{ecs_family | default(CONTAINER_TAG)}}")
        );
        assert_eq!(f.retention_days, Some(30));
        assert_eq!(f.routes.len(), 3);
        assert_eq!(f.routes[1].priority.as_deref(), Some("debug"));
        assert!(f.routes[1].to.is_empty());
        assert_eq!(
            f.routes[2].fields,
            vec![("CONTAINER_NAME".to_string(), "*-canary".to_string())]
        );
    }

    #[test]
    fn typos_are_errors_with_a_line() {
        let e = parse("[naming]\ngroup = \"{{A}}\"\nstrem = \"x\"\n").unwrap_err();
        assert!(e.starts_with("line 3: unknown field `strem`"), "{e}");
        let e = parse("[[route]]\nmatch.group = \"x\"\n").unwrap_err();
        assert!(e.contains("missing field `to`"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
