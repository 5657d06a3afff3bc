//! The rate-limit policy: per-service budgets in lines and bytes from a TOML file
//! (`--policy`), chosen once per container from its Docker metadata.
//!
//! ```toml
//! [defaults]
//! lines = 500
//! bytes = "4MiB"
//! interval = "5s"
//! errors = "separate"
//!
//! [[rule]]
//! name = "batch-jobs"
//! match.image = "registry.example.com/batch/*"
//! lines = 5000
//! bytes = "20MiB"
//! ```
//!
//! Parsing and matching are a pure function of (file, container metadata) → budget: no
//! sockets, no clock. Rules are tried in order; the first whose matchers all match wins; a
//! container's own `log-proxy.rate-limit` label wins over the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use serde::Deserialize;

use crate::docker::Meta;
use crate::limiter::{Errors, Limit};

/// The ECS agent's label naming a task's family (`ecs_family` is shorthand for it).
pub const ECS_FAMILY_LABEL: &str = "com.amazonaws.ecs.task-definition-family";
/// Where `--policy` looks when not given.
pub const DEFAULT_PATH: &str = "/etc/log-proxy/policy.toml";

/// A parsed, checked policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub defaults: Limit,
    pub rules: Vec<Rule>,
    /// Where it was read from (`None`: the flags alone).
    pub source: Option<PathBuf>,
}

/// One `[[rule]]`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: Arc<str>,
    matchers: Vec<Matcher>,
    pub limit: Limit,
}

#[derive(Debug, Clone)]
enum Matcher {
    Name(GlobMatcher),
    Image(GlobMatcher),
    Label(String, GlobMatcher),
}

impl Matcher {
    fn matches(&self, m: &Meta) -> bool {
        match self {
            Matcher::Name(g) => g.is_match(&m.name),
            Matcher::Image(g) => g.is_match(&m.image_name),
            Matcher::Label(k, g) => m.labels.get(k).is_some_and(|v| g.is_match(v)),
        }
    }

    /// Matches every container (`*`), so rules after it are never reached.
    fn is_catch_all(&self) -> bool {
        let glob = match self {
            Matcher::Name(g) | Matcher::Image(g) => g,
            // A container may lack the label: never a catch-all.
            Matcher::Label(..) => return false,
        };
        glob.glob().glob() == "*"
    }
}

/// The budget a container gets and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Assigned {
    pub limit: Limit,
    /// The rule that chose it: a rule's name, `label` for the container's own label, or
    /// `None` for the defaults.
    pub rule: Option<Arc<str>>,
}

impl Assigned {
    /// The rule's name for metrics: `default` when none chose it.
    pub fn rule_label(&self) -> &str {
        self.rule.as_deref().unwrap_or("default")
    }
}

impl Policy {
    /// The flags alone: one budget for every container (the label still wins).
    pub fn flags_only(defaults: Limit) -> Policy {
        Policy {
            defaults,
            rules: Vec::new(),
            source: None,
        }
    }

    /// Read and check `path`. `flags` fills what the file's `[defaults]` leaves out; `over`
    /// holds the flags given explicitly, which win over the file. Warnings (rules never
    /// reached) come back with the policy; anything else wrong is an error naming the file.
    pub fn load(
        path: &Path,
        flags: Limit,
        over: Overrides,
    ) -> Result<(Policy, Vec<String>), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the policy {}: {e}", path.display()))?;
        let (mut p, warnings) = Policy::parse(&text, flags, over)
            .map_err(|e| format!("policy {}: {e}", path.display()))?;
        p.source = Some(path.to_path_buf());
        Ok((p, warnings))
    }

    /// Parse policy text (see [`Policy::load`]).
    pub fn parse(
        text: &str,
        flags: Limit,
        over: Overrides,
    ) -> Result<(Policy, Vec<String>), String> {
        let file: File = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
        let mut defaults = file
            .defaults
            .unwrap_or_default()
            .apply(flags, "[defaults]")?;
        if let Some(lines) = over.lines {
            defaults.lines = lines;
        }
        if let Some(interval) = over.interval {
            defaults.interval = interval;
        }
        let mut rules = Vec::new();
        let mut warnings = Vec::new();
        let mut catch_all: Option<Arc<str>> = None;
        for (i, r) in file.rules.into_iter().enumerate() {
            let at = format!("[[rule]] #{}", i + 1);
            let name = r.name.trim();
            if name.is_empty() {
                return Err(format!(
                    "{at} has no name: give it name = \"...\" (it shows in notices and metrics)"
                ));
            }
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(format!(
                    "{at}: name {name:?} may hold only letters, digits, '-', '_' and '.'"
                ));
            }
            if name == "default" || name == "label" {
                return Err(format!(
                    "{at}: the name {name:?} is reserved (it names budgets no rule chose)"
                ));
            }
            if rules.iter().any(|x: &Rule| &*x.name == name) {
                return Err(format!(
                    "{at}: a rule named {name:?} comes earlier: names must be unique"
                ));
            }
            let at = format!("rule {name:?}");
            let matchers = r.matchers.compile(&at)?;
            let limit = Section {
                lines: r.lines,
                bytes: r.bytes,
                interval: r.interval,
                errors: r.errors,
            }
            .apply(defaults, &at)?;
            if let Some(earlier) = &catch_all {
                warnings.push(format!(
                    "{at} is never used: rule {earlier:?} before it matches every container"
                ));
            }
            let rule = Rule {
                name: name.into(),
                matchers,
                limit,
            };
            if catch_all.is_none() && rule.matchers.iter().all(Matcher::is_catch_all) {
                catch_all = Some(rule.name.clone());
            }
            rules.push(rule);
        }
        Ok((
            Policy {
                defaults,
                rules,
                source: None,
            },
            warnings,
        ))
    }

    /// The budget for a container: its label, else the first matching rule, else the
    /// defaults. Without metadata (Docker unreachable) only rules without matchers apply.
    pub fn assign(&self, meta: Option<&Meta>) -> Assigned {
        if let Some(Ok(l)) = meta.and_then(|m| m.limit.as_ref()) {
            return Assigned {
                limit: *l,
                rule: Some("label".into()),
            };
        }
        for r in &self.rules {
            let hit = match meta {
                Some(m) => r.matchers.iter().all(|x| x.matches(m)),
                None => r.matchers.is_empty(),
            };
            if hit {
                return Assigned {
                    limit: r.limit,
                    rule: Some(r.name.clone()),
                };
            }
        }
        Assigned {
            limit: self.defaults,
            rule: None,
        }
    }
}

