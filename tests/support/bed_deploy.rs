//! A project folder for driving the real `raydeploy` binary against the Kubernetes test bed
//! (tests/support/testbed.rs): the spec, the KubeRay charts copied into the spec's folder
//! (`vendor/kuberay`, the bed has no network), and a `bin` folder that is the whole PATH: `helm`
//! (the bed's helm3 or helm4) and `kubectl` behind thin recording wrappers (a `/bin/sh` script that
//! appends its argv to a call log in the format of tests/support/kube_env.rs, then `exec`s the real
//! program), and a docker stand-in for the image phases. raydeploy runs inside the bed's network
//! namespace (`nsenter`), with `KUBECONFIG` at the bed's admin kubeconfig.
//!
//! [`BedDeploy::kill_helm_at`] arms the helm wrapper to kill the real helm (SIGKILL) in the middle
//! of its next `upgrade` of a release, as soon as the release's Helm storage Secret shows the
//! pending status Helm writes before it changes anything: what a Ctrl-C'd terminal, an OOM kill
//! or a lost CI runner leaves behind.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

pub use crate::kube_env::{Call, copy_tree};
use crate::kube_env::{NAME_ONLY_DOCKER, NAME_ONLY_DOCKER_NEEDS, python, read_calls, which};
use crate::testbed::{NodeSpec, TestBed, shared};

/// Run by the helm wrapper instead of the real helm when a kill is armed (argv: the real helm,
/// kubectl, the arm file, the marker to write once killed, then helm's arguments). For an upgrade
/// of the armed release it starts the real helm, polls the release's Helm storage Secrets (labels `owner=helm`, `name`, `status`)
/// until one has the armed status, then kills helm with SIGKILL and exits as helm would (137).
const KILLER: &str = r#"import os, signal, subprocess, sys, time
helm, kubectl, arm, marker, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
ns, release, status = open(arm).read().split()
if release not in args:
    os.execv(helm, [helm] + args)
os.remove(arm)
p = subprocess.Popen([helm] + args)
sel = "owner=helm,name=%s,status=%s" % (release, status)
while p.poll() is None:
    found = subprocess.run([kubectl, "get", "secrets", "-n", ns, "-l", sel, "-o", "name"],
                           capture_output=True, text=True).stdout.strip()
    if found:
        p.send_signal(signal.SIGKILL)
        p.wait()
        with open(marker, "w") as f:
            f.write(found + "\n")
        sys.exit(137)
    time.sleep(0.1)
sys.exit(p.returncode)
"#;

pub struct BedDeploy {
    pub tmp: tempfile::TempDir,
    pub spec_dir: PathBuf,
    pub bin: PathBuf,
    pub vars: BTreeMap<String, String>,
    pub bed: &'static TestBed,
    /// `helm3` or `helm4`.
    pub helm: String,
}

