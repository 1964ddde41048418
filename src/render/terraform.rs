//! Terraform for AKS (azurerm `>= 4.57, < 6.0`): a resource group, a container registry, the
//! cluster with its system pool, the AcrPull grant for the kubelet identity and one user pool per
//! Ray group.
//!
//! The templates receive a small view of the model in which every map is a list of entries with
//! the padding `terraform fmt` puts after the key, so the rendered files are already fmt-clean.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::RenderError;
use super::templates::{Engine, hcl_quote};
use crate::model::{AzureModel, Deployment, NodePool, SPOT_TAINT_KEY};

/// Label AKS puts on Spot nodes; stated in the configuration so plans show no drift.
const SPOT_LABEL_VALUE: &str = "spot";

/// One `key = value` line of an HCL object, with the padding that aligns the `=` signs.
#[derive(Debug, Serialize)]
struct Entry {
    key: String,
    value: String,
    pad: String,
}

#[derive(Debug, Serialize)]
struct PoolView<'a> {
    /// Terraform resource name.
    ident: String,
    pool: &'a NodePool,
    labels: Vec<Entry>,
    temporary_name_for_rotation: String,
}

#[derive(Debug, Serialize)]
struct View<'a> {
    name: &'a str,
    azure: &'a AzureModel,
    tags: Vec<Entry>,
    pools: Vec<PoolView<'a>>,
}

/// Renders `terraform/{providers,backend,main,outputs}.tf`; `backend.tf` only with remote state.
/// Returns nothing when the deployment has no Azure section.
pub fn render(d: &Deployment, tera: &Engine) -> Result<Vec<(String, String)>, RenderError> {
    let Some(azure) = &d.azure else { return Ok(vec![]) };
    let view = View { name: &d.name, azure, tags: entries(&azure.tags), pools: pools(azure) };
    let ctx = tera::Context::from_serialize(&view)
        .map_err(|e| RenderError::Serialize { what: "terraform view".into(), message: e.to_string() })?;
    let mut files = vec![];
    for file in ["providers", "backend", "main", "outputs"] {
        if file == "backend" && azure.state.is_none() {
            continue;
        }
        let name = format!("terraform/{file}.tf.tera");
        let text = tera.render(&name, &ctx)?;
        files.push((format!("terraform/{file}.tf"), text));
    }
    Ok(files)
}

fn pools(azure: &AzureModel) -> Vec<PoolView<'_>> {
    let mut taken: BTreeSet<String> =
        std::iter::once(&azure.system_pool).chain(&azure.ray_pools).map(|p| p.name.clone()).collect();
    taken.insert(system_rotation_name().into());
    azure
        .ray_pools
        .iter()
        .map(|p| {
            let mut labels = p.labels.clone();
            if p.spot {
                labels.insert(SPOT_TAINT_KEY.into(), SPOT_LABEL_VALUE.into());
            }
            let rotation = rotation_name(&p.name, &taken);
            taken.insert(rotation.clone());
            PoolView {
                ident: tf_ident(&p.name),
                pool: p,
                labels: entries(&labels),
                temporary_name_for_rotation: rotation,
            }
        })
        .collect()
}

/// Name the system pool takes while AKS cycles it.
fn system_rotation_name() -> &'static str {
    "systemtmp"
}

/// A pool name (1–12 lowercase alphanumerics) for the temporary pool AKS creates while it
/// cycles a pool, distinct from every name in `taken`.
fn rotation_name(pool: &str, taken: &BTreeSet<String>) -> String {
    let base: String = pool.chars().take(9).collect();
    let first = format!("{base}tmp");
    if !taken.contains(&first) {
        return first;
    }
    (0..)
        .map(|i: u32| {
            let suffix = format!("t{i}");
            let keep = 12 - suffix.len();
            format!("{}{suffix}", pool.chars().take(keep).collect::<String>())
        })
        .find(|n| !taken.contains(n))
        .unwrap_or_default()
}

