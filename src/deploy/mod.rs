//! Deploy, destroy, status, jobs and dashboard: the commands that touch the world. Shared here:
//! the session (validated model, rendered artifacts, state folder, lock, secret redactor,
//! progress), the approval rule, and the run of the phase graph; each target carries out its
//! phases in its own module ([`kube`] for `aks` and `kubernetes`, [`crate::local`] for `local`).

pub mod kube;

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result, bail};

use crate::model::Deployment;
use crate::plan::{self, Graph};
use crate::render::Rendered;
use crate::run::exec::{self, Env, Outcome, Phases, Report};
use crate::run::lock::Lock;
use crate::run::progress::{Reporter, Scrubbing, Style};
use crate::run::redact::Redactor;
use crate::run::state::Store;
use crate::run::{deployment_dir, signals};
use crate::spec::Target;
use kube::azure_preflight::Check;

/// Exit code of a run stopped by Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Everything a command needs about one deployment.
pub struct Session {
    pub d: Deployment,
    pub rendered: Rendered,
    /// `.raydeploy/<deployment>`
    pub dir: PathBuf,
    pub redactor: Redactor,
    pub reporter: Arc<dyn Reporter>,
    pub style: Style,
    /// Changes that replace or delete the cluster, a node pool, the registry or the RayCluster
    /// are allowed (`--allow-destroy`).
    pub allow_destroy: bool,
    /// Terraform's saved plan to apply instead of planning anew (`deploy --plan`).
    pub saved_tfplan: Option<PathBuf>,
    /// `deploy --refresh`: every phase asks the live state in full, trusting neither the state
    /// file nor the marks the last deploy left (the resource group's applied tag).
    pub refresh: bool,
    /// Parts of the Azure preflight left out (`--skip-preflight`).
    pub skip_preflight: BTreeSet<Check>,
    /// The Kubernetes version the Azure preflight chose for a spec that leaves it open (passed
    /// to Terraform as `-var=kubernetes_version=…`).
    pub kubernetes_version: OnceLock<String>,
    /// The infra fast path's answer, read once per run (preflight and infra both ask): the
    /// infra outputs when the resource group carries this configuration's hash.
    pub applied: OnceLock<Option<crate::run::exec::Outputs>>,
    /// Digests found in the registry during this run (`registry/repo:tag` → `sha256:…`): a
    /// content-addressed tag, once seen, is not read again.
    pub digests: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

impl Session {
    pub fn new(d: Deployment, rendered: Rendered, style: Style) -> Self {
        let dir = deployment_dir(&d);
        let redactor = Redactor::process();
        register_local_secrets(&d, &redactor);
        Self {
            d,
            rendered,
            dir,
            reporter: Arc::new(Scrubbing::new(style.reporter(), redactor.clone())),
            redactor,
            style,
            allow_destroy: false,
            saved_tfplan: None,
            refresh: false,
            skip_preflight: BTreeSet::new(),
            kubernetes_version: OnceLock::new(),
            applied: OnceLock::new(),
            digests: Default::default(),
        }
    }

    pub fn env(&self) -> Env {
        Env { dir: self.dir.clone(), redactor: self.redactor.clone(), reporter: self.reporter.clone() }
    }

    /// The state file (created on first write).
    pub fn store(&self) -> Result<Store> {
        Ok(Store::open(&self.dir, &self.d.name, self.d.target.as_str(), self.redactor.clone())?)
    }

    /// Takes the deployment's lock; fails fast when another run holds it.
    pub fn lock(&self, command: &str) -> Result<Lock> {
        Ok(Lock::acquire(&self.dir, &self.d.name, command)?)
    }

    /// Where the rendered artifacts are written for the tools to read.
    pub fn rendered_dir(&self) -> PathBuf {
        self.dir.join("rendered")
    }

    pub fn write_rendered(&self) -> Result<PathBuf> {
        let out = self.rendered_dir();
        self.rendered.write(&out).with_context(|| format!("writing {}", out.display()))?;
        Ok(out)
    }

