//! Statically provisioned volumes for Azure Blob and Azure Files mounts: a PersistentVolume
//! backed by the Azure CSI driver and a PersistentVolumeClaim bound to it by name.
//! `pvc` mounts name a claim that already exists, so nothing is rendered for them.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ObjectMeta;
use crate::model::{Deployment, MountModel};
use crate::render::RenderError;
use crate::render::yaml::to_yaml_stream;
use crate::spec::MountType;

/// CSI driver of Azure Blob storage (blobfuse).
pub const BLOB_DRIVER: &str = "blob.csi.azure.com";
/// CSI driver of Azure Files.
pub const FILE_DRIVER: &str = "file.csi.azure.com";

/// One document of `mounts.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Object {
    Volume(PersistentVolume),
    Claim(PersistentVolumeClaim),
}

/// A `v1 PersistentVolume`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolume {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ObjectMeta,
    pub spec: PersistentVolumeSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeSpec {
    pub capacity: BTreeMap<String, String>,
    pub access_modes: Vec<&'static str>,
    pub persistent_volume_reclaim_policy: &'static str,
    pub storage_class_name: String,
    pub csi: Csi,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Csi {
    pub driver: &'static str,
    pub volume_handle: String,
    pub read_only: bool,
    pub volume_attributes: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_stage_secret_ref: Option<SecretRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecretRef {
    pub name: String,
    pub namespace: String,
}

/// A `v1 PersistentVolumeClaim`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeClaim {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ObjectMeta,
    pub spec: PersistentVolumeClaimSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeClaimSpec {
    pub access_modes: Vec<&'static str>,
    pub resources: ClaimResources,
    pub storage_class_name: String,
    pub volume_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClaimResources {
    pub requests: BTreeMap<String, String>,
}

fn access_modes(m: &MountModel) -> Vec<&'static str> {
    vec![if m.read_only { "ReadOnlyMany" } else { "ReadWriteMany" }]
}

/// The PV and PVC of an Azure mount; none for `pvc` mounts.
pub fn objects(d: &Deployment, m: &MountModel) -> Option<(PersistentVolume, PersistentVolumeClaim)> {
    let volume_name = m.volume_name.clone()?;
    let account = m.storage_account.clone().unwrap_or_default();
    let (driver, attr, target) = match m.kind {
        MountType::Azureblob => (BLOB_DRIVER, "containerName", m.container.clone()?),
        MountType::Azurefile => (FILE_DRIVER, "shareName", m.share.clone()?),
        MountType::Pvc => return None,
    };
    let ns = &d.cluster.namespace;
    let storage = BTreeMap::from([("storage".to_string(), m.size.clone())]);
    let pv = PersistentVolume {
        api_version: "v1",
        kind: "PersistentVolume",
        metadata: ObjectMeta::new(d, &volume_name, None),
        spec: PersistentVolumeSpec {
            capacity: storage.clone(),
            access_modes: access_modes(m),
            persistent_volume_reclaim_policy: "Retain",
            storage_class_name: String::new(),
            csi: Csi {
                driver,
                // Unique per storage target and claim, as the CSI drivers require.
                volume_handle: format!("{account}#{target}#{ns}#{volume_name}"),
                read_only: m.read_only,
                volume_attributes: BTreeMap::from([
                    (attr.to_string(), target),
                    ("storageAccount".to_string(), account),
                ]),
                node_stage_secret_ref: m.secret.as_ref().map(|s| SecretRef { name: s.clone(), namespace: ns.clone() }),
            },
        },
    };
    let pvc = PersistentVolumeClaim {
        api_version: "v1",
        kind: "PersistentVolumeClaim",
        metadata: ObjectMeta::new(d, &m.claim_name, Some(ns)),
        spec: PersistentVolumeClaimSpec {
            access_modes: access_modes(m),
            resources: ClaimResources { requests: storage },
            storage_class_name: String::new(),
            volume_name,
        },
    };
    Some((pv, pvc))
}

/// `manifests/mounts.yaml`: PV then PVC per Azure mount; none without Azure mounts.
pub fn render(d: &Deployment) -> Result<Option<String>, RenderError> {
    let docs: Vec<Object> = d
        .cluster
        .mounts
        .iter()
        .filter_map(|m| objects(d, m))
        .flat_map(|(pv, pvc)| [Object::Volume(pv), Object::Claim(pvc)])
        .collect();
    if docs.is_empty() {
        return Ok(None);
    }
    to_yaml_stream("PersistentVolume", &docs).map(Some)
}
