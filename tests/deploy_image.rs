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
//! On AKS (fake terraform and az from tests/fakes, real docker): the image goes to the registry
//! infra reports, after `az acr login`, and a fresh checkout skips build and push. That the
//! ray-cluster release and its pods run the image pinned to the digest image-push records is
//! tested on the Kubernetes test bed (tests/deploy_testbed.rs).
//!
//! Needs root (dockerd) and docker.io, busybox-static and docker-registry (installed with apt-get
//! when missing). Run alone with `cargo test --test deploy_image`: about 30 s with a warm cargo
//! cache (three engine starts, small builds and pushes; the tests take turns).

#[path = "support/docker_env.rs"]
mod docker_env;
#[path = "support/kube_env.rs"]
mod kube_env;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use docker_env::DockerEnv;
use kube_env::KubeEnv;
use raydeploy::context::Context;
use raydeploy::graph::{self, Graph};
use raydeploy::run::exec::{self, Outcome, Report};
use raydeploy::run::progress::{Collect, Event, Style};
use raydeploy::targets::kube::Kube;

/// The repository path inside the registry.
const REPO: &str = "acme/ray-imgtest";

/// The phases run in this process and their commands inherit its environment, and the test
/// support looks programs up on its PATH: each test holds this lock from start to end.
static ENV_LOCK: Mutex<()> = Mutex::new(());

fn env_lock() -> MutexGuard<'static, ()> {
    ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Variables of this process, set until dropped (then restored); only under [`ENV_LOCK`].
struct EnvVars {
    saved: Vec<(String, Option<std::ffi::OsString>)>,
}

impl EnvVars {
    fn set<'a>(_lock: &MutexGuard<'static, ()>, vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut saved = vec![];
        for (k, v) in vars {
            saved.push((k.to_string(), std::env::var_os(k)));
            // SAFETY: the caller holds ENV_LOCK, which every test of this binary holds.
            unsafe { std::env::set_var(k, v) };
        }
        EnvVars { saved }
    }
}

impl Drop for EnvVars {
    fn drop(&mut self) {
        for (k, v) in self.saved.drain(..).rev() {
            // SAFETY: the lock passed to `set` outlives this value.
            unsafe {
                match v {
                    Some(v) => std::env::set_var(&k, v),
                    None => std::env::remove_var(&k),
                }
            }
        }
    }
}

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
    // What the image never receives (.dockerignore): bytecode and a repository.
    std::fs::create_dir_all(dir.join("jobs/hello/__pycache__")).unwrap();
    std::fs::write(dir.join("jobs/hello/__pycache__/hello.cpython-312.pyc"), "bytecode").unwrap();
    std::fs::create_dir_all(dir.join("jobs/hello/.git")).unwrap();
    std::fs::write(dir.join("jobs/hello/.git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/big.bin"), vec![7u8; 4 << 20]).unwrap();
    let spec = dir.join("raydeploy.yaml");
    std::fs::write(&spec, spec_text(registry, pip)).unwrap();
    spec
}

/// A session of `spec` whose progress events are collected.
fn session(spec: &Path) -> (Context, Arc<Collect>) {
    let loaded = raydeploy::spec::load(spec, None, &|_: &str| None).unwrap_or_else(|r| panic!("{}", r.short()));
    let d = raydeploy::model::build(&loaded, None).unwrap_or_else(|p| panic!("{}", loaded.report(p).short()));
    let rendered = raydeploy::render::render(&d).expect("render");
    let mut s = Context::new(d, rendered, Style::Plain);
    let events = Arc::new(Collect::default());
    s.reporter = events.clone();
    (s, events)
}

/// The deploy graph cut down to `phases` (the cluster phases need a cluster).
fn sub_graph(s: &Context, phases: &[&str]) -> Graph {
    let mut g = graph::graph(&s.d, &s.rendered, graph::Options::default());
    g.phases.retain(|p| phases.contains(&p.id));
    for p in &mut g.phases {
        p.deps.retain(|d| phases.contains(d));
    }
    assert_eq!(g.phases.len(), phases.len(), "the graph has {phases:?}");
    g
}

/// A run of the image phases: the report and each phase's recorded outputs.
fn run(s: &Context) -> (Report, BTreeMap<String, BTreeMap<String, String>>) {
    run_phases(s, &["image-build", "image-push"])
}

