//! Phase `device-plugin`: the NVIDIA device plugin (Helm chart `nvidia-device-plugin`, pinned
//! version, its own namespace) that makes GPU nodes advertise `nvidia.com/gpu`; without it every
//! GPU Ray pod stays Pending ("Insufficient nvidia.com/gpu"). Also its part of destroy and status.
//!
//! The phase is current when this deployment's release is deployed from the same chart version
//! with the rendered values. Without that release, it installs nothing when the cluster already
//! runs a device plugin: a DaemonSet of NVIDIA's plugin image (or named like it) in any
//! namespace, e.g. NVIDIA's GPU operator's, or nodes that already advertise `nvidia.com/gpu`.

use anyhow::{Context, Result};
use serde_json::Value;

use super::cluster::{rendered_text, rendered_values, write_for_tool};
use super::live::{self, INSTANCE_LABEL};
use super::{Kube, unknown};
use crate::graph::Phase;
use crate::model::{DevicePluginModel, GPU_TAINT_KEY};
use crate::render::helm::DEVICE_PLUGIN_VALUES;
use crate::run::exec::{Cx, Outputs};
use crate::run::proc::{Cmd, Runner};

/// The phase id.
pub const PHASE: &str = "device-plugin";
/// Part of the image name of NVIDIA's device plugin (`nvcr.io/nvidia/k8s-device-plugin:…`).
const PLUGIN_IMAGE: &str = "k8s-device-plugin";
/// Part of the name of NVIDIA's device plugin DaemonSets (the chart's and the GPU operator's).
const PLUGIN_NAME: &str = "nvidia-device-plugin";

fn model<'a>(k: &'a Kube) -> Result<&'a DevicePluginModel> {
    k.s.d
        .device_plugin
        .as_ref()
        .context("the deployment installs no device plugin (no GPU group, or gpu.devicePlugin: false)")
}

pub fn probe(k: &Kube, p: &Phase, cx: &Cx) -> Result<Option<Outputs>> {
    if p.id != PHASE {
        return Err(unknown(p));
    }
    let m = model(k)?;
    let r = &cx.runner;
    let values = rendered_values(k, DEVICE_PLUGIN_VALUES)?;
    // The release with its values (helm list ∥ helm get values); without it, a device plugin
    // the cluster runs otherwise (DaemonSets ∥ nodes).
    let ours = live::release_with_values(k, r, &m.release, &m.namespace)?;
    if ours.0.is_some() {
        let current = live::matches(&ours, m.chart, m.version, &values);
        // Installed without Helm's wait: unless this phase completed with these inputs, the
        // DaemonSet must have rolled out too.
        let current =
            current && (cx.recorded.is_some() || live::rolled_out(k, r, "daemonset", &m.namespace, &m.release)?);
        return Ok(current.then(|| release_outputs(m)));
    }
    match existing(k, r)? {
        Some(found) => {
            r.info(&format!("the cluster already runs a device plugin ({found}): {} is not installed", m.chart));
            Ok(Some(Outputs::from([("existing".to_string(), found)])))
        }
        None => Ok(None),
    }
}

pub fn apply(k: &Kube, p: &Phase, cx: &Cx) -> Result<Outputs> {
    if p.id != PHASE {
        return Err(unknown(p));
    }
    let m = model(k)?;
    let path = write_for_tool(k, DEVICE_PLUGIN_VALUES, rendered_text(k, DEVICE_PLUGIN_VALUES)?)?;
    live::upgrade(k, &cx.runner, &m.release, &m.namespace, &install_cmd(k, m, &path))?;
    live::wait_rollout(k, &cx.runner, "daemonset", &m.namespace, &m.release)?;
    Ok(release_outputs(m))
}

pub fn preview(k: &Kube, p: &Phase) -> Vec<String> {
    let Some(m) = k.s.d.device_plugin.as_ref().filter(|_| p.id == PHASE) else { return vec![] };
    let path = k.s.rendered_dir().join(DEVICE_PLUGIN_VALUES);
    let read = |what: &str| k.kubectl().args(["get", what, "-A", "-o", "json", "--ignore-not-found"]).display();
    vec![
        format!(
            "{}  # first: does a device plugin DaemonSet run already (NVIDIA's image or name)?",
            read("daemonsets")
        ),
        format!("{}  # or does a node advertise {GPU_TAINT_KEY} already?", read("nodes")),
        format!("{}  # unless one runs already", install_cmd(k, m, &path).display()),
        format!(
            "{}  # until its DaemonSet has rolled out",
            super::cluster::rollout_preview(k, "daemonset", &m.namespace, &m.release)
        ),
    ]
}

