//! JSON lines `{"group": …, "stream": …, "event": {…}}` on stdin — what the stdout destination
//! writes — for development off Linux and for piping. A line that is not such an object is
//! counted and reported (with its line number), never shipped half-understood.

use std::io::BufRead;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde_json::Value;

use super::{Read, Source};
use crate::event;
use crate::metrics::Metrics;
use crate::sinks::Record;

enum Line {
    Text(String),
    End,
}

pub struct StdinSource {
    lines: mpsc::Receiver<Line>,
    /// A line taken while waiting, to be returned by the next `read`.
    held: Option<Line>,
    line_no: u64,
    host: String,
    ended: bool,
    /// Counts the lines it could not understand.
    metrics: Arc<Metrics>,
}

impl StdinSource {
    /// Start reading stdin on a helper thread (a blocking read cannot honour the flush
    /// timeout by itself).
    pub fn start(host: String, metrics: Arc<Metrics>) -> StdinSource {
        let (tx, rx) = mpsc::sync_channel(4096);
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                let stdin = std::io::stdin();
                let mut lock = stdin.lock();
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match lock.read_until(b'\n', &mut buf) {
                        Ok(0) => break,
                        Ok(_) => {
                            let s = String::from_utf8_lossy(&buf).into_owned();
                            if tx.send(Line::Text(s)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read stdin; treating it as closed");
                            break;
                        }
                    }
                }
                let _ = tx.send(Line::End);
            })
            .expect("spawn the stdin thread");
        StdinSource {
            lines: rx,
            held: None,
            line_no: 0,
            host,
            ended: false,
            metrics,
        }
    }

    fn parse(&mut self, line: String) -> Read {
        self.line_no += 1;
        let text = line.trim();
        if text.is_empty() {
            return Read::Skipped;
        }
        match parse_line(text, &self.host) {
            Ok(r) => Read::Record(super::Entry::everywhere(r, text.len())),
            Err(why) => {
                self.metrics.stdin_rejected();
                tracing::warn!(line = self.line_no, "stdin: skipping line: {why}");
                Read::Skipped
            }
        }
    }
}

/// Parse one `{"group","stream","event"}` line.
pub fn parse_line(text: &str, host: &str) -> Result<Record, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        format!("not JSON ({e}); expected {{\"group\": …, \"stream\": …, \"event\": {{…}}}}")
    })?;
    let Value::Object(mut m) = v else {
        return Err("not a JSON object with group, stream and event".into());
    };
    let group = match m.get("group") {
        Some(Value::String(g)) if !g.is_empty() => event::group_name(g),
        _ => return Err("no \"group\" string".into()),
    };
    let stream = match m.get("stream") {
        Some(Value::String(s)) if !s.is_empty() => event::stream_name(s),
        _ => return Err("no \"stream\" string".into()),
    };
    let ev = match m.remove("event") {
        Some(v) => event::from_json(v, host),
        None => return Err("no \"event\"".into()),
    };
    Ok(Record {
        group,
        stream,
        event: ev,
    })
}

impl Source for StdinSource {
    fn read(&mut self) -> anyhow::Result<Read> {
        if self.ended {
            return Ok(Read::End);
        }
        let line = match self.held.take() {
            Some(l) => l,
            None => match self.lines.try_recv() {
                Ok(l) => l,
                Err(mpsc::TryRecvError::Empty) => return Ok(Read::Idle),
                Err(mpsc::TryRecvError::Disconnected) => Line::End,
            },
        };
        Ok(match line {
            Line::Text(s) => self.parse(s),
            Line::End => {
                self.ended = true;
                Read::End
            }
        })
    }

    fn wait(&mut self, timeout: Duration) -> anyhow::Result<()> {
        if self.held.is_none() {
            match self.lines.recv_timeout(timeout) {
                Ok(l) => self.held = Some(l),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => self.held = Some(Line::End),
            }
        }
        Ok(())
    }

    fn cursor(&mut self) -> anyhow::Result<Option<String>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_stdout_writes() {
        let r = parse_line(
            r#"{"group":"g:1","stream":"s","event":{"level":"ERROR","time":"2026-01-01T00:00:00.5Z","message":"m"}}"#,
            "h",
        )
        .unwrap();
        assert_eq!(r.group, "g/1");
        assert_eq!(r.event.message, "m");
        assert_eq!(r.event.info.host, "h");
        assert!(parse_line("nope", "h").unwrap_err().contains("not JSON"));
        assert!(parse_line(r#"{"group":"g","event":{}}"#, "h")
            .unwrap_err()
            .contains("stream"));
    }
}
