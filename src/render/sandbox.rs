//! What a template may do. Templates, built in or overridden next to the spec, see only the
//! values raydeploy passes in: no environment, no files, no clock, no randomness. Everything
//! they can make the engine do is bounded, so a mistaken (or hostile) override ends in a located
//! error, never in a crash or an exhausted machine:
//!
//! - before parsing, a scan of the source bounds what tera's recursive parser and renderer would
//!   recurse on: tag nesting, brackets and operators per tag;
//! - after parsing, a check of the syntax tree: only the functions `range` and `throw`, only
//!   known filters and tests, only templates raydeploy knows as include, import or extends
//!   targets, no cycle through includes, imports, extends or macro calls, at most
//!   [`MAX_CALL_DEPTH`] of them deep, at most [`MAX_REFS`] values per expression;
//! - the tree is then instrumented: every loop iteration and macro call counts against
//!   [`MAX_ITERATIONS`]; every value a `set`, a macro argument, a loop or a `{{ }}` takes, and
//!   every filter's result, is at most [`MAX_VALUE_BYTES`] and [`MAX_VALUE_DEPTH`] deep; every
//!   byte of text, output, filter result and set value counts against [`MAX_PRODUCED_BYTES`];
//!   `range` yields at most [`MAX_RANGE`] numbers; a rendered file is at most
//!   [`MAX_OUTPUT_BYTES`].
//!
//! The instrumentation calls functions named `__rd_<kind>|<template>|<byte offset>`, so an error
//! raised inside one names the template and line it came from (see [`describe`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tera::ast::{Expr, ExprVal, FunctionCall, Node, WS};
use tera::{Tera, Value};

/// Largest single value a template can build (estimated in-memory size).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Deepest nesting of arrays and maps in a value a template builds.
pub const MAX_VALUE_DEPTH: usize = 64;
/// Everything one template render produces: text, output, filter results, set values.
pub const MAX_PRODUCED_BYTES: u64 = 64 << 20;
/// Largest rendered file.
pub const MAX_OUTPUT_BYTES: usize = 8 << 20;
/// Loop iterations plus macro calls in one template render.
pub const MAX_ITERATIONS: u64 = 100_000;
/// Most numbers one `range` call yields.
pub const MAX_RANGE: usize = 10_000;
/// Deepest nesting of `if`, `for`, `macro`, `block` and `filter` tags.
pub const MAX_NESTING: usize = 32;
/// Deepest nesting of brackets in one tag.
pub const MAX_BRACKETS: usize = 32;
/// Most operators in one tag.
pub const MAX_OPERATORS: usize = 128;
/// Longest chain of includes, imports, extends and macro calls.
pub const MAX_CALL_DEPTH: usize = 16;
/// Most variables, function and macro calls in one expression.
pub const MAX_REFS: usize = 32;
/// Stack of the thread that parses and renders templates: ample for the bounds above.
pub const STACK_BYTES: usize = 64 << 20;

/// The functions a template may call.
pub const FUNCTIONS: &[&str] = &["range", "throw"];

/// Prefix of the instrumentation's function names.
const SITE: &str = "__rd_";

/// A problem in one template, at a byte offset of its source when known.
#[derive(Debug, Clone, PartialEq)]
pub struct TplProblem {
    pub template: String,
    pub offset: Option<usize>,
    pub message: String,
    pub help: Option<String>,
}

impl TplProblem {
    fn new(template: &str, offset: Option<usize>, message: impl Into<String>) -> Self {
        Self { template: template.into(), offset, message: message.into(), help: None }
    }
    fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Source scan

/// A `{{ }}` or `{% %}` tag of a template source.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    /// Byte offset of its `{`.
    pub offset: usize,
    /// What syntax-tree node it becomes: `expr`, `super`, `set`, `for`, `if`, `macro`, `block`,
    /// `filter`, `include`, `import`, `extends`; `None` for closing and other tags.
    pub node: Option<&'static str>,
}

