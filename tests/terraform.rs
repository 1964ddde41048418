//! Terraform for target `aks`: rendered through the binary, checked with the real `terraform fmt`
//! and parsed back with hcl-rs. The check against the azurerm provider's own schema is in
//! tests/terraform_schema.rs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command as Std;

use hcl::eval::Evaluate;
use hcl::{Block, Body, Expression, ObjectKey};

#[path = "support/specs.rs"]
mod shipped;

use shipped::{label, render, root};

const TERRAFORM: &str = "/usr/local/bin/terraform";

/// Every shipped spec with target aks.
fn aks_specs() -> Vec<(PathBuf, Option<&'static str>)> {
    let specs = shipped::specs(&["aks"]);
    assert!(specs.len() >= 6, "expected the root spec and the aks examples, got {specs:?}");
    specs
}

fn parse(path: &Path) -> Body {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hcl::from_str::<Body>(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}\n{text}", path.display()))
}

fn tf_files(out: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(out.join("terraform")).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    files
}

fn resources(body: &Body) -> impl Iterator<Item = &Block> {
    body.blocks().filter(|b| b.identifier() == "resource")
}

fn resource_type(b: &Block) -> &str {
    b.labels()[0].as_str()
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes().find(|a| a.key() == key).map(|a| a.expr())
}

fn block<'a>(body: &'a Body, name: &str) -> Option<&'a Block> {
    body.blocks().find(|b| b.identifier() == name)
}

/// The value of a literal expression (templates evaluated, so `$${` reads back as `${`).
fn value(e: &Expression) -> hcl::Value {
    e.evaluate(&hcl::eval::Context::new()).unwrap_or_else(|err| panic!("{e:?} is not a literal: {err}"))
}

fn string(e: &Expression) -> String {
    match value(e) {
        hcl::Value::String(s) => s,
        other => panic!("expected a string, got {other:?}"),
    }
}

fn strings(e: &Expression) -> Vec<String> {
    match value(e) {
        hcl::Value::Array(items) => items.into_iter().map(|v| v.as_str().expect("string item").to_string()).collect(),
        other => panic!("expected a list, got {other:?}"),
    }
}

/// An object literal as key → value; keys are evaluated like values.
fn object(e: &Expression) -> BTreeMap<String, String> {
    let Expression::Object(obj) = e else { panic!("expected an object, got {e:?}") };
    obj.iter()
        .map(|(k, v)| {
            let key = match k {
                ObjectKey::Identifier(i) => i.to_string(),
                ObjectKey::Expression(x) => string(x),
                other => panic!("unexpected object key {other:?}"),
            };
            (key, string(v))
        })
        .collect()
}

