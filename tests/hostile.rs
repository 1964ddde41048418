//! Hostile strings in every free-text field: the spec either fails validation with a located
//! error, or every artifact parses back (HCL with hcl-rs, YAML re-parsed, the Dockerfile's shell
//! words) to exactly the value the spec holds.

use std::collections::BTreeMap;

use proptest::prelude::*;
use raydeploy::{model, render, spec};
use serde_json::{Value, json};

fn hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("\\".to_string()),
        Just("\n".to_string()),
        Just("${".to_string()),
        Just("%{".to_string()),
        Just("{{".to_string()),
        Just("}}".to_string()),
        Just("}".to_string()),
        Just(": ".to_string()),
        Just(" #".to_string()),
        Just("- ".to_string()),
        Just("&a".to_string()),
        Just("*a".to_string()),
        Just("!tag".to_string()),
        Just("true".to_string()),
        Just("0".to_string()),
        Just("|".to_string()),
        Just("`".to_string()),
        Just("$".to_string()),
        Just("%".to_string()),
        Just(" ".to_string()),
        Just("\t".to_string()),
        Just("ü".to_string()),
        Just("env:HOME".to_string()),
        "[a-z]{1,4}",
    ];
    prop::collection::vec(piece, 1..7).prop_map(|v| v.concat())
}

/// The spec as YAML (serialized, so the YAML itself is well-formed and holds `s` exactly).
fn spec_yaml(s: &str) -> String {
    let v = json!({
        "apiVersion": "raydeploy/v1",
        "kind": "RayDeployment",
        "name": "hostile",
        "azure": { "location": "westeurope", "kubernetesVersion": "1.30", "tags": { "note": s } },
        "image": { "pipPackages": [s], "aptPackages": ["curl"] },
        "cluster": {
            "head": { "vmSize": "Standard_D8s_v5", "rayStartParams": { "note": s } },
            "workerGroups": [ { "name": "cpu", "vmSize": "Standard_D8s_v5", "replicas": 1 } ],
            "env": { "NOTE": s }
        },
        "jobs": [ { "name": "j", "entrypoint": s, "runtimeEnv": { "envVars": { "NOTE": s } } } ]
    });
    serde_saphyr::to_string(&v).unwrap()
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{text}"))
}

/// Splits a POSIX shell command line into words (quotes and backslashes as sh reads them).
fn sh_words(line: &str) -> Vec<String> {
    let mut words = vec![];
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' if matches!(chars.peek(), Some('"' | '\\' | '$' | '`')) => cur.push(chars.next().unwrap()),
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

fn hcl_tags(main_tf: &str) -> BTreeMap<String, String> {
    use hcl::eval::Evaluate;
    let body: hcl::Body = hcl::from_str(main_tf).unwrap_or_else(|e| panic!("main.tf does not parse: {e}\n{main_tf}"));
    let ctx = hcl::eval::Context::new();
    for block in body.blocks() {
        if block.identifier() == "locals" {
            for attr in block.body().attributes() {
                if attr.key() == "tags" {
                    let v = attr.expr().evaluate(&ctx).unwrap_or_else(|e| panic!("tags do not evaluate: {e}"));
                    return serde_json::from_value(serde_json::to_value(v).unwrap()).unwrap();
                }
            }
        }
    }
    panic!("no `locals {{ tags }}` in\n{main_tf}")
}

fn check(s: &str) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raydeploy.yaml");
    std::fs::write(&path, spec_yaml(s)).unwrap();
    // What the spec holds after `${env:…}` interpolation (with no variables set).
    let expected = match spec::interp::expand(s, &|_| None) {
        Ok(Some(x)) => x,
        Ok(None) => s.to_string(),
        Err(_) => {
            let err = spec::load(&path, None, &|_| None).expect_err("a missing variable is an error");
            prop_assert!(
                err.short().contains("is not set") || err.short().contains("not a valid variable"),
                "{}",
                err.short()
            );
            return Ok(());
        }
    };
    let loaded = spec::load(&path, None, &|_| None).map_err(|r| TestCaseError::fail(r.short()))?;
    let d = match model::build(&loaded, None) {
        Ok(d) => d,
        Err(problems) => {
            // Rejected values must be rejected with a located, named problem.
            let report = loaded.report(problems);
            for p in &report.problems.0 {
                prop_assert!(!p.path.is_empty() && p.loc.is_some(), "unlocated problem {:?}", p);
            }
            return Ok(());
        }
    };
    let r = render::render(&d).map_err(|e| TestCaseError::fail(e.to_string()))?;

    // Terraform: the tag reads back exactly.
    let tags = hcl_tags(&r.files["terraform/main.tf"]);
    prop_assert_eq!(tags.get("note"), Some(&expected));

    // Helm values: containerEnv and rayStartParams read back exactly.
    let values = yaml(&r.files["helm/ray-cluster.values.yaml"]);
    let env = values["head"]["containerEnv"].as_array().cloned().unwrap_or_default();
    let note = env.iter().find(|e| e["name"] == "NOTE").map(|e| e["value"].clone());
    prop_assert_eq!(note, Some(Value::String(expected.clone())));
    prop_assert_eq!(&values["head"]["rayStartParams"]["note"], &Value::String(expected.clone()));

    // RayJob: entrypoint and the runtime env inside runtimeEnvYAML read back exactly.
    let job = yaml(&r.files["manifests/jobs/j.yaml"]);
    prop_assert_eq!(&job["spec"]["entrypoint"], &Value::String(expected.clone()));
    let runtime = yaml(job["spec"]["runtimeEnvYAML"].as_str().unwrap());
    prop_assert_eq!(&runtime["env_vars"]["NOTE"], &Value::String(expected.clone()));

    // Dockerfile: the pip RUN line, split as sh does, holds the package as one word.
    let dockerfile = &r.files["image/Dockerfile"];
    let run = dockerfile.lines().find(|l| l.contains("pip install")).expect("pip RUN line");
    let words = sh_words(run.trim_start_matches("RUN "));
    prop_assert!(words.contains(&expected), "{:?} not a word of {:?}", expected, words);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn free_text_fields_round_trip_or_are_rejected(s in hostile()) {
        check(&s)?;
    }
}

