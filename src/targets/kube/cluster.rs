//! Phases crds, operator, secrets, mounts, cluster, ready and jobs (kubectl and helm); destroy,
//! status and the dashboard on the cluster ([`super::jobs`] has the job commands).
//!
//! Every phase asks the cluster whether its work is already there, so a deploy from a fresh
//! checkout (no `.raydeploy/`) upgrades or applies nothing that is current:
//! - `crds`: the KubeRay CRDs, taken from the kuberay-operator chart's `crds/` folder (which Helm
//!   itself never upgrades; see [`chart`]) and applied server-side, carry the label
//!   [`CRD_VERSION_LABEL`]` = V`; present with that label → current.
//! - `operator`, `cluster`: the Helm release is `deployed`, from the same chart version, and its
//!   user-supplied values (`helm get values -o json`) equal the values this deploy would install.
//! - `secrets`: see [`super::secrets`].
//! - `mounts`: every object of `manifests/mounts.yaml` exists with the label
//!   [`MANIFEST_HASH_LABEL`] equal to the hash of its rendered content.
//!
//! The ray-cluster release pins the images pushed by `image-push`: a second values file
//! (`helm/ray-cluster.images.yaml` beside the rendered values, built from [`ImageValues`]) sets
//! every group's `image.repository`, `image.tag` (`tag@sha256:…`) and `image.pullPolicy`, and
//! both files are passed to Helm.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;

use super::live;
use super::{Kube, chart, jobs, secrets, unknown};
use crate::context::{DestroyOptions, approve};
use crate::graph::Phase;
use crate::model::{ChartSource, GROUP_LABEL, ImageRef, RayGroup, head_port};
use crate::render::helm::k8s::{Image, RAY_PULL_POLICY};
use crate::render::helm::{OPERATOR_VALUES, RAY_CLUSTER_VALUES};
use crate::run::exec::{Cx, Outputs};
use crate::run::proc::{Cmd, CmdError, Runner, sleep_unless_interrupted};
use crate::run::signals;

/// Label on the KubeRay CRDs naming the KubeRay version they come from.
pub const CRD_VERSION_LABEL: &str = "raydeploy.io/kuberay-version";
/// Label on applied manifests with the hash of their rendered content.
pub const MANIFEST_HASH_LABEL: &str = "raydeploy.io/manifest-hash";
/// The CRDs the deployment needs (the chart ships more; these must be there).
pub const REQUIRED_CRDS: [&str; 2] = ["rayclusters.ray.io", "rayjobs.ray.io"];
/// The CRDs the operator's controllers watch with the chart's feature gates, which raydeploy
/// leaves as they are (RayCronJob is off): they must be served before the operator starts.
const WATCHED_CRDS: [&str; 3] = [RAYCLUSTER_CRD, "rayjobs.ray.io", "rayservices.ray.io"];
const RAYCLUSTER_CRD: &str = "rayclusters.ray.io";
/// Path of the image pins beside the rendered ray-cluster values.
pub const IMAGE_VALUES: &str = "helm/ray-cluster.images.yaml";
/// Label KubeRay puts on the pods of a RayCluster.
pub const RAY_CLUSTER_LABEL: &str = "ray.io/cluster";
/// The local port `dashboard` tries first (Ray's own; the head service's port may differ, see
/// [`crate::model::head_port`]).
pub const DASHBOARD_PORT: u16 = 8265;
/// The phases this module carries out (forgotten by destroy).
pub const PHASES: [&str; 7] = ["crds", "operator", "secrets", "mounts", "cluster", "ready", "jobs"];

pub fn probe(k: &Kube, p: &Phase, cx: &Cx) -> Result<Option<Outputs>> {
    match p.id {
        "crds" => crds_probe(k, cx),
        "operator" => {
            let o = &k.s.d.operator;
            let values = rendered_values(k, OPERATOR_VALUES)?;
            // The release is installed without Helm's wait: unless this phase completed with
            // these inputs, its Deployment must have rolled out too (read beside the release).
            let rollout = cx.recorded.is_none() && !k.known_absent(&o.release, &o.namespace);
            let (current, rolled) = live::both(
                || {
                    let chart = "kuberay-operator";
                    live::release_matches(k, &cx.runner, &o.release, &o.namespace, chart, &o.version, &values)
                },
                || match rollout {
                    true => live::rolled_out(k, &cx.runner, "deployment", &o.namespace, &o.release),
                    false => Ok(true),
                },
            );
            let current = current? && rolled?;
            Ok(current.then(|| operator_outputs(k)))
        }
        "secrets" => secrets::probe(k, cx),
        "mounts" => mounts_probe(k, cx),
        "cluster" => {
            let c = &k.s.d.cluster;
            let (values, pins) = cluster_values(k, cx)?;
            let current = live::release_matches(
                k,
                &cx.runner,
                &c.name,
                &c.namespace,
                "ray-cluster",
                &k.s.d.operator.version,
                &values,
            )?;
            Ok(current.then(|| cluster_outputs(k, &pins)))
        }
        "jobs" => jobs::probe(k, cx),
        // Asked early only (a check): one look; ready now is ready.
        "ready" if cx.early => {
            let snap = Snapshot::read(k, &cx.runner)?;
            Ok(snap.ready().then(|| {
                cx.runner.info(&format!("RayCluster {} is ready ({})", k.s.d.cluster.name, snap.summary()));
                ready_outputs(k)
            }))
        }
        _ => Ok(cx.unchanged()),
    }
}

fn ready_outputs(k: &Kube) -> Outputs {
    Outputs::from([("raycluster".to_string(), k.s.d.cluster.name.clone())])
}

pub fn apply(k: &Kube, p: &Phase, cx: &Cx) -> Result<Outputs> {
    match p.id {
        "crds" => crds_apply(k, cx),
        "operator" => operator_apply(k, cx),
        "secrets" => secrets::apply(k, cx),
        "mounts" => mounts_apply(k, cx),
        "cluster" => cluster_apply(k, cx),
        "ready" => ready(k, cx),
        "jobs" => jobs::phase(k, cx),
        _ => Err(unknown(p)),
    }
}

/// The operator chart's folder for a preview, with the `helm pull` that fetches it (once per run)
/// when it comes from a repository or a registry.
fn chart_preview(k: &Kube) -> (Vec<String>, PathBuf) {
    match &k.s.d.operator.charts {
        ChartSource::Dir(dir) => (vec![], dir.join(chart::OPERATOR_CHART)),
        _ => {
            let into = chart::pull_dir(k);
            let pull = format!("{}  # once per run", chart::pull_cmd(k, &into).display());
            (vec![pull], into.join(chart::OPERATOR_CHART))
        }
    }
}

pub fn preview(k: &Kube, p: &Phase) -> Vec<String> {
    let d = &k.s.d;
    let dir = k.s.rendered_dir();
    match p.id {
        "crds" => {
            let (mut lines, chart) = chart_preview(k);
            lines.push(format!("cat {}/crds/*.yaml | {}", chart.display(), live::apply_cmd(k, true).display()));
            lines
        }
        "operator" => {
            let (mut lines, chart) = chart_preview(k);
            let lean = chart::lean_dir(k);
            lines.push(format!(
                "{}  # {} is {} without crds/",
                operator_cmd(k, &lean, &dir.join(OPERATOR_VALUES)).display(),
                lean.display(),
                chart.display()
            ));
            lines.push(format!(
                "{}  # until the operator's Deployment has rolled out",
                rollout_preview(k, "deployment", &d.operator.namespace, &d.operator.release)
            ));
            lines
        }
        "secrets" => secrets::preview(k),
        "mounts" => match k.s.rendered.files.get(MOUNTS) {
            Some(_) => vec![format!("{}  # {MOUNTS}", live::apply_cmd(k, true).display())],
            None => vec![],
        },
        "cluster" => vec![format!(
            "{}  # {IMAGE_VALUES} pins every group's image to the digest image-push records",
            cluster_cmd(k, &dir.join(RAY_CLUSTER_VALUES), &dir.join(IMAGE_VALUES)).display()
        )],
        "ready" => vec![
            format!(
                "{}  # until .status.state is ready",
                k.kubectl()
                    .args(["get", "raycluster", &d.cluster.name, "-n", &d.cluster.namespace, "-o", "json"])
                    .display()
            ),
            format!(
                "{}  # until the head pod is Ready",
                k.kubectl()
                    .args(["get", "pods", "-l", &format!("{RAY_CLUSTER_LABEL}={}", d.cluster.name)])
                    .args(["-n", &d.cluster.namespace, "-o", "json"])
                    .display()
            ),
        ],
        "jobs" => jobs::preview(k),
        _ => vec![],
    }
}

