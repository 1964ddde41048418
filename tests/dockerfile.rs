//! The rendered image Dockerfile, checked for every shipped spec through the real binary:
//! base tag, package steps, job folder copies, labels, final user. The real `docker build` of a
//! rendered file lives in `tests/dockerfile_build.rs`.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

#[path = "support/specs.rs"]
mod shipped;

use shipped::{SUBSCRIPTION, copy_tree, root};

fn raydeploy() -> Command {
    let mut c = Command::cargo_bin("raydeploy").expect("binary");
    c.env("AZURE_SUBSCRIPTION_ID", SUBSCRIPTION);
    c
}

fn with_env(c: &mut Command, spec: &Path, env: Option<&str>) {
    c.arg(spec);
    if let Some(e) = env {
        c.args(["-e", e]);
    }
}

/// The resolved deployment as `explain --output json` prints it.
fn deployment(spec: &Path, env: Option<&str>) -> Value {
    let mut c = raydeploy();
    c.arg("explain");
    with_env(&mut c, spec, env);
    c.args(["--output", "json"]);
    let out = c.output().expect("run explain");
    assert!(out.status.success(), "explain {spec:?} {env:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("explain json")
}

/// Renders into a fresh folder and returns the Dockerfile text.
fn render_dockerfile(spec: &Path, env: Option<&str>) -> String {
    let out = tempfile::tempdir().expect("tempdir");
    let mut c = raydeploy();
    c.arg("render");
    with_env(&mut c, spec, env);
    c.arg("--out").arg(out.path());
    let res = c.output().expect("run render");
    assert!(res.status.success(), "render {spec:?} {env:?}: {}", String::from_utf8_lossy(&res.stderr));
    std::fs::read_to_string(out.path().join("image/Dockerfile")).expect("image/Dockerfile")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().map(|s| s.as_str().expect("string").to_string()).collect()
}

/// POSIX single-quote, the same rule the `sh` filter documents.
fn sh(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.,:/=+@!~".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Instructions of a Dockerfile: comments dropped, continuation lines joined.
fn instructions(text: &str) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            continue;
        }
        cur.push_str(t);
        out.push(std::mem::take(&mut cur));
    }
    assert!(cur.is_empty(), "dangling continuation: {cur}");
    out
}

