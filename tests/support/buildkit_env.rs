//! A private BuildKit for tests: a `buildkitd` that the test starts and owns, and a docker CLI
//! configuration of its own in which that daemon is the current buildx builder.
//!
//! - [`BuildKit::start`]: `buildkitd` (built by `tests/testbed/build.sh` at `BUILDKIT` of
//!   `tests/testbed/versions`) with the OCI worker (runc), host networking for `RUN` steps, its
//!   state under a temp folder (`--root`), listening only on a unix socket in that folder (no TCP
//!   port). It is waited for by condition (`buildctl debug workers` lists a worker) and stopped on
//!   drop by its PID (SIGTERM, SIGKILL after a bounded wait; SIGKILL too when the test process
//!   dies, as its parent-death signal).
//! - The docker CLI configuration ([`BuildKit::docker_config`], for `DOCKER_CONFIG`) holds the
//!   buildx plugin (`cli-plugins/docker-buildx`, built at `BUILDX`) and a builder of the `remote`
//!   driver for that socket, made current with `docker buildx create --use`: `docker build` (and
//!   `docker buildx`) run with it go to this daemon, and nothing outside the temp folder changes.
//!
//! Registries: BuildKit talks plain HTTP to loopback registries (`localhost`, `127.0.0.0/8`,
//! `::1`) unless its configuration says otherwise, as the engine does, so the private registry of
//! `docker_env.rs` on 127.0.0.1 needs no `[registry]` entry. A fresh `BuildKit` has an empty
//! state folder: no layer and no build cache, a fresh CI runner's builder.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long buildkitd may take to answer, and to stop: a 2-core machine under load.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Where `tests/testbed/build.sh` links its programs: `$RAYDEPLOY_TESTBED_BIN`, else
/// `~/.cache/raydeploy/testbed/bin` (as `testbed.rs` reads it).
pub fn bin_dir() -> PathBuf {
    std::env::var_os("RAYDEPLOY_TESTBED_BIN").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/raydeploy/testbed/bin")
    })
}

/// A program `build.sh buildkit buildx` builds: `buildkitd`, `buildctl`, `docker-buildx`.
pub fn program(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing ($RAYDEPLOY_TESTBED_BIN): build BuildKit and buildx with \
         `bash tests/testbed/build.sh buildkit buildx` (.ci/run does)",
        p.display()
    );
    p
}

/// runc for the OCI worker: on PATH, else Debian's /usr/sbin/runc.
fn runc() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("runc")).find(|p| p.is_file()))
        .or_else(|| Some(PathBuf::from("/usr/sbin/runc")).filter(|p| p.is_file()))
        .expect("runc is installed (Debian: apt-get install runc, which docker.io brings)")
}

/// A private buildkitd and a docker CLI configuration whose current builder it is.
pub struct BuildKit {
    dir: tempfile::TempDir,
    child: Child,
    /// `unix://…/buildkitd.sock`
    pub addr: String,
    /// The docker CLI configuration folder (`DOCKER_CONFIG`): the buildx plugin and the builder.
    pub docker_config: PathBuf,
    /// The buildx builder's name.
    pub builder: String,
    /// The engine `DOCKER_HOST` the builder was made current for (`--load` loads into it).
    pub docker_host: String,
}

impl BuildKit {
    /// Starts buildkitd, waits until it lists a worker, and makes it the current buildx builder
    /// (driver `remote`) of a fresh docker configuration, for the engine at `docker_host`.
    pub fn start(docker_host: &str) -> BuildKit {
        let buildkitd = program("buildkitd");
        let buildctl = program("buildctl");
        let buildx = program("docker-buildx");
        let dir = tempfile::Builder::new().prefix("rd-buildkit").tempdir().expect("tempdir");
        let sock = dir.path().join("buildkitd.sock");
        let addr = format!("unix://{}", sock.display());
        let log = std::fs::File::create(dir.path().join("buildkitd.log")).expect("buildkitd.log");
        let mut cmd = Command::new(&buildkitd);
        cmd.arg("--addr")
            .arg(&addr)
            .arg("--root")
            .arg(dir.path().join("root"))
            .args(["--oci-worker=true", "--containerd-worker=false", "--oci-worker-net=host"])
            .arg("--oci-worker-binary")
            .arg(runc())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {}: {e}", buildkitd.display()));
        let docker_config = dir.path().join("docker-config");
        let builder = format!("rd-bk-{}", child.id());
        let mut me = BuildKit { dir, child, addr, docker_config, builder, docker_host: docker_host.to_string() };

        // Ready when buildctl reaches it and it lists a worker.
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("buildkitd exited ({status}) before answering; its log:\n{}", me.log());
            }
            let out = Command::new(&buildctl).arg("--addr").arg(&me.addr).args(["debug", "workers"]).output();
            if let Ok(o) = &out
                && o.status.success()
                && String::from_utf8_lossy(&o.stdout).lines().count() > 1
            {
                break;
            }
            assert!(
                t0.elapsed() < START_TIMEOUT,
                "buildkitd did not answer on {} within {START_TIMEOUT:?}; buildctl: {out:?}; its log:\n{}",
                me.addr,
                me.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }

        // The buildx plugin, and the builder, in a configuration of this BuildKit only.
        let plugins = me.docker_config.join("cli-plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        std::os::unix::fs::symlink(&buildx, plugins.join("docker-buildx")).unwrap();
        let name = me.builder.clone();
        let addr = me.addr.clone();
        me.docker(&["buildx", "create", "--name", &name, "--driver", "remote", "--use", &addr]);
        let inspect = me.docker(&["buildx", "inspect", "--bootstrap"]);
        let text = String::from_utf8_lossy(&inspect.stdout);
        let value = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        assert!(
            value("Name") == name && value("Driver") == "remote" && value("Status") == "running",
            "the builder {name} (driver remote) is not current or not running:\n{text}"
        );
        me
    }

    /// buildkitd's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("buildkitd.log")).unwrap_or_default()
    }

    /// The environment that sends `docker build` to this BuildKit: `DOCKER_CONFIG` and
    /// `DOCKER_HOST` (the engine `--load` loads into).
    pub fn vars(&self) -> [(&'static str, String); 2] {
        [("DOCKER_CONFIG", self.docker_config.display().to_string()), ("DOCKER_HOST", self.docker_host.clone())]
    }

    /// Runs `docker args` with [`BuildKit::vars`], panicking with its output when it fails.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_in(args, None)
    }

    /// [`BuildKit::docker`] in `cwd`.
    pub fn docker_in(&self, args: &[&str], cwd: Option<&Path>) -> Output {
        let mut c = Command::new("docker");
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        c.args(args).env("DOCKER_CLI_HINTS", "false").env_remove("DOCKER_BUILDKIT").env_remove("BUILDX_BUILDER");
        for (k, v) in self.vars() {
            c.env(k, v);
        }
        let out = c.output().expect("run docker");
        assert!(
            out.status.success(),
            "docker {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The daemon's state folder (`--root`).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

/// Whether a process is gone (or a zombie of ours not yet reaped).
fn gone(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(Some(_)) | Err(_))
}

impl Drop for BuildKit {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the PID this value spawned and has not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t0 = Instant::now();
        while !gone(&mut self.child) && t0.elapsed() < STOP_GRACE {
            std::thread::sleep(Duration::from_millis(100));
        }
        if !gone(&mut self.child) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Snapshots a daemon that did not shut down cleanly left mounted would make the temp
        // folder undeletable: unmount whatever remains below it.
        unmount_below(self.dir.path());
    }
}

fn unmount_below(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> =
        mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|p| p.starts_with(&prefix)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
}
