//! Secret scrubbing: every resolved secret value is registered here before it is used, and every
//! line that reaches a log, the terminal, an error, a JSON event, a plan or the state passes
//! through [`Redactor::scrub`].
//!
//! A tool may print a value it was sent in another form than the one raydeploy sent: kubectl's
//! "error when applying patch" echoes a Secret as JSON (inside a JSON string, escaped twice, for
//! its last-applied annotation) and with its data in base64. So each value is masked in every
//! form a tool may print:
//!
//! - as is, and each of its lines;
//! - escaped, character by character, the ways JSON and YAML double-quoted strings escape (`\"`,
//!   `\\`, `\n`, `\u00e9`, `\xe9`, `\U0001f600`, surrogate pairs), escaped again any number of
//!   times (a JSON document inside a JSON string), single-quoted YAML and shell (`''`, `'\''`),
//!   HTML entities (`&quot;`, `&#39;`, `&lt;`), and percent-encoded (`%20` or `+` for a space,
//!   either case, encoded again as `%25..`); any mix of these within one value;
//! - in base64, standard or URL-safe, with or without padding, on its own or inside a longer
//!   base64 text at any of the three byte alignments: the characters of the encoding that depend
//!   on the value's bits alone are looked for, and the whole base64 run holding them is masked.
//!   The same for the value's JSON-escaped forms (a JSON document in base64, as serde, Python or
//!   Go escape it, once or twice) and for every run of 8 or more characters no encoder escapes.
//!
//! Values shorter than 4 characters are masked only as whole lines.

