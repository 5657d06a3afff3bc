//! Build-script helper that stamps the suite's programs with their version and git revision,
//! so `PROGRAM --version` says exactly which source a binary was built from:
//! `log-proxy 0.1.0 (rev 1a2b3c4d5e6f)`, `-dirty` appended when tracked files had
//! uncommitted changes.
//!
//! Each program's `build.rs` calls [`emit`], which sets `LOGSUITE_VERSION` for the crate
//! (used as `#[command(version = env!("LOGSUITE_VERSION"))]`).
//!
//! Where the revision comes from, first found wins:
//! 1. the environment variable `LOGSUITE_GIT_REV` (packagers, Docker builds without `.git`);
//! 2. `git rev-parse --short=12 HEAD` in the work tree holding the crate, plus `-dirty` when
//!    `git status --porcelain --untracked-files=no` lists anything;
//! 3. the workspace's `REVISION` file, which `git archive` fills in (`export-subst` in
//!    `.gitattributes`): a source tarball made that way knows its commit without `.git`;
//! 4. `unknown` (a crates tarball, no git installed, a tree git does not trust).
//!
//! The script reruns only when HEAD moves (a commit, checkout or reset: `.git/HEAD`, the
//! branch ref it points to, `packed-refs`), when the crate's own `src/` changes (so `-dirty`
//! follows edits to the program itself), or when `LOGSUITE_GIT_REV` changes: ordinary
//! incremental builds do not re-run git.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable a packager sets to name the revision when there is no `.git`.
pub const REV_ENV: &str = "LOGSUITE_GIT_REV";

/// Prints the cargo directives that set `LOGSUITE_VERSION` (`VERSION (rev REV)`) for the crate
/// being built and tell cargo when to recompute it. Call from `build.rs`.
pub fn emit() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();

    println!("cargo:rerun-if-env-changed={REV_ENV}");
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("src").display()
    );
    let from_env = std::env::var(REV_ENV).ok().filter(|r| !r.trim().is_empty());
    let rev = match from_env {
        Some(rev) => rev.trim().to_string(),
        None => match git_rev(&manifest_dir) {
            Some((rev, watch)) => {
                for path in watch {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
                rev
            }
            None => archived_rev(&manifest_dir).unwrap_or_else(|| "unknown".to_string()),
        },
    };
    println!("cargo:rustc-env=LOGSUITE_VERSION={version} (rev {rev})");
}

/// The short revision of HEAD (with `-dirty`) and the git files whose change moves HEAD,
/// or `None` when the crate is not in a git work tree that tracks it.
fn git_rev(dir: &Path) -> Option<(String, Vec<PathBuf>)> {
    // A tarball unpacked inside some other repository must not take that repository's
    // revision: the crate's manifest has to be tracked by the work tree git finds.
    git(dir, &["ls-files", "--error-unmatch", "Cargo.toml"])?;
    let rev = git(dir, &["rev-parse", "--short=12", "HEAD"])?;
    // --no-optional-locks: a plain `git status` refreshes the index under index.lock, which
    // would make a concurrent `git commit` in the same checkout fail.
    let dirty = git(
        dir,
        &[
            "--no-optional-locks",
            "status",
            "--porcelain",
            "--untracked-files=no",
        ],
    )
    .is_some_and(|s| !s.is_empty());

    // Cargo reruns the script whenever a watched path is missing, so only existing paths are
    // watched: a branch ref that is only in packed-refs is watched through its directory
    // (the next commit writes the loose file there).
    let git_path = |name: &str| git(dir, &["rev-parse", "--git-path", name]).map(|p| dir.join(p));
    let mut watch = Vec::new();
    watch.extend(git_path("HEAD").filter(|p| p.exists()));
    watch.extend(git_path("packed-refs").filter(|p| p.exists()));
    // On a branch HEAD holds `ref: refs/heads/NAME`; a commit rewrites that file, not HEAD.
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]).and_then(|b| git_path(&b)) {
        if branch.exists() {
            watch.push(branch);
        } else if let Some(parent) = branch.parent().filter(|p| p.exists()) {
            watch.push(parent.to_path_buf());
        }
    }
    let suffix = if dirty { "-dirty" } else { "" };
    Some((format!("{rev}{suffix}"), watch))
}

/// The revision `git archive` wrote into the workspace's `REVISION` file (the first one found
/// from the crate's directory upwards), cut to the 12 digits git would print.
fn archived_rev(dir: &Path) -> Option<String> {
    let file = dir
        .ancestors()
        .take(3)
        .map(|d| d.join("REVISION"))
        .find(|f| f.is_file())?;
    println!("cargo:rerun-if-changed={}", file.display());
    rev_from_archive(&std::fs::read_to_string(file).ok()?)
}

/// A full commit id as `git archive` substitutes it, or `None` for the placeholder a
/// checkout holds (`$Format:%H$`) or anything else.
fn rev_from_archive(text: &str) -> Option<String> {
    let rev = text.trim();
    (rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())).then(|| rev[..12].to_string())
}

/// Runs git in `dir`; its trimmed stdout when it succeeded.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::rev_from_archive;

    #[test]
    fn archive_revision_is_read_only_when_git_filled_it_in() {
        let full = "1a2b3c4d5e6f708192a3b4c5d6e7f80911223344";
        assert_eq!(
            rev_from_archive(&format!("{full}\n")).as_deref(),
            Some("1a2b3c4d5e6f")
        );
        assert_eq!(rev_from_archive("$Format:%H$\n"), None);
        assert_eq!(rev_from_archive(""), None);
        assert_eq!(
            rev_from_archive("not a commit id at all, forty characters"),
            None
        );
    }
}
