//! Problems found in the input, each tied to a field path and a source position, reported
//! together (miette renders them with the offending line).

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents, SourceSpan, SpanContents,
};

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
    /// The file's name as shown in messages (control and bidi characters escaped).
    pub fn name(&self, i: usize) -> String {
        self.files.get(i).map(|(p, _)| escape(&p.display().to_string()).into_owned()).unwrap_or_default()
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
                    s.push_str(&format!("{}: ", escape(&p.path)));
                }
                s.push_str(&escape(&p.message));
                if let Some(h) = &p.help {
                    s.push_str(&format!(" (help: {})", escape(h)));
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
    src: Option<Snippet>,
    label: Option<LabeledSpan>,
}

impl ProblemDiag {
    fn new(p: &Problem, sources: &Sources) -> Self {
        let mut message = if p.path.is_empty() {
            escape(&p.message).into_owned()
        } else {
            format!("{}: {}", escape(&p.path), escape(&p.message))
        };
        let (src, label) = match p.loc.and_then(|l| sources.files.get(l.source).map(|f| (l, f))) {
            Some((l, (_, text))) => {
                let name = sources.name(l.source);
                message.push_str(&format!("\n  at {name}:{}:{}", l.line, l.col));
                let len = if l.len > 0 { l.len } else { token_len(text, l.offset) };
                let snippet = Snippet::new(name, text, l, len);
                let label = LabeledSpan::new(Some("here".into()), snippet.label_offset, snippet.label_len);
                (Some(snippet), Some(label))
            }
            None => (None, None),
        };
        ProblemDiag { message, help: p.help.as_deref().map(|h| escape(h).into_owned()), src, label }
    }
}

fn token_len(text: &str, offset: usize) -> usize {
    text.get(offset..)
        .map(|rest| rest.find(['\n', ',', '}', ']']).unwrap_or(rest.len()).max(1))
        .unwrap_or(0)
        .min(text.len().saturating_sub(offset))
}

/// Characters that never reach a terminal raw: controls (C0, DEL, C1), bidirectional
/// formatting (which can make text read in another order than it is), and the Unicode line and
/// paragraph separators.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Unicode's bidirectional formatting characters (marks, embeddings, overrides, isolates).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every [unsafe](is_unsafe_char) character written as an escape: `\n`, `\t`, `\r`,
/// `\0`, else `\u{XXXX}`.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        '\0' => out.push_str("\\0"),
        c if is_unsafe_char(c) => out.push_str(&format!("\\u{{{:04X}}}", c as u32)),
        c => out.push(c),
    }
}

/// How many characters of a source line a snippet shows.
pub const SNIPPET_WIDTH: usize = 120;

/// A window of at most `width` characters of `line` around character `col` (0-based), escaped,
/// with `…` where it was cut. Also returns the window's first character index, and for each
/// character index from the window's start to its end (inclusive) the byte offset in the result
/// where it starts, so that positions in the line map into the window: `offsets[i - start]`.
pub fn clip_line(line: &str, col: usize, width: usize) -> (String, usize, Vec<usize>) {
    clip(line, col, width, false, false)
}

/// [`clip_line`] for a piece of a line: `cut_left` / `cut_right` say the line goes on beyond it.
fn clip(piece: &str, col: usize, width: usize, cut_left: bool, cut_right: bool) -> (String, usize, Vec<usize>) {
    let chars: Vec<char> = piece.chars().collect();
    let n = chars.len();
    let (start, end) = if n <= width {
        (0, n)
    } else {
        let start = col.saturating_sub(width / 2).min(n - width);
        (start, start + width)
    };
    let mut out = String::new();
    if start > 0 || cut_left {
        out.push('…');
    }
    let mut offsets = Vec::with_capacity(end - start + 1);
    for &c in &chars[start..end] {
        offsets.push(out.len());
        push_escaped(&mut out, c);
    }
    offsets.push(out.len());
    if end < n || cut_right {
        out.push('…');
    }
    (out, start, offsets)
}

/// How far a snippet looks for line ends either side of a position: room for a full window of
/// characters (4 bytes at most each), and a bound, so that a snippet costs the same on a line of
/// any length (and many problems on one huge line stay linear).
const SCAN_BYTES: usize = SNIPPET_WIDTH * 4;

