//! Deploy benchmark on the fakes (tests/fakes, docker included) with fixed latencies, in units of
//! `RAYDEPLOY_FAKE_UNIT_MS` (default here 1000 ms): terraform apply 8, docker build 6 (each
//! image), docker push 2 (each image), the CRDs' apply, the operator's and the device plugin's
//! Helm upgrades and the Secret's apply 1 each, the ray-cluster upgrade 2, and the RayCluster is
//! ready 2 units after its release was installed or upgraded (`RAYDEPLOY_FAKE_READY_UNITS`).
//! Reads cost what the fakes cost to start (a Python process each). The spec has a CPU and a
//! GPU worker group: two images.
//!
//! Prints, from one run, side by side:
//! - the first deploy's wall time ÷ its critical path;
//! - a no-op deploy from a fresh checkout (no `.raydeploy/`) as a fraction of the first deploy
//!   (goal ≤ 0.05), the CPU time it took (raydeploy and every tool it started: the work, which
//!   the machine's other load leaves alone), and every call it made, each a read. The sandbox's home (and so the user's
//!   cache folder, where the versions tools reported are kept) persists between the runs, like a
//!   CI runner's; the same no-op on a brand-new runner (the cache folder emptied) is measured too,
//!   with the calls it makes beyond the first;
//! - a pip package added (both images rebuilt and pushed): wall time ÷ critical path (goal
//!   ≤ 1.05), where an image phase weighs its reads plus its longest build or push (two images
//!   built one after the other count as the longer one, the ideal), and ÷ the nominal latencies;
//! - a replicas change.
//!
//! `cargo bench --bench deploy` (about a minute).

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::Value;

#[path = "../tests/support/kube_env.rs"]
mod kube_env;

use kube_env::{Call, KubeEnv};

const UNIT_MS: u64 = 1000;
/// Units after the ray-cluster release is installed or upgraded until the RayCluster is ready.
const READY_UNITS: f64 = 2.0;

/// (tool and words, units): the fixed latencies.
const LATENCY: &[(&str, f64)] = &[
    ("terraform:apply", 8.0),
    ("docker:build", 6.0),
    ("docker:push", 2.0),
    ("kubectl:apply stdin:\"kind\":\"CustomResourceDefinition\"", 1.0),
    ("helm:upgrade kuberay-operator", 1.0),
    ("helm:upgrade nvidia-device-plugin", 1.0),
    ("kubectl:apply stdin:\"kind\":\"Secret\"", 1.0),
    ("helm:upgrade ray-cluster", 2.0),
];

