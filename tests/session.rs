//! `raydeploy session`.
//!
//! On a cluster (target kubernetes, the fake helm and kubectl of tests/fakes): one `kubectl
//! port-forward` per endpoint, each listening on its local port and answering with what it
//! reached; a killed forward is reconnected (the reconnect is printed, the port answers again);
//! SIGINT ends the session with no kubectl left; `--print-env` leaves the forwards to a
//! background process that `eval` does not wait for and that SIGTERM ends cleanly; `--port`
//! mistakes are usage errors (exit 1, nothing run).
//!
//! On target local, for real (in a network namespace, see tests/support/local_env.rs): the
//! example is deployed, `session --output json` names the Ray client, and the deployment's own
//! Python connects with `ray.init("ray://…")` and runs tasks on the cluster.

#[path = "support/kube_env.rs"]
mod kube_env;
#[path = "support/local_env.rs"]
mod local_env;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use kube_env::KubeEnv;
use serde_json::Value;

const SPEC: &str = r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: sess
target: kubernetes

kubernetes:
  registry: 127.0.0.1:5999/acme/ray-sess

image:
  rayVersion: "2.52.0"
  python: "3.12"

cluster:
  namespace: rayns
  head:
    cpu: 1
    memory: 2Gi
    rayStartParams: { ray-client-server-port: "10101" }
  workerGroups:
    - name: cpu
      cpu: 1
      memory: 2Gi
      replicas: 1
"#;

/// Long enough for anything that should happen to happen; reaching it fails the test.
const PATIENCE: Duration = Duration::from_secs(120);

fn sandbox() -> KubeEnv {
    let mut env = KubeEnv::new(SPEC, &["helm", "kubectl", "az"]);
    env.add_script("docker", kube_env::NAME_ONLY_DOCKER);
    env.set("RAYDEPLOY_POLL_SECONDS", "0.05");
    env.set("RAYDEPLOY_READY_TIMEOUT", "60");
    env
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn deployed() -> KubeEnv {
    let env = sandbox();
    let o = env.raydeploy().args(["deploy", "--auto-approve"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    env.clear_calls();
    env
}

/// Three free local ports (distinct).
fn free_ports() -> [u16; 3] {
    let ls: Vec<std::net::TcpListener> =
        (0..3).map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap()).collect();
    [0, 1, 2].map(|i| ls[i].local_addr().unwrap().port())
}

fn port_args(p: [u16; 3]) -> Vec<String> {
    ["dashboard", "client", "serve"]
        .iter()
        .zip(p)
        .flat_map(|(n, p)| ["--port".to_string(), format!("{n}={p}")])
        .collect()
}

/// The line the fake port-forward on `port` answers with.
fn answer(port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(PATIENCE))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.trim().to_string())
}