fn run_phases(s: &Context, phases: &[&str]) -> (Report, BTreeMap<String, BTreeMap<String, String>>) {
    let g = sub_graph(s, phases);
    let kube = Kube::new(s).unwrap();
    let store = s.store().unwrap();
    let report = exec::execute(&g, &kube, &store, &s.env());
    if !report.ok() {
        let log = |p: &str| std::fs::read_to_string(s.dir.join("logs").join(format!("{p}.log"))).unwrap_or_default();
        panic!(
            "phases failed: {:?}\n{}",
            report.first_error(),
            phases.iter().map(|p| format!("{p} log:\n{}", log(p))).collect::<String>()
        );
    }
    let outputs = phases.iter().map(|p| (p.to_string(), store.phase(p).expect("recorded").outputs)).collect();
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
    let lock = env_lock();
    let env = DockerEnv::start();
    // Every docker command raydeploy runs inherits DOCKER_HOST: the private engine.
    let _vars = EnvVars::set(&lock, [("DOCKER_HOST", env.engine.host.as_str())]);
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
    assert!(!staged.join("jobs/hello/__pycache__").exists() && !staged.join("jobs/hello/.git").exists());
    assert_eq!(std::fs::read_to_string(staged.join(".dockerignore")).unwrap(), s.rendered.files["image/.dockerignore"]);
    assert_eq!(
        env.engine.exec(&cpu_ref, &["ls", "-a", "/home/ray/jobs/hello"]).split_whitespace().collect::<Vec<_>>(),
        [".", "..", "hello.py"],
        "the image holds the job's code only"
    );

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

const AKS_SPEC: &str = r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: imgaks
target: aks
azure:
  location: eastus
  systemPool: { vmSize: Standard_D2s_v5, count: 1 }
image:
  rayVersion: "2.52.0"
  python: "3.11"
  pipPackages: ["requests==2.32.3"]
cluster:
  namespace: ray
  head: { vmSize: Standard_D4s_v5, cpu: 1, memory: 4Gi }
  workerGroups:
    - { name: cpu, vmSize: Standard_D4s_v5, cpu: 2, memory: 4Gi, replicas: 1 }
"#;

/// `az` for the AKS test: `acr repository show` answers from the private registry (as the ACR
/// would: the tag's digest, or an error when it is missing) and is logged to SHOWN; every other
/// command goes to the fake az.
const AZ: &str = r#"if [ "$1 $2 $3" = "acr repository show" ]; then
  image=""
  while [ $# -gt 0 ]; do [ "$1" = --image ] && image=$2; shift; done
  echo "$image" >> "SHOWN"
  out=$(docker manifest inspect --insecure --verbose "REGISTRY/$image" 2>/dev/null) \
    || { echo "ERROR: manifest tagged by \"${image#*:}\" is not found" >&2; exit 1; }
  printf '%s' "$out" | python3 -c 'import json, sys; print(json.dumps({"name": sys.argv[1], "digest": json.load(sys.stdin)["Descriptor"]["digest"]}))' "${image#*:}"
  exit 0
fi
exec FAKE_AZ "$@""#;

#[test]
fn aks_pushes_to_the_registry_infra_reports() {
    let lock = env_lock();
    let docker = DockerEnv::start();
    let reg = &docker.registry;
    let mut env = KubeEnv::new(AKS_SPEC, &["terraform", "az"]);
    env.add_real("docker");
    env.add_script("helm", r#"[ "$1" = version ] && echo v3.16.2+g13654a5 && exit 0; exit 1"#);
    env.add_script(
        "kubectl",
        r#"[ "$1" = version ] && echo '{"clientVersion":{"gitVersion":"v1.31.2"}}' && exit 0; exit 1"#,
    );
    let shown = env.tmp.path().join("acr-repository-show.log");
    let fake_az = kube_env::root().join("tests/fakes/az");
    env.add_script(
        "az",
        &AZ.replace("SHOWN", &shown.display().to_string())
            .replace("REGISTRY", &reg.addr)
            .replace("FAKE_AZ", &fake_az.display().to_string()),
    );
    // Terraform's fake reports the private registry as the ACR's login server.
    env.set("RAYDEPLOY_FAKE_ACR", reg.addr.clone()).set("DOCKER_HOST", docker.engine.host.clone());

    let phases = ["preflight", "infra", "image-build", "image-push"];
    let deploy = |env: &KubeEnv| {
        let _vars = EnvVars::set(&lock, env.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let (s, events) = session(&env.spec());
        let (report, out) = run_phases(&s, &phases);
        (report, out, infos(&events), s.d.image.cpu.clone().unwrap(), s.d.azure.clone().unwrap())
    };

    let d = session(&env.spec()).0.d;
    docker.engine.build_base(&d.image.base, &d.image.base_tag);
    assert!(d.image.gpu.is_none(), "no GPU group, no GPU image");

    let (report, out, messages, cpu, azure) = deploy(&env);
    assert_eq!(report.with(Outcome::Ran), phases.to_vec());
    assert_eq!(registry_host_of(&cpu.repository), azure.acr_login_server, "the model names the ACR");
    // Pushed to the registry infra reported, under the model's repository path.
    let path = cpu.repository.split_once('/').unwrap().1;
    let digest = reg.digest(path, &cpu.tag).expect("pushed to the registry infra reported");
    let pushed = format!("{}/{path}:{}@{digest}", reg.addr, cpu.tag);
    assert_eq!(out["image-push"]["cpu_image"], pushed);
    assert_eq!(out["image-push"]["registry"], reg.addr);
    assert!(!out["image-push"].contains_key("gpu_image"));
    assert!(
        messages.iter().any(|m| m.contains("reported by infra") && m.contains(&azure.acr_login_server)),
        "{messages:?}"
    );
    let logins = env.find("az", &["acr", "login"]);
    assert!(
        !logins.is_empty() && logins.iter().all(|c| c.has(&["--name", &azure.acr_name]) && c.has(&["--subscription"])),
        "az acr login --name <acr> --subscription <the deployment's>: {:?}",
        logins.iter().map(|c| c.line()).collect::<Vec<_>>()
    );

    // A fresh checkout on a machine whose engine lacks the image: image-build asks the ACR by
    // name (infra has not reported yet, or has) and image-push the registry: nothing is built,
    // nothing is pushed, the same pinned reference.
    env.fresh_checkout();
    docker.engine.remove_image(&cpu.reference());
    docker.engine.remove_image(&format!("{}/{path}:{}", reg.addr, cpu.tag));
    let (report, again, _, _, _) = deploy(&env);
    assert_eq!(report.with(Outcome::Skipped), vec!["infra", "image-build", "image-push"]);
    assert_eq!(again["image-push"], out["image-push"]);
    assert!(!docker.engine.has_image(&cpu.reference()), "nothing was built or pulled");
}

fn registry_host_of(repository: &str) -> &str {
    repository.split_once('/').map_or("", |(h, _)| h)
}

/// Phase → outcome (`ran`, `skipped`, ...) from the summary line of `deploy --output json`.
fn outcomes(stdout: &str) -> BTreeMap<String, String> {
    let summary: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    summary["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_string(), p["outcome"].as_str().unwrap().to_string()))
        .collect()
}

/// `raydeploy deploy --auto-approve --output json` in the sandbox: phase outcomes.
fn deploy_binary(env: &KubeEnv) -> BTreeMap<String, String> {
    let o = env.raydeploy().args(["deploy", "--auto-approve", "--output", "json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "deploy failed:\n{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    outcomes(&stdout)
}

/// The image the fake cluster's ray-cluster release runs on the head: `repository:tag@digest`.
fn released_head_image(env: &KubeEnv) -> String {
    let kube = env.fake_state("kube");
    let release = kube["releases"]
        .as_object()
        .unwrap()
        .values()
        .find(|r| r["chart"].as_str().is_some_and(|c| c.starts_with("ray-cluster-")))
        .expect("release");
    let img = &release["values"]["head"]["image"];
    format!("{}:{}", img["repository"].as_str().unwrap(), img["tag"].as_str().unwrap())
}

/// The whole `raydeploy deploy` binary on target kubernetes (fake helm and kubectl, the real
/// engine and registry): the image is built and pushed, the registry's digest is pinned in the
/// ray-cluster release; a fresh checkout on an engine without the image deploys with image-build
/// and image-push skipped; a changed pipPackages builds, pushes and pins a new tag.
#[test]
fn deploy_binary_pins_the_registry_digest() {
    let _lock = env_lock();
    let docker = DockerEnv::start();
    let reg = &docker.registry;
    let text = spec_text(&reg.addr, "pandas==2.2.3").replace("ray-imgtest", "ray-bin");
    let mut env = KubeEnv::new(&text, &["helm", "kubectl"]);
    std::fs::create_dir_all(env.spec_dir.join("jobs/hello")).unwrap();
    std::fs::write(env.spec_dir.join("jobs/hello/hello.py"), "print('hello')\n").unwrap();
    env.add_real("docker");
    env.set("DOCKER_HOST", docker.engine.host.clone()).set("RAYDEPLOY_POLL_SECONDS", "0.05");
    let (s, _) = session(&env.spec());
    let img = s.d.image.clone();
    docker.engine.build_base(&img.base, &img.base_tag);
    docker.engine.build_base(&img.base, &img.base_tag_gpu);
    let (cpu, gpu) = (img.cpu.clone().unwrap(), img.gpu.clone().unwrap());
    let repo = "acme/ray-bin";

    let phases = deploy_binary(&env);
    assert_eq!(phases["image-build"], "ran");
    assert_eq!(phases["image-push"], "ran");
    assert_eq!(phases["cluster"], "ran");
    let digest = reg.digest(repo, &cpu.tag).expect("CPU image pushed");
    let gpu_digest = reg.digest(repo, &gpu.tag).expect("GPU image pushed");
    let pinned = format!("{}@{digest}", cpu.reference());
    let state = env.state("imgtest");
    let push = &state["phases"]["image-push"]["outputs"];
    assert_eq!(push["cpu_image"], pinned.as_str());
    assert_eq!(push["gpu_image"], format!("{}@{gpu_digest}", gpu.reference()).as_str());
    assert_eq!(released_head_image(&env), pinned, "the release runs the pushed digest");

    // A fresh checkout with an engine that lacks the images: build and push are skipped.
    env.fresh_checkout();
    docker.engine.remove_image(&cpu.reference());
    docker.engine.remove_image(&gpu.reference());
    let phases = deploy_binary(&env);
    assert_eq!(phases["image-build"], "skipped");
    assert_eq!(phases["image-push"], "skipped");
    assert!(!docker.engine.has_image(&cpu.reference()), "nothing was built or pulled");
    assert_eq!(env.state("imgtest")["phases"]["image-push"]["outputs"]["cpu_image"], pinned.as_str());
    assert_eq!(released_head_image(&env), pinned);

    // A new pip package: a new tag, built, pushed and pinned.
    env.write_spec(&text.replace("pandas==2.2.3", "pandas==2.2.2"));
    let phases = deploy_binary(&env);
    assert_eq!(phases["image-build"], "ran");
    assert_eq!(phases["image-push"], "ran");
    assert_eq!(phases["cluster"], "ran");
    let (s2, _) = session(&env.spec());
    let cpu2 = s2.d.image.cpu.clone().unwrap();
    assert_ne!(cpu2.tag, cpu.tag);
    let digest2 = reg.digest(repo, &cpu2.tag).expect("new CPU tag pushed");
    assert_eq!(released_head_image(&env), format!("{}@{digest2}", cpu2.reference()));
}

/// A target-kubernetes sandbox on the fakes (docker included: builds and pushes by name), for
/// how the images are built: the spec has a GPU group, so two images.
fn fake_docker_env(repo: &str) -> (KubeEnv, raydeploy::model::ImageRef, raydeploy::model::ImageRef) {
    let text = spec_text("registry.example.com", "pandas==2.2.3").replace("acme/ray-imgtest", repo);
    let mut env = KubeEnv::new(&text, &["helm", "kubectl", "docker"]);
    std::fs::create_dir_all(env.spec_dir.join("jobs/hello")).unwrap();
    std::fs::write(env.spec_dir.join("jobs/hello/hello.py"), "print('hello')\n").unwrap();
    env.set("RAYDEPLOY_POLL_SECONDS", "0.05");
    let d = {
        let _lock = env_lock();
        session(&env.spec()).0.d
    };
    (env, d.image.cpu.clone().unwrap(), d.image.gpu.clone().unwrap())
}

/// Each build (and each push) waits until the other one runs: both gates open only when the two
/// images are built (pushed) at the same time.
fn gate_builds_and_pushes(env: &mut KubeEnv, cpu: &str, gpu: &str) {
    let b = (format!("docker:build {cpu}"), format!("docker:build {gpu}"));
    let p = (format!("docker:push {cpu}"), format!("docker:push {gpu}"));
    env.set("RAYDEPLOY_FAKE_WAIT", KubeEnv::overlap_gates(&[(&b.0, &b.1), (&p.0, &p.1)]))
        .set("RAYDEPLOY_FAKE_WAIT_SECONDS", "30");
}

#[test]
fn classic_builder_builds_and_pushes_both_images_at_once() {
    let (mut env, cpu, gpu) = fake_docker_env("acme/ray-classic");
    gate_builds_and_pushes(&mut env, &cpu.reference(), &gpu.reference());
    let phases = deploy_binary(&env);
    assert_eq!((phases["image-build"].as_str(), phases["image-push"].as_str()), ("ran", "ran"));
    let builds = env.find("docker", &["build"]);
    assert_eq!(builds.len(), 2, "{builds:#?}");
    for b in &builds {
        assert_eq!(b.gates, "open", "the two builds ran at the same time: {builds:#?}");
        assert_eq!(b.env.get("DOCKER_BUILDKIT").map(String::as_str), Some("0"), "classic builder: {}", b.line());
        assert!(!b.argv.iter().any(|a| a.starts_with("--cache") || a == "--load"), "{}", b.line());
    }
    assert!(builds.iter().any(|b| b.has(&["--build-arg", &format!("BASE_TAG={}", "2.52.0-py312-gpu")])));
    let pushes = env.find("docker", &["push"]);
    assert_eq!(pushes.len(), 2);
    assert!(pushes.iter().all(|p| p.gates == "open"), "the two pushes ran at the same time: {pushes:#?}");
    // One staged context for both builds, with the rendered .dockerignore.
    let ctx = builds[0].argv.last().unwrap();
    assert!(builds.iter().all(|b| b.argv.last() == Some(ctx)));
    let ignore = std::fs::read_to_string(env.spec_dir.join(ctx).join(".dockerignore")).unwrap();
    assert!(ignore.contains("**/.git\n") && ignore.contains("**/__pycache__\n"), "{ignore}");
    // Both digests pinned; a second deploy builds and pushes nothing.
    let state = env.state("imgtest");
    assert!(state["phases"]["image-push"]["outputs"]["gpu_image"].as_str().unwrap().contains("@sha256:"));
    env.unset("RAYDEPLOY_FAKE_WAIT");
    env.clear_calls();
    let again = deploy_binary(&env);
    assert_eq!((again["image-build"].as_str(), again["image-push"].as_str()), ("skipped", "skipped"));
    assert!(env.calls().iter().all(|c| !c.mutating()), "{:#?}", env.calls());
}

#[test]
fn buildkit_builds_read_and_write_the_registry_cache() {
    let (mut env, cpu, gpu) = fake_docker_env("acme/ray-bk");
    env.set("RAYDEPLOY_FAKE_BUILDX", "docker-container");
    gate_builds_and_pushes(&mut env, &cpu.reference(), &gpu.reference());
    let phases = deploy_binary(&env);
    assert_eq!(phases["image-build"], "ran");
    let builds = env.find("docker", &["build"]);
    assert_eq!(builds.len(), 2);
    for (img, cache) in [(&cpu, "buildcache"), (&gpu, "buildcache-gpu")] {
        let b = builds.iter().find(|b| b.has(&[&img.reference()])).expect("a build per image");
        assert_eq!(b.gates, "open", "the two builds ran at the same time");
        // On the selected builder: `docker build` would go to the context's own builder.
        assert_eq!(b.argv[..2], ["buildx", "build"], "{}", b.line());
        assert!(!b.env.contains_key("DOCKER_BUILDKIT"), "{}", b.line());
        let cache_ref = format!("registry.example.com/acme/ray-bk:{cache}");
        assert!(
            b.has(&[
                "--load",
                "--provenance=false",
                "--cache-from",
                &format!("type=registry,ref={cache_ref}"),
                "--cache-to",
                &format!("type=registry,ref={cache_ref},mode=max,ignore-error=true"),
            ]),
            "{}",
            b.line()
        );
    }

    // The buildx `docker` driver (no containerd image store) cannot export cache: read only.
    let (mut env, _, _) = fake_docker_env("acme/ray-bkd");
    env.set("RAYDEPLOY_FAKE_BUILDX", "docker");
    deploy_binary(&env);
    let builds = env.find("docker", &["build"]);
    assert_eq!(builds.len(), 2);
    for b in &builds {
        assert!(b.has(&["--cache-from"]) && !b.has(&["--cache-to"]), "{}", b.line());
    }
    let log = std::fs::read_to_string(env.state_dir("imgtest").join("logs/image-build.log")).unwrap();
    assert!(log.contains("cannot export build cache"), "{log}");
}
