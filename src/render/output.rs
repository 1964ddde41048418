//! Writing rendered files to a folder, and comparing a folder with a render, without ever
//! following a link inside that folder.
//!
//! `render --out DIR` keeps a record, [`MANIFEST`], of every file it wrote there with its
//! sha256. A file in DIR is raydeploy's when the record lists it with its current content, or
//! when it is byte-identical to what this render writes at that path. Anything else (a user's
//! file, a link, a rendered file edited since) is someone else's: `render` refuses to write into a
//! folder holding such files, naming them, unless `--force`, and even then never removes them.
//! Only raydeploy's own files that the render no longer produces are removed.
//!
//! The rendered folder of a deployment's state (`.raydeploy/<deployment>/rendered`) belongs to
//! raydeploy as a whole: there every file of the layer folders that is not rendered is removed
//! (still without following links), except the files Terraform keeps next to its configuration.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Rendered;
use crate::spec::paths::{self, describe};

/// The record of what `render` wrote, in the output folder.
pub const MANIFEST: &str = ".raydeploy-render.json";
/// The folders raydeploy renders into.
pub const LAYERS: [&str; 4] = ["terraform", "image", "helm", "manifests"];
/// A rendered file larger than this is not read back (it cannot be one raydeploy wrote).
const MAX_RENDERED_BYTES: u64 = 64 << 20;
const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    generator: String,
    format_version: u32,
    /// Path relative to the output folder → `sha256:<hex>` of the content raydeploy wrote.
    files: BTreeMap<String, String>,
}

/// Who owns the output folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A deployment's state folder: every file of the layer folders is raydeploy's.
    State,
    /// A folder given to `render`: only what the record lists (or identical files) is raydeploy's.
    Out { force: bool },
}

/// A file in the output folder that raydeploy did not write (or that changed since).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    pub rel: String,
    pub why: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(
        "{} holds {} raydeploy did not write:\n{}\nnothing was written: move them away, choose another --out, or pass --force (raydeploy then writes its own files and leaves these alone)",
        out.display(),
        if foreign.len() == 1 { "a file".to_string() } else { format!("{} files", foreign.len()) },
        list(foreign)
    )]
    Refused { out: PathBuf, foreign: Vec<Foreign> },
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
}

fn list(foreign: &[Foreign]) -> String {
    const SHOWN: usize = 20;
    let mut lines: Vec<String> = foreign.iter().take(SHOWN).map(|f| format!("  {} ({})", f.rel, f.why)).collect();
    if foreign.len() > SHOWN {
        lines.push(format!("  … and {} more", foreign.len() - SHOWN));
    }
    lines.join("\n")
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> OutputError {
    OutputError::Io { path: path.to_path_buf(), message: e.to_string() }
}

/// What a write did.
#[derive(Debug, Default)]
pub struct Written {
    /// Files written (new or changed).
    pub written: Vec<String>,
    /// raydeploy's own files removed because the render no longer produces them.
    pub removed: Vec<String>,
    /// With `--force`: files of others left in place.
    pub kept: Vec<Foreign>,
    /// With `--force`: files of others at a path the render writes, replaced.
    pub replaced: Vec<Foreign>,
}

/// One non-folder entry of the output folder, seen without following links.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File,
    Link(PathBuf),
    Other(&'static str),
}

/// The output folder as found, classified against a render.
struct Survey {
    entries: BTreeMap<String, Entry>,
    had_manifest: bool,
    foreign: Vec<Foreign>,
    /// raydeploy's files that the render does not produce.
    stale: Vec<String>,
}

/// Files Terraform writes next to its configuration (providers, lock file, local state, plans):
/// neither raydeploy's nor the user's to account for.
fn tool_file(rel: &str) -> bool {
    rel.starts_with("terraform/")
        && (rel.split('/').any(|c| c == ".terraform")
            || rel.ends_with(".terraform.lock.hcl")
            || rel.ends_with(".tfplan")
            || rel.contains(".tfstate"))
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::model::build::hex(&Sha256::digest(bytes)))
}

