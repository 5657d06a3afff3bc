//! Turning events into text: Handlebars templates with colour helpers, `--raw`, `--json`.

use anyhow::{anyhow, Result};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    ScopedJson,
};
use serde_json::Value;

use crate::event::{decode, record, template_context, RawEvent};
use crate::filter::Filter;

/// The Go tool's default, in Handlebars: task, time, coloured level, message.
pub const DEFAULT_TEMPLATE: &str =
    "[ {{uniquecolor task_short}} ] {{time_short}} {{colorlevel level}} - {{message}}";

/// The default when several services are printed: the service (group) before the task.
pub const MULTI_TEMPLATE: &str = "[ {{uniquecolor group}} {{uniquecolor task_short}} ] {{time_short}} {{colorlevel level}} - {{message}}";

/// Every field a template may name. `info.*` and `data.*` are the event's own and open.
pub const FIELDS: &[&str] = &[
    "group",
    "stream",
    "id",
    "ingest_time",
    "creation_time",
    "level",
    "time",
    "info",
    "message",
    "data",
    "data_flat",
    "task_short",
    "time_short",
    "zone",
];

/// `--verbose`: the default plus every data field as `key=value` and any `info.errors`.
pub const VERBOSE_TEMPLATE: &str = "[ {{uniquecolor task_short}} ] {{time_short}} {{zone}} {{colorlevel level}}\
{{#each data_flat}} {{@key}}={{this}}{{/each}}\
{{#if info.errors}} errors=[{{#each info.errors}}{{#unless @first}}, {{/unless}}{{json this}}{{/each}}]{{/if}} - {{message}}";

/// How each event is printed.
pub enum Style {
    Template(String),
    /// Pretty JSON of the event record.
    Raw,
    /// One compact JSON object per line.
    Json,
}

pub struct Formatter {
    style: Kind,
    filter: Filter,
}

enum Kind {
    Template {
        hb: Box<Handlebars<'static>>,
        want_flat: bool,
        want_zone: bool,
    },
    Raw,
    Json,
}

const NAME: &str = "event";

impl Formatter {
    /// Compile the style; a template that does not parse is an error naming the position.
    pub fn new(style: Style, color: bool) -> Result<Formatter> {
        let style = match style {
            Style::Raw => Kind::Raw,
            Style::Json => Kind::Json,
            Style::Template(src) => {
                let mut hb = Handlebars::new();
                // Terminal output, not HTML: never escape.
                hb.register_escape_fn(handlebars::no_escape);
                register_helpers(&mut hb, color);
                go_style_check(&src)?;
                hb.register_template_string(NAME, &src).map_err(|e| {
                    let at = match e.pos() {
                        Some((line, col)) => format!(" at line {line}, column {col}"),
                        None => String::new(),
                    };
                    anyhow!(
                        "the --format template does not parse{at}: {}; template: {src:?}; \
                         fields: group stream id ingest_time creation_time level time info.host \
                         message data data_flat task_short time_short; helpers: red green yellow \
                         blue magenta cyan white uniquecolor colorlevel",
                        e.reason()
                    )
                })?;
                check_fields(&mut hb)?;
                Kind::Template {
                    want_flat: src.contains("data_flat"),
                    want_zone: src.contains("zone"),
                    hb: Box::new(hb),
                }
            }
        };
        Ok(Formatter {
            style,
            filter: Filter::default(),
        })
    }

    /// Print only the events `filter` keeps.
    pub fn with_filter(mut self, filter: Filter) -> Formatter {
        self.filter = filter;
        self
    }

    /// Append the event's text and a newline to `out`.
    pub fn write(&self, e: &RawEvent, out: &mut Vec<u8>) -> Result<()> {
        let d = decode(e);
        if !self.filter.is_empty() && !self.filter.keeps(&e.message, &d) {
            return Ok(());
        }
        let time = d.time;
        let r = record(e, d);
        match &self.style {
            Kind::Json => serde_json::to_writer(&mut *out, &r)?,
            Kind::Raw => serde_json::to_writer_pretty(&mut *out, &r)?,
            Kind::Template {
                hb,
                want_flat,
                want_zone,
            } => {
                let m = template_context(r, &time, *want_flat, *want_zone);
                hb.render_to_write(NAME, &Value::Object(m), &mut *out)
                    .map_err(|err| anyhow!("cannot render the --format template: {err}"))?;
            }
        }
        out.push(b'\n');
        Ok(())
    }
}

