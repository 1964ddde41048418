//! Secret values: resolved at apply time from the environment, a file or Azure Key Vault
//! (`az keyvault secret show`), registered with the redactor before any use, never written.
//!
//! The `secrets` phase builds each `v1 Secret` from the typed manifest struct with the real
//! values and pipes it as JSON on stdin to `kubectl apply -f -`. Each Secret carries a random salt
//! (annotation [`SALT_ANNOTATION`]) and the salted hash of its values (label [`HASH_LABEL`]), so a
//! later deploy, even from a fresh checkout, can tell whether the live Secret already holds the
//! current values without the hash revealing a low-entropy value.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{Kube, live};
use crate::model::SecretModel;
use crate::render::manifests::secrets::{VALUES_ANNOTATION, secret};
use crate::run::exec::{Cx, Outputs};
use crate::run::proc::{Cmd, Runner};
use crate::spec::SecretSource;

/// Label with the salted hash of a Secret's values.
pub const HASH_LABEL: &str = "raydeploy.io/secret-hash";
/// Annotation with the salt of [`HASH_LABEL`] (random, not secret).
pub const SALT_ANNOTATION: &str = "raydeploy.io/secret-salt";

/// Problems with secret sources that can be found without reading Key Vault values
/// (unset env vars, unreadable files); for preflight.
pub fn check_sources(k: &Kube) -> Vec<String> {
    let mut problems = vec![];
    for s in &k.s.d.secrets {
        for (key, src) in &s.sources {
            let at = format!("secret `{}` key `{key}`", s.name);
            match src {
                SecretSource::FromEnv(var) => match std::env::var_os(var) {
                    None => problems.push(format!("{at}: environment variable {var} is not set")),
                    Some(v) if v.is_empty() => problems.push(format!("{at}: environment variable {var} is empty")),
                    Some(v) if v.to_str().is_none() => {
                        problems.push(format!("{at}: environment variable {var} is not valid UTF-8"))
                    }
                    Some(_) => {}
                },
                SecretSource::FromFile(path) => {
                    if let Err(e) = crate::spec::paths::read_text(&k.s.d.dir, path, crate::spec::paths::MAX_TEXT_BYTES)
                    {
                        problems.push(format!("{at}: {e}"))
                    }
                }
                SecretSource::FromKeyVault(_) => {}
            }
        }
    }
    problems
}

/// The values of one secret, by key (each registered with the redactor).
pub fn resolve(k: &Kube, s: &SecretModel) -> Result<BTreeMap<String, String>> {
    let r = live::side_runner(k, "secrets", true)?;
    resolve_with(k, &r, s)
}

fn resolve_with(k: &Kube, r: &Runner, s: &SecretModel) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (key, src) in &s.sources {
        let at = || format!("secret `{}` key `{key}`", s.name);
        let value = match src {
            SecretSource::FromEnv(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => v,
                Ok(_) => bail!("{}: environment variable {var} is empty", at()),
                Err(std::env::VarError::NotPresent) => bail!("{}: environment variable {var} is not set", at()),
                Err(std::env::VarError::NotUnicode(_)) => bail!("{}: environment variable {var} is not UTF-8", at()),
            },
            SecretSource::FromFile(path) => {
                crate::spec::paths::read_text(&k.s.d.dir, path, crate::spec::paths::MAX_TEXT_BYTES)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?
                    .1
            }
            SecretSource::FromKeyVault(kv) => {
                let c = keyvault_cmd(&kv.vault, &kv.secret);
                let o = r.run(&c).with_context(|| format!("{}: reading Key Vault {}", at(), kv.vault))?;
                // `-o tsv` ends the value with one newline.
                let v = o.stdout.strip_suffix('\n').unwrap_or(&o.stdout);
                let v = v.strip_suffix('\r').unwrap_or(v).to_string();
                if v.is_empty() {
                    bail!("{}: Key Vault {} secret {} is empty", at(), kv.vault, kv.secret);
                }
                v
            }
        };
        k.s.redactor.add(&value);
        out.insert(key.clone(), value);
    }
    Ok(out)
}

