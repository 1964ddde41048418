//! The rendered Terraform against the azurerm provider's own schema (tests/azurerm/schema.json,
//! from `terraform providers schema -json` of the real provider; see tests/azurerm/PROVENANCE.md):
//! every example, the top-level spec under each environment, `raydeploy init`'s starter spec and
//! the fixtures in tests/azurerm/specs, which between them take every optional branch of the
//! templates. No network and no provider binary needed; where the binary is in the local
//! filesystem mirror, the real `terraform validate` runs on every render too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command as Std;

#[path = "support/specs.rs"]
mod shipped;
#[path = "support/tf_schema.rs"]
mod tf_schema;

use tf_schema::{Checker, Found, Schemas};

/// tests/azurerm/specs/*.yaml
fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(tf_schema::dir().join("specs"))
        .expect("tests/azurerm/specs")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    assert!(v.len() >= 3, "expected the branch fixtures, got {v:?}");
    v
}

/// Every render with target aks: (label, rendered folder).
fn renders() -> Vec<(String, tempfile::TempDir)> {
    let mut out = vec![];
    for (spec, env) in shipped::specs(&["aks"]) {
        out.push((shipped::label(&spec, env), shipped::render(&spec, env)));
    }
    for spec in fixtures() {
        out.push((shipped::label(&spec, None), shipped::render(&spec, None)));
    }
    let starter = tempfile::tempdir().unwrap();
    let spec = starter.path().join("raydeploy.yaml");
    std::fs::write(&spec, raydeploy::cli::STARTER).unwrap();
    out.push(("raydeploy init's starter spec".into(), shipped::render(&spec, None)));
    out
}

/// Optional template branches: each path must be set in some block of its type and left out in
/// another (over all renders), so that the fixtures exercise both sides of every `if`.
const BRANCHES: &[&str] = &[
    "backend.azurerm",
    "provider \"azurerm\".subscription_id",
    "azurerm_kubernetes_cluster.lifecycle",
    "azurerm_kubernetes_cluster.default_node_pool.orchestrator_version",
    "azurerm_kubernetes_cluster.default_node_pool.zones",
    "azurerm_kubernetes_cluster.network_profile.network_plugin_mode",
    "azurerm_kubernetes_cluster.storage_profile",
    "azurerm_kubernetes_cluster.storage_profile.blob_driver_enabled",
    "azurerm_kubernetes_cluster.storage_profile.file_driver_enabled",
    "azurerm_kubernetes_cluster_node_pool.orchestrator_version",
    "azurerm_kubernetes_cluster_node_pool.zones",
    "azurerm_kubernetes_cluster_node_pool.auto_scaling_enabled",
    "azurerm_kubernetes_cluster_node_pool.min_count",
    "azurerm_kubernetes_cluster_node_pool.max_count",
    "azurerm_kubernetes_cluster_node_pool.lifecycle",
    "azurerm_kubernetes_cluster_node_pool.priority",
    "azurerm_kubernetes_cluster_node_pool.eviction_policy",
    "azurerm_kubernetes_cluster_node_pool.spot_max_price",
    "azurerm_kubernetes_cluster_node_pool.node_taints",
    "azurerm_kubernetes_cluster_node_pool.upgrade_settings",
];

#[test]
fn every_rendered_block_matches_the_azurerm_schema() {
    let schemas = Schemas::load();
    let mut c = Checker::new(&schemas);
    let mut renders_seen: Vec<(String, BTreeSet<String>)> = vec![];
    let renders = renders();
    for (label, out) in &renders {
        let before = c.instances.len();
        c.check_folder(&out.path().join("terraform"), &format!("{label}: terraform/"));
        let kinds: BTreeSet<String> = c.instances[before..].iter().map(|(k, _)| k.clone()).collect();
        renders_seen.push((label.clone(), kinds));
    }
    println!(
        "azurerm {}: {} renders, {} blocks, {} arguments, {} references checked",
        schemas.provider_version,
        renders.len(),
        c.blocks,
        c.arguments,
        c.references
    );
    assert!(
        c.problems.is_empty(),
        "the azurerm {} schema rejects the rendered Terraform:\n{}",
        schemas.provider_version,
        c.problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
    );
    assert!(c.blocks > 0 && c.arguments > 0 && c.references > 0);

    for want in [
        "azurerm_resource_group",
        "azurerm_container_registry",
        "azurerm_kubernetes_cluster",
        "azurerm_kubernetes_cluster_node_pool",
        "azurerm_role_assignment",
        "provider \"azurerm\"",
    ] {
        for (label, kinds) in &renders_seen {
            assert!(kinds.contains(want), "{label}: no {want} checked");
        }
    }
    // A backend is a whole block a render has or not; the rest is per block of the type.
    let with_backend = renders_seen.iter().filter(|(_, k)| k.contains("backend.azurerm")).count();
    assert!(with_backend > 0 && with_backend < renders_seen.len(), "backend in {with_backend} renders");
    for branch in BRANCHES.iter().filter(|b| !b.starts_with("backend.")) {
        let of_type: Vec<&BTreeSet<String>> =
            c.instances.iter().filter(|(k, _)| branch.starts_with(&format!("{k}."))).map(|(_, s)| s).collect();
        let with = of_type.iter().filter(|s| s.contains(*branch)).count();
        assert!(with > 0, "no render sets {branch}: add a fixture in tests/azurerm/specs");
        assert!(with < of_type.len(), "every block sets {branch}: add a fixture that leaves it out");
    }
}

