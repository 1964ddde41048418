//! CPU and memory requests: `auto` or a Kubernetes quantity (`7`, `7500m`, `28Gi`).

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const MI: u64 = 1 << 20;
pub const GI: u64 = 1 << 30;

/// CPU of a Ray pod: `auto` (the largest whole number of CPUs the VM leaves to pods) or explicit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CpuRequest {
    #[default]
    Auto,
    Millis(u64),
}

/// Memory of a Ray pod: `auto` or a quantity such as `28Gi`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemoryRequest {
    #[default]
    Auto,
    Bytes(u64),
}

/// Parses a CPU quantity: `7`, `7.5`, `7500m`.
pub fn parse_cpu(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(m) = s.strip_suffix('m') {
        return m.parse::<u64>().ok();
    }
    let v: f64 = s.parse().ok()?;
    if !v.is_finite() || v < 0.0 || s.contains(['e', 'E']) {
        return None;
    }
    Some((v * 1000.0).round() as u64)
}

/// Parses a memory quantity: `28Gi`, `512Mi`, `1G`, `1073741824`.
pub fn parse_memory(s: &str) -> Option<u64> {
    let s = s.trim();
    const UNITS: [(&str, f64); 10] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("k", 1e3),
        ("K", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("", 1.0),
    ];
    for (suffix, mult) in UNITS {
        if let Some(num) = s.strip_suffix(suffix) {
            if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
                if suffix.is_empty() {
                    return None;
                }
                continue;
            }
            let v: f64 = num.parse().ok()?;
            return Some((v * mult).round() as u64);
        }
    }
    None
}

/// Canonical text of a CPU amount: whole CPUs as `7`, otherwise millicores `7500m`.
pub fn format_cpu(millis: u64) -> String {
    if millis % 1000 == 0 { (millis / 1000).to_string() } else { format!("{millis}m") }
}

/// Canonical text of a memory amount in the largest exact binary unit.
pub fn format_memory(bytes: u64) -> String {
    for (suffix, mult) in [("Ti", 1u64 << 40), ("Gi", GI), ("Mi", MI), ("Ki", 1024)] {
        if bytes >= mult && bytes % mult == 0 {
            return format!("{}{suffix}", bytes / mult);
        }
    }
    bytes.to_string()
}

/// Human-readable GiB with two decimals.
pub fn gib(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / GI as f64)
}

struct QuantityVisitor(&'static str, fn(&str) -> Option<u64>);

impl<'de> Visitor<'de> for QuantityVisitor {
    type Value = Option<u64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v == "auto" {
            return Ok(None);
        }
        (self.1)(v).map(Some).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        if v < 0 {
            return Err(E::invalid_value(de::Unexpected::Signed(v), &self));
        }
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if v < 0.0 || !v.is_finite() {
            return Err(E::invalid_value(de::Unexpected::Float(v), &self));
        }
        self.visit_str(&v.to_string())
    }
}

const CPU_EXPECT: &str = "`auto` or a CPU quantity such as 7, 7.5 or 7500m";
const MEM_EXPECT: &str = "`auto` or a memory quantity such as 28Gi or 512Mi";

impl<'de> Deserialize<'de> for CpuRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match d.deserialize_any(QuantityVisitor(CPU_EXPECT, parse_cpu))? {
            None => CpuRequest::Auto,
            Some(m) => CpuRequest::Millis(m),
        })
    }
}

impl<'de> Deserialize<'de> for MemoryRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match d.deserialize_any(QuantityVisitor(MEM_EXPECT, parse_memory))? {
            None => MemoryRequest::Auto,
            Some(b) => MemoryRequest::Bytes(b),
        })
    }
}

impl Serialize for CpuRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            CpuRequest::Auto => s.serialize_str("auto"),
            CpuRequest::Millis(m) => s.serialize_str(&format_cpu(*m)),
        }
    }
}

impl Serialize for MemoryRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MemoryRequest::Auto => s.serialize_str("auto"),
            MemoryRequest::Bytes(b) => s.serialize_str(&format_memory(*b)),
        }
    }
}

impl JsonSchema for CpuRequest {
    fn schema_name() -> Cow<'static, str> {
        "CpuRequest".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`auto` (default: the largest whole number of CPUs the node leaves to pods) or a CPU quantity: 7, 7.5, \"7500m\".",
            "anyOf": [
                { "const": "auto" },
                { "type": "number", "minimum": 0 },
                { "type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?|[0-9]+m)$" }
            ]
        })
    }
}

impl JsonSchema for MemoryRequest {
    fn schema_name() -> Cow<'static, str> {
        "MemoryRequest".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`auto` (default: what the node leaves to pods, in whole GiB) or a Kubernetes memory quantity: \"28Gi\", \"512Mi\".",
            "anyOf": [
                { "const": "auto" },
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|k|K|M|G|T)?$" }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_and_format() {
        assert_eq!(parse_cpu("7"), Some(7000));
        assert_eq!(parse_cpu("7.5"), Some(7500));
        assert_eq!(parse_cpu("250m"), Some(250));
        assert_eq!(parse_cpu("x"), None);
        assert_eq!(parse_memory("28Gi"), Some(28 * GI));
        assert_eq!(parse_memory("512Mi"), Some(512 * MI));
        assert_eq!(parse_memory("1G"), Some(1_000_000_000));
        assert_eq!(parse_memory("12"), Some(12));
        assert_eq!(parse_memory("Gi"), None);
        assert_eq!(parse_memory("1.5Gi"), Some(1536 * MI));
        assert_eq!(format_cpu(7000), "7");
        assert_eq!(format_cpu(7500), "7500m");
        assert_eq!(format_memory(28 * GI), "28Gi");
        assert_eq!(format_memory(1536 * MI), "1536Mi");
    }
}
