//! Phases preflight, infra and credentials of target aks, run by the real executor over the fake
//! terraform, az and kubelogin (tests/fakes), with the rest of the graph left out: the call log
//! and the fakes' emulated Terraform state show what ran, in which order, with which arguments
//! and environment, and what was skipped from local or live state.
//!
//! The phases run in this process (PATH and the fakes' variables are set for the duration of
//! each test, one test at a time); `--dry-run` runs the binary. docker, helm and kubectl are only
//! asked for their versions here, by two-line stand-ins. About 5 s.

use std::os::unix::fs::PermissionsExt;

use raydeploy::cli::{SpecArgs, load_model};
use raydeploy::context::{Context, DestroyOptions};
use raydeploy::run::exec::{self, Outcome, Report};
use raydeploy::run::progress::Style;
use raydeploy::targets::kube::Kube;
use raydeploy::targets::kube::infra;

#[path = "support/kube_env.rs"]
mod kube_env;

use kube_env::{EnvGuard, KubeEnv};

const SPEC: &str = r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: tiny
target: aks
azure:
  location: eastus
  systemPool: { vmSize: Standard_D2s_v5, count: 1 }
image:
  rayVersion: "2.52.0"
  python: "3.11"
cluster:
  namespace: ray
  head: { vmSize: Standard_D4s_v5, cpu: 1, memory: 4Gi }
  workerGroups:
    - { name: cpu, vmSize: Standard_D4s_v5, cpu: 2, memory: 4Gi, replicas: 1 }
"#;

const PHASES: [&str; 3] = ["preflight", "infra", "credentials"];

fn sandbox(spec: &str) -> KubeEnv {
    kube_env::azure_sandbox(spec)
}

fn session(env: &KubeEnv) -> Context {
    let args = SpecArgs { spec: env.spec(), env: None, target: None };
    let (_, d) = load_model(&args).unwrap_or_else(|r| panic!("spec: {}", r.short()));
    let rendered = raydeploy::render::render(&d).expect("render");
    Context::new(d, rendered, Style::Plain)
}

/// Runs preflight, infra and credentials as a deploy would.
fn run(env: &KubeEnv) -> Report {
    run_with(env, |_| {})
}

/// Same, with the context adjusted first (`--allow-destroy`, `--plan`).
fn run_with(env: &KubeEnv, adjust: impl FnOnce(&mut Context)) -> Report {
    let _g = EnvGuard::new(env);
    let mut s = session(env);
    adjust(&mut s);
    let mut g = raydeploy::graph::graph(&s.d, &s.rendered, Default::default());
    g.phases.retain(|p| PHASES.contains(&p.id));
    let k = Kube::new(&s).unwrap();
    let store = s.store().unwrap();
    exec::execute(&g, &k, &store, &s.env())
}

fn outcome(r: &Report, id: &str) -> Outcome {
    r.phases.iter().find(|p| p.id == id).unwrap_or_else(|| panic!("no phase {id}")).outcome
}

fn lines(env: &KubeEnv, tool: &str) -> Vec<String> {
    env.calls().into_iter().filter(|c| c.tool == tool).map(|c| c.line()).collect()
}

