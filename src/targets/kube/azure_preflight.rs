//! The Azure part of preflight (target aks): what the subscription has, read before anything is
//! created, every problem at once. The three reads (retried like every read, never cached):
//!
//! - `az vm list-usage --location L`: per quota, `name.value` (a family such as
//!   `standardDSv5Family`, `lowPriorityCores` for Spot, `cores` for the regional total),
//!   `currentValue` and `limit`. The deployment needs, per family, every regular pool at its
//!   maximum node count × its size's vCPUs; Spot pools count against `lowPriorityCores`
//!   instead; regular pools also against `cores`. Nodes this deployment already runs (Terraform's
//!   state) are in `currentValue` already: only the increase counts.
//! - `az vm list-skus --location L --resource-type virtualMachines --size NAME --all`, one per
//!   planned size (`--size` matches part of the name; `--all` keeps sizes restricted for the
//!   subscription, which the CLI hides otherwise): `name`, `family` (the quota family: never
//!   derived from the size's spelling), `locations`, `locationInfo[].zones`,
//!   `capabilities[]` (`vCPUs`, `LowPriorityCapable`) and `restrictions[]` (`type` `Location` or
//!   `Zone`, `reasonCode` `NotAvailableForSubscription`, `restrictionInfo.locations/zones`).
//!   With a problem, one more read of the whole region finds a size of the same shape to suggest.
//! - `az aks get-versions --location L`: `values[]` with `version` (`1.33`), `isPreview`,
//!   `capabilities.supportPlan` (`KubernetesOfficial`, `AKSLongTermSupport`) and
//!   `patchVersions` (keys `1.33.2`).
//!
//! The evaluation is pure (parsed answers in, [`Finding`]s out) and unit-tested here; the fakes
//! in tests/fakes/az answer in the same documented shapes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::model::azure::{self as az_model, PoolDemand, QuotaNeed, REGIONAL_QUOTA, SPOT_QUOTA};
use crate::model::{AzureModel, Deployment};
use crate::run::proc::{Cmd, Runner};

const T_READ: Duration = Duration::from_secs(120);
const READ_ATTEMPTS: u32 = 3;
const STANDARD_SUPPORT: &str = "KubernetesOfficial";
const NOT_FOR_SUBSCRIPTION: &str = "NotAvailableForSubscription";

pub use crate::model::azure::Check;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
    Info,
}

/// One thing the Azure preflight found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub level: Level,
    /// `quota`, `skus` or `versions`.
    pub check: &'static str,
    /// The spec field to change, e.g. `cluster.workerGroups[1].maxReplicas`.
    pub field: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Finding {
    fn new(level: Level, check: Check, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { level, check: check.as_str(), field: field.into(), message: message.into(), help: None }
    }

    fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// `field: message` and, on the next line, `help: …`.
    pub fn text(&self) -> String {
        let mut t = format!("{}: {}", self.field, self.message);
        if let Some(h) = &self.help {
            t.push_str(&format!("\nhelp: {h}"));
        }
        t
    }
}

/// What the Azure preflight found, and the Kubernetes version it chose for a spec without one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub findings: Vec<Finding>,
    /// The newest version AKS offers outside preview, when the spec leaves the version open.
    pub kubernetes_version: Option<String>,
}

impl Outcome {
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.level == Level::Error)
    }
}

// ---------------------------------------------------------------------------------------------
// The answers, as the Azure CLI prints them (only the fields used are read; others are ignored).
// Azure writes `null` for empty lists and strings (e.g. `"restrictionInfo": {"zones": null}` on a
// region-wide restriction): every field reads `null` as empty.

