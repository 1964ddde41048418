//! A YAML document as a tree of nodes that remember where they came from, so that every
//! problem found later (schema, merge, interpolation, cross-layer rules) points at the input.

use std::fmt;

use std::collections::HashMap;

use indexmap::IndexMap;
use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Spanned, Tagged};

use super::diag::{Problem, Problems};

/// Where a node starts: which source (index into [`super::Sources`]), line, column, byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loc {
    pub source: usize,
    pub line: u32,
    pub col: u32,
    pub offset: usize,
    pub len: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Map),
}

/// A map's entries by key, in document order. Each key is there once: a duplicate is reported
/// when the document is read, and the last value wins.
pub type Map = IndexMap<String, Entry>;

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_loc: Loc,
    pub value: Node,
}

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// A path such as `cluster.workerGroups[1].cpu`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(pub Vec<Step>);

impl Path {
    pub fn root() -> Self {
        Path(vec![])
    }
    pub fn key(&self, k: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Step::Key(k.to_string()));
        p
    }
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Step::Index(i));
        p
    }
    /// Parses a dotted path (`a.b[2].c`); used by tests and by model rules.
    pub fn parse(s: &str) -> Self {
        let mut steps = vec![];
        for part in s.split('.').filter(|p| !p.is_empty()) {
            let (name, rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
            if !name.is_empty() {
                steps.push(Step::Key(name.to_string()));
            }
            for idx in rest.split('[') {
                if let Ok(i) = idx.trim_end_matches(']').parse() {
                    steps.push(Step::Index(i));
                }
            }
        }
        Path(steps)
    }
    /// From a JSON pointer (`/cluster/workerGroups/1/cpu`), using the document to tell
    /// list indexes from map keys.
    pub fn from_pointer(pointer: &str, doc: &Node) -> Self {
        let mut steps = vec![];
        let mut cur = Some(doc);
        for raw in pointer.split('/').skip(1) {
            let token = raw.replace("~1", "/").replace("~0", "~");
            let step = match cur.map(|n| &n.value) {
                Some(Value::Seq(_)) => token.parse().map(Step::Index).unwrap_or(Step::Key(token)),
                _ => Step::Key(token),
            };
            cur = cur.and_then(|n| n.child(&step));
            steps.push(step);
        }
        Path(steps)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Step::Key(k) if i == 0 => write!(f, "{k}")?,
                Step::Key(k) => write!(f, ".{k}")?,
                Step::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

impl Node {
    pub fn new(value: Value, loc: Loc) -> Self {
        Node { value, loc }
    }

    pub fn child(&self, step: &Step) -> Option<&Node> {
        match (&self.value, step) {
            (Value::Map(entries), Step::Key(k)) => entries.get(k.as_str()).map(|e| &e.value),
            (Value::Seq(items), Step::Index(i)) => items.get(*i),
            _ => None,
        }
    }

    /// The node at `path`, or the deepest existing ancestor (so a missing field points at the
    /// map that should hold it).
    pub fn locate(&self, path: &Path) -> &Node {
        let mut cur = self;
        for step in &path.0 {
            match cur.child(step) {
                Some(n) => cur = n,
                None => break,
            }
        }
        cur
    }

    /// Location of the key `path` ends with, if it is a map key; else of the node.
    pub fn locate_key(&self, path: &Path) -> Loc {
        if let Some((Step::Key(k), parent)) = path.0.split_last() {
            let parent_node = self.locate(&Path(parent.to_vec()));
            if let Value::Map(entries) = &parent_node.value
                && let Some(e) = entries.get(k.as_str())
            {
                return e.key_loc;
            }
        }
        self.locate(path).loc
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.child(&Step::Key(key.to_string()))
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A plain JSON value for schema checks and typed deserialization.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(entries.values().map(|e| (e.key.clone(), e.value.to_json())).collect()),
        }
    }

    /// Name of the YAML kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }
}

/// Why a file could not be read as a located tree: its message is complete and speaks of the
/// input (never of the parser's own types or functions).
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub message: String,
    pub loc: Loc,
}

