//! Shell completion: group names from the local cache (filled by `cwlogs groups`, refreshed
//! in the background when missing or stale), and never file names after a flag that takes a
//! time, a template or any other non-path value.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{Cw, BIN};

/// What bash's dynamic completion would offer for `words`, the last being completed.
fn complete(cw: &Cw, cache_home: &Path, cwd: &Path, words: &[&str]) -> Vec<String> {
    let mut c = cw.cmd(&[]);
    c.env("COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
        .env("XDG_CACHE_HOME", cache_home)
        .current_dir(cwd)
        .arg("--")
        .args(words);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn group_names_complete_from_the_cache_and_no_flag_value_completes_files() {
    let cw = Cw::start();
    for g in ["checkout-api", "checkout-worker", "payments"] {
        cw.group(g);
    }
    let home = std::env::temp_dir().join(testkit::unique_name("cwlogs-cache"));
    let cwd = home.join("work");
    std::fs::create_dir_all(&cwd).unwrap();
    // Files a shell would wrongly offer after --since or -o.
    std::fs::write(cwd.join("1h-notes.txt"), "").unwrap();
    std::fs::write(cwd.join("checkout.log"), "").unwrap();
    let cache = home.join("cwlogs/groups");

    // No cache yet: nothing offered (completion never waits on AWS), and a refresh starts
    // in the background.
    assert_eq!(
        complete(&cw, &home, &cwd, &["cwlogs", "fetch", "chec"]),
        Vec::<String>::new()
    );
    testkit::wait_until(
        Duration::from_secs(30),
        "the background refresh to write the cache",
        || cache.exists().then_some(()),
    );
    assert_eq!(
        complete(&cw, &home, &cwd, &["cwlogs", "fetch", "chec"]),
        ["checkout-api", "checkout-worker"]
    );
    assert_eq!(
        complete(
            &cw,
            &home,
            &cwd,
            &["cwlogs", "fetch", "checkout-api", "pay"]
        ),
        ["payments"]
    );
    assert_eq!(
        complete(&cw, &home, &cwd, &["cwlogs", "list", "p"]),
        ["payments"]
    );

    // `cwlogs groups` rewrites the cache.
    cw.group("search");
    let out = cw
        .cmd(&["groups"])
        .env("XDG_CACHE_HOME", &home)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(&cache).unwrap(),
        "checkout-api\ncheckout-worker\npayments\nsearch\n"
    );

    // Flag values are not files.
    for words in [
        &["cwlogs", "fetch", "payments", "--since", ""][..],
        &["cwlogs", "fetch", "payments", "-o", ""],
        &["cwlogs", "fetch", "payments", "--until", "1"],
        &["cwlogs", "list", "payments", "-t", "c"],
        &["cwlogs", "fetch", "payments", "--region", ""],
    ] {
        assert_eq!(
            complete(&cw, &home, &cwd, words),
            Vec::<String>::new(),
            "{words:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&home);
}

/// The dynamic bash completion (`source <(COMPLETE=bash cwlogs)`) run by a real bash: it
/// asks cwlogs, which answers from the cache.
#[test]
fn the_dynamic_bash_completion_offers_cached_group_names() {
    let cw = Cw::start();
    let home = std::env::temp_dir().join(testkit::unique_name("cwlogs-bash"));
    std::fs::create_dir_all(home.join("cwlogs")).unwrap();
    std::fs::write(
        home.join("cwlogs/groups"),
        "checkout-api\ncheckout-worker\npayments\n",
    )
    .unwrap();
    let script = Command::new(BIN).env("COMPLETE", "bash").output().unwrap();
    assert!(script.status.success());
    let script_path = home.join("cwlogs.bash");
    std::fs::write(&script_path, &script.stdout).unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |line: &str, words: &str, cword: usize| -> Vec<String> {
        let mut c = Command::new("bash");
        for (k, v) in cw.moto.env() {
            c.env(k, v);
        }
        let out = c
            .env("XDG_CACHE_HOME", &home)
            .env("PATH", &path)
            .arg("-c")
            .arg(format!(
                "source {script}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; \
                 COMP_WORDS=({words}); COMP_CWORD={cword}; \
                 _clap_complete_cwlogs cwlogs \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script = script_path.display()
            ))
            .output()
            .expect("bash is needed for this test: apt-get install -y bash");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        run("cwlogs fetch chec", "cwlogs fetch chec", 2),
        ["checkout-api", "checkout-worker"]
    );
    assert_eq!(
        run("cwlogs fetch x --since ", "cwlogs fetch x --since ''", 4),
        Vec::<String>::new()
    );
    let _ = std::fs::remove_dir_all(&home);
}

/// The installed (static) completions: commands and flags, and no files after value flags.
#[test]
fn generated_completion_scripts_offer_no_files_for_flag_values() {
    let bash = Command::new(BIN)
        .args(["--generate", "complete-bash"])
        .output()
        .unwrap();
    let bash = String::from_utf8_lossy(&bash.stdout);
    assert!(bash.contains("--since"), "{bash}");
    assert!(
        !bash.contains("compgen -f"),
        "bash offers files somewhere:\n{bash}"
    );
    let zsh = Command::new(BIN)
        .args(["--generate", "complete-zsh"])
        .output()
        .unwrap();
    let zsh = String::from_utf8_lossy(&zsh.stdout);
    assert!(zsh.contains("--since"), "{zsh}");
    assert!(
        !zsh.contains("_files"),
        "zsh offers files somewhere:\n{zsh}"
    );
}
