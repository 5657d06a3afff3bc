//! Whether this process can read the journal it was pointed at.
//!
//! libsystemd silently skips journal files it cannot open (sd_journal_open(3)): a reader
//! without permission sees an empty journal forever and ships nothing. So we look where
//! libsystemd looks and open each file the way it does, and say what we found.
//!
//! Where libsystemd looks (sd-journal.c `add_search_paths`, `add_directory`; every open here
//! passes no flags): the roots `/run/log/journal`, `/var/log/journal` and
//! `/var/log/journal/remote` for the system journal and namespaces, or the `--journal-dir`
//! itself. In a root it reads `*.journal` and `*.journal~` files, and the same files in
//! subdirectories named by a machine ID (any machine's, not only this one's) — `MACHINE_ID` for
//! the system journal and a directory, `MACHINE_ID.NS` for namespace NS. Subdirectories are not
//! searched further. A root that does not exist is skipped, except the `--journal-dir`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::unistd::{getegid, geteuid, getgroups, Gid, Group, Uid, User};

use crate::config::JournalLocation;
use crate::metrics::Metrics;

/// How often the journal's directories are looked at again after the start.
pub const RECHECK: Duration = Duration::from_secs(30);

/// How often a journal without files is looked at again before reading starts.
const FILES_RECHECK: Duration = Duration::from_secs(1);

/// How soon a waiting thread notices a stop request.
const STOP_POLL: Duration = Duration::from_millis(200);

/// The roots libsystemd searches for the system journal and for namespaces.
const SYSTEM_ROOTS: [&str; 3] = [
    "/run/log/journal",
    "/var/log/journal",
    "/var/log/journal/remote",
];

/// What one look at the journal's directories found.
#[derive(Debug, Default)]
pub struct Survey {
    /// The directories that matter for this location, with what is in them.
    pub places: Vec<Place>,
    /// Journal files this process can open.
    pub readable: usize,
    /// Their paths.
    pub files: Vec<PathBuf>,
    /// Journal files, or journal directories (which hide their files), that exist but cannot
    /// be opened, with why.
    pub unreadable: Vec<(PathBuf, io::Error)>,
    /// Namespaces found in the roots (a hint when the one asked for has no files).
    pub namespaces: BTreeSet<String>,
}

#[derive(Debug)]
pub struct Place {
    pub path: PathBuf,
    pub state: PlaceState,
}

#[derive(Debug)]
pub enum PlaceState {
    Missing,
    /// Journal files in it: how many can and cannot be opened.
    Files {
        readable: usize,
        unreadable: usize,
    },
    /// The directory exists but cannot be listed.
    Unlistable(io::Error),
}

/// What a survey means for shipping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every journal file there can be read.
    Readable,
    /// Some can be read, some cannot: lines in the others are not shipped.
    Partial,
    /// No journal files at all (yet).
    NoFiles,
    /// Journal files exist but none can be read: nothing will ever be shipped.
    Unreadable,
}

/// Nothing can be read where journal-fanout was pointed: a configuration error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CannotRead(pub String);

impl Survey {
    pub fn verdict(&self) -> Verdict {
        match (self.readable, self.unreadable.len()) {
            (0, 0) => Verdict::NoFiles,
            (0, _) => Verdict::Unreadable,
            (_, 0) => Verdict::Readable,
            _ => Verdict::Partial,
        }
    }

    /// The directories where files cannot be read, e.g. `/run/log/journal/ID.NS`.
    fn unreadable_places(&self) -> String {
        let dirs: BTreeSet<String> = self
            .unreadable
            .iter()
            .map(|(p, _)| match fs::metadata(p) {
                Ok(m) if m.is_dir() => p.display().to_string(),
                _ => p.parent().unwrap_or(p).display().to_string(),
            })
            .collect();
        dirs.into_iter().collect::<Vec<_>>().join(", ")
    }

