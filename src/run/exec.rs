//! Runs a phase graph: every phase whose dependencies are done starts at once (one thread each),
//! phases whose inputs are unchanged are skipped, the state is written at every transition, and
//! after a failure or Ctrl-C no new phase starts while running ones finish or stop.
//!
//! Early answers: a phase whose target says so ([`Phases::early`]) is probed as soon as the few
//! phases its probe needs are done, while the rest of its dependencies still run (a no-op deploy
//! then reads every layer at about the same time instead of one layer after the other). The
//! answer is used only when every phase upstream of it was skipped or was a read-only check:
//! then nothing changed what the probe read. A phase may say its probe's "must run" is final
//! ([`Early::final_no`]): that answer is then used the same way, and the phase runs without a
//! second probe. Otherwise, or when the early probe failed, the phase is probed again once its
//! dependencies are done, as always.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::graph::{self, Graph, Phase};

use super::proc::Runner;
use super::progress::{Event, Reporter};
use super::redact::Redactor;
use super::signals;
use super::state::{PhaseRecord, PhaseStatus, Store};

/// What a phase produced (stable values only: they feed the hashes of downstream phases).
pub type Outputs = BTreeMap<String, String>;

/// Everything a phase sees while it runs.
pub struct Cx<'a> {
    /// Commands of this phase: logged to `logs/<phase>.log`, prefixed with the phase.
    pub runner: Runner,
    /// The phase's input hash for this run (own inputs + direct dependencies' outputs).
    pub hash: String,
    /// The state's record of this phase, when it completed with this same hash.
    pub recorded: Option<PhaseRecord>,
    pub store: &'a Store,
    /// `.raydeploy/<deployment>`
    pub dir: &'a Path,
    /// An early probe ([`Phases::early`]): some dependencies may still be running, so only the
    /// outputs of the phases it declared are there.
    pub early: bool,
    outputs: &'a Mutex<BTreeMap<String, Outputs>>,
}

impl Cx<'_> {
    /// An output of a completed phase.
    pub fn output(&self, phase: &str, key: &str) -> Option<String> {
        self.outputs.lock().expect("outputs lock").get(phase).and_then(|o| o.get(key).cloned())
    }

    /// The recorded outputs when the phase completed before with the same inputs.
    pub fn unchanged(&self) -> Option<Outputs> {
        self.recorded.as_ref().map(|r| r.outputs.clone())
    }
}

/// How a target carries out its phases.
pub trait Phases: Sync {
    /// Whether the phase's work is already in place. `Some(outputs)` skips it. The default
    /// trusts the state: skip when it completed with the same input hash. Implementations ask
    /// live state too (a fresh checkout has no state).
    fn probe(&self, _phase: &Phase, cx: &Cx) -> anyhow::Result<Option<Outputs>> {
        Ok(cx.unchanged())
    }

    /// Does the phase's work.
    fn apply(&self, phase: &Phase, cx: &Cx) -> anyhow::Result<Outputs>;

    /// The commands the phase would run (for `--dry-run`; secrets never appear).
    fn preview(&self, phase: &Phase) -> Vec<String>;

    /// Whether the phase may be probed before all its dependencies are done, and which phases
    /// its probe needs done first (whose outputs it reads, or whose local files it uses). A check
    /// phase (`always`) probed early that answers `Some` counts as run. With `apply: true` the
    /// phase's work itself may run early when the probe says it is not in place: for phases that
    /// only read the world and write into the state folder.
    fn early(&self, _phase: &Phase) -> Option<Early> {
        None
    }
}

/// See [`Phases::early`].
#[derive(Debug, Clone, Default)]
pub struct Early {
    /// Phases that must be done (their outputs are read).
    pub needs: Vec<&'static str>,
    /// Phases whose early answer is enough (their files are used, not their outputs).
    pub after: Vec<&'static str>,
    pub apply: bool,
    /// The probe's "not in place" is an answer, not "cannot tell yet": the phase then runs
    /// without a second probe (when the early answer holds at all).
    pub final_no: bool,
}

