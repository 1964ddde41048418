//! Problems found in the input, each tied to a field path and a source position, reported
//! together (miette renders them with the offending line).

use std::fmt;
use std::path::PathBuf;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};

use super::node::{Loc, Node, Path};

/// The files a spec was read from: the spec itself, then its overlay.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub files: Vec<(PathBuf, String)>,
}

impl Sources {
    pub fn add(&mut self, path: PathBuf, text: String) -> usize {
        self.files.push((path, text));
        self.files.len() - 1
    }
    pub fn name(&self, i: usize) -> String {
        self.files.get(i).map(|(p, _)| p.display().to_string()).unwrap_or_default()
    }
}

/// One problem: the field it concerns, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Dotted field path, e.g. `cluster.workerGroups[1].cpu`; empty for file-level problems.
    pub path: String,
    pub message: String,
    pub help: Option<String>,
    pub loc: Option<Loc>,
}

impl Problem {
    pub fn new(path: impl fmt::Display, message: impl Into<String>) -> Self {
        Problem { path: path.to_string(), message: message.into(), help: None, loc: None }
    }
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    pub fn at(mut self, loc: Loc) -> Self {
        self.loc = Some(loc);
        self
    }
}

/// Collects problems; `locate` fills in positions from the document tree.
#[derive(Debug, Default, Clone)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn push(&mut self, p: Problem) {
        self.0.push(p);
    }
    /// Adds a problem located at `path` in `doc`.
    pub fn at(&mut self, doc: &Node, path: &Path, message: impl Into<String>, help: Option<String>) {
        let loc = doc.locate(path).loc;
        self.0.push(Problem { path: path.to_string(), message: message.into(), help, loc: Some(loc) });
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn into_result<T>(self, ok: T) -> Result<T, Problems> {
        if self.0.is_empty() { Ok(ok) } else { Err(self) }
    }
}

/// Problems together with the sources they point into: what the CLI prints.
#[derive(Debug)]
pub struct Report {
    pub problems: Problems,
    pub sources: Sources,
}

impl Report {
    /// Renders every problem; `color` selects the coloured theme.
    pub fn render(&self, color: bool) -> String {
        let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
        let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(1).with_width(100);
        let mut out = String::new();
        for p in &self.problems.0 {
            let diag = ProblemDiag::new(p, &self.sources);
            let _ = handler.render_report(&mut out, &diag);
        }
        let n = self.problems.len();
        out.push_str(&format!("{n} problem{} found; nothing was written or run.\n", if n == 1 { "" } else { "s" }));
        out
    }

    /// One line per problem: `file:line:col: path: message`.
    pub fn short(&self) -> String {
        self.problems
            .0
            .iter()
            .map(|p| {
                let mut s = String::new();
                if let Some(l) = p.loc {
                    s.push_str(&format!("{}:{}:{}: ", self.sources.name(l.source), l.line, l.col));
                }
                if !p.path.is_empty() {
                    s.push_str(&format!("{}: ", p.path));
                }
                s.push_str(&p.message);
                if let Some(h) = &p.help {
                    s.push_str(&format!(" (help: {h})"));
                }
                s
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

impl std::error::Error for Report {}

#[derive(Debug)]
struct ProblemDiag {
    message: String,
    help: Option<String>,
    src: Option<NamedSource<String>>,
    label: Option<LabeledSpan>,
}

impl ProblemDiag {
    fn new(p: &Problem, sources: &Sources) -> Self {
        let mut message = if p.path.is_empty() { p.message.clone() } else { format!("{}: {}", p.path, p.message) };
        let (src, label) = match p.loc.and_then(|l| sources.files.get(l.source).map(|f| (l, f))) {
            Some((l, (path, text))) => {
                message.push_str(&format!("\n  at {}:{}:{}", path.display(), l.line, l.col));
                let len = if l.len > 0 { l.len } else { token_len(text, l.offset) };
                (
                    Some(NamedSource::new(path.display().to_string(), text.clone())),
                    Some(LabeledSpan::new(Some("here".into()), l.offset.min(text.len()), len)),
                )
            }
            None => (None, None),
        };
        ProblemDiag { message, help: p.help.clone(), src, label }
    }
}

fn token_len(text: &str, offset: usize) -> usize {
    text.get(offset..)
        .map(|rest| rest.find(['\n', ',', '}', ']']).unwrap_or(rest.len()).max(1))
        .unwrap_or(0)
        .min(text.len().saturating_sub(offset))
}

impl fmt::Display for ProblemDiag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProblemDiag {}

impl miette::Diagnostic for ProblemDiag {
    fn severity(&self) -> Option<miette::Severity> {
        Some(miette::Severity::Error)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.src.as_ref().map(|s| s as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.label.clone().map(|l| Box::new(std::iter::once(l)) as Box<dyn Iterator<Item = LabeledSpan>>)
    }
}