#[test]
fn first_deploy_plans_applies_that_plan_and_writes_a_private_kubeconfig() {
    let env = sandbox(SPEC);
    let r = run(&env);
    assert!(r.ok(), "{r:?}");
    let dir = env.state_dir("tiny");
    let tfdir = dir.join("rendered/terraform");
    let chdir = format!("-chdir={}", tfdir.display());

    // terraform: init, plan saved with -detailed-exitcode, apply of exactly that plan, outputs.
    let tf: Vec<_> = env.calls().into_iter().filter(|c| c.tool == "terraform").collect();
    let subs: Vec<_> = tf.iter().map(|c| c.argv.iter().find(|a| !a.starts_with('-')).cloned().unwrap()).collect();
    assert_eq!(subs, ["version", "init", "plan", "show", "apply", "output"], "{:#?}", lines(&env, "terraform"));
    for c in &tf[1..] {
        assert_eq!(c.argv[0], chdir, "{}", c.line());
        assert_eq!(c.env.get("TF_IN_AUTOMATION").map(String::as_str), Some("1"), "{}", c.line());
        assert_eq!(
            c.env.get("ARM_SUBSCRIPTION_ID").map(String::as_str),
            Some("11111111-2222-3333-4444-555555555555"),
            "the subscription az account show reported: {}",
            c.line()
        );
    }
    assert!(tf[1].has(&["-input=false", "-no-color"]));
    assert!(tf[2].has(&["-detailed-exitcode", "-out=raydeploy.tfplan", "-input=false"]), "{}", tf[2].line());
    assert_eq!(tf[2].exit, 2);
    assert!(
        tf[3].has(&["-json"]) && tf[3].argv.last().unwrap() == "raydeploy.tfplan",
        "the plan is checked for destructive changes: {}",
        tf[3].line()
    );
    assert_eq!(tf[4].argv.last().unwrap(), "raydeploy.tfplan", "apply applies the saved plan: {}", tf[4].line());
    assert!(!tf[4].has(&["-auto-approve"]));
    assert!(!tfdir.join("raydeploy.tfplan").exists(), "the saved plan is removed after apply");
    assert_eq!(env.fake_state("terraform")["applies"], 1);

    // preflight ran before anything touched Terraform's state.
    let all = env.calls();
    let first_init = all.iter().position(|c| c.tool == "terraform" && c.has(&["init"])).unwrap();
    let account = all.iter().position(|c| c.tool == "az" && c.has(&["account", "show"])).unwrap();
    assert!(account < first_init);

    // credentials: the deployment's own kubeconfig, 0600, never ~/.kube/config.
    let get = env.find("az", &["aks", "get-credentials"]);
    assert_eq!(get.len(), 1);
    assert!(get[0].has(&["--resource-group", "rg-tiny", "--name", "aks-tiny", "--overwrite-existing"]));
    assert!(get[0].has(&["--subscription", "11111111-2222-3333-4444-555555555555"]));
    let file = get[0].argv[get[0].argv.iter().position(|a| a == "--file").unwrap() + 1].clone();
    assert!(file.starts_with(&dir.display().to_string()), "{file}");
    let kc = dir.join("kubeconfig");
    let mode = std::fs::metadata(&kc).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "kubeconfig mode {mode:o}");
    assert!(std::fs::read_to_string(&kc).unwrap().contains("server: https://aks-tiny."));
    assert!(!env.tmp.path().join("home/.kube").exists());
    assert!(env.find("kubelogin", &[]).is_empty(), "no Entra ID, no conversion");

    // The state: every phase completed; infra's outputs are Terraform's non-sensitive outputs.
    let st = env.state("tiny");
    for p in PHASES {
        assert_eq!(st["phases"][p]["status"], "completed", "{p}");
    }
    let outs = &st["phases"]["infra"]["outputs"];
    assert_eq!(outs["acr_login_server"], "acrtiny.azurecr.io");
    assert_eq!(outs["cluster_name"], "aks-tiny");
    assert_eq!(outs["resource_group_name"], "rg-tiny");
    assert!(outs.get("kube_admin_config_raw").is_none(), "sensitive outputs stay out: {outs}");
    let text = std::fs::read_to_string(dir.join("state.json")).unwrap();
    assert!(!text.contains("fake-admin-credential"));
}

