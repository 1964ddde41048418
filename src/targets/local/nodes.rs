//! Ray nodes as local processes: the `ray start` command of each node, starting one and
//! recording what it started, telling whether it still runs, stopping it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::procs::{self, DIR_VAR, NODE_VAR, Proc};
use super::sizing::NodePlan;
use crate::run::proc::{Cmd, Runner};

/// Ports of one node, chosen free on 127.0.0.1 just before it starts. The head's are `ray start`
/// flags but [`SERVE_PORT`].
pub const HEAD_PORTS: &[&str] = &["port", "dashboard-port", "ray-client-server-port", SERVE_PORT];
/// The head's port for Serve's HTTP proxy: not a `ray start` flag but Serve's default, set in the
/// environment of the head's processes (so of every job driver and Ray client session there).
pub const SERVE_PORT: &str = "serve-http-port";
pub const NODE_PORTS: &[&str] = &[
    "node-manager-port",
    "object-manager-port",
    "dashboard-agent-grpc-port",
    "dashboard-agent-listen-port",
    "metrics-export-port",
    "runtime-env-agent-port",
];

/// gRPC's switch for its fork handlers, off in every Ray process of target local (see
/// [`Ctx::start_cmd`]) unless `cluster.env` sets it.
pub const GRPC_FORK_SUPPORT: &str = "GRPC_ENABLE_FORK_SUPPORT";

/// Ray system settings of the GCS on target local.
pub const HEALTH_CHECK: &[(&str, &str)] = &[
    ("RAY_health_check_period_ms", "1000"),
    ("RAY_health_check_timeout_ms", "2000"),
    ("RAY_health_check_failure_threshold", "5"),
];

/// The custom resource every node of a group carries (`{"group:<name>": 1}`), so a task can
/// ask for a group: `@ray.remote(resources={"group:workers": 0.01})`.
pub fn group_resource(group: &str) -> String {
    format!("group:{group}")
}

/// A node raydeploy started, as recorded in the state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub plan: NodePlan,
    /// Hash of what the node was started from (its phase inputs and its plan): a node whose
    /// fingerprint differs from the wanted one is restarted.
    pub fingerprint: String,
    pub ports: BTreeMap<String, u16>,
    /// The raylet's node id (as the GCS and the dashboard know it).
    pub node_id: Option<String>,
    /// The processes present when `ray start` returned.
    pub procs: Vec<Proc>,
}

impl NodeRecord {
    fn proc_named(&self, name: &str) -> Option<&Proc> {
        self.procs.iter().find(|p| p.name == name)
    }

    /// Why the node is not running, or `None` when its raylet (and, on the head, the GCS) is.
    pub fn down_reason(&self) -> Option<String> {
        let mut key = vec!["raylet"];
        if self.plan.head {
            key.push("gcs_server");
        }
        for k in key {
            match self.proc_named(k) {
                None => return Some(format!("no {k} was recorded")),
                Some(p) if !p.alive() => return Some(format!("{k} (pid {}) is gone", p.pid)),
                Some(_) => {}
            }
        }
        None
    }

    pub fn alive(&self) -> bool {
        self.down_reason().is_none()
    }
}

/// Where a node's processes are and what they run from.
pub struct Ctx<'a> {
    /// The deployment's state folder (absolute): the process marker.
    pub dir: &'a Path,
    pub venv: &'a Path,
    /// Ray's `--temp-dir` (short: it holds Unix sockets).
    pub temp_dir: &'a Path,
    /// `cluster.env` of the spec.
    pub env: &'a BTreeMap<String, String>,
}

