//! `cwlogs list`: a service's streams active in a window, as an aligned table.

use anyhow::{bail, Result};

use crate::cli::{AwsArgs, ListArgs};
use crate::output::{Out, Progress};
use crate::streams::{self, Window};
use crate::time::{self, local_display};
use crate::{client, groups};

pub async fn run(args: ListArgs, aws: &AwsArgs) -> Result<()> {
    let now = time::now_ms();
    let w = Window {
        start: time::parse(&args.since, now)?,
        end: time::parse(&args.until, now)?,
    };
    if w.start > w.end {
        bail!(crate::cli::ConfigError(format!(
            "--since ({}) is after --until ({}); swap them or widen the window",
            local_display(w.start),
            local_display(w.end)
        )));
    }
    let client = client::connect(aws).await?;
    let group = groups::resolve(&client, &args.service).await?;
    let found = streams::active(
        &client,
        &group.name,
        args.task.as_deref(),
        w,
        args.max_streams,
    )
    .await?;
    let rows: Vec<[String; 3]> = found
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.last_event
                    .map(local_display)
                    .unwrap_or_else(|| "-".into()),
                local_display(s.creation_time),
            ]
        })
        .collect();
    let mut out = Out::new(Progress::disabled());
    out.write(table(["STREAM", "LAST EVENT", "CREATED"], &rows).as_bytes())
}

/// Columns padded to their widest cell, two spaces apart; no trailing spaces.
fn table(header: [&str; 3], rows: &[[String; 3]]) -> String {
    let mut widths = header.map(str::len);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 3]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 < cells.len() {
                l.push_str(&format!("{c:<w$}  ", w = widths[i]));
            } else {
                l.push_str(c);
            }
        }
        l.push('\n');
        l
    };
    let mut s = line(header);
    for r in rows {
        s.push_str(&line([&r[0], &r[1], &r[2]]));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            [
                "a-long-stream".to_string(),
                "x".to_string(),
                "y".to_string(),
            ],
            ["b".to_string(), "xx".to_string(), "yy".to_string()],
        ];
        assert_eq!(
            super::table(["STREAM", "LAST EVENT", "CREATED"], &rows),
            "STREAM         LAST EVENT  CREATED\n\
             a-long-stream  x           y\n\
             b              xx          yy\n"
        );
    }
}
