//! Target kubernetes on the real test bed (tests/support/testbed.rs) when a run is cut short: the
//! real `raydeploy` binary with the real Helm 3 and Helm 4 and the bed's kubectl behind recording
//! wrappers (tests/support/bed_deploy.rs).
//!
//! - Helm killed (SIGKILL) in the middle of `helm upgrade --install` of the operator release,
//!   once Helm has stored the release as `pending-install` (a first install) or `pending-upgrade`:
//!   the real Helm then refuses any other operation on the release; the next deploy rolls the
//!   release back to its last deployed revision (or uninstalls a release that was never
//!   deployed) and completes. To keep Helm inside its upgrade until it is killed, an admission
//!   webhook that never answers holds the write of the operator's Deployment
//!   ([`testbed::AdmissionHold`]): Helm has stored the pending release by then.
//! - The API server stopped (SIGKILL, by PID) while `ready` waits: the deploy fails naming the
//!   unreachable API server; once it is started again, the next deploy completes.
//! - The KubeRay operator not running: `ready` times out saying the operator is absent (the
//!   RayCluster has no status and no pods); with the operator back, the next deploy completes.
//!
//! Every wait is on a condition (a call in the call log, a Helm storage Secret's status, an
//! object's state). One test at a time: they stop parts of the shared bed and share the operator
//! release.

#[path = "support/testbed.rs"]
mod testbed;

#[path = "support/kube_env.rs"]
mod kube_env;

#[path = "support/bed_deploy.rs"]
mod bed_deploy;

use std::sync::Mutex;

use bed_deploy::{BedDeploy, WAIT, bed_spec, operator_bed, state, text};
use serde_json::Value;
use testbed::{AdmissionHold, TestBed};

const OPERATOR_NS: &str = "kuberay";
const OPERATOR: &str = "kuberay-operator";

static SERIAL: Mutex<()> = Mutex::new(());

fn spec(name: &str) -> String {
    bed_spec(name, "    - { name: cpu, cpu: 1, memory: 2Gi, replicas: 1 }", "")
}

fn project(bed: &'static TestBed, helm: &str, name: &str) -> BedDeploy {
    let mut p = BedDeploy::new(bed, helm, &spec(name));
    p.set("RAYDEPLOY_READY_TIMEOUT", "300");
    p
}

fn deploy(p: &BedDeploy) -> std::process::Output {
    p.run(&["deploy", "--auto-approve"])
}

/// `helm ARGS…` (the bed's helm3 or helm4, inside its namespace): exit code and output.
fn helm(bed: &TestBed, helm: &str, args: &[&str]) -> (i32, String) {
    let o = bed.command(bed.bin.join(helm)).args(args).output().expect("helm runs");
    (o.status.code().unwrap_or(-1), text(&o))
}