/// `az keyvault secret show` of one value; its stdout is the secret, so it is never logged.
pub fn keyvault_cmd(vault: &str, name: &str) -> Cmd {
    Cmd::new("az")
        .args(["keyvault", "secret", "show", "--vault-name", vault, "--name", name, "--query", "value", "-o", "tsv"])
        .arg("--only-show-errors")
        .timeout(live::READ_TIMEOUT)
        .idempotent(live::READ_ATTEMPTS)
        .secret_output()
}

/// The salted hash of a Secret's values.
pub fn values_hash(salt: &str, values: &BTreeMap<String, String>) -> String {
    let mut parts: Vec<&[u8]> = vec![b"raydeploy-secret-v1", salt.as_bytes()];
    for (k, v) in values {
        parts.push(k.as_bytes());
        parts.push(v.as_bytes());
    }
    live::short_hash(parts)
}

/// 16 random bytes from the OS, hex.
fn new_salt() -> Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).context("reading /dev/urandom")?;
    Ok(crate::graph::hex(&b))
}

/// The Secret object with its values (kept in memory only).
pub fn object(k: &Kube, s: &SecretModel, values: &BTreeMap<String, String>, salt: &str) -> Result<Value> {
    let mut obj = secret(&k.s.d, s);
    obj.metadata.annotations.remove(VALUES_ANNOTATION);
    obj.metadata.annotations.insert(SALT_ANNOTATION.into(), salt.into());
    obj.metadata.labels.insert(HASH_LABEL.into(), values_hash(salt, values));
    obj.string_data = values.clone();
    Ok(serde_json::to_value(&obj)?)
}

/// What the phase did or would do: the secrets' names.
fn outputs(k: &Kube) -> Outputs {
    let names: Vec<&str> = k.s.d.secrets.iter().map(|s| s.name.as_str()).collect();
    Outputs::from([("secrets".to_string(), names.join(","))])
}

/// The live Secrets of the deployment by name, metadata only. The read returns their data too,
/// so its output is never logged and everything but the metadata is dropped at once.
fn live_secrets(k: &Kube, r: &Runner) -> Result<BTreeMap<String, Value>> {
    if k.s.d.secrets.is_empty() {
        return Ok(BTreeMap::new());
    }
    let c = k
        .kubectl()
        .args(["get", "secret", "-n", &k.s.d.cluster.namespace, "-l"])
        .arg(format!("{}={}", crate::model::DEPLOYMENT_LABEL, k.s.d.name))
        .args(["-o", "json"])
        .timeout(live::READ_TIMEOUT)
        .idempotent(live::READ_ATTEMPTS)
        .secret_output();
    let o = r.run(&c)?;
    let list: Value = serde_json::from_str(&o.stdout).context("reading the live Secrets")?;
    let mut out = BTreeMap::new();
    for item in live::items(Some(list)) {
        let name = live::name(&item).to_string();
        let metadata = item.get("metadata").cloned().unwrap_or(Value::Null);
        out.insert(name, serde_json::json!({ "metadata": metadata }));
    }
    Ok(out)
}

/// Each secret with its values and the salt to use: the live one's (so unchanged values keep
/// their hash) or a new one.
struct Resolved<'a> {
    model: &'a SecretModel,
    values: BTreeMap<String, String>,
    salt: String,
    current: bool,
}

fn resolve_all<'a>(k: &'a Kube, r: &Runner) -> Result<Vec<Resolved<'a>>> {
    // The live Secrets and every value (Key Vault reads) at the same time.
    let (live, resolved) = live::both(
        || live_secrets(k, r),
        || {
            std::thread::scope(|scope| {
                let handles: Vec<_> =
                    k.s.d.secrets.iter().map(|s| scope.spawn(move || resolve_with(k, r, s))).collect();
                handles.into_iter().map(|h| h.join().expect("secret thread")).collect::<Vec<_>>()
            })
        },
    );
    let live = live?;
    let mut out = vec![];
    for (s, values) in k.s.d.secrets.iter().zip(resolved) {
        let values = values?;
        let obj = live.get(&s.name);
        let salt = obj.and_then(|o| live::annotation(o, SALT_ANNOTATION)).map(str::to_string);
        let current = match (&salt, obj.and_then(|o| live::label(o, HASH_LABEL))) {
            (Some(salt), Some(h)) => values_hash(salt, &values) == h,
            _ => false,
        };
        let salt = match salt {
            Some(s) => s,
            None => new_salt()?,
        };
        out.push(Resolved { model: s, values, salt, current });
    }
    Ok(out)
}

