//! The Kubernetes side of raydeploy against a real control plane (tests/support/testbed.rs): the
//! real `raydeploy` binary, target `kubernetes`, with the real Helm (3 and 4) and the bed's real
//! kubectl, behind recording wrappers that only log their argv (tests/support/bed_deploy.rs). The
//! API server validates and stores what raydeploy applies, the real KubeRay operator makes the
//! pods, the real scheduler places them on kwok's nodes, and kwok runs them (no containers). The
//! image phases use a docker stand-in that builds and pushes by name.
//!
//! The tests share one bed and run one at a time (the KubeRay operator release and its
//! cluster-scoped objects are shared by every deployment); each has its own deployment name and
//! namespace. Timings are printed, never asserted.

#[path = "support/testbed.rs"]
mod testbed;

#[path = "support/kube_env.rs"]
mod kube_env;

#[path = "support/bed_deploy.rs"]
mod bed_deploy;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bed_deploy::{BedDeploy, WAIT, condition, files, operator_bed, text};
use serde_json::Value;
use testbed::TestBed;

const CANARY: &str = "cnry-7d1e4b0a92f3";

/// One test at a time: the operator release is shared.
static SERIAL: Mutex<()> = Mutex::new(());

fn spec(name: &str, cpu_replicas: u32, extra: &str) -> String {
    spec_cpu(name, cpu_replicas, 1, extra)
}

fn spec_cpu(name: &str, cpu_replicas: u32, worker_cpu: u32, extra: &str) -> String {
    format!(
        r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: {name}
target: kubernetes

kubernetes:
  registry: 127.0.0.1:5999/acme/ray-{name}

image:
  rayVersion: "2.52.0"
  python: "3.12"

kuberay:
  charts: vendor/kuberay

cluster:
  namespace: {name}
  head: {{ cpu: 1, memory: 2Gi }}
  workerGroups:
    - name: cpu
      cpu: {worker_cpu}
      memory: 2Gi
      replicas: {cpu_replicas}
    - name: gpu
      cpu: 1
      memory: 4Gi
      gpus: 1
      replicas: 1

secrets:
  - name: api
    exposeAsEnv: true
    data:
      token: {{ fromEnv: BED_TOKEN }}
{extra}"#
    )
}

fn project(bed: &'static TestBed, helm: &str, spec: &str) -> BedDeploy {
    let mut p = BedDeploy::new(bed, helm, spec);
    p.set("BED_TOKEN", CANARY);
    p.set("RAYDEPLOY_READY_TIMEOUT", "300");
    p
}

fn deploy(p: &BedDeploy, extra: &[&str]) -> (std::process::Output, Duration) {
    let t0 = Instant::now();
    let mut args = vec!["deploy", "--auto-approve"];
    args.extend(extra);
    let o = p.run(&args);
    (o, t0.elapsed())
}

fn assert_no_canary(what: &str, t: &str) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(CANARY);
    assert!(!t.contains(CANARY) && !t.contains(&b64), "the secret value appears in {what}");
}

