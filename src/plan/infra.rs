//! The infrastructure layer of a plan: which Terraform resources are created, changed, replaced
//! or destroyed, and which attributes move. Two sources: `terraform show -json` of a saved plan
//! (live), or the applied and the rendered Terraform parsed side by side (offline). Either way
//! each change is classified against the azurerm reference, so a replaced cluster, registry or
//! node pool, and a node pool cycled by a VM-size change, are flagged as destructive.

use std::collections::BTreeMap;

use serde::Serialize;

use super::azurerm;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceChange {
    /// `azurerm_kubernetes_cluster_node_pool.workers`
    pub address: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub action: Action,
    /// Attribute paths that change (dotted into nested blocks).
    pub changed: Vec<String>,
    /// Why this change loses something running; set for destructive changes only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destructive: Option<String>,
}

/// A resource as attribute path → value text.
type Attrs = BTreeMap<String, String>;

/// Resources of a set of `.tf` files: address → (type, attributes).
fn resources(files: &BTreeMap<String, String>) -> Result<BTreeMap<String, (String, Attrs)>, String> {
    let mut out = BTreeMap::new();
    for (path, text) in files {
        if !path.ends_with(".tf") {
            continue;
        }
        let body: hcl::Body = hcl::from_str(text).map_err(|e| format!("{path}: {e}"))?;
        for b in body.blocks() {
            if b.identifier() != "resource" || b.labels().len() != 2 {
                continue;
            }
            let rtype = b.labels()[0].as_str().to_string();
            let address = format!("{rtype}.{}", b.labels()[1].as_str());
            let mut attrs = Attrs::new();
            flatten(b.body(), "", &mut attrs);
            out.insert(address, (rtype, attrs));
        }
    }
    Ok(out)
}

