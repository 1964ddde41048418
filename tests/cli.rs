//! The command line end to end: schema drift, init, render --check, determinism, exit codes.

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn raydeploy() -> Command {
    let mut c = Command::cargo_bin("raydeploy").unwrap();
    c.env("AZURE_SUBSCRIPTION_ID", SUB).env("NO_COLOR", "1");
    c
}

#[test]
fn committed_schema_matches_the_types() {
    let out = raydeploy().arg("schema").output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let path = Path::new("schema/raydeploy.schema.json");
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(path, &printed).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(committed == printed, "schema/raydeploy.schema.json is stale: run `UPDATE_SCHEMA=1 cargo test --test cli`");
    // It documents every top-level field of the contract.
    let schema: serde_json::Value = serde_json::from_str(&printed).unwrap();
    for field in [
        "apiVersion",
        "kind",
        "name",
        "target",
        "azure",
        "kubernetes",
        "image",
        "kuberay",
        "cluster",
        "secrets",
        "jobs",
    ] {
        assert!(schema["properties"].get(field).is_some(), "schema lacks {field}");
    }
}

#[test]
fn init_writes_a_valid_starter_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    raydeploy().arg("init").arg(dir.path()).assert().success();
    let spec = dir.path().join("raydeploy.yaml");
    assert!(std::fs::read_to_string(&spec).unwrap().contains("# "), "starter spec is commented");
    raydeploy().arg("validate").arg(&spec).assert().success();
    raydeploy().arg("init").arg(dir.path()).assert().code(1).stderr(predicate::str::contains("--force"));
    raydeploy().arg("init").arg(dir.path()).arg("--force").assert().success();
}

#[test]
fn render_is_deterministic_and_check_reports_drift() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    for out in [&a, &b] {
        raydeploy().args(["render", "raydeploy.yaml", "-e", "prod", "--out"]).arg(out).assert().success();
    }
    let files = |root: &Path| {
        let mut v = vec![];
        for layer in ["terraform", "image", "helm", "manifests"] {
            for e in walk(&root.join(layer)) {
                v.push((e.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(&e).unwrap()));
            }
        }
        v.sort();
        v
    };
    let fa = files(&a);
    assert!(fa.len() >= 6, "prod renders every layer: {fa:?}");
    assert_eq!(fa, files(&b), "two renders of one spec are byte-identical");

    raydeploy().args(["render", "raydeploy.yaml", "-e", "prod", "--check", "--out"]).arg(&a).assert().success();
    // Drift: edit a rendered file and add a stray one.
    let values = a.join("helm/ray-cluster.values.yaml");
    let text = std::fs::read_to_string(&values).unwrap();
    std::fs::write(&values, text.replacen("replicas", "replicaz", 1)).unwrap();
    std::fs::write(a.join("terraform/stray.tf"), "# stray\n").unwrap();
    let before = files(&a);
    raydeploy()
        .args(["render", "raydeploy.yaml", "-e", "prod", "--check", "--out"])
        .arg(&a)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("--- a/helm/ray-cluster.values.yaml"))
        .stdout(predicate::str::contains("+++ b/helm/ray-cluster.values.yaml"))
        .stdout(predicate::str::contains("replicaz"))
        .stdout(predicate::str::contains("terraform/stray.tf (not written by raydeploy"))
        .stdout(predicate::str::contains("helm/ray-cluster.values.yaml (changed since raydeploy wrote it"));
    assert_eq!(before, files(&a), "--check writes nothing");
    // A plain render refuses to overwrite the edit or to write next to the stray file.
    raydeploy()
        .args(["render", "raydeploy.yaml", "-e", "prod", "--out"])
        .arg(&a)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("terraform/stray.tf"))
        .stderr(predicate::str::contains("helm/ray-cluster.values.yaml"))
        .stderr(predicate::str::contains("--force"));
    assert_eq!(before, files(&a), "a refused render writes nothing");
    // --force repairs raydeploy's files and leaves the stray one alone.
    raydeploy().args(["render", "raydeploy.yaml", "-e", "prod", "--force", "--out"]).arg(&a).assert().success();
    assert_eq!(std::fs::read_to_string(&values).unwrap(), text);
    assert_eq!(std::fs::read_to_string(a.join("terraform/stray.tf")).unwrap(), "# stray\n");
    raydeploy()
        .args(["render", "raydeploy.yaml", "-e", "prod", "--check", "--force", "--out"])
        .arg(&a)
        .assert()
        .success();
    std::fs::remove_file(a.join("terraform/stray.tf")).unwrap();
    raydeploy().args(["render", "raydeploy.yaml", "-e", "prod", "--check", "--out"]).arg(&a).assert().success();
}

