//! Target local, for real: Ray clusters as processes inside a private network namespace.
//! The example is deployed, its job must spread over more than one node and compute the right
//! value; a second deploy starts nothing; a killed worker is reported and restored; a failing
//! job gives a non-zero exit with its logs; destroy leaves no process behind.

#[path = "support/local_env.rs"]
mod local_env;

use std::path::PathBuf;

use local_env::{LocalDeployment, alive, expect_code, ray_lock};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/local")
}

/// Σ i² for i in 0..32, what the sample job computes.
const SUM_OF_SQUARES: u64 = 10416;

fn number_after(text: &str, label: &str) -> u64 {
    let line = text.lines().find(|l| l.contains(label)).unwrap_or_else(|| panic!("no `{label}` in:\n{text}"));
    line.rsplit(label).next().unwrap().trim().parse().unwrap_or_else(|_| panic!("not a number: {line}"))
}

fn status(dep: &LocalDeployment) -> serde_json::Value {
    let (out, _) = expect_code(&dep.raydeploy(&["status", "--output", "json"]), 0, "status");
    serde_json::from_str(&out).unwrap()
}

fn add_failing_job(dep: &LocalDeployment) {
    let root = dep.spec.parent().unwrap();
    std::fs::create_dir_all(root.join("jobs/fail")).unwrap();
    std::fs::write(
        root.join("jobs/fail/fail.py"),
        "import sys\nprint('computing the answer')\nprint('error: the input is wrong', file=sys.stderr)\nsys.exit(3)\n",
    )
    .unwrap();
    let mut spec = std::fs::read_to_string(&dep.spec).unwrap();
    spec.push_str("  - name: fail\n    entrypoint: python fail.py\n    workingDir: ./jobs/fail\n");
    std::fs::write(&dep.spec, spec).unwrap();
}