/// The tags of `src`, or the first place that exceeds a nesting bound. Unterminated tags and
/// other syntax errors are left to tera's parser, which reports them with their position.
pub fn scan(template: &str, src: &str) -> Result<Vec<Tag>, TplProblem> {
    let b = src.as_bytes();
    let mut tags = vec![];
    let mut depth = 0usize;
    let mut i = 0;
    let too = |at: usize, what: String| {
        Err(TplProblem::new(template, Some(at), what)
            .help("templates are bounded so that no template can exhaust the stack; simplify this part"))
    };
    while let Some(rel) = src[i..].find('{') {
        let p = i + rel;
        let Some(&next) = b.get(p + 1) else { break };
        match next {
            b'#' => match src[p + 2..].find("#}") {
                Some(e) => i = p + 2 + e + 2,
                None => break,
            },
            b'{' | b'%' => {
                let close = if next == b'{' { "}}" } else { "%}" };
                let Some(t) = tag_body(src, p + 2, close) else { break };
                let body = src[p + 2..t.end].trim().trim_start_matches('-').trim_end_matches('-').trim();
                if t.brackets > MAX_BRACKETS {
                    return too(p, format!("brackets nest {} deep in one tag (at most {MAX_BRACKETS})", t.brackets));
                }
                if t.operators > MAX_OPERATORS {
                    return too(p, format!("{} operators in one tag (at most {MAX_OPERATORS})", t.operators));
                }
                i = t.end + 2;
                if next == b'{' {
                    let node = if body.replace(' ', "") == "super()" { "super" } else { "expr" };
                    tags.push(Tag { offset: p, node: Some(node) });
                    continue;
                }
                let keyword = body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or("");
                let node = match keyword {
                    "set" | "set_global" => Some("set"),
                    "for" => Some("for"),
                    "if" => Some("if"),
                    "macro" => Some("macro"),
                    "block" => Some("block"),
                    "filter" => Some("filter"),
                    "include" => Some("include"),
                    "import" => Some("import"),
                    "extends" => Some("extends"),
                    _ => None,
                };
                if matches!(keyword, "if" | "for" | "macro" | "block" | "filter") {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return too(p, format!("tags nest more than {MAX_NESTING} deep"));
                    }
                } else if matches!(keyword, "endif" | "endfor" | "endmacro" | "endblock" | "endfilter") {
                    depth = depth.saturating_sub(1);
                }
                tags.push(Tag { offset: p, node });
                if keyword == "raw" {
                    // Everything up to `{% endraw %}` is text.
                    let mut j = i;
                    loop {
                        let Some(r) = src[j..].find("{%") else { return Ok(tags) };
                        let q = j + r;
                        let Some(t) = tag_body(src, q + 2, "%}") else { return Ok(tags) };
                        let body = src[q + 2..t.end].trim().trim_start_matches('-').trim_end_matches('-').trim();
                        j = t.end + 2;
                        if body == "endraw" {
                            break;
                        }
                    }
                    i = j;
                }
            }
            _ => i = p + 1,
        }
    }
    Ok(tags)
}

struct TagBody {
    /// Offset of the closing delimiter.
    end: usize,
    brackets: usize,
    operators: usize,
}

/// Scans a tag's inside from `start` to its closing delimiter, outside string literals.
fn tag_body(src: &str, start: usize, close: &str) -> Option<TagBody> {
    let b = src.as_bytes();
    let (mut depth, mut brackets, mut operators) = (0usize, 0usize, 0usize);
    let mut quote: Option<u8> = None;
    let mut word = String::new();
    let mut i = start;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if c.is_ascii_alphanumeric() || c == b'_' {
            word.push(c as char);
        } else {
            if matches!(word.as_str(), "and" | "or" | "not" | "in" | "is") {
                operators += 1;
            }
            word.clear();
        }
        // A `-` right before the closing delimiter is whitespace control, not an operator.
        if b[i..].starts_with(close.as_bytes()) || (c == b'-' && b[i + 1..].starts_with(close.as_bytes())) {
            let end = if c == b'-' { i + 1 } else { i };
            return Some(TagBody { end, brackets, operators });
        }
        match c {
            b'"' | b'\'' | b'`' => quote = Some(c),
            b'(' | b'[' => {
                depth += 1;
                brackets = brackets.max(depth);
            }
            b')' | b']' => depth = depth.saturating_sub(1),
            b'+' | b'-' | b'*' | b'/' | b'%' | b'~' | b'<' | b'>' | b'=' | b'!' | b'|' => operators += 1,
            _ => {}
        }
        i += 1;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Syntax-tree check and instrumentation

/// A node of the call graph: a template's own body or a macro (by name, over every template).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Vertex {
    Template(String),
    Macro(String),
}

impl Vertex {
    fn describe(&self) -> String {
        match self {
            Vertex::Template(t) => format!("templates/{t}"),
            Vertex::Macro(m) => format!("macro `{m}`"),
        }
    }
}

/// One edge: from, to, and where (template, offset) the include, import or call is.
type Edge = (Vertex, Vertex, String, Option<usize>);

/// Checks and instruments every template of `tera` (each with the tags [`scan`] found in its
/// source); afterwards the engine renders only with the functions [`install`] registers.
pub fn instrument(tera: &mut Tera, tags: &BTreeMap<String, Vec<Tag>>) -> Result<Vec<String>, Vec<TplProblem>> {
    let names: BTreeSet<String> = tera.templates.keys().cloned().collect();
    let filters: BTreeSet<String> = tera.filters.keys().cloned().collect();
    let testers: BTreeSet<String> = tera.testers.keys().cloned().collect();
    let mut problems = vec![];
    let mut edges: Vec<Edge> = vec![];
    let mut sites = vec![];
    for name in &names {
        let tpl = tera.templates.get_mut(name).expect("template present");
        let found = tags.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let mut w = Walker::new(name, found, &tpl.ast, &names, &filters, &testers);
        w.nodes(&mut tpl.ast);
        // Rendering reads macros and blocks from their own copies: refresh them from the tree.
        tpl.macros.clear();
        tpl.blocks.clear();
        for n in &tpl.ast {
            if let Node::MacroDefinition(_, def, _) = n {
                tpl.macros.insert(def.name.clone(), def.clone());
            }
        }
        collect_blocks(&tpl.ast, &mut tpl.blocks);
        problems.extend(w.problems);
        edges.extend(w.edges);
        sites.extend(w.sites);
    }
    problems.extend(cycles(&edges));
    if !problems.is_empty() {
        return Err(problems);
    }
    if let Err(e) = tera.build_inheritance_chains().and_then(|_| tera.check_macro_files()) {
        return Err(vec![TplProblem::new("", None, e.to_string())]);
    }
    Ok(sites)
}

