//! Man pages and shell completions for the suite's programs, generated from the same clap
//! definitions that parse their command lines, so the docs a host gets can never disagree
//! with the flags the binary accepts.
//!
//! Every program answers a hidden `--generate KIND` (the way ripgrep does) by printing the
//! artifact to stdout; `scripts/install.sh` runs it to install them:
//!
//! ```text
//! cwlogs --generate man            > cwlogs.1
//! cwlogs --generate complete-bash  > /usr/share/bash-completion/completions/cwlogs
//! ```
//!
//! The flag is not part of the programs' own clap definitions: [`generate_if_asked`] looks at
//! the command line before the normal parse, so it works for `cwlogs` (which otherwise
//! requires a subcommand), stays out of `--help`, the man page and the completions, and leaves
//! normal parsing and its errors untouched.

use std::io::{self, Write};

use clap::{Arg, Command, ValueEnum};
use clap_complete::Shell;
use clap_mangen::roff::{roman, Roff};
use clap_mangen::Man;

/// What `--generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// The man page (roff), section 1.
    Man,
    /// Bash completion (for `bash-completion`'s completions directory).
    CompleteBash,
    /// Zsh completion (`_NAME`, for a directory on `$fpath`).
    CompleteZsh,
    /// Fish completion (`NAME.fish`).
    CompleteFish,
}

/// Writes `kind` for the program `cmd` describes to `out`.
pub fn generate(kind: Kind, cmd: Command, out: &mut impl Write) -> io::Result<()> {
    let shell = match kind {
        Kind::Man => return man(cmd, out),
        Kind::CompleteBash => Shell::Bash,
        Kind::CompleteZsh => Shell::Zsh,
        Kind::CompleteFish => Shell::Fish,
    };
    let mut cmd = cmd;
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, out);
    Ok(())
}

/// If the command line is `PROGRAM --generate KIND`, prints that artifact for `cmd()` to
/// stdout and exits; otherwise returns and the program parses its arguments as usual.
/// Call it first thing in `main`.
pub fn generate_if_asked(cmd: impl FnOnce() -> Command) {
    let args: Vec<_> = std::env::args_os().collect();
    let asked = args
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| a == "--generate" || a.starts_with("--generate="));
    if !asked {
        return;
    }
    let cmd = cmd();
    let name = cmd.get_name().to_string();
    // A parser of its own gives clap's usual errors for a missing or unknown KIND.
    let kind = *Command::new("generate")
        .bin_name(name.clone())
        .disable_help_flag(true)
        .arg(
            Arg::new("generate")
                .long("generate")
                .value_name("KIND")
                .required(true)
                .value_parser(clap::builder::EnumValueParser::<Kind>::new()),
        )
        .get_matches_from(args)
        .get_one::<Kind>("generate")
        .expect("required argument");

    let mut out = io::BufWriter::new(io::stdout().lock());
    match generate(kind, cmd, &mut out).and_then(|()| out.flush()) {
        Ok(()) => std::process::exit(0),
        // `PROGRAM --generate man | head` is not a failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("{name}: cannot write the generated {kind:?} to stdout: {e}");
            std::process::exit(1);
        }
    }
}

/// One page per program. A program with subcommands gets a section per subcommand (its
/// synopsis, description, options and notes) instead of clap_mangen's references to
/// `NAME-SUBCOMMAND(1)` pages, so `man cwlogs` is the whole manual.
fn man(cmd: Command, out: &mut dyn Write) -> io::Result<()> {
    let cmd = cmd.disable_help_subcommand(true);
    let subcommands: Vec<Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let page = Man::new(cmd.clone());
    let mut roff = Vec::new();
    page.render_title(&mut roff)?;
    page.render_name_section(&mut roff)?;
    page.render_synopsis_section(&mut roff)?;
    page.render_description_section(&mut roff)?;
    page.render_options_section(&mut roff)?;
    for sub in subcommands {
        let full_name = format!("{} {}", cmd.get_name(), sub.get_name());
        // Rendered on its own (not from the built parent) so the global options, documented
        // once above, are not repeated under every subcommand.
        let sub_page = Man::new(sub.clone().bin_name(&full_name));
        let mut body = Vec::new();
        sub_page.render_synopsis_section(&mut body)?;
        sub_page.render_description_section(&mut body)?;
        sub_page.render_options_section(&mut body)?;
        notes(&sub, &mut body)?;
        writeln!(roff, ".SH \"{}\"", full_name.to_uppercase())?;
        roff.extend_from_slice(&demote_headings(&body));
    }
    notes(&cmd, &mut roff)?;
    environment(&cmd, &mut roff)?;
    page.render_version_section(&mut roff)?;
    out.write_all(&drop_repeated_preamble(&roff))
}

fn after_help(cmd: &Command) -> Option<String> {
    cmd.get_after_long_help()
        .or_else(|| cmd.get_after_help())
        .map(|h| h.to_string())
}

/// The after-help text split into sections: lines before any heading are NOTES; a line of
/// capitals ending in a colon (`EXIT STATUS:`) starts a section of that name.
fn sections(cmd: &Command) -> Vec<(String, Vec<String>)> {
    let Some(text) = after_help(cmd) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        let heading = line
            .strip_suffix(':')
            .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_uppercase() || c == ' '));
        match (heading, out.last_mut()) {
            (Some(h), _) => out.push((h.to_string(), Vec::new())),
            (None, Some((_, lines))) => lines.push(line.to_string()),
            (None, None) => out.push(("NOTES".into(), vec![line.to_string()])),
        }
    }
    out
}

