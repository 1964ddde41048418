//! Phases image-build and image-push: `docker build` of the CPU (and GPU) image, `docker push`
//! to the registry, and the pushed manifest's digest, which pins the image in the ray-cluster
//! release.
//!
//! The tag is `<base tag>[-gpu]-<content hash>`: the same tag always means the same content. So
//! both phases ask the world before doing anything, which also holds from a fresh checkout with
//! no state: image-push is skipped when every tag is already in the registry (its outputs are the
//! registry's digests); image-build is skipped when the registry has every tag, or when the local
//! engine already has them. Each probe reads the registry for every image at the same time, and
//! image-build's asks the local engine (`docker image inspect` of every tag) only when the
//! registry lacks one: a deploy whose images are all in the registry (a redeploy, a fresh
//! checkout, a CI runner) never needs the engine, and preflight does not ask for it then
//! ([`every_tag_in_registry`]). On AKS the registry is asked with `az acr repository show` by the
//! ACR's name (no docker login; image-build runs beside infra, before the registry's address is
//! reported); elsewhere through docker. A digest found once in a run is not read again, and
//! preflight and image-build's probe, asking at the same time, share one read per tag.
//!
//! How the registry is read: `docker manifest inspect --verbose <ref>` (part of the docker CLI
//! since 20.10, Debian's `docker.io` included; no pull, no buildx). It runs with `--insecure` for
//! loopback registries (`localhost`, `127.0.0.0/8`, `::1`), the set the engine itself treats as
//! insecure by default: without it the CLI only tries HTTPS and reports every tag missing. The
//! digest is the manifest descriptor's; a tag holding a multi-platform index (pushed by some
//! other tool) counts as absent, so the image is built and pushed again to learn its digest.
//! That read is retried with backoff; a missing tag is an answer, not retried.
//!
//! Builds: the CPU and GPU images are built at the same time (one `docker build` each, from one
//! staged context) and pushed at the same time. When `docker buildx` is installed, the build is
//! `docker buildx build` on the selected builder (the one `docker buildx inspect` describes;
//! `docker build` would go to the docker context's own builder instead), with `--load` so the
//! image lands in the engine and `--provenance=false` so the engine pushes one manifest, not an
//! index, reading the registry build cache `<repository>:buildcache`
//! (`:buildcache-gpu`) and, when the builder can export cache (a driver other than `docker`, or
//! the containerd image store), writing it (`mode=max`, so the pip layer is there for a fresh CI
//! runner; an export failure does not fail the build). Without buildx (Debian's `docker.io` ships
//! none) the build runs with `DOCKER_BUILDKIT=0`, the classic builder. Every docker command
//! inherits `DOCKER_HOST` from the environment.
//!
//! The generated Dockerfile copies only the job folders from the spec's folder, so the build
//! context is a staged copy of just those folders (under the deployment's state folder), without
//! the files `image/.dockerignore` lists (which the content hash leaves out too), with that file
//! at its root: the engine is not sent the rest of the spec folder, nor `.git`, caches or the
//! state folder whose logs grow while the build runs. A user Dockerfile (`image.dockerfile`) gets
//! the spec's folder as its context, and the rendered ignore file as `Dockerfile.dockerignore`
//! beside it (which BuildKit reads; the classic builder reads the folder's own `.dockerignore`).
//!
//! Retries: builds are not retried (a failed build is a real failure). `docker push` is retried
//! (3 attempts): a push is idempotent by content — layers are stored by digest, and the manifest
//! written under the tag is the same bytes on every attempt — so repeating a push that broke
//! midway cannot leave anything different from one clean push.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::Kube;
use crate::graph::Phase;
use crate::model::ImageRef;
use crate::run::exec::{Cx, Outputs};
use crate::run::proc::{Cmd, CmdError, Runner};

