//! The real Helm binaries of the test bed and `helm template` with them, for tests that check
//! rendered values against the real charts (`../shared/kuberay/charts/*`,
//! `../shared/nvidia/nvidia-device-plugin`). The binaries are `helm3` and `helm4` in
//! `$RAYDEPLOY_TESTBED_BIN` (default `$HOME/.cache/raydeploy/testbed/bin`), built by
//! `tests/testbed/build.sh`; a test that needs them fails when neither is there.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// One real Helm binary.
#[derive(Debug, Clone)]
pub struct Helm {
    /// `helm3` or `helm4`
    pub name: &'static str,
    pub path: PathBuf,
    /// `v3.x.y` / `v4.x.y`
    pub version: String,
}

/// The folder holding the test bed's binaries.
pub fn testbed_bin() -> PathBuf {
    match std::env::var_os("RAYDEPLOY_TESTBED_BIN") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/raydeploy/testbed/bin")
        }
    }
}

/// The reference data beside the project (`../shared`).
pub fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared").join(rel)
}

/// Every Helm binary of the test bed (`helm3`, `helm4`) that is there, each checked to be the
/// Helm major version it is named after. Panics when there is none.
pub fn helms() -> Vec<Helm> {
    let dir = testbed_bin();
    let mut out = vec![];
    for (name, major) in [("helm3", "v3."), ("helm4", "v4.")] {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let home = tempfile::tempdir().expect("tempdir");
        let o = Command::new(&path)
            .args(["version", "--short"])
            .env_clear()
            .envs(hermetic_env(home.path()))
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let version = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert!(
            o.status.success() && version.starts_with(major),
            "{} is not Helm {major}x: `version --short` printed {version:?} {}",
            path.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        out.push(Helm { name, path, version });
    }
    assert!(
        !out.is_empty(),
        "no Helm binary in {} (helm3, helm4): run tests/testbed/build.sh to build them \
         (or point RAYDEPLOY_TESTBED_BIN at the folder that holds them)",
        dir.display()
    );
    out
}

/// Helm's own folders in a scratch place, so that a test reads no user configuration,
/// repositories or plugins and writes nothing outside it.
fn hermetic_env(base: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = ["HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"]
        .iter()
        .map(|k| (k.to_string(), base.join(k.to_ascii_lowercase()).display().to_string()))
        .collect();
    v.push(("HOME".into(), base.display().to_string()));
    v.push(("PATH".into(), std::env::var("PATH").unwrap_or_default()));
    v
}

/// `helm template RELEASE CHART -n NS -f VALUES...`: the rendered manifests, or the error.
pub fn template(h: &Helm, chart: &Path, release: &str, ns: &str, values: &[&Path]) -> Result<String, String> {
    let mut c = Command::new(&h.path);
    c.args(["template", release]).arg(chart).args(["--namespace", ns]);
    for v in values {
        c.arg("--values").arg(v);
    }
    let home = tempfile::tempdir().map_err(|e| e.to_string())?;
    let o = c.env_clear().envs(hermetic_env(home.path())).output().map_err(|e| format!("{}: {e}", h.path.display()))?;
    if !o.status.success() {
        return Err(format!(
            "{} template {release} {} failed: {}",
            h.name,
            chart.display(),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The documents of a YAML stream (empty ones dropped).
pub fn docs(text: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// `Kind/name` of a rendered object.
pub fn id(doc: &Value) -> String {
    format!("{}/{}", doc["kind"].as_str().unwrap_or("?"), doc["metadata"]["name"].as_str().unwrap_or("?"))
}

/// Every null in the rendered objects (`Kind/name: a.b[0].c`) and every line of the text that
/// holds a bare `null` scalar: a value the templates read from a key the values do not set.
pub fn nulls(text: &str) -> Vec<String> {
    fn walk(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Null => out.push(at),
            Value::Object(m) => {
                for (k, c) in m {
                    walk(c, if at.is_empty() { k.clone() } else { format!("{at}.{k}") }, out);
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    walk(c, format!("{at}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = vec![];
    for d in docs(text) {
        let mut paths = vec![];
        walk(&d, String::new(), &mut paths);
        out.extend(paths.into_iter().map(|p| format!("{}: {p}", id(&d))));
    }
    for (n, line) in text.lines().enumerate() {
        let l = line.trim_end();
        if l.ends_with(": null") || l.trim_start() == "- null" || l.ends_with(": ~") {
            out.push(format!("line {}: {}", n + 1, l.trim()));
        }
    }
    out
}

/// The one object of `kind` in a rendered stream.
pub fn object(text: &str, kind: &str) -> Value {
    let mut found: Vec<Value> = docs(text).into_iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in:\n{text}");
    found.remove(0)
}

/// The second values file deploy passes to the ray-cluster release (every group's image pinned
/// by digest), written into `dir` with stand-in digests.
pub fn deploy_pins(d: &raydeploy::model::Deployment, dir: &Path) -> PathBuf {
    let digest = format!("@sha256:{}", "a".repeat(64));
    let pin = |i: &raydeploy::model::ImageRef| format!("{}{digest}", i.reference());
    let pins = raydeploy::targets::kube::cluster::Pins {
        cpu: d.image.cpu.as_ref().map(pin).expect("a Kubernetes target has a CPU image"),
        gpu: d.image.gpu.as_ref().map(pin),
    };
    let values = raydeploy::targets::kube::cluster::ImageValues::new(d, &pins).expect("image pins");
    let path = dir.join("ray-cluster.images.yaml");
    std::fs::write(&path, serde_saphyr::to_string(&values).expect("pins serialize")).unwrap();
    path
}
