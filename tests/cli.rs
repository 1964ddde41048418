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

#[test]
fn usage_errors_exit_1_and_help_and_version_exit_0() {
    // 2 means "changes" to `plan` callers: a usage error must never look like that.
    for args in [
        &["plan", "--bogus"][..],
        &["plan", "--detailed-exitcode", "--bogus"],
        &["plan", "--output", "yaml"],
        &["nonsense"],
        &[],
        &["completions", "no-such-shell"],
        &["job", "submit"],
    ] {
        let out = raydeploy().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "raydeploy {args:?}: {err}");
        assert!(!err.trim().is_empty(), "raydeploy {args:?} explains the usage error");
    }
    for args in [&["--help"][..], &["--version"], &["plan", "--help"], &["help", "deploy"], &["-V"]] {
        let out = raydeploy().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "raydeploy {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(!out.stdout.is_empty(), "raydeploy {args:?} prints on stdout");
    }
}

/// A spec without `image.rayVersion` (and, second, without `image` at all) in a temp folder.
fn spec_without_ray_version(dir: &Path, with_image: bool) -> std::path::PathBuf {
    let image = if with_image { "image:\n  python: \"3.11\"\n" } else { "" };
    let spec = dir.join("raydeploy.yaml");
    std::fs::write(
        &spec,
        format!(
            "apiVersion: raydeploy/v1\nkind: RayDeployment\nname: norv\ntarget: local\n{image}cluster:\n  head: {{ cpu: 1, memory: 1Gi }}\n"
        ),
    )
    .unwrap();
    spec
}

#[test]
fn a_defaulted_ray_version_is_announced_where_image_is() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_without_ray_version(dir.path(), true);
    let want = format!("warning: {}:5:1: image.rayVersion is not set: using Ray 2.52.0", spec.display());
    let out = dir.path().join("out");
    for args in [
        vec!["validate"],
        vec!["render", "--out", out.to_str().unwrap()],
        vec!["plan", "--offline"],
        vec!["deploy", "--dry-run"],
    ] {
        let o = raydeploy().args(&args).arg(&spec).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&want), "raydeploy {args:?}: {err}");
        assert!(err.contains("set image.rayVersion: \"2.52.0\" to pin it"), "{err}");
    }
    // No image section: the warning points at the top of the spec.
    let spec = spec_without_ray_version(dir.path(), false);
    let o = raydeploy().arg("validate").arg(&spec).output().unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("{}:1:1: image.rayVersion is not set", spec.display())), "{err}");
    // Set: no warning.
    let o = raydeploy().args(["validate", "examples/local/raydeploy.yaml"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&o.stderr).contains("rayVersion"));
}

/// `MemTotal` of this machine, or its cgroup limit when lower (what the local target caps at).
fn machine_memory() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let limit = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|t| t.trim().parse::<u64>().ok());
    limit.map_or(kb * 1024, |l| l.min(kb * 1024))
}

#[test]
fn local_sizing_of_huge_quantities_stays_within_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("raydeploy.yaml");
    std::fs::write(
        &spec,
        r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: huge
target: local
image: { rayVersion: "2.52.0" }
cluster:
  head: { cpu: 1, memory: 1Gi }
  workerGroups:
    - { name: a, cpu: 4294967297, memory: 8388607Ti, replicas: 2147483647 }
    - { name: b, cpu: 1, memory: 8388607Ti, replicas: 2147483647 }
    - { name: c, cpu: 1, memory: 1Gi, replicas: 2147483647 }
"#,
    )
    .unwrap();
    let out = raydeploy().args(["deploy", "--dry-run"]).arg(&spec).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let starts: Vec<&str> =
        text.lines().filter(|l| l.trim_start().starts_with("$ ") && l.contains("/ray start")).collect();
    let flag = |line: &str, name: &str| -> u64 {
        let words: Vec<&str> = line.split_whitespace().collect();
        let i = words.iter().position(|w| *w == name).unwrap_or_else(|| panic!("no {name} in {line}"));
        words[i + 1].parse().unwrap_or_else(|_| panic!("{name} {} in {line}", words[i + 1]))
    };
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    let mut memory = 0;
    for l in &starts {
        assert!(flag(l, "--num-cpus") <= cpus, "{l}");
        memory += flag(l, "--memory") + flag(l, "--object-store-memory");
    }
    assert!(memory <= machine_memory() / 4 * 3, "{memory} bytes over 3/4 of the machine:\n{text}");
    // One node per group at least, and never more than the machine's CPUs allow.
    assert!(starts.len() >= 4 && starts.len() as u64 <= cpus + 4, "{} nodes:\n{text}", starts.len());
}

#[test]
fn start_params_and_mount_paths_render_normalized() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("raydeploy.yaml");
    std::fs::write(
        &spec,
        r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: norm
target: kubernetes
kubernetes: { registry: docker.io/acme/ray }
image: { rayVersion: "2.52.0" }
cluster:
  head:
    cpu: 1
    memory: 2Gi
    rayStartParams: { num-cpus: "0", resources: '"{"accel_x": 1}"' }
  mounts:
    - { name: data, type: pvc, claimName: data, path: "/data//in/" }
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    raydeploy().arg("render").arg(&spec).arg("--out").arg(&out).assert().success();
    let values: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(out.join("helm/ray-cluster.values.yaml")).unwrap()).unwrap();
    let params = &values["head"]["rayStartParams"];
    assert_eq!(params["resources"], r#"'{"accel_x":1}'"#, "{params}");
    assert_eq!(params["num-cpus"], "0");
    let text = values.to_string();
    assert!(text.contains(r#""mountPath":"/data/in""#) && !text.contains("/data//in"), "{text}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}
