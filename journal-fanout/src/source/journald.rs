//! Reading the journal with libsystemd (`sd_journal`), resuming from a saved cursor.
//!
//! Resume: `seek_cursor`, `next`, and skip that entry only if `test_cursor` says it is the
//! saved one (protocols.md §4.7); otherwise the saved entry is gone (rotation, vacuum) and the
//! entry we landed on — the oldest one after it — is read, with the gap reported as a
//! [`Loss`]. While running, journal sequence numbers between two cursors tell whether
//! entries vanished before we read them.

use std::time::Duration;

use anyhow::Context;
use chrono::{TimeZone, Utc};
use systemd::journal::{Journal, OpenDirectoryOptions, OpenOptions};

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::journal_file::FieldReader;
use super::{Entry, Loss, Read, Source};
use crate::config::{EventRules, JournalLocation, StartAt};
use crate::event::{self, JournalEntry};
use crate::metrics::JournalReads;

/// Reopen the journal after this many entries (at a batch boundary). libsystemd keeps the
/// journal files it has read mapped; reopening drops those mappings, which keeps the resident
/// memory small while catching up through a large journal.
const REOPEN_EVERY: u64 = 10_000;

pub struct JournaldSource {
    journal: Journal,
    /// Reads the fields of the entry `journal` stands on from the file (the fast path);
    /// `None` when turned off (`JOURNAL_FANOUT_READ_FIELDS=libsystemd`).
    fields: Option<FieldReader>,
    reads: Option<Arc<JournalReads>>,
    /// Entries whose fields were read from the file, and through libsystemd, not yet counted
    /// in `reads`.
    read_by: (u64, u64),
    location: JournalLocation,
    rules: Arc<EventRules>,
    /// `rules.fields`' names as bytes, compared with each field of an entry.
    wanted: Vec<Vec<u8>>,
    /// The last entry's values of `wanted`, kept for their allocation.
    values: Vec<Option<Vec<u8>>>,
    /// Field buffers of earlier entries, reused: a field copied is then no allocation.
    spare: Vec<Vec<u8>>,
    /// The resume landed on an entry that has not been read yet.
    current_unread: bool,
    /// Entries read since the last cursor, and that cursor's position.
    read_since_cursor: u64,
    last_position: Option<Position>,
    loss: Option<Loss>,
    read_since_open: u64,
    /// The last entries were read ahead of libsystemd ([`FieldReader::read_next`]): it stands
    /// behind them, and is moved to the last one read before it is used again.
    ahead: bool,
    /// Entries to read through `sd_journal_next` before reading ahead again: after a
    /// catch-up of libsystemd, so that files whose entries interleave do not cost a seek
    /// per entry.
    ahead_pause: u32,
}

/// See [`JournaldSource::ahead_pause`].
const AHEAD_PAUSE: u32 = 16;

impl JournaldSource {
    /// Open the journal and position it after `cursor` (or per `from` when there is none).
    pub fn open(
        location: &JournalLocation,
        rules: Arc<EventRules>,
        cursor: Option<&str>,
        from: StartAt,
    ) -> anyhow::Result<JournaldSource> {
        let journal = open(location)?;
        let mut src = JournaldSource {
            journal,
            // Checked at start too (`Config::from_args`), so this does not fail later.
            fields: crate::config::read_fields_from_files()?.then(|| FieldReader::new(location)),
            reads: None,
            read_by: (0, 0),
            location: location.clone(),
            wanted: wanted(&rules),
            values: Vec::new(),
            spare: Vec::new(),
            rules,
            current_unread: false,
            read_since_cursor: 0,
            last_position: None,
            loss: None,
            read_since_open: 0,
            ahead: false,
            ahead_pause: 0,
        };
        match cursor {
            Some(c) => src.resume(c)?,
            None => src.start(from)?,
        }
        Ok(src)
    }

    /// Open the journal standing before its last `n` entries (`check-config`'s preview).
    pub fn open_last(
        location: &JournalLocation,
        rules: Arc<EventRules>,
        n: u64,
    ) -> anyhow::Result<JournaldSource> {
        let mut src = JournaldSource::open(location, rules, None, StartAt::Tail)?;
        // `open` stands on the last entry; step back over the n-1 before it.
        let back = src
            .journal
            .previous_skip(n.saturating_sub(1))
            .context("cannot read the journal")?;
        src.current_unread = back > 0 || src.journal.cursor().is_ok();
        Ok(src)
    }