impl Ctx<'_> {
    pub fn ray(&self) -> PathBuf {
        self.venv.join("bin").join("ray")
    }

    /// `ray` with the environment of every Ray command: the venv first on PATH (so a job's `python` is the
    /// venv's), the process marker, no usage stats, no proxy for loopback.
    pub fn cmd(&self, node: Option<&str>) -> Cmd {
        self.command(&self.ray(), node)
    }

    /// `program` (from the venv) with the environment of [`Ctx::cmd`].
    pub fn command(&self, program: &Path, node: Option<&str>) -> Cmd {
        let path = std::env::var("PATH").unwrap_or_default();
        let mut c = Cmd::new(program.to_string_lossy())
            .env("PATH", format!("{}:{path}", self.venv.join("bin").display()))
            .env("VIRTUAL_ENV", self.venv.to_string_lossy())
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost");
        for (k, v) in self.env {
            c = c.env(k, v);
        }
        if let Some(n) = node {
            c = c.env(DIR_VAR, self.dir.to_string_lossy()).env(NODE_VAR, n);
        }
        c
    }

    /// `ray start` for `plan`; `ports` holds a value for every name of [`NODE_PORTS`] (and
    /// [`HEAD_PORTS`] on the head). Workers join `gcs`.
    pub fn start_cmd(&self, plan: &NodePlan, ports: &BTreeMap<String, String>, gcs: Option<&str>) -> Cmd {
        let mut c = self.cmd(Some(&plan.name)).arg("start");
        let port = |name: &str| ports.get(name).cloned().unwrap_or_else(|| "<free port>".into());
        if plan.head {
            // The GCS notices a dead node after a few seconds instead of tens (loopback: a
            // missed health check means the node is gone), so a restored node's predecessor
            // stops receiving work quickly.
            for (k, v) in HEALTH_CHECK {
                c = c.env(*k, *v);
            }
            c = c.env("RAY_SERVE_DEFAULT_HTTP_HOST", "127.0.0.1").env("RAY_SERVE_DEFAULT_HTTP_PORT", port(SERVE_PORT));
            c = c
                .arg("--head")
                .args(["--port", &port("port")])
                .args(["--dashboard-host", "127.0.0.1", "--dashboard-port", &port("dashboard-port")])
                .args(["--include-dashboard", "true"])
                .args(["--ray-client-server-port", &port("ray-client-server-port")]);
        } else {
            c = c.args(["--address", gcs.unwrap_or("<head address>")]);
        }
        // Ray's Python processes fork only to exec (the head's Ray client server forks one
        // server per client while its gRPC threads run): gRPC's fork handlers are not needed
        // and, with other threads inside gRPC, the forked child can crash before its exec.
        if !self.env.contains_key(GRPC_FORK_SUPPORT) {
            c = c.env(GRPC_FORK_SUPPORT, "false");
        }
        c = c.args(["--node-ip-address", "127.0.0.1"]).args(["--temp-dir", &self.temp_dir.to_string_lossy()]);
        for name in NODE_PORTS {
            c = c.arg(format!("--{name}")).arg(port(name));
        }
        let mut resources: serde_json::Map<String, serde_json::Value> = plan
            .params
            .get("resources")
            .and_then(|r| serde_json::from_str(r.trim_matches(['\'', '"'].as_ref())).ok())
            .unwrap_or_default();
        resources.insert(group_resource(&plan.group), 1.into());
        c = c
            .args(["--min-worker-port", "0", "--max-worker-port", "0"])
            .args(["--num-cpus", &plan.num_cpus.to_string()])
            .args(["--num-gpus", &plan.num_gpus.to_string()])
            .args(["--memory", &plan.memory.to_string()])
            .args(["--object-store-memory", &plan.object_store_memory.to_string()])
            .args(["--resources", &serde_json::Value::Object(resources).to_string()])
            .args(["--disable-usage-stats", "--log-color", "false"]);
        for (k, v) in plan.params.iter().filter(|(k, _)| k.as_str() != "resources") {
            c = c.arg(if v.is_empty() { format!("--{k}") } else { format!("--{k}={v}") });
        }
        c.timeout(Duration::from_secs(180)).quiet()
    }

    /// Starts `plan` on fresh ports (after stopping whatever of that node still runs) and records
    /// its processes.
    pub fn start(&self, runner: &Runner, plan: &NodePlan, fingerprint: &str, gcs: Option<&str>) -> Result<NodeRecord> {
        let leftovers = procs::scan(self.dir, Some(&plan.name));
        if !leftovers.is_empty() {
            runner.info(&format!("stopping {} leftover process(es) of node {}", leftovers.len(), plan.name));
            procs::stop(&leftovers, STOP_GRACE);
        }
        let names: Vec<&str> =
            if plan.head { HEAD_PORTS.iter().chain(NODE_PORTS).copied().collect() } else { NODE_PORTS.to_vec() };
        let free = procs::free_ports(names.len()).context("choosing free ports on 127.0.0.1")?;
        let ports: BTreeMap<String, u16> = names.iter().map(|n| n.to_string()).zip(free).collect();
        let shown: BTreeMap<String, String> = ports.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        runner.run(&self.start_cmd(plan, &shown, gcs))?;
        let procs = procs::scan(self.dir, Some(&plan.name));
        let node_id = procs.iter().find(|p| p.name == "raylet").and_then(procs::raylet_node_id);
        let rec = NodeRecord { plan: plan.clone(), fingerprint: fingerprint.to_string(), ports, node_id, procs };
        if let Some(why) = rec.down_reason() {
            let all = procs::scan(self.dir, Some(&plan.name));
            procs::stop(&all, STOP_GRACE);
            bail!(
                "`ray start` of node {} returned but the node is not running: {why}; Ray's logs: {}",
                plan.name,
                self.temp_dir.join("session_latest").join("logs").display()
            );
        }
        Ok(rec)
    }
}

/// Time between SIGTERM and SIGKILL when stopping Ray processes.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Stops every process of the named nodes: those recorded and any other carrying their marker
/// (workers and job drivers forked later). Returns how many were signalled.
pub fn stop_nodes(dir: &Path, records: &[&NodeRecord]) -> usize {
    let mut all: Vec<Proc> = vec![];
    for r in records {
        all.extend(r.procs.iter().cloned());
        all.extend(procs::scan(dir, Some(&r.plan.name)));
    }
    all.sort_by_key(|p| (p.pid, p.start));
    all.dedup();
    procs::stop(&all, STOP_GRACE)
}
