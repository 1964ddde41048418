//! Target `local`: a real Ray cluster as processes on this machine.

use anyhow::{Result, bail};

use crate::deploy::{DestroyOptions, Session, TargetOps};
use crate::plan::Phase;
use crate::run::exec::{Cx, Outputs, Phases};

pub struct Local<'a> {
    pub s: &'a Session,
}

impl<'a> Local<'a> {
    pub fn new(s: &'a Session) -> Result<Self> {
        Ok(Self { s })
    }
}

impl Phases for Local<'_> {
    fn apply(&self, phase: &Phase, _cx: &Cx) -> Result<Outputs> {
        bail!("phase {} is not available for target {}", phase.id, self.s.d.target.as_str())
    }
    fn preview(&self, _phase: &Phase) -> Vec<String> {
        vec![]
    }
}

impl TargetOps for Local<'_> {
    fn destroy(&self, _s: &Session, _o: &DestroyOptions) -> Result<()> {
        bail!("destroy is not available for this target")
    }
    fn status(&self, _s: &Session) -> Result<(String, serde_json::Value)> {
        bail!("status is not available for this target")
    }
    fn job_submit(&self, _s: &Session, _n: &str, _f: bool) -> Result<u8> {
        bail!("job submit is not available for this target")
    }
    fn job_logs(&self, _s: &Session, _n: &str) -> Result<u8> {
        bail!("job logs is not available for this target")
    }
    fn job_list(&self, _s: &Session) -> Result<(String, serde_json::Value)> {
        bail!("job list is not available for this target")
    }
    fn job_delete(&self, _s: &Session, _n: &str) -> Result<()> {
        bail!("job delete is not available for this target")
    }
    fn dashboard(&self, _s: &Session) -> Result<()> {
        bail!("dashboard is not available for this target")
    }
}
