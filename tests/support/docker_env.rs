//! A private Docker engine and a private image registry for tests, both stopped on drop.
//!
//! - [`Engine`]: `tests/support/dockerd.sh` (its own socket, data root and exec root in a temp
//!   folder; no bridge, no iptables). Point a command at it with `DOCKER_HOST` = [`Engine::host`].
//! - [`Registry`]: `tests/support/registry.sh`, Debian's `docker-registry` on 127.0.0.1 at a free
//!   port, storage in a temp folder. The engine pushes to it over plain HTTP (the engine treats
//!   127.0.0.0/8 as insecure by default). [`Registry::digest`] reads a tag's manifest digest
//!   straight from the registry API, independently of docker.
//! - [`Engine::build_base`]: a busybox stand-in for `rayproject/ray:<tag>` built inside the
//!   engine, so building a rendered Dockerfile pulls nothing: a `ray` user, and `apt-get` / `pip`
//!   scripts that only record their arguments ([`Engine::recorded`]).
//! - [`DockerEnv`]: both, for tests that build and push.
//!
//! Both scripts install what is missing with apt-get (docker.io, busybox-static,
//! docker-registry); starting dockerd needs root. Failures panic with the script's stderr.
//!
//! ```ignore
//! #[path = "support/docker_env.rs"]
//! mod docker_env;
//! let env = docker_env::DockerEnv::start();
//! env.engine.build_base("rayproject/ray", "2.52.0-py312");
//! Command::new("raydeploy").env("DOCKER_HOST", &env.engine.host) /* registry: env.registry.addr */;
//! ```
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support").join(name)
}

/// The `KEY=value` lines a start script prints.
fn field(stdout: &str, key: &str) -> Option<String> {
    stdout.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).map(str::to_string)
}

/// Waits up to 30 s for a process to exit.
fn wait_gone(pid: u32) {
    for _ in 0..120 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The private engine; stops it on drop when this test started it.
pub struct Engine {
    dir: tempfile::TempDir,
    /// `unix://…/docker.sock`, for `DOCKER_HOST`.
    pub host: String,
    pid: Option<u32>,
}

impl Engine {
    pub fn start() -> Engine {
        let dir = tempfile::Builder::new().prefix("rd-dockerd").tempdir().expect("tempdir");
        let out = Command::new("bash")
            .arg(script("dockerd.sh"))
            .arg("start")
            .arg(dir.path())
            .output()
            .expect("run dockerd.sh");
        assert!(
            out.status.success(),
            "could not start a private Docker engine (tests/support/dockerd.sh start): {}\n\
             CI needs root and `apt-get install -y docker.io busybox-static`",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let host = field(&stdout, "DOCKER_HOST").expect("DOCKER_HOST line");
        let pid = field(&stdout, "DOCKERD_PID").filter(|p| !p.is_empty()).map(|p| p.parse().expect("pid"));
        Engine { dir, host, pid }
    }

    /// `docker` against this engine, classic builder (the engine may have no buildx).
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", &self.host).env("DOCKER_BUILDKIT", "0").env("DOCKER_CLI_HINTS", "false");
        c
    }

    /// Runs `docker args` (in `cwd`), panicking with its output when it fails.
    pub fn run(&self, args: &[&str], cwd: Option<&Path>) -> Output {
        let mut c = self.docker();
        c.args(args);
        if let Some(d) = cwd {
            c.current_dir(d);
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

    /// Whether the engine has `image` (`docker image inspect` succeeds).
    pub fn has_image(&self, image: &str) -> bool {
        self.docker().args(["image", "inspect", image]).output().expect("run docker").status.success()
    }

    /// Removes `image` from the engine (untag; layers another tag uses stay).
    pub fn remove_image(&self, image: &str) {
        self.run(&["image", "rm", "--force", image], None);
    }

    /// stdout of a command run in a throwaway container of `image`.
    pub fn exec(&self, image: &str, cmd: &[&str]) -> String {
        let mut args = vec!["run", "--rm", "--network=none", image];
        args.extend_from_slice(cmd);
        String::from_utf8(self.run(&args, None).stdout).expect("utf-8")
    }

    /// Builds the busybox stand-in for `<base>:<tag>` (the tag is written to /etc/base-tag).
    pub fn build_base(&self, base: &str, tag: &str) {
        let ctx = tempfile::tempdir().unwrap();
        let r = ctx.path().join("root");
        for d in ["bin", "usr/bin", "usr/local/bin", "etc", "home/ray", "tmp", "var/log/recorded", "var/lib/apt/lists"]
        {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("busybox-static installed");
        std::fs::copy(busybox, r.join("bin/busybox")).unwrap();
        std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nray:x:1000:100::/home/ray:/bin/sh\n")
            .unwrap();
        std::fs::write(r.join("etc/group"), "root:x:0:\nusers:x:100:ray\n").unwrap();
        std::fs::write(r.join("var/lib/apt/lists/stale"), "").unwrap();
        std::fs::write(r.join("usr/bin/apt-get"), RECORDER.replace("NAME", "apt-get")).unwrap();
        std::fs::write(r.join("usr/local/bin/pip"), RECORDER.replace("NAME", "pip")).unwrap();
        std::fs::write(
            ctx.path().join("Dockerfile"),
            "FROM scratch\n\
             COPY root/ /\n\
             ENV PATH=/usr/local/bin:/usr/bin:/bin\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
             ARG TAG\n\
             RUN chmod 755 /usr/bin/apt-get /usr/local/bin/pip && chmod 1777 /tmp /var/log/recorded \
                 && chown ray:users /home/ray && echo \"$TAG\" > /etc/base-tag\n\
             USER ray\n\
             WORKDIR /home/ray\n",
        )
        .unwrap();
        let image = format!("{base}:{tag}");
        self.run(
            &["build", "--pull=false", "--network=none", "--build-arg", &format!("TAG={tag}"), "-t", &image, "."],
            Some(ctx.path()),
        );
    }

    /// The random ids of the runs of `tool` (`apt-get`, `pip`) recorded in `image`, one per call.
    pub fn runs(&self, image: &str, tool: &str) -> Vec<String> {
        self.exec(image, &["cat", &format!("/var/log/recorded/{tool}.runs")]).lines().map(str::to_string).collect()
    }

    /// The recorded invocations of `tool` (`apt-get`, `pip`) in `image`: one argument list per call.
    pub fn recorded(&self, image: &str, tool: &str) -> Vec<Vec<String>> {
        let text = self.exec(image, &["cat", &format!("/var/log/recorded/{tool}")]);
        let mut calls = vec![];
        let mut cur = vec![];
        for line in text.lines() {
            if line == "--end--" {
                calls.push(std::mem::take(&mut cur));
            } else {
                cur.push(line.to_string());
            }
        }
        calls
    }
}

/// Records one invocation's arguments, one per line, closed by a `--end--` line; adds a random
/// id to `NAME.runs` (two layers with the same ids are one run of the step, one cached); and says
/// so on stdout (`NAME stand-in ran: ARGS`), which shows in a build's output when the step runs.
const RECORDER: &str = "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> /var/log/recorded/NAME; done\n\
echo --end-- >> /var/log/recorded/NAME\ncat /proc/sys/kernel/random/uuid >> /var/log/recorded/NAME.runs\n\
echo \"NAME stand-in ran: $*\"\n";

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            wait_gone(pid);
            // Layers left mounted by a dockerd that did not shut down cleanly would make the
            // temp folder undeletable; unmount whatever remains below it.
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "grep -o ' {}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                    self.dir.path().display()
                ))
                .status();
        }
    }
}

