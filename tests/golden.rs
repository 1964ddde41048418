//! Golden files: every artifact of every example and environment, plus `explain`, rendered by
//! the binary and compared with the snapshots in tests/snapshots (review with `cargo insta review`).
//! Real consumers check the same renders in tests/terraform.rs, tests/helm_values.rs,
//! tests/crd_schema.rs and tests/dockerfile.rs.

use std::path::Path;

use assert_cmd::Command;
use sha2::Digest;

/// (case name, spec, environment)
const CASES: &[(&str, &str, Option<&str>)] = &[
    ("supply-chain", "raydeploy.yaml", None),
    ("supply-chain-dev", "raydeploy.yaml", Some("dev")),
    ("supply-chain-prod", "raydeploy.yaml", Some("prod")),
    ("pytorch-mnist-aks", "examples/pytorch-mnist-aks/raydeploy.yaml", None),
    ("gpu-autoscaling", "examples/gpu-autoscaling/raydeploy.yaml", None),
    ("xgboost-blob", "examples/xgboost-blob/raydeploy.yaml", None),
    ("kubernetes", "examples/kubernetes/raydeploy.yaml", None),
    ("local", "examples/local/raydeploy.yaml", None),
    ("ephemeral-jobs", "examples/ephemeral-jobs/raydeploy.yaml", None),
];

fn cmd() -> Command {
    let mut c = Command::cargo_bin("raydeploy").unwrap();
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000000")
        .env("NO_COLOR", "1");
    c
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).into_iter().flatten().flatten().collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out)
        } else {
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
}

#[test]
fn every_artifact_matches_its_golden() {
    let every_example: Vec<String> = std::fs::read_dir("examples")
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("raydeploy.yaml").exists())
        .map(|e| format!("examples/{}/raydeploy.yaml", e.file_name().to_string_lossy()))
        .collect();
    for ex in &every_example {
        assert!(CASES.iter().any(|c| c.1 == ex), "{ex} has no golden case");
    }
    for (case, spec, env) in CASES {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cmd();
        c.arg("render").arg(spec).arg("--out").arg(dir.path());
        if let Some(e) = env {
            c.args(["-e", e]);
        }
        c.assert().success();
        let mut files = vec![];
        walk(dir.path(), dir.path(), &mut files);
        // render's record of what it wrote: every artifact, with its sha256 (not a golden itself).
        files.retain(|f| f != ".raydeploy-render.json");
        let record: serde_json::Value = std::fs::read_to_string(dir.path().join(".raydeploy-render.json"))
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap_or_default();
        let recorded: Vec<(String, String)> = record["files"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let expected: Vec<(String, String)> = files
            .iter()
            .map(|f| {
                let digest = sha2::Sha256::digest(std::fs::read(dir.path().join(f)).unwrap());
                (f.clone(), format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>()))
            })
            .collect();
        assert_eq!(recorded, expected, "{case}: the render record lists every artifact with its hash");
        insta::assert_snapshot!(format!("{case}__files"), files.join("\n"));
        for f in files {
            let text = std::fs::read_to_string(dir.path().join(&f)).unwrap();
            insta::assert_snapshot!(format!("{case}__{}", f.replace('/', "__")), text);
        }
        let mut c = cmd();
        c.arg("explain").arg(spec);
        if let Some(e) = env {
            c.args(["-e", e]);
        }
        let out = c.output().unwrap();
        assert!(out.status.success());
        insta::assert_snapshot!(format!("{case}__explain"), String::from_utf8(out.stdout).unwrap());
    }
}