const BUILD_TIMEOUT: Duration = Duration::from_secs(3600);
const PUSH_TIMEOUT: Duration = Duration::from_secs(1800);
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Attempts for registry reads and pushes.
const ATTEMPTS: u32 = 3;

/// One image of the deployment.
struct Image<'a> {
    /// `cpu` or `gpu`: the output key prefix.
    kind: &'static str,
    r: &'a ImageRef,
    /// `--build-arg BASE_TAG=…` for the GPU variant.
    base_tag: Option<&'a str>,
}

impl Image<'_> {
    fn local_ref(&self) -> String {
        self.r.reference()
    }
}

fn images<'a>(k: &'a Kube) -> Result<Vec<Image<'a>>> {
    let img = &k.s.d.image;
    let cpu = img.cpu.as_ref().ok_or_else(|| anyhow!("deployment `{}` has no image repository", k.s.d.name))?;
    let mut v = vec![Image { kind: "cpu", r: cpu, base_tag: None }];
    if let Some(gpu) = &img.gpu {
        v.push(Image { kind: "gpu", r: gpu, base_tag: Some(&img.base_tag_gpu) });
    }
    Ok(v)
}

/// `docker` with CLI hints off (they would only add noise to the logs).
fn docker() -> Cmd {
    Cmd::new("docker").env("DOCKER_CLI_HINTS", "false")
}

/// The registry host of a repository (`docker.io` when it names none, as docker reads it).
pub fn registry_host(repository: &str) -> &str {
    match repository.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The repository path without its registry host.
fn repository_path(repository: &str) -> &str {
    match repository.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => rest,
        _ => repository,
    }
}