/// A configuration with one of each mistake, checked against the real schema: each line that
/// must be reported ends with `# expect: <words of the report>`.
#[test]
fn the_checker_reports_each_mistake_at_its_line_in_the_schemas_words() {
    let schemas = Schemas::load();
    let main = r#"terraform {
  required_providers {
    azurerm = { # expect: version constraint "~> 4.0" excludes azurerm 5.2.0
      source  = "hashicorp/azurerm"
      version = "~> 4.0"
    }
  }
  backend "azurerm" { # expect: required argument `key` of backend "azurerm" (Terraform 1.5.7) is missing (schema: "The blob key.")
    storage_account_name = "st"
    container_name       = "tfstate"
    account_key          = "x" # expect: `account_key` is not an argument of backend "azurerm"
  }
}

provider "azurerm" {
  features {}
  skip_provider_registration = true # expect: `skip_provider_registration` is not an argument of provider "azurerm"
  subscription_id            = 42   # expect: `subscription_id` of provider "azurerm": a number where the schema's type is string (schema: "The Subscription ID
}

resource "azurerm_resource_group" "rg" {
  name     = "rg"
  location = true         # expect: `location` of azurerm_resource_group: a bool where the schema's type is string (provider docs: "(Required) The Azure Region
  tags     = { team = 1 } # expect: `tags` of azurerm_resource_group: key `team`: a number where the schema's type is string
}

resource "azurerm_kubernetes_cluster" "aks" { # expect: azurerm_kubernetes_cluster needs at least 1 `node_provisioning_profile` block(s), 0 given (nesting mode list) (provider docs: "(Required)
  name                = "aks"
  location            = azurerm_resource_group.rg.location
  resource_group_name = azurerm_resource_group.rg.nam # expect: reference azurerm_resource_group.rg.nam: no attribute or block `nam` (did you mean `name`?)
  dns_prefix          = "aks"
  fqdn                = "aks.example.com" # expect: `fqdn` of azurerm_kubernetes_cluster is computed only: the provider sets it, configuration cannot (provider docs: "The FQDN
  network_profile     = {}                # expect: `network_profile` is a block of azurerm_kubernetes_cluster, not an argument

  default_node_pool { # expect: required argument `name` of azurerm_kubernetes_cluster.default_node_pool is missing (provider docs: "(Required) The name which should be used for the default Kubernetes Node Pool.")
    vm_size = "Standard_D2s_v5"
  }

  default_node_pool { # expect: azurerm_kubernetes_cluster allows at most 1 `default_node_pool` block(s), 2 given
    name    = "second"
    vm_size = "Standard_D2s_v5"
  }

  identity {
    type = "SystemAssigned"
  }

  gpu_profile { # expect: `gpu_profile` is not a block of azurerm_kubernetes_cluster
  }
}

resource "azurerm_kubernetes_cluster_node_pool" "p" {
  name                  = "p"
  kubernetes_cluster_id = azurerm_kubernetes_cluster.aks.id
  vm_size               = "Standard_D2s_v5"
  node_count            = "2" # expect: `node_count` of azurerm_kubernetes_cluster_node_pool: a string where the schema's type is number
  zones                 = "1" # expect: `zones` of azurerm_kubernetes_cluster_node_pool: a string where the schema's type is set("string")

  lifecycle {
    ignore_changes = [node_cout] # expect: lifecycle.ignore_changes of azurerm_kubernetes_cluster_node_pool: no attribute or block `node_cout` (did you mean `node_count`?)
  }
}

resource "azurerm_storage_account" "sa" { # expect: resource type `azurerm_storage_account` is not in tests/azurerm/schema.json
  name = "sa"
}

output "kubelet" {
  value = azurerm_kubernetes_cluster.aks.kubelet_identity[0].object_idd # expect: reference azurerm_kubernetes_cluster.aks.kubelet_identity[…].object_idd: no attribute or block `object_idd` (did you mean `object_id`?)
}

