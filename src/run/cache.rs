//! The user's cache folder, and the versions tools reported about themselves, kept there per
//! binary; and data derived from files, kept by the hash of those files ([`derived`]: the
//! KubeRay CRDs as the crds phase applies them, parsed from megabytes of YAML once per chart).
//!
//! The folder is `$RAYDEPLOY_CACHE_DIR`, else `$XDG_CACHE_HOME/raydeploy`, else
//! `~/.cache/raydeploy` (the local target's Python environments live there too).
//!
//! Preflight asks terraform, helm and kubectl for their versions; each answer is a process
//! started (kubectl's and terraform's take a few hundred milliseconds cold). What a binary prints
//! about its own version cannot change while the binary does not, so [`ToolVersions`] keeps the
//! answer in `<cache>/tool-versions/`, one small JSON file per tool path and command, and reuses
//! it while the program still resolves (on `PATH`, links followed) to the same file with the same
//! size, modification time, change time, inode and device: an upgraded, replaced or re-linked
//! binary is asked again. Only a file of the program's own name is trusted this way: a link to a
//! multiplexer (mise's shims, snap, busybox) chooses the tool somewhere else, so it is always
//! asked. A shim script that picks the version from the working folder (asdf) changes without its
//! file changing: `RAYDEPLOY_NO_TOOL_CACHE=1` turns the cache off (nothing read or written), and
//! `deploy --refresh` asks every tool again and keeps the new answers.
//!
//! A missing, unreadable, corrupt or foreign entry is a miss, never an error. Entries are written
//! to a temporary file and renamed into place, so a reader never sees half of one; a failed write
//! is ignored (the cache is an optimisation only). Only an answer with exit code 0 is kept; the
//! checks read it exactly as they read the command's output, so their messages (too old, not
//! found) are the same whether it came from the cache or not.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::proc::{Cmd, CmdError, Runner};

/// `$RAYDEPLOY_CACHE_DIR`, `$XDG_CACHE_HOME/raydeploy` or `~/.cache/raydeploy`.
pub fn root() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("RAYDEPLOY_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("raydeploy")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("raydeploy")))
        .unwrap_or_else(|| std::env::temp_dir().join("raydeploy-cache"))
}

/// Set (to anything but `0`) to neither read nor write cached tool versions.
pub const NO_TOOL_CACHE: &str = "RAYDEPLOY_NO_TOOL_CACHE";

/// The format of an entry; another value is a miss.
const FORMAT: u32 = 1;
/// An entry larger than this is not one of ours: a miss.
const MAX_ENTRY: u64 = 64 * 1024;

/// The file a program name resolves to, as the kernel would run it, and what identifies its
/// content without reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binary {
    /// The resolved file (every link followed).
    pub path: String,
    pub size: u64,
    /// Modification and change times, seconds and nanoseconds.
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub ino: u64,
    pub dev: u64,
}

impl Binary {
    /// The binary `program` runs: looked up on `PATH` like `execvp` does (the first executable
    /// regular file), links followed. `None` when there is none, when its path is not UTF-8, or
    /// when the file it leads to has another name than the program (a multiplexer).
    pub fn resolve(program: &str) -> Option<Self> {
        let found = if program.contains('/') {
            Some(PathBuf::from(program))
        } else {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .filter(|d| !d.as_os_str().is_empty())
                .map(|d| d.join(program))
                .find(|p| executable_file(p))
        }?;
        let name = Path::new(program).file_name()?;
        let real = std::fs::canonicalize(found).ok()?;
        if real.file_name()? != name {
            return None;
        }
        Self::of(&real)
    }

    /// The identity of the file at `path` (already resolved).
    pub fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
        Some(Self {
            path: path.to_str()?.to_string(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
        })
    }
}

fn executable_file(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// One kept answer.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    format: u32,
    /// The command's arguments (the program is the binary).
    args: Vec<String>,
    binary: Binary,
    stdout: String,
}

