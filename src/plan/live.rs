//! The live plan: asks Terraform (`plan -out` + `show -json`), the registry (does the content
//! tag exist), Helm (the releases' values) and the cluster (Secrets, volumes, RayJobs, a device
//! plugin it already runs) what a
//! deploy would change. A layer whose prerequisite does not exist yet (no AKS cluster, operator
//! not installed) says what creates it instead of failing. Nothing is changed, except that the
//! deployment's own kubeconfig is fetched when missing, as the credentials phase would.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use base64::Engine;
use serde_json::Value;

use super::infra::{Action, from_plan_json};
use super::{Existence, Item, ItemAction, Layer, Mode, Plan, Status, diff_files, under};
use crate::context::Context;
use crate::render::helm::DEVICE_PLUGIN_VALUES;
use crate::run::proc::{Cmd, Runner};
use crate::run::progress::Plain;
use crate::spec::Target;
use crate::targets::kube::infra::Terraform;
use crate::targets::kube::{Kube, cluster, device_plugin, jobs, live, secrets};

fn runner(s: &Context) -> Result<Runner> {
    Ok(Runner::new("plan", Some(&s.dir.join("logs").join("plan.log")), s.redactor.clone(), Arc::new(Plain::default()))?)
}

/// `terraform plan -out` and `show -json`: the infra layer, the plan's JSON (for the
/// fingerprint) and whether the AKS cluster exists already.
fn infra(k: &Kube, r: &Runner, tfplan: Option<&Path>) -> Result<(Layer, Value)> {
    let tf = Terraform::for_preview(k)?;
    let planfile = match tfplan {
        Some(p) => std::path::absolute(p)?,
        None => tf.plan_path().with_file_name("preview.tfplan"),
    };
    r.run(&tf.init())?;
    r.run(&tf.plan_to(&planfile))?;
    let show = r.run(&tf.show(&planfile))?;
    if tfplan.is_none() {
        let _ = std::fs::remove_file(&planfile);
    }
    let json: Value = serde_json::from_str(&show.stdout).context("terraform show -json did not print JSON")?;
    let mut l = Layer::new("infra");
    l.resources = from_plan_json(&json);
    if !l.resources.is_empty() {
        l.status = Status::Changes;
    }
    Ok((l, json))
}

/// Whether `reference` exists in its registry (the image phase's own registry probe).
fn image_exists(r: &Runner, reference: &str) -> Result<bool> {
    Ok(crate::targets::kube::image::registry_digest(r, reference)?.is_some())
}

/// Helm values as canonical YAML text (for a readable diff), image digests dropped (deploy pins
/// them; the plan compares tags).
fn values_text(v: &Value) -> String {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if k == "tag"
                        && let Value::String(s) = x
                        && let Some((t, _)) = s.split_once('@')
                    {
                        *s = t.to_string();
                    }
                    strip(x);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = v.clone();
    strip(&mut v);
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_saphyr::to_string(&sorted(&v)).unwrap_or_default()
}

/// A Helm release layer: values diff against the live release, or "created after …".
#[allow(clippy::too_many_arguments)]
fn release(
    k: &Kube,
    r: &Runner,
    layer: &'static str,
    name: &str,
    ns: &str,
    file: &str,
    after: &str,
    fp: &mut BTreeMap<String, String>,
) -> Result<Layer> {
    let mut l = Layer::new(layer);
    let status =
        r.run(&k.helm().args(["status", name, "-n", ns, "-o", "json"]).quiet().ok_codes(&[0, 1]).idempotent(2))?;
    let mut rendered: Value = serde_saphyr::from_str(k.s.rendered.files.get(file).map(String::as_str).unwrap_or("{}"))
        .with_context(|| format!("{file} is not YAML"))?;
    if layer == "cluster" {
        // Deploy adds every group's image pinned by digest; digests are dropped from both sides.
        let d = &k.s.d;
        let pin = |i: &crate::model::ImageRef| format!("{}@sha256:0", i.reference());
        let pins = cluster::Pins {
            cpu: d.image.cpu.as_ref().map(pin).unwrap_or_default(),
            gpu: d.image.gpu.as_ref().map(pin),
        };
        if !pins.cpu.is_empty() {
            live::merge(&mut rendered, &serde_json::to_value(cluster::ImageValues::new(d, &pins)?)?);
        }
    }
    let want = BTreeMap::from([(file.to_string(), values_text(&rendered))]);
    if status.code != 0 {
        l.status = Status::Create;
        l.note = Some(format!("release {name} is not installed: created after {after}"));
        l.diff = diff_files(&BTreeMap::new(), &want);
        fp.insert(format!("release {name}"), "absent".into());
        return Ok(l);
    }
    let st: Value = serde_json::from_str(&status.stdout).unwrap_or_default();
    fp.insert(format!("release {name}"), st["version"].to_string());
    let got = r.run(&k.helm().args(["get", "values", name, "-n", ns, "-o", "json"]).quiet().idempotent(2))?;
    let live_values: Value = serde_json::from_str(&got.stdout).unwrap_or(Value::Null);
    let have = BTreeMap::from([(file.to_string(), values_text(&live_values))]);
    l.diff = diff_files(&have, &want);
    if l.diff.is_some() {
        l.status = Status::Changes;
    }
    let rel_status = st["info"]["status"].as_str().unwrap_or("?");
    if rel_status != "deployed" {
        l.status = Status::Changes;
        l.note = Some(if live::PENDING_STATUSES.contains(&rel_status) {
            // What deploy does first (live::recover_pending): Helm refuses the upgrade until then.
            let then = match live::recovery(&live::history(k, r, name, ns)?) {
                live::Recovery::Rollback(rev) => format!("rolls it back to revision {rev}, then upgrades it"),
                live::Recovery::Uninstall => "uninstalls it (it was never deployed), then installs it".into(),
            };
            format!("release {name} is {rel_status}: an interrupted helm left it; deploy {then}")
        } else {
            format!("release {name} is {rel_status}: the upgrade repairs it")
        });
    }
    Ok(l)
}

