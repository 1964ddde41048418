//! The Kubernetes test bed (tests/support/testbed.rs) is a real control plane: the API server
//! takes the KubeRay CRDs, kwok's nodes become Ready, the real scheduler places pods by node
//! selector and refuses those that fit nowhere, and the real KubeRay operator turns a RayCluster
//! rendered by the real Helm 3 and Helm 4 from the reference chart into head and worker pods.
//!
//! The programs come from `tests/testbed/build.sh` (`$RAYDEPLOY_TESTBED_BIN`); without them these
//! tests fail, naming what is missing.

#[path = "support/testbed.rs"]
mod testbed;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testbed::{NodeSpec, TestBed, in_namespace, kuberay_data, shared};

const WAIT: Duration = Duration::from_secs(120);

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

fn pod(name: &str, ns: &str, cpu: &str, node_selector: Value) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "nodeSelector": node_selector,
            "containers": [{
                "name": "main",
                "image": "registry.invalid/none:1",
                "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}},
            }],
        },
    })
    .to_string()
}

/// Waits until `pod` is Running and Ready, and returns it.
fn running(bed: &TestBed, ns: &str, pod: &str) -> Value {
    bed.wait_for(&format!("pod {ns}/{pod} to run"), WAIT, |note| {
        let p = bed.get_json(&["pod", pod, "-n", ns]);
        *note = format!("phase {}, conditions {}", p["status"]["phase"], p["status"]["conditions"]);
        let ready = condition(&p, "Ready").is_some_and(|c| c["status"] == "True");
        (p["status"]["phase"] == "Running" && ready).then_some(p)
    })
}

#[test]
fn programs_are_there() {
    let dir = testbed::check_programs();
    let v = std::process::Command::new(dir.join("kubectl")).args(["version", "--client", "-o", "json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&v.stdout).unwrap();
    let versions = std::fs::read_to_string(testbed::repo_root().join("tests/testbed/versions")).unwrap();
    let pinned = versions.lines().find_map(|l| l.strip_prefix("KUBERNETES=")).unwrap();
    assert_eq!(v["clientVersion"]["gitVersion"], pinned, "kubectl is the pinned Kubernetes release");
}

#[test]
fn kuberay_crds_are_established() {
    let bed = shared();
    bed.install_kuberay_crds();
    for crd in ["rayclusters.ray.io", "rayjobs.ray.io"] {
        let c = bed.get_json(&["crd", crd]);
        assert_eq!(condition(&c, "Established").unwrap()["status"], "True", "{crd}: {}", c["status"]);
        assert_eq!(condition(&c, "NamesAccepted").unwrap()["status"], "True", "{crd}");
        let served: Vec<&str> = c["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["served"] == true)
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert!(served.contains(&"v1"), "{crd} serves ray.io/v1: {served:?}");
    }
    let resources = bed.kubectl(&["api-resources", "--api-group=ray.io", "-o", "name"]);
    for r in ["rayclusters.ray.io", "rayjobs.ray.io"] {
        assert!(resources.lines().any(|l| l == r), "{r} in discovery:\n{resources}");
    }
    // The API server validates against the CRD's schema: a RayJob with a wrong type is refused.
    let ns = bed.namespace("crds");
    let bad = json!({
        "apiVersion": "ray.io/v1", "kind": "RayJob",
        "metadata": {"name": "bad", "namespace": ns},
        "spec": {"entrypoint": 42},
    });
    let mut c = bed.command(bed.bin.join("kubectl"));
    c.args(["create", "--dry-run=server", "-f", "-"]).stdin(std::process::Stdio::piped());
    c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(bad.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "a RayJob with entrypoint: 42 is refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.entrypoint"), "{err}");
    let good = json!({
        "apiVersion": "ray.io/v1", "kind": "RayJob",
        "metadata": {"name": "good", "namespace": ns},
        "spec": {"entrypoint": "python -c 'print(1)'", "rayClusterSpec": {"headGroupSpec": {"rayStartParams": {},
            "template": {"spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.52.0"}]}}}}},
    });
    bed.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &good.to_string());
}

#[test]
fn kwok_node_with_labels_and_taints_is_ready() {
    let bed = shared();
    let spec = NodeSpec::new("tainted-gpu")
        .label("raydeploy.test/pool", "gpu")
        .taint("nvidia.com/gpu", "present", "NoSchedule")
        .cpu("16")
        .memory("64Gi")
        .pods("50")
        .gpus(2);
    bed.add_node(&spec);
    let n = bed.get_json(&["node", "tainted-gpu"]);
    assert_eq!(condition(&n, "Ready").unwrap()["status"], "True");
    assert_eq!(n["metadata"]["labels"]["raydeploy.test/pool"], "gpu");
    let taints = n["spec"]["taints"].as_array().unwrap();
    assert!(
        taints.iter().any(|t| t["key"] == "nvidia.com/gpu" && t["value"] == "present" && t["effect"] == "NoSchedule"),
        "{taints:?}"
    );
    assert_eq!(n["status"]["allocatable"]["cpu"], "16");
    assert_eq!(n["status"]["allocatable"]["memory"], "64Gi");
    assert_eq!(n["status"]["allocatable"]["nvidia.com/gpu"], "2");
    assert_eq!(n["status"]["allocatable"]["pods"], "50");
}