/// Whether `pid` is a process that has not ended (a zombie has).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with(['Z', 'X']))
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a process this test started or a fake it started.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Lines of a child's stream, read on a thread.
fn lines(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads `rx` into `seen` until a line satisfies `pred` (true) or PATIENCE runs out (false).
fn wait_line(rx: &Receiver<String>, seen: &mut Vec<String>, pred: impl Fn(&str) -> bool) -> bool {
    let end = Instant::now() + PATIENCE;
    while Instant::now() < end {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) => {
                let hit = pred(&l);
                seen.push(l);
                if hit {
                    return true;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
    false
}

/// Waits until `cond` holds (true) or PATIENCE runs out (false).
fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + PATIENCE;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The port-forwards the fake recorded as listening: (local:remote pair, pid).
fn forwards(env: &KubeEnv) -> Vec<(String, u32)> {
    env.find("kubectl", &["port-forward"])
        .into_iter()
        .filter(|c| c.exit == "running")
        .map(|c| {
            let pair = c.argv.iter().find(|a| a.contains(':') && !a.starts_with('-')).unwrap().clone();
            (pair, c.pid.expect("the fake logs its pid"))
        })
        .collect()
}

/// `raydeploy ARGS…` in the background: the child (killed if a test fails) and the lines of its
/// standard output and error.
fn spawn_session(env: &KubeEnv, args: &[String]) -> (Reap, Receiver<String>, Receiver<String>) {
    let mut child = env
        .raydeploy_std()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(child.stdout.take().unwrap());
    let err = lines(child.stderr.take().unwrap());
    (Reap(child), out, err)
}

/// Kills a child left running by a failed assertion.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn session_forwards_each_endpoint_reconnects_a_dropped_one_and_stops_on_sigint() {
    let env = deployed();
    let ports = free_ports();
    let [dash, client, serve] = ports;
    let mut args = vec!["session".to_string(), "--output".into(), "json".into()];
    args.extend(port_args(ports));
    let (mut child, out, err) = spawn_session(&env, &args);
    let mut seen = vec![];

    // One JSON object on one line, once every forward is up.
    let first = out.recv_timeout(PATIENCE).unwrap_or_else(|_| {
        let e: Vec<String> = err.try_iter().collect();
        panic!("no JSON line; stderr:\n{}", e.join("\n"))
    });
    let v: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(v["format_version"], 1, "{v:#}");
    assert_eq!(v["deployment"], "sess");
    assert_eq!(v["target"], "kubernetes");
    assert_eq!(v["ray_address"], format!("http://127.0.0.1:{dash}"));
    assert_eq!(v["dashboard_url"], format!("http://127.0.0.1:{dash}"));
    assert_eq!(v["ray_client"], format!("ray://127.0.0.1:{client}"));
    assert_eq!(v["serve_url"], format!("http://127.0.0.1:{serve}"));
    assert_eq!(v["ports"], serde_json::json!({"dashboard": dash, "client": client, "serve": serve}));
    assert_eq!(v["env"]["RAY_ADDRESS"], format!("http://127.0.0.1:{dash}"));
    assert_eq!(v["env"]["RAYDEPLOY_RAY_CLIENT"], format!("ray://127.0.0.1:{client}"));
    assert!(v["forwarding"].as_str().unwrap().contains("svc/sess-head-svc"), "{v:#}");

    // One forward per endpoint, to the head service's port for it (the client's moved by the
    // head's rayStartParams), each answering on its local port.
    let calls = env.find("kubectl", &["port-forward", "svc/sess-head-svc"]);
    assert_eq!(calls.len(), 3, "{calls:#?}");
    assert!(calls.iter().all(|c| c.has(&["-n", "rayns", "--address", "127.0.0.1"])), "{calls:#?}");
    assert_eq!(answer(dash).unwrap(), "svc/sess-head-svc:8265");
    assert_eq!(answer(client).unwrap(), "svc/sess-head-svc:10101");
    assert_eq!(answer(serve).unwrap(), "svc/sess-head-svc:8000");

    // The client's forward dies: the session says so, starts it again, and the port answers.
    let pair = format!("{client}:10101");
    let (_, pid) = forwards(&env).into_iter().find(|(p, _)| *p == pair).expect("the client's forward");
    signal(pid, libc::SIGKILL);
    // With --output json, what follows the object is the run's events, one JSON object a line.
    let event = |l: &str, start: &str| {
        serde_json::from_str::<Value>(l).is_ok_and(|e| {
            e["event"] == "info" && e["phase"] == "client" && e["message"].as_str().unwrap_or("").starts_with(start)
        })
    };
    assert!(wait_line(&out, &mut seen, |l| event(l, "dropped: ")), "no drop event:\n{}", seen.join("\n"));
    assert!(
        wait_line(&out, &mut seen, |l| event(
            l,
            &format!("reconnected: 127.0.0.1:{client} -> svc/sess-head-svc:10101")
        )),
        "no reconnect event:\n{}",
        seen.join("\n")
    );
    assert_eq!(answer(client).unwrap(), "svc/sess-head-svc:10101");
    // The other forwards were left alone.
    let up = forwards(&env);
    assert_eq!(up.iter().filter(|(p, _)| *p == pair).count(), 2, "{up:?}");
    assert_eq!(up.len(), 4, "{up:?}");

    // Ctrl-C: the session ends, cleanly, and no kubectl is left.
    let pids: Vec<u32> = forwards(&env).into_iter().map(|(_, p)| p).collect();
    signal(child.0.id(), libc::SIGINT);
    let status = child.0.wait().unwrap();
    seen.extend(err.iter());
    assert_eq!(status.code(), Some(0), "{}", seen.join("\n"));
    let left: Vec<u32> = pids.into_iter().filter(|p| running(*p)).collect();
    assert!(left.is_empty(), "port-forwards still running: {left:?}");
    let stopped = env.find("kubectl", &["port-forward"]);
    assert_eq!(stopped.iter().filter(|c| c.exit == "signal 2").count(), 3, "{stopped:#?}");
}

#[test]
fn session_text_names_what_to_use_and_default_ports_are_free_ones() {
    let env = deployed();
    let (mut child, out, _err) = spawn_session(&env, &["session".to_string()]);
    let mut seen = vec![];
    assert!(wait_line(&out, &mut seen, |l| l.contains("Ctrl-C to stop")), "{}", seen.join("\n"));
    let t = seen.join("\n");
    assert!(t.contains("port-forwards to svc/sess-head-svc in namespace rayns"), "{t}");
    let port_of = |label: &str, prefix: &str| -> u16 {
        let l = seen.iter().find(|l| l.trim_start().starts_with(label)).unwrap_or_else(|| panic!("{label}: {t}"));
        let rest = &l[l.find(prefix).unwrap_or_else(|| panic!("{prefix} in {l}")) + prefix.len()..];
        rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap()
    };
    let dash = port_of("dashboard", "http://127.0.0.1:");
    let client = port_of("client", "ray.init(\"ray://127.0.0.1:");
    let serve = port_of("serve", "http://127.0.0.1:");
    assert!(t.contains(&format!("RAY_ADDRESS=http://127.0.0.1:{dash} ray job submit")), "{t}");
    assert_eq!(answer(dash).unwrap(), "svc/sess-head-svc:8265");
    assert_eq!(answer(client).unwrap(), "svc/sess-head-svc:10101");
    assert_eq!(answer(serve).unwrap(), "svc/sess-head-svc:8000");
    signal(child.0.id(), libc::SIGINT);
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}

#[test]
fn print_env_leaves_the_forwards_to_a_background_process_that_sigterm_ends() {
    let env = deployed();
    let ports = free_ports();
    let [dash, client, serve] = ports;
    // What a shell does with it: `eval` returns, the variables are set.
    let script = r#"eval "$("$0" session --print-env "$@")" && echo "$RAY_ADDRESS $RAYDEPLOY_RAY_CLIENT $RAYDEPLOY_SERVE_URL $RAYDEPLOY_SESSION_PID""#;
    let mut sh = std::process::Command::new("/bin/sh");
    sh.env_clear().current_dir(&env.spec_dir);
    for (k, v) in &env.vars {
        sh.env(k, v);
    }
    let o = sh
        .args(["-c", script])
        .arg(assert_cmd::cargo::cargo_bin("raydeploy"))
        .args(port_args(ports))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let words: Vec<String> = String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect();
    assert_eq!(words.len(), 4, "{}", text(&o));
    assert_eq!(words[0], format!("http://127.0.0.1:{dash}"));
    assert_eq!(words[1], format!("ray://127.0.0.1:{client}"));
    assert_eq!(words[2], format!("http://127.0.0.1:{serve}"));
    let pid: u32 = words[3].parse().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("kill $RAYDEPLOY_SESSION_PID"), "{}", text(&o));
    let reap = |pid: u32| {
        signal(pid, libc::SIGKILL);
        for (_, p) in forwards(&env) {
            signal(p, libc::SIGKILL);
        }
    };
    let guard = scopeguard(move || reap(pid));

    // The forwards outlived the command that printed them.
    assert!(running(pid));
    assert_eq!(answer(dash).unwrap(), "svc/sess-head-svc:8265");
    assert_eq!(answer(client).unwrap(), "svc/sess-head-svc:10101");
    assert_eq!(answer(serve).unwrap(), "svc/sess-head-svc:8000");
    let pids: Vec<u32> = forwards(&env).into_iter().map(|(_, p)| p).collect();
    assert_eq!(pids.len(), 3);

    // SIGTERM ends it and its forwards.
    signal(pid, libc::SIGTERM);
    assert!(wait_until(|| !running(pid)), "the background session did not end");
    let left: Vec<u32> = pids.into_iter().filter(|p| running(*p)).collect();
    assert!(left.is_empty(), "port-forwards still running: {left:?}");
    drop(guard);
}

/// Runs `f` when dropped (cleanup after a failed assertion).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct G<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for G<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    G(Some(f))
}