#[test]
fn known_nasty_values() {
    for s in [
        "${env:HOME}",
        "$${literal}",
        "%{ if x }",
        "{{ .Values }}",
        "a\nb",
        "'; rm -rf / #",
        "\"quoted\"",
        "true",
        "0",
        "- item",
        "key: value",
        "*alias",
        "back\\slash",
    ] {
        check(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
    }
}

/// Control characters, bidirectional-text controls and the Unicode line separators: what a
/// terminal would interpret if a diagnostic printed it raw.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Arbitrary text, weighted towards the characters diagnostics must escape and towards YAML syntax.
fn nasty() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        any::<char>().prop_map(String::from),
        prop::sample::select(vec![
            '\0', '\u{7}', '\u{8}', '\u{1b}', '\r', '\n', '\t', '\u{7f}', '\u{85}', '\u{9b}', '\u{200e}', '\u{202e}',
            '\u{2066}', '\u{2069}', '\u{2028}', '\u{61c}',
        ])
        .prop_map(String::from),
        "[a-z:{}\\[\\]#&*!|>'\" -]{1,4}",
    ];
    prop::collection::vec(piece, 1..12).prop_map(|v| v.concat())
}

/// Loads `text` as a spec (and builds the model); returns every diagnostic text it printed.
fn diagnostics(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raydeploy.yaml");
    std::fs::write(&path, text).unwrap();
    let report = match spec::load(&path, None, &|_| None) {
        Err(r) => r,
        Ok(loaded) => match model::build(&loaded, None) {
            Err(problems) => loaded.report(problems),
            Ok(_) => return vec![],
        },
    };
    vec![report.render(false), report.short(), report.to_string()]
}

fn assert_clean(texts: &[String], input: &str) -> Result<(), TestCaseError> {
    for t in texts {
        if let Some(c) = t.chars().find(|&c| c != '\n' && is_unsafe(c)) {
            return Err(TestCaseError::fail(format!("raw U+{:04X} for input {input:?}:\n{t}", c as u32)));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary strings as values and keys (well-formed YAML), and raw in the YAML text (where they
    /// may break its syntax): whatever is reported, it shows them escaped.
    #[test]
    fn diagnostics_never_carry_raw_control_or_bidi_characters(s in nasty()) {
        let as_value = spec_yaml(&s);
        let as_key = serde_saphyr::to_string(&json!({
            "apiVersion": "raydeploy/v1", "kind": "RayDeployment", "name": "hostile", "target": "local",
            "cluster": { "head": {}, "env": { s.clone(): "x" }, "namespace": s.clone() }
        }))
        .unwrap();
        let raw = format!("apiVersion: raydeploy/v1\nkind: RayDeployment\nname: {s}\ntarget: local\ncluster:\n  namespace: {s}\n  head: {{}}\n");
        for text in [as_value, as_key, raw] {
            assert_clean(&diagnostics(&text), &s)?;
        }
    }
}

#[test]
fn control_and_bidi_characters_in_rendered_strings_are_rejected_where_they_are() {
    for (s, what) in [("a\0b", "U+0000"), ("a\u{202e}b", "U+202E"), ("a\rb", "U+000D"), ("a\u{1b}[31mb", "U+001B")] {
        let texts = diagnostics(&spec_yaml(s));
        assert!(!texts.is_empty(), "{s:?} was accepted");
        assert!(texts[1].contains("azure.tags.note: the value contains the"), "{s:?}: {}", texts[1]);
        assert!(texts[1].contains(what), "{s:?}: {}", texts[1]);
        assert_clean(&texts, s).unwrap();
    }
}