fn secrets_layer(k: &Kube, r: &Runner, fp: &mut BTreeMap<String, String>) -> Result<Layer> {
    let mut l = Layer::new("secrets");
    let ns = &k.s.d.cluster.namespace;
    for s in &k.s.d.secrets {
        let values = secrets::resolve(k, s)?;
        let obj = live::get(k, r, &["secret", &s.name], Some(ns))?;
        let data: BTreeMap<String, String> = obj
            .as_ref()
            .and_then(|o| o["data"].as_object())
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
            .unwrap_or_default();
        fp.insert(
            format!("secret {}", s.name),
            obj.as_ref().map_or("absent".into(), |o| o["metadata"]["resourceVersion"].to_string()),
        );
        for (key, value) in &values {
            let enc = base64::engine::general_purpose::STANDARD.encode(value);
            match data.get(key) {
                None => l.items.push(Item::new(
                    ItemAction::Add,
                    format!("{}.{key}", s.name),
                    Some("value (redacted)".into()),
                )),
                Some(v) if *v != enc => l.items.push(Item::new(
                    ItemAction::Change,
                    format!("{}.{key}", s.name),
                    Some("value changed (redacted)".into()),
                )),
                _ => {}
            }
        }
        for key in data.keys().filter(|k| !values.contains_key(*k)) {
            l.items.push(Item::new(ItemAction::Remove, format!("{}.{key}", s.name), None));
        }
    }
    if !l.items.is_empty() {
        l.status = Status::Changes;
    }
    Ok(l)
}

/// The RayJobs on the cluster, judged as the `jobs` phase's probe judges them (see
/// [`jobs::judge`] and [`super::jobs_layer`]).
fn jobs_layer(k: &Kube, r: &Runner, with_jobs: bool) -> Result<Layer> {
    let found = jobs::deployed_rayjobs(k, r)?;
    let verdicts = jobs::judge(&found, &jobs::wanted(k)?, crate::run::state::now() as i64);
    // Ephemeral jobs (`run`'s) are listed without facts.
    let facts = verdicts
        .iter()
        .map(|(name, v)| {
            let fact = match v {
                jobs::Verdict::Missing => "not on the cluster".to_string(),
                jobs::Verdict::Succeeded => {
                    "on the cluster (SUCCEEDED), submitted by deploy --with-jobs with these inputs".to_string()
                }
                jobs::Verdict::Stale { status, why } => {
                    format!("on the cluster ({status}, {why}), replaced by the next submission")
                }
            };
            (name.clone(), fact)
        })
        .collect();
    let live_succeeded = jobs::succeeded(&verdicts).is_some();
    super::jobs_layer(k.s, with_jobs, Existence::Exists, &facts, None, live_succeeded)
}

/// Objects of a rendered manifest file that are missing or differ on the cluster.
fn objects_layer(k: &Kube, r: &Runner, layer: &'static str, prefix: &str) -> Result<Layer> {
    let mut l = Layer::new(layer);
    for text in under(&k.s.rendered.files, prefix).values() {
        for obj in live::yaml_docs(text)? {
            let kind = live::kind(&obj).to_lowercase();
            let name = live::name(&obj).to_string();
            let ns = obj["metadata"]["namespace"].as_str();
            let got = live::get(k, r, &[&kind, &name], ns)?;
            let id = format!("{}/{name}", live::kind(&obj));
            // As deploy decides (its mounts phase): the live object carries the hash of the
            // rendered one. Its spec is no comparison: the API server adds defaults (a volume's
            // `volumeMode`) and, once bound, a PersistentVolume's `claimRef`.
            let hash = cluster::manifest_hash(&obj);
            match got {
                None => l.items.push(Item::new(ItemAction::Add, id, None)),
                Some(g) if live::label(&g, cluster::MANIFEST_HASH_LABEL) != Some(hash.as_str()) => {
                    l.items.push(Item::new(ItemAction::Change, id, None))
                }
                Some(_) => {}
            }
        }
    }
    if !l.items.is_empty() {
        l.status = Status::Changes;
    }
    Ok(l)
}

fn create_after(layer: &'static str, after: &str) -> Layer {
    let mut l = Layer::new(layer);
    l.status = Status::Create;
    l.note = Some(format!("the cluster does not exist yet: created after {after}"));
    l
}

