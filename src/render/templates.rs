//! The one template engine (tera) for the text formats that are not YAML: Terraform and the
//! Dockerfile. Templates are embedded in the binary; a `templates/` folder next to the spec
//! overrides any of them by the same relative path.

use std::collections::HashMap;
use std::path::Path;

use tera::{Tera, Value};

/// Embedded templates: (name, text).
pub const EMBEDDED: &[(&str, &str)] = &[
    ("terraform/providers.tf.tera", include_str!("../../templates/terraform/providers.tf.tera")),
    ("terraform/backend.tf.tera", include_str!("../../templates/terraform/backend.tf.tera")),
    ("terraform/main.tf.tera", include_str!("../../templates/terraform/main.tf.tera")),
    ("terraform/outputs.tf.tera", include_str!("../../templates/terraform/outputs.tf.tera")),
    ("Dockerfile.tera", include_str!("../../templates/Dockerfile.tera")),
];

/// Builds the engine: embedded templates, each replaced by `<spec dir>/templates/<name>` if present.
pub fn engine(spec_dir: &Path) -> Result<Tera, tera::Error> {
    let mut tera = Tera::default();
    tera.autoescape_on(vec![]);
    for (name, text) in EMBEDDED {
        let custom = spec_dir.join("templates").join(name);
        match std::fs::read_to_string(&custom) {
            Ok(t) => tera.add_raw_template(name, &t)?,
            Err(_) => tera.add_raw_template(name, text)?,
        }
    }
    tera.register_filter("hcl", hcl_filter);
    tera.register_filter("docker_json", docker_json_filter);
    tera.register_filter("sh", sh_filter);
    Ok(tera)
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