/// Version answers kept per binary (see the module's documentation).
#[derive(Debug, Clone)]
pub struct ToolVersions {
    /// `<cache>/tool-versions`, or `None` when the cache is off.
    dir: Option<PathBuf>,
    /// Kept answers are used (not with `--refresh`, which asks again and keeps the answers).
    reuse: bool,
}

impl ToolVersions {
    /// The cache of this user; `refresh` (`deploy --refresh`) asks every tool again. Off when
    /// [`NO_TOOL_CACHE`] is set.
    pub fn new(refresh: bool) -> Self {
        let off = std::env::var_os(NO_TOOL_CACHE).is_some_and(|v| !v.is_empty() && v != "0");
        Self { dir: (!off).then(|| root().join("tool-versions")), reuse: !refresh }
    }

    /// A cache in `dir` (tests).
    pub fn at(dir: &Path) -> Self {
        Self { dir: Some(dir.to_path_buf()), reuse: true }
    }

    /// The stdout of `cmd` (a version command): the kept answer of the binary `cmd.program`
    /// resolves to, when that binary is unchanged since; else `cmd` runs and its answer is kept.
    pub fn output(&self, r: &Runner, cmd: &Cmd) -> Result<String, CmdError> {
        let binary = self.dir.as_ref().and_then(|_| Binary::resolve(&cmd.program));
        if let Some(b) = &binary
            && self.reuse
            && let Some(stdout) = self.lookup(&cmd.args, b)
        {
            r.note(&format!("{}: the answer {} gave before (unchanged since)", cmd.display(), b.path));
            return Ok(stdout);
        }
        let o = r.run(cmd)?;
        // Kept only when the binary did not change while it answered.
        if let Some(b) = binary
            && o.code == 0
            && Binary::of(Path::new(&b.path)).as_ref() == Some(&b)
        {
            self.store(&cmd.args, &b, &o.stdout);
        }
        Ok(o.stdout)
    }

    /// The entry's file for a binary and command.
    fn file(&self, args: &[String], b: &Binary) -> Option<PathBuf> {
        let mut key = crate::graph::Inputs::new().add("path", &b.path);
        for a in args {
            key = key.add("arg", a);
        }
        Some(self.dir.as_ref()?.join(format!("{}.json", &key.finish()[..32])))
    }

    /// The kept stdout, when the entry is for this very binary and command.
    pub fn lookup(&self, args: &[String], b: &Binary) -> Option<String> {
        let f = std::fs::File::open(self.file(args, b)?).ok()?;
        let mut text = String::new();
        f.take(MAX_ENTRY + 1).read_to_string(&mut text).ok()?;
        if text.len() as u64 > MAX_ENTRY {
            return None;
        }
        let e: Entry = serde_json::from_str(&text).ok()?;
        (e.format == FORMAT && e.args == args && e.binary == *b).then_some(e.stdout)
    }