/// A registry the engine talks to over plain HTTP by default: loopback addresses.
fn loopback(host: &str) -> bool {
    let h = host.strip_prefix('[').and_then(|h| h.split_once(']')).map(|(h, _)| h).unwrap_or_else(|| {
        // `host:port`; a bare IPv6 address has several colons and no port.
        if host.matches(':').count() == 1 { host.split_once(':').map_or(host, |(h, _)| h) } else { host }
    });
    h == "localhost" || h == "::1" || h.parse::<std::net::Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

/// Where images are pushed: the spec's registry on target kubernetes; on AKS the registry the
/// infra phase reports (the login server of the ACR Terraform manages), when it is known.
fn push_registry(k: &Kube, cx: &Cx) -> Option<String> {
    if k.aks() {
        cx.output("infra", "acr_login_server").or_else(|| k.s.d.azure.as_ref().map(|a| a.acr_login_server.clone()))
    } else {
        k.s.d.image.repository.as_deref().map(|r| registry_host(r).to_string())
    }
}

/// The reference pushed for `img` when the registry is `registry`.
fn target_ref(img: &Image, registry: &str) -> String {
    if registry_host(&img.r.repository) == registry {
        img.local_ref()
    } else {
        format!("{registry}/{}:{}", repository_path(&img.r.repository), img.r.tag)
    }
}

/// The ACR name to log in to on AKS.
fn acr_name(k: &Kube, cx: &Cx) -> Option<String> {
    cx.output("infra", "acr_name").or_else(|| k.s.d.azure.as_ref().map(|a| a.acr_name.clone()))
}

/// `az acr login`, which hands the engine a token for the deployment's ACR (AKS only), in the
/// deployment's subscription where it is known (the CLI finds the registry by name there).
fn acr_login(k: &Kube, cx: &Cx) -> Result<()> {
    if !k.aks() {
        return Ok(());
    }
    let name = acr_name(k, cx).ok_or_else(|| anyhow!("the registry name is unknown (no infra output acr_name)"))?;
    let mut login = Cmd::new("az").args(["acr", "login", "--name", &name]);
    if let Some(sub) = subscription(k, cx) {
        login = login.args(["--subscription", &sub]);
    }
    cx.runner.run(&login.timeout(READ_TIMEOUT).idempotent(ATTEMPTS))?;
    Ok(())
}

/// The deployment's subscription: the spec's or the environment's, else the one preflight found.
fn subscription(k: &Kube, cx: &Cx) -> Option<String> {
    super::infra::wanted_subscription(k).or_else(|| cx.output("preflight", "subscription_id"))
}

/// The digest of `img`'s tag in the deployment's ACR, asked with `az acr repository show` (by
/// the registry's name; no docker login needed), or `None` when the tag (or the registry) is
/// not there. Documented shape (learn.microsoft.com/cli/azure/acr/repository#az-acr-repository-show,
/// with `--image`): `{"changeableAttributes": {…}, "createdTime", "digest", "lastUpdateTime",
/// "name", "signed"}`; raydeploy reads `digest`. Any failure but an interrupt means "not there".
/// Asked in the deployment's subscription (the spec's or the environment's, else the one
/// preflight found) where it is known: the CLI finds the registry by name there.
fn acr_digest(k: &Kube, cx: &Cx, acr: &str, img: &Image) -> Result<Option<String>> {
    let image = format!("{}:{}", repository_path(&img.r.repository), img.r.tag);
    let mut cmd = Cmd::new("az")
        .args(["acr", "repository", "show", "--name", acr, "--image", &image, "--output", "json"])
        .arg("--only-show-errors");
    if let Some(sub) = subscription(k, cx) {
        cmd = cmd.args(["--subscription", &sub]);
    }
    let cmd = cmd.timeout(READ_TIMEOUT).quiet();
    match cx.runner.run(&cmd) {
        Ok(o) => Ok(serde_json::from_str::<serde_json::Value>(&o.stdout)
            .ok()
            .and_then(|v| v.get("digest").and_then(|d| d.as_str()).map(str::to_string))
            .filter(|d| d.starts_with("sha256:"))),
        Err(e) if e.is_interrupt() => Err(e.into()),
        Err(_) => Ok(None),
    }
}

/// Where every image of the deployment is in its registry: `(kind, pinned reference)` per
/// image, or `None` when a tag is missing. All images are read at the same time: on AKS with
/// `az acr repository show` (by the ACR's name, no login), elsewhere with
/// `docker manifest inspect`. A tag found once in this run is not read again (the tag names
/// the content: image-build's probe answers image-push's), and callers asking at the same time
/// (preflight, image-build's early probe) share one read.
fn registry_pins(k: &Kube, cx: &Cx, imgs: &[Image], registry: &str) -> Result<Option<Vec<(String, String)>>> {
    let acr = if k.aks() { acr_name(k, cx) } else { None };
    let found: Vec<Result<Option<String>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = imgs
            .iter()
            .map(|i| {
                let acr = acr.as_deref();
                scope.spawn(move || {
                    let target = target_ref(i, registry);
                    // A tag names its content: once found, its digest holds for the run.
                    k.s.registry.get(&target, Option::is_some, || match acr {
                        Some(acr) => acr_digest(k, cx, acr, i),
                        None => registry_digest(&cx.runner, &target),
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("registry read thread")).collect()
    });
    let mut out = vec![];
    for (i, d) in imgs.iter().zip(found) {
        match d? {
            Some(d) => out.push((i.kind.to_string(), format!("{}@{d}", target_ref(i, registry)))),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// Whether the local engine has every reference: one `docker image inspect` of them all.
fn local_has_all(runner: &Runner, references: &[String]) -> Result<bool> {
    let cmd = docker()
        .args(["image", "inspect", "--format", "{{.Id}}"])
        .args(references.iter().map(String::as_str))
        .timeout(READ_TIMEOUT)
        .quiet()
        .ok_codes(&[0, 1]);
    let out = runner.run(&cmd)?;
    if out.code == 0 {
        return Ok(true);
    }
    let err = out.stderr.to_lowercase();
    if err.contains("no such image") || err.contains("no such object") {
        Ok(false)
    } else {
        bail!("`{}` exited with code 1: {}", cmd.display(), out.stderr.trim())
    }
}

/// Whether the local engine has `reference`.
fn local_has(runner: &Runner, reference: &str) -> Result<bool> {
    local_has_all(runner, &[reference.to_string()])
}

/// The digest of `reference` in its registry, or `None` when the tag is not there. Retried with
/// backoff on anything but a clear answer.
pub fn registry_digest(runner: &Runner, reference: &str) -> Result<Option<String>> {
    let mut cmd = docker().args(["manifest", "inspect", "--verbose"]);
    let host = registry_host(reference.rsplit_once(':').map_or(reference, |(r, _)| r));
    if loopback(host) {
        cmd = cmd.arg("--insecure");
    }
    let cmd = cmd.arg(reference).timeout(READ_TIMEOUT).quiet().ok_codes(&[0, 1]);
    let mut wait = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        let out = runner.run(&cmd)?;
        if out.code == 0 {
            return Ok(manifest_digest(&out.stdout));
        }
        let err = out.stderr.to_lowercase();
        if ["no such manifest", "manifest unknown", "name unknown", "not found"].iter().any(|m| err.contains(m)) {
            return Ok(None);
        }
        if attempt >= ATTEMPTS || crate::run::signals::interrupted() {
            bail!(
                "`{}` exited with code {} after {attempt} attempts: {}",
                runner.redactor.scrub(&cmd.display()),
                out.code,
                runner.redactor.scrub(out.stderr.trim())
            );
        }
        runner.info(&format!("registry read failed; retrying in {:.1}s", wait.as_secs_f64()));
        std::thread::sleep(wait);
        wait *= 2;
        attempt += 1;
    }
}

/// The manifest digest in `docker manifest inspect --verbose` output: one object for an image
/// manifest; an array (a multi-platform index, whose own digest it does not show) gives none.
fn manifest_digest(stdout: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(stdout).ok()?;
    let d = v.get("Descriptor")?.get("digest")?.as_str()?;
    d.starts_with("sha256:").then(|| d.to_string())
}

/// The digest `docker push` reports for `tag`: `<tag>: digest: sha256:… size: …`.
fn push_digest(stdout: &str, tag: &str) -> Option<String> {
    stdout.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(tag)?.strip_prefix(": digest: ")?;
        let d = rest.split_whitespace().next()?;
        d.starts_with("sha256:").then(|| d.to_string())
    })
}

/// Whether the registry already has every image tag of the deployment: then neither image
/// phase builds or pushes, and no docker command of the deploy needs the engine (preflight asks
/// for it otherwise). A registry that cannot be read counts as lacking them.
pub fn every_tag_in_registry(k: &Kube, cx: &Cx) -> bool {
    let Ok(imgs) = images(k) else { return false };
    let Some(registry) = push_registry(k, cx) else { return false };
    matches!(registry_pins(k, cx, &imgs, &registry), Ok(Some(_)))
}

fn build_outputs(imgs: &[Image]) -> Outputs {
    imgs.iter().map(|i| (format!("{}_ref", i.kind), i.local_ref())).collect()
}

pub fn probe(k: &Kube, p: &Phase, cx: &Cx) -> Result<Option<Outputs>> {
    let imgs = images(k)?;
    let registry = push_registry(k, cx).ok_or_else(|| anyhow!("the registry is unknown"))?;
    match p.id {
        "image-build" => {
            // The registry first: when it has every tag, the local engine is not asked (the
            // build would be skipped either way). Otherwise, and when the registry cannot be
            // read, the engine may have them all.
            let remote = registry_pins(k, cx, &imgs, &registry);
            if matches!(remote, Ok(Some(_))) {
                cx.runner.info(&format!("every image tag is already in {registry}: nothing to build"));
                return Ok(Some(build_outputs(&imgs)));
            }
            let refs: Vec<String> = imgs.iter().map(Image::local_ref).collect();
            if local_has_all(&cx.runner, &refs)? {
                cx.runner.info("the local engine already has every image tag: nothing to build");
                return Ok(Some(build_outputs(&imgs)));
            }
            remote?;
            Ok(None)
        }
        "image-push" => match registry_pins(k, cx, &imgs, &registry)? {
            Some(pins) => {
                cx.runner.info(&format!("every image tag is already in {registry}: nothing to push"));
                let mut out: Outputs = pins.into_iter().map(|(kind, r)| (format!("{kind}_image"), r)).collect();
                out.insert("registry".into(), registry);
                Ok(Some(out))
            }
            None => Ok(None),
        },
        _ => Err(super::unknown(p)),
    }
}

pub fn apply(k: &Kube, p: &Phase, cx: &Cx) -> Result<Outputs> {
    let imgs = images(k)?;
    match p.id {
        "image-build" => {
            let mut missing = vec![];
            for i in &imgs {
                if local_has(&cx.runner, &i.local_ref())? {
                    cx.runner.info(&format!("{} is already in the local engine: not rebuilt", i.local_ref()));
                } else {
                    missing.push(i);
                }
            }
            if !missing.is_empty() {
                let builder = Builder::detect(k, cx)?;
                builder.build_all(k, cx, &missing)?;
            }
            Ok(build_outputs(&imgs))
        }
        "image-push" => push(k, cx, &imgs),
        _ => Err(super::unknown(p)),
    }
}

/// Runs `f` for every image at the same time; the first error (in image order) is returned
/// once all have finished.
fn each_at_once<'a, T: Send>(imgs: &[&'a Image<'a>], f: impl Fn(&Image<'a>) -> Result<T> + Sync) -> Result<Vec<T>> {
    let results: Vec<Result<T>> = std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = imgs.iter().map(|i| scope.spawn(move || f(i))).collect();
        handles.into_iter().map(|h| h.join().expect("image thread")).collect()
    });
    results.into_iter().collect()
}

