//! Azure facts the fit check needs: a table of VM sizes and the AKS allocatable formula
//! (node-resource-reservations, AKS 1.29+ and earlier), and the parts of the Azure preflight
//! ([`Check`]) that `--skip-preflight` can leave out.

use crate::spec::quantity::{GI, MI};
use crate::spec::{NetworkMode, NetworkPlugin};

/// vCPUs, memory and GPUs of a VM size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct VmShape {
    pub vcpus: u32,
    pub memory_bytes: u64,
    pub gpus: u32,
}

/// Built-in VM sizes: (name, vCPUs, memory GiB, GPUs, GPU model).
pub const VM_SIZES: &[(&str, u32, u64, u32, &str)] = &[
    ("Standard_D2s_v5", 2, 8, 0, ""),
    ("Standard_D4s_v5", 4, 16, 0, ""),
    ("Standard_D8s_v5", 8, 32, 0, ""),
    ("Standard_D16s_v5", 16, 64, 0, ""),
    ("Standard_D32s_v5", 32, 128, 0, ""),
    ("Standard_D48s_v5", 48, 192, 0, ""),
    ("Standard_D64s_v5", 64, 256, 0, ""),
    ("Standard_D96s_v5", 96, 384, 0, ""),
    ("Standard_D2ds_v5", 2, 8, 0, ""),
    ("Standard_D4ds_v5", 4, 16, 0, ""),
    ("Standard_D8ds_v5", 8, 32, 0, ""),
    ("Standard_D16ds_v5", 16, 64, 0, ""),
    ("Standard_D32ds_v5", 32, 128, 0, ""),
    ("Standard_D48ds_v5", 48, 192, 0, ""),
    ("Standard_D64ds_v5", 64, 256, 0, ""),
    ("Standard_D96ds_v5", 96, 384, 0, ""),
    ("Standard_E2s_v5", 2, 16, 0, ""),
    ("Standard_E4s_v5", 4, 32, 0, ""),
    ("Standard_E8s_v5", 8, 64, 0, ""),
    ("Standard_E16s_v5", 16, 128, 0, ""),
    ("Standard_E20s_v5", 20, 160, 0, ""),
    ("Standard_E32s_v5", 32, 256, 0, ""),
    ("Standard_E48s_v5", 48, 384, 0, ""),
    ("Standard_E64s_v5", 64, 512, 0, ""),
    ("Standard_E96s_v5", 96, 672, 0, ""),
    ("Standard_E104is_v5", 104, 672, 0, ""),
    ("Standard_F2s_v2", 2, 4, 0, ""),
    ("Standard_F4s_v2", 4, 8, 0, ""),
    ("Standard_F8s_v2", 8, 16, 0, ""),
    ("Standard_F16s_v2", 16, 32, 0, ""),
    ("Standard_F32s_v2", 32, 64, 0, ""),
    ("Standard_F48s_v2", 48, 96, 0, ""),
    ("Standard_F64s_v2", 64, 128, 0, ""),
    ("Standard_F72s_v2", 72, 144, 0, ""),
    ("Standard_NC4as_T4_v3", 4, 28, 1, "T4"),
    ("Standard_NC8as_T4_v3", 8, 56, 1, "T4"),
    ("Standard_NC16as_T4_v3", 16, 110, 1, "T4"),
    ("Standard_NC64as_T4_v3", 64, 440, 4, "T4"),
    ("Standard_NC24ads_A100_v4", 24, 220, 1, "A100"),
    ("Standard_NC48ads_A100_v4", 48, 440, 2, "A100"),
    ("Standard_NC96ads_A100_v4", 96, 880, 4, "A100"),
    ("Standard_NC40ads_H100_v5", 40, 320, 1, "H100"),
    ("Standard_NC80adis_H100_v5", 80, 640, 2, "H100"),
    ("Standard_ND96asr_v4", 96, 900, 8, "A100"),
];

/// Looks a VM size up (case-insensitive, as Azure treats them).
pub fn vm_shape(name: &str) -> Option<VmShape> {
    VM_SIZES.iter().find(|v| v.0.eq_ignore_ascii_case(name)).map(|v| VmShape {
        vcpus: v.1,
        memory_bytes: v.2 * GI,
        gpus: v.3,
    })
}

/// VM sizes of the same family (same prefix letters and suffix, e.g. `Standard_D*s_v5`), by size.
pub fn same_family(name: &str) -> Vec<&'static str> {
    let fam = family(name);
    VM_SIZES.iter().filter(|v| family(v.0) == fam).map(|v| v.0).collect()
}

fn family(name: &str) -> String {
    // Standard_D8s_v5 → "Standard_D#s_v5"
    let mut out = String::new();
    let mut in_digits = false;
    for c in name.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    out
}