/// The `kubectl rollout status` of [`live::wait_rollout`], for previews.
pub(super) fn rollout_preview(k: &Kube, kind: &str, ns: &str, release: &str) -> String {
    k.kubectl()
        .args(["rollout", "status", kind, "-l", &format!("{}={release}", live::INSTANCE_LABEL), "-n", ns])
        .arg(format!("--timeout={}", live::HELM_WAIT))
        .display()
}

// ---------------------------------------------------------------------------------------------
// rendered files

const MOUNTS: &str = "manifests/mounts.yaml";

pub(super) fn rendered_text<'a>(k: &'a Kube, path: &str) -> Result<&'a str> {
    k.s.rendered.files.get(path).map(String::as_str).with_context(|| format!("{path} was not rendered"))
}

pub(super) fn rendered_values(k: &Kube, path: &str) -> Result<Value> {
    let v: Value =
        serde_saphyr::from_str(rendered_text(k, path)?).with_context(|| format!("reading the rendered {path}"))?;
    Ok(if v.is_null() { Value::Object(Default::default()) } else { v })
}

/// Writes one file of the rendered tree (or a file beside it) for a tool to read; unchanged
/// files are not rewritten.
pub(super) fn write_for_tool(k: &Kube, rel: &str, text: &str) -> Result<PathBuf> {
    let _writing = k.s.rendered_writes.lock().unwrap_or_else(|e| e.into_inner());
    let path = k.s.rendered_dir().join(rel);
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text) {
        return Ok(path);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::run::state::write_atomic(&path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

// ---------------------------------------------------------------------------------------------
// crds

fn crds_outputs(k: &Kube) -> Outputs {
    Outputs::from([("version".to_string(), k.s.d.operator.version.clone())])
}

/// The [`CRD_VERSION_LABEL`] of each required CRD that exists (empty when unlabelled), from the
/// API server's table (`kubectl get crd NAMES -L LABEL`): the CRDs themselves are megabytes of
/// schema, read and printed for nothing but a label.
fn crd_versions(k: &Kube, r: &Runner) -> Result<BTreeMap<String, String>> {
    let c = k
        .kubectl()
        .args(["get", "crd"])
        .args(REQUIRED_CRDS)
        .args(["-L", CRD_VERSION_LABEL, "--no-headers", "--ignore-not-found"])
        .timeout(live::READ_TIMEOUT)
        .idempotent(live::READ_ATTEMPTS)
        .quiet();
    Ok(parse_crd_table(&r.run(&c)?.stdout))
}

/// Rows `NAME CREATED-AT [LABEL-VALUE]` of that table.
fn parse_crd_table(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = f.first()?;
            Some((name.to_string(), if f.len() >= 3 { f[f.len() - 1].to_string() } else { String::new() }))
        })
        .collect()
}

fn crds_probe(k: &Kube, cx: &Cx) -> Result<Option<Outputs>> {
    let found = crd_versions(k, &cx.runner)?;
    let v = &k.s.d.operator.version;
    let current = REQUIRED_CRDS.iter().all(|n| found.get(*n) == Some(v));
    if !current && matches!(k.s.d.operator.charts, ChartSource::Dir(_)) {
        // The phase will apply them: read a chart folder's now, while the checks that come
        // before the phase may still run (an error is the phase's to report). A chart elsewhere
        // is fetched by the phase, not by a probe (`plan` probes too).
        let _ = chart_crds(k, &cx.runner);
    }
    Ok(current.then(|| crds_outputs(k)))
}

/// The CRDs of the kuberay-operator chart, ready for the crds phase (see [`chart_crds`]).
pub struct ChartCrds {
    /// Every CRD as one JSON `v1 List`, for `kubectl apply -f -`.
    list: Vec<u8>,
    /// What the served wait needs of each CRD the operator watches: its name, group, plural and
    /// versions (not its schema).
    watched: Vec<Value>,
}

