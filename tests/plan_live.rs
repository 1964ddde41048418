//! The live plan of a target-kubernetes deployment, end to end: a real Docker engine and
//! registry on 127.0.0.1 (tests/support/docker_env.rs) for the image layer, the fake helm and
//! kubectl (tests/fakes, one emulated cluster) for the releases and Secrets. Nothing deployed →
//! every layer is created after its phase; after a deploy → no changes (exit 0); a rotated
//! secret value → the key is named, the values never appear; `plan --out` + `deploy --plan`
//! applies that plan and refuses it once the live release moved.

#[path = "support/docker_env.rs"]
mod docker_env;
#[path = "support/kube_env.rs"]
mod kube_env;

use docker_env::DockerEnv;
use kube_env::KubeEnv;
use serde_json::Value;

const CANARY_OLD: &str = "canary-old-5d1e8f20c7";
const CANARY_NEW: &str = "canary-new-b93a04e6f1";

fn spec(registry: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: live
target: kubernetes

kubernetes:
  registry: {registry}/acme/live

image:
  rayVersion: "2.52.0"
  python: "3.11"

cluster:
  namespace: rayns
  head: {{ cpu: 1, memory: 2Gi }}
  workerGroups:
    - name: cpu
      cpu: 1
      memory: 2Gi
      replicas: {replicas}

secrets:
  - name: api
    exposeAsEnv: true
    data:
      token: {{ fromEnv: LIVE_TOKEN }}

jobs:
  - name: report
    entrypoint: python -c "print(42)"
"#
    )
}

fn out(o: &std::process::Output) -> (i32, String) {
    (
        o.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
    )
}

fn layer<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["layers"].as_array().unwrap().iter().find(|l| l["layer"] == name).unwrap()
}

fn plan_json(env: &KubeEnv) -> (i32, Value) {
    let o = env.raydeploy().args(["plan", "--output", "json"]).output().unwrap();
    let code = o.status.code().unwrap_or(-1);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&o.stderr)));
    (code, v)
}

/// Every file under `dir` as text (logs, state, rendered files, snapshots).
fn all_text(dir: &std::path::Path) -> String {
    let mut s = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            s.push_str(&all_text(&p));
        } else {
            s.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()));
        }
    }
    s
}

#[test]
fn live_plan_across_layers_and_plan_files() {
    let docker = DockerEnv::start();
    let reg = docker.registry.addr.clone();
    let mut env = KubeEnv::new(&spec(&reg, 2), &["helm", "kubectl", "az"]);
    env.add_real("docker");
    env.set("DOCKER_HOST", docker.engine.host.clone());
    env.set("DOCKER_BUILDKIT", "0");
    env.set("LIVE_TOKEN", CANARY_OLD);
    env.set("RAYDEPLOY_POLL_SECONDS", "0.05");
    docker.engine.build_base("rayproject/ray", "2.52.0-py311");

    // Nothing deployed: each layer says what creates it.
    let (code, p) = plan_json(&env);
    assert_eq!(code, 2, "{p}");
    assert_eq!(p["mode"], "live");
    assert_eq!(layer(&p, "image")["items"][0]["action"], "build");
    let op = layer(&p, "operator");
    assert_eq!(op["status"], "create");
    assert!(op["note"].as_str().unwrap().contains("created after crds"), "{op}");
    let sec = layer(&p, "secrets");
    assert_eq!(sec["items"][0]["name"], "api.token");
    assert_eq!(sec["items"][0]["action"], "add");

    let (code, text) = out(&env.raydeploy().args(["deploy", "--auto-approve"]).output().unwrap());
    assert_eq!(code, 0, "{text}");

    // Deployed (without --with-jobs): nothing to do. The job, never run, is information only.
    let (code, text) = out(&env.raydeploy().arg("plan").output().unwrap());
    let log = std::fs::read_to_string(env.state_dir("live").join("logs/plan.log")).unwrap_or_default();
    assert_eq!(code, 0, "{text}\n{log}");
    assert!(text.contains("No changes."), "{text}");
    assert!(text.contains("i RayJob/report: not on the cluster"), "{text}");
    // plan --with-jobs is in step with deploy --with-jobs: it would submit the job.
    let o = env.raydeploy().args(["plan", "--with-jobs", "--output", "json"]).output().unwrap();
    let p: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(2), "{p}");
    let jobs = layer(&p, "jobs");
    assert_eq!(jobs["status"], "changes", "{jobs}");
    assert_eq!(jobs["items"][0]["action"], "run", "{jobs}");
    assert_eq!(jobs["items"][0]["name"], "RayJob/report", "{jobs}");
    let (code, text) = out(&env.raydeploy().args(["deploy", "--auto-approve", "--with-jobs"]).output().unwrap());
    assert_eq!(code, 0, "{text}");
    // The job ran with these inputs and succeeded: deploy --with-jobs skips it, so does the plan.
    let (code, text) = out(&env.raydeploy().args(["plan", "--with-jobs"]).output().unwrap());
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("RayJob/report: on the cluster (SUCCEEDED)"), "{text}");
    let (code, text) = out(&env.raydeploy().arg("plan").output().unwrap());
    assert_eq!(code, 0, "{text}");

    // A rotated secret value: the key is named, no value is shown anywhere.
    env.set("LIVE_TOKEN", CANARY_NEW);
    let (code, text) = out(&env.raydeploy().arg("plan").output().unwrap());
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("~ api.token: value changed (redacted)"), "{text}");
    let (_, p) = plan_json(&env);
    assert_eq!(layer(&p, "secrets")["items"][0]["action"], "change");
    for canary in [CANARY_OLD, CANARY_NEW] {
        assert!(!text.contains(canary) && !p.to_string().contains(canary), "a secret value leaked into the plan");
    }

    // plan --out + deploy --plan applies exactly that plan.
    let (code, text) = out(&env.raydeploy().args(["plan", "--out", "p1.plan"]).output().unwrap());
    assert_eq!(code, 2, "{text}");
    let (code, text) = out(&env.raydeploy().args(["deploy", "--auto-approve", "--plan", "p1.plan"]).output().unwrap());
    assert_eq!(code, 0, "{text}");
    let (code, text) = out(&env.raydeploy().arg("plan").output().unwrap());
    assert_eq!(code, 0, "{text}");

    // A replicas change shows in the cluster values; once the live release moves after the plan
    // was written, deploy --plan refuses it and names the release.
    env.write_spec(&spec(&reg, 3));
    let (code, text) = out(&env.raydeploy().args(["plan", "--out", "p2.plan"]).output().unwrap());
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("+  replicas: 3"), "{text}");
    let (code, text) = out(&env.raydeploy().args(["deploy", "--auto-approve"]).output().unwrap());
    assert_eq!(code, 0, "{text}");
    let (code, text) = out(&env.raydeploy().args(["deploy", "--auto-approve", "--plan", "p2.plan"]).output().unwrap());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no longer matches") && text.contains("live release"), "{text}");

    for canary in [CANARY_OLD, CANARY_NEW] {
        assert!(!all_text(&env.spec_dir).contains(canary), "a secret value reached a file next to the spec");
    }
}
