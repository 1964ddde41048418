//! The Azure part of preflight on target aks, over the fake az (tests/fakes/az answers `vm
//! list-usage`, `vm list-skus` and `aks get-versions` in the documented shapes, with the
//! subscription's capacity set by environment variables) and the fake terraform (whose state
//! the fake az counts as nodes in use). Every problem case runs `raydeploy deploy` and must exit
//! 1 naming the field and the numbers, with no mutating call in the call log; the cases where
//! everything fits run preflight, infra and credentials in this process (as
//! tests/deploy_infra.rs does) and must go on to apply.

use raydeploy::cli::{SpecArgs, load_model};
use raydeploy::context::Context;
use raydeploy::run::exec::{self, Outcome, Report};
use raydeploy::run::progress::Style;
use raydeploy::targets::kube::Kube;

#[path = "support/kube_env.rs"]
mod kube_env;

use kube_env::{EnvGuard, KubeEnv};

const SUB: &str = "11111111-2222-3333-4444-555555555555";

/// Needs, per quota: standardDSv5Family 2 (system) + 4 (head) + 3 × 4 (cpu) = 18 at most;
/// standardNCASv3_T4Family 4 × 8 (gpu) = 32; lowPriorityCores 2 × 4 (spot) = 8; cores 50.
const SPEC: &str = r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: pf
target: aks
azure:
  location: westeurope
  zones: ["1", "2"]
  systemPool: { vmSize: Standard_D2s_v5, count: 1 }
image:
  rayVersion: "2.52.0"
  python: "3.11"
cluster:
  namespace: ray
  head: { vmSize: Standard_D4s_v5, cpu: 1, memory: 4Gi }
  workerGroups:
    - { name: cpu, vmSize: Standard_D4s_v5, cpu: 2, memory: 4Gi, replicas: 1, minReplicas: 1, maxReplicas: 3 }
    - { name: gpu, vmSize: Standard_NC8as_T4_v3, gpus: 1, replicas: 0, maxReplicas: 4 }
    - { name: spot, vmSize: Standard_NC4as_T4_v3, gpus: 1, replicas: 0, maxReplicas: 2, spot: true }
  autoscaler: { enabled: true }
"#;

fn sandbox(spec: &str) -> KubeEnv {
    kube_env::azure_sandbox(spec)
}

/// `raydeploy deploy --auto-approve`: exit code and stderr.
fn deploy(env: &KubeEnv, extra: &[&str]) -> (i32, String) {
    let o = env.raydeploy().args(["deploy", "--auto-approve"]).args(extra).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stderr).to_string())
}

/// A deploy stopped by the Azure preflight: exit 1, every `want` in stderr, nothing mutated,
/// nothing after preflight started.
fn refused(env: &KubeEnv, want: &[&str]) -> String {
    let (code, err) = deploy(env, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("phase preflight failed"), "{err}");
    for w in want {
        assert!(err.contains(w), "missing {w:?} in:\n{err}");
    }
    let calls = env.calls();
    let mutating: Vec<String> = calls.iter().filter(|c| c.mutating()).map(|c| c.line()).collect();
    assert!(mutating.is_empty(), "mutating calls: {mutating:#?}");
    assert!(env.find("terraform", &["init"]).is_empty(), "infra did not start");
    assert!(env.find("terraform", &["apply"]).is_empty());
    assert!(env.find("docker", &["build"]).is_empty());
    assert!(env.find("az", &["aks", "get-credentials"]).is_empty());
    // The three reads ran, as reads of the deployment's subscription.
    for words in [&["vm", "list-usage"][..], &["vm", "list-skus", "--all"], &["aks", "get-versions"]] {
        let found = env.find("az", words);
        assert!(!found.is_empty(), "no az {words:?}");
        assert!(found.iter().all(|c| c.has(&["--location", "westeurope", "--subscription", SUB, "--output", "json"])));
    }
    err
}

// ---------------------------------------------------------------------------------------------
// In-process runs of preflight, infra and credentials (the phases that touch Azure).