/// The part of the line holding `offset` that lies within [`SCAN_BYTES`] of it (without a
/// trailing `\r`), as byte bounds, and whether those bounds are the line's own start and end.
fn line_piece(text: &str, offset: usize) -> (usize, usize, bool, bool) {
    let lo = floor_char_boundary(text, offset.saturating_sub(SCAN_BYTES));
    let hi = ceil_char_boundary(text, (offset + SCAN_BYTES).min(text.len()));
    let (start, whole_start) = match text[lo..offset].rfind('\n') {
        Some(i) => (lo + i + 1, true),
        None => (lo, lo == 0),
    };
    let (end, whole_end) = match text[offset..hi].find('\n') {
        Some(i) => (offset + i, true),
        None => (hi, hi == text.len()),
    };
    let end = if whole_end && text[start..end].ends_with('\r') { end - 1 } else { end };
    (start, end, whole_start, whole_end)
}

/// The part of a source a diagnostic shows: the problem's line and one line either side, each
/// clipped to [`SNIPPET_WIDTH`] characters around the problem's column and escaped. miette reads
/// it with the file's own line numbers and the problem's column.
#[derive(Debug)]
struct Snippet {
    name: String,
    text: String,
    /// 0-based line number of the snippet's first line in the file.
    first_line: usize,
    label_offset: usize,
    label_len: usize,
    /// 0-based column of the problem in the file.
    col: usize,
}

impl Snippet {
    fn new(name: String, text: &str, loc: Loc, len: usize) -> Self {
        let offset = floor_char_boundary(text, loc.offset.min(text.len()));
        let (start, end, whole_start, whole_end) = line_piece(text, offset);
        let piece = &text[start..end];
        let col = text[start..offset].chars().count();
        // the label stays on the problem's line
        let label_end = floor_char_boundary(text, (offset + len).min(end).max(offset));
        let end_col = col + text[offset..label_end].chars().count();
        let (clipped, window, offsets) = clip(piece, col, SNIPPET_WIDTH, !whole_start, !whole_end);
        let at = |c: usize| offsets[c.clamp(window, window + offsets.len() - 1) - window];
        let mut snippet = String::new();
        let mut first_line = loc.line.saturating_sub(1) as usize;
        // Context lines, cut to the same window when the problem's line is known from its start.
        if whole_start && start > 0 {
            let (ps, pe, p_whole_start, _) = line_piece(text, start - 1);
            let prev = &text[ps..pe];
            let line = if p_whole_start {
                clip_window(prev, window, false)
            } else {
                clip(prev, prev.chars().count(), SNIPPET_WIDTH, true, false).0
            };
            snippet.push_str(&line);
            snippet.push('\n');
            first_line = first_line.saturating_sub(1);
        }
        let label_offset = snippet.len() + at(col);
        let label_len = at(end_col) - at(col);
        snippet.push_str(&clipped);
        let next_start = text[end..].find('\n').map(|i| end + i + 1);
        if let Some(ns) = next_start.filter(|&ns| whole_end && ns < text.len()) {
            let (_, ne, _, n_whole_end) = line_piece(text, ns);
            let from = if whole_start { window } else { 0 };
            snippet.push('\n');
            snippet.push_str(&clip_window(&text[ns..ne], from, !n_whole_end));
        }
        Snippet { name, text: snippet, first_line, label_offset, label_len, col: loc.col.saturating_sub(1) as usize }
    }
}

/// A context line cut to the same character window as the problem's line (`cut_right`: the
/// line goes on beyond `line`).
fn clip_window(line: &str, start: usize, cut_right: bool) -> String {
    let mut out = String::new();
    if start > 0 && !line.is_empty() {
        out.push('…');
    }
    let mut taken = 0;
    let mut rest = line.chars().skip(start);
    for c in rest.by_ref().take(SNIPPET_WIDTH) {
        push_escaped(&mut out, c);
        taken += 1;
    }
    if taken == SNIPPET_WIDTH && (rest.next().is_some() || cut_right) || (taken < SNIPPET_WIDTH && cut_right) {
        out.push('…');
    }
    out
}

