//! What the azurerm provider (4.57 and later, 5.x) does on a change, for the resource types
//! raydeploy renders: the arguments whose change forces a new resource, the node-pool arguments
//! whose change cycles the pool through `temporary_name_for_rotation`, and the resources whose loss
//! takes the Ray cluster with it. Transcribed from the provider's argument reference and source;
//! tests/terraform_schema.rs checks that every name is an argument of the provider's own schema
//! (tests/azurerm/schema.json).

/// Resource types whose replacement or deletion loses the cluster, its nodes or its images.
pub const GUARDED: &[&str] = &[
    "azurerm_resource_group",
    "azurerm_kubernetes_cluster",
    "azurerm_kubernetes_cluster_node_pool",
    "azurerm_container_registry",
];

/// Arguments (dotted paths into nested blocks) whose change forces a new resource.
pub fn force_new(rtype: &str) -> &'static [&'static str] {
    match rtype {
        "azurerm_resource_group" => &["name", "location"],
        "azurerm_kubernetes_cluster" => &[
            "name",
            "location",
            "resource_group_name",
            "dns_prefix",
            "dns_prefix_private_cluster",
            "disk_encryption_set_id",
            "edge_zone",
            "network_profile.network_plugin",
            "network_profile.network_mode",
            "network_profile.dns_service_ip",
            "network_profile.pod_cidr",
            "network_profile.pod_cidrs",
            "network_profile.service_cidr",
            "network_profile.service_cidrs",
            "network_profile.ip_versions",
            "network_profile.load_balancer_sku",
            "network_profile.load_balancer_profile",
            "network_profile.nat_gateway_profile",
            "node_resource_group",
            "private_cluster_enabled",
            "private_dns_zone_id",
            "role_based_access_control_enabled",
            "linux_profile.admin_username",
            "linux_profile.ssh_key.key_data",
            "kubelet_identity.client_id",
            "kubelet_identity.object_id",
            "kubelet_identity.user_assigned_identity_id",
            "windows_profile.admin_username",
            "default_node_pool.capacity_reservation_group_id",
            "default_node_pool.gpu_driver",
            "default_node_pool.gpu_instance",
            "default_node_pool.host_group_id",
            "default_node_pool.node_network_profile.node_public_ip_tags",
            "default_node_pool.node_public_ip_prefix_id",
            "default_node_pool.proximity_placement_group_id",
            "default_node_pool.type",
        ],
        "azurerm_kubernetes_cluster_node_pool" => &[
            "name",
            "kubernetes_cluster_id",
            "capacity_reservation_group_id",
            "eviction_policy",
            "host_group_id",
            "gpu_driver",
            "gpu_instance",
            "node_network_profile.node_public_ip_tags",
            "node_public_ip_prefix_id",
            "os_type",
            "priority",
            "proximity_placement_group_id",
            "spot_max_price",
            "windows_profile",
        ],
        "azurerm_container_registry" => &["name", "resource_group_name", "location", "zone_redundancy_enabled"],
        "azurerm_role_assignment" => &[
            "name",
            "scope",
            "role_definition_id",
            "role_definition_name",
            "principal_id",
            "principal_type",
            "condition",
            "condition_version",
            "delegated_managed_identity_resource_id",
            "description",
        ],
        "azurerm_user_assigned_identity" => &["name", "resource_group_name", "location"],
        _ => &[],
    }
}

/// Arguments whose change the provider applies by cycling the node pool, given a
/// `temporary_name_for_rotation`: it creates a temporary pool with the new settings, deletes the
/// pool (its pods are evicted and rescheduled), creates it again with the new settings and deletes
/// the temporary one. The lists are `cycleNodePoolProperties` of the provider's update functions:
/// `resourceKubernetesClusterUpdate` (internal/services/containers/kubernetes_cluster_resource.go,
/// the default node pool) and `resourceKubernetesClusterNodePoolUpdate`
/// (internal/services/containers/kubernetes_cluster_node_pool_resource.go). Both also cycle for an
/// `os_sku` change from or to anything but Ubuntu or AzureLinux, which raydeploy does not render.
pub fn rotation(rtype: &str) -> &'static [&'static str] {
    match rtype {
        "azurerm_kubernetes_cluster" => &[
            "default_node_pool.name",
            "default_node_pool.host_encryption_enabled",
            "default_node_pool.node_public_ip_enabled",
            "default_node_pool.fips_enabled",
            "default_node_pool.kubelet_config",
            "default_node_pool.kubelet_disk_type",
            "default_node_pool.linux_os_config",
            "default_node_pool.max_pods",
            "default_node_pool.only_critical_addons_enabled",
            "default_node_pool.os_disk_size_gb",
            "default_node_pool.os_disk_type",
            "default_node_pool.pod_subnet_id",
            "default_node_pool.snapshot_id",
            "default_node_pool.ultra_ssd_enabled",
            "default_node_pool.vnet_subnet_id",
            "default_node_pool.vm_size",
            "default_node_pool.zones",
        ],
        "azurerm_kubernetes_cluster_node_pool" => &[
            "fips_enabled",
            "host_encryption_enabled",
            "kubelet_config",
            "kubelet_disk_type",
            "linux_os_config",
            "max_pods",
            "node_public_ip_enabled",
            "os_disk_size_gb",
            "os_disk_type",
            "pod_subnet_id",
            "snapshot_id",
            "ultra_ssd_enabled",
            "vm_size",
            "vnet_subnet_id",
            "zones",
        ],
        _ => &[],
    }
}

/// Whether `changed` (a dotted attribute path) is, or lies under, one of `list`.
pub fn hits(list: &[&str], changed: &str) -> bool {
    list.iter().any(|a| changed == *a || changed.starts_with(&format!("{a}.")))
}