/// `az vm list-usage` name of the regional vCPU quota every regular (non-Spot) VM counts against.
pub const REGIONAL_QUOTA: &str = "cores";
/// `az vm list-usage` name of the regional Spot (low-priority) vCPU quota, whatever the family.
pub const SPOT_QUOTA: &str = "lowPriorityCores";

/// The vCPU quota family of the built-in sizes, as `az vm list-skus` reports it (`family`) and
/// `az vm list-usage` names it. For `explain`, offline, only: a deploy asks Azure for each
/// size's family. Azure is not consistent about the case of the first letter; compare
/// case-insensitively.
const QUOTA_FAMILIES: &[(&str, &[&str])] = &[
    (
        "standardDSv5Family",
        &[
            "Standard_D2s_v5",
            "Standard_D4s_v5",
            "Standard_D8s_v5",
            "Standard_D16s_v5",
            "Standard_D32s_v5",
            "Standard_D48s_v5",
            "Standard_D64s_v5",
            "Standard_D96s_v5",
        ],
    ),
    (
        "standardDDSv5Family",
        &[
            "Standard_D2ds_v5",
            "Standard_D4ds_v5",
            "Standard_D8ds_v5",
            "Standard_D16ds_v5",
            "Standard_D32ds_v5",
            "Standard_D48ds_v5",
            "Standard_D64ds_v5",
            "Standard_D96ds_v5",
        ],
    ),
    (
        "standardESv5Family",
        &[
            "Standard_E2s_v5",
            "Standard_E4s_v5",
            "Standard_E8s_v5",
            "Standard_E16s_v5",
            "Standard_E20s_v5",
            "Standard_E32s_v5",
            "Standard_E48s_v5",
            "Standard_E64s_v5",
            "Standard_E96s_v5",
        ],
    ),
    ("standardEISv5Family", &["Standard_E104is_v5"]),
    (
        "standardFSv2Family",
        &[
            "Standard_F2s_v2",
            "Standard_F4s_v2",
            "Standard_F8s_v2",
            "Standard_F16s_v2",
            "Standard_F32s_v2",
            "Standard_F48s_v2",
            "Standard_F64s_v2",
            "Standard_F72s_v2",
        ],
    ),
    (
        "standardNCASv3_T4Family",
        &["Standard_NC4as_T4_v3", "Standard_NC8as_T4_v3", "Standard_NC16as_T4_v3", "Standard_NC64as_T4_v3"],
    ),
    (
        "StandardNCADSA100v4Family",
        &["Standard_NC24ads_A100_v4", "Standard_NC48ads_A100_v4", "Standard_NC96ads_A100_v4"],
    ),
    ("StandardNCadsH100v5Family", &["Standard_NC40ads_H100_v5", "Standard_NC80adis_H100_v5"]),
    ("standardNDASv4_A100Family", &["Standard_ND96asr_v4"]),
];

/// The quota family of a built-in size (offline table; see [`QUOTA_FAMILIES`]).
pub fn quota_family(size: &str) -> Option<&'static str> {
    QUOTA_FAMILIES.iter().find(|(_, sizes)| sizes.iter().any(|s| s.eq_ignore_ascii_case(size))).map(|(f, _)| *f)
}

/// What one node pool can take of the subscription's vCPU quota.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolDemand {
    pub pool: String,
    /// The Ray group on the pool (none for the system pool).
    pub group: Option<String>,
    pub vm_size: String,
    pub vcpus: u32,
    pub min_nodes: u32,
    /// Nodes at creation (`node_count`).
    pub initial_nodes: u32,
    pub max_nodes: u32,
    pub spot: bool,
}

impl PoolDemand {
    pub fn min_vcpus(&self) -> u64 {
        self.min_nodes as u64 * self.vcpus as u64
    }
    pub fn max_vcpus(&self) -> u64 {
        self.max_nodes as u64 * self.vcpus as u64
    }
}

/// Every pool of the cluster, the system pool first.
pub fn pool_demands(a: &crate::model::AzureModel) -> Vec<PoolDemand> {
    std::iter::once(&a.system_pool)
        .chain(&a.ray_pools)
        .map(|p| PoolDemand {
            pool: p.name.clone(),
            group: p.group.clone(),
            vm_size: p.vm_size.clone(),
            vcpus: p.vm.vcpus,
            min_nodes: p.min_count,
            initial_nodes: p.node_count,
            max_nodes: p.max_count,
            spot: p.spot,
        })
        .collect()
}

/// The vCPUs one quota (an `az vm list-usage` name) must have room for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QuotaNeed {
    /// A family (`standardDSv5Family`), [`SPOT_QUOTA`] or [`REGIONAL_QUOTA`].
    pub quota: String,
    /// With every pool at its minimum node count.
    pub min: u64,
    /// With every pool at its maximum node count (what the autoscaler can reach).
    pub max: u64,
    /// Pools counting against it.
    pub pools: Vec<String>,
}

