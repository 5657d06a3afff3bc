//! Reading an entry's fields straight from the journal file: the reading hot path.
//!
//! Reading fields this way costs the reader thread 20–36 % less CPU than libsystemd's
//! `sd_journal_enumerate_data`, which looks each field up through its mmap cache and checks
//! the object again (docs/BENCHMARKS.md). libsystemd still decides *which* entry comes next
//! (merging files, rotation, seeking, waiting); this module only reads the fields of the entry
//! libsystemd stands on, found by its cursor, from our own read-only mapping of the same file.
//!
//! The entry is identified exactly: the cursor's sequence-number ID picks the files, its
//! sequence number and xor hash must both match the entry object. Anything this reader does
//! not handle — a compressed field, a file it has not opened, an unexpected layout — makes it
//! decline the whole entry before a field is handed out, and the caller reads that entry through
//! libsystemd as before. So a decline costs speed, never a field.
//!
//! The layout is systemd's Journal File Format (systemd.io/JOURNAL_FILE_FORMAT; journal-def.h):
//! a header, then 8-byte-aligned objects. An entry object lists the offsets of its data
//! objects (`FIELD=value` payloads), 4 bytes each in compact files, 16 (offset, hash) in
//! others; entry array objects chain the file's entries in order.

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use memmap2::{Mmap, UncheckedAdvice};

use crate::config::JournalLocation;

/// When an entry is in no file we have open (a new file after rotation), the journal's
/// directories are listed again, at most once a second or once per this many such entries (a
/// listing opens every file: tens of microseconds). Entries in between are read through
/// libsystemd.
const RESCAN_EVERY: Duration = Duration::from_secs(1);
const RESCAN_AFTER: u32 = 100;

/// Entries read between giving back the mapped pages' resident memory (about 1 MB of a file
/// with 500-byte lines; re-reading the few shared pages costs microseconds).
const TRIM_EVERY: u32 = 2_000;

// Header fields (offsets in bytes).
const H_INCOMPATIBLE: usize = 12;
const H_STATE: usize = 16;
const STATE_ARCHIVED: u8 = 2;
const H_FILE_ID: usize = 24;
const H_BOOT_ID: usize = 56;
const H_SEQNUM_ID: usize = 72;
const H_N_ENTRIES: usize = 152;
const H_TAIL_SEQNUM: usize = 160;
const H_ENTRY_ARRAY: usize = 176;
const H_TAIL_REALTIME: usize = 192;
const H_TAIL_MONOTONIC: usize = 200;
/// The header of every file version we read is at least this long (systemd 189 and later).
const HEADER_MIN: usize = 240;

const COMPACT: u32 = 1 << 4;

// Object types and sizes.
const OBJECT_HEADER: usize = 16;
const DATA: u8 = 1;
const ENTRY: u8 = 3;
const ENTRY_ARRAY: u8 = 6;
/// Any compression flag on a data object (XZ, LZ4, ZSTD).
const COMPRESSED: u8 = 0b111;
/// Where an entry's items start, and a data object's payload (regular; compact adds 8).
const ENTRY_ITEMS: usize = 64;
const DATA_PAYLOAD: usize = 64;
const DATA_PAYLOAD_COMPACT: usize = 72;
const ENTRY_ARRAY_ITEMS: usize = 24;

/// Reads entries' fields from the journal files at one location.
pub struct FieldReader {
    location: JournalLocation,
    files: Vec<JournalFile>,
    /// The file the last entry was in (the next is most likely there too).
    last: Option<usize>,
    last_rescan: Option<Instant>,
    /// Entries found in no open file since the last listing.
    missed: u32,
    /// Payload ranges of the entry being read, kept for their allocation.
    ranges: Vec<(usize, usize)>,
    since_trim: u32,
    /// The last entry read (by either way), in the file `last`.
    last_head: Option<EntryHead>,
    /// Every sequence at the location as of the last listing, with its files' newest entries:
    /// libsystemd merges other sequences' entries (another journald's, a user's own file, a
    /// container's or a copied-in journal) with ours by time, so reading ahead in one
    /// sequence is only safe past the newest entry of every other.
    sequences: Sequences,
    /// The directories listed, with their modification times: a file created or renamed in
    /// one changes its time, and makes `read_next` list them again (at most once a second).
    dirs: Vec<(PathBuf, Option<std::time::SystemTime>)>,
    dirs_checked: Option<Instant>,
    dirs_countdown: u32,
}

