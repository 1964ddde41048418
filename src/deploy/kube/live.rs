//! Live cluster state shared by the cluster, secrets and job modules: `kubectl get` as JSON,
//! `kubectl apply` of typed objects piped on stdin, Helm release facts, canonical comparison of
//! values, short content hashes for labels, and the poll interval of every wait.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Kube;
use crate::run::proc::{Cmd, CmdError, Output, Runner};

/// Helm's own wait for an upgrade (`--timeout`); the command's timeout is a little longer.
pub const HELM_WAIT: &str = "10m";
pub const HELM_TIMEOUT: Duration = Duration::from_secs(11 * 60);
/// Timeout of reads.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of applies and deletes.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Attempts of an idempotent read.
pub const READ_ATTEMPTS: u32 = 3;
/// The field manager of server-side applies.
pub const FIELD_MANAGER: &str = "raydeploy";

/// Time between two polls of a wait (`RAYDEPLOY_POLL_SECONDS`, fractions allowed; default 2s).
pub fn poll_interval() -> Duration {
    env_seconds("RAYDEPLOY_POLL_SECONDS").unwrap_or(Duration::from_secs(2))
}

/// How long `ready` waits for the RayCluster (`RAYDEPLOY_READY_TIMEOUT` seconds; default 15 min).
pub fn ready_timeout() -> Duration {
    env_seconds("RAYDEPLOY_READY_TIMEOUT").unwrap_or(Duration::from_secs(15 * 60))
}

fn env_seconds(var: &str) -> Option<Duration> {
    std::env::var(var).ok()?.parse::<f64>().ok().filter(|s| *s > 0.0).map(Duration::from_secs_f64)
}

/// Errors of `kubectl` that mean "the kind does not exist" (its CRD is not installed): for reads
/// and deletes, the same as "nothing there".
pub fn no_such_kind(e: &CmdError) -> bool {
    match e {
        CmdError::Failed { stderr_tail, .. } => {
            stderr_tail.contains("doesn't have a resource type")
                || stderr_tail.contains("no matches for kind")
                || stderr_tail.contains("could not find the requested resource")
        }
        _ => false,
    }
}