/// A parsed document and the problems found while reading it (duplicate keys, unknown tags):
/// they do not stop the other checks, so they are reported together with them.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub doc: Node,
    pub problems: Problems,
}

/// Parser limits, explicit so that the messages can name them. A spec nests a few levels deep
/// (`jobs[0].runtimeEnv.envVars.NAME`); each level costs the recursive reader stack, so the depth
/// cap stays well within a 2 MiB thread stack even in unoptimized builds.
pub const MAX_NODES: usize = 250_000;
pub const MAX_DEPTH: usize = 32;
pub const MAX_EVENTS: usize = 1_000_000;
pub const MAX_SCALAR_BYTES: usize = 64 << 20;

/// Parses one YAML document (source index `source`) into a located tree. `what` names the
/// document in messages ("the spec", "the overlay"). A document with no content (empty, or only
/// comments) parses as `null`.
pub fn parse(text: &str, source: usize, what: &str) -> Result<Parsed, SyntaxError> {
    if text.trim().is_empty() {
        let doc = Node::new(Value::Null, Loc { source, line: 1, col: 1, ..Loc::default() });
        return Ok(Parsed { doc, problems: Problems::default() });
    }
    // Duplicate keys reach the tree (reported with both positions) instead of failing the parse.
    let options = serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_nodes: MAX_NODES,
            max_depth: MAX_DEPTH,
            max_events: MAX_EVENTS,
            max_total_scalar_bytes: MAX_SCALAR_BYTES,
        },
    };
    match serde_saphyr::from_str_with_options::<Item>(text, options) {
        Ok(spanned) => {
            let mut conv = Convert { source, text, problems: Problems::default() };
            let doc = conv.node(spanned, &Path::root());
            Ok(Parsed { doc, problems: conv.problems })
        }
        Err(e) => {
            let loc = e
                .location()
                .filter(|l| *l != serde_saphyr::Location::UNKNOWN)
                .map(|l| loc_of(&l, source, text))
                .unwrap_or(Loc { source, line: 1, col: 1, ..Loc::default() });
            Err(SyntaxError { message: yaml_message(&e, what), loc })
        }
    }
}

