//! Phases preflight, infra (terraform) and credentials (az aks get-credentials); destroy and
//! status of the Terraform-managed infrastructure.

use anyhow::Result;

use super::{Kube, unknown};
use crate::deploy::DestroyOptions;
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

pub fn destroy(_k: &Kube, _o: &DestroyOptions) -> Result<()> {
    anyhow::bail!("destroy of infra is not built yet")
}

pub fn status(_k: &Kube) -> Result<(String, serde_json::Value)> {
    Ok((String::new(), serde_json::Value::Null))
}