/// Same walk as tera's own: blocks at the top level and inside blocks.
fn collect_blocks(ast: &[Node], out: &mut HashMap<String, tera::ast::Block>) {
    for n in ast {
        if let Node::Block(_, b, _) = n {
            out.insert(b.name.clone(), b.clone());
            collect_blocks(&b.body, out);
        }
    }
}

struct Walker<'a> {
    template: &'a str,
    /// Offsets of the tags of each node kind, in source order; `None` when the tags found do not
    /// match the tree (then no locations are given rather than wrong ones).
    offsets: Option<HashMap<&'static str, VecDeque<usize>>>,
    names: &'a BTreeSet<String>,
    filters: &'a BTreeSet<String>,
    testers: &'a BTreeSet<String>,
    /// The macro being walked, if any.
    within: Option<String>,
    problems: Vec<TplProblem>,
    edges: Vec<Edge>,
    sites: Vec<String>,
}

impl<'a> Walker<'a> {
    fn new(
        template: &'a str,
        tags: &[Tag],
        ast: &[Node],
        names: &'a BTreeSet<String>,
        filters: &'a BTreeSet<String>,
        testers: &'a BTreeSet<String>,
    ) -> Self {
        let mut offsets: HashMap<&'static str, VecDeque<usize>> = HashMap::new();
        for t in tags {
            if let Some(k) = t.node {
                offsets.entry(k).or_default().push_back(t.offset);
            }
        }
        let mut counts = HashMap::new();
        count_nodes(ast, &mut counts);
        let matches = counts.iter().all(|(k, n)| offsets.get(k).map_or(0, VecDeque::len) == *n)
            && offsets.iter().all(|(k, v)| counts.get(k).copied().unwrap_or(0) == v.len());
        Walker {
            template,
            offsets: matches.then_some(offsets),
            names,
            filters,
            testers,
            within: None,
            problems: vec![],
            edges: vec![],
            sites: vec![],
        }
    }

    fn at(&mut self, kind: &'static str) -> Option<usize> {
        self.offsets.as_mut().and_then(|o| o.get_mut(kind)).and_then(VecDeque::pop_front)
    }

    fn here(&self) -> Vertex {
        match &self.within {
            Some(m) => Vertex::Macro(m.clone()),
            None => Vertex::Template(self.template.to_string()),
        }
    }

    fn problem(&mut self, at: Option<usize>, message: String, help: &str) {
        self.problems.push(TplProblem::new(self.template, at, message).help(help));
    }

    /// A function call the instrumentation adds: `kind` at `at`.
    fn site(&mut self, kind: &str, at: Option<usize>) -> String {
        let name = format!("{SITE}{kind}|{}|{}", self.template, at.map(|a| a.to_string()).unwrap_or_default());
        self.sites.push(name.clone());
        name
    }

    fn call(&mut self, kind: &str, at: Option<usize>, args: Vec<(&str, Expr)>) -> Expr {
        let name = self.site(kind, at);
        let args = args.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        Expr::new(ExprVal::FunctionCall(FunctionCall { name, args }))
    }

    /// Replaces `e` by `kind(v=e)`.
    fn wrap(&mut self, e: &mut Expr, kind: &str, at: Option<usize>) {
        let inner = std::mem::replace(e, Expr::new(ExprVal::Bool(false)));
        *e = self.call(kind, at, vec![("v", inner)]);
    }

    fn tick(&mut self, at: Option<usize>) -> Node {
        Node::VariableBlock(WS::default(), self.call("tick", at, vec![]))
    }

    fn target(&mut self, at: Option<usize>, what: &str, name: &str, must_exist: bool) {
        if self.names.contains(name) {
            self.edges.push((self.here(), Vertex::Template(name.to_string()), self.template.to_string(), at));
        } else if must_exist {
            let known: Vec<&str> = self.names.iter().map(String::as_str).collect();
            self.problem(
                at,
                format!("{what} \"{name}\", which is not one of raydeploy's templates"),
                &format!("a template can {what} only: {}", known.join(", ")),
            );
        }
    }

    fn nodes(&mut self, nodes: &mut [Node]) {
        for n in nodes.iter_mut() {
            self.node(n);
        }
    }