/// The CRDs of the kuberay-operator chart as the crds phase applies them: its `crds/` files
/// (`.yaml`, `.yml`, `.json`, by name: what `helm show crds` prints) from the chart's folder
/// ([`chart::operator_chart`]), each labelled with the KubeRay version, the watched ones first.
/// Read once per run; the files are parsed side by side (megabytes of YAML).
fn chart_crds(k: &Kube, r: &Runner) -> Result<Arc<ChartCrds>> {
    let mut memo = k.crds.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(crds) = memo.as_ref() {
        return Ok(crds.clone());
    }
    let folder = chart::operator_chart(k, r)?.join("crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .with_context(|| format!("reading {}", folder.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json"))
        .collect();
    files.sort();
    let mut texts = vec![];
    for f in &files {
        texts.push(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?);
    }
    // The same files, labelled with the same version, make the same List: kept in the user's
    // cache by their hash, the YAML is parsed once per chart, not once per deploy.
    let version = &k.s.d.operator.version;
    let names: Vec<Vec<u8>> =
        files.iter().map(|f| f.file_name().unwrap_or_default().as_encoded_bytes().to_vec()).collect();
    let key = live::short_hash(
        [CRDS_CACHE_FORMAT.as_bytes(), version.as_bytes()]
            .into_iter()
            .chain(names.iter().zip(&texts).flat_map(|(n, t)| [n.as_slice(), t.as_slice()])),
    );
    let cached = |part: &str| crate::run::cache::derived(CRDS_CACHE, &format!("{key}.{part}.json"));
    if let (Some(list), Some(watched)) = (cached("list"), cached("watched"))
        && serde_json::from_slice::<serde::de::IgnoredAny>(&list).is_ok()
        && let Ok(watched) = serde_json::from_slice::<Vec<Value>>(&watched)
    {
        r.info(&format!("the CRDs of {}: {} files (parsed before)", folder.display(), files.len()));
        let crds = Arc::new(ChartCrds { list, watched });
        *memo = Some(crds.clone());
        return Ok(crds);
    }
    let parsed: Vec<Result<Vec<Value>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .iter()
            .zip(&texts)
            .map(|(f, t)| {
                scope.spawn(move || {
                    let text = std::str::from_utf8(t).with_context(|| format!("reading {}", f.display()))?;
                    live::yaml_docs(text).with_context(|| format!("reading the CRDs of {}", f.display()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a CRD file's reader")).collect()
    });
    let mut docs = vec![];
    for p in parsed {
        docs.extend(p?);
    }
    r.info(&format!("the CRDs of {}: {} files", folder.display(), files.len()));
    docs.retain(|d| live::kind(d) == "CustomResourceDefinition");
    for n in REQUIRED_CRDS {
        if !docs.iter().any(|d| live::name(d) == n) {
            bail!("the kuberay-operator chart {version} has no CRD {n}");
        }
    }
    for d in &mut docs {
        live::set_label(d, CRD_VERSION_LABEL, version);
    }
    // The watched CRDs go first (kubectl applies a List in order): the API server is making them
    // served while it takes the rest, which nothing waits for.
    docs.sort_by_key(|d| watched(d).unwrap_or(WATCHED_CRDS.len()));
    let watched: Vec<Value> = docs
        .iter()
        .filter(|d| watched(d).is_some())
        .map(|d| {
            let versions: Vec<Value> = d
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|v| serde_json::json!({"name": v["name"], "served": v["served"], "storage": v["storage"]}))
                .collect();
            serde_json::json!({
                "metadata": {"name": live::name(d)},
                "spec": {"group": d.pointer("/spec/group"), "names": {"plural": d.pointer("/spec/names/plural")},
                         "versions": versions},
            })
        })
        .collect();
    let list = serde_json::to_vec(&live::list(docs))?;
    crate::run::cache::keep_derived(CRDS_CACHE, &format!("{key}.list.json"), &list);
    crate::run::cache::keep_derived(CRDS_CACHE, &format!("{key}.watched.json"), &serde_json::to_vec(&watched)?);
    let crds = Arc::new(ChartCrds { list, watched });
    *memo = Some(crds.clone());
    Ok(crds)
}

/// Where the user's cache keeps the CRDs [`chart_crds`] made, and the format of what it keeps
/// (another format is another key).
const CRDS_CACHE: &str = "kuberay-crds";
const CRDS_CACHE_FORMAT: &str = "1";

/// The position of a CRD in [`WATCHED_CRDS`].
fn watched(d: &Value) -> Option<usize> {
    WATCHED_CRDS.iter().position(|n| live::name(d) == *n)
}

/// Applies the chart's CRDs and waits until RayCluster is served, the kind the cluster phase
/// (the ray-cluster chart) needs. The operator phase waits for every CRD the operator watches
/// before installing it ([`operator_apply`]): meanwhile it reads its release and copies its
/// chart while the API server takes the larger CRDs.
fn crds_apply(k: &Kube, cx: &Cx) -> Result<Outputs> {
    let r = &cx.runner;
    let crds = chart_crds(k, r)?;
    r.run(&live::apply_cmd(k, true).stdin(crds.list.clone()))?;
    *k.crds_applied.lock().unwrap_or_else(|e| e.into_inner()) = crds.watched.clone();
    let cluster: Vec<Value> = crds.watched.iter().filter(|d| live::name(d) == RAYCLUSTER_CRD).cloned().collect();
    wait_served(k, r, &cluster)?;
    Ok(crds_outputs(k))
}

/// The discovery path of the version each CRD is used at, with the plural names it must list:
/// `/apis/ray.io/v1` → `[rayclusters, rayjobs, …]`. That is the storage version (the operator's
/// and the charts' `ray.io/v1`), or the first served one when the storage version is not served.
/// A CRD's other versions become served with it: they are not waited for.
fn served_paths(docs: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in docs {
        let (Some(group), Some(plural)) = (live::str_at(d, "/spec/group"), live::str_at(d, "/spec/names/plural"))
        else {
            continue;
        };
        let served: Vec<&Value> = d
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| v["served"] == Value::Bool(true))
            .collect();
        let used = served.iter().find(|v| v["storage"] == Value::Bool(true)).or(served.first());
        if let Some(name) = used.and_then(|v| v["name"].as_str()) {
            paths.entry(format!("/apis/{group}/{name}")).or_default().push(plural.to_string());
        }
    }
    paths
}

/// Waits until the API server serves every CRD of `docs` (its kind is in discovery): the
/// operator watches them, and Helm refuses a chart with a kind discovery lacks ("no matches for
/// kind RayCluster"). Discovery's own small documents are read (`kubectl get --raw
/// /apis/GROUP/VERSION`), not the CRDs' megabytes: after 50 ms, then half as long again each
/// time up to 0.25 s (the API server needs its CPU for the CRDs meanwhile), for up to a minute.
fn wait_served(k: &Kube, r: &Runner, docs: &[Value]) -> Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(50);
    for (path, plurals) in served_paths(docs) {
        let read = k.kubectl().args(["get", "--raw", &path]).timeout(live::READ_TIMEOUT).quiet().ok_codes(&[0, 1]);
        loop {
            let o = r.run(&read)?;
            let listed: Vec<String> = serde_json::from_str::<Value>(&o.stdout)
                .ok()
                .and_then(|v| v.get("resources").and_then(Value::as_array).cloned())
                .into_iter()
                .flatten()
                .filter_map(|res| res["name"].as_str().map(str::to_string))
                .collect();
            let missing: Vec<&String> = plurals.iter().filter(|p| !listed.contains(p)).collect();
            if o.code == 0 && missing.is_empty() {
                break;
            }
            // (Ctrl-C ends the wait at the next read: the runner refuses to start it.)
            if start.elapsed() >= live::READ_TIMEOUT {
                bail!(
                    "the API server does not serve {} of {path} {}s after the CRDs were applied{}",
                    missing.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", "),
                    live::READ_TIMEOUT.as_secs(),
                    if o.code == 0 { String::new() } else { format!(": {}", o.stderr.trim()) }
                );
            }
            sleep_unless_interrupted(pause);
            pause = (pause * 3 / 2).min(Duration::from_millis(250));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// operator

/// `helm upgrade --install` of the operator release from the chart folder `chart` (the lean copy,
/// see [`chart`]).
fn operator_cmd(k: &Kube, chart: &std::path::Path, values: &std::path::Path) -> Cmd {
    let o = &k.s.d.operator;
    k.helm()
        .args(["upgrade", "--install", &o.release, &chart.to_string_lossy()])
        .args(["-n", &o.namespace, "--create-namespace"])
        .args(["-f", &values.to_string_lossy()])
        .args(["--skip-crds", "--timeout", live::HELM_WAIT])
        .timeout(live::HELM_TIMEOUT)
}

fn operator_outputs(k: &Kube) -> Outputs {
    let o = &k.s.d.operator;
    Outputs::from([("release".to_string(), o.release.clone()), ("version".to_string(), o.version.clone())])
}

/// Installs or upgrades the operator's release, then waits for its Deployment to roll out.
fn operator_apply(k: &Kube, cx: &Cx) -> Result<Outputs> {
    let path = write_for_tool(k, OPERATOR_VALUES, rendered_text(k, OPERATOR_VALUES)?)?;
    let o = &k.s.d.operator;

    let chart = chart::lean_operator_chart(k, &cx.runner)?;
    // The CRDs this run applied, each served (so Established) before the operator is created.
    let applied = k.crds_applied.lock().unwrap_or_else(|e| e.into_inner()).clone();
    wait_served(k, &cx.runner, &applied)?;
    live::upgrade(k, &cx.runner, &o.release, &o.namespace, &operator_cmd(k, &chart, &path))?;
    let o = &k.s.d.operator;
    live::wait_rollout(k, &cx.runner, "deployment", &o.namespace, &o.release)?;
    Ok(operator_outputs(k))
}

// ---------------------------------------------------------------------------------------------
// mounts

/// The [`MANIFEST_HASH_LABEL`] value of a rendered object: what tells deploy and plan that the
/// live object is the one this render applies (the API server adds defaults and status to what
/// it stores, e.g. a bound PersistentVolume's `claimRef`, so the live spec is no comparison).
pub fn manifest_hash(rendered: &Value) -> String {
    live::short_hash([live::canonical(rendered).as_bytes()])
}

fn mount_objects(k: &Kube) -> Result<Vec<Value>> {
    let Some(text) = k.s.rendered.files.get(MOUNTS) else { return Ok(vec![]) };
    let mut docs = live::yaml_docs(text)?;
    for d in &mut docs {
        let h = manifest_hash(d);
        live::set_label(d, MANIFEST_HASH_LABEL, &h);
    }
    Ok(docs)
}

fn object_ref(o: &Value) -> String {
    format!("{}/{}", live::kind(o).to_ascii_lowercase(), live::name(o))
}

fn mounts_outputs(objects: &[Value]) -> Outputs {
    let names: Vec<String> = objects.iter().map(object_ref).collect();
    Outputs::from([("objects".to_string(), names.join(","))])
}

fn mounts_probe(k: &Kube, cx: &Cx) -> Result<Option<Outputs>> {
    let objects = mount_objects(k)?;
    if objects.is_empty() {
        return Ok(Some(mounts_outputs(&objects)));
    }
    let refs: Vec<String> = objects.iter().map(object_ref).collect();
    let what: Vec<&str> = refs.iter().map(String::as_str).collect();
    let found = live::items(live::get(k, &cx.runner, &what, Some(&k.s.d.cluster.namespace))?);
    let current = objects.iter().all(|o| {
        found.iter().any(|f| {
            live::kind(f) == live::kind(o)
                && live::name(f) == live::name(o)
                && live::label(f, MANIFEST_HASH_LABEL) == live::label(o, MANIFEST_HASH_LABEL)
        })
    });
    Ok(current.then(|| mounts_outputs(&objects)))
}

fn mounts_apply(k: &Kube, cx: &Cx) -> Result<Outputs> {
    let objects = mount_objects(k)?;
    if !objects.is_empty() {
        live::ensure_namespace(k, &cx.runner, &k.s.d.cluster.namespace)?;
        live::apply(k, &cx.runner, &objects, true)?;
    }
    Ok(mounts_outputs(&objects))
}

// ---------------------------------------------------------------------------------------------
// cluster

/// The second values file of the ray-cluster release: every group's image pinned by digest.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageValues {
    /// The chart's default image (the head's unless `head.image` is set).
    pub image: Image,
    pub head: GroupImage,
    /// The first worker group (none when there is no worker group: it is switched off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<GroupImage>,
    /// The other worker groups, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub additional_worker_groups: BTreeMap<String, GroupImage>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupImage {
    pub image: Image,
}

/// The pinned references image-push recorded: `cpu` and (with a GPU group) `gpu`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pins {
    pub cpu: String,
    pub gpu: Option<String>,
}

