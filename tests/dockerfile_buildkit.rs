//! raydeploy's BuildKit path against a real BuildKit: `raydeploy deploy` (target kubernetes,
//! fake helm and kubectl, the real docker CLI) with the buildx plugin installed and a private
//! `buildkitd` as the current builder (`remote` driver, `tests/support/buildkit_env.rs`), a
//! private Docker engine that `--load` loads into and that pushes, and a private registry on
//! 127.0.0.1 (`tests/support/docker_env.rs`) holding the images, the build cache and the base
//! image: the spec's `image.base` is a busybox stand-in for Ray's image pushed to that registry
//! (BuildKit pulls the base itself; nothing comes from outside this machine). Its `pip` and
//! `apt-get` only record their arguments and print `pip stand-in ran: …`, which shows in the
//! build's output when the pip step runs.
//!
//! Checked: the first deploy builds with BuildKit through the builder, pushes both images (CPU
//! and GPU) and writes the build cache `<repository>:buildcache` and `:buildcache-gpu` to the
//! registry; then a fresh CI runner — a brand-new buildkitd (empty state), a brand-new engine
//! (no image), a fresh checkout (no state folder) — deploys after a one-line change in a job's
//! code: the pip step of both images comes from the registry cache — the stand-in pip does not
//! run, and each new image's pip layer is the first build's (the stand-in writes a random id per
//! run into its layer) — while the new images hold the changed code. BuildKit's `CACHED` progress
//! line is not checked: it does not always show when the cached layer is then pulled. A control build on another fresh buildkitd without the cache flags runs
//! the pip step, so the test fails if raydeploy stopped passing `--cache-from`/`--cache-to`.
//! The classic builder (no buildx) is tested in tests/deploy_image.rs.
//!
//! Needs root (dockerd, buildkitd with runc), docker.io, busybox-static, docker-registry, and
//! buildkitd, buildctl and docker-buildx from `bash tests/testbed/build.sh buildkit buildx`
//! (`.ci/run` builds them). Run alone with `cargo test --test dockerfile_buildkit`: about 40 s
//! (two engines, three buildkitd starts, four small builds and two pushes).

#[path = "support/buildkit_env.rs"]
mod buildkit_env;
#[path = "support/docker_env.rs"]
mod docker_env;
#[path = "support/kube_env.rs"]
mod kube_env;

use std::collections::BTreeMap;
use std::path::Path;

use buildkit_env::BuildKit;
use docker_env::{Engine, Registry};
use kube_env::KubeEnv;

/// The image repository path inside the registry.
const REPO: &str = "acme/ray-bk";
/// Where the base stand-in lives in the registry.
const BASE: &str = "mirror/rayproject/ray";
/// What the stand-in pip prints when it runs.
const PIP_RAN: &str = "pip stand-in ran: install --no-cache-dir pandas==2.2.3";

fn spec_text(registry: &str) -> String {
    format!(
        r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: bktest
target: kubernetes

kubernetes:
  registry: {registry}/{REPO}

image:
  rayVersion: "2.52.0"
  python: "3.12"
  base: {registry}/{BASE}
  pipPackages: ["pandas==2.2.3"]

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

jobs:
  - name: hello
    entrypoint: python hello.py
    workingDir: ./jobs/hello
"#
    )
}

/// The deployment's images as raydeploy models them.
fn images(spec: &Path) -> raydeploy::model::ImageModel {
    let loaded = raydeploy::spec::load(spec, None, &|_: &str| None).unwrap_or_else(|r| panic!("{}", r.short()));
    raydeploy::model::build(&loaded, None).unwrap_or_else(|p| panic!("{}", loaded.report(p).short())).image
}

