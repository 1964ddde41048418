//! `raydeploy run` on target local, for real, inside a private network namespace
//! (tests/support/local_env.rs): an ephemeral job runs on a Ray cluster of its own — the job's
//! changes to the groups applied — and `run` exits with the job's code; afterwards every process
//! it started (by the PIDs it reports) is gone, no process carries the run's mark, its folders
//! are removed, and the deployment's own cluster was never started. Ctrl-C stops the job and
//! its cluster the same way.

#[path = "support/local_env.rs"]
mod local_env;

use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Stdio};

use local_env::{LocalDeployment, expect_code, ray_lock, wheels};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/local")
}

/// The example with three ephemeral jobs: the sample on a head and one worker (the spec has
/// two), a failing one and one that never ends, both on a head alone.
fn deployment(name: &str) -> LocalDeployment {
    let dep = LocalDeployment::new(&example(), name);
    let root = dep.spec.parent().unwrap();
    std::fs::create_dir_all(root.join("jobs/fail")).unwrap();
    std::fs::write(
        root.join("jobs/fail/fail.py"),
        "import sys\nprint('computing the answer')\nprint('error: the input is wrong', file=sys.stderr)\nsys.exit(3)\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("jobs/wait")).unwrap();
    std::fs::write(
        root.join("jobs/wait/wait.py"),
        "import time\nprint('job-waits-7f3a', flush=True)\ntime.sleep(100000)\n",
    )
    .unwrap();
    let mut spec = std::fs::read_to_string(&dep.spec).unwrap();
    spec.push_str(concat!(
        "  - name: count\n",
        "    cluster: ephemeral\n",
        "    entrypoint: python sample.py\n",
        "    workingDir: ./jobs/sample\n",
        "    workerGroups:\n",
        "      - { name: workers, replicas: 1 }\n",
        "  - name: fail\n",
        "    cluster: ephemeral\n",
        "    entrypoint: python fail.py\n",
        "    workingDir: ./jobs/fail\n",
        "    workerGroups:\n",
        "      - { name: workers, replicas: 0, minReplicas: 0, maxReplicas: 0 }\n",
        "  - name: wait\n",
        "    cluster: ephemeral\n",
        "    entrypoint: python wait.py\n",
        "    workingDir: ./jobs/wait\n",
        "    workerGroups:\n",
        "      - { name: workers, replicas: 0, minReplicas: 0, maxReplicas: 0 }\n",
    ));
    std::fs::write(&dep.spec, spec).unwrap();
    dep
}

/// The PIDs `run` reported for the nodes it started (`started node NAME: pids …`).
fn started_pids(stderr: &str) -> Vec<(String, u32)> {
    stderr
        .lines()
        .filter_map(|l| l.split_once("started node ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once(": pids "))
        .flat_map(|(node, pids)| {
            pids.split_whitespace().map(|p| (node.to_string(), p.parse().unwrap())).collect::<Vec<_>>()
        })
        .collect()
}

/// The value of `var` in a live (not zombie) process's environment.
fn marked_with(pid: u32, var: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    if stat.rsplit(')').next().unwrap_or("").trim_start().starts_with(['Z', 'X']) {
        return None;
    }
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{var}=");
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Live processes marked as belonging to a run of this deployment.
fn run_processes(dep: &LocalDeployment) -> Vec<u32> {
    let runs = dep.dir.join("runs");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| marked_with(*pid, "RAYDEPLOY_LOCAL_DIR").is_some_and(|d| Path::new(&d).starts_with(&runs)))
        .collect()
}

/// Every process `run` started is gone (a PID now used by an unrelated process does not count).
fn assert_all_gone(dep: &LocalDeployment, pids: &[(String, u32)]) {
    let runs = dep.dir.join("runs");
    let left: Vec<&(String, u32)> = pids
        .iter()
        .filter(|(_, p)| marked_with(*p, "RAYDEPLOY_LOCAL_DIR").is_some_and(|d| Path::new(&d).starts_with(&runs)))
        .collect();
    assert!(left.is_empty(), "still running: {left:?}");
    assert_eq!(run_processes(dep), Vec::<u32>::new(), "processes of a run are left");
    assert!(!runs.exists(), "{} is left", runs.display());
    // The deployment's own cluster was never started.
    assert!(dep.marked().is_empty(), "{:?}", dep.marked());
    let state = dep.state();
    assert!(state.pointer("/data/local/nodes").is_none_or(|n| n.as_object().unwrap().is_empty()), "{state:#}");
}

/// `run wait` in the deployment's network namespace, its stderr piped, its stdout to `stdout`.
fn start_wait(dep: &LocalDeployment, stdout: Stdio) -> Child {
    dep.ns
        .command(assert_cmd::cargo::cargo_bin("raydeploy"))
        .args(["run", "wait"])
        .arg(&dep.spec)
        .env("PIP_NO_INDEX", "1")
        .env("PIP_FIND_LINKS", wheels())
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the child's stderr until the job says it is waiting (checking that the job started):
/// what it read, and the rest of stderr.
fn until_waiting(child: &mut Child) -> (String, Lines<BufReader<ChildStderr>>) {
    let mut err = String::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        err.push_str(&line);
        err.push('\n');
        if line.contains("job-waits-7f3a") {
            break;
        }
    }
    assert!(err.contains("submitting job wait"), "the job never started:\n{err}");
    (err, lines)
}

#[test]
fn run_exits_with_the_jobs_code_and_leaves_no_process() {
    let _one_cluster = ray_lock();
    let dep = deployment("run-local");

    let (_, err) = expect_code(&dep.raydeploy(&["run", "count"]), 0, "run count");
    assert!(err.contains("sum of squares: 10416"), "{err}");
    // The job's change: one worker instead of the spec's two.
    assert!(err.contains("nodes in the cluster: 2"), "{err}");
    assert!(err.contains("unchanged: env") || err.contains("ran: env"), "the environment first:\n{err}");
    assert!(!err.contains("ray stop"), "{err}");
    let pids = started_pids(&err);
    let nodes: std::collections::BTreeSet<&str> = pids.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(nodes.into_iter().collect::<Vec<_>>(), ["head", "workers-0"], "{err}");
    assert_all_gone(&dep, &pids);

    let (out, err) = expect_code(&dep.raydeploy(&["run", "fail"]), 3, "run fail");
    let all = format!("{out}{err}");
    assert!(all.contains("computing the answer") && all.contains("error: the input is wrong"), "{all}");
    assert!(err.contains("FAILED"), "{err}");
    let pids = started_pids(&err);
    assert!(pids.iter().all(|(n, _)| n == "head") && !pids.is_empty(), "{err}");
    assert_all_gone(&dep, &pids);
}

#[test]
fn ctrl_c_stops_the_job_and_its_cluster() {
    let _one_cluster = ray_lock();
    let dep = deployment("run-local-int");
    let mut child = start_wait(&dep, Stdio::piped());
    let stdout = child.stdout.take().unwrap();
    let out_reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    // Read stderr until the job says it is waiting, then Ctrl-C.
    let (mut err, lines) = until_waiting(&mut child);
    // SAFETY: SIGINT to the nsenter this test started: it runs raydeploy in its place (exec).
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    for line in lines {
        err.push_str(&line.unwrap());
        err.push('\n');
    }
    let status = child.wait().unwrap();
    let out = out_reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "{out}\n{err}");
    assert!(err.contains("interrupted: stopped job wait's cluster"), "{err}");
    assert_all_gone(&dep, &started_pids(&err));
}

/// A run killed outright cannot stop its cluster: `destroy` stops it (by the run's mark).
#[test]
fn destroy_stops_the_cluster_of_a_run_killed_outright() {
    let _one_cluster = ray_lock();
    let dep = deployment("run-local-kill");
    let mut child = start_wait(&dep, Stdio::null());
    let (err, _) = until_waiting(&mut child);
    // SAFETY: SIGKILL to the raydeploy process this test started (nsenter execs it).
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
    }
    child.wait().unwrap();
    let pids = started_pids(&err);
    assert!(!run_processes(&dep).is_empty(), "the killed run's cluster is still there");
    let (_, out) = expect_code(&dep.raydeploy(&["destroy"]), 0, "destroy");
    assert!(out.contains("destroyed"), "{out}");
    assert_all_gone(&dep, &pids);
}