#[test]
fn scheduler_places_a_pod_by_node_selector() {
    in_namespace("select", |bed, ns| {
        bed.add_node(&NodeSpec::new("select-a").label("raydeploy.test/pool", "select-a"));
        bed.add_node(&NodeSpec::new("select-b").label("raydeploy.test/pool", "select-b"));
        bed.kubectl_stdin(&["create", "-f", "-"], &pod("p", ns, "500m", json!({"raydeploy.test/pool": "select-b"})));
        let p = running(bed, ns, "p");
        assert_eq!(p["spec"]["nodeName"], "select-b");
        let scheduled = condition(&p, "PodScheduled").unwrap();
        assert_eq!(scheduled["status"], "True");
        assert!(p["status"]["podIP"].as_str().is_some_and(|ip| !ip.is_empty()), "kwok gives the pod an IP");
        // The binding was the real scheduler's.
        let events = bed.kubectl(&["get", "events", "-n", ns, "--field-selector=involvedObject.name=p", "-o", "json"]);
        let events: Value = serde_json::from_str(&events).unwrap();
        assert!(
            events["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["reason"] == "Scheduled" && e["source"]["component"] == "default-scheduler"
                    || e["reason"] == "Scheduled" && e["reportingComponent"] == "default-scheduler"),
            "a Scheduled event from default-scheduler: {events}"
        );
    });
}

#[test]
fn a_pod_larger_than_every_node_stays_pending() {
    in_namespace("toobig", |bed, ns| {
        bed.add_node(&NodeSpec::new("toobig-a").cpu("4").label("raydeploy.test/pool", "toobig"));
        bed.kubectl_stdin(&["create", "-f", "-"], &pod("huge", ns, "512", json!({})));
        let p = bed.wait_for("the scheduler to give up on pod huge", WAIT, |note| {
            let p = bed.get_json(&["pod", "huge", "-n", ns]);
            *note = p["status"].to_string();
            condition(&p, "PodScheduled").is_some_and(|c| c["status"] == "False").then_some(p)
        });
        let c = condition(&p, "PodScheduled").unwrap();
        assert_eq!(c["reason"], "Unschedulable");
        let msg = c["message"].as_str().unwrap();
        assert!(msg.contains("Insufficient cpu"), "{msg}");
        assert_eq!(p["status"]["phase"], "Pending");
        assert!(p["spec"]["nodeName"].is_null());
    });
}

/// `helm template` of the reference ray-cluster chart, applied; the operator makes its pods.
fn raycluster_from_chart(helm: &str) {
    let bed = shared();
    bed.start_operator();
    let ns = bed.namespace(&format!("raycluster-{helm}"));
    let pool = format!("ray-{helm}");
    bed.add_node(&NodeSpec::new(&pool).cpu("16").memory("64Gi").label("raydeploy.test/pool", &pool));
    let chart = kuberay_data().join("charts/ray-cluster");
    let rendered = bed.helm(
        helm,
        &[
            "template",
            "rc",
            &chart.display().to_string(),
            "--namespace",
            &ns,
            "--set-string",
            &format!("head.nodeSelector.raydeploy\\.test/pool={pool}"),
            "--set-string",
            &format!("worker.nodeSelector.raydeploy\\.test/pool={pool}"),
        ],
    );
    assert!(rendered.contains("kind: RayCluster"), "{helm} rendered a RayCluster:\n{rendered}");
    bed.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &rendered);
    let name = bed.kubectl(&["get", "rayclusters", "-n", &ns, "-o", "jsonpath={.items[0].metadata.name}"]);
    let pods = bed.wait_for(&format!("the operator to run RayCluster {ns}/{name}'s head and worker"), WAIT, |note| {
        let pods = bed.get_json(&["pods", "-n", &ns, "-l", &format!("ray.io/cluster={name}")]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        *note = items
            .iter()
            .map(|p| format!("{} {} {}", p["metadata"]["name"], p["metadata"]["labels"]["ray.io/node-type"], p["status"]["phase"]))
            .collect::<Vec<_>>()
            .join("; ");
        let running = |kind: &str| {
            items.iter().any(|p| p["metadata"]["labels"]["ray.io/node-type"] == kind && p["status"]["phase"] == "Running")
        };
        (running("head") && running("worker")).then_some(items)
    });
    for p in &pods {
        assert_eq!(p["spec"]["nodeName"], pool.as_str(), "{}", p["metadata"]["name"]);
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "RayCluster");
        assert_eq!(owner["name"], name.as_str());
    }
    // The operator also made the head Service, and reports the cluster ready.
    bed.kubectl(&["get", "service", "-n", &ns, &format!("{name}-head-svc")]);
    bed.wait_for(&format!("RayCluster {ns}/{name} to be ready"), WAIT, |note| {
        let rc = bed.get_json(&["raycluster", &name, "-n", &ns]);
        *note = rc["status"].to_string();
        (rc["status"]["state"] == "ready").then_some(())
    });
}

#[test]
fn operator_runs_a_raycluster_rendered_by_helm3() {
    raycluster_from_chart("helm3");
}

#[test]
fn operator_runs_a_raycluster_rendered_by_helm4() {
    raycluster_from_chart("helm4");
}

/// How long a test bed takes to start, printed (no timed assertion): the first start in this
/// process and a second one right after; both stopped here, leaving the shared bed alone.
#[test]
fn start_times() {
    let mut times = vec![];
    for _ in 0..2 {
        let t0 = Instant::now();
        let bed = TestBed::start();
        let started = t0.elapsed();
        let pids: Vec<u32> = bed.pids().iter().map(|(_, p)| *p).collect();
        let t1 = Instant::now();
        drop(bed);
        let stopped = t1.elapsed();
        for pid in pids {
            assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} is gone after stop");
        }
        times.push((started, stopped));
    }
    for (i, (started, stopped)) in times.iter().enumerate() {
        eprintln!(
            "test bed start #{}: {:.1} s (stop {:.1} s)",
            i + 1,
            started.as_secs_f64(),
            stopped.as_secs_f64()
        );
    }
}
