//! The command line (thin): parse arguments, run the pipeline, print, choose the exit code.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::model::{self, Deployment};
use crate::render;
use crate::spec::{self, Report, Target};

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
        /// Write nothing; exit 1 with a unified diff when DIR differs from the render.
        #[arg(long)]
        check: bool,
    },
    /// Show the resolved deployment: pools, allocatable, pod requests, fit, derived names.
    Explain {
        #[command(flatten)]
        args: SpecArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
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

/// Entry point used by `main`.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
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
            render::render(&d)?;
            println!("{}: valid (deployment `{}`, target {})", args.spec.display(), d.name, d.target.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Command::Render { args, out, check } => {
            let (loaded, d) = match load_model(&args) {
                Ok(v) => v,
                Err(r) => return Ok(fail(r)),
            };
            warn(&d);
            let rendered = render::render(&d)?;
            let out = out.unwrap_or_else(|| loaded.dir.join("rendered").join(&d.name));
            if check {
                return Ok(match rendered.diff(&out) {
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
            rendered.write(&out).with_context(|| format!("writing {}", out.display()))?;
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

/// The starter spec `init` writes.
pub const STARTER: &str = include_str!("../templates/init.yaml");

fn init(dir: &Path, force: bool) -> Result<ExitCode> {
    let path = dir.join("raydeploy.yaml");
    if path.exists() && !force {
        eprintln!("error: {} exists; use --force to overwrite it", path.display());
        return Ok(ExitCode::from(1));
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(&path, STARTER)?;
    println!("wrote {}\nnext: raydeploy validate {}", path.display(), path.display());
    Ok(ExitCode::SUCCESS)
}
