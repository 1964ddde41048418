//! The shipped specs the consumer tests render — the top-level spec plain and under each
//! environment, and every example — and one way to render them with the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// Subscription id the top-level spec interpolates from `AZURE_SUBSCRIPTION_ID`.
pub const SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every shipped spec whose target is in `targets`: (spec path, environment).
pub fn specs(targets: &[&str]) -> Vec<(PathBuf, Option<&'static str>)> {
    let mut all: Vec<(PathBuf, Option<&'static str>)> =
        [None, Some("dev"), Some("prod")].into_iter().map(|e| (root().join("raydeploy.yaml"), e)).collect();
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .flatten()
        .map(|e| e.path().join("raydeploy.yaml"))
        .filter(|p| p.is_file())
        .collect();
    examples.sort();
    all.extend(examples.into_iter().map(|p| (p, None)));
    let vars = |k: &str| (k == "AZURE_SUBSCRIPTION_ID").then(|| SUBSCRIPTION.to_string());
    all.retain(|(spec, env)| {
        let loaded =
            raydeploy::spec::load(spec, *env, &vars).unwrap_or_else(|r| panic!("{}: {}", spec.display(), r.short()));
        targets.contains(&loaded.spec.target.as_str())
    });
    assert!(!all.is_empty(), "no shipped spec has a target in {targets:?}");
    all
}

/// `examples/x/raydeploy.yaml -e dev`
pub fn label(spec: &Path, env: Option<&str>) -> String {
    let rel = spec.strip_prefix(root()).unwrap_or(spec).display().to_string();
    match env {
        Some(e) => format!("{rel} -e {e}"),
        None => rel,
    }
}

/// Renders a spec with the binary into a fresh folder, with `vars` added to the environment.
pub fn render_with(spec: &Path, env: Option<&str>, vars: &[(&str, &str)]) -> tempfile::TempDir {
    let out = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::cargo_bin("raydeploy").expect("binary");
    cmd.arg("render")
        .arg(spec)
        .arg("--out")
        .arg(out.path())
        .env("AZURE_SUBSCRIPTION_ID", SUBSCRIPTION)
        .env("NO_COLOR", "1");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    if let Some(e) = env {
        cmd.args(["-e", e]);
    }
    let res = cmd.output().expect("run raydeploy render");
    assert!(res.status.success(), "render {}: {}", label(spec, env), String::from_utf8_lossy(&res.stderr));
    out
}

/// Renders a spec with the binary into a fresh folder.
pub fn render(spec: &Path, env: Option<&str>) -> tempfile::TempDir {
    render_with(spec, env, &[])
}

/// Copies a folder recursively (a shipped example into a scratch spec folder).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create folder");
    for e in std::fs::read_dir(from).expect("read folder").flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_tree(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy file");
        }
    }
}
