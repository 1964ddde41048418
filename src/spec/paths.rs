//! Every file and folder the spec names is read through this module, under one rule: a spec path
//! is relative, has no `..`, and resolves (links followed, then checked) to a regular file or a
//! folder inside the spec's folder. Files are size-capped and opened without blocking, so a FIFO,
//! a device or `/dev/zero` is refused instead of read.
//!
//! Job folders are walked by [`walk_tree`], which never follows a link: a link is hashed as the
//! text of its target, wherever it points (the image build copies links as links), folders are
//! checked for cycles, and the number of files and their total size are capped ([`Limits`]).

use std::collections::BTreeSet;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// Largest spec or overlay file read.
pub const MAX_SPEC_BYTES: u64 = 4 << 20;
/// Largest Dockerfile or secret file read.
pub const MAX_TEXT_BYTES: u64 = 1 << 20;
/// Largest template override read.
pub const MAX_TEMPLATE_BYTES: u64 = 256 << 10;
/// The folder of template overrides, next to the spec.
pub const TEMPLATES_DIR: &str = "templates";
/// Default cap on the total size of the files of one job folder.
pub const DEFAULT_MAX_JOB_BYTES: u64 = 1 << 30;
/// Default cap on the number of files of one job folder.
pub const DEFAULT_MAX_JOB_FILES: u64 = 20_000;
/// Environment variables that change those caps.
pub const MAX_JOB_BYTES_VAR: &str = "RAYDEPLOY_MAX_JOB_BYTES";
pub const MAX_JOB_FILES_VAR: &str = "RAYDEPLOY_MAX_JOB_FILES";

/// Why a path was refused, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PathError {
    pub message: String,
    pub help: String,
}

fn err(message: impl Into<String>, help: impl Into<String>) -> PathError {
    PathError { message: message.into(), help: help.into() }
}

const INSIDE_HELP: &str =
    "paths in the spec are relative to the spec's folder and stay inside it: move or copy the file into that folder";

/// What a spec path must name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Folder,
}

/// A spec path that passed the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// As written, without `.` components (empty for the spec's folder itself).
    pub rel: PathBuf,
    /// Absolute, every link resolved; inside the spec's folder.
    pub path: PathBuf,
}

/// The lexical half of the rule: relative, no `..`. Returns the path without `.` components.
pub fn check_relative(rel: &str) -> Result<PathBuf, PathError> {
    if rel.is_empty() {
        return Err(err("the path is empty", "give a path relative to the spec's folder"));
    }
    let mut out = PathBuf::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(err(format!("`{rel}` is an absolute path"), INSIDE_HELP));
            }
            Component::ParentDir => {
                return Err(err(format!("`{rel}` leaves the spec's folder (`..`)"), INSIDE_HELP));
            }
        }
    }
    Ok(out)
}

/// What a non-regular file is, for messages.
pub fn describe(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "a folder"
    } else if t.is_symlink() {
        "a link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Resolves `rel` against the spec's folder `dir` and checks the whole rule.
pub fn resolve(dir: &Path, rel: &str, kind: Kind) -> Result<Resolved, PathError> {
    let clean = check_relative(rel)?;
    let root = dir
        .canonicalize()
        .map_err(|e| err(format!("cannot resolve the spec's folder {}: {e}", dir.display()), INSIDE_HELP))?;
    let joined = root.join(&clean);
    let path = match joined.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(match std::fs::read_link(&joined) {
                Ok(target) => err(
                    format!("`{rel}` is a link to {}, which does not exist", target.display()),
                    "point the link at an existing file inside the spec's folder",
                ),
                Err(_) => err(
                    format!("`{rel}` does not exist ({})", joined.display()),
                    "the path is relative to the spec's folder",
                ),
            });
        }
        Err(e) => return Err(err(format!("cannot resolve `{rel}`: {e}"), INSIDE_HELP)),
    };
    if !path.starts_with(&root) {
        return Err(err(
            format!("`{rel}` resolves to {}, outside the spec's folder {}", path.display(), root.display()),
            INSIDE_HELP,
        ));
    }
    let m = std::fs::metadata(&path).map_err(|e| err(format!("cannot read `{rel}`: {e}"), INSIDE_HELP))?;
    match kind {
        Kind::File if !m.is_file() => {
            return Err(err(
                format!("`{rel}` is {}, not a regular file", describe(&m)),
                "name a regular file inside the spec's folder",
            ));
        }
        Kind::Folder if !m.is_dir() => {
            return Err(err(
                format!("`{rel}` is {}, not a folder", describe(&m)),
                "name a folder inside the spec's folder",
            ));
        }
        _ => {}
    }
    Ok(Resolved { rel: clean, path })
}

