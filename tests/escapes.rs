//! The file system as an attacker's tool: links, FIFOs, devices and `..` in and around the spec's
//! folder and the output folder. raydeploy reads only regular files inside the spec's folder,
//! never follows a link out of a folder it writes or compares, removes only files it wrote, and
//! creates nothing on a dry run.
//!
//! Every run of the binary is bounded (a FIFO read would block forever): a run that does not end
//! is killed and fails its assertion.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use predicates::prelude::*;

/// Upper bound on one run: only reached when raydeploy hangs, which is the failure.
const BOUND: Duration = Duration::from_secs(120);
const CANARY: &str = "canary-outside-7d21";

fn raydeploy(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("raydeploy").unwrap();
    c.current_dir(dir).env("NO_COLOR", "1").env_remove("RAYDEPLOY_MAX_JOB_BYTES").env_remove("RAYDEPLOY_MAX_JOB_FILES");
    c.timeout(BOUND);
    c
}

/// A valid kubernetes spec named `demo`, with `image` and `rest` appended to its sections.
fn spec(image: &str, rest: &str) -> String {
    format!(
        "apiVersion: raydeploy/v1\nkind: RayDeployment\nname: demo\ntarget: kubernetes\n\
         kubernetes: {{ registry: ghcr.io/acme/ray }}\n\
         image:\n  rayVersion: \"2.52.0\"\n  python: \"3.12\"\n{image}\
         cluster:\n  head: {{ cpu: 1, memory: 2Gi }}\n{rest}"
    )
}

/// `<tmp>/spec/raydeploy.yaml` with the given text, and `<tmp>/outside.txt` holding the canary.
fn setup(text: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spec");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("raydeploy.yaml"), text).unwrap();
    std::fs::write(tmp.path().join("outside.txt"), format!("FROM {CANARY}\n")).unwrap();
    (tmp, dir)
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {}", path.display());
}

/// Line (1-based) of the first line of the spec containing `needle`.
fn line_of(dir: &Path, needle: &str) -> usize {
    let text = std::fs::read_to_string(dir.join("raydeploy.yaml")).unwrap();
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} not in the spec")) + 1
}

/// stderr with the report's wrapped lines joined (a long message is wrapped at the terminal width).
fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| l.trim_start().trim_start_matches('│').trim())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `validate` and `render` both reject the spec with exit code 1, a message located at the
/// field's line, and nothing written; the canary outside the folder is never printed.
fn assert_rejected(dir: &Path, field: &str, line_needle: &str, fragment: &str) {
    let line = line_of(dir, line_needle);
    for cmd in ["validate", "render"] {
        let out = raydeploy(dir).arg(cmd).output().unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd} ({field}, {fragment}): {err}");
        assert!(err.contains(field), "{cmd}: names {field}: {err}");
        assert!(err.contains(fragment), "{cmd}: says {fragment:?}: {err}");
        assert!(err.contains(&format!("raydeploy.yaml:{line}:")), "{cmd}: located at line {line}: {err}");
        assert!(!err.contains(CANARY) && !String::from_utf8_lossy(&out.stdout).contains(CANARY));
        assert!(!dir.join("rendered").exists(), "{cmd} wrote nothing");
    }
}

// ---------------------------------------------------------------------------------------------
// the output folder