    /// Reopen the journal and continue after `cursor` (the entry just read).
    fn reopen(&mut self, cursor: &str) -> anyhow::Result<()> {
        self.journal = open(&self.location)?;
        if let Some(f) = &mut self.fields {
            f.release();
        }
        self.current_unread = false;
        self.read_since_open = 0;
        self.ahead = false;
        self.resume(cursor)
    }

    fn start(&mut self, from: StartAt) -> anyhow::Result<()> {
        match from {
            StartAt::Head => self
                .journal
                .seek_head()
                .context("cannot seek to the journal head")?,
            StartAt::Tail => {
                self.journal
                    .seek_tail()
                    .context("cannot seek to the journal tail")?;
                // Land on the last entry so `next` returns only new ones (and so there is a
                // cursor to save right away).
                self.journal
                    .previous()
                    .context("cannot read the journal tail")?;
            }
        }
        Ok(())
    }

    fn resume(&mut self, cursor: &str) -> anyhow::Result<()> {
        let saved = Position::parse(cursor);
        if let Err(e) = self.journal.seek_cursor(cursor) {
            tracing::error!(
                cursor, error = %e,
                "the saved cursor cannot be used; starting at the oldest entry in the journal \
                 (entries may be shipped again)"
            );
            self.journal.seek_head()?;
            return Ok(());
        }
        if self.journal.next().context("cannot read the journal")? == 0 {
            // Neither the saved entry nor anything after it exists (vacuumed, or a journal
            // that was replaced): follow new entries from here.
            if let Some(saved) = saved {
                tracing::warn!(
                    cursor,
                    "the entry of the saved cursor is no longer in the journal and nothing \
                     newer is; following new entries"
                );
                let to = Utc::now();
                self.loss = Some(Loss {
                    count: None,
                    from: saved.time(),
                    to,
                });
            }
            return Ok(());
        }
        if self.journal.test_cursor(cursor).unwrap_or(false) {
            self.last_position = saved;
            return Ok(());
        }
        // The saved entry is gone; we stand on the oldest entry after it, which is unread.
        self.current_unread = true;
        let here = self.journal.cursor().ok().and_then(|c| Position::parse(&c));
        if let (Some(saved), Some(here)) = (saved, here) {
            let count = (saved.seqnum_id == here.seqnum_id)
                .then(|| here.seqnum.saturating_sub(saved.seqnum + 1));
            if count != Some(0) {
                self.loss = Some(Loss {
                    count,
                    from: saved.time(),
                    to: here.time(),
                });
            }
        }
        Ok(())
    }

    fn read_current(&mut self) -> anyhow::Result<Read> {
        self.read_since_cursor += 1;
        self.read_since_open += 1;
        let mut e = JournalEntry {
            values: self.take_values(),
            ..JournalEntry::default()
        };
        let direct = match &mut self.fields {
            Some(reader) => Cursor::of(&self.journal).and_then(|cursor| {
                let (wanted, spare) = (&self.wanted, &mut self.spare);
                reader.read(cursor.as_bytes(), |name, value| {
                    take_field(wanted, spare, &mut e, name, value)
                })
            }),
            None => None,
        };
        match direct {
            Some(realtime) => {
                e.realtime_usec = realtime;
                self.read_by.0 += 1;
            }
            None => {
                self.read_fields_here(&mut e);
                self.read_by.1 += 1;
            }
        }
        Ok(self.finish(e))
    }

    /// Read the entry after the last one straight from its file, ahead of libsystemd, when
    /// that is certainly the next one (`None`: libsystemd decides).
    fn read_ahead(&mut self) -> Option<Read> {
        self.fields.as_ref()?;
        let mut e = JournalEntry {
            values: self.take_values(),
            ..JournalEntry::default()
        };
        let reader = self.fields.as_mut()?;
        let (wanted, spare) = (&self.wanted, &mut self.spare);
        match reader.read_next(|name, value| take_field(wanted, spare, &mut e, name, value)) {
            Some(realtime) => {
                e.realtime_usec = realtime;
                self.read_by.0 += 1;
                self.read_since_cursor += 1;
                self.ahead = true;
                Some(self.finish(e))
            }
            None => {
                self.values = e.values;
                None
            }
        }
    }