/// What an early run found, kept until the phase's dependencies are done.
struct EarlyAnswer {
    /// The input hash the early run assumed and whether its answer came from the state file
    /// (then it holds only if the real hash is the same).
    hash: String,
    from_state: bool,
    /// `(outputs, ran)`: the probe's outputs (`ran` false) or the early work's (`ran` true).
    found: Option<(Outputs, bool)>,
    /// The probe answered that the phase must run (not an error, no early work tried, an
    /// answer the phase's [`Early::final_no`] says is final).
    must_run: bool,
}

type EarlyAnswers = Mutex<BTreeMap<&'static str, Option<EarlyAnswer>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ran,
    Skipped,
    Failed,
    Interrupted,
    /// Not started (an upstream phase failed, or Ctrl-C).
    NotRun,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseResult {
    pub id: &'static str,
    pub outcome: Outcome,
    pub seconds: f64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub phases: Vec<PhaseResult>,
    pub seconds: f64,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.phases.iter().all(|p| matches!(p.outcome, Outcome::Ran | Outcome::Skipped))
    }

    pub fn interrupted(&self) -> bool {
        self.phases.iter().any(|p| p.outcome == Outcome::Interrupted)
    }

    pub fn with(&self, outcome: Outcome) -> Vec<&'static str> {
        self.phases.iter().filter(|p| p.outcome == outcome).map(|p| p.id).collect()
    }

    /// The first failure, for the error message.
    pub fn first_error(&self) -> Option<(&'static str, &str)> {
        self.phases.iter().find_map(|p| p.error.as_deref().map(|e| (p.id, e)))
    }
}

/// Where a run keeps its files and how it reports.
pub struct Env {
    pub dir: PathBuf,
    pub redactor: Redactor,
    pub reporter: Arc<dyn Reporter>,
}

impl Env {
    pub fn runner(&self, phase: &str) -> std::io::Result<Runner> {
        Runner::new(
            phase,
            Some(&self.dir.join("logs").join(format!("{phase}.log"))),
            self.redactor.clone(),
            self.reporter.clone(),
        )
    }
}

