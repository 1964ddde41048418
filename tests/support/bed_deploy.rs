//! A project folder for driving the real `raydeploy` binary against the Kubernetes test bed
//! (tests/support/testbed.rs): the spec, the KubeRay charts copied into the spec's folder
//! (`vendor/kuberay`, the bed has no network), and a `bin` folder that is the whole PATH: `helm`
//! (a link to the bed's helm3 or helm4) and `kubectl` behind thin recording wrappers (a `/bin/sh`
//! script that appends its argv to a log, then `exec`s the real program), and a docker stand-in
//! for the image phases. raydeploy runs inside the bed's network namespace (`nsenter`), with
//! `KUBECONFIG` at the bed's admin kubeconfig.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::testbed::TestBed;

/// A docker that builds and pushes by name only: local images and registry tags are marker files
/// in `$RAYDEPLOY_DOCKER_STATE`; a push prints a fixed digest.
const DOCKER: &str = r#"S="$RAYDEPLOY_DOCKER_STATE"; mkdir -p "$S"
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

/// One recorded call of helm or kubectl.
#[derive(Debug, Clone)]
pub struct Call {
    pub tool: String,
    pub argv: Vec<String>,
}

impl Call {
    pub fn line(&self) -> String {
        format!("{} {}", self.tool, self.argv.join(" "))
    }

    /// A call that changes the cluster: what a no-op redeploy must not make.
    pub fn mutating(&self) -> bool {
        let a: Vec<&str> = self.argv.iter().map(String::as_str).filter(|a| !a.starts_with('-')).collect();
        let first = a.first().copied().unwrap_or("");
        match self.tool.as_str() {
            "helm" => matches!(first, "upgrade" | "install" | "uninstall" | "delete" | "rollback"),
            "kubectl" => matches!(
                first,
                "apply" | "create" | "delete" | "replace" | "patch" | "label" | "annotate" | "scale" | "edit"
            ),
            _ => false,
        }
    }
}

pub struct BedDeploy {
    pub tmp: tempfile::TempDir,
    pub spec_dir: PathBuf,
    pub bin: PathBuf,
    pub vars: BTreeMap<String, String>,
    pub bed: &'static TestBed,
    /// `helm3` or `helm4`.
    pub helm: String,
}

fn which(program: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").expect("PATH"))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed"))
}

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

impl BedDeploy {
    pub fn new(bed: &'static TestBed, helm: &str, spec: &str) -> Self {
        let tmp = tempfile::Builder::new().prefix("rd-beddeploy").tempdir().expect("tempdir");
        let spec_dir = tmp.path().join("project");
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        copy_tree(&crate::testbed::kuberay_data().join("charts"), &spec_dir.join("vendor/kuberay"), &[]);
        std::fs::write(spec_dir.join("raydeploy.yaml"), spec).unwrap();
        let me = BedDeploy { spec_dir, bin, vars: BTreeMap::new(), bed, helm: helm.into(), tmp };
        let log = me.log_path();
        for (tool, real) in [("helm", bed.bin.join(helm)), ("kubectl", bed.bin.join("kubectl"))] {
            me.script(
                tool,
                &format!(
                    "{{ printf '%s' '{tool}'; for a in \"$@\"; do printf '\\t%s' \"$a\"; done; printf '\\n'; }} >> '{}'\n\
                     exec '{}' \"$@\"",
                    log.display(),
                    real.display()
                ),
            );
        }
        me.script("docker", DOCKER);
        for t in ["mkdir", "touch", "tr"] {
            std::os::unix::fs::symlink(which(t), me.bin.join(t)).unwrap();
        }
        let mut me = me;
        let home = me.tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        me.vars.insert("PATH".into(), me.bin.display().to_string());
        me.vars.insert("HOME".into(), home.display().to_string());
        me.vars.insert("KUBECONFIG".into(), bed.kubeconfig.display().to_string());
        me.vars.insert("RAYDEPLOY_DOCKER_STATE".into(), me.tmp.path().join("docker").display().to_string());
        me.vars.insert("RAYDEPLOY_POLL_SECONDS".into(), "0.5".into());
        me.vars.insert("NO_COLOR".into(), "1".into());
        me.vars.insert("CI".into(), "1".into());
        me
    }

    fn script(&self, name: &str, body: &str) {
        let p = self.bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    pub fn set(&mut self, k: &str, v: impl Into<String>) -> &mut Self {
        self.vars.insert(k.into(), v.into());
        self
    }

    pub fn write_spec(&self, text: &str) {
        std::fs::write(self.spec_dir.join("raydeploy.yaml"), text).unwrap();
    }

    pub fn log_path(&self) -> PathBuf {
        self.tmp.path().join("calls.log")
    }

    pub fn state_dir(&self, deployment: &str) -> PathBuf {
        self.spec_dir.join(".raydeploy").join(deployment)
    }

    /// Every recorded helm and kubectl call so far.
    pub fn calls(&self) -> Vec<Call> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut f = l.split('\t').map(String::from);
                Call { tool: f.next().unwrap_or_default(), argv: f.collect() }
            })
            .collect()
    }

    pub fn clear_calls(&self) {
        let _ = std::fs::remove_file(self.log_path());
    }

    pub fn mutating(&self) -> Vec<String> {
        self.calls().iter().filter(|c| c.mutating()).map(Call::line).collect()
    }

    /// `raydeploy ARGS…` started in the background (see [`BedDeploy::run`]).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("raydeploy runs")
    }

    /// `raydeploy ARGS…` inside the bed's network namespace, with only this project's environment.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("raydeploy runs")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(which("nsenter"));
        c.args(["-t", &self.bed.netns_pid().to_string(), "-n", "--"])
            .arg(assert_cmd::cargo::cargo_bin("raydeploy"))
            .args(args)
            .env_clear()
            .current_dir(&self.spec_dir)
            .stdin(Stdio::null());
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}
