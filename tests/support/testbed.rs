//! A real Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler, kwok (fake kubelets: nodes and pods that reach Ready without containers) and,
//! when asked, the KubeRay operator, all listening on 127.0.0.1 of a private network namespace
//! that the test bed creates (`unshare -n`, held by a `sleep`; every program runs in it through
//! `nsenter -t PID -n`). Fixed ports are fine: each test bed has its own namespace.
//!
//! The programs are the ones `tests/testbed/build.sh` builds (at the versions in
//! `tests/testbed/versions`), found in `$RAYDEPLOY_TESTBED_BIN` (default
//! `~/.cache/raydeploy/testbed/bin`); when any is missing, starting a test bed panics, naming them.
//!
//! A test bed writes a CA, serving and client certificates and an admin kubeconfig
//! (`system:masters`) into its own temporary folder, waits for each component by condition
//! (etcd's /health, the API server's /readyz, listening ports, a node's Ready condition), never by
//! a fixed sleep, and stops exactly the processes it started when dropped: SIGTERM, then SIGKILL
//! after a bounded wait. Every process also gets SIGKILL as its parent-death signal (it is
//! spawned from a thread that lives as long as the test process), so that a test process that
//! dies leaves nothing running.
//!
//! One test bed is shared by the tests of a test binary ([`shared`]), each test in a Kubernetes
//! namespace of its own ([`TestBed::namespace`]); it is stopped when the test binary exits.
//! `RAYDEPLOY_TESTBED_KEEP=1` keeps the bed's folder (logs, certificates, kubeconfig) afterwards.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const ETCD_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;
pub const APISERVER_PORT: u16 = 6443;
pub const CONTROLLER_MANAGER_PORT: u16 = 10257;
pub const SCHEDULER_PORT: u16 = 10259;
pub const KWOK_PORT: u16 = 10247;
pub const OPERATOR_METRICS_PORT: u16 = 8080;
pub const OPERATOR_PROBE_PORT: u16 = 8082;
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The annotation that puts a node in kwok's hands.
pub const KWOK_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

/// The programs a test bed runs or tests use, as `tests/testbed/build.sh` names them.
pub const PROGRAMS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "kwok-stages.yaml",
    "kuberay-operator",
    "helm3",
    "helm4",
];

/// How long starting each component may take, generously: a 2-core machine under load.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a stopped process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared KubeRay reference data (`../shared/kuberay`).
pub fn kuberay_data() -> PathBuf {
    repo_root().join("../shared/kuberay")
}

/// Where the test bed's programs are: `$RAYDEPLOY_TESTBED_BIN`, else `~/.cache/raydeploy/testbed/bin`.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("RAYDEPLOY_TESTBED_BIN").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/raydeploy/testbed/bin")
    })
}

/// Panics, naming them, when any of the test bed's programs is missing.
pub fn check_programs() -> PathBuf {
    let dir = bin_dir();
    let missing: Vec<&str> = PROGRAMS.iter().copied().filter(|p| !dir.join(p).is_file()).collect();
    assert!(
        missing.is_empty(),
        "the Kubernetes test bed's programs are missing from {} ($RAYDEPLOY_TESTBED_BIN): {}. \
         Build them with `bash tests/testbed/build.sh` (.ci/run does), or point \
         RAYDEPLOY_TESTBED_BIN at a folder that has them.",
        dir.display(),
        missing.join(", ")
    );
    dir
}

/// A program of the test bed, by its name in [`PROGRAMS`].
pub fn program(name: &str) -> PathBuf {
    check_programs().join(name)
}

/// Polls `f` every 250 ms until it gives a value, for at most `timeout`; panics with `what` (and
/// the last note `f` left) when time is up.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut(&mut String) -> Option<T>) -> T {
    let t0 = Instant::now();
    let mut note = String::new();
    loop {
        if let Some(v) = f(&mut note) {
            return v;
        }
        assert!(t0.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}; last seen: {note}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ---------------------------------------------------------------------------------------------
// Spawning with a parent-death signal

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// A thread that lives as long as the test process and spawns the long-running programs: the
/// parent-death signal (SIGKILL) fires when the spawning *thread* ends, so it must not be a test's.
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testbed-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    })
}