/// `kubectl get WHAT... [-n NS] -o json --ignore-not-found`: the object (or `List`), `None` when
/// absent (or when its kind is not installed). Retried: a read. The output of a Secret read is
/// not logged.
pub fn get(k: &Kube, r: &Runner, what: &[&str], ns: Option<&str>) -> Result<Option<Value>> {
    let mut c = k.kubectl().arg("get").args(what.iter().copied());
    if let Some(ns) = ns {
        c = c.args(["-n", ns]);
    }
    let c = c.args(["-o", "json", "--ignore-not-found"]).timeout(READ_TIMEOUT).idempotent(READ_ATTEMPTS).quiet();
    // A Secret read returns its data, possibly values raydeploy never registered (keys it no
    // longer manages): never logged.
    let c =
        if what.first().is_some_and(|w| w.to_ascii_lowercase().starts_with("secret")) { c.secret_output() } else { c };
    match r.run(&c) {
        Ok(o) if o.stdout.trim().is_empty() => Ok(None),
        Ok(o) => Ok(Some(
            serde_json::from_str(&o.stdout).with_context(|| format!("reading the output of `{}`", c.display()))?,
        )),
        Err(e) if no_such_kind(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The objects of a `get`: the items of a `List`, or the one object.
pub fn items(v: Option<Value>) -> Vec<Value> {
    match v {
        None => vec![],
        Some(v) if v.get("kind").and_then(Value::as_str) == Some("List") || v.get("items").is_some() => {
            v.get("items").and_then(Value::as_array).cloned().unwrap_or_default()
        }
        Some(v) => vec![v],
    }
}

/// The command that applies objects from stdin.
pub fn apply_cmd(k: &Kube, server_side: bool) -> Cmd {
    let mut c = k.kubectl().args(["apply", "-f", "-"]);
    if server_side {
        c = c.args(["--server-side", "--force-conflicts", "--field-manager", FIELD_MANAGER]);
    }
    c.timeout(WRITE_TIMEOUT)
}

/// `kubectl apply -f -` of `objects` as a JSON `v1 List` on stdin (never written to disk; stdin
/// is never logged).
pub fn apply(k: &Kube, r: &Runner, objects: &[Value], server_side: bool) -> Result<Output> {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
    Ok(r.run(&apply_cmd(k, server_side).stdin(serde_json::to_vec(&list)?))?)
}

/// Creates a namespace unless it exists (an existing one is left untouched).
pub fn ensure_namespace(k: &Kube, r: &Runner, ns: &str) -> Result<()> {
    if get(k, r, &["namespace", ns], None)?.is_some() {
        return Ok(());
    }
    match r.run(&k.kubectl().args(["create", "namespace", ns]).timeout(WRITE_TIMEOUT)) {
        Ok(_) => Ok(()),
        Err(CmdError::Failed { stderr_tail, .. }) if stderr_tail.contains("AlreadyExists") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Every document of a YAML stream as JSON (empty documents dropped).
pub fn yaml_docs(text: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).context("reading a YAML stream")?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// A text form of a JSON value that does not depend on key order or number spelling.
pub fn canonical(v: &Value) -> String {
    fn norm(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, norm(v))).collect();
                Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(norm).collect()),
            Value::Number(n) => Value::String(format!("#{}", n.as_f64().unwrap_or(f64::NAN))),
            other => other.clone(),
        }
    }
    norm(v).to_string()
}

/// `over` merged into `base`: maps merge key by key, anything else replaces (Helm's rule for
/// several `-f` files).
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// sha256 of length-prefixed parts, hex, first 32 characters (fits a label value).
pub fn short_hash<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    crate::plan::hex(&h.finalize())[..32].to_string()
}

/// A label of an object.
pub fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/labels").and_then(|l| l.get(key)).and_then(Value::as_str)
}

/// An annotation of an object.
pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations").and_then(|l| l.get(key)).and_then(Value::as_str)
}

/// Sets a label (creating `metadata.labels`).
pub fn set_label(obj: &mut Value, key: &str, value: &str) {
    set_meta(obj, "labels", key, value);
}

pub fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    set_meta(obj, "annotations", key, value);
}

fn set_meta(obj: &mut Value, field: &str, key: &str, value: &str) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let m = meta.entry(field).or_insert_with(|| Value::Object(Default::default()));
        if let Some(m) = m.as_object_mut() {
            m.insert(key.to_string(), Value::String(value.to_string()));
        }
    }
}

pub fn name(obj: &Value) -> &str {
    obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
}

pub fn kind(obj: &Value) -> &str {
    obj.get("kind").and_then(Value::as_str).unwrap_or("")
}

pub fn str_at<'a>(obj: &'a Value, pointer: &str) -> Option<&'a str> {
    obj.pointer(pointer).and_then(Value::as_str)
}

/// A Helm release as `helm list` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Release {
    pub name: String,
    pub namespace: String,
    pub status: String,
    /// `<chart>-<version>`
    pub chart: String,
    pub revision: String,
}

/// `helm list` flags selecting every release status, understood by Helm 3 and Helm 4 alike.
pub const ALL_RELEASE_STATUSES: [&str; 6] =
    ["--deployed", "--failed", "--pending", "--superseded", "--uninstalled", "--uninstalling"];