#[test]
fn port_mistakes_are_usage_errors_and_run_nothing() {
    let env = sandbox();
    let cases: [(&[&str], &str); 6] = [
        (&["--port", "dashbord=18265"], "unknown port name `dashbord`: expected one of dashboard, client, serve"),
        (&["--port", "serve=0"], "`0` is not a port number (1 to 65535)"),
        (&["--port", "serve=65536"], "`65536` is not a port number"),
        (&["--port", "18265"], "expected NAME=PORT"),
        (&["--port", "client=18001", "--port", "client=18002"], "--port client=… is given more than once"),
        (&["--port", "client=18001", "--port", "serve=18001"], "name the same local port"),
    ];
    for (args, want) in cases {
        let o = env.raydeploy().arg("session").args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(want), "{args:?}: {e}");
        assert!(e.contains("For more information, try '--help'"), "{args:?}: {e}");
    }
    let o = env.raydeploy().args(["session", "--print-env", "--output", "json"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(env.calls().is_empty(), "{:#?}", env.calls());
}

#[test]
fn a_port_in_use_or_a_missing_cluster_stops_before_any_forward() {
    let env = sandbox();
    let o = env.raydeploy().arg("session").output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no service rayns/sess-head-svc: deploy the cluster first"), "{}", text(&o));

    let env = deployed();
    let busy = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let n = busy.local_addr().unwrap().port();
    let o = env.raydeploy().args(["session", "--port", &format!("client={n}")]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(&format!("--port client={n}: 127.0.0.1:{n} cannot be used")), "{}", text(&o));
    assert!(env.find("kubectl", &["port-forward"]).is_empty());
}

// ---------------------------------------------------------------------------------------------
// target local, for real

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/local")
}