/// `{{.TaskShort}}` is the Go tool's template syntax: say what to write here instead of
/// letting Handlebars print nothing.
fn go_style_check(src: &str) -> Result<()> {
    let re = regex_lite::Regex::new(r"\{\{[^}]*?\.([A-Z][A-Za-z]*)").expect("valid regex");
    if let Some(c) = re.captures(src) {
        let go = &c[1];
        let mut snake = String::new();
        for (i, ch) in go.chars().enumerate() {
            if ch.is_ascii_uppercase() && i > 0 {
                snake.push('_');
            }
            snake.push(ch.to_ascii_lowercase());
        }
        anyhow::bail!(
            "the --format template uses Go syntax {{{{.{go}}}}}: write `{{{{{snake}}}}}` (Handlebars; fields: {})",
            FIELDS.join(" ")
        );
    }
    Ok(())
}

/// Render the template once, strictly, against a sample with every field, so a misspelt
/// field fails at start naming the closest one instead of printing empty text.
/// Paths under `info.` and `data.` are the events' own and always allowed.
fn check_fields(hb: &mut Handlebars<'static>) -> Result<()> {
    let mut sample = serde_json::Map::new();
    for f in FIELDS {
        let v = match *f {
            "info" | "data" | "data_flat" => Value::Object(Default::default()),
            _ => Value::String(String::new()),
        };
        sample.insert(f.to_string(), v);
    }
    let mut sample = Value::Object(sample);
    hb.set_strict_mode(true);
    let result = (|| {
        // Each round allows one open path; a template names few of them.
        for _ in 0..64 {
            let err = match hb.render(NAME, &sample) {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let path = match err.reason() {
                RenderErrorReason::MissingVariable(Some(p)) => p.clone(),
                // Helpers' own errors depend on values, not names: not ours to judge here.
                _ => return Ok(()),
            };
            let path = path.trim_start_matches("this.").to_string();
            let mut parts = path.split('.');
            let head = parts.next().unwrap_or_default();
            if matches!(head, "info" | "data" | "data_flat") && path.contains('.') {
                let mut at = &mut sample[head];
                let rest: Vec<&str> = parts.collect();
                for (i, p) in rest.iter().enumerate() {
                    let last = i + 1 == rest.len();
                    let obj = at.as_object_mut().expect("sample paths are objects");
                    at = obj.entry(p.to_string()).or_insert_with(|| {
                        if last {
                            Value::String(String::new())
                        } else {
                            Value::Object(Default::default())
                        }
                    });
                    if !last && !at.is_object() {
                        *at = Value::Object(Default::default());
                    }
                }
                continue;
            }
            let hint = match crate::suggest::closest(head, FIELDS.iter().copied(), 1).first() {
                Some(c) => format!("did you mean `{{{{{c}}}}}`?"),
                None => format!("fields: {}", FIELDS.join(" ")),
            };
            anyhow::bail!("the --format template names an unknown field {path:?}: {hint}");
        }
        Ok(())
    })();
    hb.set_strict_mode(false);
    result
}

const RED: &str = "31";
const GREEN: &str = "32";
const YELLOW: &str = "33";
const BLUE: &str = "34";
const MAGENTA: &str = "35";
const CYAN: &str = "36";
const WHITE: &str = "37";

/// `uniquecolor` picks from these; red and yellow are left to levels.
const UNIQUE: &[&str] = &[
    BLUE, CYAN, GREEN, MAGENTA, "94", "96", "92", "95", "34;1", "36;1", "32;1", "35;1",
];

fn register_helpers(hb: &mut Handlebars<'static>, on: bool) {
    for (name, code) in [
        ("red", RED),
        ("green", GREEN),
        ("yellow", YELLOW),
        ("blue", BLUE),
        ("magenta", MAGENTA),
        ("cyan", CYAN),
        ("white", WHITE),
    ] {
        hb.register_helper(
            name,
            Box::new(Paint {
                pick: Pick::Fixed(code),
                on,
            }),
        );
    }
    hb.register_helper(
        "uniquecolor",
        Box::new(Paint {
            pick: Pick::Unique,
            on,
        }),
    );
    hb.register_helper(
        "colorlevel",
        Box::new(Paint {
            pick: Pick::Level,
            on,
        }),
    );
    hb.register_helper("json", Box::new(JsonHelper));
}

enum Pick {
    Fixed(&'static str),
    /// Same text, same colour: a stable hash of the text, so also across runs.
    Unique,
    /// ERROR/CRIT/ALERT/EMERG red, WARN yellow, others plain.
    Level,
}

struct Paint {
    pick: Pick,
    on: bool,
}

impl HelperDef for Paint {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        strict_params(h, r)?;
        let text = h
            .params()
            .iter()
            .map(|p| plain(p.value()))
            .collect::<Vec<_>>()
            .join(" ");
        let code = match self.pick {
            Pick::Fixed(c) => Some(c),
            Pick::Unique => Some(UNIQUE[(fnv1a(&text) % UNIQUE.len() as u64) as usize]),
            Pick::Level => level_color(&text),
        };
        let painted = match code {
            Some(c) if self.on => format!("\x1b[{c}m{text}\x1b[0m"),
            _ => text,
        };
        Ok(ScopedJson::Derived(Value::String(painted)))
    }
}

/// `{{json x}}`: compact JSON of any value (used by the verbose template for errors).
struct JsonHelper;

impl HelperDef for JsonHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        strict_params(h, r)?;
        let v = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("json", 0))?;
        Ok(ScopedJson::Derived(Value::String(v.value().to_string())))
    }
}