#[test]
fn render_never_follows_a_link_out_of_its_output_folder() {
    let (tmp, dir) = setup(&spec("", ""));
    let victim = dir.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("important.txt"), format!("{CANARY}\n")).unwrap();
    std::fs::create_dir_all(dir.join("rendered/demo/manifests")).unwrap();
    symlink("../../../victim", dir.join("rendered/demo/manifests/link")).unwrap();

    raydeploy(&dir)
        .arg("render")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("manifests/link"))
        .stderr(predicate::str::contains("--force"));
    assert_eq!(std::fs::read_to_string(victim.join("important.txt")).unwrap(), format!("{CANARY}\n"));
    assert!(!dir.join("rendered/demo/image/Dockerfile").exists(), "a refused render writes nothing");

    // --check compares without reading through the link
    let out = raydeploy(&dir).args(["render", "--check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("manifests/link") && !stdout.contains(CANARY), "{stdout}");

    // --force writes raydeploy's files and leaves the link (and what it points at) alone
    raydeploy(&dir).args(["render", "--force"]).assert().success();
    assert_eq!(std::fs::read_to_string(victim.join("important.txt")).unwrap(), format!("{CANARY}\n"));
    assert!(std::fs::symlink_metadata(dir.join("rendered/demo/manifests/link")).unwrap().is_symlink());
    assert!(dir.join("rendered/demo/image/Dockerfile").is_file());

    // a link planted where a rendered file goes: --check does not read it, --force replaces the
    // link itself, never the file it points at
    let df = dir.join("rendered/demo/image/Dockerfile");
    std::fs::remove_file(&df).unwrap();
    symlink(tmp.path().join("outside.txt"), &df).unwrap();
    let out = raydeploy(&dir).args(["render", "--check", "--force"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("a/image/Dockerfile is a link") && !stdout.contains(CANARY), "{stdout}");
    raydeploy(&dir).arg("render").assert().code(1).stderr(predicate::str::contains("image/Dockerfile"));
    raydeploy(&dir).args(["render", "--force"]).assert().success();
    assert_eq!(std::fs::read_to_string(tmp.path().join("outside.txt")).unwrap(), format!("FROM {CANARY}\n"));
    assert!(!std::fs::symlink_metadata(&df).unwrap().is_symlink());
    assert!(!std::fs::read_to_string(&df).unwrap().contains(CANARY));
}

#[test]
fn render_into_a_folder_of_user_files_refuses_and_force_removes_only_its_own() {
    let job = "jobs:\n  - name: nightly\n    entrypoint: python nightly.py\n";
    let (_tmp, dir) = setup(&spec("", job));
    let user_files = ["helm/mychart/Chart.yaml", "terraform/modules/net.tf", "manifests/jobs/mine.yaml"];
    for f in user_files {
        std::fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
        std::fs::write(dir.join(f), format!("# mine: {f}\n")).unwrap();
    }
    let mut refused = raydeploy(&dir).args(["render", "--out", "."]).assert().code(1);
    for f in user_files.iter().chain(&["raydeploy.yaml"]) {
        refused = refused.stderr(predicate::str::contains(*f));
    }
    assert!(!dir.join("image/Dockerfile").exists() && !dir.join(".raydeploy-render.json").exists(), "nothing written");

    raydeploy(&dir)
        .args(["render", "--out", ".", "--force"])
        .assert()
        .success()
        .stderr(predicate::str::contains("raydeploy did not write"));
    assert!(dir.join("image/Dockerfile").is_file() && dir.join("manifests/jobs/nightly.yaml").is_file());
    let record = std::fs::read_to_string(dir.join(".raydeploy-render.json")).unwrap();
    assert!(record.contains("manifests/jobs/nightly.yaml") && !record.contains("mine.yaml"), "{record}");

    // --check: with --force the folder is up to date; without, the user's files are listed
    raydeploy(&dir).args(["render", "--out", ".", "--check", "--force"]).assert().success();
    raydeploy(&dir)
        .args(["render", "--out", ".", "--check"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("helm/mychart/Chart.yaml (not written by raydeploy"));

    // The job goes away: its manifest (raydeploy's) is removed, the user's files stay.
    std::fs::write(dir.join("raydeploy.yaml"), spec("", "")).unwrap();
    raydeploy(&dir).args(["render", "--out", ".", "--force"]).assert().success();
    assert!(!dir.join("manifests/jobs/nightly.yaml").exists());
    for f in user_files {
        assert_eq!(std::fs::read_to_string(dir.join(f)).unwrap(), format!("# mine: {f}\n"), "{f} kept");
    }
    assert!(dir.join("raydeploy.yaml").is_file());
}

#[test]
fn a_legacy_output_folder_is_adopted_only_when_it_holds_exactly_the_render() {
    let (tmp, dir) = setup(&spec("", ""));
    let a = tmp.path().join("a");
    raydeploy(&dir).arg("render").arg("--out").arg(&a).assert().success();
    // an output folder from before the record: exactly the render is fine
    std::fs::remove_file(a.join(".raydeploy-render.json")).unwrap();
    raydeploy(&dir).arg("render").arg("--check").arg("--out").arg(&a).assert().success();
    raydeploy(&dir).arg("render").arg("--out").arg(&a).assert().success();
    assert!(a.join(".raydeploy-render.json").is_file());
    // anything else in it is not raydeploy's
    std::fs::remove_file(a.join(".raydeploy-render.json")).unwrap();
    std::fs::write(a.join("helm/old.values.yaml"), "x: 1\n").unwrap();
    raydeploy(&dir)
        .arg("render")
        .arg("--out")
        .arg(&a)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("helm/old.values.yaml (not written by raydeploy)"));
    raydeploy(&dir).arg("render").arg("--force").arg("--out").arg(&a).assert().success();
    assert!(a.join("helm/old.values.yaml").is_file());
}

// ---------------------------------------------------------------------------------------------
// paths in the spec

#[test]
fn image_dockerfile_outside_the_spec_folder_or_not_a_regular_file_is_refused() {
    let cases: [(&str, &str); 6] = [
        ("/etc/passwd", "is an absolute path"),
        ("../../outside.txt", "leaves the spec's folder"),
        ("./link", "outside the spec's folder"),
        ("./zero", "outside the spec's folder"),
        ("./fifo", "is a FIFO, not a regular file"),
        ("./big", "is larger than 1 MiB"),
    ];
    for (path, fragment) in cases {
        let (tmp, dir) = setup(&spec(&format!("  dockerfile: {path}\n"), ""));
        symlink(tmp.path().join("outside.txt"), dir.join("link")).unwrap();
        symlink("/dev/zero", dir.join("zero")).unwrap();
        mkfifo(&dir.join("fifo"));
        std::fs::write(dir.join("big"), vec![b'#'; 2 << 20]).unwrap();
        assert_rejected(&dir, "image.dockerfile", "dockerfile:", fragment);
    }
}

#[test]
fn job_working_dir_outside_the_spec_folder_is_refused() {
    let cases: [(&str, &str); 4] = [
        ("../../../../usr/share/doc", "leaves the spec's folder"),
        ("/", "is an absolute path"),
        ("./out", "outside the spec's folder"),
        ("./file", "not a folder"),
    ];
    for (path, fragment) in cases {
        let job = format!("jobs:\n  - name: j\n    entrypoint: python a.py\n    workingDir: {path}\n");
        let (tmp, dir) = setup(&spec("", &job));
        symlink(tmp.path(), dir.join("out")).unwrap();
        std::fs::write(dir.join("file"), "x").unwrap();
        assert_rejected(&dir, "jobs[0].workingDir", "workingDir:", fragment);
    }
}

#[test]
fn the_spec_file_itself_must_be_a_small_regular_file() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("raydeploy.yaml");
    mkfifo(&fifo);
    let big = tmp.path().join("big.yaml");
    std::fs::write(&big, format!("name: demo\n#{}\n", "x".repeat(5 << 20))).unwrap();
    let cases = [(PathBuf::from("/dev/zero"), "is a device"), (fifo, "is a FIFO"), (big, "is larger than 4 MiB")];
    for (path, fragment) in cases {
        raydeploy(tmp.path())
            .arg("validate")
            .arg(&path)
            .assert()
            .code(1)
            .stderr(predicate::str::contains("cannot read spec"))
            .stderr(predicate::str::contains(fragment));
    }
}

#[test]
fn overlays_stay_inside_the_environments_folder() {
    let (tmp, dir) = setup(&spec("", ""));
    let envs = dir.join("environments");
    std::fs::create_dir_all(envs.join("folder.yaml")).unwrap();
    std::fs::write(envs.join("dev.yaml"), "cluster: { namespace: dev }\n").unwrap();
    std::fs::write(tmp.path().join("evil.yaml"), format!("cluster: {{ namespace: {CANARY} }}\n")).unwrap();
    symlink("../../evil.yaml", envs.join("evil.yaml")).unwrap();
    symlink("nowhere.yaml", envs.join("gone.yaml")).unwrap();
    std::fs::write(tmp.path().join("x.yaml"), format!("cluster: {{ namespace: {CANARY} }}\n")).unwrap();

    let cases = [
        ("../../x", "is not an environment name"),
        ("../environments/dev", "is not an environment name"),
        ("evil", "outside the spec's folder"),
        ("gone", "is a link to nowhere.yaml, which does not exist"),
        ("folder", "is a folder, not a regular file"),
        ("missing", "environment `missing` not found"),
    ];
    for (env, fragment) in cases {
        let out = raydeploy(&dir).args(["validate", "-e", env]).output().unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "-e {env}: {err}");
        assert!(err.contains(fragment), "-e {env}: says {fragment:?}: {err}");
        // only the overlay that would load is offered
        assert!(err.contains("available environments: dev 1 problem found"), "-e {env}: {err}");
        assert!(!err.contains(CANARY));
    }
    raydeploy(&dir).args(["validate", "-e", "dev"]).assert().success();
}