/// Most sequences at a location for which reading ahead is still tried (a journal-remote
/// directory holds one per machine: checking them all for every entry would cost more than
/// reading ahead saves).
const SEQUENCES_KEPT: usize = 16;

/// The sequences at a location (see [`FieldReader::sequences`]).
enum Sequences {
    Known(Vec<Sequence>),
    /// More than [`SEQUENCES_KEPT`]: never read ahead here.
    Many,
}

/// The files of one sequence, for the check against reading ahead in another.
struct Sequence {
    /// The sequence-number ID as a cursor writes it.
    id: Vec<u8>,
    /// Newest entry of its archived files (they change no more), one per boot.
    archived: Vec<Tail>,
    /// Its files still written: their newest entry is read afresh.
    live: Vec<JournalFile>,
}

impl Sequences {
    /// Whether libsystemd may place an entry of a sequence other than `own` after `head`.
    fn others_may_follow(&self, own: &[u8], head: &EntryHead) -> bool {
        let Sequences::Known(all) = self else {
            return true;
        };
        all.iter().filter(|s| s.id != own).any(|s| {
            s.archived.iter().any(|t| t.may_follow(head))
                || s.live
                    .iter()
                    .any(|f| f.tail().is_some_and(|t| t.may_follow(head)))
        })
    }

    /// Note `file` (its sequence, and its newest entry or the file itself if still written).
    fn add(&mut self, file: JournalFile) {
        let Sequences::Known(all) = self else {
            return;
        };
        let at = match all.iter().position(|s| s.id == file.seqnum_id) {
            Some(at) => at,
            None if all.len() >= SEQUENCES_KEPT => {
                *self = Sequences::Many;
                return;
            }
            None => {
                all.push(Sequence {
                    id: file.seqnum_id.clone(),
                    archived: Vec::new(),
                    live: Vec::new(),
                });
                all.len() - 1
            }
        };
        let seq = &mut all[at];
        if !file.archived() {
            seq.live.push(file);
        } else if let Some(t) = file.tail() {
            match seq.archived.iter_mut().find(|a| a.boot_id == t.boot_id) {
                Some(a) => {
                    a.realtime = a.realtime.max(t.realtime);
                    a.monotonic = a.monotonic.max(t.monotonic);
                }
                None => seq.archived.push(t),
            }
        }
    }
}

/// What identifies an entry and places it in libsystemd's order (the entry object's header).
#[derive(Debug, Clone, Copy, PartialEq)]
struct EntryHead {
    /// The file's sequence-number ID (kept here so the cursor can be made after the file is
    /// gone from the list).
    seqnum_id: [u8; 16],
    seqnum: u64,
    realtime: u64,
    monotonic: u64,
    boot_id: [u8; 16],
    xor_hash: u64,
}

/// The newest entry of a file of another sequence.
#[derive(Debug, Clone, Copy)]
struct Tail {
    realtime: u64,
    monotonic: u64,
    boot_id: [u8; 16],
}

/// Margin for the time comparison with other sequences' files: clocks of different writers
/// disagree, so an entry of theirs within this of ours may come before or after it.
const FOREIGN_MARGIN_USEC: u64 = 3_600_000_000;

