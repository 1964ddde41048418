//! Whole deploys of target aks through the real binary: terraform, az, kubelogin, helm and
//! kubectl are the fakes of tests/fakes (call log, emulated Terraform state and cluster); docker
//! is the real CLI on a private engine pushing to a private registry on 127.0.0.1 (the fake
//! Terraform reports that registry as the ACR), behind a shim that records its calls in the same
//! log and can inject faults (tests/support/docker_shim.py). The Ray base image is a busybox
//! stand-in built inside the engine: nothing is pulled.
//!
//! Checked from the call log and the state: phase order and parallelism; a redeploy makes no
//! mutating call, nor does one from a fresh checkout (`--with-jobs` too: the job's RayJob says
//! it succeeded with these inputs), but a change to the job's code submits it again; a change
//! runs only the phases downstream of it; every mutating phase × {non-zero exit, hang past its timeout, SIGINT}
//! fails cleanly and a re-run completes without repeating completed mutating phases; a second
//! concurrent deploy fails fast naming the holder; canary secret values appear in no output,
//! log, state or rendered file; destroy runs in reverse order, needs --auto-approve without a
//! terminal, and is idempotent.
//!
//! Needs root (dockerd) and docker.io, busybox-static and docker-registry (installed with apt-get
//! when missing). Run alone with `cargo test --test deploy_flow`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "support/docker_env.rs"]
mod docker_env;
#[path = "support/kube_env.rs"]
mod kube_env;

use docker_env::DockerEnv;
use kube_env::{Call, KubeEnv};

const BASE_TAG: &str = "2.52.0-py312";
const CANARY_ENV: &str = "canary-env-4b1d9e7c2af0";
const CANARY_FILE: &str = "canary-file-93ce0f51d8b7";
const CANARY_KV: &str = "canary-kv-6a2f8b03e4c1";

/// Phases of an aks deploy with `--with-jobs` that change something.
const MUTATING: [&str; 10] =
    ["infra", "image-build", "image-push", "credentials", "crds", "operator", "secrets", "mounts", "cluster", "jobs"];

fn spec(name: &str, pip: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: {name}
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
    - {{ name: cpu, vmSize: Standard_D4s_v5, cpu: 2, memory: 4Gi, replicas: {replicas}, minReplicas: 0, maxReplicas: 4 }}
  mounts:
    - {{ name: data, type: azureblob, storageAccount: stflowdata, container: data, path: /mnt/data }}
secrets:
  - name: app-creds
    data:
      API_TOKEN: {{ fromEnv: FLOW_API_TOKEN }}
      DB_CONN: {{ fromFile: ./conn.txt }}
      DB_PASSWORD: {{ fromKeyVault: {{ vault: kv-flow, secret: db-password }} }}
    exposeAsEnv: true
jobs:
  - name: hello
    entrypoint: python hello.py
    workingDir: ./jobs/hello
"#
    )
}

// ---------------------------------------------------------------------------------------------
// One engine and registry for the whole binary, stopped at exit.

static SHARED: Mutex<Option<DockerEnv>> = Mutex::new(None);

extern "C" fn stop_shared() {
    if let Ok(mut g) = SHARED.lock() {
        drop(g.take());
    }
}

/// (DOCKER_HOST, registry address). The first call starts both, builds the stand-in base and
/// deploys once so the image's layers are in the engine's build cache (later builds of the same
/// Dockerfile are cache hits, well inside the short command timeouts of the hang tests).
fn shared() -> (String, String) {
    let mut g = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if g.is_none() {
        let env = DockerEnv::start().with_base("rayproject/ray", &[BASE_TAG]);
        let out = (env.engine.host.clone(), env.registry.addr.clone());
        *g = Some(env);
        // SAFETY: registers a plain function; it only drops the shared engine and registry.
        unsafe {
            libc::atexit(stop_shared);
        }
        drop(g);
        let warm = Flow::with(out.clone(), "warmup");
        warm.deploy(&[]).ok();
        return out;
    }
    let d = g.as_ref().unwrap();
    (d.engine.host.clone(), d.registry.addr.clone())
}

