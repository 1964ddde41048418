//! Port-forwards to the head service, held until Ctrl-C (`dashboard`, `session`).
//!
//! One `kubectl port-forward svc/<head> LOCAL:REMOTE` per port, not one for all: since kubectl
//! 1.23 a forward ends at the first connection that fails ("lost connection to pod"), so a
//! request to Serve's port before any application listens there would otherwise take the
//! dashboard and the Ray client down with it. Each forward is started again whenever it ends: a
//! forward that was up (kubectl printed `Forwarding from`) dropped — pod restart, idle timeout,
//! a failed connection — and is reconnected at once, then with a growing wait while the head is
//! away; one that cannot start [`GIVE_UP`] times in a row before it was ever up (no service, no
//! access, the local port taken) ends the whole session with its error. Each drop and each
//! reconnect is printed. Ctrl-C (or SIGTERM) stops every kubectl (SIGINT, then SIGKILL after a
//! grace period) and waits for it before returning.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};

use super::Kube;
use crate::run::proc::{CmdError, Runner, sleep_unless_interrupted};
use crate::run::progress::{Event, Reporter, Stream};
use crate::run::signals;

/// Failed starts in a row, before a forward was ever up, after which the session gives up.
pub const GIVE_UP: u32 = 6;
/// Longest wait between two starts of a forward.
const MAX_WAIT: Duration = Duration::from_secs(8);

/// One port to forward.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Shown in messages (`dashboard`, `client`, `serve`).
    pub name: &'static str,
    /// On 127.0.0.1.
    pub local: u16,
    /// The head service's port.
    pub remote: u16,
}

/// What each forward's kubectl has shown so far: whether the current attempt is up (it printed
/// `Forwarding from`), and whether any attempt ever was.
#[derive(Default)]
struct State {
    attempt: u32,
    up: bool,
    ever_up: bool,
}

/// The forwards' reporter: kubectl's own lines go to the log only (`Handling connection for …`
/// for every connection would drown the terminal); `Forwarding from` marks a forward up, prints
/// its reconnection, and once every forward is up for the first time calls the `ready` hook.
struct Watch {
    inner: Arc<dyn Reporter>,
    service: String,
    states: Mutex<BTreeMap<String, State>>,
    ready: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    forwards: Vec<Forward>,
}

impl Watch {
    fn start_attempt(&self, name: &str) {
        let mut st = self.states.lock().expect("forward state");
        let s = st.entry(name.to_string()).or_default();
        s.attempt += 1;
        s.up = false;
    }

    /// (up in the last attempt, ever up).
    fn was_up(&self, name: &str) -> (bool, bool) {
        let st = self.states.lock().expect("forward state");
        st.get(name).map_or((false, false), |s| (s.up, s.ever_up))
    }

    fn mark_up(&self, phase: &str) {
        let (reconnected, all_up) = {
            let mut st = self.states.lock().expect("forward state");
            let s = st.entry(phase.to_string()).or_default();
            if s.up {
                return;
            }
            s.up = true;
            let reconnected = s.ever_up;
            s.ever_up = true;
            (reconnected, self.forwards.iter().all(|f| st.get(f.name).is_some_and(|s| s.ever_up)))
        };
        if reconnected && let Some(f) = self.forwards.iter().find(|f| f.name == phase) {
            self.inner.event(Event::Info {
                phase: phase.to_string(),
                message: format!("reconnected: 127.0.0.1:{} -> svc/{}:{}", f.local, self.service, f.remote),
            });
        }
        if all_up && let Some(hook) = self.ready.lock().expect("ready hook").take() {
            hook();
        }
    }
}

impl Reporter for Watch {
    fn event(&self, e: Event) {
        match e {
            Event::Line { phase, stream: Stream::Stdout, line } => {
                if line.starts_with("Forwarding from") {
                    self.mark_up(&phase);
                }
            }
            Event::Line { .. } | Event::Command { .. } => {}
            e => self.inner.event(e),
        }
    }
}

/// Holds `forwards` to the head service until Ctrl-C (then `Ok`); calls `ready` once, when
/// every forward is up for the first time. Commands and kubectl's output are logged to
/// `logs/<log>.log`.
pub fn hold(k: &Kube, log: &str, forwards: &[Forward], ready: impl FnOnce() + Send + 'static) -> Result<()> {
    let c = &k.s.d.cluster;
    signals::install();
    let watch = Arc::new(Watch {
        inner: k.s.reporter.clone(),
        service: c.head_service.clone(),
        states: Mutex::new(BTreeMap::new()),
        ready: Mutex::new(Some(Box::new(ready))),
        forwards: forwards.to_vec(),
    });
    let path = k.s.dir.join("logs").join(format!("{log}.log"));
    let runners = forwards
        .iter()
        .map(|f| Ok(Runner::new(f.name, Some(&path), k.s.redactor.clone(), watch.clone())?))
        .collect::<Result<Vec<_>>>()?;
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = forwards
            .iter()
            .zip(&runners)
            .map(|(f, r)| {
                let watch = &watch;
                scope.spawn(move || {
                    let out = keep(k, r, watch, f);
                    if out.is_err() {
                        // One forward that cannot start ends the session: stop the others.
                        signals::raise();
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a port-forward panicked"))))
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
}

/// Runs one forward again and again until Ctrl-C.
fn keep(k: &Kube, r: &Runner, watch: &Watch, f: &Forward) -> Result<()> {
    let c = &k.s.d.cluster;
    let all_codes: Vec<i32> = (0..=255).collect();
    let cmd = k
        .kubectl()
        .args(["port-forward", &format!("svc/{}", c.head_service), &format!("{}:{}", f.local, f.remote)])
        .args(["-n", &c.namespace, "--address", "127.0.0.1"])
        .timeout(Duration::from_secs(365 * 24 * 3600))
        .grace(Duration::from_secs(5))
        // Every end is looked at here, whatever kubectl's exit code.
        .ok_codes(&all_codes);
    let mut failures = 0u32;
    loop {
        watch.start_attempt(f.name);
        let result = r.run(&cmd);
        if signals::interrupted() || matches!(&result, Err(e) if e.is_interrupt()) {
            return Ok(());
        }
        let why = match &result {
            Ok(o) => {
                let last = o.stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
                let last = r.redactor.scrub(last);
                if last.is_empty() {
                    format!("the port-forward ended (exit code {})", o.code)
                } else {
                    format!("the port-forward ended (exit code {}): {last}", o.code)
                }
            }
            Err(e @ CmdError::NotFound { .. }) => bail!("{e}"),
            Err(e) => format!("{e}"),
        };
        let (was_up, ever_up) = watch.was_up(f.name);
        failures = if was_up { 0 } else { failures + 1 };
        if !ever_up && failures >= GIVE_UP {
            bail!(
                "the port-forward of {} to svc/{}:{} failed to start {failures} times in a row: {why}",
                f.name,
                c.head_service,
                f.remote
            );
        }
        let wait = if was_up {
            Duration::from_millis(200)
        } else {
            (Duration::from_millis(250) * 2u32.pow(failures.min(6))).min(MAX_WAIT)
        };
        r.info(&format!(
            "{}: {why}; reconnecting in {:.1}s",
            if was_up { "dropped" } else { "not up" },
            wait.as_secs_f64()
        ));
        sleep_unless_interrupted(wait);
        if signals::interrupted() {
            return Ok(());
        }
    }
}
