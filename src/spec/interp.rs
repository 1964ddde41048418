//! `${env:VAR}` interpolation in non-secret string fields. `$${` escapes a literal `${`.

use super::diag::{Problem, Problems};
use super::node::{Node, Path, Value};

/// Replaces `${env:VAR}` in every string scalar except under `secrets` (secret values are never
/// interpolated into the spec: they are resolved at deploy time).
pub fn interpolate(node: &mut Node, path: &Path, vars: &dyn Fn(&str) -> Option<String>, problems: &mut Problems) {
    match &mut node.value {
        Value::Str(s) => match expand(s, vars) {
            Ok(Some(new)) => *s = new,
            Ok(None) => {}
            Err(msg) => problems.push(Problem::new(path, msg.0).help(msg.1).at(node.loc)),
        },
        Value::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &path.index(i), vars, problems);
            }
        }
        Value::Map(entries) => {
            for e in entries.values_mut() {
                if path.0.is_empty() && e.key == "secrets" {
                    continue;
                }
                interpolate(&mut e.value, &path.key(&e.key), vars, problems);
            }
        }
        _ => {}
    }
}

/// Expands one string; `Ok(None)` when it holds no interpolation.
pub fn expand(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<Option<String>, (String, String)> {
    if !s.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut changed = false;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            // `$${` → literal `${`
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            changed = true;
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str("${");
            rest = after;
            continue;
        };
        let inner = &after[..end];
        match inner.strip_prefix("env:") {
            Some(var) => {
                let var = var.trim();
                if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err((
                        format!("`${{{inner}}}` is not a valid variable reference"),
                        "write ${env:NAME} with NAME made of letters, digits and _".into(),
                    ));
                }
                match vars(var) {
                    Some(v) => out.push_str(&v),
                    None => {
                        return Err((
                            format!("environment variable `{var}` is not set"),
                            format!("export {var}=… before running, or write the value in the spec"),
                        ));
                    }
                }
                changed = true;
            }
            None => {
                // not ours: keep it literally
                out.push_str("${");
                out.push_str(inner);
                out.push('}');
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(if changed { Some(out) } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(k: &str) -> Option<String> {
        (k == "SUB").then(|| "1234".to_string())
    }

    #[test]
    fn expands_and_escapes() {
        assert_eq!(expand("a-${env:SUB}-b", &vars).unwrap().as_deref(), Some("a-1234-b"));
        assert_eq!(expand("$${env:SUB}", &vars).unwrap().as_deref(), Some("${env:SUB}"));
        assert_eq!(expand("${other}", &vars).unwrap(), None);
        assert_eq!(expand("plain", &vars).unwrap(), None);
        assert!(expand("${env:NOPE}", &vars).unwrap_err().0.contains("NOPE"));
        assert!(expand("${env:}", &vars).is_err());
    }
}
