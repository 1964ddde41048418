//! The cluster phases (crds, operator, secrets, mounts, cluster, ready, jobs) and the commands
//! destroy, status, job and dashboard, driven through the real binary on a target-kubernetes spec
//! with the fake helm and kubectl (tests/fakes, an emulated cluster) and a docker stand-in that
//! "builds" and "pushes" by name. Assertions come from the fakes' call log and emulated state.

#[path = "support/kube_env.rs"]
mod kube_env;

use std::path::Path;

use kube_env::{Call, KubeEnv};
use serde_json::Value;

const SECRET_VALUE: &str = "tok-3f9a7c1e55d2";
const FILE_SECRET: &str = "postgres://u:pw-8d7e6f@db/x";
const KV_SECRET: &str = "kv-5b2e90aa41";

const SPEC: &str = r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: clu
target: kubernetes

kubernetes:
  registry: 127.0.0.1:5999/acme/ray-clu

image:
  rayVersion: "2.52.0"
  python: "3.12"

cluster:
  namespace: rayns
  head: { cpu: 1, memory: 2Gi }
  workerGroups:
    - name: cpu
      cpu: 1
      memory: 2Gi
      replicas: 2
    - name: gpu
      cpu: 1
      memory: 4Gi
      gpus: 1
      replicas: 0
      minReplicas: 0
      maxReplicas: 1
  autoscaler: { enabled: true }

secrets:
  - name: api
    exposeAsEnv: true
    data:
      token: { fromEnv: CLU_TOKEN }
      db: { fromFile: ./db.txt }
      key: { fromKeyVault: { vault: kv-clu, secret: api-key } }

jobs:
  - name: ok
    entrypoint: python -c 'print(42)'
    shutdownAfterFinish: true
    ttlSecondsAfterFinished: 0
  - name: boom
    entrypoint: python fail.py
"#;

fn sandbox() -> KubeEnv {
    let mut env = KubeEnv::new(SPEC, &["helm", "kubectl", "az"]);
    env.add_script("docker", kube_env::NAME_ONLY_DOCKER);
    std::fs::write(env.spec_dir.join("db.txt"), FILE_SECRET).unwrap();
    env.set("CLU_TOKEN", SECRET_VALUE);
    env.set("RAYDEPLOY_FAKE_KV_KV_CLU_API_KEY", KV_SECRET);
    env.set("RAYDEPLOY_POLL_SECONDS", "0.05");
    env.set("RAYDEPLOY_READY_TIMEOUT", "60");
    env
}

fn deploy(env: &KubeEnv, extra: &[&str]) -> std::process::Output {
    env.raydeploy().args(["deploy", "--auto-approve"]).args(extra).output().unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn deployed(env: &KubeEnv) {
    let o = deploy(env, &[]);
    assert!(o.status.success(), "{}", text(&o));
}

fn index(calls: &[Call], pred: impl Fn(&Call) -> bool) -> usize {
    calls.iter().position(pred).unwrap_or_else(|| panic!("no such call in {:#?}", lines(calls)))
}

fn lines(calls: &[Call]) -> Vec<String> {
    calls.iter().map(Call::line).collect()
}

fn mutating(env: &KubeEnv) -> Vec<String> {
    env.calls().iter().filter(|c| c.mutating()).map(Call::line).collect()
}

fn kube(env: &KubeEnv) -> Value {
    env.fake_state("kube")
}

fn object<'a>(st: &'a Value, kind: &str, ns: &str, name: &str) -> Option<&'a Value> {
    st["objects"].get(format!("{kind}|{ns}|{name}"))
}

/// Every file under `dir`, as text.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&all_text(&p));
        } else {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
        }
    }
    out
}