#[test]
fn targets_render_only_their_layers() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("k");
    raydeploy().args(["render", "examples/kubernetes/raydeploy.yaml", "--out"]).arg(&k).assert().success();
    assert!(!k.join("terraform").exists());
    assert!(k.join("helm/ray-cluster.values.yaml").exists());
    let l = dir.path().join("l");
    raydeploy().args(["render", "examples/local/raydeploy.yaml", "--out"]).arg(&l).assert().success();
    assert!(!l.join("terraform").exists() && !l.join("helm").exists() && !l.join("manifests").exists());
    // --target local runs an aks spec locally: nothing cloud-shaped is rendered.
    let t = dir.path().join("t");
    raydeploy()
        .args(["render", "examples/pytorch-mnist-aks/raydeploy.yaml", "--target", "local", "--out"])
        .arg(&t)
        .assert()
        .success();
    assert!(!t.join("terraform").exists());
}

#[test]
fn explain_shows_sizing_and_names() {
    raydeploy()
        .args(["explain", "raydeploy.yaml"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Standard_D8s_v5"))
        .stdout(predicate::str::contains("7.82"))
        .stdout(predicate::str::contains("acrsupplychain.azurecr.io"))
        .stdout(predicate::str::contains("rayhead"));
    let out = raydeploy().args(["explain", "raydeploy.yaml", "--output", "json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "supply-chain");
    assert_eq!(v["cluster"]["workers"][0]["cpu_m"], 7000);
}

#[test]
fn environments_are_separate_deployments() {
    let out = raydeploy().args(["explain", "raydeploy.yaml", "-e", "dev", "--output", "json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "supply-chain-dev");
    assert_eq!(v["azure"]["resource_group"], "rg-supply-chain-dev");
    assert_eq!(v["cluster"]["workers"][0]["vm_size"], "Standard_D4s_v5");
    assert_eq!(v["cluster"]["env"]["LOG_LEVEL"], "debug");
    assert_eq!(v["cluster"]["env"]["AZURE_TENANT_ID"], "contoso.onmicrosoft.com", "maps merge");
}

#[test]
fn version_and_completions() {
    raydeploy().arg("--version").assert().success().stdout(predicate::str::contains(env!("CARGO_PKG_VERSION")));
    raydeploy().args(["completions", "bash"]).assert().success().stdout(predicate::str::contains("raydeploy"));
}

#[test]
fn template_override_next_to_the_spec_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string("examples/kubernetes/raydeploy.yaml").unwrap();
    std::fs::write(dir.path().join("raydeploy.yaml"), src).unwrap();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    std::fs::write(
        dir.path().join("templates/Dockerfile.tera"),
        "FROM {{ image.base }}:{{ image.base_tag }}\n# custom template\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    raydeploy().arg("render").arg(dir.path().join("raydeploy.yaml")).arg("--out").arg(&out).assert().success();
    let df = std::fs::read_to_string(out.join("image/Dockerfile")).unwrap();
    assert_eq!(df, "FROM rayproject/ray:2.52.0-py312\n# custom template\n");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}
