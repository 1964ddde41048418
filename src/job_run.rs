//! `raydeploy run JOB`: one job from start to finish, exiting with its result and leaving
//! nothing running behind it.
//!
//! An ephemeral job (`cluster: ephemeral`) first gets what it needs brought up to date through
//! the deploy's phase graph without the long-running cluster ([`graph::prerequisites`]: infra,
//! image, credentials, CRDs, operator, secrets, mounts and the device plugin on a cluster — each
//! skipped when current, as `deploy` does; the Python environment on target local), under the
//! deployment's lock and refusing destructive changes; then the target runs it on a cluster of
//! its own ([`Target::run`]). A shared job runs on the deployed cluster as `job submit --follow`
//! does: nothing is deployed for it (`deploy` owns the long-running cluster).

use std::time::Duration;

use anyhow::{Result, bail};

use crate::context::{Context, EXIT_INTERRUPTED, approve};
use crate::graph;
use crate::run::exec::{self, Outcome, Report};
use crate::run::lock::{Lock, LockError};
use crate::run::proc::sleep_unless_interrupted;
use crate::run::signals;
use crate::spec::Target;
use crate::targets;

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Delete what the job leaves (its RayJob, or its local submission) as soon as it ends.
    pub rm: bool,
    pub auto_approve: bool,
    /// Print the phases and the job's run; run nothing.
    pub dry_run: bool,
}

/// `run NAME`: the exit code is the job's (0 success), 1 when something before it failed, 130
/// after Ctrl-C.
pub fn run(c: &Context, name: &str, opts: &RunOptions) -> Result<u8> {
    let Some(job) = c.d.jobs.iter().find(|j| j.name == name) else {
        let known: Vec<_> = c.d.jobs.iter().map(|j| j.name.as_str()).collect();
        bail!(
            "no job `{name}` in the spec (jobs: {})",
            if known.is_empty() { "none".into() } else { known.join(", ") }
        );
    };
    let target = targets::for_context(c)?;
    let Some(own) = &job.ephemeral else {
        if opts.dry_run {
            println!("job {name} runs on the long-running cluster (cluster: shared), as `job submit {name} --follow`");
            return Ok(0);
        }
        return finish(c, name, target.run(c, name, opts.rm)?);
    };
    let g = graph::prerequisites(&c.d, &c.rendered);
    if opts.dry_run {
        print!("{}", exec::dry_run(&g, target.as_ref(), &c.redactor));
        let groups: Vec<String> = own.workers.iter().map(|w| format!("{} ×{}", w.name, w.replicas)).collect();
        println!(
            "then: job {name} on a cluster of its own (head{}{}), removed after it",
            if groups.is_empty() { "" } else { ", " },
            groups.join(", ")
        );
        return Ok(0);
    }
    if c.d.target != Target::Local {
        crate::deploy::guard(c)?;
        approve(
            &format!("Bring what job `{name}` needs up to date in `{}` ({}) and run it", c.d.name, c.d.target.as_str()),
            opts.auto_approve,
        )?;
    }
    signals::install();
    let report = {
        let Some(_lock) = lock(c)? else { return Ok(EXIT_INTERRUPTED) };
        let store = c.store()?;
        exec::execute(&g, target.as_ref(), &store, &c.env())
    };
    if let Some(code) = prerequisites_failed(c, &report) {
        return Ok(code);
    }
    if signals::interrupted() {
        return Ok(EXIT_INTERRUPTED);
    }
    finish(c, name, target.run(c, name, opts.rm)?)
}

/// The deployment's lock for the prerequisites. Another `run` holds it only while it brings them
/// up to date (short once they are current), so runs of several jobs started together wait for
/// one another here; a `deploy` or `destroy` holding it fails the run at once, naming it. `None`
/// after Ctrl-C.
fn lock(c: &Context) -> Result<Option<Lock>> {
    let mut told = false;
    loop {
        match Lock::acquire(&c.dir, &c.d.name, "run") {
            Ok(l) => return Ok(Some(l)),
            Err(LockError::Held { holder, .. }) if holder.command == "run" => {
                if !told {
                    eprintln!("waiting for the run of PID {} to bring the prerequisites up to date", holder.pid);
                    told = true;
                }
                sleep_unless_interrupted(Duration::from_millis(200));
                if signals::interrupted() {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reports the prerequisite phases; the exit code when they did not all complete.
fn prerequisites_failed(c: &Context, report: &Report) -> Option<u8> {
    let list = |o| report.with(o).join(", ");
    if c.json() {
        let mut summary = serde_json::json!({"event": "summary", "ok": report.ok(), "seconds": report.seconds, "phases": report.phases});
        c.redactor.scrub_json(&mut summary);
        println!("{summary}");
    } else {
        let mut parts = vec![];
        for (o, what) in [(Outcome::Ran, "ran"), (Outcome::Skipped, "unchanged"), (Outcome::NotRun, "not run")] {
            if !report.with(o).is_empty() {
                parts.push(format!("{what}: {}", list(o)));
            }
        }
        eprintln!(
            "{} in {:.1}s; {}",
            if report.ok() { "ready to run" } else { "not ready to run" },
            report.seconds,
            parts.join("; ")
        );
    }
    if report.interrupted() {
        eprintln!("interrupted before the job was submitted");
        return Some(EXIT_INTERRUPTED);
    }
    let (phase, e) = report.first_error()?;
    eprintln!(
        "error: phase {phase} failed: {}\nlog: {}\nthe job was not run",
        c.redactor.scrub(e),
        c.dir.join("logs").join(format!("{phase}.log")).display()
    );
    Some(1)
}

fn finish(c: &Context, name: &str, code: u8) -> Result<u8> {
    if c.json() {
        println!("{}", serde_json::json!({"event": "run", "job": name, "exit_code": code}));
    }
    Ok(code)
}