    pub fn json(&self) -> bool {
        self.style == Style::Json
    }
}

/// Registers the secret values this machine holds (`fromEnv` variables that are set, `fromFile`
/// files that can be read) before anything runs, so no command can show them, whether or not
/// it resolves the secrets itself; Key Vault values are registered when they are read.
fn register_local_secrets(d: &Deployment, redactor: &Redactor) {
    use std::io::Read;
    for s in &d.secrets {
        for src in s.sources.values() {
            match src {
                crate::spec::SecretSource::FromEnv(var) => {
                    if let Ok(v) = std::env::var(var) {
                        redactor.add(&v);
                    }
                }
                crate::spec::SecretSource::FromFile(path) => {
                    let mut text = String::new();
                    let read =
                        std::fs::File::open(d.dir.join(path)).and_then(|f| f.take(1 << 20).read_to_string(&mut text));
                    if read.is_ok() {
                        redactor.add(&text);
                    }
                }
                crate::spec::SecretSource::FromKeyVault(_) => {}
            }
        }
    }
}

/// True when no one can answer a prompt.
pub fn non_interactive() -> bool {
    !std::io::stdin().is_terminal() || std::env::var_os("CI").is_some()
}

/// Asks before a mutation of shared infrastructure. `--auto-approve` skips the question; without
/// a terminal (or with CI set) there is no question and the mutation needs `--auto-approve`.
pub fn approve(what: &str, auto_approve: bool) -> Result<()> {
    if auto_approve {
        return Ok(());
    }
    if non_interactive() {
        bail!("{what} needs --auto-approve when not run from a terminal (stdin is not a TTY or CI is set)");
    }
    eprint!("{what}? Only 'yes' is accepted: ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    if line.trim() != "yes" {
        bail!("cancelled");
    }
    Ok(())
}

/// One target's way of doing every command.
pub trait TargetOps: Phases {
    /// Checks before anything mutates, for `destroy`, `job` and `dashboard` (deploy has its
    /// own preflight phase).
    fn destroy(&self, s: &Session, opts: &DestroyOptions) -> Result<()>;
    /// Per-phase state and live facts: the text for the terminal and the JSON for `--output json`.
    fn status(&self, s: &Session) -> Result<(String, serde_json::Value)>;
    /// Submits a job; `follow` streams its logs until it ends. Returns the exit code.
    fn job_submit(&self, s: &Session, name: &str, follow: bool) -> Result<u8>;
    fn job_logs(&self, s: &Session, name: &str) -> Result<u8>;
    fn job_list(&self, s: &Session) -> Result<(String, serde_json::Value)>;
    fn job_delete(&self, s: &Session, name: &str) -> Result<()>;
    /// Serves or prints the dashboard address; blocks while a port-forward runs.
    fn dashboard(&self, s: &Session) -> Result<()>;
}

#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    pub dry_run: bool,
    pub with_jobs: bool,
    pub auto_approve: bool,
    /// A plan file from `plan --out` to apply exactly.
    pub plan: Option<PathBuf>,
    pub allow_destroy: bool,
    /// Ask the live state in full (see [`Session::refresh`]).
    pub refresh: bool,
}

#[derive(Debug, Clone, Default)]
pub struct DestroyOptions {
    pub auto_approve: bool,
    pub keep_infra: bool,
}

/// The target implementation for a session.
pub fn ops(s: &Session) -> Result<Box<dyn TargetOps + '_>> {
    Ok(match s.d.target {
        Target::Aks | Target::Kubernetes => Box::new(kube::Kube::new(s)?),
        Target::Local => Box::new(crate::local::Local::new(s)?),
    })
}

pub fn graph(s: &Session, opts: &DeployOptions) -> Graph {
    plan::graph(&s.d, &s.rendered, plan::Options { with_jobs: opts.with_jobs })
}

