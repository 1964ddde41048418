//! Progress reporting per phase: a spinner with elapsed time on a TTY (indicatif), plain prefixed
//! lines otherwise, or one JSON object per line with `--output json`. Every text that reaches a
//! reporter has already been scrubbed of secrets, and a run's reporter ([`Scrubbing`]) scrubs
//! every event once more before it is shown.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One thing that happened during a run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A phase started.
    Start { phase: String },
    /// A phase was not run: its inputs are unchanged (or live state already matches).
    Skip { phase: String, reason: String },
    /// A phase completed.
    Done { phase: String, seconds: f64 },
    /// A phase failed (or was interrupted).
    Fail { phase: String, error: String },
    /// A command is about to run (already redacted).
    Command { phase: String, command: String },
    /// A line a command printed (already redacted).
    Line { phase: String, stream: Stream, line: String },
    /// A message for the user.
    Info { phase: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

pub trait Reporter: Send + Sync {
    fn event(&self, e: Event);
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Tty,
    Plain,
    Json,
}

impl Style {
    /// A spinner only when stderr is a terminal and the user did not ask for plain output.
    pub fn detect(json: bool) -> Self {
        use std::io::IsTerminal;
        if json {
            Style::Json
        } else if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
            Style::Tty
        } else {
            Style::Plain
        }
    }

    pub fn reporter(self) -> Box<dyn Reporter> {
        match self {
            Style::Tty => Box::new(Spinners::new()),
            Style::Plain => Box::new(Plain::default()),
            Style::Json => Box::new(Json),
        }
    }
}

/// `[phase] text` lines on stderr.
#[derive(Default)]
pub struct Plain {
    out: Mutex<()>,
}

impl Reporter for Plain {
    fn event(&self, e: Event) {
        let _g = self.out.lock();
        let line = match e {
            Event::Start { phase } => format!("[{phase}] started"),
            Event::Skip { phase, reason } => format!("[{phase}] skipped: {reason}"),
            Event::Done { phase, seconds } => format!("[{phase}] done in {seconds:.1}s"),
            Event::Fail { phase, error } => format!("[{phase}] FAILED: {error}"),
            Event::Command { phase, command } => format!("[{phase}] $ {command}"),
            Event::Line { phase, line, .. } => format!("[{phase}] {line}"),
            Event::Info { phase, message } => format!("[{phase}] {message}"),
        };
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

/// One JSON object per line on stdout.
pub struct Json;

impl Reporter for Json {
    fn event(&self, e: Event) {
        if let Ok(s) = serde_json::to_string(&e) {
            let _ = writeln!(std::io::stdout().lock(), "{s}");
        }
    }
}

/// A spinner per running phase with its elapsed time; finished phases and command output are
/// printed above the spinners.
pub struct Spinners {
    multi: indicatif::MultiProgress,
    bars: Mutex<HashMap<String, (indicatif::ProgressBar, Instant)>>,
}

impl Spinners {
    fn new() -> Self {
        Self { multi: indicatif::MultiProgress::new(), bars: Mutex::new(HashMap::new()) }
    }
}

impl Reporter for Spinners {
    fn event(&self, e: Event) {
        let mut bars = self.bars.lock().expect("progress lock");
        match e {
            Event::Start { phase } => {
                let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {prefix:>12} {elapsed:>4} {wide_msg}")
                        .expect("progress template"),
                );
                bar.set_prefix(phase.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                bars.insert(phase, (bar, Instant::now()));
            }
            Event::Skip { phase, reason } => {
                let _ = self.multi.println(format!("  {phase:>12} skipped: {reason}"));
            }
            Event::Done { phase, seconds } => {
                if let Some((bar, _)) = bars.remove(&phase) {
                    bar.finish_and_clear();
                }
                let _ = self.multi.println(format!("✓ {phase:>12} done in {seconds:.1}s"));
            }
            Event::Fail { phase, error } => {
                if let Some((bar, _)) = bars.remove(&phase) {
                    bar.finish_and_clear();
                }
                let _ = self.multi.println(format!("✗ {phase:>12} {error}"));
            }
            Event::Command { phase, command } => {
                if let Some((bar, _)) = bars.get(&phase) {
                    bar.set_message(command);
                }
            }
            Event::Line { phase, line, .. } | Event::Info { phase, message: line } => {
                let _ = self.multi.println(format!("  {phase:>12} | {line}"));
            }
        }
    }
}

/// Scrubs every text of every event, then passes it on.
pub struct Scrubbing {
    inner: Box<dyn Reporter>,
    redactor: super::redact::Redactor,
}

impl Scrubbing {
    pub fn new(inner: Box<dyn Reporter>, redactor: super::redact::Redactor) -> Self {
        Self { inner, redactor }
    }
}

impl Reporter for Scrubbing {
    fn event(&self, e: Event) {
        let r = &self.redactor;
        let e = match e {
            Event::Start { phase } => Event::Start { phase },
            Event::Skip { phase, reason } => Event::Skip { phase, reason: r.scrub(&reason) },
            Event::Done { phase, seconds } => Event::Done { phase, seconds },
            Event::Fail { phase, error } => Event::Fail { phase, error: r.scrub(&error) },
            Event::Command { phase, command } => Event::Command { phase, command: r.scrub(&command) },
            Event::Line { phase, stream, line } => Event::Line { phase, stream, line: r.scrub(&line) },
            Event::Info { phase, message } => Event::Info { phase, message: r.scrub(&message) },
        };
        self.inner.event(e);
    }
}

/// Collects events (tests, and the benchmark).
#[derive(Default)]
pub struct Collect {
    pub events: Mutex<Vec<Event>>,
}

impl Reporter for Collect {
    fn event(&self, e: Event) {
        self.events.lock().expect("collect lock").push(e);
    }
}
