//! The one template engine (tera) for the text formats that are not YAML: Terraform and the
//! Dockerfile. Templates are embedded in the binary; a `templates/` folder next to the spec
//! overrides any of them by the same relative path. Every template runs in the sandbox of
//! [`super::sandbox`]: it sees only the values raydeploy passes in, and all it can do is bounded.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tera::{Tera, Value};

use super::RenderError;
use super::sandbox::{self, Budget, TplProblem};
use crate::spec::diag::{Problem, Problems, Report, Sources};
use crate::spec::node::Loc;
use crate::spec::paths;

/// Embedded templates: (name, text).
pub const EMBEDDED: &[(&str, &str)] = &[
    ("terraform/providers.tf.tera", include_str!("../../templates/terraform/providers.tf.tera")),
    ("terraform/backend.tf.tera", include_str!("../../templates/terraform/backend.tf.tera")),
    ("terraform/main.tf.tera", include_str!("../../templates/terraform/main.tf.tera")),
    ("terraform/outputs.tf.tera", include_str!("../../templates/terraform/outputs.tf.tera")),
    ("Dockerfile.tera", include_str!("../../templates/Dockerfile.tera")),
];

/// Where a template's text came from.
#[derive(Debug, Clone)]
struct Source {
    /// The override file, or `None` for the embedded template.
    path: Option<PathBuf>,
    text: String,
}

/// The template engine of one render: the embedded templates, each replaced by
/// `<spec dir>/templates/<name>` if present, checked and bounded by [`sandbox`].
pub struct Engine {
    tera: Tera,
    budget: Arc<Budget>,
    sources: BTreeMap<String, Source>,
}

impl Engine {
    /// Reads the overrides, parses and checks every template. Every problem found is reported,
    /// located in its template file.
    pub fn new(spec_dir: &Path) -> Result<Engine, RenderError> {
        let mut sources = BTreeMap::new();
        let mut problems = vec![];
        for (name, text) in EMBEDDED {
            // The spec's rule for files next to it (src/spec/paths.rs), with its templates' own
            // bounds: inside `templates/`, at most 256 KiB.
            let path = spec_dir.join(paths::TEMPLATES_DIR).join(name);
            let source = match paths::template_override(spec_dir, name) {
                Ok(Some(text)) => Source { path: Some(path), text },
                Ok(None) => Source { path: None, text: text.to_string() },
                Err(e) => {
                    let (message, help) = (e.message, Some(e.help));
                    problems.push(TplProblem { template: name.to_string(), offset: None, message, help });
                    Source { path: Some(path), text: String::new() }
                }
            };
            sources.insert(name.to_string(), source);
        }
        let mut engine = Engine { tera: Tera::default(), budget: Arc::new(Budget::default()), sources };
        if !problems.is_empty() {
            return Err(engine.report(problems));
        }
        engine.tera.autoescape_on(vec![]);
        let mut tags = BTreeMap::new();
        for (name, src) in &engine.sources {
            let found = match sandbox::scan(name, &src.text) {
                Ok(t) => t,
                Err(p) => {
                    problems.push(p);
                    continue;
                }
            };
            tags.insert(name.clone(), found);
            match tera::Template::new(name, None, &src.text) {
                Ok(t) => {
                    engine.tera.templates.insert(name.clone(), t);
                }
                Err(e) => problems.push(parse_problem(name, &src.text, &e)),
            }
        }
        if !problems.is_empty() {
            return Err(engine.report(problems));
        }
        engine.tera.register_filter("hcl", hcl_filter);
        engine.tera.register_filter("docker_json", docker_json_filter);
        engine.tera.register_filter("sh", sh_filter);
        let sites = sandbox::instrument(&mut engine.tera, &tags).map_err(|p| engine.report(p))?;
        sandbox::install(&mut engine.tera, &sites, &engine.budget);
        Ok(engine)
    }

    /// Renders one template within the sandbox's bounds.
    pub fn render(&self, name: &str, ctx: &tera::Context) -> Result<String, RenderError> {
        self.budget.reset();
        let mut out = Capped(Vec::new());
        if let Err(e) = self.tera.render_to(name, ctx, &mut out) {
            let (site, message) = sandbox::describe(&e);
            let (template, offset) = match site {
                Some(s) => (s.template, s.offset),
                None => (name.to_string(), None),
            };
            return Err(self.report(vec![TplProblem { template, offset, message, help: None }]));
        }
        String::from_utf8(out.0).map_err(|_| {
            self.report(vec![TplProblem {
                template: name.into(),
                offset: None,
                message: "the rendered text is not UTF-8".into(),
                help: None,
            }])
        })
    }

