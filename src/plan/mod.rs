//! `raydeploy plan`: one preview across every layer (infrastructure, image, operator, NVIDIA
//! device plugin, cluster, secrets, mounts, jobs), as text with unified diffs or as versioned JSON, with Terraform's exit
//! codes (0 no change, 2 changes, 1 error). Offline it compares the render with the snapshot
//! recorded by the last successful deploy (or any rendered folder); live it asks Terraform, the
//! registry, Helm and the cluster. Destructive changes are listed first and block `deploy`
//! unless `--allow-destroy`.
//!
//! Jobs are runs, not state: a deploy submits them only with `--with-jobs`, so the `jobs` layer
//! counts as a change only in `plan --with-jobs` (and then only when `deploy --with-jobs` would
//! submit them); otherwise it lists the jobs for information.

pub mod azurerm;
pub mod infra;
pub mod live;
pub mod planfile;
pub mod snapshot;
pub mod text;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::Deployment;
use crate::render::Rendered;
use crate::spec::Target;
use infra::ResourceChange;

/// Version of the JSON document `plan --output json` prints (and plan files hold).
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Live,
    Offline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Nothing to do.
    Unchanged,
    /// Exists and changes.
    Changes,
    /// Does not exist yet: everything in it is created.
    Create,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemAction {
    Add,
    Change,
    Remove,
    Build,
    /// A job `deploy --with-jobs` submits (`plan --with-jobs`).
    Run,
    /// Listed for information, not a change (a job without `--with-jobs`, or one that already
    /// ran with the same inputs).
    Info,
}

impl ItemAction {
    pub fn symbol(self) -> &'static str {
        match self {
            ItemAction::Add => "+",
            ItemAction::Change => "~",
            ItemAction::Remove => "-",
            ItemAction::Build => "*",
            ItemAction::Run => ">",
            ItemAction::Info => "i",
        }
    }
}

