//! The command line (thin): parse arguments, run the pipeline, print, choose the exit code.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::context::{self, Context};
use crate::deploy;
use crate::model::azure::Check;
use crate::model::{self, Deployment};
use crate::plan;
use crate::render;
use crate::run::progress::Style;
use crate::run::redact::Redactor;
use crate::session;
use crate::spec::{self, Report, Target};
use crate::targets;

#[derive(Parser, Debug)]
#[command(name = "raydeploy", version, about = "One declarative Ray-cluster spec → a running Ray deployment", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SpecArgs {
    /// The spec file.
    #[arg(default_value = "raydeploy.yaml")]
    pub spec: PathBuf,
    /// Apply `environments/ENV.yaml` next to the spec.
    #[arg(short = 'e', long = "env", value_name = "ENV")]
    pub env: Option<String>,
    /// Run the spec on another target than the one it names.
    #[arg(long, value_enum)]
    pub target: Option<TargetArg>,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum TargetArg {
    Aks,
    Kubernetes,
    Local,
}

impl From<TargetArg> for Target {
    fn from(t: TargetArg) -> Self {
        match t {
            TargetArg::Aks => Target::Aks,
            TargetArg::Kubernetes => Target::Kubernetes,
            TargetArg::Local => Target::Local,
        }
    }
}

/// A part of the Azure preflight that `--skip-preflight` leaves out.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipCheck {
    /// vCPU quota per family, Spot and regional (`az vm list-usage`).
    Quota,
    /// VM sizes offered in the region, its zones and for Spot (`az vm list-skus`).
    Skus,
    /// The Kubernetes version is offered (`az aks get-versions`).
    Versions,
}