fn install_cmd(k: &Kube, m: &DevicePluginModel, values: &std::path::Path) -> Cmd {
    k.helm()
        .args(["upgrade", "--install", &m.release])
        .args(m.charts.chart_args(m.chart, m.version))
        .args(["-n", &m.namespace, "--create-namespace"])
        .args(["-f", &values.to_string_lossy()])
        .args(["--timeout", live::HELM_WAIT])
        .timeout(live::HELM_TIMEOUT)
}

fn release_outputs(m: &DevicePluginModel) -> Outputs {
    Outputs::from([
        ("release".to_string(), format!("{}/{}", m.namespace, m.release)),
        ("version".to_string(), m.version.to_string()),
    ])
}

/// True for errors of a read the user's account may not do (cluster-wide lists on a shared
/// cluster): that check is left out rather than failing the deploy.
fn forbidden(e: &anyhow::Error) -> bool {
    format!("{e:#}").to_ascii_lowercase().contains("forbidden")
}

/// A list across namespaces, or nothing when the account may not list it.
fn list_all(k: &Kube, r: &Runner, what: &str) -> Result<Vec<Value>> {
    match live::get(k, r, &[what, "-A"], None) {
        Ok(v) => Ok(live::items(v)),
        Err(e) if forbidden(&e) => {
            r.info(&format!("cannot list {what} (forbidden): that check of an existing device plugin is skipped"));
            Ok(vec![])
        }
        Err(e) => Err(e),
    }
}

/// Whether `ds` is NVIDIA's device plugin: its image or its name.
fn is_plugin(ds: &Value) -> bool {
    let images = ds
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["image"].as_str());
    live::name(ds).contains(PLUGIN_NAME) || images.into_iter().any(|i| i.contains(PLUGIN_IMAGE))
}

fn namespace(obj: &Value) -> &str {
    live::str_at(obj, "/metadata/namespace").unwrap_or("")
}

