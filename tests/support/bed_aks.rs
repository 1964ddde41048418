//! Target `aks` against the Kubernetes test bed: a [`BedDeploy`] project (tests/support/bed_deploy.rs:
//! real helm and the bed's kubectl behind recording wrappers, raydeploy inside the bed's network
//! namespace) with the Azure stand-ins that stay (Azure cannot be reached from here):
//!
//! - `terraform`: tests/fakes/terraform in its test bed mode: `apply` makes kwok Nodes shaped like
//!   the rendered node pools (tests/testbed/aks_nodes.py), `destroy` deletes them;
//! - `az`: tests/fakes/az, whose `aks get-credentials` writes the bed's kubeconfig (renamed as AKS
//!   names it), and whose `acr repository show` answers from the private registry;
//! - `docker`: the real Docker CLI against a private engine and registry
//!   (tests/support/docker_env.rs). Both listen outside the bed's network namespace (the engine
//!   on a Unix socket, the registry on 127.0.0.1 of the test's namespace), so the wrapper runs the
//!   CLI in the test process's network namespace (`nsenter --net`); it records its argv like the
//!   helm and kubectl wrappers. The terraform stand-in reports the registry as the ACR's login
//!   server, so the image is pushed there.
//!
//! The KubeRay charts (`kuberay.charts: vendor/kuberay`) and NVIDIA's device plugin chart
//! (`gpu.charts: vendor/nvidia`) are copies in the spec's folder: the bed has no network.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::bed_deploy::{BedDeploy, copy_tree};
use crate::docker_env::DockerEnv;
use crate::testbed::TestBed;

/// The subscription the fake az reports.
pub const SUBSCRIPTION: &str = "11111111-2222-3333-4444-555555555555";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn which(program: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").expect("PATH"))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed"))
}

/// The python3 the stand-ins run with, past any shim.
fn python() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args(["-c", "import os, sys; print(os.path.realpath(sys.executable))"])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "python3 is needed for the Azure stand-ins");
    PathBuf::from(String::from_utf8(out.stdout).expect("utf-8").trim())
}

fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `az acr repository show` from the private registry (a tag's digest, or an error when it is
/// missing, as the ACR answers); everything else goes to the fake az.
const AZ: &str = r#"if [ "$1 $2 $3" = "acr repository show" ]; then
  image=""
  while [ $# -gt 0 ]; do [ "$1" = --image ] && image=$2; shift; done
  out=$(docker manifest inspect --insecure --verbose "REGISTRY/$image" 2>/dev/null) \
    || { echo "ERROR: manifest tagged by \"${image#*:}\" is not found" >&2; exit 1; }
  printf '%s' "$out" | python3 -c 'import json, sys; print(json.dumps({"name": sys.argv[1], "digest": json.load(sys.stdin)["Descriptor"]["digest"]}))' "${image#*:}"
  exit 0
fi
exec FAKE_AZ "$@""#;

/// An aks project on `bed` with helm `helm` (`helm3` or `helm4`), pushing to `docker`'s registry.
pub fn project(bed: &'static TestBed, helm: &str, spec: &str, docker: &DockerEnv) -> BedDeploy {
    let mut p = BedDeploy::new(bed, helm, spec);
    copy_tree(&repo().join("../shared/nvidia"), &p.spec_dir.join("vendor/nvidia"), &["LICENSE", "README.md"]);
    std::os::unix::fs::symlink(python(), p.bin.join("python3")).unwrap();
    let fakes = repo().join("tests/fakes");
    std::os::unix::fs::symlink(fakes.join("_fake.py"), p.bin.join("_fake.py")).unwrap();
    std::os::unix::fs::symlink(fakes.join("terraform"), p.bin.join("terraform")).unwrap();
    script(
        &p.bin.join("az"),
        &AZ.replace("REGISTRY", &docker.registry.addr).replace("FAKE_AZ", &fakes.join("az").display().to_string()),
    );
    // The real docker, in this process's network namespace, recorded like helm and kubectl.
    script(
        &p.bin.join("docker"),
        &format!(
            "{}\nexec '{}' --net=/proc/{}/ns/net -- '{}' \"$@\"",
            p.record_line("docker"),
            which("nsenter").display(),
            std::process::id(),
            which("docker").display()
        ),
    );
    let state = p.tmp.path().join("fake-state");
    std::fs::create_dir_all(&state).unwrap();
    let fake_log = fake_log(&p);
    let kubeconfig = bed.kubeconfig.display().to_string();
    p.set("RAYDEPLOY_FAKE_STATE", state.display().to_string())
        .set("RAYDEPLOY_FAKE_LOG", fake_log.display().to_string())
        .set("RAYDEPLOY_FAKE_TF_KUBECONFIG", kubeconfig.clone())
        .set("RAYDEPLOY_FAKE_TF_KUBECTL", bed.bin.join("kubectl").display().to_string())
        .set("RAYDEPLOY_FAKE_AZ_KUBECONFIG", kubeconfig)
        .set("RAYDEPLOY_FAKE_ACR", docker.registry.addr.clone())
        .set("DOCKER_HOST", docker.engine.host.clone())
        .set("DOCKER_BUILDKIT", "0");
    // raydeploy reaches the cluster only through the kubeconfig `credentials` writes.
    p.vars.remove("KUBECONFIG");
    p
}

/// The Azure stand-ins' call log (JSON lines).
pub fn fake_log(p: &BedDeploy) -> PathBuf {
    p.tmp.path().join("fake-calls.jsonl")
}

/// Every call of terraform and az so far: (tool, argv).
pub fn azure_calls(p: &BedDeploy) -> Vec<(String, Vec<String>)> {
    std::fs::read_to_string(fake_log(p))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("call log line");
            let argv = v["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap_or("").to_string()).collect();
            (v["tool"].as_str().unwrap_or("").to_string(), argv)
        })
        .collect()
}

/// Every call that changes something outside this machine: helm and kubectl writes, docker
/// builds and pushes, terraform applies and destroys.
pub fn mutating(p: &BedDeploy) -> Vec<String> {
    let mut out = p.mutating();
    for c in p.calls().iter().filter(|c| c.tool == "docker") {
        let words: Vec<&str> = c.argv.iter().map(String::as_str).filter(|a| !a.starts_with('-')).collect();
        if matches!(words.first().copied(), Some("build" | "push" | "tag" | "buildx")) {
            out.push(c.line());
        }
    }
    for (tool, argv) in azure_calls(p) {
        let first = argv.iter().find(|a| !a.starts_with('-')).map(String::as_str).unwrap_or("");
        if tool == "terraform" && matches!(first, "apply" | "destroy" | "import" | "taint") {
            out.push(format!("terraform {}", argv.join(" ")));
        }
    }
    out
}

/// Forgets every recorded call.
pub fn clear_calls(p: &BedDeploy) {
    p.clear_calls();
    let _ = std::fs::remove_file(fake_log(p));
}

/// The node resource group AKS would name for the deployment (`MC_<rg>_<cluster>_<location>`),
/// the value of every node's `kubernetes.azure.com/cluster` label.
pub fn node_resource_group(deployment: &str, location: &str) -> String {
    format!("MC_rg-{deployment}_aks-{deployment}_{location}")
}

/// The bed's nodes of a deployment.
pub fn nodes(bed: &TestBed, deployment: &str, location: &str) -> Vec<Value> {
    let sel = format!("kubernetes.azure.com/cluster={}", node_resource_group(deployment, location));
    bed.get_json(&["nodes", "-l", &sel])["items"].as_array().cloned().unwrap_or_default()
}

/// Deletes a deployment's nodes when dropped (a failed test leaves none for the next).
pub struct NodesGone<'a> {
    pub bed: &'a TestBed,
    pub selector: String,
}

impl<'a> NodesGone<'a> {
    pub fn new(bed: &'a TestBed, deployment: &str, location: &str) -> Self {
        Self { bed, selector: format!("kubernetes.azure.com/cluster={}", node_resource_group(deployment, location)) }
    }
}

impl Drop for NodesGone<'_> {
    fn drop(&mut self) {
        let _ = self.bed.kubectl_output(&["delete", "nodes", "-l", &self.selector, "--wait=false"]);
    }
}