fn check(spec: &Path, env: Option<&str>) {
    let what = format!("{} {env:?}", spec.display());
    let d = deployment(spec, env);
    let img = &d["image"];
    let text = render_dockerfile(spec, env);
    assert!(text.ends_with('\n') && !text.ends_with("\n\n"), "{what}: one final newline");
    assert!(!text.contains("\n\n\n"), "{what}: no runs of blank lines\n{text}");
    assert_eq!(text, render_dockerfile(spec, env), "{what}: deterministic");

    let base_tag = img["base_tag"].as_str().unwrap();
    let gpu_tag = img["base_tag_gpu"].as_str().unwrap();
    assert_eq!(gpu_tag, format!("{base_tag}-gpu"));
    let header: Vec<&str> = text.lines().take_while(|l| l.starts_with('#')).collect();
    assert!(
        header.iter().any(|l| l.contains(&format!("--build-arg BASE_TAG={gpu_tag}"))),
        "{what}: GPU build documented\n{text}"
    );

    let ins = instructions(&text);
    assert_eq!(ins[0], format!("ARG BASE_TAG={base_tag}"), "{what}");
    assert_eq!(ins[1], format!("FROM {}:${{BASE_TAG}}", img["base"].as_str().unwrap()), "{what}");
    assert_eq!(ins.iter().filter(|i| i.starts_with("FROM ")).count(), 1, "{what}: single stage");

    let apt = strings(&img["apt_packages"]);
    let apt_runs: Vec<&String> = ins.iter().filter(|i| i.contains("apt-get")).collect();
    if apt.is_empty() {
        assert!(apt_runs.is_empty(), "{what}: no apt step without packages");
        assert!(!ins.contains(&"USER root".to_string()), "{what}: stays non-root");
    } else {
        let want = format!(
            "RUN apt-get update && apt-get install -y --no-install-recommends {} && rm -rf /var/lib/apt/lists/*",
            apt.iter().map(|p| sh(p)).collect::<Vec<_>>().join(" ")
        );
        assert_eq!(apt_runs, vec![&want], "{what}");
        let at = ins.iter().position(|i| *i == want).unwrap();
        assert_eq!(ins[at - 1], "USER root", "{what}: apt runs as root");
        assert_eq!(ins[at + 1], "USER ray", "{what}: back to ray after apt");
    }

    let pip = strings(&img["pip_packages"]);
    let pip_runs: Vec<&String> = ins.iter().filter(|i| i.contains("pip install")).collect();
    if pip.is_empty() {
        assert!(pip_runs.is_empty(), "{what}: no pip step without packages");
    } else {
        let want =
            format!("RUN pip install --no-cache-dir {}", pip.iter().map(|p| sh(p)).collect::<Vec<_>>().join(" "));
        assert_eq!(pip_runs, vec![&want], "{what}");
        let user_before =
            ins[..ins.iter().position(|i| *i == want).unwrap()].iter().rev().find(|i| i.starts_with("USER "));
        assert!(user_before.is_none_or(|u| u == "USER ray"), "{what}: pip runs as ray");
    }

    let copies: Vec<&String> = ins.iter().filter(|i| i.starts_with("COPY ")).collect();
    let dirs = img["job_dirs"].as_array().unwrap();
    assert_eq!(copies.len(), dirs.len(), "{what}: one COPY per job folder");
    for (c, jd) in copies.iter().zip(dirs) {
        let want = format!("COPY --chown=ray:users [{}, {}]", jd[0], jd[1]);
        assert_eq!(**c, want, "{what}");
        assert!(spec.parent().unwrap().join(jd[0].as_str().unwrap()).is_dir(), "{what}: COPY source is in the context");
    }

    // Layer order: apt, then pip (the most expensive), then the job folders, so that an edit of a
    // job's code rebuilds only the layers from its COPY on.
    let first = |p: &dyn Fn(&String) -> bool| ins.iter().position(p);
    let apt_at = first(&|i| i.contains("apt-get"));
    let pip_at = first(&|i| i.contains("pip install"));
    let copy_at = first(&|i| i.starts_with("COPY "));
    if let (Some(a), Some(p)) = (apt_at, pip_at) {
        assert!(a < p, "{what}: apt before pip\n{text}");
    }
    if let Some(c) = copy_at {
        for (step, at) in [("apt", apt_at), ("pip", pip_at)] {
            assert!(at.is_none_or(|at| at < c), "{what}: {step} before any COPY of a job folder\n{text}");
        }
        assert!(
            ins[c..].iter().all(|i| !i.starts_with("RUN ")),
            "{what}: nothing runs after the job folders are copied\n{text}"
        );
    }

    let label = ins.iter().find(|i| i.starts_with("LABEL ")).unwrap_or_else(|| panic!("{what}: LABEL\n{text}"));
    for (k, v) in [
        ("raydeploy.io/content-hash", &img["content_hash"]),
        ("raydeploy.io/ray-version", &img["ray_version"]),
        ("raydeploy.io/deployment", &d["name"]),
        ("org.opencontainers.image.title", &d["name"]),
        ("org.opencontainers.image.revision", &img["content_hash"]),
    ] {
        assert!(label.contains(&format!("{k}={v}")), "{what}: label {k}={v} in {label}");
    }
    assert!(!label.contains("spec-hash"), "{what}: only content goes into the image");

    let users: Vec<&String> = ins.iter().filter(|i| i.starts_with("USER ")).collect();
    assert_eq!(users.last().map(|s| s.as_str()), Some("USER ray"), "{what}: final user");
    assert_eq!(ins.last().map(|s| s.as_str()), Some("WORKDIR /home/ray"), "{what}");
}

#[test]
fn every_spec_renders_a_well_formed_dockerfile() {
    for (spec, env) in shipped::specs(&["aks", "kubernetes"]) {
        check(&spec, env);
    }
}

#[test]
fn environments_share_the_base_but_not_the_deployment_label() {
    let spec = root().join("raydeploy.yaml");
    let dev = render_dockerfile(&spec, Some("dev"));
    let prod = render_dockerfile(&spec, Some("prod"));
    assert_ne!(dev, prod, "the deployment label differs per environment");
    let from = |t: &str| {
        t.lines().filter(|l| l.starts_with("ARG ") || l.starts_with("FROM ")).map(String::from).collect::<Vec<_>>()
    };
    assert_eq!(from(&dev), from(&prod));
}

/// A copy of an example, with `image:` replaced, in a fresh folder.
fn spec_with_image(example: &str, image_yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&root().join("examples").join(example), dir.path());
    let path = dir.path().join("raydeploy.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("\nimage:\n").expect("image block") + 1;
    let end = start + text[start..].find("\n\n").expect("end of image block");
    std::fs::write(&path, format!("{}{}{}", &text[..start], image_yaml.trim_end(), &text[end..])).unwrap();
    dir
}

