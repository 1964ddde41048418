//! The image phases for real: a private Docker engine and a private registry on 127.0.0.1
//! (`tests/support/docker_env.rs`), a busybox stand-in for the Ray base image inside that engine
//! (nothing is pulled), and a target-kubernetes spec whose `kubernetes.registry` is the private
//! registry, with a GPU group (so a GPU image too) and a job folder copied into the image.
//!
//! The phases image-build and image-push run through the library's executor (the rest of the
//! deploy graph needs a cluster); the registry is read over its HTTP API, independently of
//! docker, to check the recorded digests. Checked: the first run builds and pushes both images
//! and records the registry's digests; the next run skips both phases; a fresh state folder with
//! an empty engine (a fresh checkout on another machine) skips both again from the registry alone
//! and builds nothing; a tag missing from the registry is pushed again from the local engine
//! without a rebuild; a changed `pipPackages` changes the tag and builds and pushes anew.
//!
//! Needs root (dockerd) and docker.io, busybox-static and docker-registry (installed with apt-get
//! when missing). Run alone with `cargo test --test deploy_image`: about 30 s with a warm cargo
//! cache (engine start, four small builds, pushes).

#[path = "support/docker_env.rs"]
mod docker_env;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use docker_env::DockerEnv;
use raydeploy::deploy::Session;
use raydeploy::deploy::kube::Kube;
use raydeploy::plan::{self, Graph};
use raydeploy::run::exec::{self, Outcome, Report};
use raydeploy::run::progress::{Collect, Event, Style};

/// The repository path inside the registry.
const REPO: &str = "acme/ray-imgtest";

fn spec_text(registry: &str, pip: &str) -> String {
    format!(
        r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: imgtest
target: kubernetes

kubernetes:
  registry: {registry}/{REPO}

image:
  rayVersion: "2.52.0"
  python: "3.12"
  pipPackages: ["{pip}"]

cluster:
  head: {{ cpu: 1, memory: 2Gi }}
  workerGroups:
    - name: cpu
      cpu: 1
      memory: 2Gi
      replicas: 1
    - name: gpu
      cpu: 1
      memory: 4Gi
      gpus: 1
      replicas: 0
      minReplicas: 0
      maxReplicas: 1
  autoscaler: {{ enabled: true }}

jobs:
  - name: hello
    entrypoint: python hello.py
    workingDir: ./jobs/hello
"#
    )
}

/// A spec folder: the spec, the job folder, and a large file the image must not receive.
fn write_spec(dir: &Path, registry: &str, pip: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("jobs/hello")).unwrap();
    std::fs::write(dir.join("jobs/hello/hello.py"), "print('hello from the image')\n").unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/big.bin"), vec![7u8; 4 << 20]).unwrap();
    let spec = dir.join("raydeploy.yaml");
    std::fs::write(&spec, spec_text(registry, pip)).unwrap();
    spec
}

/// A session of `spec` whose progress events are collected.
fn session(spec: &Path) -> (Session, Arc<Collect>) {
    let loaded = raydeploy::spec::load(spec, None, &|_: &str| None).unwrap_or_else(|r| panic!("{}", r.short()));
    let d = raydeploy::model::build(&loaded, None).unwrap_or_else(|p| panic!("{}", loaded.report(p).short()));
    let rendered = raydeploy::render::render(&d).expect("render");
    let mut s = Session::new(d, rendered, Style::Plain);
    let events = Arc::new(Collect::default());
    s.reporter = events.clone();
    (s, events)
}

/// The deploy graph cut down to the image phases (preflight belongs to the whole deploy).
fn image_graph(s: &Session) -> Graph {
    let mut g = plan::graph(&s.d, &s.rendered, plan::Options::default());
    g.phases.retain(|p| p.id == "image-build" || p.id == "image-push");
    for p in &mut g.phases {
        p.deps.retain(|d| *d == "image-build");
    }
    assert_eq!(g.phases.len(), 2, "the kubernetes graph has image-build and image-push");
    g
}

/// A run of the image phases: the report and each phase's recorded outputs.
fn run(s: &Session) -> (Report, BTreeMap<String, BTreeMap<String, String>>) {
    let g = image_graph(s);
    let kube = Kube::new(s).unwrap();
    let store = s.store().unwrap();
    let report = exec::execute(&g, &kube, &store, &s.env());
    if !report.ok() {
        let log = |p: &str| std::fs::read_to_string(s.dir.join("logs").join(format!("{p}.log"))).unwrap_or_default();
        panic!(
            "image phases failed: {:?}\nimage-build log:\n{}\nimage-push log:\n{}",
            report.first_error(),
            log("image-build"),
            log("image-push")
        );
    }
    let outputs = ["image-build", "image-push"]
        .iter()
        .map(|p| (p.to_string(), store.phase(p).expect("recorded").outputs))
        .collect();
    (report, outputs)
}