    fn node(&mut self, n: &mut Node) {
        match n {
            Node::Super => {
                self.at("super");
            }
            Node::Comment(..) | Node::Break(_) | Node::Continue(_) => {}
            Node::Text(s) | Node::Raw(_, s, _) => {
                let text = std::mem::take(s);
                let e = self.call("text", None, vec![("s", Expr::new(ExprVal::String(text)))]);
                *n = Node::VariableBlock(WS::default(), e);
            }
            Node::VariableBlock(_, e) => {
                let at = self.at("expr");
                self.expr(e, at);
                self.wrap(e, "out", at);
            }
            Node::MacroDefinition(_, def, _) => {
                let at = self.at("macro");
                let outer = self.within.replace(def.name.clone());
                for d in def.args.values_mut().flatten() {
                    self.expr(d, at);
                }
                self.nodes(&mut def.body);
                let t = self.tick(at);
                def.body.insert(0, t);
                self.within = outer;
            }
            Node::Extends(_, name) => {
                let at = self.at("extends");
                let name = name.clone();
                self.target(at, "extend", &name, true);
            }
            Node::Include(_, names, ignore_missing) => {
                let at = self.at("include");
                let (names, must) = (names.clone(), !*ignore_missing);
                for name in &names {
                    self.target(at, "include", name, must);
                }
            }
            Node::ImportMacro(_, file, _) => {
                let at = self.at("import");
                let file = file.clone();
                self.target(at, "import", &file, true);
            }
            Node::Set(_, set) => {
                let at = self.at("set");
                self.expr(&mut set.value, at);
                self.wrap(&mut set.value, "set", at);
            }
            Node::FilterSection(_, fs, _) => {
                let at = self.at("filter");
                self.filter_name(&fs.filter.name, at);
                for a in fs.filter.args.values_mut() {
                    self.expr(a, at);
                }
                self.nodes(&mut fs.body);
            }
            Node::Block(_, b, _) => {
                self.at("block");
                self.nodes(&mut b.body);
            }
            Node::Forloop(_, f, _) => {
                let at = self.at("for");
                self.expr(&mut f.container, at);
                self.wrap(&mut f.container, "loop", at);
                self.nodes(&mut f.body);
                let t = self.tick(at);
                f.body.insert(0, t);
                if let Some(e) = &mut f.empty_body {
                    self.nodes(e);
                }
            }
            Node::If(i, _) => {
                let at = self.at("if");
                for (_, e, body) in &mut i.conditions {
                    self.expr(e, at);
                    self.nodes(body);
                }
                if let Some((_, body)) = &mut i.otherwise {
                    self.nodes(body);
                }
            }
        }
    }

    fn filter_name(&mut self, name: &str, at: Option<usize>) {
        if name != "safe" && name != "default" && !self.filters.contains(name) {
            self.problem(
                at,
                format!("unknown filter `{name}`"),
                "see the template sandbox in README.md for the filters",
            );
        }
    }

    /// Checks one expression (a tag's); macro-call arguments are instrumented in place.
    fn expr(&mut self, e: &mut Expr, at: Option<usize>) {
        let mut refs = 0;
        self.expr_in(e, at, &mut refs);
        if refs > MAX_REFS {
            self.problem(
                at,
                format!("one expression combines {refs} variables and calls (at most {MAX_REFS})"),
                "split it with {% set %}",
            );
        }
    }

    fn expr_in(&mut self, e: &mut Expr, at: Option<usize>, refs: &mut usize) {
        for f in &mut e.filters {
            let name = f.name.clone();
            self.filter_name(&name, at);
            for a in f.args.values_mut() {
                self.expr_in(a, at, refs);
            }
        }
        match &mut e.val {
            ExprVal::String(_) | ExprVal::Int(_) | ExprVal::Float(_) | ExprVal::Bool(_) => {}
            ExprVal::Ident(_) => *refs += 1,
            ExprVal::Math(m) => {
                self.expr_in(&mut m.lhs, at, refs);
                self.expr_in(&mut m.rhs, at, refs);
            }
            ExprVal::Logic(l) => {
                self.expr_in(&mut l.lhs, at, refs);
                self.expr_in(&mut l.rhs, at, refs);
            }
            ExprVal::In(i) => {
                self.expr_in(&mut i.lhs, at, refs);
                self.expr_in(&mut i.rhs, at, refs);
            }
            ExprVal::Test(t) => {
                *refs += 1;
                if !self.testers.contains(&t.name) {
                    let name = t.name.clone();
                    self.problem(
                        at,
                        format!("unknown test `{name}`"),
                        "see the template sandbox in README.md for the tests",
                    );
                }
                for a in &mut t.args {
                    self.expr_in(a, at, refs);
                }
            }
            ExprVal::Array(items) => {
                for i in items {
                    self.expr_in(i, at, refs);
                }
            }
            ExprVal::StringConcat(c) => {
                for v in &mut c.values {
                    match v {
                        ExprVal::Ident(_) => *refs += 1,
                        ExprVal::FunctionCall(f) => self.function(f, at, refs),
                        _ => {}
                    }
                }
            }
            ExprVal::FunctionCall(f) => self.function(f, at, refs),
            ExprVal::MacroCall(m) => {
                *refs += 1;
                self.edges.push((self.here(), Vertex::Macro(m.name.clone()), self.template.to_string(), at));
                let keys: Vec<String> = m.args.keys().cloned().collect();
                for k in keys {
                    let a = m.args.get_mut(&k).expect("argument present");
                    self.expr_in(a, at, refs);
                    self.wrap(a, "arg", at);
                }
            }
        }
    }

    fn function(&mut self, f: &mut FunctionCall, at: Option<usize>, refs: &mut usize) {
        *refs += 1;
        if !FUNCTIONS.contains(&f.name.as_str()) {
            let why = match f.name.as_str() {
                "get_env" => " (templates cannot read the environment)",
                "now" => " (templates cannot read the clock)",
                "get_random" => " (templates cannot use randomness)",
                _ => "",
            };
            self.problem(
                at,
                format!("function `{}` is not available in templates{why}", f.name),
                "a template sees only the values raydeploy passes in; the functions are range and throw",
            );
        }
        for a in f.args.values_mut() {
            self.expr_in(a, at, refs);
        }
    }
}