/// Skips when every live Secret holds the current values (asked of the cluster, so a changed
/// environment variable or Key Vault value is applied even when the spec did not change).
pub fn probe(k: &Kube, cx: &Cx) -> Result<Option<Outputs>> {
    if k.s.d.secrets.is_empty() {
        return Ok(Some(outputs(k)));
    }
    let all = resolve_all(k, &cx.runner)?;
    Ok(all.iter().all(|s| s.current).then(|| outputs(k)))
}

pub fn apply(k: &Kube, cx: &Cx) -> Result<Outputs> {
    let r = &cx.runner;
    if k.s.d.secrets.is_empty() {
        return Ok(outputs(k));
    }
    live::ensure_namespace(k, r, &k.s.d.cluster.namespace)?;
    let all = resolve_all(k, r)?;
    let mut objects = vec![];
    for s in all.iter().filter(|s| !s.current) {
        objects.push(object(k, s.model, &s.values, &s.salt)?);
    }
    for s in all.iter().filter(|s| s.current) {
        r.info(&format!("secret {} already holds the current values", s.model.name));
    }
    if !objects.is_empty() {
        live::apply(k, r, &objects, true)?;
    }
    Ok(outputs(k))
}

/// What `--dry-run` shows: the sources, never the values.
pub fn preview(k: &Kube) -> Vec<String> {
    let mut v = vec![];
    for s in &k.s.d.secrets {
        for (key, src) in &s.sources {
            if let SecretSource::FromKeyVault(kv) = src {
                v.push(format!("{}  # secret {} key {key}", keyvault_cmd(&kv.vault, &kv.secret).display(), s.name));
            }
        }
        let sources: Vec<String> = s
            .sources
            .iter()
            .map(|(key, src)| format!("{key} {}", crate::render::manifests::secrets::placeholder(src)))
            .collect();
        v.push(format!(
            "{}  # Secret {}/{} on stdin: {}",
            live::apply_cmd(k, true).display(),
            k.s.d.cluster.namespace,
            s.name,
            sources.join(", ")
        ));
    }
    v
}

/// Deletes the deployment's Secrets (absent ones are fine).
pub fn destroy(k: &Kube, r: &Runner) -> Result<()> {
    if k.s.d.secrets.is_empty() {
        return Ok(());
    }
    let mut c = k.kubectl().args(["delete", "secret"]);
    for s in &k.s.d.secrets {
        c = c.arg(s.name.as_str());
    }
    let c = c.args(["-n", &k.s.d.cluster.namespace, "--ignore-not-found"]).timeout(live::WRITE_TIMEOUT);
    match r.run(&c) {
        Ok(_) => Ok(()),
        Err(e) if live::no_such_kind(&e) => Ok(()),
        Err(crate::run::proc::CmdError::Failed { stderr_tail, .. })
            if stderr_tail.contains("namespaces") && stderr_tail.contains("not found") =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_salted_and_covers_keys() {
        let v = BTreeMap::from([("k".to_string(), "1234".to_string())]);
        let a = values_hash("salt-a", &v);
        assert_ne!(a, values_hash("salt-b", &v));
        let w = BTreeMap::from([("j".to_string(), "1234".to_string())]);
        assert_ne!(a, values_hash("salt-a", &w));
        assert_eq!(a, values_hash("salt-a", &v.clone()));
        assert!(a.len() <= 63);
    }

    #[test]
    fn salts_differ() {
        assert_ne!(new_salt().unwrap(), new_salt().unwrap());
    }
}