#[test]
fn unchanged_inputs_skip_and_a_fresh_checkout_reads_the_applied_tag_instead_of_planning() {
    let mut env = sandbox(SPEC);
    let r = run(&env);
    assert!(r.ok(), "{r:?}");
    // The plan carried the configuration's hash as a variable; the apply wrote it to the group.
    let plan = env.find("terraform", &["plan"]);
    let var = plan[0].argv.iter().find(|a| a.starts_with("-var=raydeploy_applied=")).expect("the hash variable");
    let hash = var.trim_start_matches("-var=raydeploy_applied=").to_string();
    assert_eq!(hash.len(), 64, "{var}");
    assert_eq!(env.fake_state("terraform")["vars"]["raydeploy_applied"], hash.as_str());

    // Same checkout, nothing changed: skipped without calling Terraform. Preflight reads the
    // tag (one read each for the group and the registry) instead of the quota, VM sizes and
    // versions: nothing will be created. Terraform will not run, so it is not even asked for its
    // version; the group's id names the subscription, so `az account show` is not asked either.
    env.clear_calls();
    let r = run(&env);
    assert!(r.ok(), "{r:?}");
    assert_eq!(outcome(&r, "infra"), Outcome::Skipped);
    assert_eq!(outcome(&r, "credentials"), Outcome::Skipped);
    assert_eq!(lines(&env, "terraform"), Vec::<String>::new());
    assert!(env.find("az", &["account", "show"]).is_empty());
    assert_eq!(
        env.state("tiny")["phases"]["preflight"]["outputs"]["subscription_id"],
        "11111111-2222-3333-4444-555555555555",
        "the subscription the resource group's id names"
    );
    assert!(env.find("az", &["aks", "get-credentials"]).is_empty());
    assert_eq!(env.find("az", &["group", "show"]).len(), 1, "read once, for preflight and infra");
    for read in [&["vm", "list-usage"][..], &["vm", "list-skus"], &["aks", "get-versions"]] {
        assert!(env.find("az", read).is_empty(), "{read:?}: nothing is created, so nothing is checked");
    }

    // A fresh checkout (no .raydeploy): the resource group's tag equals this configuration's
    // hash, so Terraform does not run at all (not even init); two reads at once give the outputs.
    // Each of the two reads answers only once the other is running: both gates open only when
    // they run at the same time (one after the other, the first waits out its time limit).
    env.set("RAYDEPLOY_FAKE_WAIT", KubeEnv::overlap_gates(&[("az:group show", "az:acr show")]))
        .set("RAYDEPLOY_FAKE_WAIT_SECONDS", "30");
    env.fresh_checkout();
    env.clear_calls();
    let r = run(&env);
    env.unset("RAYDEPLOY_FAKE_WAIT");
    assert!(r.ok(), "{r:?}");
    assert_eq!(outcome(&r, "infra"), Outcome::Skipped);
    assert_eq!(lines(&env, "terraform"), Vec::<String>::new(), "no version, init, plan or output");
    let group = env.find("az", &["group", "show", "--name", "rg-tiny"]);
    let acr: Vec<_> =
        env.find("az", &["acr", "show", "--name", "acrtiny"]).into_iter().filter(|c| c.argv[1] == "show").collect();
    assert_eq!((group.len(), acr.len()), (1, 1));
    assert!(group[0].gates == "open" && acr[0].gates == "open", "the two reads overlap: {group:?} {acr:?}");
    assert!(env.calls().iter().all(|c| !c.mutating()));
    assert_eq!(env.fake_state("terraform")["applies"], 1);
    let outs = &env.state("tiny")["phases"]["infra"]["outputs"];
    assert_eq!(outs["acr_name"], "acrtiny");
    assert_eq!(outs["acr_login_server"], "acrtiny.azurecr.io");
    assert_eq!(outs["cluster_name"], "aks-tiny");
    assert_eq!(outs["resource_group_name"], "rg-tiny");
    assert!(env.state_dir("tiny").join("kubeconfig").is_file(), "credentials fetched (a read)");
    let log = ["preflight", "infra"]
        .map(|p| std::fs::read_to_string(env.state_dir("tiny").join(format!("logs/{p}.log"))).unwrap_or_default())
        .concat();
    assert!(log.contains("raydeploy-applied=") && log.contains("Terraform is not run"), "{log}");

    // `--refresh`: the full path (init, plan without changes), no apply.
    env.fresh_checkout();
    env.clear_calls();
    let r = run_with(&env, |s| s.refresh = true);
    assert!(r.ok(), "{r:?}");
    assert_eq!(outcome(&r, "infra"), Outcome::Skipped);
    assert!(env.find("az", &["group", "show"]).is_empty(), "--refresh does not trust the tag");
    let plan = env.find("terraform", &["plan"]);
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].exit, 0);
    assert!(env.find("terraform", &["apply"]).is_empty(), "{:#?}", lines(&env, "terraform"));

    // A changed spec changes the Terraform files and so the hash: the tag no longer matches,
    // plan finds changes and applies them (writing the new hash).
    env.write_spec(&SPEC.replace("count: 1", "count: 2"));
    env.clear_calls();
    let r = run(&env);
    assert!(r.ok(), "{r:?}");
    assert_eq!(outcome(&r, "infra"), Outcome::Ran);
    assert_eq!(env.find("az", &["group", "show"]).len(), 1);
    assert_eq!(env.find("terraform", &["apply"]).len(), 1);
    assert_eq!(env.fake_state("terraform")["applies"], 2);
    let new_hash = env.fake_state("terraform")["vars"]["raydeploy_applied"].as_str().unwrap().to_string();
    assert_ne!(new_hash, hash);
    // The infra outputs did not change, so neither did the credentials' inputs.
    assert_eq!(outcome(&r, "credentials"), Outcome::Skipped);

    // No tag on the group (infrastructure applied by an older raydeploy, or by hand): the full
    // path, and its apply writes the tag.
    let mut tf = env.fake_state("terraform");
    tf["vars"] = serde_json::json!({});
    env.set_fake_state("terraform", &tf);
    env.fresh_checkout();
    env.clear_calls();
    let r = run(&env);
    assert!(r.ok(), "{r:?}");
    assert_eq!(env.find("terraform", &["plan"]).len(), 1);
    assert_eq!(env.find("terraform", &["apply"]).len(), 1, "the plan writes the tag");
    assert_eq!(env.fake_state("terraform")["vars"]["raydeploy_applied"], new_hash.as_str());
    // Read once, by whichever of preflight and infra asked first.
    let log = ["preflight", "infra"]
        .map(|p| std::fs::read_to_string(env.state_dir("tiny").join(format!("logs/{p}.log"))).unwrap_or_default())
        .concat();
    assert!(log.contains("has no raydeploy-applied tag"), "{log}");
    env.fresh_checkout();
    env.clear_calls();
    assert!(run(&env).ok());
    assert!(env.find("terraform", &["init"]).is_empty(), "tag written: the fast path again");
}