    /// Move libsystemd to the last entry read ahead of it (`seek_cursor`, `next`, as a
    /// resume does).
    fn catch_up(&mut self) -> anyhow::Result<()> {
        self.ahead = false;
        self.ahead_pause = AHEAD_PAUSE;
        let Some(cursor) = self.fields.as_ref().and_then(FieldReader::cursor) else {
            return Ok(());
        };
        self.journal
            .seek_cursor(&cursor)
            .context("cannot seek the journal to the last entry read")?;
        // 0: that entry is gone and nothing is newer; libsystemd stays at the cursor's place
        // and goes on from there when entries come.
        if self.journal.next().context("cannot read the journal")? > 0
            && !self.journal.test_cursor(&cursor).unwrap_or(false)
        {
            // It stands on the next entry instead (ours was vacuumed just now): unread.
            self.current_unread = true;
        }
        Ok(())
    }

    /// A record of `e` (or `Skipped`), and its buffers back for the next entry.
    fn finish(&mut self, mut e: JournalEntry) -> Read {
        let size = e.message.as_ref().map_or(0, Vec::len);
        let read = match event::from_journal(&self.rules, &mut e) {
            Some(record) => {
                let d = self.rules.routes.decide(&record, &e.values);
                Read::Record(Entry {
                    record,
                    size,
                    to: d.to,
                    route: d.route,
                })
            }
            None => Read::Skipped,
        };
        // The buffers go back for the next entry (the message moved into the record).
        for slot in [
            &mut e.priority,
            &mut e.hostname,
            &mut e.pid,
            &mut e.uid,
            &mut e.gid,
            &mut e.code_file,
            &mut e.code_line,
            &mut e.code_func,
            &mut e.message_id,
        ]
        .into_iter()
        .chain(e.values.iter_mut())
        {
            if let Some(b) = slot.take() {
                if self.spare.len() < SPARE_KEPT && b.capacity() <= SPARE_MAX_BYTES {
                    self.spare.push(b);
                }
            }
        }
        self.values = e.values;
        read
    }

    /// The per-entry slots for `wanted`'s values, reused from entry to entry (one allocation
    /// less per entry on the reading path).
    fn take_values(&mut self) -> Vec<Option<Vec<u8>>> {
        let mut v = std::mem::take(&mut self.values);
        v.clear();
        v.resize(self.wanted.len(), None);
        v
    }

    /// Read the entry's fields through libsystemd (what the file reader declined).
    fn read_fields_here(&mut self, e: &mut JournalEntry) {
        e.realtime_usec = self.journal.timestamp_usec().unwrap_or(0);
        self.journal.restart_data();
        loop {
            let field = match self.journal.enumerate_data() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(err) => {
                    // A damaged field: keep what was read of the entry.
                    tracing::debug!(error = %err, "cannot read a field of a journal entry");
                    break;
                }
            };
            let (name, value) = (field.name(), field.value().unwrap_or_default());
            take_field(&self.wanted, &mut self.spare, e, name, value);
        }
    }

    /// Count in `reads` how each entry's fields were read.
    pub fn counting_reads(mut self, reads: Arc<JournalReads>) -> Self {
        self.reads = Some(reads);
        self
    }

    /// Add the entries read since the last call to the counters.
    fn count_reads(&mut self) {
        let Some(reads) = &self.reads else {
            return;
        };
        let (file, libsystemd) = std::mem::take(&mut self.read_by);
        reads.file.fetch_add(file, Ordering::Relaxed);
        reads.libsystemd.fetch_add(libsystemd, Ordering::Relaxed);
    }
}

/// The cursor of the entry the journal stands on, as libsystemd wrote it (freed on drop).
/// Read once per entry to identify it for the file reader: the systemd crate's `cursor()`
/// copies it into a `String` through a lossy UTF-8 conversion, a few percent of the reader
/// thread (perf).
struct Cursor(*mut std::ffi::c_char);

impl Cursor {
    fn of(journal: &Journal) -> Option<Cursor> {
        use foreign_types::ForeignType;
        let mut c: *const std::ffi::c_char = std::ptr::null();
        // SAFETY: `journal` is a live sd_journal; on success libsystemd stores a string it
        // allocated with malloc, which `Drop` frees.
        let r = unsafe { libsystemd_sys::journal::sd_journal_get_cursor(journal.as_ptr(), &mut c) };
        (r >= 0 && !c.is_null()).then_some(Cursor(c as *mut _))
    }

    /// Its bytes (hex digits and `s=…;i=…`: the file reader parses them as they are, without
    /// a UTF-8 check per entry).
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: a NUL-terminated string owned by `self` until drop.
        unsafe { std::ffi::CStr::from_ptr(self.0) }.to_bytes()
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        // SAFETY: allocated by libsystemd with malloc, freed once.
        unsafe { libc::free(self.0.cast()) }
    }
}

