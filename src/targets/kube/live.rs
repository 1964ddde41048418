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
        CmdError::Failed { stderr_tail, .. } => NO_SUCH_KIND.iter().any(|t| stderr_tail.contains(t)),
        _ => false,
    }
}

/// What kubectl prints for a kind the API server does not serve (see [`no_such_kind`]).
pub const NO_SUCH_KIND: [&str; 3] =
    ["doesn't have a resource type", "no matches for kind", "could not find the requested resource"];

/// What kubectl, Helm and client-go print when the API server cannot be reached (refused,
/// reset, timed out, unknown host, TLS handshake cut short).
const UNREACHABLE: [&str; 11] = [
    "was refused - did you specify the right host or port",
    "Unable to connect to the server",
    "Kubernetes cluster unreachable",
    "connect: connection refused",
    "connection reset by peer",
    "no route to host",
    "i/o timeout",
    "TLS handshake timeout",
    "no such host",
    "http2: client connection lost",
    "the server is currently unable to handle the request",
];

/// The first line of `text` that says the API server could not be reached.
pub fn unreachable_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|l| UNREACHABLE.iter().any(|p| l.contains(p)))
}

/// An error of a kubectl or helm command, with a first line saying so when the cause is that the
/// Kubernetes API server cannot be reached (and nothing else can be concluded about the cluster).
pub fn explain_unreachable(e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("the Kubernetes API server is unreachable") {
        return e;
    }
    match unreachable_line(&text) {
        Some(line) => {
            let line = line.to_string();
            e.context(format!(
                "the Kubernetes API server is unreachable ({line}): is the cluster up, and do the kubeconfig \
                 and context point at it? Once it answers, run deploy again: completed phases are not repeated"
            ))
        }
        None => e,
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
    let c = c
        .args(["-o", "json", "--ignore-not-found"])
        .timeout(READ_TIMEOUT)
        .idempotent(READ_ATTEMPTS)
        .settled_by(&NO_SUCH_KIND)
        .quiet();
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
    Ok(r.run(&apply_cmd(k, server_side).stdin(serde_json::to_vec(&list(objects.to_vec()))?))?)
}

/// A `v1 List` of `objects`.
pub fn list(objects: Vec<Value>) -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects})
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
    crate::graph::hex(&h.finalize())[..32].to_string()
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
///
/// A release found absent stays absent for the rest of the run until raydeploy installs it
/// ([`upgrade`]): only raydeploy's own Helm commands act on its releases while it holds the
/// deployment's lock, so the answer is remembered and Helm is not asked again (the early probe,
/// the phase's own probe and the check for an interrupted operation ask the same question).
pub fn release(k: &Kube, r: &Runner, name: &str, ns: &str) -> Result<Option<Release>> {
    if k.known_absent(name, ns) {
        return Ok(None);
    }
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
    let found = list.iter().find(|v| v.get("name").and_then(Value::as_str) == Some(name)).map(|v| Release {
        name: name.to_string(),
        namespace: ns.to_string(),
        status: text(v, "status"),
        chart: text(v, "chart"),
        revision: text(v, "revision"),
    });
    if found.is_none() {
        k.absent(name, ns, true);
    }
    Ok(found)
}

