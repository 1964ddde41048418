//! Target local against doing the same by hand: time from `deploy` to a ready cluster (the
//! example: a head and two workers) and the sample job's round trip, with raydeploy and with
//! plain `ray start` / `ray job submit` from the same environment, alternately, in one private
//! network namespace. Prints the medians and the ratios (goal: raydeploy / by hand ≤ 1.1).
//!
//! `cargo bench --bench local` (needs what tests/local.rs needs: root, util-linux, iproute2 and
//! Ray's wheels, see .ci/run). `RAYDEPLOY_BENCH_ROUNDS` sets the rounds (default 3).

#[path = "../tests/support/local_env.rs"]
mod local_env;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use local_env::{LocalDeployment, expect_code, marked};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/local")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Runs `cmd` to success, returning its stdout.
fn run(mut cmd: Command, what: &str) -> String {
    let o = cmd.stdin(Stdio::null()).output().expect(what);
    assert!(
        o.status.success(),
        "{what}: {:?}\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The by-hand cluster: what a user types after reading Ray's docs, with the same sizes and
/// loopback addresses raydeploy uses, marked so that it can be stopped by PID afterwards.
struct ByHand<'a> {
    dep: &'a LocalDeployment,
    venv: PathBuf,
    mark: PathBuf,
    temp: PathBuf,
}

impl ByHand<'_> {
    fn ray(&self, args: &[&str]) -> Command {
        let mut c = self.dep.ns.command(self.venv.join("bin/ray"));
        let path = format!("{}:{}", self.venv.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        c.args(args).env("PATH", path).env("RAYDEPLOY_LOCAL_DIR", &self.mark).env("RAY_USAGE_STATS_ENABLED", "0");
        c
    }

    /// Seconds to a running cluster, and for the job.
    fn round(&self) -> (f64, f64) {
        let t = Instant::now();
        let temp = self.temp.to_string_lossy().into_owned();
        run(
            self.ray(&[
                "start",
                "--head",
                "--port",
                "46379",
                "--node-ip-address",
                "127.0.0.1",
                "--dashboard-host",
                "127.0.0.1",
                "--dashboard-port",
                "48265",
                "--temp-dir",
                &temp,
                "--num-cpus",
                "0",
                "--disable-usage-stats",
            ]),
            "ray start --head",
        );
        for i in 0..2 {
            let agent_port = (47000 + i).to_string();
            run(
                self.ray(&[
                    "start",
                    "--address",
                    "127.0.0.1:46379",
                    "--node-ip-address",
                    "127.0.0.1",
                    "--dashboard-agent-listen-port",
                    &agent_port,
                    "--num-cpus",
                    "1",
                    "--disable-usage-stats",
                ]),
                "ray start --address",
            );
        }
        let ready = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let workdir = self.dep.spec.parent().unwrap().join("jobs/sample");
        let out = run(
            self.ray(&[
                "job",
                "submit",
                "--address",
                "http://127.0.0.1:48265",
                "--working-dir",
                &workdir.to_string_lossy(),
                "--",
                "python",
                "sample.py",
            ]),
            "ray job submit",
        );
        assert!(out.contains("sum of squares: 10416"), "{out}");
        let job = t.elapsed().as_secs_f64();
        stop(&self.mark);
        let _ = std::fs::remove_dir_all(&self.temp);
        (ready, job)
    }
}

fn stop(mark: &Path) {
    for sig in [libc::SIGTERM, libc::SIGKILL] {
        for pid in marked(mark) {
            // SAFETY: kill(2) on processes carrying this benchmark's own mark.
            unsafe {
                libc::kill(pid as libc::pid_t, sig);
            }
        }
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end && !marked(mark).is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = std::env::var("RAYDEPLOY_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let dep = LocalDeployment::new(&example(), "local-bench");
    // The environment first (cached: the benchmark measures the cluster, not pip).
    expect_code(&dep.raydeploy(&["deploy"]), 0, "warm-up deploy");
    expect_code(&dep.raydeploy(&["destroy"]), 0, "warm-up destroy");
    let venv = std::fs::canonicalize(dep.dir.join("venv")).unwrap();
    let hand = ByHand {
        dep: &dep,
        venv,
        mark: dep.tmp.path().join("by-hand"),
        temp: PathBuf::from(format!("/tmp/raydeploy-bench-{}", std::process::id())),
    };

    let (mut rd_ready, mut rd_job, mut bh_ready, mut bh_job) = (vec![], vec![], vec![], vec![]);
    for i in 0..rounds {
        let t = Instant::now();
        expect_code(&dep.raydeploy(&["deploy"]), 0, "deploy");
        rd_ready.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let (out, _) = expect_code(&dep.raydeploy(&["job", "submit", "sample"]), 0, "job submit");
        assert!(out.contains("sum of squares: 10416"), "{out}");
        rd_job.push(t.elapsed().as_secs_f64());
        expect_code(&dep.raydeploy(&["destroy"]), 0, "destroy");

        let (r, j) = hand.round();
        bh_ready.push(r);
        bh_job.push(j);
        eprintln!(
            "round {}: raydeploy {:.1}s + {:.1}s, by hand {:.1}s + {:.1}s",
            i + 1,
            rd_ready[i],
            rd_job[i],
            bh_ready[i],
            bh_job[i]
        );
    }
    let (a, b, c, d) = (median(rd_ready), median(rd_job), median(bh_ready), median(bh_job));
    println!("local target, {rounds} rounds (medians): head + 2 workers to ready, then the sample job");
    println!("  deploy → ready   raydeploy {a:6.2}s   by hand {c:6.2}s   ratio {:.2}", a / c);
    println!("  job round trip   raydeploy {b:6.2}s   by hand {d:6.2}s   ratio {:.2}", b / d);
    println!(
        "  total            raydeploy {:6.2}s   by hand {:6.2}s   ratio {:.2} (goal ≤ 1.1)",
        a + b,
        c + d,
        (a + b) / (c + d)
    );
}
