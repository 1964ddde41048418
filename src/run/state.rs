//! Local state of a deployment, `.raydeploy/<deployment>/state.json`: per phase its status, the
//! input hash it completed with and its outputs. Written atomically (temp file, fsync, rename)
//! after every change, so a crash at any point leaves a parseable file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::redact::Redactor;

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub version: u32,
    pub deployment: String,
    pub target: String,
    #[serde(default)]
    pub phases: BTreeMap<String, PhaseRecord>,
    /// Target-specific facts (e.g. the local target's processes), by key.
    #[serde(default)]
    pub data: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseStatus {
    Running,
    Completed,
    Failed,
    Interrupted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub status: PhaseStatus,
    /// Hash of the inputs this status applies to.
    pub input_hash: String,
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// Unix seconds.
    pub started_at: u64,
    pub finished_at: Option<u64>,
    /// The error of a failed or interrupted phase (scrubbed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The state file of one deployment, shared by the phases of a run.
pub struct Store {
    path: PathBuf,
    state: Mutex<State>,
    redactor: Redactor,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state {path} is not valid ({message}); move it away to start over")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write state {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Store {
    /// Opens (or starts) the state in `dir` (`.raydeploy/<deployment>`).
    pub fn open(dir: &Path, deployment: &str, target: &str, redactor: Redactor) -> Result<Self, StateError> {
        let path = dir.join("state.json");
        let state = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut s: State = serde_json::from_str(&text)
                    .map_err(|e| StateError::Parse { path: path.clone(), message: e.to_string() })?;
                s.target = target.to_string();
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                version: STATE_VERSION,
                deployment: deployment.to_string(),
                target: target.to_string(),
                ..State::default()
            },
            Err(source) => return Err(StateError::Read { path, source }),
        };
        Ok(Self { path, state: Mutex::new(state), redactor })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> State {
        self.state.lock().expect("state lock").clone()
    }

    pub fn phase(&self, id: &str) -> Option<PhaseRecord> {
        self.state.lock().expect("state lock").phases.get(id).cloned()
    }

    /// Changes the state and writes it at once.
    pub fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> Result<R, StateError> {
        let mut s = self.state.lock().expect("state lock");
        let r = f(&mut s);
        self.write(&s)?;
        Ok(r)
    }

    fn write(&self, s: &State) -> Result<(), StateError> {
        let err = |source| StateError::Write { path: self.path.clone(), source };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        // Outputs and errors come from tool output: no form of a secret may reach the file. Each
        // string is scrubbed (not the JSON text, where a value appears escaped).
        let mut value = serde_json::to_value(s).expect("state serializes");
        self.redactor.scrub_json(&mut value);
        let text = serde_json::to_string_pretty(&value).expect("state serializes");
        write_atomic(&self.path, text.as_bytes()).map_err(err)
    }

    pub fn set_running(&self, id: &str, hash: &str) -> Result<(), StateError> {
        self.update(|s| {
            let outputs = s.phases.get(id).map(|p| p.outputs.clone()).unwrap_or_default();
            s.phases.insert(
                id.to_string(),
                PhaseRecord {
                    status: PhaseStatus::Running,
                    input_hash: hash.to_string(),
                    outputs,
                    started_at: now(),
                    finished_at: None,
                    error: None,
                },
            );
        })
    }

    pub fn finish(
        &self,
        id: &str,
        hash: &str,
        status: PhaseStatus,
        outputs: Option<BTreeMap<String, String>>,
        error: Option<String>,
    ) -> Result<(), StateError> {
        self.update(|s| {
            let rec = s.phases.entry(id.to_string()).or_insert_with(|| PhaseRecord {
                status,
                input_hash: hash.to_string(),
                outputs: BTreeMap::new(),
                started_at: now(),
                finished_at: None,
                error: None,
            });
            rec.status = status;
            rec.input_hash = hash.to_string();
            if let Some(o) = outputs {
                rec.outputs = o;
            }
            rec.finished_at = Some(now());
            rec.error = error;
        })
    }

    /// Forgets phases (after destroy).
    pub fn forget(&self, ids: &[&str]) -> Result<(), StateError> {
        self.update(|s| {
            for id in ids {
                s.phases.remove(*id);
            }
        })
    }
}

/// Writes `bytes` to `path` through a temp file in the same folder, fsynced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_scrub() {
        let dir = tempfile::tempdir().unwrap();
        let r = Redactor::new();
        r.add("canary-secret-1234");
        let st = Store::open(dir.path(), "d", "aks", r.clone()).unwrap();
        st.set_running("infra", "h1").unwrap();
        let outs = BTreeMap::from([("k".to_string(), "canary-secret-1234".to_string())]);
        st.finish("infra", "h1", PhaseStatus::Completed, Some(outs), None).unwrap();
        let text = std::fs::read_to_string(st.path()).unwrap();
        assert!(!text.contains("canary-secret-1234"));
        let again = Store::open(dir.path(), "d", "aks", r).unwrap();
        assert_eq!(again.phase("infra").unwrap().status, PhaseStatus::Completed);
    }

    #[test]
    fn corrupt_state_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), "{").unwrap();
        assert!(matches!(Store::open(dir.path(), "d", "aks", Redactor::new()), Err(StateError::Parse { .. })));
    }
}