impl From<SkipCheck> for Check {
    fn from(c: SkipCheck) -> Self {
        match c {
            SkipCheck::Quota => Check::Quota,
            SkipCheck::Skus => Check::Skus,
            SkipCheck::Versions => Check::Versions,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load, merge and validate the spec; list every problem.
    Validate {
        #[command(flatten)]
        args: SpecArgs,
    },
    /// Write the artifacts (Terraform, Dockerfile, Helm values, manifests).
    Render {
        #[command(flatten)]
        args: SpecArgs,
        /// Output folder (default: `rendered/<deployment>` next to the spec).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Write nothing; exit 1 with a unified diff when DIR differs from the render (or holds
        /// files raydeploy did not write, unless --force).
        #[arg(long)]
        check: bool,
        /// Write even though DIR holds files raydeploy did not write: they are left alone (one at
        /// a path raydeploy writes is replaced); only raydeploy's own files are ever removed.
        #[arg(long)]
        force: bool,
    },
    /// Show the resolved deployment: pools, allocatable, pod requests, fit, derived names.
    Explain {
        #[command(flatten)]
        args: SpecArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Create or update the deployment: run every phase whose inputs changed, in order, in
    /// parallel where independent; resume after a failure.
    Deploy {
        #[command(flatten)]
        args: SpecArgs,
        /// Print the phase graph and every command it would run; run nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also submit every job once the cluster is ready.
        #[arg(long)]
        with_jobs: bool,
        /// Do not ask before changing cloud or cluster resources (required without a terminal).
        #[arg(long)]
        auto_approve: bool,
        /// Apply exactly this plan (from `plan --out`); refused when anything moved since.
        #[arg(long, value_name = "PLAN")]
        plan: Option<PathBuf>,
        /// Allow changes that replace or delete the cluster, a node pool, the registry or the RayCluster.
        #[arg(long)]
        allow_destroy: bool,
        /// Ask every layer's live state in full (Terraform plan, registry manifests, Helm values)
        /// instead of trusting the marks the last deploy left (the resource group's
        /// raydeploy-applied tag, the recorded state).
        #[arg(long)]
        refresh: bool,
        /// Leave out parts of the Azure preflight (for accounts that may not read them).
        #[arg(long, value_enum, value_delimiter = ',', value_name = "CHECKS")]
        skip_preflight: Vec<SkipCheck>,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Preview every layer (infrastructure, image, operator, cluster, secrets, mounts, jobs).
    /// Exit code 0: no changes, 2: changes, 1: error.
    Plan {
        #[command(flatten)]
        args: SpecArgs,
        /// No cloud or cluster access: compare the render with the last applied snapshot.
        #[arg(long)]
        offline: bool,
        /// Compare against this rendered folder instead of the last applied snapshot (implies --offline).
        #[arg(long, value_name = "DIR")]
        against: Option<PathBuf>,
        /// Write the plan to PLAN (and Terraform's saved plan to PLAN.tfplan) for `deploy --plan`.
        #[arg(long, value_name = "PLAN")]
        out: Option<PathBuf>,
        /// Count the jobs `deploy --with-jobs` would submit as changes (without it, jobs are
        /// listed for information only: a deploy without --with-jobs does not run them).
        #[arg(long)]
        with_jobs: bool,
        /// Leave out parts of the Azure preflight (for accounts that may not read them).
        #[arg(long, value_enum, value_delimiter = ',', value_name = "CHECKS")]
        skip_preflight: Vec<SkipCheck>,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Remove the deployment in reverse order (jobs, cluster, secrets, operator, infra).
    Destroy {
        #[command(flatten)]
        args: SpecArgs,
        #[arg(long)]
        auto_approve: bool,
        /// Keep the Terraform-managed infrastructure (AKS, registry); remove only what runs on it.
        #[arg(long)]
        keep_infra: bool,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Per-phase state and live facts of the deployment.
    Status {
        #[command(flatten)]
        args: SpecArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Run one job to its end and exit with its result (0: it succeeded). An ephemeral job
    /// (`cluster: ephemeral`) gets a cluster of its own, gone afterwards, once what it needs is
    /// up to date (infra, image, operator, secrets, mounts; not the long-running cluster); a
    /// shared job runs on the deployed cluster, as `job submit --follow`.
    Run {
        /// The job's `name` in the spec.
        job: String,
        #[command(flatten)]
        args: SpecArgs,
        /// Delete the job's RayJob (its cluster with it) or local submission as soon as it ends,
        /// instead of `ttlSecondsAfterFinished` later.
        #[arg(long)]
        rm: bool,
        /// Do not ask before changing cloud or cluster resources (required without a terminal).
        #[arg(long)]
        auto_approve: bool,
        /// Print the phases and every command they would run; run nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Submit, follow, list and delete the spec's jobs.
    Job {
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Show the Ray dashboard (port-forward to the head service on a cluster).
    Dashboard {
        #[command(flatten)]
        args: SpecArgs,
    },
    /// Reach the running cluster from this machine: the dashboard and job API, the Ray client
    /// and Serve (port-forwards on a cluster, reconnected when they drop, held until Ctrl-C).
    Session {
        #[command(flatten)]
        args: SpecArgs,
        /// A local port, NAME=PORT with NAME one of dashboard, client, serve (repeatable; by
        /// default Ray's own port when free, else any free port).
        #[arg(long = "port", value_name = "NAME=PORT", value_parser = session::parse_port_arg)]
        ports: Vec<(session::Port, u16)>,
        /// `json`: one object on one line, printed once the endpoints answer.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        /// Print `export` lines for `eval "$(raydeploy session --print-env)"`; on a cluster the
        /// port-forwards keep running in the background (`kill $RAYDEPLOY_SESSION_PID` ends them).
        #[arg(long, conflicts_with = "output")]
        print_env: bool,
        /// The background half of --print-env.
        #[arg(long, hide = true)]
        background: bool,
    },
    /// Print the spec's JSON Schema.
    Schema,
    /// Write a commented starter spec.
    Init {
        /// Folder to write `raydeploy.yaml` into.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Overwrite an existing spec.
        #[arg(long)]
        force: bool,
    },
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Submit a job; the exit code is the job's result.
    Submit {
        /// The job's `name` in the spec.
        name: String,
        #[command(flatten)]
        args: SpecArgs,
        /// Stream the job's logs until it ends (default: wait and print them at the end).
        #[arg(long)]
        follow: bool,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Print a job's logs.
    Logs {
        name: String,
        #[command(flatten)]
        args: SpecArgs,
    },
    /// The spec's jobs and their last state.
    List {
        #[command(flatten)]
        args: SpecArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Delete a job (its RayJob object, or stop it on the local cluster).
    Delete {
        name: String,
        #[command(flatten)]
        args: SpecArgs,
    },
}

/// Version of the JSON document `status --output json` prints.
pub const STATUS_FORMAT_VERSION: u32 = 1;

/// Exit code of a command-line usage error (unknown flag, missing argument, bad value). It is
/// 1, like any other error: clap's own 2 would read as "changes" to `plan`'s callers.
pub const USAGE_ERROR: u8 = 1;

/// Entry point used by `main`.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` are "errors" clap prints on stdout: they succeed.
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(USAGE_ERROR) } else { ExitCode::SUCCESS };
        }
    };
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // Every secret value this run registered is masked in the error and its causes.
            eprintln!("error: {}", Redactor::process().scrub(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

fn stdout_color() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Loads and models a spec, or prints every problem.
pub fn load_model(args: &SpecArgs) -> std::result::Result<(spec::Loaded, Deployment), Report> {
    let loaded = spec::load(&args.spec, args.env.as_deref(), &env_var)?;
    let deployment = model::build(&loaded, args.target.map(Into::into)).map_err(|p| loaded.report(p))?;
    Ok((loaded, deployment))
}

fn fail(report: Report) -> ExitCode {
    eprint!("{}", report.render(color()));
    ExitCode::from(1)
}

/// Renders every artifact, or prints the problems of the templates (each located in its file)
/// like a spec's and returns `None`: nothing is written or run.
fn render_checked(d: &Deployment) -> Result<Option<render::Rendered>> {
    match render::render(d) {
        Ok(r) => Ok(Some(r)),
        Err(render::RenderError::Templates(report)) => {
            fail(*report);
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn warn(d: &Deployment) {
    for w in &d.warnings {
        eprintln!("warning: {w}");
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate { args } => {
            let (_, d) = match load_model(&args) {
                Ok(v) => v,
                Err(r) => return Ok(fail(r)),
            };
            warn(&d);
            // Rendering is pure: a spec is valid only if every artifact renders.
            if render_checked(&d)?.is_none() {
                return Ok(ExitCode::from(1));
            }
            println!("{}: valid (deployment `{}`, target {})", args.spec.display(), d.name, d.target.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Command::Render { args, out, check, force } => {
            let (loaded, d) = match load_model(&args) {
                Ok(v) => v,
                Err(r) => return Ok(fail(r)),
            };
            warn(&d);
            let Some(rendered) = render_checked(&d)? else { return Ok(ExitCode::from(1)) };
            let out = out.unwrap_or_else(|| loaded.dir.join("rendered").join(&d.name));
            if check {
                return Ok(match rendered.diff(&out, force)? {
                    None => {
                        println!("{}: up to date ({} files)", out.display(), rendered.files.len());
                        ExitCode::SUCCESS
                    }
                    Some(diff) => {
                        print!("{diff}");
                        eprintln!("{} differs from the render of {}", out.display(), args.spec.display());
                        ExitCode::from(1)
                    }
                });
            }
            let done = match rendered.write_to(&out, render::output::Mode::Out { force }) {
                Ok(done) => done,
                Err(e @ render::output::OutputError::Refused { .. }) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(1));
                }
                Err(e) => return Err(anyhow::Error::new(e).context(format!("writing {}", out.display()))),
            };
            for f in &done.replaced {
                eprintln!(
                    "warning: replaced {} ({}) with raydeploy's file (--force)",
                    out.join(&f.rel).display(),
                    f.why
                );
            }
            if !done.kept.is_empty() {
                eprintln!(
                    "note: left {} file(s) raydeploy did not write in {} (--force)",
                    done.kept.len(),
                    out.display()
                );
            }
            for f in &done.removed {
                eprintln!("removed {} (no longer rendered)", out.join(f).display());
            }
            for f in rendered.files.keys() {
                println!("{}", out.join(f).display());
            }
            if rendered.files.is_empty() {
                println!("target {} has no artifacts to render", d.target.as_str());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { args, output } => {
            let (_, d) = match load_model(&args) {
                Ok(v) => v,
                Err(r) => return Ok(fail(r)),
            };
            warn(&d);
            match output {
                Output::Text => print!("{}", crate::explain::explain(&d)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&d)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Deploy {
            args,
            dry_run,
            with_jobs,
            auto_approve,
            plan,
            allow_destroy,
            refresh,
            skip_preflight,
            output,
        } => {
            let Some(mut s) = load_context(&args, output)? else { return Ok(ExitCode::from(1)) };
            skip(&mut s, &skip_preflight);
            let opts = context::DeployOptions { dry_run, with_jobs, auto_approve, plan, allow_destroy, refresh };
            Ok(ExitCode::from(deploy::deploy(&mut s, &opts)?))
        }
        Command::Plan { args, offline, against, out, with_jobs, skip_preflight, output } => {
            let Some(mut s) = load_context(&args, output)? else { return Ok(ExitCode::from(1)) };
            if !(offline || against.is_some()) {
                skip(&mut s, &skip_preflight);
            }
            let opts = plan::Options { offline: offline || against.is_some(), against, out, with_jobs };
            let plan = plan::run(&s, &opts)?;
            let text = match output {
                Output::Text => plan::text::render(&plan, stdout_color()),
                Output::Json => String::new(),
            };
            print_either(output, &text, &serde_json::to_value(&plan)?)?;
            Ok(ExitCode::from(plan.exit_code()))
        }
        Command::Destroy { args, auto_approve, keep_infra, output } => {
            let Some(s) = load_context(&args, output)? else { return Ok(ExitCode::from(1)) };
            let opts = context::DestroyOptions { auto_approve, keep_infra };
            targets::for_context(&s)?.destroy(&s, &opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { args, output } => {
            let Some(s) = load_context(&args, output)? else { return Ok(ExitCode::from(1)) };
            let (text, live) = targets::for_context(&s)?.status(&s)?;
            let mut json = serde_json::json!({
                "format_version": STATUS_FORMAT_VERSION,
                "deployment": s.d.name,
                "target": s.d.target.as_str(),
            });
            if let (Some(out), Some(live)) = (json.as_object_mut(), live.as_object()) {
                for (k, v) in live {
                    out.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            print_either(output, &text, &json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Job { command } => job(command),
        Command::Run { job, args, rm, auto_approve, dry_run, output } => {
            let Some(s) = load_context(&args, output)? else { return Ok(ExitCode::from(1)) };
            let opts = crate::job_run::RunOptions { rm, auto_approve, dry_run };
            Ok(ExitCode::from(crate::job_run::run(&s, &job, &opts)?))
        }
        Command::Dashboard { args } => {
            let Some(s) = load_context(&args, Output::Text)? else { return Ok(ExitCode::from(1)) };
            targets::for_context(&s)?.dashboard(&s)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Session { args, ports, output, print_env, background } => {
            let ports = match session::check_ports(&ports) {
                Ok(p) => p,
                Err(e) => return Ok(usage_error("session", clap::error::ErrorKind::ArgumentConflict, &e)),
            };
            let form = match (print_env, output) {
                (true, _) => session::Form::Env,
                (false, Output::Json) => session::Form::Json,
                (false, Output::Text) => session::Form::Text,
            };
            let Some(s) = load_context(&args, if background { Output::Text } else { output })? else {
                return Ok(ExitCode::from(1));
            };
            let o = session::Options { ports, form, background, spec_args: spec_args(&args) };
            targets::for_context(&s)?.session(&s, &o)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(spec::schema_check::schema())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Init { dir, force } => init(&dir, force),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "raydeploy", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Validates and renders the spec into a context for the commands that act on a deployment;
/// `None` after printing the spec's problems (nothing has run).
fn load_context(args: &SpecArgs, output: Output) -> Result<Option<Context>> {
    let (_, d) = match load_model(args) {
        Ok(v) => v,
        Err(r) => {
            fail(r);
            return Ok(None);
        }
    };
    warn(&d);
    let Some(rendered) = render_checked(&d)? else { return Ok(None) };
    Ok(Some(Context::new(d, rendered, Style::detect(output == Output::Json))))
}

/// Prints a usage error found after parsing (arguments that conflict together), as clap prints
/// its own: exit code [`USAGE_ERROR`].
fn usage_error(subcommand: &str, kind: clap::error::ErrorKind, message: &str) -> ExitCode {
    let mut cli = Cli::command();
    cli.build();
    let cmd = cli.find_subcommand_mut(subcommand).expect("a subcommand of raydeploy");
    let _ = cmd.error(kind, message).print();
    ExitCode::from(USAGE_ERROR)
}

/// The spec arguments as given (`SPEC`, `-e ENV`, `--target T`), to run another command on the
/// same deployment.
fn spec_args(args: &SpecArgs) -> Vec<std::ffi::OsString> {
    let mut v = vec![args.spec.clone().into_os_string()];
    if let Some(e) = &args.env {
        v.extend(["-e".into(), e.into()]);
    }
    if let Some(t) = args.target.and_then(|t| t.to_possible_value()) {
        v.extend(["--target".into(), t.get_name().into()]);
    }
    v
}

/// Records `--skip-preflight` and says, loudly on stderr, what goes unchecked.
fn skip(s: &mut Context, checks: &[SkipCheck]) {
    s.skip_preflight = checks.iter().map(|c| Check::from(*c)).collect();
    if s.d.target != Target::Aks {
        return;
    }
    for c in &s.skip_preflight {
        eprintln!(
            "WARNING: --skip-preflight={}: NOT checking {} before creating anything; a shortfall fails minutes into terraform apply",
            c.as_str(),
            c.what()
        );
    }
}

/// Prints what a command found, as text or JSON, scrubbed of every secret value this run knows
/// (plan diffs, status and job lists can hold what the tools answered).
fn print_either(output: Output, text: &str, json: &serde_json::Value) -> Result<()> {
    let r = Redactor::process();
    match output {
        Output::Text => print!("{}", r.scrub(text)),
        Output::Json => {
            let mut json = json.clone();
            r.scrub_json(&mut json);
            println!("{}", serde_json::to_string_pretty(&json)?)
        }
    }
    Ok(())
}

fn job(command: JobCommand) -> Result<ExitCode> {
    let (args, output) = match &command {
        JobCommand::Submit { args, output, .. } | JobCommand::List { args, output } => (args, *output),
        JobCommand::Logs { args, .. } | JobCommand::Delete { args, .. } => (args, Output::Text),
    };
    let Some(s) = load_context(args, output)? else { return Ok(ExitCode::from(1)) };
    if let JobCommand::Submit { name, .. } | JobCommand::Logs { name, .. } | JobCommand::Delete { name, .. } = &command
        && !s.d.jobs.iter().any(|j| &j.name == name)
    {
        let known: Vec<_> = s.d.jobs.iter().map(|j| j.name.as_str()).collect();
        anyhow::bail!(
            "no job `{name}` in {} (jobs: {})",
            args.spec.display(),
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        );
    }
    let target = targets::for_context(&s)?;
    Ok(ExitCode::from(match &command {
        JobCommand::Submit { name, follow, .. } => target.job_submit(&s, name, *follow)?,
        JobCommand::Logs { name, .. } => target.job_logs(&s, name)?,
        JobCommand::List { .. } => {
            let (text, json) = target.job_list(&s)?;
            print_either(output, &text, &json)?;
            0
        }
        JobCommand::Delete { name, .. } => {
            target.job_delete(&s, name)?;
            0
        }
    }))
}

/// The starter spec `init` writes.
pub const STARTER: &str = include_str!("../templates/init.yaml");

fn init(dir: &Path, force: bool) -> Result<ExitCode> {
    let path = dir.join("raydeploy.yaml");
    // A link counts as existing, even a dangling one; --force replaces the link, never writes through it.
    if std::fs::symlink_metadata(&path).is_ok() && !force {
        eprintln!("error: {} exists; use --force to overwrite it", path.display());
        return Ok(ExitCode::from(1));
    }
    std::fs::create_dir_all(dir)?;
    crate::run::state::write_atomic(&path, STARTER.as_bytes())?;
    println!("wrote {}\nnext: raydeploy validate {}", path.display(), path.display());
    Ok(ExitCode::SUCCESS)
}
