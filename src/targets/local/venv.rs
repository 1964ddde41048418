//! The local counterpart of the image: a Python virtual environment with `ray[default]` and the
//! spec's pip packages.
//!
//! Environments are content-addressed and shared: the key is a hash of the Python interpreter
//! (version and location), the Ray version and the sorted pip packages, and the environment lives
//! in `<cache>/venvs/<key>`, where `<cache>` is `$RAYDEPLOY_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/raydeploy`, else `~/.cache/raydeploy`. Every deployment (and every test run)
//! with the same inputs uses the same one, so Ray is installed once per machine. The deployment's
//! `.raydeploy/<deployment>/venv` is a symlink to it. An exclusive lock on `<key>.lock` serialises
//! builders; a `.raydeploy-complete` file written last marks a finished environment (a half-built
//! one is removed and built again).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::graph::Inputs;
use crate::model::ImageModel;
use crate::run::proc::{Cmd, Runner, sleep_unless_interrupted};
use crate::run::signals;

const COMPLETE: &str = ".raydeploy-complete";

/// The interpreter the environment is built from.
#[derive(Debug, Clone)]
pub struct Python {
    /// What was looked up (`python3.11`, `python3`, `$RAYDEPLOY_PYTHON`).
    pub command: String,
    /// `sys.executable` of that interpreter.
    pub executable: PathBuf,
    /// `3.11.7`
    pub version: String,
}

impl Python {
    pub fn minor(&self) -> String {
        self.version.split('.').take(2).collect::<Vec<_>>().join(".")
    }
}

/// `$RAYDEPLOY_PYTHON`, else `python<X.Y>` when on PATH (the spec's `image.python`), else
/// `python3`.
pub fn python_command(img: &ImageModel) -> String {
    if let Some(p) = std::env::var_os("RAYDEPLOY_PYTHON").filter(|p| !p.is_empty()) {
        return p.to_string_lossy().into_owned();
    }
    let exact = format!("python{}", img.python);
    if on_path(&exact) { exact } else { "python3".into() }
}

fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            std::fs::metadata(d.join(program)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Asks the interpreter for its executable and version.
pub fn find_python(runner: &Runner, img: &ImageModel) -> Result<Python> {
    let command = python_command(img);
    let out = runner
        .run(
            &Cmd::new(&command)
                .args(["-c", "import sys, platform; print(sys.executable); print(platform.python_version())"])
                .timeout(Duration::from_secs(60))
                .quiet(),
        )
        .with_context(|| {
            format!(
                "target local needs Python 3 with the venv module (`{command}`; set RAYDEPLOY_PYTHON to choose one)"
            )
        })?;
    let mut lines = out.stdout.lines();
    let (Some(exe), Some(version)) = (lines.next(), lines.next()) else {
        bail!("`{command}` did not print its executable and version: {:?}", out.stdout);
    };
    Ok(Python { command, executable: exe.trim().into(), version: version.trim().into() })
}

/// The pip requirements of the environment, in a stable order.
pub fn requirements(img: &ImageModel) -> Vec<String> {
    let mut pkgs = img.pip_packages.clone();
    pkgs.sort();
    pkgs.dedup();
    std::iter::once(format!("ray[default]=={}", img.ray_version)).chain(pkgs).collect()
}

/// The content address of the environment.
pub fn key(py: &Python, img: &ImageModel) -> String {
    let mut i = Inputs::new()
        .add("python-version", &py.version)
        .add("python-executable", py.executable.to_string_lossy().as_bytes());
    for r in requirements(img) {
        i = i.add("requirement", r);
    }
    i.finish()[..16].to_string()
}

/// `$RAYDEPLOY_CACHE_DIR`, `$XDG_CACHE_HOME/raydeploy` or `~/.cache/raydeploy`.
pub fn cache_root() -> PathBuf {
    crate::run::cache::root()
}

pub fn cached_path(key: &str) -> PathBuf {
    cache_root().join("venvs").join(key)
}

pub fn is_complete(venv: &Path, key: &str) -> bool {
    std::fs::read_to_string(venv.join(COMPLETE)).is_ok_and(|t| t.lines().next() == Some(key))
        && venv.join("bin").join("ray").is_file()
}

/// The commands that build the environment (for `--dry-run` and the build itself).
pub fn build_cmds(py: &Path, venv: &Path, img: &ImageModel) -> Vec<Cmd> {
    let vpy = venv.join("bin").join("python");
    vec![
        Cmd::new(py.to_string_lossy())
            .args(["-m", "venv"])
            .arg(venv.to_string_lossy())
            .timeout(Duration::from_secs(300)),
        Cmd::new(vpy.to_string_lossy())
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"])
            .args(requirements(img))
            .timeout(Duration::from_secs(1800)),
    ]
}

/// An exclusive `flock` on a file, released on drop.
struct FileLock(std::fs::File);

impl FileLock {
    fn acquire(path: &Path, runner: &Runner) -> Result<Self> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut told = false;
        loop {
            // SAFETY: flock(2) on a file descriptor this function owns.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Self(f));
            }
            if signals::interrupted() {
                bail!("interrupted while waiting for {}", path.display());
            }
            if !told {
                runner.info(&format!("waiting for another run that builds the same environment ({})", path.display()));
                told = true;
            }
            sleep_unless_interrupted(Duration::from_millis(250));
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking the descriptor locked in `acquire`.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// Makes sure the environment `key` exists (building it under the lock when it does not).
/// Returns true when it was built now.
pub fn ensure(runner: &Runner, py: &Python, img: &ImageModel, key: &str) -> Result<bool> {
    let venv = cached_path(key);
    if is_complete(&venv, key) {
        return Ok(false);
    }
    let _lock = FileLock::acquire(&venv.with_extension("lock"), runner)?;
    if is_complete(&venv, key) {
        return Ok(false);
    }
    if venv.exists() {
        runner.info(&format!("removing the unfinished environment {}", venv.display()));
        std::fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    runner.info(&format!("installing {} into {}", requirements(img).join(" "), venv.display()));
    for c in build_cmds(&py.executable, &venv, img) {
        runner.run(&c)?;
    }
    let mut f = std::fs::File::create(venv.join(COMPLETE))?;
    writeln!(f, "{key}\npython {} ({})", py.version, py.executable.display())?;
    for r in requirements(img) {
        writeln!(f, "{r}")?;
    }
    f.sync_all()?;
    Ok(true)
}

/// Points `link` (the deployment's `venv`) at `target`.
pub fn link(link: &Path, target: &Path) -> Result<()> {
    if std::fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    if let Some(d) = link.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = link.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).with_context(|| format!("linking {}", tmp.display()))?;
    std::fs::rename(&tmp, link).with_context(|| format!("replacing {}", link.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(pkgs: &[&str]) -> ImageModel {
        let d = crate::targets::local::example_deployment();
        ImageModel { pip_packages: pkgs.iter().map(|s| s.to_string()).collect(), ..d.image }
    }

    #[test]
    fn key_depends_on_every_input_but_not_package_order() {
        let py = Python { command: "python3".into(), executable: "/usr/bin/python3".into(), version: "3.11.7".into() };
        let a = key(&py, &img(&["numpy==2.0", "pandas"]));
        assert_eq!(a, key(&py, &img(&["pandas", "numpy==2.0"])));
        assert_ne!(a, key(&py, &img(&["pandas"])));
        let other = Python { version: "3.12.1".into(), ..py.clone() };
        assert_ne!(a, key(&other, &img(&["numpy==2.0", "pandas"])));
        assert_eq!(requirements(&img(&[]))[0], "ray[default]==2.52.0");
    }
}