/// The release `name` in `ns` (any status), or none.
pub fn release(k: &Kube, r: &Runner, name: &str, ns: &str) -> Result<Option<Release>> {
    let c = k
        .helm()
        // Every status, spelled out: Helm 3 lists only deployed and failed releases unless told
        // (`-a`), and Helm 4 lists every status by default and has no `-a` any more.
        .args(["list", "-n", ns, "-o", "json"])
        .args(ALL_RELEASE_STATUSES)
        .arg("--filter")
        .arg(format!("^{}$", regex_escape(name)))
        .timeout(READ_TIMEOUT)
        .idempotent(READ_ATTEMPTS)
        .quiet();
    let o = r.run(&c)?;
    let list: Vec<Value> = serde_json::from_str(o.stdout.trim()).unwrap_or_default();
    let text = |v: &Value, key: &str| match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    Ok(list.iter().find(|v| v.get("name").and_then(Value::as_str) == Some(name)).map(|v| Release {
        name: name.to_string(),
        namespace: ns.to_string(),
        status: text(v, "status"),
        chart: text(v, "chart"),
        revision: text(v, "revision"),
    }))
}

fn regex_escape(s: &str) -> String {
    s.chars().fold(String::new(), |mut out, c| {
        if !c.is_ascii_alphanumeric() && c != '-' && c != '_' {
            out.push('\\');
        }
        out.push(c);
        out
    })
}

/// The user-supplied values of a release (`helm get values -o json`).
pub fn release_values(k: &Kube, r: &Runner, name: &str, ns: &str) -> Result<Value> {
    let c = k
        .helm()
        .args(["get", "values", name, "-n", ns, "-o", "json"])
        .timeout(READ_TIMEOUT)
        .idempotent(READ_ATTEMPTS)
        .quiet();
    let o = r.run(&c)?;
    let v: Value = serde_json::from_str(o.stdout.trim()).with_context(|| format!("reading `{}`", c.display()))?;
    Ok(if v.is_null() { Value::Object(Default::default()) } else { v })
}

/// True when the release is deployed from `chart`-`version` with exactly `values`.
pub fn release_matches(
    k: &Kube,
    r: &Runner,
    name: &str,
    ns: &str,
    chart: &str,
    version: &str,
    values: &Value,
) -> Result<bool> {
    let Some(rel) = release(k, r, name, ns)? else { return Ok(false) };
    if rel.status != "deployed" || rel.chart != format!("{chart}-{version}") {
        return Ok(false);
    }
    Ok(canonical(&release_values(k, r, name, ns)?) == canonical(values))
}

/// Label Helm's charts put on their objects, naming the release.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// Waits until every `kind` (`deployment`, `daemonset`) of release `release` in `ns` has rolled
/// out: `kubectl rollout status`, which watches, where Helm 3's `--wait` polls every two seconds.
pub fn wait_rollout(k: &Kube, r: &Runner, kind: &str, ns: &str, release: &str) -> Result<()> {
    let sel = format!("{INSTANCE_LABEL}={release}");
    let c = k
        .kubectl()
        .args(["rollout", "status", kind, "-l", &sel, "-n", ns])
        .arg(format!("--timeout={HELM_WAIT}"))
        .timeout(HELM_TIMEOUT);
    r.run(&c).with_context(|| format!("waiting for the {kind} of release {ns}/{release} to roll out"))?;
    Ok(())
}

/// Whether every `kind` of release `release` in `ns` has rolled out, read once: each has seen
/// its latest spec and has every pod updated and available (at least one object exists).
pub fn rolled_out(k: &Kube, r: &Runner, kind: &str, ns: &str, release: &str) -> Result<bool> {
    let sel = format!("{INSTANCE_LABEL}={release}");
    let objects = items(get(k, r, &[kind, "-l", &sel], Some(ns))?);
    let n = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let done = |o: &Value| {
        let seen = n(o, "/status/observedGeneration") >= n(o, "/metadata/generation");
        seen && if kind == "daemonset" {
            let want = n(o, "/status/desiredNumberScheduled");
            n(o, "/status/updatedNumberScheduled") >= want && n(o, "/status/numberAvailable") >= want
        } else {
            let want = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            n(o, "/status/updatedReplicas") >= want && n(o, "/status/availableReplicas") >= want
        }
    };
    Ok(!objects.is_empty() && objects.iter().all(done))
}