impl Tail {
    /// Whether libsystemd may place an entry of this file after `head` (it orders entries of
    /// different sequences by monotonic time within one boot, else by wall-clock time).
    fn may_follow(&self, head: &EntryHead) -> bool {
        if self.boot_id == head.boot_id
            && self.monotonic.saturating_add(FOREIGN_MARGIN_USEC) >= head.monotonic
        {
            return true;
        }
        self.realtime.saturating_add(FOREIGN_MARGIN_USEC) >= head.realtime
    }
}

/// One journal file, mapped.
struct JournalFile {
    map: Mmap,
    file: File,
    file_id: [u8; 16],
    /// The sequence-number ID as a cursor writes it.
    seqnum_id: Vec<u8>,
    compact: bool,
    /// The entry array chain as far as it has been walked: (offset, index of its first item,
    /// how many items it holds).
    arrays: Vec<(u64, u64, u64)>,
    /// The index the next entry most likely has.
    next: u64,
}

impl FieldReader {
    pub fn new(location: &JournalLocation) -> FieldReader {
        FieldReader {
            location: location.clone(),
            files: Vec::new(),
            last: None,
            last_rescan: None,
            missed: 0,
            ranges: Vec::new(),
            since_trim: 0,
            last_head: None,
            sequences: Sequences::Known(Vec::new()),
            dirs: Vec::new(),
            dirs_checked: None,
            dirs_countdown: 0,
        }
    }

    /// Unmap every file (they are mapped again when needed): keeps the resident memory of a
    /// long catch-up small, and lets deleted files go.
    pub fn release(&mut self) {
        self.files.clear();
        self.last = None;
        self.last_head = None;
        // Open them again at the next entry.
        self.last_rescan = None;
    }

    /// Hand each field of the entry libsystemd stands on (its `cursor`) to
    /// `field(name, value)`, in the entry's order, and return its realtime timestamp; or
    /// `None`, having handed out nothing, when this reader cannot read that entry.
    ///
    /// The cursor is the one exact identity of an entry libsystemd gives (systemd 252 has no
    /// `sd_journal_get_seqnum`); timestamps are not one, since journald stamps every message
    /// of one event-loop pass alike.
    pub fn read(&mut self, cursor: &[u8], field: impl FnMut(&[u8], &[u8])) -> Option<u64> {
        let found = parse_cursor(cursor).and_then(|id| self.find(&id));
        let Some((f, entry)) = found else {
            // libsystemd stands somewhere this reader does not know: nothing to read ahead of.
            self.last_head = None;
            return None;
        };
        // Even when the fields are declined (libsystemd reads them), this is where it stands.
        self.last_head = self.files[f].head(entry);
        self.emit(f, entry, field)
    }

    /// Read the entry that follows the last one read, without libsystemd, when it is certainly
    /// the one libsystemd's `sd_journal_next` would go to: the next entry of the same file,
    /// with the next sequence number. libsystemd orders the entries of one sequence by number,
    /// so no file of that sequence holds an entry between those two; and no file of another
    /// sequence (`foreign`: merged by time; a user's own file is one, in systemd 252) may have
    /// entries as new. Hands each field to `field` and returns the
    /// realtime timestamp; `None`, having handed out nothing, when that is not certain or the
    /// entry cannot be read here (libsystemd then goes on).
    ///
    /// This skips `sd_journal_next` and the cursor libsystemd formats for every entry: about
    /// a third of the reader thread (docs/BENCHMARKS.md).
    pub fn read_next(&mut self, field: impl FnMut(&[u8], &[u8])) -> Option<u64> {
        let prev = self.last_head?;
        if self.dirs_changed() {
            let seqnum_id = hex(&prev.seqnum_id).into_bytes();
            let id = EntryId {
                seqnum_id: &seqnum_id,
                seqnum: prev.seqnum,
                xor_hash: prev.xor_hash,
            };
            self.rescan(&id);
            // The list changed: find the last entry's file anew.
            self.search(&id)?;
        }
        let f = self.last?;
        if self
            .sequences
            .others_may_follow(&self.files[f].seqnum_id, &prev)
        {
            return None;
        }
        let file = &mut self.files[f];
        let i = file.next;
        if i >= file.n_entries() {
            return None;
        }
        let off = file.entry_at(i)?;
        let head = file.head(off)?;
        if head.seqnum != prev.seqnum.checked_add(1)? {
            return None;
        }
        let realtime = self.emit(f, off, field)?;
        self.files[f].next = i + 1;
        self.last_head = Some(head);
        Some(realtime)
    }

