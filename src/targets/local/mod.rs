//! Target `local`: a real Ray cluster as processes on this machine, from the same spec.
//!
//! Phases: `env` (a virtual environment with `ray[default]` and the spec's pip packages, see
//! [`venv`]), `head` (`ray start --head` on free loopback ports), `workers` (one `ray start
//! --address` per replica, sized by [`sizing`]), `ready` (every node alive in the GCS) and, with
//! `--with-jobs`, `jobs`. Every process is marked and recorded ([`procs`]) so that `destroy`
//! stops exactly those, by PID. [`session`] prints the running head's endpoints.

pub mod api;
pub mod ephemeral;
pub mod jobs;
pub mod nodes;
pub mod procs;
pub mod session;
pub mod sizing;
pub mod venv;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::context::{self, Context, DestroyOptions};
use crate::graph::{Inputs, Phase};
use crate::run::exec::{Cx, Outputs, Phases};
use crate::run::proc::{Runner, sleep_unless_interrupted, timeout_cap};
use crate::run::signals;
use crate::run::state::Store;
use api::Api;
use nodes::{Ctx, NodeRecord};
use sizing::{Machine, NodePlan, Sizing};

/// Key of the local target's facts in the state's `data`.
pub const DATA_KEY: &str = "local";
/// How long `ready` waits for every node to be alive.
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a new head's job agent may take to listen and connect to Ray.
const AGENT_CONNECT_WAIT: Duration = Duration::from_secs(180);

/// What the state records about the local cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LocalState {
    /// `ray start --temp-dir`
    pub temp_dir: Option<PathBuf>,
    pub gcs_address: Option<String>,
    pub dashboard_url: Option<String>,
    /// Every node started, by name (`head`, `<group>-<i>`).
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeRecord>,
}

impl LocalState {
    pub fn load(store: &Store) -> Self {
        store.snapshot().data.get(DATA_KEY).and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default()
    }

    /// Changes the recorded facts and writes the state at once.
    pub fn update(store: &Store, f: impl FnOnce(&mut LocalState)) -> Result<()> {
        store.update(|s| {
            let mut ls: LocalState =
                s.data.get(DATA_KEY).and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
            f(&mut ls);
            s.data.insert(DATA_KEY.into(), serde_json::to_value(&ls).expect("local state serializes"));
        })?;
        Ok(())
    }

    pub fn head(&self) -> Option<&NodeRecord> {
        self.nodes.get("head")
    }
}

pub struct Local<'a> {
    pub s: &'a Context,
    /// `.raydeploy/<deployment>`, absolute: the mark on every process of the deployment.
    dir: PathBuf,
    /// `.raydeploy/<deployment>/venv`: a link to the cached environment.
    venv: PathBuf,
    temp_dir: PathBuf,
    machine: Machine,
    sizing: Sizing,
}

/// Ray's temp dir for the deployment at `dir`: short, because it holds Unix sockets (at most
/// 107 bytes), and unique per deployment folder.
pub fn temp_dir_for(dir: &Path) -> PathBuf {
    let id = Inputs::new().add("dir", dir.to_string_lossy().as_bytes()).finish();
    PathBuf::from("/tmp").join(format!("raydeploy-{}", &id[..10]))
}

/// `dir` made absolute with every link resolved, as `canonicalize` would give once it exists: the
/// deepest existing ancestor is resolved and the missing components appended.
pub fn resolve_uncreated(dir: &Path) -> std::io::Result<PathBuf> {
    let abs = std::path::absolute(dir)?;
    let mut missing = vec![];
    let mut cur = abs.as_path();
    loop {
        match cur.canonicalize() {
            Ok(mut p) => {
                p.extend(missing.iter().rev());
                return Ok(p);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (Some(parent), Some(name)) = (cur.parent(), cur.file_name()) else { return Err(e) };
                missing.push(name.to_os_string());
                cur = parent;
            }
            Err(e) => return Err(e),
        }
    }
}

