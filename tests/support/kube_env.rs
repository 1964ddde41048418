//! A sandbox for deploy tests of targets aks and kubernetes: a spec in a temp folder, a `bin`
//! folder that is the whole PATH (the fakes from tests/fakes, python3 for them, and whichever
//! real tools or stand-ins a test adds), the fakes' state folder and call log, and a parser for
//! that log.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// A docker that builds and pushes by name only: local images and registry tags are marker
/// files in the fakes' state folder; a push prints a fixed digest.
pub const NAME_ONLY_DOCKER: &str = r#"S="$RAYDEPLOY_FAKE_STATE/docker"; mkdir -p "$S"
k() { printf '%s' "$1" | tr '/:@' '___'; }
last() { for a in "$@"; do l="$a"; done; printf '%s' "$l"; }
D=sha256:1111111111111111111111111111111111111111111111111111111111111111
case "$1" in
  version) echo 27.5.1 ;;
  buildx) echo "docker: 'buildx' is not a docker command." >&2; exit 1 ;;
  build) while [ $# -gt 0 ]; do [ "$1" = -t ] && touch "$S/local_$(k "$2")"; shift; done ;;
  image) r=$(last "$@"); [ -f "$S/local_$(k "$r")" ] && echo sha256:abc || { echo "Error: No such image: $r" >&2; exit 1; } ;;
  tag) touch "$S/local_$(k "$3")" ;;
  push) touch "$S/reg_$(k "$2")"; echo "${2##*:}: digest: $D size: 528" ;;
  manifest) r=$(last "$@"); [ -f "$S/reg_$(k "$r")" ] && echo "{\"Descriptor\":{\"digest\":\"$D\"}}" || { echo "no such manifest: $r" >&2; exit 1; } ;;
  *) echo "docker stand-in: $*" >&2; exit 1 ;;
esac"#;

/// The programs [`NAME_ONLY_DOCKER`] runs (the PATH of a sandbox has nothing else).
pub const NAME_ONLY_DOCKER_NEEDS: [&str; 3] = ["mkdir", "touch", "tr"];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One call a fake recorded.
#[derive(Debug, Clone)]
pub struct Call {
    pub tool: String,
    pub argv: Vec<String>,
    pub stdin: String,
    pub env: BTreeMap<String, String>,
    /// Exit code, or "hang" / "running" / "signal N".
    pub exit: Value,
    /// The fake's process.
    pub pid: Option<u32>,
    pub t0: f64,
    pub t1: f64,
    /// `open` when every `RAYDEPLOY_FAKE_WAIT` gate of the call opened, `timeout` when one
    /// did not, empty without gates.
    pub gates: String,
}

impl Call {
    /// True when every word is an argument.
    pub fn has(&self, words: &[&str]) -> bool {
        words.iter().all(|w| self.argv.iter().any(|a| a == w))
    }

    /// The subcommand words (arguments not starting with `-`, after `-chdir=`).
    pub fn line(&self) -> String {
        format!("{} {}", self.tool, self.argv.join(" "))
    }

    pub fn ok(&self) -> bool {
        self.exit == 0
    }

    /// A call that changes something outside this machine: what a no-op redeploy must not do.
    /// The verb is the first word that is neither a flag nor a flag's value (on aks, kubectl and
    /// helm get `--kubeconfig PATH` first).
    pub fn mutating(&self) -> bool {
        const VALUE_FLAGS: [&str; 5] = ["--kubeconfig", "--context", "--kube-context", "-n", "--namespace"];
        let mut a: Vec<&str> = vec![];
        let mut skip = false;
        for w in self.argv.iter().map(String::as_str) {
            if std::mem::take(&mut skip) {
                continue;
            }
            skip = VALUE_FLAGS.contains(&w);
            if !w.starts_with('-') {
                a.push(w);
            }
        }
        let first = a.first().copied().unwrap_or("");
        match self.tool.as_str() {
            "terraform" => matches!(first, "apply" | "destroy" | "import" | "taint"),
            "helm" => matches!(first, "upgrade" | "install" | "uninstall" | "delete" | "rollback"),
            "kubectl" => matches!(
                first,
                "apply" | "create" | "delete" | "replace" | "patch" | "label" | "annotate" | "scale" | "edit"
            ),
            "docker" => matches!(first, "build" | "push" | "buildx") || a.starts_with(&["image", "push"]),
            _ => false,
        }
    }
}