    /// The cursor of the last entry read, as libsystemd writes it (`sd_journal_get_cursor`):
    /// `s=<seqnum ID>;i=<seqnum>;b=<boot ID>;m=<monotonic>;t=<realtime>;x=<xor hash>`, hex.
    pub fn cursor(&self) -> Option<String> {
        let h = self.last_head?;
        Some(format!(
            "s={};i={:x};b={};m={:x};t={:x};x={:x}",
            hex(&h.seqnum_id),
            h.seqnum,
            hex(&h.boot_id),
            h.monotonic,
            h.realtime,
            h.xor_hash
        ))
    }

    /// Hand the fields of the entry at `entry` in file `f` to `field`; its realtime.
    fn emit(&mut self, f: usize, entry: u64, mut field: impl FnMut(&[u8], &[u8])) -> Option<u64> {
        let file = &self.files[f];
        let realtime = file.entry_payloads(entry, &mut self.ranges)?;
        for &(start, end) in &self.ranges {
            let payload = &file.map[start..end];
            match memchr::memchr(b'=', payload) {
                Some(eq) => field(&payload[..eq], &payload[eq + 1..]),
                None => field(payload, b""),
            }
        }
        self.since_trim += 1;
        if self.since_trim >= TRIM_EVERY {
            self.trim();
        }
        Some(realtime)
    }

    /// Whether a directory of the location changed since it was listed (looked at once a
    /// second at most).
    fn dirs_changed(&mut self) -> bool {
        // The clock is read every 256 entries, not for each.
        self.dirs_countdown = self.dirs_countdown.wrapping_sub(1);
        if !self.dirs_countdown.is_multiple_of(256)
            || self
                .dirs_checked
                .is_some_and(|t| t.elapsed() < RESCAN_EVERY)
        {
            return false;
        }
        self.dirs_checked = Some(Instant::now());
        self.dirs
            .iter()
            .any(|(d, t)| std::fs::metadata(d).and_then(|m| m.modified()).ok() != *t)
    }

    /// Give back the resident memory of the pages read so far (the mapping stays; pages are
    /// read again from the page cache when needed). Without it every page of a file read
    /// would stay resident until the file is unmapped.
    fn trim(&mut self) {
        self.since_trim = 0;
        for f in &self.files {
            // SAFETY: the mapping is read-only and shared with the file: dropped pages are
            // read from the file again, nothing is lost.
            let _ = unsafe { f.map.unchecked_advise(UncheckedAdvice::DontNeed) };
        }
    }