// ---------------------------------------------------------------------------------------------

struct Flow {
    k: KubeEnv,
    name: String,
}

/// One `raydeploy` run.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    /// phase → outcome (from the `--output json` summary).
    outcomes: BTreeMap<String, String>,
}

impl Run {
    fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "exit {}\nstdout:\n{}\nstderr:\n{}", self.code, self.stdout, self.stderr);
        self
    }

    fn with(&self, outcome: &str) -> BTreeSet<String> {
        self.outcomes.iter().filter(|(_, o)| *o == outcome).map(|(p, _)| p.clone()).collect()
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn parse_run(out: std::process::Output) -> Run {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut outcomes = BTreeMap::new();
    for line in stdout.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line)
            && v["event"] == "summary"
        {
            for p in v["phases"].as_array().unwrap() {
                outcomes.insert(p["id"].as_str().unwrap().to_string(), p["outcome"].as_str().unwrap().to_string());
            }
        }
    }
    Run { code: out.status.code().unwrap_or(-1), stdout, stderr, outcomes }
}

impl Flow {
    fn new(name: &str) -> Flow {
        Flow::with(shared(), name)
    }

    fn with((host, registry): (String, String), name: &str) -> Flow {
        let mut k =
            KubeEnv::new(&spec(name, "requests==2.32.3", 1), &["terraform", "az", "kubelogin", "helm", "kubectl"]);
        let shim = k.bin.join("docker");
        std::os::unix::fs::symlink(kube_env::root().join("tests/support/docker_shim.py"), shim).unwrap();
        let real = kube_env::which("docker").expect("docker CLI installed");
        k.set("RAYDEPLOY_REAL_DOCKER", real.display().to_string())
            .set("DOCKER_HOST", host)
            .set("DOCKER_CLI_HINTS", "false")
            .set("RAYDEPLOY_FAKE_ACR", registry)
            .set("RAYDEPLOY_POLL_SECONDS", "0.05")
            .set("FLOW_API_TOKEN", CANARY_ENV)
            .set("RAYDEPLOY_FAKE_KV_KV_FLOW_DB_PASSWORD", CANARY_KV);
        std::fs::write(k.spec_dir.join("conn.txt"), format!("{CANARY_FILE}\n")).unwrap();
        std::fs::create_dir_all(k.spec_dir.join("jobs/hello")).unwrap();
        std::fs::write(k.spec_dir.join("jobs/hello/hello.py"), "print('hello')\n").unwrap();
        Flow { k, name: name.to_string() }
    }

    fn run(&self, args: &[&str]) -> Run {
        parse_run(self.k.raydeploy_std().args(args).output().expect("run raydeploy"))
    }

    /// `deploy --auto-approve --with-jobs --output json` plus `extra`.
    fn deploy(&self, extra: &[&str]) -> Run {
        let mut args = vec!["deploy", "--auto-approve", "--with-jobs", "--output", "json"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn state(&self) -> Value {
        self.k.state(&self.name)
    }

    fn status(&self, phase: &str) -> String {
        self.k.phase_status(&self.name, phase)
    }

    fn mutating_calls(&self) -> Vec<String> {
        self.k.calls().iter().filter(|c| c.mutating()).map(Call::line).collect()
    }
}

/// A call of `tool` with every word in `words` (`stdin:TEXT` as in the fakes' rules).
fn matches(c: &Call, tool: &str, words: &[&str]) -> bool {
    c.tool == tool
        && words.iter().all(|w| w.strip_prefix("stdin:").map_or_else(|| c.has(&[w]), |t| c.stdin.contains(t)))
}

/// The first such call.
fn first<'a>(calls: &'a [Call], tool: &str, words: &[&str]) -> &'a Call {
    calls
        .iter()
        .find(|c| matches(c, tool, words))
        .unwrap_or_else(|| panic!("no call {tool} {words:?} in:\n{}", lines(calls)))
}