#[test]
fn a_failed_apply_leaves_the_previous_hash_so_a_fresh_checkout_plans_again() {
    let mut env = sandbox(SPEC);
    assert!(run(&env).ok());
    let hash = env.fake_state("terraform")["vars"]["raydeploy_applied"].clone();
    env.write_spec(&SPEC.replace("count: 1", "count: 2"));
    env.set("RAYDEPLOY_FAKE_FAULTS", "terraform:apply=fail");
    let r = run(&env);
    assert_eq!(outcome(&r, "infra"), Outcome::Failed);
    assert_eq!(env.fake_state("terraform")["vars"]["raydeploy_applied"], hash, "the tag is written last");
    // CI retries on another runner: the tag is the old configuration's, so Terraform plans.
    env.unset("RAYDEPLOY_FAKE_FAULTS");
    env.fresh_checkout();
    env.clear_calls();
    let r = run(&env);
    assert!(r.ok(), "{r:?}");
    assert_eq!(outcome(&r, "infra"), Outcome::Ran);
    assert_eq!(env.find("terraform", &["apply"]).len(), 1);
}

#[test]
fn a_failed_apply_is_resumed_with_a_new_plan_and_nothing_after_it_ran() {
    let mut env = sandbox(SPEC);
    env.set("RAYDEPLOY_FAKE_FAULTS", "terraform:apply=fail");
    let r = run(&env);
    assert!(!r.ok());
    assert_eq!(outcome(&r, "infra"), Outcome::Failed);
    assert_eq!(outcome(&r, "credentials"), Outcome::NotRun);
    let (_, err) = r.first_error().unwrap();
    assert!(err.contains("terraform") && err.contains("apply") && err.contains("code 1"), "{err}");
    assert!(err.contains("injected failure"), "the stderr tail is in the error: {err}");
    assert_eq!(env.phase_status("tiny", "infra"), "failed");
    assert!(env.find("az", &["aks", "get-credentials"]).is_empty());
    assert_eq!(env.find("terraform", &["apply"]).len(), 1, "apply is never retried");
    assert!(!env.state_dir("tiny").join("rendered/terraform/raydeploy.tfplan").exists());

    env.unset("RAYDEPLOY_FAKE_FAULTS");
    env.clear_calls();
    let r = run(&env);
    assert!(r.ok(), "{r:?}");
    assert_eq!(lines(&env, "terraform").iter().filter(|l| l.contains(" plan ")).count(), 1);
    assert_eq!(env.find("terraform", &["apply"]).len(), 1);
    assert_eq!(env.fake_state("terraform")["applies"], 1);
    assert_eq!(env.find("az", &["aks", "get-credentials"]).len(), 1);
}

#[test]
fn an_apply_that_hangs_past_its_timeout_gets_sigint_and_the_run_fails_cleanly() {
    let mut env = sandbox(SPEC);
    env.set("RAYDEPLOY_FAKE_FAULTS", "terraform:apply=hang");
    // The command timeout is what is tested, so it is a duration; the fake apply must have
    // reached its hang (logged "hang", its SIGINT handler set) before it fires. A run where the
    // timeout came first says nothing: it is run again with a longer timeout, a bounded number of
    // times.
    let mut timeout = 1;
    let r = loop {
        env.set("RAYDEPLOY_COMMAND_TIMEOUT", timeout.to_string());
        let r = run(&env);
        if !env.find("terraform", &["apply"]).is_empty() || timeout >= 32 {
            break r;
        }
        timeout *= 2;
    };
    assert_eq!(outcome(&r, "infra"), Outcome::Failed);
    assert!(r.first_error().unwrap().1.contains("timed out"), "{r:?}");
    let apply = env.find("terraform", &["apply"]);
    assert_eq!(apply.last().unwrap().exit, "signal 2", "Terraform got SIGINT (releases its lock): {apply:?}");
    assert_eq!(env.phase_status("tiny", "infra"), "failed");
    assert_eq!(env.fake_state("terraform").get("applies"), None);

    env.unset("RAYDEPLOY_FAKE_FAULTS").unset("RAYDEPLOY_COMMAND_TIMEOUT");
    let r = run(&env);
    assert!(r.ok(), "{r:?}");
    assert_eq!(env.fake_state("terraform")["applies"], 1);
}