    /// The file and offset of the entry `id` names.
    fn find(&mut self, id: &EntryId) -> Option<(usize, u64)> {
        if let Some(f) = self.last {
            if let Some(off) = self.files[f].at_hint(id) {
                return Some((f, off));
            }
        }
        if let Some(found) = self.search(id) {
            return Some(found);
        }
        self.missed += 1;
        let due = self.missed >= RESCAN_AFTER
            || self.last_rescan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY);
        if !due {
            return None;
        }
        self.last_rescan = Some(Instant::now());
        self.missed = 0;
        self.rescan(id);
        self.search(id)
    }

    fn search(&mut self, id: &EntryId) -> Option<(usize, u64)> {
        for (i, file) in self.files.iter_mut().enumerate() {
            if file.seqnum_id != id.seqnum_id {
                continue;
            }
            if let Some(off) = file.search(id) {
                self.last = Some(i);
                return Some((i, off));
            }
        }
        None
    }

    /// Open the journal files at the location that may hold `id` or later entries of its
    /// sequence and are not open yet, map again the ones that grew, and let go of the ones
    /// that end before `id` (reading only moves forward; a host keeps hundreds of archived
    /// files, and each kept one holds a descriptor).
    fn rescan(&mut self, id: &EntryId) {
        self.files
            .retain(|f| f.seqnum_id != id.seqnum_id || f.tail_seqnum() >= id.seqnum);
        self.last = None;
        for file in &mut self.files {
            file.remap();
        }
        self.sequences = Sequences::Known(Vec::new());
        let survey = super::journal_access::survey(&self.location);
        self.dirs = watched_dirs(&survey);
        self.dirs_checked = Some(Instant::now());
        for path in survey.files {
            let Some(file) = JournalFile::open(path) else {
                continue;
            };
            let useful = file.seqnum_id == id.seqnum_id && file.tail_seqnum() >= id.seqnum;
            if useful && !self.files.iter().any(|f| f.file_id == file.file_id) {
                // Mapped a second time for the sequences' list (cheap: a descriptor).
                if let Some(again) = file.reopen() {
                    self.sequences.add(again);
                }
                self.files.push(file);
            } else {
                self.sequences.add(file);
            }
        }
    }
}

/// The directories whose changes may mean new journal files: those a survey listed, and
/// their parents (where a new machine's or namespace's directory would appear).
fn watched_dirs(
    survey: &super::journal_access::Survey,
) -> Vec<(PathBuf, Option<std::time::SystemTime>)> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for p in &survey.places {
        for d in [Some(p.path.as_path()), p.path.parent()]
            .into_iter()
            .flatten()
        {
            if !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_path_buf());
            }
        }
    }
    dirs.into_iter()
        .map(|d| {
            let t = std::fs::metadata(&d).and_then(|m| m.modified()).ok();
            (d, t)
        })
        .collect()
}

/// What a cursor says of its entry (protocols.md §4.7).
#[derive(Debug, PartialEq)]
struct EntryId<'a> {
    /// The sequence-number ID as the cursor writes it (32 hex digits).
    seqnum_id: &'a [u8],
    seqnum: u64,
    xor_hash: u64,
}

/// `s=`, `i=` and `x=` of a cursor, which libsystemd writes as
/// `s=<32 hex>;i=<hex>;b=<32 hex>;m=<hex>;t=<hex>;x=<hex>` (done by hand: this runs for every
/// entry read).
fn parse_cursor(b: &[u8]) -> Option<EntryId<'_>> {
    let seqnum_id = b.strip_prefix(b"s=")?.get(..32)?;
    let rest = b.get(35..)?.strip_prefix(b"i=")?;
    let seqnum = hex_u64(&rest[..memchr::memchr(b';', rest)?])?;
    let last = &b[memchr::memrchr(b';', b)? + 1..];
    let xor_hash = hex_u64(last.strip_prefix(b"x=")?)?;
    (b[34] == b';').then_some(EntryId {
        seqnum_id,
        seqnum,
        xor_hash,
    })
}

