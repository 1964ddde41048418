//! The last, effectful step of the pipeline: running commands (one wrapper over duct), the
//! deployment's state and lock, Ctrl-C handling, progress, and the phase executor.

pub mod cache;
pub mod exec;
pub mod lock;
pub mod proc;
pub mod progress;
pub mod redact;
pub mod shared;
pub mod signals;
pub mod state;

use std::path::PathBuf;

use crate::model::Deployment;

/// `.raydeploy/<deployment>` next to the spec: state, lock, logs, and the local target's files.
pub fn deployment_dir(d: &Deployment) -> PathBuf {
    d.dir.join(".raydeploy").join(&d.name)
}
