//! Validation of objects against the `openAPIV3Schema` of a KubeRay CRD (KubeRay v1.7.0 CRDs in
//! ../shared/kuberay/crds), the way the API server would see them.
//!
//! Kubernetes prunes fields a structural schema does not declare instead of rejecting them, so
//! a misspelt field would vanish silently. The schema is made strict before validation: every
//! object schema with `properties` and neither `additionalProperties` nor
//! `x-kubernetes-preserve-unknown-fields: true` gets `additionalProperties: false`.
//! `format: int32/int64` and the other `x-kubernetes-*` extensions are unknown to JSON Schema and
//! ignored; `nullable: true` becomes a `null` alternative of the type.

use std::path::PathBuf;

use serde_json::Value;

/// Path of a file under the shared KubeRay reference data.
pub fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/kuberay").join(rel)
}

/// Parses one YAML document into JSON values.
pub fn yaml(text: &str) -> Value {
    let opts = serde_saphyr::options! { budget: None };
    serde_saphyr::from_str_with_options(text, opts).unwrap_or_else(|e| panic!("YAML does not parse: {e}\n{text}"))
}

/// Parses a `---`-separated YAML stream.
pub fn yaml_stream(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("YAML stream does not parse: {e}\n{text}"))
}

/// The CRD document of `crds/<file>`.
pub fn crd(file: &str) -> Value {
    let path = shared(&format!("crds/{file}"));
    yaml(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// The `openAPIV3Schema` of the served and stored `v1` version of a CRD.
pub fn v1_schema(crd: &Value) -> Value {
    let versions = crd["spec"]["versions"].as_array().expect("CRD has spec.versions");
    let v1 = versions
        .iter()
        .find(|v| v["name"] == "v1" && v["served"] == true && v["storage"] == true)
        .expect("CRD serves and stores v1");
    v1["schema"]["openAPIV3Schema"].clone()
}

/// Every CEL rule (`x-kubernetes-validations[].rule`) of a schema, with the JSON pointer of
/// the schema node that carries it.
pub fn cel_rules(schema: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Array(rules)) = m.get("x-kubernetes-validations") {
                    for r in rules {
                        out.push((at.to_string(), r["rule"].as_str().unwrap_or_default().to_string()));
                    }
                }
                for (k, c) in m {
                    walk(c, &format!("{at}/{k}"), out);
                }
            }
            Value::Array(a) => a.iter().enumerate().for_each(|(i, c)| walk(c, &format!("{at}/{i}"), out)),
            _ => {}
        }
    }
    let mut out = vec![];
    walk(schema, "", &mut out);
    out
}

/// The schema with unknown fields made an error (see the module doc).
pub fn strict(schema: &Value) -> Value {
    let mut s = schema.clone();
    tighten(&mut s);
    s
}

fn tighten(v: &mut Value) {
    let Value::Object(m) = v else { return };
    let preserve = m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if m.contains_key("properties") && !m.contains_key("additionalProperties") && !preserve {
        m.insert("additionalProperties".into(), Value::Bool(false));
    }
    if m.get("nullable") == Some(&Value::Bool(true))
        && let Some(Value::String(t)) = m.get("type").cloned()
    {
        m.insert("type".into(), serde_json::json!([t, "null"]));
    }
    if let Some(Value::Object(props)) = m.get_mut("properties") {
        props.values_mut().for_each(tighten);
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(c) = m.get_mut(key) {
            tighten(c);
        }
    }
    for key in ["anyOf", "allOf", "oneOf"] {
        if let Some(Value::Array(a)) = m.get_mut(key) {
            a.iter_mut().for_each(tighten);
        }
    }
}

/// Validates `object` against the strict form of `schema`; the error lists every violation.
pub fn validate(schema: &Value, object: &Value) -> Result<(), String> {
    let strict = strict(schema);
    let validator = jsonschema::draft4::new(&strict).map_err(|e| format!("schema does not compile: {e}"))?;
    let errors: Vec<String> =
        validator.iter_errors(object).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    if errors.is_empty() { Ok(()) } else { Err(errors.join("\n")) }
}