/// The last such call: a phase may be probed early (its answer dropped when something upstream
/// then changed), so the read a phase acts on is its last.
fn last<'a>(calls: &'a [Call], tool: &str, words: &[&str]) -> &'a Call {
    calls
        .iter()
        .rev()
        .find(|c| matches(c, tool, words))
        .unwrap_or_else(|| panic!("no call {tool} {words:?} in:\n{}", lines(calls)))
}

fn lines(calls: &[Call]) -> String {
    calls.iter().map(|c| format!("{:.3}-{:.3} {}", c.t0, c.t1, c.line())).collect::<Vec<_>>().join("\n")
}

/// The fault rule that hits the mutating command of `phase`.
fn rule(phase: &str) -> &'static str {
    match phase {
        "infra" => "terraform:apply",
        "image-build" => "docker:build",
        "image-push" => "docker:push",
        "credentials" => "az:get-credentials",
        "crds" => "kubectl:apply stdin:\"kind\":\"CustomResourceDefinition\"",
        "operator" => "helm:upgrade kuberay-operator",
        "secrets" => "kubectl:apply stdin:\"kind\":\"Secret\"",
        "mounts" => "kubectl:apply stdin:\"kind\":\"PersistentVolumeClaim\"",
        "cluster" => "helm:upgrade ray-cluster",
        "jobs" => "kubectl:apply stdin:\"entrypoint\":\"python",
        _ => unreachable!("{phase}"),
    }
}