/// One named thing in a layer that changes (a secret key, a job, the image).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    pub action: ItemAction,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Item {
    pub fn new(action: ItemAction, name: impl Into<String>, detail: Option<String>) -> Self {
        Self { action, name: name.into(), detail }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    /// `infra`, `image`, `operator`, `device-plugin`, `cluster`, `secrets`, `mounts`, `jobs`
    pub layer: &'static str,
    pub status: Status,
    /// E.g. "will be created after credentials".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceChange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<Item>,
    /// Unified diff of the layer's artifacts (secret values never appear: only placeholders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

impl Layer {
    pub fn new(layer: &'static str) -> Self {
        Self { layer, status: Status::Unchanged, note: None, resources: vec![], items: vec![], diff: None }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Destructive {
    pub layer: &'static str,
    pub address: String,
    pub reason: String,
}

/// What a plan was computed from, to refuse applying it once any of it moved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Fingerprint {
    /// Hash of the resolved spec.
    pub spec: String,
    /// Hash of every rendered file.
    pub rendered: String,
    /// Live facts by name (Terraform plan, release revisions, image presence); live plans only.
    #[serde(default)]
    pub live: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub format_version: u32,
    pub deployment: String,
    pub target: Target,
    pub mode: Mode,
    /// The baseline of an offline plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against: Option<String>,
    /// Any layer changes.
    pub changes: bool,
    /// Changes that replace or delete the cluster, a node pool, the registry or the RayCluster.
    pub destructive: Vec<Destructive>,
    pub layers: Vec<Layer>,
    pub fingerprint: Fingerprint,
    /// What the Azure preflight found (live aks plans): quota, VM sizes, Kubernetes version.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preflight: Vec<crate::targets::kube::azure_preflight::Finding>,
}

impl Plan {
    pub fn new(d: &Deployment, r: &Rendered, mode: Mode, against: Option<String>, layers: Vec<Layer>) -> Self {
        let mut destructive = vec![];
        for l in &layers {
            for c in &l.resources {
                if let Some(reason) = &c.destructive {
                    destructive.push(Destructive {
                        layer: l.layer,
                        address: c.address.clone(),
                        reason: reason.clone(),
                    });
                }
            }
        }
        let changes = layers.iter().any(|l| l.status != Status::Unchanged);
        Plan {
            format_version: FORMAT_VERSION,
            deployment: d.name.clone(),
            target: d.target,
            mode,
            against,
            changes,
            destructive,
            layers,
            fingerprint: Fingerprint { spec: d.spec_hash.clone(), rendered: rendered_hash(r), live: BTreeMap::new() },
            preflight: vec![],
        }
    }

    /// Terraform's convention: 0 no changes, 2 changes; 1 when the Azure preflight found a
    /// problem a deploy would stop at (other errors are decided by the caller).
    pub fn exit_code(&self) -> u8 {
        use crate::targets::kube::azure_preflight::Level;
        if self.preflight.iter().any(|f| f.level == Level::Error) {
            1
        } else if self.changes {
            2
        } else {
            0
        }
    }
}

/// What `plan` was asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// No cloud or cluster access.
    pub offline: bool,
    /// Baseline folder instead of the last applied snapshot.
    pub against: Option<std::path::PathBuf>,
    /// Plan file to write.
    pub out: Option<std::path::PathBuf>,
    /// Count the jobs `deploy --with-jobs` would submit as changes.
    pub with_jobs: bool,
}

/// Computes the plan (and writes the plan file when asked).
pub fn run(s: &crate::context::Context, o: &Options) -> anyhow::Result<Plan> {
    let plan = if o.offline || s.d.target == Target::Local {
        offline_plan(s, o.against.as_deref(), o.with_jobs)?
    } else {
        // The Azure preflight first: it chooses the Kubernetes version Terraform plans with.
        let found = match s.d.target {
            Target::Aks => Some(crate::targets::kube::infra::azure_findings(&crate::targets::kube::Kube::new(s)?)?),
            _ => None,
        };
        let mut plan = live::plan(s, o.out.as_deref().map(planfile::tfplan_path).as_deref(), o.with_jobs)?;
        plan.preflight = found.map(|f| f.findings).unwrap_or_default();
        plan
    };
    if let Some(out) = &o.out {
        planfile::write(out, &plan)?;
    }
    Ok(plan)
}

/// The offline plan against `against` or the last applied snapshot; `with_jobs` as `plan
/// --with-jobs`.
pub fn offline_plan(
    s: &crate::context::Context,
    against: Option<&std::path::Path>,
    with_jobs: bool,
) -> anyhow::Result<Plan> {
    let (base, label) = match against {
        Some(dir) => {
            let b =
                snapshot::load(dir)?.ok_or_else(|| anyhow::anyhow!("--against {}: no such folder", dir.display()))?;
            (Some(b), Some(dir.display().to_string()))
        }
        None => {
            let dir = snapshot::dir(&s.d);
            let b = snapshot::load(&dir)?;
            let label = b.as_ref().map(|_| "the last applied snapshot".to_string());
            (b, label)
        }
    };
    let mut layers =
        offline(&s.d, &s.rendered, base.as_ref()).map_err(|e| anyhow::anyhow!("cannot compare Terraform: {e}"))?;
    if !s.d.jobs.is_empty() {
        let prefix = "manifests/jobs/";
        let empty = BTreeMap::new();
        let (o, n) = (under(base.as_ref().map_or(&empty, |b| &b.files), prefix), under(&s.rendered.files, prefix));
        let facts: BTreeMap<String, String> =
            s.d.jobs
                .iter()
                .filter(|_| s.d.target != Target::Local)
                .map(|j| {
                    let file = format!("{prefix}{}.yaml", j.name);
                    let fact = match (base.is_some(), o.get(&file), n.get(&file)) {
                        (false, _, _) => "nothing deployed yet",
                        (true, None, _) => "new since the last deploy",
                        (true, Some(a), Some(b)) if a == b => "manifest unchanged since the last deploy",
                        _ => "manifest changed since the last deploy",
                    };
                    (j.name.clone(), fact.to_string())
                })
                .collect();
        let exists = if base.is_none() { Existence::NotYet("ready") } else { Existence::Exists };
        layers.push(jobs_layer(s, with_jobs, exists, &facts, diff_files(&o, &n), false)?);
    }
    Ok(Plan::new(&s.d, &s.rendered, Mode::Offline, label, layers))
}

/// Whether the cluster the jobs run on exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existence {
    Exists,
    /// Not yet: created after this phase.
    NotYet(&'static str),
}

/// Whether `deploy --with-jobs` would run the `jobs` phase now by the state: it skips it when the
/// phase completed with the same inputs and every job succeeded (see the targets' probes; on the
/// kube targets the RayJobs on the cluster can say so too).
fn jobs_phase_runs(s: &crate::context::Context) -> anyhow::Result<(bool, BTreeMap<String, String>)> {
    use crate::run::state::PhaseStatus;
    let g = crate::graph::graph(&s.d, &s.rendered, crate::graph::Options { with_jobs: true });
    let Some(p) = g.phases.iter().find(|p| p.id == "jobs") else { return Ok((false, BTreeMap::new())) };
    let store = s.store()?;
    let upstream: BTreeMap<String, BTreeMap<String, String>> =
        p.deps.iter().filter_map(|d| store.phase(d).map(|r| (d.to_string(), r.outputs))).collect();
    let hash = crate::graph::effective_hash(p, &upstream);
    let last = store.phase("jobs");
    let skipped = last.as_ref().is_some_and(|r| {
        r.status == PhaseStatus::Completed && r.input_hash == hash && r.outputs.values().all(|v| v == "SUCCEEDED")
    });
    Ok((!skipped, last.map(|r| r.outputs).unwrap_or_default()))
}

/// The `jobs` layer. Jobs are runs, not state: without `with_jobs` they are listed for
/// information and never count as changes (a deploy without `--with-jobs` does not touch them);
/// with it, they count exactly when `deploy --with-jobs` would submit them. `facts` says, per job,
/// what is known about it (on the cluster, manifest changed…); `diff` is the manifests' diff;
/// `live_succeeded`: the cluster shows every job succeeded with these inputs (the live plan).
pub(crate) fn jobs_layer(
    s: &crate::context::Context,
    with_jobs: bool,
    cluster: Existence,
    facts: &BTreeMap<String, String>,
    diff: Option<String>,
    live_succeeded: bool,
) -> anyhow::Result<Layer> {
    let mut l = Layer::new("jobs");
    l.diff = diff;
    let (runs, last) = jobs_phase_runs(s)?;
    let runs = runs && !live_succeeded;
    // Ephemeral jobs are `run`'s: never deploy's.
    let runs = (runs || matches!(cluster, Existence::NotYet(_))) && s.d.jobs.iter().any(|j| j.ephemeral.is_none());
    for j in &s.d.jobs {
        let name = if s.d.target == Target::Local { j.name.clone() } else { format!("RayJob/{}", j.name) };
        if j.ephemeral.is_some() {
            let detail = format!("runs on a cluster of its own with `raydeploy run {}`, never by deploy", j.name);
            l.items.push(Item::new(ItemAction::Info, name, Some(detail)));
            continue;
        }
        let mut detail: Vec<String> = facts.get(&j.name).cloned().into_iter().collect();
        if let Some(status) = last.get(&j.name) {
            detail.push(format!("last run by deploy --with-jobs: {status}"));
        }
        let action = match (with_jobs, runs) {
            (true, true) => {
                detail.push("submitted by deploy --with-jobs".into());
                ItemAction::Run
            }
            (true, false) => {
                detail.push("ran with these inputs: deploy --with-jobs skips it".into());
                ItemAction::Info
            }
            (false, _) => ItemAction::Info,
        };
        l.items.push(Item::new(action, name, (!detail.is_empty()).then(|| detail.join("; "))));
    }
    l.note = Some(match (with_jobs, runs, cluster) {
        (false, _, _) => {
            "jobs run only with `deploy --with-jobs` or `job submit`: listed, not counted (`plan --with-jobs` counts them)"
                .to_string()
        }
        (true, true, Existence::NotYet(after)) => format!("submitted after {after} by deploy --with-jobs"),
        (true, true, Existence::Exists) => "deploy --with-jobs submits every job".to_string(),
        (true, false, _) => "every job succeeded with these inputs: deploy --with-jobs skips them".to_string(),
    });
    if with_jobs && runs {
        l.status = if matches!(cluster, Existence::NotYet(_)) { Status::Create } else { Status::Changes };
    }
    Ok(l)
}

/// Hash of every rendered file (path and content).
pub fn rendered_hash(r: &Rendered) -> String {
    crate::graph::Inputs::new().files(r, "").finish()
}

/// Files of `files` under `prefix` (a folder, or a file name stem like `manifests/secrets`).
pub(crate) fn under(files: &BTreeMap<String, String>, prefix: &str) -> BTreeMap<String, String> {
    files.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A unified diff of two file sets; `None` when equal.
pub fn diff_files(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Option<String> {
    let mut out = String::new();
    let paths: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for p in paths {
        let a = old.get(p).map(String::as_str).unwrap_or("");
        let b = new.get(p).map(String::as_str).unwrap_or("");
        if a == b {
            continue;
        }
        let (ha, hb) = (
            if old.contains_key(p) { format!("a/{p}") } else { "/dev/null".into() },
            if new.contains_key(p) { format!("b/{p}") } else { "/dev/null".into() },
        );
        out.push_str(
            &similar::TextDiff::from_lines(a, b).unified_diff().context_radius(3).header(&ha, &hb).to_string(),
        );
    }
    (!out.is_empty()).then_some(out)
}

/// Layers of an offline plan: the render against a baseline (`None`: nothing deployed yet).
pub fn offline(d: &Deployment, r: &Rendered, base: Option<&snapshot::Snapshot>) -> Result<Vec<Layer>, String> {
    let empty = BTreeMap::new();
    let old = base.map(|b| &b.files).unwrap_or(&empty);
    let new = &r.files;
    let mut layers = vec![];
    let first = |layer: &mut Layer, after: &str| {
        if base.is_none() {
            layer.status = Status::Create;
            layer.note = Some(format!("nothing deployed yet: created after {after}"));
        }
    };

    if d.target == Target::Aks {
        let mut l = Layer::new("infra");
        let (o, n) = (under(old, "terraform/"), under(new, "terraform/"));
        l.resources = infra::from_files(&o, &n)?;
        l.diff = diff_files(&o, &n);
        if l.diff.is_some() {
            l.status = Status::Changes;
        }
        first(&mut l, "preflight");
        layers.push(l);
    }
    if d.target != Target::Local {
        let mut l = Layer::new("image");
        let (o, n) = (under(old, "image/"), under(new, "image/"));
        let old_tags = base.map(|b| b.image_refs.clone()).unwrap_or_default();
        for r in d.image.cpu.iter().chain(d.image.gpu.iter()) {
            let reference = r.reference();
            if !old_tags.contains(&reference) {
                l.items.push(Item::new(ItemAction::Build, reference, Some("new content hash: build and push".into())));
            }
        }
        l.diff = diff_files(&o, &n);
        if !l.items.is_empty() || l.diff.is_some() {
            l.status = Status::Changes;
        }
        first(&mut l, "preflight");
        layers.push(l);

        let kube_root = if d.target == Target::Aks { "credentials" } else { "preflight" };
        let mut kube_layers = vec![("operator", "helm/kuberay-operator", "crds")];
        if d.device_plugin.is_some() {
            kube_layers.push(("device-plugin", "helm/nvidia-device-plugin", kube_root));
        }
        let cluster_after = if d.device_plugin.is_some() {
            "operator, device-plugin, secrets, mounts and image-push"
        } else {
            "operator, secrets, mounts and image-push"
        };
        kube_layers.extend([
            ("cluster", "helm/ray-cluster", cluster_after),
            ("secrets", "manifests/secrets", kube_root),
            ("mounts", "manifests/mounts", kube_root),
        ]);
        for (name, prefix, after) in kube_layers {
            let mut l = Layer::new(name);
            let (o, n) = (under(old, prefix), under(new, prefix));
            l.diff = diff_files(&o, &n);
            l.items = match name {
                "secrets" => secret_items(&o, &n),
                "mounts" => object_items(&o, &n),
                _ => vec![],
            };
            if l.diff.is_some() || !l.items.is_empty() {
                l.status = Status::Changes;
            }
            if name == "secrets" && !d.secrets.is_empty() {
                l.note = Some("values are compared only by a live plan; offline shows keys".into());
            }
            if base.is_none() && !n.is_empty() {
                first(&mut l, after);
            }
            layers.push(l);
        }
    } else {
        // The local target: its environment and processes, from the model recorded at deploy.
        let mut l = Layer::new("local");
        let now = serde_json::to_string_pretty(&local_facts(d)).unwrap_or_default();
        let before = base.and_then(|b| b.local.as_ref()).map(|v| serde_json::to_string_pretty(v).unwrap_or_default());
        match before {
            None => {
                l.status = Status::Create;
                l.note = Some("nothing deployed yet".into());
            }
            Some(b) if b != now => {
                l.status = Status::Changes;
                l.diff = Some(
                    similar::TextDiff::from_lines(&b, &now).unified_diff().header("a/local", "b/local").to_string(),
                );
            }
            Some(_) => {}
        }
        layers.push(l);
    }
    Ok(layers)
}

/// What the local target's phases consume (environment and process sizes).
pub fn local_facts(d: &Deployment) -> serde_json::Value {
    serde_json::json!({
        "rayVersion": d.image.ray_version,
        "python": d.image.python,
        "pipPackages": d.image.pip_packages,
        "groups": d.cluster.groups().map(|g| serde_json::json!({
            "name": g.name, "cpu_m": g.cpu_m, "memory_bytes": g.memory_bytes, "gpus": g.gpus, "replicas": g.replicas,
        })).collect::<Vec<_>>(),
    })
}

/// Kubernetes objects (`kind/name`) in YAML streams.
fn objects(files: &BTreeMap<String, String>) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    for text in files.values() {
        for doc in serde_saphyr::from_multiple::<serde_json::Value>(text).unwrap_or_default() {
            let kind = doc["kind"].as_str().unwrap_or("?");
            let name = doc["metadata"]["name"].as_str().unwrap_or("?");
            out.insert(format!("{kind}/{name}"), doc);
        }
    }
    out
}

fn object_items(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<Item> {
    let (o, n) = (objects(old), objects(new));
    let mut items = vec![];
    for (k, v) in &n {
        match o.get(k) {
            None => items.push(Item::new(ItemAction::Add, k, None)),
            Some(ov) if ov != v => items.push(Item::new(ItemAction::Change, k, None)),
            _ => {}
        }
    }
    for k in o.keys().filter(|k| !n.contains_key(*k)) {
        items.push(Item::new(ItemAction::Remove, k, None));
    }
    items
}

/// Secret keys added, removed or re-sourced (the rendered Secrets hold placeholders naming the
/// source, never values).
fn secret_items(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<Item> {
    let (o, n) = (objects(old), objects(new));
    let keys = |v: Option<&serde_json::Value>| -> BTreeMap<String, String> {
        v.and_then(|v| v["stringData"].as_object())
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
            .unwrap_or_default()
    };
    let mut items = vec![];
    let names: std::collections::BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    for id in names {
        let (ok, nk) = (keys(o.get(id)), keys(n.get(id)));
        let name = id.strip_prefix("Secret/").unwrap_or(id);
        for (k, src) in &nk {
            match ok.get(k) {
                None => items.push(Item::new(ItemAction::Add, format!("{name}.{k}"), Some(src.clone()))),
                Some(s) if s != src => {
                    items.push(Item::new(ItemAction::Change, format!("{name}.{k}"), Some(src.clone())))
                }
                _ => {}
            }
        }
        for k in ok.keys().filter(|k| !nk.contains_key(*k)) {
            items.push(Item::new(ItemAction::Remove, format!("{name}.{k}"), None));
        }
    }
    items
}
