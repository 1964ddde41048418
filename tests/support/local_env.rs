//! A private network namespace (only a loopback that is up) to run raydeploy's local target in,
//! and a copy of a local spec whose Ray processes are all stopped when the test ends.
//!
//! Ray binds some sockets on every interface and probes public addresses for its own IP: inside
//! the namespace all of that stays on the namespace's loopback. The namespace is held by a
//! `sleep` started with `unshare -n`; commands enter it with `nsenter -t PID -n`.
//!
//! Ray itself is installed by raydeploy's `env` phase from the wheels `.ci/run` downloads
//! (`$RAYDEPLOY_TEST_WHEELS`, default `~/.cache/raydeploy/wheels`), with no index: the namespace
//! has no route out. The environment is cached (`~/.cache/raydeploy/venvs`), so it is built once.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The holder of a network namespace.
pub struct Netns {
    holder: Child,
}

impl Netns {
    pub fn new() -> Self {
        let mut holder = Command::new("unshare")
            .args(["-n", "sh", "-c", "ip link set lo up && echo up && exec sleep 100000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unshare -n (root and util-linux are needed)");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "up", "the namespace's loopback did not come up");
        Self { holder }
    }

    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// `program args…` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid().to_string(), "-n", "--"]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

pub fn wheels() -> PathBuf {
    std::env::var_os("RAYDEPLOY_TEST_WHEELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/raydeploy/wheels"))
}

/// Held while a test runs Ray clusters: one cluster at a time per test binary, so that starts
/// stay well inside Ray's 30-second registration wait on a small machine.
pub static RAY: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn ray_lock() -> std::sync::MutexGuard<'static, ()> {
    RAY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A copy of a local spec's folder, deployed inside its own namespace.
pub struct LocalDeployment {
    pub ns: Netns,
    pub tmp: tempfile::TempDir,
    pub spec: PathBuf,
    /// `.raydeploy/<deployment>` (absolute, canonical): the mark on the deployment's processes.
    pub dir: PathBuf,
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_name() == ".raydeploy" {
            continue;
        }
        if src.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

impl LocalDeployment {
    /// Copies `example` (a folder with `raydeploy.yaml`) and names its deployment `name`.
    pub fn new(example: &Path, deployment: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap().join("spec");
        copy_tree(example, &root);
        let spec = root.join("raydeploy.yaml");
        let text = std::fs::read_to_string(&spec).unwrap();
        let text = text
            .lines()
            .map(|l| if l.starts_with("name:") { format!("name: {deployment}") } else { l.to_string() })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&spec, text + "\n").unwrap();
        let dir = root.join(".raydeploy").join(deployment);
        Self { ns: Netns::new(), tmp, spec, dir }
    }

    /// `raydeploy ARGS… SPEC` inside the namespace, with the wheels as the only package source.
    pub fn raydeploy(&self, args: &[&str]) -> Output {
        let mut c = self.ns.command(assert_cmd::cargo::cargo_bin("raydeploy"));
        c.args(args)
            .arg(&self.spec)
            .env("PIP_NO_INDEX", "1")
            .env("PIP_FIND_LINKS", wheels())
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c.output().expect("raydeploy runs")
    }

    pub fn state(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join("state.json")).unwrap()).unwrap()
    }

    /// PID and start time of every process recorded in the state.
    pub fn recorded(&self) -> Vec<(u32, u64)> {
        let st = self.state();
        let mut v = vec![];
        if let Some(nodes) = st.pointer("/data/local/nodes").and_then(|n| n.as_object()) {
            for n in nodes.values() {
                for p in n["procs"].as_array().unwrap() {
                    v.push((p["pid"].as_u64().unwrap() as u32, p["start"].as_u64().unwrap()));
                }
            }
        }
        v
    }

    /// The recorded raylet PID of `node`.
    pub fn raylet(&self, node: &str) -> u32 {
        let st = self.state();
        let procs = st.pointer(&format!("/data/local/nodes/{node}/procs")).unwrap().as_array().unwrap().clone();
        procs.iter().find(|p| p["name"] == "raylet").unwrap()["pid"].as_u64().unwrap() as u32
    }

    /// PIDs of live processes whose environment carries this deployment's mark (read here,
    /// independently of raydeploy's own scan).
    pub fn marked(&self) -> Vec<u32> {
        marked(&self.dir)
    }

    /// The GCS node id (hex) of every live driver (a process connected to Ray as a driver, such
    /// as the head's job agent), read from the GCS's job table with the deployment's own Ray.
    pub fn live_driver_nodes(&self) -> Vec<String> {
        let st = self.state();
        let gcs = st["data"]["local"]["gcs_address"].as_str().unwrap().to_string();
        // The deployment's Python: the interpreter of a Python process of the head.
        let python = st["data"]["local"]["nodes"]["head"]["procs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| std::fs::read(format!("/proc/{}/cmdline", p["pid"])).ok())
            .filter_map(|c| c.split(|b| *b == 0).next().map(|a| String::from_utf8_lossy(a).into_owned()))
            .find(|a| a.ends_with("/bin/python"))
            .expect("a Python process on the head");
        let script = concat!(
            "import sys\n",
            "from ray._raylet import GcsClient\n",
            "for j in GcsClient(address=sys.argv[1]).get_all_job_info().values():\n",
            "    if not j.is_dead: print(j.driver_address.node_id.hex())\n",
        );
        let out = self.ns.command(python).args(["-c", script, &gcs]).output().expect("python runs");
        let (o, e) = text(&out);
        assert!(out.status.success(), "reading the job table failed:\n{o}\n{e}");
        o.lines().map(str::to_string).collect()
    }
}

pub fn marked(dir: &Path) -> Vec<u32> {
    let want = format!("RAYDEPLOY_LOCAL_DIR={}", dir.display());
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        if env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()) && !zombie(pid) {
            out.push(pid);
        }
    }
    out.sort();
    out
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with(['Z', 'X']))
        .unwrap_or(true)
}

/// Whether the process `pid` that started at `start` (clock ticks) still runs.
pub fn alive(pid: u32, start: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let rest = s.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.get(19).and_then(|v| v.parse::<u64>().ok()) == Some(start) && !f[0].starts_with(['Z', 'X'])
    })
}

impl Drop for LocalDeployment {
    /// Whatever the test did: `destroy`, then SIGKILL to anything still marked.
    fn drop(&mut self) {
        if self.dir.join("state.json").exists() {
            let _ = self.raydeploy(&["destroy"]);
        }
        for _ in 0..50 {
            let left = self.marked();
            if left.is_empty() {
                break;
            }
            for pid in left {
                // SAFETY: kill(2) on a process carrying this test's own deployment mark.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Panics with both streams unless `o` exited with `code`.
pub fn expect_code(o: &Output, code: i32, what: &str) -> (String, String) {
    let (out, err) = text(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: exit {:?}\n--- stdout\n{out}\n--- stderr\n{err}\n(Ray's wheels come from {}: `bash .ci/run` downloads them)",
        o.status.code(),
        wheels().display()
    );
    (out, err)
}