/// The parser's error in words about the input. The parser's own wording names Rust types and
/// its API for some errors (`use Option<String>`, `use from_str_multiple`, `Nodes { nodes: … }`):
/// those are translated here; the rest keep its text, without its position suffix.
fn yaml_message(err: &serde_saphyr::Error, what: &str) -> String {
    use serde_saphyr::Error as E;
    use serde_saphyr::budget::BudgetBreach as B;
    let mut err = err;
    while let E::WithSnippet { error, .. } | E::AliasError { error, .. } = err {
        err = error;
    }
    match err {
        E::Budget { breach, .. } => match breach {
            B::Nodes { .. } => format!("{what} has more than {MAX_NODES} YAML nodes (limit {MAX_NODES})"),
            B::Depth { .. } => {
                format!("{what} nests lists and maps deeper than {MAX_DEPTH} levels (limit {MAX_DEPTH})")
            }
            B::Events { .. } => format!("{what} is too large: more than {MAX_EVENTS} YAML events (limit {MAX_EVENTS})"),
            B::ScalarBytes { .. } => {
                format!(
                    "{what} holds more than {} MiB of text in its values (limit {} MiB)",
                    MAX_SCALAR_BYTES >> 20,
                    MAX_SCALAR_BYTES >> 20
                )
            }
            B::Documents { .. } => format!("{what} must be one YAML document, found many (`---` separators)"),
            B::Aliases { .. }
            | B::Anchors { .. }
            | B::AliasAnchorRatio { .. }
            | B::RecordedAnchorEvents { .. }
            | B::RecordedAnchorBytes { .. } => {
                format!("{what} uses too many YAML anchors (`&name`) and aliases (`*name`)")
            }
            B::MergeKeys { .. } => format!("{what} uses too many YAML merge keys (`<<`)"),
            _ => format!("{what} is too large or too complex to read"),
        },
        E::MultipleDocuments { .. } => {
            format!("{what} must be one YAML document: remove the `---` that starts a second one")
        }
        E::NullIntoString { .. } | E::InvalidCharNull { .. } => {
            "invalid YAML: a map key is empty or null (`~`, `null`); write a name, quoted if it is the word null".into()
        }
        E::Eof { .. } => "invalid YAML: the file ends in the middle of a value".into(),
        E::SerdeInvalidType { unexpected, .. } => format!("invalid YAML: a map key must be a name, found {unexpected}"),
        E::Unexpected { expected, .. } if *expected == "string scalar" => {
            "invalid YAML: a map key must be a name, not a list or a map".into()
        }
        E::TaggedScalarCannotDeserializeIntoString { .. } | E::BinaryNotUtf8 { .. } => {
            "invalid YAML: a tagged value cannot be used here; remove the tag".into()
        }
        E::InvalidScalar { .. } => "invalid YAML: the value does not match its tag; remove the tag".into(),
        E::UnknownAnchor { .. } => {
            "invalid YAML: an alias (`*name`) refers to an anchor (`&name`) that is not defined before it".into()
        }
        E::AliasReplayCounterOverflow { .. }
        | E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. } => {
            format!("{what} expands YAML aliases (`*name`) too often")
        }
        E::DuplicateMappingKey { key, .. } => format!("duplicate key `{}`", key.as_deref().unwrap_or("")),
        E::InvalidUtf8Input => format!("{what} is not valid UTF-8 text"),
        E::IOError { cause } => format!("{what} cannot be read: {cause}"),
        other => format!("invalid YAML: {}", plain_message(other)),
    }
}

/// The parser's message without the `error: line X column Y:` prefix and ` at line …` suffix it
/// adds (the position is shown separately).
fn plain_message(err: &serde_saphyr::Error) -> String {
    let text = err.to_string();
    let mut line = text.lines().next().unwrap_or("").trim();
    if let Some(rest) = line.strip_prefix("error: ") {
        line = rest;
        // `line 8 column 1: message`
        if let Some((_, msg)) = rest.split_once(": ").filter(|_| rest.starts_with("line ")) {
            line = msg;
        }
    }
    if let Some(i) = line.find(" at line ") {
        line = &line[..i];
    }
    let line = line.trim();
    if line.is_empty() { "the file is not well-formed".into() } else { line.to_string() }
}

fn loc_of(l: &serde_saphyr::Location, source: usize, text: &str) -> Loc {
    let line = l.line() as u32;
    let col = l.column() as u32;
    let offset = l.span().byte_offset().map(|o| o as usize).unwrap_or_else(|| offset_of(text, line, col));
    let len = l.span().byte_len().map(|o| o as usize).unwrap_or(0);
    Loc { source, line, col, offset: offset.min(text.len()), len }
}

fn offset_of(text: &str, line: u32, col: u32) -> usize {
    let mut off = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line as usize {
            return off + l.char_indices().nth(col.saturating_sub(1) as usize).map_or(0, |(b, _)| b);
        }
        off += l.len();
    }
    off
}

/// Tags a spec may carry: the YAML core schema's own (`!!str`, `!!int`…) and the non-specific
/// `!`. Any other tag would be dropped silently, so it is an error.
fn known_tag(tag: &str) -> bool {
    const CORE: [&str; 7] = ["str", "int", "float", "bool", "null", "map", "seq"];
    tag == "!" || tag.strip_prefix("tag:yaml.org,2002:").is_some_and(|t| CORE.contains(&t))
}

/// A tag as the user wrote it: `!!str` for the core namespace, verbatim otherwise.
fn tag_spelling(tag: &str) -> String {
    match tag.strip_prefix("tag:yaml.org,2002:") {
        Some(t) => format!("!!{t}"),
        None if tag.starts_with('!') => tag.to_string(),
        None => format!("!<{tag}>"),
    }
}

