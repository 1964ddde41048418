//! The azurerm provider's own schema and a checker of Terraform files against it.
//!
//! `tests/azurerm/schema.json` is `terraform providers schema -json` of the real provider, cut to
//! the resource types raydeploy renders or names; `tests/azurerm/backend.json` is the azurerm
//! backend's schema, read from Terraform's source (see tests/azurerm/PROVENANCE.md and
//! tests/azurerm/extract.sh). The checker walks every block of a rendered Terraform folder and
//! reports, as `file:line`, each argument or block the schema does not know, each required one
//! missing, each literal of the wrong type, each nested block given more or fewer times than its
//! nesting allows, each deprecated or computed-only argument set, each reference to an attribute
//! that does not exist, and a provider version constraint that excludes the provider the schema
//! comes from. Messages quote the schema's own description.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use hcl::edit::Span;
use hcl::edit::expr::{Expression, TraversalOperator};
use hcl::edit::structure::{Attribute, Block, BlockLabel, Body, Structure};
use hcl::edit::visit::{self, Visit};
use serde::Deserialize;
use serde_json::Value as Json;

/// Provider address in `providers schema -json`.
pub const AZURERM: &str = "registry.terraform.io/hashicorp/azurerm";

/// A block's schema, as `terraform providers schema -json` prints it.
#[derive(Debug, Deserialize)]
pub struct BlockSchema {
    #[serde(default)]
    pub attributes: BTreeMap<String, AttrSchema>,
    #[serde(default)]
    pub block_types: BTreeMap<String, NestedBlock>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub deprecated: bool,
}

#[derive(Debug, Deserialize)]
pub struct AttrSchema {
    /// cty type: `"string"`, `["list", "string"]`, `["object", {…}]`…
    #[serde(rename = "type", default)]
    pub ty: Option<Json>,
    #[serde(default)]
    pub nested_type: Option<NestedType>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub computed: bool,
    #[serde(default)]
    pub deprecated: bool,
    #[serde(default)]
    pub sensitive: bool,
}

/// An attribute whose value is an object (or collection of objects) described attribute by
/// attribute (plugin-framework resources).
#[derive(Debug, Deserialize)]
pub struct NestedType {
    #[serde(default)]
    pub attributes: BTreeMap<String, AttrSchema>,
    pub nesting_mode: String,
}

#[derive(Debug, Deserialize)]
pub struct NestedBlock {
    /// `single`, `group`, `list`, `set` or `map`.
    pub nesting_mode: String,
    pub block: BlockSchema,
    #[serde(default)]
    pub min_items: u64,
    #[serde(default)]
    pub max_items: u64,
}

#[derive(Debug, Deserialize)]
struct Versioned {
    block: BlockSchema,
}

#[derive(Debug, Deserialize)]
struct ProviderSchema {
    provider: Versioned,
    #[serde(default)]
    resource_schemas: BTreeMap<String, Versioned>,
    #[serde(default)]
    data_source_schemas: BTreeMap<String, Versioned>,
}

#[derive(Debug, Deserialize)]
struct SchemaFile {
    provider_schemas: BTreeMap<String, ProviderSchema>,
    /// Added by extract.sh: the provider version the schema was read from.
    provider_version: String,
}

/// The provider's argument reference (tests/azurerm/docs.json): type → block → argument → text.
#[derive(Debug, Default, Deserialize)]
struct TypeDocs {
    #[serde(default)]
    arguments: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    attributes: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct DocsFile {
    resources: BTreeMap<String, TypeDocs>,
}

#[derive(Debug, Deserialize)]
struct BackendFile {
    terraform_version: String,
    block: BlockSchema,
}

/// The committed schemas.
pub struct Schemas {
    pub provider_version: String,
    pub backend_terraform_version: String,
    provider: BlockSchema,
    pub resources: BTreeMap<String, BlockSchema>,
    pub data_sources: BTreeMap<String, BlockSchema>,
    backend: BlockSchema,
    docs: BTreeMap<String, TypeDocs>,
}

/// tests/azurerm
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/azurerm")
}

