//! A YAML document as a tree of nodes that remember where they came from, so that every
//! problem found later (schema, merge, interpolation, cross-layer rules) points at the input.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

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
    Map(Vec<Entry>),
}

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
            (Value::Map(entries), Step::Key(k)) => entries.iter().rev().find(|e| &e.key == k).map(|e| &e.value),
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
            if let Value::Map(entries) = &parent_node.value {
                if let Some(e) = entries.iter().rev().find(|e| &e.key == k) {
                    return e.key_loc;
                }
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
            Value::Map(entries) => J::Object(entries.iter().map(|e| (e.key.clone(), e.value.to_json())).collect()),
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

/// A YAML syntax error with its position.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub message: String,
    pub loc: Loc,
}

/// Parses one YAML document (source index `source`) into a located tree.
/// A document with no content (empty, or only comments) parses as `null`.
pub fn parse(text: &str, source: usize) -> Result<Node, SyntaxError> {
    if text.trim().is_empty() {
        return Ok(Node::new(Value::Null, Loc { source, line: 1, col: 1, ..Loc::default() }));
    }
    // Duplicate keys reach the tree (reported later with both positions) instead of failing the parse.
    let options = serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
    };
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options) {
        Ok(spanned) => Ok(convert(spanned, source, text)),
        Err(e) => {
            let loc = e.location().map(|l| loc_of(&l, source, text)).unwrap_or(Loc {
                source,
                line: 1,
                col: 1,
                ..Loc::default()
            });
            let message = first_line(&e.to_string());
            Err(SyntaxError { message, loc })
        }
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("invalid YAML").trim();
    // serde-saphyr appends " at line X column Y": the location is shown separately.
    match line.find(" at line ") {
        Some(i) => line[..i].to_string(),
        None => line.to_string(),
    }
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

fn convert(s: Spanned<Raw>, source: usize, text: &str) -> Node {
    let loc = loc_of(&s.referenced, source, text);
    let value = match s.value {
        Raw::Null => Value::Null,
        Raw::Bool(b) => Value::Bool(b),
        Raw::Int(i) => Value::Int(i),
        Raw::Float(f) => Value::Float(f),
        Raw::Str(s) => Value::Str(s),
        Raw::Seq(items) => Value::Seq(items.into_iter().map(|i| convert(i, source, text)).collect()),
        Raw::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| Entry {
                    key: k.value.clone(),
                    key_loc: loc_of(&k.referenced, source, text),
                    value: convert(v, source, text),
                })
                .collect(),
        ),
    };
    Node { value, loc }
}

/// The raw, serde-facing form: every child keeps its span.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<String>, Spanned<Raw>)>),
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
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = vec![];
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Spanned<Raw>>()?;
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
        let doc = parse("a: 1\nb:\n  - x: hello\n    y: [1, 2]\n", 0).unwrap();
        let n = doc.locate(&Path::parse("b[0].x"));
        assert_eq!(n.as_str(), Some("hello"));
        assert_eq!((n.loc.line, n.loc.col), (3, 8));
        assert_eq!(doc.locate_key(&Path::parse("b[0].y")).line, 4);
        assert_eq!(Path::parse("b[0].y").to_string(), "b[0].y");
        assert_eq!(Path::from_pointer("/b/0/y", &doc).to_string(), "b[0].y");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: 1\nb: [1, 2\n", 0).unwrap_err();
        assert!(e.loc.line >= 2, "{e:?}");
    }
}
