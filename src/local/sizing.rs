//! How the spec's groups become Ray nodes on this machine: one node per replica, each sized from
//! its group, the totals capped at what the machine has.
//!
//! The rule (README, "Local target"):
//! - CPUs: each node asks for its group's CPU rounded up to whole CPUs (`--num-cpus` is an
//!   integer). The total is capped at the machine's CPUs. Over the cap, the head gives its CPUs
//!   up first (it still runs the GCS, the dashboard and job drivers, as a production head with
//!   `num-cpus: 0` does); then every worker shrinks in proportion (whole CPUs, at least 1); then
//!   replicas are dropped, from the group with the most, keeping at least one per group.
//! - Memory: the total of the nodes' memory is capped at three quarters of the machine's memory;
//!   over it every node shrinks in proportion (at least 512 MiB), then replicas are dropped as
//!   for CPUs. Of a node's memory, 30 % (at least 100 MiB) is its object store
//!   (`--object-store-memory`), the rest is `--memory`.
//! - GPUs: the machine's GPUs are handed out in group order; a group asking for more gets what
//!   is left.
//!
//! Every cut is reported as a note, so `deploy` says how the spec was fitted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Deployment, RayGroup, Role};

/// What this machine offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub cpus: u32,
    pub memory_bytes: u64,
    pub gpus: u32,
}

const MIB: u64 = 1 << 20;
/// Smallest memory a node is shrunk to.
pub const MIN_NODE_MEMORY: u64 = 512 * MIB;
/// Smallest object store (Ray refuses less than 75 MiB).
pub const MIN_OBJECT_STORE: u64 = 100 * MIB;

impl Machine {
    /// CPUs this process may use, the memory of the machine (or of its cgroup, when smaller)
    /// and the NVIDIA devices present.
    pub fn detect() -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        let mut memory_bytes =
            std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| mem_total(&t)).unwrap_or(4 << 30);
        if let Some(limit) =
            std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|t| t.trim().parse::<u64>().ok())
        {
            memory_bytes = memory_bytes.min(limit);
        }
        let gpus = std::fs::read_dir("/dev")
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        n.strip_prefix("nvidia").is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                    })
                    .count() as u32
            })
            .unwrap_or(0);
        Self { cpus, memory_bytes, gpus }
    }
}

fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One Ray node to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    /// `head`, or `<group>-<index>`.
    pub name: String,
    pub group: String,
    pub head: bool,
    pub num_cpus: u32,
    pub num_gpus: u32,
    /// `--memory` (bytes): the node's memory less its object store.
    pub memory: u64,
    pub object_store_memory: u64,
    /// Extra `ray start` flags from `rayStartParams` (without the ones raydeploy sets).
    pub params: BTreeMap<String, String>,
}