/// Per quota, the vCPUs the pools need: each regular pool against its family (`family` gives a
/// size's family, `None` when unknown: the pool then counts only against the regional total),
/// Spot pools against [`SPOT_QUOTA`] instead, and every regular pool against [`REGIONAL_QUOTA`]
/// (Spot vCPUs have their own regional quota). Families first (by name), then Spot, then the
/// regional total.
pub fn quota_needs(demands: &[PoolDemand], family: impl Fn(&str) -> Option<String>) -> Vec<QuotaNeed> {
    let mut by: std::collections::BTreeMap<String, QuotaNeed> = Default::default();
    let mut add = |quota: &str, d: &PoolDemand| {
        let key = quota.to_ascii_lowercase();
        let n = by.entry(key).or_insert_with(|| QuotaNeed { quota: quota.to_string(), min: 0, max: 0, pools: vec![] });
        n.min += d.min_vcpus();
        n.max += d.max_vcpus();
        n.pools.push(d.pool.clone());
    };
    let mut spot = vec![];
    let mut regular = vec![];
    for d in demands {
        if d.spot {
            spot.push(d);
            continue;
        }
        regular.push(d);
        if let Some(f) = family(&d.vm_size) {
            add(&f, d);
        }
    }
    let mut out: Vec<QuotaNeed> = std::mem::take(&mut by).into_values().collect();
    let mut tail: std::collections::BTreeMap<String, QuotaNeed> = Default::default();
    for (quota, list) in [(SPOT_QUOTA, &spot), (REGIONAL_QUOTA, &regular)] {
        for d in list.iter() {
            let n = tail.entry(quota.to_string()).or_insert_with(|| QuotaNeed {
                quota: quota.to_string(),
                min: 0,
                max: 0,
                pools: vec![],
            });
            n.min += d.min_vcpus();
            n.max += d.max_vcpus();
            n.pools.push(d.pool.clone());
        }
    }
    out.extend(tail.remove(SPOT_QUOTA));
    out.extend(tail.remove(REGIONAL_QUOTA));
    out
}

/// Default max pods per node for the network configuration (AKS defaults).
pub fn default_max_pods(plugin: NetworkPlugin, mode: NetworkMode) -> u32 {
    match (plugin, mode) {
        (NetworkPlugin::Kubenet, _) => 110,
        (NetworkPlugin::Azure, NetworkMode::Overlay) => 250,
        (NetworkPlugin::Azure, NetworkMode::PodSubnet) => 110,
        (NetworkPlugin::Azure, NetworkMode::NodeSubnet) => 30,
    }
}

/// CPU AKS reserves for Kubernetes (millicores). Documented for 1, 2, 4, 8, 16, 32, 64 cores;
/// other counts use the fit `60 + 40·log2(n)` (n ≤ 8) or `100 + 10·n` (n ≥ 8) and are flagged.
pub fn kube_reserved_cpu_m(vcpus: u32) -> (u64, bool) {
    const TABLE: [(u32, u64); 7] = [(1, 60), (2, 100), (4, 140), (8, 180), (16, 260), (32, 420), (64, 740)];
    if let Some((_, m)) = TABLE.iter().find(|(c, _)| *c == vcpus) {
        return (*m, false);
    }
    let n = vcpus as f64;
    let m = if vcpus <= 8 { 60.0 + 40.0 * n.log2() } else { 100.0 + 10.0 * n };
    (m.round() as u64, true)
}

/// Memory AKS reserves for Kubernetes plus the hard eviction threshold, in bytes.
pub fn kube_reserved_memory(memory_bytes: u64, max_pods: u32, k8s_minor: Option<(u32, u32)>) -> u64 {
    let mem_mib = memory_bytes / MI;
    let modern = k8s_minor.is_none_or(|v| v >= (1, 29));
    if modern {
        let reserved = (20 * max_pods as u64 + 50).min(mem_mib / 4);
        (reserved + 100) * MI
    } else {
        // 25% of the first 4 GiB, 20% of the next 4, 10% of the next 8, 6% of the next 112, 2% above.
        let gib = memory_bytes as f64 / GI as f64;
        let tiers = [(4.0, 0.25), (4.0, 0.20), (8.0, 0.10), (112.0, 0.06), (f64::INFINITY, 0.02)];
        let mut left = gib;
        let mut reserved = 0.0;
        for (size, rate) in tiers {
            let take = left.min(size);
            reserved += take * rate;
            left -= take;
            if left <= 0.0 {
                break;
            }
        }
        (reserved * GI as f64) as u64 + 750 * MI
    }
}

/// What a node leaves to pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Allocatable {
    pub cpu_m: u64,
    pub memory_bytes: u64,
    pub gpus: u32,
    /// The CPU reservation was interpolated (core count not in the AKS table).
    pub cpu_interpolated: bool,
}