/// Nominal phase weights in units: what the latencies add up to per phase when the work inside
/// a phase runs at the same time (both images at once).
fn nominal(phase: &str) -> f64 {
    match phase {
        "infra" => 8.0,
        "image-build" => 6.0,
        "image-push" => 2.0,
        "crds" | "operator" | "secrets" | "device-plugin" => 1.0,
        "cluster" => 2.0,
        "ready" => READY_UNITS,
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
  pipPackages: [{pip}]
cluster:
  namespace: ray
  head: {{ vmSize: Standard_D4s_v5, cpu: 1, memory: 4Gi }}
  workerGroups:
    - {{ name: cpu, vmSize: Standard_D4s_v5, cpu: 2, memory: 4Gi, replicas: {replicas} }}
    - {{ name: gpu, vmSize: Standard_NC4as_T4_v3, cpu: 2, memory: 8Gi, gpus: 1, replicas: 0, minReplicas: 0, maxReplicas: 1 }}
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
    /// CPU seconds (user and system) of raydeploy and every process it started: the work, which
    /// the machine's other load does not change as it changes the wall time.
    cpu: f64,
    t0: f64,
    phases: BTreeMap<String, (String, f64)>,
    calls: Vec<Call>,
}

impl Run {
    fn with(&self, outcome: &str) -> Vec<&str> {
        self.phases.iter().filter(|(_, (o, _))| o == outcome).map(|(p, _)| p.as_str()).collect()
    }

    fn phase_seconds(&self, id: &str) -> f64 {
        self.phases.get(id).map_or(0.0, |(_, s)| *s)
    }
}

fn epoch() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// CPU seconds of the waited-for children of this process (and theirs, waited for by them).
fn children_cpu() -> f64 {
    // SAFETY: getrusage(2) fills the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

fn deploy(env: &KubeEnv) -> Run {
    env.clear_calls();
    let t0 = epoch();
    let cpu0 = children_cpu();
    let t = Instant::now();
    let out =
        env.raydeploy_std().args(["deploy", "--auto-approve", "--output", "json"]).output().expect("run raydeploy");
    let seconds = t.elapsed().as_secs_f64();
    let cpu = children_cpu() - cpu0;
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
    Run { seconds, cpu, t0, phases, calls: env.calls() }
}

fn graph(env: &KubeEnv) -> raydeploy::graph::Graph {
    let args = raydeploy::cli::SpecArgs { spec: env.spec(), env: None, target: None };
    let (_, d) = raydeploy::cli::load_model(&args).unwrap_or_else(|r| panic!("{}", r.short()));
    let r = raydeploy::render::render(&d).unwrap();
    raydeploy::graph::graph(&d, &r, Default::default())
}

/// The length of the union of the calls' intervals.
fn union(calls: &[&Call]) -> f64 {
    let mut iv: Vec<(f64, f64)> = calls.iter().map(|c| (c.t0, c.t1)).collect();
    iv.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (mut total, mut end) = (0.0, f64::MIN);
    for (a, b) in iv {
        if b > end {
            total += b - a.max(end);
            end = b;
        }
    }
    total
}

/// A phase's weight on the critical path: its measured time, where the builds (or pushes) of
/// the two images count as the longest one alone (what they take when they run at once).
fn weight(run: &Run, id: &str) -> f64 {
    let words = match id {
        "image-build" => "build",
        "image-push" => "push",
        _ => return run.phase_seconds(id),
    };
    let per_image: Vec<&Call> = run.calls.iter().filter(|c| c.tool == "docker" && c.has(&[words])).collect();
    let longest = per_image.iter().map(|c| c.t1 - c.t0).fold(0.0, f64::max);
    run.phase_seconds(id) - union(&per_image) + longest
}

fn fmt_call(c: &Call, t0: f64) -> String {
    let argv: Vec<&str> = c
        .argv
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--kubeconfig") && !a.starts_with("-chdir") && !a.contains("/tmp/"))
        .take(7)
        .collect();
    format!("    +{:5.2}s {:5.2}s  {} {}", c.t0 - t0, c.t1 - c.t0, c.tool, argv.join(" "))
}

fn main() {
    // `cargo bench` passes harness flags; a filter that is not ours means "not this bench".
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"deploy".contains(a.as_str())) {
        return;
    }
    let unit_ms: u64 = std::env::var("RAYDEPLOY_FAKE_UNIT_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(UNIT_MS);
    let unit = unit_ms as f64 / 1000.0;
    let mut env =
        KubeEnv::new(&spec("\"requests==2.32.3\"", 1), &["terraform", "az", "kubelogin", "helm", "kubectl", "docker"]);
    let latency: Vec<String> = LATENCY.iter().map(|(w, u)| format!("{w}={u}")).collect();
    env.set("RAYDEPLOY_FAKE_LATENCY", latency.join(","))
        .set("RAYDEPLOY_FAKE_UNIT_MS", unit_ms.to_string())
        .set("RAYDEPLOY_FAKE_READY_UNITS", READY_UNITS.to_string())
        .set("RAYDEPLOY_FAKE_ACR", "acrbench.azurecr.io")
        .set("RAYDEPLOY_POLL_SECONDS", "0.05")
        .set("BENCH_API_TOKEN", "bench-secret-value");

    let g = graph(&env);
    let nominal_cp = g.critical_path(nominal) * unit;

    // 1. The first deploy.
    let first = deploy(&env);
    let first_cp = g.critical_path(|id| weight(&first, id));
    println!("deploy benchmark (unit {unit_ms} ms; aks on the fakes; a CPU and a GPU image)");
    println!(
        "first deploy: {:.2}s wall; ÷ critical path {:.2}s (measured phases) = {:.3}; ÷ nominal latencies {:.2}s = {:.3}",
        first.seconds,
        first_cp,
        first.seconds / first_cp,
        nominal_cp,
        first.seconds / nominal_cp
    );
    let per_phase: Vec<String> = g
        .phases
        .iter()
        .map(|p| format!("{} {:.2}s/{:.1}s", p.id, first.phase_seconds(p.id), nominal(p.id) * unit))
        .collect();
    println!("  phases (measured/nominal): {}", per_phase.join(", "));

    // 2. Nothing changed, from a fresh checkout (CI): one read per layer.
    env.fresh_checkout();
    let noop = deploy(&env);
    let mutating: Vec<String> = noop.calls.iter().filter(|c| c.mutating()).map(|c| c.line()).collect();
    println!(
        "no-op deploy from a fresh checkout: {:.2}s = {:.3} of the first deploy (goal ≤ 0.05); CPU {:.2}s; {} calls, mutating: {} (goal 0){}; ran: {}; skipped: {}",
        noop.seconds,
        noop.seconds / first.seconds,
        noop.cpu,
        noop.calls.len(),
        mutating.len(),
        if mutating.is_empty() { String::new() } else { format!(" {mutating:?}") },
        noop.with("ran").join(", "),
        noop.with("skipped").join(", "),
    );
    println!("  calls (start after the deploy began, duration, command):");
    let mut calls = noop.calls.clone();
    calls.sort_by(|a, b| a.t0.partial_cmp(&b.t0).unwrap());
    for c in &calls {
        println!("{}", fmt_call(c, noop.t0));
    }

    // 2b. The same on a brand-new runner: nothing in the user's cache folder.
    let _ = std::fs::remove_dir_all(env.tmp.path().join("home").join(".cache"));
    env.fresh_checkout();
    let cold = deploy(&env);
    let key = |c: &Call| {
        let words: Vec<&str> = c.argv.iter().map(String::as_str).filter(|a| !a.contains('/')).take(3).collect();
        format!("{} {}", c.tool, words.join(" "))
    };
    let mut beyond: Vec<String> = cold.calls.iter().map(key).collect();
    for c in &noop.calls {
        if let Some(i) = beyond.iter().position(|k| *k == key(c)) {
            beyond.remove(i);
        }
    }
    println!(
        "no-op deploy from a fresh checkout on a brand-new runner (empty cache folder): {:.2}s = {:.3} of the first deploy; CPU {:.2}s; {} calls, mutating: {}; beyond the no-op above: {}",
        cold.seconds,
        cold.seconds / first.seconds,
        cold.cpu,
        cold.calls.len(),
        cold.calls.iter().filter(|c| c.mutating()).count(),
        if beyond.is_empty() { "none".to_string() } else { beyond.join(", ") }
    );

    // 3. A pip package added: both images rebuilt and pushed, the release upgraded.
    env.write_spec(&spec("\"requests==2.32.3\", \"rich==13.9.4\"", 1));
    let pip = deploy(&env);
    let pip_cp = g.critical_path(|id| if pip.phases.contains_key(id) { weight(&pip, id) } else { 0.0 });
    let ran = pip.with("ran");
    let pip_nominal = g.critical_path(|id| if ran.contains(&id) { nominal(id) } else { 0.0 }) * unit;
    let builds: Vec<&Call> = pip.calls.iter().filter(|c| c.tool == "docker" && c.has(&["build"])).collect();
    let pushes: Vec<&Call> = pip.calls.iter().filter(|c| c.tool == "docker" && c.has(&["push"])).collect();
    let overlap = |v: &[&Call]| v.len() == 2 && v[0].t0 < v[1].t1 && v[1].t0 < v[0].t1;
    println!(
        "pip package added: {:.2}s wall; ÷ critical path {:.2}s = {:.3} (goal ≤ 1.05); ÷ nominal latencies {:.2}s = {:.3}; builds overlap: {}, pushes overlap: {}; ran: {}",
        pip.seconds,
        pip_cp,
        pip.seconds / pip_cp,
        pip_nominal,
        pip.seconds / pip_nominal,
        overlap(&builds),
        overlap(&pushes),
        ran.join(", ")
    );

    // 4. Only the replicas.
    env.write_spec(&spec("\"requests==2.32.3\", \"rich==13.9.4\"", 3));
    let replicas = deploy(&env);
    println!("only replicas changed: {:.2}s; ran: {}", replicas.seconds, replicas.with("ran").join(", "));

    println!(
        "summary: no-op/first {:.3} (goal ≤ 0.05; brand-new runner {:.3}) | pip change wall/critical path {:.3} (goal ≤ 1.05) | first deploy wall/critical path {:.3}",
        noop.seconds / first.seconds,
        cold.seconds / first.seconds,
        pip.seconds / pip_cp,
        first.seconds / first_cp
    );
}
