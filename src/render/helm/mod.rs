//! Helm values for the kuberay-operator and ray-cluster charts (KubeRay v1.7.0 keys) and the
//! NVIDIA device plugin chart (v0.20.0), serialized from typed structs. Every key emitted is one
//! the charts' templates read.

pub mod device_plugin;
pub mod k8s;
pub mod operator;
pub mod ray_cluster;

use super::RenderError;
use super::yaml::to_yaml;
use crate::model::Deployment;

/// Path of the operator chart's values file in the rendered tree.
pub const OPERATOR_VALUES: &str = "helm/kuberay-operator.values.yaml";
/// Path of the ray-cluster chart's values file in the rendered tree.
pub const RAY_CLUSTER_VALUES: &str = "helm/ray-cluster.values.yaml";
/// Path of the NVIDIA device plugin chart's values file (rendered when it is installed).
pub const DEVICE_PLUGIN_VALUES: &str = "helm/nvidia-device-plugin.values.yaml";

/// Every values file as (relative path, YAML text).
pub fn render(d: &Deployment) -> Result<Vec<(String, String)>, RenderError> {
    let mut files = vec![
        (OPERATOR_VALUES.to_string(), to_yaml(OPERATOR_VALUES, &operator::values(d))?),
        (RAY_CLUSTER_VALUES.to_string(), to_yaml(RAY_CLUSTER_VALUES, &ray_cluster::values(d))?),
    ];
    if let Some(p) = &d.device_plugin {
        files.push((DEVICE_PLUGIN_VALUES.to_string(), to_yaml(DEVICE_PLUGIN_VALUES, &device_plugin::values(p))?));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::to_yaml;

    /// Strings a YAML 1.1 or 1.2 reader (Helm uses YAML 1.1 rules) would otherwise take as
    /// numbers, booleans, nulls or timestamps must come back as the same strings.
    #[test]
    fn ambiguous_strings_are_quoted_and_round_trip() {
        let tricky = [
            "0",
            "7",
            "1.30",
            "2.52.0",
            "true",
            "false",
            "True",
            "yes",
            "no",
            "on",
            "off",
            "y",
            "n",
            "null",
            "~",
            "",
            "1e3",
            "0x1F",
            "0o17",
            "012",
            "1_000",
            "-1",
            "+1",
            ".5",
            "nan",
            ".inf",
            "-.inf",
            "2024-01-01",
            "1:30",
            "7500m",
            "25Gi",
            "0.0.0.0",
        ];
        for s in tricky {
            let map = BTreeMap::from([("k".to_string(), s.to_string()), (s.to_string(), "v".to_string())]);
            let text = to_yaml("test", &map).unwrap();
            let back: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
            let obj = back.as_object().unwrap_or_else(|| panic!("{text}"));
            assert_eq!(obj.get("k"), Some(&serde_json::Value::String(s.to_string())), "value {s:?} in\n{text}");
            assert!(obj.contains_key(s), "key {s:?} in\n{text}");
            let plain_scalar = text.lines().any(|l| l == format!("k: {s}"));
            let safe_plain = ["2.52.0", "7500m", "25Gi", "0.0.0.0"].contains(&s);
            assert!(safe_plain || !plain_scalar, "{s:?} must be quoted in\n{text}");
        }
    }
}