/// The private registry on 127.0.0.1; stopped on drop.
pub struct Registry {
    dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`
    pub addr: String,
    pid: u32,
}

impl Registry {
    /// Starts on a free port (a few ports are tried: another process may take one between the
    /// check and the registry's bind).
    pub fn start() -> Registry {
        let dir = tempfile::Builder::new().prefix("rd-registry").tempdir().expect("tempdir");
        let mut last = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let out = Command::new("bash")
                .arg(script("registry.sh"))
                .arg("start")
                .arg(dir.path())
                .arg(port.to_string())
                .output()
                .expect("run registry.sh");
            if out.status.success() {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let addr = field(&stdout, "REGISTRY").expect("REGISTRY line");
                let pid = field(&stdout, "REGISTRY_PID").expect("REGISTRY_PID line").parse().expect("pid");
                return Registry { dir, addr, pid };
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        panic!(
            "could not start a private registry (tests/support/registry.sh start): {last}\n\
             CI needs `apt-get install -y docker-registry`"
        );
    }

    /// One HTTP/1.0 request to the registry: (status, headers lowercased, body).
    fn request(&self, method: &str, path: &str) -> (u16, Vec<(String, String)>, String) {
        let mut s = TcpStream::connect(&self.addr).expect("connect to the registry");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let accept = "application/vnd.docker.distribution.manifest.v2+json, \
                      application/vnd.docker.distribution.manifest.list.v2+json, \
                      application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";
        write!(s, "{method} {path} HTTP/1.0\r\nHost: {}\r\nAccept: {accept}\r\n\r\n", self.addr).unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read the registry's answer");
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let mut lines = head.lines();
        let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers, body.to_string())
    }

    /// The manifest digest the registry serves for `<repository>:<tag>` (`repository` without
    /// the registry host), or `None` when the tag is not there.
    pub fn digest(&self, repository: &str, tag: &str) -> Option<String> {
        let (status, headers, _) = self.request("HEAD", &format!("/v2/{repository}/manifests/{tag}"));
        match status {
            200 => headers.into_iter().find(|(k, _)| k == "docker-content-digest").map(|(_, v)| v),
            404 => None,
            s => panic!("HEAD manifest {repository}:{tag}: HTTP {s}"),
        }
    }

    /// The tags of `repository` (empty when it does not exist).
    pub fn tags(&self, repository: &str) -> Vec<String> {
        let (status, _, body) = self.request("GET", &format!("/v2/{repository}/tags/list"));
        if status == 404 {
            return vec![];
        }
        assert_eq!(status, 200, "tags of {repository}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("tags JSON");
        let mut tags: Vec<String> =
            v["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string)).collect();
        tags.sort();
        tags
    }

    /// Deletes the manifest `<repository>:<tag>` points at (the registry allows deletes).
    pub fn delete(&self, repository: &str, tag: &str) {
        let digest = self.digest(repository, tag).unwrap_or_else(|| panic!("{repository}:{tag} is not there"));
        let (status, _, body) = self.request("DELETE", &format!("/v2/{repository}/manifests/{digest}"));
        assert_eq!(status, 202, "delete {repository}@{digest}: {body}");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script("registry.sh")).arg("stop").arg(self.dir.path()).status();
        wait_gone(self.pid);
    }
}

/// A private engine and a private registry.
pub struct DockerEnv {
    pub registry: Registry,
    pub engine: Engine,
}

impl DockerEnv {
    pub fn start() -> DockerEnv {
        DockerEnv { registry: Registry::start(), engine: Engine::start() }
    }

    /// `base:tag` stand-ins for every tag in the engine.
    pub fn with_base(self, base: &str, tags: &[&str]) -> DockerEnv {
        for t in tags {
            self.engine.build_base(base, t);
        }
        self
    }
}
