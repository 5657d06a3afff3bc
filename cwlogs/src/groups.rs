//! Log groups (services): listing them, and finding one by name with "did you mean".

use anyhow::{bail, Result};
use aws_sdk_cloudwatchlogs::Client;

use crate::client::send;
use crate::suggest;

/// Suggestions look at this many group names at most (200 pages), so a typo in a huge
/// account still answers in seconds.
const SUGGEST_SCAN_LIMIT: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub creation_time: Option<i64>,
    /// Without the `:*` DescribeLogGroups' `arn` ends in (StartLiveTail refuses that form).
    pub arn: Option<String>,
}

/// Every group whose name starts with `prefix`, in name order, page by page to `each`.
pub async fn for_each(
    client: &Client,
    prefix: Option<&str>,
    limit: usize,
    mut each: impl FnMut(Group) -> Result<()>,
) -> Result<usize> {
    let mut token: Option<String> = None;
    let mut n = 0;
    loop {
        let req = client
            .describe_log_groups()
            .set_log_group_name_prefix(prefix.map(str::to_string))
            .set_next_token(token.take())
            .limit(50);
        let out = send("listing log groups", || req.clone().send()).await?;
        for g in out.log_groups() {
            if n >= limit {
                return Ok(n);
            }
            n += 1;
            each(Group {
                name: g.log_group_name().unwrap_or_default().to_string(),
                creation_time: g.creation_time(),
                arn: g
                    .log_group_arn()
                    .or_else(|| g.arn().map(|a| a.trim_end_matches(":*")))
                    .map(str::to_string),
            })?;
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(n),
        }
    }
}

/// The group called exactly `name`; if there is none, an error with the closest names.
pub async fn resolve(client: &Client, name: &str) -> Result<Group> {
    let mut found = None;
    // Names come back sorted, and `name` sorts first among those it prefixes, so the
    // first page settles it.
    for_each(client, Some(name), 1, |g| {
        if g.name == name {
            found = Some(g);
        }
        Ok(())
    })
    .await?;
    if let Some(g) = found {
        return Ok(g);
    }
    let mut all = Vec::new();
    for_each(client, None, SUGGEST_SCAN_LIMIT, |g| {
        all.push(g.name);
        Ok(())
    })
    .await?;
    let close = suggest::closest(name, all.iter().map(String::as_str), 5);
    if close.is_empty() {
        bail!(
            "no log group named {name:?}, and none with a similar name ({} groups looked at); \
             list them with `cwlogs groups`, or check --region/--profile",
            all.len()
        );
    }
    let list: String = close.iter().map(|c| format!("\n  {c}")).collect();
    bail!("no log group named {name:?}. Did you mean:{list}")
}

/// `cwlogs groups [PREFIX]`: one name per line, printed page by page. Without a prefix the
/// list is complete, and becomes the completion cache.
pub async fn run(prefix: Option<String>, aws: &crate::cli::AwsArgs) -> Result<()> {
    let client = crate::client::connect(aws).await?;
    let mut out = crate::output::Out::new(crate::output::Progress::disabled());
    let mut names = Vec::new();
    let n = for_each(&client, prefix.as_deref(), usize::MAX, |g| {
        let line = format!("{}\n", g.name);
        if prefix.is_none() {
            names.push(g.name);
        }
        out.write(line.as_bytes())
    })
    .await?;
    if prefix.is_none() {
        // Best effort: completion without a cache only offers nothing.
        let _ = cache::write(&names);
    }
    if n == 0 {
        match prefix {
            Some(p) => bail!(
                "no log group starts with {p:?}; try a shorter prefix, or check --region/--profile"
            ),
            None => bail!(
                "there are no log groups in this account and region; check --region/--profile"
            ),
        }
    }
    Ok(())
}

/// Shell completion of group names, from a local cache (`~/.cache/cwlogs/groups`) that
/// `cwlogs groups` writes. Completing never waits on AWS: a cache older than
/// [`cache::MAX_AGE`] is refreshed by a `cwlogs groups` started in the background, at most
/// once per that period.
pub fn complete(current: &std::ffi::OsStr) -> Vec<clap_complete::CompletionCandidate> {
    let current = current.to_string_lossy();
    cache::refresh_if_stale();
    cache::read()
        .into_iter()
        .filter(|g| g.starts_with(current.as_ref()))
        .map(clap_complete::CompletionCandidate::new)
        .collect()
}

pub mod cache {
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    /// How old the cache may get before a completion refreshes it.
    pub const MAX_AGE: Duration = Duration::from_secs(600);

    /// `$XDG_CACHE_HOME/cwlogs/groups`, else `~/.cache/cwlogs/groups`.
    pub fn path() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("cwlogs").join("groups"))
    }

    pub fn read() -> Vec<String> {
        path()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Replace the cache (written aside and renamed, so a completion never reads half).
    pub fn write(names: &[String]) -> std::io::Result<()> {
        let Some(p) = path() else { return Ok(()) };
        std::fs::create_dir_all(p.parent().expect("has a parent"))?;
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        let mut text = names.join("\n");
        text.push('\n');
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, p)
    }

    fn age(p: &std::path::Path) -> Option<Duration> {
        let m = std::fs::metadata(p).ok()?.modified().ok()?;
        Some(SystemTime::now().duration_since(m).unwrap_or_default())
    }

    /// Start `cwlogs groups` in the background when the cache is missing or stale and no
    /// refresh was started within [`MAX_AGE`] (a stamp file records the last start, so a
    /// failing refresh — no credentials — is not retried on every Tab).
    pub fn refresh_if_stale() {
        let Some(p) = path() else { return };
        if age(&p).is_some_and(|a| a < MAX_AGE) {
            return;
        }
        let stamp = p.with_extension("refresh");
        if age(&stamp).is_some_and(|a| a < MAX_AGE) {
            return;
        }
        let _ = std::fs::create_dir_all(p.parent().expect("has a parent"));
        if std::fs::write(&stamp, b"").is_err() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        // Not waited for: it outlives this completion, and init reaps it.
        #[allow(clippy::zombie_processes)]
        let _ = std::process::Command::new(exe)
            .arg("groups")
            .env_remove("COMPLETE")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}
