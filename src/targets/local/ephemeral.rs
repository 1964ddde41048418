//! `run` of an ephemeral job on target local: a Ray cluster of its own for the job, started
//! for it and stopped after it. It has its own ports (free ones, chosen at each start), its own
//! Ray temp folder and its own process mark: `RAYDEPLOY_LOCAL_DIR` is the run's folder
//! `.raydeploy/<deployment>/runs/<job>-<pid>` (see [`super::procs`]), so that stopping it stops
//! exactly its processes — the PIDs recorded at each `ray start` and every process carrying the
//! mark (workers and drivers Ray forked later) — and never the deployment's own cluster or
//! another run's. Ctrl-C and any failure stop it the same way.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::api::{Api, JobInfo};
use super::nodes::{self, Ctx, NodeRecord};
use super::sizing::{self, NodePlan, Sizing};
use super::{AGENT_CONNECT_WAIT, Local, READY_TIMEOUT, jobs, procs, temp_dir_for};
use crate::context::EXIT_INTERRUPTED;
use crate::model::{EphemeralCluster, JobModel};
use crate::run::proc::{Runner, sleep_unless_interrupted, timeout_cap};
use crate::run::signals;

/// Folder of the runs' marks, inside the deployment's state folder.
pub const RUNS_DIR: &str = "runs";

/// Runs `job` on a cluster of `c`'s groups started for it; returns the job's exit code (130
/// after Ctrl-C). The cluster's processes are gone when this returns, whatever happened.
pub fn run(l: &Local, job: &JobModel, c: &EphemeralCluster) -> Result<u8> {
    let runner = l.s.env().runner(&format!("run-{}", job.name))?;
    let run_dir = l.dir.join(RUNS_DIR).join(format!("{}-{}", job.name, std::process::id()));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let temp_dir = temp_dir_for(&run_dir);
    let ctx = Ctx { dir: &run_dir, venv: &l.venv, temp_dir: &temp_dir, env: &l.s.d.cluster.env };
    let sizing = sizing::plan_groups(&c.head, &c.workers, l.machine);
    for n in &sizing.notes {
        runner.info(&format!("sizing: {n}"));
    }
    let mut started: Vec<NodeRecord> = vec![];
    let outcome = start_and_run(&runner, &ctx, &sizing, job, l.machine.cpus, &mut started);
    let stopped = stop(&run_dir, &temp_dir, &started);
    match (outcome, stopped) {
        (_, Err(e)) => Err(e),
        (_, Ok(n)) if signals::interrupted() => {
            eprintln!("interrupted: stopped job {}'s cluster ({n} process(es))", job.name);
            Ok(EXIT_INTERRUPTED)
        }
        (Err(e), Ok(n)) => Err(e.context(format!("job {}'s cluster stopped ({n} process(es))", job.name))),
        (Ok(info), Ok(n)) => {
            runner.info(&format!("stopped job {}'s cluster ({n} process(es)); nothing of it is left", job.name));
            let code = jobs::exit_code(&info);
            eprintln!("job {} ({}): {}", job.name, info.submission_id, info.status);
            if code != 0 && !info.message.is_empty() {
                eprintln!("{}", info.message.trim_end());
            }
            Ok(code)
        }
    }
}