fn program(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| panic!("{name} is not installed"))
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
        let py = python();
        let record = |tool: &str| me.record_line(tool);
        let real_helm = bed.bin.join(helm);
        let kubectl = bed.bin.join("kubectl");
        std::fs::write(me.tmp.path().join("kill-helm.py"), KILLER).unwrap();
        me.script(
            "helm",
            &format!(
                "{}\nif [ \"$1\" = upgrade ] && [ -f '{arm}' ]; then\n  \
                 exec '{py}' '{killer}' '{real}' '{kubectl}' '{arm}' '{marker}' \"$@\"\nfi\nexec '{real}' \"$@\"",
                record("helm"),
                arm = me.arm_path().display(),
                py = py.display(),
                killer = me.tmp.path().join("kill-helm.py").display(),
                real = real_helm.display(),
                kubectl = kubectl.display(),
                marker = me.killed_path().display(),
            ),
        );
        me.script("kubectl", &format!("{}\nexec '{}' \"$@\"", record("kubectl"), kubectl.display()));
        me.script("docker", NAME_ONLY_DOCKER);
        for t in NAME_ONLY_DOCKER_NEEDS {
            std::os::unix::fs::symlink(program(t), me.bin.join(t)).unwrap();
        }
        let mut me = me;
        let home = me.tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        me.vars.insert("PATH".into(), me.bin.display().to_string());
        me.vars.insert("HOME".into(), home.display().to_string());
        me.vars.insert("KUBECONFIG".into(), bed.kubeconfig.display().to_string());
        me.vars.insert("RAYDEPLOY_FAKE_STATE".into(), me.tmp.path().join("stand-ins").display().to_string());
        me.vars.insert("RAYDEPLOY_POLL_SECONDS".into(), "0.5".into());
        me.vars.insert("NO_COLOR".into(), "1".into());
        me.vars.insert("CI".into(), "1".into());
        me
    }

    /// Puts the Azure CLI stand-in (tests/fakes/az: `account show`, `keyvault secret show` of
    /// `$RAYDEPLOY_FAKE_KV_<VAULT>_<NAME>`) on PATH, recording into the same call log: Key Vault
    /// cannot be had here.
    pub fn add_az(&mut self) {
        let fakes = crate::kube_env::root().join("tests/fakes");
        std::os::unix::fs::symlink(python(), self.bin.join("python3")).unwrap();
        for f in ["az", "_fake.py"] {
            std::os::unix::fs::symlink(fakes.join(f), self.bin.join(f)).unwrap();
        }
        let log = self.log_path().display().to_string();
        self.set("RAYDEPLOY_FAKE_LOG", log);
    }

    /// The shell line a wrapper script starts with: appends `{"tool": TOOL, "argv": [...]}` for
    /// `"$@"` to the call log, the format [`crate::kube_env::read_calls`] reads.
    pub fn record_line(&self, tool: &str) -> String {
        format!(
            "'{}' -c 'import json, sys; open(sys.argv[1], \"a\").write(json.dumps({{\"tool\": sys.argv[2], \
             \"argv\": sys.argv[3:]}}) + \"\\n\")' '{}' {tool} \"$@\"",
            python().display(),
            self.log_path().display()
        )
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

    fn arm_path(&self) -> PathBuf {
        self.tmp.path().join("kill-helm")
    }

    fn killed_path(&self) -> PathBuf {
        self.tmp.path().join("helm-killed")
    }

    /// Arms the helm wrapper: the next `helm upgrade` of `release` is killed with SIGKILL once
    /// the release has a Helm storage Secret in `ns` with status `status` (`pending-install`,
    /// `pending-upgrade`). One shot.
    pub fn kill_helm_at(&self, ns: &str, release: &str, status: &str) {
        let _ = std::fs::remove_file(self.killed_path());
        std::fs::write(self.arm_path(), format!("{ns} {release} {status}\n")).unwrap();
    }

    /// The Helm storage Secret the armed wrapper saw before it killed helm, if it did.
    pub fn helm_killed(&self) -> Option<String> {
        std::fs::read_to_string(self.killed_path()).ok().map(|s| s.trim().to_string())
    }

    pub fn state_dir(&self, deployment: &str) -> PathBuf {
        self.spec_dir.join(".raydeploy").join(deployment)
    }

    /// Every recorded helm and kubectl call so far.
    pub fn calls(&self) -> Vec<Call> {
        read_calls(&self.log_path())
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
        let mut c = Command::new(program("nsenter"));
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

/// How long the tests wait for a condition of the bed, generously (a loaded 2-core machine).
pub const WAIT: Duration = Duration::from_secs(180);

/// A status condition of an object by type.
pub fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

/// A kubernetes-target spec for deployment `name` on the bed (namespace `name`): its registry,
/// Ray 2.52 on Python 3.12, the KubeRay charts from the copied chart folder (`vendor/kuberay`), a
/// head of 1 CPU and 2Gi, the worker groups `workers` (YAML list items, indented for
/// `workerGroups:`), then `extra` (top-level keys).
pub fn bed_spec(name: &str, workers: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: {name}
target: kubernetes

kubernetes:
  registry: 127.0.0.1:5999/acme/ray-{name}

image:
  rayVersion: "2.52.0"
  python: "3.12"

kuberay:
  charts: vendor/kuberay

cluster:
  namespace: {name}
  head: {{ cpu: 1, memory: 2Gi }}
  workerGroups:
{workers}
{extra}"#
    )
}

/// The shared bed with the KubeRay operator running, and for deployment `name` a CPU node
/// (`cpu` CPUs) and a GPU node tainted like the GPU groups' tolerations expect.
pub fn operator_bed(name: &str, cpu: &str) -> &'static TestBed {
    let bed = shared();
    // The operator watches the KubeRay CRDs, so they come first (without raydeploy's label: its
    // crds phase still applies them). Waited for here by condition: a `kubectl wait` right after
    // the first apply can find no `status.conditions` yet.
    let crds = crate::testbed::kuberay_data().join("charts/kuberay-operator/crds");
    bed.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &crds.display().to_string()]);
    for crd in ["rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io", "raycronjobs.ray.io"] {
        bed.wait_for(&format!("CRD {crd} to be Established"), WAIT, |note| {
            let c = bed.get_json(&["crd", crd]);
            *note = c["status"].to_string();
            condition(&c, "Established").is_some_and(|c| c["status"] == "True").then_some(())
        });
    }
    bed.start_operator();
    bed.add_node(&NodeSpec::new(&format!("{name}-cpu")).cpu(cpu).memory("32Gi").label("raydeploy.test/pool", "cpu"));
    bed.add_node(
        &NodeSpec::new(&format!("{name}-gpu"))
            .cpu("8")
            .memory("32Gi")
            .gpus(1)
            .label("raydeploy.test/pool", "gpu")
            .taint("nvidia.com/gpu", "present", "NoSchedule"),
    );
    bed
}

/// Every file under `dir` (recursively) with its path.
pub fn files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, String::from_utf8_lossy(&b).into_owned()));
        }
    }
    out
}

/// The state of a deployment (`.raydeploy/<name>/state.json`).
pub fn state(p: &BedDeploy, name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p.state_dir(name).join("state.json")).unwrap()).unwrap()
}