/// The whole live plan; `tfplan` keeps Terraform's saved plan there (for `deploy --plan`);
/// `with_jobs` as `plan --with-jobs`.
pub fn plan(s: &Context, tfplan: Option<&Path>, with_jobs: bool) -> Result<Plan> {
    let (layers, live) = layers(s, tfplan, with_jobs)?;
    let mut p = Plan::new(&s.d, &s.rendered, Mode::Live, None, layers);
    p.fingerprint.live = live;
    Ok(p)
}

/// The live facts a plan depends on (for `deploy --plan` to tell whether they moved).
pub fn fingerprint(s: &Context) -> Result<BTreeMap<String, String>> {
    Ok(layers(s, None, false)?.1)
}

fn layers(s: &Context, tfplan: Option<&Path>, with_jobs: bool) -> Result<(Vec<Layer>, BTreeMap<String, String>)> {
    let k = Kube::new(s)?;
    let r = runner(s)?;
    let d = &s.d;
    let mut fp = BTreeMap::new();
    let mut layers = vec![];
    let mut cluster_exists = true;
    if d.target == Target::Aks {
        let (l, json) = infra(&k, &r, tfplan)?;
        cluster_exists = !l
            .resources
            .iter()
            .any(|c| c.rtype == "azurerm_kubernetes_cluster" && matches!(c.action, Action::Create | Action::Replace));
        let summary: Vec<String> = l.resources.iter().map(|c| format!("{:?} {}", c.action, c.address)).collect();
        fp.insert(
            "terraform changes".into(),
            crate::graph::Inputs::new().value("c", &summary).finish()[..16].to_string(),
        );
        let _ = json;
        layers.push(l);
        if cluster_exists && !k.kubeconfig().is_some_and(|p| p.is_file()) {
            let a = d.azure.as_ref().context("aks target without azure settings")?;
            let path = k.kubeconfig().expect("aks kubeconfig");
            r.run(
                &Cmd::new("az")
                    .args(["aks", "get-credentials", "--resource-group", &a.resource_group, "--name", &a.aks_name])
                    .args(["--file", &path.display().to_string(), "--overwrite-existing", "--only-show-errors"])
                    .idempotent(2),
            )?;
        }
    }

    let mut img = Layer::new("image");
    for i in d.image.cpu.iter().chain(d.image.gpu.iter()) {
        let reference = i.reference();
        let exists = image_exists(&r, &reference)?;
        fp.insert(format!("image {reference}"), exists.to_string());
        if !exists {
            img.items.push(Item::new(ItemAction::Build, reference, Some("not in the registry: build and push".into())));
        }
    }
    if !img.items.is_empty() {
        img.status = Status::Changes;
    }
    layers.push(img);

    let kube_root = if d.target == Target::Aks { "credentials" } else { "preflight" };
    let cluster_after = if d.device_plugin.is_some() {
        "operator, device-plugin, secrets, mounts and image-push"
    } else {
        "operator, secrets, mounts and image-push"
    };
    if !cluster_exists {
        layers.push(create_after("operator", "crds"));
        if d.device_plugin.is_some() {
            layers.push(create_after("device-plugin", kube_root));
        }
        layers.push(create_after("cluster", cluster_after));
        layers.push(create_after("secrets", kube_root));
        layers.push(create_after("mounts", kube_root));
        if !d.jobs.is_empty() {
            let facts = d.jobs.iter().map(|j| (j.name.clone(), "the cluster does not exist yet".to_string())).collect();
            layers.push(super::jobs_layer(s, with_jobs, Existence::NotYet("ready"), &facts, None, false)?);
        }
        return Ok((layers, fp));
    }
    let (op, cl) = (&d.operator, &d.cluster);
    layers.push(release(
        &k,
        &r,
        "operator",
        &op.release,
        &op.namespace,
        "helm/kuberay-operator.values.yaml",
        "crds",
        &mut fp,
    )?);
    if let Some(p) = &d.device_plugin {
        let mut l =
            release(&k, &r, "device-plugin", &p.release, &p.namespace, DEVICE_PLUGIN_VALUES, kube_root, &mut fp)?;
        if l.status == Status::Create
            && let Some(found) = device_plugin::existing(&k, &r)?
        {
            // Deploy installs nothing then: the cluster's own plugin serves the GPU pods.
            l = Layer::new("device-plugin");
            l.note = Some(format!("the cluster already runs a device plugin ({found}): {} is not installed", p.chart));
            fp.insert("device plugin".into(), found);
        }
        layers.push(l);
    }
    layers.push(release(
        &k,
        &r,
        "cluster",
        &cl.name,
        &cl.namespace,
        "helm/ray-cluster.values.yaml",
        cluster_after,
        &mut fp,
    )?);
    layers.push(secrets_layer(&k, &r, &mut fp)?);
    layers.push(objects_layer(&k, &r, "mounts", "manifests/mounts")?);
    if !d.jobs.is_empty() {
        layers.push(jobs_layer(&k, &r, with_jobs)?);
    }
    Ok((layers, fp))
}