    /// The problems as a report over the template files they concern.
    fn report(&self, problems: Vec<TplProblem>) -> RenderError {
        let mut sources = Sources::default();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut out = Problems::default();
        for p in problems {
            let shown = self.shown(&p.template);
            let text = self.sources.get(&p.template).map(|s| s.text.clone()).unwrap_or_default();
            let loc = p.offset.filter(|o| *o <= text.len()).map(|offset| {
                let i = *index.entry(p.template.clone()).or_insert_with(|| sources.add(shown.clone(), text.clone()));
                let before = &text[..offset];
                let line = before.matches('\n').count() as u32 + 1;
                let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32 + 1;
                Loc { source: i, line, col, offset, len: 0 }
            });
            let path = if loc.is_some() || p.template.is_empty() { String::new() } else { shown.display().to_string() };
            let mut problem = Problem::new(path, p.message);
            problem.help = p.help;
            problem.loc = loc;
            out.push(problem);
        }
        RenderError::Templates(Box::new(Report { problems: out, sources }))
    }

    /// How a template is named to the user: its override file, or the built-in one.
    fn shown(&self, name: &str) -> PathBuf {
        match self.sources.get(name).and_then(|s| s.path.clone()) {
            Some(p) => p,
            None => PathBuf::from(format!("templates/{name} (built in)")),
        }
    }
}

/// A tera parse error, located from the `--> line:col` pest puts in its message.
fn parse_problem(name: &str, text: &str, e: &tera::Error) -> TplProblem {
    let mut msgs = vec![];
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        msgs.push(c.to_string());
        cur = c.source();
    }
    let all = msgs.join("\n");
    let offset = all.split("--> ").nth(1).and_then(|rest| {
        let pos = rest.split_whitespace().next()?;
        let (l, c) = pos.split_once(':')?;
        let (l, c): (usize, usize) = (l.parse().ok()?, c.parse().ok()?);
        let start: usize = text.split_inclusive('\n').take(l - 1).map(str::len).sum();
        let line = text[start..].split('\n').next().unwrap_or("");
        Some(start + line.char_indices().nth(c - 1).map_or(line.len(), |(i, _)| i))
    });
    let expected = all.lines().find_map(|l| l.trim().strip_prefix("= ")).map(str::to_string);
    let message = match expected {
        Some(x) => format!("syntax error: {x}"),
        None => msgs.last().cloned().unwrap_or_default(),
    };
    TplProblem { template: name.into(), offset, message, help: None }
}

/// An output that refuses to grow past [`sandbox::MAX_OUTPUT_BYTES`].
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > sandbox::MAX_OUTPUT_BYTES {
            return Err(std::io::Error::other(format!(
                "the rendered file would be larger than {} MiB",
                sandbox::MAX_OUTPUT_BYTES >> 20
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An HCL quoted string literal: escapes `\`, `"`, control characters, and the template
/// sequences `${` and `%{` so the value is taken literally.
pub fn hcl_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A POSIX shell single-quoted word.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.,:/=+@<>!~".contains(c))
        && !s.contains("<")
        && !s.contains(">")
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn value_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn hcl_filter(v: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    Ok(Value::String(hcl_quote(&value_str(v))))
}

/// A JSON string literal, as Dockerfile exec-form arrays and LABEL values take.
fn docker_json_filter(v: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    Ok(Value::String(serde_json::to_string(&value_str(v)).unwrap_or_default()))
}

fn sh_filter(v: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    Ok(Value::String(sh_quote(&value_str(v))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(hcl_quote(r#"a"b\c${x}%{y}$z"#), r#""a\"b\\c$${x}%%{y}$z""#);
        assert_eq!(hcl_quote("l1\nl2"), r#""l1\nl2""#);
        assert_eq!(sh_quote("xgboost==2.1.1"), "xgboost==2.1.1");
        assert_eq!(sh_quote("it's"), r#"'it'\''s'"#);
        assert_eq!(sh_quote("a>=1"), "'a>=1'");
    }
}
