//! `v1 Secret` manifests whose `stringData` holds a placeholder per key, never a value.
//! The deploy step resolves each source and applies the real value.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ObjectMeta;
use crate::model::{Deployment, SecretModel};
use crate::render::RenderError;
use crate::render::yaml::to_yaml_stream;
use crate::spec::SecretSource;

/// Annotation telling readers that the values below are placeholders.
pub const VALUES_ANNOTATION: &str = "raydeploy.io/values";
/// Text of [`VALUES_ANNOTATION`].
pub const VALUES_NOTE: &str = "placeholders; the real values are resolved from their sources at deploy time";

/// A Kubernetes `v1 Secret`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ObjectMeta,
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub string_data: BTreeMap<String, String>,
}

/// The placeholder written instead of a secret's value: names the source, never reads it.
pub fn placeholder(source: &SecretSource) -> String {
    match source {
        SecretSource::FromEnv(var) => format!("<from env {var}>"),
        SecretSource::FromFile(path) => format!("<from file {path}>"),
        SecretSource::FromKeyVault(kv) => format!("<from key vault {}/{}>", kv.vault, kv.secret),
    }
}

/// The Secret object for one secret of the deployment.
pub fn secret(d: &Deployment, s: &SecretModel) -> Secret {
    let mut metadata = ObjectMeta::new(d, &s.name, Some(&d.cluster.namespace));
    metadata.annotations.insert(VALUES_ANNOTATION.into(), VALUES_NOTE.into());
    Secret {
        api_version: "v1",
        kind: "Secret",
        metadata,
        type_: "Opaque",
        string_data: s.sources.iter().map(|(k, src)| (k.clone(), placeholder(src))).collect(),
    }
}

/// `manifests/secrets.yaml`: one document per secret; none when the deployment has no secrets.
pub fn render(d: &Deployment) -> Result<Option<String>, RenderError> {
    if d.secrets.is_empty() {
        return Ok(None);
    }
    let docs: Vec<Secret> = d.secrets.iter().map(|s| secret(d, s)).collect();
    to_yaml_stream("Secret", &docs).map(Some)
}