/// Runs `graph` with `phases`, recording every transition in `store`.
pub fn execute(graph: &Graph, phases: &dyn Phases, store: &Store, env: &Env) -> Report {
    let t0 = Instant::now();
    let outputs: Mutex<BTreeMap<String, Outputs>> = Mutex::new(BTreeMap::new());
    let mut results: BTreeMap<&'static str, PhaseResult> = BTreeMap::new();
    let mut started: BTreeSet<&'static str> = BTreeSet::new();
    let mut early_started: BTreeSet<&'static str> = BTreeSet::new();
    let early_answers: EarlyAnswers = Mutex::new(BTreeMap::new());
    let early_done = std::sync::Condvar::new();
    let upstream = upstream_of(graph);
    let mut stop = false;
    let (tx, rx) = mpsc::channel::<PhaseResult>();

    std::thread::scope(|scope| {
        loop {
            if signals::interrupted() {
                stop = true;
            }
            if !stop {
                let done =
                    |d: &str| results.get(d).is_some_and(|r| matches!(r.outcome, Outcome::Ran | Outcome::Skipped));
                for p in &graph.phases {
                    if started.contains(p.id) || early_started.contains(p.id) || p.deps.iter().all(|d| done(d)) {
                        continue;
                    }
                    let Some(early) = phases.early(p) else { continue };
                    let answered = |d: &str| {
                        early_answers
                            .lock()
                            .expect("early answers")
                            .get(d)
                            .is_some_and(|a| a.as_ref().is_some_and(|a| a.found.is_some()))
                    };
                    if !early.needs.iter().all(|d| done(d)) || !early.after.iter().all(|d| done(d) || answered(d)) {
                        continue;
                    }
                    // Once something upstream changed the world, an early answer would not be
                    // used (see `quiet` below): the phase is probed in its turn instead.
                    let changed = upstream[p.id].iter().any(|u| {
                        graph.get(u).is_some_and(|q| q.mutating)
                            && results.get(u).is_some_and(|r| r.outcome == Outcome::Ran)
                    });
                    if changed {
                        continue;
                    }
                    early_started.insert(p.id);
                    early_answers.lock().expect("early answers").insert(p.id, None);
                    let (outputs, answers, cv) = (&outputs, &early_answers, &early_done);
                    scope.spawn(move || {
                        let a = run_early(p, &early, phases, store, env, outputs);
                        answers.lock().expect("early answers").insert(p.id, a);
                        cv.notify_all();
                    });
                }
                for p in &graph.phases {
                    if started.contains(p.id) || !p.deps.iter().all(|d| done(d)) {
                        continue;
                    }
                    started.insert(p.id);
                    // The early answer holds when nothing upstream changed the world: every phase
                    // there was skipped, or only read it (checks, the kubeconfig).
                    let quiet = upstream[p.id].iter().all(|u| {
                        let reads = graph.get(u).is_some_and(|q| !q.mutating);
                        results
                            .get(u)
                            .is_some_and(|r| r.outcome == Outcome::Skipped || (reads && r.outcome == Outcome::Ran))
                    });
                    let early = early_started.contains(p.id);
                    let tx = tx.clone();
                    let (outputs, answers, cv) = (&outputs, &early_answers, &early_done);
                    scope.spawn(move || {
                        // An early run still going is waited for either way: its work (the
                        // kubeconfig) must not race the phase's own.
                        let answer = if early { wait_early(answers, cv, p.id).filter(|_| quiet) } else { None };
                        let r = run_phase(p, phases, store, env, outputs, answer);
                        let _ = tx.send(r);
                    });
                }
            }
            if started.len() == results.len() {
                break;
            }
            match rx.recv_timeout(std::time::Duration::from_millis(50)) {
                Ok(r) => {
                    if !matches!(r.outcome, Outcome::Ran | Outcome::Skipped) {
                        stop = true;
                    }
                    results.insert(r.id, r);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    });

    let phases = graph
        .phases
        .iter()
        .map(|p| {
            results.remove(p.id).unwrap_or(PhaseResult {
                id: p.id,
                outcome: Outcome::NotRun,
                seconds: 0.0,
                error: None,
            })
        })
        .collect();
    Report { phases, seconds: t0.elapsed().as_secs_f64() }
}

/// Every phase upstream of each phase (its dependencies, theirs, and so on).
fn upstream_of(graph: &Graph) -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let mut up: BTreeMap<&'static str, BTreeSet<&'static str>> = BTreeMap::new();
    for p in &graph.phases {
        let mut set = BTreeSet::new();
        for d in &p.deps {
            set.insert(*d);
            if let Some(u) = up.get(d) {
                set.extend(u.iter().copied());
            }
        }
        up.insert(p.id, set);
    }
    up
}

/// The early answer of `id`, once its early run has finished.
fn wait_early(answers: &EarlyAnswers, cv: &std::sync::Condvar, id: &str) -> Option<EarlyAnswer> {
    let mut g = answers.lock().expect("early answers");
    loop {
        match g.get_mut(id) {
            Some(slot @ Some(_)) => return slot.take(),
            Some(None) => g = cv.wait(g).expect("early answers"),
            None => return None,
        }
    }
}

/// The input hash a phase runs with when some dependencies are not done yet: their outputs as
/// the state file recorded them.
fn speculative_hash(p: &Phase, store: &Store, outputs: &Mutex<BTreeMap<String, Outputs>>) -> String {
    let mut known = outputs.lock().expect("outputs lock").clone();
    for d in &p.deps {
        if !known.contains_key(*d)
            && let Some(r) = store.phase(d).filter(|r| r.status == PhaseStatus::Completed)
        {
            known.insert(d.to_string(), r.outputs);
        }
    }
    graph::effective_hash(p, &known)
}

/// An early probe (and, where allowed, early work) of `p`; errors mean "no answer" (the
/// phase is then probed again in its turn).
fn run_early(
    p: &Phase,
    early: &Early,
    phases: &dyn Phases,
    store: &Store,
    env: &Env,
    outputs: &Mutex<BTreeMap<String, Outputs>>,
) -> Option<EarlyAnswer> {
    let hash = speculative_hash(p, store, outputs);
    let recorded =
        store.phase(p.id).filter(|r| r.status == PhaseStatus::Completed && r.input_hash == hash && !p.always);
    let from_state = recorded.is_some();
    let runner = env.runner(p.id).ok()?;
    let cx = Cx { runner, hash: hash.clone(), recorded, store, dir: &env.dir, early: true, outputs };
    let mut must_run = false;
    let found = match phases.probe(p, &cx) {
        Ok(Some(o)) => Some((o, p.always)),
        Ok(None) if early.apply && !p.always && !signals::interrupted() => phases.apply(p, &cx).ok().map(|o| (o, true)),
        Ok(None) => {
            must_run = early.final_no;
            None
        }
        Err(_) => None,
    };
    Some(EarlyAnswer { hash, from_state, found, must_run })
}

fn run_phase(
    p: &Phase,
    phases: &dyn Phases,
    store: &Store,
    env: &Env,
    outputs: &Mutex<BTreeMap<String, Outputs>>,
    early: Option<EarlyAnswer>,
) -> PhaseResult {
    let t = Instant::now();
    let hash = graph::effective_hash(p, &outputs.lock().expect("outputs lock"));
    // An early answer from the state file holds only for the same inputs; one from the world
    // holds as nothing upstream changed it.
    let early = early.filter(|a| !a.from_state || a.hash == hash);
    // "Must run" holds as well: the phase is not probed again.
    let must_run = early.as_ref().is_some_and(|a| a.must_run);
    if let Some((outs, ran)) = early.and_then(|a| a.found) {
        if let Err(e) = store.finish(p.id, &hash, PhaseStatus::Completed, Some(outs.clone()), None) {
            env.reporter.event(Event::Fail { phase: p.id.into(), error: e.to_string() });
        } else {
            outputs.lock().expect("outputs lock").insert(p.id.to_string(), outs);
            let seconds = t.elapsed().as_secs_f64();
            if ran {
                env.reporter.event(Event::Done { phase: p.id.into(), seconds });
                return PhaseResult { id: p.id, outcome: Outcome::Ran, seconds, error: None };
            }
            env.reporter.event(Event::Skip { phase: p.id.into(), reason: "live state already matches".into() });
            return PhaseResult { id: p.id, outcome: Outcome::Skipped, seconds, error: None };
        }
    }
    let recorded =
        store.phase(p.id).filter(|r| r.status == PhaseStatus::Completed && r.input_hash == hash && !p.always);
    let fail = |error: String, outcome: Outcome| {
        let error = env.redactor.scrub(&error);
        let status = if outcome == Outcome::Interrupted { PhaseStatus::Interrupted } else { PhaseStatus::Failed };
        if let Err(e) = store.finish(p.id, &hash, status, None, Some(error.clone())) {
            env.reporter.event(Event::Fail { phase: p.id.into(), error: e.to_string() });
        }
        env.reporter.event(Event::Fail { phase: p.id.into(), error: error.clone() });
        PhaseResult { id: p.id, outcome, seconds: t.elapsed().as_secs_f64(), error: Some(error) }
    };
    let runner = match env.runner(p.id) {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot open the phase log: {e}"), Outcome::Failed),
    };
    let cx = Cx { runner, hash: hash.clone(), recorded, store, dir: &env.dir, early: false, outputs };

    if !p.always && !must_run {
        match phases.probe(p, &cx) {
            Ok(Some(outs)) => {
                let reason =
                    if cx.recorded.is_some() { "inputs unchanged" } else { "live state already matches" }.to_string();
                if let Err(e) = store.finish(p.id, &hash, PhaseStatus::Completed, Some(outs.clone()), None) {
                    return fail(e.to_string(), Outcome::Failed);
                }
                outputs.lock().expect("outputs lock").insert(p.id.to_string(), outs);
                env.reporter.event(Event::Skip { phase: p.id.into(), reason });
                return PhaseResult {
                    id: p.id,
                    outcome: Outcome::Skipped,
                    seconds: t.elapsed().as_secs_f64(),
                    error: None,
                };
            }
            Ok(None) => {}
            Err(e) => return fail(format!("{e:#}"), outcome_of(&e)),
        }
    }
    if signals::interrupted() {
        return fail("interrupted before it started".into(), Outcome::Interrupted);
    }
    env.reporter.event(Event::Start { phase: p.id.into() });
    if let Err(e) = store.set_running(p.id, &hash) {
        return fail(e.to_string(), Outcome::Failed);
    }
    match phases.apply(p, &cx) {
        Ok(outs) => {
            if let Err(e) = store.finish(p.id, &hash, PhaseStatus::Completed, Some(outs.clone()), None) {
                return fail(e.to_string(), Outcome::Failed);
            }
            outputs.lock().expect("outputs lock").insert(p.id.to_string(), outs);
            let seconds = t.elapsed().as_secs_f64();
            env.reporter.event(Event::Done { phase: p.id.into(), seconds });
            PhaseResult { id: p.id, outcome: Outcome::Ran, seconds, error: None }
        }
        Err(e) => fail(format!("{e:#}"), outcome_of(&e)),
    }
}

fn outcome_of(e: &anyhow::Error) -> Outcome {
    let interrupted = e.chain().any(|c| c.downcast_ref::<super::proc::CmdError>().is_some_and(|c| c.is_interrupt()));
    if interrupted || signals::interrupted() { Outcome::Interrupted } else { Outcome::Failed }
}

/// `--dry-run`: the graph level by level with every command each phase would run.
pub fn dry_run(graph: &Graph, phases: &dyn Phases, redactor: &Redactor) -> String {
    let mut s = String::new();
    for (i, level) in graph.levels().iter().enumerate() {
        let names: Vec<_> = level.iter().map(|p| p.id).collect();
        s.push_str(&format!("step {}: {}\n", i + 1, names.join(" ∥ ")));
        for p in level {
            let after = if p.deps.is_empty() { String::new() } else { format!(" (after {})", p.deps.join(", ")) };
            s.push_str(&format!("  {}{after}: {}\n", p.id, p.summary));
            for c in phases.preview(p) {
                s.push_str(&format!("    $ {}\n", redactor.scrub(&c)));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::progress::Collect;

    struct Fake {
        log: Mutex<Vec<String>>,
        fail: Option<&'static str>,
    }

    impl Phases for Fake {
        fn apply(&self, p: &Phase, _cx: &Cx) -> anyhow::Result<Outputs> {
            self.log.lock().unwrap().push(p.id.to_string());
            if self.fail == Some(p.id) {
                anyhow::bail!("boom");
            }
            Ok(BTreeMap::from([("v".into(), "1".into())]))
        }
        fn preview(&self, p: &Phase) -> Vec<String> {
            vec![format!("do {}", p.id)]
        }
    }

    /// A mutating phase `id` after `deps`.
    fn mk(id: &'static str, deps: &[&'static str]) -> Phase {
        Phase { id, deps: deps.to_vec(), mutating: true, always: false, summary: "", hash: id.to_string() }
    }

    fn graph() -> Graph {
        Graph {
            target: crate::spec::Target::Aks,
            phases: vec![mk("a", &[]), mk("b", &["a"]), mk("c", &["a"]), mk("d", &["b", "c"])],
        }
    }

    /// `a` → `b`; `b` may be probed early. `a` is in place when `a_done`; `b`'s probe answers
    /// `Some` and records whether it was an early probe.
    struct Early2 {
        a_done: bool,
        probes: Mutex<Vec<(&'static str, bool)>>,
        applied: Mutex<Vec<&'static str>>,
    }

    impl Phases for Early2 {
        fn probe(&self, p: &Phase, cx: &Cx) -> anyhow::Result<Option<Outputs>> {
            self.probes.lock().unwrap().push((p.id, cx.early));
            Ok(match p.id {
                "a" => self.a_done.then(Outputs::new),
                _ => Some(BTreeMap::from([("early".into(), cx.early.to_string())])),
            })
        }
        fn apply(&self, p: &Phase, _cx: &Cx) -> anyhow::Result<Outputs> {
            self.applied.lock().unwrap().push(p.id);
            Ok(Outputs::new())
        }
        fn preview(&self, _p: &Phase) -> Vec<String> {
            vec![]
        }
        fn early(&self, p: &Phase) -> Option<Early> {
            (p.id == "b").then(Early::default)
        }
    }

    #[test]
    fn an_early_answer_holds_only_when_nothing_upstream_ran() {
        let g = Graph { target: crate::spec::Target::Aks, phases: vec![mk("a", &[]), mk("b", &["a"])] };
        for a_done in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let env = Env { dir: dir.path().into(), redactor: Redactor::new(), reporter: Arc::new(Collect::default()) };
            let store = Store::open(dir.path(), "d", "aks", Redactor::new()).unwrap();
            let f = Early2 { a_done, probes: Mutex::new(vec![]), applied: Mutex::new(vec![]) };
            let r = execute(&g, &f, &store, &env);
            assert!(r.ok());
            assert!(r.with(Outcome::Skipped).contains(&"b"));
            let probes = f.probes.lock().unwrap().clone();
            let b: Vec<bool> = probes.iter().filter(|(id, _)| *id == "b").map(|(_, e)| *e).collect();
            if a_done {
                // `a` was skipped: `b`'s early answer is used, `b` is not asked again.
                assert_eq!(b, [true], "{probes:?}");
                assert_eq!(store.phase("b").unwrap().outputs["early"], "true");
            } else {
                // `a` ran: the early answer is dropped and `b` is asked again after it.
                assert_eq!(*f.applied.lock().unwrap(), ["a"]);
                assert_eq!(b, [true, false], "{probes:?}");
                assert_eq!(store.phase("b").unwrap().outputs["early"], "false");
            }
        }
    }

    /// `a` → `b` → `c`; `c` may be probed early once `a` is done or found in place.
    struct AfterA(Mutex<Vec<(&'static str, bool)>>);

    impl Phases for AfterA {
        fn probe(&self, p: &Phase, cx: &Cx) -> anyhow::Result<Option<Outputs>> {
            self.0.lock().unwrap().push((p.id, cx.early));
            Ok(None)
        }
        fn apply(&self, p: &Phase, _cx: &Cx) -> anyhow::Result<Outputs> {
            if p.id == "b" {
                // Long enough for the scheduler to look at `c` while `b` runs (its loop turns
                // every 50 ms at most); the assertion holds whatever the timing.
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
            Ok(Outputs::new())
        }
        fn preview(&self, _p: &Phase) -> Vec<String> {
            vec![]
        }
        fn early(&self, p: &Phase) -> Option<Early> {
            (p.id == "c").then(|| Early { after: vec!["a"], ..Early::default() })
        }
    }

    #[test]
    fn no_early_probe_starts_once_something_upstream_ran() {
        let g =
            Graph { target: crate::spec::Target::Aks, phases: vec![mk("a", &[]), mk("b", &["a"]), mk("c", &["b"])] };
        let dir = tempfile::tempdir().unwrap();
        let env = Env { dir: dir.path().into(), redactor: Redactor::new(), reporter: Arc::new(Collect::default()) };
        let store = Store::open(dir.path(), "d", "aks", Redactor::new()).unwrap();
        let f = AfterA(Mutex::new(vec![]));
        assert!(execute(&g, &f, &store, &env).ok());
        // `a` ran: an early answer of `c` would be dropped, so none is asked for.
        let c: Vec<bool> = f.0.lock().unwrap().iter().filter(|(id, _)| *id == "c").map(|(_, e)| *e).collect();
        assert_eq!(c, [false]);
    }

    #[test]
    fn runs_skips_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env { dir: dir.path().into(), redactor: Redactor::new(), reporter: Arc::new(Collect::default()) };
        let store = Store::open(dir.path(), "d", "aks", Redactor::new()).unwrap();
        let g = graph();
        let f = Fake { log: Mutex::new(vec![]), fail: Some("c") };
        let r = execute(&g, &f, &store, &env);
        assert!(!r.ok());
        assert_eq!(r.with(Outcome::NotRun), vec!["d"]);
        let f2 = Fake { log: Mutex::new(vec![]), fail: None };
        let r = execute(&g, &f2, &store, &env);
        assert!(r.ok());
        assert_eq!(*f2.log.lock().unwrap(), vec!["c", "d"]);
        let f3 = Fake { log: Mutex::new(vec![]), fail: None };
        assert!(execute(&g, &f3, &store, &env).ok());
        assert!(f3.log.lock().unwrap().is_empty());
        assert!(dry_run(&g, &f3, &Redactor::new()).contains("step 2: b ∥ c"));
    }
}