/// Turns the parser's spanned values into [`Node`]s: map keys go into an index (so duplicate
/// checks, merges and lookups are linear), duplicates and unknown tags become problems.
struct Convert<'a> {
    source: usize,
    text: &'a str,
    problems: Problems,
}

impl Convert<'_> {
    fn check_tag(&mut self, tag: Option<String>, path: &Path, loc: Loc) {
        if let Some(tag) = tag.filter(|t| !known_tag(t)) {
            self.problems.push(
                Problem::new(path, format!("unknown tag `{}`", tag_spelling(&tag)))
                    .help("remove it: a spec is plain YAML (only the core tags !!str, !!int, !!float, !!bool, !!null, !!map and !!seq are allowed)")
                    .at(loc),
            );
        }
    }

    fn node(&mut self, s: Item, path: &Path) -> Node {
        let loc = loc_of(&s.referenced, self.source, self.text);
        let Tagged(raw, tag) = s.value;
        self.check_tag(tag, path, loc);
        let value = match raw {
            Raw::Null => Value::Null,
            Raw::Bool(b) => Value::Bool(b),
            Raw::Int(i) => Value::Int(i),
            Raw::Float(f) => Value::Float(f),
            Raw::Str(s) => Value::Str(s),
            Raw::Seq(items) => {
                Value::Seq(items.into_iter().enumerate().map(|(i, item)| self.node(item, &path.index(i))).collect())
            }
            Raw::Map(entries) => {
                let mut map = Map::with_capacity(entries.len());
                // Line of the first occurrence of each duplicated key (only duplicates are recorded).
                let mut first_line: HashMap<String, u32> = HashMap::new();
                for (k, v) in entries {
                    let key_loc = loc_of(&k.referenced, self.source, self.text);
                    let Tagged(key, key_tag) = k.value;
                    let child = path.key(&key);
                    self.check_tag(key_tag, &child, key_loc);
                    let value = self.node(v, &child);
                    let entry = Entry { key, key_loc, value };
                    match map.get_mut(&entry.key) {
                        Some(existing) => {
                            let first = *first_line.entry(entry.key.clone()).or_insert(existing.key_loc.line);
                            self.problems.push(
                                Problem::new(&child, format!("duplicate key `{}`", entry.key))
                                    .help(format!("it is already set on line {first}"))
                                    .at(key_loc),
                            );
                            // the last one wins, in the first one's place (as YAML readers do)
                            *existing = entry;
                        }
                        None => {
                            map.insert(entry.key.clone(), entry);
                        }
                    }
                }
                Value::Map(map)
            }
        };
        Node { value, loc }
    }
}

/// A value with its position and tag, as the parser delivers it.
type Item = Spanned<Tagged<Raw>>;