/// `nvidia.com/gpu` a node advertises to the scheduler.
fn node_gpus(node: &Value) -> u64 {
    match node.pointer("/status/allocatable").and_then(|a| a.get(GPU_TAINT_KEY)) {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// A device plugin on the cluster that is not this deployment's release, described stably
/// (the description feeds the hash of the cluster phase): `daemonset NS/NAME`, or `nodes
/// advertise nvidia.com/gpu`.
pub fn existing(k: &Kube, r: &Runner) -> Result<Option<String>> {
    let m = model(k)?;
    let ours = |ds: &Value| namespace(ds) == m.namespace && live::label(ds, INSTANCE_LABEL) == Some(m.release.as_str());
    let (daemonsets, nodes) = live::both(|| list_all(k, r, "daemonsets"), || list_all(k, r, "nodes"));
    let (daemonsets, nodes) = (daemonsets?, nodes?);
    if let Some(ds) = daemonsets.iter().find(|ds| is_plugin(ds) && !ours(ds)) {
        return Ok(Some(format!("daemonset {}/{}", namespace(ds), live::name(ds))));
    }
    if let Some(n) = nodes.iter().find(|n| node_gpus(n) > 0) {
        r.info(&format!("node {} advertises {} {GPU_TAINT_KEY}", live::name(n), node_gpus(n)));
        return Ok(Some(format!("nodes advertise {GPU_TAINT_KEY}")));
    }
    Ok(None)
}

/// Pods outside this deployment's RayCluster that request GPUs: `NS/NAME`.
fn other_gpu_pods(k: &Kube, r: &Runner) -> Result<Vec<String>> {
    let c = &k.s.d.cluster;
    Ok(list_all(k, r, "pods")?
        .iter()
        .filter(|p| {
            holds_gpus(p)
                && !(namespace(p) == c.namespace && live::label(p, super::cluster::RAY_CLUSTER_LABEL) == Some(&c.name))
        })
        .map(|p| format!("{}/{}", namespace(p), live::name(p)))
        .collect())
}

/// A pod that requests GPUs and still needs them: not finished (Succeeded, Failed) and not
/// being deleted (a destroyed deployment's pods, or pods left on a node that is gone, until the
/// pod garbage collector removes them).
fn holds_gpus(p: &Value) -> bool {
    let requests = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|ct| ["limits", "requests"].iter().any(|w| ct["resources"][w].get(GPU_TAINT_KEY).is_some()));
    let finished = matches!(p.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"));
    let deleting = p.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
    requests && !finished && !deleting
}

/// Uninstalls the release (after the Ray cluster is gone), unless pods of other workloads use
/// GPUs. Nothing to do when the deployment installs no plugin or the release is gone.
pub fn destroy(k: &Kube, r: &Runner) -> Result<()> {
    let Some(m) = k.s.d.device_plugin.as_ref() else { return Ok(()) };
    if live::release(k, r, &m.release, &m.namespace)?.is_none() {
        r.info(&format!("NVIDIA device plugin release {}/{} not installed", m.namespace, m.release));
        return Ok(());
    }
    let others = other_gpu_pods(k, r)?;
    if !others.is_empty() {
        r.info(&format!(
            "kept the NVIDIA device plugin {}/{}: other pods use GPUs ({})",
            m.namespace,
            m.release,
            others.join(", ")
        ));
        return Ok(());
    }
    if live::uninstall(k, r, &m.release, &m.namespace)? {
        r.info(&format!("removed the NVIDIA device plugin release {}/{}", m.namespace, m.release));
    }
    Ok(())
}

/// The status line and JSON: the release, or the device plugin found instead, or why none.
pub fn status(k: &Kube, r: &Runner) -> Result<(String, Value)> {
    let d = &k.s.d;
    let gpus = d.cluster.all_groups().any(|g| g.is_gpu());
    let Some(m) = d.device_plugin.as_ref() else {
        if gpus {
            let text = "  device plugin: off (gpu.devicePlugin: false): something else must advertise nvidia.com/gpu\n";
            return Ok((text.into(), serde_json::json!({"managed": false, "off": true})));
        }
        return Ok((String::new(), Value::Null));
    };
    let rel = live::release(k, r, &m.release, &m.namespace)?;
    let (text, found) = match &rel {
        Some(rel) => (
            format!(
                "  device plugin release {}/{}: {} (chart {}, revision {})\n",
                m.namespace, m.release, rel.status, rel.chart, rel.revision
            ),
            None,
        ),
        None => match existing(k, r)? {
            Some(found) => {
                (format!("  device plugin: the cluster's own ({found}); raydeploy installs none\n"), Some(found))
            }
            None => (format!("  device plugin release {}/{}: not installed\n", m.namespace, m.release), None),
        },
    };
    let json = serde_json::json!({
        "managed": true,
        "chart": format!("{}-{}", m.chart, m.version),
        "release": rel,
        "existing": found,
    });
    Ok((text, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_nvidia_plugins_by_image_or_name() {
        let ds = |name: &str, image: &str| {
            serde_json::json!({"metadata": {"name": name, "namespace": "x"},
                "spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
        };
        assert!(is_plugin(&ds("nvidia-device-plugin-daemonset", "nvcr.io/nvidia/k8s-device-plugin:v0.17.0")));
        assert!(is_plugin(&ds("gpu-plugin", "registry.local/mirror/k8s-device-plugin:v0.20.0")));
        assert!(is_plugin(&ds("nvidia-device-plugin-ds", "example.com/other:1")));
        assert!(!is_plugin(&ds("kube-proxy", "mcr.microsoft.com/oss/kubernetes/kube-proxy:v1.30.0")));
    }

    #[test]
    fn counts_advertised_gpus() {
        let n = |alloc: Value| serde_json::json!({"metadata": {"name": "n"}, "status": {"allocatable": alloc}});
        assert_eq!(node_gpus(&n(serde_json::json!({"cpu": "4", "nvidia.com/gpu": "2"}))), 2);
        assert_eq!(node_gpus(&n(serde_json::json!({"cpu": "4", "nvidia.com/gpu": "0"}))), 0);
        assert_eq!(node_gpus(&n(serde_json::json!({"cpu": "4"}))), 0);
    }

    #[test]
    fn only_live_pods_that_request_gpus_keep_the_plugin() {
        let pod = |resources: Value, phase: &str, deleting: bool| {
            let mut p = serde_json::json!({"metadata": {"name": "p", "namespace": "ns"},
                "spec": {"containers": [{"name": "c", "resources": resources}]}, "status": {"phase": phase}});
            if deleting {
                p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
            }
            p
        };
        let gpu = serde_json::json!({"limits": {"nvidia.com/gpu": "1"}});
        assert!(holds_gpus(&pod(gpu.clone(), "Running", false)));
        assert!(holds_gpus(&pod(gpu.clone(), "Pending", false)));
        assert!(holds_gpus(&pod(serde_json::json!({"requests": {"nvidia.com/gpu": "1"}}), "Running", false)));
        assert!(!holds_gpus(&pod(gpu.clone(), "Running", true)), "being deleted");
        assert!(!holds_gpus(&pod(gpu.clone(), "Succeeded", false)), "finished");
        assert!(!holds_gpus(&pod(gpu, "Failed", false)), "finished");
        assert!(!holds_gpus(&pod(serde_json::json!({"limits": {"cpu": "1"}}), "Running", false)));
    }
}