/// `registry/repo:tag@sha256:…` as (repository, `tag@sha256:…`), the chart's two fields.
pub fn split_pinned(reference: &str) -> Result<(String, String)> {
    let (name, digest) =
        reference.split_once('@').with_context(|| format!("image reference {reference} has no @digest"))?;
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    let colon = name[slash..].rfind(':').map(|i| slash + i);
    let Some(colon) = colon else { bail!("image reference {reference} has no tag") };
    if !digest.starts_with("sha256:") {
        bail!("image reference {reference} has no sha256 digest");
    }
    Ok((name[..colon].to_string(), format!("{}@{digest}", &name[colon + 1..])))
}

impl ImageValues {
    /// Each group's image (as the model chose it: CPU or GPU) replaced by its pinned reference.
    pub fn new(d: &crate::model::Deployment, pins: &Pins) -> Result<Self> {
        let pin = |img: &ImageRef| -> Result<Image> {
            let reference = if d.image.gpu.as_ref() == Some(img) {
                pins.gpu.as_deref().context("image-push recorded no gpu_image but a GPU group exists")?
            } else {
                pins.cpu.as_str()
            };
            let (repository, tag) = split_pinned(reference)?;
            // The chart takes a group's pull policy from the group's own image (here the head's
            // too): without it that container's imagePullPolicy renders as null.
            Ok(Image { repository, tag, pull_policy: Some(RAY_PULL_POLICY) })
        };
        let group = |g: &RayGroup| -> Result<GroupImage> { Ok(GroupImage { image: pin(&g.image)? }) };
        let c = &d.cluster;
        let cpu = d.image.cpu.as_ref().unwrap_or(&c.head.image);
        let mut workers = c.workers.iter();
        let worker = workers.next().map(group).transpose()?;
        let additional = workers.map(|g| Ok((g.name.clone(), group(g)?))).collect::<Result<_>>()?;
        Ok(Self { image: pin(cpu)?, head: group(&c.head)?, worker, additional_worker_groups: additional })
    }
}

fn pins(cx: &Cx) -> Result<Pins> {
    let cpu = cx
        .output("image-push", "cpu_image")
        .context("image-push recorded no cpu_image (the pinned image reference): run deploy again")?;
    Ok(Pins { cpu, gpu: cx.output("image-push", "gpu_image") })
}

/// The values the ray-cluster release gets (rendered values with the image pins merged), and
/// the pins.
fn cluster_values(k: &Kube, cx: &Cx) -> Result<(Value, Pins)> {
    let pins = pins(cx)?;
    let mut values = rendered_values(k, RAY_CLUSTER_VALUES)?;
    live::merge(&mut values, &serde_json::to_value(ImageValues::new(&k.s.d, &pins)?)?);
    Ok((values, pins))
}

fn cluster_cmd(k: &Kube, values: &std::path::Path, images: &std::path::Path) -> Cmd {
    let c = &k.s.d.cluster;
    k.helm()
        .args(["upgrade", "--install", &c.name])
        .args(k.s.d.operator.charts.chart_args("ray-cluster", &k.s.d.operator.version))
        .args(["-n", &c.namespace, "--create-namespace"])
        .args(["-f", &values.to_string_lossy(), "-f", &images.to_string_lossy()])
        // No `--wait`: the `ready` phase waits for the RayCluster and its pods, and says why not.
        .args(["--timeout", live::HELM_WAIT])
        .timeout(live::HELM_TIMEOUT)
}

fn cluster_outputs(k: &Kube, pins: &Pins) -> Outputs {
    let mut o = Outputs::from([
        ("release".to_string(), k.s.d.cluster.name.clone()),
        ("cpu_image".to_string(), pins.cpu.clone()),
    ]);
    if let Some(g) = &pins.gpu {
        o.insert("gpu_image".into(), g.clone());
    }
    o
}

fn cluster_apply(k: &Kube, cx: &Cx) -> Result<Outputs> {
    let pins = pins(cx)?;
    let images = crate::render::yaml::to_yaml(IMAGE_VALUES, &ImageValues::new(&k.s.d, &pins)?)?;
    let values = write_for_tool(k, RAY_CLUSTER_VALUES, rendered_text(k, RAY_CLUSTER_VALUES)?)?;
    let images = write_for_tool(k, IMAGE_VALUES, &images)?;
    let c = &k.s.d.cluster;
    // A CRD Established a moment ago may not be in every API server's discovery yet: Helm then
    // finds no RayCluster kind and changes nothing. Asked again, a few times (after 1, 2, 4, 8 s).
    let mut cmd = cluster_cmd(k, &values, &images).retry_when(&["no matches for kind"], 5);
    cmd.backoff = Duration::from_secs(1);
    live::upgrade(k, &cx.runner, &c.name, &c.namespace, &cmd)?;
    Ok(cluster_outputs(k, &pins))
}

// ---------------------------------------------------------------------------------------------
// ready

fn pod_ready(p: &Value) -> bool {
    p.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| {
        cs.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Ready")
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
    })
}

fn is_head(p: &Value) -> bool {
    live::label(p, "ray.io/node-type") == Some("head")
}

/// The Ray group of a pod: raydeploy's label, else KubeRay's.
fn pod_group(p: &Value) -> String {
    live::label(p, GROUP_LABEL)
        .or_else(|| live::label(p, "ray.io/group"))
        .map(str::to_string)
        .unwrap_or_else(|| if is_head(p) { "head".into() } else { "?".into() })
}

