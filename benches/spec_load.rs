//! Spec loading with one large map (`cluster.env`), alone and with an environment overlay that
//! sets every key again, at 30k and 120k keys, measured side by side in one run. Prints the
//! median time of each and the 120k/30k ratio: loading is linear in the input when the ratio
//! stays near the key ratio (4), and quadratic when it nears its square (16).
//!
//! Run: `cargo bench --bench spec_load` (`RAYDEPLOY_BENCH_ROUNDS` sets the rounds, default 5).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SIZES: [usize; 2] = [30_000, 120_000];

fn spec(keys: usize) -> String {
    let mut s = String::from(
        "apiVersion: raydeploy/v1\nkind: RayDeployment\nname: bench\ntarget: local\ncluster:\n  head: {}\n  env:\n",
    );
    for i in 0..keys {
        s.push_str(&format!("    VAR_{i}: value-{i}\n"));
    }
    s
}

fn overlay(keys: usize) -> String {
    let mut s = String::from("cluster:\n  env:\n");
    for i in 0..keys {
        s.push_str(&format!("    VAR_{i}: changed-{i}\n"));
    }
    s
}

/// Writes `<dir>/<keys>/raydeploy.yaml` and its `environments/big.yaml`.
fn write_case(dir: &Path, keys: usize) -> PathBuf {
    let case = dir.join(keys.to_string());
    std::fs::create_dir_all(case.join("environments")).expect("case folder");
    std::fs::write(case.join("raydeploy.yaml"), spec(keys)).expect("write spec");
    std::fs::write(case.join("environments/big.yaml"), overlay(keys)).expect("write overlay");
    case.join("raydeploy.yaml")
}

fn load_once(path: &Path, env: Option<&str>, keys: usize) {
    let loaded = raydeploy::spec::load(path, env, &|_| None).unwrap_or_else(|r| panic!("{}", r.short()));
    assert_eq!(loaded.spec.cluster.env.len(), keys);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("RAYDEPLOY_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let paths: Vec<PathBuf> = SIZES.iter().map(|n| write_case(dir.path(), *n)).collect();
    for (label, env) in [("map", None), ("map + overlay", Some("big"))] {
        let mut times = vec![vec![]; SIZES.len()];
        // Interleave the sizes so both see the same machine conditions.
        for _ in 0..rounds {
            for (i, p) in paths.iter().enumerate() {
                let t = Instant::now();
                load_once(p, env, SIZES[i]);
                times[i].push(t.elapsed());
            }
        }
        let med: Vec<Duration> = times.into_iter().map(median).collect();
        for (n, m) in SIZES.iter().zip(&med) {
            println!(
                "load {label:<13} {n:>6} keys: median {:>9.1} ms, {:>6.2} µs per key",
                m.as_secs_f64() * 1e3,
                m.as_secs_f64() * 1e6 / *n as f64
            );
        }
        println!(
            "ratio {label} 120k/30k keys: {:.2} (linear ≈ 4, quadratic ≈ 16)",
            med[1].as_secs_f64() / med[0].as_secs_f64()
        );
    }
}