fn release_status(bed: &TestBed, helm_bin: &str, name: &str, ns: &str) -> String {
    let (code, out) = helm(bed, helm_bin, &["status", name, "-n", ns, "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["info"]["status"].as_str().unwrap_or("").to_string()
}

/// What a user who runs helm by hand now sees: the release is locked.
fn assert_helm_refuses(bed: &TestBed, helm_bin: &str, p: &BedDeploy) {
    let chart = p.spec_dir.join("vendor/kuberay/kuberay-operator").display().to_string();
    let (code, out) =
        helm(bed, helm_bin, &["upgrade", "--install", OPERATOR, &chart, "-n", OPERATOR_NS, "--reuse-values"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("another operation (install/upgrade/rollback) is in progress"), "{helm_bin}: {out}");
}

/// The operator release is shared by every deployment on the bed: this starts from none.
fn no_operator_release(bed: &TestBed, helm_bin: &str) {
    let (code, out) = helm(bed, helm_bin, &["status", OPERATOR, "-n", OPERATOR_NS]);
    if code == 0 {
        bed.helm(helm_bin, &["uninstall", OPERATOR, "-n", OPERATOR_NS, "--wait"]);
    } else {
        assert!(out.contains("not found"), "{out}");
    }
}

fn interrupted_helm(helm_bin: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("resume-{helm_bin}");
    let bed = operator_bed(&name, "8");
    no_operator_release(bed, helm_bin);
    let p = project(bed, helm_bin, &name);

    // 1. A first install killed while the API server holds the operator's Deployment:
    // `pending-install`.
    let hold = AdmissionHold::new(bed, OPERATOR_NS);
    p.kill_helm_at(OPERATOR_NS, OPERATOR, "pending-install");
    let o = deploy(&p);
    let out = text(&o);
    drop(hold);
    assert_eq!(o.status.code(), Some(1), "{helm_bin}: deploy with helm killed:\n{out}");
    let seen = p.helm_killed().unwrap_or_else(|| panic!("{helm_bin}: helm was never killed:\n{out}"));
    assert!(seen.contains(&format!("sh.helm.release.v1.{OPERATOR}.v1")), "{seen}");
    assert!(out.contains("phase operator failed"), "{out}");
    assert_eq!(release_status(bed, helm_bin, OPERATOR, OPERATOR_NS), "pending-install");
    assert_helm_refuses(bed, helm_bin, &p);
    assert_eq!(state(&p, &name)["phases"]["operator"]["status"], "failed");

    // The next deploy uninstalls the release that never was deployed, installs it, and goes on.
    p.clear_calls();
    let o = deploy(&p);
    let out = text(&o);
    assert!(o.status.success(), "{helm_bin}: deploy after the killed install:\n{out}");
    let said =
        format!("uninstalled Helm release {OPERATOR_NS}/{OPERATOR}, left pending-install with no deployed revision");
    assert!(out.contains(&said), "{out}");
    let log = std::fs::read_to_string(p.state_dir(&name).join("logs/operator.log")).unwrap();
    assert!(log.contains(&said) && log.contains("an earlier helm was interrupted"), "{log}");
    assert_eq!(release_status(bed, helm_bin, OPERATOR, OPERATOR_NS), "deployed");
    // The operator's own calls: the uninstall, then the install (the cluster release may go in
    // meanwhile: it needs only the CRDs).
    let m: Vec<String> = p.mutating().into_iter().filter(|c| c.contains(&format!(" {OPERATOR} "))).collect();
    assert_eq!(m.len(), 2, "{m:#?}");
    assert!(m[0].starts_with(&format!("helm uninstall {OPERATOR} -n {OPERATOR_NS}")), "{m:#?}");
    assert!(m[1].starts_with(&format!("helm upgrade --install {OPERATOR} ")), "{m:#?}");
    assert_eq!(state(&p, &name)["phases"]["ready"]["status"], "completed");

    // 2. Someone changes the operator release by hand (deployed, revision 2); raydeploy's upgrade
    // back to its own values is killed while the API server holds the Deployment's update:
    // `pending-upgrade` on top of revision 2.
    let chart = p.spec_dir.join("vendor/kuberay/kuberay-operator").display().to_string();
    bed.helm(
        helm_bin,
        &[
            "upgrade",
            OPERATOR,
            &chart,
            "-n",
            OPERATOR_NS,
            "--reuse-values",
            "--set-string",
            "annotations.drift=by-hand",
            "--wait",
        ],
    );
    assert_eq!(release_status(bed, helm_bin, OPERATOR, OPERATOR_NS), "deployed");
    let hand = history(bed, helm_bin).last().unwrap()["revision"].as_u64().unwrap();
    let hold = AdmissionHold::new(bed, OPERATOR_NS);
    p.kill_helm_at(OPERATOR_NS, OPERATOR, "pending-upgrade");
    // From a fresh checkout (no state), deploy reads the live release and finds the hand-made
    // values: the operator phase upgrades it back to the spec's.
    std::fs::remove_file(p.state_dir(&name).join("state.json")).unwrap();
    let o = deploy(&p);
    let out = text(&o);
    drop(hold);
    assert_eq!(o.status.code(), Some(1), "{helm_bin}: deploy with helm killed:\n{out}");
    assert!(p.helm_killed().is_some(), "{helm_bin}: helm was never killed:\n{out}");
    assert_eq!(release_status(bed, helm_bin, OPERATOR, OPERATOR_NS), "pending-upgrade");
    assert_helm_refuses(bed, helm_bin, &p);
    // plan tells what the next deploy does about it.
    let o = p.run(&["plan"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "release {OPERATOR} is pending-upgrade: an interrupted helm left it; deploy rolls it back to revision {hand}, then upgrades it"
        )),
        "{out}"
    );

    // The next deploy rolls back to the hand-made revision, then upgrades: only those two change
    // anything (the cluster release is current, read from the live release).
    p.clear_calls();
    let o = deploy(&p);
    let out = text(&o);
    assert!(o.status.success(), "{helm_bin}: deploy after the killed upgrade:\n{out}");
    let pending = hand + 1;
    let said = format!(
        "rolled Helm release {OPERATOR_NS}/{OPERATOR} back from pending-upgrade revision {pending} to revision {hand}"
    );
    assert!(out.contains(&said), "{out}");
    let m = p.mutating();
    assert_eq!(m.len(), 2, "{m:#?}");
    assert!(m[0].starts_with(&format!("helm rollback {OPERATOR} {hand} -n {OPERATOR_NS}")), "{m:#?}");
    assert!(m[1].starts_with(&format!("helm upgrade --install {OPERATOR}")), "{m:#?}");
    let h = history(bed, helm_bin);
    let last = h.last().unwrap();
    assert_eq!(last["status"], "deployed", "{h:#?}");
    assert!(h.iter().any(|r| r["description"].as_str().is_some_and(|d| d.contains(&format!("Rollback to {hand}")))));
    let values: Value =
        serde_json::from_str(&bed.helm(helm_bin, &["get", "values", OPERATOR, "-n", OPERATOR_NS, "-o", "json"]))
            .unwrap();
    assert!(values.get("annotations").is_none(), "raydeploy's values again: {values}");
    assert_eq!(state(&p, &name)["phases"]["ready"]["status"], "completed");

    let o = p.run(&["destroy", "--auto-approve"]);
    assert!(o.status.success(), "destroy:\n{}", text(&o));
}

fn history(bed: &TestBed, helm_bin: &str) -> Vec<Value> {
    serde_json::from_str(&bed.helm(helm_bin, &["history", OPERATOR, "-n", OPERATOR_NS, "-o", "json"])).unwrap()
}

#[test]
fn helm3_a_helm_killed_mid_upgrade_is_recovered_by_the_next_deploy() {
    interrupted_helm("helm3");
}

#[test]
fn helm4_a_helm_killed_mid_upgrade_is_recovered_by_the_next_deploy() {
    interrupted_helm("helm4");
}

/// Waits for `ready` to poll the RayCluster after the ray-cluster release went in (the phases
/// before it are done).
fn wait_for_ready_phase(bed: &TestBed, p: &BedDeploy, child: &mut std::process::Child, name: &str) {
    bed.wait_for("the ready phase to poll the RayCluster", WAIT, |note| {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("deploy ended ({s}) before ready polled; calls: {:#?}", p.calls());
        }
        let calls = p.calls();
        *note = calls.last().map(|c| c.line()).unwrap_or_default();
        // The ready phase's own polls come after the ray-cluster release (an early probe of
        // `ready` may read the RayCluster before any phase ran).
        let release = calls.iter().position(|c| c.tool == "helm" && c.has(&["upgrade", "--install", name]))?;
        calls[release..].iter().any(|c| c.tool == "kubectl" && c.has(&["get", "raycluster", name])).then_some(())
    });
}

fn apiserver_restart(helm_bin: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("apisrv-{helm_bin}");
    let bed = operator_bed(&name, "8");
    let p = project(bed, helm_bin, &name);
    // With no operator acting on it, the RayCluster stays without status: `ready` keeps waiting
    // (for up to RAYDEPLOY_READY_TIMEOUT) until the API server goes.
    bed.stop_component(OPERATOR, libc::SIGTERM);
    let mut child = p.spawn(&["deploy", "--auto-approve"]);
    wait_for_ready_phase(bed, &p, &mut child, &name);
    bed.stop_component("kube-apiserver", libc::SIGKILL);
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    bed.restart("kube-apiserver");
    bed.restart(OPERATOR);
    assert_eq!(out.status.code(), Some(1), "{helm_bin}: deploy without an API server:\n{said}");
    assert!(said.contains("phase ready failed"), "{said}");
    assert!(said.contains("the Kubernetes API server is unreachable"), "{said}");
    assert!(said.contains("127.0.0.1:6443"), "the server is named: {said}");
    assert_eq!(state(&p, &name)["phases"]["ready"]["status"], "failed");

    // With the API server back, the next deploy completes, changing nothing that was done.
    p.clear_calls();
    let o = deploy(&p);
    assert!(o.status.success(), "{helm_bin}: deploy after the restart:\n{}", text(&o));
    assert_eq!(p.mutating(), Vec::<String>::new(), "completed phases are not repeated");
    assert_eq!(state(&p, &name)["phases"]["ready"]["status"], "completed");
    let o = p.run(&["destroy", "--auto-approve"]);
    assert!(o.status.success(), "destroy:\n{}", text(&o));
}

#[test]
fn helm3_the_api_server_restarted_mid_phase_then_the_next_deploy_completes() {
    apiserver_restart("helm3");
}

#[test]
fn helm4_the_api_server_restarted_mid_phase_then_the_next_deploy_completes() {
    apiserver_restart("helm4");
}

fn operator_absent(helm_bin: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("noop-{helm_bin}");
    let bed = operator_bed(&name, "8");
    let mut p = project(bed, helm_bin, &name);
    p.set("RAYDEPLOY_READY_TIMEOUT", "15");
    bed.stop_component(OPERATOR, libc::SIGTERM);
    let o = deploy(&p);
    let out = text(&o);
    let rc = bed.get_json(&["raycluster", &name, "-n", &name]);
    bed.restart(OPERATOR);
    assert_eq!(o.status.code(), Some(1), "{helm_bin}: deploy without an operator:\n{out}");
    assert!(out.contains(&format!("RayCluster {name}/{name} is not ready after 15s")), "{out}");
    assert!(
        out.contains(&format!(
            "the KubeRay operator is absent: nothing has acted on RayCluster {name}/{name} in 15s (it has no status and no pods)"
        )),
        "{out}"
    );
    // The operator release's Deployment looks healthy (kwok "runs" its pod): said so.
    assert!(out.contains(&format!("Its Deployment {OPERATOR_NS}/{OPERATOR} reports 1 of 1 pods ready")), "{out}");
    assert!(rc.get("status").is_none_or(|s| s.as_object().is_some_and(|m| m.is_empty())), "{rc}");

    p.set("RAYDEPLOY_READY_TIMEOUT", "300");
    let o = deploy(&p);
    assert!(o.status.success(), "{helm_bin}: deploy with the operator back:\n{}", text(&o));
    assert_eq!(state(&p, &name)["phases"]["ready"]["status"], "completed");
    let o = p.run(&["destroy", "--auto-approve"]);
    assert!(o.status.success(), "destroy:\n{}", text(&o));
}

#[test]
fn helm3_ready_says_the_operator_is_absent() {
    operator_absent("helm3");
}

#[test]
fn helm4_ready_says_the_operator_is_absent() {
    operator_absent("helm4");
}
