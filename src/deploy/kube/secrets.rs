//! Secret values: resolved at apply time from the environment, a file or Azure Key Vault
//! (`az keyvault secret show`), registered with the redactor before any use, never written.

use std::collections::BTreeMap;

use anyhow::Result;

use super::Kube;
use crate::model::SecretModel;

/// Problems with secret sources that can be found without reading Key Vault values
/// (unset env vars, unreadable files); for preflight.
pub fn check_sources(_k: &Kube) -> Vec<String> {
    vec![]
}

/// The values of one secret, by key (each registered with the redactor).
pub fn resolve(_k: &Kube, s: &SecretModel) -> Result<BTreeMap<String, String>> {
    anyhow::bail!("cannot resolve secret {} yet", s.name)
}