/// Runs raydeploy's `helm upgrade --install` of release `name` in `ns` (`cmd`): first resolves
/// an operation an interrupted Helm left pending ([`recover_pending`]); from then on the release
/// may exist.
pub fn upgrade(k: &Kube, r: &Runner, name: &str, ns: &str, cmd: &Cmd) -> Result<()> {
    recover_pending(k, r, name, ns)?;
    k.absent(name, ns, false);
    r.run(cmd)?;
    Ok(())
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

/// The release `name` in `ns` (`helm list`) and its user-supplied values (`helm get values`),
/// read at the same time: one read's time. `(None, None)` when there is no such release.
///
/// Two commands, because no one Helm command prints the status, the chart version and the
/// user-supplied values in a documented shape on both Helm 3 and Helm 4: `helm get metadata`
/// (Helm 3.13 and later only) has no values, and `helm status -o json` prints Helm's internal
/// release record (the whole chart included), whose fields no documentation promises.
pub fn release_with_values(k: &Kube, r: &Runner, name: &str, ns: &str) -> Result<(Option<Release>, Option<Value>)> {
    let (rel, values) = both(|| release(k, r, name, ns), || release_values_if_any(k, r, name, ns));
    Ok((rel?, values?))
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
    Ok(matches(&release_with_values(k, r, name, ns)?, chart, version, values))
}

/// Whether a release read by [`release_with_values`] is deployed from `chart`-`version` with
/// exactly `values`.
pub fn matches(found: &(Option<Release>, Option<Value>), chart: &str, version: &str, values: &Value) -> bool {
    let (Some(rel), Some(live)) = found else { return false };
    rel.status == "deployed" && rel.chart == format!("{chart}-{version}") && canonical(live) == canonical(values)
}

/// The release's user-supplied values, or `None` when there is no such release ("release: not
/// found" is an answer, not retried; other failures are, like every read).
fn release_values_if_any(k: &Kube, r: &Runner, name: &str, ns: &str) -> Result<Option<Value>> {
    if k.known_absent(name, ns) {
        return Ok(None);
    }
    let c =
        k.helm().args(["get", "values", name, "-n", ns, "-o", "json"]).timeout(READ_TIMEOUT).quiet().ok_codes(&[0, 1]);
    let mut attempt = 1;
    loop {
        let o = r.run(&c)?;
        if o.code == 0 {
            let v: Value =
                serde_json::from_str(o.stdout.trim()).with_context(|| format!("reading `{}`", c.display()))?;
            return Ok(Some(if v.is_null() { Value::Object(Default::default()) } else { v }));
        }
        if o.stderr.contains("not found") {
            k.absent(name, ns, true);
            return Ok(None);
        }
        if attempt >= READ_ATTEMPTS || crate::run::signals::interrupted() {
            anyhow::bail!("`{}` exited with code 1: {}", c.display(), o.stderr.trim());
        }
        crate::run::proc::sleep_unless_interrupted(Duration::from_millis(500) * 2u32.pow(attempt - 1));
        attempt += 1;
    }
}

/// Runs `a` and `b` at the same time (reads that do not depend on each other).
pub fn both<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    std::thread::scope(|scope| {
        let hb = scope.spawn(b);
        let ra = a();
        (ra, hb.join().expect("read thread"))
    })
}

/// Helm's statuses of a release whose install, upgrade or rollback has not finished.
pub const PENDING_STATUSES: [&str; 3] = ["pending-install", "pending-upgrade", "pending-rollback"];

/// One revision of a release (`helm history -o json`).
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    pub revision: u64,
    pub status: String,
}

/// `helm history NAME -n NS -o json`: every revision Helm keeps, oldest first.
pub fn history(k: &Kube, r: &Runner, name: &str, ns: &str) -> Result<Vec<Revision>> {
    let c = k
        .helm()
        .args(["history", name, "-n", ns, "-o", "json"])
        .timeout(READ_TIMEOUT)
        .idempotent(READ_ATTEMPTS)
        .quiet();
    let o = r.run(&c)?;
    let list: Vec<Value> =
        serde_json::from_str(o.stdout.trim()).with_context(|| format!("reading `{}`", c.display()))?;
    let mut revs: Vec<Revision> = list
        .iter()
        .filter_map(|v| {
            let revision = match v.get("revision")? {
                Value::Number(n) => n.as_u64()?,
                Value::String(s) => s.parse().ok()?,
                _ => return None,
            };
            Some(Revision { revision, status: v.get("status").and_then(Value::as_str).unwrap_or("").to_string() })
        })
        .collect();
    revs.sort_by_key(|r| r.revision);
    Ok(revs)
}

/// What to do about a release an interrupted Helm left pending.
#[derive(Debug, Clone, PartialEq)]
pub enum Recovery {
    /// Roll back to this revision: the newest that was deployed (or superseded by a deployed one).
    Rollback(u64),
    /// No revision was ever deployed (an interrupted first install): uninstall, then install anew.
    Uninstall,
}

/// The recovery of a pending release from its history: back to the newest revision before the
/// pending one that is `deployed` (Helm leaves the previous release deployed until an upgrade
/// succeeds) or else `superseded`; without one, uninstall.
pub fn recovery(history: &[Revision]) -> Recovery {
    let pending = history.last().map(|r| r.revision).unwrap_or(0);
    let before =
        |status: &str| history.iter().rev().find(|r| r.revision < pending && r.status == status).map(|r| r.revision);
    match before("deployed").or_else(|| before("superseded")) {
        Some(rev) => Recovery::Rollback(rev),
        None => Recovery::Uninstall,
    }
}