fn run_phases(env: &KubeEnv) -> Report {
    let _g = EnvGuard::new(env);
    let args = SpecArgs { spec: env.spec(), env: None, target: None };
    let (_, d) = load_model(&args).unwrap_or_else(|r| panic!("spec: {}", r.short()));
    let rendered = raydeploy::render::render(&d).expect("render");
    let s = Context::new(d, rendered, Style::Plain);
    let mut g = raydeploy::graph::graph(&s.d, &s.rendered, Default::default());
    g.phases.retain(|p| ["preflight", "infra", "credentials"].contains(&p.id));
    let k = Kube::new(&s).unwrap();
    let store = s.store().unwrap();
    exec::execute(&g, &k, &store, &s.env())
}

fn outcome(r: &Report, id: &str) -> Outcome {
    r.phases.iter().find(|p| p.id == id).unwrap_or_else(|| panic!("no phase {id}")).outcome
}

// ---------------------------------------------------------------------------------------------

#[test]
fn everything_fits_the_deploy_proceeds_with_the_newest_version() {
    let env = sandbox(SPEC);
    let r = run_phases(&env);
    assert!(r.ok(), "{r:?}");
    assert_eq!(outcome(&r, "infra"), Outcome::Ran);
    assert_eq!(env.find("terraform", &["apply"]).len(), 1, "the deploy went on to apply");

    // One list-skus per planned size, exact name filtered by --size, with --all.
    let skus = env.find("az", &["vm", "list-skus"]);
    let mut sizes: Vec<String> =
        skus.iter().map(|c| c.argv[c.argv.iter().position(|a| a == "--size").expect("--size") + 1].clone()).collect();
    sizes.sort();
    assert_eq!(sizes, ["Standard_D2s_v5", "Standard_D4s_v5", "Standard_NC4as_T4_v3", "Standard_NC8as_T4_v3"]);
    assert!(skus.iter().all(|c| c.has(&["--resource-type", "virtualMachines", "--all"])));
    assert_eq!(env.find("az", &["vm", "list-usage"]).len(), 1);
    assert_eq!(env.find("az", &["aks", "get-versions"]).len(), 1);
    // The quota fits as if nothing were deployed: Terraform's state is not read.
    assert!(env.find("terraform", &["show"]).iter().all(|c| c.argv.last().unwrap().ends_with("tfplan")));

    // No kubernetesVersion: the newest non-preview version AKS offers, passed to Terraform and
    // recorded (it feeds infra's inputs).
    let st = env.state("pf");
    assert_eq!(st["phases"]["preflight"]["outputs"]["kubernetes_version"], "1.34");
    let plan = env.find("terraform", &["plan"]);
    assert!(plan[0].has(&["-var=kubernetes_version=1.34"]), "{}", plan[0].line());
    let log = std::fs::read_to_string(env.state_dir("pf").join("logs/preflight.log")).unwrap();
    assert!(log.contains("azure.kubernetesVersion: not set: a new cluster gets Kubernetes 1.34"), "{log}");
    let main = std::fs::read_to_string(env.state_dir("pf").join("rendered/terraform/main.tf")).unwrap();
    assert!(main.contains("kubernetes_version  = var.kubernetes_version"), "{main}");
    assert!(main.contains(r#"zones                       = ["1", "2"]"#), "{main}");

    // Nothing changed: the resource group carries this configuration's hash, so nothing will
    // be created and the three reads are left out; infra is skipped.
    env.clear_calls();
    let r = run_phases(&env);
    assert!(r.ok(), "{r:?}");
    assert_eq!(outcome(&r, "infra"), Outcome::Skipped);
    assert!(env.find("az", &["vm", "list-usage"]).is_empty());
    assert!(env.find("az", &["aks", "get-versions"]).is_empty());
    let log = std::fs::read_to_string(env.state_dir("pf").join("logs/preflight.log")).unwrap();
    assert!(log.contains("quota, VM sizes and Kubernetes versions are not read (nothing is created)"), "{log}");

    // With a change (a bigger pool), they are read again, never cached.
    env.write_spec(&SPEC.replace("maxReplicas: 4", "maxReplicas: 3"));
    env.clear_calls();
    let r = run_phases(&env);
    assert!(r.ok(), "{r:?}");
    assert_eq!(env.find("az", &["vm", "list-usage"]).len(), 1);
    assert_eq!(outcome(&r, "infra"), Outcome::Ran);
}

#[test]
fn quota_exceeded_on_one_family() {
    let mut env = sandbox(SPEC);
    env.set("RAYDEPLOY_FAKE_AZ_QUOTA", "standardNCASv3_T4Family=24/8");
    let err = refused(
        &env,
        &[
            "cluster.workerGroups[1].maxReplicas: standardNCASv3_T4Family vCPUs in westeurope: the deployment needs 32 with every pool at its maximum (gpu 4 × 8 vCPUs)",
            "16 free (limit 24, 8 in use)",
            "help: request a quota increase for standardNCASv3_T4Family in westeurope to at least 40, or lower cluster.workerGroups[1].maxReplicas to 2",
        ],
    );
    assert!(err.contains("1 problem found before changing anything"), "{err}");
}

#[test]
fn spot_quota_exceeded() {
    let mut env = sandbox(SPEC);
    env.set("RAYDEPLOY_FAKE_AZ_QUOTA", "lowPriorityCores=4");
    refused(
        &env,
        &[
            "cluster.workerGroups[2].maxReplicas: lowPriorityCores (Spot vCPUs) in westeurope: the deployment needs 8 with every pool at its maximum (spot 2 × 4 vCPUs)",
            "4 free (limit 4, 0 in use)",
            "or lower cluster.workerGroups[2].maxReplicas to 1",
        ],
    );
}

#[test]
fn regional_total_exceeded() {
    let mut env = sandbox(SPEC);
    env.set("RAYDEPLOY_FAKE_AZ_QUOTA", "cores=60/20");
    refused(
        &env,
        &[
            "cores (total regional vCPUs) in westeurope: the deployment needs 50 with every pool at its maximum",
            "40 free (limit 60, 20 in use)",
            "request a quota increase for cores in westeurope to at least 70, or lower cluster.workerGroups[1].maxReplicas to 2",
        ],
    );
}

#[test]
fn a_size_not_offered_in_the_region_gets_an_available_alternative() {
    let mut env = sandbox(SPEC);
    env.set("RAYDEPLOY_FAKE_AZ_SKUS_ABSENT", "Standard_NC8as_T4_v3");
    refused(
        &env,
        &[
            "cluster.workerGroups[1].vmSize: Standard_NC8as_T4_v3 (group `gpu`, pool gpu) is not offered in westeurope (SkuNotAvailable)",
            "help: use Standard_NC16as_T4_v3 (16 vCPUs, 110 GiB, 1 GPU: the smallest larger size, available)",
        ],
    );
    // The whole region was read once, for the suggestion.
    let all: Vec<_> = env.find("az", &["vm", "list-skus"]).into_iter().filter(|c| !c.has(&["--size"])).collect();
    assert_eq!(all.len(), 1);
}

#[test]
fn a_size_restricted_for_the_subscription() {
    let mut env = sandbox(SPEC);
    env.set("RAYDEPLOY_FAKE_AZ_SKUS_RESTRICTED", "Standard_NC4as_T4_v3");
    refused(
        &env,
        &[
            &format!(
                "cluster.workerGroups[2].vmSize: Standard_NC4as_T4_v3 (group `spot`, pool spot) is not available to subscription {SUB} in westeurope (NotAvailableForSubscription)"
            ),
            "help: use Standard_NC8as_T4_v3 (8 vCPUs, 56 GiB, 1 GPU: the smallest larger size, available), or ask Azure support",
        ],
    );
}

#[test]
fn a_zone_without_the_size() {
    let mut env = sandbox(SPEC);
    env.set("RAYDEPLOY_FAKE_AZ_SKU_ZONES", "Standard_NC8as_T4_v3=1 3");
    refused(
        &env,
        &[
            "cluster.workerGroups[1].vmSize: Standard_NC8as_T4_v3 (group `gpu`, pool gpu) is not offered in zone 2 of westeurope (azure.zones: 1, 2; it is offered in zones 1, 3)",
            "help: use Standard_NC16as_T4_v3",
        ],
    );
}

#[test]
fn a_gpu_size_not_offered_as_spot() {
    let mut env = sandbox(SPEC);
    env.set("RAYDEPLOY_FAKE_AZ_SKUS_NO_SPOT", "Standard_NC4as_T4_v3");
    refused(
        &env,
        &[
            "cluster.workerGroups[2].spot: Standard_NC4as_T4_v3 (group `spot`, pool spot) is not offered as Spot in westeurope",
        ],
    );
}

#[test]
fn a_kubernetes_version_aks_no_longer_offers() {
    let env =
        sandbox(&SPEC.replace("  location: westeurope\n", "  location: westeurope\n  kubernetesVersion: \"1.30\"\n"));
    refused(
        &env,
        &[
            "azure.kubernetesVersion: Kubernetes 1.30 is not offered by AKS in westeurope (offered: 1.29 (long-term support only), 1.32, 1.33, 1.34, 1.35 (preview))",
            "help: use kubernetesVersion: \"1.34\" (the newest), or leave it out",
        ],
    );
}

#[test]
fn every_problem_is_listed_at_once() {
    let mut env =
        sandbox(&SPEC.replace("  location: westeurope\n", "  location: westeurope\n  kubernetesVersion: \"1.35\"\n"));
    env.set("RAYDEPLOY_FAKE_AZ_QUOTA", "standardNCASv3_T4Family=24/8,lowPriorityCores=4")
        .set("RAYDEPLOY_FAKE_AZ_SKU_ZONES", "Standard_D2s_v5=1");
    refused(
        &env,
        &[
            "4 problems found before changing anything",
            "azure.systemPool.vmSize: Standard_D2s_v5 (the system pool) is not offered in zone 2",
            "cluster.workerGroups[1].maxReplicas: standardNCASv3_T4Family",
            "cluster.workerGroups[2].maxReplicas: lowPriorityCores",
            "azure.kubernetesVersion: Kubernetes 1.35 is offered by AKS in westeurope only in preview",
        ],
    );
}

#[test]
fn a_redeploy_counts_only_the_growth_of_a_pool() {
    // The gpu group runs 2 nodes (16 vCPUs) of a 32-vCPU quota.
    let first = SPEC.replace(
        "{ name: gpu, vmSize: Standard_NC8as_T4_v3, gpus: 1, replicas: 0, maxReplicas: 4 }",
        "{ name: gpu, vmSize: Standard_NC8as_T4_v3, gpus: 1, replicas: 2, minReplicas: 1, maxReplicas: 2 }",
    );
    let mut env = sandbox(&first);
    env.set("RAYDEPLOY_FAKE_AZ_QUOTA", "standardNCASv3_T4Family=32");
    let r = run_phases(&env);
    assert!(r.ok(), "{r:?}");

    // Growing to 4 nodes needs 32 vCPUs; 16 are free, and 16 are this deployment's own nodes:
    // only the 16 more count, and the deploy proceeds.
    env.write_spec(&first.replace("maxReplicas: 2 }", "maxReplicas: 4 }"));
    env.clear_calls();
    let r = run_phases(&env);
    assert!(r.ok(), "{r:?}");
    assert_eq!(outcome(&r, "infra"), Outcome::Ran);
    let show: Vec<_> = env
        .find("terraform", &["show", "-json"])
        .into_iter()
        .filter(|c| !c.argv.last().unwrap().ends_with("tfplan"))
        .collect();
    assert_eq!(show.len(), 1, "Terraform's state was read once, for the nodes already deployed");
    assert_eq!(env.fake_state("terraform")["applies"], 2);

    // Growing to 5 needs 40: 16 running, 24 more, 16 free: refused, naming the numbers.
    env.write_spec(&first.replace("maxReplicas: 2 }", "maxReplicas: 5 }"));
    env.clear_calls();
    refused(
        &env,
        &[
            "cluster.workerGroups[1].maxReplicas: standardNCASv3_T4Family vCPUs in westeurope: the deployment needs 40 with every pool at its maximum (gpu 5 × 8 vCPUs)",
            "16 of them already running in this deployment, so 24 more; 16 free (limit 32, 16 in use)",
            "to at least 40, or lower cluster.workerGroups[1].maxReplicas to 4",
        ],
    );
    assert_eq!(env.fake_state("terraform")["applies"], 2);
}

#[test]
fn skip_preflight_says_so_loudly_and_reads_nothing() {
    let mut env = sandbox(SPEC);
    env.set("RAYDEPLOY_FAKE_AZ_QUOTA", "standardNCASv3_T4Family=0")
        .set("RAYDEPLOY_FAKE_AZ_SKUS_ABSENT", "Standard_D4s_v5");
    let (code, err) = deploy(&env, &["--skip-preflight=quota,skus,versions"]);
    for c in ["quota", "skus", "versions"] {
        assert!(err.contains(&format!("WARNING: --skip-preflight={c}: NOT checking")), "{err}");
    }
    assert!(env.find("az", &["vm"]).is_empty() && env.find("az", &["aks", "get-versions"]).is_empty());
    // Past preflight: infra applied (the docker stand-in then stops the image build).
    assert_eq!(env.phase_status("pf", "preflight"), "completed", "{err}");
    assert_eq!(env.find("terraform", &["apply"]).len(), 1, "{err}");
    assert_eq!(code, 1);
    let plan = env.find("terraform", &["plan"]);
    assert!(!plan[0].argv.iter().any(|a| a.starts_with("-var=kubernetes_version")), "no version chosen: AKS's default");

    // Skipping only the quota still reads the sizes (their families) and the versions.
    let mut env = sandbox(SPEC);
    env.set("RAYDEPLOY_FAKE_AZ_QUOTA", "standardNCASv3_T4Family=0");
    let (_, err) = deploy(&env, &["--skip-preflight", "quota"]);
    assert!(err.contains("WARNING: --skip-preflight=quota"), "{err}");
    assert!(!err.contains("--skip-preflight=skus"), "{err}");
    assert!(env.find("az", &["vm", "list-usage"]).is_empty());
    assert!(!env.find("az", &["vm", "list-skus"]).is_empty());
    assert_eq!(env.phase_status("pf", "preflight"), "completed", "{err}");
}

#[test]
fn plan_shows_the_findings_and_exits_1() {
    let mut env = sandbox(SPEC);
    env.add_script(
        "docker",
        r#"[ "$1" = version ] && echo 27.5.1 && exit 0; [ "$1" = manifest ] && echo "no such manifest" >&2; exit 1"#,
    );
    env.set("RAYDEPLOY_FAKE_AZ_QUOTA", "standardNCASv3_T4Family=24/8");
    let o = env.raydeploy().args(["plan", "--output", "json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let found = plan["preflight"].as_array().expect("preflight findings");
    let err = found.iter().find(|f| f["level"] == "error").expect("an error");
    assert_eq!(err["check"], "quota");
    assert_eq!(err["field"], "cluster.workerGroups[1].maxReplicas");
    assert!(err["message"].as_str().unwrap().contains("16 free (limit 24, 8 in use)"), "{err}");
    let note = found.iter().find(|f| f["check"] == "versions").expect("the version note");
    assert_eq!(note["level"], "info");
    // Terraform planned with the version the preflight chose.
    assert!(env.find("terraform", &["plan"]).iter().all(|c| c.has(&["-var=kubernetes_version=1.34"])));
    assert!(env.calls().iter().all(|c| !c.mutating()));

    let o = env.raydeploy().args(["plan"]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1));
    assert!(text.contains("Azure preflight"), "{text}");
    assert!(text.contains("!! error: cluster.workerGroups[1].maxReplicas: standardNCASv3_T4Family vCPUs"), "{text}");
    assert!(text.contains("help: request a quota increase"), "{text}");
}

#[test]
fn dry_run_lists_the_reads() {
    let env = sandbox(SPEC);
    let o = env.raydeploy().args(["deploy", "--dry-run"]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    for want in [
        "$ az vm list-usage --location westeurope --output json --only-show-errors",
        "$ az vm list-skus --location westeurope --resource-type virtualMachines --all --output json --only-show-errors --size Standard_NC8as_T4_v3",
        "$ az aks get-versions --location westeurope --output json --only-show-errors",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(env.calls().is_empty());
}

#[test]
fn the_reads_are_retried_like_every_read() {
    let mut env = sandbox(SPEC);
    env.set("RAYDEPLOY_FAKE_FAULTS", "az:vm list-usage=fail2,az:aks get-versions=fail1");
    let r = run_phases(&env);
    assert!(r.ok(), "{r:?}");
    let usage = env.find("az", &["vm", "list-usage"]);
    assert_eq!(usage.iter().map(|c| c.exit.clone()).collect::<Vec<_>>(), [1, 1, 0]);
    assert_eq!(env.find("az", &["aks", "get-versions"]).len(), 2);

    // A read that keeps failing is a problem like the others, with the way around it.
    let mut env = sandbox(SPEC);
    env.set("RAYDEPLOY_FAKE_FAULTS", "az:vm list-usage=fail");
    let err = refused(
        &env,
        &["azure.location: cannot check the vCPU quota per VM family, Spot and regional (az vm list-usage)"],
    );
    assert!(err.contains("--skip-preflight=quota"), "{err}");
    assert_eq!(env.find("az", &["vm", "list-usage"]).len(), 3, "three attempts");
}