/// Connects with the Ray client, runs tasks on the cluster, and reads Serve's port as the head's
/// processes have it.
const CLIENT: &str = r#"
import os, sys, ray
ray.init(sys.argv[1])

@ray.remote
def square(x):
    return x * x

print("sum of squares:", sum(ray.get([square.remote(i) for i in range(10)])))

@ray.remote(num_cpus=0, resources={"group:head": 0.001})
def serve_port():
    return os.environ.get("RAY_SERVE_DEFAULT_HTTP_PORT")

print("serve port:", ray.get(serve_port.remote()))
print("nodes:", len([n for n in ray.nodes() if n["Alive"]]))
ray.shutdown()
"#;

/// The logs of the head's Ray client server and of the servers it started, for a failure message.
fn client_server_logs(dep: &local_env::LocalDeployment) -> String {
    let temp = dep.state()["data"]["local"]["temp_dir"].as_str().unwrap_or_default().to_string();
    let logs = PathBuf::from(temp).join("session_latest/logs");
    let mut out = String::new();
    for e in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("ray_client_server") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
            out.push_str(&format!("--- {name}\n{}\n", tail.join("\n")));
        }
    }
    out
}

#[test]
fn local_session_names_the_head_client_server_and_a_ray_client_runs_tasks_through_it() {
    use local_env::{LocalDeployment, expect_code, ray_lock};
    let _one_cluster = ray_lock();
    let dep = LocalDeployment::new(&example(), "local-session");
    expect_code(&dep.raydeploy(&["deploy"]), 0, "deploy");

    let (out, _) = expect_code(&dep.raydeploy(&["session", "--output", "json"]), 0, "session --output json");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(out.trim().lines().count(), 1, "{out}");
    let st = dep.state();
    let head = &st["data"]["local"]["nodes"]["head"]["ports"];
    assert_eq!(v["ray_client"], format!("ray://127.0.0.1:{}", head["ray-client-server-port"]), "{v:#}");
    assert_eq!(v["ray_address"], st["data"]["local"]["dashboard_url"], "{v:#}");
    assert_eq!(v["serve_url"], format!("http://127.0.0.1:{}", head["serve-http-port"]), "{v:#}");
    assert!(v["forwarding"].is_null() && v["pid"].is_null(), "{v:#}");

    // The head's processes run without gRPC's fork handlers: with them, the client server's
    // fork of a server per client could crash before its exec (the client then fails with
    // "Starting Ray client server failed").
    let gcs = st["data"]["local"]["nodes"]["head"]["procs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "gcs_server")
        .map(|p| p["pid"].as_u64().unwrap())
        .unwrap();
    let environ = std::fs::read(format!("/proc/{gcs}/environ")).unwrap();
    assert!(environ.split(|b| *b == 0).any(|kv| kv == b"GRPC_ENABLE_FORK_SUPPORT=false"), "gcs_server's environment");

    // The deployment's own Python, as a notebook would use it; each connection gets a server of
    // its own from the head's client server.
    let python = dep.dir.join("venv/bin/python");
    for _ in 0..3 {
        let o = dep.ns.command(&python).args(["-c", CLIENT, v["ray_client"].as_str().unwrap()]).output().unwrap();
        let (pout, perr) = local_env::text(&o);
        assert!(o.status.success(), "the Ray client failed:\n{pout}\n{perr}\n{}", client_server_logs(&dep));
        assert!(pout.contains("sum of squares: 285"), "{pout}\n{perr}");
        assert!(pout.contains(&format!("serve port: {}", head["serve-http-port"])), "{pout}\n{perr}");
        assert!(pout.contains("nodes: 3"), "{pout}\n{perr}");
        print!("{pout}");
    }

    // The other forms; a local session holds nothing, so each returns.
    let (out, _) = expect_code(&dep.raydeploy(&["session"]), 0, "session");
    assert!(out.contains(&format!("ray.init(\"{}\")", v["ray_client"].as_str().unwrap())), "{out}");
    assert!(!out.contains("Ctrl-C"), "{out}");
    let (out, _) = expect_code(&dep.raydeploy(&["session", "--print-env"]), 0, "session --print-env");
    assert!(out.contains(&format!("export RAYDEPLOY_RAY_CLIENT={}\n", v["ray_client"].as_str().unwrap())), "{out}");
    assert!(out.contains(&format!("export RAY_SERVE_DEFAULT_HTTP_PORT={}\n", head["serve-http-port"])), "{out}");
    assert!(!out.contains("RAYDEPLOY_SESSION_PID"), "{out}");
    let (_, err) = expect_code(&dep.raydeploy(&["session", "--port", "client=18001"]), 1, "session --port");
    assert!(err.contains("target local forwards nothing"), "{err}");

    expect_code(&dep.raydeploy(&["destroy"]), 0, "destroy");
    assert!(dep.marked().is_empty(), "processes left: {:?}", dep.marked());
}