/// The content of a regular file at `path` (never through a link), if it is one.
fn read_file(path: &Path) -> Option<Vec<u8>> {
    paths::read_regular(path, MAX_RENDERED_BYTES, false).ok()
}

/// Records `path` (seen without following a link) under its path relative to `root`, and
/// everything below it when it is a real folder.
fn visit(root: &Path, path: &Path, out: &mut BTreeMap<String, Entry>) -> Result<(), OutputError> {
    let rel = path.strip_prefix(root).unwrap_or(path).to_string_lossy().into_owned();
    if tool_file(&rel) {
        return Ok(());
    }
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path, e)),
    };
    let t = m.file_type();
    if t.is_dir() {
        walk(root, path, out)?;
    } else if t.is_symlink() {
        out.insert(rel, Entry::Link(std::fs::read_link(path).unwrap_or_default()));
    } else if t.is_file() {
        out.insert(rel, Entry::File);
    } else {
        out.insert(rel, Entry::Other(describe(&m)));
    }
    Ok(())
}

/// Visits every entry of the folder `dir` (itself already known to be a folder, not a link).
fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) -> Result<(), OutputError> {
    for e in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let e = e.map_err(|e| io_err(dir, e))?;
        visit(root, &e.path(), out)?;
    }
    Ok(())
}

impl Survey {
    fn take(r: &Rendered, out: &Path, mode: Mode) -> Result<Self, OutputError> {
        match std::fs::metadata(out) {
            Ok(m) if !m.is_dir() => return Err(io_err(out, format!("is {}, not a folder", describe(&m)))),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(out, e)),
            _ => {}
        }
        let mut entries = BTreeMap::new();
        match mode {
            // A layer folder that is a link is an entry itself (removed as such), never entered.
            Mode::State => {
                for layer in LAYERS {
                    visit(out, &out.join(layer), &mut entries)?;
                }
            }
            Mode::Out { .. } if out.is_dir() => walk(out, out, &mut entries)?,
            Mode::Out { .. } => {}
        }
        let manifest: Option<Manifest> = match mode {
            Mode::State => None,
            Mode::Out { .. } => entries
                .remove(MANIFEST)
                .and_then(|_| read_file(&out.join(MANIFEST)))
                .and_then(|b| serde_json::from_slice(&b).ok())
                .filter(|m: &Manifest| m.generator == "raydeploy"),
        };
        let mut s = Survey { entries, had_manifest: manifest.is_some(), foreign: vec![], stale: vec![] };
        for (rel, entry) in &s.entries {
            let rendered = r.files.get(rel);
            if mode == Mode::State {
                if rendered.is_none() {
                    s.stale.push(rel.clone());
                }
                continue;
            }
            let recorded = manifest.as_ref().and_then(|m| m.files.get(rel));
            let now = match entry {
                Entry::File if recorded.is_some() || rendered.is_some() => read_file(&out.join(rel)).map(|b| sha(&b)),
                _ => None,
            };
            let ours = now.is_some() && (now.as_ref() == recorded || now == rendered.map(|t| sha(t.as_bytes())));
            if ours {
                if rendered.is_none() {
                    s.stale.push(rel.clone());
                }
                continue;
            }
            let why = match (entry, recorded) {
                (Entry::Link(t), _) => format!("a link to {}", t.display()),
                (Entry::Other(what), _) => what.to_string(),
                (Entry::File, Some(_)) => "changed since raydeploy wrote it".to_string(),
                (Entry::File, None) => "not written by raydeploy".to_string(),
            };
            s.foreign.push(Foreign { rel: rel.clone(), why });
        }
        Ok(s)
    }
}

