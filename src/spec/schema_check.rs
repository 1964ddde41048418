//! Structural validation of the merged document against the JSON Schema derived from the spec
//! types: every unknown key, wrong type and bad enum value is reported at once, with a hint.

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value as J;

use super::diag::{Problem, Problems, is_bidi_control, is_unsafe_char};
use super::node::{Node, Path, Step, Value};
use super::types::Spec;

/// The spec's JSON Schema (what `raydeploy schema` prints).
pub fn schema() -> &'static J {
    static SCHEMA: OnceLock<J> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let mut s = serde_json::to_value(schemars::schema_for!(Spec)).expect("schema serializes");
        drop_null_branches(&mut s);
        s["$id"] = J::String("https://raydeploy.dev/schema/v1/raydeploy.json".into());
        s
    })
}

/// Optional fields are optional by omission: drop the `null` alternative schemars adds to
/// `Option<T>` so a wrong value is reported against `T` itself, with its own message.
fn drop_null_branches(v: &mut J) {
    match v {
        J::Object(map) => {
            if let Some(J::Array(branches)) = map.get("anyOf") {
                let non_null: Vec<J> =
                    branches.iter().filter(|b| b.get("type") != Some(&J::String("null".into()))).cloned().collect();
                if non_null.len() == 1 && branches.len() == 2 {
                    map.remove("anyOf");
                    if let J::Object(inner) = &non_null[0] {
                        for (k, val) in inner {
                            map.entry(k.clone()).or_insert(val.clone());
                        }
                    }
                }
            }
            if let Some(J::Array(types)) = map.get("type") {
                let rest: Vec<J> = types.iter().filter(|t| t.as_str() != Some("null")).cloned().collect();
                if rest.len() == 1 {
                    map.insert("type".into(), rest[0].clone());
                }
            }
            for (_, child) in map.iter_mut() {
                drop_null_branches(child);
            }
        }
        J::Array(items) => items.iter_mut().for_each(drop_null_branches),
        _ => {}
    }
}

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| jsonschema::validator_for(schema()).expect("the generated schema compiles"))
}