#[test]
fn deploy_orders_phases_pins_digests_and_pipes_secrets_on_stdin() {
    let env = sandbox();
    let o = deploy(&env, &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let calls = env.calls();

    // CRDs from the chart, applied server-side with the version label, before the operator.
    let show = index(&calls, |c| c.tool == "helm" && c.has(&["show", "crds", "kuberay-operator", "1.7.0"]));
    let crds = index(&calls, |c| {
        c.tool == "kubectl" && c.has(&["apply", "--server-side"]) && c.stdin.contains("CustomResourceDefinition")
    });
    let op = index(&calls, |c| c.tool == "helm" && c.has(&["upgrade", "--install", "kuberay-operator"]));
    let rc = index(&calls, |c| c.tool == "helm" && c.has(&["upgrade", "--install", "clu", "ray-cluster"]));
    let secret =
        index(&calls, |c| c.tool == "kubectl" && c.has(&["apply", "-f", "-"]) && c.stdin.contains("\"Secret\""));
    // The ray-cluster release needs the CRDs, not the operator: it may go in while the operator
    // rolls out.
    assert!(show < crds && crds < op && crds < rc && secret < rc, "{:#?}", lines(&calls));
    assert!(calls[crds].stdin.contains("\"raydeploy.io/kuberay-version\":\"1.7.0\""));

    // The operator's Deployment rolled out (watched by kubectl, not polled by Helm) before ready
    // read the RayCluster.
    let rollout = index(&calls, |c| {
        c.tool == "kubectl"
            && c.has(&["rollout", "status", "deployment", "-l", "app.kubernetes.io/instance=kuberay-operator"])
            && c.has(&["-n", "kuberay"])
    });
    let ready = index(&calls, |c| c.tool == "kubectl" && c.has(&["get", "raycluster"]));
    assert!(op < rollout && rollout < ready && rc < ready, "{:#?}", lines(&calls));

    // Helm flags.
    let op = &calls[op];
    for w in ["--skip-crds", "--create-namespace", "--version", "1.7.0", "--repo"] {
        assert!(op.has(&[w]), "{w} missing: {}", op.line());
    }
    assert!(!op.has(&["--wait"]), "raydeploy waits for the rollout itself: {}", op.line());
    let rc = &calls[rc];
    let files: Vec<&String> =
        rc.argv.iter().zip(rc.argv.iter().skip(1)).filter(|(a, _)| *a == "-f").map(|(_, f)| f).collect();
    assert_eq!(files.len(), 2, "{}", rc.line());
    assert!(files[0].ends_with("helm/ray-cluster.values.yaml") && files[1].ends_with("helm/ray-cluster.images.yaml"));
    let pins = std::fs::read_to_string(env.spec_dir.join(files[1])).unwrap();
    assert!(pins.contains("@sha256:1111") && pins.contains("additionalWorkerGroups"), "{pins}");

    // Every pod runs a digest-pinned image; the RayCluster became ready.
    let st = kube(&env);
    let pods: Vec<&Value> = st["objects"].as_object().unwrap().values().filter(|o| o["kind"] == "Pod").collect();
    assert_eq!(pods.len(), 3, "head + 2 cpu workers");
    for p in &pods {
        let img = p["spec"]["containers"][0]["image"].as_str().unwrap();
        assert!(img.starts_with("127.0.0.1:5999/acme/ray-clu:") && img.contains("@sha256:1111"), "{img}");
    }
    assert_eq!(object(&st, "RayCluster", "rayns", "clu").unwrap()["status"]["state"], "ready");

    // The secret went on stdin only: in the cluster with a salted hash label, nowhere on disk.
    let stdin = &calls[secret].stdin;
    assert!(stdin.contains(SECRET_VALUE) && stdin.contains(FILE_SECRET) && stdin.contains(KV_SECRET));
    let kv = env.find("az", &["keyvault", "secret", "show", "--vault-name", "kv-clu", "--name", "api-key"]);
    assert!(!kv.is_empty() && kv[0].has(&["--query", "value", "-o", "tsv"]));
    let s = object(&st, "Secret", "rayns", "api").expect("secret applied");
    let hash = s["metadata"]["labels"]["raydeploy.io/secret-hash"].as_str().unwrap();
    assert_eq!(hash.len(), 32);
    assert!(s["metadata"]["annotations"]["raydeploy.io/secret-salt"].as_str().is_some());
    let disk = all_text(&env.spec_dir.join(".raydeploy"));
    for v in [SECRET_VALUE, FILE_SECRET, KV_SECRET] {
        assert!(!disk.contains(v), "a secret reached .raydeploy/");
        assert!(!out.contains(v), "a secret reached the output");
    }
    for c in calls.iter().filter(|c| c.tool != "kubectl" || !c.has(&["apply"])) {
        assert!(!c.argv.join(" ").contains(SECRET_VALUE), "{}", c.line());
    }
}

#[test]
fn a_second_run_and_a_fresh_checkout_change_nothing_and_a_new_secret_value_is_applied_alone() {
    let mut env = sandbox();
    deployed(&env);
    env.clear_calls();
    deployed(&env);
    assert_eq!(mutating(&env), Vec::<String>::new(), "second run");

    env.fresh_checkout();
    env.clear_calls();
    let o = deploy(&env, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(mutating(&env), Vec::<String>::new(), "fresh checkout");
    assert!(text(&o).contains("live state already matches"), "{}", text(&o));

    env.set("CLU_TOKEN", "tok-rotated-77a1b2");
    env.clear_calls();
    let o = deploy(&env, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let m = mutating(&env);
    assert_eq!(m.len(), 1, "{m:#?}");
    assert!(env.find("kubectl", &["apply"])[0].stdin.contains("tok-rotated-77a1b2"));
}

#[test]
fn ready_times_out_naming_each_pending_pod_and_why() {
    let mut env = sandbox();
    env.set("RAYDEPLOY_FAKE_UNSCHEDULABLE", "head");
    env.set("RAYDEPLOY_READY_TIMEOUT", "0.5");
    let o = deploy(&env, &[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("phase ready failed"), "{out}");
    assert!(out.contains("RayCluster rayns/clu is not ready after"), "{out}");
    assert!(out.contains("clu-head-") && out.contains("(group head): Pending"), "{out}");
    assert!(
        out.contains("PodScheduled=False Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu"),
        "{out}"
    );
    assert!(out.contains("event FailedScheduling"), "{out}");
}

#[test]
fn a_failed_cluster_upgrade_stops_the_run_and_the_next_run_resumes_there() {
    let mut env = sandbox();
    env.set("RAYDEPLOY_FAKE_FAULTS", "helm:upgrade ray-cluster=fail");
    let o = deploy(&env, &[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("phase cluster failed") && out.contains("injected failure"), "{out}");
    assert_eq!(env.phase_status("clu", "ready"), "");
    env.unset("RAYDEPLOY_FAKE_FAULTS");
    env.clear_calls();
    deployed(&env);
    let m = mutating(&env);
    assert_eq!(m.len(), 1, "only the failed phase runs again: {m:#?}");
    assert!(m[0].starts_with("helm upgrade --install clu ray-cluster"), "{m:#?}");
}

#[test]
fn jobs_report_their_result_as_the_exit_code_and_are_cleaned_up() {
    let env = sandbox();
    deployed(&env);

    let o = env.raydeploy().args(["job", "submit", "ok"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("result: 42"), "{}", text(&o));
    // ttlSecondsAfterFinished 0: the RayJob is deleted once its result is known.
    assert!(object(&kube(&env), "RayJob", "rayns", "ok").is_none());

    let o = env.raydeploy().args(["job", "submit", "boom", "--follow"]).output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("RuntimeError: the job failed on purpose") && out.contains("job boom failed (FAILED)"),
        "{out}"
    );
    assert!(!env.find("kubectl", &["logs", "-f", "job/boom"]).is_empty());
    assert!(object(&kube(&env), "RayJob", "rayns", "boom").is_some(), "no delete-after annotation: kept");

    let o = env.raydeploy().args(["job", "list", "--output", "json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let boom = v["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "boom").unwrap();
    assert_eq!(boom["job_status"], "FAILED");
    let ok = v["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "ok").unwrap();
    assert_eq!(ok["submitted"], false);

    let o = env.raydeploy().args(["job", "logs", "boom"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("RuntimeError"));

    // A resubmit deletes the finished RayJob first (KubeRay never re-runs one).
    env.clear_calls();
    let o = env.raydeploy().args(["job", "submit", "boom"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let calls = env.calls();
    let del = index(&calls, |c| c.tool == "kubectl" && c.has(&["delete", "rayjob", "boom"]));
    let apply = index(&calls, |c| c.tool == "kubectl" && c.has(&["apply"]) && c.stdin.contains("RayJob"));
    assert!(del < apply);

    for _ in 0..2 {
        let o = env.raydeploy().args(["job", "delete", "boom"]).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    assert!(object(&kube(&env), "RayJob", "rayns", "boom").is_none());

    let o = env.raydeploy().args(["job", "submit", "nope"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("no job `nope`"));
}

#[test]
fn deploy_with_jobs_fails_when_a_job_fails() {
    let env = sandbox();
    let o = deploy(&env, &["--with-jobs"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("phase jobs failed") && out.contains("job boom failed (FAILED)"), "{out}");
    assert!(out.contains("result: 42"), "the ok job's logs are streamed: {out}");
}

#[test]
fn destroy_needs_approval_runs_in_reverse_order_and_is_idempotent() {
    let env = sandbox();
    deployed(&env);
    let o = env.raydeploy().args(["job", "submit", "boom"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));

    env.clear_calls();
    let o = env.raydeploy().args(["destroy"]).output().unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("--auto-approve"), "{}", text(&o));
    assert_eq!(mutating(&env), Vec::<String>::new());

    let o = env.raydeploy().args(["destroy", "--auto-approve"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let calls = env.calls();
    let jobs = index(&calls, |c| c.tool == "kubectl" && c.has(&["delete", "rayjobs"]));
    let rc = index(&calls, |c| c.tool == "helm" && c.has(&["uninstall", "clu"]));
    let sec = index(&calls, |c| c.tool == "kubectl" && c.has(&["delete", "secret", "api"]));
    let op = index(&calls, |c| c.tool == "helm" && c.has(&["uninstall", "kuberay-operator"]));
    assert!(jobs < rc && rc < sec && sec < op, "{:#?}", lines(&calls));
    let st = kube(&env);
    assert!(st["releases"].as_object().unwrap().is_empty());
    let left: Vec<&str> = st["objects"]
        .as_object()
        .unwrap()
        .values()
        .filter(|o| !matches!(o["kind"].as_str(), Some("Namespace" | "CustomResourceDefinition" | "Event")))
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(left, Vec::<&str>::new());
    assert_eq!(env.phase_status("clu", "cluster"), "");

    env.clear_calls();
    let o = env.raydeploy().args(["destroy", "--auto-approve"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("already gone"), "{}", text(&o));
    assert!(env.find("helm", &["uninstall"]).is_empty());
}

#[test]
fn status_shows_releases_cluster_state_and_pods_per_group() {
    let env = sandbox();
    let o = env.raydeploy().args(["status", "--output", "json"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["cluster"]["raycluster"]["exists"], false);
    assert!(v["cluster"]["releases"]["cluster"].is_null());

    deployed(&env);
    let o = env.raydeploy().args(["status"]).output().unwrap();
    let t = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(t.contains("ray-cluster release rayns/clu: deployed (chart ray-cluster-1.7.0"), "{t}");
    assert!(t.contains("RayCluster rayns/clu: ready"), "{t}");
    assert!(t.contains("svc/clu-head-svc"), "{t}");
    let o = env.raydeploy().args(["status", "--output", "json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = &v["cluster"];
    assert_eq!(c["raycluster"]["state"], "ready");
    assert_eq!(c["groups"]["head"]["ready"], 1);
    assert_eq!(c["groups"]["cpu"]["pods"], 2);
    assert_eq!(c["groups"]["gpu"]["pods"], 0);
    assert_eq!(c["releases"]["operator"]["status"], "deployed");
}

#[test]
fn dashboard_prints_the_url_and_reconnects_until_interrupted() {
    let mut env = sandbox();
    deployed(&env);
    env.set("RAYDEPLOY_FAKE_PORT_FORWARD_DROPS", "1");
    let mut child = env
        .raydeploy_std()
        .arg("dashboard")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) for the second port-forward to be up.
    let mut up = false;
    for _ in 0..600 {
        let pf = env.find("kubectl", &["port-forward"]);
        if pf.iter().any(|c| c.exit == Value::from("running")) {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: kill(2) on the child this test spawned.
    unsafe { libc_kill(child.id() as i32, 2) };
    let out = child.wait_with_output().unwrap();
    let all = text(&out);
    assert!(up, "the port-forward never came back: {all}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("http://127.0.0.1:"), "{all}");
    assert!(all.contains("reconnecting"), "{all}");
    let pf = env.find("kubectl", &["port-forward", "svc/clu-head-svc"]);
    assert_eq!(pf.iter().filter(|c| c.exit != Value::from("running")).count() >= 1, true);
    assert!(pf[0].has(&["-n", "rayns", "--address", "127.0.0.1"]));
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// A value with every character escapes and encodings treat specially.
const CANARY: &str = "tok \"q\\x\" <&> é'%+/=?~ 9f2c-canary";

/// The forms of `v` a tool may print (computed here independently of the redactor): as is,
/// JSON-escaped (once, twice, Python's ASCII and Go's HTML-safe style), YAML double- and
/// single-quoted, percent-encoded (`%20` and `+`, either case), base64 (standard and URL-safe,
/// padded or not) and the characters of its base64 that any longer base64 text holding it at
/// each byte alignment contains.
fn encodings(v: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let json = |s: &str| serde_json::to_string(s).unwrap().trim_matches('"').to_string();
    let mut python = String::new();
    let mut yaml = String::new();
    for c in v.chars() {
        if c.is_ascii() {
            python.push_str(&json(&c.to_string()));
        } else {
            let mut b = [0u16; 2];
            c.encode_utf16(&mut b).iter().for_each(|u| python.push_str(&format!("\\u{u:04x}")));
        }
        match c {
            '"' => yaml.push_str("\\\""),
            '\\' => yaml.push_str("\\\\"),
            c if (c as u32) > 0x7e && (c as u32) < 0x100 => yaml.push_str(&format!("\\x{:02X}", c as u32)),
            c if (c as u32) > 0x7e => yaml.push_str(&format!("\\u{:04X}", c as u32)),
            c => yaml.push(c),
        }
    }
    let go = json(v).replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026");
    let percent = |plus: bool, lower: bool| -> String {
        v.bytes()
            .map(|b| match b {
                b' ' if plus => "+".to_string(),
                b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => (b as char).to_string(),
                b if lower => format!("%{b:02x}"),
                b => format!("%{b:02X}"),
            })
            .collect()
    };
    let mut out = vec![
        v.to_string(),
        json(v),
        json(&json(v)),
        python,
        go,
        yaml,
        v.replace('\'', "''"),
        percent(false, false),
        percent(true, false),
        percent(false, true),
        STANDARD.encode(v),
        URL_SAFE.encode(v),
    ];
    for r in 0..3 {
        let mut buf = vec![b'#'; r];
        buf.extend_from_slice(v.as_bytes());
        let (start, end) = ((8 * r).div_ceil(6), (8 * (r + v.len())) / 6);
        out.push(STANDARD_NO_PAD.encode(&buf)[start..end].to_string());
        out.push(URL_SAFE_NO_PAD.encode(&buf)[start..end].to_string());
    }
    out
}

/// Every file under `dir` with its path.
fn files(dir: &Path) -> Vec<(String, String)> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.display().to_string(), String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()));
        }
    }
    out
}

#[test]
fn a_tool_echoing_the_secret_it_was_sent_reveals_no_form_of_it() {
    let mut env = sandbox();
    env.set("CLU_TOKEN", CANARY);
    env.set("RAYDEPLOY_FAKE_ECHO_SECRETS", "1");
    let plain = deploy(&env, &[]);
    assert_eq!(plain.status.code(), Some(1), "{}", text(&plain));
    assert!(text(&plain).contains("error when applying patch"), "the tool's error is shown: {}", text(&plain));
    let json = deploy(&env, &["--output", "json"]);
    assert_eq!(json.status.code(), Some(1), "{}", text(&json));
    let status = env.raydeploy().args(["status", "--output", "json"]).output().unwrap();
    let status_text = env.raydeploy().arg("status").output().unwrap();

    // What the fake printed that holds a secret, and every encoding of each secret.
    let echoed: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(env.tmp.path().join("fake-state/secret-echo.json")).expect("the fake echoed"),
    )
    .unwrap();
    assert!(echoed.len() > 20, "{echoed:?}");
    let mut forms = echoed;
    for v in [CANARY, FILE_SECRET, KV_SECRET] {
        forms.extend(encodings(v));
    }

    let state = env.state_dir("clu");
    let log = std::fs::read_to_string(state.join("logs/secrets.log")).expect("secrets.log");
    assert!(log.contains("error when applying patch") && log.contains("***"), "{log}");
    assert!(env.state("clu")["phases"]["secrets"]["error"].as_str().unwrap().contains("***"));
    let mut outputs = vec![
        ("deploy".to_string(), text(&plain)),
        ("deploy --output json".to_string(), text(&json)),
        ("status --output json".to_string(), text(&status)),
        ("status".to_string(), text(&status_text)),
    ];
    outputs.extend(files(&state));
    for (name, t) in &outputs {
        for f in &forms {
            assert!(!t.contains(f.as_str()), "{name} holds {f:?}:\n{t}");
        }
    }
}