/// The sandbox.
pub struct KubeEnv {
    pub tmp: tempfile::TempDir,
    /// Folder holding `raydeploy.yaml`.
    pub spec_dir: PathBuf,
    pub bin: PathBuf,
    /// Extra environment of every command.
    pub vars: BTreeMap<String, String>,
}

/// The python3 the fakes run with (resolved past shims; looked up once).
pub fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(find_python).clone()
}

fn find_python() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args(["-c", "import os, sys; print(os.path.realpath(sys.executable))"])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "python3 is needed for the fake tools");
    PathBuf::from(String::from_utf8(out.stdout).expect("utf-8").trim())
}

/// The absolute path of a real program on this machine's PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| p.is_file())
}

impl KubeEnv {
    /// A sandbox with `spec` as `raydeploy.yaml` and the fakes `tools` on PATH.
    pub fn new(spec: &str, tools: &[&str]) -> Self {
        let tmp = tempfile::Builder::new().prefix("rd-kube").tempdir().expect("tempdir");
        let spec_dir = tmp.path().join("project");
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(&spec_dir).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(tmp.path().join("fake-state")).unwrap();
        std::fs::write(spec_dir.join("raydeploy.yaml"), spec).unwrap();
        let me = KubeEnv { spec_dir, bin, vars: BTreeMap::new(), tmp };
        std::os::unix::fs::symlink(python(), me.bin.join("python3")).unwrap();
        std::os::unix::fs::symlink(root().join("tests/fakes/_fake.py"), me.bin.join("_fake.py")).unwrap();
        for t in tools {
            me.add_fake(t);
        }
        let mut me = me;
        let state = me.tmp.path().join("fake-state").display().to_string();
        let log = me.log_path().display().to_string();
        me.vars.insert("PATH".into(), me.bin.display().to_string());
        me.vars.insert("RAYDEPLOY_FAKE_STATE".into(), state);
        me.vars.insert("RAYDEPLOY_FAKE_LOG".into(), log);
        me.vars.insert("HOME".into(), me.tmp.path().join("home").display().to_string());
        me.vars.insert("NO_COLOR".into(), "1".into());
        me.vars.insert("CI".into(), "1".into());
        me
    }

    pub fn add_fake(&self, tool: &str) {
        let link = self.bin.join(tool);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(root().join("tests/fakes").join(tool), link).unwrap();
    }

    /// Puts a real program (from this machine's PATH) on the sandbox's PATH.
    pub fn add_real(&self, program: &str) {
        let real = which(program).unwrap_or_else(|| panic!("{program} is not installed"));
        let link = self.bin.join(program);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(real, link).unwrap();
    }

