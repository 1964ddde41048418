//! The plan for people: destructive changes first and loud, then each layer in phase order with
//! its resources, items and a unified diff. Colour only when asked (a TTY without NO_COLOR).

use std::fmt::Write;

use super::infra::Action;
use super::{Mode, Plan, Status};

struct Paint(bool);

impl Paint {
    fn c(&self, code: &str, s: &str) -> String {
        if self.0 { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() }
    }
    fn red(&self, s: &str) -> String {
        self.c("31", s)
    }
    fn green(&self, s: &str) -> String {
        self.c("32", s)
    }
    fn yellow(&self, s: &str) -> String {
        self.c("33", s)
    }
    fn bold(&self, s: &str) -> String {
        self.c("1", s)
    }
    fn cyan(&self, s: &str) -> String {
        self.c("36", s)
    }
}

/// The plan as text.
pub fn render(p: &Plan, color: bool) -> String {
    let paint = Paint(color);
    let mut s = String::new();
    let how = match (&p.mode, &p.against) {
        (Mode::Live, _) => "live".to_string(),
        (Mode::Offline, Some(a)) => format!("offline, against {a}"),
        (Mode::Offline, None) => "offline, nothing applied yet".to_string(),
    };
    let _ =
        writeln!(s, "{}", paint.bold(&format!("Plan for `{}` (target {}, {how})", p.deployment, p.target.as_str())));
    if !p.preflight.is_empty() {
        use crate::targets::kube::azure_preflight::Level;
        let _ = writeln!(s, "\n{}", paint.bold("Azure preflight (what a deploy checks before creating anything)"));
        for f in &p.preflight {
            let (tag, line) = match f.level {
                Level::Error => ("!! error", paint.red(&format!("  !! error: {}: {}", f.field, f.message))),
                Level::Warning => ("warning", paint.yellow(&format!("  warning: {}: {}", f.field, f.message))),
                Level::Info => ("note", format!("  note: {}: {}", f.field, f.message)),
            };
            let _ = writeln!(s, "{line}");
            if let Some(h) = &f.help {
                let _ = writeln!(s, "  {}  help: {h}", " ".repeat(tag.len()));
            }
        }
    }
    if !p.destructive.is_empty() {
        let _ = writeln!(
            s,
            "\n{}",
            paint.red(&paint.bold("!! DESTRUCTIVE CHANGES: deploy refuses them without --allow-destroy"))
        );
        for d in &p.destructive {
            let _ = writeln!(s, "{}", paint.red(&format!("  !! {} ({})", d.reason, d.address)));
        }
    }
    for l in &p.layers {
        let head = match l.status {
            Status::Unchanged => paint.green("no changes"),
            Status::Changes => paint.yellow("changes"),
            Status::Create => paint.yellow("to create"),
        };
        let _ = writeln!(s, "\n{}: {head}", paint.bold(l.layer));
        if let Some(n) = &l.note {
            let _ = writeln!(s, "  {n}");
        }
        if !l.resources.is_empty() {
            let count = |a: Action| l.resources.iter().filter(|r| r.action == a).count();
            let _ = writeln!(
                s,
                "  {} to add, {} to change, {} to replace, {} to destroy",
                count(Action::Create),
                count(Action::Update),
                count(Action::Replace),
                count(Action::Delete)
            );
            for r in &l.resources {
                let attrs = if r.changed.is_empty() { String::new() } else { format!(" ({})", r.changed.join(", ")) };
                let line = format!("  {:>3} {}{attrs}", r.action.symbol(), r.address);
                let _ = writeln!(
                    s,
                    "{}",
                    match r.action {
                        Action::Create => paint.green(&line),
                        Action::Update => paint.yellow(&line),
                        _ => paint.red(&line),
                    }
                );
            }
        }
        for i in &l.items {
            let detail = i.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
            let _ = writeln!(s, "  {} {}{detail}", i.action.symbol(), i.name);
        }
        if let Some(d) = &l.diff {
            for line in d.lines() {
                let colored = if line.starts_with("+++") || line.starts_with("---") {
                    paint.bold(line)
                } else if line.starts_with('+') {
                    paint.green(line)
                } else if line.starts_with('-') {
                    paint.red(line)
                } else if line.starts_with("@@") {
                    paint.cyan(line)
                } else {
                    line.to_string()
                };
                let _ = writeln!(s, "    {colored}");
            }
        }
    }
    let changed: Vec<&str> = p.layers.iter().filter(|l| l.status != Status::Unchanged).map(|l| l.layer).collect();
    let _ = writeln!(
        s,
        "\n{}",
        if changed.is_empty() { "No changes.".to_string() } else { format!("Changes in: {}.", changed.join(", ")) }
    );
    s
}
