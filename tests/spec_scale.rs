//! Spec loading stays linear in the size of the input. Each case has 120k keys in one map (3.4 MB
//! of YAML, under the parser's node limit): work linear in the keys takes a fraction of a second
//! to a few seconds, while a scan of the map per key (a duplicate check, an overlay merge, a
//! lookup per problem) would do 120k × 120k / 2 ≈ 7.2 billion key comparisons and take minutes,
//! far beyond what this suite allows itself. No time is measured here: the size alone makes a
//! quadratic regression fail the suite by its running time. `cargo bench --bench spec_load`
//! prints the timings and the 120k/30k ratio.

use std::path::{Path, PathBuf};

use raydeploy::spec;

const KEYS: usize = 120_000;

fn header() -> String {
    "apiVersion: raydeploy/v1\nkind: RayDeployment\nname: scale\ntarget: local\ncluster:\n  head: {}\n".into()
}

/// `keys` lines `    VAR_<i>: <prefix>-<i>`, for `i` in `range`.
fn entries(range: std::ops::Range<usize>, prefix: &str) -> String {
    range.map(|i| format!("    VAR_{i}: {prefix}-{i}\n")).collect()
}

fn write(dir: &Path, spec_text: &str, overlay: Option<&str>) -> PathBuf {
    let path = dir.join("raydeploy.yaml");
    std::fs::write(&path, spec_text).unwrap();
    if let Some(o) = overlay {
        std::fs::create_dir_all(dir.join("environments")).unwrap();
        std::fs::write(dir.join("environments/big.yaml"), o).unwrap();
    }
    path
}

#[test]
fn a_120k_key_map_and_a_same_size_overlay_load_and_merge() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!("{}  env:\n{}", header(), entries(0..KEYS, "base"));
    // the overlay sets every other key again and adds as many new ones
    let overlay = format!(
        "cluster:\n  env:\n{}",
        (0..KEYS)
            .map(|i| if i % 2 == 0 { format!("    VAR_{i}: over-{i}\n") } else { format!("    NEW_{i}: new-{i}\n") })
            .collect::<String>()
    );
    assert!(base.len() > 3_000_000, "{} bytes", base.len());
    let path = write(dir.path(), &base, Some(&overlay));

    let loaded = spec::load(&path, None, &|_| None).unwrap_or_else(|r| panic!("{}", r.short()));
    assert_eq!(loaded.spec.cluster.env.len(), KEYS);
    assert_eq!(loaded.spec.cluster.env["VAR_119999"], "base-119999");

    let merged = spec::load(&path, Some("big"), &|_| None).unwrap_or_else(|r| panic!("{}", r.short()));
    let env = &merged.spec.cluster.env;
    assert_eq!(env.len(), KEYS + KEYS / 2);
    assert_eq!(env["VAR_0"], "over-0");
    assert_eq!(env["VAR_1"], "base-1");
    assert_eq!(env["NEW_1"], "new-1");
    assert_eq!(env["VAR_119998"], "over-119998");
    // keys keep their document order: the base's first, then the overlay's new ones
    let keys: Vec<&str> = merged.doc.get("cluster").and_then(|c| c.get("env")).map_or(vec![], |n| match &n.value {
        spec::node::Value::Map(m) => m.keys().map(String::as_str).take(2).collect(),
        _ => vec![],
    });
    assert_eq!(keys, ["VAR_0", "VAR_1"]);
}

#[test]
fn duplicates_in_a_large_map_are_each_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    // 60k keys, each written twice: 120k entries
    let half = KEYS / 2;
    let text = format!("{}  env:\n{}{}", header(), entries(0..half, "a"), entries(0..half, "b"));
    let path = write(dir.path(), &text, None);
    let report = spec::load(&path, None, &|_| None).expect_err("duplicates are errors");
    let dups: Vec<_> = report.problems.0.iter().filter(|p| p.message.starts_with("duplicate key")).collect();
    assert_eq!(dups.len(), half);
    assert_eq!(dups[0].path, "cluster.env.VAR_0");
    assert_eq!(dups[0].help.as_deref(), Some("it is already set on line 8"));
    assert_eq!(dups[0].loc.map(|l| l.line), Some(8 + half as u32));
    assert_eq!(report.problems.len(), half, "only the duplicates: {:?}", report.problems.0.last());
}

#[test]
fn a_large_map_of_unknown_fields_is_located_key_by_key() {
    let dir = tempfile::tempdir().unwrap();
    // `cluster.head` has fixed fields: each of these keys is unknown and located on its own line
    let text = format!("{}  head:\n{}", header().replace("  head: {}\n", ""), entries(0..KEYS, "x"));
    let path = write(dir.path(), &text, None);
    let report = spec::load(&path, None, &|_| None).expect_err("unknown fields are errors");
    assert_eq!(report.problems.len(), KEYS);
    let last = report.problems.0.iter().find(|p| p.path == "cluster.head.VAR_119999").expect("the last key");
    assert_eq!(last.message, "unknown field `VAR_119999`");
    assert_eq!(last.loc.map(|l| l.line), Some(6 + KEYS as u32));
}