    /// A stand-in program: a `/bin/sh` script.
    pub fn add_script(&self, name: &str, body: &str) {
        let p = self.bin.join(name);
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The docker stand-in [`NAME_ONLY_DOCKER`], with the programs its script uses.
    pub fn add_name_only_docker(&self) {
        self.add_script("docker", NAME_ONLY_DOCKER);
        for t in NAME_ONLY_DOCKER_NEEDS {
            self.add_real(t);
        }
    }

    pub fn remove_tool(&self, name: &str) {
        let _ = std::fs::remove_file(self.bin.join(name));
    }

    pub fn set(&mut self, k: &str, v: impl Into<String>) -> &mut Self {
        self.vars.insert(k.into(), v.into());
        self
    }

    pub fn unset(&mut self, k: &str) -> &mut Self {
        self.vars.remove(k);
        self
    }

    pub fn spec(&self) -> PathBuf {
        self.spec_dir.join("raydeploy.yaml")
    }

    pub fn write_spec(&self, text: &str) {
        std::fs::write(self.spec(), text).unwrap();
    }

    /// `.raydeploy/<deployment>`
    pub fn state_dir(&self, deployment: &str) -> PathBuf {
        self.spec_dir.join(".raydeploy").join(deployment)
    }

    pub fn state(&self, deployment: &str) -> Value {
        let text = std::fs::read_to_string(self.state_dir(deployment).join("state.json")).expect("state.json");
        serde_json::from_str(&text).expect("state.json parses")
    }

    /// The status of a phase in the state (`completed`, `failed`, ...), or "" when absent.
    pub fn phase_status(&self, deployment: &str, phase: &str) -> String {
        self.state(deployment)["phases"][phase]["status"].as_str().unwrap_or("").to_string()
    }

    pub fn fake_state(&self, tool: &str) -> Value {
        std::fs::read_to_string(self.tmp.path().join("fake-state").join(format!("{tool}.json")))
            .map(|t| serde_json::from_str(&t).expect("fake state parses"))
            .unwrap_or(Value::Null)
    }

    /// `$RAYDEPLOY_FAKE_STATE`: the fakes' state, and the files that open their gates.
    pub fn fake_state_dir(&self) -> PathBuf {
        self.tmp.path().join("fake-state")
    }

    /// Replaces a fake's state (e.g. the emulated cluster's nodes before a deploy).
    pub fn set_fake_state(&self, tool: &str, state: &Value) {
        let path = self.tmp.path().join("fake-state").join(format!("{tool}.json"));
        std::fs::write(path, serde_json::to_string_pretty(state).unwrap()).unwrap();
    }

    pub fn log_path(&self) -> PathBuf {
        self.tmp.path().join("fake.log")
    }

    /// Every call so far, in order of recording.
    pub fn calls(&self) -> Vec<Call> {
        read_calls(&self.log_path())
    }

    /// Forgets the calls so far.
    pub fn clear_calls(&self) {
        let _ = std::fs::remove_file(self.log_path());
        let _ = std::fs::remove_file(self.fake_state_dir().join("started.jsonl"));
    }

    /// `RAYDEPLOY_FAKE_WAIT` rules making each pair of calls wait until the other one is running:
    /// both gates open only when the two run at the same time (checked with [`Call::gates`]).
    /// Each entry is `tool:words`, e.g. `az:group show`.
    pub fn overlap_gates(pairs: &[(&str, &str)]) -> String {
        let mut rules = vec![];
        for (a, b) in pairs {
            rules.push(format!("{a}=running:{}", b.replacen(':', " ", 1)));
            rules.push(format!("{b}=running:{}", a.replacen(':', " ", 1)));
        }
        rules.join(",")
    }

    /// Calls of `tool` with every one of `words`.
    pub fn find(&self, tool: &str, words: &[&str]) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.tool == tool && c.has(words)).collect()
    }

    /// The project folder as a fresh checkout elsewhere: the spec (and anything next to it)
    /// without `.raydeploy`. The fakes' state (the "cloud") is shared.
    pub fn fresh_checkout(&mut self) {
        let to = self.tmp.path().join(format!("checkout-{}", self.tmp.path().read_dir().unwrap().count()));
        copy_tree(&self.spec_dir, &to, &[".raydeploy"]);
        self.spec_dir = to;
    }

    /// The `raydeploy` binary with the sandbox's environment (and nothing else of ours), run
    /// in the project folder.
    pub fn raydeploy(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("raydeploy").expect("binary");
        c.env_clear().current_dir(&self.spec_dir);
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    /// Same, as a plain std command (for runs that must be signalled or run concurrently).
    pub fn raydeploy_std(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("raydeploy"));
        c.env_clear().current_dir(&self.spec_dir);
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }
}

