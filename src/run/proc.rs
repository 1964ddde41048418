//! The one subprocess wrapper (over duct): argv only, never a shell; a timeout per command;
//! stdout/stderr streamed line by line to the phase's log file and to the reporter, scrubbed of
//! secrets; on failure an error with the command, exit code and stderr tail. Retries with backoff
//! only for commands marked idempotent (reads and waits). On timeout or Ctrl-C the child gets
//! SIGINT (Terraform then releases its state lock), a grace period, then SIGKILL.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::progress::{Event, Reporter, Stream};
use super::redact::Redactor;
use super::signals;

/// One command to run.
#[derive(Clone)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub dir: Option<PathBuf>,
    /// Bytes piped to stdin (may hold secrets: never logged or shown).
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Time between SIGINT and SIGKILL.
    pub grace: Duration,
    /// Attempts for idempotent commands (1 = no retry).
    pub attempts: u32,
    pub backoff: Duration,
    /// Texts of stderr that make a failure an answer, not a fault: it is not retried.
    pub settled: &'static [&'static str],
    /// When not empty, the only failures retried: those whose stderr holds one of these texts
    /// (for a command that is not idempotent, but that changed nothing when it failed so).
    pub retry_when: &'static [&'static str],
    /// Stream stdout to the reporter (stderr is always streamed; both always go to the log).
    pub echo: bool,
    /// Stdout is a secret value: neither logged nor streamed (only returned to the caller, who
    /// registers it with the redactor).
    pub secret_stdout: bool,
    /// Exit codes that count as success.
    pub ok_codes: Vec<i32>,
    /// Clean-up after Ctrl-C (stopping what the run started): runs, to its end or timeout, even
    /// once the run is interrupted.
    pub cleanup: bool,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cmd")
            .field("argv", &self.argv())
            .field("stdin", &self.stdin.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: vec![],
            env: vec![],
            dir: None,
            stdin: None,
            timeout: Duration::from_secs(600),
            grace: Duration::from_secs(15),
            attempts: 1,
            backoff: Duration::from_millis(500),
            settled: &[],
            retry_when: &[],
            echo: true,
            secret_stdout: false,
            ok_codes: vec![0],
            cleanup: false,
        }
    }

    /// Marks the command as clean-up after an interruption (see [`Cmd::cleanup`]).
    pub fn cleanup(mut self) -> Self {
        self.cleanup = true;
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn dir(mut self, d: impl Into<PathBuf>) -> Self {
        self.dir = Some(d.into());
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    pub fn grace(mut self, t: Duration) -> Self {
        self.grace = t;
        self
    }

    /// Marks the command as safe to repeat (a read or a wait): retried with exponential backoff.
    pub fn idempotent(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Up to `attempts` tries, but only while it fails printing one of `texts` (see
    /// [`Cmd::retry_when`]); any other failure, a timeout or an I/O error ends it.
    pub fn retry_when(mut self, texts: &'static [&'static str], attempts: u32) -> Self {
        self.retry_when = texts;
        self.attempts = attempts.max(1);
        self
    }

    /// A failure whose stderr holds one of `texts` is an answer (e.g. "no such kind"): not
    /// retried, however many attempts [`Cmd::idempotent`] allows.
    pub fn settled_by(mut self, texts: &'static [&'static str]) -> Self {
        self.settled = texts;
        self
    }

    /// Keeps stdout off the terminal (it is still logged): for machine-readable output.
    pub fn quiet(mut self) -> Self {
        self.echo = false;
        self
    }

    /// Marks stdout as a secret value (e.g. `az keyvault secret show`): it is returned but never
    /// logged or shown, since it cannot be registered with the redactor before it is read.
    pub fn secret_output(mut self) -> Self {
        self.echo = false;
        self.secret_stdout = true;
        self
    }

    pub fn ok_codes(mut self, codes: &[i32]) -> Self {
        self.ok_codes = codes.to_vec();
        self
    }

    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.program.clone()).chain(self.args.iter().cloned()).collect()
    }

    /// The command as a shell would need it typed (for display only; never executed by a shell).
    pub fn display(&self) -> String {
        self.argv().iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
    }
}