#[test]
fn first_deploy_runs_in_order_and_in_parallel_and_redeploys_change_nothing() {
    let mut f = Flow::new("order");
    // Terraform's apply answers only once the image has been built: with infra ∥ image-build
    // that happens during the apply; run one after the other, the gate would time out and the
    // ordering assertions below fail.
    f.k.set("RAYDEPLOY_FAKE_WAIT", "terraform:apply=call:docker build").set("RAYDEPLOY_FAKE_WAIT_SECONDS", "60");
    let r = f.deploy(&[]);
    r.ok();
    assert_eq!(
        r.with("ran"),
        set(&[
            "preflight",
            "infra",
            "image-build",
            "image-push",
            "credentials",
            "crds",
            "operator",
            "secrets",
            "mounts",
            "cluster",
            "ready",
            "jobs"
        ])
    );
    let calls = f.k.calls();
    let apply = first(&calls, "terraform", &["apply"]);
    let init = first(&calls, "terraform", &["init"]);
    for pre in [
        first(&calls, "terraform", &["version"]),
        first(&calls, "az", &["account", "show"]),
        first(&calls, "docker", &["version"]),
        first(&calls, "helm", &["version"]),
        first(&calls, "kubectl", &["version"]),
    ] {
        assert!(pre.t1 <= init.t0, "preflight before infra: {}\n{}", pre.line(), lines(&calls));
    }
    // infra ∥ image-build: the image phase was at work while Terraform applied.
    let build = first(&calls, "docker", &["build"]);
    let first_image_call = calls.iter().find(|c| c.tool == "docker" && !c.has(&["version"])).unwrap();
    assert!(first_image_call.t0 < apply.t1, "image-build started during infra:\n{}", lines(&calls));
    // image-push needs the registry (infra) and the image.
    let push = first(&calls, "docker", &["push"]);
    assert!(push.t0 >= apply.t1 && push.t0 >= build.t1, "{}", lines(&calls));
    let push_target = push.argv.last().unwrap();
    assert!(
        push_target.starts_with(&f.k.vars["RAYDEPLOY_FAKE_ACR"]),
        "pushed to the ACR infra reported: {push_target}"
    );
    assert!(!f.k.find("az", &["acr", "login", "--name", "acrorder"]).is_empty());
    let creds = first(&calls, "az", &["aks", "get-credentials"]);
    assert!(creds.t0 >= apply.t1);
    let crds = first(&calls, "kubectl", &["apply", "stdin:\"kind\":\"CustomResourceDefinition\""]);
    let secrets = first(&calls, "kubectl", &["apply", "stdin:\"kind\":\"Secret\""]);
    let mounts = first(&calls, "kubectl", &["apply", "stdin:\"kind\":\"PersistentVolumeClaim\""]);
    for c in [crds, secrets, mounts] {
        assert!(c.t0 >= creds.t1, "after credentials: {}", c.line());
        assert!(c.has(&["--kubeconfig"]), "the deployment's kubeconfig: {}", c.line());
    }
    let operator = first(&calls, "helm", &["upgrade", "kuberay-operator"]);
    assert!(operator.t0 >= crds.t1);
    // The ray-cluster release goes in once the operator is installed; ready needs both.
    let rollout = first(&calls, "kubectl", &["rollout", "status", "deployment"]);
    assert!(rollout.t0 >= operator.t1, "{}", lines(&calls));
    let cluster = first(&calls, "helm", &["upgrade", "ray-cluster"]);
    for dep in [crds, secrets, mounts, push, rollout] {
        assert!(cluster.t0 >= dep.t1, "cluster after {}\n{}", dep.line(), lines(&calls));
    }
    let ready = last(&calls, "kubectl", &["get", "raycluster"]);
    for dep in [rollout, cluster] {
        assert!(ready.t0 >= dep.t1, "ready after {}\n{}", dep.line(), lines(&calls));
    }
    let job = first(&calls, "kubectl", &["apply", "stdin:\"entrypoint\":\"python"]);
    assert!(job.t0 >= cluster.t1);
    assert!(f.state()["phases"].as_object().unwrap().values().all(|p| p["status"] == "completed"));

    // Nothing changed: everything but the checks is skipped, and nothing mutates.
    f.k.unset("RAYDEPLOY_FAKE_WAIT");
    f.k.clear_calls();
    let r = f.deploy(&[]);
    r.ok();
    assert_eq!(r.with("ran"), set(&["preflight", "ready"]));
    assert_eq!(f.mutating_calls(), Vec::<String>::new());

    // A fresh checkout (no .raydeploy) of the same spec: live state says everything is in place,
    // the job too (its RayJob, stamped with the job's inputs by the jobs phase, succeeded).
    f.k.fresh_checkout();
    f.k.clear_calls();
    let r = f.deploy(&[]);
    r.ok();
    let calls = f.k.calls();
    assert_eq!(f.mutating_calls(), Vec::<String>::new(), "{}", lines(&calls));
    let skipped = r.with("skipped");
    for p in ["infra", "image-build", "image-push", "crds", "operator", "secrets", "mounts", "cluster", "jobs"] {
        assert!(skipped.contains(p), "{p} skipped from live state: {:?}", r.outcomes);
    }
    assert!(r.with("ran").contains("credentials"), "credentials fetches the kubeconfig again (a read)");

    // The job's code changed (in the image, not in its manifest): the image is rebuilt, the
    // cluster takes it, and the job is submitted again, from this checkout's state or not.
    std::fs::write(f.k.spec_dir.join("jobs/hello/hello.py"), "print('hello again')\n").unwrap();
    f.k.clear_calls();
    let r = f.deploy(&[]);
    r.ok();
    assert!(r.with("ran").is_superset(&set(&["image-build", "image-push", "cluster", "jobs"])), "{:?}", r.outcomes);
    let calls = f.k.calls();
    let job = first(&calls, "kubectl", &["apply", "stdin:\"entrypoint\":\"python"]);
    assert!(job.stdin.contains("raydeploy.io/job-inputs"), "stamped: {}", job.stdin);

    // status reports every phase and the live outputs.
    let st = f.run(&["status", "--output", "json"]);
    st.ok();
    let json: Value = serde_json::from_str(&st.stdout).expect("status JSON");
    assert!(st.stdout.contains("acr_login_server"), "{}", st.stdout);
    assert!(json.to_string().contains("\"completed\""), "{json}");
}

