//! Values for the NVIDIA device plugin chart (`nvidia-device-plugin` v0.20.0): the plugin's
//! pinned image, tolerations for the taints of GPU nodes, and a node affinity that places it on
//! the GPU nodes only (the chart's default affinity needs Node Feature Discovery's labels, which
//! AKS does not set).

use serde::Serialize;

use super::k8s::{Image, Toleration};
use crate::model::DevicePluginModel;

/// Image repository of the plugin (the chart's default).
pub const DEVICE_PLUGIN_REPOSITORY: &str = "nvcr.io/nvidia/k8s-device-plugin";

/// Top level of `nvidia-device-plugin.values.yaml`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicePluginValues {
    pub image: Image,
    pub tolerations: Vec<Toleration>,
    pub affinity: Affinity,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Affinity {
    pub node_affinity: NodeAffinity,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeAffinity {
    #[serde(rename = "requiredDuringSchedulingIgnoredDuringExecution")]
    pub required: NodeSelector,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector {
    /// Any one term matches.
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorTerm {
    /// All expressions of a term match.
    pub match_expressions: Vec<NodeSelectorRequirement>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeSelectorRequirement {
    pub key: String,
    pub operator: &'static str,
    pub values: Vec<String>,
}

/// Builds the device plugin's values.
pub fn values(p: &DevicePluginModel) -> DevicePluginValues {
    DevicePluginValues {
        image: Image {
            repository: DEVICE_PLUGIN_REPOSITORY.into(),
            tag: format!("v{}", p.version),
            pull_policy: Some("IfNotPresent"),
        },
        tolerations: p.tolerations.iter().map(Toleration::from).collect(),
        affinity: Affinity {
            node_affinity: NodeAffinity {
                required: NodeSelector {
                    node_selector_terms: p
                        .node_labels
                        .iter()
                        .map(|(key, value)| NodeSelectorTerm {
                            match_expressions: vec![NodeSelectorRequirement {
                                key: key.clone(),
                                operator: "In",
                                values: vec![value.clone()],
                            }],
                        })
                        .collect(),
                },
            },
        },
    }
}