impl<'a> Local<'a> {
    pub fn new(s: &'a Context) -> Result<Self> {
        // Resolved without creating it: `deploy --dry-run` and `status` leave no trace.
        let dir = resolve_uncreated(&s.dir).with_context(|| format!("resolving {}", s.dir.display()))?;
        let temp_dir = temp_dir_for(&dir);
        let machine = Machine::detect();
        let sizing = sizing::plan(&s.d, machine);
        Ok(Self { s, venv: dir.join("venv"), dir, temp_dir, machine, sizing })
    }

    fn venv(&self) -> PathBuf {
        self.venv.clone()
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx { dir: &self.dir, venv: &self.venv, temp_dir: &self.temp_dir, env: &self.s.d.cluster.env }
    }

    fn fingerprint(phase_hash: &str, plan: &NodePlan) -> String {
        Inputs::new().add("phase", phase_hash).value("plan", plan).finish()[..16].to_string()
    }

    fn notes(&self, runner: &Runner) {
        for n in &self.sizing.notes {
            runner.info(&format!("sizing: {n}"));
        }
    }

    /// The state, and the dashboard of a running head (an error naming what to do otherwise).
    fn running(&self) -> Result<(LocalState, Api)> {
        let store = self.s.store()?;
        let ls = LocalState::load(&store);
        let (Some(head), Some(url)) = (ls.head(), ls.dashboard_url.clone()) else {
            bail!("deployment `{}` is not running on this machine: run `raydeploy deploy` first", self.s.d.name);
        };
        if let Some(why) = head.down_reason() {
            bail!("the head of deployment `{}` is down ({why}): run `raydeploy deploy` to restore it", self.s.d.name);
        }
        Ok((ls, Api::new(&url)))
    }

    fn job_runner(&self, name: &str) -> Result<Runner> {
        Ok(self.s.env().runner(&format!("job-{name}"))?)
    }

    // --- phases ---

    fn env_outputs(&self, key: &str) -> Outputs {
        BTreeMap::from([
            ("venv".to_string(), self.venv().to_string_lossy().into_owned()),
            ("key".to_string(), key.to_string()),
        ])
    }

    fn python(&self, runner: &Runner) -> Result<venv::Python> {
        let py = venv::find_python(runner, &self.s.d.image)?;
        if py.minor() != self.s.d.image.python {
            runner.info(&format!(
                "warning: image.python is {} but the environment uses Python {} ({}); set RAYDEPLOY_PYTHON to another interpreter",
                self.s.d.image.python,
                py.version,
                py.executable.display()
            ));
        }
        Ok(py)
    }

    fn probe_env(&self, cx: &Cx) -> Result<Option<Outputs>> {
        let py = self.python(&cx.runner)?;
        let key = venv::key(&py, &self.s.d.image);
        let path = venv::cached_path(&key);
        if !venv::is_complete(&path, &key) {
            return Ok(None);
        }
        venv::link(&self.venv(), &path)?;
        Ok(Some(self.env_outputs(&key)))
    }

    fn apply_env(&self, cx: &Cx) -> Result<Outputs> {
        let py = self.python(&cx.runner)?;
        let key = venv::key(&py, &self.s.d.image);
        venv::ensure(&cx.runner, &py, &self.s.d.image, &key)?;
        venv::link(&self.venv(), &venv::cached_path(&key))?;
        Ok(self.env_outputs(&key))
    }

    fn head_outputs(ls: &LocalState) -> Outputs {
        BTreeMap::from([
            ("gcs_address".to_string(), ls.gcs_address.clone().unwrap_or_default()),
            ("dashboard_url".to_string(), ls.dashboard_url.clone().unwrap_or_default()),
            ("node_id".to_string(), ls.head().and_then(|h| h.node_id.clone()).unwrap_or_default()),
        ])
    }

    fn probe_head(&self, cx: &Cx) -> Result<Option<Outputs>> {
        let ls = LocalState::load(cx.store);
        let want = Self::fingerprint(&cx.hash, &self.sizing.head);
        Ok(match (ls.head(), &cx.recorded) {
            (Some(h), Some(_)) if h.fingerprint == want && h.alive() => Some(Self::head_outputs(&ls)),
            _ => None,
        })
    }