/// Pushes every image the registry lacks, all at the same time (a tag the registry already has
/// is not pushed again); the outputs pin each image by the registry's digest.
fn push(k: &Kube, cx: &Cx, imgs: &[Image]) -> Result<Outputs> {
    let registry = push_registry(k, cx).ok_or_else(|| anyhow!("the registry is unknown"))?;
    acr_login(k, cx)?;
    // What the registry has, and what must be built first (image-build skipped it because the
    // registry had it; since then the tag is gone and the engine lacks it too).
    let all: Vec<&Image> = imgs.iter().collect();
    let state = each_at_once(&all, |i| {
        let target = target_ref(i, &registry);
        let d = registry_digest(&cx.runner, &target)?;
        let local = d.is_some() || local_has(&cx.runner, &i.local_ref())?;
        Ok((d, local))
    })?;
    let unbuilt: Vec<&Image> =
        imgs.iter().zip(&state).filter(|(_, (d, l))| d.is_none() && !l).map(|(i, _)| i).collect();
    if !unbuilt.is_empty() {
        for i in &unbuilt {
            cx.runner
                .info(&format!("{} is neither in the registry nor in the local engine: building it", i.local_ref()));
        }
        Builder::detect(k, cx)?.build_all(k, cx, &unbuilt)?;
    }
    let pinned = each_at_once(&all, |i| {
        let idx = imgs.iter().position(|x| x.kind == i.kind).expect("image");
        let target = target_ref(i, &registry);
        if let Some(d) = &state[idx].0 {
            cx.runner.info(&format!("{target} is already in the registry: not pushed again"));
            return Ok(format!("{target}@{d}"));
        }
        let local = i.local_ref();
        if target != local {
            cx.runner.info(&format!(
                "the registry is {registry} (reported by infra), not {}: tagging {target}",
                registry_host(&i.r.repository)
            ));
            cx.runner.run(&docker().args(["tag", &local, &target]).timeout(READ_TIMEOUT))?;
        }
        let o = cx.runner.run(&docker().args(["push", &target]).timeout(PUSH_TIMEOUT).idempotent(ATTEMPTS))?;
        let digest = match push_digest(&o.stdout, &i.r.tag) {
            Some(d) => d,
            None => registry_digest(&cx.runner, &target)?
                .ok_or_else(|| anyhow!("`docker push {target}` reported no digest and the registry has no {target}"))?,
        };
        Ok(format!("{target}@{digest}"))
    })?;
    let mut out: Outputs = imgs.iter().zip(pinned).map(|(i, p)| (format!("{}_image", i.kind), p)).collect();
    out.insert("registry".into(), registry);
    Ok(out)
}