impl NodePlan {
    pub fn total_memory(&self) -> u64 {
        self.memory + self.object_store_memory
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizing {
    pub head: NodePlan,
    pub workers: Vec<NodePlan>,
    /// How the spec was fitted to the machine (empty when it fits as written).
    pub notes: Vec<String>,
}

impl Sizing {
    pub fn nodes(&self) -> impl Iterator<Item = &NodePlan> {
        std::iter::once(&self.head).chain(self.workers.iter())
    }
}

/// `ray start` flags raydeploy sets itself on target local; the same keys in `rayStartParams`
/// are not passed on.
pub const OWNED_PARAMS: &[&str] = &[
    "head",
    "address",
    "block",
    "port",
    "node-ip-address",
    "temp-dir",
    "dashboard-host",
    "dashboard-port",
    "include-dashboard",
    "ray-client-server-port",
    "node-manager-port",
    "object-manager-port",
    "dashboard-agent-grpc-port",
    "dashboard-agent-listen-port",
    "metrics-export-port",
    "runtime-env-agent-port",
    "min-worker-port",
    "max-worker-port",
    "num-cpus",
    "num-gpus",
    "memory",
    "object-store-memory",
    "disable-usage-stats",
];

struct Want<'a> {
    group: &'a RayGroup,
    cpus: u32,
    memory: u64,
    replicas: u32,
}

/// The nodes for `d` on `m`.
pub fn plan(d: &Deployment, m: Machine) -> Sizing {
    let mut notes = vec![];
    let head_g = &d.cluster.head;
    let mut head = Want { group: head_g, cpus: whole_cpus(head_g.cpu_m), memory: head_g.memory_bytes, replicas: 1 };
    let mut workers: Vec<Want> = d
        .cluster
        .workers
        .iter()
        .map(|g| Want { group: g, cpus: whole_cpus(g.cpu_m), memory: g.memory_bytes, replicas: g.replicas.max(1) })
        .collect();

    // CPUs.
    let total_cpus = |h: &Want, w: &[Want]| h.cpus + w.iter().map(|w| w.cpus * w.replicas).sum::<u32>();
    let cap = m.cpus.max(1);
    if total_cpus(&head, &workers) > cap && head.cpus > 0 && !workers.is_empty() {
        notes.push(format!(
            "the spec asks for {} CPUs, this machine has {cap}: the head gets 0 CPUs (it runs the GCS, dashboard and job drivers)",
            total_cpus(&head, &workers)
        ));
        head.cpus = 0;
    }
    let worker_cpus = |w: &[Want]| w.iter().map(|w| w.cpus * w.replicas).sum::<u32>();
    let budget = cap.saturating_sub(head.cpus);
    if worker_cpus(&workers) > budget {
        let total = worker_cpus(&workers);
        for w in &mut workers {
            let scaled = ((w.cpus as u64 * budget as u64) / total.max(1) as u64).max(1) as u32;
            if scaled < w.cpus {
                notes.push(format!("group {}: {} CPUs per replica instead of {}", w.group.name, scaled, w.cpus));
                w.cpus = scaled;
            }
        }
    }
    drop_replicas(
        &mut workers,
        &mut notes,
        "CPUs",
        |w| w.iter().map(|w| w.cpus as u64 * w.replicas as u64).sum(),
        budget as u64,
    );
    if workers.is_empty() && head.cpus > cap {
        notes.push(format!("the head asks for {} CPUs, this machine has {cap}", head.cpus));
        head.cpus = cap;
    }

    // Memory.
    let mem_cap = m.memory_bytes / 4 * 3;
    let total_mem = |h: &Want, w: &[Want]| h.memory + w.iter().map(|w| w.memory * w.replicas as u64).sum::<u64>();
    let total = total_mem(&head, &workers);
    if total > mem_cap {
        let shrink =
            |mem: u64| ((mem as u128 * mem_cap as u128 / total as u128) as u64 / MIB * MIB).max(MIN_NODE_MEMORY);
        notes.push(format!(
            "the spec asks for {} of memory, the cap here is {} (3/4 of the machine): every node shrinks in proportion",
            gib(total),
            gib(mem_cap)
        ));
        head.memory = shrink(head.memory).min(head.memory);
        for w in &mut workers {
            w.memory = shrink(w.memory).min(w.memory);
        }
    }
    let head_mem = head.memory;
    drop_replicas(
        &mut workers,
        &mut notes,
        "memory",
        |w| w.iter().map(|w| w.memory * w.replicas as u64).sum(),
        mem_cap.saturating_sub(head_mem),
    );

    // GPUs, in group order.
    let mut gpus_left = m.gpus;
    let mut take_gpus = |g: &RayGroup, replicas: u32, notes: &mut Vec<String>| -> Vec<u32> {
        (0..replicas)
            .map(|_| {
                let n = g.gpus.min(gpus_left);
                gpus_left -= n;
                if n < g.gpus {
                    notes.push(format!(
                        "group {}: {} GPU(s) per replica asked, {} available on this machine",
                        g.name, g.gpus, n
                    ));
                }
                n
            })
            .collect()
    };

    let head_gpus = take_gpus(head.group, 1, &mut notes)[0];
    let head_plan = node(head.group, "head".into(), head.cpus, head_gpus, head.memory);
    let mut worker_plans = vec![];
    for w in &workers {
        let gpus = take_gpus(w.group, w.replicas, &mut notes);
        for (i, g) in gpus.into_iter().enumerate() {
            worker_plans.push(node(w.group, format!("{}-{i}", w.group.name), w.cpus, g, w.memory));
        }
    }
    for g in d.cluster.groups() {
        let ignored: Vec<&str> = g
            .ray_start_params
            .keys()
            .map(String::as_str)
            .filter(|k| OWNED_PARAMS.contains(k) && *k != "dashboard-host")
            .collect();
        if !ignored.is_empty() {
            notes.push(format!(
                "{}.rayStartParams: {} set by raydeploy on target local, the spec's value is not used",
                g.spec_path,
                ignored.join(", ")
            ));
        }
    }
    notes.dedup();
    Sizing { head: head_plan, workers: worker_plans, notes }
}

/// Drops replicas, from the group with the most, while `total(workers) > budget` and some group
/// has more than one.
fn drop_replicas(
    workers: &mut [Want],
    notes: &mut Vec<String>,
    what: &str,
    total: impl Fn(&[Want]) -> u64,
    budget: u64,
) {
    let before: Vec<u32> = workers.iter().map(|w| w.replicas).collect();
    while total(workers) > budget {
        let Some(w) = workers.iter_mut().filter(|w| w.replicas > 1).max_by_key(|w| w.replicas) else { break };
        w.replicas -= 1;
    }
    for (w, b) in workers.iter().zip(before) {
        if w.replicas < b {
            notes.push(format!("group {}: {} replicas instead of {} (not enough {what})", w.group.name, w.replicas, b));
        }
    }
}

fn node(g: &RayGroup, name: String, cpus: u32, gpus: u32, total_memory: u64) -> NodePlan {
    let object_store = (total_memory / 10 * 3).max(MIN_OBJECT_STORE).min(total_memory / 2) / MIB * MIB;
    let params = g
        .ray_start_params
        .iter()
        .filter(|(k, _)| !OWNED_PARAMS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    NodePlan {
        name,
        group: g.name.clone(),
        head: g.role == Role::Head,
        num_cpus: cpus,
        num_gpus: gpus,
        memory: total_memory - object_store,
        object_store_memory: object_store,
        params,
    }
}

fn whole_cpus(cpu_m: u64) -> u32 {
    cpu_m.div_ceil(1000) as u32
}

pub fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    fn machine(cpus: u32, mem_gib: u64, gpus: u32) -> Machine {
        Machine { cpus, memory_bytes: mem_gib * GI, gpus }
    }

    fn shape(s: &Sizing) -> Vec<(String, u32, u64)> {
        s.nodes().map(|n| (n.name.clone(), n.num_cpus, n.total_memory())).collect()
    }

    #[test]
    fn fits_as_written_on_a_big_machine() {
        let d = crate::local::example_deployment();
        let s = plan(&d, machine(8, 32, 0));
        assert_eq!(shape(&s), vec![("head".into(), 1, GI), ("workers-0".into(), 1, GI), ("workers-1".into(), 1, GI)]);
        assert!(s.notes.is_empty(), "{:?}", s.notes);
        assert_eq!(s.head.object_store_memory, 307 * MIB);
        assert_eq!(s.head.memory + s.head.object_store_memory, GI);
        assert!(s.head.head && !s.workers[0].head);
        assert_eq!(s.workers[0].group, "workers");
    }

    #[test]
    fn the_head_gives_its_cpus_up_first() {
        let d = crate::local::example_deployment();
        let s = plan(&d, machine(2, 24, 0));
        assert_eq!(shape(&s), vec![("head".into(), 0, GI), ("workers-0".into(), 1, GI), ("workers-1".into(), 1, GI)]);
        assert_eq!(s.notes.len(), 1, "{:?}", s.notes);
    }

    #[test]
    fn workers_shrink_then_replicas_drop_but_one_per_group_stays() {
        let mut d = crate::local::example_deployment();
        d.cluster.workers[0].cpu_m = 4000;
        d.cluster.workers[0].replicas = 3;
        let s = plan(&d, machine(6, 24, 0));
        // 12 worker CPUs into 6: 2 each.
        assert!(s.workers.iter().all(|w| w.num_cpus == 2), "{:?}", shape(&s));
        assert_eq!(s.workers.len(), 3);
        let s = plan(&d, machine(2, 24, 0));
        assert_eq!(shape(&s).iter().map(|n| n.1).collect::<Vec<_>>(), vec![0, 1, 1]);
        let s = plan(&d, machine(1, 24, 0));
        assert_eq!(s.workers.len(), 1, "{:?}", s.notes);
        assert!(s.notes.iter().any(|n| n.contains("1 replicas instead of 3")), "{:?}", s.notes);
    }

    #[test]
    fn memory_is_capped_at_three_quarters() {
        let d = crate::local::example_deployment();
        let s = plan(&d, machine(8, 2, 0));
        let total: u64 = s.nodes().map(NodePlan::total_memory).sum();
        assert!(total <= 2 * GI / 4 * 3, "{total}");
        assert!(s.nodes().all(|n| n.total_memory() >= MIN_NODE_MEMORY));
        assert_eq!(s.workers.len(), 2);
        let s = plan(&d, machine(8, 1, 0));
        assert_eq!(s.workers.len(), 1, "{:?}", s.notes);
    }

    #[test]
    fn gpus_are_handed_out_in_group_order() {
        let mut d = crate::local::example_deployment();
        d.cluster.workers[0].gpus = 1;
        let s = plan(&d, machine(8, 32, 1));
        assert_eq!(s.workers.iter().map(|w| w.num_gpus).collect::<Vec<_>>(), vec![1, 0]);
        assert!(s.notes.iter().any(|n| n.contains("GPU")));
    }

    #[test]
    fn owned_start_params_are_not_passed_on() {
        let mut d = crate::local::example_deployment();
        d.cluster.workers[0].ray_start_params.insert("num-cpus".into(), "9".into());
        d.cluster.workers[0].ray_start_params.insert("system-config".into(), "{}".into());
        let s = plan(&d, machine(8, 32, 0));
        assert_eq!(s.workers[0].num_cpus, 1);
        assert_eq!(s.workers[0].params.keys().collect::<Vec<_>>(), vec!["system-config"]);
        assert!(!s.head.params.contains_key("dashboard-host"));
        assert!(s.notes.iter().any(|n| n.contains("num-cpus")));
    }
}