/// `helm uninstall --wait` when the release exists; false when it was already gone.
pub fn uninstall(k: &Kube, r: &Runner, name: &str, ns: &str) -> Result<bool> {
    if release(k, r, name, ns)?.is_none() {
        return Ok(false);
    }
    let c = k.helm().args(["uninstall", name, "-n", ns, "--wait", "--timeout", HELM_WAIT]).timeout(HELM_TIMEOUT);
    match r.run(&c) {
        Ok(_) => Ok(true),
        Err(CmdError::Failed { stderr_tail, .. }) if stderr_tail.contains("not found") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A runner for commands outside a deploy (logged to `logs/<name>.log`); `quiet` keeps its
/// commands off the terminal (status, lists).
pub fn side_runner(k: &Kube, name: &str, quiet: bool) -> Result<Runner> {
    let log = k.s.dir.join("logs").join(format!("{name}.log"));
    let reporter: std::sync::Arc<dyn crate::run::progress::Reporter> =
        if quiet { std::sync::Arc::new(crate::run::progress::Collect::default()) } else { k.s.reporter.clone() };
    Ok(Runner::new(name, Some(&log), k.s.redactor.clone(), reporter)?)
}

/// Seconds since the Unix epoch of an RFC 3339 UTC time as Kubernetes writes it
/// (`2024-05-01T12:00:00Z`).
pub fn parse_time(t: &str) -> Option<i64> {
    let t = t.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.split('.').next()?;
    let mut hms = time.split(':').map(|x| x.parse::<i64>());
    let (h, mi, s) = (hms.next()?.ok()?, hms.next()?.ok()?, hms.next()?.ok()?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + mi * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ignores_key_order_and_number_spelling() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1.0, "x"], "x": true}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a": {"x": true, "y": [1, "x"]}, "b": 1.0}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        let c: Value = serde_json::from_str(r#"{"a": {"x": true, "y": [1, "1"]}, "b": 1.0}"#).unwrap();
        assert_ne!(canonical(&a), canonical(&c));
    }

    #[test]
    fn merge_is_helms() {
        let mut a: Value =
            serde_json::from_str(r#"{"image": {"repository": "r", "tag": "t", "pullPolicy": "x"}, "l": [1, 2]}"#)
                .unwrap();
        merge(&mut a, &serde_json::json!({"image": {"tag": "t@sha256:1"}, "l": [3]}));
        assert_eq!(
            a,
            serde_json::json!({"image": {"repository": "r", "tag": "t@sha256:1", "pullPolicy": "x"}, "l": [3]})
        );
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("2024-03-01T12:30:05Z"), Some(1_709_296_205));
        assert_eq!(parse_time("2024-03-01T12:30:05.123Z"), Some(1_709_296_205));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn reads_the_kuberay_crds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/kuberay/crds");
        let Ok(text) = std::fs::read_to_string(dir.join("ray.io_rayjobs.yaml")) else { return };
        let d = yaml_docs(&text).unwrap();
        assert_eq!(name(&d[0]), "rayjobs.ray.io");
    }

    #[test]
    fn hashes_fit_labels() {
        let h = short_hash([b"a".as_slice(), b"bc".as_slice()]);
        assert_eq!(h.len(), 32);
        assert_ne!(h, short_hash([b"ab".as_slice(), b"c".as_slice()]));
    }

    #[test]
    fn yaml_streams() {
        // Read as kubectl and Helm read YAML (1.1 scalars: `on` is a boolean).
        let d = yaml_docs("---\na: on\n---\n---\nkind: X\nmetadata: {name: x1}\n").unwrap();
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0]["a"], Value::Bool(true));
        assert_eq!(name(&d[1]), "x1", "{d:?}");
    }
}