use std::sync::{Arc, OnceLock, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use regex::{Regex, RegexBuilder};

/// What a secret value is replaced with.
pub const MASK: &str = "***";

/// Values this short are masked only when they are a whole line.
const MIN_LEN: usize = 4;

/// A shared, growing set of values that must never be shown.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every registered value, longest first.
    values: Vec<String>,
    /// Every form of every value of at least [`MIN_LEN`] characters, longest value first.
    forms: Option<Regex>,
    /// The stable inner parts of the values' base64 forms.
    base64: Option<Regex>,
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// The redactor of this process: every value registered by any command, so the last
    /// error message printed can be scrubbed too.
    pub fn process() -> Self {
        static PROCESS: OnceLock<Redactor> = OnceLock::new();
        PROCESS.get_or_init(Redactor::new).clone()
    }

    /// Registers a secret value (and each of its lines, so a multi-line value cannot leak one line
    /// at a time).
    pub fn add(&self, value: &str) {
        let mut inner = self.inner.write().expect("redactor lock");
        let mut changed = false;
        for piece in std::iter::once(value).chain(value.lines()) {
            let piece = piece.trim_end_matches('\r');
            if !piece.is_empty() && !inner.values.iter().any(|x| x == piece) {
                inner.values.push(piece.to_string());
                changed = true;
            }
        }
        if changed {
            // Longest first, so a value containing another is masked whole.
            inner.values.sort_by_key(|s| std::cmp::Reverse(s.len()));
            inner.rebuild();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.inner.read().expect("redactor lock").values.is_empty()
    }

    /// `text` with every form of every registered value replaced by [`MASK`].
    pub fn scrub(&self, text: &str) -> String {
        let inner = self.inner.read().expect("redactor lock");
        if inner.values.is_empty() {
            return text.to_string();
        }
        let mut out = std::borrow::Cow::Borrowed(text);
        if let Some(re) = &inner.base64 {
            out = std::borrow::Cow::Owned(mask_base64_runs(re, &out));
        }
        if let Some(re) = &inner.forms
            && re.is_match(&out)
        {
            out = std::borrow::Cow::Owned(re.replace_all(&out, MASK).into_owned());
        }
        let trimmed = out.trim();
        if inner.values.iter().any(|v| v.chars().count() < MIN_LEN && trimmed == v) {
            return MASK.to_string();
        }
        out.into_owned()
    }

    /// Scrubs every string (and key) of a JSON value in place: the JSON text written from it
    /// then holds no form of a secret, and stays valid JSON.
    pub fn scrub_json(&self, v: &mut serde_json::Value) {
        if self.is_empty() {
            return;
        }
        match v {
            serde_json::Value::String(s) => {
                let clean = self.scrub(s);
                if &clean != s {
                    *s = clean;
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| self.scrub_json(x)),
            serde_json::Value::Object(m) => {
                let entries = std::mem::take(m);
                for (k, mut x) in entries {
                    self.scrub_json(&mut x);
                    m.insert(self.scrub(&k), x);
                }
            }
            _ => {}
        }
    }
}

impl Inner {
    fn rebuild(&mut self) {
        let long: Vec<&String> = self.values.iter().filter(|v| v.chars().count() >= MIN_LEN).collect();
        self.forms = alternation(long.iter().map(|v| forms_pattern(v)));
        let mut needles: Vec<String> = vec![];
        for v in &long {
            for text in encoded_texts(v) {
                needles.extend(base64_inner(text.as_bytes()));
            }
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        self.base64 = alternation(needles.iter().map(|n| regex::escape(n)));
    }
}

/// One regex matching any of `patterns` (leftmost, first listed wins); `None` for none.
fn alternation(patterns: impl Iterator<Item = String>) -> Option<Regex> {
    let all: Vec<String> = patterns.map(|p| format!("(?:{p})")).collect();
    if all.is_empty() {
        return None;
    }
    let re = RegexBuilder::new(&all.join("|"))
        .size_limit(256 << 20)
        .dfa_size_limit(64 << 20)
        .build()
        .expect("the redactor's pattern compiles");
    Some(re)
}

/// The value, each character in any of the forms a tool may print it in.
fn forms_pattern(value: &str) -> String {
    value.chars().map(char_forms).collect()
}

/// One backslash, escaped any number of times (`\`, `\\`, `\\\\`…).
const BACKSLASHES: &str = r"\\+";

fn hex(n: u32, width: usize) -> String {
    format!("(?i:{n:0width$x})")
}

fn char_forms(c: char) -> String {
    let mut alts: Vec<String> = vec![regex::escape(&c.to_string())];
    let b = BACKSLASHES;
    let short = match c {
        '"' => Some("\""),
        // One backslash escaped any number of times is a run of backslashes.
        '\\' => {
            alts.push(b.to_string());
            None
        }
        '\n' => Some("n"),
        '\t' => Some("t"),
        '\r' => Some("r"),
        '\u{8}' => Some("b"),
        '\u{c}' => Some("f"),
        '\u{b}' => Some("v"),
        '\0' => Some("0"),
        '\u{7}' => Some("a"),
        '\u{1b}' => Some("e"),
        '/' => Some("/"),
        '\'' => Some("'"),
        ' ' => Some(" "),
        '\u{85}' => Some("N"),
        '\u{a0}' => Some("_"),
        '\u{2028}' => Some("L"),
        '\u{2029}' => Some("P"),
        _ => None,
    };
    if let Some(s) = short {
        alts.push(format!("{b}{}", regex::escape(s)));
    }
    match c {
        '\'' => alts.extend(["''".into(), r"'\\''".into(), "&#39;".into(), "(?i:&#x27;)".into(), "&apos;".into()]),
        '"' => alts.extend(["&quot;".into(), "&#34;".into(), "(?i:&#x22;)".into()]),
        '<' => alts.extend(["&lt;".into(), "&#60;".into(), "(?i:&#x3c;)".into()]),
        '>' => alts.extend(["&gt;".into(), "&#62;".into(), "(?i:&#x3e;)".into()]),
        '&' => alts.extend(["&amp;".into(), "&#38;".into(), "(?i:&#x26;)".into()]),
        ' ' => alts.push(r"\+".into()),
        _ => {}
    }
    let cp = c as u32;
    if cp < 0x100 {
        alts.push(format!("{b}x{}", hex(cp, 2)));
    }
    if cp < 0x10000 {
        alts.push(format!("{b}u{}", hex(cp, 4)));
    } else {
        let v = cp - 0x10000;
        let (hi, lo) = (0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
        alts.push(format!("{b}u{}{b}u{}", hex(hi, 4), hex(lo, 4)));
        alts.push(format!("{b}U{}", hex(cp, 8)));
        alts.push(format!("{b}u\\{{{}\\}}", format_args!("(?i:0*{cp:x})")));
    }
    let mut utf8 = [0u8; 4];
    let pct: String = c.encode_utf8(&mut utf8).bytes().map(|byte| format!("%(?:25)*{}", hex(byte as u32, 2))).collect();
    alts.push(pct);
    format!("(?:{})", alts.join("|"))
}

/// The text of `s` inside a JSON string literal.
fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).expect("a string serializes");
    quoted[1..quoted.len() - 1].to_string()
}

/// JSON-escaped with every non-ASCII character as `\uXXXX` (Python's `json.dumps`), or with
/// `<`, `>`, `&` as `\u003c`… (Go's `encoding/json`).
fn json_escape_with(s: &str, ascii: bool) -> String {
    let mut out = String::new();
    for c in json_escape(s).chars() {
        match c {
            '<' | '>' | '&' if !ascii => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ascii && !c.is_ascii() => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The texts whose bytes a tool may put into a base64 text when it encodes a document holding
/// `v`: `v`, its JSON-escaped forms (once and twice), and every long run of characters no encoder
/// escapes (found whatever happens to the characters around it).
fn encoded_texts(v: &str) -> Vec<String> {
    let mut out = vec![v.to_string()];
    for e in [json_escape(v), json_escape_with(v, true), json_escape_with(v, false)] {
        out.push(json_escape(&e));
        out.push(e);
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~');
    out.extend(v.split(|c: char| !plain(c)).filter(|run| run.len() >= 8).map(str::to_string));
    out.sort();
    out.dedup();
    out
}

/// The characters of the base64 encoding of `bytes` that depend on these bytes alone, when they
/// start at each of the three byte alignments of a longer encoded text; standard and URL-safe.
pub fn base64_inner(bytes: &[u8]) -> Vec<String> {
    let mut out = vec![];
    let n = bytes.len();
    for r in 0..3 {
        let mut buf = vec![0u8; r];
        buf.extend_from_slice(bytes);
        // Characters [start, end) are the 6-bit groups wholly inside the value's bits.
        let (start, end) = ((8 * r).div_ceil(6), (8 * (r + n)) / 6);
        if end <= start {
            continue;
        }
        for enc in [STANDARD_NO_PAD.encode(&buf), URL_SAFE_NO_PAD.encode(&buf)] {
            let part = enc[start..end].to_string();
            if !out.contains(&part) {
                out.push(part);
            }
        }
    }
    out
}

fn is_base64_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_')
}

/// Masks every run of base64 characters (with its padding) that holds a match of `re`.
fn mask_base64_runs(re: &Regex, text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut from = 0;
    while let Some(m) = re.find_at(text, from) {
        let mut s = m.start();
        while s > last && is_base64_char(b[s - 1]) {
            s -= 1;
        }
        let mut e = m.end();
        while e < b.len() && is_base64_char(b[e]) {
            e += 1;
        }
        while e < b.len() && b[e] == b'=' {
            e += 1;
        }
        out.push_str(&text[last..s]);
        out.push_str(MASK);
        last = e;
        from = e;
        if from >= text.len() {
            break;
        }
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn masks_values_and_their_lines() {
        let r = Redactor::new();
        r.add("hunter2-canary");
        r.add("line-one-xyz\nline-two-xyz");
        assert_eq!(r.scrub("pw=hunter2-canary;"), "pw=***;");
        assert_eq!(r.scrub("got line-two-xyz here"), "got *** here");
        assert_eq!(r.scrub("nothing"), "nothing");
    }

    #[test]
    fn longest_value_first() {
        let r = Redactor::new();
        r.add("abcd");
        r.add("abcdefgh");
        assert_eq!(r.scrub("abcdefgh"), "***");
    }

    #[test]
    fn short_values_only_as_whole_lines() {
        let r = Redactor::new();
        r.add("ab1");
        assert_eq!(r.scrub("  ab1 "), MASK);
        assert_eq!(r.scrub("cab1e"), "cab1e");
    }

    #[test]
    fn escaped_encoded_and_base64_forms() {
        let r = Redactor::new();
        let v = "p\"w\\d é/😀 x<&>'%+";
        r.add(v);
        let json = serde_json::to_string(v).unwrap();
        let twice = serde_json::to_string(&json).unwrap();
        for text in [
            format!("a {json} b"),
            format!("patch: {twice}"),
            "k: \"p\\\"w\\\\d \\xE9/\\U0001F600 x<&>'%+\"".to_string(),
            "q=p%22w%5Cd+%C3%A9%2F%F0%9F%98%80+x%3C%26%3E%27%25%2B&x=1".to_string(),
            "q=p%22w%5cd%20%c3%a9/%f0%9f%98%80%20x%3c%26%3e%27%25%2b".to_string(),
            "p\\u0022w\\u005cd \\u00e9\\/\\ud83d\\ude00 x\\u003c\\u0026\\u003e\\u0027%+".to_string(),
            "p&quot;w\\d é/😀 x&lt;&amp;&gt;&#39;%+".to_string(),
            format!("data: {}", STANDARD.encode(v)),
            format!("blob {}!", URL_SAFE.encode(format!("xx{v}yyyy"))),
            format!("{} end", STANDARD_NO_PAD.encode(format!("{{\"k\":{json}}}"))),
        ] {
            let s = r.scrub(&text);
            assert!(s.contains(MASK), "{text} -> {s}");
            assert!(!s.contains("p\"w") && !s.contains("%22w") && !s.contains("😀"), "{text} -> {s}");
        }
        // Text around is kept; a base64 run is masked whole, its padding too.
        assert_eq!(r.scrub(&format!("x={};y", STANDARD.encode(format!("a{v}")))), "x=***;y");
    }

    #[test]
    fn json_stays_valid() {
        let r = Redactor::new();
        r.add("\": {");
        let mut v = serde_json::json!({"phases": {"a": "x\": {y"}, "\": {k": 1});
        r.scrub_json(&mut v);
        assert_eq!(v, serde_json::json!({"phases": {"a": "x***y"}, "***k": 1}));
    }

    #[test]
    fn a_long_multi_line_value_compiles_and_matches() {
        let r = Redactor::new();
        let pem: String = (0..60).map(|i| format!("{:064x}\n", i * 7919)).collect();
        r.add(&pem);
        let line = format!("k: {}", pem.lines().nth(30).unwrap());
        assert_eq!(r.scrub(&line), "k: ***");
        assert!(!r.scrub(&serde_json::to_string(&pem).unwrap()).contains("0000"));
    }

    /// Every form in which a test checks that `secret` does not survive.
    fn leaks(secret: &str, text: &str) -> Vec<String> {
        let mut forms = vec![secret.to_string(), json_escape(secret), json_escape(&json_escape(secret))];
        forms.extend(base64_inner(secret.as_bytes()));
        forms.retain(|f| f.chars().count() >= MIN_LEN);
        forms.into_iter().filter(|f| text.contains(f.as_str())).collect()
    }

    fn percent(s: &str, plus: bool, lower: bool) -> String {
        s.bytes()
            .map(|b| match b {
                b' ' if plus => "+".to_string(),
                b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => (b as char).to_string(),
                b if lower => format!("%{b:02x}"),
                b => format!("%{b:02X}"),
            })
            .collect()
    }

    fn yaml_double_quoted(s: &str) -> String {
        let mut o = String::new();
        for c in s.chars() {
            match c {
                '"' => o.push_str("\\\""),
                '\\' => o.push_str("\\\\"),
                '\n' => o.push_str("\\n"),
                '\t' => o.push_str("\\t"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => o.push_str(&format!("\\x{:02X}", c as u32)),
                c if (c as u32) > 0x7e && (c as u32) < 0x100 => o.push_str(&format!("\\x{:02X}", c as u32)),
                c if (c as u32) >= 0x10000 => o.push_str(&format!("\\U{:08X}", c as u32)),
                c if (c as u32) > 0x7e => o.push_str(&format!("\\u{:04X}", c as u32)),
                c => o.push(c),
            }
        }
        o
    }

    /// Python's `json.dumps`: non-ASCII as `\uXXXX`.
    fn json_python(s: &str) -> String {
        let mut o = String::new();
        for c in json_escape(s).chars() {
            if c.is_ascii() {
                o.push(c);
            } else {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    o.push_str(&format!("\\u{:04x}", u));
                }
            }
        }
        o
    }

    /// Go's `encoding/json`: `<`, `>`, `&` as `\u003c`….
    fn json_go(s: &str) -> String {
        json_escape(s).replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
    }

    fn secret() -> impl Strategy<Value = String> {
        // Printable text with the characters escapes treat specially, and some non-ASCII.
        proptest::string::string_regex("[a-zA-Z0-9 \"'\\\\/<>&%+=:;,.{}\\[\\]\\-_é€😀\\t]{4,40}").unwrap()
    }

    fn around() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-zA-Z0-9 :=,{}\"\\-]{0,30}").unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn no_form_of_a_secret_survives(s in secret(), pre in around(), post in around(),
                                        pad in proptest::collection::vec(any::<u8>(), 0..7),
                                        tail in proptest::collection::vec(any::<u8>(), 0..7)) {
            let r = Redactor::new();
            r.add(&s);
            let mut blob = pad.clone();
            blob.extend_from_slice(s.as_bytes());
            blob.extend_from_slice(&tail);
            let doc = |escaped: String| {
                let mut b = pad.clone();
                b.extend_from_slice(format!("{{\"stringData\": {{\"k\": \"{escaped}\"}}}}").as_bytes());
                b
            };
            let forms = [
                s.clone(),
                json_escape(&s),
                json_escape(&json_escape(&s)),
                json_python(&s),
                json_go(&s),
                json_escape(&json_python(&s)),
                yaml_double_quoted(&s),
                s.replace('\'', "''"),
                percent(&s, true, false),
                percent(&s, false, true),
                STANDARD.encode(&blob),
                STANDARD_NO_PAD.encode(&blob),
                URL_SAFE.encode(&blob),
                URL_SAFE_NO_PAD.encode(&blob),
                STANDARD.encode(doc(json_escape(&s))),
                STANDARD.encode(doc(json_python(&s))),
                URL_SAFE_NO_PAD.encode(doc(json_go(&s))),
                STANDARD_NO_PAD.encode(doc(json_escape(&json_escape(&s)))),
            ];
            for form in forms {
                let text = format!("{pre}{form}{post}");
                let out = r.scrub(&text);
                prop_assert!(leaks(&s, &out).is_empty(), "{:?} in {:?} -> {:?}: {:?}", s, text, out, leaks(&s, &out));
                prop_assert!(!out.contains(form.as_str()), "{:?} survives in {:?}", form, out);
            }
        }

        #[test]
        fn text_without_a_secret_is_unchanged(s in "[a-z]{8,20}", text in "[A-Z0-9 .,:;-]{0,80}") {
            let r = Redactor::new();
            r.add(&s);
            prop_assert_eq!(r.scrub(&text), text);
        }
    }
}
