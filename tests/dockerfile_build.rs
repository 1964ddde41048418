//! A real `docker build` of a rendered Dockerfile, on a private Docker engine with no network.
//!
//! `tests/support/dockerd.sh` starts the engine (installing docker.io and busybox-static with
//! apt-get when missing; needs root). The test builds a stand-in for the Ray base image from
//! busybox: a `ray` user, and `apt-get` / `pip` scripts that only record their arguments, tagged
//! `rayproject/ray:<base tag>` inside the private engine only. Nothing is pulled from a registry.
//! It then builds the rendered Dockerfile of a copy of examples/pytorch-mnist-aks (hostile package
//! strings added) with the spec's folder as context, CPU and GPU variant, and inspects the result.
//!
//! Run alone with `cargo test --test dockerfile_build`; about 15 s with a warm engine and cargo
//! cache (starting dockerd takes 2–5 s, each build a few seconds). Fails, never skips, when
//! dockerd cannot run.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

#[path = "support/specs.rs"]
mod shipped;

use shipped::{copy_tree, root};

/// The private engine; stops it on drop when this test started it.
struct Engine {
    dir: tempfile::TempDir,
    host: String,
    pid: Option<u32>,
}

impl Engine {
    fn start() -> Engine {
        let dir = tempfile::Builder::new().prefix("rd-dockerd").tempdir().expect("tempdir");
        let script = root().join("tests/support/dockerd.sh");
        let out = Command::new("bash").arg(&script).arg("start").arg(dir.path()).output().expect("run dockerd.sh");
        assert!(
            out.status.success(),
            "could not start a private Docker engine (tests/support/dockerd.sh start): {}\n\
             CI needs root and `apt-get install -y docker.io busybox-static`",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let field = |k: &str| stdout.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).map(str::to_string);
        let host = field("DOCKER_HOST").expect("DOCKER_HOST line");
        let pid = field("DOCKERD_PID").filter(|p| !p.is_empty()).map(|p| p.parse().expect("pid"));
        Engine { dir, host, pid }
    }

    fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", &self.host).env("DOCKER_BUILDKIT", "0").env("DOCKER_CLI_HINTS", "false");
        c
    }

    fn run(&self, args: &[&str], cwd: Option<&Path>) -> Output {
        let mut c = self.docker();
        c.args(args);
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        let out = c.output().expect("run docker");
        assert!(
            out.status.success(),
            "docker {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// stdout of a command run in a throwaway container of `image`.
    fn exec(&self, image: &str, cmd: &[&str]) -> String {
        let mut args = vec!["run", "--rm", "--network=none", image];
        args.extend_from_slice(cmd);
        String::from_utf8(self.run(&args, None).stdout).expect("utf-8")
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            for _ in 0..120 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            // Layers left mounted by a dockerd that did not shut down cleanly would make the
            // temp folder undeletable; unmount whatever remains below it.
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "grep -o ' {}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                    self.dir.path().display()
                ))
                .status();
        }
    }
}

/// Records one invocation's arguments, one per line, closed by a `--end--` line.
const RECORDER: &str = "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> /var/log/recorded/NAME; done\necho --end-- >> /var/log/recorded/NAME\n";

/// Builds the busybox stand-in for `<base>:<tag>` (the tag is written to /etc/base-tag).
fn build_base(engine: &Engine, base: &str, tag: &str) {
    let ctx = tempfile::tempdir().unwrap();
    let r = ctx.path().join("root");
    for d in ["bin", "usr/bin", "usr/local/bin", "etc", "home/ray", "tmp", "var/log/recorded", "var/lib/apt/lists"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("busybox-static installed");
    std::fs::copy(busybox, r.join("bin/busybox")).unwrap();
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nray:x:1000:100::/home/ray:/bin/sh\n").unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\nusers:x:100:ray\n").unwrap();
    std::fs::write(r.join("var/lib/apt/lists/stale"), "").unwrap();
    std::fs::write(r.join("usr/bin/apt-get"), RECORDER.replace("NAME", "apt-get")).unwrap();
    std::fs::write(r.join("usr/local/bin/pip"), RECORDER.replace("NAME", "pip")).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\n\
         COPY root/ /\n\
         ENV PATH=/usr/local/bin:/usr/bin:/bin\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         ARG TAG\n\
         RUN chmod 755 /usr/bin/apt-get /usr/local/bin/pip && chmod 1777 /tmp /var/log/recorded \
             && chown ray:users /home/ray && echo \"$TAG\" > /etc/base-tag\n\
         USER ray\n\
         WORKDIR /home/ray\n",
    )
    .unwrap();
    let image = format!("{base}:{tag}");
    engine.run(
        &["build", "--pull=false", "--network=none", "--build-arg", &format!("TAG={tag}"), "-t", &image, "."],
        Some(ctx.path()),
    );
}

/// The recorded invocations of `tool` in `image`: one argument list per call.
fn recorded(engine: &Engine, image: &str, tool: &str) -> Vec<Vec<String>> {
    let text = engine.exec(image, &["cat", &format!("/var/log/recorded/{tool}")]);
    let mut calls = vec![];
    let mut cur = vec![];
    for line in text.lines() {
        if line == "--end--" {
            calls.push(std::mem::take(&mut cur));
        } else {
            cur.push(line.to_string());
        }
    }
    calls
}

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
    build_base(&engine, base, cpu_tag);
    build_base(&engine, base, gpu_tag);

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
        assert_eq!(labels["raydeploy.io/spec-hash"], d["spec_hash"], "{image}");
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
            recorded(&engine, image, "apt-get"),
            vec![words(&["update"]), apt_install],
            "{image}: apt-get arguments"
        );
        let mut pip_install = words(&["install", "--no-cache-dir"]);
        pip_install.extend(words(PIP));
        assert_eq!(recorded(&engine, image, "pip"), vec![pip_install], "{image}: pip arguments");
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