impl Schemas {
    pub fn load() -> Schemas {
        let read = |f: &str| {
            let p = dir().join(f);
            std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        let file: SchemaFile = serde_json::from_str(&read("schema.json")).expect("tests/azurerm/schema.json");
        let backend: BackendFile = serde_json::from_str(&read("backend.json")).expect("tests/azurerm/backend.json");
        let docs: DocsFile = serde_json::from_str(&read("docs.json")).expect("tests/azurerm/docs.json");
        let mut providers = file.provider_schemas;
        let p = providers.remove(AZURERM).expect("schema.json has no azurerm provider");
        Schemas {
            provider_version: file.provider_version,
            backend_terraform_version: backend.terraform_version,
            provider: p.provider.block,
            resources: p.resource_schemas.into_iter().map(|(k, v)| (k, v.block)).collect(),
            data_sources: p.data_source_schemas.into_iter().map(|(k, v)| (k, v.block)).collect(),
            backend: backend.block,
            docs: docs.resources,
        }
    }

    /// The provider's argument reference of `rtype`: (block name, "" for the resource itself;
    /// argument; text).
    pub fn argument_docs(&self, rtype: &str) -> Vec<(&str, &str, &str)> {
        let Some(d) = self.docs.get(rtype) else { return vec![] };
        d.arguments
            .iter()
            .flat_map(|(b, args)| args.iter().map(move |(k, t)| (b.as_str(), k.as_str(), t.as_str())))
            .collect()
    }

    /// Dotted paths of the nested blocks named `name` in `rtype` (`linux_profile.ssh_key`).
    pub fn block_paths(&self, rtype: &str, name: &str) -> Vec<String> {
        fn walk(b: &BlockSchema, prefix: &str, name: &str, out: &mut Vec<String>) {
            for (k, nb) in &b.block_types {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                if k == name {
                    out.push(path.clone());
                }
                walk(&nb.block, &path, name, out);
            }
        }
        let mut out = vec![];
        if let Some(b) = self.resources.get(rtype) {
            walk(b, "", name, &mut out);
        }
        out
    }

    /// The schema's description of `key` at `at` (`type` or `type.block.nested`), or the
    /// provider's argument reference where the schema has none, as ` (schema: "…")`.
    pub fn words(&self, at: &str, key: &str, description: &Option<String>) -> String {
        if let Some(d) = description.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
            return format!(" (schema: \"{d}\")");
        }
        let mut parts = at.split('.');
        let rtype = parts.next().unwrap_or_default();
        let block = parts.next_back().unwrap_or_default();
        let Some(docs) = self.docs.get(rtype) else { return String::new() };
        let text = docs
            .arguments
            .get(block)
            .and_then(|b| b.get(key))
            .or_else(|| docs.attributes.get(block).and_then(|b| b.get(key)));
        match text {
            Some(t) => format!(" (provider docs: \"{t}\")"),
            None => String::new(),
        }
    }

    /// The block schema at a dotted path of nested blocks (`default_node_pool.upgrade_settings`),
    /// with the attribute named by the last element when it is one.
    pub fn lookup(&self, rtype: &str, path: &str) -> Option<Found<'_>> {
        let mut block = self.resources.get(rtype)?;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if let Some(nb) = block.block_types.get(*part) {
                block = &nb.block;
                if last {
                    return Some(Found::Block(block));
                }
            } else if let (true, Some(a)) = (last, block.attributes.get(*part)) {
                return Some(Found::Attr(a));
            } else {
                return None;
            }
        }
        Some(Found::Block(block))
    }
}

pub enum Found<'a> {
    Attr(&'a AttrSchema),
    Block(&'a BlockSchema),
}

/// One finding, located in a rendered file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Meta-arguments Terraform itself accepts in a block, before the provider's schema applies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Meta {
    None,
    Resource,
    Data,
    Provider,
}

impl Meta {
    fn attrs(self) -> &'static [&'static str] {
        match self {
            Meta::Resource | Meta::Data => &["count", "for_each", "provider", "depends_on"],
            Meta::Provider => &["alias"],
            Meta::None => &[],
        }
    }
}

/// What a folder declares, for references to resolve against.
#[derive(Default)]
struct Declared {
    resources: BTreeSet<(String, String)>,
    data: BTreeSet<(String, String)>,
    locals: BTreeSet<String>,
    variables: BTreeSet<String>,
}

/// A file being checked: its name as reported and its text, for line numbers.
struct Src<'a> {
    name: &'a str,
    text: &'a str,
}

impl Src<'_> {
    fn line(&self, span: Option<std::ops::Range<usize>>) -> usize {
        let at = span.map(|r| r.start).unwrap_or(0).min(self.text.len());
        self.text[..at].bytes().filter(|b| *b == b'\n').count() + 1
    }
}

/// The checker's findings and what it looked at.
pub struct Checker<'s> {
    s: &'s Schemas,
    pub problems: Vec<Problem>,
    /// Provider, backend, resource and data blocks, and every nested block inside them.
    pub blocks: usize,
    /// Arguments checked against the schema (meta-arguments not counted).
    pub arguments: usize,
    /// References (`azurerm_x.y.attr`, `local.x`, `var.x`) resolved.
    pub references: usize,
    /// `type` and `type.block.argument` paths the checked files set, for coverage.
    pub seen: BTreeSet<String>,
    /// The same, per provider, backend, resource or data block: (its type, its paths).
    pub instances: Vec<(String, BTreeSet<String>)>,
}

fn label_str(l: &BlockLabel) -> &str {
    match l {
        BlockLabel::Ident(i) => i.as_str(),
        BlockLabel::String(s) => s.as_str(),
    }
}