/// Reads a regular file of at most `max` bytes. Opened without blocking (a FIFO cannot hang the
/// read) and checked again on the open handle; with `follow: false` a link is refused.
pub fn read_regular(path: &Path, max: u64, follow: bool) -> Result<Vec<u8>, PathError> {
    let shown = path.display();
    let m = if follow { std::fs::metadata(path) } else { std::fs::symlink_metadata(path) }
        .map_err(|e| err(format!("cannot read {shown}: {e}"), "check the path"))?;
    if !m.is_file() {
        return Err(err(format!("{shown} is {}, not a regular file", describe(&m)), "name a regular file"));
    }
    let f = open_nonblocking(path, follow).map_err(|e| err(format!("cannot read {shown}: {e}"), "check the path"))?;
    let m = f.metadata().map_err(|e| err(format!("cannot read {shown}: {e}"), "check the path"))?;
    if !m.is_file() {
        return Err(err(format!("{shown} is {}, not a regular file", describe(&m)), "name a regular file"));
    }
    let too_big = || {
        err(
            format!("{shown} is larger than {}", human_bytes(max)),
            "raydeploy reads only small text files from the spec's folder",
        )
    };
    if m.len() > max {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(m.len() as usize);
    (&f).take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(format!("cannot read {shown}: {e}"), "check the file"))?;
    if bytes.len() as u64 > max {
        return Err(too_big());
    }
    Ok(bytes)
}

fn open_nonblocking(path: &Path, follow: bool) -> std::io::Result<File> {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path)
}

/// Reads a spec path that must be a UTF-8 text file of at most `max` bytes.
pub fn read_text(dir: &Path, rel: &str, max: u64) -> Result<(Resolved, String), PathError> {
    let r = resolve(dir, rel, Kind::File)?;
    let text = read_resolved_text(&r, rel, max)?;
    Ok((r, text))
}

fn read_resolved_text(r: &Resolved, rel: &str, max: u64) -> Result<String, PathError> {
    let bytes = read_regular(&r.path, max, false).map_err(|e| PathError { message: format!("`{rel}`: {e}"), ..e })?;
    String::from_utf8(bytes).map_err(|_| err(format!("`{rel}` is not UTF-8 text"), "save the file as UTF-8"))
}

/// Like [`read_text`] for a file that may be absent: `None` when nothing (not even a dangling
/// link) is at `rel`. With `within` (a folder of the spec's folder), the file must also resolve
/// inside that folder: a link may lead elsewhere in it, not out of it.
pub fn read_optional_text(dir: &Path, rel: &str, within: Option<&str>, max: u64) -> Result<Option<String>, PathError> {
    let clean = check_relative(rel)?;
    if let Err(e) = std::fs::symlink_metadata(dir.join(&clean))
        && e.kind() == std::io::ErrorKind::NotFound
    {
        return Ok(None);
    }
    let r = resolve(dir, rel, Kind::File)?;
    if let Some(w) = within {
        let folder = resolve(dir, w, Kind::Folder)?;
        if !r.path.starts_with(&folder.path) {
            return Err(err(
                format!("`{rel}` resolves to {}, outside {w}/", r.path.display()),
                format!("a file of {w}/ may link only to files inside {w}/: copy the file in"),
            ));
        }
    }
    read_resolved_text(&r, rel, max).map(Some)
}

