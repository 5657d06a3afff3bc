//! `stdout`: one JSON line per event, `{"group", "stream", "event"}` — exactly what
//! `--src stdin` reads back.

use std::io::Write;

use anyhow::Context;
use serde::Serialize;

use super::{Outcome, Record, Sink};

#[derive(Debug, Default)]
pub struct StdoutSink {
    buf: Vec<u8>,
}

#[derive(Serialize)]
struct Line<'a> {
    group: &'a str,
    stream: &'a str,
    event: &'a ecs_event::Event,
}

/// Append `r` as one JSON line to `out`.
pub fn write_line(out: &mut Vec<u8>, r: &Record) {
    serde_json::to_writer(
        &mut *out,
        &Line {
            group: &r.group,
            stream: &r.stream,
            event: &r.event,
        },
    )
    .expect("a record always serializes");
    out.push(b'\n');
}

impl StdoutSink {
    pub fn new() -> StdoutSink {
        StdoutSink::default()
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &'static str {
        "stdout"
    }

    async fn deliver(&mut self, batch: Vec<std::sync::Arc<Record>>) -> anyhow::Result<Outcome> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for r in &batch {
            write_line(&mut buf, r);
        }
        drop(batch);
        // A blocking write on the blocking pool: a slow reader of our stdout must not
        // stall the runtime.
        let buf = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut out = std::io::stdout().lock();
            out.write_all(&buf)?;
            out.flush()?;
            Ok(buf)
        })
        .await
        .context("the stdout writer panicked")?
        .context("cannot write to stdout (is the reading end closed?)")?;
        self.buf = buf;
        Ok(Outcome::default())
    }
}
