//! `stdout`: one JSON line per event, `{"group", "stream", "event"}` — exactly what
//! `--src stdin` reads back.

use std::io::Write;

use anyhow::Context;

use super::{Outcome, Record, Sink};

#[derive(Debug, Default)]
pub struct StdoutSink {
    buf: Vec<u8>,
}

/// Append `r` as one JSON line to `out`: `{"group":…,"stream":…,"event":{…}}` (written by
/// hand, as serde would: `ecs_event::write_str`).
pub fn write_line(out: &mut Vec<u8>, r: &Record) {
    out.extend_from_slice(b"{\"group\":");
    ecs_event::write_str(out, &r.group);
    out.extend_from_slice(b",\"stream\":");
    ecs_event::write_str(out, &r.stream);
    out.extend_from_slice(b",\"event\":");
    r.event.write_json(out);
    out.extend_from_slice(b"}\n");
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
