//! raydeploy: one declarative Ray-cluster spec → validated deployment model → rendered artifacts.
//!
//! The pipeline, pure until the last step: [`spec`] (load, overlay, interpolate, check) →
//! [`model`] (derived names, node pools, pod sizing, cross-layer rules) → [`render`] (one module
//! per artifact family) → CLI.

pub mod cli;
pub mod deploy;
pub mod explain;
pub mod graph;
pub mod local;
pub mod model;
pub mod plan;

pub mod render;
pub mod run;
pub mod spec;