/// `raydeploy deploy --auto-approve --output json` in the sandbox: phase → outcome.
fn deploy(env: &KubeEnv) -> BTreeMap<String, String> {
    let o = env.raydeploy().args(["deploy", "--auto-approve", "--output", "json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let log = std::fs::read_to_string(env.state_dir("bktest").join("logs/image-build.log")).unwrap_or_default();
    assert!(
        o.status.success(),
        "deploy failed:\n{stdout}\n{}\nimage-build log:\n{log}",
        String::from_utf8_lossy(&o.stderr)
    );
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

/// The image-build phase's log of the deploy in the sandbox's current checkout.
fn build_log(env: &KubeEnv) -> String {
    std::fs::read_to_string(env.state_dir("bktest").join("logs/image-build.log")).expect("image-build log")
}

/// Environment of the sandbox for a BuildKit: its docker configuration and engine.
fn use_buildkit(env: &mut KubeEnv, bk: &BuildKit) {
    for (k, v) in bk.vars() {
        env.set(k, v);
    }
}

#[test]
fn buildkit_writes_the_registry_cache_and_a_fresh_runner_reuses_the_pip_layer() {
    let registry = Registry::start();
    let reg = &registry.addr;
    let text = spec_text(reg);
    let mut env = KubeEnv::new(&text, &["helm", "kubectl"]);
    std::fs::create_dir_all(env.spec_dir.join("jobs/hello")).unwrap();
    std::fs::write(env.spec_dir.join("jobs/hello/hello.py"), "print('hello')\nprint('one')\n").unwrap();
    env.add_real("docker");
    env.set("RAYDEPLOY_POLL_SECONDS", "0.05");
    let img = images(&env.spec());
    let (cpu, gpu) = (img.cpu.clone().unwrap(), img.gpu.clone().expect("a GPU group gives a GPU image"));
    assert_eq!(img.base, format!("{reg}/{BASE}"));

    // The base stand-ins, pushed to the registry: BuildKit pulls the base from there.
    let engine = Engine::start();
    for tag in [&img.base_tag, &img.base_tag_gpu] {
        engine.build_base(&img.base, tag);
        engine.run(&["push", &format!("{}:{tag}", img.base)], None);
    }

    // First deploy: BuildKit builds both images through the builder, the engine pushes them, and
    // BuildKit writes each image's build cache to the registry.
    let bk = BuildKit::start(&engine.host);
    use_buildkit(&mut env, &bk);
    let phases = deploy(&env);
    assert_eq!((phases["image-build"].as_str(), phases["image-push"].as_str()), ("ran", "ran"));
    let log = build_log(&env);
    assert!(
        log.contains(&format!("building with \"{}\" instance using remote driver", bk.builder)),
        "the builds went to the private buildkitd:\n{log}"
    );
    for (i, cache) in [(&cpu, "buildcache"), (&gpu, "buildcache-gpu")] {
        let cache_ref = format!("{reg}/{REPO}:{cache}");
        assert!(
            log.lines().any(|l| l.starts_with("$ docker buildx build")
                && l.contains(&i.reference())
                && l.contains(&format!("--cache-from type=registry,ref={cache_ref}"))
                && l.contains(&format!("--cache-to type=registry,ref={cache_ref},mode=max"))),
            "the build of {} reads and writes {cache_ref}:\n{log}",
            i.reference()
        );
    }
    let tags = registry.tags(REPO);
    for t in ["buildcache", "buildcache-gpu", &cpu.tag, &gpu.tag] {
        assert!(tags.iter().any(|x| x == t), "{REPO}:{t} is in the registry: {tags:?}");
    }
    assert_eq!(log.matches(PIP_RAN).count(), 2, "the pip step ran in both builds:\n{log}");
    let pip_args = vec![vec!["install".to_string(), "--no-cache-dir".into(), "pandas==2.2.3".into()]];
    for i in [&cpu, &gpu] {
        assert_eq!(engine.recorded(&i.reference(), "pip"), pip_args, "{}: loaded into the engine", i.reference());
    }
    // Which run of the pip step each image's pip layer is.
    let pip_runs: Vec<Vec<String>> = [&cpu, &gpu].iter().map(|i| engine.runs(&i.reference(), "pip")).collect();
    assert!(pip_runs.iter().all(|r| r.len() == 1) && pip_runs[0] != pip_runs[1], "{pip_runs:?}");
    let state = env.state("bktest");
    let pinned = state["phases"]["image-push"]["outputs"]["cpu_image"].as_str().unwrap().to_string();
    assert_eq!(pinned, format!("{}@{}", cpu.reference(), registry.digest(REPO, &cpu.tag).unwrap()));

    // A fresh CI runner: a new buildkitd with an empty state folder, a new engine with no image,
    // a fresh checkout with no state folder; one line of the job's code changes.
    drop(bk);
    drop(engine);
    let engine = Engine::start();
    let listed = engine.run(&["image", "ls", "--all", "--quiet"], None);
    assert!(listed.stdout.is_empty(), "the new engine has no image");
    let bk = BuildKit::start(&engine.host);
    use_buildkit(&mut env, &bk);
    env.fresh_checkout();
    std::fs::write(env.spec_dir.join("jobs/hello/hello.py"), "print('hello')\nprint('two')\n").unwrap();
    let img2 = images(&env.spec());
    let (cpu2, gpu2) = (img2.cpu.clone().unwrap(), img2.gpu.clone().unwrap());
    assert_ne!(cpu2.tag, cpu.tag, "the code change is a new tag");

    let phases = deploy(&env);
    assert_eq!((phases["image-build"].as_str(), phases["image-push"].as_str()), ("ran", "ran"));
    let log = build_log(&env);
    assert!(!log.contains(PIP_RAN), "the pip step did not run: its layer came from the registry cache:\n{log}");
    for cache in ["buildcache", "buildcache-gpu"] {
        assert!(log.contains(&format!("importing cache manifest from {reg}/{REPO}:{cache}\n")), "{log}");
    }
    for (i, runs) in [&cpu2, &gpu2].into_iter().zip(&pip_runs) {
        let r = i.reference();
        assert_eq!(&engine.runs(&r, "pip"), runs, "{r}: the first build's pip layer, from the registry cache");
        assert_eq!(engine.recorded(&r, "pip"), pip_args, "{r}");
        assert_eq!(engine.exec(&r, &["cat", "/home/ray/jobs/hello/hello.py"]), "print('hello')\nprint('two')\n");
        assert!(registry.digest(REPO, &i.tag).is_some(), "{r} pushed");
    }

    // Control: another fresh buildkitd builds the same Dockerfile and context without the cache
    // flags, and there the pip step runs.
    let control = BuildKit::start(&engine.host);
    let cmd = log.lines().find(|l| l.starts_with("$ docker buildx build") && l.contains(&cpu2.reference())).unwrap();
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let dockerfile = words[words.iter().position(|w| *w == "-f").unwrap() + 1];
    let context = words.last().unwrap();
    let out =
        control.docker_in(&["buildx", "build", "--progress=plain", "-f", dockerfile, context], Some(&env.spec_dir));
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(progress.contains(&format!("\"{}\" instance using remote driver", control.builder)), "{progress}");
    assert!(progress.contains(PIP_RAN), "without the registry cache the pip step runs:\n{progress}");
}