/// Spawns `cmd` so that it gets SIGKILL when the test process ends, however it ends.
fn spawn_tied(mut cmd: Command) -> std::io::Result<Child> {
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner().lock().unwrap_or_else(|e| e.into_inner()).send((cmd, tx)).expect("spawner thread runs");
    rx.recv().expect("spawner thread answers")
}

// ---------------------------------------------------------------------------------------------
// Certificates

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs (it makes the test bed's certificates)");
    assert!(out.status.success(), "openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A CA, the API server's serving certificate, the service-account key pair and an admin client
/// certificate (`O=system:masters`), in `dir`.
fn make_pki(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let days = ["-days", "3650"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(days);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=raydeploy-testbed-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    ]);
    openssl(dir, &ca);
    let leaf = |name: &str, subj: &str, ext: &[&str]| {
        let key = format!("{name}.key");
        let crt = format!("{name}.crt");
        let mut a = vec!["req", "-x509", "-CA", "ca.crt", "-CAkey", "ca.key"];
        a.extend(ec);
        a.extend(days);
        a.extend(["-keyout", &key, "-out", &crt, "-subj", subj]);
        for e in ext {
            a.extend(["-addext", e]);
        }
        openssl(dir, &a);
    };
    leaf(
        "apiserver",
        "/CN=kube-apiserver",
        &[
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=serverAuth",
            "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,\
             DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local",
        ],
    );
    leaf(
        "admin",
        "/O=system:masters/CN=raydeploy-testbed-admin",
        &[
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=clientAuth",
        ],
    );
    openssl(dir, &["genrsa", "-out", "sa.key", "2048"]);
    openssl(dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
}

fn kubeconfig_text(pki: &Path) -> String {
    use base64::Engine;
    let b64 = |f: &str| base64::engine::general_purpose::STANDARD.encode(std::fs::read(pki.join(f)).unwrap());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testbed\n  cluster:\n    server: https://127.0.0.1:{APISERVER_PORT}\n    \
         certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    \
         client-key-data: {}\ncontexts:\n- name: testbed\n  context:\n    cluster: testbed\n    user: admin\n\
         current-context: testbed\n",
        b64("ca.crt"),
        b64("admin.crt"),
        b64("admin.key")
    )
}

// ---------------------------------------------------------------------------------------------
// The test bed

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// A kwok node to add ([`TestBed::add_node`]).
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// (key, value, effect)
    pub taints: Vec<(String, String, String)>,
    pub cpu: String,
    pub memory: String,
    pub pods: String,
    /// `nvidia.com/gpu` in capacity and allocatable (none when 0).
    pub gpus: u32,
}