/// `deploy`: the phase graph, run (or printed with `--dry-run`).
pub fn deploy(s: &mut Session, opts: &DeployOptions) -> Result<u8> {
    s.allow_destroy = opts.allow_destroy;
    s.refresh = opts.refresh;
    if let Some(plan) = &opts.plan {
        s.saved_tfplan = check_plan(s, plan)?;
    }
    if !opts.dry_run && !s.allow_destroy {
        guard(s)?;
    }
    let s = &*s;
    let g = graph(s, opts);
    let ops = ops(s)?;
    if opts.dry_run {
        print!("{}", exec::dry_run(&g, ops.as_ref(), &s.redactor));
        return Ok(0);
    }
    if s.d.target != Target::Local {
        approve(&format!("Deploy `{}` to {}", s.d.name, s.d.target.as_str()), opts.auto_approve)?;
    }
    signals::install();
    let _lock = s.lock("deploy")?;
    let store = s.store()?;
    let report = exec::execute(&g, ops.as_ref(), &store, &s.env());
    if report.ok() {
        crate::preview::snapshot::record(&s.d, &s.rendered)
            .with_context(|| format!("recording the applied snapshot in {}", s.dir.display()))?;
    }
    finish(s, &report, &store)
}

/// Refuses destructive changes (against the last applied snapshot) before anything runs; the
/// infra phase checks Terraform's own plan again before applying it.
fn guard(s: &Session) -> Result<()> {
    let snap = crate::preview::snapshot::dir(&s.d);
    if !snap.is_dir() {
        return Ok(());
    }
    let plan = crate::preview::offline_plan(s, None, false)?;
    refuse_destructive(plan.destructive.iter().map(|d| d.reason.as_str()))
}

/// Fails, listing them, when there are destructive changes.
pub fn refuse_destructive<'a>(reasons: impl Iterator<Item = &'a str>) -> Result<()> {
    let list: Vec<&str> = reasons.collect();
    if list.is_empty() {
        return Ok(());
    }
    bail!(
        "refusing destructive changes (run `raydeploy plan` to see them; deploy with --allow-destroy to accept):\n{}",
        list.iter().map(|r| format!("  !! {r}")).collect::<Vec<_>>().join("\n")
    )
}

/// `deploy --plan`: the plan must still hold; returns Terraform's saved plan when there is one.
fn check_plan(s: &Session, path: &std::path::Path) -> Result<Option<PathBuf>> {
    use crate::preview::{self, planfile};
    let f = planfile::read(path)?;
    if f.deployment != s.d.name {
        bail!("{} is a plan for `{}`, not `{}`", path.display(), f.deployment, s.d.name);
    }
    let mut now = preview::Fingerprint {
        spec: s.d.spec_hash.clone(),
        rendered: preview::rendered_hash(&s.rendered),
        live: Default::default(),
    };
    if f.mode == preview::Mode::Live {
        now.live = preview::live::fingerprint(s)?;
    }
    let moved = planfile::drift(&f.fingerprint, &now);
    if !moved.is_empty() {
        bail!(
            "{} no longer matches; plan again:\n{}",
            path.display(),
            moved.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n")
        );
    }
    if !s.allow_destroy {
        refuse_destructive(f.destructive.iter().map(String::as_str))?;
    }
    let tf = planfile::tfplan_path(path);
    Ok(tf.is_file().then_some(tf))
}

/// Prints the summary of a run and picks the exit code.
pub fn finish(s: &Session, report: &Report, store: &Store) -> Result<u8> {
    if s.json() {
        let mut summary = serde_json::json!({"event": "summary", "ok": report.ok(), "seconds": report.seconds, "phases": report.phases});
        s.redactor.scrub_json(&mut summary);
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
        let e = s.redactor.scrub(e);
        eprintln!(
            "error: phase {phase} failed: {e}\nlog: {}\nrun deploy again to resume: completed phases are not repeated",
            s.dir.join("logs").join(format!("{phase}.log")).display()
        );
        return Ok(1);
    }
    Ok(0)
}