/// Keep `name=value` in `e` if it is a field a record or a route uses.
fn take_field(
    wanted: &[Vec<u8>],
    spare: &mut Vec<Vec<u8>>,
    e: &mut JournalEntry,
    name: &[u8],
    value: &[u8],
) {
    // Fields the naming templates and routes read (a handful: a linear scan).
    if let Some(i) = wanted.iter().position(|w| w == name) {
        if e.values[i].is_none() {
            e.values[i] = Some(copy(spare, value));
        }
    }
    let slot = match name {
        b"MESSAGE" => &mut e.message,
        b"PRIORITY" => &mut e.priority,
        b"_HOSTNAME" => &mut e.hostname,
        b"_PID" => &mut e.pid,
        b"_UID" => &mut e.uid,
        b"_GID" => &mut e.gid,
        b"CODE_FILE" => &mut e.code_file,
        b"CODE_LINE" => &mut e.code_line,
        b"CODE_FUNC" => &mut e.code_func,
        b"MESSAGE_ID" => &mut e.message_id,
        _ => return,
    };
    // The first occurrence wins when a field repeats. The message moves into the record: an
    // exact-size copy, not a spare buffer's capacity.
    if slot.is_none() {
        *slot = Some(if name == b"MESSAGE" {
            value.to_vec()
        } else {
            copy(spare, value)
        });
    }
}

/// Most spare field buffers kept between entries (an entry has a dozen fields of interest).
const SPARE_KEPT: usize = 32;
/// Larger buffers are freed, not kept (one huge field must not stay resident).
const SPARE_MAX_BYTES: usize = 4096;

/// `value` in a buffer from `spare` (allocated only when none is left).
fn copy(spare: &mut Vec<Vec<u8>>, value: &[u8]) -> Vec<u8> {
    let mut b = spare.pop().unwrap_or_default();
    b.clear();
    b.extend_from_slice(value);
    b
}

fn wanted(rules: &EventRules) -> Vec<Vec<u8>> {
    rules
        .fields
        .names()
        .iter()
        .map(|n| n.as_bytes().to_vec())
        .collect()
}

impl Source for JournaldSource {
    fn read(&mut self) -> anyhow::Result<Read> {
        if self.current_unread {
            self.current_unread = false;
            return self.read_current();
        }
        if self.ahead_pause == 0 {
            if let Some(read) = self.read_ahead() {
                return Ok(read);
            }
        }
        if self.ahead {
            self.catch_up()?;
            if self.current_unread {
                self.current_unread = false;
                return self.read_current();
            }
        }
        self.ahead_pause = self.ahead_pause.saturating_sub(1);
        match self
            .journal
            .next()
            .context("cannot read the next journal entry")?
        {
            0 => Ok(Read::Idle),
            _ => self.read_current(),
        }
    }

    fn wait(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.journal
            .wait(Some(timeout))
            .context("cannot wait for journal changes")?;
        Ok(())
    }

    fn cursor(&mut self) -> anyhow::Result<Option<String>> {
        if self.current_unread {
            // We stand on an entry not read yet: its cursor is not a position to save.
            return Ok(None);
        }
        let cursor = if self.ahead {
            // libsystemd stands behind: the last entry's cursor is made from its file.
            match self.fields.as_ref().and_then(FieldReader::cursor) {
                Some(c) => c,
                None => return Ok(None),
            }
        } else {
            match self.journal.cursor() {
                Ok(c) => c,
                // No entry read yet (empty journal): nothing to save.
                Err(_) => return Ok(None),
            }
        };
        let here = Position::parse(&cursor);
        if let (Some(prev), Some(here)) = (&self.last_position, &here) {
            // Same sequence space: every number between the two cursors was an entry we
            // should have read. More numbers than entries read means entries vanished.
            if prev.seqnum_id == here.seqnum_id && here.seqnum > prev.seqnum {
                let span = here.seqnum - prev.seqnum;
                if span > self.read_since_cursor {
                    let l = Loss {
                        count: Some(span - self.read_since_cursor),
                        from: prev.time(),
                        to: here.time(),
                    };
                    self.loss = Some(match self.loss.take() {
                        Some(old) => old.merge(l),
                        None => l,
                    });
                }
            }
        }
        self.read_since_cursor = 0;
        self.count_reads();
        if here.is_some() {
            self.last_position = here;
        }
        if self.read_since_open >= REOPEN_EVERY {
            self.reopen(&cursor)?;
        }
        Ok(Some(cursor))
    }

