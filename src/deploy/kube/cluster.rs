//! Phases crds, operator, secrets, mounts, cluster, ready and jobs (kubectl and helm); destroy,
//! status, job commands and the dashboard on the cluster.

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
    anyhow::bail!("destroy is not built yet")
}

pub fn status(_k: &Kube) -> Result<(String, serde_json::Value)> {
    Ok((String::new(), serde_json::Value::Null))
}

pub fn job_submit(_k: &Kube, _name: &str, _follow: bool) -> Result<u8> {
    anyhow::bail!("job submit is not built yet")
}

pub fn job_logs(_k: &Kube, _name: &str) -> Result<u8> {
    anyhow::bail!("job logs is not built yet")
}

pub fn job_list(_k: &Kube) -> Result<(String, serde_json::Value)> {
    anyhow::bail!("job list is not built yet")
}

pub fn job_delete(_k: &Kube, _name: &str) -> Result<()> {
    anyhow::bail!("job delete is not built yet")
}

pub fn dashboard(_k: &Kube) -> Result<()> {
    anyhow::bail!("dashboard is not built yet")
}