/// Handlebars' strict mode leaves helper parameters alone; the start-up field check
/// (the only strict render) needs them checked too.
fn strict_params(h: &Helper<'_>, r: &Handlebars<'_>) -> Result<(), RenderError> {
    if r.strict_mode() {
        if let Some(p) = h.params().iter().find(|p| p.is_value_missing()) {
            return Err(RenderErrorReason::MissingVariable(p.relative_path().cloned()).into());
        }
    }
    Ok(())
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn level_color(level: &str) -> Option<&'static str> {
    match level.trim().to_ascii_uppercase().as_str() {
        "ERROR" | "ERR" | "CRIT" | "CRITICAL" | "FATAL" | "ALERT" | "EMERG" | "EMERGENCY"
        | "PANIC" => Some(RED),
        "WARN" | "WARNING" => Some(YELLOW),
        _ => None,
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(stream: &str, msg: &str) -> RawEvent {
        RawEvent {
            group: "svc".into(),
            stream: stream.into(),
            id: "42".into(),
            timestamp: 1_495_378_800_000,
            ingestion: 1_495_378_800_250,
            message: msg.into(),
        }
    }

    fn render(tpl: &str, color: bool, e: &RawEvent) -> String {
        let f = Formatter::new(Style::Template(tpl.into()), color).unwrap();
        let mut out = Vec::new();
        f.write(e, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    const JSON_EVENT: &str = r#"{"level":"ERROR","time":"2017-05-21T15:00:00Z","info":{"host":"h1","errors":[{"type":"E","error":"boom"}]},"data":{"req":{"id":7},"path":"/x"},"message":"failed <b>"}"#;

    #[test]
    fn fields_render_without_html_escaping() {
        let e = ev("0f5c3b2a-1d2e-4f60-8a9b-0c1d2e3f4a5b", JSON_EVENT);
        let out = render(
            "{{group}}|{{stream}}|{{id}}|{{ingest_time}}|{{creation_time}}|{{level}}|{{time}}|{{info.host}}|{{message}}|{{data.req.id}}|{{task_short}}",
            false,
            &e,
        );
        assert_eq!(
            out,
            "svc|0f5c3b2a-1d2e-4f60-8a9b-0c1d2e3f4a5b|42|2017-05-21T15:00:00.250000Z|2017-05-21T15:00:00.000000Z|ERROR|2017-05-21T15:00:00.000000Z|h1|failed <b>|7|0f5c3b2a\n"
        );
    }

    #[test]
    fn helpers_colour_only_when_on() {
        let e = ev("s", JSON_EVENT);
        for (helper, code) in [
            ("red", "31"),
            ("green", "32"),
            ("yellow", "33"),
            ("blue", "34"),
            ("magenta", "35"),
            ("cyan", "36"),
            ("white", "37"),
        ] {
            let tpl = format!("{{{{{helper} message}}}}");
            assert_eq!(
                render(&tpl, true, &e),
                format!("\x1b[{code}mfailed <b>\x1b[0m\n")
            );
            assert_eq!(render(&tpl, false, &e), "failed <b>\n");
        }
    }

    #[test]
    fn colorlevel_by_severity() {
        for (level, want) in [
            ("ERROR", "\x1b[31mERROR\x1b[0m"),
            ("CRIT", "\x1b[31mCRIT\x1b[0m"),
            ("ALERT", "\x1b[31mALERT\x1b[0m"),
            ("EMERG", "\x1b[31mEMERG\x1b[0m"),
            ("WARN", "\x1b[33mWARN\x1b[0m"),
            ("INFO", "INFO"),
            ("DEBUG", "DEBUG"),
        ] {
            let e = ev("s", &format!(r#"{{"level":"{level}","message":"m"}}"#));
            assert_eq!(
                render("{{colorlevel level}}", true, &e),
                format!("{want}\n")
            );
        }
    }

    #[test]
    fn uniquecolor_is_stable_and_varies() {
        let a = render("{{uniquecolor stream}}", true, &ev("task-a", "x"));
        assert_eq!(
            a,
            render("{{uniquecolor stream}}", true, &ev("task-a", "x"))
        );
        let colours: std::collections::HashSet<String> = (0..20)
            .map(|i| render("{{uniquecolor stream}}", true, &ev(&format!("t{i}"), "x")))
            .map(|s| s.split('m').next().unwrap().to_string())
            .collect();
        assert!(colours.len() > 3, "{colours:?}");
    }

    #[test]
    fn verbose_adds_data_flat_and_errors() {
        let e = ev("web-1", JSON_EVENT);
        let out = render(VERBOSE_TEMPLATE, false, &e);
        let t = crate::event::ms_to_utc(1_495_378_800_000);
        let (time, zone) = (crate::event::time_short(&t), crate::event::zone(&t));
        assert_eq!(
            out,
            format!("[ web-1 ] {time} {zone} ERROR path=/x req.id=7 errors=[{{\"error\":\"boom\",\"type\":\"E\"}}] - failed <b>\n")
        );
    }

    #[test]
    fn bad_template_names_the_position() {
        let err = Formatter::new(Style::Template("ok {{#if x}} no close".into()), false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("line 1, column"), "{err}");
        let err = Formatter::new(Style::Template("{{message}\n".into()), false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    fn err_of(tpl: &str) -> String {
        Formatter::new(Style::Template(tpl.into()), false)
            .err()
            .unwrap()
            .to_string()
    }

    #[test]
    fn unknown_fields_fail_at_start_naming_the_closest() {
        assert_eq!(
            err_of("{{time_short}} {{mesage}}"),
            "the --format template names an unknown field \"mesage\": did you mean `{{message}}`?"
        );
        assert_eq!(
            err_of("{{cyan strem}}"),
            "the --format template names an unknown field \"strem\": did you mean `{{stream}}`?"
        );
        // The events' own fields are open.
        for ok in [
            "{{info.host}} {{data.req.id}} {{message}}",
            DEFAULT_TEMPLATE,
            MULTI_TEMPLATE,
            VERBOSE_TEMPLATE,
        ] {
            Formatter::new(Style::Template(ok.into()), false).unwrap();
        }
    }

    #[test]
    fn go_syntax_says_what_to_write() {
        assert!(err_of("{{.TaskShort}} {{.Message}}").starts_with(
            "the --format template uses Go syntax {{.TaskShort}}: write `{{task_short}}`"
        ));
    }

    #[test]
    fn json_and_raw() {
        let e = ev("s", "plain line");
        let f = Formatter::new(Style::Json, true).unwrap();
        let mut out = Vec::new();
        f.write(&e, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["message"], "plain line");
        assert_eq!(v["level"], "INFO");
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        let f = Formatter::new(Style::Raw, true).unwrap();
        let mut out = Vec::new();
        f.write(&e, &mut out).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("\n  \"group\": \"svc\""));
    }
}
