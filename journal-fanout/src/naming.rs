//! Names of log groups and streams, from templates over journal fields.
//!
//! The syntax is deliberately small (a general template engine would be a second language to
//! learn and to secure): literal text and `{{ TERM | default(TERM) | ... }}`, where a term is a
//! journal field (`CONTAINER_TAG`), a derived name (`ecs_family`, `ecs_task_id`) or a quoted
//! literal (`"untagged"`). A field that is missing or empty takes the next `default`.
//! Templates are checked when the configuration is read: an unknown derived name or a bad
//! expression is a configuration error naming the template.
//!
//! ```text
//! {{ecs_family | default(CONTAINER_TAG)}}
//! svc/{{CONTAINER_NAME}}
//! ```

use std::fmt;

/// Names computed from other fields rather than read from one.
pub const DERIVED: [&str; 2] = ["ecs_family", "ecs_task_id"];

/// Journal fields `ecs_family` and `ecs_task_id` are derived from.
pub const TASK_FIELD: &str = "CONTAINER_TASK";
/// Written by log-proxy from the ECS agent's `com.amazonaws.ecs.task-definition-family` label.
pub const FAMILY_FIELD: &str = "CONTAINER_TASK_FAMILY";
pub const NAME_FIELD: &str = "CONTAINER_NAME";

#[derive(Debug, Clone, PartialEq)]
enum Term {
    /// Index into the field list the reader extracts (see [`Fields`]).
    Field(usize),
    EcsFamily,
    EcsTaskId,
    Literal(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    /// The first term that has a non-empty value.
    Expr(Vec<Term>),
}

/// A checked template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// The journal fields templates and routes read, by name; each gets an index the reader
/// fills in ([`Values`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields {
    names: Vec<String>,
}

impl Fields {
    /// The index of `name`, added if new.
    pub fn index(&mut self, name: &str) -> usize {
        match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.names.push(name.to_string());
                self.names.len() - 1
            }
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}

/// The values of [`Fields`] for one entry (`None`: absent).
pub type Values = [Option<Vec<u8>>];