/// The raw, serde-facing form: every child keeps its span and tag.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Item>),
    Map(Vec<(Spanned<Tagged<String>>, Item)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(RawVisitor)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        i64::try_from(v).map(Raw::Int).or(Ok(Raw::Float(v as f64)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = vec![];
        while let Some(item) = seq.next_element::<Item>()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = vec![];
        while let Some(key) = map.next_key::<Spanned<Tagged<String>>>()? {
            let value = map.next_value::<Item>()?;
            entries.push((key, value));
        }
        Ok(Raw::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_keep_positions() {
        let doc = parse("a: 1\nb:\n  - x: hello\n    y: [1, 2]\n", 0, "the spec").unwrap().doc;
        let n = doc.locate(&Path::parse("b[0].x"));
        assert_eq!(n.as_str(), Some("hello"));
        assert_eq!((n.loc.line, n.loc.col), (3, 8));
        assert_eq!(doc.locate_key(&Path::parse("b[0].y")).line, 4);
        assert_eq!(Path::parse("b[0].y").to_string(), "b[0].y");
        assert_eq!(Path::from_pointer("/b/0/y", &doc).to_string(), "b[0].y");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: 1\nb: [1, 2\n", 0, "the spec").unwrap_err();
        assert!(e.loc.line >= 2, "{e:?}");
    }

    fn message(text: &str) -> String {
        parse(text, 0, "the spec").unwrap_err().message
    }

    /// The parser's messages that name Rust types or its own API are said in words about the input.
    #[test]
    fn parser_messages_speak_of_the_input() {
        let cases = [
            ("a: 1\n---\nb: 2\n", "the spec must be one YAML document"),
            ("a:\n  ~: x\n", "a map key is empty or null"),
            ("a: *nowhere\n", "an alias (`*name`) refers to an anchor (`&name`) that is not defined"),
            ("a: [1, 2\n", "invalid YAML: "),
            ("? [a, b]\n: c\n", "a map key must be a name"),
        ];
        for (text, expected) in cases {
            let m = message(text);
            assert!(m.contains(expected), "{text:?}: {m}");
            for internal in ["Option<", "from_str", "budget", "Options", "deserialize", "error: line", " at line "] {
                assert!(!m.contains(internal), "{text:?}: {m}");
            }
        }
    }

    #[test]
    fn parser_limits_are_named_in_words() {
        let deep = format!("a: {}{}\n", "[".repeat(MAX_DEPTH + 5), "]".repeat(MAX_DEPTH + 5));
        assert_eq!(message(&deep), "the spec nests lists and maps deeper than 32 levels (limit 32)");
        let wide = format!("a: [{}]\n", "0,".repeat(MAX_NODES + 1));
        let e = parse(&wide, 3, "the environment overlay").unwrap_err();
        assert_eq!(e.message, "the environment overlay has more than 250000 YAML nodes (limit 250000)");
        assert_eq!(e.loc.source, 3);
        // just under the limit is fine
        assert!(parse(&format!("a: [{}]\n", "0,".repeat(MAX_NODES - 10)), 0, "the spec").is_ok());
    }

    #[test]
    fn unknown_tags_are_located_problems_and_core_tags_are_read() {
        let p = parse(
            "a: !custom x\nb: !!str 1.10\nc: ! y\n!k d: 1\ne: !!binary aGk=\nf: !<tag:x.org,1:t> z\n",
            0,
            "the spec",
        )
        .unwrap();
        let found: Vec<(String, String, u32)> =
            p.problems.0.iter().map(|p| (p.path.clone(), p.message.clone(), p.loc.unwrap().line)).collect();
        assert_eq!(
            found,
            [
                ("a".to_string(), "unknown tag `!custom`".to_string(), 1),
                ("d".into(), "unknown tag `!k`".into(), 4),
                ("e".into(), "unknown tag `!!binary`".into(), 5),
                ("f".into(), "unknown tag `!<tag:x.org,1:t>`".into(), 6),
            ]
        );
        assert_eq!(p.doc.get("b").and_then(Node::as_str), Some("1.10"));
        assert_eq!(p.doc.get("c").and_then(Node::as_str), Some("y"));
    }

    #[test]
    fn duplicate_keys_are_reported_once_each_and_the_last_wins() {
        let p = parse("a: 1\nb:\n  x: 1\n  x: 2\n  x: 3\na: 4\n", 0, "the spec").unwrap();
        let found: Vec<(String, String, u32)> = p
            .problems
            .0
            .iter()
            .map(|p| (p.path.clone(), p.help.clone().unwrap_or_default(), p.loc.unwrap().line))
            .collect();
        assert_eq!(
            found,
            [
                ("b.x".to_string(), "it is already set on line 3".to_string(), 4),
                ("b.x".into(), "it is already set on line 3".into(), 5),
                ("a".into(), "it is already set on line 1".into(), 6),
            ]
        );
        assert_eq!(p.doc.to_json(), serde_json::json!({"a": 4, "b": {"x": 3}}));
        assert_eq!(p.doc.locate_key(&Path::parse("b.x")).line, 5);
    }
}
