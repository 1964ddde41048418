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

#[path = "support/bed_deploy.rs"]
mod bed_deploy;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bed_deploy::{BedDeploy, text};
use serde_json::Value;
use testbed::{NodeSpec, TestBed, shared};

const CANARY: &str = "cnry-7d1e4b0a92f3";
const WAIT: Duration = Duration::from_secs(180);

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

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

/// The bed with the KubeRay operator running, a CPU node and a GPU node (tainted like the GPU
/// groups' tolerations expect) for deployment `name`.
fn bed_for(name: &str, cpu: &str) -> &'static TestBed {
    let bed = shared();
    // The operator watches the KubeRay CRDs, so they come first (without raydeploy's label: its
    // crds phase still applies them). Waited for here by condition: a `kubectl wait` right after
    // the first apply can find no `status.conditions` yet.
    let crds = testbed::kuberay_data().join("charts/kuberay-operator/crds");
    bed.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &crds.display().to_string()]);
    for crd in ["rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io", "raycronjobs.ray.io"] {
        bed.wait_for(&format!("CRD {crd} to be Established"), WAIT, |note| {
            let c = bed.get_json(&["crd", crd]);
            *note = c["status"].to_string();
            condition(&c, "Established").is_some_and(|c| c["status"] == "True").then_some(())
        });
    }
    bed.start_operator();
    bed.add_node(&NodeSpec::new(&format!("{name}-cpu")).cpu(cpu).memory("32Gi").label("raydeploy.test/pool", "cpu"));
    bed.add_node(
        &NodeSpec::new(&format!("{name}-gpu"))
            .cpu("8")
            .memory("32Gi")
            .gpus(1)
            .label("raydeploy.test/pool", "gpu")
            .taint("nvidia.com/gpu", "present", "NoSchedule"),
    );
    bed
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

fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&all_text(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push_str(&String::from_utf8_lossy(&b));
        }
    }
    out
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
    let bed = bed_for(&name, "8");
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
    assert_no_canary(".raydeploy (state, logs, rendered files)", &all_text(&p.spec_dir.join(".raydeploy")));

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
    let bed = bed_for(&name, "4");
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
    let bed = bed_for(&name, "8");
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

/// `run` of an ephemeral job against the real control plane: from nothing, `run` brings up what
/// the job needs (CRDs, the operator with the real Helm, the Secret) but no long-running
/// cluster; the API server stores the RayJob with its `rayClusterSpec` (the CRD's schema and CEL
/// rules validate it on the way in), and the real operator turns it into a RayCluster of its own
/// whose pods run on kwok's nodes with the rendered templates (the job's worker change applied).
/// The job cannot finish (kwok's pods run no Ray): Ctrl-C deletes the RayJob, and its RayCluster
/// and pods go with it.
#[test]
fn helm4_ephemeral_rayjob_runs_its_own_cluster_and_ctrl_c_deletes_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = "eph-helm4";
    let bed = bed_for(name, "16");
    let jobs = concat!(
        "jobs:\n",
        "  - name: train\n",
        "    cluster: ephemeral\n",
        "    entrypoint: python -c 'print(42)'\n",
        "    ttlSecondsAfterFinished: 60\n",
        "    workerGroups:\n",
        "      - { name: cpu, replicas: 2 }\n",
        "      - { name: gpu, replicas: 0, minReplicas: 0, maxReplicas: 0 }\n",
    );
    let p = project(bed, "helm4", &spec(name, 1, jobs));
    let t0 = Instant::now();
    let child = p.spawn(&["run", "train", "--auto-approve"]);
    let rj = bed.wait_for("RayJob train to be stored", WAIT, |note| {
        let out = bed.kubectl_output(&["get", "rayjob", "train", "-n", name, "-o", "json"]);
        *note = String::from_utf8_lossy(&out.stderr).into_owned();
        out.status.success().then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    });
    assert!(rj["spec"].get("clusterSelector").is_none(), "{rj:#}");
    assert_eq!(rj["spec"]["shutdownAfterJobFinishes"], true);
    assert_eq!(rj["spec"]["ttlSecondsAfterFinished"], 60);
    let image = rj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(image.contains("@sha256:"), "pinned by digest: {image}");
    // The operator makes the job's own cluster: a head and the job's two CPU workers, running.
    let pods = bed.wait_for("the operator to run the job's own cluster", WAIT, |note| {
        let rcs = bed.get_json(&["rayclusters", "-n", name]);
        let own: Vec<&Value> = rcs["items"]
            .as_array()?
            .iter()
            .filter(|rc| {
                rc["metadata"]["ownerReferences"].as_array().is_some_and(|o| o.iter().any(|r| r["name"] == "train"))
            })
            .collect();
        let rc = own.first()?;
        let rc_name = rc["metadata"]["name"].as_str()?.to_string();
        let pods = bed.get_json(&["pods", "-n", name, "-l", &format!("ray.io/cluster={rc_name}")]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        *note = items
            .iter()
            .map(|p| format!("{} {}", p["metadata"]["name"], p["status"]["phase"]))
            .collect::<Vec<_>>()
            .join("; ");
        let running = items.iter().filter(|p| p["status"]["phase"] == "Running").count();
        (running == 3).then_some(items)
    });
    for p in &pods {
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["image"], image.as_str(), "{}", p["metadata"]["name"]);
        assert!(c["envFrom"].as_array().unwrap().iter().any(|e| e["secretRef"]["name"] == "api"), "{c:#}");
        assert_eq!(p["metadata"]["labels"]["raydeploy.io/job"], "train");
    }
    let workers = pods.iter().filter(|p| p["metadata"]["labels"]["ray.io/node-type"] == "worker").count();
    assert_eq!(workers, 2, "the job's replicas");
    // No long-running cluster: `run` does not deploy it.
    let rel = bed.get_json(&["rayclusters", "-n", name]);
    assert!(rel["items"].as_array().unwrap().iter().all(|rc| rc["metadata"]["name"] != name), "{rel:#}");
    eprintln!("run: RayJob stored and its cluster running in {:.1} s", t0.elapsed().as_secs_f64());

    // SAFETY: SIGINT to the raydeploy process this test started (nsenter execs it).
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(text(&out).contains(&format!("interrupted: RayJob {name}/train deleted")), "{}", text(&out));
    let left = bed.kubectl_output(&["get", "rayjob", "train", "-n", name]);
    assert!(!left.status.success(), "the RayJob is gone");
    bed.wait_for("the job's cluster to go with its RayJob", WAIT, |note| {
        let rcs = bed.get_json(&["rayclusters", "-n", name]);
        *note = rcs["items"].to_string();
        rcs["items"].as_array()?.is_empty().then_some(())
    });
    let o = p.run(&["destroy", "--auto-approve"]);
    assert!(o.status.success(), "destroy:\n{}", text(&o));
}