/// Lower-case hex of an ID, as libsystemd writes IDs in cursors.
fn hex(id: &[u8; 16]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for b in id {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn hex_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 16 {
        return None;
    }
    v.iter().try_fold(0u64, |n, &c| {
        let d = (c as char).to_digit(16)?;
        Some(n << 4 | d as u64)
    })
}

impl JournalFile {
    fn open(path: PathBuf) -> Option<JournalFile> {
        JournalFile::from_file(File::open(&path).ok()?)
    }

    /// The same file, opened and mapped a second time.
    fn reopen(&self) -> Option<JournalFile> {
        JournalFile::from_file(self.file.try_clone().ok()?)
    }

    fn from_file(file: File) -> Option<JournalFile> {
        // SAFETY: a read-only shared mapping of a journal file. journald only appends to
        // its files and never shrinks them (it grows them with fallocate), so the mapped
        // range stays backed; every offset read from the file is bounds-checked against it.
        let map = unsafe { Mmap::map(&file) }.ok()?;
        if map.len() < HEADER_MIN || &map[..8] != b"LPKSHHRH" {
            return None;
        }
        let incompatible =
            u32::from_le_bytes(map[H_INCOMPATIBLE..H_INCOMPATIBLE + 4].try_into().ok()?);
        // Flags this reader does not know of: leave the file to libsystemd.
        if incompatible & !0b1_1111 != 0 {
            return None;
        }
        Some(JournalFile {
            file_id: map[H_FILE_ID..H_FILE_ID + 16].try_into().ok()?,
            seqnum_id: hex(map[H_SEQNUM_ID..H_SEQNUM_ID + 16].try_into().ok()?).into_bytes(),
            compact: incompatible & COMPACT != 0,
            map,
            file,
            arrays: Vec::new(),
            next: 0,
        })
    }

    /// Map the file again if it grew (journald extends the file it writes).
    fn remap(&mut self) {
        let grew = self
            .file
            .metadata()
            .is_ok_and(|m| m.len() as usize > self.map.len());
        if grew {
            // SAFETY: as in `open`.
            if let Ok(map) = unsafe { Mmap::map(&self.file) } {
                self.map = map;
            }
        }
    }

    fn u64_at(&self, off: u64) -> Option<u64> {
        let off = usize::try_from(off).ok()?;
        let b = self.map.get(off..off.checked_add(8)?)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    fn u32_at(&self, off: u64) -> Option<u64> {
        let off = usize::try_from(off).ok()?;
        let b = self.map.get(off..off.checked_add(4)?)?;
        Some(u32::from_le_bytes(b.try_into().ok()?) as u64)
    }

    /// An object of type `kind` at `off`: its size, checked to lie inside the mapping. A
    /// range past the mapping (the file grew since) maps the file again once.
    fn object(&mut self, off: u64, kind: u8) -> Option<u64> {
        if !off.is_multiple_of(8) || off == 0 {
            return None;
        }
        let end = |f: &Self| -> Option<u64> {
            let size = f.u64_at(off.checked_add(8)?)?;
            let end = off.checked_add(size)?;
            (end as usize <= f.map.len()).then_some(size)
        };
        let size = match end(self) {
            Some(s) => s,
            None => {
                self.remap();
                end(self)?
            }
        };
        (self.map[off as usize] == kind && size >= OBJECT_HEADER as u64).then_some(size)
    }

    /// How many bytes an entry array item (an entry's offset) takes.
    fn array_item_size(&self) -> u64 {
        if self.compact {
            4
        } else {
            8
        }
    }

    /// An object offset stored at `at`: 4 bytes in compact files, 8 in regular ones.
    fn offset_at(&self, at: u64) -> Option<u64> {
        if self.compact {
            self.u32_at(at)
        } else {
            self.u64_at(at)
        }
    }

    /// The sequence number of the file's newest entry (read afresh: journald updates it).
    fn tail_seqnum(&self) -> u64 {
        self.u64_at(H_TAIL_SEQNUM as u64).unwrap_or(0)
    }

    /// Whether journald has archived the file (it is written no more).
    fn archived(&self) -> bool {
        self.map.get(H_STATE) == Some(&STATE_ARCHIVED)
    }

    /// The newest entry's times (read afresh), when the file has entries.
    fn tail(&self) -> Option<Tail> {
        (self.n_entries() > 0).then_some(())?;
        Some(Tail {
            realtime: self.u64_at(H_TAIL_REALTIME as u64)?,
            monotonic: self.u64_at(H_TAIL_MONOTONIC as u64)?,
            boot_id: self.map.get(H_BOOT_ID..H_BOOT_ID + 16)?.try_into().ok()?,
        })
    }

    /// The header of the entry object at `off` (already checked to be one).
    fn head(&self, off: u64) -> Option<EntryHead> {
        let at = usize::try_from(off).ok()?;
        Some(EntryHead {
            seqnum_id: self
                .map
                .get(H_SEQNUM_ID..H_SEQNUM_ID + 16)?
                .try_into()
                .ok()?,
            seqnum: self.u64_at(off + 16)?,
            realtime: self.u64_at(off + 24)?,
            monotonic: self.u64_at(off + 32)?,
            boot_id: self.map.get(at + 40..at + 56)?.try_into().ok()?,
            xor_hash: self.u64_at(off + 56)?,
        })
    }

    fn n_entries(&self) -> u64 {
        self.u64_at(H_N_ENTRIES as u64).unwrap_or(0)
    }

    /// The offset of the file's entry number `i` (from 0), walking the entry array chain
    /// further when `i` lies beyond the part walked.
    fn entry_offset(&mut self, i: u64) -> Option<u64> {
        loop {
            let at = self.arrays.partition_point(|a| a.1 <= i);
            if at > 0 {
                let (off, first, n) = self.arrays[at - 1];
                if i < first + n {
                    let item =
                        off + ENTRY_ARRAY_ITEMS as u64 + (i - first) * self.array_item_size();
                    let e = self.offset_at(item)?;
                    return (e != 0).then_some(e);
                }
            }
            // Walk one more array of the chain.
            let (next, first) = match self.arrays.last() {
                None => (self.u64_at(H_ENTRY_ARRAY as u64)?, 0),
                Some(&(off, first, n)) => (self.u64_at(off + 16)?, first + n),
            };
            if next == 0 {
                return None;
            }
            let size = self.object(next, ENTRY_ARRAY)?;
            let n = size.checked_sub(ENTRY_ARRAY_ITEMS as u64)? / self.array_item_size();
            if n == 0 {
                return None;
            }
            self.arrays.push((next, first, n));
        }
    }

    /// The offset of the file's entry number `i`, checked to be an entry object.
    fn entry_at(&mut self, i: u64) -> Option<u64> {
        let off = self.entry_offset(i)?;
        self.object(off, ENTRY)?;
        Some(off)
    }

    /// The entry at index `i` if it is the one `id` names.
    fn entry_if(&mut self, i: u64, id: &EntryId) -> Option<u64> {
        let off = self.entry_at(i)?;
        let seqnum = self.u64_at(off + 16)?;
        let xor = self.u64_at(off + 56)?;
        (seqnum == id.seqnum && xor == id.xor_hash).then_some(off)
    }

    /// The entry `id` names if it is the one after the last found here.
    fn at_hint(&mut self, id: &EntryId) -> Option<u64> {
        if self.seqnum_id != id.seqnum_id {
            return None;
        }
        let off = self.entry_if(self.next, id)?;
        self.next += 1;
        Some(off)
    }

    /// Binary search of the file's entries (in sequence-number order) for `id`.
    fn search(&mut self, id: &EntryId) -> Option<u64> {
        let (mut lo, mut hi) = (0, self.n_entries());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let off = self.entry_at(mid)?;
            let seqnum = self.u64_at(off + 16)?;
            if seqnum < id.seqnum {
                lo = mid + 1;
            } else if seqnum > id.seqnum {
                hi = mid;
            } else {
                let off = self.entry_if(mid, id)?;
                self.next = mid + 1;
                return Some(off);
            }
        }
        None
    }

    /// The payload ranges of the entry at `off` into `ranges`, and its realtime timestamp;
    /// `None` when any of its data objects is compressed or not as expected.
    fn entry_payloads(&self, off: u64, ranges: &mut Vec<(usize, usize)>) -> Option<u64> {
        ranges.clear();
        let size = self.u64_at(off + 8)?;
        let realtime = self.u64_at(off + 24)?;
        // An entry item: the data object's offset (compact), or its offset and hash.
        let item = if self.compact { 4 } else { 16 };
        let n = size.checked_sub(ENTRY_ITEMS as u64)? / item;
        let payload_at = if self.compact {
            DATA_PAYLOAD_COMPACT
        } else {
            DATA_PAYLOAD
        } as u64;
        for k in 0..n {
            let at = off + ENTRY_ITEMS as u64 + k * item;
            let data = self.offset_at(at)?;
            if !data.is_multiple_of(8) || data == 0 {
                return None;
            }
            let header = self
                .map
                .get(data as usize..(data as usize).checked_add(OBJECT_HEADER)?)?;
            if header[0] != DATA || header[1] & COMPRESSED != 0 {
                return None;
            }
            let dsize = u64::from_le_bytes(header[8..16].try_into().ok()?);
            let end = data.checked_add(dsize)?;
            if dsize < payload_at || end as usize > self.map.len() {
                return None;
            }
            ranges.push(((data + payload_at) as usize, end as usize));
        }
        Some(realtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_of_other_sequences_block_reading_ahead_near_their_newest_entry() {
        let hour = FOREIGN_MARGIN_USEC;
        let head = EntryHead {
            seqnum_id: [1; 16],
            seqnum: 10,
            realtime: 100 * hour,
            monotonic: 50 * hour,
            boot_id: [7; 16],
            xor_hash: 0,
        };
        let tail = |realtime, monotonic, boot_id| Tail {
            realtime,
            monotonic,
            boot_id,
        };
        // Another boot: by wall-clock time.
        assert!(!tail(98 * hour, 0, [8; 16]).may_follow(&head));
        assert!(tail(100 * hour - 1, 0, [8; 16]).may_follow(&head));
        assert!(tail(101 * hour, 0, [8; 16]).may_follow(&head));
        // The same boot: by monotonic time too.
        assert!(tail(0, 50 * hour - 1, [7; 16]).may_follow(&head));
        assert!(!tail(0, 48 * hour, [7; 16]).may_follow(&head));
        // Only other sequences count, whatever entry made the list.
        let near = tail(100 * hour, 50 * hour, [7; 16]);
        let seqs = Sequences::Known(vec![
            Sequence {
                id: b"own".to_vec(),
                archived: vec![near],
                live: Vec::new(),
            },
            Sequence {
                id: b"other".to_vec(),
                archived: vec![near],
                live: Vec::new(),
            },
        ]);
        assert!(seqs.others_may_follow(b"own", &head));
        assert!(seqs.others_may_follow(b"other", &head));
        let Sequences::Known(mut v) = seqs else {
            unreachable!()
        };
        v.pop();
        assert!(!Sequences::Known(v).others_may_follow(b"own", &head));
        assert!(Sequences::Many.others_may_follow(b"own", &head));
        assert!(!Sequences::Known(Vec::new()).others_may_follow(b"own", &head));
    }

    #[test]
    fn reads_cursor() {
        let c = "s=2f3b3162d21f43878579d39d36709c95;i=186a3;b=2ba487c64855429e88e8dcc0f4d437b0;\
                 m=5fe0c6bd8;t=661cad565d55b;x=9a0b1c2d3e4f5061";
        let id = parse_cursor(c.as_bytes()).unwrap();
        assert_eq!(id.seqnum, 0x186a3);
        assert_eq!(id.xor_hash, 0x9a0b1c2d3e4f5061);
        assert_eq!(id.seqnum_id, b"2f3b3162d21f43878579d39d36709c95");
        assert_eq!(parse_cursor(b"s=zz;i=1;x=2"), None);
        let bad_hex = "s=2f3b3162d21f43878579d39d36709c95;i=1g;x=2";
        assert_eq!(parse_cursor(bad_hex.as_bytes()), None);
        assert_eq!(parse_cursor(b"i=1;x=2"), None);
        let no_x = "s=2f3b3162d21f43878579d39d36709c95;i=1;b=2;m=3;t=4";
        assert_eq!(parse_cursor(no_x.as_bytes()), None);
    }
}