#[test]
fn example_runs_its_job_over_several_nodes_restores_a_killed_worker_and_destroys_cleanly() {
    let _one_cluster = ray_lock();
    let dep = LocalDeployment::new(&example(), "local-life");

    // Deploy and run the sample job.
    let (_, err) = expect_code(&dep.raydeploy(&["deploy", "--with-jobs"]), 0, "deploy --with-jobs");
    assert_eq!(number_after(&err, "sum of squares:"), SUM_OF_SQUARES, "{err}");
    assert!(number_after(&err, "nodes used:") > 1, "the tasks ran on one node:\n{err}");
    assert_eq!(number_after(&err, "nodes in the cluster:"), 3, "{err}");
    assert!(err.contains("job sample: SUCCEEDED"), "{err}");
    let st = status(&dep);
    assert_eq!(st["nodes_running"], 3, "{st:#}");
    assert_eq!(st["nodes_wanted"], 3, "{st:#}");
    assert!(
        st["nodes"].as_array().unwrap().iter().all(|n| n["state"] == "running" && n["in_cluster"] == true),
        "{st:#}"
    );
    // The head's job agent is a driver of the head: a dead worker cannot take it down.
    let head_id = dep.state()["data"]["local"]["nodes"]["head"]["node_id"].as_str().unwrap().to_string();
    let drivers = dep.live_driver_nodes();
    assert!(!drivers.is_empty() && drivers.iter().all(|n| *n == head_id), "drivers on {drivers:?}, head {head_id}");
    let url = st["dashboard_url"].as_str().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let (out, _) = expect_code(&dep.raydeploy(&["dashboard"]), 0, "dashboard");
    assert_eq!(out.trim(), url);

    // Nothing changed: nothing starts, nothing stops.
    let raylets = |dep: &LocalDeployment| ["head", "workers-0", "workers-1"].map(|n| dep.raylet(n));
    let before = raylets(&dep);
    let (_, err) = expect_code(&dep.raydeploy(&["deploy"]), 0, "second deploy");
    assert!(err.contains("unchanged: env, head, workers"), "{err}");
    assert!(!err.contains("ray start"), "{err}");
    assert_eq!(raylets(&dep), before);
    let marked = dep.marked();
    assert!(before.iter().all(|p| marked.contains(p)), "raylets {before:?}, running {marked:?}");

    // A killed worker: status reports it, the next deploy restores only it.
    let head_pids: Vec<u32> = dep.state()["data"]["local"]["nodes"]["head"]["procs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap() as u32)
        .collect();
    let victim = dep.raylet("workers-1");
    // SAFETY: kill(2) on the raylet this test's deployment started (recorded in its state).
    unsafe {
        libc::kill(victim as libc::pid_t, libc::SIGKILL);
    }
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while dep.recorded().iter().any(|(p, s)| *p == victim && alive(*p, *s)) {
        assert!(std::time::Instant::now() < end, "the killed raylet {victim} is still alive after 30 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let st = status(&dep);
    assert_eq!(st["down"], serde_json::json!(["workers-1"]), "{st:#}");
    assert_eq!(st["nodes_running"], 2, "{st:#}");
    let (text, _) = expect_code(&dep.raydeploy(&["status"]), 0, "status");
    assert!(text.contains("workers-1") && text.contains("down") && text.contains(&format!("pid {victim}")), "{text}");
    let (_, err) = expect_code(&dep.raydeploy(&["deploy"]), 0, "deploy after the kill");
    assert!(err.contains("unchanged: env, head"), "{err}");
    assert_eq!(err.matches("ray start").count(), 1, "only workers-1 restarts:\n{err}");
    let st = status(&dep);
    assert_eq!(st["nodes_running"], 3, "{st:#}");
    assert_ne!(dep.raylet("workers-1"), victim);
    let still: Vec<u32> = dep.state()["data"]["local"]["nodes"]["head"]["procs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(head_pids, still, "the head was restarted");

    // The job again, on the restored cluster, printed on stdout.
    let (out, _) = expect_code(&dep.raydeploy(&["job", "submit", "sample"]), 0, "job submit sample");
    assert_eq!(number_after(&out, "sum of squares:"), SUM_OF_SQUARES, "{out}");
    assert!(number_after(&out, "nodes used:") > 1, "{out}");

    // A failing job: its exit code, its logs.
    add_failing_job(&dep);
    let (out, err) = expect_code(&dep.raydeploy(&["job", "submit", "fail"]), 3, "job submit fail");
    assert!(out.contains("computing the answer") && out.contains("error: the input is wrong"), "{out}\n{err}");
    assert!(err.contains("FAILED"), "{err}");
    let (out, _) = expect_code(&dep.raydeploy(&["job", "list"]), 0, "job list");
    assert!(out.lines().any(|l| l.starts_with("fail") && l.contains("FAILED")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("sample") && l.contains("SUCCEEDED")), "{out}");
    let (_, err) = expect_code(&dep.raydeploy(&["deploy", "--with-jobs"]), 1, "deploy --with-jobs with a failing job");
    assert!(err.contains("error: the input is wrong"), "the failing job's logs are shown:\n{err}");
    assert!(err.contains("phase jobs failed") && err.contains("job fail FAILED"), "{err}");

    // Destroy: every process it started is gone, by PID and by mark.
    let recorded = dep.recorded();
    assert!(recorded.len() >= 3 * 4, "{recorded:?}");
    let temp = PathBuf::from(dep.state()["data"]["local"]["temp_dir"].as_str().unwrap());
    let (_, err) = expect_code(&dep.raydeploy(&["destroy"]), 0, "destroy");
    assert!(err.contains("destroyed"), "{err}");
    let left: Vec<_> = recorded.iter().filter(|(p, s)| alive(*p, *s)).collect();
    assert!(left.is_empty(), "still running: {left:?}");
    assert!(dep.marked().is_empty(), "marked processes left: {:?}", dep.marked());
    assert!(!temp.exists(), "{} is left", temp.display());
    let st = status(&dep);
    assert_eq!(st["nodes_running"], 0, "{st:#}");
    let (_, err) = expect_code(&dep.raydeploy(&["job", "submit", "sample"]), 1, "job submit after destroy");
    assert!(err.contains("run `raydeploy deploy` first"), "{err}");
}

#[test]
fn a_failing_job_fails_the_deploy_with_its_logs() {
    let _one_cluster = ray_lock();
    let dep = LocalDeployment::new(&example(), "local-fail");
    // One worker is enough here.
    let spec = std::fs::read_to_string(&dep.spec).unwrap().replace("replicas: 2", "replicas: 1");
    std::fs::write(
        &dep.spec,
        spec.replace("  - name: sample\n    entrypoint: python sample.py\n    workingDir: ./jobs/sample\n", ""),
    )
    .unwrap();
    add_failing_job(&dep);
    let (_, err) = expect_code(&dep.raydeploy(&["deploy", "--with-jobs"]), 1, "deploy --with-jobs");
    assert!(err.contains("computing the answer") && err.contains("error: the input is wrong"), "{err}");
    assert!(err.contains("job fail FAILED"), "{err}");
    assert!(err.contains("ran: env, head, workers, ready") || err.contains("ran: head, workers, ready"), "{err}");
    let recorded = dep.recorded();
    let (out, _) = expect_code(&dep.raydeploy(&["job", "logs", "fail"]), 3, "job logs fail");
    assert!(out.contains("error: the input is wrong"), "{out}");
    expect_code(&dep.raydeploy(&["destroy"]), 0, "destroy");
    assert!(recorded.iter().all(|(p, s)| !alive(*p, *s)));
    assert!(dep.marked().is_empty());
}

#[test]
fn dry_run_shows_every_command_on_loopback() {
    let dep = LocalDeployment::new(&example(), "local-dry");
    let (out, _) = expect_code(&dep.raydeploy(&["deploy", "--dry-run", "--with-jobs"]), 0, "dry run");
    assert!(out.contains("step 1: env") && out.contains("step 5: jobs"), "{out}");
    assert_eq!(out.matches("bin/ray start --head").count(), 1, "{out}");
    assert_eq!(out.matches("bin/ray start --address").count(), 2, "{out}");
    assert!(out.contains("--dashboard-host 127.0.0.1") && out.contains("--node-ip-address 127.0.0.1"), "{out}");
    assert!(out.contains(r#"'{"group:workers":1}'"#), "{out}");
    assert!(out.contains("pip install") && out.contains("ray[default]==2.52.0"), "{out}");
    assert!(!out.contains("ray stop"), "{out}");
    assert!(dep.marked().is_empty());
    assert!(!dep.dir.join("state.json").exists());
}

#[test]
fn any_spec_runs_locally_with_target_local() {
    let aks = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/pytorch-mnist-aks");
    let dep = LocalDeployment::new(&aks, "mnist-local");
    let (out, _) = expect_code(&dep.raydeploy(&["deploy", "--dry-run", "--target", "local"]), 0, "dry run");
    assert!(out.contains("step 1: env") && out.contains("ray start --head"), "{out}");
    assert!(!out.contains("terraform") && !out.contains("helm"), "{out}");
}