/// A user template override, `<spec dir>/templates/<name>`: `None` when there is none, the text
/// when it is a UTF-8 regular file inside `templates/` (itself inside the spec's folder) of at
/// most [`MAX_TEMPLATE_BYTES`], an error otherwise (a link out of `templates/`, a FIFO, a folder,
/// a larger file).
pub fn template_override(spec_dir: &Path, name: &str) -> Result<Option<String>, PathError> {
    read_optional_text(spec_dir, &format!("{TEMPLATES_DIR}/{name}"), Some(TEMPLATES_DIR), MAX_TEMPLATE_BYTES)
        .map_err(|e| PathError { message: format!("template override: {}", e.message), ..e })
}

/// Reads the spec file itself (a path given on the command line, links followed): a regular
/// file of at most [`MAX_SPEC_BYTES`], UTF-8.
pub fn read_spec_file(path: &Path) -> Result<String, PathError> {
    let bytes = read_regular(path, MAX_SPEC_BYTES, true)?;
    String::from_utf8(bytes).map_err(|_| err(format!("{} is not UTF-8 text", path.display()), "save it as UTF-8"))
}

/// An environment name (`-e ENV`) names `environments/ENV.yaml`: letters, digits, `.`, `_`, `-`,
/// starting with a letter or digit, so it cannot leave that folder.
pub fn check_env_name(env: &str) -> Result<(), PathError> {
    let ok = env.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && env.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(err(
            format!("`{env}` is not an environment name"),
            "an environment is a file environments/ENV.yaml next to the spec; ENV is letters, digits, `.`, `_` and `-`",
        ))
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (u, s) in UNITS {
        if n >= s && n.is_multiple_of(s) {
            return format!("{} {u}", n / s);
        }
    }
    format!("{n} bytes")
}

// ---------------------------------------------------------------------------------------------
// job folders

/// Caps on one job folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_files: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: DEFAULT_MAX_JOB_BYTES, max_files: DEFAULT_MAX_JOB_FILES }
    }
}

impl Limits {
    /// The defaults, changed by [`MAX_JOB_BYTES_VAR`] and [`MAX_JOB_FILES_VAR`] (whole numbers;
    /// bytes also take a `Ki`/`Mi`/`Gi` suffix).
    pub fn from_vars(vars: &dyn Fn(&str) -> Option<String>) -> Result<Self, PathError> {
        let mut l = Limits::default();
        if let Some(v) = vars(MAX_JOB_BYTES_VAR) {
            l.max_bytes = parse_bytes(&v).ok_or_else(|| {
                err(
                    format!("{MAX_JOB_BYTES_VAR}={v:?} is not a size"),
                    "give a whole number of bytes, or one with Ki, Mi or Gi, e.g. 2Gi",
                )
            })?;
        }
        if let Some(v) = vars(MAX_JOB_FILES_VAR) {
            l.max_files = v
                .trim()
                .parse()
                .map_err(|_| err(format!("{MAX_JOB_FILES_VAR}={v:?} is not a whole number"), "e.g. 50000"))?;
        }
        Ok(l)
    }
}

fn parse_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)]
        .iter()
        .find_map(|(s, m)| v.strip_suffix(s).map(|n| (n, *m)))
        .unwrap_or((v, 1));
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// A link met while walking a job folder (never followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Relative to the job folder.
    pub rel: String,
    pub target: PathBuf,
    /// Where it leads when resolved, if inside the job folder and a regular file there.
    pub regular_inside: bool,
}

/// What a walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    pub files: u64,
    pub bytes: u64,
    pub links: Vec<Link>,
}