/// The configuration's hash reaches the resource group last: the tag is written by
/// an ARM deployment of the group's tags (azurerm_resource_group_template_deployment.applied),
/// which depends on every other resource,, and the group's own
/// `tags` leave that key to it.
#[test]
fn the_applied_tag_is_written_after_every_other_resource() {
    for (spec, env) in aks_specs() {
        let name = label(&spec, env);
        let out = render(&spec, env);
        let body = parse(&out.path().join("terraform/main.tf"));
        let applied = resources(&body)
            .find(|r| {
                resource_type(r) == "azurerm_resource_group_template_deployment" && r.labels()[1].as_str() == "applied"
            })
            .unwrap_or_else(|| panic!("{name}: azurerm_resource_group_template_deployment.applied"));
        assert_eq!(
            format!("{}", attr(applied.body(), "resource_group_name").unwrap()),
            "azurerm_resource_group.this.name"
        );
        assert_eq!(string(attr(applied.body(), "deployment_mode").unwrap()), "Incremental");
        let template = format!("{}", attr(applied.body(), "template_content").unwrap());
        for part in
            ["Microsoft.Resources/tags", "\"default\"", "raydeploy-applied", "var.raydeploy_applied", "local.tags"]
        {
            assert!(template.contains(part), "{name}: {part} in {template}");
        }
        let deps = format!("{}", attr(applied.body(), "depends_on").expect("depends_on"));
        for r in resources(&body) {
            let t = resource_type(r);
            if t == "azurerm_resource_group_template_deployment" || t == "azurerm_resource_group" {
                continue;
            }
            let addr = format!("{t}.{}", r.labels()[1].as_str());
            assert!(deps.contains(&addr), "{name}: the tag is written after {addr}: depends_on = {deps}");
        }
        let rg = resources(&body).find(|r| resource_type(r) == "azurerm_resource_group").unwrap();
        let ignored = block(rg.body(), "lifecycle")
            .and_then(|l| attr(l.body(), "ignore_changes"))
            .map(|e| format!("{e}").split_whitespace().collect::<String>());
        assert_eq!(ignored.as_deref(), Some(r#"[tags["raydeploy-applied"]]"#), "{name}");
        let vars: Vec<String> = body
            .blocks()
            .filter(|b| b.identifier() == "variable")
            .map(|b| b.labels()[0].as_str().to_string())
            .collect();
        assert!(vars.contains(&"raydeploy_applied".to_string()), "{name}: {vars:?}");
    }
}

#[test]
fn terraform_fmt_accepts_every_render() {
    assert!(Path::new(TERRAFORM).is_file(), "{TERRAFORM} is missing");
    for (spec, env) in aks_specs() {
        let out = render(&spec, env);
        let dir = out.path().join("terraform");
        assert!(
            dir.join("main.tf").is_file() && dir.join("providers.tf").is_file() && dir.join("outputs.tf").is_file(),
            "{}: missing files",
            label(&spec, env)
        );
        let res = Std::new(TERRAFORM).args(["fmt", "-check", "-diff"]).arg(&dir).output().unwrap();
        assert!(
            res.status.success(),
            "terraform fmt -check failed for {}:\n{}{}",
            label(&spec, env),
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
    }
}

#[test]
fn backend_exists_exactly_with_remote_state() {
    for (spec, env) in aks_specs() {
        let name = label(&spec, env);
        let with_state = name == "raydeploy.yaml -e prod" || name == "examples/xgboost-blob/raydeploy.yaml";
        let out = render(&spec, env);
        let backend = out.path().join("terraform/backend.tf");
        assert_eq!(backend.is_file(), with_state, "{name}: backend.tf presence");
        if with_state {
            let body = parse(&backend);
            let tf = block(&body, "terraform").expect("terraform block");
            let be = block(tf.body(), "backend").expect("backend block");
            assert_eq!(be.labels()[0].as_str(), "azurerm");
            let keys: BTreeSet<&str> = be.body().attributes().map(|a| a.key()).collect();
            assert_eq!(
                keys,
                BTreeSet::from(["resource_group_name", "storage_account_name", "container_name", "key"]),
                "{name}"
            );
        }
    }
}

#[test]
fn pools_carry_scaling_priority_and_taints() {
    for (spec, env) in aks_specs() {
        let name = label(&spec, env);
        let out = render(&spec, env);
        let body = parse(&out.path().join("terraform/main.tf"));
        let aks = resources(&body).find(|r| resource_type(r) == "azurerm_kubernetes_cluster").expect("cluster");
        let system = block(aks.body(), "default_node_pool").expect("default_node_pool");
        assert_eq!(
            attr(system.body(), "only_critical_addons_enabled").map(value),
            Some(hcl::Value::Bool(true)),
            "{name}: system pool"
        );
        for p in resources(&body).filter(|r| resource_type(r) == "azurerm_kubernetes_cluster_node_pool") {
            let pool = string(attr(p.body(), "name").unwrap());
            let autoscaled = attr(p.body(), "auto_scaling_enabled").map(value) == Some(hcl::Value::Bool(true));
            let ignored = block(p.body(), "lifecycle")
                .and_then(|l| attr(l.body(), "ignore_changes"))
                .map(|e| format!("{e}"))
                .unwrap_or_default();
            assert_eq!(
                ignored.contains("node_count"),
                autoscaled,
                "{name} pool {pool}: ignore_changes = [node_count] exactly when autoscaled"
            );
            assert_eq!(
                attr(p.body(), "min_count").is_some(),
                autoscaled,
                "{name} pool {pool}: min_count only when autoscaled"
            );
            assert_eq!(string(attr(p.body(), "mode").unwrap()), "User");
        }
    }

    let out = render(&root().join("examples/gpu-autoscaling/raydeploy.yaml"), None);
    let body = parse(&out.path().join("terraform/main.tf"));
    let gpu = resources(&body)
        .filter(|r| resource_type(r) == "azurerm_kubernetes_cluster_node_pool")
        .find(|r| string(attr(r.body(), "vm_size").unwrap()).starts_with("Standard_NC"))
        .expect("a GPU pool");
    let taints = strings(attr(gpu.body(), "node_taints").expect("node_taints"));
    assert!(taints.iter().any(|t| t == "nvidia.com/gpu=present:NoSchedule"), "{taints:?}");
    assert_eq!(string(attr(gpu.body(), "priority").unwrap()), "Spot");
    assert_eq!(string(attr(gpu.body(), "eviction_policy").unwrap()), "Delete");
    assert_eq!(value(attr(gpu.body(), "spot_max_price").unwrap()), hcl::Value::from(-1));
    assert_eq!(value(attr(gpu.body(), "auto_scaling_enabled").unwrap()), hcl::Value::Bool(true));
    assert_eq!(value(attr(gpu.body(), "min_count").unwrap()), hcl::Value::from(0));
}

#[test]
fn hostile_tags_read_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("raydeploy.yaml");
    std::fs::write(
        &spec,
        r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: hostile
target: aks
azure:
  location: westeurope
  kubernetesVersion: "1.30"
  tags:
    quote: 'say "hi"'
    backslash: 'C:\temp\'
    newline: "line1\nline2"
    interp: '$${x}'
    directive: '%{y}'
    'k "${z}" %{w} \': 'all "\ ${a} %{b}'
image:
  rayVersion: "2.52.0"
  python: "3.11"
cluster:
  head:
    vmSize: Standard_D8s_v5
"#,
    )
    .unwrap();
    let out = render(&spec, None);
    let dir_tf = out.path().join("terraform");
    let res = Std::new(TERRAFORM).args(["fmt", "-check", "-diff"]).arg(&dir_tf).output().unwrap();
    assert!(res.status.success(), "terraform fmt -check:\n{}", String::from_utf8_lossy(&res.stdout));
    let body = parse(&dir_tf.join("main.tf"));
    let locals = block(&body, "locals").expect("locals");
    let tags = object(attr(locals.body(), "tags").expect("local.tags"));
    let want = BTreeMap::from([
        ("quote".to_string(), r#"say "hi""#.to_string()),
        ("backslash".into(), r"C:\temp\".into()),
        ("newline".into(), "line1\nline2".into()),
        ("interp".into(), "${x}".into()),
        ("directive".into(), "%{y}".into()),
        (r#"k "${z}" %{w} \"#.into(), r#"all "\ ${a} %{b}"#.into()),
        ("raydeploy-deployment".into(), "hostile".into()),
    ]);
    assert_eq!(tags, want);
}

#[test]
fn rendering_is_deterministic() {
    let spec = root().join("examples/gpu-autoscaling/raydeploy.yaml");
    let (a, b) = (render(&spec, None), render(&spec, None));
    for f in tf_files(a.path()) {
        let rel = f.strip_prefix(a.path()).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), std::fs::read(b.path().join(rel)).unwrap(), "{}", rel.display());
    }
}

#[test]
fn an_unpinned_kubernetes_version_is_a_variable_an_existing_cluster_ignores() {
    // `raydeploy init`'s starter spec leaves the version to the newest AKS offers.
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("raydeploy.yaml");
    std::fs::write(&spec, raydeploy::cli::STARTER).unwrap();
    let out = render(&spec, None);
    let tf = out.path().join("terraform");
    let res = Std::new(TERRAFORM).args(["fmt", "-check", "-diff"]).arg(&tf).output().unwrap();
    assert!(res.status.success(), "terraform fmt -check:\n{}", String::from_utf8_lossy(&res.stdout));
    let body = parse(&tf.join("main.tf"));
    let var = body
        .blocks()
        .find(|b| b.identifier() == "variable" && b.labels()[0].as_str() == "kubernetes_version")
        .expect("variable kubernetes_version");
    assert_eq!(attr(var.body(), "default").map(value), Some(hcl::Value::Null));
    let aks = resources(&body).find(|r| resource_type(r) == "azurerm_kubernetes_cluster").expect("cluster");
    assert_eq!(format!("{}", attr(aks.body(), "kubernetes_version").unwrap()), "var.kubernetes_version");
    let ignored = |b: &Block| {
        block(b.body(), "lifecycle")
            .and_then(|l| attr(l.body(), "ignore_changes"))
            .map(|e| format!("{e}"))
            .unwrap_or_default()
    };
    let cluster_ignores: String = ignored(aks).split_whitespace().collect();
    assert_eq!(cluster_ignores, "[kubernetes_version]");
    // Pools follow the control plane: a pool added later is never newer than an existing cluster.
    let system = block(aks.body(), "default_node_pool").unwrap();
    assert!(attr(system.body(), "orchestrator_version").is_none());
    let pools: Vec<&Block> =
        resources(&body).filter(|r| resource_type(r) == "azurerm_kubernetes_cluster_node_pool").collect();
    assert!(!pools.is_empty());
    for p in pools {
        assert!(attr(p.body(), "orchestrator_version").is_none());
    }

    // A pinned version is a literal, and nothing ignores it.
    let out = render(&root().join("examples/gpu-autoscaling/raydeploy.yaml"), None);
    let text = std::fs::read_to_string(out.path().join("terraform/main.tf")).unwrap();
    assert!(
        !text.contains("variable \"kubernetes_version\"") && !text.contains("ignore_changes = [kubernetes_version]")
    );
    assert!(text.contains(r#"orchestrator_version        = "1.34""#), "{text}");
    // azure.zones: every pool, the system pool too.
    let body = parse(&out.path().join("terraform/main.tf"));
    let aks = resources(&body).find(|r| resource_type(r) == "azurerm_kubernetes_cluster").expect("cluster");
    let system = block(aks.body(), "default_node_pool").unwrap();
    assert_eq!(strings(attr(system.body(), "zones").expect("system pool zones")), ["1", "2", "3"]);
    for p in resources(&body).filter(|r| resource_type(r) == "azurerm_kubernetes_cluster_node_pool") {
        assert_eq!(strings(attr(p.body(), "zones").expect("pool zones")), ["1", "2", "3"]);
    }
}