output "pool" {
  value = local.missing # expect: reference local.missing: not declared
}
"#;
    let mut c = Checker::new(&schemas);
    c.check_sources(&[("main.tf".into(), main.into())]);
    let got: Vec<String> = c.problems.iter().map(|p| p.to_string()).collect();
    let expect: Vec<(usize, &str)> = main
        .lines()
        .enumerate()
        .filter_map(|(i, l)| l.split_once("# expect: ").map(|(_, want)| (i + 1, want)))
        .collect();
    assert!(expect.len() >= 18, "{}", expect.len());
    let missing: Vec<String> = expect
        .iter()
        .filter(|(line, want)| !got.iter().any(|g| g.starts_with(&format!("main.tf:{line}: ")) && g.contains(want)))
        .map(|(line, want)| format!("main.tf:{line}: …{want}…"))
        .collect();
    assert!(missing.is_empty(), "not reported:\n{}\n\nreported:\n{}", missing.join("\n"), got.join("\n"));
    assert_eq!(got.len(), expect.len(), "one problem per mistake:\n{}", got.join("\n"));
}

/// The destructive-change guard's lists (src/plan/azurerm.rs) name real arguments.
#[test]
fn guard_lists_name_arguments_of_the_provider_schema() {
    use raydeploy::plan::azurerm::{GUARDED, force_new, rotation};
    let schemas = Schemas::load();
    let mut missing = vec![];
    let mut checked = 0;
    let types: BTreeSet<&str> = schemas.resources.keys().map(String::as_str).collect();
    for rtype in GUARDED.iter().copied().chain(types.iter().copied()) {
        assert!(schemas.resources.contains_key(rtype), "{rtype} is not in tests/azurerm/schema.json");
        for (list, names) in [("force_new", force_new(rtype)), ("rotation", rotation(rtype))] {
            for name in names {
                checked += 1;
                if schemas.lookup(rtype, name).is_none() {
                    missing.push(format!("{list}({rtype}): `{name}`"));
                }
            }
        }
    }
    assert!(checked > 50, "{checked}");
    assert!(missing.is_empty(), "not arguments of azurerm {}:\n{}", schemas.provider_version, missing.join("\n"));
    // Rotation applies to arguments a pool can be given, never to computed-only ones.
    for rtype in ["azurerm_kubernetes_cluster", "azurerm_kubernetes_cluster_node_pool"] {
        for name in rotation(rtype) {
            if let Some(Found::Attr(a)) = schemas.lookup(rtype, name) {
                assert!(a.optional || a.required, "{rtype}.{name} is computed only");
            }
        }
    }
}

/// Arguments whose change the provider's reference says forces a new resource, but which force
/// it only on some changes (`ForceNewIfChange` or `CustomizeDiff` in the provider's source):
/// the guard leaves them to Terraform's own plan.
const CONDITIONALLY_FORCE_NEW: &[(&str, &str, &str)] = &[
    ("azurerm_kubernetes_cluster", "network_profile", "only some of its arguments, listed one by one"),
    ("azurerm_kubernetes_cluster", "network_profile.network_data_plane", "only from one data plane to another"),
    ("azurerm_kubernetes_cluster", "default_node_pool.upgrade_settings.drain_timeout_in_minutes", "only when unset"),
    ("azurerm_kubernetes_cluster", "default_node_pool.upgrade_settings.undrainable_node_behavior", "only when unset"),
    ("azurerm_kubernetes_cluster_node_pool", "os_sku", "only from or to an OS other than Ubuntu and AzureLinux"),
    ("azurerm_kubernetes_cluster_node_pool", "upgrade_settings.drain_timeout_in_minutes", "only when unset"),
    ("azurerm_kubernetes_cluster_node_pool", "upgrade_settings.undrainable_node_behavior", "only when unset"),
];

/// Every argument of a guarded type that the provider's reference (tests/azurerm/docs.json) says
/// forces a new resource is in the guard's force-new list, or known to force it only on some
/// changes.
#[test]
fn the_force_new_list_covers_the_providers_reference() {
    use raydeploy::plan::azurerm::{GUARDED, force_new, hits};
    let schemas = Schemas::load();
    let mut missing = vec![];
    let mut documented = 0;
    for rtype in GUARDED.iter().copied().chain(["azurerm_role_assignment", "azurerm_user_assigned_identity"]) {
        for (block, arg, text) in schemas.argument_docs(rtype) {
            if !text.to_lowercase().contains("forces a new") {
                continue;
            }
            let paths = if block.is_empty() { vec![String::new()] } else { schemas.block_paths(rtype, block) };
            assert!(!paths.is_empty(), "{rtype}: the reference's `{block}` block is not in the schema");
            for p in paths {
                let path = if p.is_empty() { arg.to_string() } else { format!("{p}.{arg}") };
                documented += 1;
                let conditional = CONDITIONALLY_FORCE_NEW.iter().any(|(t, a, _)| *t == rtype && *a == path);
                if !hits(force_new(rtype), &path) && !conditional {
                    missing.push(format!("{rtype}: `{path}`: \"{text}\""));
                }
            }
        }
    }
    assert!(documented > 50, "{documented}");
    assert!(missing.is_empty(), "not in force_new (src/plan/azurerm.rs):\n{}", missing.join("\n"));
}

