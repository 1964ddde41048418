//! The last applied snapshot of a deployment, `.raydeploy/<deployment>/applied/`: the rendered
//! tree as deployed (secret manifests hold placeholders only) plus `deployment.json` with the
//! image references and the local target's facts. Written after every successful deploy; read by
//! `plan --offline`. `--against DIR` reads any rendered folder instead (e.g. `render` of main).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::Deployment;
use crate::render::Rendered;

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub files: BTreeMap<String, String>,
    /// Image references deployed (`repo:tag`).
    pub image_refs: Vec<String>,
    /// The local target's facts ([`super::local_facts`]).
    pub local: Option<serde_json::Value>,
    pub dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format_version: u32,
    deployment: String,
    spec_hash: String,
    image_refs: Vec<String>,
    local: Option<serde_json::Value>,
}

const META: &str = "deployment.json";

/// `.raydeploy/<deployment>/applied`
pub fn dir(d: &Deployment) -> PathBuf {
    crate::run::deployment_dir(d).join("applied")
}

/// Records what a successful deploy applied.
pub fn record(d: &Deployment, r: &Rendered) -> std::io::Result<()> {
    let out = dir(d);
    let tmp = out.with_file_name("applied.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    // A target without artifacts (local) renders no file: the folder still holds the meta.
    std::fs::create_dir_all(&tmp)?;
    r.write(&tmp)?;
    let meta = Meta {
        format_version: super::FORMAT_VERSION,
        deployment: d.name.clone(),
        spec_hash: d.spec_hash.clone(),
        image_refs: d.image.cpu.iter().chain(d.image.gpu.iter()).map(|i| i.reference()).collect(),
        local: Some(super::local_facts(d)),
    };
    std::fs::write(tmp.join(META), serde_json::to_string_pretty(&meta).expect("meta"))?;
    let _ = std::fs::remove_dir_all(&out);
    std::fs::rename(&tmp, &out)
}

/// Reads a snapshot or any rendered folder; `None` when `dir` does not exist.
pub fn load(dir: &Path) -> std::io::Result<Option<Snapshot>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut files = BTreeMap::new();
    collect(dir, dir, &mut files)?;
    let meta: Option<Meta> = files.remove(META).and_then(|t| serde_json::from_str(&t).ok());
    let mut s = Snapshot { files, dir: dir.to_path_buf(), ..Default::default() };
    if let Some(m) = meta {
        s.image_refs = m.image_refs;
        s.local = m.local;
    } else {
        // A plain rendered folder: the image references are in the cluster values.
        s.image_refs = image_refs_from_values(s.files.get("helm/ray-cluster.values.yaml"));
    }
    Ok(Some(s))
}

fn image_refs_from_values(values: Option<&String>) -> Vec<String> {
    let Some(v) = values.and_then(|t| serde_saphyr::from_str::<serde_json::Value>(t).ok()) else { return vec![] };
    let mut refs = vec![];
    let mut push = |img: &serde_json::Value| {
        if let (Some(r), Some(t)) = (img["repository"].as_str(), img["tag"].as_str()) {
            let s = format!("{r}:{t}");
            if !refs.contains(&s) {
                refs.push(s);
            }
        }
    };
    push(&v["image"]);
    push(&v["head"]["image"]);
    if let Some(groups) = v["additionalWorkerGroups"].as_object() {
        for g in groups.values() {
            push(&g["image"]);
        }
    }
    push(&v["worker"]["image"]);
    refs
}

/// Every text file of a rendered folder, by relative path; links are not followed (nor read),
/// and neither are Terraform's working files nor `render`'s record of what it wrote.
fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let rel = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().replace('\\', "/");
        if rel.starts_with("terraform/.terraform")
            || rel.ends_with(".tfplan")
            || rel.ends_with(".terraform.lock.hcl")
            || rel == crate::render::output::MANIFEST
        {
            continue;
        }
        let m = std::fs::symlink_metadata(&p)?;
        if m.is_dir() {
            collect(root, &p, out)?;
        } else if m.is_file()
            && let Some(text) =
                crate::spec::paths::read_regular(&p, 64 << 20, false).ok().and_then(|b| String::from_utf8(b).ok())
        {
            out.insert(rel, text);
        }
    }
    Ok(())
}