/// The calls recorded in a call log: one JSON object per line, as the fakes (tests/fakes/_fake.py)
/// and the test bed's recording wrappers (tests/support/bed_deploy.rs) write them. `tool` and
/// `argv` are always there; a wrapper that only records leaves out `stdin`, `env` and `exit`.
/// A last line without its newline is a call being written (a test may read while tools run):
/// left out.
pub fn read_calls(path: &Path) -> Vec<Call> {
    // Bytes first: the unfinished line may end inside a UTF-8 sequence.
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    text.split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("call log line {l:?}: {e}"));
            Call {
                tool: v["tool"].as_str().unwrap_or("").to_string(),
                argv: v["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect(),
                stdin: v["stdin"].as_str().unwrap_or("").to_string(),
                env: v["env"]
                    .as_object()
                    .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
                    .unwrap_or_default(),
                exit: v["exit"].clone(),
                pid: v["pid"].as_u64().map(|p| p as u32),
                t0: v["t0"].as_f64().unwrap_or(0.0),
                t1: v["t1"].as_f64().unwrap_or(0.0),
                gates: v["gates"].as_str().unwrap_or("").to_string(),
            }
        })
        .collect()
}

/// The process environment is shared by the tests of a binary: tests that run phases in this
/// process (their commands inherit its environment), or that look programs up on its PATH while
/// another test may have pointed it into a sandbox, hold this lock.
pub static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn env_lock() -> std::sync::MutexGuard<'static, ()> {
    ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets a sandbox's variables for this process until dropped, holding [`ENV_LOCK`]; variables
/// that would leak in from outside (any `RAYDEPLOY_FAKE_*`, `KUBECONFIG`, `ARM_SUBSCRIPTION_ID`,
/// `DOCKER_HOST`, `RAYDEPLOY_COMMAND_TIMEOUT`) are unset unless the sandbox sets them. Dropping
/// it restores what was there.
pub struct EnvGuard {
    _lock: std::sync::MutexGuard<'static, ()>,
    saved: Vec<(String, Option<std::ffi::OsString>)>,
}

impl EnvGuard {
    pub fn new(env: &KubeEnv) -> Self {
        let lock = env_lock();
        let mut keys: Vec<String> = env.vars.keys().cloned().collect();
        for k in
            ["ARM_SUBSCRIPTION_ID", "KUBECONFIG", "RAYDEPLOY_FAKE_FAULTS", "RAYDEPLOY_COMMAND_TIMEOUT", "DOCKER_HOST"]
        {
            keys.push(k.to_string());
        }
        keys.extend(std::env::vars().map(|(k, _)| k).filter(|k| k.starts_with("RAYDEPLOY_FAKE_")));
        keys.sort();
        keys.dedup();
        let saved = keys.iter().map(|k| (k.clone(), std::env::var_os(k))).collect();
        for k in &keys {
            // SAFETY: every test of the binary holds ENV_LOCK while the environment is changed
            // or read (by the commands the phases start).
            unsafe {
                match env.vars.get(k) {
                    Some(v) => std::env::set_var(k, v),
                    None => std::env::remove_var(k),
                }
            }
        }
        EnvGuard { _lock: lock, saved }
    }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        for (k, v) in &self.saved {
            // SAFETY: ENV_LOCK is still held.
            unsafe {
                match v {
                    Some(v) => std::env::set_var(k, v),
                    None => std::env::remove_var(k),
                }
            }
        }
    }
}

/// Copies `from` into `to`, leaving out top-level entries named in `skip`.
pub fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let dest = to.join(&name);
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest, &[]);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A sandbox for the Azure phases (preflight, infra, credentials): the terraform, az and kubelogin
/// fakes, and docker, helm and kubectl stand-ins that only answer `version`.
pub fn azure_sandbox(spec: &str) -> KubeEnv {
    // Looks up python3 on PATH: not while another test has PATH pointing into its sandbox.
    let _lock = env_lock();
    let env = KubeEnv::new(spec, &["terraform", "az", "kubelogin"]);
    env.add_script("docker", r#"[ "$1" = version ] && echo 27.5.1 && exit 0; echo "docker stand-in: $*" >&2; exit 1"#);
    env.add_script("helm", r#"[ "$1" = version ] && echo v3.16.2+g13654a5 && exit 0; exit 1"#);
    env.add_script(
        "kubectl",
        r#"[ "$1" = version ] && echo '{"clientVersion":{"gitVersion":"v1.31.2"}}' && exit 0; exit 1"#,
    );
    env
}
