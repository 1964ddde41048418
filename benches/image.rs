//! Image build benchmark on a real Docker engine (a private dockerd started like the tests do,
//! `tests/support/docker_env.rs`; needs root): the time of the first build of the Ray image with
//! a few pip packages, against a rebuild after a one-line change in a job's code (goal ≤ 0.2: the
//! apt and pip layers come before the job folders, so only the job's layer is built again), and
//! the size of the build context with the rendered `.dockerignore` against the job folder as it
//! is.
//!
//! The Ray base image is a stand-in built inside the engine from this machine's Python
//! (`python3`'s installation, its shared libraries and busybox): `pip install` really installs
//! the packages, from the wheels in `$RAYDEPLOY_TEST_WHEELS` (default `~/.cache/raydeploy/wheels`,
//! which `bash .ci/run` downloads) copied into the base image, with no index. Nothing is pulled.
//!
//! `cargo bench --bench image` (a few minutes: the base image copies the Python installation).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[path = "../tests/support/docker_env.rs"]
mod docker_env;

use raydeploy::context::Context as Session;
use raydeploy::run::exec::{self, Outcome};
use raydeploy::run::progress::Style;
use raydeploy::targets::kube::Kube;

/// Packages of the bench's image (all in the wheel cache, with their dependencies).
const PIP: &[&str] = &["requests", "pyyaml", "pydantic", "aiohttp", "grpcio", "protobuf"];

fn spec(registry: &str) -> String {
    format!(
        r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: imgbench
target: kubernetes
kubernetes:
  registry: {registry}/bench/ray
image:
  rayVersion: "2.52.0"
  python: "3.11"
  pipPackages: [{}]
cluster:
  head: {{ cpu: 1, memory: 2Gi }}
  workerGroups:
    - {{ name: cpu, cpu: 1, memory: 2Gi, replicas: 1 }}
jobs:
  - name: train
    entrypoint: python train.py
    workingDir: ./app
"#,
        PIP.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ")
    )
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The shared libraries `files` load (as `ldd` reports them).
fn libraries(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for f in files {
        let Ok(o) = Command::new("ldd").arg(f).output() else { continue };
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next().unwrap_or(""),
                None => line.split_whitespace().next().unwrap_or(""),
            };
            if path.starts_with('/') {
                out.insert(PathBuf::from(path));
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        let ty = e.file_type().unwrap();
        if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if ty.is_dir() {
            copy_dir(&src, &dst, skip);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// `rayproject/ray:<tag>` stand-in: busybox, this machine's Python under /home/ray/python
/// (owned by `ray`, as in Ray's images), pip, and the wheel cache as the only package source.
fn build_python_base(engine: &docker_env::Engine, tag: &str, wheels: &Path) {
    let prefix = PathBuf::from(run(Command::new("python3").args(["-c", "import sys; print(sys.base_prefix)"])).trim());
    let version = run(Command::new("python3").args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]));
    let version = version.trim();
    let ctx = tempfile::tempdir().unwrap();
    let root = ctx.path().join("root");
    for d in ["bin", "etc", "tmp", "home/ray", "usr/lib", "wheels"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).is_file()).expect("busybox");
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nray:x:1000:100::/home/ray:/bin/sh\n")
        .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nusers:x:100:ray\n").unwrap();
    let py = root.join("home/ray/python");
    std::fs::create_dir_all(py.join("bin")).unwrap();
    std::fs::copy(prefix.join(format!("bin/python{version}")), py.join(format!("bin/python{version}"))).unwrap();
    std::os::unix::fs::symlink(format!("python{version}"), py.join("bin/python3")).unwrap();
    std::os::unix::fs::symlink(format!("python{version}"), py.join("bin/python")).unwrap();
    let stdlib = format!("lib/python{version}");
    copy_dir(&prefix.join(&stdlib), &py.join(&stdlib), &["site-packages", "test", "idlelib", "tkinter", "__pycache__"]);
    std::fs::create_dir_all(py.join(&stdlib).join("site-packages")).unwrap();
    let mut binaries = vec![prefix.join(format!("bin/python{version}"))];
    for e in std::fs::read_dir(prefix.join(&stdlib).join("lib-dynload")).unwrap().flatten() {
        if !e.file_name().to_string_lossy().contains("tkinter") {
            binaries.push(e.path());
        }
    }
    for lib in libraries(&binaries) {
        // Loader paths as the binaries name them; the rest where the loader looks.
        let dst = if lib.starts_with("/lib64") || lib.starts_with("/lib/x86_64-linux-gnu") {
            root.join(lib.strip_prefix("/").unwrap())
        } else {
            root.join("usr/lib").join(lib.file_name().unwrap())
        };
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&lib, &dst).unwrap();
    }
    for e in std::fs::read_dir(wheels).expect("the wheel cache").flatten() {
        std::fs::copy(e.path(), root.join("wheels").join(e.file_name())).unwrap();
    }
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\n\
         COPY root/ /\n\
         ENV PATH=/home/ray/python/bin:/usr/local/bin:/usr/bin:/bin PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels \
             PIP_DISABLE_PIP_VERSION_CHECK=1\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         RUN chown -R ray:users /home/ray && chmod 1777 /tmp\n\
         USER ray\n\
         RUN python3 -m ensurepip --default-pip >/dev/null && pip --version\n\
         WORKDIR /home/ray\n",
    )
    .unwrap();
    engine.run(&["build", "--pull=false", "--network=none", "-t", tag, "."], Some(ctx.path()));
}