/// The provider binary in the local filesystem mirror, if this machine has it.
fn mirrored_provider(version: &str) -> Option<(PathBuf, PathBuf)> {
    let mirror = std::env::var_os("RAYDEPLOY_TF_MIRROR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/raydeploy/terraform-mirror")))?;
    let bin = mirror.join(format!(
        "registry.terraform.io/hashicorp/azurerm/{version}/linux_amd64/terraform-provider-azurerm_v{version}"
    ));
    bin.is_file().then_some((mirror, bin))
}

/// Terraform binaries to validate with: the one the other tests use and the oldest the rendered
/// `required_version` admits, where present.
fn terraforms() -> Vec<PathBuf> {
    let mut v = vec![];
    if let Some(t) = std::env::var_os("RAYDEPLOY_TERRAFORM") {
        v.push(PathBuf::from(t));
    }
    v.push(PathBuf::from("/usr/local/bin/terraform"));
    if let Some(h) = std::env::var_os("HOME") {
        v.push(Path::new(&h).join(".cache/raydeploy/testbed/bin/terraform"));
    }
    let mut seen = BTreeSet::new();
    v.into_iter().filter(|p| p.is_file()).filter(|p| seen.insert(std::fs::canonicalize(p).unwrap())).collect()
}

#[test]
fn terraform_validate_with_the_real_provider() {
    let schemas = Schemas::load();
    let Some((mirror, _)) = mirrored_provider(&schemas.provider_version) else {
        println!(
            "skipped: terraform-provider-azurerm {} is not in the filesystem mirror (RAYDEPLOY_TF_MIRROR or \
             ~/.cache/raydeploy/terraform-mirror); tests/azurerm/extract.sh puts it there",
            schemas.provider_version
        );
        return;
    };
    let terraforms = terraforms();
    assert!(!terraforms.is_empty(), "no terraform binary");
    let work = tempfile::tempdir().unwrap();
    let cli = work.path().join("cli.tfrc");
    std::fs::write(
        &cli,
        format!(
            "provider_installation {{\n  filesystem_mirror {{\n    path    = {:?}\n    include = [\"registry.terraform.io/hashicorp/azurerm\"]\n  }}\n}}\n",
            mirror.display().to_string()
        ),
    )
    .unwrap();
    // Terraform copies the 330 MB binary into each folder it initialises, unless it can link it
    // from a plugin cache.
    let cache = work.path().join("plugin-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let mut failures = vec![];
    let mut validated = 0;
    for (label, out) in renders() {
        for tf in &terraforms {
            let dir = out.path().join("terraform");
            let _ = std::fs::remove_dir_all(dir.join(".terraform"));
            let _ = std::fs::remove_file(dir.join(".terraform.lock.hcl"));
            let run = |args: &[&str]| {
                Std::new(tf)
                    .arg(format!("-chdir={}", dir.display()))
                    .args(args)
                    .env("TF_CLI_CONFIG_FILE", &cli)
                    .env("TF_IN_AUTOMATION", "1")
                    .env("CHECKPOINT_DISABLE", "1")
                    .env("TF_PLUGIN_CACHE_DIR", &cache)
                    .env("TF_PLUGIN_CACHE_MAY_BREAK_DEPENDENCY_LOCK_FILE", "true")
                    .output()
                    .expect("run terraform")
            };
            let init = run(&["init", "-backend=false", "-input=false", "-no-color"]);
            if !init.status.success() {
                failures.push(format!(
                    "{label} ({}): terraform init failed:\n{}{}",
                    tf.display(),
                    String::from_utf8_lossy(&init.stdout),
                    String::from_utf8_lossy(&init.stderr)
                ));
                continue;
            }
            let res = run(&["validate", "-json", "-no-color"]);
            let json: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap_or_else(|e| {
                panic!("{label}: terraform validate -json: {e}\n{}", String::from_utf8_lossy(&res.stderr))
            });
            // Warnings (deprecations among them) fail as errors do: a new spec must not render them.
            if json["valid"] != true || json["warning_count"] != 0 {
                failures.push(format!("{label} ({}): terraform validate:\n{json:#}", tf.display()));
            }
            validated += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    println!(
        "terraform validate passed: {validated} runs ({} renders × {} Terraform binaries) with azurerm {} from {} ({})",
        validated / terraforms.len(),
        terraforms.len(),
        schemas.provider_version,
        mirror.display(),
        terraforms.iter().map(|t| t.display().to_string()).collect::<Vec<_>>().join(", ")
    );
}
