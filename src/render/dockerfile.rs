//! The Ray image's Dockerfile.
use super::RenderError;
use crate::model::Deployment;

pub fn render(_d: &Deployment, _tera: &tera::Tera) -> Result<String, RenderError> {
    Ok(String::new())
}
