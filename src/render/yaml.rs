//! YAML output from typed structs (serde-saphyr), one document or a `---`-separated stream.

use serde::Serialize;

use super::RenderError;

pub fn to_yaml<T: Serialize>(what: &str, value: &T) -> Result<String, RenderError> {
    serde_saphyr::to_string(value).map_err(|e| RenderError::Serialize { what: what.into(), message: e.to_string() })
}

/// Several documents, each introduced by `---`.
pub fn to_yaml_stream<T: Serialize>(what: &str, values: &[T]) -> Result<String, RenderError> {
    let mut out = String::new();
    for v in values {
        out.push_str("---\n");
        out.push_str(&to_yaml(what, v)?);
    }
    Ok(out)
}