// ---------------------------------------------------------------------------------------------
// job folders

fn job_spec(target_local: bool) -> String {
    let job = "jobs:\n  - name: j\n    entrypoint: python a.py\n    workingDir: ./jobs/j\n";
    let s = spec("", job);
    if target_local { s.replace("target: kubernetes", "target: local") } else { s }
}

fn content_hash(dir: &Path) -> String {
    let out = raydeploy(dir).args(["explain", "--output", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["image"]["content_hash"].as_str().unwrap().to_string()
}

#[test]
fn job_folder_links_are_never_followed() {
    let (tmp, dir) = setup(&job_spec(false));
    let j = dir.join("jobs/j");
    std::fs::create_dir_all(&j).unwrap();
    std::fs::write(j.join("a.py"), "print(1)\n").unwrap();
    // cycles, an endless device and a file outside: none is followed
    symlink(".", j.join("a")).unwrap();
    symlink(".", j.join("b")).unwrap();
    symlink("/dev/zero", j.join("data.bin")).unwrap();
    symlink(tmp.path().join("outside.txt"), j.join("outside.txt")).unwrap();
    raydeploy(&dir).arg("validate").assert().success();

    // the image tag depends on where a link points, not on what is there
    let before = content_hash(&dir);
    std::fs::write(tmp.path().join("outside.txt"), "changed outside the spec's folder\n").unwrap();
    assert_eq!(content_hash(&dir), before, "content outside the job folder is not read");
    std::fs::remove_file(j.join("data.bin")).unwrap();
    symlink("/dev/null", j.join("data.bin")).unwrap();
    assert_ne!(content_hash(&dir), before, "a link's target is part of the hash");

    // On target local Ray's upload would follow them: each is a located error.
    std::fs::write(dir.join("raydeploy.yaml"), job_spec(true)).unwrap();
    raydeploy(&dir)
        .arg("validate")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("jobs[0].workingDir"))
        .stderr(predicate::str::contains("Ray's upload follows links"))
        .stderr(predicate::str::contains(format!("raydeploy.yaml:{}:", line_of(&dir, "workingDir:"))));
}

#[test]
fn job_folder_special_files_and_limits_are_located_errors() {
    let (_tmp, dir) = setup(&job_spec(false));
    let j = dir.join("jobs/j");
    std::fs::create_dir_all(&j).unwrap();
    std::fs::write(j.join("a.py"), "print(1)\n").unwrap();
    std::fs::write(j.join("b.bin"), vec![0u8; 4096]).unwrap();
    std::fs::write(j.join("c.py"), "print(3)\n").unwrap();
    let line = format!("raydeploy.yaml:{}:", line_of(&dir, "workingDir:"));
    raydeploy(&dir)
        .arg("validate")
        .env("RAYDEPLOY_MAX_JOB_FILES", "2")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("jobs[0].workingDir"))
        .stderr(predicate::str::contains("more than 2 files"))
        .stderr(predicate::str::contains("RAYDEPLOY_MAX_JOB_FILES"))
        .stderr(predicate::str::contains(line.as_str()));
    raydeploy(&dir)
        .arg("validate")
        .env("RAYDEPLOY_MAX_JOB_BYTES", "1Ki")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("more than 1 KiB"))
        .stderr(predicate::str::contains("RAYDEPLOY_MAX_JOB_BYTES"))
        .stderr(predicate::str::contains("b.bin"));
    raydeploy(&dir)
        .arg("validate")
        .env("RAYDEPLOY_MAX_JOB_BYTES", "lots")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("RAYDEPLOY_MAX_JOB_BYTES=\"lots\" is not a size"));
    raydeploy(&dir).arg("validate").assert().success();
    // a FIFO in a job folder is refused, not read
    mkfifo(&j.join("pipe"));
    raydeploy(&dir)
        .arg("validate")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("`pipe` is a FIFO"))
        .stderr(predicate::str::contains(line.as_str()));
}

// ---------------------------------------------------------------------------------------------
// commands that change nothing

#[test]
fn local_dry_run_and_status_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/local/raydeploy.yaml"))
        .unwrap()
        .replace("workingDir: ./jobs/sample\n", "");
    std::fs::write(tmp.path().join("raydeploy.yaml"), text).unwrap();
    raydeploy(tmp.path()).args(["deploy", "--dry-run"]).assert().success();
    raydeploy(tmp.path()).arg("status").assert().success();
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from("raydeploy.yaml")], "nothing but the spec");
}

#[test]
fn init_never_writes_through_a_link() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new");
    std::fs::create_dir_all(&dir).unwrap();
    let target = tmp.path().join("elsewhere.yaml");
    symlink(&target, dir.join("raydeploy.yaml")).unwrap();
    raydeploy(tmp.path()).arg("init").arg(&dir).assert().code(1).stderr(predicate::str::contains("exists"));
    assert!(!target.exists(), "a dangling link is not followed");
    raydeploy(tmp.path()).arg("init").arg(&dir).arg("--force").assert().success();
    assert!(!target.exists(), "--force replaces the link itself");
    assert!(std::fs::symlink_metadata(dir.join("raydeploy.yaml")).unwrap().is_file());
}