/// How `docker build` runs on this machine.
struct Builder {
    /// `docker buildx` answers: BuildKit builds (`--load --provenance=false`).
    buildkit: bool,
    /// The builder can export its cache to a registry: a buildx driver other than `docker`, or
    /// the `docker` driver on an engine with the containerd image store.
    cache_export: bool,
    /// `<registry>/<repository path>` of the build cache (`:buildcache`, `:buildcache-gpu`), when
    /// BuildKit builds and the registry can be read.
    cache_repo: Option<String>,
}

impl Builder {
    /// BuildKit when `docker buildx` answers, else the classic builder; with BuildKit, whether
    /// its driver exports cache, and the registry the cache lives in (on AKS after `az acr
    /// login`, which fails while the registry does not exist yet: then no cache).
    fn detect(k: &Kube, cx: &Cx) -> Result<Self> {
        let runner = &cx.runner;
        let cmd = docker().args(["buildx", "version"]).timeout(READ_TIMEOUT).quiet();
        match runner.run(&cmd) {
            Ok(_) => {}
            Err(CmdError::Failed { .. }) => {
                runner.info("docker buildx is not installed: building with the classic builder (DOCKER_BUILDKIT=0)");
                return Ok(Self { buildkit: false, cache_export: false, cache_repo: None });
            }
            Err(e) => return Err(e.into()),
        }
        let driver = runner
            .run(&docker().args(["buildx", "inspect"]).timeout(READ_TIMEOUT).quiet())
            .ok()
            .and_then(|o| o.stdout.lines().find_map(|l| l.trim().strip_prefix("Driver:").map(|d| d.trim().to_string())))
            .unwrap_or_default();
        let cache_export = if driver == "docker" || driver.is_empty() {
            runner
                .run(&docker().args(["info", "--format", "{{json .DriverStatus}}"]).timeout(READ_TIMEOUT).quiet())
                .is_ok_and(|o| o.stdout.contains("io.containerd.snapshotter"))
        } else {
            true
        };
        let registry = push_registry(k, cx);
        let reachable = match (k.aks(), &registry) {
            (_, None) => false,
            (true, Some(_)) => match acr_login(k, cx) {
                Ok(()) => true,
                Err(e) => {
                    runner.info(&format!("no build cache from the registry (cannot log in to it yet: {e:#})"));
                    false
                }
            },
            (false, Some(_)) => true,
        };
        let cache_repo = registry
            .filter(|_| reachable)
            .zip(k.s.d.image.repository.as_deref())
            .map(|(reg, repo)| format!("{reg}/{}", repository_path(repo)));
        if !cache_export {
            runner.info(&format!(
                "the buildx driver `{}` cannot export build cache (use a docker-container builder: docker buildx create --use): the cache is only read",
                if driver.is_empty() { "docker" } else { &driver }
            ));
        }
        Ok(Self { buildkit: true, cache_export, cache_repo })
    }