/// The pods of RayCluster `name` in namespace `name`, once head and every worker run.
fn running_pods(bed: &TestBed, name: &str, workers: usize) -> Vec<Value> {
    bed.wait_for(&format!("RayCluster {name}'s pods to run"), WAIT, |note| {
        let pods = bed.get_json(&["pods", "-n", name, "-l", &format!("ray.io/cluster={name}")]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        *note = items
            .iter()
            .map(|p| format!("{} {} {}", p["metadata"]["name"], p["status"]["phase"], p["spec"]["nodeName"]))
            .collect::<Vec<_>>()
            .join("; ");
        let running = items.iter().filter(|p| p["status"]["phase"] == "Running").count();
        (running == items.len() && items.len() == workers + 1).then_some(items)
    })
}

fn deploy_from_nothing_then_noop_plan_status_destroy(helm: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("full-{helm}");
    let bed = operator_bed(&name, "8");
    let p = project(bed, helm, &spec(&name, 1, ""));

    // 1. From nothing.
    let (o, first) = deploy(&p, &[]);
    let out = text(&o);
    assert!(o.status.success(), "deploy with {helm}:\n{out}\ncalls:\n{:#?}", p.calls());
    eprintln!("{helm}: deploy from nothing took {:.1} s", first.as_secs_f64());

    // CRDs: applied server-side by raydeploy, labelled with the KubeRay version, Established.
    for crd in ["rayclusters.ray.io", "rayjobs.ray.io"] {
        let c = bed.get_json(&["crd", crd, "--show-managed-fields"]);
        assert_eq!(c["metadata"]["labels"]["raydeploy.io/kuberay-version"], "1.7.0", "{crd}");
        assert_eq!(condition(&c, "Established").unwrap()["status"], "True", "{crd}");
        let managers = c["metadata"]["managedFields"].as_array().unwrap();
        assert!(
            managers.iter().any(|m| m["manager"] == "raydeploy" && m["operation"] == "Apply"),
            "{crd} applied server-side by raydeploy: {managers:?}"
        );
    }
    assert!(
        p.calls().iter().any(|c| c.tool == "kubectl" && c.argv.iter().any(|a| a == "--server-side")),
        "a server-side apply"
    );
    // The operator release, from the local charts, and its Deployment Available (kwok runs it).
    let rel: Value =
        serde_json::from_str(&bed.helm(helm, &["status", "kuberay-operator", "-n", "kuberay", "-o", "json"]))
            .expect("helm status JSON");
    assert_eq!(rel["info"]["status"], "deployed", "{rel}");
    let ups: Vec<String> = p
        .calls()
        .iter()
        .filter(|c| c.tool == "helm" && c.argv.first().is_some_and(|a| a == "upgrade"))
        .map(|c| c.line())
        .collect();
    assert!(ups.iter().any(|l| l.contains("kuberay-operator") && l.contains("vendor/kuberay")), "{ups:#?}");
    bed.wait_for("the operator Deployment to be Available", WAIT, |note| {
        let deploys = bed.get_json(&["deployments", "-n", "kuberay"]);
        *note = deploys.to_string();
        deploys["items"]
            .as_array()?
            .iter()
            .any(|d| {
                d["metadata"]["name"].as_str().is_some_and(|n| n.contains("kuberay-operator"))
                    && condition(d, "Available").is_some_and(|c| c["status"] == "True")
            })
            .then_some(())
    });

    // The Secret holds the value from the environment; read back through the API only.
    let secrets = bed.get_json(&["secrets", "-n", &name]);
    let found = secrets["items"].as_array().unwrap().iter().any(|s| {
        use base64::Engine;
        s["data"]["token"].as_str().and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok()).as_deref()
            == Some(CANARY.as_bytes())
    });
    assert!(found, "a Secret in {name} with the token");
    assert_no_canary("deploy's output", &out);
    assert_no_canary("the recorded calls", &std::fs::read_to_string(p.log_path()).unwrap());
    for (path, t) in files(&p.spec_dir.join(".raydeploy")) {
        assert_no_canary(&path.display().to_string(), &t);
    }

    // The ray-cluster release and the operator's pods, placed by the scheduler.
    let rel: Value = serde_json::from_str(&bed.helm(helm, &["status", &name, "-n", &name, "-o", "json"])).unwrap();
    assert_eq!(rel["info"]["status"], "deployed");
    let pods = running_pods(bed, &name, 2);
    for pod in &pods {
        let node = bed.get_json(&["node", pod["spec"]["nodeName"].as_str().unwrap()]);
        let group = pod["metadata"]["labels"]["ray.io/group"].as_str().unwrap_or("");
        let pool = &node["metadata"]["labels"]["raydeploy.test/pool"];
        if group == "gpu" {
            assert_eq!(pool, "gpu", "the GPU worker on the GPU node");
        } else {
            assert_eq!(pool, "cpu", "{} ({group}) stays off the tainted GPU node", pod["metadata"]["name"]);
        }
    }
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(p.state_dir(&name).join("state.json")).unwrap()).unwrap();
    assert_eq!(state["phases"]["ready"]["status"], "completed", "{}", state["phases"]);

    // 2. Again: nothing to do, decided from the live objects.
    p.clear_calls();
    let (o, second) = deploy(&p, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(p.mutating(), Vec::<String>::new(), "a second deploy changes nothing");
    eprintln!("{helm}: second (no-op) deploy took {:.1} s", second.as_secs_f64());

    // 3. From a fresh checkout (no state): still nothing.
    std::fs::remove_file(p.state_dir(&name).join("state.json")).unwrap();
    p.clear_calls();
    let (o, fresh) = deploy(&p, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(p.mutating(), Vec::<String>::new(), "a deploy from a fresh checkout changes nothing");
    eprintln!("{helm}: deploy from a fresh checkout took {:.1} s", fresh.as_secs_f64());

    // plan against the live cluster.
    let o = p.run(&["plan"]);
    assert_eq!(o.status.code(), Some(0), "plan after deploy:\n{}", text(&o));
    p.write_spec(&spec(&name, 2, ""));
    p.clear_calls();
    let o = p.run(&["plan"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "plan after a replicas change:\n{out}");
    assert!(out.contains("replicas"), "the values diff names replicas:\n{out}");
    assert_eq!(p.mutating(), Vec::<String>::new(), "plan changes nothing");
    assert_no_canary("plan's output", &out);
    p.write_spec(&spec(&name, 1, ""));

    // status from the real objects.
    let o = p.run(&["status", "--output", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let st: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let st_text = st.to_string();
    assert!(st_text.contains("ready"), "status names the RayCluster's state: {st}");

    // destroy: nothing of the deployment is left; a second destroy succeeds.
    let o = p.run(&["destroy", "--auto-approve"]);
    assert!(o.status.success(), "destroy:\n{}", text(&o));
    let releases = bed.helm(helm, &["list", "-A", "-q", "--deployed", "--failed", "--pending", "--uninstalling"]);
    assert!(!releases.lines().any(|l| l == name), "ray-cluster release gone: {releases}");
    let rcs = bed.get_json(&["rayclusters", "-n", &name]);
    assert_eq!(rcs["items"].as_array().unwrap().len(), 0, "{rcs}");
    let secrets = bed.get_json(&["secrets", "-n", &name, "-l", &format!("raydeploy.io/deployment={name}")]);
    assert_eq!(secrets["items"].as_array().unwrap().len(), 0, "{secrets}");
    let o = p.run(&["destroy", "--auto-approve"]);
    assert!(o.status.success(), "second destroy:\n{}", text(&o));
}

#[test]
fn helm3_deploy_noop_plan_status_destroy() {
    deploy_from_nothing_then_noop_plan_status_destroy("helm3");
}

#[test]
fn helm4_deploy_noop_plan_status_destroy() {
    deploy_from_nothing_then_noop_plan_status_destroy("helm4");
}

/// A worker asking more CPU than any node has: `ready` gives up after RAYDEPLOY_READY_TIMEOUT,
/// naming the pod and the scheduler's reason.
fn unschedulable_worker(helm: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("big-{helm}");
    let bed = operator_bed(&name, "4");
    let mut p = project(bed, helm, &spec_cpu(&name, 1, 64, ""));
    p.set("RAYDEPLOY_READY_TIMEOUT", "20");
    let (o, _) = deploy(&p, &[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "deploy with an unschedulable worker:\n{out}");
    let pods = bed.get_json(&["pods", "-n", &name, "-l", &format!("ray.io/cluster={name},ray.io/group=cpu")]);
    let pod = pods["items"][0]["metadata"]["name"].as_str().expect("the cpu worker's pod exists").to_string();
    assert_eq!(pods["items"][0]["status"]["phase"], "Pending");
    assert!(out.contains("is not ready after 20s"), "{out}");
    assert!(out.contains(&pod), "the message names pod {pod}:\n{out}");
    assert!(out.contains("Insufficient cpu"), "the message gives the scheduler's reason:\n{out}");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(p.state_dir(&name).join("state.json")).unwrap()).unwrap();
    assert_eq!(state["phases"]["ready"]["status"], "failed", "{}", state["phases"]);
    let o = p.run(&["destroy", "--auto-approve"]);
    assert!(o.status.success(), "destroy:\n{}", text(&o));
}

#[test]
fn helm3_unschedulable_worker_fails_ready_with_the_schedulers_reason() {
    unschedulable_worker("helm3");
}

#[test]
fn helm4_unschedulable_worker_fails_ready_with_the_schedulers_reason() {
    unschedulable_worker("helm4");
}

/// `job submit`: the API server accepts the RayJob raydeploy renders (the CRD's schema validates
/// it on the way in). Its run cannot complete: kwok's pods run no Ray, so the RayJob's submitter
/// never reaches the dashboard. Only the acceptance is asserted; the waiting `job submit` is
/// interrupted once the object is stored.
fn rayjob_accepted(helm: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("job-{helm}");
    let bed = operator_bed(&name, "8");
    let jobs = "jobs:\n  - name: hello\n    entrypoint: python -c 'print(42)'\n    activeDeadlineSeconds: 600\n";
    let p = project(bed, helm, &spec(&name, 1, jobs));
    let (o, _) = deploy(&p, &[]);
    assert!(o.status.success(), "deploy:\n{}", text(&o));
    p.clear_calls();
    let child = p.spawn(&["job", "submit", "hello"]);
    let rj = bed.wait_for("RayJob hello to be stored", WAIT, |note| {
        let out = bed.kubectl_output(&["get", "rayjob", "hello", "-n", &name, "-o", "json"]);
        *note = String::from_utf8_lossy(&out.stderr).into_owned();
        out.status.success().then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    });
    // SAFETY: SIGINT to the raydeploy process this test started (nsenter execs it).
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(rj["spec"]["entrypoint"], "python -c 'print(42)'", "{rj}");
    assert!(
        p.calls().iter().any(|c| c.tool == "kubectl" && c.argv.first().is_some_and(|a| a == "apply")),
        "raydeploy applied the RayJob: {:#?}\n{}",
        p.calls(),
        text(&out)
    );
    let o = p.run(&["destroy", "--auto-approve"]);
    assert!(o.status.success(), "destroy:\n{}", text(&o));
    let left = bed.get_json(&["rayjobs", "-n", &name]);
    assert_eq!(left["items"].as_array().unwrap().len(), 0, "destroy removes the RayJob: {left}");
}

#[test]
fn helm3_rayjob_is_accepted_by_the_api_server() {
    rayjob_accepted("helm3");
}

#[test]
fn helm4_rayjob_is_accepted_by_the_api_server() {
    rayjob_accepted("helm4");
}
