//! The kuberay-operator chart on disk, for the crds and operator phases.
//!
//! - A chart folder (`kuberay.charts: vendor/kuberay`) is used where it is. A chart from a
//!   repository or an OCI registry is fetched once per run (`helm pull --untar`) into the
//!   deployment's folder, and both phases read that copy: one download, not one per phase.
//! - The crds phase reads the chart's `crds/` files (what `helm show crds` prints).
//! - The operator release is installed from a copy WITHOUT `crds/` ([`lean_operator_chart`]).
//!   raydeploy applies the CRDs itself and passes `--skip-crds`, but Helm stores the whole chart
//!   in every release record: KubeRay 1.7.0's CRDs are 4 MB of YAML, which made each record
//!   585 KB instead of 29 KB, written twice per install or upgrade, kept for every revision
//!   (Secrets are limited to 1 MiB) and read back by each `helm list`. Without them an install of
//!   the operator took 0.3 s instead of 0.9 s on the test bed (`tests/deploy_testbed.rs` checks
//!   the record carries no CRD).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Kube, live};
use crate::model::ChartSource;
use crate::run::proc::{Cmd, Runner};

pub const OPERATOR_CHART: &str = "kuberay-operator";
/// Where the deployment's folder keeps the charts raydeploy fetched or copied.
const CHARTS_DIR: &str = "charts";
/// Nested folders a chart may have (symbolic links are followed, as Helm does): deeper is a loop.
const MAX_DEPTH: usize = 32;

/// `helm pull` of the operator chart from its repository or registry, unpacked into `dir`.
pub fn pull_cmd(k: &Kube, dir: &Path) -> Cmd {
    let o = &k.s.d.operator;
    k.helm()
        .arg("pull")
        .args(o.charts.chart_args(OPERATOR_CHART, &o.version))
        .args(["--untar", "--untardir", &dir.to_string_lossy()])
        .timeout(Duration::from_secs(120))
        .idempotent(live::READ_ATTEMPTS)
}

/// Where a run's `helm pull` unpacks the operator chart.
pub fn pull_dir(k: &Kube) -> PathBuf {
    k.s.dir.join(CHARTS_DIR).join("pulled")
}

/// The folder of the lean copy the operator release is installed from.
pub fn lean_dir(k: &Kube) -> PathBuf {
    k.s.dir.join(CHARTS_DIR).join(OPERATOR_CHART)
}

/// The operator chart's folder: the spec's chart folder, or this run's `helm pull` of it
/// (pulled at most once per run).
pub fn operator_chart(k: &Kube, r: &Runner) -> Result<PathBuf> {
    if let ChartSource::Dir(dir) = &k.s.d.operator.charts {
        return Ok(dir.join(OPERATOR_CHART));
    }
    let mut pulled = k.pulled.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pulled.as_ref() {
        return Ok(p.clone());
    }
    let dir = pull_dir(k);
    remove_own(&dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    r.run(&pull_cmd(k, &dir))?;
    let chart = dir.join(OPERATOR_CHART);
    if !chart.join("Chart.yaml").is_file() {
        bail!("`helm pull` of {OPERATOR_CHART} {} left no {}", k.s.d.operator.version, chart.display());
    }
    *pulled = Some(chart.clone());
    Ok(chart)
}

/// The operator chart without its `crds/` folder, copied afresh into [`lean_dir`] (see the
/// module's documentation).
pub fn lean_operator_chart(k: &Kube, r: &Runner) -> Result<PathBuf> {
    let from = operator_chart(k, r)?;
    let to = lean_dir(k);
    let parent = to.parent().expect("the charts folder");
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(".{OPERATOR_CHART}.{}", std::process::id()));
    remove_own(&tmp)?;
    copy_chart(&from, &tmp).with_context(|| format!("copying the chart {} to {}", from.display(), tmp.display()))?;
    remove_own(&to)?;
    std::fs::rename(&tmp, &to).with_context(|| format!("renaming {} to {}", tmp.display(), to.display()))?;
    r.note(&format!("installing from {} (the chart of {} without crds/)", to.display(), from.display()));
    Ok(to)
}

/// Removes a folder raydeploy made under the deployment's folder (absent is fine).
fn remove_own(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Copies the chart folder `from` to `to` (a new folder), leaving out its top-level `crds/`.
fn copy_chart(from: &Path, to: &Path) -> std::io::Result<()> {
    fn copy(from: &Path, to: &Path, depth: usize) -> std::io::Result<()> {
        if depth > MAX_DEPTH {
            return Err(std::io::Error::other(format!("{}: folders nested too deep", from.display())));
        }
        std::fs::create_dir(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let (src, dst) = (entry.path(), to.join(entry.file_name()));
            if depth == 0 && entry.file_name() == "crds" {
                continue;
            }
            // `metadata` follows symbolic links, as Helm does when it loads a chart folder.
            if std::fs::metadata(&src)?.is_dir() {
                copy(&src, &dst, depth + 1)?;
            } else {
                std::fs::copy(&src, &dst)?;
            }
        }
        Ok(())
    }
    copy(from, to, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_leaves_out_only_the_top_level_crds_folder() {
        let t = tempfile::tempdir().unwrap();
        let from = t.path().join("kuberay-operator");
        for (path, text) in [
            ("Chart.yaml", "name: kuberay-operator\nversion: 1.7.0\n"),
            ("values.yaml", "image: {}\n"),
            ("crds/ray.io_rayclusters.yaml", "kind: CustomResourceDefinition\n"),
            ("templates/deployment.yaml", "kind: Deployment\n"),
            ("templates/crds/keep.yaml", "kept: a nested crds folder is a template\n"),
        ] {
            let p = from.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let to = t.path().join("lean");
        copy_chart(&from, &to).unwrap();
        assert!(!to.join("crds").exists());
        for path in ["Chart.yaml", "values.yaml", "templates/deployment.yaml", "templates/crds/keep.yaml"] {
            assert_eq!(
                std::fs::read_to_string(to.join(path)).unwrap(),
                std::fs::read_to_string(from.join(path)).unwrap(),
                "{path}"
            );
        }
    }

    #[test]
    fn a_folder_loop_is_an_error_not_a_hang() {
        let t = tempfile::tempdir().unwrap();
        let from = t.path().join("chart");
        std::fs::create_dir_all(from.join("templates")).unwrap();
        std::os::unix::fs::symlink(&from, from.join("templates/loop")).unwrap();
        let err = copy_chart(&from, &t.path().join("lean")).unwrap_err();
        assert!(err.to_string().contains("nested too deep"), "{err}");
    }
}