/// Names the Ray image never receives from a job folder, at any depth: left out of its content
/// hash, of the staged build context and listed in the rendered `image/.dockerignore`.
pub const IMAGE_IGNORED_NAMES: [&str; 7] =
    [".git", ".raydeploy", "__pycache__", ".pytest_cache", ".mypy_cache", ".ipynb_checkpoints", ".DS_Store"];
/// File suffixes the image never receives (compiled Python).
pub const IMAGE_IGNORED_SUFFIXES: [&str; 2] = [".pyc", ".pyo"];

/// Whether the entry `path` (named `name`) of a job folder stays out of the image: one of
/// [`IMAGE_IGNORED_NAMES`] or [`IMAGE_IGNORED_SUFFIXES`], or a folder `raydeploy render` wrote
/// (it holds the render's record, `.raydeploy-render.json`).
pub fn image_ignored(path: &Path, name: &std::ffi::OsStr, is_dir: bool) -> bool {
    let n = name.to_string_lossy();
    IMAGE_IGNORED_NAMES.contains(&n.as_ref())
        || IMAGE_IGNORED_SUFFIXES.iter().any(|s| n.ends_with(s))
        || (is_dir && std::fs::symlink_metadata(path.join(crate::render::output::MANIFEST)).is_ok_and(|m| m.is_file()))
}

/// Walks the job folder `root` in name order without following links, feeding `hasher` (when
/// given) with every name, link target text and file content. `skip` is left out (the state
/// folder when the job folder is the spec's folder). With a hasher (a job folder copied into the
/// image) the entries [`image_ignored`] names are left out too, as the image build leaves them
/// out. Errors name the file, relative to `root`.
pub fn walk_tree(
    root: &Path,
    skip: Option<&Path>,
    limits: Limits,
    mut hasher: Option<&mut Sha256>,
) -> Result<Tree, PathError> {
    let mut tree = Tree::default();
    let mut ancestors = BTreeSet::new();
    let m = std::fs::metadata(root).map_err(|e| err(format!("cannot read {}: {e}", root.display()), "check it"))?;
    ancestors.insert((m.dev(), m.ino()));
    walk(root, root, skip, limits, &mut hasher, &mut tree, &mut ancestors)?;
    Ok(tree)
}

