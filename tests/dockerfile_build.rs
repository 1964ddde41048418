//! A real `docker build` of a rendered Dockerfile, on a private Docker engine with no network.
//!
//! `tests/support/docker_env.rs` (over `tests/support/dockerd.sh`) starts the engine (installing
//! docker.io and busybox-static with apt-get when missing; needs root). The test builds a stand-in for the Ray base image from
//! busybox: a `ray` user, and `apt-get` / `pip` scripts that only record their arguments, tagged
//! `rayproject/ray:<base tag>` inside the private engine only. Nothing is pulled from a registry.
//! It then builds the rendered Dockerfile of a copy of examples/pytorch-mnist-aks (hostile package
//! strings added) with the spec's folder as context, CPU and GPU variant, and inspects the result.
//!
//! Run alone with `cargo test --test dockerfile_build`; about 15 s with a warm engine and cargo
//! cache (starting dockerd takes 2–5 s, each build a few seconds). Fails, never skips, when
//! dockerd cannot run.

use serde_json::Value;

#[path = "support/docker_env.rs"]
mod docker_env;
#[path = "support/specs.rs"]
mod shipped;

use docker_env::Engine;
use shipped::{copy_tree, root};

const APT: &[&str] = &["curl", "unixodbc-dev"];
const PIP: &[&str] = &["xgboost==2.1.1", r#"pkg>=1.0; python_version<"3.12""#, "it's", "$HOME", "a b", "x\\y"];

#[test]
fn rendered_dockerfile_builds_on_a_private_engine() {
    // The spec folder is the build context: a copy of the MNIST example with packages added.
    let spec_dir = tempfile::tempdir().unwrap();
    copy_tree(&root().join("examples/pytorch-mnist-aks"), spec_dir.path());
    let spec = spec_dir.path().join("raydeploy.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    let yaml_list = |xs: &[&str]| xs.iter().map(|x| serde_json::to_string(x).unwrap()).collect::<Vec<_>>().join(", ");
    let image_block = format!("image:\n  aptPackages: [{}]\n  pipPackages: [{}]\n", yaml_list(APT), yaml_list(PIP));
    std::fs::write(&spec, text.replacen("image:\n", &image_block, 1)).unwrap();

    let out = tempfile::tempdir().unwrap();
    let render = assert_cmd::Command::cargo_bin("raydeploy")
        .unwrap()
        .arg("render")
        .arg(&spec)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(render.status.success(), "render: {}", String::from_utf8_lossy(&render.stderr));
    let dockerfile = out.path().join("image/Dockerfile");
    let explain = assert_cmd::Command::cargo_bin("raydeploy")
        .unwrap()
        .arg("explain")
        .arg(&spec)
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert!(explain.status.success(), "explain: {}", String::from_utf8_lossy(&explain.stderr));
    let d: Value = serde_json::from_slice(&explain.stdout).unwrap();
    let base = d["image"]["base"].as_str().unwrap();
    let cpu_tag = d["image"]["base_tag"].as_str().unwrap();
    let gpu_tag = d["image"]["base_tag_gpu"].as_str().unwrap();
    let jobs = d["image"]["job_dirs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "the MNIST example copies one job folder");
    let job_dst = jobs[0][1].as_str().unwrap();

    let engine = Engine::start();
    engine.build_base(base, cpu_tag);
    engine.build_base(base, gpu_tag);

    let df = dockerfile.to_str().unwrap();
    let ctx = spec_dir.path().to_str().unwrap();
    engine.run(&["build", "--pull=false", "--network=none", "-f", df, "-t", "rd-test:cpu", ctx], None);
    engine.run(
        &[
            "build",
            "--pull=false",
            "--network=none",
            "-f",
            df,
            "--build-arg",
            &format!("BASE_TAG={gpu_tag}"),
            "-t",
            "rd-test:gpu",
            ctx,
        ],
        None,
    );

    for (image, tag) in [("rd-test:cpu", cpu_tag), ("rd-test:gpu", gpu_tag)] {
        assert_eq!(engine.exec(image, &["cat", "/etc/base-tag"]).trim(), tag, "{image} is built on {base}:{tag}");

        let inspect: Value = serde_json::from_slice(&engine.run(&["image", "inspect", image], None).stdout).unwrap();
        let config = &inspect[0]["Config"];
        assert_eq!(config["User"], "ray", "{image}");
        assert_eq!(config["WorkingDir"], "/home/ray", "{image}");
        let labels = &config["Labels"];
        assert!(labels.get("raydeploy.io/spec-hash").is_none(), "{image}: only content goes into the image");
        assert_eq!(labels["raydeploy.io/content-hash"], d["image"]["content_hash"], "{image}");
        assert_eq!(labels["raydeploy.io/ray-version"], d["image"]["ray_version"], "{image}");
        assert_eq!(labels["raydeploy.io/deployment"], d["name"], "{image}");
        assert_eq!(labels["org.opencontainers.image.title"], d["name"], "{image}");
        assert_eq!(labels["org.opencontainers.image.revision"], d["image"]["content_hash"], "{image}");
        assert_eq!(engine.exec(image, &["id", "-un"]).trim(), "ray", "{image}");

        let words = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut apt_install = words(&["install", "-y", "--no-install-recommends"]);
        apt_install.extend(words(APT));
        assert_eq!(
            engine.recorded(image, "apt-get"),
            vec![words(&["update"]), apt_install],
            "{image}: apt-get arguments"
        );
        let mut pip_install = words(&["install", "--no-cache-dir"]);
        pip_install.extend(words(PIP));
        assert_eq!(engine.recorded(image, "pip"), vec![pip_install], "{image}: pip arguments");
        assert_eq!(engine.exec(image, &["ls", "-A", "/var/lib/apt/lists"]).trim(), "", "{image}: apt lists removed");

        let train = format!("{job_dst}/train.py");
        let want = std::fs::read_to_string(spec_dir.path().join("jobs/mnist/train.py")).unwrap();
        assert_eq!(engine.exec(image, &["cat", &train]), want, "{image}: job folder copied to {job_dst}");
        assert_eq!(
            engine.exec(image, &["stat", "-c", "%U:%G", &train]).trim(),
            "ray:users",
            "{image}: job files owned by ray"
        );
    }
    drop(engine);
}