impl NodeSpec {
    /// 8 CPUs, 32 GiB, 110 pods, no GPU.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            labels: BTreeMap::new(),
            taints: vec![],
            cpu: "8".into(),
            memory: "32Gi".into(),
            pods: "110".into(),
            gpus: 0,
        }
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        self.taints.push((key.into(), value.into(), effect.into()));
        self
    }
    pub fn cpu(mut self, cpu: &str) -> Self {
        self.cpu = cpu.into();
        self
    }
    pub fn memory(mut self, memory: &str) -> Self {
        self.memory = memory.into();
        self
    }
    pub fn pods(mut self, pods: &str) -> Self {
        self.pods = pods.into();
        self
    }
    pub fn gpus(mut self, gpus: u32) -> Self {
        self.gpus = gpus;
        self
    }

    pub fn manifest(&self) -> Value {
        let mut labels = serde_json::Map::new();
        labels.insert("kubernetes.io/hostname".into(), json!(self.name));
        labels.insert("kubernetes.io/os".into(), json!("linux"));
        labels.insert("kubernetes.io/arch".into(), json!("amd64"));
        labels.insert("type".into(), json!("kwok"));
        for (k, v) in &self.labels {
            labels.insert(k.clone(), json!(v));
        }
        let mut resources = json!({"cpu": self.cpu, "memory": self.memory, "pods": self.pods});
        if self.gpus > 0 {
            resources["nvidia.com/gpu"] = json!(self.gpus.to_string());
        }
        let taints: Vec<Value> =
            self.taints.iter().map(|(k, v, e)| json!({"key": k, "value": v, "effect": e})).collect();
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "annotations": {KWOK_ANNOTATION.0: KWOK_ANNOTATION.1, "node.alpha.kubernetes.io/ttl": "0"},
                "labels": labels,
            },
            "spec": {"taints": taints},
            "status": {"capacity": resources.clone(), "allocatable": resources},
        })
    }
}

/// A running control plane (see the module's documentation).
pub struct TestBed {
    /// The bed's folder: certificates (`pki/`), `kubeconfig`, etcd's data, `logs/`, `home/`.
    pub dir: PathBuf,
    /// The admin kubeconfig (`system:masters`), for use inside the namespace.
    pub kubeconfig: PathBuf,
    pub bin: PathBuf,
    netns: Mutex<Option<Child>>,
    netns_pid: u32,
    procs: Mutex<Vec<Proc>>,
    crds: Mutex<bool>,
    operator: Mutex<bool>,
    /// How long [`TestBed::start`] took.
    pub started_in: Duration,
    nodes: AtomicUsize,
}

impl TestBed {
    /// Starts etcd, the API server, the controller manager, the scheduler and kwok, and waits
    /// until each is ready. The KubeRay CRDs and operator are separate
    /// ([`TestBed::install_kuberay_crds`], [`TestBed::start_operator`]).
    pub fn start() -> TestBed {
        let t0 = Instant::now();
        let bin = check_programs();
        let dir = tempfile::Builder::new().prefix("rd-testbed").tempdir().expect("tempdir").keep();
        for d in ["logs", "home", "etcd"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::set_permissions(dir.join("etcd"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let mut holder = Command::new("unshare");
        holder
            .args(["-n", "sh", "-c", "ip link set lo up && echo up && exec sleep infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut holder = spawn_tied(holder).expect("unshare -n (root and util-linux are needed)");
        let mut line = [0u8; 3];
        holder.stdout.take().unwrap().read_exact(&mut line).expect("the namespace's holder reports");
        assert_eq!(&line, b"up\n", "the namespace's loopback did not come up");
        let netns_pid = holder.id();
        let mut bed = TestBed {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            bin,
            netns: Mutex::new(Some(holder)),
            netns_pid,
            procs: Mutex::new(vec![]),
            crds: Mutex::new(false),
            operator: Mutex::new(false),
            started_in: Duration::ZERO,
            nodes: AtomicUsize::new(0),
        };
        // From here on, a panic drops `bed`, which stops what was started.
        let pki = bed.dir.join("pki");
        make_pki(&pki);
        std::fs::write(&bed.kubeconfig, kubeconfig_text(&pki)).unwrap();
        bed.start_etcd();
        bed.start_apiserver();
        bed.start_controllers();
        bed.started_in = t0.elapsed();
        bed
    }

    pub fn pki(&self, file: &str) -> PathBuf {
        self.dir.join("pki").join(file)
    }

    /// PID of the process holding the network namespace.
    pub fn netns_pid(&self) -> u32 {
        self.netns_pid
    }

    /// `program` inside the namespace, with `HOME` in the bed's folder and `KUBECONFIG` set.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.netns_pid.to_string(), "-n", "--"])
            .arg(program)
            .env("HOME", self.dir.join("home"))
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null());
        c
    }

    /// Starts a long-running program of the bed, its output going to `logs/<name>.log`.
    fn launch(&self, name: &str, program: &str, args: &[String], env: &[(&str, &str)]) {
        let log = self.dir.join("logs").join(format!("{name}.log"));
        // Appended to: a component started again (`restart`) keeps its earlier log.
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut c = self.command(self.bin.join(program));
        c.args(args).stdout(out.try_clone().unwrap()).stderr(out);
        for (k, v) in env {
            c.env(k, v);
        }
        let child = spawn_tied(c).unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).push(Proc { name: name.into(), child, log });
    }

    /// The PIDs of the processes this bed started (and still runs), by name.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        procs.iter().map(|p| (p.name.clone(), p.child.id())).collect()
    }

    /// The last `n` lines of a component's log.
    pub fn log_tail(&self, name: &str, n: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("logs").join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Panics, with its log, when a component has exited.
    pub fn check_alive(&self) {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        for p in procs.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                let name = p.name.clone();
                drop(procs);
                panic!(
                    "test bed: {name} exited ({status}); the end of {}:\n{}",
                    self.dir.join("logs").join(format!("{name}.log")).display(),
                    self.log_tail(&name, 40)
                );
            }
        }
    }