/// Checks `doc` against the schema, and every key and string in it for characters that no
/// rendered file may carry; returns located problems.
pub fn check(doc: &Node) -> Problems {
    let instance = doc.to_json();
    let mut problems = Problems::default();
    check_text(doc, &Path::root(), &mut problems);
    for err in validator().iter_errors(&instance) {
        let path = Path::from_pointer(err.instance_path().as_str(), doc);
        let node = doc.locate(&path);
        let at = match node.value {
            super::node::Value::Map(_) | super::node::Value::Seq(_) => doc.locate_key(&path),
            _ => node.loc,
        };
        let sub = schema_at(schema(), &path);
        match err.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let allowed = sub.map(property_names).unwrap_or_default();
                for key in unexpected {
                    let kpath = path.key(key);
                    let mut p = Problem::new(&kpath, format!("unknown field `{key}`")).at(doc.locate_key(&kpath));
                    p.help = Some(match did_you_mean(key, &allowed) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None if allowed.is_empty() => "remove it".into(),
                        None => format!("expected one of: {}", allowed.join(", ")),
                    });
                    problems.push(p);
                }
            }
            ValidationErrorKind::Required { property } => {
                let prop = property.as_str().unwrap_or_default();
                problems.push(
                    Problem::new(path.key(prop), format!("missing required field `{prop}`"))
                        .help(
                            describe(sub.and_then(|s| schema_at_key(s, prop)))
                                .unwrap_or_else(|| format!("add `{prop}`")),
                        )
                        .at(node.loc),
                );
            }
            ValidationErrorKind::Type { kind } => {
                let expected = match kind {
                    TypeKind::Single(t) => t.to_string(),
                    TypeKind::Multiple(ts) => ts.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" or "),
                };
                let mut p =
                    Problem::new(&path, format!("expected {}, found {}", article(&expected), node.kind())).at(node.loc);
                if expected == "string"
                    && matches!(node.value, super::node::Value::Float(_) | super::node::Value::Int(_))
                {
                    p.help = Some("quote it, e.g. \"1.30\": YAML reads an unquoted 1.30 as the number 1.3".into());
                }
                problems.push(p);
            }
            ValidationErrorKind::Enum { options } => {
                let opts: Vec<String> = options
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                let got = node.as_str().map(String::from).unwrap_or_else(|| err.instance().to_string());
                let mut p = Problem::new(&path, format!("`{got}` is not one of: {}", opts.join(", "))).at(node.loc);
                if let Some(s) = did_you_mean(&got, &opts) {
                    p.help = Some(format!("did you mean `{s}`?"));
                }
                problems.push(p);
            }
            ValidationErrorKind::Constant { expected_value } => {
                problems.push(
                    Problem::new(&path, format!("must be {expected_value}, found {}", err.instance())).at(node.loc),
                );
            }
            ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. }
                if sub.is_some_and(|s| !constants(s).is_empty()) =>
            {
                let opts = constants(sub.unwrap_or(&J::Null));
                let got = node.as_str().map(String::from).unwrap_or_else(|| err.instance().to_string());
                let mut p = Problem::new(&path, format!("`{got}` is not one of: {}", opts.join(", "))).at(at);
                if let Some(s) = did_you_mean(&got, &opts) {
                    p.help = Some(format!("did you mean `{s}`?"));
                }
                problems.push(p);
            }
            ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. } => {
                let what = sub.map(shape).unwrap_or_else(|| "a different value".into());
                let mut p =
                    Problem::new(&path, format!("expected {}, found {}", what.trim_end_matches('.'), brief(node)))
                        .at(at);
                p.help = quantity_hint(node);
                problems.push(p);
            }
            ValidationErrorKind::Minimum { limit } => {
                problems.push(
                    Problem::new(&path, format!("must be at least {limit}, found {}", err.instance()))
                        .help(format!("use {limit} or more"))
                        .at(at),
                );
            }
            ValidationErrorKind::Maximum { limit } => {
                problems.push(
                    Problem::new(&path, format!("must be at most {limit}, found {}", err.instance()))
                        .help(format!(
                            "use {limit} or less{}",
                            if limit.as_u64() == Some(i32::MAX as u64) {
                                " (Kubernetes keeps it in a 32-bit integer)"
                            } else {
                                ""
                            }
                        ))
                        .at(at),
                );
            }
            _ => problems.push(Problem::new(&path, err.to_string()).at(at)),
        }
    }
    problems
}

/// Every string of the spec may end up in a rendered file (names, labels, tags, env values,
/// entrypoints, paths…), so each key and string value is checked here, once, after overlays and
/// `${env:…}` interpolation: control characters other than tab and newline, and bidirectional
/// formatting characters (which make text display in another order than the one a tool reads it
/// in), are rejected where they occur.
fn check_text(node: &Node, path: &Path, problems: &mut Problems) {
    match &node.value {
        Value::Str(s) => {
            if let Some(p) = unsafe_text(s, path, "the value") {
                problems.push(p.at(node.loc));
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                check_text(item, &path.index(i), problems);
            }
        }
        Value::Map(entries) => {
            for e in entries.values() {
                let child = path.key(&e.key);
                if let Some(p) = unsafe_text(&e.key, &child, "the key") {
                    problems.push(p.at(e.key_loc));
                }
                check_text(&e.value, &child, problems);
            }
        }
        _ => {}
    }
}

/// A problem for the first character of `s` that must not reach an artifact, if any.
fn unsafe_text(s: &str, path: &Path, what: &str) -> Option<Problem> {
    let (i, c) = s.chars().enumerate().find(|&(_, c)| c != '\t' && c != '\n' && is_unsafe_char(c))?;
    let kind = if is_bidi_control(c) { "bidirectional-text control" } else { "control character" };
    Some(
        Problem::new(path, format!("{what} contains the {kind} U+{:04X} (character {})", c as u32, i + 1))
            .help("remove it: rendered files must read the same in every tool (tab and newline are allowed)"),
    )
}

