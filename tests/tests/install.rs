//! `scripts/install.sh` staged into a temporary DESTDIR with the already built (debug)
//! binaries, then every installed piece checked with the tool that will use it on a host:
//! the binaries' `--version`, `man -l` for the man pages, bash running the completion
//! function, `zsh -n` and `fish -n`, and the systemd units and /etc/default files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::{unique_name, workspace_bin};

const PROGRAMS: [&str; 3] = ["log-proxy", "journal-fanout", "cwlogs"];
/// Not /usr/local, so the units' ExecStart must have been rewritten.
const PREFIX: &str = "/opt/logsuite";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A DESTDIR removed when the test ends (the staged debug binaries are large).
struct Staging(PathBuf);
impl Staging {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name(what));
        fs::create_dir_all(&dir).unwrap();
        Staging(dir)
    }
    /// The staged copy of a path on the host.
    fn path(&self, host_path: &str) -> PathBuf {
        self.0.join(host_path.trim_start_matches('/'))
    }
}
impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn install_sh(bin_dir: &Path, destdir: &Path, extra: &[&str]) -> Output {
    Command::new("bash")
        .arg(repo().join("scripts/install.sh"))
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--destdir")
        .arg(destdir)
        .args(extra)
        .env_remove("PREFIX")
        .env_remove("DESTDIR")
        .env_remove("LOGSUITE_BIN")
        .output()
        .expect("run bash scripts/install.sh")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn require_tool(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{tool}` is not installed: apt-get install zsh fish man-db (scripts/install-deps.sh does)"
    );
}

#[test]
fn install_sh_stages_programs_man_pages_completions_and_units_under_destdir() {
    for tool in ["man", "zsh", "fish"] {
        require_tool(tool);
    }
    let bin_dir = workspace_bin("log-proxy").parent().unwrap().to_path_buf();
    let stage = Staging::new("install");
    // An operator's own settings: must survive the install untouched.
    let operator_config = "LOG_PROXY_BURST=42 # mine\n";
    fs::create_dir_all(stage.path("/etc/default")).unwrap();
    fs::write(stage.path("/etc/default/log-proxy"), operator_config).unwrap();

    let out = install_sh(&bin_dir, &stage.0, &["--prefix", PREFIX]);
    assert!(
        out.status.success(),
        "install.sh failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let report = text(&out.stdout);
    assert!(
        report.contains("systemctl enable --now log-proxy.socket journal-fanout.service"),
        "install.sh does not say what to run next:\n{report}"
    );

    binaries_print_name_version_and_rev(&stage);
    man_pages_render(&stage);
    bash_completion_completes(&stage);
    zsh_and_fish_completions_parse(&stage);
    units_settings_and_docs_are_in_place(&stage, operator_config);
    a_unit_edited_by_hand_survives_a_reinstall(&stage, &bin_dir);
}

/// Outside /usr/local and /usr the units go to /etc/systemd/system, the operator's place: an
/// install replaces the units it wrote, but keeps one changed by hand and writes NAME.new.
fn a_unit_edited_by_hand_survives_a_reinstall(stage: &Staging, bin_dir: &Path) {
    let units = stage.path("/etc/systemd/system");
    let edited = units.join("log-proxy.service");
    let mut mine = fs::read_to_string(&edited).unwrap();
    mine.push_str("# the operator's own line\n");
    fs::write(&edited, &mine).unwrap();

    let out = install_sh(bin_dir, &stage.0, &["--prefix", PREFIX]);
    assert!(out.status.success(), "reinstall failed:\n{}", text_of(&out));
    assert_eq!(
        fs::read_to_string(&edited).unwrap(),
        mine,
        "install.sh overwrote a unit edited by hand"
    );
    assert!(
        units.join("log-proxy.service.new").is_file(),
        "the new unit should wait beside the edited one as log-proxy.service.new"
    );
    assert!(
        text(&out.stderr).contains("log-proxy.service was changed by hand"),
        "install.sh must say it kept the edited unit:\n{}",
        text_of(&out)
    );
    for untouched in ["log-proxy.socket", "journal-fanout.service"] {
        assert!(
            !units.join(format!("{untouched}.new")).exists(),
            "{untouched} was not edited: it should simply be replaced"
        );
    }
}

fn text_of(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

fn binaries_print_name_version_and_rev(stage: &Staging) {
    for p in PROGRAMS {
        let bin = stage.path(&format!("{PREFIX}/bin/{p}"));
        let out = run(Command::new(&bin).arg("--version"));
        let line = text(&out.stdout);
        let expected = format!("{p} {} (rev ", env!("CARGO_PKG_VERSION"));
        assert!(
            line.starts_with(&expected) && line.trim_end().ends_with(')'),
            "{p} --version printed {line:?}, not \"{expected}REV)\""
        );
        let rev = line.trim_end()[expected.len()..].trim_end_matches(')');
        let commit = rev.trim_end_matches("-dirty");
        // Built from this checkout without an override: the rev must name one of its commits.
        if repo().join(".git").exists() && std::env::var_os("LOGSUITE_GIT_REV").is_none() {
            assert!(
                commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
                "{p}: rev {rev:?} is not a 12-digit git revision"
            );
            run(Command::new("git").arg("-C").arg(repo()).args([
                "cat-file",
                "-e",
                &format!("{commit}^{{commit}}"),
            ]));
        } else {
            assert!(!rev.is_empty() && !rev.contains(' '), "{p}: rev {rev:?}");
        }
    }
}

fn man_pages_render(stage: &Staging) {
    let known: [(&str, &[&str]); 3] = [
        (
            "log-proxy",
            &["--burst", "--syslog-address", "LOG_PROXY_BURST"],
        ),
        (
            "journal-fanout",
            &["--dst", "--state-dir", "JOURNAL_FANOUT_DST"],
        ),
        // One page for all of cwlogs: each subcommand has its section with its flags.
        (
            "cwlogs",
            &["fetch", "CWLOGS FETCH", "--follow", "CWLOGS LIST", "--grep"],
        ),
    ];
    for (p, flags) in known {
        let page = stage.path(&format!("{PREFIX}/share/man/man1/{p}.1"));
        let out = run(Command::new("man")
            .arg("--warnings")
            .arg("-l")
            .arg(&page)
            // Wide enough that no flag is hyphenated across lines; plain text, no pager.
            .env("MANWIDTH", "250")
            .env("LC_ALL", "C.UTF-8")
            .env_remove("MANPAGER")
            .env_remove("PAGER"));
        let rendered = text(&out.stdout);
        assert!(
            out.stderr.is_empty(),
            "man reports problems in {p}.1:\n{}",
            text(&out.stderr)
        );
        for want in ["NAME", "SYNOPSIS", "OPTIONS", p].iter().chain(flags) {
            assert!(
                rendered.contains(want),
                "the rendered {p}.1 lacks {want:?}:\n{rendered}"
            );
        }
        assert!(
            !rendered.contains("--generate"),
            "{p}.1 shows the hidden --generate flag"
        );
    }
}

/// Sources the installed completion in bash and calls the function it registered the way
/// bash does on TAB: `FUNC COMMAND CURRENT-WORD PREVIOUS-WORD` with COMP_WORDS/COMP_CWORD.
fn complete_in_bash(stage: &Staging, program: &str, line: &[&str]) -> (String, Vec<String>) {
    let file = stage.path(&format!(
        "{PREFIX}/share/bash-completion/completions/{program}"
    ));
    let script = r#"
        source "$1" || exit 1
        spec=$(complete -p "$2") || exit 1
        echo "$spec"
        func=$(sed -n 's/.* -F \([^ ]*\) .*/\1/p' <<<"$spec")
        shift 2
        COMP_WORDS=("$@")
        COMP_CWORD=$(($# - 1))
        COMP_LINE="$*"
        COMP_POINT=${#COMP_LINE}
        "$func" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let out = run(Command::new("bash")
        .args(["--norc", "--noprofile", "-c", script, "bash"])
        .arg(&file)
        .arg(program)
        .args(line));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let spec = lines.next().unwrap_or_default().to_string();
    (spec, lines.map(str::to_string).collect())
}

fn bash_completion_completes(stage: &Staging) {
    for p in PROGRAMS {
        let (spec, _) = complete_in_bash(stage, p, &[p, ""]);
        assert!(
            spec.starts_with("complete ")
                && spec.contains(" -F ")
                && spec.ends_with(&format!(" {p}")),
            "`complete -p {p}` after sourcing its completion printed {spec:?}"
        );
    }
    let (_, offered) = complete_in_bash(stage, "cwlogs", &["cwlogs", "fe"]);
    assert_eq!(offered, ["fetch"], "completing `cwlogs fe`");
    let (_, offered) = complete_in_bash(stage, "log-proxy", &["log-proxy", "--bu"]);
    assert_eq!(offered, ["--burst"], "completing `log-proxy --bu`");
    let (_, offered) = complete_in_bash(stage, "cwlogs", &["cwlogs", "fetch", "--fol"]);
    assert_eq!(offered, ["--follow"], "completing `cwlogs fetch --fol`");
}

fn zsh_and_fish_completions_parse(stage: &Staging) {
    for p in PROGRAMS {
        let zsh = stage.path(&format!("{PREFIX}/share/zsh/site-functions/_{p}"));
        let head = fs::read_to_string(&zsh).unwrap();
        assert!(
            head.starts_with(&format!("#compdef {p}")),
            "{} does not start with #compdef {p}",
            zsh.display()
        );
        run(Command::new("zsh").arg("-n").arg(&zsh));
        let fish = stage.path(&format!(
            "{PREFIX}/share/fish/vendor_completions.d/{p}.fish"
        ));
        run(Command::new("fish").arg("--no-execute").arg(&fish));
        assert!(
            fs::read_to_string(&fish)
                .unwrap()
                .contains(&format!("complete -c {p}")),
            "{} completes nothing for {p}",
            fish.display()
        );
    }
}

fn units_settings_and_docs_are_in_place(stage: &Staging, operator_config: &str) {
    let units = stage.path("/etc/systemd/system");
    assert!(
        units.join("log-proxy.socket").is_file(),
        "log-proxy.socket not installed"
    );
    for (unit, program) in [
        ("log-proxy.service", "log-proxy"),
        ("journal-fanout.service", "journal-fanout"),
    ] {
        let text = fs::read_to_string(units.join(unit)).unwrap();
        let exec = text
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .unwrap_or_else(|| panic!("{unit} has no ExecStart=:\n{text}"));
        assert!(
            exec.starts_with(&format!("ExecStart={PREFIX}/bin/{program}")),
            "{unit}: {exec:?} does not run {PREFIX}/bin/{program}"
        );
        assert!(
            !text.contains("/usr/local/bin"),
            "{unit} still names /usr/local/bin:\n{text}"
        );
    }
    // What the units point operators at (`systemctl help UNIT`) is installed.
    for unit in [
        "log-proxy.socket",
        "log-proxy.service",
        "journal-fanout.service",
    ] {
        let text = fs::read_to_string(units.join(unit)).unwrap();
        let links = text
            .lines()
            .filter_map(|l| l.strip_prefix("Documentation="))
            .flat_map(str::split_whitespace);
        for link in links {
            let installed = if let Some(path) = link.strip_prefix("file://") {
                stage.path(path)
            } else if let Some(page) = link.strip_prefix("man:") {
                let (name, section) = page.trim_end_matches(')').split_once('(').unwrap();
                stage.path(&format!("{PREFIX}/share/man/man{section}/{name}.{section}"))
            } else {
                continue;
            };
            assert!(
                installed.exists(),
                "{unit} links {link}, but {} was not installed",
                installed.display()
            );
        }
    }
    for doc in ["README.md", "releasing.md", "examples/docker-daemon.json"] {
        let path = stage.path(&format!("{PREFIX}/share/doc/logsuite/{doc}"));
        assert!(path.is_file(), "{} not installed", path.display());
    }
    assert_eq!(
        fs::read_to_string(stage.path("/etc/default/log-proxy")).unwrap(),
        operator_config,
        "install.sh overwrote the operator's /etc/default/log-proxy"
    );
    let example = fs::read_to_string(repo().join("systemd/journal-fanout.env")).unwrap();
    let installed = stage.path("/etc/default/journal-fanout");
    assert_eq!(fs::read_to_string(&installed).unwrap(), example);
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&installed).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "/etc/default/journal-fanout may hold tokens");
}

#[test]
fn install_sh_names_a_missing_binary_and_installs_nothing() {
    let bin_dir = Staging::new("install-bins");
    std::os::unix::fs::symlink(workspace_bin("log-proxy"), bin_dir.0.join("log-proxy")).unwrap();
    let stage = Staging::new("install-partial");
    let out = install_sh(&bin_dir.0, &stage.0, &["--no-systemd"]);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "install.sh succeeded without journal-fanout"
    );
    assert!(
        stderr.contains(&format!(
            "{}/journal-fanout is missing",
            bin_dir.0.display()
        )),
        "install.sh does not name the missing binary:\n{stderr}"
    );
    assert_eq!(
        fs::read_dir(&stage.0).unwrap().count(),
        0,
        "install.sh installed something before failing"
    );
}

#[test]
fn generate_flag_is_hidden_and_rejects_an_unknown_kind() {
    for p in PROGRAMS {
        let help = run(Command::new(workspace_bin(p)).arg("--help"));
        assert!(
            !text(&help.stdout).contains("generate"),
            "{p} --help shows the hidden --generate"
        );
        let out = Command::new(workspace_bin(p))
            .args(["--generate", "pdf"])
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{p} --generate pdf");
        assert!(
            stderr.contains("invalid value 'pdf'")
                && stderr.contains("man, complete-bash, complete-zsh, complete-fish"),
            "{p} --generate pdf does not list the kinds:\n{stderr}"
        );
    }
}
