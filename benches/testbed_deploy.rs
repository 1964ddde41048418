//! Target kubernetes on the real Kubernetes test bed (tests/support/testbed.rs), side by side in
//! one run on one bed: `raydeploy deploy` from nothing to ready against the same done by hand the
//! way KubeRay's guides do it:
//!
//! ```text
//! kubectl apply --server-side -f kuberay-operator/crds
//! helm install kuberay-operator kuberay-operator -n kuberay --create-namespace --skip-crds --wait
//! kubectl create namespace NS && kubectl create secret generic api --from-literal=token=… -n NS
//! helm install NAME ray-cluster -n NS -f ray-cluster.values.yaml   (the values raydeploy renders)
//! kubectl wait --for=condition=Ready pod -l ray.io/node-type=head -n NS   (again until the pod exists)
//! ```
//!
//! Both use the same charts (a local copy of ../shared/kuberay/charts: the bed has no network),
//! the same helm and kubectl binaries (with the same HOME, so the same kubectl cache), and the
//! same nodes;
//! raydeploy runs with its default settings (no RAYDEPLOY_POLL_SECONDS) and a docker stand-in that
//! builds and pushes by name (the by-hand path uses a prebuilt image; building one is not part of
//! the comparison). Each run starts from nothing: no CRDs, no operator, no namespaces. The KubeRay
//! operator's process (the bed's kwok runs the operator Deployment's pod, but no container) is run
//! while that pod runs, as a kubelet would: started when the pod is Running, stopped when it is
//! gone. Between runs both releases, the namespaces and the CRDs are removed.
//!
//! Prints, per Helm major and round, each side's seconds and raydeploy's phases (from its
//! `--output json` summary); then the medians and the ratios: raydeploy ÷ by hand (goal ≤ 1.0) and
//! a no-op redeploy from a fresh checkout ÷ the first deploy (goal ≤ 0.1).
//!
//! `cargo bench --bench testbed_deploy` (needs the bed's programs, tests/testbed/build.sh, and
//! root). `RAYDEPLOY_BENCH_ROUNDS` sets the rounds (default 5; each side goes first every other round), `RAYDEPLOY_BENCH_HELM` the Helm
//! majors (default `helm3,helm4`); `RAYDEPLOY_BENCH_KEEP=DIR` keeps each first deploy's
//! `.raydeploy` folder (state and phase logs) in DIR.

#[path = "../tests/support/testbed.rs"]
mod testbed;

#[path = "../tests/support/kube_env.rs"]
mod kube_env;

#[path = "../tests/support/bed_deploy.rs"]
mod bed_deploy;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bed_deploy::{BedDeploy, bed_spec, text};
use serde_json::Value;
use testbed::{NodeSpec, TestBed};

const TOKEN: &str = "bench-token-3f9a";

fn spec(name: &str) -> String {
    let secrets =
        "\nsecrets:\n  - name: api\n    exposeAsEnv: true\n    data:\n      token: { fromEnv: BENCH_TOKEN }\n";
    bed_spec(name, "    - { name: cpu, cpu: 1, memory: 2Gi, replicas: 2 }", secrets)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what} failed ({}):\n{}", o.status, text(o));
}

