//! Rendering: one module per artifact family. Kubernetes and Helm YAML come from typed structs;
//! Terraform and the Dockerfile from tera templates. Output is deterministic.

pub mod dockerfile;
pub mod helm;
pub mod manifests;
pub mod output;
pub mod sandbox;
pub mod templates;
pub mod terraform;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::PathBuf;

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
        r.files.insert("image/.dockerignore".into(), dockerfile::dockerignore());
        r.files.extend(helm::render(d)?);
        r.files.extend(manifests::render(d)?);
    }
    Ok(r)
}
