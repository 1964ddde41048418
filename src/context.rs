//! The context of one command on one deployment, shared by every target: the [`Context`]
//! (validated model, rendered artifacts, state folder, lock, secret redactor, progress), the
//! [`Target`] trait each target implements (see [`crate::targets`]), the command options, the
//! approval rule and the refusal of destructive changes.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::{Context as _, Result, bail};

use crate::model::Deployment;
use crate::model::azure::Check;
use crate::render::Rendered;
use crate::run::deployment_dir;
use crate::run::exec::{Env, Phases};
use crate::run::lock::Lock;
use crate::run::progress::{Reporter, Scrubbing, Style};
use crate::run::redact::Redactor;
use crate::run::state::Store;

/// Exit code of a run stopped by Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Everything a command needs about one deployment: the validated model, its rendered
/// artifacts, the state folder, the secret redactor, the progress reporter and the run's options.
pub struct Context {
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
    /// infra outputs when the resource group carries this configuration's hash, and the
    /// subscription the resource group's id names (when the group could be read).
    pub applied: OnceLock<(Option<crate::run::exec::Outputs>, Option<String>)>,
    /// The registry's digest of each image tag (`registry/repo:tag` → `sha256:…`, or none),
    /// shared by preflight and the image phases: a content-addressed tag, once found, is not
    /// read again.
    pub registry: crate::run::shared::SharedReads<Option<String>>,
    /// Held while a file under [`Context::rendered_dir`] is written: writing the render removes
    /// files it does not list, which would include another phase's file half written (its
    /// temporary name) at the same moment.
    pub rendered_writes: std::sync::Mutex<()>,
}

impl Context {
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
            registry: Default::default(),
            rendered_writes: Default::default(),
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
        let _writing = self.rendered_writes.lock().unwrap_or_else(|e| e.into_inner());
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
pub trait Target: Phases {
    /// Checks before anything mutates, for `destroy`, `job` and `dashboard` (deploy has its
    /// own preflight phase).
    fn destroy(&self, c: &Context, opts: &DestroyOptions) -> Result<()>;
    /// Per-phase state and live facts: the text for the terminal and the JSON for `--output json`.
    fn status(&self, c: &Context) -> Result<(String, serde_json::Value)>;
    /// Submits a job; `follow` streams its logs until it ends. Returns the exit code.
    fn job_submit(&self, c: &Context, name: &str, follow: bool) -> Result<u8>;
    fn job_logs(&self, c: &Context, name: &str) -> Result<u8>;
    fn job_list(&self, c: &Context) -> Result<(String, serde_json::Value)>;
    fn job_delete(&self, c: &Context, name: &str) -> Result<()>;
    /// Serves or prints the dashboard address; blocks while a port-forward runs.
    fn dashboard(&self, c: &Context) -> Result<()>;
    /// `session`: the endpoints on this machine ([`crate::session`]); blocks while port-forwards run.
    fn session(&self, c: &Context, o: &crate::session::Options) -> Result<()>;
    /// `run NAME` once [`crate::job_run`] brought what the job needs up to date: an ephemeral
    /// job on a cluster of its own that is gone afterwards (deleted by the operator after its
    /// TTL, or at once with `rm`), a shared job on the deployed cluster. Streams its logs and
    /// returns its exit code; Ctrl-C stops the job (and its own cluster).
    fn run(&self, c: &Context, name: &str, rm: bool) -> Result<u8>;
}

#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    pub dry_run: bool,
    pub with_jobs: bool,
    pub auto_approve: bool,
    /// A plan file from `plan --out` to apply exactly.
    pub plan: Option<PathBuf>,
    pub allow_destroy: bool,
    /// Ask the live state in full (see [`Context::refresh`]).
    pub refresh: bool,
}

#[derive(Debug, Clone, Default)]
pub struct DestroyOptions {
    pub auto_approve: bool,
    pub keep_infra: bool,
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