fn walk(
    root: &Path,
    dir: &Path,
    skip: Option<&Path>,
    limits: Limits,
    hasher: &mut Option<&mut Sha256>,
    tree: &mut Tree,
    ancestors: &mut BTreeSet<(u64, u64)>,
) -> Result<(), PathError> {
    let rel_of = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let read_err = |p: &Path, e: std::io::Error| {
        err(format!("cannot read `{}`: {e}", rel_of(p)), "make every file of the job folder readable")
    };
    let mut entries = vec![];
    for e in std::fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
        entries.push(e.map_err(|e| read_err(dir, e))?);
    }
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if Some(p.as_path()) == skip {
            continue;
        }
        let name = e.file_name();
        let m = std::fs::symlink_metadata(&p).map_err(|e| read_err(&p, e))?;
        if hasher.is_some() && image_ignored(&p, &name, m.is_dir()) {
            continue;
        }
        if let Some(h) = hasher.as_deref_mut() {
            h.update(name.as_encoded_bytes());
        }
        let t = m.file_type();
        if t.is_symlink() {
            let target = std::fs::read_link(&p).map_err(|e| read_err(&p, e))?;
            if let Some(h) = hasher.as_deref_mut() {
                h.update(b"\0->\0");
                h.update(target.as_os_str().as_encoded_bytes());
                h.update(b"\0");
            }
            let regular_inside = root
                .canonicalize()
                .ok()
                .zip(p.canonicalize().ok())
                .is_some_and(|(r, t)| t.starts_with(&r) && t.metadata().is_ok_and(|m| m.is_file()));
            tree.links.push(Link { rel: rel_of(&p), target, regular_inside });
        } else if t.is_dir() {
            if !ancestors.insert((m.dev(), m.ino())) {
                return Err(err(
                    format!("`{}` is a folder that contains itself (a cycle)", rel_of(&p)),
                    "remove the mount or hard link that loops back",
                ));
            }
            walk(root, &p, skip, limits, hasher, tree, ancestors)?;
            ancestors.remove(&(m.dev(), m.ino()));
        } else if t.is_file() {
            tree.files += 1;
            if tree.files > limits.max_files {
                return Err(err(
                    format!(
                        "holds more than {} files (the limit {MAX_JOB_FILES_VAR}; reached at `{}`)",
                        limits.max_files,
                        rel_of(&p)
                    ),
                    format!("make the folder smaller, or raise the limit: {MAX_JOB_FILES_VAR}=<files>"),
                ));
            }
            tree.bytes = tree.bytes.saturating_add(m.len());
            if tree.bytes > limits.max_bytes {
                return Err(err(
                    format!(
                        "its files add up to more than {} (the limit {MAX_JOB_BYTES_VAR} is {}; reached at `{}`, {})",
                        human_bytes(limits.max_bytes),
                        limits.max_bytes,
                        rel_of(&p),
                        human_bytes(m.len())
                    ),
                    format!("make the folder smaller, or raise the limit: {MAX_JOB_BYTES_VAR}=<bytes>"),
                ));
            }
            let f = open_nonblocking(&p, false).map_err(|e| read_err(&p, e))?;
            let fm = f.metadata().map_err(|e| read_err(&p, e))?;
            if !fm.is_file() {
                return Err(err(format!("`{}` changed while it was read", rel_of(&p)), "try again"));
            }
            if let Some(h) = hasher.as_deref_mut() {
                h.update(fm.len().to_le_bytes());
                let n = std::io::copy(&mut (&f).take(fm.len()), h).map_err(|e| read_err(&p, e))?;
                if n != fm.len() {
                    return Err(err(format!("`{}` changed while it was read", rel_of(&p)), "try again"));
                }
            }
        } else {
            return Err(err(
                format!("`{}` is {}", rel_of(&p), describe(&m)),
                "a job folder holds regular files, folders and links only",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_rule() {
        assert_eq!(check_relative("./jobs/a/").unwrap(), PathBuf::from("jobs/a"));
        assert_eq!(check_relative(".").unwrap(), PathBuf::new());
        assert!(check_relative("/etc/passwd").unwrap_err().message.contains("absolute"));
        assert!(check_relative("../x").unwrap_err().message.contains(".."));
        assert!(check_relative("a/../../x").is_err());
        assert!(check_relative("").is_err());
    }

    #[test]
    fn env_names() {
        for ok in ["dev", "prod-eu", "a.b_c", "1"] {
            assert!(check_env_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "a/b", ".hidden", "-x", "a b"] {
            assert!(check_env_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_from_vars() {
        let none = |_: &str| None;
        assert_eq!(Limits::from_vars(&none).unwrap(), Limits::default());
        let set = |k: &str| match k {
            MAX_JOB_BYTES_VAR => Some("2Mi".to_string()),
            MAX_JOB_FILES_VAR => Some("7".to_string()),
            _ => None,
        };
        assert_eq!(Limits::from_vars(&set).unwrap(), Limits { max_bytes: 2 << 20, max_files: 7 });
        let bad = |k: &str| (k == MAX_JOB_FILES_VAR).then(|| "many".to_string());
        assert!(Limits::from_vars(&bad).unwrap_err().message.contains(MAX_JOB_FILES_VAR));
        assert_eq!(parse_bytes("10"), Some(10));
        assert_eq!(parse_bytes("1Gi"), Some(1 << 30));
        assert_eq!(parse_bytes("x"), None);
    }

    #[test]
    fn resolve_refuses_escapes_and_special_files() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("spec");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/f"), "x").unwrap();
        std::fs::write(d.path().join("outside"), "secret").unwrap();
        std::os::unix::fs::symlink("../outside", root.join("out")).unwrap();
        std::os::unix::fs::symlink("sub/f", root.join("in")).unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
        let r = resolve(&root, "in", Kind::File).unwrap();
        assert_eq!(r.path, root.canonicalize().unwrap().join("sub/f"));
        assert!(resolve(&root, "out", Kind::File).unwrap_err().message.contains("outside the spec's folder"));
        assert!(resolve(&root, "dangling", Kind::File).unwrap_err().message.contains("does not exist"));
        assert!(resolve(&root, "sub", Kind::File).unwrap_err().message.contains("a folder"));
        assert!(resolve(&root, "sub/f", Kind::Folder).is_err());
        assert!(resolve(&root, "missing", Kind::File).unwrap_err().message.contains("does not exist"));
        assert!(read_regular(Path::new("/dev/zero"), 10, true).unwrap_err().message.contains("a device"));
        std::fs::write(root.join("big"), vec![b'a'; 11]).unwrap();
        assert!(read_regular(&root.join("big"), 10, true).unwrap_err().message.contains("larger than"));
        assert!(read_regular(&root.join("in"), 10, false).unwrap_err().message.contains("a link"));
        assert_eq!(read_optional_text(&root, "absent", None, 10).unwrap(), None);
        assert!(read_optional_text(&root, "dangling", None, 10).is_err());
        // Within a folder: a link elsewhere in the spec's folder is refused, one inside it read.
        std::os::unix::fs::symlink("f", root.join("sub/g")).unwrap();
        std::fs::write(root.join("top"), "y").unwrap();
        std::os::unix::fs::symlink("../top", root.join("sub/up")).unwrap();
        assert_eq!(read_optional_text(&root, "sub/g", Some("sub"), 10).unwrap().as_deref(), Some("x"));
        assert_eq!(read_optional_text(&root, "sub/absent", Some("sub"), 10).unwrap(), None);
        let e = read_optional_text(&root, "sub/up", Some("sub"), 10).unwrap_err();
        assert!(e.message.contains("outside sub/"), "{e:?}");
    }

    #[test]
    fn walk_does_not_follow_links_and_caps() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("j/sub")).unwrap();
        std::fs::write(root.join("j/a.py"), "print(1)\n").unwrap();
        std::fs::write(root.join("j/sub/b.py"), "print(2)\n").unwrap();
        std::os::unix::fs::symlink(".", root.join("j/loop")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("j/zero")).unwrap();
        std::os::unix::fs::symlink("a.py", root.join("j/alias")).unwrap();
        let mut h = Sha256::new();
        let t = walk_tree(&root.join("j"), None, Limits::default(), Some(&mut h)).unwrap();
        assert_eq!((t.files, t.bytes), (2, 18));
        let links: Vec<_> = t.links.iter().map(|l| (l.rel.as_str(), l.regular_inside)).collect();
        assert_eq!(links, [("alias", true), ("loop", false), ("zero", false)]);
        let first = h.finalize();
        // a link's target text is part of the hash
        std::fs::remove_file(root.join("j/zero")).unwrap();
        std::os::unix::fs::symlink("/dev/null", root.join("j/zero")).unwrap();
        let mut h = Sha256::new();
        walk_tree(&root.join("j"), None, Limits::default(), Some(&mut h)).unwrap();
        assert_ne!(first, h.finalize());

        let e = walk_tree(&root.join("j"), None, Limits { max_files: 1, ..Limits::default() }, None).unwrap_err();
        assert!(e.message.contains(MAX_JOB_FILES_VAR), "{e}");
        let e = walk_tree(&root.join("j"), None, Limits { max_bytes: 10, ..Limits::default() }, None).unwrap_err();
        assert!(e.message.contains(MAX_JOB_BYTES_VAR) && e.message.contains("sub/b.py"), "{e}");
    }
}