/// Flags given explicitly (command line or environment): they win over the file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    pub lines: Option<u32>,
    pub interval: Option<Duration>,
}

/// toml's errors span lines (a caret under the spot); the operator gets one.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| matches!(c, '|' | '^' | ' ')))
        .filter(|l| !l.starts_with(|c: char| c.is_ascii_digit()) || !l.contains(" | "))
        .collect::<Vec<_>>()
        .join(": ")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    defaults: Option<Section>,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    lines: Option<u32>,
    bytes: Option<Size>,
    interval: Option<String>,
    errors: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSection {
    name: String,
    #[serde(rename = "match", default)]
    matchers: MatchSection,
    lines: Option<u32>,
    bytes: Option<Size>,
    interval: Option<String>,
    errors: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchSection {
    name: Option<String>,
    image: Option<String>,
    #[serde(default)]
    label: BTreeMap<String, String>,
    ecs_family: Option<String>,
}

/// `4194304` or `"4MiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Number(u64),
    Text(String),
}

impl Size {
    fn bytes(&self, at: &str) -> Result<u64, String> {
        match self {
            Size::Number(n) => Ok(*n),
            Size::Text(t) => parse_size::parse_size(t.trim())
                .map_err(|e| format!("{at}: bytes = {t:?} is not a size like \"4MiB\" ({e})")),
        }
    }
}

impl Section {
    /// This section's settings over `base`.
    fn apply(self, base: Limit, at: &str) -> Result<Limit, String> {
        let mut l = base;
        if let Some(n) = self.lines {
            l.lines = n;
        }
        if let Some(b) = &self.bytes {
            l.bytes = b.bytes(at)?;
        }
        if let Some(i) = &self.interval {
            l.interval = humantime::parse_duration(i.trim()).map_err(|e| {
                format!("{at}: interval = {i:?} is not a duration like \"5s\" ({e})")
            })?;
            if l.interval.is_zero() {
                return Err(format!("{at}: interval must be longer than 0"));
            }
        }
        if let Some(e) = &self.errors {
            l.errors = e.parse::<Errors>().map_err(|e| format!("{at}: {e}"))?;
        }
        Ok(l)
    }
}