    /// Keeps `stdout` for this binary and command (atomically; failures ignored).
    pub fn store(&self, args: &[String], b: &Binary, stdout: &str) {
        let (Some(dir), Some(file)) = (self.dir.as_ref(), self.file(args, b)) else { return };
        let e = Entry { format: FORMAT, args: args.to_vec(), binary: b.clone(), stdout: stdout.to_string() };
        let Ok(text) = serde_json::to_vec(&e) else { return };
        if text.len() as u64 > MAX_ENTRY || std::fs::create_dir_all(dir).is_err() {
            return;
        }
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
        if std::fs::write(&tmp, text).is_err() || std::fs::rename(&tmp, &file).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// Data derived from files, kept in `<cache>/<kind>/<key>` where `key` is a hash of everything it
/// was derived from (so an entry cannot go stale: other sources are another key). A missing or
/// unreadable entry is a miss; writes are atomic and a failed one is ignored.
pub fn derived(kind: &str, key: &str) -> Option<Vec<u8>> {
    derived_at(&root(), kind, key)
}

/// Keeps `bytes` as the [`derived`] entry `kind`/`key`.
pub fn keep_derived(kind: &str, key: &str, bytes: &[u8]) {
    keep_derived_at(&root(), kind, key, bytes)
}

fn derived_at(root: &Path, kind: &str, key: &str) -> Option<Vec<u8>> {
    std::fs::read(root.join(kind).join(key)).ok()
}

fn keep_derived_at(root: &Path, kind: &str, key: &str, bytes: &[u8]) {
    let dir = root.join(kind);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    if std::fs::write(&tmp, bytes).is_err() || std::fs::rename(&tmp, dir.join(key)).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::progress::Collect;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    #[test]
    fn derived_data_round_trips_and_a_missing_entry_is_a_miss() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(derived_at(t.path(), "k", "a.json"), None);
        keep_derived_at(t.path(), "k", "a.json", b"{}");
        assert_eq!(derived_at(t.path(), "k", "a.json").as_deref(), Some(&b"{}"[..]));
        // Written whole or not at all: no temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(t.path().join("k")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["a.json"]);
        // A cache folder that cannot be made is no error.
        std::fs::write(t.path().join("file"), "").unwrap();
        keep_derived_at(&t.path().join("file"), "k", "b.json", b"{}");
    }

    /// A tool `name` in `dir` that appends a line to `calls` and prints `version`.
    fn tool(dir: &Path, name: &str, calls: &Path, version: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\necho called >> '{}'\necho '{version}'\n", calls.display())).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn runner(dir: &Path) -> Runner {
        Runner::new("t", Some(&dir.join("t.log")), crate::run::redact::Redactor::new(), Arc::new(Collect::default()))
            .unwrap()
    }

    fn count(calls: &Path) -> usize {
        std::fs::read_to_string(calls).map(|t| t.lines().count()).unwrap_or(0)
    }

    #[test]
    fn a_hit_runs_nothing_and_a_changed_binary_is_asked_again() {
        let tmp = tempfile::tempdir().unwrap();
        let (bin, cache, calls) = (tmp.path().join("bin"), tmp.path().join("cache"), tmp.path().join("calls"));
        std::fs::create_dir_all(&bin).unwrap();
        let path = tool(&bin, "helm", &calls, "v3.16.2+g13654a5");
        let r = runner(tmp.path());
        let v = ToolVersions::at(&cache);
        let cmd = Cmd::new(path.to_str().unwrap()).args(["version", "--short"]);

        assert_eq!(v.output(&r, &cmd).unwrap().trim(), "v3.16.2+g13654a5");
        assert_eq!(count(&calls), 1, "a miss runs the command");
        assert_eq!(v.output(&r, &cmd).unwrap().trim(), "v3.16.2+g13654a5");
        assert_eq!(count(&calls), 1, "a hit runs nothing");
        assert!(std::fs::read_to_string(tmp.path().join("t.log")).unwrap().contains("the answer"));
        // Other arguments are another answer.
        v.output(&r, &Cmd::new(path.to_str().unwrap()).arg("version")).unwrap();
        assert_eq!(count(&calls), 2);

        // An upgrade: another size.
        tool(&bin, "helm", &calls, "v3.17.10+gabcdef0");
        assert_eq!(v.output(&r, &cmd).unwrap().trim(), "v3.17.10+gabcdef0");
        assert_eq!(count(&calls), 3);
        assert_eq!(v.output(&r, &cmd).unwrap().trim(), "v3.17.10+gabcdef0");
        assert_eq!(count(&calls), 3);

        // Same size, another modification time.
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000)).unwrap();
        drop(f);
        v.output(&r, &cmd).unwrap();
        assert_eq!(count(&calls), 4, "a new modification time is a miss");
        v.output(&r, &cmd).unwrap();
        assert_eq!(count(&calls), 4);

        // --refresh asks again, and keeps the answer for the next run.
        let refresh = ToolVersions { reuse: false, ..v.clone() };
        refresh.output(&r, &cmd).unwrap();
        assert_eq!(count(&calls), 5);
        v.output(&r, &cmd).unwrap();
        assert_eq!(count(&calls), 5);