#[test]
fn a_change_runs_only_the_phases_downstream_of_it() {
    let f = Flow::new("downstream");
    f.deploy(&[]).ok();

    f.k.write_spec(&spec("downstream", "requests==2.32.4", 1));
    f.k.clear_calls();
    let r = f.deploy(&[]);
    r.ok();
    // The job runs in the image (`--with-jobs`): a new image is new inputs for it too.
    assert_eq!(r.with("ran"), set(&["preflight", "image-build", "image-push", "cluster", "ready", "jobs"]));
    assert_eq!(f.k.find("terraform", &["apply"]).len(), 0);

    f.k.write_spec(&spec("downstream", "requests==2.32.4", 3));
    f.k.clear_calls();
    let r = f.deploy(&[]);
    r.ok();
    let ran = r.with("ran");
    assert!(ran.contains("cluster") && !ran.contains("image-build") && !ran.contains("operator"), "{ran:?}");
    assert!(!ran.contains("secrets") && !ran.contains("crds") && !ran.contains("mounts"), "{ran:?}");
    assert!(!ran.contains("jobs"), "the same image and manifest: the job is not submitted again: {ran:?}");
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Fail,
    Hang,
    Sigint,
}

/// One cell of the fault matrix: the fault in `phase`'s mutating command, then a clean re-run.
fn fault_cell(phase: &str, fault: Fault) {
    let name = format!(
        "{}-{}",
        match fault {
            Fault::Fail => "fail",
            Fault::Hang => "hang",
            Fault::Sigint => "int",
        },
        phase
    );
    let mut f = Flow::new(&name);
    let (tool, _) = rule(phase).split_once(':').unwrap();
    let action = match fault {
        Fault::Fail => "fail",
        Fault::Hang | Fault::Sigint => "hang",
    };
    f.k.set("RAYDEPLOY_FAKE_FAULTS", format!("{}={action}", rule(phase)));
    let hung = |f: &Flow| f.k.calls().iter().any(|c| c.tool == tool && c.exit == "hang");
    let r = match fault {
        Fault::Fail => f.deploy(&[]),
        Fault::Hang => {
            // The command timeout is what is tested, so it is a duration; the faulted command
            // must have reached its hang before it fires. A run where the timeout came first
            // says nothing: run again with a longer timeout, a bounded number of times.
            let mut timeout = 4;
            loop {
                f.k.set("RAYDEPLOY_COMMAND_TIMEOUT", timeout.to_string());
                let r = f.deploy(&[]);
                if hung(&f) || timeout >= 32 {
                    break r;
                }
                timeout *= 2;
            }
        }
        Fault::Sigint => {
            let mut child =
                f.k.raydeploy_std()
                    .args(["deploy", "--auto-approve", "--with-jobs", "--output", "json"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
            let end = Instant::now() + Duration::from_secs(120);
            while !hung(&f) {
                assert!(Instant::now() < end, "{phase}: the fault never hit:\n{}", lines(&f.k.calls()));
                if let Ok(Some(s)) = child.try_wait() {
                    panic!("{phase}: deploy ended ({s}) before the fault:\n{}", lines(&f.k.calls()));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // SAFETY: SIGINT to the child this test spawned.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGINT);
            }
            parse_run(child.wait_with_output().unwrap())
        }
    };
    let label = format!("{phase} × {fault:?}");
    let want_code = if let Fault::Sigint = fault { 130 } else { 1 };
    assert_eq!(r.code, want_code, "{label}\n{}", r.stderr);
    let want_status = if let Fault::Sigint = fault { "interrupted" } else { "failed" };
    assert_eq!(f.status(phase), want_status, "{label}: {}", f.state());
    if !matches!(fault, Fault::Fail) {
        assert!(
            f.k.calls().iter().any(|c| c.tool == tool && c.exit == "signal 2"),
            "{label}: the hung command got SIGINT:\n{}",
            lines(&f.k.calls())
        );
    }
    if let Fault::Hang = fault {
        assert!(r.stderr.contains("timed out"), "{label}: {}", r.stderr);
    }
    assert!(!f.k.state_dir(&name).join("lock").exists(), "{label}: lock released");
    // Nothing after the faulted phase started.
    let completed: Vec<String> =
        MUTATING.iter().filter(|p| f.status(p) == "completed").map(|p| p.to_string()).collect();
    if phase != "jobs" {
        assert!(r.with("not_run").contains("ready"), "{label}: nothing after the fault started: {:?}", r.outcomes);
    }

    f.k.unset("RAYDEPLOY_FAKE_FAULTS").unset("RAYDEPLOY_COMMAND_TIMEOUT");
    f.k.clear_calls();
    let again = f.deploy(&[]);
    again.ok();
    for p in &completed {
        assert_eq!(again.outcomes[p], "skipped", "{label}: completed {p} not repeated: {:?}", again.outcomes);
    }
    assert_eq!(again.outcomes[phase], "ran", "{label}: {:?}", again.outcomes);
    if completed.iter().any(|p| p == "infra") {
        assert!(f.k.find("terraform", &["apply"]).is_empty(), "{label}");
    }
    assert!(MUTATING.iter().all(|p| f.status(p) == "completed"), "{label}: {}", f.state());
}

#[test]
fn fault_matrix_non_zero_exit() {
    for p in MUTATING {
        fault_cell(p, Fault::Fail);
    }
}

#[test]
fn fault_matrix_hang_past_timeout() {
    for p in MUTATING {
        fault_cell(p, Fault::Hang);
    }
}

#[test]
fn fault_matrix_sigint() {
    for p in MUTATING {
        fault_cell(p, Fault::Sigint);
    }
}

#[test]
fn a_second_concurrent_deploy_fails_fast_naming_the_holder() {
    let mut f = Flow::new("concurrent");
    // The first deploy's apply waits until this test opens the gate: it holds the lock for as
    // long as the second deploy needs, however slow the machine.
    f.k.set("RAYDEPLOY_FAKE_WAIT", "terraform:apply=file:apply-gate");
    let mut first =
        f.k.raydeploy_std()
            .args(["deploy", "--auto-approve", "--output", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let lock = f.k.state_dir("concurrent").join("lock");
    let end = Instant::now() + Duration::from_secs(60);
    while !f.k.calls().iter().any(|c| c.tool == "terraform" && c.has(&["plan"])) {
        assert!(Instant::now() < end && first.try_wait().unwrap().is_none(), "first deploy did not get to infra");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(lock.exists());
    let before = f.k.calls().len();
    let second = f.run(&["deploy", "--auto-approve"]);
    assert_eq!(second.code, 1, "{second:?}");
    assert!(second.stderr.contains(&format!("locked by PID {}", first.id())), "{}", second.stderr);
    assert!(second.stderr.contains("`deploy`"), "{}", second.stderr);
    let during: Vec<Call> = f.k.calls().into_iter().skip(before).collect();
    assert!(during.iter().all(|c| !(c.tool == "terraform" && c.has(&["version"]))), "the second run ran nothing");
    std::fs::write(f.k.fake_state_dir().join("apply-gate"), "").unwrap();
    let r = parse_run(first.wait_with_output().unwrap());
    r.ok();
    assert!(f.state()["phases"].as_object().unwrap().values().all(|p| p["status"] == "completed"));
    assert!(!lock.exists());
}

/// Every file under `dir` (recursively), as text.
fn files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(files(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    out
}

#[test]
fn canary_secrets_appear_in_no_output_log_state_or_rendered_file() {
    let f = Flow::new("canary");
    let mut outputs = vec![];
    let dry = f.run(&["deploy", "--dry-run"]);
    dry.ok();
    assert!(dry.stdout.contains("step 1: preflight"));
    assert!(f.k.calls().is_empty(), "dry run runs nothing");
    outputs.push(("deploy --dry-run", dry));
    let text = f.run(&["deploy", "--auto-approve", "--with-jobs"]);
    text.ok();
    outputs.push(("deploy", text));
    for args in [
        &["deploy", "--auto-approve", "--with-jobs", "--output", "json"][..],
        &["status"],
        &["status", "--output", "json"],
        &["job", "list"],
        &["job", "logs", "hello"],
    ] {
        let r = f.run(args);
        outputs.push((args[0], r));
    }

    // The values did reach the cluster (so the checks below are not vacuous).
    let secret_apply = first(&f.k.calls(), "kubectl", &["apply", "stdin:\"kind\":\"Secret\""]).stdin.clone();
    use base64_check::contains_value;
    for c in [CANARY_ENV, CANARY_FILE, CANARY_KV] {
        assert!(contains_value(&secret_apply, c), "{c} was applied");
    }

    let canaries = [CANARY_ENV, CANARY_FILE, CANARY_KV];
    for (what, r) in &outputs {
        for c in canaries {
            assert!(!r.stdout.contains(c) && !r.stderr.contains(c), "{c} in the output of {what}");
        }
    }
    let mut checked = 0;
    for (path, text) in files(&f.k.spec_dir.join(".raydeploy")) {
        checked += 1;
        for c in canaries {
            assert!(!text.contains(c), "{c} in {}", path.display());
        }
    }
    assert!(checked > 10, "state, logs and rendered files were checked ({checked})");
}

/// Secret values appear in a Secret's `data` base64-encoded or in `stringData` as they are.
mod base64_check {
    pub fn contains_value(text: &str, value: &str) -> bool {
        text.contains(value) || encodings(value).iter().any(|e| text.contains(e.as_str()))
    }

    fn encodings(v: &str) -> Vec<String> {
        let with_newline = format!("{v}\n");
        vec![encode(v.as_bytes()), encode(with_newline.as_bytes())]
    }

    fn encode(b: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |a, (i, &x)| a | (x as u32) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[test]
fn destroy_runs_in_reverse_order_needs_approval_and_is_idempotent() {
    let f = Flow::new("destroy");
    f.deploy(&[]).ok();

    f.k.clear_calls();
    let r = f.run(&["destroy"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--auto-approve"), "{}", r.stderr);
    assert_eq!(f.mutating_calls(), Vec::<String>::new());

    let r = f.run(&["destroy", "--auto-approve", "--keep-infra"]);
    r.ok();
    assert!(f.k.find("terraform", &["destroy"]).is_empty(), "--keep-infra keeps Terraform's resources");
    assert!(!f.k.find("helm", &["uninstall"]).is_empty());

    f.deploy(&[]).ok();
    f.k.clear_calls();
    let r = f.run(&["destroy", "--auto-approve"]);
    r.ok();
    let calls = f.k.calls();
    let uninstalls: Vec<&Call> = calls.iter().filter(|c| c.tool == "helm" && c.has(&["uninstall"])).collect();
    assert!(uninstalls.len() >= 2, "{}", lines(&calls));
    let tf = first(&calls, "terraform", &["destroy"]);
    assert!(
        calls.iter().filter(|c| c.mutating() && c.tool != "terraform").all(|c| c.t1 <= tf.t0),
        "infra last:\n{}",
        lines(&calls)
    );
    let ray =
        calls.iter().position(|c| c.tool == "helm" && c.has(&["uninstall"]) && !c.has(&["kuberay-operator"])).unwrap();
    let op = calls.iter().position(|c| c.tool == "helm" && c.has(&["uninstall", "kuberay-operator"])).unwrap();
    assert!(ray < op, "the cluster goes before the operator:\n{}", lines(&calls));
    assert!(f.k.fake_state("terraform")["hash"].is_null());

    // Already gone: success, again.
    f.run(&["destroy", "--auto-approve"]).ok();
}