/// The info messages the phases printed.
fn infos(events: &Collect) -> Vec<String> {
    events
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Info { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn image_phases_build_push_pin_and_skip_from_the_registry() {
    let env = DockerEnv::start();
    // Every docker command raydeploy runs inherits DOCKER_HOST: the private engine. This is the
    // only test of this binary, so no other thread reads the environment meanwhile.
    unsafe { std::env::set_var("DOCKER_HOST", &env.engine.host) };
    let reg = &env.registry;

    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), &reg.addr, "pandas==2.2.3");
    let (s, _) = session(&spec);
    let img = &s.d.image;
    env.engine.build_base(&img.base, &img.base_tag);
    env.engine.build_base(&img.base, &img.base_tag_gpu);
    let cpu = img.cpu.clone().unwrap();
    let gpu = img.gpu.clone().expect("a GPU group gives a GPU image");
    assert_eq!(cpu.repository, format!("{}/{REPO}", reg.addr));
    assert!(reg.tags(REPO).is_empty());

    // First deploy: build both, push both, record the registry's digests.
    let (report, out) = run(&s);
    assert_eq!(report.with(Outcome::Ran), vec!["image-build", "image-push"]);
    let cpu_digest = reg.digest(REPO, &cpu.tag).expect("CPU tag pushed");
    let gpu_digest = reg.digest(REPO, &gpu.tag).expect("GPU tag pushed");
    assert_ne!(cpu_digest, gpu_digest);
    assert_eq!(out["image-build"]["cpu_ref"], cpu.reference());
    assert_eq!(out["image-build"]["gpu_ref"], gpu.reference());
    let push = &out["image-push"];
    assert_eq!(push["cpu_image"], format!("{}@{cpu_digest}", cpu.reference()));
    assert_eq!(push["gpu_image"], format!("{}@{gpu_digest}", gpu.reference()));
    assert_eq!(push["registry"], reg.addr);
    assert_eq!(reg.tags(REPO), {
        let mut t = vec![cpu.tag.clone(), gpu.tag.clone()];
        t.sort();
        t
    });

    // The images are the rendered Dockerfile over the right base, with the job folder.
    let cpu_ref = cpu.reference();
    let gpu_ref = gpu.reference();
    assert_eq!(env.engine.exec(&cpu_ref, &["cat", "/etc/base-tag"]).trim(), img.base_tag);
    assert_eq!(env.engine.exec(&gpu_ref, &["cat", "/etc/base-tag"]).trim(), img.base_tag_gpu);
    for r in [&cpu_ref, &gpu_ref] {
        assert_eq!(
            env.engine.exec(r, &["cat", "/home/ray/jobs/hello/hello.py"]),
            "print('hello from the image')\n",
            "{r}: job folder copied"
        );
        assert_eq!(
            env.engine.recorded(r, "pip"),
            vec![vec!["install".to_string(), "--no-cache-dir".into(), "pandas==2.2.3".into()]]
        );
    }
    // Only the job folders are staged as the build context: not the data next to the spec.
    let staged = s.dir.join("build-context");
    assert!(staged.join("jobs/hello/hello.py").is_file());
    assert!(!staged.join("data").exists() && !staged.join("raydeploy.yaml").exists());

    // Second deploy, same state: nothing to build or push, same outputs.
    let (report, again) = run(&s);
    assert_eq!(report.with(Outcome::Skipped), vec!["image-build", "image-push"]);
    assert_eq!(again, out);

    // The GPU tag vanishes from the registry while the engine has both images: the build is
    // skipped (the engine has the tags) and only the GPU image is pushed again.
    reg.delete(REPO, &gpu.tag);
    assert_eq!(reg.digest(REPO, &gpu.tag), None);
    let (s, events) = session(&spec);
    let (report, repushed) = run(&s);
    assert_eq!(report.with(Outcome::Skipped), vec!["image-build"]);
    assert_eq!(report.with(Outcome::Ran), vec!["image-push"]);
    assert_eq!(reg.digest(REPO, &gpu.tag).as_deref(), Some(gpu_digest.as_str()), "same content, same digest");
    assert_eq!(repushed["image-push"], out["image-push"]);
    let messages = infos(&events);
    assert!(messages.iter().any(|m| m.contains(&cpu.tag) && m.contains("not pushed again")), "{messages:?}");

    // A fresh checkout on another machine: no state folder, an engine without the images. The
    // registry alone says both tags exist: no build, no push, the same pinned digests.
    std::fs::remove_dir_all(dir.path().join(".raydeploy")).unwrap();
    env.engine.remove_image(&cpu_ref);
    env.engine.remove_image(&gpu_ref);
    let (fresh, events) = session(&spec);
    let (report, from_registry) = run(&fresh);
    assert_eq!(report.with(Outcome::Skipped), vec!["image-build", "image-push"]);
    assert_eq!(from_registry["image-push"], out["image-push"]);
    assert!(!env.engine.has_image(&cpu_ref) && !env.engine.has_image(&gpu_ref), "nothing was built or pulled");
    let messages = infos(&events);
    assert!(messages.iter().any(|m| m.contains("already in") && m.contains(&reg.addr)), "{messages:?}");

    // A changed pipPackages is a new content hash: a new tag, built and pushed.
    let spec = write_spec(dir.path(), &reg.addr, "pandas==2.2.2");
    let (s2, _) = session(&spec);
    let cpu2 = s2.d.image.cpu.clone().unwrap();
    assert_ne!(cpu2.tag, cpu.tag, "the tag follows the image content");
    let (report, changed) = run(&s2);
    assert_eq!(report.with(Outcome::Ran), vec!["image-build", "image-push"]);
    let cpu2_digest = reg.digest(REPO, &cpu2.tag).expect("new CPU tag pushed");
    assert_eq!(changed["image-push"]["cpu_image"], format!("{}@{cpu2_digest}", cpu2.reference()));
    assert_eq!(
        env.engine.recorded(&cpu2.reference(), "pip"),
        vec![vec!["install".to_string(), "--no-cache-dir".into(), "pandas==2.2.2".into()]]
    );
    assert!(reg.digest(REPO, &cpu.tag).is_some(), "the previous tag stays in the registry");
    drop(env);
}
