//! `raydeploy plan` and the destructive-change guard, offline: golden text and JSON plans for
//! change scenarios of examples/xgboost-blob (replicas, a pip package, a pool's VM size, a
//! secret's source, the first deploy), exit codes, colour, plan files and `deploy --plan`
//! refusing a plan once anything moved. Nothing here needs a tool on PATH: every test runs with an
//! empty PATH so that any command raydeploy tried to start would fail the test.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

#[path = "support/specs.rs"]
mod shipped;

/// A scratch copy of examples/xgboost-blob with the render of the original as the baseline
/// (`base/`), and an empty folder as PATH.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        shipped::copy_tree(&shipped::root().join("examples/xgboost-blob"), &dir.path().join("spec"));
        std::fs::create_dir_all(dir.path().join("empty-path")).unwrap();
        let s = Scratch { dir };
        let out = s.raydeploy().args(["render", "spec/raydeploy.yaml", "--out", "base"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        s
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn raydeploy(&self) -> Command {
        let mut c = Command::cargo_bin("raydeploy").unwrap();
        c.current_dir(self.path())
            .env_clear()
            .env("PATH", self.path().join("empty-path"))
            .env("HOME", self.path())
            .env("NO_COLOR", "1")
            .env("CI", "true");
        c
    }

    fn edit(&self, from: &str, to: &str) {
        let p = self.path().join("spec/raydeploy.yaml");
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{from} not in the spec");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    /// `plan --against base` as (exit code, stdout, stderr).
    fn plan(&self, extra: &[&str]) -> (i32, String, String) {
        let out =
            self.raydeploy().args(["plan", "spec/raydeploy.yaml", "--against", "base"]).args(extra).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn state_dir(&self) -> PathBuf {
        self.path().join("spec/.raydeploy/xgb")
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn layer<'a>(plan: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    plan["layers"].as_array().unwrap().iter().find(|l| l["layer"] == name).unwrap_or_else(|| panic!("no layer {name}"))
}

#[test]
fn unchanged_spec_exits_0() {
    let s = Scratch::new();
    let (code, out, err) = s.plan(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("No changes."), "{out}");
    let (code, out, _) = s.plan(&["--output", "json"]);
    assert_eq!(code, 0);
    let p = json(&out);
    assert_eq!(p["format_version"], 1);
    assert_eq!(p["changes"], false);
    assert!(p["layers"].as_array().unwrap().iter().all(|l| l["status"] == "unchanged"));
}

#[test]
fn replicas_change() {
    let s = Scratch::new();
    s.edit("replicas: 4", "replicas: 6");
    let (code, out, _) = s.plan(&[]);
    assert_eq!(code, 2);
    insta::assert_snapshot!("plan_replicas", out);
    let (_, out, _) = s.plan(&["--output", "json"]);
    let p = json(&out);
    let infra = layer(&p, "infra");
    let pool = infra["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == "azurerm_kubernetes_cluster_node_pool.train");
    assert_eq!(pool.unwrap()["action"], "update", "{infra}");
    assert_eq!(layer(&p, "cluster")["status"], "changes");
    assert_eq!(layer(&p, "image")["status"], "unchanged");
    assert!(p["destructive"].as_array().unwrap().is_empty());
    insta::assert_json_snapshot!("plan_replicas_json", p);
}

#[test]
fn pip_package_added() {
    let s = Scratch::new();
    s.edit(r#""adlfs==2024.7.0"]"#, r#""adlfs==2024.7.0", "pandas==2.2.3"]"#);
    let (code, out, _) = s.plan(&[]);
    assert_eq!(code, 2);
    insta::assert_snapshot!("plan_pip", out);
    let (_, out, _) = s.plan(&["--output", "json"]);
    let p = json(&out);
    let image = layer(&p, "image");
    assert_eq!(image["items"][0]["action"], "build", "{image}");
    assert_eq!(layer(&p, "infra")["status"], "unchanged");
    assert_eq!(layer(&p, "operator")["status"], "unchanged");
}

#[test]
fn pool_vm_size_change_is_destructive_and_guarded() {
    let s = Scratch::new();
    s.edit("vmSize: Standard_E16s_v5", "vmSize: Standard_E32s_v5");
    let (code, out, _) = s.plan(&[]);
    assert_eq!(code, 2);
    insta::assert_snapshot!("plan_vm_size", out);
    let first = out.lines().position(|l| l.contains("DESTRUCTIVE")).unwrap();
    let infra = out.lines().position(|l| l.starts_with("infra:")).unwrap();
    assert!(first < infra, "destructive changes come first:\n{out}");
    // With temporary_name_for_rotation the provider cycles the pool instead of replacing it.
    assert!(
        out.contains(
            "!! node pool `train` is cycled: running Ray pods on it are rescheduled; vm_size Standard_E16s_v5 → \
             Standard_E32s_v5, through the temporary pool `traintmp` (azurerm_kubernetes_cluster_node_pool.train)"
        ),
        "{out}"
    );
    assert!(!out.contains("lost") && !out.contains("replaced"), "a cycle is not a replacement:\n{out}");

    // deploy refuses it before running anything (the last applied snapshot is the baseline).
    std::fs::create_dir_all(s.state_dir()).unwrap();
    shipped::copy_tree(&s.path().join("base"), &s.state_dir().join("applied"));
    let out = s.raydeploy().args(["deploy", "spec/raydeploy.yaml", "--auto-approve"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refusing destructive changes") && err.contains("node pool `train` is cycled"), "{err}");
    assert!(!s.state_dir().join("state.json").exists(), "nothing ran");
    // With --allow-destroy the guard lets it through (the preflight then finds no tools here).
    let out =
        s.raydeploy().args(["deploy", "spec/raydeploy.yaml", "--auto-approve", "--allow-destroy"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("refusing destructive"), "{err}");
    assert!(err.contains("preflight"), "{err}");
}

#[test]
fn a_cycled_pool_and_a_replaced_pool_are_told_apart() {
    let s = Scratch::new();
    // The system pool's size: the cluster cycles its default node pool.
    s.edit("network: { plugin: kubenet }", "network: { plugin: kubenet }\n  systemPool: { vmSize: Standard_D4s_v5 }");
    // Spot: priority forces a new pool, whatever temporary_name_for_rotation says.
    s.edit("      replicas: 4\n", "      replicas: 4\n      spot: true\n");
    let (code, out, _) = s.plan(&[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(
            "!! the system node pool is cycled: the system pods on it are rescheduled; default_node_pool.vm_size \
             Standard_D2s_v5 → Standard_D4s_v5, through the temporary pool `systemtmp` (azurerm_kubernetes_cluster.this)"
        ),
        "{out}"
    );
    let replaced = out.lines().find(|l| l.contains("node pool `train`")).unwrap_or_default();
    assert!(
        replaced.contains("node pool `train` is replaced:")
            && replaced.contains("priority ? → Spot")
            && replaced.ends_with("running Ray pods on it are lost (azurerm_kubernetes_cluster_node_pool.train)"),
        "{out}"
    );
    assert!(out.contains("-/+ azurerm_kubernetes_cluster_node_pool.train"), "{out}");

    let (_, out, _) = s.plan(&["--output", "json"]);
    let p = json(&out);
    let reasons: Vec<&str> =
        p["destructive"].as_array().unwrap().iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.starts_with("the system node pool is cycled:")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.starts_with("node pool `train` is replaced:")), "{reasons:?}");
}

#[test]
fn secret_source_change_shows_keys_never_values() {
    let s = Scratch::new();
    s.edit("fromEnv: XGB_STORAGE_ACCOUNT", "fromEnv: XGB_ACCOUNT_NAME");
    let (code, out, _) = s.plan(&[]);
    assert_eq!(code, 2);
    insta::assert_snapshot!("plan_secret_source", out);
    assert!(out.contains("~ blob-creds.azurestorageaccountname: <from env XGB_ACCOUNT_NAME>"), "{out}");
}

#[test]
fn first_deploy_creates_every_layer() {
    let s = Scratch::new();
    let out = s.raydeploy().args(["plan", "spec/raydeploy.yaml", "--offline", "--output", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let p = json(&String::from_utf8(out.stdout).unwrap());
    for l in p["layers"].as_array().unwrap() {
        // Jobs are runs, not state: created only by deploy --with-jobs.
        let want = if l["layer"] == "jobs" { "unchanged" } else { "create" };
        assert_eq!(l["status"], want, "{l}");
    }
    let out = s
        .raydeploy()
        .args(["plan", "spec/raydeploy.yaml", "--offline", "--with-jobs", "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let jobs = json(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(layer(&jobs, "jobs")["status"], "create");
    assert_eq!(layer(&jobs, "jobs")["items"][0]["action"], "run");
    let infra = layer(&p, "infra");
    assert!(infra["resources"].as_array().unwrap().iter().all(|r| r["action"] == "create"));
    assert!(layer(&p, "operator")["note"].as_str().unwrap().contains("created after crds"));
    let out = s.raydeploy().args(["plan", "spec/raydeploy.yaml", "--offline"]).output().unwrap();
    insta::assert_snapshot!("plan_first_deploy", String::from_utf8(out.stdout).unwrap());
}

#[test]
fn jobs_are_runs_counted_as_changes_only_with_with_jobs() {
    let s = Scratch::new();
    // A changed job alone: a deploy without --with-jobs does nothing with it.
    s.edit("--out /data/models", "--out /data/models --epochs 3");
    let (code, out, err) = s.plan(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("No changes."), "{out}");
    assert!(out.contains("jobs: no changes"), "{out}");
    assert!(out.contains("i RayJob/train: manifest changed since the last deploy"), "{out}");
    assert!(out.contains("--epochs 3"), "the manifests' diff is shown: {out}");
    let (_, out, _) = s.plan(&["--output", "json"]);
    let p = json(&out);
    assert_eq!(p["changes"], false);
    assert_eq!(layer(&p, "jobs")["items"][0]["action"], "info");

    // plan --with-jobs counts what deploy --with-jobs submits (no job ran with these inputs).
    let (code, out, _) = s.plan(&["--with-jobs"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("Changes in: jobs."), "{out}");
    assert!(
        out.contains("> RayJob/train: manifest changed since the last deploy; submitted by deploy --with-jobs"),
        "{out}"
    );
    let (_, out, _) = s.plan(&["--with-jobs", "--output", "json"]);
    let p = json(&out);
    assert_eq!(p["changes"], true);
    assert_eq!(layer(&p, "jobs")["status"], "changes");
    assert_eq!(layer(&p, "jobs")["items"][0]["action"], "run");
}

#[test]
fn colour_only_on_request() {
    let s = Scratch::new();
    s.edit("replicas: 4", "replicas: 6");
    let (_, out, _) = s.plan(&[]);
    assert!(!out.contains('\x1b'), "no colour without a terminal");
}

#[test]
fn deploy_plan_refuses_a_plan_once_anything_moved() {
    let s = Scratch::new();
    s.edit("replicas: 4", "replicas: 5");
    let (code, _, err) = s.plan(&["--out", "release.plan"]);
    assert_eq!(code, 2, "{err}");
    let file = json(&std::fs::read_to_string(s.path().join("release.plan")).unwrap());
    assert_eq!(file["format_version"], 1);
    assert_eq!(file["plan"]["changes"], true);

    s.edit("replicas: 5", "replicas: 6");
    let out = s
        .raydeploy()
        .args(["deploy", "spec/raydeploy.yaml", "--plan", "release.plan", "--auto-approve"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no longer matches") && err.contains("the spec changed"), "{err}");
    assert!(!s.state_dir().join("state.json").exists(), "nothing ran");

    // A plan of another deployment is refused by name.
    let mut other = file.clone();
    other["deployment"] = "someone-else".into();
    std::fs::write(s.path().join("other.plan"), other.to_string()).unwrap();
    let out = s
        .raydeploy()
        .args(["deploy", "spec/raydeploy.yaml", "--plan", "other.plan", "--auto-approve"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a plan for `someone-else`"));
}

#[test]
fn plan_errors_exit_1() {
    let s = Scratch::new();
    let out = s.raydeploy().args(["plan", "spec/raydeploy.yaml", "--against", "missing"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--against missing: no such folder"));
    s.edit("replicas: 4", "replicas: -4");
    let (code, _, err) = s.plan(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("replicas"), "{err}");
}

#[test]
fn ci_examples_use_commands_and_flags_that_exist() {
    let s = Scratch::new();
    for f in ["github-actions.yml", "azure-pipelines.yml"] {
        let text = std::fs::read_to_string(shipped::root().join("examples/ci").join(f)).unwrap();
        let _: serde_json::Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
        let mut seen = 0;
        for line in text.lines() {
            if line.trim_start().starts_with('#') {
                continue;
            }
            let line = line.split(" #").next().unwrap_or_default();
            let Some(pos) = line.find("raydeploy ") else { continue };
            let words: Vec<&str> = line[pos + "raydeploy ".len()..].split_whitespace().collect();
            let Some(sub) = words.first().filter(|w| w.chars().all(|c| c.is_ascii_lowercase())) else { continue };
            let help = s.raydeploy().args([sub, "--help"]).output().unwrap();
            assert!(help.status.success(), "{f}: `raydeploy {sub}` is not a command");
            let help = String::from_utf8_lossy(&help.stdout).to_string();
            for flag in words.iter().filter(|w| w.starts_with("--")) {
                let flag = flag.split('=').next().unwrap();
                assert!(help.contains(flag), "{f}: `raydeploy {sub}` has no flag {flag}");
            }
            seen += 1;
        }
        assert!(seen >= 4, "{f}: expected raydeploy commands");
    }
}