fn pod_phase(p: &Value) -> &str {
    live::str_at(p, "/status/phase").unwrap_or("Unknown")
}

/// Why a pod is not ready: failing conditions and waiting containers, one item each.
fn pod_reasons(p: &Value) -> Vec<String> {
    let mut out = vec![];
    for c in p.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten() {
        if c.get("status").and_then(Value::as_str) == Some("True") {
            continue;
        }
        let ty = c.get("type").and_then(Value::as_str).unwrap_or("?");
        let reason = c.get("reason").and_then(Value::as_str).unwrap_or("");
        let msg = c.get("message").and_then(Value::as_str).unwrap_or("");
        if reason.is_empty() && msg.is_empty() {
            continue;
        }
        out.push(format!("{ty}=False {reason}: {msg}").trim_end_matches([' ', ':']).to_string());
    }
    for key in ["/status/initContainerStatuses", "/status/containerStatuses"] {
        for cs in p.pointer(key).and_then(Value::as_array).into_iter().flatten() {
            let name = cs.get("name").and_then(Value::as_str).unwrap_or("?");
            if let Some(w) = cs.pointer("/state/waiting") {
                let reason = w.get("reason").and_then(Value::as_str).unwrap_or("waiting");
                let msg = w.get("message").and_then(Value::as_str).unwrap_or("");
                out.push(format!("container {name} {reason}: {msg}").trim_end_matches([' ', ':']).to_string());
            } else if let Some(t) = cs.pointer("/state/terminated") {
                let reason = t.get("reason").and_then(Value::as_str).unwrap_or("terminated");
                out.push(format!("container {name} {reason} (exit {})", t.get("exitCode").unwrap_or(&Value::Null)));
            }
        }
    }
    out
}

/// Warning events about `pod`, newest last, one line each.
fn pod_events(events: &[Value], pod: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| live::str_at(e, "/involvedObject/name") == Some(pod))
        .filter(|e| live::str_at(e, "/type") != Some("Normal"))
        .map(|e| {
            let n = e.get("count").and_then(Value::as_u64).unwrap_or(1);
            format!(
                "event {}{}: {}",
                live::str_at(e, "/reason").unwrap_or("?"),
                if n > 1 { format!(" (x{n})") } else { String::new() },
                live::str_at(e, "/message").unwrap_or("").trim()
            )
        })
        .collect()
}

/// The RayCluster and its pods as the ready check sees them.
struct Snapshot {
    state: Option<String>,
    reason: Option<String>,
    pods: Vec<Value>,
    exists: bool,
    /// The RayCluster has a `status`: the KubeRay operator has reconciled it at least once.
    reconciled: bool,
    /// `metadata.generation` and `status.observedGeneration` (the spec the operator last acted on).
    generation: Option<u64>,
    observed: Option<u64>,
}

impl Snapshot {
    fn read(k: &Kube, r: &Runner) -> Result<Self> {
        let c = &k.s.d.cluster;
        // The RayCluster and its pods, read at the same time.
        let (rc, pods) = live::both(|| live::get(k, r, &["raycluster", &c.name], Some(&c.namespace)), || pods(k, r));
        let (rc, pods) = (rc?, pods?);
        let status = rc.as_ref().and_then(|v| v.get("status")).filter(|s| s.as_object().is_some_and(|m| !m.is_empty()));
        Ok(Self {
            exists: rc.is_some(),
            state: rc.as_ref().and_then(|v| live::str_at(v, "/status/state")).map(str::to_string),
            reason: rc.as_ref().and_then(|v| live::str_at(v, "/status/reason")).map(str::to_string),
            reconciled: status.is_some(),
            generation: rc.as_ref().and_then(|v| v.pointer("/metadata/generation")).and_then(Value::as_u64),
            observed: status.and_then(|s| s.get("observedGeneration")).and_then(Value::as_u64),
            pods,
        })
    }

    fn head(&self) -> Option<&Value> {
        self.pods.iter().find(|p| is_head(p))
    }

    fn ready(&self) -> bool {
        self.state.as_deref() == Some("ready") && self.head().is_some_and(pod_ready)
    }

    fn summary(&self) -> String {
        let head = match self.head() {
            Some(p) if pod_ready(p) => "ready".to_string(),
            Some(p) => pod_phase(p).to_string(),
            None => "none".into(),
        };
        let ready = self.pods.iter().filter(|p| pod_ready(p)).count();
        format!(
            "state {}, head pod {head}, {ready}/{} pods ready",
            self.state.as_deref().filter(|s| !s.is_empty()).unwrap_or("<none>"),
            self.pods.len()
        )
    }
}

fn pods(k: &Kube, r: &Runner) -> Result<Vec<Value>> {
    let c = &k.s.d.cluster;
    let sel = format!("{RAY_CLUSTER_LABEL}={}", c.name);
    Ok(live::items(live::get(k, r, &["pods", "-l", &sel], Some(&c.namespace))?))
}

/// The pauses of `ready` between two looks: the first looks come soon after the install (pods on
/// a warm cluster are up in a second or two), 100 ms doubling up to `interval`, then `interval`.
fn ready_pauses(interval: Duration) -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(Duration::from_millis(100).min(interval)), move |p| Some((*p * 2).min(interval)))
}

fn ready(k: &Kube, cx: &Cx) -> Result<Outputs> {
    let r = &cx.runner;
    let c = &k.s.d.cluster;
    let timeout = live::ready_timeout();
    let start = Instant::now();
    let mut last = String::new();
    let mut pauses = ready_pauses(live::poll_interval());
    let mut first = true;
    loop {
        // The first look goes with a watch for the state (right after the install the operator
        // is still starting): once it turns ready, the next look comes at once.
        let (snap, turned) = if std::mem::take(&mut first) {
            let most = live::poll_interval().min(timeout);
            let (snap, turned) = live::both(|| Snapshot::read(k, r), || watch_ready_state(k, r, most));
            (snap?, turned)
        } else {
            (Snapshot::read(k, r)?, false)
        };
        let summary = snap.summary();
        if snap.ready() {
            r.info(&format!("RayCluster {}/{} is ready ({summary})", c.namespace, c.name));
            return Ok(ready_outputs(k));
        }
        if summary != last {
            r.info(&format!("waiting for RayCluster {}/{}: {summary}", c.namespace, c.name));
            last = summary;
        }
        if start.elapsed() >= timeout {
            bail!("{}", not_ready(k, r, &snap, timeout));
        }
        if turned {
            continue;
        }
        let pause = pauses.next().unwrap_or(live::poll_interval());
        let left = timeout.saturating_sub(start.elapsed());
        if snap.exists && snap.state.as_deref() != Some("ready") {
            await_ready_state(k, r, live::poll_interval().max(pause).min(left), pause.min(left));
        } else {
            sleep_unless_interrupted(pause.min(left));
        }
        if signals::interrupted() {
            bail!("interrupted while waiting for RayCluster {}/{}", c.namespace, c.name);
        }
    }
}

/// Waits up to `most` for the RayCluster's state to turn `ready` (`kubectl wait --for=jsonpath`,
/// which watches the object: the next look comes as soon as the operator marks it, not at the next
/// poll). A wait that ends early without the condition (a kubectl without jsonpath waits, a failed
/// read) is followed by the rest of the plain pause `pause`.
fn await_ready_state(k: &Kube, r: &Runner, most: Duration, pause: Duration) {
    let t = Instant::now();
    if !watch_ready_state(k, r, most) {
        sleep_unless_interrupted(pause.saturating_sub(t.elapsed()));
    }
}

