//! Deploy benchmark on the fakes (tests/fakes, docker included) with fixed latencies per phase,
//! in units of `RAYDEPLOY_FAKE_UNIT_MS` (default here 400 ms): infra 8, image build 6, push 2,
//! crds + operator 2, secrets 1, cluster 2, ready 3 (three reads of the RayCluster).
//!
//! Prints: the first deploy's wall time ÷ the critical path (nominal, from those latencies, and
//! measured, from the phases' own durations in this run) and ÷ the sequential sum; a no-op
//! redeploy from a fresh checkout (its mutating calls and its time as a fraction of the first
//! deploy); and which phases ran after changing only `pipPackages`, then only `replicas`.
//!
//! `cargo bench --bench deploy` (about 30 s).

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::Value;

#[path = "../tests/support/kube_env.rs"]
mod kube_env;

use kube_env::KubeEnv;

const UNIT_MS: u64 = 400;

/// (tool and words, units): the fixed latencies.
const LATENCY: &[(&str, f64)] = &[
    ("terraform:apply", 8.0),
    ("docker:build", 6.0),
    ("docker:push", 2.0),
    ("kubectl:apply stdin:\"kind\":\"CustomResourceDefinition\"", 1.0),
    ("helm:upgrade kuberay-operator", 1.0),
    ("kubectl:apply stdin:\"kind\":\"Secret\"", 1.0),
    ("helm:upgrade ray-cluster", 2.0),
    ("kubectl:get raycluster", 1.0),
];

/// Nominal phase weights in units (what the latencies add up to per phase).
fn nominal(phase: &str) -> f64 {
    match phase {
        "infra" => 8.0,
        "image-build" => 6.0,
        "image-push" => 2.0,
        "crds" | "operator" | "secrets" => 1.0,
        "cluster" => 2.0,
        "ready" => 3.0,
        _ => 0.0,
    }
}

fn spec(pip: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: bench
target: aks
azure:
  location: eastus
  systemPool: {{ vmSize: Standard_D2s_v5, count: 1 }}
image:
  rayVersion: "2.52.0"
  python: "3.12"
  pipPackages: ["{pip}"]
cluster:
  namespace: ray
  head: {{ vmSize: Standard_D4s_v5, cpu: 1, memory: 4Gi }}
  workerGroups:
    - {{ name: cpu, vmSize: Standard_D4s_v5, cpu: 2, memory: 4Gi, replicas: {replicas} }}
  mounts:
    - {{ name: data, type: azureblob, storageAccount: stbenchdata, container: data, path: /mnt/data }}
secrets:
  - name: app-creds
    data:
      API_TOKEN: {{ fromEnv: BENCH_API_TOKEN }}
"#
    )
}

struct Run {
    seconds: f64,
    phases: BTreeMap<String, (String, f64)>,
}

impl Run {
    fn with(&self, outcome: &str) -> Vec<&str> {
        self.phases.iter().filter(|(_, (o, _))| o == outcome).map(|(p, _)| p.as_str()).collect()
    }
}

fn deploy(env: &KubeEnv) -> Run {
    let t = Instant::now();
    let out =
        env.raydeploy_std().args(["deploy", "--auto-approve", "--output", "json"]).output().expect("run raydeploy");
    let seconds = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "deploy failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let mut phases = BTreeMap::new();
    for line in stdout.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line)
            && v["event"] == "summary"
        {
            for p in v["phases"].as_array().unwrap() {
                phases.insert(
                    p["id"].as_str().unwrap().to_string(),
                    (p["outcome"].as_str().unwrap().to_string(), p["seconds"].as_f64().unwrap()),
                );
            }
        }
    }
    Run { seconds, phases }
}

fn graph(env: &KubeEnv) -> raydeploy::graph::Graph {
    let args = raydeploy::cli::SpecArgs { spec: env.spec(), env: None, target: None };
    let (_, d) = raydeploy::cli::load_model(&args).unwrap_or_else(|r| panic!("{}", r.short()));
    let r = raydeploy::render::render(&d).unwrap();
    raydeploy::graph::graph(&d, &r, Default::default())
}

fn main() {
    // `cargo bench` passes harness flags; a filter that is not ours means "not this bench".
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"deploy".contains(a.as_str())) {
        return;
    }
    let unit_ms: u64 = std::env::var("RAYDEPLOY_FAKE_UNIT_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(UNIT_MS);
    let unit = unit_ms as f64 / 1000.0;
    let mut env =
        KubeEnv::new(&spec("requests==2.32.3", 1), &["terraform", "az", "kubelogin", "helm", "kubectl", "docker"]);
    let latency: Vec<String> = LATENCY.iter().map(|(w, u)| format!("{w}={u}")).collect();
    env.set("RAYDEPLOY_FAKE_LATENCY", latency.join(","))
        .set("RAYDEPLOY_FAKE_UNIT_MS", unit_ms.to_string())
        .set("RAYDEPLOY_FAKE_ACR", "acrbench.azurecr.io")
        .set("RAYDEPLOY_POLL_SECONDS", "0.01")
        .set("BENCH_API_TOKEN", "bench-secret-value");

    let g = graph(&env);
    let nominal_cp = g.critical_path(nominal) * unit;
    let nominal_sum: f64 = g.phases.iter().map(|p| nominal(p.id)).sum::<f64>() * unit;

    let first = deploy(&env);
    let measured_cp = g.critical_path(|id| first.phases.get(id).map_or(0.0, |(_, s)| *s));
    let measured_sum: f64 = first.phases.values().map(|(_, s)| s).sum();
    println!("deploy benchmark (unit {unit_ms} ms; aks on the fakes)");
    println!("first deploy: {:.2}s wall", first.seconds);
    println!(
        "  ÷ critical path: nominal {:.2}s → {:.3}; measured phase times {:.2}s → {:.3} (goal ≤ 1.05)",
        nominal_cp,
        first.seconds / nominal_cp,
        measured_cp,
        first.seconds / measured_cp
    );
    println!(
        "  ÷ sequential sum: nominal {:.2}s → {:.3}; measured {:.2}s → {:.3}",
        nominal_sum,
        first.seconds / nominal_sum,
        measured_sum,
        first.seconds / measured_sum
    );

    let per_phase: Vec<String> = g
        .phases
        .iter()
        .map(|p| {
            format!("{} {:.2}s/{:.2}s", p.id, first.phases.get(p.id).map_or(0.0, |(_, s)| *s), nominal(p.id) * unit)
        })
        .collect();
    println!("  phases (measured/nominal): {}", per_phase.join(", "));

    env.fresh_checkout();
    env.clear_calls();
    let noop = deploy(&env);
    let mutating: Vec<String> = env.calls().iter().filter(|c| c.mutating()).map(|c| c.line()).collect();
    println!(
        "no-op redeploy from a fresh checkout: {:.2}s = {:.3} of the first deploy; mutating calls: {} (goal 0){}; ran: {}",
        noop.seconds,
        noop.seconds / first.seconds,
        mutating.len(),
        if mutating.is_empty() { String::new() } else { format!(" {mutating:?}") },
        noop.with("ran").join(", ")
    );

    for (what, text) in [("pipPackages", spec("requests==2.32.4", 1)), ("replicas", spec("requests==2.32.4", 3))] {
        env.write_spec(&text);
        let r = deploy(&env);
        println!("only {what} changed: {:.2}s; ran: {}", r.seconds, r.with("ran").join(", "));
    }
}
