//! The Ray image's Dockerfile: the user's own file when the spec names one, else
//! `templates/Dockerfile.tera` rendered with the whole deployment as context.
//!
//! The rendered file builds the CPU image as is and the GPU image with
//! `--build-arg BASE_TAG=<image.base_tag_gpu>`; its build context is the spec's folder.
use super::RenderError;
use super::templates::Engine;
use crate::model::Deployment;

/// Name of the embedded (or overridden) template.
pub const TEMPLATE: &str = "Dockerfile.tera";

/// The build context's `.dockerignore`: what the image never receives from a job folder, the
/// same files its content hash leaves out ([`crate::spec::paths::image_ignored`]; folders that
/// `raydeploy render` wrote are left out of the staged context by their record file, which this
/// format cannot express, and their record is listed).
pub fn dockerignore() -> String {
    let mut s = String::from(
        "# Rendered by raydeploy: files the Ray image never receives from a job folder (its content\n\
         # hash leaves them out too). The build context is a staged copy of the job folders.\n",
    );
    for n in crate::spec::paths::IMAGE_IGNORED_NAMES {
        s.push_str(&format!("**/{n}\n"));
    }
    for suffix in crate::spec::paths::IMAGE_IGNORED_SUFFIXES {
        s.push_str(&format!("**/*{suffix}\n"));
    }
    s.push_str(&format!("**/{}\n", super::output::MANIFEST));
    s
}

/// The Dockerfile text: the user's file unchanged, or the rendered template ending in a newline.
pub fn render(d: &Deployment, tera: &Engine) -> Result<String, RenderError> {
    if let Some(path) = &d.image.dockerfile {
        // Read (through the spec path rules) when the model was built, never again here.
        return d.image.dockerfile_text.clone().ok_or_else(|| RenderError::Read {
            path: path.clone(),
            source: std::io::Error::other("the Dockerfile was not read when the spec was checked"),
        });
    }
    check_single_line(d)?;
    let ctx = tera::Context::from_serialize(d)
        .map_err(|e| RenderError::Serialize { what: "the deployment".into(), message: e.to_string() })?;
    let mut text = tera.render(TEMPLATE, &ctx)?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// Shell quoting makes any package string safe inside a `RUN` line except a line break, which
/// would end the Dockerfile instruction; such a string cannot be rendered.
fn check_single_line(d: &Deployment) -> Result<(), RenderError> {
    let lists = [("image.aptPackages", &d.image.apt_packages), ("image.pipPackages", &d.image.pip_packages)];
    for (field, list) in lists {
        if let Some(i) = list.iter().position(|p| p.contains(['\n', '\r'])) {
            return Err(RenderError::Serialize {
                what: format!("{field}[{i}]"),
                message: "a line break cannot appear in a Dockerfile instruction".into(),
            });
        }
    }
    Ok(())
}