fn count_nodes(ast: &[Node], counts: &mut HashMap<&'static str, usize>) {
    for n in ast {
        let (kind, children): (Option<&'static str>, Vec<&[Node]>) = match n {
            Node::Super => (Some("super"), vec![]),
            Node::VariableBlock(..) => (Some("expr"), vec![]),
            Node::MacroDefinition(_, d, _) => (Some("macro"), vec![&d.body]),
            Node::Extends(..) => (Some("extends"), vec![]),
            Node::Include(..) => (Some("include"), vec![]),
            Node::ImportMacro(..) => (Some("import"), vec![]),
            Node::Set(..) => (Some("set"), vec![]),
            Node::FilterSection(_, f, _) => (Some("filter"), vec![&f.body]),
            Node::Block(_, b, _) => (Some("block"), vec![&b.body]),
            Node::Forloop(_, f, _) => {
                let mut c: Vec<&[Node]> = vec![&f.body];
                if let Some(e) = &f.empty_body {
                    c.push(e);
                }
                (Some("for"), c)
            }
            Node::If(i, _) => {
                let mut c: Vec<&[Node]> = i.conditions.iter().map(|(_, _, b)| b.as_slice()).collect();
                if let Some((_, b)) = &i.otherwise {
                    c.push(b);
                }
                (Some("if"), c)
            }
            _ => (None, vec![]),
        };
        if let Some(k) = kind {
            *counts.entry(k).or_default() += 1;
        }
        for c in children {
            count_nodes(c, counts);
        }
    }
}

/// Cycles through includes, imports, extends and macro calls, and chains longer than
/// [`MAX_CALL_DEPTH`].
fn cycles(edges: &[Edge]) -> Vec<TplProblem> {
    let mut out: BTreeMap<&Vertex, Vec<&Edge>> = BTreeMap::new();
    for e in edges {
        out.entry(&e.0).or_default().push(e);
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done(usize),
    }
    struct Search<'e> {
        out: BTreeMap<&'e Vertex, Vec<&'e Edge>>,
        mark: BTreeMap<&'e Vertex, Mark>,
        path: Vec<&'e Edge>,
        problems: Vec<TplProblem>,
        too_deep: bool,
    }
    impl<'e> Search<'e> {
        /// The longest chain from `v` (0 once a cycle is reported).
        fn visit(&mut self, v: &'e Vertex) -> usize {
            match self.mark.get(v) {
                Some(Mark::Done(d)) => return *d,
                Some(Mark::Open) => return 0,
                None => {}
            }
            self.mark.insert(v, Mark::Open);
            let mut depth = 0;
            for e in self.out.get(v).cloned().unwrap_or_default() {
                if self.mark.get(&e.1) == Some(&Mark::Open) {
                    let start = self.path.iter().position(|p| p.0 == e.1).unwrap_or(self.path.len());
                    let mut chain: Vec<String> = self.path[start..].iter().map(|p| p.0.describe()).collect();
                    chain.push(e.0.describe());
                    chain.push(e.1.describe());
                    let what = match (&e.0, &e.1) {
                        (a, b) if a == b => format!("{} calls or includes itself", a.describe()),
                        _ => format!("a cycle: {}", chain.join(" → ")),
                    };
                    self.problems.push(
                        TplProblem::new(&e.2, e.3, what)
                            .help("includes, imports and macro calls cannot recurse: rendering would never end"),
                    );
                    continue;
                }
                self.path.push(e);
                let d = 1 + self.visit(&e.1);
                self.path.pop();
                if d > MAX_CALL_DEPTH && !self.too_deep {
                    self.too_deep = true;
                    self.problems.push(
                        TplProblem::new(&e.2, e.3, format!("includes and macro calls chain {d} deep from here"))
                            .help(format!("at most {MAX_CALL_DEPTH}")),
                    );
                }
                depth = depth.max(d);
            }
            self.mark.insert(v, Mark::Done(depth));
            depth
        }
    }
    let starts: Vec<&Vertex> = out.keys().copied().collect();
    let mut s = Search { out, mark: BTreeMap::new(), path: vec![], problems: vec![], too_deep: false };
    for v in starts {
        s.visit(v);
    }
    s.problems
}

// ---------------------------------------------------------------------------------------------
// Runtime bounds

/// What one render has used; shared by the engine's functions and filters.
#[derive(Debug, Default)]
pub struct Budget {
    iterations: AtomicU64,
    produced: AtomicU64,
}

impl Budget {
    pub fn reset(&self) {
        self.iterations.store(0, Ordering::Relaxed);
        self.produced.store(0, Ordering::Relaxed);
    }

    fn tick(&self) -> tera::Result<()> {
        if self.iterations.fetch_add(1, Ordering::Relaxed) + 1 > MAX_ITERATIONS {
            return Err(tera::Error::msg(format!(
                "more than {MAX_ITERATIONS} loop iterations and macro calls in one render"
            )));
        }
        Ok(())
    }

    fn charge(&self, bytes: usize) -> tera::Result<()> {
        if self.produced.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64 > MAX_PRODUCED_BYTES {
            return Err(tera::Error::msg(format!(
                "the template produces more than {} MiB in one render",
                MAX_PRODUCED_BYTES >> 20
            )));
        }
        Ok(())
    }
}