    fn apply_head(&self, cx: &Cx) -> Result<Outputs> {
        self.notes(&cx.runner);
        let ls = LocalState::load(cx.store);
        if let Some(old) = ls.head() {
            let n = nodes::stop_nodes(&self.dir, &[old]);
            cx.runner.info(&format!("stopped the previous head ({n} process(es))"));
        }
        let plan = &self.sizing.head;
        let rec = self.ctx().start(&cx.runner, plan, &Self::fingerprint(&cx.hash, plan), None)?;
        let gcs = format!("127.0.0.1:{}", rec.ports["port"]);
        let url = format!("http://127.0.0.1:{}", rec.ports["dashboard-port"]);
        cx.runner.info(&format!("head: {} process(es), GCS {gcs}, dashboard {url}", rec.procs.len()));
        // Before any worker joins: the job agent's driver must be on the head (see attach_job_agent).
        let agent = format!("http://127.0.0.1:{}", rec.ports["dashboard-agent-listen-port"]);
        if let Err(e) = Api::new(&agent).attach_job_agent(Instant::now() + AGENT_CONNECT_WAIT) {
            nodes::stop_nodes(&self.dir, &[&rec]);
            return Err(e);
        }
        LocalState::update(cx.store, |ls| {
            ls.temp_dir = Some(self.temp_dir.clone());
            ls.gcs_address = Some(gcs);
            ls.dashboard_url = Some(url);
            ls.nodes.insert("head".into(), rec);
        })?;
        Ok(Self::head_outputs(&LocalState::load(cx.store)))
    }

    fn workers_outputs(&self) -> Outputs {
        let names: Vec<&str> = self.sizing.workers.iter().map(|w| w.name.as_str()).collect();
        BTreeMap::from([("nodes".to_string(), names.join(","))])
    }

    /// Worker nodes that run as wanted (same fingerprint, alive).
    fn workers_in_place(&self, ls: &LocalState, hash: &str) -> Vec<String> {
        self.sizing
            .workers
            .iter()
            .filter(|p| ls.nodes.get(&p.name).is_some_and(|r| r.fingerprint == Self::fingerprint(hash, p) && r.alive()))
            .map(|p| p.name.clone())
            .collect()
    }