    /// The build cache reference of an image.
    fn cache_ref(&self, i: &Image) -> Option<String> {
        let repo = self.cache_repo.as_ref()?;
        Some(if i.kind == "cpu" { format!("{repo}:buildcache") } else { format!("{repo}:buildcache-{}", i.kind) })
    }

    fn command(&self, k: &Kube, i: &Image, context: &Path) -> Cmd {
        let dockerfile = k.s.rendered_dir().join("image").join("Dockerfile");
        let mut c = docker();
        if self.buildkit {
            // `docker buildx build`, not `docker build`: with buildx installed, the docker CLI
            // forwards `docker build` to the docker context's own builder (it sets
            // BUILDX_BUILDER to the context's name), not to the builder `docker buildx use`
            // selected, which is the one `docker buildx inspect` describes. A `--cache-to` meant
            // for a remote or docker-container builder would then fail the build ("Cache export
            // is not supported for the docker driver").
            c = c.args(["buildx", "build", "--load", "--provenance=false"]);
            if let Some(cache) = self.cache_ref(i) {
                c = c.arg("--cache-from").arg(format!("type=registry,ref={cache}"));
                if self.cache_export {
                    c = c.arg("--cache-to").arg(format!("type=registry,ref={cache},mode=max,ignore-error=true"));
                }
            }
        } else {
            c = c.arg("build").env("DOCKER_BUILDKIT", "0");
        }
        c = c.arg("-f").arg(dockerfile.to_string_lossy());
        if let Some(t) = i.base_tag {
            c = c.args(["--build-arg", &format!("BASE_TAG={t}")]);
        }
        c.args(["-t", &i.local_ref()]).arg(context.to_string_lossy()).timeout(BUILD_TIMEOUT)
    }

