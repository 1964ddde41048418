//! What the Kubernetes test bed (tests/deploy_testbed*.rs: a real API server, scheduler, KubeRay
//! operator, Helm 3 and 4) cannot produce on demand, driven through the real binary on a
//! target-kubernetes spec with the fake helm and kubectl (tests/fakes, an emulated cluster) and a
//! docker stand-in that "builds" and "pushes" by name:
//! - RayJobs that run to an end: kwok's pods run no Ray, so on the bed a RayJob is accepted but
//!   never finishes; here the emulated RayJob succeeds or fails (`job submit` exit codes and logs,
//!   `deploy --with-jobs`, `plan --with-jobs` once every job succeeded, from the state or, from
//!   a fresh checkout, from the RayJobs the jobs phase stamped with the jobs' inputs);
//! - a port-forward that drops (the dashboard reconnects): kwok's pods serve no port;
//! - a tool that echoes the Secret it was sent, in every encoding (real kubectl does not on
//!   demand).
//!
//! Deploy order, pins, Secrets, no-op and fresh-checkout redeploys, ready timeouts, resume,
//! status and destroy are tested on the bed.

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
    env.add_name_only_docker();
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
    let mut env = sandbox();
    let o = deploy(&env, &["--with-jobs"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("phase jobs failed") && out.contains("job boom failed (FAILED)"), "{out}");
    assert!(out.contains("result: 42"), "the ok job's logs are streamed: {out}");

    // A failed job is submitted again, from a fresh checkout too (the ok job, deleted once it
    // finished, with it).
    env.fresh_checkout();
    env.clear_calls();
    let o = deploy(&env, &["--with-jobs"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    for job in ["ok", "boom"] {
        let applied = env
            .calls()
            .iter()
            .any(|c| c.tool == "kubectl" && c.has(&["apply"]) && c.stdin.contains(&format!("\"name\":\"{job}\"")));
        assert!(applied, "{job} submitted again: {:#?}", lines(&env.calls()));
    }
}

fn plan_with_jobs(env: &KubeEnv) -> (Option<i32>, String) {
    let o = env.raydeploy().args(["plan", "--with-jobs"]).output().unwrap();
    (o.status.code(), text(&o))
}

/// The inputs hash the jobs phase stamped on RayJob `name`.
fn job_inputs(env: &KubeEnv, name: &str) -> Option<String> {
    let rj = object(&kube(env), "RayJob", "rayns", name)?.clone();
    rj["metadata"]["annotations"]["raydeploy.io/job-inputs"].as_str().map(str::to_string)
}

/// From a fresh checkout, `plan --with-jobs` counts the job `report`, saying `fact`, and
/// `deploy --with-jobs` submits it again: the stamp it gets.
fn resubmitted_from_a_fresh_checkout(env: &mut KubeEnv, fact: &str) -> String {
    env.fresh_checkout();
    let (code, out) = plan_with_jobs(env);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(&format!("RayJob/report: {fact}")), "{out}");
    env.clear_calls();
    let o = deploy(env, &["--with-jobs"]);
    assert!(o.status.success(), "{}", text(&o));
    let submitted =
        env.calls().iter().any(|c| c.tool == "kubectl" && c.has(&["apply"]) && c.stdin.contains("\"kind\":\"RayJob\""));
    assert!(submitted, "{:#?}", lines(&env.calls()));
    job_inputs(env, "report").expect("stamped")
}

/// Jobs are runs: once every job ran with these inputs and succeeded, `deploy --with-jobs` skips
/// them and `plan --with-jobs` counts nothing (exit 0), from the state or, from a fresh checkout,
/// from the RayJob the jobs phase stamped with the job's inputs. A RayJob that is gone, was
/// submitted by `job submit`, or ran other inputs is submitted again. Needs RayJobs that finish:
/// emulated.
#[test]
fn plan_with_jobs_counts_nothing_once_every_job_succeeded() {
    let jobs = &SPEC[SPEC.find("jobs:").unwrap()..];
    let report = |code: u32| {
        SPEC.replace(jobs, &format!("jobs:\n  - name: report\n    entrypoint: python -c 'print({code})'\n"))
    };
    let mut env = KubeEnv::new(&report(42), &["helm", "kubectl", "az"]);
    env.add_name_only_docker();
    std::fs::write(env.spec_dir.join("db.txt"), FILE_SECRET).unwrap();
    env.set("CLU_TOKEN", SECRET_VALUE).set("RAYDEPLOY_FAKE_KV_KV_CLU_API_KEY", KV_SECRET);
    env.set("RAYDEPLOY_POLL_SECONDS", "0.05").set("RAYDEPLOY_READY_TIMEOUT", "60");
    deployed(&env);
    let (code, out) = plan_with_jobs(&env);
    assert_eq!(code, Some(2), "not run yet: {out}");
    let o = deploy(&env, &["--with-jobs"]);
    assert!(o.status.success(), "{}", text(&o));
    let stamp = job_inputs(&env, "report").expect("the RayJob stays, stamped");
    let (code, out) = plan_with_jobs(&env);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("RayJob/report: on the cluster (SUCCEEDED)"), "{out}");
    env.clear_calls();
    let o = deploy(&env, &["--with-jobs"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(mutating(&env), Vec::<String>::new(), "the succeeded job is not submitted again");

    // A fresh checkout: the stamped RayJob says the job succeeded with these inputs.
    env.fresh_checkout();
    let (code, out) = plan_with_jobs(&env);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("RayJob/report: on the cluster (SUCCEEDED), submitted by deploy --with-jobs with these inputs"),
        "{out}"
    );
    env.clear_calls();
    let o = deploy(&env, &["--with-jobs"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(mutating(&env), Vec::<String>::new(), "from a fresh checkout too: {}", text(&o));
    assert!(text(&o).contains("not submitted again"), "{}", text(&o));

    // `job submit` always submits, and does not stamp: a fresh checkout's deploy submits again
    // (stamping it with the same inputs as before).
    env.clear_calls();
    let o = env.raydeploy().args(["job", "submit", "report"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!env.find("kubectl", &["apply"]).is_empty(), "{:#?}", lines(&env.calls()));
    assert_eq!(job_inputs(&env, "report"), None);
    let fact = "on the cluster (SUCCEEDED, not submitted by deploy --with-jobs)";
    assert_eq!(resubmitted_from_a_fresh_checkout(&mut env, fact), stamp);

    // A RayJob deleted after it finished: submitted again from a fresh checkout.
    let o = env.raydeploy().args(["job", "delete", "report"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(resubmitted_from_a_fresh_checkout(&mut env, "not on the cluster"), stamp);

    // A changed job: submitted again, stamped with its new inputs.
    env.write_spec(&report(43));
    let fact = "on the cluster (SUCCEEDED, submitted with other inputs)";
    assert_ne!(resubmitted_from_a_fresh_checkout(&mut env, fact), stamp, "the new inputs' hash");
    assert_eq!(plan_with_jobs(&env).0, Some(0));
}

#[test]
fn dashboard_prints_the_url_and_reconnects_until_interrupted() {
    let mut env = sandbox();
    deployed(&env);
    env.set("RAYDEPLOY_FAKE_PORT_FORWARD_DROPS", "1");
    let child = env
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
        if pf.iter().any(|c| c.exit == "running") {
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
    assert!(pf.iter().any(|c| c.exit != "running"), "a dropped port-forward");
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
