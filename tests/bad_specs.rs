//! The bad-spec corpus: every case in `tests/bad-specs/` must be rejected by `validate` and
//! `render` with exit code 1, the messages its header expects, the offending line, and nothing
//! written. The good examples must validate.
//!
//! A case is a `.yaml` file, or a folder holding `raydeploy.yaml` (plus `environments/` or a
//! Dockerfile). Its header comments say what it must print:
//!
//! ```text
//! # expect: cluster.workerGroups[0].cpu: requests 8 CPU   (one or more; a fragment of stderr)
//! # absent: something                                      (must not appear)
//! # line: 12                                               (stderr contains `:12:`)
//! # env: dev                                               (pass `-e dev`)
//! # setenv: NAME=value                                     (set in the otherwise clean env)
//! ```
//!
//! Whatever the case, stderr never carries a raw control character (other than newline) or a
//! bidirectional-text control: the input's are shown escaped.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// At least this many cases must exist, so a broken corpus walk cannot pass silently.
const MIN_CASES: usize = 40;

#[derive(Debug, Default)]
struct Case {
    name: String,
    spec: PathBuf,
    expect: Vec<String>,
    absent: Vec<String>,
    lines: Vec<String>,
    env: Option<String>,
    setenv: Vec<(String, String)>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn corpus() -> Vec<Case> {
    let dir = root().join("tests/bad-specs");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    entries
        .into_iter()
        .filter_map(|p| {
            let spec = if p.is_dir() {
                p.join("raydeploy.yaml")
            } else if p.extension().is_some_and(|x| x == "yaml") {
                p.clone()
            } else {
                return None;
            };
            let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            Some(parse_case(name, spec))
        })
        .collect()
}

fn parse_case(name: String, spec: PathBuf) -> Case {
    let bytes = std::fs::read(&spec).unwrap_or_else(|e| panic!("{name}: cannot read {}: {e}", spec.display()));
    let text = String::from_utf8_lossy(&bytes);
    let mut case = Case { name, spec, ..Case::default() };
    for line in text.lines() {
        let Some(rest) = line.strip_prefix('#') else { continue };
        let Some((key, value)) = rest.trim_start().split_once(':') else { continue };
        let value = value.trim().to_string();
        match key {
            "expect" => case.expect.push(value),
            "absent" => case.absent.push(value),
            "line" => case.lines.push(value),
            "env" => case.env = Some(value),
            "setenv" => {
                let (k, v) = value.split_once('=').unwrap_or_else(|| panic!("{}: `# setenv: NAME=value`", case.name));
                case.setenv.push((k.to_string(), v.to_string()));
            }
            _ => {}
        }
    }
    assert!(!case.expect.is_empty(), "{}: the header has no `# expect:` line", case.name);
    case
}

/// Diagnostics wrap long messages over `│`-prefixed lines: compare on text with the frame and
/// line breaks removed and whitespace collapsed.
fn flatten(s: &str) -> String {
    let joined: Vec<&str> =
        s.lines().map(|l| l.trim().trim_start_matches(['│', '×', '·', '╭', '╰', '─']).trim()).collect();
    joined.join(" ").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Control characters and bidirectional formatting characters, which a terminal interprets.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        || matches!(c, '\u{2028}' | '\u{2029}')
}

fn clean_cmd(case: &Case) -> Command {
    let mut cmd = Command::cargo_bin("raydeploy").expect("the raydeploy binary");
    cmd.env_clear();
    for var in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    for (k, v) in &case.setenv {
        cmd.env(k, v);
    }
    cmd.current_dir(root());
    cmd
}

/// Runs one command of a case; returns the problems found (empty when it behaved).
fn check(case: &Case, command: &str, extra: &[&std::ffi::OsStr], out: Option<&Path>) -> Vec<String> {
    let mut cmd = clean_cmd(case);
    cmd.arg(command).arg(&case.spec);
    if let Some(env) = &case.env {
        cmd.args(["-e", env]);
    }
    cmd.args(extra);
    let output = cmd.output().expect("run raydeploy");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let flat = flatten(&stderr);
    let mut failures = vec![];
    if output.status.code() != Some(1) {
        failures.push(format!("exit code {:?}, expected 1", output.status.code()));
    }
    for e in &case.expect {
        if !flat.contains(&flatten(e)) {
            failures.push(format!("missing `{e}`"));
        }
    }
    for a in &case.absent {
        if flat.contains(&flatten(a)) {
            failures.push(format!("unexpected `{a}`"));
        }
    }
    if let Some(c) = stderr.chars().find(|&c| c != '\n' && is_unsafe(c)) {
        failures.push(format!("raw U+{:04X} in stderr", c as u32));
    }
    for l in &case.lines {
        if !stderr.contains(&format!(":{l}:")) {
            failures.push(format!("no position on line {l} (`:{l}:`)"));
        }
    }
    if let Some(out) = out
        && out.exists()
    {
        failures.push(format!("{} was created", out.display()));
    }
    if failures.is_empty() {
        vec![]
    } else {
        vec![format!(
            "case {} ({command}):\n  - {}\n--- stderr ---\n{stderr}--- stdout ---\n{}",
            case.name,
            failures.join("\n  - "),
            String::from_utf8_lossy(&output.stdout)
        )]
    }
}

#[test]
fn every_bad_spec_is_rejected_with_its_messages_and_nothing_is_written() {
    let cases = corpus();
    assert!(cases.len() >= MIN_CASES, "only {} cases in tests/bad-specs (at least {MIN_CASES} expected)", cases.len());
    let mut failures = vec![];
    for case in &cases {
        failures.extend(check(case, "validate", &[], None));
        let tmp = tempfile::tempdir().expect("temp dir");
        let out = tmp.path().join("out");
        failures.extend(check(case, "render", &["--out".as_ref(), out.as_os_str()], Some(&out)));
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

#[test]
fn every_good_example_validates() {
    let mut specs: Vec<(PathBuf, Option<&str>)> = vec![
        (root().join("raydeploy.yaml"), None),
        (root().join("raydeploy.yaml"), Some("dev")),
        (root().join("raydeploy.yaml"), Some("prod")),
    ];
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path().join("raydeploy.yaml"))
        .filter(|p| p.is_file())
        .collect();
    examples.sort();
    assert!(!examples.is_empty(), "no examples/*/raydeploy.yaml");
    specs.extend(examples.into_iter().map(|p| (p, None)));
    let mut failures = vec![];
    for (spec, env) in &specs {
        let mut cmd = clean_cmd(&Case::default());
        cmd.env("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000000");
        cmd.arg("validate").arg(spec);
        if let Some(env) = env {
            cmd.args(["-e", env]);
        }
        let output = cmd.output().expect("run raydeploy");
        if !output.status.success() {
            failures.push(format!(
                "{}{}: exit {:?}\n{}",
                spec.display(),
                env.map(|e| format!(" -e {e}")).unwrap_or_default(),
                output.status.code(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "good specs failed to validate:\n{}", failures.join("\n"));
}
