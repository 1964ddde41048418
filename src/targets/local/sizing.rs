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
    kb.checked_mul(1024)
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
    /// Whole CPUs per replica.
    cpus: u64,
    /// Bytes per replica.
    memory: u64,
    replicas: u64,
}

/// Σ per-replica amount × replicas, exactly (u128: no product or sum of u64 × u32 overflows it).
fn total(workers: &[Want], per: impl Fn(&Want) -> u64) -> u128 {
    workers.iter().map(|w| u128::from(per(w)) * u128::from(w.replicas)).sum()
}

fn gib_wide(b: u128) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

/// The nodes for `d` on `m`.
pub fn plan(d: &Deployment, m: Machine) -> Sizing {
    plan_groups(&d.cluster.head, &d.cluster.workers, m)
}

/// The nodes for a cluster of these groups on `m` (an ephemeral job's cluster has its own).
pub fn plan_groups(head_g: &RayGroup, worker_groups: &[RayGroup], m: Machine) -> Sizing {
    let mut notes = vec![];
    let mut head = Want { group: head_g, cpus: whole_cpus(head_g.cpu_m), memory: head_g.memory_bytes, replicas: 1 };
    let mut workers: Vec<Want> = worker_groups
        .iter()
        .map(|g| Want {
            group: g,
            // A worker has some CPU (validation); at least 1 keeps the number of nodes bounded by
            // the machine's CPUs once replicas are dropped.
            cpus: whole_cpus(g.cpu_m).max(1),
            memory: g.memory_bytes,
            replicas: u64::from(g.replicas.max(1)),
        })
        .collect();

    // CPUs.
    let cap = u64::from(m.cpus.max(1));
    let asked = u128::from(head.cpus) + total(&workers, |w| w.cpus);
    if asked > u128::from(cap) && head.cpus > 0 && !workers.is_empty() {
        notes.push(format!(
            "the spec asks for {asked} CPUs, this machine has {cap}: the head gets 0 CPUs (it runs the GCS, dashboard and job drivers)"
        ));
        head.cpus = 0;
    }
    let budget = cap.saturating_sub(head.cpus);
    let worker_cpus = total(&workers, |w| w.cpus);
    if worker_cpus > u128::from(budget) {
        for w in &mut workers {
            // ≤ w.cpus and ≤ budget: the quotient fits in u64.
            let scaled = (u128::from(w.cpus) * u128::from(budget) / worker_cpus).max(1) as u64;
            if scaled < w.cpus {
                notes.push(format!("group {}: {} CPUs per replica instead of {}", w.group.name, scaled, w.cpus));
                w.cpus = scaled;
            }
        }
    }
    drop_replicas(&mut workers, &mut notes, "CPUs", |w| w.cpus, budget);
    if workers.is_empty() && head.cpus > cap {
        notes.push(format!("the head asks for {} CPUs, this machine has {cap}", head.cpus));
        head.cpus = cap;
    }

    // Memory.
    let mem_cap = m.memory_bytes / 4 * 3;
    let asked = u128::from(head.memory) + total(&workers, |w| w.memory);
    if asked > u128::from(mem_cap) {
        notes.push(format!(
            "the spec asks for {} of memory, the cap here is {} (3/4 of the machine): every node shrinks in proportion",
            gib_wide(asked),
            gib(mem_cap)
        ));
        let mut nodes: Vec<(u64, u64)> =
            std::iter::once((head.memory, 1)).chain(workers.iter().map(|w| (w.memory, w.replicas))).collect();
        shrink_memory(&mut nodes, mem_cap);
        head.memory = nodes[0].0;
        for (w, (mem, _)) in workers.iter_mut().zip(&nodes[1..]) {
            w.memory = *mem;
        }
    }
    let head_mem = head.memory;
    drop_replicas(&mut workers, &mut notes, "memory", |w| w.memory, mem_cap.saturating_sub(head_mem));

    // GPUs, in group order.
    let mut gpus_left = m.gpus;
    let mut take_gpus = |g: &RayGroup, replicas: u64, notes: &mut Vec<String>| -> Vec<u32> {
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

    // Every CPU count is now at most the machine's (a u32).
    let num_cpus = |c: u64| u32::try_from(c.min(cap)).unwrap_or(m.cpus);
    let head_gpus = take_gpus(head.group, 1, &mut notes)[0];
    let head_plan = node(head.group, "head".into(), num_cpus(head.cpus), head_gpus, head.memory);
    let mut worker_plans = vec![];
    for w in &workers {
        let gpus = take_gpus(w.group, w.replicas, &mut notes);
        for (i, g) in gpus.into_iter().enumerate() {
            worker_plans.push(node(w.group, format!("{}-{i}", w.group.name), num_cpus(w.cpus), g, w.memory));
        }
    }
    for g in std::iter::once(head_g).chain(worker_groups) {
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

/// Shrinks `(memory per node, nodes)` in proportion so that the total fits `cap`, no node below
/// [`MIN_NODE_MEMORY`] (nor above what it asked): a node whose share would be under the floor
/// gets the floor, and the others share what is left, in proportion, in whole MiB. Only when
/// the floors alone exceed the cap does the total stay above it (replicas are dropped next).
fn shrink_memory(nodes: &mut [(u64, u64)], cap: u64) {
    let asked: Vec<u64> = nodes.iter().map(|(m, _)| *m).collect();
    let mut floored = vec![false; nodes.len()];
    loop {
        let fixed: u128 =
            nodes.iter().zip(&floored).filter(|(_, f)| **f).map(|((m, n), _)| u128::from(*m) * u128::from(*n)).sum();
        let rest: u128 = asked
            .iter()
            .zip(nodes.iter())
            .zip(&floored)
            .filter(|(_, f)| !**f)
            .map(|((a, (_, n)), _)| u128::from(*a) * u128::from(*n))
            .sum();
        let left = u128::from(cap).saturating_sub(fixed);
        let mut changed = false;
        for (i, node) in nodes.iter_mut().enumerate() {
            if floored[i] {
                continue;
            }
            // ≤ asked[i]: the quotient fits in u64.
            let share = (u128::from(asked[i]) * left).checked_div(rest).map_or(0, |q| q as u64 / MIB * MIB);
            if share < MIN_NODE_MEMORY {
                floored[i] = true;
                changed = true;
                node.0 = MIN_NODE_MEMORY.min(asked[i]);
            } else {
                node.0 = share.min(asked[i]);
            }
        }
        if !changed {
            return;
        }
    }
}

/// Drops replicas while `Σ per(w) × replicas > budget` and some group has more than one: always
/// from the group with the most (the last of those with as many), one at a time. That is
/// computed, not looped: the groups are cut to a common level `L` (the largest that fits, see
/// [`fit_level`]), then the groups above it keep `L + 1` in group order while that still fits.
fn drop_replicas(workers: &mut [Want], notes: &mut Vec<String>, what: &str, per: impl Fn(&Want) -> u64, budget: u64) {
    let budget = u128::from(budget);
    if total(workers, &per) <= budget {
        return;
    }
    let before: Vec<u64> = workers.iter().map(|w| w.replicas).collect();
    let items: Vec<(u128, u64)> = workers.iter().map(|w| (u128::from(per(w)), w.replicas)).collect();
    let level = fit_level(&items, budget);
    let mut used: u128 = items.iter().map(|(c, r)| c * u128::from((*r).min(level))).sum();
    for (w, (_, r)) in workers.iter_mut().zip(&items) {
        w.replicas = (*r).min(level);
    }
    for (w, (c, r)) in workers.iter_mut().zip(&items) {
        if *r <= level {
            continue;
        }
        if used + c > budget {
            break;
        }
        used += c;
        w.replicas = level + 1;
    }
    for (w, b) in workers.iter().zip(before) {
        if w.replicas < b {
            notes.push(format!("group {}: {} replicas instead of {} (not enough {what})", w.group.name, w.replicas, b));
        }
    }
}

/// The largest level `L ≥ 1` (up to the most replicas of any group) with
/// `f(L) = Σ cost × min(replicas, L) ≤ budget`; 1 when even `f(1)` is over. Between two
/// consecutive replica counts `a < L ≤ b`, `f(L) = Σ_{r ≤ a} cost × r + L × Σ_{r > a} cost` is
/// linear, so `L` is one division on the highest segment whose start fits.
fn fit_level(items: &[(u128, u64)], budget: u128) -> u64 {
    let mut levels: Vec<u64> = items.iter().map(|(_, r)| *r).chain([1]).collect();
    levels.sort_unstable();
    levels.dedup();
    for pair in levels.windows(2).rev() {
        let (a, b) = (pair[0], pair[1]);
        let fixed: u128 = items.iter().filter(|(_, r)| *r <= a).map(|(c, r)| c * u128::from(*r)).sum();
        let slope: u128 = items.iter().filter(|(_, r)| *r > a).map(|(c, _)| *c).sum();
        if fixed + u128::from(a) * slope > budget {
            continue;
        }
        if slope == 0 {
            return b;
        }
        // ≥ a, because f(a) fits; at most b.
        let l = (budget - fixed) / slope;
        return u64::try_from(l).map_or(b, |l| l.min(b));
    }
    1
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

fn whole_cpus(cpu_m: u64) -> u64 {
    cpu_m.div_ceil(1000)
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
        let d = crate::targets::local::example_deployment();
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
        let d = crate::targets::local::example_deployment();
        let s = plan(&d, machine(2, 24, 0));
        assert_eq!(shape(&s), vec![("head".into(), 0, GI), ("workers-0".into(), 1, GI), ("workers-1".into(), 1, GI)]);
        assert_eq!(s.notes.len(), 1, "{:?}", s.notes);
    }

    #[test]
    fn workers_shrink_then_replicas_drop_but_one_per_group_stays() {
        let mut d = crate::targets::local::example_deployment();
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
        let d = crate::targets::local::example_deployment();
        let s = plan(&d, machine(8, 2, 0));
        let total: u64 = s.nodes().map(NodePlan::total_memory).sum();
        assert!(total <= 2 * GI / 4 * 3, "{total}");
        assert!(s.nodes().all(|n| n.total_memory() >= MIN_NODE_MEMORY));
        assert_eq!(s.workers.len(), 2);
        let s = plan(&d, machine(8, 1, 0));
        assert_eq!(s.workers.len(), 1, "{:?}", s.notes);
    }

    /// Three groups like the example's workers, for the overflow cases.
    fn three_groups(cpu_m: u64, memory: u64, replicas: u32) -> crate::model::Deployment {
        let mut d = crate::targets::local::example_deployment();
        let w = d.cluster.workers[0].clone();
        d.cluster.workers = ["a", "b", "c"]
            .iter()
            .map(|n| RayGroup { name: n.to_string(), cpu_m, memory_bytes: memory, replicas, ..w.clone() })
            .collect();
        d
    }

    #[test]
    fn the_largest_replica_counts_are_cut_at_once_without_overflow() {
        // 3 × 4294967295 replicas of 1 CPU: one replica per group is left, computed, not looped.
        let d = three_groups(1000, GI, u32::MAX);
        let s = plan(&d, machine(2, 24, 0));
        assert_eq!(s.workers.iter().map(|w| w.group.as_str()).collect::<Vec<_>>(), vec!["a", "b", "c"]);
        assert!(s.notes.iter().any(|n| n.contains("group a: 1 replicas instead of 4294967295")), "{:?}", s.notes);
        // Enough CPUs for some: the groups share the machine, earlier groups first.
        let s = plan(&d, machine(64, 1024, 0));
        let per: Vec<usize> =
            ["a", "b", "c"].iter().map(|g| s.workers.iter().filter(|w| w.group == *g).count()).collect();
        assert_eq!(per, vec![22, 21, 21], "{:?}", s.notes);
    }

    #[test]
    fn huge_memory_stays_within_three_quarters_of_the_machine() {
        // 3 groups × 3 replicas × 8388607Ti: far above u64 in total.
        let d = three_groups(1000, 8_388_607 << 40, 3);
        let m = machine(16, 32, 0);
        let s = plan(&d, m);
        let total: u64 = s.nodes().map(NodePlan::total_memory).sum();
        assert!(total <= m.memory_bytes / 4 * 3, "{total} > 3/4 of {}", m.memory_bytes);
        assert!(s.nodes().all(|n| n.memory > 0 && n.memory < m.memory_bytes), "{s:?}");
        assert!(s.notes.iter().any(|n| n.contains("every node shrinks")), "{:?}", s.notes);
        // One replica each, so none can be dropped: the small nodes keep the floor and the big
        // ones share the rest, within the cap.
        let mut d = three_groups(1000, 8_388_607 << 40, 1);
        d.cluster.workers[2].memory_bytes = GI;
        let s = plan(&d, m);
        let total: u64 = s.nodes().map(NodePlan::total_memory).sum();
        assert!(total <= m.memory_bytes / 4 * 3, "{total} > 3/4 of {}: {:?}", m.memory_bytes, shape(&s));
        assert_eq!(s.head.total_memory(), MIN_NODE_MEMORY);
        assert_eq!(s.workers[2].total_memory(), MIN_NODE_MEMORY);
        assert!(s.workers[0].total_memory() > 10 * GI, "{:?}", shape(&s));
    }

    #[test]
    fn huge_cpu_is_capped_not_truncated() {
        // 4294967297 CPUs: 2^32 + 1, which a 32-bit cast turns into 1.
        let mut d = crate::targets::local::example_deployment();
        d.cluster.workers[0].cpu_m = 4_294_967_297_000;
        d.cluster.workers[0].replicas = 1;
        let s = plan(&d, machine(8, 32, 0));
        assert_eq!(s.head.num_cpus, 0, "{:?}", s.notes);
        assert_eq!(s.workers[0].num_cpus, 8, "{:?}", s.notes);
        assert!(s.notes.iter().any(|n| n.contains("8 CPUs per replica instead of 4294967297")), "{:?}", s.notes);
        // A head alone is capped at the machine.
        d.cluster.workers.clear();
        d.cluster.head.cpu_m = 4_294_967_297_000;
        let s = plan(&d, machine(8, 32, 0));
        assert_eq!(s.head.num_cpus, 8, "{:?}", s.notes);
    }

    /// The rule as first written: one replica at a time from the group with the most.
    fn drop_one_at_a_time(reps: &mut [u64], cost: &[u64], budget: u64) {
        let total = |r: &[u64]| r.iter().zip(cost).map(|(r, c)| u128::from(*r) * u128::from(*c)).sum::<u128>();
        while total(reps) > u128::from(budget) {
            let Some(i) = (0..reps.len()).filter(|i| reps[*i] > 1).max_by_key(|i| reps[*i]) else { break };
            reps[i] -= 1;
        }
    }

    proptest::proptest! {
        #[test]
        fn computed_replica_cuts_match_dropping_one_at_a_time(
            groups in proptest::collection::vec((1u32..40, 0u64..6), 1..5),
            budget in 0u64..200,
        ) {
            let mut d = crate::targets::local::example_deployment();
            let w = d.cluster.workers[0].clone();
            d.cluster.workers = groups
                .iter()
                .enumerate()
                .map(|(i, (r, _))| RayGroup { name: format!("g{i}"), replicas: *r, ..w.clone() })
                .collect();
            let mut wants: Vec<Want> = d
                .cluster
                .workers
                .iter()
                .zip(&groups)
                .map(|(g, (r, c))| Want { group: g, cpus: *c, memory: 0, replicas: u64::from(*r) })
                .collect();
            let mut reps: Vec<u64> = groups.iter().map(|(r, _)| u64::from(*r)).collect();
            let cost: Vec<u64> = groups.iter().map(|(_, c)| *c).collect();
            drop_one_at_a_time(&mut reps, &cost, budget);
            drop_replicas(&mut wants, &mut vec![], "CPUs", |w| w.cpus, budget);
            proptest::prop_assert_eq!(wants.iter().map(|w| w.replicas).collect::<Vec<_>>(), reps);
        }
    }

    #[test]
    fn gpus_are_handed_out_in_group_order() {
        let mut d = crate::targets::local::example_deployment();
        d.cluster.workers[0].gpus = 1;
        let s = plan(&d, machine(8, 32, 1));
        assert_eq!(s.workers.iter().map(|w| w.num_gpus).collect::<Vec<_>>(), vec![1, 0]);
        assert!(s.notes.iter().any(|n| n.contains("GPU")));
    }

    #[test]
    fn owned_start_params_are_not_passed_on() {
        let mut d = crate::targets::local::example_deployment();
        d.cluster.workers[0].ray_start_params.insert("num-cpus".into(), "9".into());
        d.cluster.workers[0].ray_start_params.insert("system-config".into(), "{}".into());
        let s = plan(&d, machine(8, 32, 0));
        assert_eq!(s.workers[0].num_cpus, 1);
        assert_eq!(s.workers[0].params.keys().collect::<Vec<_>>(), vec!["system-config"]);
        assert!(!s.head.params.contains_key("dashboard-host"));
        assert!(s.notes.iter().any(|n| n.contains("num-cpus")));
    }
}
