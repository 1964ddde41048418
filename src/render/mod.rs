//! Rendering: one module per artifact family. Kubernetes and Helm YAML come from typed structs;
//! Terraform and the Dockerfile from tera templates. Output is deterministic.

pub mod dockerfile;
pub mod helm;
pub mod manifests;
pub mod sandbox;
pub mod templates;
pub mod terraform;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::model::Deployment;
use crate::spec::Target;

/// Rendered files by path relative to the output folder (`terraform/main.tf`, …).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rendered {
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Problems in templates, each located in its template file.
    #[error("{}", .0.short())]
    Templates(Box<crate::spec::Report>),
    #[error("cannot serialize {what}: {message}")]
    Serialize { what: String, message: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Renders every artifact of the deployment's target. Templates are parsed and rendered on a
/// thread with a stack ample for the bounds the sandbox sets.
pub fn render(d: &Deployment) -> Result<Rendered, RenderError> {
    sandbox::with_stack(|| render_here(d)).unwrap_or_else(|panic| {
        Err(RenderError::Serialize {
            what: "the templates".into(),
            message: format!("the template engine failed: {panic}"),
        })
    })
}

fn render_here(d: &Deployment) -> Result<Rendered, RenderError> {
    let tera = templates::Engine::new(&d.dir)?;
    let mut r = Rendered::default();
    if d.target == Target::Aks {
        r.files.extend(terraform::render(d, &tera)?);
    }
    if d.target != Target::Local {
        r.files.insert("image/Dockerfile".into(), dockerfile::render(d, &tera)?);
        r.files.extend(helm::render(d)?);
        r.files.extend(manifests::render(d)?);
    }
    Ok(r)
}

impl Rendered {
    /// Writes every file under `out` (creating folders) and removes rendered files that are no
    /// longer produced (only inside the layer folders raydeploy owns).
    pub fn write(&self, out: &Path) -> std::io::Result<()> {
        for stale in self.stale(out) {
            std::fs::remove_file(out.join(stale))?;
        }
        for (rel, text) in &self.files {
            let path = out.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
                continue;
            }
            let tmp = path.with_extension("raydeploy-tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(())
    }

    /// Files under the owned layer folders of `out` that this render does not produce.
    fn stale(&self, out: &Path) -> Vec<String> {
        let mut found = vec![];
        for layer in ["terraform", "image", "helm", "manifests"] {
            collect(out, &out.join(layer), &mut found);
        }
        found.retain(|f| {
            !self.files.contains_key(f)
                && !f.starts_with("terraform/.terraform")
                && !f.ends_with(".terraform.lock.hcl")
                && !f.ends_with(".tfplan")
                // Local Terraform state (no remote backend) and its backup and lock.
                && !f.contains(".tfstate")
        });
        found
    }

    /// A unified diff of `out` against this render; `None` when identical.
    pub fn diff(&self, out: &Path) -> Option<String> {
        let mut text = String::new();
        for (rel, want) in &self.files {
            let have = std::fs::read_to_string(out.join(rel)).unwrap_or_default();
            if &have != want {
                let d = similar::TextDiff::from_lines(have.as_str(), want.as_str());
                text.push_str(
                    &d.unified_diff().context_radius(3).header(&format!("a/{rel}"), &format!("b/{rel}")).to_string(),
                );
            }
        }
        for stale in self.stale(out) {
            let have = std::fs::read_to_string(out.join(&stale)).unwrap_or_default();
            let d = similar::TextDiff::from_lines(have.as_str(), "");
            text.push_str(&d.unified_diff().header(&format!("a/{stale}"), "/dev/null").to_string());
        }
        (!text.is_empty()).then_some(text)
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}
