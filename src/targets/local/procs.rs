//! The processes of a local deployment. `ray start` daemonizes (GCS, raylet, dashboard, agents
//! keep running after it returns, and the raylet later forks workers and job drivers), so
//! raydeploy marks every `ray start` it runs with two environment variables, which every process
//! Ray forks from it inherits:
//!
//! - `RAYDEPLOY_LOCAL_DIR`: the deployment's state folder (absolute), unique per deployment;
//! - `RAYDEPLOY_LOCAL_NODE`: the node (`head`, `workers-0`, …).
//!
//! A process belongs to a node exactly when its initial environment holds both. Each process is
//! recorded with its start time (field 22 of `/proc/PID/stat`), so a reused PID is never
//! mistaken for it. Stopping is by PID: SIGTERM, a grace period, SIGKILL — never `ray stop`,
//! which stops every Ray process on the machine.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub const DIR_VAR: &str = "RAYDEPLOY_LOCAL_DIR";
pub const NODE_VAR: &str = "RAYDEPLOY_LOCAL_NODE";

/// One process, as recorded in the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    pub pid: u32,
    /// Clock ticks after boot when it started.
    pub start: u64,
    /// Short name (`raylet`, `gcs_server`, `dashboard.py`, …).
    pub name: String,
}

impl Proc {
    /// Whether this very process (same PID and start time) is still running.
    pub fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|(start, state)| start == self.start && state != 'Z' && state != 'X')
    }
}

/// Start time and state letter of a PID.
fn stat(pid: u32) -> Option<(u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 3 is fields[0]; field 22 (starttime) is fields[19].
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// The value of `var` in a process's initial environment.
fn environ_var(pid: u32, var: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{var}=");
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn short_name(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> =
        cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let base = |a: &str| a.rsplit('/').next().unwrap_or(a).to_string();
    let Some(first) = args.first() else { return String::new() };
    let prog = base(first);
    if prog.starts_with("python") {
        // `python -u .../dashboard.py`, `python -m ray.util.client.server`, workers (`ray::IDLE`
        // rename their cmdline).
        let mut it = args.iter().skip(1).filter(|a| !a.starts_with('-') || a.as_str() == "-m");
        match it.next() {
            Some(a) if a == "-m" => it.next().cloned().unwrap_or(prog),
            Some(a) => base(a),
            None => prog,
        }
    } else {
        // Ray workers rename themselves (`ray::IDLE`, `ray::square`): keep the first word.
        first.split_whitespace().next().map(base).unwrap_or(prog)
    }
}

/// Processes whose environment marks them as belonging to the deployment at `dir`, and to
/// `node` when given.
pub fn scan(dir: &Path, node: Option<&str>) -> Vec<Proc> {
    let dir = dir.to_string_lossy();
    let me = std::process::id();
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    for e in rd.filter_map(|e| e.ok()) {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        if environ_var(pid, DIR_VAR).as_deref() != Some(&*dir) {
            continue;
        }
        let this_node = environ_var(pid, NODE_VAR);
        if node.is_some_and(|n| this_node.as_deref() != Some(n)) {
            continue;
        }
        let Some((start, state)) = stat(pid) else { continue };
        if state == 'Z' || state == 'X' {
            continue;
        }
        out.push(Proc { pid, start, name: short_name(pid) });
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// The `--node_id` a raylet was started with.
pub fn raylet_node_id(p: &Proc) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.pid)).ok()?;
    cmdline
        .split(|b| *b == 0)
        .find_map(|a| a.strip_prefix(b"--node_id="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Stops `procs` (only those still the same processes): SIGTERM, up to `grace` for them to
/// exit, then SIGKILL. Returns how many were signalled.
pub fn stop(procs: &[Proc], grace: Duration) -> usize {
    let live: Vec<&Proc> = procs.iter().filter(|p| p.alive()).collect();
    for p in &live {
        signal(p, libc::SIGTERM);
    }
    let end = Instant::now() + grace;
    while Instant::now() < end && live.iter().any(|p| p.alive()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in live.iter().filter(|p| p.alive()) {
        signal(p, libc::SIGKILL);
    }
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && live.iter().any(|p| p.alive()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    live.len()
}

/// Sends `sig` to `p` if it is still the recorded process.
pub fn signal(p: &Proc, sig: libc::c_int) {
    if p.alive() {
        // SAFETY: kill(2) on a PID just checked to be the recorded process (same start time).
        unsafe {
            libc::kill(p.pid as libc::pid_t, sig);
        }
    }
}

/// `n` free TCP ports on 127.0.0.1, all different (held open together while chosen).
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind(("127.0.0.1", 0))).collect::<Result<_, _>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_stat_parses() {
        let (start, state) = stat(std::process::id()).unwrap();
        assert!(start > 0);
        assert!(matches!(state, 'R' | 'S'));
    }

    /// Polls `f` until it returns `Some`, for at most 30 s.
    fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Until a spawned child has exec'd, /proc/PID/environ and cmdline are still the parent's:
    /// wait until the child runs `program`.
    fn wait_exec(pid: u32, program: &str) {
        wait_for(&format!("{pid} to exec {program}"), || (short_name(pid) == program).then_some(()));
    }

    #[test]
    fn scan_finds_marked_children_and_stop_ends_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .env(DIR_VAR, dir.path())
            .env(NODE_VAR, "workers-0")
            .spawn()
            .unwrap();
        let other = tempfile::tempdir().unwrap();
        let mut unrelated = std::process::Command::new("sleep").arg("60").env(DIR_VAR, other.path()).spawn().unwrap();
        wait_exec(child.id(), "sleep");
        wait_exec(unrelated.id(), "sleep");
        let found = scan(dir.path(), None);
        assert_eq!(found.iter().map(|p| p.pid).collect::<Vec<_>>(), vec![child.id()]);
        assert_eq!(found[0].name, "sleep");
        assert!(scan(dir.path(), Some("head")).is_empty());
        assert_eq!(scan(dir.path(), Some("workers-0")).len(), 1);
        assert_eq!(stop(&found, Duration::from_secs(5)), 1);
        child.wait().unwrap();
        // Reaped: the recorded process is gone, whatever reuses its PID.
        assert!(!found[0].alive());
        assert!(scan(dir.path(), None).is_empty());
        // The other deployment's process was not touched.
        assert!(unrelated.try_wait().unwrap().is_none());
        unrelated.kill().unwrap();
        unrelated.wait().unwrap();
    }

    #[test]
    fn a_reused_pid_is_not_the_recorded_process() {
        let me = Proc { pid: std::process::id(), start: stat(std::process::id()).unwrap().0 + 1, name: "x".into() };
        assert!(!me.alive());
    }

    #[test]
    fn ports_are_distinct() {
        let p = free_ports(12).unwrap();
        let set: std::collections::BTreeSet<_> = p.iter().collect();
        assert_eq!(set.len(), 12);
    }
}