/// Estimated in-memory size of a value; an error beyond [`MAX_VALUE_BYTES`] or
/// [`MAX_VALUE_DEPTH`] (without recursion, so a deep value cannot exhaust the stack here).
pub fn value_size(v: &Value) -> tera::Result<usize> {
    const NODE: usize = 16;
    let mut total = 0usize;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        if depth > MAX_VALUE_DEPTH {
            return Err(tera::Error::msg(format!("a value nests more than {MAX_VALUE_DEPTH} levels deep")));
        }
        total += NODE;
        match v {
            Value::String(s) => total += s.len(),
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, depth + 1))),
            Value::Object(o) => {
                for (k, x) in o {
                    total += k.len() + NODE;
                    stack.push((x, depth + 1));
                }
            }
            _ => {}
        }
        if total > MAX_VALUE_BYTES {
            return Err(too_big());
        }
    }
    Ok(total)
}

fn too_big() -> tera::Error {
    tera::Error::msg(format!("a value larger than {} MiB", MAX_VALUE_BYTES >> 20))
}

/// Registers the functions a template may call, the instrumentation's `sites`, and wraps every
/// filter in the bounds; removes every other function (`get_env` above all).
pub fn install(tera: &mut Tera, sites: &[String], budget: &Arc<Budget>) {
    let throw = tera.functions.get("throw").cloned();
    tera.functions.clear();
    if let Some(t) = throw {
        tera.functions.insert("throw".into(), t);
    }
    let b = budget.clone();
    tera.register_function("range", move |args: &HashMap<String, Value>| range(args, &b));
    for name in sites {
        let kind = name[SITE.len()..].split('|').next().unwrap_or("");
        let b = budget.clone();
        match kind {
            "tick" => tera.register_function(name, move |_: &HashMap<String, Value>| {
                b.tick()?;
                Ok(Value::String(String::new()))
            }),
            "text" => tera.register_function(name, move |args: &HashMap<String, Value>| {
                let s = args.get("s").cloned().unwrap_or(Value::Null);
                b.charge(s.as_str().map_or(0, str::len))?;
                Ok(s)
            }),
            _ => tera.register_function(name, move |args: &HashMap<String, Value>| {
                let v = args.get("v").cloned().unwrap_or(Value::Null);
                b.charge(value_size(&v)?)?;
                Ok(v)
            }),
        }
    }
    let filters: Vec<(String, Arc<dyn tera::Filter>)> = tera.filters.drain().collect();
    for (name, inner) in filters {
        let b = budget.clone();
        tera.register_filter(&name.clone(), Bounded { name, inner, budget: b });
    }
}

/// `range(start=0, end, step_by=1)` (as tera's) yielding at most [`MAX_RANGE`] numbers.
fn range(args: &HashMap<String, Value>, budget: &Budget) -> tera::Result<Value> {
    let arg = |k: &str| -> tera::Result<Option<u64>> {
        match args.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| tera::Error::msg(format!("range: `{k}` must be a non-negative integer, not {v}"))),
        }
    };
    let start = arg("start")?.unwrap_or(0);
    let end = arg("end")?.ok_or_else(|| tera::Error::msg("range needs `end`"))?;
    let step = arg("step_by")?.unwrap_or(1);
    if step == 0 {
        return Err(tera::Error::msg("range: `step_by` must be at least 1"));
    }
    if start > end {
        return Err(tera::Error::msg(format!("range: start={start} is greater than end={end}")));
    }
    let n = (end - start).div_ceil(step);
    if n > MAX_RANGE as u64 {
        return Err(tera::Error::msg(format!(
            "range(start={start}, end={end}, step_by={step}) would yield {n} numbers; a template may use at most {MAX_RANGE}"
        )));
    }
    budget.charge(n as usize * 16)?;
    Ok(Value::Array((0..n).map(|i| Value::from(start + i * step)).collect()))
}

/// A filter whose result is bounded; the filters that multiply their input are refused before
/// they run when the result would be too large.
struct Bounded {
    name: String,
    inner: Arc<dyn tera::Filter>,
    budget: Arc<Budget>,
}

impl tera::Filter for Bounded {
    fn filter(&self, value: &Value, args: &HashMap<String, Value>) -> tera::Result<Value> {
        if estimate(&self.name, value, args) > MAX_VALUE_BYTES {
            return Err(too_big());
        }
        let out = self.inner.filter(value, args)?;
        self.budget.charge(value_size(&out)?)?;
        Ok(out)
    }

    fn is_safe(&self) -> bool {
        self.inner.is_safe()
    }
}