    /// The error for [`Verdict::Unreadable`] and [`Verdict::Partial`]: what, where, as whom,
    /// and what to do.
    pub fn unreadable_message(&self) -> String {
        let (path, err) = &self.unreadable[0];
        let mut m = String::new();
        match self.verdict() {
            Verdict::Partial => {
                let _ = write!(
                    m,
                    "{} of the {} journal files in {} cannot be opened for reading; lines in \
                     them are not shipped. ",
                    self.unreadable.len(),
                    self.unreadable.len() + self.readable,
                    self.unreadable_places()
                );
            }
            _ => {
                let _ = write!(
                    m,
                    "cannot read the journal: this process may not open the journal files in \
                     {}, and there are no others, so nothing would ever be shipped. ",
                    self.unreadable_places()
                );
            }
        }
        let _ = write!(m, "{}: {err}", path.display());
        if let Ok(meta) = fs::metadata(path) {
            let _ = write!(
                m,
                " (owner {}:{}, mode {:04o})",
                user_name(Uid::from_raw(meta.uid())),
                group_name(Gid::from_raw(meta.gid())),
                meta.mode() & 0o7777
            );
        }
        let _ = write!(
            m,
            ". journal-fanout runs as {}. Fix: give it the journal files' group — add the user \
             to the systemd-journal group (journald's files are root:systemd-journal, mode \
             0640), or in its systemd unit SupplementaryGroups=systemd-journal, or in a \
             container docker run --group-add $(getent group systemd-journal | cut -d: -f3) \
             (the host's gid).",
            identity()
        );
        m
    }

    /// The warning for [`Verdict::NoFiles`]: where we looked.
    pub fn no_files_message(&self, location: &JournalLocation) -> String {
        let looked: Vec<String> = self
            .places
            .iter()
            .map(|p| {
                let state = match &p.state {
                    PlaceState::Missing => "does not exist".to_string(),
                    PlaceState::Files {
                        readable: 0,
                        unreadable: 0,
                    } => "has no journal files".to_string(),
                    PlaceState::Files {
                        readable,
                        unreadable,
                    } => format!("{readable} readable, {unreadable} unreadable journal files"),
                    PlaceState::Unlistable(e) => format!("cannot be listed: {e}"),
                };
                format!("{} ({state})", p.path.display())
            })
            .collect();
        let mut m = format!("no journal files to read: looked in {}", looked.join(", "));
        match location {
            JournalLocation::System => {
                m.push_str(" and below /var/log/journal/remote");
                if !self.namespaces.is_empty() {
                    let _ = write!(
                        m,
                        "; journal namespaces found there: {} (--journal-namespace)",
                        join(&self.namespaces)
                    );
                }
            }
            JournalLocation::Namespace(ns) => {
                let _ = write!(
                    m,
                    " (systemd-journald@{ns} creates one of them when it first starts)"
                );
                let others: BTreeSet<String> = self
                    .namespaces
                    .iter()
                    .filter(|n| *n != ns)
                    .cloned()
                    .collect();
                if !others.is_empty() {
                    let _ = write!(m, "; other namespaces found there: {}", join(&others));
                }
            }
            JournalLocation::Directory(_) => {}
        }
        if !matches!(location, JournalLocation::Directory(_)) {
            m.push_str(
                ". In a container, mount the host's /var/log/journal and /run/log/journal \
                 (read-only)",
            );
        }
        m.push_str(". journal-fanout keeps waiting and reads the files when they appear.");
        m
    }
}

/// The last check's verdict and how many files could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub unreadable: usize,
}

/// Look at the journal's files, update the gauges, and log what changed since `previous`
/// (everything at the start). Journal files that exist with none readable are an error: the
/// caller exits with status 2, since waiting cannot help a process whose groups are fixed
/// at its start.
pub fn check(
    location: &JournalLocation,
    metrics: &Metrics,
    previous: Option<Outcome>,
) -> Result<Outcome, CannotRead> {
    let s = survey(location);
    metrics.set_journal_files(s.readable as u64, s.unreadable.len() as u64);
    let now = Outcome {
        verdict: s.verdict(),
        unreadable: s.unreadable.len(),
    };
    match now.verdict {
        Verdict::Unreadable => return Err(CannotRead(s.unreadable_message())),
        _ if previous == Some(now) => {}
        Verdict::Partial => tracing::error!("{}", s.unreadable_message()),
        Verdict::NoFiles => tracing::warn!("{}", s.no_files_message(location)),
        Verdict::Readable if previous.is_some() => tracing::info!(
            files = s.readable,
            "journal files are there and readable now; reading them"
        ),
        Verdict::Readable => tracing::debug!(files = s.readable, "every journal file can be read"),
    }
    Ok(now)
}

