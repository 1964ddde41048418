//! Plan files: `plan --out PLAN` writes the plan (JSON, with what it was computed from) and, on
//! a live AKS plan, Terraform's saved plan beside it (`PLAN.tfplan`). `deploy --plan PLAN`
//! applies exactly that plan: it refuses, naming what moved, when the spec, the rendered
//! artifacts or the live state changed since the plan was written.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{Fingerprint, Mode, Plan};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanFile {
    pub format_version: u32,
    pub deployment: String,
    pub mode: Mode,
    pub fingerprint: Fingerprint,
    /// Destructive changes the plan contains (applying needs `--allow-destroy`).
    pub destructive: Vec<String>,
    /// The whole plan as `plan --output json` prints it.
    pub plan: serde_json::Value,
}

/// Terraform's saved plan beside a plan file.
pub fn tfplan_path(plan: &Path) -> PathBuf {
    let mut p = plan.as_os_str().to_owned();
    p.push(".tfplan");
    PathBuf::from(p)
}

pub fn write(path: &Path, plan: &Plan) -> Result<()> {
    let f = PlanFile {
        format_version: super::FORMAT_VERSION,
        deployment: plan.deployment.clone(),
        mode: plan.mode,
        fingerprint: plan.fingerprint.clone(),
        destructive: plan.destructive.iter().map(|d| d.reason.clone()).collect(),
        plan: serde_json::to_value(plan)?,
    };
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut value = serde_json::to_value(&f)?;
    crate::run::redact::Redactor::process().scrub_json(&mut value);
    crate::run::state::write_atomic(path, serde_json::to_string_pretty(&value)?.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

pub fn read(path: &Path) -> Result<PlanFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading plan {}", path.display()))?;
    let f: PlanFile =
        serde_json::from_str(&text).with_context(|| format!("{} is not a raydeploy plan", path.display()))?;
    if f.format_version != super::FORMAT_VERSION {
        bail!(
            "{} has plan format {}, this raydeploy reads {}",
            path.display(),
            f.format_version,
            super::FORMAT_VERSION
        );
    }
    Ok(f)
}

/// What moved between the plan's fingerprint and now (empty: the plan still holds).
pub fn drift(planned: &Fingerprint, now: &Fingerprint) -> Vec<String> {
    let mut moved = vec![];
    if planned.spec != now.spec {
        moved.push("the spec changed since the plan was written".to_string());
    }
    if planned.rendered != now.rendered {
        moved.push("the rendered artifacts changed (templates, spec or raydeploy version)".to_string());
    }
    for (k, v) in &planned.live {
        match now.live.get(k) {
            Some(n) if n == v => {}
            Some(n) => moved.push(format!("live {k} changed: {v} → {n}")),
            None => moved.push(format!("live {k} is gone (was {v})")),
        }
    }
    for k in now.live.keys().filter(|k| !planned.live.contains_key(*k)) {
        moved.push(format!("live {k} appeared since the plan was written"));
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_names_what_moved() {
        let a = Fingerprint {
            spec: "s".into(),
            rendered: "r".into(),
            live: [("release ray-cluster".to_string(), "3".to_string())].into(),
        };
        assert!(drift(&a, &a).is_empty());
        let mut b = a.clone();
        b.spec = "t".into();
        b.live.insert("release ray-cluster".into(), "4".into());
        let d = drift(&a, &b);
        assert_eq!(d.len(), 2);
        assert!(d[1].contains("3 → 4"), "{d:?}");
    }
}