    /// Builds the images at the same time (one `docker build` each) from one staged context.
    fn build_all(&self, k: &Kube, cx: &Cx, imgs: &[&Image]) -> Result<()> {
        k.s.write_rendered()?;
        let context = build_context(k)?;
        each_at_once(imgs, |i| Ok(cx.runner.run(&self.command(k, i, &context))?)).map(|_| ())
    }
}

/// Where the staged build context of the generated Dockerfile lives.
fn staged_context(k: &Kube) -> PathBuf {
    k.s.dir.join("build-context")
}

/// The build context: the spec's folder for a user Dockerfile (with the rendered
/// `.dockerignore` beside the Dockerfile as `Dockerfile.dockerignore`, which BuildKit reads);
/// else a fresh staged copy of the job folders, at the same relative paths the generated `COPY`
/// lines name, without the files the image never receives, and the rendered `.dockerignore`.
fn build_context(k: &Kube) -> Result<PathBuf> {
    let d = &k.s.d;
    let ignore = k.s.rendered.files.get("image/.dockerignore").cloned().unwrap_or_default();
    if d.image.dockerfile.is_some() {
        super::cluster::write_for_tool(k, "image/Dockerfile.dockerignore", &ignore)?;
        return Ok(d.dir.clone());
    }
    let ctx = staged_context(k);
    if ctx.exists() {
        std::fs::remove_dir_all(&ctx).with_context(|| format!("removing {}", ctx.display()))?;
    }
    std::fs::create_dir_all(&ctx).with_context(|| format!("creating {}", ctx.display()))?;
    std::fs::write(ctx.join(".dockerignore"), ignore).with_context(|| format!("writing {}", ctx.display()))?;
    let state_root = d.dir.canonicalize().unwrap_or_else(|_| d.dir.clone()).join(".raydeploy");
    for (src, _) in &d.image.job_dirs {
        let rel = relative_inside(src)?;
        // The same rule as at validation: the folder (links resolved) is inside the spec's folder.
        let from = crate::spec::paths::resolve(&d.dir, src, crate::spec::paths::Kind::Folder)
            .map_err(|e| anyhow::anyhow!("job folder: {e}"))?;
        copy_tree(&from.path, &ctx.join(&rel), &state_root)
            .with_context(|| format!("staging job folder `{src}` for the image build"))?;
    }
    Ok(ctx)
}

/// `src` as a path inside the spec's folder (the build context), `.` components dropped.
fn relative_inside(src: &str) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(src).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => bail!("job folder `{src}` is not inside the spec's folder, which is the image's build context"),
        }
    }
    Ok(out)
}