/// `kubectl wait --for=jsonpath={.status.state}=ready` of the RayCluster for up to `most`:
/// whether the state is (or turned) ready.
fn watch_ready_state(k: &Kube, r: &Runner, most: Duration) -> bool {
    let c = &k.s.d.cluster;
    let wait = k
        .kubectl()
        .args(["wait", "raycluster", &c.name, "-n", &c.namespace, "--for=jsonpath={.status.state}=ready"])
        .arg(format!("--timeout={}ms", most.as_millis().max(1)))
        .timeout(most + live::READ_TIMEOUT)
        .quiet()
        .ok_codes(&[0, 1]);
    r.run(&wait).is_ok_and(|o| o.code == 0)
}

/// The message of a ready timeout: the cluster's state, each pod that is not ready and why.
fn not_ready(k: &Kube, r: &Runner, snap: &Snapshot, timeout: Duration) -> String {
    let c = &k.s.d.cluster;
    let ns = &c.namespace;
    let mut m = format!("RayCluster {ns}/{} is not ready after {}s: {}", c.name, timeout.as_secs(), snap.summary());
    if let Some(reason) = &snap.reason {
        m.push_str(&format!(" ({reason})"));
    }
    if !snap.exists {
        m.push_str(&format!(
            "\nthe RayCluster object does not exist: is the ray-cluster release installed? (helm list -n {ns})"
        ));
    } else if !snap.reconciled && snap.pods.is_empty() {
        m.push_str(&format!(
            "\nthe KubeRay operator is absent: nothing has acted on RayCluster {ns}/{} in {}s (it has no status \
             and no pods). {}",
            c.name,
            timeout.as_secs(),
            operator_facts(k, r)
        ));
    } else if let Some((g, o)) = snap.generation.zip(snap.observed).filter(|(g, o)| o < g) {
        m.push_str(&format!(
            "\nthe KubeRay operator has not acted on the latest change of RayCluster {ns}/{} (generation {g}, \
             it last reconciled generation {o}). {}",
            c.name,
            operator_facts(k, r)
        ));
    } else if snap.pods.is_empty() {
        m.push_str(&format!(
            "\nno pod of the RayCluster exists: is the KubeRay operator running and watching {ns}? \
             (kubectl -n {} logs deploy/{})",
            k.s.d.operator.namespace, k.s.d.operator.release
        ));
    }
    let events = live::items(live::get(k, r, &["events"], Some(ns)).unwrap_or(None));
    let waiting: Vec<&Value> = snap.pods.iter().filter(|p| !pod_ready(p)).collect();
    // On AKS, an unscheduled pod's node pool and what its nodes offer, read from the nodes.
    let pools = k.s.d.azure.as_ref().map(|a| &a.ray_pools);
    let unscheduled = waiting.iter().any(|p| live::str_at(p, "/spec/nodeName").is_none());
    let nodes = if pools.is_some() && unscheduled {
        live::items(live::get(k, r, &["nodes"], None).unwrap_or(None))
    } else {
        vec![]
    };
    if !waiting.is_empty() {
        m.push_str("\npods not ready:");
        for p in &waiting {
            let name = live::name(p);
            let group = pod_group(p);
            let pool = pools.and_then(|ps| ps.iter().find(|n| n.group.as_deref() == Some(group.as_str())));
            match pool {
                Some(pool) => {
                    m.push_str(&format!("\n  {name} (group {group}, node pool {}): {}", pool.name, pod_phase(p)))
                }
                None => m.push_str(&format!("\n  {name} (group {group}): {}", pod_phase(p))),
            }
            for reason in pod_reasons(p).into_iter().chain(pod_events(&events, name)) {
                m.push_str(&format!("\n    {reason}"));
            }
            if let Some(pool) = pool.filter(|_| live::str_at(p, "/spec/nodeName").is_none()) {
                m.push_str(&format!("\n    {}", pool_fit(pool, p, &nodes)));
            }
        }
        m.push_str(&format!("\nmore: kubectl -n {ns} describe pod {}", live::name(waiting[0])));
    }
    m
}

/// What the API says about the operator raydeploy installs: its release's Deployment and how
/// many of its pods are ready, with where to look next.
fn operator_facts(k: &Kube, r: &Runner) -> String {
    let o = &k.s.d.operator;
    let logs = format!("kubectl -n {} logs deploy/{}", o.namespace, o.release);
    let sel = format!("app.kubernetes.io/instance={}", o.release);
    let deployments = match live::get(k, r, &["deployments", "-l", &sel], Some(&o.namespace)) {
        Ok(v) => live::items(v),
        Err(e) => {
            return format!(
                "Its Deployment could not be read ({}); check {logs}",
                e.to_string().lines().next().unwrap_or("")
            );
        }
    };
    let Some(d) = deployments.first() else {
        return format!(
            "No Deployment of the operator release {}/{} exists: run deploy again to install it, or check \
             `helm status {} -n {}`",
            o.namespace, o.release, o.release, o.namespace
        );
    };
    let count = |p: &str| d.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let (ready, wanted) = (count("/status/readyReplicas"), count("/spec/replicas"));
    let name = live::name(d);
    if ready == 0 {
        format!(
            "Its Deployment {}/{name} has 0 of {wanted} pods ready: kubectl -n {} describe deploy/{name}; {logs}",
            o.namespace, o.namespace
        )
    } else {
        format!(
            "Its Deployment {}/{name} reports {ready} of {wanted} pods ready, yet no operator process reconciles \
             this namespace: it may watch other namespaces, have lost its API connection or be stuck; see {logs}",
            o.namespace
        )
    }
}

/// AKS's label naming a node's pool.
const AGENTPOOL_LABEL: &str = "kubernetes.azure.com/agentpool";

/// What an unscheduled pod asks and what the nodes of its pool offer, as the cluster reports them:
/// `node pool cpu (Standard_D4s_v5): 1 node, allocatable cpu 3860m, memory 12480512Ki; the pod
/// requests cpu 6, memory 4Gi`.
fn pool_fit(pool: &crate::model::NodePool, pod: &Value, nodes: &[Value]) -> String {
    let ours: Vec<&Value> =
        nodes.iter().filter(|n| live::label(n, AGENTPOOL_LABEL) == Some(pool.name.as_str())).collect();
    let offer = match ours.as_slice() {
        [] => "no node".to_string(),
        [first, ..] => {
            let alloc =
                |key: &str| live::str_at(first, &format!("/status/allocatable/{key}")).unwrap_or("?").to_string();
            let mut o = format!(
                "{} node{} allocatable cpu {}, memory {}",
                ours.len(),
                if ours.len() == 1 { "," } else { "s, each" },
                alloc("cpu"),
                alloc("memory")
            );
            let gpus = alloc("nvidia.com~1gpu");
            if pool.vm.gpus > 0 || gpus != "?" {
                o.push_str(&format!(", nvidia.com/gpu {}", if gpus == "?" { "none advertised" } else { &gpus }));
            }
            o
        }
    };
    let containers: Vec<(&str, String)> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let asks: Vec<String> = c
                .pointer("/resources/requests")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(key, v)| v.as_str().map(|v| format!("{key} {v}")))
                .collect();
            (c.get("name").and_then(Value::as_str).unwrap_or("?"), asks.join(", "))
        })
        .filter(|(_, asks)| !asks.is_empty())
        .collect();
    let asks = match containers.as_slice() {
        [] => String::new(),
        [(_, asks)] => format!("; the pod requests {asks}"),
        many => format!(
            "; the pod's containers request {}",
            many.iter().map(|(name, asks)| format!("{name}: {asks}")).collect::<Vec<_>>().join("; ")
        ),
    };
    format!("node pool {} ({}): {offer}{asks}", pool.name, pool.vm_size)
}

// ---------------------------------------------------------------------------------------------
// destroy

