//! The values keys a chart's templates read, and a checker that lists every key of a values
//! document the chart would not read (Helm ignores those silently: none of the charts has a
//! values schema). KubeRay's lists come with the reference data
//! (`../shared/kuberay/values-paths/<chart>.txt`); for other charts the list is derived from the
//! templates themselves, the way those lists were (every `.Values.a.b` and `$.Values.a.b`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One step of a key path: a map key or a list element.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Elem,
}

/// One step of a values-paths pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pat {
    Key(String),
    /// `<groupName>`, `<key>`: any map key.
    AnyKey,
    Elem,
}

impl Pat {
    fn matches(&self, s: &Step) -> bool {
        match (self, s) {
            (Pat::Key(a), Step::Key(b)) => a == b,
            (Pat::AnyKey, Step::Key(_)) => true,
            (Pat::Elem, Step::Elem) => true,
            _ => false,
        }
    }
}

/// The chart's key paths, parsed; `pass_through[i]` tells whether pattern i has no listed
/// descendants (the template takes that subtree whole). A path is covered when a pattern
/// matches it, when it is an ancestor of a listed key, or when it lies under a pass-through.
pub struct Paths {
    patterns: Vec<Vec<Pat>>,
    pass_through: Vec<bool>,
}

fn parse_pattern(line: &str) -> Vec<Pat> {
    let mut out = vec![];
    for seg in line.split('.') {
        let mut name = seg;
        let mut elems = 0;
        while let Some(rest) = name.strip_suffix("[]") {
            name = rest;
            elems += 1;
        }
        assert!(!name.is_empty(), "bad pattern segment in {line:?}");
        if name.starts_with('<') && name.ends_with('>') {
            out.push(Pat::AnyKey);
        } else {
            out.push(Pat::Key(name.to_string()));
        }
        out.extend(std::iter::repeat_n(Pat::Elem, elems));
    }
    out
}

impl Paths {
    pub fn parse(text: &str) -> Self {
        let patterns: Vec<Vec<Pat>> =
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(parse_pattern).collect();
        let pass_through =
            patterns.iter().map(|p| !patterns.iter().any(|q| q.len() > p.len() && q[..p.len()] == p[..])).collect();
        Self { patterns, pass_through }
    }

    /// The list of a KubeRay chart (`kuberay-operator`, `ray-cluster`).
    pub fn load(chart: &str) -> Self {
        let file = root().join("../shared/kuberay/values-paths").join(format!("{chart}.txt"));
        Self::parse(&std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())))
    }

    /// The list derived from a chart's templates: every `.Values.a.b` path they mention.
    pub fn from_templates(chart: &Path) -> Self {
        Self::parse(&template_paths(chart).join("\n"))
    }

    fn covers(&self, path: &[Step]) -> bool {
        self.patterns.iter().zip(&self.pass_through).any(|(p, &whole)| {
            let common = p.len().min(path.len());
            if !p.iter().zip(path).take(common).all(|(a, b)| a.matches(b)) {
                return false;
            }
            // Listed itself, an ancestor of a listed key, or inside a subtree taken whole.
            p.len() >= path.len() || whole
        })
    }

    /// Every key path of `v` (intermediate and leaf) the chart would not read.
    pub fn uncovered(&self, v: &Value) -> Vec<String> {
        let mut all = vec![];
        collect(v, &mut vec![], &mut all);
        all.into_iter().filter(|p| !self.covers(p)).map(|p| show(&p)).collect()
    }
}

fn collect(v: &Value, at: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                at.push(Step::Key(k.clone()));
                out.push(at.clone());
                collect(child, at, out);
                at.pop();
            }
        }
        Value::Array(items) => {
            for child in items {
                at.push(Step::Elem);
                out.push(at.clone());
                collect(child, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn show(p: &[Step]) -> String {
    let mut s = String::new();
    for step in p {
        match step {
            Step::Key(k) if s.is_empty() => s.push_str(k),
            Step::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Step::Elem => s.push_str("[]"),
        }
    }
    s
}

/// Every `.Values.a.b` (or `$.Values.a.b`) path in the files of `chart/templates`, sorted and
/// without duplicates: the automatic part of the values-paths lists.
pub fn template_paths(chart: &Path) -> Vec<String> {
    let dir = chart.join("templates");
    let mut out = std::collections::BTreeSet::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for file in entries {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut rest = text.as_str();
        while let Some(i) = rest.find(".Values.") {
            let after = &rest[i + ".Values.".len()..];
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')).unwrap_or(after.len());
            let path = after[..end].trim_end_matches('.');
            if !path.is_empty() {
                out.insert(path.to_string());
            }
            rest = &after[end..];
        }
    }
    out.into_iter().collect()
}
