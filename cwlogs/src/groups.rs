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

/// `cwlogs groups [PREFIX]`: one name per line, printed page by page.
pub async fn run(prefix: Option<String>, aws: &crate::cli::AwsArgs) -> Result<()> {
    let client = crate::client::connect(aws).await?;
    let mut out = crate::output::Out::new(crate::output::Progress::disabled());
    let n = for_each(&client, prefix.as_deref(), usize::MAX, |g| {
        out.write(format!("{}\n", g.name).as_bytes())
    })
    .await?;
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