impl MatchSection {
    fn compile(self, at: &str) -> Result<Vec<Matcher>, String> {
        let glob = |what: &str, pattern: &str| -> Result<GlobMatcher, String> {
            Glob::new(pattern)
                .map(|g| g.compile_matcher())
                .map_err(|e| format!("{at}: match.{what} = {pattern:?} is not a glob ({e})"))
        };
        let mut out = Vec::new();
        if let Some(p) = &self.name {
            out.push(Matcher::Name(glob("name", p)?));
        }
        if let Some(p) = &self.image {
            out.push(Matcher::Image(glob("image", p)?));
        }
        if let Some(p) = &self.ecs_family {
            out.push(Matcher::Label(
                ECS_FAMILY_LABEL.to_string(),
                glob("ecs_family", p)?,
            ));
        }
        for (k, p) in &self.label {
            out.push(Matcher::Label(k.clone(), glob(&format!("label.{k:?}"), p)?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> Limit {
        Limit::lines(500, Duration::from_secs(5))
    }

    fn meta(name: &str, image: &str, labels: &[(&str, &str)]) -> Meta {
        Meta {
            name: name.into(),
            image_name: image.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    const EXAMPLE: &str = r#"
[defaults]
lines = 500
bytes = "4MiB"
interval = "5s"
errors = "separate"

[[rule]]
name = "batch-jobs"
match.image = "registry.example.com/batch/*"
lines = 5000
bytes = "20MiB"

[[rule]]
name = "payments"
match.label."com.amazonaws.ecs.task-definition-family" = "payments-*"
lines = 2000

[[rule]]
name = "debug-sidecars"
match.name = "*-debug"
lines = 50
"#;

    #[test]
    fn the_documented_example_assigns_by_image_label_and_name() {
        let (p, warnings) = Policy::parse(EXAMPLE, flags(), Overrides::default()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let a = p.assign(Some(&meta("job1", "registry.example.com/batch/etl:3", &[])));
        assert_eq!(a.rule.as_deref(), Some("batch-jobs"));
        assert_eq!(a.limit.to_string(), "5000 lines / 20 MiB per 5s");
        let a = p.assign(Some(&meta(
            "api",
            "x",
            &[(ECS_FAMILY_LABEL, "payments-api")],
        )));
        assert_eq!(a.rule.as_deref(), Some("payments"));
        assert_eq!((a.limit.lines, a.limit.bytes), (2000, 4 << 20));
        let a = p.assign(Some(&meta("web-debug", "x", &[])));
        assert_eq!(a.rule.as_deref(), Some("debug-sidecars"));
        let a = p.assign(Some(&meta("web", "x", &[])));
        assert_eq!((a.rule, a.limit.lines), (None, 500));
        // No metadata: the defaults.
        assert_eq!(p.assign(None).rule, None);
    }

    #[test]
    fn the_label_wins_over_the_file() {
        let (p, _) = Policy::parse(EXAMPLE, flags(), Overrides::default()).unwrap();
        let mut m = meta("web-debug", "x", &[]);
        m.limit = Some("7/1s/1KiB".parse());
        let a = p.assign(Some(&m));
        assert_eq!(a.rule.as_deref(), Some("label"));
        assert_eq!(a.limit.to_string(), "7 lines / 1 KiB per 1s");
    }

    #[test]
    fn explicit_flags_win_over_the_file_and_fill_what_it_leaves_out() {
        let over = Overrides {
            lines: Some(42),
            interval: None,
        };
        let (p, _) = Policy::parse("[defaults]\nlines = 7\n", flags(), over).unwrap();
        assert_eq!(p.defaults.lines, 42);
        assert_eq!(p.defaults.interval, Duration::from_secs(5));
        let (p, _) = Policy::parse("", flags(), Overrides::default()).unwrap();
        assert_eq!(p.defaults, flags());
    }

    #[test]
    fn mistakes_are_errors_that_name_the_place() {
        let err = |t: &str| Policy::parse(t, flags(), Overrides::default()).unwrap_err();
        assert!(
            err("[defaults]\nline = 5\n").contains("unknown field `line`"),
            "{}",
            err("[defaults]\nline = 5\n")
        );
        assert!(err("[[rule]]\nname = \"a\"\nmatch.nme = \"x\"\n").contains("unknown field `nme`"));
        assert_eq!(
            err("[[rule]]\nname = \"a\"\nmatch.name = \"[x\"\n"),
            err("[[rule]]\nname = \"a\"\nmatch.name = \"[x\"\n")
        );
        assert!(err("[[rule]]\nname = \"a\"\nmatch.name = \"[x\"\n")
            .starts_with("rule \"a\": match.name = \"[x\" is not a glob"));
        assert!(err("[defaults]\nbytes = \"lots\"\n")
            .starts_with("[defaults]: bytes = \"lots\" is not a size"));
        assert!(err("[[rule]]\nname = \"a\"\n[[rule]]\nname = \"a\"\n")
            .contains("a rule named \"a\" comes earlier"));
        assert!(err("[defaults]\nerrors = \"some\"\n")
            .contains("use \"separate\", \"shared\" or \"exempt\""));
        assert!(err("[defaults]\ninterval = \"soon\"\n")
            .starts_with("[defaults]: interval = \"soon\" is not a duration"));
        assert!(!err("[defaults\n").contains('\n'), "one line");
    }

    #[test]
    fn a_rule_after_a_catch_all_is_a_warning() {
        let (p, w) = Policy::parse(
            "[[rule]]\nname = \"all\"\nmatch.name = \"*\"\nlines = 1\n[[rule]]\nname = \"late\"\nmatch.image = \"x\"\n",
            flags(),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(p.rules.len(), 2);
        assert_eq!(
            w,
            vec![
                "rule \"late\" is never used: rule \"all\" before it matches every container"
                    .to_string()
            ]
        );
    }
}
