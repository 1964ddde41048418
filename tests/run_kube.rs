//! `raydeploy run` on target aks, through the real binary with the fakes of tests/fakes
//! (terraform, az, kubelogin, helm, kubectl over an emulated cluster whose operator gives a RayJob
//! with a `rayClusterSpec` a RayCluster of its own) and the fake docker, whose registry the fake
//! az reads. Checked from the call log and the emulated cluster: from nothing, `run` brings up
//! everything an ephemeral job needs but the long-running cluster; after a deploy, from a fresh
//! checkout, it makes no mutating call but the job's own; the RayJob carries its own cluster
//! with the images pinned by digest and the job's group changes; the exit code is the job's;
//! `--rm` deletes the RayJob and its cluster; Ctrl-C deletes them; a shared job runs on the
//! long-running cluster.

#[path = "support/kube_env.rs"]
mod kube_env;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube_env::{Call, KubeEnv};
use serde_json::Value;

const SECRET: &str = "tok-run-5e1c9a77";

const SPEC: &str = r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: runs
target: aks
azure:
  location: eastus
  systemPool: { vmSize: Standard_D2s_v5, count: 1 }
image:
  rayVersion: "2.52.0"
  python: "3.12"
cluster:
  namespace: ray
  head: { vmSize: Standard_D4s_v5, cpu: 1, memory: 4Gi }
  workerGroups:
    - { name: cpu, vmSize: Standard_D4s_v5, cpu: 2, memory: 4Gi, replicas: 1 }
    - { name: big, vmSize: Standard_D8s_v5, cpu: 6, memory: 16Gi, replicas: 1, ephemeralOnly: true }
  env: { STAGE: test }
secrets:
  - name: api
    exposeAsEnv: true
    data:
      token: { fromEnv: RUN_TOKEN }
jobs:
  - name: train
    cluster: ephemeral
    entrypoint: python train.py
    workerGroups:
      - { name: big, replicas: 2 }
    ttlSecondsAfterFinished: 120
  - name: boom
    cluster: ephemeral
    entrypoint: python fail.py
  - name: long
    cluster: ephemeral
    entrypoint: python forever.py
  - name: report
    entrypoint: python report.py
"#;

/// Phases `run` brings up to date on aks (no `cluster`, no `ready`).
const PREREQUISITES: [&str; 9] =
    ["preflight", "infra", "image-build", "image-push", "credentials", "crds", "operator", "secrets", "mounts"];