/// Removes what the deployment put on the cluster, in reverse order: jobs, the RayCluster
/// release, secrets, mounts, the NVIDIA device plugin release (unless other pods use GPUs), the
/// operator release. What is already gone counts as removed. The
/// KubeRay CRDs and the namespaces stay (other deployments may use them; deleting a CRD deletes
/// every object of its kind in the cluster).
pub fn destroy(k: &Kube, o: &DestroyOptions) -> Result<()> {
    let d = &k.s.d;
    if let Some(kc) = k.kubeconfig().filter(|p| !p.is_file()) {
        if o.keep_infra {
            bail!(
                "no kubeconfig at {}: the cluster cannot be reached (run deploy once to write it) and \
                 --keep-infra keeps the infrastructure",
                kc.display()
            );
        }
        eprintln!("no kubeconfig at {}: the cluster-side objects go with the infrastructure", kc.display());
        return Ok(());
    }
    approve(
        &format!(
            "Remove `{}` from the Kubernetes cluster (jobs, RayCluster {}/{}, secrets, mounts, {}operator {}/{})",
            d.name,
            d.cluster.namespace,
            d.cluster.name,
            d.device_plugin
                .as_ref()
                .map(|p| format!("NVIDIA device plugin {}/{}, ", p.namespace, p.release))
                .unwrap_or_default(),
            d.operator.namespace,
            d.operator.release
        ),
        o.auto_approve,
    )?;
    signals::install();
    let _lock = k.s.lock("destroy")?;
    let r = live::side_runner(k, "destroy", false)?;
    let store = k.s.store()?;
    let c = &d.cluster;

    jobs::destroy(k, &r)?;
    if live::uninstall(k, &r, &c.name, &c.namespace)? {
        r.info(&format!("removed the ray-cluster release {}/{}", c.namespace, c.name));
    } else {
        r.info(&format!("ray-cluster release {}/{} already gone", c.namespace, c.name));
    }
    store.forget(&["cluster", "ready", "jobs"])?;
    secrets::destroy(k, &r)?;
    store.forget(&["secrets"])?;
    mounts_destroy(k, &r)?;
    store.forget(&["mounts"])?;
    super::device_plugin::destroy(k, &r)?;
    store.forget(&[super::device_plugin::PHASE])?;
    operator_destroy(k, &r)?;
    store.forget(&["operator", "crds"])?;
    r.info("removed from the cluster (the KubeRay CRDs and namespaces stay)");
    Ok(())
}