/// The after-help sections (examples, template fields, exit status), lines kept as written
/// (clap_mangen's EXTRA section would fill them into one paragraph). ENVIRONMENT is left to
/// [`environment`].
fn notes(cmd: &Command, out: &mut Vec<u8>) -> io::Result<()> {
    let mut roff = Roff::new();
    for (name, lines) in sections(cmd) {
        if name == "ENVIRONMENT" {
            continue;
        }
        roff.control("SH", [name.as_str()]).control("nf", []);
        for line in lines {
            roff.text([roman(line)]);
        }
        roff.control("fi", []);
    }
    roff.to_writer(out)
}

/// An ENVIRONMENT section: every variable an option reads, with its option (the variable
/// and the flag mean the same; the flag wins), then the after-help's ENVIRONMENT lines (the
/// variables no option stands for).
fn environment(cmd: &Command, out: &mut Vec<u8>) -> io::Result<()> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut collect = |c: &Command| {
        for a in c.get_arguments() {
            if let (Some(env), Some(long)) = (a.get_env(), a.get_long()) {
                let env = env.to_string_lossy().into_owned();
                if !vars.iter().any(|(e, _)| *e == env) {
                    vars.push((env, format!("--{long}")));
                }
            }
        }
    };
    collect(cmd);
    for sub in cmd.get_subcommands() {
        collect(sub);
    }
    let extra: Vec<String> = sections(cmd)
        .into_iter()
        .filter(|(n, _)| n == "ENVIRONMENT")
        .flat_map(|(_, l)| l)
        .collect();
    if vars.is_empty() && extra.is_empty() {
        return Ok(());
    }
    let mut roff = Roff::new();
    roff.control("SH", ["ENVIRONMENT"]);
    for (env, flag) in vars {
        roff.control("TP", [])
            .text([clap_mangen::roff::bold(env)])
            .text([roman(format!(
                "Same as {flag} (the flag wins when both are given)."
            ))]);
    }
    if !extra.is_empty() {
        roff.control("PP", []).control("nf", []);
        for line in extra {
            roff.text([roman(line)]);
        }
        roff.control("fi", []);
    }
    roff.to_writer(out)
}

/// `.SH X` → `.SS X`: a subcommand's own sections become subsections of its section.
/// Safe on text: roff escapes a leading `.` in text lines.
fn demote_headings(roff: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(roff.len());
    for line in roff.split_inclusive(|b| *b == b'\n') {
        match line.strip_prefix(b".SH ") {
            Some(rest) => {
                out.extend_from_slice(b".SS ");
                out.extend_from_slice(rest);
            }
            None => out.extend_from_slice(line),
        }
    }
    out
}

/// Each roff render starts with the same two lines defining the apostrophe string; a page
/// assembled from several renders needs them once.
fn drop_repeated_preamble(roff: &[u8]) -> Vec<u8> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(roff.len());
    for line in roff.split_inclusive(|b| *b == b'\n') {
        let preamble = line.starts_with(b".ie \\n(.g .ds Aq") || line.starts_with(b".el .ds Aq");
        if !preamble || seen.insert(line) {
            out.extend_from_slice(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Command {
        Command::new("toy")
            .version("1.0 (rev abc)")
            .about("A toy")
            .arg(
                Arg::new("color")
                    .long("color")
                    .global(true)
                    .env("TOY_COLOR"),
            )
            .after_help("EXIT STATUS:\n  2  bad")
            .subcommand(
                Command::new("run")
                    .about("Runs")
                    .arg(Arg::new("fast").long("fast").num_args(0))
                    .after_help("Examples:\n  toy run --fast\n  toy run"),
            )
    }

    fn render(kind: Kind) -> String {
        let mut out = Vec::new();
        generate(kind, toy(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn man_page_holds_each_subcommand_as_a_section() {
        let page = render(Kind::Man);
        assert!(page.contains(".SH \"TOY RUN\"\n.SS SYNOPSIS"), "{page}");
        assert!(page.contains("\\fBtoy run\\fR"), "{page}");
        assert!(page.contains("\\-\\-fast"), "{page}");
        // Global options are documented once, at the top.
        assert_eq!(page.matches("\\-\\-color").count(), 3, "{page}"); // synopsis + options + environment
                                                                      // Notes keep their lines: no-fill mode around them.
        assert!(page.contains(".SS NOTES\n.nf\nExamples:\n"), "{page}");
        assert!(
            page.contains(".SH \"EXIT STATUS\"\n.nf\n  2  bad\n"),
            "{page}"
        );
        assert!(
            page.contains(".SH ENVIRONMENT\n.TP\n\\fBTOY_COLOR\\fR\n"),
            "{page}"
        );
        assert_eq!(
            page.matches(".ds Aq").count(),
            2,
            "one apostrophe preamble:\n{page}"
        );
        assert!(
            !page.contains("toy\\-run(1)"),
            "no references to separate pages:\n{page}"
        );
    }

    #[test]
    fn completions_are_for_the_program_name() {
        assert!(render(Kind::CompleteBash).contains("complete -F _toy"));
        assert!(render(Kind::CompleteZsh).starts_with("#compdef toy"));
        assert!(render(Kind::CompleteFish).contains("complete -c toy"));
    }
}