/// Quotes a word for display when it holds anything a shell would interpret.
pub fn shell_quote(a: &str) -> String {
    if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// What a finished command printed.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("`{program}` was not found on PATH")]
    NotFound { program: String },
    #[error("`{command}` exited with code {code}{}", tail_text(.stderr_tail))]
    Failed { command: String, code: i32, stderr_tail: String },
    #[error("`{command}` timed out after {}s and was stopped", .after.as_secs())]
    Timeout { command: String, after: Duration },
    #[error("`{command}` was interrupted")]
    Interrupted { command: String },
    #[error("`{command}`: {source}")]
    Io {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

fn tail_text(t: &str) -> String {
    if t.trim().is_empty() { String::new() } else { format!(":\n{}", indent(t)) }
}

fn indent(t: &str) -> String {
    t.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

impl CmdError {
    pub fn is_interrupt(&self) -> bool {
        matches!(self, CmdError::Interrupted { .. })
    }
}

/// Runs commands for one phase: its log file, its reporter prefix, the run's redactor.
#[derive(Clone)]
pub struct Runner {
    pub phase: String,
    log: Option<Arc<Mutex<File>>>,
    pub redactor: Redactor,
    reporter: Arc<dyn Reporter>,
}

/// Lines of stderr kept for the error message.
const TAIL_LINES: usize = 20;

impl Runner {
    /// A runner whose commands append to `log` (created with its folder).
    pub fn new(
        phase: &str,
        log: Option<&Path>,
        redactor: Redactor,
        reporter: Arc<dyn Reporter>,
    ) -> std::io::Result<Self> {
        let log = match log {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Some(Arc::new(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?)))
            }
            None => None,
        };
        Ok(Self { phase: phase.to_string(), log, redactor, reporter })
    }

    pub fn reporter(&self) -> &Arc<dyn Reporter> {
        &self.reporter
    }

    /// Tells the user something (scrubbed, logged).
    pub fn info(&self, message: &str) {
        let message = self.redactor.scrub(message);
        self.log_line("#", &message);
        self.reporter.event(Event::Info { phase: self.phase.clone(), message });
    }

    /// Writes a line to the phase's log only (scrubbed): details nobody needs on screen.
    pub fn note(&self, message: &str) {
        self.log_line("#", &self.redactor.scrub(message));
    }

    fn log_line(&self, tag: &str, line: &str) {
        if let Some(log) = &self.log {
            let mut f = log.lock().expect("log lock");
            let _ = writeln!(f, "{tag} {line}");
        }
    }

    /// Runs `cmd` (retrying idempotent commands); `Err` unless its exit code is in `ok_codes`.
    pub fn run(&self, cmd: &Cmd) -> Result<Output, CmdError> {
        let mut attempt = 1;
        loop {
            let r = self.run_once(cmd);
            match &r {
                Err(CmdError::Failed { stderr_tail, .. })
                    if cmd.settled.iter().any(|t| stderr_tail.contains(t))
                        || (!cmd.retry_when.is_empty() && !cmd.retry_when.iter().any(|t| stderr_tail.contains(t))) =>
                {
                    return r;
                }
                Err(CmdError::Timeout { .. } | CmdError::Io { .. }) if !cmd.retry_when.is_empty() => return r,
                Err(CmdError::Failed { .. } | CmdError::Timeout { .. } | CmdError::Io { .. })
                    if attempt < cmd.attempts && !signals::interrupted() =>
                {
                    let wait = cmd.backoff * 2u32.saturating_pow(attempt - 1);
                    self.info(&format!(
                        "retrying in {:.1}s (attempt {} of {})",
                        wait.as_secs_f64(),
                        attempt + 1,
                        cmd.attempts
                    ));
                    sleep_unless_interrupted(wait);
                    attempt += 1;
                }
                _ => return r,
            }
        }
    }

    fn run_once(&self, cmd: &Cmd) -> Result<Output, CmdError> {
        let mut cmd = std::borrow::Cow::Borrowed(cmd);
        if let Some(cap) = timeout_cap()
            && cap < cmd.timeout
        {
            cmd.to_mut().timeout = cap;
        }
        let cmd = cmd.as_ref();
        let shown = self.redactor.scrub(&cmd.display());
        self.log_line("$", &shown);
        self.reporter.event(Event::Command { phase: self.phase.clone(), command: shown.clone() });
        if signals::interrupted() && !cmd.cleanup {
            return Err(CmdError::Interrupted { command: shown });
        }
        let io_err = |source| CmdError::Io { command: shown.clone(), source };
        let (out_r, out_w) = os_pipe::pipe().map_err(io_err)?;
        let (err_r, err_w) = os_pipe::pipe().map_err(io_err)?;
        let handle = {
            let mut e = duct::cmd(&cmd.program, &cmd.args).stdout_file(out_w).stderr_file(err_w).unchecked();
            for (k, v) in &cmd.env {
                e = e.env(k, v);
            }
            if let Some(d) = &cmd.dir {
                e = e.dir(d);
            }
            e = match &cmd.stdin {
                Some(b) => e.stdin_bytes(b.clone()),
                None => e.stdin_null(),
            };
            // The expression (holding the pipes' write ends) is dropped here, so the readers see
            // EOF when the child exits.
            e.start()
        };
        let handle = match handle {
            Ok(h) => h,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CmdError::NotFound { program: cmd.program.clone() });
            }
            Err(e) => return Err(io_err(e)),
        };
        let out_t = self.pump(out_r, Stream::Stdout, cmd.echo, !cmd.secret_stdout);
        let err_t = self.pump(err_r, Stream::Stderr, true, true);

        let started = Instant::now();
        let mut stopped: Option<CmdError> = None;
        let status = loop {
            match handle.try_wait() {
                Ok(Some(o)) => break o.status,
                Ok(None) => {}
                Err(e) => return Err(io_err(e)),
            }
            if stopped.is_none() {
                if signals::interrupted() && !cmd.cleanup {
                    stopped = Some(CmdError::Interrupted { command: shown.clone() });
                } else if started.elapsed() > cmd.timeout {
                    stopped = Some(CmdError::Timeout { command: shown.clone(), after: cmd.timeout });
                }
                if stopped.is_some() {
                    self.info(&format!(
                        "stopping `{}` (SIGINT, then SIGKILL after {}s)",
                        cmd.program,
                        cmd.grace.as_secs()
                    ));
                    for pid in handle.pids() {
                        // SAFETY: kill(2) with a PID this handle spawned and still waits for.
                        unsafe {
                            libc::kill(pid as libc::pid_t, libc::SIGINT);
                        }
                    }
                    match handle.wait_timeout(cmd.grace) {
                        Ok(Some(_)) => {}
                        _ => {
                            let _ = handle.kill();
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = out_t.join().unwrap_or_default();
        let stderr = err_t.join().unwrap_or_default();
        if let Some(e) = stopped {
            return Err(e);
        }
        let code = exit_code(&status);
        self.log_line("#", &format!("exit {code} after {:.2}s", started.elapsed().as_secs_f64()));
        if cmd.ok_codes.contains(&code) {
            Ok(Output { code, stdout, stderr })
        } else {
            let lines: Vec<&str> = stderr.lines().collect();
            let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
            Err(CmdError::Failed { command: shown, code, stderr_tail: self.redactor.scrub(&tail) })
        }
    }

    /// Reads one stream to its end: each line scrubbed, (optionally) logged and reported; returns
    /// everything read, unscrubbed, for the caller to parse.
    fn pump(&self, r: os_pipe::PipeReader, stream: Stream, echo: bool, log: bool) -> std::thread::JoinHandle<String> {
        let me = self.clone();
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut reader = BufReader::new(r);
            let mut buf = Vec::new();
            while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                all.extend_from_slice(&buf);
                let line = String::from_utf8_lossy(&buf);
                let line = me.redactor.scrub(line.trim_end_matches(['\n', '\r']));
                if log {
                    me.log_line(if stream == Stream::Stdout { ">" } else { "!" }, &line);
                }
                if echo {
                    me.reporter.event(Event::Line { phase: me.phase.clone(), stream, line });
                }
                buf.clear();
            }
            String::from_utf8_lossy(&all).into_owned()
        })
    }
}

/// `RAYDEPLOY_COMMAND_TIMEOUT` (seconds, fractions allowed) caps the timeout of every command:
/// a run that must not hang longer than that, whatever the phase.
pub fn timeout_cap() -> Option<Duration> {
    std::env::var("RAYDEPLOY_COMMAND_TIMEOUT")
        .ok()?
        .parse::<f64>()
        .ok()
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
}

fn exit_code(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Sleeps in small steps, returning early on Ctrl-C.
pub fn sleep_unless_interrupted(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !signals::interrupted() {
        std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::progress::Collect;

    fn runner() -> (Runner, Arc<Collect>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let c = Arc::new(Collect::default());
        let r = Runner::new("t", Some(&dir.path().join("t.log")), Redactor::new(), c.clone()).unwrap();
        (r, c, dir)
    }

    #[test]
    fn streams_captures_and_scrubs() {
        let (r, c, dir) = runner();
        r.redactor.add("s3cr3t-value");
        let o = r
            .run(&Cmd::new("sh").args(["-c", "echo out; echo err s3cr3t-value >&2; cat"]).stdin("s3cr3t-value"))
            .unwrap();
        assert_eq!(o.stdout, "out\ns3cr3t-value");
        let log = std::fs::read_to_string(dir.path().join("t.log")).unwrap();
        assert!(!log.contains("s3cr3t-value"), "{log}");
        assert!(log.contains("! err ***"), "{log}");
        let events = format!("{:?}", c.events.lock().unwrap());
        assert!(!events.contains("s3cr3t-value"));
    }

    #[test]
    fn secret_output_is_returned_but_never_logged() {
        let (r, c, dir) = runner();
        let o = r.run(&Cmd::new("sh").args(["-c", "echo kv-value-$((100 + 23))"]).secret_output()).unwrap();
        assert_eq!(o.stdout, "kv-value-123\n");
        let log = std::fs::read_to_string(dir.path().join("t.log")).unwrap();
        assert!(!log.contains("kv-value-123"), "{log}");
        assert!(!format!("{:?}", c.events.lock().unwrap()).contains("kv-value-123"));
    }

    #[test]
    fn failure_names_command_code_and_tail() {
        let (r, _, _d) = runner();
        let e = r.run(&Cmd::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("exited with code 3") && m.contains("boom") && m.contains("sh -c"), "{m}");
    }

    #[test]
    fn missing_program() {
        let (r, _, _d) = runner();
        assert!(matches!(r.run(&Cmd::new("raydeploy-no-such-tool")), Err(CmdError::NotFound { .. })));
    }

    #[test]
    fn timeout_stops_the_child() {
        let (r, _, _d) = runner();
        let e = r
            .run(&Cmd::new("sleep").arg("30").timeout(Duration::from_millis(200)).grace(Duration::from_millis(200)))
            .unwrap_err();
        assert!(matches!(e, CmdError::Timeout { .. }), "{e}");
    }

    #[test]
    fn sigint_reaches_the_child_on_timeout() {
        let (r, _, dir) = runner();
        let (mark, ready) = (dir.path().join("got-int"), dir.path().join("trap-set"));
        let script = format!(
            "trap 'touch {}; exit 130' INT; touch {}; while :; do sleep 0.05; done",
            mark.display(),
            ready.display()
        );
        // The timeout is what is tested, so it is a duration; the shell must have set its trap
        // before it fires. A run where the signal came first (no trap yet, so no `trap-set`) says
        // nothing: it is run again with a longer timeout, a bounded number of times.
        let mut timeout = Duration::from_millis(300);
        for _ in 0..8 {
            let _ = std::fs::remove_file(&ready);
            let e = r
                .run(&Cmd::new("sh").args(["-c", &script]).timeout(timeout).grace(Duration::from_secs(5)))
                .unwrap_err();
            assert!(matches!(e, CmdError::Timeout { .. }), "{e}");
            if mark.exists() {
                return;
            }
            assert!(!ready.exists(), "the trap was set, yet SIGINT never reached it");
            timeout *= 2;
        }
        panic!("the shell never set its trap before the timeout (last timeout {timeout:?})");
    }

    #[test]
    fn idempotent_commands_retry() {
        let (r, _, dir) = runner();
        let n = dir.path().join("n");
        let script = format!("echo x >> {0}; [ $(wc -l < {0}) -ge 3 ]", n.display());
        let mut c = Cmd::new("sh").args(["-c", &script]).idempotent(3);
        c.backoff = Duration::from_millis(10);
        r.run(&c).unwrap();
        assert_eq!(std::fs::read_to_string(&n).unwrap().lines().count(), 3);
    }

    #[test]
    fn a_settled_failure_is_not_retried() {
        let (r, _, dir) = runner();
        let n = dir.path().join("n");
        let script = format!("echo x >> {}; echo 'error: no such kind' >&2; exit 1", n.display());
        let mut c = Cmd::new("sh").args(["-c", &script]).idempotent(3).settled_by(&["no such kind"]);
        c.backoff = Duration::from_millis(10);
        let e = r.run(&c).unwrap_err();
        assert!(matches!(e, CmdError::Failed { code: 1, .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&n).unwrap().lines().count(), 1);
        // Any other failure still is.
        let c = Cmd { settled: &["something else"], ..c };
        r.run(&c).unwrap_err();
        assert_eq!(std::fs::read_to_string(&n).unwrap().lines().count(), 4);
    }

    #[test]
    fn retry_when_retries_only_the_failures_it_names() {
        let (r, _, dir) = runner();
        let n = dir.path().join("n");
        // Fails twice saying "not yet", then succeeds.
        let script =
            format!("echo x >> {0}; [ $(wc -l < {0}) -ge 3 ] || {{ echo 'not yet' >&2; exit 1; }}", n.display());
        let mut c = Cmd::new("sh").args(["-c", &script]).retry_when(&["not yet"], 5);
        c.backoff = Duration::from_millis(10);
        r.run(&c).unwrap();
        assert_eq!(std::fs::read_to_string(&n).unwrap().lines().count(), 3);
        // Another failure is not retried.
        std::fs::remove_file(&n).unwrap();
        let script = format!("echo x >> {}; echo 'refused' >&2; exit 1", n.display());
        let mut c = Cmd::new("sh").args(["-c", &script]).retry_when(&["not yet"], 5);
        c.backoff = Duration::from_millis(10);
        r.run(&c).unwrap_err();
        assert_eq!(std::fs::read_to_string(&n).unwrap().lines().count(), 1);
    }

    #[test]
    fn display_quotes() {
        assert_eq!(Cmd::new("a").args(["b c", "it's", "x=1"]).display(), r"a 'b c' 'it'\''s' x=1");
    }
}