fn ceil_char_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl miette::SourceCode for Snippet {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let inner = self.text.as_str().read_span(span, context_lines_before, context_lines_after)?;
        let column =
            if context_lines_before == 0 && span.offset() == self.label_offset { self.col } else { inner.column() };
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            *inner.span(),
            inner.line() + self.first_line,
            column,
            inner.line_count(),
        )))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw_unsafe(s: &str) -> Option<char> {
        s.chars().find(|&c| c != '\n' && is_unsafe_char(c))
    }

    #[test]
    fn escape_writes_controls_and_bidi_as_escapes() {
        assert!(matches!(escape("plain text ü"), Cow::Borrowed(_)));
        assert_eq!(escape("a\0b\tc\nd\re"), "a\\0b\\tc\\nd\\re");
        assert_eq!(escape("x\u{1b}[31my\u{7f}"), "x\\u{001B}[31my\\u{007F}");
        assert_eq!(
            escape("ab\u{202e}cd\u{2066}\u{200f}\u{85}\u{2028}"),
            "ab\\u{202E}cd\\u{2066}\\u{200F}\\u{0085}\\u{2028}"
        );
        assert!(is_bidi_control('\u{202e}') && is_bidi_control('\u{061c}') && !is_bidi_control('a'));
    }

    #[test]
    fn short_lines_are_kept_whole() {
        let (text, start, offsets) = clip_line("key: value", 5, 120);
        assert_eq!((text.as_str(), start), ("key: value", 0));
        assert_eq!(offsets.len(), 11);
        assert_eq!(offsets[5], 5);
    }

    #[test]
    fn long_lines_are_clipped_around_the_column() {
        let line: String = (0..10_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        // in the middle: cut on both sides
        let (text, start, offsets) = clip_line(&line, 5_000, 120);
        assert_eq!(start, 4_940);
        assert!(text.starts_with('…') && text.ends_with('…'), "{text}");
        assert_eq!(text.chars().count(), 122);
        assert_eq!(&text[offsets[5_000 - start]..][..1], &line[5_000..5_001]);
        // at the start: cut on the right only
        let (text, start, _) = clip_line(&line, 3, 120);
        assert_eq!(start, 0);
        assert!(!text.starts_with('…') && text.ends_with('…'));
        // at the end: the window ends with the line
        let (text, start, offsets) = clip_line(&line, 9_999, 120);
        assert_eq!(start, 10_000 - 120);
        assert!(text.starts_with('…') && !text.ends_with('…'));
        assert_eq!(*offsets.last().unwrap(), text.len());
    }

    #[test]
    fn clipped_lines_are_escaped() {
        let (text, _, offsets) = clip_line("a\u{202e}b\0c", 2, 120);
        assert_eq!(text, "a\\u{202E}b\\0c");
        // `b` (character 2) starts after the escape
        assert_eq!(&text[offsets[2]..offsets[3]], "b");
    }

    fn report(text: &str, offset: usize, len: usize) -> Report {
        let mut sources = Sources::default();
        sources.add(PathBuf::from("raydeploy.yaml"), text.to_string());
        let before = &text[..offset];
        let line = before.matches('\n').count() as u32 + 1;
        let col = before.rsplit('\n').next().unwrap_or("").chars().count() as u32 + 1;
        let loc = Loc { source: 0, line, col, offset, len };
        Report { problems: Problems(vec![Problem::new("a.b", "something is wrong").at(loc)]), sources }
    }

    #[test]
    fn a_problem_on_a_long_line_shows_a_window_of_it() {
        let long = "x".repeat(550_000);
        let text = format!("first: 1\nkey: [{long}\nlast: 2\n");
        let offset = text.find('[').unwrap();
        let out = report(&text, offset, long.len() + 1).render(false);
        assert!(out.len() < 2_000, "{} bytes of output", out.len());
        assert!(out.contains("raydeploy.yaml:2:6"), "{out}");
        // the line before is shown; the one after is not, the problem's line going on past the window
        assert!(out.contains(" 1 │ first: 1") && !out.contains("last: 2"), "{out}");
        assert!(out.contains("key: [xxx") && out.contains('…'), "{out}");
        // far into the line, the window is centred on the column
        let offset = text.find('[').unwrap() + 300_000;
        let out = report(&text, offset, 1).render(false);
        assert!(out.len() < 2_000, "{} bytes of output", out.len());
        assert!(out.contains("[raydeploy.yaml:2:300006]"), "{out}");
        assert!(out.contains("│ …xxx"), "{out}");
    }

    /// Each snippet looks at a bounded part of its line: 10k problems on a 1 MB line render in
    /// output (and work) proportional to the problems, where reading the whole line for each would
    /// scan 10 GB.
    #[test]
    fn many_problems_on_one_huge_line_render_in_bounded_snippets() {
        let line: String = (0..100_000).map(|i| format!("k{i:05}: 1, ")).collect();
        let text = format!("a: 1\nhead: {{{line}}}\nz: 2\n");
        let mut sources = Sources::default();
        sources.add(PathBuf::from("raydeploy.yaml"), text.clone());
        let problems: Vec<Problem> = (0..10_000)
            .map(|i| {
                let offset = text.find(&format!("k{:05}:", i * 10)).unwrap();
                let col = (offset - 5 + 1) as u32;
                Problem::new(format!("head.k{:05}", i * 10), "unknown field").at(Loc {
                    source: 0,
                    line: 2,
                    col,
                    offset,
                    len: 6,
                })
            })
            .collect();
        let out = Report { problems: Problems(problems), sources }.render(false);
        assert!(out.len() < 10_000 * 1_000, "{} bytes", out.len());
        assert!(out.contains("[raydeploy.yaml:2:8]") && out.contains(" 1 │ a: 1"), "{}", &out[..2_000]);
        let last = &out[out.rfind("head.k99990").unwrap()..];
        let col = text.find("k99990:").unwrap() - 5 + 1;
        assert!(last.contains(&format!("[raydeploy.yaml:2:{col}]")) && last.contains(" 2 │ …"), "{last}");
        assert!(last.contains("k99990: 1, k99991") && !last.contains(" 1 │"), "{last}");
    }

    #[test]
    fn source_lines_messages_and_file_names_are_escaped() {
        let text = "name: \"a\u{202e}b\"\nns: ray\0x\n";
        let out = report(text, text.find("ray").unwrap(), 5).render(false);
        assert_eq!(raw_unsafe(&out), None, "{out}");
        assert!(out.contains("ns: ray\\0x") && out.contains("name: \"a\\u{202E}b\""), "{out}");

        let mut sources = Sources::default();
        sources.add(PathBuf::from("dir\u{1b}]0;x\u{7}/raydeploy.yaml"), text.to_string());
        let p = Problem::new("env.A\u{7}", "`x\u{202e}y` is bad").help("fix\u{0}it").at(Loc {
            source: 0,
            line: 1,
            col: 1,
            offset: 0,
            len: 4,
        });
        let r = Report { problems: Problems(vec![p]), sources };
        for out in [r.render(false), r.short()] {
            assert_eq!(raw_unsafe(&out), None, "{out}");
            assert!(out.contains("env.A\\u{0007}") && out.contains("x\\u{202E}y") && out.contains("fix\\0it"), "{out}");
            assert!(out.contains("dir\\u{001B}]0;x\\u{0007}/raydeploy.yaml"), "{out}");
        }
    }

    /// Text weighted towards what must be escaped: controls, bidi, separators, newlines.
    fn nasty(max: usize) -> impl Strategy<Value = String> {
        let c = prop_oneof![
            3 => any::<char>(),
            3 => prop::sample::select(vec![
                '\0', '\u{7}', '\u{1b}', '\r', '\t', '\u{7f}', '\u{85}', '\u{9b}', '\u{61c}', '\u{200e}', '\u{202a}',
                '\u{202e}', '\u{2066}', '\u{2069}', '\u{2028}', '\u{2029}',
            ]),
            1 => Just('\n'),
            3 => prop::char::range('a', 'z'),
        ];
        prop::collection::vec(c, 0..max).prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever the source, the problem's text and its position, the rendered report carries
        /// no raw control or bidi character, and every snippet line stays short.
        #[test]
        fn reports_never_carry_raw_control_or_bidi_characters(
            text in nasty(400),
            message in nasty(40),
            path in nasty(20),
            at in 0usize..400,
            len in 0usize..50,
        ) {
            let mut sources = Sources::default();
            sources.add(PathBuf::from("raydeploy.yaml"), text.clone());
            let offset = floor_char_boundary(&text, at.min(text.len()));
            let line = text[..offset].matches('\n').count() as u32 + 1;
            let loc = Loc { source: 0, line, col: 1, offset, len };
            let r = Report { problems: Problems(vec![Problem::new(&path, &message).help(&message).at(loc)]), sources };
            for out in [r.render(false), r.short()] {
                prop_assert_eq!(raw_unsafe(&out), None, "{}", out);
            }
        }

        #[test]
        fn escaped_text_has_no_unsafe_characters(s in nasty(200)) {
            let e = escape(&s);
            prop_assert!(!e.chars().any(is_unsafe_char), "{:?}", e);
        }
    }
}