/// serde's message when a value passed the schema but does not fit its Rust type, such as
/// "invalid value: integer `99999999999`, expected u32": the type is said as the range or kind of
/// value the field takes.
pub fn plain_type_message(msg: &str) -> String {
    let Some((head, expected)) = msg.rsplit_once(", expected ") else { return msg.to_string() };
    let range = |lo: i128, hi: i128| format!("a whole number from {lo} to {hi}");
    let words = match expected.trim() {
        "u8" => range(0, u8::MAX.into()),
        "u16" => range(0, u16::MAX.into()),
        "u32" => range(0, u32::MAX.into()),
        "u64" | "usize" => range(0, u64::MAX.into()),
        "i8" => range(i8::MIN.into(), i8::MAX.into()),
        "i16" => range(i16::MIN.into(), i16::MAX.into()),
        "i32" => range(i32::MIN.into(), i32::MAX.into()),
        "i64" | "isize" => range(i64::MIN.into(), i64::MAX.into()),
        "f32" | "f64" => "a number".into(),
        "a string" | "a borrowed string" | "a char" => "a string".into(),
        "a boolean" => "true or false".into(),
        other if other.starts_with("struct ") || other.starts_with("a map") => "a map".into(),
        other if other.starts_with("a sequence") => "a list".into(),
        other => other.to_string(),
    };
    let found = head
        .strip_prefix("invalid value: ")
        .or_else(|| head.strip_prefix("invalid type: "))
        .unwrap_or(head)
        .replace("integer ", "")
        .replace("floating point ", "");
    format!("expected {words}, found {found}")
}

/// A hint for quantities written with decimal-byte units (`12GB`) where Kubernetes wants `12Gi`.
fn quantity_hint(node: &Node) -> Option<String> {
    let s = node.as_str()?.trim();
    let number = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[number.len()..];
    let fixed = match unit.to_ascii_uppercase().as_str() {
        "GB" | "GIB" | "G" => "Gi",
        "MB" | "MIB" | "M" => "Mi",
        "TB" | "TIB" | "T" => "Ti",
        "KB" | "KIB" | "K" => "Ki",
        _ => return None,
    };
    (!number.is_empty() && number.parse::<f64>().is_ok())
        .then(|| format!("did you mean `{number}{fixed}`? Memory uses binary suffixes (Ki, Mi, Gi, Ti)"))
}

fn article(t: &str) -> String {
    match t {
        "object" => "a map".into(),
        "array" => "a list".into(),
        "integer" => "an integer".into(),
        other => format!("a {other}"),
    }
}

fn brief(node: &Node) -> String {
    match &node.value {
        super::node::Value::Str(s) => format!("`{s}`"),
        _ => node.kind().into(),
    }
}

/// The best match among `options` for a misspelled `word`, if any is close.
pub fn did_you_mean(word: &str, options: &[String]) -> Option<String> {
    let w = word.to_lowercase();
    options
        .iter()
        .map(|o| {
            let o_l = o.to_lowercase();
            let dist = strsim::osa_distance(&w, &o_l);
            let close = dist <= (w.len().max(o_l.len()) / 3).max(1);
            // close edits rank above any Jaro-Winkler score, the fewest edits first
            (if close { 2.0 - dist as f64 / 100.0 } else { strsim::jaro_winkler(&w, &o_l) }, o)
        })
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, o)| o.clone())
}

fn resolve<'a>(root: &'a J, mut s: &'a J) -> &'a J {
    for _ in 0..16 {
        match s.get("$ref").and_then(J::as_str).and_then(|r| r.strip_prefix("#/")) {
            Some(ptr) => match root.pointer(&format!("/{ptr}")) {
                Some(t) => s = t,
                None => break,
            },
            None => break,
        }
    }
    s
}

