//! `raydeploy explain`: the resolved deployment as tables a person can check.

use std::fmt::Write;

use crate::model::Deployment;
use crate::spec::quantity::{format_cpu, gib};

pub fn explain(d: &Deployment) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "deployment {} (target {}, spec {})", d.name, d.target.as_str(), d.spec_hash);
    if let Some(a) = &d.azure {
        let _ = writeln!(o, "\nAzure");
        let rows = [
            ("resource group", a.resource_group.clone()),
            (
                "AKS cluster",
                format!(
                    "{} (Kubernetes {}, {} CNI{}, maxPods {})",
                    a.aks_name,
                    a.kubernetes_version.as_deref().unwrap_or("newest AKS offers, looked up by deploy"),
                    a.network_plugin,
                    a.network_plugin_mode.map(|m| format!(" {m}")).unwrap_or_default(),
                    a.max_pods
                ),
            ),
            ("registry", format!("{} ({})", a.acr_login_server, a.acr_sku)),
            ("zones", if a.zones.is_empty() { "none (regional)".to_string() } else { a.zones.join(", ") }),
            (
                "system pool",
                format!(
                    "{} × {} ({}), tainted CriticalAddonsOnly",
                    a.system_pool.node_count, a.system_pool.vm_size, a.system_pool.name
                ),
            ),
            (
                "terraform state",
                a.state
                    .as_ref()
                    .map(|s| format!("{}/{}/{}", s.storage_account, s.container, s.key))
                    .unwrap_or_else(|| "local".into()),
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(o, "  {k:<16} {v}");
        }
    }
    let _ = writeln!(o, "\nRay groups");
    let header = [
        "group",
        "pool",
        "vm",
        "alloc cpu",
        "alloc mem",
        "gpu",
        "pod cpu",
        "pod mem",
        "pods/node",
        "cpu %",
        "mem %",
        "replicas",
        "nodes",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    let pools = d.azure.as_ref().map(|a| a.ray_pools.clone()).unwrap_or_default();
    for g in d.cluster.all_groups() {
        let pool = pools.iter().find(|p| p.group.as_deref() == Some(g.name.as_str()));
        let fit = g.fit.as_ref();
        rows.push(vec![
            g.name.clone(),
            g.pool.clone().unwrap_or_else(|| "-".into()),
            g.vm_size.clone().unwrap_or_else(|| "-".into()),
            fit.map(|f| format!("{:.2}", f.allocatable.cpu_m as f64 / 1000.0)).unwrap_or_else(|| "-".into()),
            fit.map(|f| format!("{}Gi", gib(f.allocatable.memory_bytes))).unwrap_or_else(|| "-".into()),
            g.gpus.to_string(),
            format_cpu(g.cpu_m),
            format!("{}Gi", gib(g.memory_bytes)),
            fit.map(|f| f.pods_per_node.to_string()).unwrap_or_else(|| "-".into()),
            fit.map(|f| format!("{:.1}", f.cpu_utilisation_pct)).unwrap_or_else(|| "-".into()),
            fit.map(|f| format!("{:.1}", f.memory_utilisation_pct)).unwrap_or_else(|| "-".into()),
            format!("{} ({}..{})", g.replicas, g.min_replicas, g.max_replicas),
            pool.map(
                |p| if p.autoscaled { format!("{}..{}", p.min_count, p.max_count) } else { p.node_count.to_string() },
            )
            .unwrap_or_else(|| "-".into()),
        ]);
    }
    table(&mut o, &rows);
    ephemeral_groups(&mut o, d, &pools);
    if let Some(a) = &d.azure {
        quota(&mut o, a);
    }
    let _ = writeln!(o, "\nImage");
    let _ = writeln!(o, "  base            {}:{}", d.image.base, d.image.base_tag);
    if let Some(i) = &d.image.cpu {
        let _ = writeln!(o, "  cpu image       {}", i.reference());
    }
    if let Some(i) = &d.image.gpu {
        let _ = writeln!(o, "  gpu image       {}", i.reference());
    }
    let _ = writeln!(o, "\nKubernetes");
    let _ =
        writeln!(o, "  operator        kuberay-operator {} in namespace {}", d.operator.version, d.operator.namespace);
    if let Some(p) = &d.device_plugin {
        let nodes: Vec<String> = p.node_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let tolerates: Vec<String> = p
            .tolerations
            .iter()
            .map(|t| format!("{}{}:{}", t.key, t.value.as_ref().map(|v| format!("={v}")).unwrap_or_default(), t.effect))
            .collect();
        let _ = writeln!(
            o,
            "  device plugin   {} {} in namespace {}, unless the cluster already runs one\n                  \
             on nodes labelled {}; tolerates {}",
            p.chart,
            p.version,
            p.namespace,
            nodes.join(" or "),
            tolerates.join(", ")
        );
    } else if d.target != crate::spec::Target::Local && d.cluster.all_groups().any(|g| g.is_gpu()) {
        let _ = writeln!(
            o,
            "  device plugin   off (gpu.devicePlugin: false): something else must advertise nvidia.com/gpu"
        );
    }
    let _ = writeln!(
        o,
        "  RayCluster      {} in namespace {} (head service {})",
        d.cluster.name, d.cluster.namespace, d.cluster.head_service
    );
    for s in &d.secrets {
        let _ = writeln!(
            o,
            "  secret          {} (keys: {}{})",
            s.name,
            s.keys.join(", "),
            if s.expose_as_env { "; exposed as env" } else { "" }
        );
    }
    for m in &d.cluster.mounts {
        let _ = writeln!(o, "  mount           {} → {} (claim {})", m.name, m.path, m.claim_name);
    }
    for j in &d.jobs {
        let _ = writeln!(o, "  job             {}: {}", j.name, j.entrypoint);
        if let Some(c) = &j.ephemeral {
            let groups: Vec<String> = c.groups().map(|g| format!("{} ×{}", g.name, g.replicas)).collect();
            let _ = writeln!(
                o,
                "                  on a cluster of its own ({}), deleted {}s after the job: `raydeploy run {}`",
                groups.join(", "),
                j.ttl_seconds_after_finished.unwrap_or(0),
                j.name
            );
        }
    }
    o.push_str("\nPod sizes: auto = whole CPUs and GiB of the node's allocatable (AKS reservations and eviction\nthreshold) minus the DaemonSet reserve; cpu %/mem % = Ray pods per node × request ÷ allocatable.\n");
    o
}

/// Which groups ephemeral jobs use, and what that does to their pools: a group only they use
/// scales to zero between runs; the others hold an ephemeral job's cluster beside the
/// long-running one.
fn ephemeral_groups(o: &mut String, d: &Deployment, pools: &[crate::model::NodePool]) {
    let runs: Vec<&crate::model::JobModel> = d.jobs.iter().filter(|j| j.ephemeral.is_some()).collect();
    if runs.is_empty() {
        return;
    }
    let nodes = |g: &str| {
        pools.iter().find(|p| p.group.as_deref() == Some(g)).map(|p| {
            format!("{}..{} nodes{}", p.min_count, p.max_count, if p.autoscaled { ", autoscaled" } else { "" })
        })
    };
    for g in d.cluster.all_groups() {
        let users: Vec<&str> = runs
            .iter()
            .filter(|j| j.ephemeral.as_ref().is_some_and(|c| c.groups().any(|x| x.name == g.name)))
            .map(|j| j.name.as_str())
            .collect();
        if users.is_empty() {
            continue;
        }
        let only = d.cluster.ephemeral_only.iter().any(|x| x.name == g.name);
        let line = match (only, nodes(&g.name)) {
            (true, Some(n)) => {
                format!(
                    "only in ephemeral jobs' clusters ({}): its pool scales to zero between runs ({n})",
                    users.join(", ")
                )
            }
            (true, None) => format!("only in ephemeral jobs' clusters ({})", users.join(", ")),
            (false, Some(n)) => {
                format!(
                    "also in ephemeral jobs' clusters ({}): its pool has room for one beside this cluster ({n})",
                    users.join(", ")
                )
            }
            (false, None) => format!("also in ephemeral jobs' clusters ({})", users.join(", ")),
        };
        let _ = writeln!(o, "  {}: {line}", g.name);
    }
}

/// vCPUs per quota at every pool's minimum and maximum node count (the families from the built-in
/// table; `deploy` asks Azure for each size's family and the free quota).
fn quota(o: &mut String, a: &crate::model::AzureModel) {
    use crate::model::azure::{REGIONAL_QUOTA, SPOT_QUOTA, pool_demands, quota_family, quota_needs};
    let demands = pool_demands(a);
    let needs = quota_needs(&demands, |s| quota_family(s).map(str::to_string));
    let _ = writeln!(o, "\nvCPU quota in {} (checked against the subscription by deploy's preflight)", a.location);
    let mut rows: Vec<Vec<String>> =
        vec![["quota", "vcpus at min", "vcpus at max", "pools"].iter().map(|s| s.to_string()).collect()];
    for n in &needs {
        let name = match n.quota.as_str() {
            SPOT_QUOTA => format!("{SPOT_QUOTA} (Spot)"),
            REGIONAL_QUOTA => format!("{REGIONAL_QUOTA} (regional total)"),
            f => f.to_string(),
        };
        rows.push(vec![name, n.min.to_string(), n.max.to_string(), n.pools.join(", ")]);
    }
    table(o, &rows);
    for d in demands.iter().filter(|d| !d.spot && quota_family(&d.vm_size).is_none()) {
        let _ = writeln!(o, "  {} ({}): family not in the built-in table; deploy asks Azure", d.vm_size, d.pool);
    }
}

fn table(o: &mut String, rows: &[Vec<String>]) {
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        let _ = writeln!(o, "  {}", line.join("  ").trim_end());
    }
}