/// Runs a bed program to success.
fn run(bed: &TestBed, program: &str, args: &[&str]) -> String {
    let o = bed.command(bed.bin.join(program)).args(args).output().expect(program);
    ok(&o, &format!("{program} {}", args.join(" ")));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const CRDS: [&str; 4] = ["rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io", "raycronjobs.ray.io"];

/// Removes both releases, the namespaces and the KubeRay CRDs of a run, and waits until they are
/// gone and the operator's process has stopped.
fn teardown(bed: &TestBed, op: &Operator, helm: &str, ns: &str, operator_ns: &str, release: &str) {
    for (rel, n) in [(release, ns), ("kuberay-operator", operator_ns)] {
        let o = bed.command(bed.bin.join(helm)).args(["uninstall", rel, "-n", n, "--wait"]).output().unwrap();
        let out = text(&o);
        assert!(o.status.success() || out.contains("not found"), "{helm} uninstall {rel}: {out}");
    }
    let o = bed.kubectl_output(&["delete", "namespace", ns, operator_ns, "--ignore-not-found", "--wait=true"]);
    ok(&o, "kubectl delete namespace");
    let mut args = vec!["delete", "crd", "--ignore-not-found", "--wait=true"];
    args.extend(CRDS);
    ok(&bed.kubectl_output(&args), "kubectl delete crd");
    bed.wait_for("the operator's process to stop", Duration::from_secs(120), |note| {
        let running = op.running();
        *note = format!("running: {running}");
        (!running).then_some(())
    });
}

/// The KubeRay operator's process, run while a pod of the operator's Deployment runs (see the
/// module's documentation).
struct Operator {
    child: Mutex<Option<Child>>,
}

impl Operator {
    fn running(&self) -> bool {
        self.child.lock().unwrap().as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// One look at the operator's pods: start or stop the process to match.
    fn sync(&self, bed: &TestBed) {
        let o =
            bed.kubectl_output(&["get", "pods", "-A", "-l", "app.kubernetes.io/name=kuberay-operator", "-o", "json"]);
        let Ok(pods) = serde_json::from_slice::<Value>(&o.stdout) else { return };
        let runs = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null());
        let mut child = self.child.lock().unwrap();
        match (runs, child.as_mut()) {
            (true, None) => {
                let log = std::fs::File::create(bed.dir.join("logs/kuberay-operator.log")).unwrap();
                let mut c = bed.command(bed.bin.join("kuberay-operator"));
                c.args([
                    "--metrics-addr=127.0.0.1:8080",
                    "--health-probe-bind-address=127.0.0.1:8082",
                    "--enable-leader-election=false",
                    "--log-stdout-encoder=console",
                ])
                .stdout(log.try_clone().unwrap())
                .stderr(log);
                // SAFETY: prctl is async-signal-safe; the watching thread lives as long as the process.
                unsafe {
                    c.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                        Ok(())
                    });
                }
                *child = Some(c.spawn().expect("kuberay-operator starts"));
            }
            (false, Some(c)) => {
                // SAFETY: SIGTERM to the operator process this bench started, not yet reaped.
                unsafe {
                    libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
                }
                let _ = c.wait();
                *child = None;
            }
            _ => {}
        }
    }

    /// Watches the operator's pods (`kubectl get --watch`), syncing on every change.
    fn watch(bed: &'static TestBed) -> &'static Operator {
        let op: &'static Operator = Box::leak(Box::new(Operator { child: Mutex::new(None) }));
        std::thread::spawn(move || {
            loop {
                let mut c = bed.command(bed.bin.join("kubectl"));
                c.args(["get", "pods", "-A", "-l", "app.kubernetes.io/name=kuberay-operator", "--watch", "-o", "name"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null());
                if let Ok(mut w) = c.spawn() {
                    op.sync(bed);
                    for line in BufReader::new(w.stdout.take().unwrap()).lines() {
                        if line.is_err() {
                            break;
                        }
                        op.sync(bed);
                    }
                    let _ = w.kill();
                    let _ = w.wait();
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        op
    }
}

/// The by-hand deploy of `name`: seconds from the first command to the head pod Ready, and per step.
fn by_hand(bed: &TestBed, helm: &str, p: &BedDeploy, name: &str) -> (f64, Vec<(&'static str, f64)>) {
    let charts = p.spec_dir.join("vendor/kuberay");
    let crds = charts.join("kuberay-operator/crds").display().to_string();
    let values = p.spec_dir.join("rendered/helm/ray-cluster.values.yaml").display().to_string();
    let operator_chart = charts.join("kuberay-operator").display().to_string();
    let cluster_chart = charts.join("ray-cluster").display().to_string();
    let t0 = Instant::now();
    let mut steps = vec![];
    let mut lap = Instant::now();
    let mut step = |what: &'static str| {
        steps.push((what, lap.elapsed().as_secs_f64()));
        lap = Instant::now();
    };
    run(bed, "kubectl", &["apply", "--server-side", "-f", &crds]);
    step("crds");
    let operator = [
        "install",
        "kuberay-operator",
        &operator_chart,
        "-n",
        "kuberay",
        "--create-namespace",
        "--skip-crds",
        "--wait",
    ];
    run(bed, helm, &operator);
    step("operator");
    run(bed, "kubectl", &["create", "namespace", name]);
    let literal = format!("--from-literal=token={TOKEN}");
    run(bed, "kubectl", &["create", "secret", "generic", "api", &literal, "-n", name]);
    step("secret");
    run(bed, helm, &["install", name, &cluster_chart, "-n", name, "-f", &values]);
    step("cluster");
    // `kubectl wait` fails at once while no pod matches: run it again, as one does by hand.
    loop {
        let o = bed.kubectl_output(&[
            "wait",
            "--for=condition=Ready",
            "pod",
            "-l",
            "ray.io/node-type=head",
            "-n",
            name,
            "--timeout=300s",
        ]);
        if o.status.success() {
            break;
        }
        let out = text(&o);
        assert!(out.contains("no matching resources"), "kubectl wait: {out}");
        assert!(t0.elapsed() < Duration::from_secs(300), "the head pod never came");
        std::thread::sleep(Duration::from_millis(200));
    }
    step("head ready");
    (t0.elapsed().as_secs_f64(), steps)
}

/// `raydeploy deploy --output json`: its wall time and its summary's phases (id, outcome, seconds).
fn raydeploy_deploy(p: &BedDeploy) -> (f64, Vec<(String, String, f64)>) {
    let t0 = Instant::now();
    let o = p.run(&["deploy", "--auto-approve", "--output", "json"]);
    let secs = t0.elapsed().as_secs_f64();
    ok(&o, "raydeploy deploy");
    let summary: Value = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .expect("a summary line");
    let phases = summary["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap_or("").to_string(),
                p["outcome"].as_str().unwrap_or("").to_string(),
                p["seconds"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    (secs, phases)
}

fn project(bed: &'static TestBed, helm: &str, name: &str) -> BedDeploy {
    let mut p = BedDeploy::new(bed, helm, &spec(name));
    p.set("BENCH_TOKEN", TOKEN);
    // raydeploy as users run it: its own poll interval and ready timeout; the same HOME (and so
    // kubectl's and helm's caches) as the by-hand commands.
    p.vars.remove("RAYDEPLOY_POLL_SECONDS");
    p.set("HOME", bed.dir.join("home").display().to_string());
    // The same helm and kubectl binaries as the by-hand commands, not the tests' recording
    // wrappers (each of their calls starts a Python first): hard links named `helm` and
    // `kubectl` in one folder for every round, as a user's PATH holds them (so raydeploy asks
    // each binary for its version once, in the first round, and keeps the answer). The docker
    // stand-in stays behind them.
    let tools = bed.dir.join(format!("bench-bin-{helm}"));
    if !tools.is_dir() {
        std::fs::create_dir_all(&tools).unwrap();
        for (name, real) in [("helm", helm), ("kubectl", "kubectl")] {
            let (from, to) = (bed.bin.join(real), tools.join(name));
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).unwrap();
            }
        }
    }
    let path = format!("{}:{}", tools.display(), p.bin.display());
    p.set("PATH", path);
    p
}

/// The phases a deploy ran, from its summary: a no-op runs only the checks (preflight, ready).
fn ran(phases: &[(String, String, f64)]) -> Vec<&str> {
    phases.iter().filter(|(_, outcome, _)| outcome == "ran").map(|(id, _, _)| id.as_str()).collect()
}

fn phases_line(phases: &[(String, String, f64)]) -> String {
    phases
        .iter()
        .map(|(id, outcome, s)| format!("{id} {s:.1}{}", if outcome == "ran" { "" } else { "·" }))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    let rounds: usize = std::env::var("RAYDEPLOY_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let helms: Vec<String> = std::env::var("RAYDEPLOY_BENCH_HELM")
        .unwrap_or_else(|_| "helm3,helm4".into())
        .split(',')
        .map(str::to_string)
        .collect();
    let t0 = Instant::now();
    let bed: &'static TestBed = Box::leak(Box::new(TestBed::start()));
    for i in 0..2 {
        bed.add_node(&NodeSpec::new(&format!("bench-{i}")).cpu("8").memory("32Gi"));
    }
    let op = Operator::watch(bed);
    eprintln!("test bed and two nodes ready in {:.1} s", t0.elapsed().as_secs_f64());

    let mut summary = vec![];
    for helm in &helms {
        let (mut ours, mut hand, mut noop) = (vec![], vec![], vec![]);
        let mut paired = vec![];
        for round in 0..rounds {
            // raydeploy from nothing, then a no-op from a fresh checkout.
            let ours_run = || {
                let name = format!("rd-{helm}-{round}");
                let p = project(bed, helm, &name);
                let (first, phases) = raydeploy_deploy(&p);
                if let Some(keep) = std::env::var_os("RAYDEPLOY_BENCH_KEEP") {
                    // The first deploy's state and logs, for a look at where the time goes.
                    let to = std::path::Path::new(&keep).join(&name);
                    bed_deploy::copy_tree(&p.spec_dir.join(".raydeploy"), &to, &[]);
                }
                std::fs::remove_dir_all(p.spec_dir.join(".raydeploy")).unwrap();
                let (again, again_phases) = raydeploy_deploy(&p);
                assert_eq!(ran(&again_phases), ["preflight", "ready"], "the fresh-checkout deploy changes nothing");
                eprintln!("{helm} round {round}: raydeploy {first:.1} s ({})", phases_line(&phases));
                eprintln!(
                    "{helm} round {round}: no-op from a fresh checkout {again:.1} s ({})",
                    phases_line(&again_phases)
                );
                teardown(bed, op, helm, &name, "kuberay", &name);
                (first, again)
            };
            // By hand, with the values raydeploy renders for the same spec.
            let hand_run = || {
                let name = format!("hand-{helm}-{round}");
                let p = project(bed, helm, &name);
                ok(&p.run(&["render", "--out", "rendered"]), "raydeploy render");
                let (secs, steps) = by_hand(bed, helm, &p, &name);
                let steps: Vec<String> = steps.iter().map(|(s, t)| format!("{s} {t:.1}")).collect();
                eprintln!("{helm} round {round}: by hand {secs:.1} s ({})", steps.join(", "));
                teardown(bed, op, helm, &name, "kuberay", &name);
                secs
            };
            // Each side goes first every other round: the machine's load drifts.
            let ((first, again), secs) = if round % 2 == 0 {
                let o = ours_run();
                (o, hand_run())
            } else {
                let h = hand_run();
                (ours_run(), h)
            };
            ours.push(first);
            noop.push(again);
            hand.push(secs);
            paired.push(first / secs);
        }
        let (o, h, n) = (median(ours), median(hand), median(noop));
        summary.push(format!(
            "{helm}: raydeploy {o:.1} s, by hand {h:.1} s: ratio {:.2} (goal ≤ 1.0; median of the rounds' own \
             ratios {:.2}); no-op from a fresh checkout {n:.1} s: {:.2} of the first (goal ≤ 0.1)",
            o / h,
            median(paired),
            n / o
        ));
    }
    println!("testbed_deploy (medians of {rounds} rounds):");
    for line in summary {
        println!("  {line}");
    }
    bed.stop();
}