    /// Like [`wait_for`], failing early when a component died.
    pub fn wait_for<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut(&mut String) -> Option<T>) -> T {
        wait_for(what, timeout, |note| {
            self.check_alive();
            f(note)
        })
    }

    /// Whether something listens on 127.0.0.1:`port` (TCP) inside the namespace.
    pub fn listening(&self, port: u16) -> bool {
        let table = std::fs::read_to_string(format!("/proc/{}/net/tcp", self.netns_pid)).unwrap_or_default();
        let want = format!("0100007F:{port:04X}");
        table.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == want && f[3] == "0A"
        })
    }

    /// A plain-HTTP GET of `http://127.0.0.1:<port><path>` inside the namespace (from a thread that
    /// enters it): the status code and body, or None when nothing answers.
    pub fn http_get(&self, port: u16, path: &str) -> Option<(u16, String)> {
        let ns = format!("/proc/{}/ns/net", self.netns_pid);
        let path = path.to_string();
        std::thread::spawn(move || -> Option<(u16, String)> {
            let f = File::open(ns).ok()?;
            // SAFETY: setns on a file descriptor we own; it moves only this short-lived thread.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return None;
            }
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
            let mut resp = String::new();
            s.read_to_string(&mut resp).ok()?;
            let code = resp.split_whitespace().nth(1)?.parse().ok()?;
            let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
            Some((code, body))
        })
        .join()
        .ok()
        .flatten()
    }

    fn start_etcd(&self) {
        let a = |s: &str| s.to_string();
        let client = format!("http://127.0.0.1:{ETCD_PORT}");
        let peer = format!("http://127.0.0.1:{ETCD_PEER_PORT}");
        self.launch(
            "etcd",
            "etcd",
            &[
                a("--name=testbed"),
                format!("--data-dir={}", self.dir.join("etcd").display()),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster=testbed={peer}"),
                // CRDs such as RayJob's are large; a test bed needs no durability.
                a("--max-request-bytes=10485760"),
                a("--unsafe-no-fsync"),
                a("--log-level=warn"),
            ],
            &[],
        );
        self.wait_for("etcd's /health", START_TIMEOUT, |note| {
            let (code, body) = self.http_get(ETCD_PORT, "/health")?;
            *note = format!("{code} {body}");
            (code == 200 && body.contains("\"true\"")).then_some(())
        });
    }

    fn start_apiserver(&self) {
        let p = |f: &str| self.pki(f).display().to_string();
        let cert_dir = self.dir.join("apiserver");
        self.launch(
            "kube-apiserver",
            "kube-apiserver",
            &[
                format!("--etcd-servers=http://127.0.0.1:{ETCD_PORT}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={APISERVER_PORT}"),
                format!("--cert-dir={}", cert_dir.display()),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--authorization-mode=Node,RBAC".into(),
                "--allow-privileged=true".into(),
                // The `kubernetes` Service's endpoints cannot be a loopback address.
                "--endpoint-reconciler-type=none".into(),
                "--profiling=false".into(),
            ],
            &[],
        );
        self.wait_for("the API server's /readyz", START_TIMEOUT, |note| {
            let out = self.kubectl_output(&["get", "--raw=/readyz"]);
            *note = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            out.status.success().then_some(())
        });
    }

    fn start_controllers(&self) {
        let k = self.kubeconfig.display().to_string();
        let p = |f: &str| self.pki(f).display().to_string();
        let auth = |port: u16, dir: &str| {
            vec![
                format!("--kubeconfig={k}"),
                format!("--authentication-kubeconfig={k}"),
                format!("--authorization-kubeconfig={k}"),
                "--bind-address=127.0.0.1".to_string(),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", self.dir.join(dir).display()),
                "--leader-elect=false".to_string(),
            ]
        };
        let mut kcm = auth(CONTROLLER_MANAGER_PORT, "kube-controller-manager");
        kcm.extend([
            format!("--service-account-private-key-file={}", p("sa.key")),
            format!("--root-ca-file={}", p("ca.crt")),
            format!("--cluster-signing-cert-file={}", p("ca.crt")),
            format!("--cluster-signing-key-file={}", p("ca.key")),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--profiling=false".into(),
        ]);
        self.launch("kube-controller-manager", "kube-controller-manager", &kcm, &[]);
        let mut sched = auth(SCHEDULER_PORT, "kube-scheduler");
        sched.push("--profiling=false".into());
        self.launch("kube-scheduler", "kube-scheduler", &sched, &[]);
        self.launch(
            "kwok",
            "kwok",
            &[
                format!("--kubeconfig={k}"),
                format!("--config={}", self.bin.join("kwok-stages.yaml").display()),
                "--manage-all-nodes=false".into(),
                format!("--manage-nodes-with-annotation-selector={}={}", KWOK_ANNOTATION.0, KWOK_ANNOTATION.1),
                "--node-lease-duration-seconds=40".into(),
                "--cidr=10.244.0.1/16".into(),
                format!("--server-address=127.0.0.1:{KWOK_PORT}"),
            ],
            &[],
        );
        self.wait_for("the controller manager and the scheduler to listen", START_TIMEOUT, |note| {
            *note = format!(
                "controller manager: {}, scheduler: {}",
                self.listening(CONTROLLER_MANAGER_PORT),
                self.listening(SCHEDULER_PORT)
            );
            (self.listening(CONTROLLER_MANAGER_PORT) && self.listening(SCHEDULER_PORT)).then_some(())
        });
        self.wait_for("kwok's /healthz", START_TIMEOUT, |note| {
            let (code, body) = self.http_get(KWOK_PORT, "/healthz")?;
            *note = format!("{code} {body}");
            (code == 200).then_some(())
        });
        // The controller manager works: it gives namespace `default` its ServiceAccount.
        self.wait_for("the `default` ServiceAccount of namespace default", START_TIMEOUT, |note| {
            let out = self.kubectl_output(&["get", "serviceaccount", "default", "-n", "default", "-o", "name"]);
            *note = String::from_utf8_lossy(&out.stderr).into_owned();
            out.status.success().then_some(())
        });
    }

    /// `kubectl ARGS…` inside the namespace (output not checked).
    pub fn kubectl_output(&self, args: &[&str]) -> Output {
        self.command(self.bin.join("kubectl")).args(args).output().expect("kubectl runs")
    }

    /// `kubectl ARGS…` inside the namespace: its standard output; panics when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args);
        assert!(
            out.status.success(),
            "kubectl {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// `kubectl ARGS…` with `input` on standard input (for `-f -`); panics when it fails.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> String {
        let mut c = self.command(self.bin.join("kubectl"));
        c.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("kubectl runs");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_string();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let out = child.wait_with_output().expect("kubectl runs");
        let _ = writer.join();
        assert!(
            out.status.success(),
            "kubectl {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// `kubectl get ARGS… -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["get"];
        a.extend(args);
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&a)).expect("kubectl prints JSON")
    }

    /// `helm3` or `helm4` inside the namespace: its standard output; panics when it fails.
    pub fn helm(&self, helm: &str, args: &[&str]) -> String {
        let out = self.command(self.bin.join(helm)).args(args).output().expect("helm runs");
        assert!(
            out.status.success(),
            "{helm} {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Creates namespace `name` and waits for its `default` ServiceAccount (pods need it).
    pub fn namespace(&self, name: &str) -> String {
        self.kubectl(&["create", "namespace", name]);
        self.kubectl(&[
            "wait",
            "--for=create",
            "serviceaccount/default",
            "-n",
            name,
            &format!("--timeout={}s", START_TIMEOUT.as_secs()),
        ]);
        name.to_string()
    }

    /// Creates a kwok-managed node and waits until it is Ready (and schedulable: the controller
    /// manager has lifted its not-ready taint).
    pub fn add_node(&self, spec: &NodeSpec) {
        self.nodes.fetch_add(1, Ordering::Relaxed);
        self.kubectl_stdin(&["create", "-f", "-"], &spec.manifest().to_string());
        let name = spec.name.clone();
        self.wait_for(&format!("node {name} to be Ready without the not-ready taint"), START_TIMEOUT, |note| {
            let n = self.get_json(&["node", &name]);
            let ready = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let not_ready_taint = n["spec"]["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["key"].as_str().is_some_and(|k| k.starts_with("node.kubernetes.io/")));
            *note = format!("ready: {ready}, taints: {}", n["spec"]["taints"]);
            (ready && !not_ready_taint).then_some(())
        });
    }

    /// Applies the KubeRay CRDs of the reference data (the operator chart's `crds/`: RayCluster,
    /// RayJob, RayService, RayCronJob) server-side and waits until they are Established. Once.
    pub fn install_kuberay_crds(&self) {
        let mut done = self.crds.lock().unwrap_or_else(|e| e.into_inner());
        if *done {
            return;
        }
        let dir = kuberay_data().join("charts/kuberay-operator/crds");
        self.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &dir.display().to_string()]);
        // Polled here: `kubectl wait --for=condition=Established` fails outright on a CRD that
        // has no conditions yet.
        let crds = ["rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io", "raycronjobs.ray.io"];
        self.wait_for("the KubeRay CRDs to be Established", START_TIMEOUT, |note| {
            let pending: Vec<&str> = crds
                .iter()
                .copied()
                .filter(|crd| {
                    let c = self.get_json(&["crd", crd]);
                    !c["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Established" && c["status"] == "True")
                })
                .collect();
            *note = format!("not yet Established: {pending:?}");
            pending.is_empty().then_some(())
        });
        *done = true;
    }

    /// Starts the KubeRay operator (leader election off, metrics and probes on 127.0.0.1), after
    /// the CRDs it watches, and waits for its /readyz. Once.
    pub fn start_operator(&self) {
        let t0 = Instant::now();
        self.install_kuberay_crds();
        let mut started = self.operator.lock().unwrap_or_else(|e| e.into_inner());
        if *started {
            return;
        }
        let kubeconfig = self.kubeconfig.display().to_string();
        self.launch(
            "kuberay-operator",
            "kuberay-operator",
            &[
                format!("--metrics-addr=127.0.0.1:{OPERATOR_METRICS_PORT}"),
                format!("--health-probe-bind-address=127.0.0.1:{OPERATOR_PROBE_PORT}"),
                "--enable-leader-election=false".into(),
                "--log-stdout-encoder=console".into(),
            ],
            &[("KUBECONFIG", &kubeconfig)],
        );
        self.wait_for("the KubeRay operator's /readyz", START_TIMEOUT, |note| {
            let (code, body) = self.http_get(OPERATOR_PROBE_PORT, "/readyz")?;
            *note = format!("{code} {body}");
            (code == 200).then_some(())
        });
        *started = true;
        eprintln!("test bed: KubeRay CRDs and operator ready in {:.1} s", t0.elapsed().as_secs_f64());
    }

    /// Stops one component of the bed (`kube-apiserver`, `kuberay-operator`, …) by the PID it
    /// was started with: `signal` (SIGKILL: a crash; SIGTERM: a stop, then SIGKILL after
    /// [`STOP_GRACE`]), waits for it to exit and forgets it, so that [`TestBed::check_alive`]
    /// does not count it as dead. [`TestBed::restart`] starts it again.
    pub fn stop_component(&self, name: &str, signal: libc::c_int) {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let i = procs.iter().position(|p| p.name == name).unwrap_or_else(|| panic!("the bed runs no {name}"));
        let mut p = procs.remove(i);
        drop(procs);
        if let Ok(None) = p.child.try_wait() {
            // SAFETY: kill(2) on our own child, not yet reaped, so its PID is still its own.
            unsafe {
                libc::kill(p.child.id() as libc::pid_t, signal);
            }
        }
        let t0 = Instant::now();
        while t0.elapsed() < STOP_GRACE && matches!(p.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = p.child.kill();
        let _ = p.child.wait();
        if name == "kuberay-operator" {
            *self.operator.lock().unwrap_or_else(|e| e.into_inner()) = false;
        }
    }

    /// Starts a component stopped by [`TestBed::stop_component`] again, with the same flags, and
    /// waits until it is ready (the API server's /readyz, the operator's /readyz).
    pub fn restart(&self, name: &str) {
        match name {
            "kube-apiserver" => self.start_apiserver(),
            "kuberay-operator" => self.start_operator(),
            other => panic!("restarting {other} is not supported"),
        }
    }

    /// Stops every process this bed started (SIGTERM, then SIGKILL after [`STOP_GRACE`]), then the
    /// namespace, and removes the bed's folder unless `RAYDEPLOY_TESTBED_KEEP` is set. Idempotent.
    pub fn stop(&self) {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        for p in procs.iter_mut().rev() {
            if let Ok(None) = p.child.try_wait() {
                // SAFETY: kill(2) on our own child, not yet reaped, so its PID is still its own.
                unsafe {
                    libc::kill(p.child.id() as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        let t0 = Instant::now();
        while t0.elapsed() < STOP_GRACE && procs.iter_mut().any(|p| matches!(p.child.try_wait(), Ok(None))) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for p in procs.iter_mut() {
            if let Ok(None) = p.child.try_wait() {
                let _ = p.child.kill();
            }
            let _ = p.child.wait();
        }
        procs.clear();
        if let Some(mut holder) = self.netns.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = holder.kill();
            let _ = holder.wait();
        }
        if std::env::var_os("RAYDEPLOY_TESTBED_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        self.stop();
    }
}

static SHARED: OnceLock<TestBed> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(bed) = SHARED.get() {
        bed.stop();
    }
}

/// The test binary's shared test bed, started on first use and stopped when the test binary
/// exits. The KubeRay CRDs and operator are for the tests to add ([`TestBed::start_operator`]).
pub fn shared() -> &'static TestBed {
    SHARED.get_or_init(|| {
        let bed = TestBed::start();
        eprintln!("test bed: started in {:.1} s ({})", bed.started_in.as_secs_f64(), bed.dir.display());
        // SAFETY: registers a plain function, run once at exit; it only signals and reaps children.
        unsafe {
            libc::atexit(stop_shared);
        }
        bed
    })
}

/// Runs `f` with a namespace of its own on the shared test bed.
pub fn in_namespace<T>(name: &str, f: impl FnOnce(&TestBed, &str) -> T) -> T {
    let bed = shared();
    let ns = bed.namespace(name);
    f(bed, &ns)
}

/// A validating admission webhook that never answers, for the creates and updates of
/// Deployments in one namespace: the API server holds each such request until the webhook's
/// timeout (30 s), then refuses it (`failurePolicy: Fail`). What a slow or unreachable webhook
/// does on a real cluster; here it keeps a client (Helm) inside an operation until a test has
/// seen what it wrote first.
///
/// The webhook's server is a listener on 127.0.0.1 inside the bed's network namespace that
/// accepts connections and holds them without a word (the API server waits for the TLS
/// handshake). [`AdmissionHold::new`] returns once the API server sends requests to it (a
/// server-side dry run is held); dropping it deletes the configuration, waits until a dry run
/// passes again, and closes the held connections (their requests are refused).
pub struct AdmissionHold<'a> {
    bed: &'a TestBed,
    name: String,
    namespace: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accepted: std::sync::Arc<AtomicUsize>,
    listener: Option<std::thread::JoinHandle<()>>,
}

impl<'a> AdmissionHold<'a> {
    pub fn new(bed: &'a TestBed, namespace: &str) -> Self {
        use base64::Engine;
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (port_tx, port_rx) = mpsc::channel();
        let ns_path = format!("/proc/{}/ns/net", bed.netns_pid);
        let (s, a) = (stop.clone(), accepted.clone());
        let listener = std::thread::spawn(move || {
            let f = File::open(ns_path).expect("the bed's network namespace");
            // SAFETY: setns on a file descriptor we own; it moves only this thread.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
            let l = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("a listener in the namespace");
            l.set_nonblocking(true).unwrap();
            port_tx.send(l.local_addr().unwrap().port()).unwrap();
            let mut held = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        held.push(c);
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        let port = port_rx.recv().expect("the listener's port");
        let name = format!("hold-deployments-{namespace}");
        let _ = bed.kubectl_output(&["create", "namespace", namespace]);
        let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(bed.pki("ca.crt")).unwrap());
        let config = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "hold.testbed.raydeploy.io",
                "clientConfig": {"url": format!("https://127.0.0.1:{port}/hold"), "caBundle": ca},
                "rules": [{
                    "apiGroups": ["apps"], "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["deployments"],
                }],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 30,
            }],
        });
        bed.kubectl_stdin(&["apply", "-f", "-"], &config.to_string());
        let hold =
            AdmissionHold { bed, name, namespace: namespace.to_string(), stop, accepted, listener: Some(listener) };
        bed.wait_for("the API server to call the holding webhook", START_TIMEOUT, |_| {
            let _ = hold.dry_run();
            (hold.accepted.load(Ordering::SeqCst) > 0).then_some(())
        });
        hold
    }

    /// A server-side dry run of a Deployment's creation in the namespace, given up after 2 s.
    fn dry_run(&self) -> Output {
        self.bed.kubectl_output(&[
            "create",
            "deployment",
            "admission-probe",
            "--image=registry.invalid/probe",
            "-n",
            &self.namespace,
            "--dry-run=server",
            "--request-timeout=2s",
        ])
    }
}

impl Drop for AdmissionHold<'_> {
    fn drop(&mut self) {
        let _ =
            self.bed.kubectl_output(&["delete", "validatingwebhookconfiguration", &self.name, "--ignore-not-found"]);
        if !std::thread::panicking() {
            self.bed.wait_for("the API server to stop calling the holding webhook", START_TIMEOUT, |last| {
                let o = self.dry_run();
                *last = String::from_utf8_lossy(&o.stderr).into_owned();
                o.status.success().then_some(())
            });
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
    }
}
