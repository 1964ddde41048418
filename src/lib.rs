//! raydeploy: one declarative Ray-cluster spec → validated deployment model → rendered artifacts
//! → a running Ray deployment.
//!
//! The pipeline, pure until [`run`]: [`spec`] (load, overlay, interpolate, check) → [`model`]
//! (derived names, node pools, pod sizing, cross-layer rules) → [`render`] (one module per
//! artifact family) → [`graph`] (the phases of a deploy and the hash of each one's inputs) →
//! [`run`] (subprocesses, state, lock, logs, redaction, the graph's runner) → [`targets`] (the
//! phases and commands of [`targets::kube`] for `aks` and `kubernetes` and [`targets::local`]
//! for `local`; what both need is in [`context`], never in one another) → the commands:
//! [`deploy`], [`job_run`] (`run`), [`plan`] (the preview of a deploy, live or offline), [`explain`], and [`cli`]
//! (clap, thin; status, destroy, jobs and dashboard go straight to the target), [`session`] (the
//! endpoints of the running cluster on this machine).

pub mod cli;
pub mod context;
pub mod deploy;
pub mod explain;
pub mod graph;
pub mod job_run;
pub mod model;
pub mod plan;
pub mod render;
pub mod run;
pub mod session;
pub mod spec;
pub mod targets;
