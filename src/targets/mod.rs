//! The targets: each carries out the phases of the graph and every command in its own module,
//! [`kube`] for `aks` and `kubernetes`, [`local`] for `local`. Both implement
//! [`crate::context::Target`]; what they share lives in [`crate::context`], [`crate::model`] and
//! [`crate::run`], never in one another.

pub mod kube;
pub mod local;

use anyhow::Result;

use crate::context::{Context, Target};
use crate::spec;

/// The target implementation for a context.
pub fn for_context(c: &Context) -> Result<Box<dyn Target + '_>> {
    Ok(match c.d.target {
        spec::Target::Aks | spec::Target::Kubernetes => Box::new(kube::Kube::new(c)?),
        spec::Target::Local => Box::new(local::Local::new(c)?),
    })
}