#[test]
fn preflight_lists_every_problem_at_once_and_nothing_else_runs() {
    let mut env = sandbox(SPEC);
    env.remove_tool("helm");
    env.add_script("kubectl", r#"echo '{"clientVersion":{"gitVersion":"v1.19.0"}}'"#);
    env.add_script("docker", "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' >&2; exit 1");
    env.set("RAYDEPLOY_FAKE_TERRAFORM_VERSION", "1.4.6").set("RAYDEPLOY_FAKE_AZ_LOGGED_OUT", "1");
    let r = run(&env);
    assert_eq!(outcome(&r, "preflight"), Outcome::Failed);
    assert_eq!(outcome(&r, "infra"), Outcome::NotRun);
    let err = r.first_error().unwrap().1.to_string();
    for want in [
        "5 problems",
        "terraform 1.4.6 is too old: 1.5 or newer",
        "`helm` is not on PATH",
        "kubectl v1.19.0 is too old",
        "cannot reach the Docker engine",
        "az login",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let tf = lines(&env, "terraform");
    assert_eq!(tf, ["terraform version -json"], "only the version check ran");
    assert!(!env.state_dir("tiny").join("rendered").exists());
}

#[test]
fn the_spec_subscription_goes_to_terraform_and_az() {
    let sub = "99999999-8888-7777-6666-555555555555";
    let spec = SPEC.replace("  location: eastus\n", &format!("  location: eastus\n  subscriptionId: \"{sub}\"\n"));
    let env = sandbox(&spec);
    let r = run(&env);
    assert!(r.ok(), "{r:?}");
    for c in env.find("terraform", &[]).iter().skip(1) {
        assert_eq!(c.env.get("ARM_SUBSCRIPTION_ID").map(String::as_str), Some(sub), "{}", c.line());
    }
    for c in env.find("az", &[]) {
        assert!(c.has(&["--subscription", sub]), "{}", c.line());
    }
}

#[test]
fn entra_id_clusters_get_a_kubeconfig_converted_for_the_azure_cli() {
    let mut env = sandbox(SPEC);
    env.set("RAYDEPLOY_FAKE_AAD", "1");
    let r = run(&env);
    assert!(r.ok(), "{r:?}");
    let conv = env.find("kubelogin", &["convert-kubeconfig", "-l", "azurecli", "--kubeconfig"]);
    assert_eq!(conv.len(), 1);
    let kc = std::fs::read_to_string(env.state_dir("tiny").join("kubeconfig")).unwrap();
    assert!(kc.contains("command: kubelogin") && kc.contains("--login, azurecli"), "{kc}");

    // Without kubelogin the phase says what to install.
    let mut env = sandbox(SPEC);
    env.set("RAYDEPLOY_FAKE_AAD", "1");
    env.remove_tool("kubelogin");
    let r = run(&env);
    assert_eq!(outcome(&r, "credentials"), Outcome::Failed);
    let err = r.first_error().unwrap().1;
    assert!(err.contains("kubelogin") && err.contains("az aks install-cli"), "{err}");
    assert!(!env.state_dir("tiny").join("kubeconfig").exists());
    assert!(!env.state_dir("tiny").join(".kubeconfig.new").exists());
}

#[test]
fn destroy_is_confirmed_idempotent_and_forgets_the_infrastructure() {
    let env = sandbox(SPEC);
    let r = run(&env);
    assert!(r.ok(), "{r:?}");
    let _g = EnvGuard::new(&env);
    let s = session(&env);
    let k = Kube::new(&s).unwrap();

    // CI is set: no question, and no destruction without --auto-approve.
    let e = infra::destroy(&k, &DestroyOptions { auto_approve: false, keep_infra: false }).unwrap_err();
    assert!(e.to_string().contains("--auto-approve"), "{e}");
    assert!(env.find("terraform", &["destroy"]).is_empty());

    let yes = DestroyOptions { auto_approve: true, keep_infra: false };
    infra::destroy(&k, &yes).unwrap();
    let d = env.find("terraform", &["destroy"]);
    assert_eq!(d.len(), 1);
    assert!(d[0].has(&["-auto-approve", "-input=false"]));
    assert!(env.fake_state("terraform")["hash"].is_null());
    assert!(!env.state_dir("tiny").join("kubeconfig").exists());
    let st = env.state("tiny");
    for p in ["infra", "credentials", "image-push"] {
        assert!(st["phases"].get(p).is_none(), "{p} forgotten: {st}");
    }
    // Already gone: success again.
    infra::destroy(&k, &yes).unwrap();
    assert_eq!(env.find("terraform", &["destroy"]).len(), 2);
}

#[test]
fn status_shows_phases_and_live_outputs() {
    let env = sandbox(SPEC);
    let r = run(&env);
    assert!(r.ok(), "{r:?}");
    env.clear_calls();
    let _g = EnvGuard::new(&env);
    let s = session(&env);
    let k = Kube::new(&s).unwrap();
    let (text, json) = infra::status(&k).unwrap();
    assert!(text.contains("infra") && text.contains("completed"), "{text}");
    assert!(text.contains("acr_login_server = acrtiny.azurecr.io"), "{text}");
    assert!(text.contains("cluster      not run"), "{text}");
    assert_eq!(json["phases"]["infra"]["status"], "completed");
    assert_eq!(json["phases"]["ready"]["status"], "not run");
    assert_eq!(json["outputs"]["cluster_name"], "aks-tiny");
    assert!(json["kubeconfig"].as_str().unwrap().ends_with("kubeconfig"));
    assert!(env.calls().iter().all(|c| !c.mutating()));
}

#[test]
fn dry_run_prints_the_terraform_and_credentials_commands_and_runs_nothing() {
    let env = sandbox(SPEC);
    let out = env.raydeploy().args(["deploy", "--dry-run"]).assert().success().get_output().stdout.clone();
    let out = String::from_utf8(out).unwrap();
    for want in [
        "step 2: infra ∥ image-build",
        "$ terraform -chdir=",
        "plan -input=false -no-color -detailed-exitcode -lock-timeout=120s -var=raydeploy_applied=",
        "-out=raydeploy.tfplan",
        "$ az group show --name rg-tiny --output json",
        "apply -input=false -no-color -lock-timeout=120s raydeploy.tfplan",
        "$ az aks get-credentials --resource-group rg-tiny --name aks-tiny --file",
        "$ az account show",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(env.calls().is_empty(), "{:?}", env.calls());
    assert!(!env.spec_dir.join(".raydeploy").exists());
}

#[test]
fn destructive_terraform_changes_are_refused_unless_allowed() {
    let mut env = sandbox(SPEC);
    let r = run(&env);
    assert!(r.ok(), "{r:?}");
    // A change Terraform can only make by replacing the cluster.
    env.write_spec(&SPEC.replace("count: 1", "count: 3"));
    env.set("RAYDEPLOY_FAKE_TF_REPLACE", "azurerm_kubernetes_cluster.this");
    env.clear_calls();
    let r = run(&env);
    assert_eq!(outcome(&r, "infra"), Outcome::Failed);
    let err = r.first_error().unwrap().1;
    assert!(err.contains("refusing destructive changes") && err.contains("the AKS cluster is replaced"), "{err}");
    assert!(err.contains("--allow-destroy"), "{err}");
    assert!(env.find("terraform", &["apply"]).is_empty());
    assert!(!env.state_dir("tiny").join("rendered/terraform/raydeploy.tfplan").exists());
    assert_eq!(env.fake_state("terraform")["applies"], 1);

    let r = run_with(&env, |s| s.allow_destroy = true);
    assert!(r.ok(), "{r:?}");
    assert_eq!(env.fake_state("terraform")["applies"], 2);
}

#[test]
fn deploy_with_a_saved_plan_applies_exactly_that_plan() {
    let env = sandbox(SPEC);
    let r = run(&env);
    assert!(r.ok(), "{r:?}");
    env.write_spec(&SPEC.replace("count: 1", "count: 2"));
    // `plan --out` saved Terraform's plan beside the raydeploy plan.
    let saved = env.tmp.path().join("release.plan.tfplan");
    let tfdir = env.state_dir("tiny").join("rendered/terraform");
    {
        let _g = EnvGuard::new(&env);
        session(&env).write_rendered().unwrap();
        let out = std::process::Command::new(env.bin.join("terraform"))
            .arg(format!("-chdir={}", tfdir.display()))
            .args(["plan", "-detailed-exitcode"])
            .arg(format!("-out={}", saved.display()))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
    }
    env.clear_calls();
    let r = run_with(&env, |s| s.saved_tfplan = Some(saved.clone()));
    assert!(r.ok(), "{r:?}");
    assert!(env.find("terraform", &["plan"]).is_empty(), "no new plan: {:#?}", lines(&env, "terraform"));
    let apply = env.find("terraform", &["apply"]);
    assert_eq!(apply.len(), 1);
    assert_eq!(apply[0].argv.last().unwrap(), &saved.display().to_string());
    assert_eq!(env.fake_state("terraform")["applies"], 2);
}

#[test]
fn deploy_sh_runs_raydeploy_deploy_with_the_arguments() {
    let env = sandbox(SPEC);
    let bin = assert_cmd::cargo::cargo_bin("raydeploy");
    let out = std::process::Command::new("/bin/bash")
        .arg(kube_env::root().join("deploy.sh"))
        .args(["--dry-run"])
        .current_dir(&env.spec_dir)
        .env("RAYDEPLOY_BIN", &bin)
        .env("PATH", format!("{}:/usr/bin:/bin", env.vars["PATH"]))
        .env("CI", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("step 1: preflight"), "{stdout}");
    assert!(env.calls().is_empty());
    // Arguments pass through: a deploy without a terminal needs --auto-approve.
    let out = std::process::Command::new("/bin/bash")
        .arg(kube_env::root().join("deploy.sh"))
        .current_dir(&env.spec_dir)
        .env("RAYDEPLOY_BIN", &bin)
        .env("PATH", format!("{}:/usr/bin:/bin", env.vars["PATH"]))
        .env("CI", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--auto-approve"), "{out:?}");
}

/// The whole deploy through the binary, every tool a fake (docker too): from a fresh checkout a
/// deploy whose resource group carries the configuration's hash makes reads only and never runs
/// Terraform; `--refresh`, a missing tag and another hash take the full path.
#[test]
fn the_binary_takes_the_fast_path_only_when_the_tag_matches() {
    let mut env = {
        let _lock = kube_env::env_lock();
        KubeEnv::new(SPEC, &["terraform", "az", "kubelogin", "helm", "kubectl", "docker"])
    };
    env.set("RAYDEPLOY_POLL_SECONDS", "0.02");
    let deploy = |env: &KubeEnv, extra: &[&str]| {
        env.clear_calls();
        let o = env.raydeploy().args(["deploy", "--auto-approve"]).args(extra).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let tf = |env: &KubeEnv| -> Vec<String> {
        env.find("terraform", &[])
            .iter()
            .map(|c| c.argv.iter().find(|a| !a.starts_with('-')).unwrap().clone())
            .collect()
    };
    deploy(&env, &[]);
    assert_eq!(env.fake_state("terraform")["applies"], 1);

    // Tag match from a fresh checkout: reads only, Terraform not run (not even asked for its
    // version).
    env.fresh_checkout();
    let err = deploy(&env, &[]);
    let calls = env.calls();
    let mutating: Vec<String> = calls.iter().filter(|c| c.mutating()).map(|c| c.line()).collect();
    assert!(mutating.is_empty(), "{mutating:#?}");
    assert_eq!(tf(&env), Vec::<String>::new());
    assert_eq!(env.find("az", &["group", "show"]).len(), 1, "one read of the tag for preflight and infra");
    assert!(env.find("az", &["vm", "list-usage"]).is_empty(), "nothing is created: no quota read");
    assert!(err.contains("unchanged: ") && err.contains("infra"), "{err}");
    // `ready` looked once and was done: the RayCluster was ready, no wait before the look.
    assert_eq!(env.find("kubectl", &["get", "raycluster"]).len(), 1, "{:#?}", env.find("kubectl", &["get"]));

    // --refresh: Terraform plans (no changes), nothing is applied, still no mutating call; its
    // version is asked again (not taken from the cache).
    env.fresh_checkout();
    deploy(&env, &["--refresh"]);
    assert_eq!(tf(&env), ["version", "init", "plan", "output"]);
    assert!(env.find("az", &["group", "show"]).is_empty());
    assert!(env.calls().iter().all(|c| !c.mutating()));
    assert_eq!(env.fake_state("terraform")["applies"], 1);

    // No tag: the full path; its apply writes the tag (and only the tag changes).
    let mut state = env.fake_state("terraform");
    state["vars"] = serde_json::json!({});
    env.set_fake_state("terraform", &state);
    // The version this binary reported is cached: not asked again.
    env.fresh_checkout();
    deploy(&env, &[]);
    assert_eq!(tf(&env), ["init", "plan", "show", "apply", "output"]);
    assert_eq!(env.fake_state("terraform")["applies"], 2);

    // Another configuration's hash (the spec changed): plan and apply.
    env.write_spec(&SPEC.replace("count: 1", "count: 2"));
    env.fresh_checkout();
    deploy(&env, &[]);
    assert_eq!(tf(&env), ["init", "plan", "show", "apply", "output"]);
    assert_eq!(env.fake_state("terraform")["applies"], 3);
    env.fresh_checkout();
    deploy(&env, &[]);
    assert_eq!(tf(&env), Vec::<String>::new(), "the new hash is on the group: the fast path again");
}

/// The versions tools reported are kept in the user's cache folder per binary: from a fresh
/// checkout on the same machine (a CI runner whose cache folder persists), a no-op deploy asks no
/// tool for its version, never asks the Docker engine (every image is in the registry) nor
/// `az account show` (the resource group's id names the subscription), and makes reads only. A
/// changed binary (another file, or the same file rewritten) is asked again; with
/// `RAYDEPLOY_NO_TOOL_CACHE=1` every tool is asked every time.
#[test]
fn a_no_op_asks_no_tool_for_its_version_and_a_changed_binary_is_asked_again() {
    let mut env = {
        let _lock = kube_env::env_lock();
        KubeEnv::new(SPEC, &["terraform", "az", "kubelogin", "helm", "kubectl", "docker"])
    };
    env.set("RAYDEPLOY_POLL_SECONDS", "0.02");
    let deploy = |env: &KubeEnv| {
        env.clear_calls();
        let o = env.raydeploy().args(["deploy", "--auto-approve"]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let asked = |env: &KubeEnv| -> Vec<String> {
        let mut v: Vec<String> = env
            .calls()
            .into_iter()
            .filter(|c| c.argv.first().is_some_and(|a| a == "version"))
            .map(|c| c.tool)
            .collect();
        v.sort();
        v
    };
    // The first deploy asks every tool it runs (the images are not in the registry yet: docker
    // builds and pushes).
    deploy(&env);
    assert_eq!(asked(&env), ["docker", "helm", "kubectl", "terraform"]);
    let cache = env.tmp.path().join("home/.cache/raydeploy/tool-versions");
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        3,
        "terraform, helm and kubectl are kept (docker's engine is not)"
    );

    // A fresh checkout: reads only, and nothing asked for its version.
    env.fresh_checkout();
    deploy(&env);
    let calls = env.calls();
    assert!(calls.iter().all(|c| !c.mutating()), "{:#?}", calls.iter().map(|c| c.line()).collect::<Vec<_>>());
    assert_eq!(asked(&env), Vec::<String>::new());
    assert!(env.find("docker", &[]).is_empty(), "the engine is not needed: {:#?}", env.find("docker", &[]));
    assert!(env.find("az", &["account", "show"]).is_empty());
    // Every call the no-op makes (tool and its first three words that are neither flags nor
    // paths): the fast path's two reads, the registry's tag, the kubeconfig, and the looks of the
    // cluster-side layers (CRDs; each release's status and values; the operator's Deployment, as
    // no state says it rolled out; the RayCluster and its pods).
    let mut made: Vec<String> = calls
        .iter()
        .map(|c| {
            let words: Vec<&str> =
                c.argv.iter().map(String::as_str).filter(|a| !a.starts_with('-') && !a.contains('/')).take(3).collect();
            format!("{} {}", c.tool, words.join(" "))
        })
        .collect();
    made.sort();
    assert_eq!(
        made,
        [
            "az acr repository show",
            "az acr show acrtiny",
            "az aks get-credentials rg-tiny",
            "az group show rg-tiny",
            "helm get values kuberay-operator",
            "helm get values tiny",
            "helm list kuberay json",
            "helm list ray json",
            "kubectl get crd rayclusters.ray.io",
            "kubectl get deployment kuberay",
            "kubectl get pods ray",
            "kubectl get raycluster tiny",
        ],
        "{made:#?}"
    );

    // Another helm binary (a copy of the fake: another file) is asked again, the others are not.
    let bin = env.bin.clone();
    // The copies import the emulated cluster from their own folder.
    std::os::unix::fs::symlink(kube_env::root().join("tests/fakes/_kube.py"), bin.join("_kube.py")).unwrap();
    let copy = |name: &str| {
        let to = bin.join(name);
        std::fs::remove_file(&to).unwrap();
        std::fs::copy(kube_env::root().join("tests/fakes").join(name), &to).unwrap();
        to
    };
    copy("helm");
    env.fresh_checkout();
    deploy(&env);
    assert_eq!(asked(&env), ["helm"]);
    env.fresh_checkout();
    deploy(&env);
    assert_eq!(asked(&env), Vec::<String>::new(), "the copy's answer is kept");
    // The same file changed in place (an upgrade over it): asked again.
    let kubectl = copy("kubectl");
    env.fresh_checkout();
    deploy(&env);
    assert_eq!(asked(&env), ["kubectl"]);
    let mut text = std::fs::read_to_string(&kubectl).unwrap();
    text.push_str("\n# upgraded\n");
    std::fs::write(&kubectl, text).unwrap();
    env.fresh_checkout();
    deploy(&env);
    assert_eq!(asked(&env), ["kubectl"]);

    // A corrupt cache is ignored (and rewritten).
    for e in std::fs::read_dir(&cache).unwrap() {
        std::fs::write(e.unwrap().path(), "{ not json").unwrap();
    }
    env.fresh_checkout();
    deploy(&env);
    assert_eq!(asked(&env), ["helm", "kubectl"]);
    env.fresh_checkout();
    deploy(&env);
    assert_eq!(asked(&env), Vec::<String>::new());

    // Off: every tool this deploy runs is asked, every time.
    env.set("RAYDEPLOY_NO_TOOL_CACHE", "1");
    for _ in 0..2 {
        env.fresh_checkout();
        deploy(&env);
        assert_eq!(asked(&env), ["helm", "kubectl"]);
    }
}
