//! The spec layer: read `raydeploy.yaml`, apply the environment overlay, interpolate
//! `${env:VAR}`, check the structure against the schema and deserialize the typed [`Spec`].
//! Nothing here has side effects beyond reading the input files.

pub mod diag;
pub mod interp;
pub mod node;
pub mod overlay;
pub mod paths;
pub mod quantity;
pub mod schema_check;
pub mod types;

use std::path::{Path as FsPath, PathBuf};

pub use diag::{Problem, Problems, Report, Sources};
pub use node::{Node, Path};
pub use quantity::{CpuRequest, MemoryRequest};
pub use types::*;

/// A spec that passed structural checks, with the tree it came from (for locating later problems).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub spec: Spec,
    pub doc: Node,
    pub sources: Sources,
    /// Folder of the spec file: relative paths in the spec resolve against it.
    pub dir: PathBuf,
    pub env: Option<String>,
    /// Caps on each job folder (`RAYDEPLOY_MAX_JOB_BYTES`, `RAYDEPLOY_MAX_JOB_FILES`).
    pub job_limits: paths::Limits,
    /// The deployment's name: `name`, or `name-env` when an overlay applies and keeps `name`.
    pub deployment: String,
}

impl Loaded {
    /// Attaches positions to problems found by later layers (which know only field paths).
    pub fn report(&self, mut problems: Problems) -> Report {
        for p in &mut problems.0 {
            if p.loc.is_none() && !p.path.is_empty() {
                p.loc = Some(self.doc.locate_key(&Path::parse(&p.path)));
            }
        }
        Report { problems, sources: self.sources.clone() }
    }
}

/// Reads and checks a spec. `vars` resolves `${env:VAR}` (the process environment in the CLI).
pub fn load(path: &FsPath, env: Option<&str>, vars: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, Report> {
    let mut sources = Sources::default();
    let fail = |sources: &Sources, p: Problem| Report { problems: Problems(vec![p]), sources: sources.clone() };
    let text = paths::read_spec_file(path).map_err(|e| {
        fail(&sources, Problem::new("", format!("cannot read spec {}: {}", path.display(), e.message)).help(e.help))
    })?;
    let job_limits =
        paths::Limits::from_vars(vars).map_err(|e| fail(&sources, Problem::new("", e.message).help(e.help)))?;
    let dir =
        path.parent().map(|p| if p.as_os_str().is_empty() { FsPath::new(".") } else { p }).unwrap_or(FsPath::new("."));
    let src = sources.add(path.to_path_buf(), text.clone());
    let mut problems = Problems::default();
    let mut doc = parse_doc(&text, src, &sources, false, &mut problems)?;

    let mut name_from_overlay = false;
    if let Some(env) = env {
        let env_path = dir.join("environments").join(format!("{env}.yaml"));
        let env_text = match paths::check_env_name(env)
            .and_then(|()| paths::read_text(dir, &format!("environments/{env}.yaml"), paths::MAX_SPEC_BYTES))
        {
            Ok((_, text)) => text,
            Err(e) => {
                let available = list_envs(dir);
                let absent = paths::check_env_name(env).is_ok() && std::fs::symlink_metadata(&env_path).is_err();
                let what = if absent { "not found" } else { "cannot be used" };
                let mut p = Problem::new("", format!("environment `{env}` {what}: {}", e.message));
                p.help = Some(if available.is_empty() {
                    format!("{}; create environments/<env>.yaml with a partial spec to merge over the base", e.help)
                } else {
                    format!("available environments: {}", available.join(", "))
                });
                return Err(fail(&sources, p));
            }
        };
        let esrc = sources.add(env_path.clone(), env_text.clone());
        let overlay = parse_doc(&env_text, esrc, &sources, true, &mut problems)?;
        if !matches!(overlay.value, node::Value::Map(_)) {
            return Err(fail(
                &sources,
                Problem::new("", "an environment overlay must be a map of spec fields").at(overlay.loc),
            ));
        }
        name_from_overlay = overlay.get("name").is_some();
        for forbidden in ["apiVersion", "kind"] {
            if let Some(n) = overlay.get(forbidden) {
                problems.push(Problem::new(forbidden, format!("an overlay cannot change `{forbidden}`")).at(n.loc));
            }
        }
        overlay::merge(&mut doc, overlay, &Path::root(), &mut problems);
    }
    interp::interpolate(&mut doc, &Path::root(), vars, &mut problems);

    let schema_problems = schema_check::check(&doc);
    let structural_ok = schema_problems.is_empty();
    problems.0.extend(schema_problems.0);
    if !structural_ok || !problems.is_empty() {
        return Err(Report { problems, sources });
    }
    let spec: Spec = match serde_path_to_error::deserialize(doc.to_json()) {
        Ok(s) => s,
        Err(e) => {
            let path = Path::parse(&e.path().to_string());
            let message = schema_check::plain_type_message(&e.inner().to_string());
            let p = Problem::new(&path, message).at(doc.locate(&path).loc);
            return Err(Report { problems: Problems(vec![p]), sources });
        }
    };
    let deployment = match env {
        Some(env) if !name_from_overlay => format!("{}-{env}", spec.name),
        _ => spec.name.clone(),
    };
    Ok(Loaded { spec, doc, sources, dir: dir.to_path_buf(), env: env.map(String::from), job_limits, deployment })
}

/// Parses the spec or an overlay (`overlay`: an empty overlay changes nothing; an empty spec is an
/// error). Problems that do not stop the other checks (duplicate keys, unknown tags: each
/// document's own, found once, before merging) go to `problems`.
fn parse_doc(
    text: &str,
    src: usize,
    sources: &Sources,
    overlay: bool,
    problems: &mut Problems,
) -> Result<Node, Report> {
    let what = if overlay { "the environment overlay" } else { "the spec" };
    let parsed = node::parse(text, src, what).map_err(|e| Report {
        problems: Problems(vec![Problem::new("", e.message).at(e.loc)]),
        sources: sources.clone(),
    })?;
    problems.0.extend(parsed.problems.0);
    let mut doc = parsed.doc;
    if matches!(doc.value, node::Value::Null) {
        if overlay {
            doc.value = node::Value::Map(node::Map::new());
        } else {
            let p = Problem::new("", format!("the spec is empty: {} has no fields", sources.name(src)))
                .help("start from `raydeploy init`, which writes a commented starter spec")
                .at(doc.loc);
            return Err(Report { problems: Problems(vec![p]), sources: sources.clone() });
        }
    }
    if !matches!(doc.value, node::Value::Map(_)) {
        return Err(Report {
            problems: Problems(vec![
                Problem::new("", format!("a spec must be a map of fields, found {}", doc.kind())).at(doc.loc),
            ]),
            sources: sources.clone(),
        });
    }
    Ok(doc)
}

/// Environment names available next to the spec: every `environments/<env>.yaml` that a
/// `-e <env>` would load (a valid name, a regular file inside the spec's folder).
pub fn list_envs(dir: &FsPath) -> Vec<String> {
    let mut envs: Vec<String> = std::fs::read_dir(dir.join("environments"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".yaml").map(String::from))
        .filter(|env| {
            paths::check_env_name(env).is_ok()
                && paths::resolve(dir, &format!("environments/{env}.yaml"), paths::Kind::File).is_ok()
        })
        .collect();
    envs.sort();
    envs
}