pub fn allocatable(vm: VmShape, max_pods: u32, k8s_minor: Option<(u32, u32)>) -> Allocatable {
    let (cpu_res, interpolated) = kube_reserved_cpu_m(vm.vcpus);
    Allocatable {
        cpu_m: (vm.vcpus as u64 * 1000).saturating_sub(cpu_res),
        memory_bytes: vm.memory_bytes.saturating_sub(kube_reserved_memory(vm.memory_bytes, max_pods, k8s_minor)),
        gpus: vm.gpus,
        cpu_interpolated: interpolated,
    }
}

/// `"1.30"` → `(1, 30)`.
pub fn k8s_minor(version: &str) -> Option<(u32, u32)> {
    let mut it = version.trim_start_matches('v').split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// A part of the Azure preflight `--skip-preflight` can leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    Quota,
    Skus,
    Versions,
}

impl Check {
    pub const ALL: [Check; 3] = [Check::Quota, Check::Skus, Check::Versions];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::Quota => "quota",
            Check::Skus => "skus",
            Check::Versions => "versions",
        }
    }

    /// What is not checked when the check is skipped, for the warning.
    pub fn what(self) -> &'static str {
        match self {
            Check::Quota => "the vCPU quota per VM family, Spot and regional (az vm list-usage)",
            Check::Skus => "that every VM size is offered in the region, its zones and for Spot (az vm list-skus)",
            Check::Versions => "that AKS offers the Kubernetes version (az aks get-versions)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_examples() {
        // D8s_v5, 30 pods: 7820m and 32018 MiB (aks-allocatable worked example)
        let a = allocatable(vm_shape("Standard_D8s_v5").unwrap(), 30, Some((1, 30)));
        assert_eq!(a.cpu_m, 7820);
        assert_eq!(a.memory_bytes / MI, 32018);
        let a = allocatable(vm_shape("Standard_D8s_v5").unwrap(), 250, Some((1, 30)));
        assert_eq!(a.memory_bytes / MI, 27618);
        let a = allocatable(vm_shape("Standard_D16s_v5").unwrap(), 110, None);
        assert_eq!((a.cpu_m, a.memory_bytes / MI), (15740, 63186));
        assert_eq!(kube_reserved_cpu_m(48), (580, true));
        assert_eq!(kube_reserved_cpu_m(96), (1060, true));
        // pre-1.29: 7 GB node reserves 0.25*4 + 0.2*3 = 1.6 GB + 750 Mi eviction
        let r = kube_reserved_memory(7 * GI, 30, Some((1, 28)));
        assert_eq!(r, (1.6 * GI as f64) as u64 + 750 * MI);
        assert!(same_family("Standard_D8s_v5").contains(&"Standard_D16s_v5"));
        assert!(!same_family("Standard_D8s_v5").contains(&"Standard_D16ds_v5"));
    }

    #[test]
    fn every_built_in_size_has_a_quota_family() {
        for (name, ..) in VM_SIZES {
            assert!(quota_family(name).is_some(), "{name}");
        }
        assert_eq!(quota_family("standard_nc8as_t4_v3"), Some("standardNCASv3_T4Family"));
        assert_eq!(quota_family("Standard_B2s"), None);
    }

    #[test]
    fn needs_per_family_spot_and_regional_total() {
        let d = |pool: &str, size: &str, vcpus, min, max, spot| PoolDemand {
            pool: pool.into(),
            group: None,
            vm_size: size.into(),
            vcpus,
            min_nodes: min,
            initial_nodes: min,
            max_nodes: max,
            spot,
        };
        let demands = [
            d("system", "Standard_D2s_v5", 2, 1, 1, false),
            d("rayhead", "Standard_D8s_v5", 8, 1, 1, false),
            d("cpu", "Standard_D8s_v5", 8, 1, 5, false),
            d("gpu", "Standard_NC4as_T4_v3", 4, 0, 2, true),
            d("t4", "Standard_NC8as_T4_v3", 8, 0, 3, false),
            d("odd", "Standard_X9", 9, 1, 1, false),
        ];
        let needs = quota_needs(&demands, |s| quota_family(s).map(str::to_string));
        let got: Vec<(&str, u64, u64)> = needs.iter().map(|n| (n.quota.as_str(), n.min, n.max)).collect();
        assert_eq!(
            got,
            [
                ("standardDSv5Family", 18, 50),
                ("standardNCASv3_T4Family", 0, 24),
                ("lowPriorityCores", 0, 8),
                ("cores", 27, 83),
            ]
        );
        assert_eq!(needs[0].pools, ["system", "rayhead", "cpu"]);
        assert_eq!(needs[2].pools, ["gpu"]);
    }
}