fn du(path: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(path) else { return 0 };
    if m.is_dir() { std::fs::read_dir(path).unwrap().flatten().map(|e| du(&e.path())).sum() } else { m.len() }
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1 << 20) as f64)
}

/// The job folder: code, and what the image never receives.
fn write_app(dir: &Path) {
    let app = dir.join("app");
    std::fs::create_dir_all(app.join("lib")).unwrap();
    std::fs::write(app.join("train.py"), "import lib.model\n\nprint('epoch', 1)\n").unwrap();
    for i in 0..20 {
        std::fs::write(app.join(format!("lib/mod{i}.py")), format!("VALUE = {i}\n").repeat(200)).unwrap();
    }
    std::fs::write(app.join("lib/model.py"), "def fit():\n    return 1\n").unwrap();
    // A repository with history, bytecode caches, a rendered folder: 40 MiB the image must not get.
    std::fs::create_dir_all(app.join(".git/objects/pack")).unwrap();
    std::fs::write(app.join(".git/objects/pack/pack-1.pack"), vec![1u8; 32 << 20]).unwrap();
    std::fs::write(app.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    for d in ["__pycache__", "lib/__pycache__"] {
        std::fs::create_dir_all(app.join(d)).unwrap();
        for i in 0..20 {
            std::fs::write(app.join(d).join(format!("m{i}.cpython-311.pyc")), vec![2u8; 64 << 10]).unwrap();
        }
    }
    std::fs::create_dir_all(app.join("rendered/image")).unwrap();
    std::fs::write(app.join("rendered/.raydeploy-render.json"), "{}").unwrap();
    std::fs::write(app.join("rendered/image/big.tar"), vec![3u8; 6 << 20]).unwrap();
}

fn session(spec: &Path) -> Session {
    let loaded = raydeploy::spec::load(spec, None, &|_: &str| None).unwrap_or_else(|r| panic!("{}", r.short()));
    let d = raydeploy::model::build(&loaded, None).unwrap_or_else(|p| panic!("{}", loaded.report(p).short()));
    let rendered = raydeploy::render::render(&d).expect("render");
    let mut s = Session::new(d, rendered, Style::Plain);
    s.reporter = std::sync::Arc::new(raydeploy::run::progress::Collect::default());
    s
}

/// Runs the image-build phase alone: seconds.
fn build(spec: &Path) -> (f64, Session) {
    let s = session(spec);
    let mut g = raydeploy::graph::graph(&s.d, &s.rendered, Default::default());
    g.phases.retain(|p| p.id == "image-build");
    g.phases[0].deps.clear();
    let kube = Kube::new(&s).unwrap();
    let store = s.store().unwrap();
    let t = Instant::now();
    let report = exec::execute(&g, &kube, &store, &s.env());
    let seconds = t.elapsed().as_secs_f64();
    assert_eq!(report.with(Outcome::Ran), vec!["image-build"], "{:?}", report.first_error());
    (seconds, s)
}

/// The context size the engine reported (`Sending build context to Docker daemon  4.61kB`).
fn sent_context(s: &Session) -> String {
    let log = std::fs::read_to_string(s.dir.join("logs/image-build.log")).unwrap_or_default();
    log.lines()
        .filter_map(|l| l.split_once("Sending build context to Docker daemon").map(|(_, v)| v.trim().to_string()))
        .next_back()
        .unwrap_or_else(|| "?".into())
}

fn main() {
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"image".contains(a.as_str())) {
        return;
    }
    let wheels = std::env::var_os("RAYDEPLOY_TEST_WHEELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/raydeploy/wheels"));
    let docker = docker_env::DockerEnv::start();
    // SAFETY: set before any thread starts; every docker command of raydeploy inherits it.
    unsafe { std::env::set_var("DOCKER_HOST", &docker.engine.host) };

    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("raydeploy.yaml");
    std::fs::write(&spec_path, spec(&docker.registry.addr)).unwrap();
    write_app(dir.path());
    let s = session(&spec_path);
    let t = Instant::now();
    build_python_base(&docker.engine, &format!("{}:{}", s.d.image.base, s.d.image.base_tag), &wheels);
    println!(
        "image benchmark (real engine, classic builder; base image from this machine's Python in {:.1}s)",
        t.elapsed().as_secs_f64()
    );

    let (first, s1) = build(&spec_path);
    let pip = run(docker.engine.docker().args([
        "run",
        "--rm",
        "--network=none",
        &s1.d.image.cpu.as_ref().unwrap().reference(),
        "pip",
        "list",
        "--format=freeze",
    ]));
    println!(
        "first build, pip packages {:?} ({} installed from the wheel cache): {first:.2}s",
        PIP,
        pip.lines().count()
    );

    // One line of the job's code.
    let train = dir.path().join("app/train.py");
    std::fs::write(&train, std::fs::read_to_string(&train).unwrap().replace("'epoch', 1", "'epoch', 2")).unwrap();
    let (rebuild, s2) = build(&spec_path);
    assert_ne!(s1.d.image.content_hash, s2.d.image.content_hash, "the code change is a new tag");
    let out = run(docker.engine.docker().args([
        "run",
        "--rm",
        "--network=none",
        &s2.d.image.cpu.as_ref().unwrap().reference(),
        "cat",
        "/home/ray/jobs/train/train.py",
    ]));
    assert!(out.contains("'epoch', 2"), "{out}");
    println!(
        "rebuild after a one-line change in the job's code: {rebuild:.2}s = {:.3} of the first build (goal ≤ 0.2)",
        rebuild / first
    );

    let raw = du(&dir.path().join("app"));
    let staged = du(&s2.dir.join("build-context"));
    println!(
        "build context: {} with .dockerignore (the engine was sent {}), {} without (the job folder as it is) = {:.4} of it",
        mib(staged),
        sent_context(&s2),
        mib(raw),
        staged as f64 / raw as f64
    );
    println!(
        "summary: rebuild/first {:.3} (goal ≤ 0.2) | context with/without .dockerignore {} / {}",
        rebuild / first,
        mib(staged),
        mib(raw)
    );
}