/// Starts the head, then the workers, waits until every node is alive, then submits the job and
/// follows it to its end. Every node started is pushed to `started` at once (for the stop).
fn start_and_run(
    runner: &Runner,
    ctx: &Ctx,
    sizing: &Sizing,
    job: &JobModel,
    cpus: u32,
    started: &mut Vec<NodeRecord>,
) -> Result<JobInfo> {
    let head = start(runner, ctx, &sizing.head, None)?;
    started.push(head.clone());
    let gcs = format!("127.0.0.1:{}", head.ports["port"]);
    let url = format!("http://127.0.0.1:{}", head.ports["dashboard-port"]);
    runner.info(&format!("job {}'s cluster: GCS {gcs}, dashboard {url}", job.name));
    // Before any worker joins, as for the deployment's head (see `Api::attach_job_agent`).
    let agent = format!("http://127.0.0.1:{}", head.ports["dashboard-agent-listen-port"]);
    Api::new(&agent).attach_job_agent(Instant::now() + AGENT_CONNECT_WAIT)?;
    // One start per two CPUs at a time, as the deploy's `workers` phase does.
    let width = (cpus as usize / 2).max(1);
    for batch in sizing.workers.chunks(width) {
        let results: Vec<Result<NodeRecord>> = std::thread::scope(|scope| {
            let handles: Vec<_> = batch.iter().map(|p| scope.spawn(|| start(runner, ctx, p, Some(&gcs)))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a node start panicked"))))
                .collect()
        });
        let mut errors = vec![];
        for r in results {
            match r {
                Ok(rec) => started.push(rec),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        if !errors.is_empty() {
            bail!("{}", errors.join("\n"));
        }
        if signals::interrupted() {
            bail!("interrupted while starting the job's cluster");
        }
    }
    let api = Api::new(&url);
    wait_alive(runner, &api, started)?;
    runner.info(&format!("submitting job {} to its own cluster", job.name));
    jobs::submit(runner, ctx, &api, job, true)
}

/// Starts one node (one more try when a start fails) and says which processes it runs.
fn start(runner: &Runner, ctx: &Ctx, plan: &NodePlan, gcs: Option<&str>) -> Result<NodeRecord> {
    let rec = match ctx.start(runner, plan, "run", gcs) {
        Ok(r) => r,
        Err(e) if !signals::interrupted() => {
            runner.info(&format!("{} did not start ({e:#}); trying once more", plan.name));
            ctx.start(runner, plan, "run", gcs)?
        }
        Err(e) => return Err(e),
    };
    let pids: Vec<String> = rec.procs.iter().map(|p| p.pid.to_string()).collect();
    runner.info(&format!("started node {}: pids {}", plan.name, pids.join(" ")));
    Ok(rec)
}

/// Waits until every started node is alive in the GCS.
fn wait_alive(runner: &Runner, api: &Api, nodes: &[NodeRecord]) -> Result<()> {
    let limit = timeout_cap().map_or(READY_TIMEOUT, |c| c.min(READY_TIMEOUT));
    let t0 = Instant::now();
    loop {
        if let Some(down) = nodes.iter().find_map(|r| r.down_reason().map(|w| format!("{}: {w}", r.plan.name))) {
            bail!("node {down}");
        }
        let last = match api.nodes() {
            Ok(list) => {
                let missing: Vec<&str> = nodes
                    .iter()
                    .filter(|r| !r.node_id.as_ref().is_some_and(|id| list.iter().any(|n| n.alive && &n.node_id == id)))
                    .map(|r| r.plan.name.as_str())
                    .collect();
                if missing.is_empty() {
                    runner.info(&format!("{} nodes alive", nodes.len()));
                    return Ok(());
                }
                format!("not alive yet: {}", missing.join(", "))
            }
            Err(e) => format!("{e:#}"),
        };
        if signals::interrupted() {
            bail!("interrupted while waiting for the job's cluster");
        }
        if t0.elapsed() > limit {
            bail!("the job's cluster was not alive after {}s ({last})", limit.as_secs());
        }
        sleep_unless_interrupted(Duration::from_millis(200));
    }
}

/// Stops every process of the run — the recorded ones and any carrying the run's mark — and
/// removes its folders; fails, naming them, when a process is left. Returns how many were
/// signalled.
fn stop(run_dir: &Path, temp_dir: &Path, started: &[NodeRecord]) -> Result<usize> {
    let records: Vec<&NodeRecord> = started.iter().rev().collect();
    let mut n = nodes::stop_nodes(run_dir, &records);
    n += procs::stop(&procs::scan(run_dir, None), nodes::STOP_GRACE);
    let left = procs::scan(run_dir, None);
    if !left.is_empty() {
        let pids: Vec<String> = left.iter().map(|p| format!("{} ({})", p.pid, p.name)).collect();
        bail!("processes of the job's cluster are still running: {}", pids.join(", "));
    }
    for dir in [temp_dir, run_dir] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    // The runs' folder goes with its last run (another run's folder keeps it).
    if let Some(runs) = run_dir.parent() {
        let _ = std::fs::remove_dir(runs);
    }
    Ok(n)
}

/// Stops the clusters of runs that could not stop their own (a `run` killed outright): every
/// folder left in the runs' folder is such a run's mark. Returns how many processes were
/// signalled.
pub fn stop_leftovers(dir: &Path) -> Result<usize> {
    let mut n = 0;
    let runs = dir.join(RUNS_DIR);
    for e in std::fs::read_dir(&runs).into_iter().flatten().flatten() {
        let run_dir = e.path();
        n += stop(&run_dir, &temp_dir_for(&run_dir), &[])?;
    }
    Ok(n)
}
