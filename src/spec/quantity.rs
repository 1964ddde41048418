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

/// The largest CPU (millicores) or memory (bytes) amount: Kubernetes keeps quantities in a
/// signed 64-bit integer, and every sum raydeploy makes of them is checked against it.
pub const MAX_QUANTITY: u64 = i64::MAX as u64;

/// Why a quantity was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityError {
    /// Not a quantity at all.
    Syntax,
    /// A quantity, but above [`MAX_QUANTITY`].
    OutOfRange,
}

/// `int.frac × mult`, exactly, rounded half up; `None` when it does not fit in [`MAX_QUANTITY`].
/// `num` is digits with at most one `.` (checked by the caller).
fn scaled(num: &str, mult: u128) -> Result<u64, QuantityError> {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(QuantityError::Syntax);
    }
    let int = int.trim_start_matches('0');
    // More than 19 significant integer digits is above i64::MAX whatever the unit.
    if int.len() > 19 {
        return Err(QuantityError::OutOfRange);
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| QuantityError::Syntax)? };
    // 18 fraction digits are far below a millicore or a byte; 10^18 × 2^40 fits in u128.
    let frac = &frac[..frac.len().min(18)];
    let frac_value: u128 = if frac.is_empty() { 0 } else { frac.parse().map_err(|_| QuantityError::Syntax)? };
    let denom = 10u128.pow(frac.len() as u32);
    let whole = int.checked_mul(mult).ok_or(QuantityError::OutOfRange)?;
    let part = (frac_value * mult + denom / 2) / denom;
    let total = whole.checked_add(part).ok_or(QuantityError::OutOfRange)?;
    u64::try_from(total).ok().filter(|v| *v <= MAX_QUANTITY).ok_or(QuantityError::OutOfRange)
}

fn is_decimal(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.') && s.matches('.').count() <= 1
}

/// A CPU quantity in millicores: `7`, `7.5`, `7500m`.
pub fn cpu_millis(s: &str) -> Result<u64, QuantityError> {
    let s = s.trim();
    if let Some(m) = s.strip_suffix('m') {
        if m.is_empty() || !m.chars().all(|c| c.is_ascii_digit()) {
            return Err(QuantityError::Syntax);
        }
        return scaled(m, 1);
    }
    if !is_decimal(s) {
        return Err(QuantityError::Syntax);
    }
    scaled(s, 1000)
}

/// A memory quantity in bytes: `28Gi`, `512Mi`, `1G`, `1073741824`.
pub fn memory_bytes(s: &str) -> Result<u64, QuantityError> {
    let s = s.trim();
    const UNITS: [(&str, u128); 9] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (num, mult) =
        UNITS.iter().find_map(|(suffix, mult)| s.strip_suffix(suffix).map(|n| (n, *mult))).unwrap_or((s, 1));
    if !is_decimal(num) {
        return Err(QuantityError::Syntax);
    }
    scaled(num, mult)
}

/// Parses a CPU quantity: `7`, `7.5`, `7500m` (millicores; `None` when invalid or out of range).
pub fn parse_cpu(s: &str) -> Option<u64> {
    cpu_millis(s).ok()
}

/// Parses a memory quantity: `28Gi`, `512Mi`, `1G`, `1073741824` (bytes; `None` when invalid or
/// out of range).
pub fn parse_memory(s: &str) -> Option<u64> {
    memory_bytes(s).ok()
}

/// Canonical text of a CPU amount: whole CPUs as `7`, otherwise millicores `7500m`.
pub fn format_cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) { (millis / 1000).to_string() } else { format!("{millis}m") }
}

/// Canonical text of a memory amount in the largest exact binary unit.
pub fn format_memory(bytes: u64) -> String {
    for (suffix, mult) in [("Ti", 1u64 << 40), ("Gi", GI), ("Mi", MI), ("Ki", 1024)] {
        if bytes >= mult && bytes.is_multiple_of(mult) {
            return format!("{}{suffix}", bytes / mult);
        }
    }
    bytes.to_string()
}

/// Human-readable GiB with two decimals.
pub fn gib(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / GI as f64)
}

struct QuantityVisitor(&'static str, fn(&str) -> Result<u64, QuantityError>, &'static str);

impl<'de> Visitor<'de> for QuantityVisitor {
    type Value = Option<u64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v == "auto" {
            return Ok(None);
        }
        match (self.1)(v) {
            Ok(q) => Ok(Some(q)),
            Err(QuantityError::Syntax) => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            Err(QuantityError::OutOfRange) => Err(E::custom(format!("`{v}` is out of range: {}", self.2))),
        }
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
const CPU_MAX: &str = "a CPU quantity is at most 9223372036854775807m (Kubernetes quantities are 64-bit)";
const MEM_MAX: &str = "a memory quantity is less than 8Ei, 2^63 bytes (Kubernetes quantities are 64-bit)";

impl<'de> Deserialize<'de> for CpuRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match d.deserialize_any(QuantityVisitor(CPU_EXPECT, cpu_millis, CPU_MAX))? {
            None => CpuRequest::Auto,
            Some(m) => CpuRequest::Millis(m),
        })
    }
}

impl<'de> Deserialize<'de> for MemoryRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match d.deserialize_any(QuantityVisitor(MEM_EXPECT, memory_bytes, MEM_MAX))? {
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

    #[test]
    fn quantities_are_exact_and_bounded() {
        // No float rounding: every digit counts.
        assert_eq!(memory_bytes("9007199254740993"), Ok(9_007_199_254_740_993));
        assert_eq!(cpu_millis("4294967297"), Ok(4_294_967_297_000));
        assert_eq!(cpu_millis("0.0005"), Ok(1));
        assert_eq!(memory_bytes("0.5"), Ok(1));
        // Up to the Kubernetes bound, and not one byte more.
        assert_eq!(memory_bytes("9223372036854775807"), Ok(MAX_QUANTITY));
        assert_eq!(memory_bytes("9223372036854775808"), Err(QuantityError::OutOfRange));
        assert_eq!(memory_bytes("8388607Ti"), Ok(8_388_607 << 40));
        assert_eq!(memory_bytes("16777215Ti"), Err(QuantityError::OutOfRange));
        assert_eq!(memory_bytes("99999999999999999999999999999Gi"), Err(QuantityError::OutOfRange));
        assert_eq!(cpu_millis("9223372036854775807m"), Ok(MAX_QUANTITY));
        assert_eq!(cpu_millis("9223372036854776"), Err(QuantityError::OutOfRange));
        assert_eq!(cpu_millis("1e3"), Err(QuantityError::Syntax));
        assert_eq!(cpu_millis("1.5m"), Err(QuantityError::Syntax));
        assert_eq!(memory_bytes("1..5Gi"), Err(QuantityError::Syntax));
        assert_eq!(memory_bytes("."), Err(QuantityError::Syntax));
    }
}