impl Rendered {
    /// Writes every file under `out` (a deployment's state folder, which raydeploy owns) and
    /// removes files of the layer folders that are no longer rendered. Links are never followed.
    pub fn write(&self, out: &Path) -> std::io::Result<()> {
        self.write_to(out, Mode::State).map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// Writes every file under `out` as [`Mode`] allows; see the module documentation.
    pub fn write_to(&self, out: &Path, mode: Mode) -> Result<Written, OutputError> {
        let survey = Survey::take(self, out, mode)?;
        let force = matches!(mode, Mode::Out { force: true });
        if !survey.foreign.is_empty() && !force {
            return Err(OutputError::Refused { out: out.to_path_buf(), foreign: survey.foreign });
        }
        let mut done = Written::default();
        for rel in &survey.stale {
            let p = out.join(rel);
            // remove_file unlinks a link itself, never its target.
            std::fs::remove_file(&p).map_err(|e| io_err(&p, e))?;
            done.removed.push(rel.clone());
        }
        for (rel, text) in &self.files {
            if write_file(out, rel, text.as_bytes())? {
                done.written.push(rel.clone());
            }
        }
        if let Mode::Out { .. } = mode {
            for f in survey.foreign {
                // a path the render writes, or a folder on the way to one, was replaced
                let replaced = self.files.keys().any(|k| k == &f.rel || k.starts_with(&format!("{}/", f.rel)));
                if replaced { done.replaced.push(f) } else { done.kept.push(f) }
            }
            if !self.files.is_empty() || survey.had_manifest {
                let m = Manifest {
                    generator: "raydeploy".into(),
                    format_version: MANIFEST_VERSION,
                    files: self.files.iter().map(|(k, v)| (k.clone(), sha(v.as_bytes()))).collect(),
                };
                let mut text = serde_json::to_string_pretty(&m).expect("manifest serializes");
                text.push('\n');
                write_file(out, MANIFEST, text.as_bytes())?;
            }
        }
        Ok(done)
    }

    /// A unified diff of `out` against this render, `None` when `render` (with `force` as
    /// given) would change nothing. Files of others are listed: `render` refuses them without
    /// `--force`. Nothing is read through a link.
    pub fn diff(&self, out: &Path, force: bool) -> Result<Option<String>, OutputError> {
        let survey = Survey::take(self, out, Mode::Out { force })?;
        let mut text = String::new();
        let read = |rel: &str| -> (String, Option<String>) {
            match survey.entries.get(rel) {
                None => (String::new(), None),
                Some(Entry::File) => match read_file(&out.join(rel)).map(String::from_utf8) {
                    Some(Ok(t)) => (t, None),
                    _ => (String::new(), Some("is not a readable UTF-8 file".to_string())),
                },
                Some(Entry::Link(t)) => (String::new(), Some(format!("is a link to {} (not followed)", t.display()))),
                Some(Entry::Other(what)) => (String::new(), Some(format!("is {what}"))),
            }
        };
        for (rel, want) in &self.files {
            let (have, note) = read(rel);
            if note.is_none() && &have == want {
                continue;
            }
            if let Some(n) = note {
                text.push_str(&format!("a/{rel} {n}\n"));
            }
            let d = similar::TextDiff::from_lines(have.as_str(), want.as_str());
            text.push_str(
                &d.unified_diff().context_radius(3).header(&format!("a/{rel}"), &format!("b/{rel}")).to_string(),
            );
        }
        for rel in &survey.stale {
            let (have, note) = read(rel);
            if let Some(n) = note {
                text.push_str(&format!("a/{rel} {n}\n"));
            }
            let d = similar::TextDiff::from_lines(have.as_str(), "");
            text.push_str(&d.unified_diff().header(&format!("a/{rel}"), "/dev/null").to_string());
        }
        if !force {
            for f in &survey.foreign {
                text.push_str(&format!(
                    "Only in {}: {} ({}; render refuses to write there without --force)\n",
                    out.display(),
                    f.rel,
                    f.why
                ));
            }
        }
        Ok((!text.is_empty()).then_some(text))
    }
}

/// Makes the folders of `rel` under `out`, replacing anything that is not a folder on the way
/// (a link is removed, never followed), and writes `bytes` at `rel` through a fresh temporary
/// file renamed over whatever is there. False when the file already held `bytes`.
fn write_file(out: &Path, rel: &str, bytes: &[u8]) -> Result<bool, OutputError> {
    let mut dir = out.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    let (name, folders) = parts.split_last().expect("a rendered path has a name");
    std::fs::create_dir_all(out).map_err(|e| io_err(out, e))?;
    for f in folders {
        dir.push(f);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => std::fs::remove_file(&dir).map_err(|e| io_err(&dir, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&dir, e)),
        }
        std::fs::create_dir(&dir).map_err(|e| io_err(&dir, e))?;
    }
    let path = dir.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => {
            return Err(io_err(&path, "a folder is where raydeploy writes a file: move it away"));
        }
        Ok(m) if m.is_file() && read_file(&path).as_deref() == Some(bytes) => return Ok(false),
        _ => {}
    }
    let tmp = dir.join(format!(".{name}.raydeploy-tmp"));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&tmp, e)),
        _ => {}
    }
    let result = (|| {
        // create_new: never opens through a link planted at the temporary name.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        // rename replaces a link at `path` itself, not its target.
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(&path, e));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(files: &[(&str, &str)]) -> Rendered {
        Rendered { files: files.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    fn symlink_dir(target: &Path, link: &Path) {
        std::os::unix::fs::symlink(target, link).unwrap();
    }

    #[test]
    fn stale_links_are_removed_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::write(victim.join("keep"), "keep").unwrap();
        let out = d.path().join("out");
        std::fs::create_dir_all(out.join("manifests")).unwrap();
        symlink_dir(&victim, &out.join("manifests/link"));
        // a whole layer folder that is a link
        symlink_dir(&victim, &out.join("image"));
        rendered(&[("helm/a.yaml", "a: 1\n"), ("image/Dockerfile", "FROM x\n")]).write(&out).unwrap();
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1);
        assert!(victim.join("keep").exists());
        assert!(std::fs::symlink_metadata(out.join("manifests/link")).is_err(), "the stale link itself is removed");
        assert!(std::fs::symlink_metadata(out.join("image")).unwrap().is_dir(), "the link is replaced by a folder");
        assert_eq!(std::fs::read_to_string(out.join("image/Dockerfile")).unwrap(), "FROM x\n");
    }

    #[test]
    fn out_folder_ownership() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path();
        std::fs::create_dir_all(out.join("helm/mychart")).unwrap();
        std::fs::write(out.join("helm/mychart/Chart.yaml"), "name: mine\n").unwrap();
        let r1 = rendered(&[("helm/a.yaml", "a: 1\n"), ("helm/old.yaml", "o\n")]);
        let e = r1.write_to(out, Mode::Out { force: false }).unwrap_err();
        assert!(e.to_string().contains("helm/mychart/Chart.yaml"), "{e}");
        assert!(!out.join("helm/a.yaml").exists(), "nothing written");
        let w = r1.write_to(out, Mode::Out { force: true }).unwrap();
        assert_eq!(w.kept.len(), 1);
        // a second render with the user's file still there needs --force again; it removes only
        // raydeploy's stale file
        let r2 = rendered(&[("helm/a.yaml", "a: 2\n")]);
        assert!(r2.diff(out, true).unwrap().unwrap().contains("a/helm/old.yaml"));
        r2.write_to(out, Mode::Out { force: true }).unwrap();
        assert!(!out.join("helm/old.yaml").exists());
        assert_eq!(std::fs::read_to_string(out.join("helm/mychart/Chart.yaml")).unwrap(), "name: mine\n");
        assert_eq!(r2.diff(out, true).unwrap(), None);
        // a rendered file edited by hand is no longer raydeploy's
        std::fs::remove_dir_all(out.join("helm/mychart")).unwrap();
        std::fs::write(out.join("helm/a.yaml"), "edited\n").unwrap();
        let e = r2.write_to(out, Mode::Out { force: false }).unwrap_err();
        assert!(e.to_string().contains("changed since raydeploy wrote it"), "{e}");
    }

    #[test]
    fn legacy_folder_with_exactly_the_render_is_adopted() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path();
        std::fs::create_dir_all(out.join("helm")).unwrap();
        std::fs::write(out.join("helm/a.yaml"), "a: 1\n").unwrap();
        let r = rendered(&[("helm/a.yaml", "a: 1\n")]);
        assert_eq!(r.diff(out, false).unwrap(), None);
        r.write_to(out, Mode::Out { force: false }).unwrap();
        assert!(out.join(MANIFEST).exists());
    }
}