    fn take_loss(&mut self) -> Option<Loss> {
        self.loss.take()
    }

    fn set_rules(&mut self, rules: Arc<EventRules>) {
        self.wanted = wanted(&rules);
        self.rules = rules;
    }
}

/// How often [`watch_head`] looks at the journal's newest entry.
pub const HEAD_EVERY: Duration = Duration::from_secs(2);

/// Until `stop`: every [`HEAD_EVERY`], find the journal's newest entry and set each
/// destination's backlog to the entries between its last delivered one and that (from their
/// sequence numbers: an estimate that counts entries of every kind). The journal is opened
/// afresh each time, so rotated and new files are always seen.
pub fn watch_head(
    location: &JournalLocation,
    metrics: &crate::metrics::Metrics,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering;
    while !stop.load(Ordering::Relaxed) {
        if let Some(head) = head_position(location) {
            for d in metrics.destinations() {
                let Some(at) = d.delivered_cursor().and_then(|c| Position::parse(&c)) else {
                    continue;
                };
                // Another sequence (a journal replaced): the distance is not known.
                if at.seqnum_id != head.seqnum_id {
                    continue;
                }
                d.backlog
                    .store(head.seqnum.saturating_sub(at.seqnum), Ordering::Relaxed);
                d.backlog_known.store(true, Ordering::Relaxed);
            }
        }
        let until = std::time::Instant::now() + HEAD_EVERY;
        while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The position of the newest entry of the journal at `location`, if it can be read.
fn head_position(location: &JournalLocation) -> Option<Position> {
    let mut j = open(location).ok()?;
    j.seek_tail().ok()?;
    if j.previous().ok()? == 0 {
        return None;
    }
    Position::parse(&j.cursor().ok()?)
}

/// Open the journal at `location` for reading whole fields.
fn open(location: &JournalLocation) -> anyhow::Result<Journal> {
    let mut journal = match location {
        JournalLocation::System => OpenOptions::default()
            .local_only(false)
            .open()
            .context("cannot open the system journal (run as root or in group systemd-journal)")?,
        JournalLocation::Namespace(ns) => OpenOptions::default()
            .open_namespace(ns.as_str())
            .with_context(|| format!("cannot open journal namespace {ns:?}"))?,
        JournalLocation::Directory(dir) => OpenDirectoryOptions::default()
            .open_directory(dir.as_os_str().to_string_lossy().as_ref())
            .with_context(|| format!("cannot open the journal directory {}", dir.display()))?,
    };
    // Fields over 64 KiB would otherwise be cut silently (protocols.md §4.8).
    journal
        .set_data_threshold(0)
        .context("cannot lift the journal data threshold")?;
    Ok(journal)
}

/// The parts of a cursor string used to measure gaps (`s=`, `i=`, `t=`; protocols.md §4.7).
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    seqnum_id: String,
    seqnum: u64,
    realtime_usec: u64,
}

impl Position {
    pub fn parse(cursor: &str) -> Option<Position> {
        let (mut s, mut i, mut t) = (None, None, None);
        for part in cursor.split(';') {
            match part.split_once('=') {
                Some(("s", v)) => s = Some(v.to_string()),
                Some(("i", v)) => i = u64::from_str_radix(v, 16).ok(),
                Some(("t", v)) => t = u64::from_str_radix(v, 16).ok(),
                _ => {}
            }
        }
        Some(Position {
            seqnum_id: s?,
            seqnum: i?,
            realtime_usec: t?,
        })
    }

    /// Whether `self` comes after `other` in the journal (`None`: different sequences, so
    /// not comparable).
    pub fn after(&self, other: &Position) -> Option<std::cmp::Ordering> {
        (self.seqnum_id == other.seqnum_id).then(|| self.seqnum.cmp(&other.seqnum))
    }

    fn time(&self) -> chrono::DateTime<Utc> {
        Utc.timestamp_micros(self.realtime_usec as i64)
            .single()
            .unwrap_or_else(Utc::now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cursor() {
        let p = Position::parse("s=7a1c;i=1f;b=aa;m=10;t=5f0000;x=99").unwrap();
        assert_eq!(p.seqnum_id, "7a1c");
        assert_eq!(p.seqnum, 31);
        assert_eq!(p.realtime_usec, 0x5f0000);
        assert!(Position::parse("garbage").is_none());
    }
}