/// Upper bound of the result size of the filters whose result can be far larger than their
/// input and arguments; 0 for the others (their result is checked after they run).
fn estimate(name: &str, value: &Value, args: &HashMap<String, Value>) -> usize {
    let s = value.as_str().unwrap_or("");
    let arg = |k: &str| args.get(k).and_then(Value::as_str);
    match name {
        "replace" => {
            let (from, to) = (arg("from").unwrap_or(""), arg("to").unwrap_or(""));
            let n = if from.is_empty() { s.chars().count() + 1 } else { s.matches(from).count() };
            s.len().saturating_add(n.saturating_mul(to.len()))
        }
        "indent" => {
            let lines = s.matches('\n').count() + 1;
            s.len().saturating_add(lines.saturating_mul(arg("prefix").map_or(4, str::len)))
        }
        "join" => {
            let items = value.as_array().map_or(0, Vec::len);
            let sep = arg("sep").map_or(0, str::len);
            let total: usize = value.as_array().map_or(0, |a| a.iter().map(|v| v.as_str().map_or(24, str::len)).sum());
            total.saturating_add(items.saturating_mul(sep))
        }
        "split" => {
            let pat = arg("pat").unwrap_or("");
            let n = if pat.is_empty() { s.chars().count() + 2 } else { s.matches(pat).count() + 1 };
            s.len().saturating_add(n.saturating_mul(16))
        }
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Where an instrumented call is: template and byte offset.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub template: String,
    pub offset: Option<usize>,
}

/// A render error as the template's author needs it: the innermost instrumented place it came
/// from, and the causes without the engine's internal names.
pub fn describe(e: &tera::Error) -> (Option<Site>, String) {
    let mut site = None;
    let mut parts: Vec<String> = vec![];
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        let msg = c.to_string();
        if let Some(s) = parse_site(&msg) {
            site = Some(s);
        } else if let Some(name) = msg.strip_prefix("Filter call '").and_then(|m| m.strip_suffix("' failed")) {
            parts.push(format!("filter `{name}`"));
        } else if let Some(name) = msg.strip_prefix("Test call '").and_then(|m| m.strip_suffix("' failed")) {
            parts.push(format!("test `{name}`"));
        } else if !(msg.starts_with("Failed to render '")
            || msg.starts_with("Failed to parse '")
            || msg.starts_with("Function call '"))
        {
            parts.push(strip_sites(&msg));
        }
        cur = c.source();
    }
    parts.dedup();
    (site, if parts.is_empty() { e.to_string() } else { parts.join(": ") })
}

fn parse_site(msg: &str) -> Option<Site> {
    let rest = msg.strip_prefix("Function call '")?.strip_suffix("' failed")?;
    let rest = rest.strip_prefix(SITE)?;
    let mut it = rest.split('|');
    let _kind = it.next()?;
    let template = it.next()?.to_string();
    let offset = it.next().and_then(|o| o.parse().ok());
    Some(Site { template, offset })
}

