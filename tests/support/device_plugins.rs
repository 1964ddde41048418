//! What a kubelet does for the NVIDIA device plugin, for the test bed's kwok nodes: a node
//! advertises `nvidia.com/gpu` (capacity and allocatable) only while a device plugin pod runs on
//! it. kwok has no device plugins, so this watcher does it: a node annotated
//! `raydeploy.test/gpus: N` (the AKS node stand-in, tests/testbed/aks_nodes.py, annotates GPU
//! sizes with their GPU count) gets `nvidia.com/gpu: N` in its status while a Running pod of a
//! device plugin DaemonSet (owned by a DaemonSet whose name holds `nvidia-device-plugin`, or
//! running NVIDIA's `k8s-device-plugin` image) is bound to it, and loses it when that pod is gone.
//!
//! [`emulate`] starts it once per test bed: a `kubectl get pods -A --watch` in the bed's network
//! namespace whose every line (a pod changed) triggers one pass over pods and nodes; bursts of
//! changes are merged into one pass. The watch is restarted if it ends, until the process exits.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};

use crate::testbed::TestBed;

/// The node annotation holding the GPUs a node's VM has.
pub const GPUS_ANNOTATION: &str = "raydeploy.test/gpus";
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Starts the watcher for `bed` (once; later calls return at once) and makes one pass before
/// returning, so nodes that exist already are right.
pub fn emulate(bed: &'static TestBed) {
    static STARTED: OnceLock<Mutex<BTreeSet<u32>>> = OnceLock::new();
    let mut started = STARTED.get_or_init(|| Mutex::new(BTreeSet::new())).lock().unwrap_or_else(|e| e.into_inner());
    if !started.insert(bed.netns_pid()) {
        return;
    }
    pass(bed);
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("device-plugin-watch".into())
        .spawn(move || {
            loop {
                let mut c = bed.command(bed.bin.join("kubectl"));
                c.args(["get", "pods", "-A", "--watch", "--output", "name"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null());
                // SAFETY: prctl is async-signal-safe; the closure allocates nothing. This thread
                // lives as long as the process, so the watch ends with it.
                unsafe {
                    c.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                        Ok(())
                    });
                }
                if let Ok(mut child) = c.spawn() {
                    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
                        if line.is_err() || tx.send(()).is_err() {
                            break;
                        }
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                }
                // The watch ended (the API server closed it, or the bed stopped): start another.
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .expect("watch thread");
    std::thread::Builder::new()
        .name("device-plugin-pass".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                while rx.try_recv().is_ok() {}
                pass(bed);
            }
        })
        .expect("pass thread");
}

/// Whether `pod` is a running device plugin pod.
fn is_plugin_pod(pod: &Value) -> bool {
    let owned =
        pod["metadata"]["ownerReferences"].as_array().into_iter().flatten().any(|o| {
            o["kind"] == "DaemonSet" && o["name"].as_str().is_some_and(|n| n.contains("nvidia-device-plugin"))
        });
    let image = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["image"].as_str().is_some_and(|i| i.contains("k8s-device-plugin")));
    (owned || image) && pod["status"]["phase"] == "Running" && pod["metadata"]["deletionTimestamp"].is_null()
}

fn get(bed: &TestBed, what: &str) -> Option<Value> {
    let out = bed.kubectl_output(&["get", what, "-A", "-o", "json"]);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

/// One pass: every annotated node advertises its GPUs exactly while a plugin pod runs on it.
pub fn pass(bed: &TestBed) {
    let (Some(pods), Some(nodes)) = (get(bed, "pods"), get(bed, "nodes")) else { return };
    let with_plugin: BTreeSet<&str> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| is_plugin_pod(p))
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    let mut patches = BTreeMap::new();
    for n in nodes["items"].as_array().into_iter().flatten() {
        let Some(gpus) = n["metadata"]["annotations"][GPUS_ANNOTATION].as_str() else { continue };
        let name = n["metadata"]["name"].as_str().unwrap_or_default();
        let has = n["status"]["allocatable"][GPU_RESOURCE].as_str();
        let want = with_plugin.contains(name).then_some(gpus);
        if has != want {
            let v = want.map(Value::from).unwrap_or(Value::Null);
            patches.insert(
                name.to_string(),
                json!({"status": {"capacity": {GPU_RESOURCE: v}, "allocatable": {GPU_RESOURCE: v}}}),
            );
        }
    }
    for (name, patch) in patches {
        // A node deleted meanwhile: the next pass sees it gone.
        let _ = bed.kubectl_output(&[
            "patch",
            "node",
            &name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ]);
    }
}
