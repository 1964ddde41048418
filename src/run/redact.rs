//! Secret scrubbing: every resolved secret value is registered here before it is used, and every
//! line that reaches a log, the terminal, an error or the state passes through [`Redactor::scrub`].

use std::sync::{Arc, RwLock};

/// What a secret value is replaced with.
pub const MASK: &str = "***";

/// A shared, growing set of values that must never be shown.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    values: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a secret value (and each of its lines, so a multi-line value cannot leak one line
    /// at a time). Values shorter than 4 characters are masked too, but only as whole lines.
    pub fn add(&self, value: &str) {
        let mut v = self.values.write().expect("redactor lock");
        for piece in std::iter::once(value).chain(value.lines()) {
            let piece = piece.trim_end_matches('\r');
            if !piece.is_empty() && !v.iter().any(|x| x == piece) {
                v.push(piece.to_string());
            }
        }
        // Longest first, so a value containing another is masked whole.
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.values.read().expect("redactor lock").is_empty()
    }

    /// `text` with every registered value replaced by [`MASK`].
    pub fn scrub(&self, text: &str) -> String {
        let v = self.values.read().expect("redactor lock");
        let mut out = text.to_string();
        for s in v.iter() {
            if s.len() >= 4 {
                if out.contains(s.as_str()) {
                    out = out.replace(s.as_str(), MASK);
                }
            } else if out.trim() == s {
                out = MASK.to_string();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
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
}
