//! One lock file per deployment (`.raydeploy/<deployment>/lock`), created exclusively and holding
//! the holder's PID, start time and command. A second run fails fast naming the holder; a lock
//! whose process is gone is taken over.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    /// Unix seconds.
    pub started_at: u64,
    pub command: String,
    /// The holder's process start time (from /proc), to tell a reused PID from the holder.
    #[serde(default)]
    pub proc_start: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "deployment `{deployment}` is locked by PID {} (`{}`, started {}s ago); wait for it to finish, or remove {} if that process is not raydeploy",
        .holder.pid, .holder.command, super::state::now().saturating_sub(.holder.started_at), .path.display()
    )]
    Held { deployment: String, holder: Holder, path: PathBuf },
    #[error("cannot create lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held until dropped.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
}

fn proc_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime), counted after the command name in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn alive(h: &Holder) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(h.pid as libc::pid_t, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && (h.proc_start.is_none() || proc_start(h.pid) == h.proc_start)
}

impl Lock {
    pub fn acquire(dir: &Path, deployment: &str, command: &str) -> Result<Self, LockError> {
        let path = dir.join("lock");
        let io = |source| LockError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let me = Holder {
            pid: std::process::id(),
            started_at: super::state::now(),
            command: command.to_string(),
            proc_start: proc_start(std::process::id()),
        };
        for _ in 0..3 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(serde_json::to_string(&me).expect("holder").as_bytes()).map_err(io)?;
                    f.sync_all().map_err(io)?;
                    return Ok(Lock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    match serde_json::from_str::<Holder>(&text) {
                        Ok(h) if alive(&h) => {
                            return Err(LockError::Held { deployment: deployment.to_string(), holder: h, path });
                        }
                        Ok(_) => {
                            // The holder is gone: a crashed run. Take the lock over.
                            let _ = std::fs::remove_file(&path);
                        }
                        Err(_) => {
                            // Being written right now, or torn: give the writer a moment.
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            let again = std::fs::read_to_string(&path).unwrap_or_default();
                            // Unchanged (a torn file its writer left) or empty: take it over.
                            if again.is_empty() || again == text {
                                let _ = std::fs::remove_file(&path);
                            }
                        }
                    }
                }
                Err(e) => return Err(io(e)),
            }
        }
        Err(io(std::io::Error::other("lock contended")))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_fails_and_stale_lock_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let l = Lock::acquire(dir.path(), "d", "deploy").unwrap();
        let e = Lock::acquire(dir.path(), "d", "deploy").unwrap_err();
        assert!(e.to_string().contains(&format!("PID {}", std::process::id())), "{e}");
        drop(l);
        std::fs::write(
            dir.path().join("lock"),
            r#"{"pid":999999999,"started_at":1,"command":"deploy","proc_start":null}"#,
        )
        .unwrap();
        Lock::acquire(dir.path(), "d", "deploy").unwrap();
    }
}