/// Check again every [`RECHECK`] until `stop`; ends with [`CannotRead`] when nothing can be
/// read any more.
pub fn watch(
    location: &JournalLocation,
    metrics: &Metrics,
    mut last: Outcome,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    while sleep_unless_stopped(RECHECK, stop) {
        last = check(location, metrics, Some(last))?;
    }
    Ok(())
}

/// For a reader of a journal that had no files at the start: wait until files it can open
/// appear, then the caller opens the journal. Opened earlier, libsystemd would not read them
/// (it refuses a missing `--journal-dir`, and does not notice a namespace directory created
/// after it opened the journal) or would read a directory's new files from where `--from
/// tail` left it, past their lines. Returns false when asked to stop first.
pub fn wait_for_files(location: &JournalLocation, stop: &AtomicBool) -> bool {
    loop {
        if !sleep_unless_stopped(FILES_RECHECK, stop) {
            return false;
        }
        if survey(location).readable > 0 {
            return true;
        }
    }
}

/// Sleep for `d`; false, early, once `stop` is set.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(STOP_POLL));
    }
    false
}

fn join(s: &BTreeSet<String>) -> String {
    s.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Look where libsystemd looks for `location`'s journal files and try to open each.
pub fn survey(location: &JournalLocation) -> Survey {
    // Where libsystemd looks, whose subdirectories it reads, and the places an operator
    // expects (named even when they do not exist).
    let (roots, namespace, expected) = match location {
        JournalLocation::System => (system_roots(), None, machine_dirs(None)),
        JournalLocation::Namespace(ns) => {
            (system_roots(), Some(ns.as_str()), machine_dirs(Some(ns)))
        }
        JournalLocation::Directory(d) => (vec![d.clone()], None, vec![d.clone()]),
    };
    let mut s = Survey::default();
    for root in &roots {
        let entries = match fs::read_dir(root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                s.unreadable
                    .push((root.clone(), io::Error::new(e.kind(), e.to_string())));
                s.places.push(Place {
                    path: root.clone(),
                    state: PlaceState::Unlistable(e),
                });
                continue;
            }
        };
        let mut root_place = (0, 0);
        let mut subdirs = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if is_journal_file(&name) {
                count_file(&mut s, &path, &mut root_place);
            } else if let Some(ns) = journal_subdir(&name) {
                if !fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                    continue;
                }
                if let Some(n) = ns {
                    s.namespaces.insert(n.to_string());
                }
                if ns == namespace {
                    subdirs.push(path);
                }
            }
        }
        let is_expected = expected.contains(root);
        if root_place != (0, 0) || is_expected {
            s.places.push(Place {
                path: root.clone(),
                state: PlaceState::Files {
                    readable: root_place.0,
                    unreadable: root_place.1,
                },
            });
        }
        subdirs.sort();
        for dir in subdirs {
            let state = scan_subdir(&mut s, &dir);
            s.places.push(Place { path: dir, state });
        }
    }
    // The expected places first, in the order named; missing ones said so.
    let mut places = Vec::new();
    for e in &expected {
        match s.places.iter().position(|p| &p.path == e) {
            Some(i) => places.push(s.places.remove(i)),
            None => places.push(Place {
                path: e.clone(),
                state: PlaceState::Missing,
            }),
        }
    }
    places.append(&mut s.places);
    s.places = places;
    s
}

fn system_roots() -> Vec<PathBuf> {
    SYSTEM_ROOTS.iter().map(PathBuf::from).collect()
}

/// This machine's directories for the system journal or `namespace` in the roots journald
/// writes to.
fn machine_dirs(namespace: Option<&str>) -> Vec<PathBuf> {
    let machine = fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| is_id128(s));
    let id = machine.as_deref().unwrap_or("MACHINE_ID");
    let name = match namespace {
        Some(ns) => format!("{id}.{ns}"),
        None => id.to_string(),
    };
    ["/var/log/journal", "/run/log/journal"]
        .iter()
        .map(|r| Path::new(r).join(&name))
        .collect()
}

