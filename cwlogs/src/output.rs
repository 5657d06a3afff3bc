//! Writing to the terminal or a pipe: quiet on a closed pipe, a progress line on stderr.
//!
//! `cwlogs fetch … | head -1` must end with status 0 and no noise: a write that fails with
//! EPIPE becomes [`Closed`], which `main` turns into a silent exit 0.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The reader went away (EPIPE): stop quietly.
#[derive(Debug, thiserror::Error)]
#[error("output closed")]
pub struct Closed;

/// Whether an error chain is (or came from) a closed output.
pub fn is_closed(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.is::<Closed>()
            || e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Standard output plus the progress line that must be cleared before it is used.
pub struct Out {
    progress: Progress,
}

impl Out {
    pub fn new(progress: Progress) -> Out {
        Out { progress }
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Write and flush `buf` (whole lines), so a reader sees events as they arrive.
    pub fn write(&mut self, buf: &[u8]) -> anyhow::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.progress.before_stdout();
        let mut so = io::stdout().lock();
        match so.write_all(buf).and_then(|_| so.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(Closed.into()),
            Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
        }
    }
}

/// Whether a progress line is on screen now, for [`erase_progress`] on the way out.
static ON_SCREEN: AtomicBool = AtomicBool::new(false);

/// Erase the progress line if one is showing (before an error message, or at exit).
pub fn erase_progress() {
    if ON_SCREEN.swap(false, Ordering::SeqCst) {
        let _ = io::stderr().write_all(b"\r\x1b[K");
    }
}

/// "N events fetched…" on stderr while a long fetch runs — only when stderr is a
/// terminal, and when stdout is the same terminal only until the first event prints.
#[derive(Clone)]
pub struct Progress {
    inner: Option<Arc<Mutex<State>>>,
}

struct State {
    started: Instant,
    events: u64,
    shown: bool,
    /// The count on screen, so an unchanged line is not redrawn.
    drawn: Option<u64>,
    printed: bool,
    stdout_tty: bool,
    done: bool,
}

impl Progress {
    pub fn new() -> Progress {
        if !io::stderr().is_terminal() {
            return Progress { inner: None };
        }
        Progress {
            inner: Some(Arc::new(Mutex::new(State {
                started: Instant::now(),
                events: 0,
                shown: false,
                drawn: None,
                printed: false,
                stdout_tty: io::stdout().is_terminal(),
                done: false,
            }))),
        }
    }

    pub fn disabled() -> Progress {
        Progress { inner: None }
    }

    /// Count fetched events.
    pub fn add(&self, n: usize) {
        if let Some(s) = &self.inner {
            s.lock().unwrap().events += n as u64;
        }
    }

    /// Redraw the line every quarter second until [`Progress::finish`].
    pub fn spawn_ticker(&self) {
        let Some(s) = self.inner.clone() else { return };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let mut st = s.lock().unwrap();
                if st.done {
                    return;
                }
                if st.started.elapsed() < Duration::from_millis(500)
                    || (st.stdout_tty && st.printed)
                    || (st.shown && st.drawn == Some(st.events))
                {
                    continue;
                }
                st.drawn = Some(st.events);
                let line = format!("\r\x1b[Kcwlogs: {} events fetched…", st.events);
                let _ = io::stderr().write_all(line.as_bytes());
                st.shown = true;
                ON_SCREEN.store(true, Ordering::SeqCst);
            }
        });
    }

    fn before_stdout(&self) {
        if let Some(s) = &self.inner {
            let mut st = s.lock().unwrap();
            st.printed = true;
            if st.stdout_tty && st.shown {
                erase_progress();
                st.shown = false;
            }
        }
    }

    /// Stop and erase the line.
    pub fn finish(&self) {
        if let Some(s) = &self.inner {
            let mut st = s.lock().unwrap();
            st.done = true;
            if st.shown {
                erase_progress();
                st.shown = false;
            }
        }
    }
}