impl<'s> Checker<'s> {
    pub fn new(s: &'s Schemas) -> Self {
        Checker {
            s,
            problems: vec![],
            blocks: 0,
            arguments: 0,
            references: 0,
            seen: BTreeSet::new(),
            instances: vec![],
        }
    }

    /// Checks every `*.tf` file of `dir`; `prefix` names the render in the messages.
    pub fn check_folder(&mut self, dir: &Path, prefix: &str) {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "tf"))
            .collect();
        files.sort();
        let sources: Vec<(String, String)> = files
            .iter()
            .map(|p| {
                let name = format!("{prefix}{}", p.file_name().unwrap().to_string_lossy());
                (name, std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            })
            .collect();
        self.check_sources(&sources);
    }

    /// Checks a set of files forming one Terraform configuration: (name, text).
    pub fn check_sources(&mut self, files: &[(String, String)]) {
        let mut parsed = vec![];
        for (name, text) in files {
            match hcl::edit::parser::parse_body(text) {
                Ok(body) => parsed.push((name.as_str(), text.as_str(), body)),
                Err(e) => self.problems.push(Problem {
                    file: name.clone(),
                    line: e.location().line(),
                    message: format!("does not parse: {}", e.message()),
                }),
            }
        }
        let mut declared = Declared::default();
        for (_, _, body) in &parsed {
            for b in body.blocks() {
                let labels: Vec<&str> = b.labels.iter().map(label_str).collect();
                match (b.ident.as_str(), labels.as_slice()) {
                    ("resource", [t, n]) => {
                        declared.resources.insert((t.to_string(), n.to_string()));
                    }
                    ("data", [t, n]) => {
                        declared.data.insert((t.to_string(), n.to_string()));
                    }
                    ("variable", [n]) => {
                        declared.variables.insert(n.to_string());
                    }
                    ("locals", []) => declared.locals.extend(b.body.attributes().map(|a| a.key.to_string())),
                    _ => {}
                }
            }
        }
        for (name, text, body) in &parsed {
            let src = Src { name, text };
            self.top(&src, body, &declared);
        }
    }

    /// Closes a top-level block: its paths become an instance, and join the outer set.
    fn instance(&mut self, kind: &str, outer: BTreeSet<String>) {
        let mine = std::mem::replace(&mut self.seen, outer);
        self.seen.extend(mine.iter().cloned());
        self.instances.push((kind.to_string(), mine));
    }

    fn problem(&mut self, src: &Src, span: Option<std::ops::Range<usize>>, message: String) {
        self.problems.push(Problem { file: src.name.to_string(), line: src.line(span), message });
    }

    fn top(&mut self, src: &Src, body: &Body, d: &Declared) {
        for st in body.iter() {
            let b = match st {
                Structure::Attribute(a) => {
                    self.problem(src, a.span(), format!("`{}`: an argument outside any block", a.key.as_str()));
                    continue;
                }
                Structure::Block(b) => b,
            };
            let labels: Vec<&str> = b.labels.iter().map(label_str).collect();
            match (b.ident.as_str(), labels.as_slice()) {
                ("terraform", []) => self.terraform(src, b, d),
                ("provider", ["azurerm"]) => {
                    self.blocks += 1;
                    let outer = std::mem::take(&mut self.seen);
                    self.seen.insert("provider \"azurerm\"".into());
                    self.body(
                        src,
                        &self.s.provider,
                        &b.body,
                        "provider \"azurerm\"",
                        Meta::Provider,
                        None,
                        d,
                        b.span(),
                    );
                    self.instance("provider \"azurerm\"", outer);
                }
                ("provider", [other]) => {
                    self.problem(src, b.span(), format!("provider `{other}`: no schema committed for it"))
                }
                ("resource", [t, _]) | ("data", [t, _]) => {
                    let data = b.ident.as_str() == "data";
                    let schema = if data { self.s.data_sources.get(*t) } else { self.s.resources.get(*t) };
                    let Some(schema) = schema else {
                        let what = if data { "data source" } else { "resource" };
                        self.problem(
                            src,
                            b.span(),
                            format!(
                                "{what} type `{t}` is not in tests/azurerm/schema.json (azurerm {}): unknown to the \
                                 provider, or add it to tests/azurerm/extract.sh",
                                self.s.provider_version
                            ),
                        );
                        continue;
                    };
                    self.blocks += 1;
                    let at = if data { format!("data.{t}") } else { t.to_string() };
                    let outer = std::mem::take(&mut self.seen);
                    self.seen.insert(at.clone());
                    if schema.deprecated {
                        self.problem(
                            src,
                            b.span(),
                            format!("{at} is deprecated{}", self.s.words(&at, "", &schema.description)),
                        );
                    }
                    let meta = if data { Meta::Data } else { Meta::Resource };
                    self.body(src, schema, &b.body, &at, meta, Some(schema), d, b.span());
                    self.instance(&at, outer);
                }
                ("locals", []) => {
                    for a in b.body.attributes() {
                        self.refs(src, &a.value, d);
                    }
                }
                ("variable", [_]) => self.fixed(
                    src,
                    b,
                    &["type", "default", "description", "sensitive", "nullable", "ephemeral"],
                    &["validation"],
                    d,
                ),
                ("output", [_]) => {
                    self.fixed(
                        src,
                        b,
                        &["value", "description", "sensitive", "depends_on", "ephemeral"],
                        &["precondition"],
                        d,
                    );
                    if !b.body.has_attribute("value") {
                        self.problem(src, b.span(), "output without `value`".into());
                    }
                }
                (other, _) => self.problem(
                    src,
                    b.span(),
                    format!("top-level block `{other}` with labels {labels:?}: not checked against any schema"),
                ),
            }
        }
    }

    /// A block whose arguments Terraform itself defines (variable, output).
    fn fixed(&mut self, src: &Src, b: &Block, attrs: &[&str], blocks: &[&str], d: &Declared) {
        for st in b.body.iter() {
            match st {
                Structure::Attribute(a) => {
                    if !attrs.contains(&a.key.as_str()) {
                        self.problem(
                            src,
                            a.span(),
                            format!("`{}` is not an argument of `{}`", a.key.as_str(), b.ident.as_str()),
                        );
                    }
                    if a.key.as_str() != "type" {
                        self.refs(src, &a.value, d);
                    }
                }
                Structure::Block(x) => {
                    if !blocks.contains(&x.ident.as_str()) {
                        self.problem(
                            src,
                            x.span(),
                            format!("`{}` is not a block of `{}`", x.ident.as_str(), b.ident.as_str()),
                        );
                    }
                }
            }
        }
    }

    fn terraform(&mut self, src: &Src, b: &Block, d: &Declared) {
        for st in b.body.iter() {
            match st {
                Structure::Attribute(a) => match a.key.as_str() {
                    "required_version" => {
                        if !matches!(a.value, Expression::String(_)) {
                            self.problem(src, a.span(), "`required_version` must be a string literal".into());
                        }
                    }
                    k => self.problem(src, a.span(), format!("`{k}` is not an argument of the terraform block")),
                },
                Structure::Block(x) => {
                    let labels: Vec<&str> = x.labels.iter().map(label_str).collect();
                    match (x.ident.as_str(), labels.as_slice()) {
                        ("required_providers", []) => self.required_providers(src, x),
                        ("backend", ["azurerm"]) => {
                            self.blocks += 1;
                            let outer = std::mem::take(&mut self.seen);
                            self.seen.insert("backend.azurerm".into());
                            let at = format!("backend \"azurerm\" (Terraform {})", self.s.backend_terraform_version);
                            self.body(src, &self.s.backend, &x.body, &at, Meta::None, None, d, x.span());
                            self.instance("backend.azurerm", outer);
                        }
                        ("backend", [other]) => {
                            self.problem(src, x.span(), format!("backend `{other}`: no schema committed for it"))
                        }
                        (other, _) => {
                            self.problem(src, x.span(), format!("`{other}` is not checked inside the terraform block"))
                        }
                    }
                }
            }
        }
    }

    fn required_providers(&mut self, src: &Src, b: &Block) {
        for a in b.body.attributes() {
            let Expression::Object(obj) = &a.value else {
                self.problem(
                    src,
                    a.span(),
                    format!("required_providers.{}: expected {{ source, version }}", a.key.as_str()),
                );
                continue;
            };
            let get = |k: &str| {
                obj.iter().find_map(|(key, v)| {
                    let name = match key {
                        hcl::edit::expr::ObjectKey::Ident(i) => i.as_str().to_string(),
                        hcl::edit::expr::ObjectKey::Expression(Expression::String(s)) => s.as_str().to_string(),
                        _ => return None,
                    };
                    match v.expr() {
                        Expression::String(s) if name == k => Some(s.as_str().to_string()),
                        _ => None,
                    }
                })
            };
            if a.key.as_str() != "azurerm" {
                self.problem(src, a.span(), format!("provider `{}`: no schema committed for it", a.key.as_str()));
                continue;
            }
            match get("source").as_deref() {
                Some("hashicorp/azurerm") | Some("registry.terraform.io/hashicorp/azurerm") => {}
                other => self.problem(src, a.span(), format!("azurerm's source is {other:?}, not hashicorp/azurerm")),
            }
            let version = self.s.provider_version.clone();
            match get("version") {
                None => self.problem(src, a.span(), "azurerm has no version constraint".into()),
                Some(c) => match raydeploy::render::terraform::constraint_admits(&c, &version) {
                    Ok(true) => {}
                    Ok(false) => self.problem(
                        src,
                        a.span(),
                        format!(
                            "version constraint \"{c}\" excludes azurerm {version}, the provider the schema comes from"
                        ),
                    ),
                    Err(e) => self.problem(src, a.span(), format!("version constraint \"{c}\": {e}")),
                },
            }
        }
    }

    /// Checks a block body against `schema`; `at` names it in messages; `resource` is the
    /// enclosing resource's schema (for `ignore_changes`).
    #[allow(clippy::too_many_arguments)]
    fn body(
        &mut self,
        src: &Src,
        schema: &BlockSchema,
        body: &Body,
        at: &str,
        meta: Meta,
        resource: Option<&BlockSchema>,
        d: &Declared,
        owner: Option<std::ops::Range<usize>>,
    ) {
        let mut present: BTreeMap<String, bool> = BTreeMap::new(); // name → set to a non-null value
        let mut counts: BTreeMap<String, Vec<Option<std::ops::Range<usize>>>> = BTreeMap::new();
        let mut dynamic: BTreeSet<String> = BTreeSet::new();
        for st in body.iter() {
            match st {
                Structure::Attribute(a) => self.attribute(src, schema, a, at, meta, d, &mut present),
                Structure::Block(b) => {
                    let name = b.ident.as_str();
                    if name == "dynamic" {
                        let Some(label) = b.labels.first().map(label_str) else {
                            self.problem(src, b.span(), "`dynamic` without a label".into());
                            continue;
                        };
                        dynamic.insert(label.to_string());
                        match (schema.block_types.get(label), b.body.blocks().find(|c| c.ident.as_str() == "content")) {
                            (Some(nb), Some(content)) => {
                                self.blocks += 1;
                                self.body(
                                    src,
                                    &nb.block,
                                    &content.body,
                                    &format!("{at}.{label}"),
                                    Meta::None,
                                    resource,
                                    d,
                                    b.span(),
                                )
                            }
                            (None, _) => self.problem(src, b.span(), format!("`{label}` is not a block of {at}")),
                            (_, None) => self.problem(src, b.span(), format!("dynamic `{label}` has no content block")),
                        }
                        continue;
                    }
                    if meta == Meta::Resource || meta == Meta::Data {
                        match name {
                            "lifecycle" => {
                                self.lifecycle(src, b, at, resource.unwrap_or(schema), d);
                                continue;
                            }
                            "provisioner" | "connection" if meta == Meta::Resource => {
                                self.problem(src, b.span(), format!("`{name}` in {at}: not checked"));
                                continue;
                            }
                            _ => {}
                        }
                    }
                    let Some(nb) = schema.block_types.get(name) else {
                        if schema.attributes.contains_key(name) {
                            self.problem(
                                src,
                                b.span(),
                                format!("`{name}` is an argument of {at}, not a block: write `{name} = …`"),
                            );
                        } else {
                            self.problem(
                                src,
                                b.span(),
                                format!("`{name}` is not a block of {at}{}", hint(schema, name)),
                            );
                        }
                        continue;
                    };
                    self.blocks += 1;
                    let path = format!("{at}.{name}");
                    self.seen.insert(path.clone());
                    counts.entry(name.to_string()).or_default().push(b.span());
                    if nb.block.deprecated {
                        self.problem(
                            src,
                            b.span(),
                            format!(
                                "block `{name}` of {at} is deprecated{}",
                                self.s.words(at, name, &nb.block.description)
                            ),
                        );
                    }
                    let want_labels = usize::from(nb.nesting_mode == "map");
                    if b.labels.len() != want_labels {
                        self.problem(
                            src,
                            b.span(),
                            format!(
                                "block `{name}` of {at} takes {want_labels} label(s) (nesting mode {}), {} given",
                                nb.nesting_mode,
                                b.labels.len()
                            ),
                        );
                    }
                    self.body(src, &nb.block, &b.body, &path, Meta::None, resource, d, b.span());
                }
            }
        }
        for (name, attr) in &schema.attributes {
            if attr.required && !present.get(name).copied().unwrap_or(false) {
                self.problem(
                    src,
                    owner.clone(),
                    format!(
                        "required argument `{name}` of {at} is missing{}",
                        self.s.words(at, name, &attr.description)
                    ),
                );
            }
        }
        for (name, nb) in &schema.block_types {
            if dynamic.contains(name) {
                continue;
            }
            let given = counts.get(name).map(Vec::as_slice).unwrap_or(&[]);
            let max = match nb.nesting_mode.as_str() {
                "single" | "group" => 1,
                _ => nb.max_items,
            };
            let min = if nb.nesting_mode == "single" && nb.min_items > 0 { 1 } else { nb.min_items };
            if (given.len() as u64) < min {
                self.problem(
                    src,
                    owner.clone(),
                    format!(
                        "{at} needs at least {min} `{name}` block(s), {} given (nesting mode {}){}",
                        given.len(),
                        nb.nesting_mode,
                        self.s.words(at, name, &nb.block.description)
                    ),
                );
            }
            if max > 0 && given.len() as u64 > max {
                self.problem(
                    src,
                    given[max as usize].clone(),
                    format!(
                        "{at} allows at most {max} `{name}` block(s), {} given (nesting mode {})",
                        given.len(),
                        nb.nesting_mode
                    ),
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn attribute(
        &mut self,
        src: &Src,
        schema: &BlockSchema,
        a: &Attribute,
        at: &str,
        meta: Meta,
        d: &Declared,
        present: &mut BTreeMap<String, bool>,
    ) {
        let key = a.key.as_str();
        if meta.attrs().contains(&key) {
            self.refs(src, &a.value, d);
            return;
        }
        let Some(attr) = schema.attributes.get(key) else {
            if schema.block_types.contains_key(key) {
                self.problem(
                    src,
                    a.span(),
                    format!("`{key}` is a block of {at}, not an argument: write `{key} {{ … }}`"),
                );
            } else {
                self.problem(src, a.span(), format!("`{key}` is not an argument of {at}{}", hint(schema, key)));
            }
            return;
        };
        self.arguments += 1;
        self.seen.insert(format!("{at}.{key}"));
        present.insert(key.to_string(), !matches!(a.value, Expression::Null(_)));
        if attr.deprecated {
            self.problem(
                src,
                a.span(),
                format!("`{key}` of {at} is deprecated{}", self.s.words(at, key, &attr.description)),
            );
        }
        if attr.computed && !attr.optional && !attr.required {
            self.problem(
                src,
                a.span(),
                format!(
                    "`{key}` of {at} is computed only: the provider sets it, configuration cannot{}",
                    self.s.words(at, key, &attr.description)
                ),
            );
        }
        let value: hcl::Expression = a.value.clone().into();
        let wrong = match (&attr.ty, &attr.nested_type) {
            (Some(ty), _) => conforms(ty, &value).err(),
            (None, Some(nt)) => nested_conforms(nt, &value).err(),
            (None, None) => None,
        };
        if let Some(e) = wrong {
            self.problem(src, a.span(), format!("`{key}` of {at}: {e}{}", self.s.words(at, key, &attr.description)));
        }
        self.refs(src, &a.value, d);
    }

    fn lifecycle(&mut self, src: &Src, b: &Block, at: &str, resource: &BlockSchema, d: &Declared) {
        self.seen.insert(format!("{at}.lifecycle"));
        for st in b.body.iter() {
            match st {
                Structure::Attribute(a) => match a.key.as_str() {
                    "create_before_destroy" | "prevent_destroy" => {
                        if !matches!(a.value, Expression::Bool(_)) {
                            self.problem(src, a.span(), format!("lifecycle.{} must be true or false", a.key.as_str()));
                        }
                    }
                    "ignore_changes" => {
                        if matches!(&a.value, Expression::Variable(v) if v.as_str() == "all") {
                            continue;
                        }
                        let Expression::Array(items) = &a.value else {
                            self.problem(src, a.span(), "lifecycle.ignore_changes must be a list or `all`".into());
                            continue;
                        };
                        for item in items.iter() {
                            let Some((root, ops)) = reference(item) else {
                                self.problem(src, item.span(), "ignore_changes entries are attribute names".into());
                                continue;
                            };
                            self.references += 1;
                            let mut path = vec![Step::Attr(root.to_string())];
                            path.extend(ops);
                            if let Err(e) = resolve(resource, &path) {
                                self.problem(src, item.span(), format!("lifecycle.ignore_changes of {at}: {e}"));
                            }
                        }
                    }
                    "replace_triggered_by" => self.refs(src, &a.value, d),
                    k => self.problem(src, a.span(), format!("`{k}` is not an argument of lifecycle")),
                },
                Structure::Block(x) => {
                    if !matches!(x.ident.as_str(), "precondition" | "postcondition") {
                        self.problem(src, x.span(), format!("`{}` is not a block of lifecycle", x.ident.as_str()));
                    }
                }
            }
        }
    }

    /// Resolves every reference in `e`: resources and data sources declared here with the
    /// attribute path their schema has, locals and variables declared here.
    fn refs(&mut self, src: &Src, e: &Expression, d: &Declared) {
        let mut c = Refs::default();
        c.visit_expr(e);
        for (root, ops, span) in c.found {
            let name = |i: usize| match ops.get(i) {
                Some(Step::Attr(n)) => Some(n.clone()),
                _ => None,
            };
            let result = match root.as_str() {
                "local" => match name(0) {
                    Some(n) if d.locals.contains(&n) => Ok(()),
                    _ => Err("not declared".to_string()),
                },
                "var" => match name(0) {
                    Some(n) if d.variables.contains(&n) => Ok(()),
                    _ => Err("not declared".to_string()),
                },
                "data" => match (name(0), name(1)) {
                    (Some(t), Some(n)) if d.data.contains(&(t.clone(), n.clone())) => match self.s.data_sources.get(&t)
                    {
                        Some(s) => resolve(s, &ops[2..]),
                        None => Err(format!("data source type `{t}` has no committed schema")),
                    },
                    _ => Err("not declared".to_string()),
                },
                t if t.starts_with("azurerm_") => match name(0) {
                    Some(n) if d.resources.contains(&(t.to_string(), n.clone())) => match self.s.resources.get(t) {
                        Some(s) => resolve(s, &ops[1..]),
                        None => Err(format!("resource type `{t}` has no committed schema")),
                    },
                    _ => Err("not declared".to_string()),
                },
                // Loop variables, each, count, self, path, terraform.
                _ => continue,
            };
            self.references += 1;
            if let Err(e) = result {
                let path: String = ops
                    .iter()
                    .map(|s| match s {
                        Step::Attr(n) => format!(".{n}"),
                        Step::Index => "[…]".into(),
                        Step::Splat => "[*]".into(),
                    })
                    .collect();
                self.problem(src, span, format!("reference {root}{path}: {e}"));
            }
        }
    }
}

/// A step of a reference: `.name`, `[index]` or a splat.
#[derive(Debug, Clone)]
enum Step {
    Attr(String),
    Index,
    Splat,
}

/// Collects references: a variable and the steps after it.
#[derive(Default)]
struct Refs {
    found: Vec<(String, Vec<Step>, Option<std::ops::Range<usize>>)>,
}

fn reference(e: &Expression) -> Option<(&str, Vec<Step>)> {
    match e {
        Expression::Variable(v) => Some((v.as_str(), vec![])),
        Expression::Traversal(t) => {
            let Expression::Variable(v) = &t.expr else { return None };
            let steps = t
                .operators
                .iter()
                .map(|op| match op.value() {
                    TraversalOperator::GetAttr(i) => Step::Attr(i.as_str().to_string()),
                    TraversalOperator::Index(_) | TraversalOperator::LegacyIndex(_) => Step::Index,
                    TraversalOperator::AttrSplat(_) | TraversalOperator::FullSplat(_) => Step::Splat,
                })
                .collect();
            Some((v.as_str(), steps))
        }
        _ => None,
    }
}

impl Visit for Refs {
    fn visit_expr(&mut self, e: &Expression) {
        if let Some((root, steps)) = reference(e) {
            self.found.push((root.to_string(), steps, e.span()));
            if let Expression::Traversal(t) = e {
                for op in &t.operators {
                    if let TraversalOperator::Index(i) = op.value() {
                        self.visit_expr(i);
                    }
                }
            }
            return;
        }
        visit::visit_expr(self, e);
    }
}

/// Walks `steps` into a block schema: nested blocks, then attributes and their cty types.
fn resolve(block: &BlockSchema, steps: &[Step]) -> Result<(), String> {
    let Some(first) = steps.first() else { return Ok(()) };
    let Step::Attr(name) = first else { return Err("an index where an attribute name belongs".into()) };
    if let Some(a) = block.attributes.get(name) {
        return match &a.ty {
            Some(ty) => resolve_type(ty, &steps[1..]).map_err(|e| format!("{name}{e}")),
            None => Ok(()),
        };
    }
    if let Some(nb) = block.block_types.get(name) {
        let rest = &steps[1..];
        return match nb.nesting_mode.as_str() {
            "single" | "group" => resolve(&nb.block, rest),
            _ => match rest.first() {
                None => Ok(()),
                Some(Step::Index) | Some(Step::Splat) => resolve(&nb.block, &rest[1..]),
                Some(Step::Attr(a)) => {
                    Err(format!("`{name}` is a {} of blocks: index it before `.{a}`", nb.nesting_mode))
                }
            },
        };
    }
    Err(format!("no attribute or block `{name}`{}", hint(block, name)))
}

fn resolve_type(ty: &Json, steps: &[Step]) -> Result<(), String> {
    let Some(step) = steps.first() else { return Ok(()) };
    match (ty, step) {
        (Json::String(s), _) if s == "dynamic" => Ok(()),
        (Json::Array(t), Step::Index | Step::Splat) if matches!(t[0].as_str(), Some("list" | "set" | "map")) => {
            resolve_type(&t[1], &steps[1..])
        }
        (Json::Array(t), Step::Index) if t[0] == "tuple" => Ok(()),
        (Json::Array(t), Step::Attr(n)) if t[0] == "object" => match t[1].get(n) {
            Some(inner) => resolve_type(inner, &steps[1..]).map_err(|e| format!(".{n}{e}")),
            None => Err(format!(": the object has no attribute `{n}`")),
        },
        (Json::Array(t), Step::Attr(n)) if t[0] == "map" => {
            resolve_type(&t[1], &steps[1..]).map_err(|e| format!(".{n}{e}"))
        }
        (other, s) => Err(format!(": {s:?} does not apply to a value of type {other}")),
    }
}

fn object_key(k: &hcl::ObjectKey) -> String {
    match k {
        hcl::ObjectKey::Identifier(i) => i.to_string(),
        hcl::ObjectKey::Expression(hcl::Expression::String(s)) => s.clone(),
        hcl::ObjectKey::Expression(e) => e.to_string(),
        other => format!("{other:?}"),
    }
}

/// Whether a literal conforms to a cty type; non-literal expressions (references, calls,
/// operations) are left to `terraform validate`.
fn conforms(ty: &Json, e: &hcl::Expression) -> Result<(), String> {
    use hcl::Expression as E;
    let kind = |e: &E| match e {
        E::Null => "null",
        E::Bool(_) => "a bool",
        E::Number(_) => "a number",
        E::String(_) | E::TemplateExpr(_) => "a string",
        E::Array(_) => "a list",
        E::Object(_) => "an object",
        _ => "an expression",
    };
    let literal = matches!(
        e,
        E::Null | E::Bool(_) | E::Number(_) | E::String(_) | E::TemplateExpr(_) | E::Array(_) | E::Object(_)
    );
    if !literal || matches!(e, E::Null) {
        if let E::Conditional(c) = e {
            conforms(ty, &c.true_expr)?;
            conforms(ty, &c.false_expr)?;
        }
        if let E::Parenthesis(p) = e {
            return conforms(ty, p);
        }
        return Ok(());
    }
    let wrong = |want: &str| Err(format!("{} where the schema's type is {want}", kind(e)));
    match ty {
        Json::String(s) => match (s.as_str(), e) {
            ("dynamic", _) => Ok(()),
            ("string", E::String(_) | E::TemplateExpr(_)) => Ok(()),
            ("number", E::Number(_)) => Ok(()),
            ("bool", E::Bool(_)) => Ok(()),
            (want, _) => wrong(want),
        },
        Json::Array(t) => match (t[0].as_str().unwrap_or_default(), e) {
            ("list" | "set", E::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    conforms(&t[1], item).map_err(|err| format!("item {i}: {err}"))?;
                }
                Ok(())
            }
            ("tuple", E::Array(items)) => {
                let types = t[1].as_array().cloned().unwrap_or_default();
                if types.len() != items.len() {
                    return Err(format!("{} items where the tuple has {}", items.len(), types.len()));
                }
                for (i, (ty, item)) in types.iter().zip(items).enumerate() {
                    conforms(ty, item).map_err(|err| format!("item {i}: {err}"))?;
                }
                Ok(())
            }
            ("map", E::Object(obj)) => {
                for (k, v) in obj {
                    conforms(&t[1], v).map_err(|err| format!("key `{}`: {err}", object_key(k)))?;
                }
                Ok(())
            }
            ("object", E::Object(obj)) => {
                let attrs = t[1].as_object().cloned().unwrap_or_default();
                for (k, v) in obj {
                    let key = match k {
                        hcl::ObjectKey::Identifier(i) => i.to_string(),
                        hcl::ObjectKey::Expression(E::String(s)) => s.clone(),
                        _ => continue,
                    };
                    match attrs.get(&key) {
                        Some(ty) => conforms(ty, v).map_err(|err| format!("`{key}`: {err}"))?,
                        None => return Err(format!("the object type has no attribute `{key}`")),
                    }
                }
                Ok(())
            }
            (want, _) => wrong(&format!("{want}({})", t.get(1).map(|x| x.to_string()).unwrap_or_default())),
        },
        other => Err(format!("unexpected type {other} in the schema")),
    }
}

fn nested_conforms(nt: &NestedType, e: &hcl::Expression) -> Result<(), String> {
    use hcl::Expression as E;
    let object = |e: &E| -> Result<(), String> {
        let E::Object(obj) = e else { return Ok(()) };
        for (k, v) in obj {
            let key = match k {
                hcl::ObjectKey::Identifier(i) => i.to_string(),
                hcl::ObjectKey::Expression(E::String(s)) => s.clone(),
                _ => continue,
            };
            let Some(a) = nt.attributes.get(&key) else { return Err(format!("no attribute `{key}`")) };
            if let Some(ty) = &a.ty {
                conforms(ty, v).map_err(|err| format!("`{key}`: {err}"))?;
            }
        }
        Ok(())
    };
    match (nt.nesting_mode.as_str(), e) {
        ("single", E::Object(_)) => object(e),
        ("list" | "set", E::Array(items)) => items.iter().try_for_each(object),
        ("map", E::Object(obj)) => obj.values().try_for_each(object),
        (_, E::Array(_) | E::Object(_) | E::String(_) | E::Number(_) | E::Bool(_)) => {
            Err(format!("a literal that is not a {} of objects", nt.nesting_mode))
        }
        _ => Ok(()),
    }
}

/// ` (did you mean `x`?)` for a name one or two edits from a known one.
fn hint(schema: &BlockSchema, name: &str) -> String {
    let best = schema
        .attributes
        .keys()
        .chain(schema.block_types.keys())
        .map(|k| (distance(k, name), k))
        .filter(|(d, _)| *d <= 2)
        .min();
    match best {
        Some((_, k)) => format!(" (did you mean `{k}`?)"),
        None => String::new(),
    }
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