fn scan_subdir(s: &mut Survey, dir: &Path) -> PlaceState {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return PlaceState::Missing,
        Err(e) => {
            s.unreadable
                .push((dir.to_path_buf(), io::Error::new(e.kind(), e.to_string())));
            return PlaceState::Unlistable(e);
        }
    };
    let mut counts = (0, 0);
    for entry in entries.flatten() {
        if is_journal_file(&entry.file_name().to_string_lossy()) {
            count_file(s, &entry.path(), &mut counts);
        }
    }
    PlaceState::Files {
        readable: counts.0,
        unreadable: counts.1,
    }
}

/// Open `path` as libsystemd does (read-only, non-blocking) and count the outcome.
fn count_file(s: &mut Survey, path: &Path, counts: &mut (usize, usize)) {
    match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => {
            if f.metadata().is_ok_and(|m| m.is_file()) {
                s.readable += 1;
                s.files.push(path.to_path_buf());
                counts.0 += 1;
            }
        }
        // Vacuumed between listing and opening.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            s.unreadable.push((path.to_path_buf(), e));
            counts.1 += 1;
        }
    }
}

fn is_journal_file(name: &str) -> bool {
    name.ends_with(".journal") || name.ends_with(".journal~")
}

/// `MACHINE_ID` (`Some(None)`) or `MACHINE_ID.NS` (`Some(Some(NS))`).
fn journal_subdir(name: &str) -> Option<Option<&str>> {
    match name.split_once('.') {
        Some((id, ns)) if is_id128(id) && !ns.is_empty() => Some(Some(ns)),
        None if is_id128(name) => Some(None),
        _ => None,
    }
}

/// A 128-bit ID as libsystemd writes it: 32 hex digits, or the UUID form.
fn is_id128(s: &str) -> bool {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    match s.len() {
        32 => hex(s),
        36 => {
            let b = s.as_bytes();
            [8, 13, 18, 23].iter().all(|&i| b[i] == b'-') && hex(&s.replace('-', ""))
        }
        _ => false,
    }
}

/// Who this process is, for the operator: `uid 65534 (nobody), gid 65534 (nogroup), no
/// supplementary groups`.
pub fn identity() -> String {
    let (uid, gid) = (geteuid(), getegid());
    let groups = getgroups().unwrap_or_default();
    let groups = if groups.is_empty() {
        "no supplementary groups".to_string()
    } else {
        let names: Vec<String> = groups
            .iter()
            .map(|&g| format!("{g} ({})", group_name(g)))
            .collect();
        format!("supplementary groups {}", names.join(", "))
    };
    format!(
        "uid {uid} ({}), gid {gid} ({}), {groups}",
        user_name(uid),
        group_name(gid)
    )
}

/// The user's name through NSS (so DynamicUser= names resolve), else `?`.
fn user_name(uid: Uid) -> String {
    User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| "?".into(), |u| u.name)
}

/// The group's name through NSS, else `?`.
fn group_name(gid: Gid) -> String {
    Group::from_gid(gid)
        .ok()
        .flatten()
        .map_or_else(|| "?".into(), |g| g.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_directory_names() {
        let id = "3d1219c7c4c5404aaa1f6d2a48adfda4";
        assert_eq!(journal_subdir(id), Some(None));
        assert_eq!(journal_subdir(&format!("{id}.logs")), Some(Some("logs")));
        assert_eq!(journal_subdir("remote"), None);
        assert!(is_id128("3d1219c7-c4c5-404a-aa1f-6d2a48adfda4"));
        assert!(!is_id128("3d1219c7c4c5404aaa1f6d2a48adfdaz"));
        assert!(is_journal_file("system@0005-0001.journal~"));
        assert!(!is_journal_file("system.journal.tmp"));
    }

    #[test]
    fn empty_directory_has_no_files() {
        let d = tempfile::tempdir().unwrap();
        let loc = JournalLocation::Directory(d.path().to_path_buf());
        let s = survey(&loc);
        assert_eq!(s.verdict(), Verdict::NoFiles);
        let m = s.no_files_message(&loc);
        assert!(
            m.contains(&format!("{} (has no journal files)", d.path().display())),
            "{m}"
        );
        let gone = JournalLocation::Directory(d.path().join("nope"));
        let m = survey(&gone).no_files_message(&gone);
        assert!(m.contains("nope (does not exist)"), "{m}");
    }
}