fn sandbox() -> KubeEnv {
    // The fake docker keeps its registry where the fake az's `acr repository show` reads it.
    let mut env = KubeEnv::new(SPEC, &["terraform", "az", "kubelogin", "helm", "kubectl", "docker"]);
    env.set("RUN_TOKEN", SECRET);
    env.set("RAYDEPLOY_POLL_SECONDS", "0.05");
    env.set("RAYDEPLOY_READY_TIMEOUT", "60");
    env
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn run(env: &KubeEnv, args: &[&str]) -> std::process::Output {
    env.raydeploy().args(args).output().unwrap()
}

fn mutating(env: &KubeEnv) -> Vec<Call> {
    env.calls().into_iter().filter(Call::mutating).collect()
}

fn lines(calls: &[Call]) -> Vec<String> {
    calls.iter().map(Call::line).collect()
}

/// Phase → outcome, from the `--output json` summary of the prerequisites.
fn outcomes(o: &std::process::Output) -> BTreeMap<String, String> {
    let out = String::from_utf8_lossy(&o.stdout);
    let summary: Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary in:\n{}", text(o)));
    summary["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_string(), p["outcome"].as_str().unwrap().to_string()))
        .collect()
}

fn objects(env: &KubeEnv, kind: &str) -> Vec<Value> {
    let st = env.fake_state("kube");
    st["objects"].as_object().map(|o| o.values().filter(|v| v["kind"] == kind).cloned().collect()).unwrap_or_default()
}

fn rayjob(env: &KubeEnv, name: &str) -> Option<Value> {
    objects(env, "RayJob").into_iter().find(|o| o["metadata"]["name"] == name)
}

/// RayClusters a RayJob owns.
fn owned_clusters(env: &KubeEnv, job: &str) -> Vec<Value> {
    objects(env, "RayCluster")
        .into_iter()
        .filter(|rc| rc["metadata"]["ownerReferences"].as_array().into_iter().flatten().any(|r| r["name"] == job))
        .collect()
}

/// The RayJob a call applied (its stdin).
fn applied_rayjob(c: &Call) -> Option<Value> {
    let v: Value = serde_json::from_str(&c.stdin).ok()?;
    let items = v["items"].as_array().cloned().unwrap_or_else(|| vec![v.clone()]);
    items.into_iter().find(|o| o["kind"] == "RayJob")
}

/// A mutating call that is the job's own: the RayJob `name` deleted or applied.
fn job_call(c: &Call, name: &str) -> bool {
    (c.tool == "kubectl" && c.has(&["delete", "rayjob", name]))
        || (c.tool == "kubectl"
            && c.has(&["apply"])
            && applied_rayjob(c).is_some_and(|j| j["metadata"]["name"] == name))
}

#[test]
fn from_nothing_run_brings_up_what_the_job_needs_but_not_the_long_running_cluster() {
    let env = sandbox();
    let o = run(&env, &["run", "train", "--auto-approve", "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let phases = outcomes(&o);
    assert_eq!(phases.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut p = PREREQUISITES.to_vec();
        p.sort();
        p
    });
    // Everything ran (the spec has no mounts: nothing to apply).
    assert!(phases.iter().all(|(p, o)| o == "ran" || (p == "mounts" && o == "skipped")), "{phases:?}");
    let calls = env.calls();
    // The long-running cluster is not installed; the operator is.
    assert!(env.find("helm", &["ray-cluster"]).iter().all(|c| !c.has(&["upgrade"])), "{:#?}", lines(&calls));
    assert!(!env.find("helm", &["upgrade", "kuberay-operator"]).is_empty(), "{:#?}", lines(&calls));
    assert!(!env.find("terraform", &["apply"]).is_empty());
    assert!(objects(&env, "RayCluster").iter().all(|rc| rc["metadata"]["name"] != "runs"));
    // The RayJob: its own cluster, the job's changes, images pinned by digest, the same pods.
    let apply = calls.iter().rev().find(|c| c.tool == "kubectl" && c.has(&["apply"]) && applied_rayjob(c).is_some());
    let rj = applied_rayjob(apply.expect("the RayJob was applied")).unwrap();
    let spec = &rj["spec"];
    assert!(spec.get("clusterSelector").is_none(), "{rj:#}");
    assert_eq!(spec["shutdownAfterJobFinishes"], true);
    assert_eq!(spec["ttlSecondsAfterFinished"], 120);
    let rc = &spec["rayClusterSpec"];
    let groups: Vec<(&str, u64)> = rc["workerGroupSpecs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["groupName"].as_str().unwrap(), g["replicas"].as_u64().unwrap()))
        .collect();
    assert_eq!(groups, [("cpu", 1), ("big", 2)]);
    let pods: Vec<&Value> = std::iter::once(&rc["headGroupSpec"])
        .chain(rc["workerGroupSpecs"].as_array().unwrap())
        .map(|g| &g["template"]["spec"])
        .collect();
    // Pinned by the digest the push recorded.
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(env.spec_dir.join(".raydeploy/runs/state.json")).expect("state.json"),
    )
    .unwrap();
    let pinned = state["phases"]["image-push"]["outputs"]["cpu_image"].as_str().expect("cpu_image").to_string();
    assert!(pinned.contains("@sha256:"), "{pinned}");
    for p in &pods {
        let c = &p["containers"][0];
        assert_eq!(c["image"].as_str().unwrap(), pinned, "pinned: {c:#}");
        assert!(c["env"].as_array().unwrap().iter().any(|e| e["name"] == "STAGE" && e["value"] == "test"), "{c:#}");
        assert_eq!(c["envFrom"][0]["secretRef"]["name"], "api");
        assert!(p["nodeSelector"]["raydeploy.io/group"].is_string(), "{p:#}");
    }
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains(SECRET) && !String::from_utf8_lossy(&o.stderr).contains(SECRET)
    );
    // The job ran on its own cluster; its RayJob stays until the operator's TTL.
    let out = text(&o);
    assert!(out.contains("result: 42") && out.contains("job train succeeded"), "{out}");
    assert!(out.contains("\"event\":\"run\"") && out.contains("\"exit_code\":0"), "{out}");
    assert!(rayjob(&env, "train").is_some());
    assert_eq!(owned_clusters(&env, "train").len(), 1);
    let o = run(&env, &["job", "submit", "train"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("run it with `raydeploy run train`"), "{}", text(&o));
}

#[test]
fn after_a_deploy_a_fresh_checkout_runs_nothing_but_the_job_and_rm_leaves_nothing() {
    let mut env = sandbox();
    let o = run(&env, &["deploy", "--auto-approve"]);
    assert!(o.status.success(), "{}", text(&o));
    // The long-running cluster has no ephemeral-only group; the deploy submits no ephemeral job.
    let rc = objects(&env, "RayCluster").into_iter().find(|rc| rc["metadata"]["name"] == "runs").unwrap();
    let names: Vec<&str> =
        rc["spec"]["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["headgroup", "cpu"]);

    env.fresh_checkout();
    env.clear_calls();
    let o = run(&env, &["run", "train", "--auto-approve", "--rm", "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let phases = outcomes(&o);
    // Every mutating phase finds its work done (preflight checks; credentials writes the fresh
    // checkout's own kubeconfig, changing nothing outside it).
    for (p, outcome) in &phases {
        let want = if matches!(p.as_str(), "preflight" | "credentials") { "ran" } else { "skipped" };
        assert_eq!(outcome, want, "{p}: {phases:?}\n{}", text(&o));
    }
    let m = mutating(&env);
    assert!(!m.is_empty());
    assert!(m.iter().all(|c| job_call(c, "train")), "only the job's calls: {:#?}", lines(&m));
    // --rm: the RayJob and its cluster are gone once the job ended.
    let deletes: Vec<&Call> = m.iter().filter(|c| c.has(&["delete"])).collect();
    assert_eq!(deletes.len(), 2, "the previous RayJob (none), then this one: {:#?}", lines(&m));
    assert!(rayjob(&env, "train").is_none());
    assert!(owned_clusters(&env, "train").is_empty());
    assert!(objects(&env, "Pod").iter().all(|p| !p["metadata"]["name"].as_str().unwrap().starts_with("train-")));
    // The long-running cluster is untouched.
    assert!(objects(&env, "RayCluster").iter().any(|rc| rc["metadata"]["name"] == "runs"));

    // A failing job: its exit code, its logs, and its RayJob left to the TTL.
    let o = run(&env, &["run", "boom", "--auto-approve"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("RuntimeError: the job failed on purpose"), "{}", text(&o));
    assert!(text(&o).contains("job boom failed (FAILED)"), "{}", text(&o));
    assert!(text(&o).contains("the operator deletes them; --rm deletes them at once"), "{}", text(&o));
    assert!(rayjob(&env, "boom").is_some());

    // A shared job runs on the long-running cluster, as `job submit --follow`; nothing deployed.
    env.clear_calls();
    let o = run(&env, &["run", "report", "--rm"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("result: 42"), "{}", text(&o));
    let m = mutating(&env);
    assert!(m.iter().all(|c| job_call(c, "report")), "{:#?}", lines(&m));
    assert!(env.find("terraform", &[]).is_empty() && env.find("helm", &[]).is_empty(), "{:#?}", lines(&env.calls()));
    let rj = m.iter().find_map(applied_rayjob).unwrap();
    assert_eq!(rj["spec"]["clusterSelector"]["ray.io/cluster"], "runs");
    assert!(rayjob(&env, "report").is_none(), "--rm");
}

/// Waits (bounded) until `f` holds, reading the emulated cluster.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctrl_c_deletes_the_rayjob_and_its_cluster() {
    let env = sandbox();
    let o = run(&env, &["deploy", "--auto-approve"]);
    assert!(o.status.success(), "{}", text(&o));
    let child = env
        .raydeploy_std()
        .args(["run", "long", "--auto-approve"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("RayJob long to run on its own cluster", || {
        rayjob(&env, "long").is_some_and(|j| j["status"]["jobDeploymentStatus"] == "Running")
            && !owned_clusters(&env, "long").is_empty()
    });
    // SAFETY: SIGINT to the raydeploy process this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(text(&o).contains("interrupted: RayJob ray/long deleted"), "{}", text(&o));
    assert!(rayjob(&env, "long").is_none());
    assert!(owned_clusters(&env, "long").is_empty());
    let del = env.find("kubectl", &["delete", "rayjob", "long", "--cascade=foreground"]);
    assert!(del.iter().any(Call::ok), "{:#?}", lines(&env.calls()));
}

#[test]
fn dry_run_shows_the_prerequisites_and_runs_nothing() {
    let env = sandbox();
    let o = run(&env, &["run", "train", "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for p in PREREQUISITES {
        assert!(out.contains(&format!("  {p}")), "{p}:\n{out}");
    }
    assert!(!out.contains("ray-cluster") && !out.contains("  ready"), "{out}");
    assert!(out.contains("then: job train on a cluster of its own (head, cpu ×1, big ×2)"), "{out}");
    assert!(env.calls().iter().all(|c| !c.mutating()));
    assert!(!env.state_dir("runs").join("state.json").exists());
}

#[test]
fn runs_wait_for_one_another_but_not_for_a_deploy() {
    use std::io::BufRead;
    let env = sandbox();
    let dir = env.state_dir("runs");
    std::fs::create_dir_all(&dir).unwrap();
    // A lock held by this (live) test process, as a `deploy` or another `run` would hold it.
    let holder = |command: &str| {
        serde_json::json!({"pid": std::process::id(), "started_at": 1, "command": command, "proc_start": null})
            .to_string()
    };
    std::fs::write(dir.join("lock"), holder("deploy")).unwrap();
    let o = run(&env, &["run", "train", "--auto-approve"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(&format!("locked by PID {} (`deploy`", std::process::id())), "{}", text(&o));
    assert!(env.calls().iter().all(|c| !c.mutating()), "{:#?}", lines(&env.calls()));

    std::fs::write(dir.join("lock"), holder("run")).unwrap();
    let mut child = env
        .raydeploy_std()
        .args(["run", "train", "--auto-approve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let waiting = err.by_ref().map(Result::unwrap).find(|l| l.contains("waiting for the run of PID"));
    assert!(waiting.is_some(), "the run did not wait for the other one");
    assert!(env.calls().iter().all(|c| !c.mutating()), "nothing ran while waiting");
    std::fs::remove_file(dir.join("lock")).unwrap();
    let rest: Vec<String> = err.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", rest.join("\n"));
    assert!(rest.iter().any(|l| l.contains("job train succeeded")), "{}", rest.join("\n"));
}