/// Copies a folder (files keep their permissions, symlinks stay symlinks and are never
/// followed), leaving out `skip` and what the image never receives
/// ([`crate::spec::paths::image_ignored`], as its content hash does); a FIFO, socket or device
/// is refused.
fn copy_tree(from: &Path, to: &Path, skip: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let p = e.path();
        if p == skip {
            continue;
        }
        let ty = e.file_type()?;
        if crate::spec::paths::image_ignored(&p, &e.file_name(), ty.is_dir()) {
            continue;
        }
        let dst = to.join(e.file_name());
        if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&p)?, &dst)?;
        } else if ty.is_dir() {
            copy_tree(&p, &dst, skip)?;
        } else if ty.is_file() {
            std::fs::copy(&p, &dst)?;
        } else {
            return Err(std::io::Error::other(format!("{} is not a regular file, folder or link", p.display())));
        }
    }
    Ok(())
}

pub fn preview(k: &Kube, p: &Phase) -> Vec<String> {
    let Ok(imgs) = images(k) else { return vec![] };
    match p.id {
        "image-build" => {
            // BuildKit's flags (`--load --provenance=false`) or `DOCKER_BUILDKIT=0` are chosen
            // at run time, when `docker buildx` answers or not.
            let builder = Builder { buildkit: false, cache_export: false, cache_repo: None };
            let context = if k.s.d.image.dockerfile.is_some() { k.s.d.dir.clone() } else { staged_context(k) };
            imgs.iter().map(|i| builder.command(k, i, &context).display()).collect()
        }
        "image-push" => {
            let mut v = vec![];
            if k.aks() {
                let name = k.s.d.azure.as_ref().map_or("<acr>", |a| a.acr_name.as_str());
                v.push(Cmd::new("az").args(["acr", "login", "--name", name]).display());
            }
            for i in &imgs {
                v.push(docker().args(["push", &i.local_ref()]).display());
            }
            v
        }
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_parts() {
        assert_eq!(registry_host("127.0.0.1:5000/ray/x"), "127.0.0.1:5000");
        assert_eq!(repository_path("127.0.0.1:5000/ray/x"), "ray/x");
        assert_eq!(registry_host("acme/ray"), "docker.io");
        assert_eq!(repository_path("acme/ray"), "acme/ray");
        assert_eq!(registry_host("localhost/ray"), "localhost");
        assert_eq!(registry_host("ghcr.io/acme/ray"), "ghcr.io");
        assert!(loopback("127.0.0.1:5000"));
        assert!(loopback("localhost:5000"));
        assert!(loopback("[::1]:5000"));
        assert!(loopback("::1"));
        assert!(!loopback("ghcr.io"));
        assert!(!loopback("10.0.0.1:5000"));
    }

    #[test]
    fn digests() {
        let push = "The push refers to repository [127.0.0.1:5999/t/x]\n\
                    aa0f1a1f10c5: Pushed\n\
                    2.52.0-py312-abc: digest: sha256:6d29 size: 943\n";
        assert_eq!(push_digest(push, "2.52.0-py312-abc").as_deref(), Some("sha256:6d29"));
        assert_eq!(push_digest(push, "other"), None);
        let one = r#"{"Ref":"r","Descriptor":{"mediaType":"m","digest":"sha256:ab","size":1}}"#;
        assert_eq!(manifest_digest(one).as_deref(), Some("sha256:ab"));
        assert_eq!(manifest_digest(r#"[{"Descriptor":{"digest":"sha256:ab"}}]"#), None);
    }

    #[test]
    fn job_folders_stay_inside_the_context() {
        assert_eq!(relative_inside("./jobs/mnist/").unwrap(), PathBuf::from("jobs/mnist"));
        assert!(relative_inside("../elsewhere").is_err());
        assert!(relative_inside("/abs").is_err());
    }
}
