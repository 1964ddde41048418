//! Values for the kuberay-operator chart: the operator image of the spec's KubeRay version,
//! Guaranteed resources, and on AKS placement on the tainted system pool.

use std::collections::BTreeMap;

use serde::Serialize;

use super::k8s::{EnvVar, Image, Resources, Toleration};
use crate::model::Deployment;
use crate::spec::Target;

/// Image repository of the operator (the chart's default).
pub const OPERATOR_REPOSITORY: &str = "quay.io/kuberay/operator";
/// Label AKS puts on the nodes of system-mode pools.
pub const AKS_MODE_LABEL: &str = "kubernetes.azure.com/mode";
/// Taint of the AKS system pool that only critical add-ons tolerate.
pub const CRITICAL_ADDONS_TAINT: &str = "CriticalAddonsOnly";
/// Operator setting: a RayJob that shuts its cluster down (`shutdownAfterJobFinishes`) is itself
/// deleted, with its cluster, `ttlSecondsAfterFinished` after it finishes (otherwise only the
/// cluster goes and the RayJob object stays). Only ephemeral jobs' RayJobs shut their cluster
/// down: the shared jobs' RayJobs select the long-running cluster and never do.
pub const DELETE_RAYJOB_ENV: &str = "DELETE_RAYJOB_CR_AFTER_JOB_FINISHES";

/// Top level of `kuberay-operator.values.yaml`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorValues {
    pub image: Image,
    pub resources: Resources,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Namespaces whose RayClusters and RayJobs the operator reconciles.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub watch_namespace: Vec<String>,
    /// Environment of the operator container (set when the spec has an ephemeral job).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// Builds the operator's values.
pub fn values(d: &Deployment) -> OperatorValues {
    let mut node_selector = BTreeMap::new();
    let mut tolerations = vec![];
    if d.target == Target::Aks {
        node_selector.insert(AKS_MODE_LABEL.to_string(), "system".to_string());
        tolerations.push(Toleration {
            key: CRITICAL_ADDONS_TAINT.into(),
            operator: "Exists".into(),
            value: None,
            effect: "NoSchedule".into(),
        });
    }
    let version = d.operator.version.trim_start_matches('v');
    OperatorValues {
        image: Image {
            repository: OPERATOR_REPOSITORY.into(),
            tag: format!("v{version}"),
            pull_policy: Some("IfNotPresent"),
        },
        resources: Resources::guaranteed(BTreeMap::from([
            ("cpu".to_string(), "100m".to_string()),
            ("memory".to_string(), "512Mi".to_string()),
        ])),
        node_selector,
        tolerations,
        watch_namespace: vec![d.cluster.namespace.clone()],
        env: if d.jobs.iter().any(|j| j.ephemeral.is_some()) {
            vec![EnvVar { name: DELETE_RAYJOB_ENV.into(), value: "true".into() }]
        } else {
            vec![]
        },
    }
}