/// Replaces `` `__rd_…` `` names in a message by what they stand for.
fn strip_sites(msg: &str) -> String {
    let mut out = String::new();
    let mut rest = msg;
    while let Some(i) = rest.find(SITE) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail.find(|c: char| c == '`' || c == '\'' || c.is_whitespace()).unwrap_or(tail.len());
        out.push_str("the value");
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Runs `f` on a thread with [`STACK_BYTES`] of stack: the bounds above keep parsing and
/// rendering well within it. A panic in the engine becomes an error message.
pub fn with_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("templates".into())
            .stack_size(STACK_BYTES)
            .spawn_scoped(s, f)
            .map_err(|e| format!("cannot start the template thread: {e}"))?;
        h.join().map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the template engine failed".into())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(templates: &[(&str, &str)]) -> Result<(Tera, Arc<Budget>), Vec<TplProblem>> {
        let mut tera = Tera::default();
        tera.autoescape_on(vec![]);
        let mut tags = BTreeMap::new();
        for (name, src) in templates {
            tags.insert(name.to_string(), scan(name, src).map_err(|p| vec![p])?);
            let t =
                tera::Template::new(name, None, src).map_err(|e| vec![TplProblem::new(name, None, e.to_string())])?;
            tera.templates.insert(name.to_string(), t);
        }
        let sites = instrument(&mut tera, &tags)?;
        let budget = Arc::new(Budget::default());
        install(&mut tera, &sites, &budget);
        Ok((tera, budget))
    }

    fn render(templates: &[(&str, &str)]) -> Result<String, String> {
        let (tera, _) = engine(templates).map_err(|p| format!("{p:?}"))?;
        let mut ctx = tera::Context::new();
        ctx.insert("items", &vec!["a", "b", "c"]);
        ctx.insert("name", "x\"y");
        tera.render(templates[0].0, &ctx).map_err(|e| describe(&e).1)
    }

    fn problems(templates: &[(&str, &str)]) -> Vec<TplProblem> {
        match engine(templates) {
            Err(p) => p,
            Ok(_) => panic!("no problem in {templates:?}"),
        }
    }

    #[test]
    fn renders_as_tera_does() {
        let src = "{% macro m(x) %}<{{ x }}>{% endmacro m %}a{% for i in items %}{{ self::m(x=i) }}{% if not loop.last %},{% endif %}{% endfor %}\n{% set n = items | length %}{{ n }} {{ name | upper }} {% for i in range(end=3) %}{{ i }}{% endfor %}{% raw %}{{ x }}{% endraw %}";
        assert_eq!(render(&[("t", src)]).unwrap(), "a<a>,<b>,<c>\n3 X\"Y 012{{ x }}");
    }

    #[test]
    fn env_clock_and_random_are_refused_with_their_place() {
        let src = "line one\nFROM x\n  {{ get_env(name=\"HOME\") }}\n";
        let p = problems(&[("t", src)]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.contains("get_env") && p[0].message.contains("environment"), "{p:?}");
        assert_eq!(p[0].offset, Some(src.find("{{").unwrap()));
        for f in ["now()", "get_random(start=1, end=2)", "nope()"] {
            let p = problems(&[("t", &format!("{{% set x = {f} %}}"))]);
            assert!(p[0].message.contains("is not available"), "{p:?}");
        }
        let (tera, _) = engine(&[("t", "x")]).unwrap();
        let mut user: Vec<&str> = tera.functions.keys().map(String::as_str).filter(|n| !n.starts_with(SITE)).collect();
        user.sort();
        assert_eq!(user, FUNCTIONS);
    }

    #[test]
    fn include_import_and_macro_cycles_are_refused() {
        let p = problems(&[("a", "{% include \"a\" %}")]);
        assert!(p[0].message.contains("itself"), "{p:?}");
        let p = problems(&[("a", "x{% include \"b\" %}"), ("b", "{% include \"a\" %}")]);
        assert!(p[0].message.contains("cycle"), "{p:?}");
        let p = problems(&[("a", "{% import \"a\" as m %}")]);
        assert!(!p.is_empty());
        let p = problems(&[("a", "{% macro m() %}{{ self::m() }}{% endmacro m %}{{ self::m() }}")]);
        assert!(p[0].message.contains("macro `m`"), "{p:?}");
        let p = problems(&[(
            "a",
            "{% macro m() %}{{ self::n() }}{% endmacro m %}{% macro n() %}{% include \"a\" %}{% endmacro n %}{{ self::m() }}",
        )]);
        assert!(p[0].message.contains("cycle"), "{p:?}");
        let p = problems(&[("a", "{% include \"missing\" %}")]);
        assert!(p[0].message.contains("not one of raydeploy's templates"), "{p:?}");
        assert!(render(&[("a", "{% include \"missing\" ignore missing %}ok")]).unwrap() == "ok");
    }

    #[test]
    fn long_macro_chains_are_refused() {
        let mut src = String::new();
        for i in 0..=MAX_CALL_DEPTH {
            src.push_str(&format!("{{% macro m{i}() %}}{{{{ self::m{}() }}}}{{% endmacro m{i} %}}", i + 1));
        }
        src.push_str(&format!("{{% macro m{}() %}}x{{% endmacro %}}", MAX_CALL_DEPTH + 1));
        let p = problems(&[("a", &src)]);
        assert!(p[0].message.contains("deep"), "{p:?}");
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let paren = format!("{{{{ {}1{} }}}}", "(".repeat(5000), ")".repeat(5000));
        assert!(scan("t", &paren).unwrap_err().message.contains("brackets"));
        let ifs = format!("{}x{}", "{% if true %}".repeat(5000), "{% endif %}".repeat(5000));
        assert!(scan("t", &ifs).unwrap_err().message.contains("nest"));
        let plus = format!("{{{{ 1{} }}}}", " + 1".repeat(20000));
        assert!(scan("t", &plus).unwrap_err().message.contains("operators"));
        // Strings and comments do not count.
        let s = format!("{{{{ \"{}\" }}}}{{# {} #}}", "(".repeat(500), "{% if %}".repeat(500));
        assert!(scan("t", &s).is_ok());
    }

    #[test]
    fn loops_values_and_output_are_bounded() {
        let e = render(&[("t", "{% for i in range(end=200000000) %}{{ i }}{% endfor %}")]).unwrap_err();
        assert!(e.contains("200000000") && e.contains("at most"), "{e}");
        let e = render(&[("t", "{% for i in range(end=1, step_by=0) %}{% endfor %}")]).unwrap_err();
        assert!(e.contains("step_by"), "{e}");
        let nested = "{% for i in range(end=10000) %}{% for j in range(end=10000) %}{% endfor %}{% endfor %}";
        assert!(render(&[("t", nested)]).unwrap_err().contains("loop iterations"));
        let doubling = "{% set_global s = \"ab\" %}{% for i in range(end=64) %}{% set_global s = s ~ s %}{% endfor %}";
        assert!(render(&[("t", doubling)]).unwrap_err().contains("MiB"));
        let filters = "{% set_global s = \"ab\" %}{% for i in range(end=64) %}{% set_global s = s | replace(from=\"a\", to=s) %}{% endfor %}";
        assert!(render(&[("t", filters)]).unwrap_err().contains("MiB"));
        let nest = "{% set_global a = [1] %}{% for i in range(end=1000) %}{% set_global a = [a] %}{% endfor %}";
        assert!(render(&[("t", nest)]).unwrap_err().contains("levels deep"));
        let macros = "{% macro m(x) %}{{ x }}{{ x }}{% endmacro m %}{% set_global s = \"ab\" %}{% for i in range(end=64) %}{% set_global s = self::m(x=s) %}{% endfor %}";
        assert!(render(&[("t", macros)]).unwrap_err().contains("MiB"));
        let big = "{% set_global s = \"0123456789abcdef\" %}{% for i in range(end=9) %}{% set_global s = s ~ s %}{% endfor %}{% for i in range(end=10000) %}{{ s }}{% endfor %}";
        let e = render(&[("t", big)]).err().unwrap_or_default();
        assert!(e.contains("produces more than"), "{e}");
    }

    #[test]
    fn render_errors_name_the_place() {
        let src = "a\nb {{ nope }}\n";
        let (tera, _) = engine(&[("t", src)]).unwrap();
        let e = tera.render("t", &tera::Context::new()).unwrap_err();
        let (site, msg) = describe(&e);
        assert_eq!(site, Some(Site { template: "t".into(), offset: Some(4) }));
        assert!(msg.contains("nope") && !msg.contains(SITE), "{msg}");
    }
}