/// Why a template was refused.
#[derive(Debug, PartialEq)]
pub struct TemplateError(String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

impl Template {
    /// Parse `source`, registering the fields it reads in `fields`.
    pub fn parse(source: &str, fields: &mut Fields) -> Result<Template, TemplateError> {
        let err = |why: String| TemplateError(format!("template {source:?}: {why}"));
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| err("`{{` without a closing `}}`".into()))?;
            parts.push(Part::Expr(
                parse_expr(&after[..close], fields).map_err(err)?,
            ));
            rest = &after[close + 2..];
        }
        if rest.contains("}}") {
            return Err(err("`}}` without an opening `{{`".into()));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if !parts.iter().any(|p| matches!(p, Part::Expr(_))) {
            return Err(err(
                "names no field: every entry would get the same name (write e.g. \
                 {{CONTAINER_TAG}})"
                    .into(),
            ));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    /// A template that is just `{{FIELD}}`.
    pub fn field(name: &str, fields: &mut Fields) -> Template {
        Template {
            source: format!("{{{{{name}}}}}"),
            parts: vec![Part::Expr(vec![Term::Field(fields.index(name))])],
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The name for an entry, or `None` when an expression has no value (every term missing
    /// or empty): the entry has no name under this template.
    pub fn render(&self, fields: &Fields, values: &Values) -> Option<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Expr(terms) => {
                    // A plain field is copied straight in (the common case, once per entry).
                    let done = terms.iter().any(|t| match t {
                        Term::Field(i) => match values.get(*i).and_then(|v| v.as_deref()) {
                            Some(v) if !v.is_empty() => {
                                out.push_str(&crate::event::utf8_lossy(v));
                                true
                            }
                            _ => false,
                        },
                        t => match term_value(t, fields, values) {
                            Some(v) => {
                                out.push_str(&v);
                                true
                            }
                            None => false,
                        },
                    });
                    if !done {
                        return None;
                    }
                }
            }
        }
        Some(out)
    }
}

fn term_value(t: &Term, fields: &Fields, values: &Values) -> Option<String> {
    let field = |i: usize| {
        values
            .get(i)
            .and_then(|v| v.as_deref())
            .filter(|v| !v.is_empty())
            .map(|v| crate::event::utf8_lossy(v).into_owned())
    };
    let named = |name: &str| fields.position(name).and_then(field);
    match t {
        Term::Field(i) => field(*i),
        Term::Literal(s) => (!s.is_empty()).then(|| s.clone()),
        Term::EcsFamily => named(FAMILY_FIELD)
            .or_else(|| family_from_task(&named(TASK_FIELD)?, named(NAME_FIELD).as_deref())),
        Term::EcsTaskId => named(TASK_FIELD).map(|arn| task_id(&arn).to_string()),
    }
}

/// The task definition family of an ECS task: from a task-definition ARN
/// (`…:task-definition/FAMILY:REV`), else from the container name the ECS agent gives
/// (`ecs-FAMILY-REV-NAME-HEX`; the first `-REV-` with only digits ends the family).
pub fn family_from_task(task: &str, container_name: Option<&str>) -> Option<String> {
    if let Some((_, def)) = task.split_once(":task-definition/") {
        let family = def.rsplit_once(':').map_or(def, |(f, _)| f);
        return (!family.is_empty()).then(|| family.to_string());
    }
    let rest = container_name?.strip_prefix("ecs-")?;
    let pieces: Vec<&str> = rest.split('-').collect();
    // FAMILY needs at least one piece, then REV (digits), then the container's name.
    for i in 1..pieces.len().saturating_sub(1) {
        if !pieces[i].is_empty() && pieces[i].bytes().all(|b| b.is_ascii_digit()) {
            return Some(pieces[..i].join("-"));
        }
    }
    None
}

/// The last part of a task ARN (`arn:aws:ecs:r:a:task/cluster/ID` → `ID`).
pub fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

fn parse_expr(expr: &str, fields: &mut Fields) -> Result<Vec<Term>, String> {
    let mut terms = Vec::new();
    for (i, piece) in expr.split('|').enumerate() {
        let piece = piece.trim();
        let arg = if i == 0 {
            piece
        } else {
            piece
                .strip_prefix("default(")
                .and_then(|p| p.strip_suffix(')'))
                .ok_or_else(|| {
                    format!(
                        "`{piece}`: only `default(FIELD)` or `default(\"text\")` may follow `|`"
                    )
                })?
                .trim()
        };
        terms.push(parse_term(arg, fields)?);
    }
    Ok(terms)
}

fn parse_term(t: &str, fields: &mut Fields) -> Result<Term, String> {
    if t.is_empty() {
        return Err("an empty `{{}}`: name a journal field, e.g. {{CONTAINER_TAG}}".into());
    }
    if let Some(lit) = t.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        return Ok(Term::Literal(lit.to_string()));
    }
    match t {
        "ecs_family" => {
            for f in [FAMILY_FIELD, TASK_FIELD, NAME_FIELD] {
                fields.index(f);
            }
            return Ok(Term::EcsFamily);
        }
        "ecs_task_id" => {
            fields.index(TASK_FIELD);
            return Ok(Term::EcsTaskId);
        }
        _ => {}
    }
    if is_field_name(t) {
        return Ok(Term::Field(fields.index(t)));
    }
    if t.starts_with('.') {
        return Err(format!(
            "`{t}` is Go template syntax; write a journal field such as {{{{CONTAINER_NAME}}}}"
        ));
    }
    let lower = t.to_ascii_lowercase();
    let hint = DERIVED
        .iter()
        .find(|d| strsim_close(d, &lower))
        .map(|d| format!("did you mean {d}?"))
        .unwrap_or_else(|| {
            format!(
                "journal fields are upper case (e.g. {}); derived names: {}",
                t.to_ascii_uppercase(),
                DERIVED.join(", ")
            )
        });
    Err(format!("unknown name `{t}`: {hint}"))
}

/// A journal field name as journald accepts it: upper case letters, digits and `_`, not
/// starting with a digit.
pub fn is_field_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Close enough to be a typo: at most two single-character edits.
fn strsim_close(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()] <= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, vals: &[(&str, &str)]) -> Option<String> {
        let mut f = Fields::default();
        let t = Template::parse(src, &mut f).unwrap();
        let values: Vec<Option<Vec<u8>>> = f
            .names()
            .iter()
            .map(|n| {
                vals.iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.as_bytes().to_vec())
            })
            .collect();
        t.render(&f, &values)
    }

    #[test]
    fn fields_defaults_and_literals() {
        assert_eq!(
            render("{{CONTAINER_TAG}}", &[("CONTAINER_TAG", "api")]).as_deref(),
            Some("api")
        );
        assert_eq!(render("{{CONTAINER_TAG}}", &[]), None);
        assert_eq!(
            render("{{ A | default(B) }}", &[("A", ""), ("B", "b")]).as_deref(),
            Some("b")
        );
        assert_eq!(
            render("svc/{{A | default(\"none\")}}-x", &[]).as_deref(),
            Some("svc/none-x")
        );
    }

    #[test]
    fn ecs_family_from_label_field_task_definition_or_agent_name() {
        let t = "{{ecs_family | default(CONTAINER_TAG)}}";
        assert_eq!(
            render(t, &[(FAMILY_FIELD, "payments"), (TASK_FIELD, "arn:x")]).as_deref(),
            Some("payments")
        );
        assert_eq!(
            render(
                t,
                &[(
                    TASK_FIELD,
                    "arn:aws:ecs:us-east-1:1:task-definition/checkout-api:7"
                )]
            )
            .as_deref(),
            Some("checkout-api")
        );
        assert_eq!(
            render(
                t,
                &[
                    (TASK_FIELD, "arn:aws:ecs:us-east-1:1:task/c/abc"),
                    (NAME_FIELD, "ecs-checkout-api-12-web-c0ffee")
                ]
            )
            .as_deref(),
            Some("checkout-api")
        );
        // Not an ECS task: the default.
        assert_eq!(
            render(t, &[(NAME_FIELD, "ecs-x-1-y"), ("CONTAINER_TAG", "0123")]).as_deref(),
            Some("0123")
        );
        assert_eq!(
            render(
                "{{ecs_task_id}}",
                &[(TASK_FIELD, "arn:aws:ecs:r:1:task/c/abc")]
            )
            .as_deref(),
            Some("abc")
        );
    }

    #[test]
    fn bad_templates_say_why() {
        let mut f = Fields::default();
        let e = |s| Template::parse(s, &mut Fields::default()).unwrap_err().0;
        assert!(e("{{ecs_famliy}}").contains("did you mean ecs_family?"));
        assert!(e("{{container_name}}").contains("CONTAINER_NAME"));
        assert!(e("{{.TaskShort}}").contains("Go template"));
        assert!(e("{{A | upper}}").contains("only `default(FIELD)`"));
        assert!(e("{{A").contains("without a closing"));
        assert!(e("fixed").contains("names no field"));
        assert!(Template::parse("{{A}}", &mut f).is_ok());
    }
}
