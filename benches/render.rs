//! Validate + render time for specs with 8 and 128 worker groups, measured side by side in one
//! run. Prints the median time of each, their ratio and the time per group.
//!
//! Run: `cargo bench --bench render`

use std::time::{Duration, Instant};

fn spec(groups: usize) -> String {
    let mut s = String::from(
        "apiVersion: raydeploy/v1\nkind: RayDeployment\nname: bench\nazure:\n  location: westeurope\n  kubernetesVersion: \"1.30\"\nimage:\n  pipPackages: [\"xgboost==2.1.1\"]\ncluster:\n  head:\n    vmSize: Standard_D8s_v5\n  env: { A: b }\n  autoscaler: { enabled: true }\n  workerGroups:\n",
    );
    for i in 0..groups {
        let vm = ["Standard_D8s_v5", "Standard_E16s_v5", "Standard_D4s_v5"][i % 3];
        s.push_str(&format!("    - {{ name: g{i}, vmSize: {vm}, replicas: 1, minReplicas: 0, maxReplicas: 4 }}\n"));
    }
    s.push_str("jobs:\n  - { name: j, entrypoint: python main.py }\n");
    s
}

fn run_once(path: &std::path::Path) -> usize {
    let loaded = raydeploy::spec::load(path, None, &|_| None).expect("valid spec");
    let d = raydeploy::model::build(&loaded, None).expect("valid model");
    raydeploy::render::render(&d).expect("renders").files.values().map(String::len).sum()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sizes = [8usize, 128];
    let paths: Vec<_> = sizes
        .iter()
        .map(|n| {
            let p = dir.path().join(format!("spec-{n}.yaml"));
            std::fs::write(&p, spec(*n)).expect("write spec");
            p
        })
        .collect();
    for p in &paths {
        run_once(p); // warm-up
    }
    let rounds = 30;
    let mut times = vec![vec![]; sizes.len()];
    // Interleave the sizes so both see the same machine conditions.
    for _ in 0..rounds {
        for (i, p) in paths.iter().enumerate() {
            let t = Instant::now();
            std::hint::black_box(run_once(p));
            times[i].push(t.elapsed());
        }
    }
    let med: Vec<Duration> = times.into_iter().map(median).collect();
    for (n, m) in sizes.iter().zip(&med) {
        println!(
            "validate+render {n:>3} worker groups: median {:>8.2} ms, {:>6.1} µs per group",
            m.as_secs_f64() * 1e3,
            m.as_secs_f64() * 1e6 / *n as f64
        );
    }
    println!("ratio 128/8 groups: {:.2} (group count ratio 16.00)", med[1].as_secs_f64() / med[0].as_secs_f64());
}