fn schema_at_key<'a>(s: &'a J, key: &str) -> Option<&'a J> {
    let root = schema();
    let s = resolve(root, s);
    if let Some(p) = s.get("properties").and_then(|p| p.get(key)) {
        return Some(resolve(root, p));
    }
    for comb in ["anyOf", "oneOf", "allOf"] {
        for branch in s.get(comb).and_then(J::as_array).into_iter().flatten() {
            if let Some(found) = schema_at_key(branch, key) {
                return Some(found);
            }
        }
    }
    match s.get("additionalProperties") {
        Some(ap) if ap.is_object() => Some(resolve(root, ap)),
        _ => None,
    }
}

/// The sub-schema describing the value at `path`.
pub fn schema_at<'a>(root: &'a J, path: &Path) -> Option<&'a J> {
    let mut s = resolve(root, root);
    for step in &path.0 {
        s = match step {
            Step::Key(k) => schema_at_key(s, k)?,
            Step::Index(_) => {
                let items = s
                    .get("items")
                    .or_else(|| s.get("anyOf")?.as_array()?.iter().find_map(|b| resolve(root, b).get("items")))?;
                resolve(root, items)
            }
        };
    }
    Some(resolve(root, s))
}

fn property_names(s: &J) -> Vec<String> {
    let root = schema();
    let s = resolve(root, s);
    let mut names: Vec<String> =
        s.get("properties").and_then(J::as_object).map(|m| m.keys().cloned().collect()).unwrap_or_default();
    for comb in ["anyOf", "oneOf"] {
        for b in s.get(comb).and_then(J::as_array).into_iter().flatten() {
            names.extend(property_names(b));
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The alternatives of a `oneOf`/`anyOf` schema, references resolved.
fn branches(s: &J) -> Vec<&J> {
    let root = schema();
    let s = resolve(root, s);
    ["oneOf", "anyOf"]
        .iter()
        .filter_map(|c| s.get(*c).and_then(J::as_array))
        .flatten()
        .map(|b| resolve(root, b))
        .collect()
}

/// The allowed constants of a `oneOf` of `const` branches (enums with documented variants).
fn constants(s: &J) -> Vec<String> {
    let branches = branches(s);
    let mut out = vec![];
    for b in &branches {
        if let Some(c) = b.get("const").and_then(J::as_str) {
            out.push(c.to_string());
        } else if let Some(e) = b.get("enum").and_then(J::as_array) {
            out.extend(e.iter().filter_map(|v| v.as_str().map(String::from)));
        } else {
            return vec![];
        }
    }
    out
}

fn describe(s: Option<&J>) -> Option<String> {
    s.and_then(|s| s.get("description")).and_then(J::as_str).map(String::from)
}

/// A one-line description of what a schema accepts, for anyOf/oneOf failures.
fn shape(s: &J) -> String {
    let branches = branches(s);
    let keys: Vec<String> = branches
        .iter()
        .filter_map(|b| b.get("required").and_then(J::as_array).and_then(|r| r.first()).and_then(J::as_str))
        .map(|k| format!("`{k}`"))
        .collect();
    if !keys.is_empty() && keys.len() == branches.len() {
        return format!("a map with exactly one of {}", keys.join(", "));
    }
    describe(Some(s)).unwrap_or_else(|| "a value of another shape".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_types_in_serde_messages_become_ranges_and_kinds() {
        assert_eq!(
            plain_type_message("invalid value: integer `99999999999`, expected u32"),
            "expected a whole number from 0 to 4294967295, found `99999999999`"
        );
        assert_eq!(
            plain_type_message("invalid type: floating point `1.5`, expected i64"),
            format!("expected a whole number from {} to {}, found `1.5`", i64::MIN, i64::MAX)
        );
        assert_eq!(plain_type_message("invalid type: map, expected a string"), "expected a string, found map");
        assert_eq!(plain_type_message("missing field `name`"), "missing field `name`");
    }
}