fn flatten(body: &hcl::Body, prefix: &str, out: &mut Attrs) {
    for a in body.attributes() {
        let v = hcl::format::to_string(a.expr()).unwrap_or_else(|_| format!("{:?}", a.expr()));
        out.insert(format!("{prefix}{}", a.key()), v);
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for b in body.blocks() {
        let mut name = b.identifier().to_string();
        if name == "dynamic"
            && let Some(l) = b.labels().first()
        {
            name = l.as_str().to_string();
        }
        let n = seen.entry(name.clone()).or_insert(0);
        let key = if *n == 0 { name.clone() } else { format!("{name}[{n}]") };
        *n += 1;
        flatten(b.body(), &format!("{prefix}{key}."), out);
        out.entry(format!("{prefix}{key}")).or_insert_with(|| "{block}".into());
    }
}

/// Offline: what applying `new` over `old` (both `path → text` of Terraform files) changes.
pub fn from_files(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Result<Vec<ResourceChange>, String> {
    let old = resources(old)?;
    let new = resources(new)?;
    let mut changes = vec![];
    for (addr, (rtype, attrs)) in &new {
        match old.get(addr) {
            None => changes.push(change(addr, rtype, Action::Create, vec![], attrs)),
            Some((_, before)) => {
                let changed: Vec<String> = attrs
                    .keys()
                    .chain(before.keys())
                    .filter(|k| attrs.get(*k) != before.get(*k) && attrs.get(*k).map(String::as_str) != Some("{block}"))
                    .cloned()
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .filter(|k| before.get(k).map(String::as_str) != Some("{block}") || !attrs.contains_key(k))
                    .collect();
                if changed.is_empty() {
                    continue;
                }
                let action = if changed.iter().any(|c| azurerm::hits(azurerm::force_new(rtype), c)) {
                    Action::Replace
                } else {
                    Action::Update
                };
                let mut c = change(addr, rtype, action, changed, attrs);
                c.destructive = classify(&c, before, attrs);
                changes.push(c);
            }
        }
    }
    for (addr, (rtype, attrs)) in &old {
        if !new.contains_key(addr) {
            let mut c = change(addr, rtype, Action::Delete, vec![], attrs);
            c.destructive = classify(&c, attrs, &Attrs::new());
            changes.push(c);
        }
    }
    changes.sort_by(|a, b| (a.action, &a.address).cmp(&(b.action, &b.address)));
    Ok(changes)
}

fn change(addr: &str, rtype: &str, action: Action, changed: Vec<String>, _attrs: &Attrs) -> ResourceChange {
    ResourceChange { address: addr.to_string(), rtype: rtype.to_string(), action, changed, destructive: None }
}

fn unquote(v: Option<&String>) -> String {
    v.map(|s| s.trim_matches('"').to_string()).unwrap_or_else(|| "?".into())
}

/// Why a change is destructive (`None` when it is not).
fn classify(c: &ResourceChange, before: &Attrs, after: &Attrs) -> Option<String> {
    let what = match c.rtype.as_str() {
        "azurerm_kubernetes_cluster" => "the AKS cluster".to_string(),
        "azurerm_kubernetes_cluster_node_pool" => {
            format!("node pool `{}`", unquote(before.get("name").or(after.get("name"))))
        }
        "azurerm_container_registry" => "the container registry".to_string(),
        "azurerm_resource_group" => "the resource group (and everything in it)".to_string(),
        _ => return None,
    };
    let attr_moves = |list: &[&str]| -> Vec<String> {
        c.changed
            .iter()
            .filter(|a| azurerm::hits(list, a))
            .map(|a| format!("{a} {} → {}", unquote(before.get(a)), unquote(after.get(a))))
            .collect()
    };
    let pods = if c.rtype.starts_with("azurerm_kubernetes") { "; running Ray pods on it are lost" } else { "" };
    match c.action {
        Action::Delete => Some(format!("{what} is destroyed{pods}")),
        Action::Replace => {
            let why = attr_moves(azurerm::force_new(&c.rtype));
            let why = if why.is_empty() { String::new() } else { format!(": {}", why.join(", ")) };
            Some(format!("{what} is replaced{why}{pods}"))
        }
        Action::Update => {
            let moves = attr_moves(azurerm::rotation(&c.rtype));
            if moves.is_empty() {
                return None;
            }
            // The system pool is tainted CriticalAddonsOnly: no Ray pod runs there.
            let (pool, pods, temporary) = if c.rtype == "azurerm_kubernetes_cluster" {
                ("the system node pool", "the system pods on it", "default_node_pool.temporary_name_for_rotation")
            } else {
                (what.as_str(), "running Ray pods on it", "temporary_name_for_rotation")
            };
            let moves = moves.join(", ");
            // The provider changes these by cycling the pool through a temporary one; without
            // a temporary name it refuses the update when applying.
            Some(match after.get(temporary).map(|t| unquote(Some(t))).filter(|t| !t.is_empty() && t != "null") {
                Some(tmp) => {
                    format!("{pool} is cycled: {pods} are rescheduled; {moves}, through the temporary pool `{tmp}`")
                }
                None => format!(
                    "{pool} cannot be cycled: {moves} needs temporary_name_for_rotation, which is not set, so the \
                     apply fails"
                ),
            })
        }
        Action::Create => None,
    }
}

/// Live: the changes in `terraform show -json <planfile>`.
pub fn from_plan_json(show: &serde_json::Value) -> Vec<ResourceChange> {
    let mut out = vec![];
    for rc in show["resource_changes"].as_array().into_iter().flatten() {
        let actions: Vec<&str> =
            rc["change"]["actions"].as_array().into_iter().flatten().filter_map(|a| a.as_str()).collect();
        let action = match actions.as_slice() {
            ["create"] => Action::Create,
            ["update"] => Action::Update,
            ["delete"] => Action::Delete,
            ["delete", "create"] | ["create", "delete"] => Action::Replace,
            _ => continue,
        };
        let rtype = rc["type"].as_str().unwrap_or_default().to_string();
        let address = rc["address"].as_str().unwrap_or_default().to_string();
        let mut before = Attrs::new();
        let mut after = Attrs::new();
        flatten_json(&rc["change"]["before"], "", &mut before);
        flatten_json(&rc["change"]["after"], "", &mut after);
        let mut changed: Vec<String> = if action == Action::Update || action == Action::Replace {
            after.keys().chain(before.keys()).filter(|k| after.get(*k) != before.get(*k)).cloned().collect()
        } else {
            vec![]
        };
        // Terraform names the attributes that force the replacement.
        for p in rc["change"]["replace_paths"].as_array().into_iter().flatten() {
            let path: Vec<String> =
                p.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect();
            if !path.is_empty() {
                changed.push(path.join("."));
            }
        }
        changed.sort();
        changed.dedup();
        let mut c = ResourceChange { address, rtype, action, changed, destructive: None };
        c.destructive = classify(&c, &before, &after);
        out.push(c);
    }
    out.sort_by(|a, b| (a.action, &a.address).cmp(&(b.action, &b.address)));
    out
}

/// Flattens Terraform's JSON values: objects by key, single-element block lists by name.
fn flatten_json(v: &serde_json::Value, prefix: &str, out: &mut Attrs) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                flatten_json(v, &format!("{prefix}{k}."), out);
            }
        }
        serde_json::Value::Array(a) if a.len() == 1 && a[0].is_object() => flatten_json(&a[0], prefix, out),
        serde_json::Value::Null => {}
        other => {
            out.insert(prefix.trim_end_matches('.').to_string(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tf(pool_vm: &str, extra: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(
            "terraform/main.tf".to_string(),
            format!(
                r#"resource "azurerm_kubernetes_cluster_node_pool" "gpu" {{
  name    = "gpu"
  vm_size = "{pool_vm}"
  node_count = 1
}}
{extra}"#
            ),
        )])
    }

    #[test]
    fn vm_size_change_cycles_the_pool() {
        let cycled = |vm: &str| {
            let mut files = tf(vm, "");
            let text = files.get_mut("terraform/main.tf").unwrap();
            *text = text.replace("node_count = 1", "node_count = 1\n  temporary_name_for_rotation = \"gputmp\"");
            files
        };
        let c = from_files(&cycled("Standard_NC6s_v3"), &cycled("Standard_NC12s_v3")).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].action, Action::Update);
        assert_eq!(
            c[0].destructive.as_deref(),
            Some(
                "node pool `gpu` is cycled: running Ray pods on it are rescheduled; vm_size Standard_NC6s_v3 → \
                 Standard_NC12s_v3, through the temporary pool `gputmp`"
            )
        );
        // Without a temporary name the provider refuses the change when applying.
        let c = from_files(&tf("Standard_NC6s_v3", ""), &tf("Standard_NC12s_v3", "")).unwrap();
        let why = c[0].destructive.as_deref().unwrap();
        assert!(
            why.contains("node pool `gpu` cannot be cycled") && why.contains("temporary_name_for_rotation"),
            "{why}"
        );
    }

    #[test]
    fn plan_json_cycle_of_the_system_pool_and_replace_of_a_pool() {
        let show = serde_json::json!({"resource_changes": [
            {"address": "azurerm_kubernetes_cluster.this", "type": "azurerm_kubernetes_cluster",
             "change": {"actions": ["update"],
                        "before": {"default_node_pool": [{"name": "system", "vm_size": "Standard_D2s_v5",
                                   "temporary_name_for_rotation": "systemtmp"}]},
                        "after": {"default_node_pool": [{"name": "system", "vm_size": "Standard_D4s_v5",
                                  "temporary_name_for_rotation": "systemtmp"}]}}},
            {"address": "azurerm_kubernetes_cluster_node_pool.gpu", "type": "azurerm_kubernetes_cluster_node_pool",
             "change": {"actions": ["delete", "create"],
                        "before": {"name": "gpu", "priority": "Regular", "temporary_name_for_rotation": "gputmp"},
                        "after": {"name": "gpu", "priority": "Spot", "temporary_name_for_rotation": "gputmp"},
                        "replace_paths": [["priority"]]}}
        ]});
        let c = from_plan_json(&show);
        let why = |addr: &str| c.iter().find(|x| x.address == addr).and_then(|x| x.destructive.clone()).unwrap();
        assert_eq!(
            why("azurerm_kubernetes_cluster.this"),
            "the system node pool is cycled: the system pods on it are rescheduled; default_node_pool.vm_size \
             Standard_D2s_v5 → Standard_D4s_v5, through the temporary pool `systemtmp`"
        );
        // A replacement is not a cycle, even with a temporary name.
        assert_eq!(
            why("azurerm_kubernetes_cluster_node_pool.gpu"),
            "node pool `gpu` is replaced: priority Regular → Spot; running Ray pods on it are lost"
        );
    }

    #[test]
    fn added_and_removed_resources() {
        let extra = "resource \"azurerm_container_registry\" \"this\" {\n  name = \"acr\"\n}\n";
        let c = from_files(&tf("a", extra), &tf("a", "")).unwrap();
        assert_eq!(c[0].action, Action::Delete);
        assert!(c[0].destructive.as_deref().unwrap().contains("registry is destroyed"));
        let c = from_files(&tf("a", ""), &tf("a", extra)).unwrap();
        assert_eq!((c[0].action, c[0].destructive.is_none()), (Action::Create, true));
    }

    #[test]
    fn plan_json_replace() {
        let show = serde_json::json!({"resource_changes": [
            {"address": "azurerm_kubernetes_cluster.this", "type": "azurerm_kubernetes_cluster",
             "change": {"actions": ["delete", "create"], "before": {"location": "westeurope", "name": "a"},
                        "after": {"location": "northeurope", "name": "a"}, "replace_paths": [["location"]]}},
            {"address": "azurerm_resource_group.this", "type": "azurerm_resource_group",
             "change": {"actions": ["no-op"], "before": {}, "after": {}}}
        ]});
        let c = from_plan_json(&show);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].changed, vec!["location"]);
        assert!(
            c[0].destructive.as_deref().unwrap().contains("AKS cluster is replaced: location westeurope → northeurope")
        );
    }
}
