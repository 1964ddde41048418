//! `raydeploy deploy`: refuses destructive changes unless allowed (against the last applied
//! snapshot, or the plan file given with `--plan`), builds the phase graph ([`crate::graph`]),
//! runs it with the target's phases ([`crate::targets`]) or prints it with `--dry-run`, records
//! the applied snapshot and prints the summary.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

use crate::context::{Context, DeployOptions, EXIT_INTERRUPTED, approve, refuse_destructive};
use crate::graph;
use crate::run::exec::{self, Outcome, Report};
use crate::run::signals;
use crate::run::state::Store;
use crate::spec::Target;
use crate::targets;

/// `deploy`: the phase graph, run (or printed with `--dry-run`).
pub fn deploy(c: &mut Context, opts: &DeployOptions) -> Result<u8> {
    c.allow_destroy = opts.allow_destroy;
    c.refresh = opts.refresh;
    if let Some(plan) = &opts.plan {
        c.saved_tfplan = check_plan(c, plan)?;
    }
    if !opts.dry_run && !c.allow_destroy {
        guard(c)?;
    }
    let c = &*c;
    let g = graph::graph(&c.d, &c.rendered, graph::Options { with_jobs: opts.with_jobs });
    let target = targets::for_context(c)?;
    if opts.dry_run {
        print!("{}", exec::dry_run(&g, target.as_ref(), &c.redactor));
        return Ok(0);
    }
    if c.d.target != Target::Local {
        approve(&format!("Deploy `{}` to {}", c.d.name, c.d.target.as_str()), opts.auto_approve)?;
    }
    signals::install();
    let _lock = c.lock("deploy")?;
    let store = c.store()?;
    let report = exec::execute(&g, target.as_ref(), &store, &c.env());
    if report.ok() {
        crate::plan::snapshot::record(&c.d, &c.rendered)
            .with_context(|| format!("recording the applied snapshot in {}", c.dir.display()))?;
    }
    finish(c, &report, &store)
}

/// Refuses destructive changes (against the last applied snapshot) before anything runs; the
/// infra phase checks Terraform's own plan again before applying it.
pub fn guard(c: &Context) -> Result<()> {
    let snap = crate::plan::snapshot::dir(&c.d);
    if !snap.is_dir() {
        return Ok(());
    }
    let plan = crate::plan::offline_plan(c, None, false)?;
    refuse_destructive(plan.destructive.iter().map(|d| d.reason.as_str()))
}

/// `deploy --plan`: the plan must still hold; returns Terraform's saved plan when there is one.
fn check_plan(c: &Context, path: &std::path::Path) -> Result<Option<PathBuf>> {
    use crate::plan::{self, planfile};
    let f = planfile::read(path)?;
    if f.deployment != c.d.name {
        bail!("{} is a plan for `{}`, not `{}`", path.display(), f.deployment, c.d.name);
    }
    let mut now = plan::Fingerprint {
        spec: c.d.spec_hash.clone(),
        rendered: plan::rendered_hash(&c.rendered),
        live: Default::default(),
    };
    if f.mode == plan::Mode::Live {
        now.live = plan::live::fingerprint(c)?;
    }
    let moved = planfile::drift(&f.fingerprint, &now);
    if !moved.is_empty() {
        bail!(
            "{} no longer matches; plan again:\n{}",
            path.display(),
            moved.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n")
        );
    }
    if !c.allow_destroy {
        refuse_destructive(f.destructive.iter().map(String::as_str))?;
    }
    let tf = planfile::tfplan_path(path);
    Ok(tf.is_file().then_some(tf))
}

/// Prints the summary of a run and picks the exit code.
pub fn finish(c: &Context, report: &Report, store: &Store) -> Result<u8> {
    if c.json() {
        let mut summary = serde_json::json!({"event": "summary", "ok": report.ok(), "seconds": report.seconds, "phases": report.phases});
        c.redactor.scrub_json(&mut summary);
        println!("{summary}");
    } else {
        let list = |o| report.with(o).join(", ");
        let mut parts = vec![];
        for (o, name) in [(Outcome::Ran, "ran"), (Outcome::Skipped, "unchanged"), (Outcome::NotRun, "not run")] {
            if !report.with(o).is_empty() {
                parts.push(format!("{name}: {}", list(o)));
            }
        }
        eprintln!(
            "{} in {:.1}s; {}",
            if report.ok() { "deployed" } else { "deploy stopped" },
            report.seconds,
            parts.join("; ")
        );
    }
    if report.interrupted() {
        eprintln!("interrupted; state saved in {}: run deploy again to resume", store.path().display());
        return Ok(EXIT_INTERRUPTED);
    }
    if let Some((phase, e)) = report.first_error() {
        let e = c.redactor.scrub(e);
        eprintln!(
            "error: phase {phase} failed: {e}\nlog: {}\nrun deploy again to resume: completed phases are not repeated",
            c.dir.join("logs").join(format!("{phase}.log")).display()
        );
        return Ok(1);
    }
    Ok(0)
}