fn mounts_destroy(k: &Kube, r: &Runner) -> Result<()> {
    let mut objects = mount_objects(k)?;
    if objects.is_empty() {
        return Ok(());
    }
    // Claims before the volumes they are bound to.
    objects.sort_by_key(|o| live::kind(o) != "PersistentVolumeClaim");
    let c = k
        .kubectl()
        .arg("delete")
        .args(objects.iter().map(object_ref))
        .args(["-n", &k.s.d.cluster.namespace, "--ignore-not-found"])
        .timeout(live::WRITE_TIMEOUT);
    match r.run(&c) {
        Ok(_) => Ok(()),
        Err(CmdError::Failed { stderr_tail, .. }) if stderr_tail.contains("not found") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn operator_destroy(k: &Kube, r: &Runner) -> Result<()> {
    let o = &k.s.d.operator;
    if live::release(k, r, &o.release, &o.namespace)?.is_some() {
        // The operator serves the namespaces in its values; keep it for other deployments'.
        let values = live::release_values(k, r, &o.release, &o.namespace)?;
        let others: Vec<&str> = values
            .get("watchNamespace")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|ns| *ns != k.s.d.cluster.namespace)
            .collect();
        if !others.is_empty() {
            r.info(&format!(
                "kept the KubeRay operator {}/{}: it also watches {}",
                o.namespace,
                o.release,
                others.join(", ")
            ));
            return Ok(());
        }
    }
    if live::uninstall(k, r, &o.release, &o.namespace)? {
        r.info(&format!("removed the KubeRay operator release {}/{}", o.namespace, o.release));
    } else {
        r.info(&format!("KubeRay operator release {}/{} already gone", o.namespace, o.release));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// status

/// Live facts: the Helm releases, the RayCluster's state, pods per group, the dashboard.
pub fn status(k: &Kube) -> Result<(String, Value)> {
    let d = &k.s.d;
    let c = &d.cluster;
    let o = &d.operator;
    if let Some(kc) = k.kubeconfig().filter(|p| !p.is_file()) {
        let text = format!("cluster: not reachable yet (no kubeconfig at {})\n", kc.display());
        return Ok((text, serde_json::json!({"reachable": false, "kubeconfig": kc.display().to_string()})));
    }
    let r = live::side_runner(k, "status", true)?;
    match live_status(k, &r) {
        Ok(v) => Ok(v),
        Err(e) => {
            let e = k.s.redactor.scrub(&format!("{e:#}"));
            let text = format!(
                "cluster: unknown ({})\n  operator {}/{}, RayCluster {}/{}\n",
                e.lines().next().unwrap_or(""),
                o.namespace,
                o.release,
                c.namespace,
                c.name
            );
            Ok((text, serde_json::json!({"reachable": false, "error": e})))
        }
    }
}

fn live_status(k: &Kube, r: &Runner) -> Result<(String, Value)> {
    let d = &k.s.d;
    let c = &d.cluster;
    let o = &d.operator;
    let mut text = String::from("cluster:\n");
    let op = live::release(k, r, &o.release, &o.namespace)?;
    let rc_rel = live::release(k, r, &c.name, &c.namespace)?;
    let rel_text = |rel: &Option<live::Release>| match rel {
        Some(r) => format!("{} (chart {}, revision {})", r.status, r.chart, r.revision),
        None => "not installed".into(),
    };
    text.push_str(&format!("  operator release {}/{}: {}\n", o.namespace, o.release, rel_text(&op)));
    text.push_str(&format!("  ray-cluster release {}/{}: {}\n", c.namespace, c.name, rel_text(&rc_rel)));
    let (plugin_text, plugin) = super::device_plugin::status(k, r)?;
    text.push_str(&plugin_text);
    let snap = Snapshot::read(k, r)?;
    let state = snap.state.clone().filter(|s| !s.is_empty());
    text.push_str(&format!(
        "  RayCluster {}/{}: {}\n",
        c.namespace,
        c.name,
        if snap.exists { state.as_deref().unwrap_or("<no state yet>") } else { "absent" }
    ));
    let mut groups: BTreeMap<String, (usize, usize, BTreeMap<String, usize>)> = BTreeMap::new();
    for g in c.groups() {
        groups.entry(g.name.clone()).or_default();
    }
    for p in &snap.pods {
        let e = groups.entry(pod_group(p)).or_default();
        e.0 += 1;
        if pod_ready(p) {
            e.1 += 1;
        }
        *e.2.entry(pod_phase(p).to_string()).or_default() += 1;
    }
    let mut groups_json = serde_json::Map::new();
    for (g, (n, ready, phases)) in &groups {
        let phase_text: Vec<String> = phases.iter().map(|(p, n)| format!("{n} {p}")).collect();
        let wanted = c.groups().find(|x| &x.name == g).map(|x| x.replicas);
        text.push_str(&format!(
            "    {g:<16} {ready}/{n} pods ready{}{}\n",
            wanted.map(|w| format!(" (replicas {w})")).unwrap_or_default(),
            if phase_text.is_empty() { String::new() } else { format!(": {}", phase_text.join(", ")) }
        ));
        groups_json
            .insert(g.clone(), serde_json::json!({"pods": n, "ready": ready, "phases": phases, "replicas": wanted}));
    }
    let port = head_port(&c.head, "dashboard");
    let forward = k
        .kubectl()
        .args(["port-forward", &format!("svc/{}", c.head_service), &format!("{DASHBOARD_PORT}:{port}")])
        .args(["-n", &c.namespace])
        .display();
    text.push_str(&format!(
        "  dashboard: `raydeploy dashboard` (or {forward}, then http://127.0.0.1:{DASHBOARD_PORT}); \
         the dashboard, the Ray client and Serve: `raydeploy session`\n"
    ));
    let json = serde_json::json!({
        "reachable": true,
        "releases": {"operator": op, "cluster": rc_rel},
        "device_plugin": plugin,
        "raycluster": {"name": c.name, "namespace": c.namespace, "exists": snap.exists, "state": state, "reason": snap.reason},
        "groups": groups_json,
        "dashboard": {"service": c.head_service, "port": port, "port_forward": forward},
    });
    Ok((text, json))
}

// ---------------------------------------------------------------------------------------------
// dashboard

/// A free local port: the dashboard's own when free, else any.
fn local_port() -> Result<u16> {
    if std::net::TcpListener::bind(("127.0.0.1", DASHBOARD_PORT)).is_ok() {
        return Ok(DASHBOARD_PORT);
    }
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// A reconnecting port-forward to the head service's dashboard ([`super::forward`]), until Ctrl-C.
pub fn dashboard(k: &Kube) -> Result<()> {
    let c = &k.s.d.cluster;
    let r = live::side_runner(k, "dashboard", false)?;
    if live::get(k, &r, &["service", &c.head_service], Some(&c.namespace))?.is_none() {
        bail!("no service {}/{}: deploy the cluster first (raydeploy deploy)", c.namespace, c.head_service);
    }
    let port = local_port()?;
    let f = super::forward::Forward { name: "dashboard", local: port, remote: head_port(&c.head, "dashboard") };
    super::forward::hold(k, "dashboard", &[f], move || {
        println!("Ray dashboard: http://127.0.0.1:{port}  (Ctrl-C to stop)");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_references_split_into_repository_and_tag() {
        let d = "sha256:".to_string() + &"a".repeat(64);
        assert_eq!(
            split_pinned(&format!("localhost:5000/ray/app:2.52.0-py312-abc@{d}")).unwrap(),
            ("localhost:5000/ray/app".to_string(), format!("2.52.0-py312-abc@{d}"))
        );
        assert!(split_pinned(&format!("localhost:5000/ray/app@{d}")).is_err());
        assert!(split_pinned("ghcr.io/a/b:t").is_err());
    }

    #[test]
    fn pod_reasons_name_conditions_and_containers() {
        let p: Value = serde_json::json!({
            "metadata": {"name": "x", "labels": {"ray.io/node-type": "head"}},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}],
                "containerStatuses": [{"name": "ray-head", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}
        });
        let r = pod_reasons(&p);
        assert_eq!(r[0], "PodScheduled=False Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.");
        assert_eq!(r[1], "container ray-head ImagePullBackOff");
        assert!(is_head(&p) && !pod_ready(&p));
    }

    #[test]
    fn ready_looks_soon_then_every_poll_interval() {
        let ms = |v: Vec<Duration>| v.iter().map(|d| d.as_millis()).collect::<Vec<_>>();
        assert_eq!(ms(ready_pauses(Duration::from_secs(2)).take(6).collect()), [100, 200, 400, 800, 1600, 2000]);
        assert_eq!(ms(ready_pauses(Duration::from_millis(100)).take(3).collect()), [100, 100, 100]);
    }

    #[test]
    fn served_paths_name_the_version_each_crd_is_used_at() {
        let crd = |plural: &str, versions: Value| {
            serde_json::json!({"kind": "CustomResourceDefinition", "metadata": {"name": format!("{plural}.ray.io")},
                "spec": {"group": "ray.io", "names": {"plural": plural}, "versions": versions}})
        };
        let docs = [
            crd(
                "rayclusters",
                serde_json::json!([{"name": "v1alpha1", "served": true}, {"name": "v1", "served": true, "storage": true}]),
            ),
            crd(
                "rayjobs",
                serde_json::json!([{"name": "v1", "served": true, "storage": true}, {"name": "v1beta1", "served": true}]),
            ),
            crd(
                "rayservices",
                serde_json::json!([{"name": "v1", "served": false, "storage": true}, {"name": "v2", "served": true}]),
            ),
        ];
        let paths = served_paths(&docs);
        assert_eq!(
            paths,
            BTreeMap::from([
                ("/apis/ray.io/v1".to_string(), vec!["rayclusters".to_string(), "rayjobs".to_string()]),
                ("/apis/ray.io/v2".to_string(), vec!["rayservices".to_string()]),
            ])
        );
    }

    #[test]
    fn crd_table_rows_give_each_crds_version_label() {
        let t = "rayclusters.ray.io   2026-12-01T19:00:43Z   1.7.0\nrayjobs.ray.io       2026-12-01T19:00:46Z   \n\n";
        let v = parse_crd_table(t);
        assert_eq!(v.get("rayclusters.ray.io").map(String::as_str), Some("1.7.0"));
        assert_eq!(v.get("rayjobs.ray.io").map(String::as_str), Some(""));
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn pool_fit_names_the_pool_its_nodes_and_the_pods_requests() {
        use crate::model::NodePool;
        use crate::model::azure::{Allocatable, VmShape};
        let pool = |name: &str, vm_size: &str, gpus: u32| NodePool {
            name: name.into(),
            vm_size: vm_size.into(),
            vm: VmShape { vcpus: 4, memory_bytes: 16 << 30, gpus },
            allocatable: Allocatable { cpu_m: 3860, memory_bytes: 12 << 30, gpus, cpu_interpolated: false },
            group: Some(name.into()),
            autoscaled: false,
            min_count: 1,
            max_count: 1,
            node_count: 1,
            spot: false,
            labels: Default::default(),
            taints: vec![],
        };
        let node = |name: &str, pool: &str, alloc: Value| {
            serde_json::json!({"metadata": {"name": name, "labels": {AGENTPOOL_LABEL: pool}},
                "status": {"allocatable": alloc}})
        };
        let nodes = vec![
            node("aks-big-1-vmss000000", "big", serde_json::json!({"cpu": "3860m", "memory": "12480512Ki"})),
            node("aks-gpu-2-vmss000000", "gpu", serde_json::json!({"cpu": "3860m", "memory": "26000000Ki"})),
            node("aks-gpu-2-vmss000001", "gpu", serde_json::json!({"cpu": "3860m", "memory": "26000000Ki"})),
        ];
        let pod =
            |containers: Value| serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": containers}});
        let one =
            pod(serde_json::json!([{"name": "ray-worker", "resources": {"requests": {"cpu": "6", "memory": "4Gi"}}}]));
        assert_eq!(
            pool_fit(&pool("big", "Standard_D4s_v5", 0), &one, &nodes),
            "node pool big (Standard_D4s_v5): 1 node, allocatable cpu 3860m, memory 12480512Ki; the pod requests cpu 6, memory 4Gi"
        );
        assert_eq!(
            pool_fit(&pool("gpu", "Standard_NC4as_T4_v3", 1), &one, &nodes),
            "node pool gpu (Standard_NC4as_T4_v3): 2 nodes, each allocatable cpu 3860m, memory 26000000Ki, \
             nvidia.com/gpu none advertised; the pod requests cpu 6, memory 4Gi"
        );
        let two = pod(serde_json::json!([
            {"name": "ray-head", "resources": {"requests": {"cpu": "1"}}},
            {"name": "autoscaler", "resources": {"requests": {"cpu": "200m"}}}]));
        assert_eq!(
            pool_fit(&pool("none", "Standard_D4s_v5", 0), &two, &nodes),
            "node pool none (Standard_D4s_v5): no node; the pod's containers request ray-head: cpu 1; autoscaler: cpu 200m"
        );
    }
}