/// Before `helm upgrade --install` of release `name`: when a Helm that was killed or lost its
/// connection left the release `pending-install`, `pending-upgrade` or `pending-rollback`, every
/// further `helm upgrade` refuses ("another operation (install/upgrade/rollback) is in
/// progress"). The deployment's lock guarantees no other raydeploy run is at work on it, so the
/// pending operation is taken as dead: the release is rolled back to its last deployed revision
/// (`helm rollback --wait`), or uninstalled when it never had one, and the caller's upgrade runs
/// as usual. Returns what was done, also logged.
pub fn recover_pending(k: &Kube, r: &Runner, name: &str, ns: &str) -> Result<Option<String>> {
    let Some(rel) = release(k, r, name, ns)? else { return Ok(None) };
    if !PENDING_STATUSES.contains(&rel.status.as_str()) {
        return Ok(None);
    }
    let hist = history(k, r, name, ns)?;
    let pending = hist.last().map(|h| h.revision.to_string()).unwrap_or_else(|| rel.revision.clone());
    let found = format!(
        "Helm release {ns}/{name} is {} (revision {pending}): an earlier helm was interrupted before it \
         finished, and Helm refuses any other operation on the release until it is resolved",
        rel.status
    );
    r.info(&found);
    let done = match recovery(&hist) {
        Recovery::Rollback(rev) => {
            let c = k
                .helm()
                .args(["rollback", name, &rev.to_string(), "-n", ns, "--wait", "--timeout", HELM_WAIT])
                .timeout(HELM_TIMEOUT);
            r.run(&c).with_context(|| format!("{found}; rolling it back to revision {rev} failed"))?;
            format!("rolled Helm release {ns}/{name} back from {} revision {pending} to revision {rev}", rel.status)
        }
        Recovery::Uninstall => {
            let c =
                k.helm().args(["uninstall", name, "-n", ns, "--wait", "--timeout", HELM_WAIT]).timeout(HELM_TIMEOUT);
            r.run(&c).with_context(|| format!("{found}; uninstalling it (it was never deployed) failed"))?;
            format!("uninstalled Helm release {ns}/{name}, left {} with no deployed revision", rel.status)
        }
    };
    r.info(&format!("{done}; installing it again"));
    Ok(Some(done))
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
    fn a_pending_release_goes_back_to_its_last_deployed_revision() {
        let h = |revs: &[(u64, &str)]| -> Vec<Revision> {
            revs.iter().map(|(revision, s)| Revision { revision: *revision, status: s.to_string() }).collect()
        };
        // An upgrade killed after Helm stored its pending revision: the previous one is still deployed.
        assert_eq!(recovery(&h(&[(1, "superseded"), (2, "deployed"), (3, "pending-upgrade")])), Recovery::Rollback(2));
        // A rollback killed after the old revision was already marked superseded.
        assert_eq!(
            recovery(&h(&[(1, "superseded"), (2, "superseded"), (3, "pending-rollback")])),
            Recovery::Rollback(2)
        );
        // A failed revision is never the target; a deployed one wins over a newer superseded one.
        assert_eq!(
            recovery(&h(&[(1, "deployed"), (2, "superseded"), (3, "failed"), (4, "pending-upgrade")])),
            Recovery::Rollback(1)
        );
        // A first install that never finished, or only ever failed: nothing to go back to.
        assert_eq!(recovery(&h(&[(1, "pending-install")])), Recovery::Uninstall);
        assert_eq!(recovery(&h(&[(1, "failed"), (2, "pending-upgrade")])), Recovery::Uninstall);
        assert_eq!(recovery(&[]), Recovery::Uninstall);
    }

    #[test]
    fn an_unreachable_api_server_is_named_first() {
        let kubectl = CmdError::Failed {
            command: "kubectl get raycluster x -n y -o json".into(),
            code: 1,
            stderr_tail:
                "The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?"
                    .into(),
        };
        let e = explain_unreachable(anyhow::Error::from(kubectl));
        let text = format!("{e:#}");
        assert!(
            text.starts_with("the Kubernetes API server is unreachable (The connection to the server 127.0.0.1:6443")
        );
        assert!(text.contains("`kubectl get raycluster x -n y -o json` exited with code 1"), "{text}");
        // Once only, and nothing added to other failures.
        assert_eq!(format!("{:#}", explain_unreachable(e)).matches("is unreachable").count(), 1);
        let helm = "Error: Kubernetes cluster unreachable: Get \"https://10.0.0.1:443/version\": dial tcp 10.0.0.1:443: i/o timeout";
        assert_eq!(unreachable_line(&format!("x\n  {helm}\n")), Some(helm));
        let other =
            anyhow::anyhow!("Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress");
        assert!(!format!("{:#}", explain_unreachable(other)).contains("unreachable"));
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