fn nullable<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An item of `az vm list-usage -o json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Usage {
    #[serde(deserialize_with = "nullable")]
    pub current_value: i64,
    #[serde(deserialize_with = "nullable")]
    pub limit: i64,
    #[serde(deserialize_with = "nullable")]
    pub name: UsageName,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct UsageName {
    /// `standardNCASv3_T4Family`, `lowPriorityCores`, `cores`, …
    #[serde(deserialize_with = "nullable")]
    pub value: String,
    /// `Standard NCASv3_T4 Family vCPUs`
    #[serde(deserialize_with = "nullable")]
    pub localized_value: String,
}

/// An item of `az vm list-skus -o json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Sku {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub resource_type: String,
    /// The quota family (`az vm list-usage`'s `name.value`).
    pub family: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub locations: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub location_info: Vec<LocationInfo>,
    #[serde(deserialize_with = "nullable")]
    pub capabilities: Vec<Capability>,
    #[serde(deserialize_with = "nullable")]
    pub restrictions: Vec<Restriction>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LocationInfo {
    #[serde(deserialize_with = "nullable")]
    pub location: String,
    /// Logical zones the size is offered in.
    #[serde(deserialize_with = "nullable")]
    pub zones: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Capability {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub value: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Restriction {
    /// `Location` or `Zone`.
    #[serde(rename = "type")]
    #[serde(deserialize_with = "nullable")]
    pub kind: String,
    #[serde(deserialize_with = "nullable")]
    pub reason_code: String,
    #[serde(deserialize_with = "nullable")]
    pub values: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub restriction_info: RestrictionInfo,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RestrictionInfo {
    #[serde(deserialize_with = "nullable")]
    pub locations: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub zones: Vec<String>,
}

impl Sku {
    fn capability(&self, name: &str) -> Option<&str> {
        self.capabilities.iter().find(|c| c.name.eq_ignore_ascii_case(name)).map(|c| c.value.as_str())
    }

    fn offered_in(&self, location: &str) -> bool {
        self.locations.iter().any(|l| l.eq_ignore_ascii_case(location))
    }

    /// Restricted for the subscription in the whole region.
    fn restricted_in(&self, location: &str) -> bool {
        self.restrictions.iter().any(|r| {
            r.kind.eq_ignore_ascii_case("Location")
                && r.reason_code == NOT_FOR_SUBSCRIPTION
                && (r.restriction_info.locations.iter().chain(&r.values)).any(|l| l.eq_ignore_ascii_case(location))
        })
    }

    /// Zones of `location` the subscription can use the size in.
    fn zones_in(&self, location: &str) -> BTreeSet<String> {
        let offered: BTreeSet<String> = self
            .location_info
            .iter()
            .filter(|i| i.location.eq_ignore_ascii_case(location))
            .flat_map(|i| i.zones.iter().cloned())
            .collect();
        let restricted: BTreeSet<&String> = self
            .restrictions
            .iter()
            .filter(|r| {
                r.kind.eq_ignore_ascii_case("Zone")
                    && r.reason_code == NOT_FOR_SUBSCRIPTION
                    && (r.restriction_info.locations.iter().chain(&r.values)).any(|l| l.eq_ignore_ascii_case(location))
            })
            .flat_map(|r| &r.restriction_info.zones)
            .collect();
        offered.into_iter().filter(|z| !restricted.contains(z)).collect()
    }

    fn spot_capable(&self) -> bool {
        self.capability("LowPriorityCapable").is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// `az aks get-versions -o json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Versions {
    #[serde(deserialize_with = "nullable")]
    pub values: Vec<KubeVersion>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KubeVersion {
    /// `major.minor`
    #[serde(deserialize_with = "nullable")]
    pub version: String,
    pub is_preview: Option<bool>,
    #[serde(deserialize_with = "nullable")]
    pub capabilities: VersionCapabilities,
    /// Tolerated at the top level too.
    #[serde(deserialize_with = "nullable")]
    pub support_plan: Vec<String>,
    /// Patch versions (`1.33.2`) → their upgrades.
    #[serde(deserialize_with = "nullable")]
    pub patch_versions: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VersionCapabilities {
    #[serde(deserialize_with = "nullable")]
    pub support_plan: Vec<String>,
}

impl KubeVersion {
    fn preview(&self) -> bool {
        self.is_preview == Some(true)
    }

    /// In standard (community) support. Answers without any support plan predate the field.
    fn standard(&self) -> bool {
        let plans: Vec<&String> = self.capabilities.support_plan.iter().chain(&self.support_plan).collect();
        plans.is_empty() || plans.iter().any(|p| p.as_str() == STANDARD_SUPPORT)
    }

    fn minor(&self) -> Option<(u32, u32)> {
        az_model::k8s_minor(&self.version)
    }
}

/// A node pool Terraform's state says exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployedPool {
    pub name: String,
    pub vm_size: String,
    pub nodes: u32,
    pub spot: bool,
}

/// The node pools in `terraform show -json` of the state (`values.root_module.resources`: the
/// cluster's `default_node_pool[0]` and every `azurerm_kubernetes_cluster_node_pool`).
pub fn deployed_pools(state: &serde_json::Value) -> Vec<DeployedPool> {
    let mut out = vec![];
    let resources = state.pointer("/values/root_module/resources").and_then(|r| r.as_array());
    for r in resources.into_iter().flatten() {
        let v = &r["values"];
        let pool = |p: &serde_json::Value, spot: bool| DeployedPool {
            name: p["name"].as_str().unwrap_or_default().to_string(),
            vm_size: p["vm_size"].as_str().unwrap_or_default().to_string(),
            nodes: p["node_count"].as_u64().unwrap_or(0) as u32,
            spot,
        };
        match r["type"].as_str() {
            Some("azurerm_kubernetes_cluster") => {
                if let Some(p) = v["default_node_pool"].as_array().and_then(|a| a.first()) {
                    out.push(pool(p, false));
                }
            }
            Some("azurerm_kubernetes_cluster_node_pool") => {
                out.push(pool(v, v["priority"].as_str() == Some("Spot")));
            }
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Fields and names

/// The spec field of a pool's group (`cluster.workerGroups[1]`, `cluster.head`), or none for the
/// system pool.
fn group_path(d: &Deployment, p: &PoolDemand) -> Option<String> {
    let g = p.group.as_deref()?;
    d.cluster.all_groups().find(|x| x.name == g).map(|x| x.spec_path.clone())
}

fn size_field(d: &Deployment, p: &PoolDemand) -> String {
    group_path(d, p).map_or_else(|| "azure.systemPool.vmSize".to_string(), |g| format!("{g}.vmSize"))
}

fn who(p: &PoolDemand) -> String {
    match &p.group {
        Some(g) => format!("group `{g}`, pool {}", p.pool),
        None => "the system pool".to_string(),
    }
}

fn quota_label(quota: &str) -> String {
    match quota {
        SPOT_QUOTA => format!("{SPOT_QUOTA} (Spot vCPUs)"),
        REGIONAL_QUOTA => format!("{REGIONAL_QUOTA} (total regional vCPUs)"),
        f => format!("{f} vCPUs"),
    }
}

// ---------------------------------------------------------------------------------------------
// Quota

/// Quota findings: `families` maps a size (lower case) to its family from `az vm list-skus`;
/// `deployed` are the pools Terraform's state already has (their vCPUs are in `currentValue`).
pub fn check_quota(
    d: &Deployment,
    a: &AzureModel,
    families: &BTreeMap<String, String>,
    usage: &[Usage],
    deployed: &[DeployedPool],
) -> Vec<Finding> {
    let demands = az_model::pool_demands(a);
    let needs = az_model::quota_needs(&demands, |s| families.get(&s.to_ascii_lowercase()).cloned());
    let mut out = vec![];
    for need in &needs {
        let Some(u) = usage.iter().find(|u| u.name.value.eq_ignore_ascii_case(&need.quota)) else {
            out.push(
                Finding::new(
                    Level::Warning,
                    Check::Quota,
                    "azure.location",
                    format!("az vm list-usage reports no quota `{}` in {}: not checked", need.quota, a.location),
                )
                .help("check the quota in the portal (Subscriptions → Usage + quotas)"),
            );
            continue;
        };
        let pools: Vec<&PoolDemand> = need.pools.iter().filter_map(|n| demands.iter().find(|x| &x.pool == n)).collect();
        // vCPUs of this deployment's nodes already counted in currentValue (same pool, same size).
        let running: u64 = pools
            .iter()
            .filter_map(|p| {
                deployed
                    .iter()
                    .find(|x| x.name == p.pool && x.vm_size.eq_ignore_ascii_case(&p.vm_size) && x.spot == p.spot)
                    .map(|x| x.nodes.min(p.max_nodes) as u64 * p.vcpus as u64)
            })
            .sum();
        let free = (u.limit - u.current_value).max(0) as u64;
        let room = free + running;
        if need.max <= room {
            continue;
        }
        out.push(quota_problem(d, a, need, u, &pools, free, running));
    }
    out
}

fn quota_problem(
    d: &Deployment,
    a: &AzureModel,
    need: &QuotaNeed,
    u: &Usage,
    pools: &[&PoolDemand],
    free: u64,
    running: u64,
) -> Finding {
    let room = free + running;
    let parts: Vec<String> = pools
        .iter()
        .filter(|p| p.max_vcpus() > 0)
        .map(|p| format!("{} {} × {} vCPUs", p.pool, p.max_nodes, p.vcpus))
        .collect();
    let mut message = format!(
        "{} in {}: the deployment needs {} with every pool at its maximum ({})",
        quota_label(&need.quota),
        a.location,
        need.max,
        parts.join(" + ")
    );
    if running > 0 {
        message.push_str(&format!(
            ", {running} of them already running in this deployment, so {} more",
            need.max - running
        ));
    }
    message.push_str(&format!("; {free} free (limit {}, {} in use)", u.limit, u.current_value));
    if need.min <= room {
        message.push_str(&format!("; at the minimum node counts ({}) it fits", need.min));
    }
    let at_least = (u.current_value.max(0) as u64).saturating_sub(running) + need.max;
    let mut help = format!("request a quota increase for {} in {} to at least {at_least}", need.quota, a.location);
    // The pool whose maximum can give the most back, and how far to lower it.
    let lower = pools
        .iter()
        .filter(|p| p.group.is_some() && p.max_nodes > p.min_nodes)
        .max_by_key(|p| (p.max_nodes - p.min_nodes) as u64 * p.vcpus as u64)
        .copied();
    let mut field = pools
        .iter()
        .max_by_key(|p| p.max_vcpus())
        .map(|p| match group_path(d, p) {
            Some(g) if g.starts_with("cluster.workerGroups") => format!("{g}.maxReplicas"),
            Some(g) => format!("{g}.vmSize"),
            None => "azure.systemPool.count".to_string(),
        })
        .unwrap_or_else(|| "azure.location".into());
    if let Some(p) = lower {
        let others = need.max - p.max_vcpus();
        let nodes = room.saturating_sub(others) / p.vcpus.max(1) as u64;
        if others <= room && nodes >= p.min_nodes as u64 {
            let g = d.cluster.all_groups().find(|g| Some(&g.name) == p.group.as_ref());
            let per_node = g.and_then(|g| g.fit.as_ref()).map_or(1, |f| f.pods_per_node.max(1)) as u64;
            let path = group_path(d, p).unwrap_or_default();
            let replicas = nodes * per_node;
            field = format!("{path}.maxReplicas");
            help.push_str(&format!(", or lower {field} to {replicas}"));
            if let Some(g) = g
                && (g.replicas as u64) > replicas
            {
                help.push_str(&format!(" (and {path}.replicas to at most {replicas})"));
            }
        }
    }
    Finding::new(Level::Error, Check::Quota, field, message).help(help)
}

// ---------------------------------------------------------------------------------------------
// VM sizes

/// Why a size cannot serve a pool, if it cannot.
fn size_problem(sku: Option<&Sku>, location: &str, zones: &[String], spot: bool) -> Option<SizeProblem> {
    let Some(sku) = sku.filter(|s| s.offered_in(location)) else { return Some(SizeProblem::NotInRegion) };
    if sku.restricted_in(location) {
        return Some(SizeProblem::Restricted);
    }
    let have = sku.zones_in(location);
    let missing: Vec<String> = zones.iter().filter(|z| !have.contains(*z)).cloned().collect();
    if !missing.is_empty() {
        return Some(SizeProblem::Zones { missing, have: have.into_iter().collect() });
    }
    if spot && !sku.spot_capable() {
        return Some(SizeProblem::NoSpot);
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum SizeProblem {
    NotInRegion,
    Restricted,
    Zones { missing: Vec<String>, have: Vec<String> },
    NoSpot,
}

/// A built-in size of the same shape (same vCPUs, memory and GPUs), else the smallest larger one
/// with as many GPUs, that `region` offers for the same use; none without the region's list.
fn suggestion(size: &str, region: &[Sku], location: &str, zones: &[String], spot: bool) -> Option<String> {
    let shape = az_model::vm_shape(size)?;
    let model = |n: &str| az_model::VM_SIZES.iter().find(|v| v.0.eq_ignore_ascii_case(n)).map_or("", |v| v.4);
    let mut candidates: Vec<(&str, az_model::VmShape)> = az_model::VM_SIZES
        .iter()
        .filter(|v| !v.0.eq_ignore_ascii_case(size))
        .filter_map(|v| az_model::vm_shape(v.0).map(|s| (v.0, s)))
        .filter(|(_, s)| s.gpus == shape.gpus && s.vcpus >= shape.vcpus && s.memory_bytes >= shape.memory_bytes)
        .collect();
    candidates.sort_by_key(|(n, s)| (*s != shape, model(n) != model(size), s.vcpus, s.memory_bytes));
    candidates
        .into_iter()
        .map(|(n, _)| n)
        .find(|n| {
            let sku = region.iter().find(|s| s.name.eq_ignore_ascii_case(n));
            size_problem(sku, location, zones, spot).is_none()
        })
        .map(|n| {
            let s = az_model::vm_shape(n).expect("built-in size");
            let gpus = if s.gpus > 0 {
                format!(", {} GPU{}", s.gpus, if s.gpus == 1 { "" } else { "s" })
            } else {
                String::new()
            };
            let same = if s == shape { "same shape" } else { "the smallest larger size" };
            format!("{n} ({} vCPUs, {} GiB{gpus}: {same}, available)", s.vcpus, s.memory_bytes >> 30)
        })
}

/// Size findings: `skus` are the answers for the planned sizes (lower-case name → SKU), `region`
/// the whole region's list when read (for suggestions).
pub fn check_skus(
    d: &Deployment,
    a: &AzureModel,
    skus: &BTreeMap<String, Sku>,
    region: &[Sku],
    subscription: Option<&str>,
) -> Vec<Finding> {
    let mut out = vec![];
    let loc = &a.location;
    for p in az_model::pool_demands(a) {
        let sku = skus.get(&p.vm_size.to_ascii_lowercase());
        let Some(problem) = size_problem(sku, loc, &a.zones, p.spot) else { continue };
        let alt = suggestion(&p.vm_size, region, loc, &a.zones, p.spot);
        let field = size_field(d, &p);
        let size = &p.vm_size;
        let f = match problem {
            SizeProblem::NotInRegion => Finding::new(
                Level::Error,
                Check::Skus,
                field,
                format!("{size} ({}) is not offered in {loc} (SkuNotAvailable)", who(&p)),
            )
            .help(alt.map_or_else(
                || "pick a size az vm list-skus lists in the region, or another region".into(),
                |s| format!("use {s}"),
            )),
            SizeProblem::Restricted => Finding::new(
                Level::Error,
                Check::Skus,
                field,
                format!(
                    "{size} ({}) is not available to subscription {} in {loc} ({NOT_FOR_SUBSCRIPTION})",
                    who(&p),
                    subscription.unwrap_or("in use")
                ),
            )
            .help(match alt {
                Some(s) => format!("use {s}, or ask Azure support to enable {size} in {loc} for the subscription"),
                None => format!("ask Azure support to enable {size} in {loc} for the subscription"),
            }),
            SizeProblem::Zones { missing, have } => Finding::new(
                Level::Error,
                Check::Skus,
                field,
                format!(
                    "{size} ({}) is not offered in zone{} {} of {loc} (azure.zones: {}; it is offered in {})",
                    who(&p),
                    if missing.len() == 1 { "" } else { "s" },
                    missing.join(", "),
                    a.zones.join(", "),
                    if have.is_empty() { "no zone".to_string() } else { format!("zones {}", have.join(", ")) }
                ),
            )
            .help(match alt {
                Some(s) => format!("use {s}, or set azure.zones to zones it is offered in"),
                None => "set azure.zones to zones it is offered in".to_string(),
            }),
            SizeProblem::NoSpot => Finding::new(
                Level::Error,
                Check::Skus,
                group_path(d, &p).map_or_else(|| "azure.systemPool.vmSize".into(), |g| format!("{g}.spot")),
                format!("{size} ({}) is not offered as Spot in {loc} (LowPriorityCapable is not True)", who(&p)),
            )
            .help(match alt {
                Some(s) => format!("use {s}, or set spot: false"),
                None => "set spot: false".to_string(),
            }),
        };
        out.push(f);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Kubernetes version

fn version_list(v: &Versions) -> String {
    let mut offered: Vec<&KubeVersion> = v.values.iter().filter(|x| x.minor().is_some()).collect();
    offered.sort_by_key(|x| x.minor());
    offered
        .iter()
        .map(|x| {
            let mut s = x.version.clone();
            if x.preview() {
                s.push_str(" (preview)");
            } else if !x.standard() {
                s.push_str(" (long-term support only)");
            }
            s
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Version findings, and the version chosen for a spec without one.
pub fn check_versions(a: &AzureModel, v: &Versions) -> (Vec<Finding>, Option<String>) {
    let loc = &a.location;
    let field = "azure.kubernetesVersion";
    let mut usable: Vec<&KubeVersion> =
        v.values.iter().filter(|x| !x.preview() && x.standard() && x.minor().is_some()).collect();
    usable.sort_by_key(|x| x.minor());
    let newest = usable.last().map(|x| x.version.clone());
    let Some(want) = &a.kubernetes_version else {
        return match newest {
            Some(n) => (
                vec![Finding::new(
                    Level::Info,
                    Check::Versions,
                    field,
                    format!(
                        "not set: a new cluster gets Kubernetes {n}, the newest AKS offers in {loc} outside preview (an existing cluster keeps its version)"
                    ),
                )
                .help(format!("pin it with kubernetesVersion: \"{n}\""))],
                Some(n),
            ),
            None => (
                vec![Finding::new(
                    Level::Error,
                    Check::Versions,
                    field,
                    format!("AKS offers no Kubernetes version in {loc} outside preview (offered: {})", version_list(v)),
                )],
                None,
            ),
        };
    };
    let minor = az_model::k8s_minor(want);
    let suggest = newest
        .as_ref()
        .map_or_else(String::new, |n| format!("use kubernetesVersion: \"{n}\" (the newest), or leave it out"));
    let Some(entry) = v.values.iter().find(|x| x.minor().is_some() && x.minor() == minor) else {
        return (
            vec![
                Finding::new(
                    Level::Error,
                    Check::Versions,
                    field,
                    format!("Kubernetes {want} is not offered by AKS in {loc} (offered: {})", version_list(v)),
                )
                .help(suggest),
            ],
            None,
        );
    };
    let mut out = vec![];
    if want.split('.').count() > 2 && !entry.patch_versions.contains_key(want.trim_start_matches('v')) {
        let patches: Vec<&String> = entry.patch_versions.keys().collect();
        out.push(
            Finding::new(
                Level::Error,
                Check::Versions,
                field,
                format!(
                    "patch {want} is not offered by AKS in {loc} (offered {} patches: {})",
                    entry.version,
                    patches.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )
            .help(format!("use kubernetesVersion: \"{}\" for its newest patch", entry.version)),
        );
    }
    if entry.preview() {
        out.push(
            Finding::new(
                Level::Error,
                Check::Versions,
                field,
                format!("Kubernetes {want} is offered by AKS in {loc} only in preview"),
            )
            .help(suggest.clone()),
        );
    } else if !entry.standard() {
        out.push(
            Finding::new(
                Level::Error,
                Check::Versions,
                field,
                format!(
                    "Kubernetes {want} is out of standard support in {loc}: AKS offers it only with long-term support (Premium tier)"
                ),
            )
            .help(suggest.clone()),
        );
    } else if usable.len() > 1 && usable.first().is_some_and(|o| o.minor() == minor) {
        // The answer carries no dates: the oldest minor in standard support is the next to leave
        // it, when AKS releases its next minor.
        out.push(
            Finding::new(
                Level::Warning,
                Check::Versions,
                field,
                format!(
                    "Kubernetes {want} is the oldest version AKS offers in standard support in {loc}: it leaves standard support with the next Kubernetes release on AKS"
                ),
            )
            .help(suggest),
        );
    }
    (out, None)
}

// ---------------------------------------------------------------------------------------------
// The reads

/// `az` with the subscription, JSON out, retried as a read.
fn az_read<const N: usize>(subscription: Option<&str>, args: [&str; N]) -> Cmd {
    let mut c = Cmd::new("az").args(args).args(["--output", "json", "--only-show-errors"]);
    if let Some(s) = subscription {
        c = c.arg("--subscription").arg(s);
    }
    c.timeout(T_READ).idempotent(READ_ATTEMPTS).quiet()
}

pub fn list_usage(location: &str, subscription: Option<&str>) -> Cmd {
    az_read(subscription, ["vm", "list-usage", "--location", location])
}

pub fn list_skus(location: &str, size: Option<&str>, subscription: Option<&str>) -> Cmd {
    let c = az_read(
        subscription,
        ["vm", "list-skus", "--location", location, "--resource-type", "virtualMachines", "--all"],
    );
    match size {
        Some(s) => c.args(["--size", s]),
        None => c,
    }
}

pub fn get_versions(location: &str, subscription: Option<&str>) -> Cmd {
    az_read(subscription, ["aks", "get-versions", "--location", location])
}

/// The commands `--dry-run` shows.
pub fn preview(a: &AzureModel, skip: &BTreeSet<Check>) -> Vec<String> {
    let mut v = vec![];
    if !skip.contains(&Check::Quota) || !skip.contains(&Check::Skus) {
        for size in sizes(a) {
            v.push(format!("{}   # family, region, zones, Spot", list_skus(&a.location, Some(&size), None).display()));
        }
    }
    if !skip.contains(&Check::Quota) {
        v.push(format!("{}   # free vCPUs per family, Spot and regional", list_usage(&a.location, None).display()));
    }
    if !skip.contains(&Check::Versions) {
        v.push(format!("{}   # the Kubernetes version is offered", get_versions(&a.location, None).display()));
    }
    v
}

fn sizes(a: &AzureModel) -> Vec<String> {
    let mut seen = BTreeSet::new();
    az_model::pool_demands(a).into_iter().map(|p| p.vm_size).filter(|s| seen.insert(s.to_ascii_lowercase())).collect()
}

fn read_json<T: serde::de::DeserializeOwned>(r: &Runner, cmd: &Cmd) -> Result<T> {
    let o = r.run(cmd)?;
    serde_json::from_str(&o.stdout)
        .with_context(|| format!("{} printed something that is not the expected JSON", cmd.display()))
}

fn unreadable(check: Check, e: &anyhow::Error) -> Finding {
    Finding::new(Level::Error, check, "azure.location", format!("cannot check {}: {e:#}", check.what())).help(format!(
        "fix the access (az login, a Reader role on the subscription), or deploy with --skip-preflight={} to go without this check",
        check.as_str()
    ))
}

/// Runs the reads (at once) and evaluates them. `deployed` reads Terraform's state; it is asked
/// only when the quota does not fit as if nothing were deployed.
pub fn run(
    d: &Deployment,
    r: &Runner,
    subscription: Option<&str>,
    skip: &BTreeSet<Check>,
    deployed: impl FnOnce() -> Result<Vec<DeployedPool>>,
) -> Outcome {
    let Some(a) = d.azure.as_ref() else { return Outcome::default() };
    let loc = a.location.as_str();
    let want_quota = !skip.contains(&Check::Quota);
    let want_skus = !skip.contains(&Check::Skus);
    let want_versions = !skip.contains(&Check::Versions);
    let (usage, skus, versions) = std::thread::scope(|scope| {
        let usage = want_quota.then(|| scope.spawn(|| read_json::<Vec<Usage>>(r, &list_usage(loc, subscription))));
        let versions =
            want_versions.then(|| scope.spawn(|| read_json::<Versions>(r, &get_versions(loc, subscription))));
        let skus: Vec<_> = if want_quota || want_skus {
            sizes(a)
                .into_iter()
                .map(|size| {
                    scope.spawn(move || {
                        read_json::<Vec<Sku>>(r, &list_skus(loc, Some(&size), subscription)).map(|l| (size, l))
                    })
                })
                .collect()
        } else {
            vec![]
        };
        fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
            h.join().expect("preflight read thread")
        }
        (usage.map(join), skus.into_iter().map(join).collect::<Vec<Result<(String, Vec<Sku>)>>>(), versions.map(join))
    });
    let mut out = Outcome::default();

    // Exact names only: `--size` matches part of a name.
    let mut by_name: BTreeMap<String, Sku> = BTreeMap::new();
    let mut sku_error = None;
    for res in skus {
        match res {
            Ok((size, list)) => {
                if let Some(s) = list.into_iter().find(|s| {
                    s.name.eq_ignore_ascii_case(&size) && s.resource_type.eq_ignore_ascii_case("virtualMachines")
                }) {
                    by_name.insert(size.to_ascii_lowercase(), s);
                }
            }
            Err(e) => sku_error = Some(e),
        }
    }
    if let Some(e) = &sku_error {
        out.findings.push(unreadable(Check::Skus, e));
    } else if want_skus {
        let mut found = check_skus(d, a, &by_name, &[], subscription);
        if !found.is_empty() {
            // Read the whole region once to suggest sizes that are available.
            match read_json::<Vec<Sku>>(r, &list_skus(loc, None, subscription)) {
                Ok(region) => found = check_skus(d, a, &by_name, &region, subscription),
                Err(e) => r.info(&format!("cannot list the region's VM sizes for suggestions: {e:#}")),
            }
        }
        out.findings.extend(found);
    }

    if let Some(usage) = usage {
        match (usage, &sku_error) {
            (Err(e), _) => out.findings.push(unreadable(Check::Quota, &e)),
            (Ok(_), Some(_)) => {}
            (Ok(usage), None) => {
                let families: BTreeMap<String, String> =
                    by_name.iter().filter_map(|(k, s)| s.family.clone().map(|f| (k.clone(), f))).collect();
                let mut found = check_quota(d, a, &families, &usage, &[]);
                if found.iter().any(|f| f.level == Level::Error) {
                    match deployed() {
                        Ok(pools) if !pools.is_empty() => found = check_quota(d, a, &families, &usage, &pools),
                        Ok(_) => {}
                        Err(e) => r.info(&format!(
                            "cannot read Terraform's state for the nodes already deployed (counting every pool as new): {e:#}"
                        )),
                    }
                }
                out.findings.extend(found);
            }
        }
    }

    if let Some(versions) = versions {
        match versions {
            Ok(v) => {
                let (found, chosen) = check_versions(a, &v);
                out.findings.extend(found);
                out.kubernetes_version = chosen;
            }
            Err(e) => out.findings.push(unreadable(Check::Versions, &e)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(spec: &str) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raydeploy.yaml");
        std::fs::write(&path, spec).unwrap();
        let loaded = crate::spec::load(&path, None, &|_| None).unwrap_or_else(|r| panic!("{}", r.short()));
        crate::model::build(&loaded, None).unwrap_or_else(|p| panic!("{}", loaded.report(p).short()))
    }

    const SPEC: &str = r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: pf
azure:
  location: westeurope
  zones: ["1", "2"]
cluster:
  head: { vmSize: Standard_D8s_v5 }
  workerGroups:
    - { name: cpu, vmSize: Standard_D8s_v5, replicas: 1, minReplicas: 1, maxReplicas: 3 }
    - { name: gpu, vmSize: Standard_NC8as_T4_v3, gpus: 1, replicas: 0, maxReplicas: 4 }
    - { name: spot, vmSize: Standard_NC4as_T4_v3, gpus: 1, replicas: 0, maxReplicas: 2, spot: true }
"#;

    fn usage(name: &str, current: i64, limit: i64) -> Usage {
        Usage { current_value: current, limit, name: UsageName { value: name.into(), localized_value: String::new() } }
    }

    fn sku(name: &str, family: &str, zones: &[&str], spot: bool) -> Sku {
        Sku {
            name: name.into(),
            resource_type: "virtualMachines".into(),
            family: Some(family.into()),
            locations: vec!["westeurope".into()],
            location_info: vec![LocationInfo {
                location: "westeurope".into(),
                zones: zones.iter().map(|z| z.to_string()).collect(),
            }],
            capabilities: vec![Capability {
                name: "LowPriorityCapable".into(),
                value: if spot { "True" } else { "False" }.into(),
            }],
            restrictions: vec![],
        }
    }

    fn families() -> BTreeMap<String, String> {
        [
            ("standard_d2s_v5", "standardDSv5Family"),
            ("standard_d8s_v5", "standardDSv5Family"),
            ("standard_nc8as_t4_v3", "standardNCASv3_T4Family"),
            ("standard_nc4as_t4_v3", "standardNCASv3_T4Family"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    #[test]
    fn quota_names_family_numbers_and_the_fix() {
        let d = model(SPEC);
        let a = d.azure.as_ref().unwrap();
        // DSv5: system 2 + head 8 + cpu 3×8 = 34; T4: gpu 4×8 = 32; Spot: 2×4 = 8; cores 66.
        let u = [
            usage("standardDSv5Family", 0, 100),
            usage("standardNCASv3_T4Family", 8, 24),
            usage("lowPriorityCores", 0, 100),
            usage("cores", 0, 200),
        ];
        let f = check_quota(&d, a, &families(), &u, &[]);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].field, "cluster.workerGroups[1].maxReplicas");
        assert!(
            f[0].message.contains("standardNCASv3_T4Family vCPUs in westeurope: the deployment needs 32"),
            "{}",
            f[0].message
        );
        assert!(f[0].message.contains("16 free (limit 24, 8 in use)"), "{}", f[0].message);
        assert!(f[0].message.contains("at the minimum node counts (0) it fits"), "{}", f[0].message);
        let help = f[0].help.as_deref().unwrap();
        assert!(
            help.contains("request a quota increase for standardNCASv3_T4Family in westeurope to at least 40"),
            "{help}"
        );
        assert!(help.contains("or lower cluster.workerGroups[1].maxReplicas to 2"), "{help}");

        // Already deployed: 2 gpu nodes run (16 of the 8 in use are ours... here 8 in use = 1 node).
        let deployed =
            [DeployedPool { name: "gpu".into(), vm_size: "Standard_NC8as_T4_v3".into(), nodes: 1, spot: false }];
        let f = check_quota(&d, a, &families(), &u, &deployed);
        assert!(f[0].message.contains("8 of them already running in this deployment, so 24 more"), "{}", f[0].message);
        assert!(f[0].help.as_deref().unwrap().contains("lower cluster.workerGroups[1].maxReplicas to 3"), "{f:?}");

        // Spot and regional totals.
        let u = [
            usage("standardDSv5Family", 0, 100),
            usage("standardNCASv3_T4Family", 0, 100),
            usage("lowPriorityCores", 0, 4),
            usage("cores", 30, 80),
        ];
        let f = check_quota(&d, a, &families(), &u, &[]);
        assert_eq!(f.len(), 2, "{f:#?}");
        assert_eq!(f[0].field, "cluster.workerGroups[2].maxReplicas");
        assert!(
            f[0].message.starts_with("lowPriorityCores (Spot vCPUs) in westeurope: the deployment needs 8"),
            "{}",
            f[0].message
        );
        assert!(f[0].help.as_deref().unwrap().contains("lower cluster.workerGroups[2].maxReplicas to 1"));
        assert!(
            f[1].message.starts_with("cores (total regional vCPUs) in westeurope: the deployment needs 66"),
            "{}",
            f[1].message
        );
        assert!(f[1].message.contains("50 free (limit 80, 30 in use)"), "{}", f[1].message);
        assert!(f[1].help.as_deref().unwrap().contains("lower cluster.workerGroups[1].maxReplicas to 2"), "{f:?}");

        // Everything fits.
        let u = [
            usage("standardDSv5Family", 0, 100),
            usage("standardNCASv3_T4Family", 0, 100),
            usage("lowPriorityCores", 0, 100),
            usage("cores", 0, 100),
        ];
        assert!(check_quota(&d, a, &families(), &u, &[]).is_empty());
    }

    #[test]
    fn sizes_region_subscription_zones_and_spot() {
        let d = model(SPEC);
        let a = d.azure.as_ref().unwrap();
        let good = |n: &str, f: &str| sku(n, f, &["1", "2", "3"], true);
        let mut skus: BTreeMap<String, Sku> = [
            good("Standard_D2s_v5", "standardDSv5Family"),
            good("Standard_D8s_v5", "standardDSv5Family"),
            good("Standard_NC8as_T4_v3", "standardNCASv3_T4Family"),
            good("Standard_NC4as_T4_v3", "standardNCASv3_T4Family"),
        ]
        .into_iter()
        .map(|s| (s.name.to_ascii_lowercase(), s))
        .collect();
        assert!(check_skus(&d, a, &skus, &[], None).is_empty());

        // Not in the region; a region list offers the next T4 size.
        skus.remove("standard_nc8as_t4_v3");
        let region = vec![good("Standard_NC16as_T4_v3", "standardNCASv3_T4Family")];
        let f = check_skus(&d, a, &skus, &region, None);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].field, "cluster.workerGroups[1].vmSize");
        assert!(
            f[0].message.contains("Standard_NC8as_T4_v3 (group `gpu`, pool gpu) is not offered in westeurope"),
            "{}",
            f[0].message
        );
        assert!(
            f[0].help.as_deref().unwrap().starts_with("use Standard_NC16as_T4_v3 (16 vCPUs, 110 GiB, 1 GPU"),
            "{f:?}"
        );

        // Restricted for the subscription.
        let mut s = good("Standard_NC8as_T4_v3", "standardNCASv3_T4Family");
        s.restrictions.push(Restriction {
            kind: "Location".into(),
            reason_code: NOT_FOR_SUBSCRIPTION.into(),
            values: vec!["westeurope".into()],
            restriction_info: RestrictionInfo { locations: vec!["westeurope".into()], zones: vec![] },
        });
        skus.insert("standard_nc8as_t4_v3".into(), s);
        let f = check_skus(&d, a, &skus, &[], Some("sub-1"));
        assert!(
            f[0].message.contains("not available to subscription sub-1 in westeurope (NotAvailableForSubscription)"),
            "{f:?}"
        );

        // A zone without the size (offered in 1 and 3, zone 2 asked); a zone restriction counts too.
        skus.insert(
            "standard_nc8as_t4_v3".into(),
            sku("Standard_NC8as_T4_v3", "standardNCASv3_T4Family", &["1", "3"], true),
        );
        let mut d8 = good("Standard_D8s_v5", "standardDSv5Family");
        d8.restrictions.push(Restriction {
            kind: "Zone".into(),
            reason_code: NOT_FOR_SUBSCRIPTION.into(),
            values: vec!["westeurope".into()],
            restriction_info: RestrictionInfo { locations: vec!["westeurope".into()], zones: vec!["1".into()] },
        });
        skus.insert("standard_d8s_v5".into(), d8);
        let f = check_skus(&d, a, &skus, &[], None);
        let fields: Vec<&str> = f.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["cluster.head.vmSize", "cluster.workerGroups[0].vmSize", "cluster.workerGroups[1].vmSize"]);
        assert!(
            f[2].message
                .contains("is not offered in zone 2 of westeurope (azure.zones: 1, 2; it is offered in zones 1, 3)"),
            "{}",
            f[2].message
        );
        assert!(f[0].message.contains("not offered in zone 1"), "{}", f[0].message);

        // Spot.
        skus.insert("standard_d8s_v5".into(), good("Standard_D8s_v5", "standardDSv5Family"));
        skus.insert("standard_nc8as_t4_v3".into(), good("Standard_NC8as_T4_v3", "standardNCASv3_T4Family"));
        skus.insert(
            "standard_nc4as_t4_v3".into(),
            sku("Standard_NC4as_T4_v3", "standardNCASv3_T4Family", &["1", "2"], false),
        );
        let f = check_skus(&d, a, &skus, &[], None);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].field, "cluster.workerGroups[2].spot");
        assert!(f[0].message.contains("is not offered as Spot in westeurope"), "{}", f[0].message);
    }

    fn versions(json: &str) -> Versions {
        serde_json::from_str(json).unwrap()
    }

    const VERSIONS: &str = r#"{"values": [
        {"version": "1.32", "isPreview": null, "capabilities": {"supportPlan": ["KubernetesOfficial", "AKSLongTermSupport"]},
         "patchVersions": {"1.32.6": {"upgrades": ["1.33.2"]}}},
        {"version": "1.33", "isPreview": null, "capabilities": {"supportPlan": ["KubernetesOfficial"]},
         "patchVersions": {"1.33.2": {"upgrades": ["1.34.1"]}}},
        {"version": "1.34", "capabilities": {"supportPlan": ["KubernetesOfficial"]}, "patchVersions": {"1.34.1": {"upgrades": []}}},
        {"version": "1.35", "isPreview": true, "capabilities": {"supportPlan": ["KubernetesOfficial"]}, "patchVersions": {}},
        {"version": "1.29", "capabilities": {"supportPlan": ["AKSLongTermSupport"]}, "patchVersions": {}}
    ]}"#;

    #[test]
    fn versions_offered_preview_lts_only_and_default() {
        let d = model(SPEC);
        let mut a = d.azure.clone().unwrap();
        let v = versions(VERSIONS);
        let (f, chosen) = check_versions(&a, &v);
        assert_eq!(chosen.as_deref(), Some("1.34"), "newest outside preview");
        assert_eq!(f[0].level, Level::Info);
        assert!(f[0].message.contains("a new cluster gets Kubernetes 1.34"), "{f:?}");

        for (want, level, text) in [
            (
                "1.30",
                Some(Level::Error),
                "Kubernetes 1.30 is not offered by AKS in westeurope (offered: 1.29 (long-term support only), 1.32, 1.33, 1.34, 1.35 (preview))",
            ),
            ("1.35", Some(Level::Error), "only in preview"),
            ("1.29", Some(Level::Error), "out of standard support"),
            ("1.32", Some(Level::Warning), "oldest version AKS offers in standard support"),
            (
                "1.33.9",
                Some(Level::Error),
                "patch 1.33.9 is not offered by AKS in westeurope (offered 1.33 patches: 1.33.2)",
            ),
            ("1.33.2", None, ""),
            ("1.34", None, ""),
        ] {
            a.kubernetes_version = Some(want.into());
            let (f, chosen) = check_versions(&a, &v);
            assert!(chosen.is_none());
            match level {
                None => assert!(f.is_empty(), "{want}: {f:?}"),
                Some(l) => {
                    assert_eq!(f.len(), 1, "{want}: {f:?}");
                    assert_eq!(f[0].level, l, "{want}");
                    assert_eq!(f[0].field, "azure.kubernetesVersion");
                    assert!(f[0].message.contains(text), "{want}: {}", f[0].message);
                }
            }
        }
    }

    #[test]
    fn answers_parse_with_the_nulls_azure_writes() {
        let skus: Vec<Sku> = serde_json::from_str(
            r#"[{"resourceType": "virtualMachines", "name": "Standard_NC4as_T4_v3", "tier": "Standard",
                "size": "NC4as_T4_v3", "family": "standardNCASv3_T4Family", "locations": ["westeurope"],
                "locationInfo": [{"location": "westeurope", "zones": ["2", "1"], "zoneDetails": []}],
                "capabilities": [{"name": "vCPUs", "value": "4"}, {"name": "LowPriorityCapable", "value": "True"}],
                "restrictions": [{"type": "Location", "values": ["westeurope"],
                  "restrictionInfo": {"locations": ["westeurope"], "zones": null},
                  "reasonCode": "NotAvailableForSubscription"}],
                "apiVersions": null, "costs": null, "kind": null}]"#,
        )
        .unwrap();
        assert!(skus[0].restricted_in("WestEurope"));
        assert_eq!(skus[0].zones_in("westeurope"), BTreeSet::from(["1".to_string(), "2".to_string()]));
        assert!(skus[0].spot_capable());
        let usage: Vec<Usage> = serde_json::from_str(
            r#"[{"currentValue": 8, "limit": 24, "localName": "Standard NCASv3_T4 Family vCPUs",
                 "name": {"localizedValue": "Standard NCASv3_T4 Family vCPUs", "value": "standardNCASv3_T4Family"},
                 "unit": "Count"}]"#,
        )
        .unwrap();
        assert_eq!(
            (usage[0].name.value.as_str(), usage[0].current_value, usage[0].limit),
            ("standardNCASv3_T4Family", 8, 24)
        );
        let v = versions(
            r#"{"values": [{"version": "1.33", "isPreview": null, "capabilities": {"supportPlan": null}, "patchVersions": null}]}"#,
        );
        assert!(v.values[0].standard() && !v.values[0].preview());
    }

    #[test]
    fn terraform_state_pools() {
        let state = serde_json::json!({"format_version": "1.0", "values": {"root_module": {"resources": [
            {"address": "azurerm_kubernetes_cluster.this", "type": "azurerm_kubernetes_cluster",
             "values": {"name": "aks-x", "default_node_pool": [{"name": "system", "vm_size": "Standard_D2s_v5", "node_count": 1}]}},
            {"address": "azurerm_kubernetes_cluster_node_pool.gpu", "type": "azurerm_kubernetes_cluster_node_pool",
             "values": {"name": "gpu", "vm_size": "Standard_NC8as_T4_v3", "node_count": 2, "priority": "Spot"}},
            {"address": "azurerm_resource_group.this", "type": "azurerm_resource_group", "values": {"name": "rg"}}
        ]}}});
        assert_eq!(
            deployed_pools(&state),
            [
                DeployedPool { name: "system".into(), vm_size: "Standard_D2s_v5".into(), nodes: 1, spot: false },
                DeployedPool { name: "gpu".into(), vm_size: "Standard_NC8as_T4_v3".into(), nodes: 2, spot: true },
            ]
        );
        assert!(deployed_pools(&serde_json::json!({"format_version": "1.0"})).is_empty());
    }
}