#[test]
fn hostile_package_strings_are_quoted() {
    let dir = spec_with_image(
        "pytorch-mnist-aks",
        r#"image:
  rayVersion: "2.52.0"
  python: "3.11"
  aptPackages: [curl, "libfoo+dev=1.2-3~b1"]
  pipPackages: ["xgboost==2.1.1", 'pkg>=1.0; python_version<"3.12"', "it's", "$HOME", "a b", "x\\y"]
"#,
    );
    check(&dir.path().join("raydeploy.yaml"), None);
    let text = render_dockerfile(&dir.path().join("raydeploy.yaml"), None);
    assert!(text.contains(r#" 'pkg>=1.0; python_version<"3.12"' "#), "{text}");
    assert!(text.contains(r#" 'it'\''s' '$HOME' 'a b' 'x\y'"#), "{text}");
    assert!(text.contains(" curl libfoo+dev=1.2-3~b1 ") || text.contains(" curl 'libfoo+dev=1.2-3~b1' "), "{text}");
}

#[test]
fn a_line_break_in_a_package_is_refused() {
    let dir = spec_with_image(
        "pytorch-mnist-aks",
        "image:\n  rayVersion: \"2.52.0\"\n  python: \"3.11\"\n  pipPackages: [\"ok==1\", \"evil\\nRUN id\"]\n",
    );
    let out = tempfile::tempdir().unwrap();
    raydeploy()
        .arg("render")
        .arg(dir.path().join("raydeploy.yaml"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .failure()
        .stderr(predicates::str::contains("pipPackages[1]"));
    assert!(!out.path().join("image/Dockerfile").exists());
}

#[test]
fn a_user_dockerfile_is_passed_through_unchanged() {
    let dir = spec_with_image(
        "pytorch-mnist-aks",
        "image:\n  rayVersion: \"2.52.0\"\n  python: \"3.11\"\n  dockerfile: docker/Custom.Dockerfile\n",
    );
    let own =
        "# my own image\nFROM rayproject/ray:2.52.0-py311\nRUN echo \"{{ not a template }}\" \\\n  && true\nUSER ray";
    std::fs::create_dir_all(dir.path().join("docker")).unwrap();
    std::fs::write(dir.path().join("docker/Custom.Dockerfile"), own).unwrap();
    assert_eq!(render_dockerfile(&dir.path().join("raydeploy.yaml"), None), own);
}

#[test]
fn a_templates_folder_overrides_the_dockerfile_template() {
    let dir = spec_with_image("pytorch-mnist-aks", "image:\n  rayVersion: \"2.52.0\"\n  python: \"3.11\"\n");
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    std::fs::write(
        dir.path().join("templates/Dockerfile.tera"),
        "FROM {{ image.base }}:{{ image.base_tag }}\nLABEL x={{ name | docker_json }}",
    )
    .unwrap();
    assert_eq!(
        render_dockerfile(&dir.path().join("raydeploy.yaml"), None),
        "FROM rayproject/ray:2.52.0-py311\nLABEL x=\"mnist\"\n"
    );
}

/// The image's content hash (its tag) leaves out what the build context leaves out: caches,
/// `.git`, the state folder, a folder `raydeploy render` wrote. Editing the job's code changes it.
#[test]
fn the_content_hash_ignores_what_the_dockerignore_ignores() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&root().join("examples/pytorch-mnist-aks"), dir.path());
    let spec = dir.path().join("raydeploy.yaml");
    let hash = || deployment(&spec, None)["image"]["content_hash"].as_str().unwrap().to_string();
    let job = dir.path().join("jobs/mnist");
    std::fs::create_dir_all(job.join("sub")).unwrap();
    std::fs::write(job.join("sub/code.py"), "print(0)\n").unwrap();
    let before = hash();
    let ignored =
        std::fs::read_to_string(root().join("tests/snapshots/golden__pytorch-mnist-aks__image__.dockerignore.snap"))
            .expect("the .dockerignore golden");
    // (file, the .dockerignore line that leaves it out; none for a rendered folder, left out by
    // its record file)
    for (path, pattern) in [
        ("__pycache__/train.cpython-311.pyc", Some("**/__pycache__")),
        ("sub/__pycache__/x.cpython-311.pyc", Some("**/__pycache__")),
        ("stale.pyc", Some("**/*.pyc")),
        (".git/HEAD", Some("**/.git")),
        (".pytest_cache/v/cache/lastfailed", Some("**/.pytest_cache")),
        (".ipynb_checkpoints/nb-checkpoint.ipynb", Some("**/.ipynb_checkpoints")),
        (".DS_Store", Some("**/.DS_Store")),
        ("rendered/.raydeploy-render.json", Some("**/.raydeploy-render.json")),
        ("rendered/image/Dockerfile", None),
        (".raydeploy/x/state.json", Some("**/.raydeploy")),
    ] {
        let p = job.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "x\n").unwrap();
        assert_eq!(hash(), before, "{path} is not part of the image");
        if let Some(pattern) = pattern {
            assert!(ignored.lines().any(|l| l == pattern), "{path}: the .dockerignore lists {pattern}:\n{ignored}");
        }
    }
    std::fs::write(job.join("sub/code.py"), "print(1)\n").unwrap();
    assert_ne!(hash(), before, "a one-line change of the job's code changes the tag");
}