        // Off: asked every time, nothing written.
        let off = ToolVersions { dir: None, reuse: true };
        off.output(&r, &cmd).unwrap();
        off.output(&r, &cmd).unwrap();
        assert_eq!(count(&calls), 7);
    }

    #[test]
    fn corrupt_foreign_or_unreadable_entries_are_misses() {
        let tmp = tempfile::tempdir().unwrap();
        let (cache, calls) = (tmp.path().join("cache"), tmp.path().join("calls"));
        let path = tool(tmp.path(), "kubectl", &calls, "{\"clientVersion\":{\"gitVersion\":\"v1.31.2\"}}");
        let r = runner(tmp.path());
        let v = ToolVersions::at(&cache);
        let cmd = Cmd::new(path.to_str().unwrap()).args(["version", "--client"]);
        v.output(&r, &cmd).unwrap();
        let entries: Vec<PathBuf> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(entries.len(), 1, "one entry, no temporary file left: {entries:?}");
        let entry = &entries[0];
        let good = std::fs::read_to_string(entry).unwrap();

        for bad in [
            "not json".to_string(),
            String::new(),
            good.replace("v1.31.2", "v1.31.2\"}").chars().take(good.len() / 2).collect(),
            good.replace("\"format\":1", "\"format\":99"),
            good.replace("--client", "--other"),
            "x".repeat(MAX_ENTRY as usize + 10),
        ] {
            std::fs::write(entry, &bad).unwrap();
            let before = count(&calls);
            assert!(v.output(&r, &cmd).unwrap().contains("v1.31.2"));
            assert_eq!(count(&calls), before + 1, "{bad:.40}: a miss");
            assert_eq!(std::fs::read_to_string(entry).unwrap(), good, "rewritten whole");
        }
        // An entry that cannot be read (a folder in its place) and a cache folder that cannot be
        // written: the command answers, nothing fails.
        std::fs::remove_file(entry).unwrap();
        std::fs::create_dir(entry).unwrap();
        assert!(v.output(&r, &cmd).unwrap().contains("v1.31.2"));
        let blocked = ToolVersions::at(&calls.join("not-a-folder"));
        assert!(blocked.output(&r, &cmd).unwrap().contains("v1.31.2"));
    }

    #[test]
    fn failures_are_not_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("terraform");
        std::fs::write(&p, format!("#!/bin/sh\necho x >> '{}'\nexit 1\n", tmp.path().join("calls").display())).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = runner(tmp.path());
        let v = ToolVersions::at(&tmp.path().join("cache"));
        let cmd = Cmd::new(p.to_str().unwrap()).arg("version");
        assert!(v.output(&r, &cmd).is_err());
        assert!(v.output(&r, &cmd).is_err());
        assert_eq!(count(&tmp.path().join("calls")), 2);
        assert!(!tmp.path().join("cache").exists());
    }

    #[test]
    fn programs_resolve_to_their_own_binary_only() {
        let tmp = tempfile::tempdir().unwrap();
        let calls = tmp.path().join("calls");
        let real = tool(tmp.path(), "helm", &calls, "v3");
        let multi = tool(tmp.path(), "mise", &calls, "v3");
        let links = tmp.path().join("links");
        std::fs::create_dir_all(&links).unwrap();
        std::os::unix::fs::symlink(&real, links.join("helm")).unwrap();
        std::os::unix::fs::symlink(&multi, links.join("kubectl")).unwrap();
        let b = Binary::resolve(links.join("helm").to_str().unwrap()).expect("a link to helm is helm");
        assert_eq!(Path::new(&b.path), std::fs::canonicalize(&real).unwrap());
        assert!(Binary::resolve(links.join("kubectl").to_str().unwrap()).is_none(), "a multiplexer is not cached");
        assert!(Binary::resolve(tmp.path().join("none").to_str().unwrap()).is_none());
    }
}