    fn extra_workers<'l>(&self, ls: &'l LocalState) -> Vec<&'l NodeRecord> {
        ls.nodes
            .values()
            .filter(|r| !r.plan.head && !self.sizing.workers.iter().any(|p| p.name == r.plan.name))
            .collect()
    }

    fn probe_workers(&self, cx: &Cx) -> Result<Option<Outputs>> {
        if cx.recorded.is_none() {
            return Ok(None);
        }
        let ls = LocalState::load(cx.store);
        let ok = self.workers_in_place(&ls, &cx.hash).len() == self.sizing.workers.len()
            && self.extra_workers(&ls).is_empty();
        Ok(ok.then(|| self.workers_outputs()))
    }

    fn apply_workers(&self, cx: &Cx) -> Result<Outputs> {
        let ls = LocalState::load(cx.store);
        let keep = self.workers_in_place(&ls, &cx.hash);
        let stale: Vec<&NodeRecord> =
            ls.nodes.values().filter(|r| !r.plan.head && !keep.contains(&r.plan.name)).collect();
        if !stale.is_empty() {
            let names: Vec<&str> = stale.iter().map(|r| r.plan.name.as_str()).collect();
            let n = nodes::stop_nodes(&self.dir, &stale);
            cx.runner
                .info(&format!("stopped {} ({n} process(es)): changed, gone or no longer wanted", names.join(", ")));
            LocalState::update(cx.store, |l| {
                for name in &names {
                    l.nodes.remove(*name);
                }
            })?;
        }
        let gcs =
            cx.output("head", "gcs_address").filter(|g| !g.is_empty()).context("the head's address is unknown")?;
        let todo: Vec<&NodePlan> = self.sizing.workers.iter().filter(|p| !keep.contains(&p.name)).collect();
        if !keep.is_empty() {
            cx.runner.info(&format!("running as wanted: {}", keep.join(", ")));
        }
        let ctx = self.ctx();
        // Starting a node is CPU-heavy (Ray waits at most 30 s for a raylet to register): at
        // most one start per two CPUs at a time, and one more try for a start that failed.
        let width = (self.machine.cpus as usize / 2).max(1);
        let mut errors: Vec<String> = vec![];
        for batch in todo.chunks(width) {
            let results: Vec<Result<()>> = std::thread::scope(|scope| {
                let handles: Vec<_> = batch
                    .iter()
                    .map(|plan| {
                        let (runner, ctx, gcs, hash) = (cx.runner.clone(), &ctx, gcs.as_str(), cx.hash.as_str());
                        scope.spawn(move || -> Result<()> {
                            let fp = Self::fingerprint(hash, plan);
                            let rec = match ctx.start(&runner, plan, &fp, Some(gcs)) {
                                Ok(r) => r,
                                Err(e) if !signals::interrupted() => {
                                    runner.info(&format!("{} did not start ({e:#}); trying once more", plan.name));
                                    ctx.start(&runner, plan, &fp, Some(gcs))?
                                }
                                Err(e) => return Err(e),
                            };
                            runner.info(&format!(
                                "{}: {} CPU, {} GPU, {} memory + {} object store",
                                plan.name,
                                plan.num_cpus,
                                plan.num_gpus,
                                sizing::gib(plan.memory),
                                sizing::gib(plan.object_store_memory)
                            ));
                            LocalState::update(cx.store, |l| {
                                l.nodes.insert(plan.name.clone(), rec);
                            })
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a node start panicked"))))
                    .collect()
            });
            errors.extend(results.into_iter().filter_map(|r| r.err().map(|e| format!("{e:#}"))));
            if !errors.is_empty() || signals::interrupted() {
                break;
            }
        }
        if !errors.is_empty() {
            bail!("{}", errors.join("\n"));
        }
        Ok(self.workers_outputs())
    }

    fn apply_ready(&self, cx: &Cx) -> Result<Outputs> {
        let ls = LocalState::load(cx.store);
        let url = cx.output("head", "dashboard_url").filter(|u| !u.is_empty()).context("the dashboard is unknown")?;
        let api = Api::new(&url);
        let want: Vec<&NodeRecord> = self.sizing.nodes().filter_map(|p| ls.nodes.get(&p.name)).collect();
        if want.len() != self.sizing.nodes().count() {
            bail!("the state lacks some nodes; run deploy again");
        }
        let limit = timeout_cap().map_or(READY_TIMEOUT, |c| c.min(READY_TIMEOUT));
        let t0 = Instant::now();
        cx.runner.info(&format!("waiting for {} nodes at {url}", want.len()));
        loop {
            if let Some(down) = want.iter().find_map(|r| r.down_reason().map(|w| format!("{}: {w}", r.plan.name))) {
                bail!("node {down}; run deploy again to restore it");
            }
            let last = match api.nodes() {
                Ok(list) => {
                    let missing: Vec<&str> = want
                        .iter()
                        .filter(|r| {
                            !r.node_id.as_ref().is_some_and(|id| list.iter().any(|n| n.alive && &n.node_id == id))
                        })
                        .map(|r| r.plan.name.as_str())
                        .collect();
                    let ours = |id: &String| want.iter().any(|r| r.node_id.as_ref() == Some(id));
                    let stale = list.iter().filter(|n| n.alive && !ours(&n.node_id)).count();
                    if missing.is_empty() && stale == 0 {
                        cx.runner.info(&format!("{} nodes alive", want.len()));
                        return Ok(BTreeMap::from([("nodes".to_string(), want.len().to_string())]));
                    }
                    if missing.is_empty() && t0.elapsed() > limit {
                        cx.runner.info(&format!(
                            "warning: {} nodes alive, and {stale} other node(s) the GCS still lists as alive",
                            want.len()
                        ));
                        return Ok(BTreeMap::from([("nodes".to_string(), want.len().to_string())]));
                    }
                    if missing.is_empty() {
                        format!("{stale} node(s) that were stopped are still listed as alive")
                    } else {
                        format!("not alive yet: {}", missing.join(", "))
                    }
                }
                Err(e) => format!("{e:#}"),
            };
            if signals::interrupted() {
                bail!("interrupted while waiting for the nodes");
            }
            if t0.elapsed() > limit {
                bail!("the nodes were not all alive after {}s ({last})", limit.as_secs());
            }
            sleep_unless_interrupted(Duration::from_millis(200));
        }
    }

    fn apply_jobs(&self, cx: &Cx) -> Result<Outputs> {
        let url = cx.output("head", "dashboard_url").filter(|u| !u.is_empty()).context("the dashboard is unknown")?;
        let api = Api::new(&url);
        let ctx = self.ctx();
        let mut outs = Outputs::new();
        let mut failed = vec![];
        for job in &self.s.d.jobs {
            if job.ephemeral.is_some() {
                cx.runner.info(&format!(
                    "job {}: runs on a cluster of its own, with `raydeploy run {}`",
                    job.name, job.name
                ));
                continue;
            }
            cx.runner.info(&format!("submitting job {}", job.name));
            let info = jobs::submit(&cx.runner, &ctx, &api, job, true)?;
            cx.runner.info(&format!("job {}: {} ({})", job.name, info.status, info.submission_id));
            if info.status != "SUCCEEDED" {
                failed.push(format!("job {} {}: {}", job.name, info.status, info.message.lines().next().unwrap_or("")));
            }
            outs.insert(job.name.clone(), info.status);
        }
        if !failed.is_empty() {
            bail!("{}", failed.join("\n"));
        }
        Ok(outs)
    }
}

impl Phases for Local<'_> {
    fn probe(&self, phase: &Phase, cx: &Cx) -> Result<Option<Outputs>> {
        match phase.id {
            "env" => self.probe_env(cx),
            "head" => self.probe_head(cx),
            "workers" => self.probe_workers(cx),
            _ => Ok(cx.unchanged()),
        }
    }

    fn apply(&self, phase: &Phase, cx: &Cx) -> Result<Outputs> {
        match phase.id {
            "env" => self.apply_env(cx),
            "head" => self.apply_head(cx),
            "workers" => self.apply_workers(cx),
            "ready" => self.apply_ready(cx),
            "jobs" => self.apply_jobs(cx),
            other => bail!("phase {other} is not a phase of target local"),
        }
    }

    fn preview(&self, phase: &Phase) -> Vec<String> {
        let ctx = self.ctx();
        let none = BTreeMap::new();
        match phase.id {
            "env" => {
                let py = venv::python_command(&self.s.d.image);
                let target = venv::cache_root().join("venvs").join("<key>");
                let mut v: Vec<String> =
                    venv::build_cmds(Path::new(&py), &target, &self.s.d.image).iter().map(|c| c.display()).collect();
                v.push(format!("ln -s {} {}", target.display(), self.venv().display()));
                v
            }
            "head" => vec![ctx.start_cmd(&self.sizing.head, &none, None).display()],
            "workers" => {
                self.sizing.workers.iter().map(|p| ctx.start_cmd(p, &none, Some("<head address>")).display()).collect()
            }
            "ready" => vec![format!(
                "GET <dashboard>/api/v0/nodes until {} nodes are alive (at most {}s)",
                self.sizing.nodes().count(),
                READY_TIMEOUT.as_secs()
            )],
            "jobs" => self
                .s
                .d
                .jobs
                .iter()
                .flat_map(|j| {
                    [jobs::submit_preview(&ctx, j), jobs::follow_cmd(&ctx, "<dashboard>", "<job>-<time>").display()]
                })
                .collect(),
            _ => vec![],
        }
    }
}

/// One node's line of `status`.
#[derive(Debug, Serialize)]
struct NodeStatus<'a> {
    name: &'a str,
    group: &'a str,
    state: &'static str,
    reason: Option<String>,
    /// Alive in the GCS (when the dashboard answers).
    in_cluster: Option<bool>,
    num_cpus: u32,
    num_gpus: u32,
    memory: u64,
    object_store_memory: u64,
    node_id: Option<&'a str>,
    pids: Vec<u32>,
}

impl context::Target for Local<'_> {
    fn destroy(&self, s: &Context, _o: &DestroyOptions) -> Result<()> {
        let _lock = s.lock("destroy")?;
        let store = s.store()?;
        let ls = LocalState::load(&store);
        // Workers first, then the head, then anything else carrying the deployment's mark.
        let workers: Vec<&NodeRecord> = ls.nodes.values().filter(|r| !r.plan.head).collect();
        let mut n = nodes::stop_nodes(&self.dir, &workers);
        if let Some(h) = ls.head() {
            n += nodes::stop_nodes(&self.dir, &[h]);
        }
        let rest = procs::scan(&self.dir, None);
        n += procs::stop(&rest, nodes::STOP_GRACE);
        // The own clusters of runs that were killed before they could stop them.
        n += ephemeral::stop_leftovers(&self.dir)?;
        let left = procs::scan(&self.dir, None);
        if !left.is_empty() {
            let pids: Vec<String> = left.iter().map(|p| format!("{} ({})", p.pid, p.name)).collect();
            bail!("processes of deployment `{}` are still running: {}", s.d.name, pids.join(", "));
        }
        let temp = ls.temp_dir.clone().unwrap_or_else(|| self.temp_dir.clone());
        if temp.exists() {
            std::fs::remove_dir_all(&temp).with_context(|| format!("removing {}", temp.display()))?;
        }
        store.forget(&["env", "head", "workers", "ready", "jobs"])?;
        store.update(|st| {
            st.data.remove(DATA_KEY);
        })?;
        if s.json() {
            println!("{}", serde_json::json!({"event": "destroyed", "deployment": s.d.name, "processes_stopped": n}));
        } else {
            eprintln!(
                "destroyed `{}`: stopped {n} process(es), removed {}; the Python environment stays cached in {}",
                s.d.name,
                temp.display(),
                venv::cache_root().join("venvs").display()
            );
        }
        Ok(())
    }

    fn status(&self, s: &Context) -> Result<(String, serde_json::Value)> {
        let store = s.store()?;
        let st = store.snapshot();
        let ls = LocalState::load(&store);
        let api = ls.dashboard_url.as_deref().map(Api::new);
        let gcs_nodes = match (&api, ls.head().is_some_and(|h| h.alive())) {
            (Some(a), true) => a.nodes().ok(),
            _ => None,
        };
        let mut statuses = vec![];
        let wanted: Vec<&NodePlan> = self.sizing.nodes().collect();
        let mut names: Vec<&str> = wanted.iter().map(|p| p.name.as_str()).collect();
        names.extend(ls.nodes.keys().map(String::as_str).filter(|n| !wanted.iter().any(|p| p.name == *n)));
        for name in names {
            let plan = wanted.iter().find(|p| p.name == name).copied();
            let rec = ls.nodes.get(name);
            let Some(p) = rec.map(|r| &r.plan).or(plan) else { continue };
            let (state, reason) = match rec {
                None => ("not started", None),
                Some(r) => match r.down_reason() {
                    Some(why) => ("down", Some(why)),
                    None if plan.is_none() => ("running (not in the spec any more)", None),
                    None => ("running", None),
                },
            };
            let in_cluster = match (&gcs_nodes, rec.and_then(|r| r.node_id.as_ref())) {
                (Some(list), Some(id)) => Some(list.iter().any(|n| n.alive && &n.node_id == id)),
                _ => None,
            };
            statuses.push(NodeStatus {
                name: &p.name,
                group: &p.group,
                state,
                reason,
                in_cluster,
                num_cpus: p.num_cpus,
                num_gpus: p.num_gpus,
                memory: p.memory,
                object_store_memory: p.object_store_memory,
                node_id: rec.and_then(|r| r.node_id.as_deref()),
                pids: rec.map(|r| r.procs.iter().filter(|p| p.alive()).map(|p| p.pid).collect()).unwrap_or_default(),
            });
        }
        let all = procs::scan(&self.dir, None);
        let running = statuses.iter().filter(|n| n.state.starts_with("running")).count();
        let down: Vec<&str> = statuses.iter().filter(|n| n.state == "down").map(|n| n.name).collect();
        let phases: BTreeMap<&String, String> =
            st.phases.iter().map(|(k, v)| (k, format!("{:?}", v.status).to_lowercase())).collect();
        let phases_json: BTreeMap<&String, serde_json::Value> = st
            .phases
            .iter()
            .map(|(k, v)| {
                let status = format!("{:?}", v.status).to_lowercase();
                (k, serde_json::json!({"status": status, "at": v.finished_at, "error": v.error, "outputs": v.outputs}))
            })
            .collect();

        let mut t = format!("deployment `{}` (target local), state {}\n", s.d.name, store.path().display());
        for (k, v) in &phases {
            t.push_str(&format!("  phase {k}: {v}\n"));
        }
        if let Some(u) = &ls.dashboard_url {
            t.push_str(&format!("dashboard: {u}\ngcs: {}\n", ls.gcs_address.as_deref().unwrap_or("-")));
        }
        t.push_str(&format!(
            "nodes: {running} of {} running, {} Ray process(es) of this deployment on this machine\n",
            wanted.len(),
            all.len()
        ));
        for n in &statuses {
            let mut line = format!(
                "  {:<14} {:<11} {} CPU, {} GPU, {} + {} object store",
                n.name,
                n.state,
                n.num_cpus,
                n.num_gpus,
                sizing::gib(n.memory),
                sizing::gib(n.object_store_memory)
            );
            if !n.pids.is_empty() {
                line.push_str(&format!(", {} process(es)", n.pids.len()));
            }
            if n.in_cluster == Some(false) && n.state == "running" {
                line.push_str(", not (yet) alive in the cluster");
            }
            if let Some(r) = &n.reason {
                line.push_str(&format!(": {r}"));
            }
            t.push_str(&line);
            t.push('\n');
        }
        if !down.is_empty() {
            t.push_str(&format!("down: {}; run `raydeploy deploy` to restore\n", down.join(", ")));
        }
        for n in &self.sizing.notes {
            t.push_str(&format!("sizing: {n}\n"));
        }
        let json = serde_json::json!({
            "deployment": s.d.name,
            "target": "local",
            "phases": phases_json,
            "dashboard_url": ls.dashboard_url,
            "gcs_address": ls.gcs_address,
            "nodes": statuses,
            "nodes_running": running,
            "nodes_wanted": wanted.len(),
            "down": down,
            "processes": all.iter().map(|p| serde_json::json!({"pid": p.pid, "name": p.name})).collect::<Vec<_>>(),
            "sizing_notes": self.sizing.notes,
        });
        Ok((t, json))
    }

    fn job_submit(&self, s: &Context, name: &str, follow: bool) -> Result<u8> {
        let job = s.d.jobs.iter().find(|j| j.name == name).with_context(|| format!("no job `{name}`"))?;
        if job.ephemeral.is_some() {
            bail!("job {name} runs on a cluster of its own (cluster: ephemeral): run it with `raydeploy run {name}`");
        }
        let (_, api) = self.running()?;
        let runner = self.job_runner(name)?;
        let info = jobs::submit(&runner, &self.ctx(), &api, job, follow)?;
        if !follow {
            print!("{}", s.redactor.scrub(&api.logs(&info.submission_id)?));
        }
        let code = jobs::exit_code(&info);
        if s.json() {
            println!(
                "{}",
                serde_json::json!({"event": "job", "job": name, "submission_id": info.submission_id, "status": info.status, "exit_code": code})
            );
        } else {
            eprintln!("job {name} ({}): {}", info.submission_id, info.status);
            if code != 0 && !info.message.is_empty() {
                eprintln!("{}", info.message.trim_end());
            }
        }
        Ok(code)
    }

    fn job_logs(&self, s: &Context, name: &str) -> Result<u8> {
        let (_, api) = self.running()?;
        let info = jobs::latest(&api, name)?;
        print!("{}", s.redactor.scrub(&api.logs(&info.submission_id)?));
        eprintln!("job {name} ({}): {}", info.submission_id, info.status);
        Ok(if info.finished() { jobs::exit_code(&info) } else { 0 })
    }

    fn job_list(&self, s: &Context) -> Result<(String, serde_json::Value)> {
        let (_, api) = self.running()?;
        let mut t = String::new();
        let mut v = vec![];
        for j in &s.d.jobs {
            let latest = api.submissions(&j.name)?.into_iter().next();
            let (status, id) = match &latest {
                Some(i) => (i.status.as_str(), Some(i.submission_id.as_str())),
                None => ("NOT SUBMITTED", None),
            };
            t.push_str(&format!("{:<20} {:<14} {}\n", j.name, status, id.unwrap_or("-")));
            v.push(serde_json::json!({"name": j.name, "status": status, "submission_id": id}));
        }
        Ok((t, serde_json::json!({ "jobs": v })))
    }

    fn job_delete(&self, _s: &Context, name: &str) -> Result<()> {
        let (_, api) = self.running()?;
        let subs = api.submissions(name)?;
        for j in &subs {
            if !j.finished() {
                api.stop(&j.submission_id)?;
                jobs::wait(&api, &j.submission_id)?;
            }
            api.delete(&j.submission_id)?;
        }
        eprintln!("job {name}: deleted {} submission(s)", subs.len());
        Ok(())
    }

    fn dashboard(&self, _s: &Context) -> Result<()> {
        let (ls, _) = self.running()?;
        println!("{}", ls.dashboard_url.unwrap_or_default());
        Ok(())
    }

    fn session(&self, _s: &Context, o: &crate::session::Options) -> Result<()> {
        session::session(self, o)
    }

    /// An ephemeral job on a cluster of its own ([`ephemeral`]); a shared job on the running
    /// cluster, as `job submit --follow`, its submission deleted afterwards with `rm` and stopped
    /// by Ctrl-C.
    fn run(&self, s: &Context, name: &str, rm: bool) -> Result<u8> {
        signals::install();
        let job = s.d.jobs.iter().find(|j| j.name == name).with_context(|| format!("no job `{name}`"))?;
        if let Some(c) = &job.ephemeral {
            return ephemeral::run(self, job, c);
        }
        let (_, api) = self.running()?;
        let runner = self.job_runner(name)?;
        let info = match jobs::submit(&runner, &self.ctx(), &api, job, true) {
            Ok(info) => info,
            Err(_) if signals::interrupted() => {
                for sub in api.submissions(name)?.iter().filter(|j| !j.finished()) {
                    api.stop(&sub.submission_id)?;
                }
                eprintln!("interrupted: job {name} stopped");
                return Ok(context::EXIT_INTERRUPTED);
            }
            Err(e) => return Err(e),
        };
        let code = jobs::exit_code(&info);
        eprintln!("job {name} ({}): {}", info.submission_id, info.status);
        if code != 0 && !info.message.is_empty() {
            eprintln!("{}", info.message.trim_end());
        }
        if rm {
            api.delete(&info.submission_id)?;
            eprintln!("deleted submission {}", info.submission_id);
        }
        Ok(code)
    }
}

/// The example spec's model (for unit tests).
#[cfg(test)]
pub(crate) fn example_deployment() -> crate::model::Deployment {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/local/raydeploy.yaml"));
    let loaded = crate::spec::load(path, None, &|_| None).expect("example loads");
    crate::model::build(&loaded, None).expect("example builds")
}
