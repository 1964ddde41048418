//! Phases image-build and image-push: docker build of the CPU (and GPU) image, push, digest.

use anyhow::Result;

use super::{Kube, unknown};
use crate::plan::Phase;
use crate::run::exec::{Cx, Outputs};

pub fn probe(_k: &Kube, _p: &Phase, cx: &Cx) -> Result<Option<Outputs>> {
    Ok(cx.unchanged())
}

pub fn apply(_k: &Kube, p: &Phase, _cx: &Cx) -> Result<Outputs> {
    Err(unknown(p))
}

pub fn preview(_k: &Kube, _p: &Phase) -> Vec<String> {
    vec![]
}