/// Whether a Terraform version constraint (`>= 4.57, < 6.0`, `~> 4.0`, `= 5.2.0`, comma-separated
/// parts all holding) admits `version` (`4.40.0`). Pre-releases are not compared: Terraform
/// selects one only by an exact `=`.
pub fn constraint_admits(constraint: &str, version: &str) -> Result<bool, String> {
    let parse = |v: &str| -> Result<Vec<u64>, String> {
        let v = v.trim().trim_start_matches('v');
        if v.is_empty() {
            return Err("an empty version".into());
        }
        v.split('.').map(|p| p.parse::<u64>().map_err(|_| format!("`{v}` is not a version"))).collect()
    };
    let triple = |v: &[u64]| [0, 1, 2].map(|i| v.get(i).copied().unwrap_or(0));
    let have = triple(&parse(version)?);
    for part in constraint.split(',') {
        let part = part.trim();
        let (op, rest) = ["~>", ">=", "<=", "!=", ">", "<", "="]
            .iter()
            .find_map(|op| part.strip_prefix(op).map(|r| (*op, r)))
            .unwrap_or(("=", part));
        let want = parse(rest)?;
        let ord = have.cmp(&triple(&want));
        let ok = match op {
            "=" => ord.is_eq(),
            "!=" => !ord.is_eq(),
            ">" => ord.is_gt(),
            ">=" => ord.is_ge(),
            "<" => ord.is_lt(),
            "<=" => ord.is_le(),
            _ => {
                // `~> 4.0` admits 4.x from 4.0; `~> 4.1.2` admits 4.1.x from 4.1.2; `~> 4` is 4.x.
                let mut upper = want[..want.len().saturating_sub(1).max(1)].to_vec();
                *upper.last_mut().expect("one part at least") += 1;
                ord.is_ge() && have < triple(&upper)
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A Terraform identifier for a resource named after `name`.
fn tf_ident(name: &str) -> String {
    let mut s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert(0, '_');
    }
    s
}

/// Map entries with the padding `terraform fmt` aligns quoted keys to (it counts characters).
fn entries(map: &BTreeMap<String, String>) -> Vec<Entry> {
    let width = |k: &str| hcl_quote(k).chars().count();
    let max = map.keys().map(|k| width(k)).max().unwrap_or(0);
    map.iter().map(|(k, v)| Entry { key: k.clone(), value: v.clone(), pad: " ".repeat(max - width(k)) }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_constraints() {
        assert_eq!(constraint_admits("~> 4.0", "5.2.0"), Ok(false));
        assert_eq!(constraint_admits("~> 4.0", "4.81.0"), Ok(true));
        assert_eq!(constraint_admits(">= 4.57, < 6.0", "5.2.0"), Ok(true));
        assert_eq!(constraint_admits(">= 4.57.0, < 6.0.0", "4.56.0"), Ok(false));
        assert_eq!(constraint_admits(">= 4.57, < 6.0", "6.0.0"), Ok(false));
        assert_eq!(constraint_admits("~> 5.2.0", "5.2.9"), Ok(true));
        assert_eq!(constraint_admits("~> 5.2.0", "5.3.0"), Ok(false));
        assert_eq!(constraint_admits("~> 5", "5.9.0"), Ok(true));
        assert_eq!(constraint_admits("= 5.2.0", "5.2.0"), Ok(true));
        assert_eq!(constraint_admits("!= 5.2.0", "5.2.0"), Ok(false));
        assert!(constraint_admits(">= four", "5.2.0").is_err());
        assert!(constraint_admits(">=", "5.2.0").is_err());
    }

    #[test]
    fn padding_counts_quoted_characters() {
        let m = BTreeMap::from([("a\"b".to_string(), "x".to_string()), ("é".to_string(), "y".to_string())]);
        let e = entries(&m);
        assert_eq!(e[0].pad, "");
        assert_eq!(e[1].pad, "   ");
    }

    #[test]
    fn rotation_names_are_unique_and_short() {
        let taken = BTreeSet::from(["cpu".to_string(), "cputmp".to_string(), "cput0".to_string()]);
        assert_eq!(rotation_name("gpu", &taken), "gputmp");
        assert_eq!(rotation_name("cpu", &taken), "cput1");
        assert!(rotation_name("abcdefghijkl", &taken).len() <= 12);
    }

    #[test]
    fn identifiers() {
        assert_eq!(tf_ident("cpu"), "cpu");
        assert_eq!(tf_ident("1x"), "_1x");
    }
}
