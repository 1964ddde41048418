//! Phases preflight, infra (terraform) and credentials (az aks get-credentials); destroy and
//! status of the Terraform-managed infrastructure.
//!
//! `infra` runs Terraform in the rendered `terraform/` folder (`-chdir`, `TF_IN_AUTOMATION`,
//! `-input=false`): `init`, `plan -out -detailed-exitcode`, and `apply` of exactly that plan.
//! A plan without changes (exit 0) means the live infrastructure already matches, which is also
//! how a fresh checkout (no local state) finds out that nothing needs applying. The outputs
//! (`terraform output -json`, non-sensitive strings) feed the phases after it: `image-push`
//! pushes to `acr_login_server`, `credentials` reads `resource_group_name` and `cluster_name`.
//! Before an apply, `terraform show -json` of the plan is checked for destructive changes (the
//! cluster, a node pool, the registry or the resource group replaced or deleted), refused unless
//! `--allow-destroy`; `deploy --plan` applies Terraform's plan saved by `plan --out` instead of
//! planning anew.
//!
//! The fast path of a deploy from a fresh checkout: Terraform itself writes the hash of the
//! rendered configuration and its variables ([`applied_hash`], passed as
//! `-var=raydeploy_applied=…`) to the resource group's tag [`APPLIED_TAG`], after every other
//! resource. The probe reads that tag (`az group show`) and the registry (`az acr show`, for its
//! login server) at the same time; when the tag equals the hash, init, plan and apply are
//! skipped and the outputs come from the model's names and the registry's answer. A missing tag,
//! another hash, a failed read or `deploy --refresh` take the full path. `raydeploy plan` always
//! runs Terraform's plan (it is the drift detector).

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::{Kube, azure_preflight, unknown};
use crate::context::{DestroyOptions, approve};
use crate::graph::Phase;
use crate::run::cache::ToolVersions;
use crate::run::exec::{Cx, Outputs};
use crate::run::proc::{Cmd, CmdError, Runner};
use crate::run::state::PhaseStatus;

/// Outputs every later phase relies on (templates/terraform/outputs.tf.tera): the infra phase's
/// outputs are exactly these, on the full path and the fast path alike, so the phases after it
/// see the same inputs whichever path ran.
pub const REQUIRED_OUTPUTS: [&str; 4] = ["acr_login_server", "acr_name", "cluster_name", "resource_group_name"];

/// The resource group's tag holding the hash of the applied configuration.
pub const APPLIED_TAG: &str = "raydeploy-applied";
/// The Terraform variable that carries it (templates/terraform/main.tf.tera).
pub const APPLIED_VAR: &str = "raydeploy_applied";

/// The saved plan inside the Terraform folder (kept by the renderer's stale-file sweep).
const PLAN_FILE: &str = "raydeploy.tfplan";

const MIN_TERRAFORM: (u64, u64) = (1, 5);
const MIN_HELM: (u64, u64) = (3, 8);
const MIN_KUBECTL: (u64, u64) = (1, 22);

const T_VERSION: Duration = Duration::from_secs(60);
const T_ACCOUNT: Duration = Duration::from_secs(120);
const T_INIT: Duration = Duration::from_secs(10 * 60);
const T_PLAN: Duration = Duration::from_secs(30 * 60);
const T_APPLY: Duration = Duration::from_secs(60 * 60);
const T_OUTPUT: Duration = Duration::from_secs(5 * 60);
const T_CREDENTIALS: Duration = Duration::from_secs(5 * 60);
/// Terraform waits this long for a state lock another run holds (remote state in CI).
const LOCK_TIMEOUT: &str = "-lock-timeout=120s";

/// Plans this process saved, as `folder:input hash` (probe plans, apply applies that same plan).
static PLANNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

pub fn probe(k: &Kube, p: &Phase, cx: &Cx) -> Result<Option<Outputs>> {
    match p.id {
        "infra" => infra_probe(k, cx),
        "credentials" => Ok(unchanged(k, cx).filter(|_| k.kubeconfig().is_some_and(|f| f.is_file()))),
        _ => Ok(unchanged(k, cx)),
    }
}

/// The recorded outputs of a phase that completed with the same inputs, unless `--refresh`.
pub(crate) fn unchanged(k: &Kube, cx: &Cx) -> Option<Outputs> {
    if k.s.refresh { None } else { cx.unchanged() }
}

pub fn apply(k: &Kube, p: &Phase, cx: &Cx) -> Result<Outputs> {
    match p.id {
        "preflight" => preflight(k, cx),
        "infra" => infra_apply(k, cx),
        "credentials" => credentials(k, cx),
        _ => Err(unknown(p)),
    }
}

pub fn preview(k: &Kube, p: &Phase) -> Vec<String> {
    let tf = Terraform::at(k, None);
    match p.id {
        "preflight" => {
            let mut v = vec![];
            if k.aks() {
                v.push(format!(
                    "{}   # not when the resource group carries this configuration's hash (Terraform does not run)",
                    terraform_version().display()
                ));
                v.push(format!(
                    "{}   # not when the resource group can be read (its id names the subscription)",
                    az(k, None, ["account", "show", "--output", "json"]).display()
                ));
                if let Some(a) = &k.s.d.azure {
                    v.extend(azure_preflight::preview(a, &k.s.skip_preflight));
                }
            }
            v.push(format!(
                "{}   # not when the registry already has every image tag (nothing is built or pushed)",
                docker_version().display()
            ));
            v.push(helm_version().display());
            v.push(kubectl_version().display());
            v.push("check every secret source (environment variables set, files readable)".into());
            v
        }
        "infra" => {
            let mut v = vec![];
            if let (Some(a), Some(h)) = (&k.s.d.azure, &tf.applied) {
                let sub = wanted_subscription(k);
                v.push(format!(
                    "{}   # with {}: tag {APPLIED_TAG} = {h} (this configuration) skips everything below (not with --refresh)",
                    az(k, sub.as_deref(), ["group", "show", "--name", &a.resource_group, "--output", "json"]).display(),
                    az(k, sub.as_deref(), ["acr", "show", "--name", &a.acr_name, "--output", "json"]).display(),
                ));
            }
            v.extend(infra_full_preview(&tf));
            v
        }
        "credentials" => {
            let (rg, name) = cluster_names(k, None);
            let path = k.kubeconfig().unwrap_or_default();
            vec![
                get_credentials(k, None, &rg, &name, &path).display(),
                format!("{}   # only for Entra ID clusters", kubelogin_convert(&path).display()),
            ]
        }
        _ => vec![],
    }
}

fn infra_full_preview(tf: &Terraform) -> Vec<String> {
    vec![
        tf.init().display(),
        tf.plan().display(),
        format!("{}   # refuses destructive changes unless --allow-destroy", tf.show(Path::new(PLAN_FILE)).display()),
        format!("{}   # only when the plan has changes", tf.apply().display()),
        tf.output().display(),
    ]
}

// ---------------------------------------------------------------------------------------------
// preflight

/// Checks, before anything mutates, that every tool this deploy runs is present with a usable
/// version, that the Azure account works and the subscription has room for the deployment
/// (quota, VM sizes, Kubernetes version), and that every secret source resolves; lists every
/// problem at once.
///
/// What a deploy will not run is not asked for: Terraform when the resource group carries this
/// configuration's hash (the infra fast path: no init, plan or apply follows), the Docker engine
/// when the registry already has every image tag (nothing is built or pushed). Both answers are
/// the reads the infra and image probes make anyway, shared with them. The versions tools report
/// are kept per binary ([`ToolVersions`]), and the subscription comes from the resource group's
/// id when the fast path's read found the group (`az account show` otherwise).
fn preflight(k: &Kube, cx: &Cx) -> Result<Outputs> {
    let r = &cx.runner;
    let versions = ToolVersions::new(k.s.refresh);
    let mut outputs = Outputs::new();
    let mut azure = None;
    // The fast path's read (once per run, shared with the infra probe), in the subscription the
    // spec or the environment names (else the Azure CLI's current one).
    let fast = k.aks() && !k.s.refresh && k.s.saved_tfplan.is_none();
    let group = || {
        if fast { applied_state(k, r, &Terraform::at(k, wanted_subscription(k))) } else { (None, None) }
    };
    let problems: Vec<String> = std::thread::scope(|scope| {
        let mut checks = vec![];
        if k.aks() {
            checks.push(scope.spawn(|| {
                if group().0.is_some() {
                    r.note("terraform is not asked for its version: the infrastructure is as this configuration applied it, Terraform does not run");
                    return vec![];
                }
                check_terraform(r, &versions)
            }));
        }
        checks.push(scope.spawn(|| {
            if super::image::every_tag_in_registry(k, cx) {
                r.note("the Docker engine is not asked: every image tag is already in the registry, nothing is built or pushed");
                return vec![];
            }
            check_docker(r)
        }));
        checks.push(scope.spawn(|| check_helm(r, &versions)));
        checks.push(scope.spawn(|| check_kubectl(r, &versions)));
        // The quota, VM size and version reads guard what Terraform would create: when the
        // resource group carries this configuration's hash, it creates nothing and they are left
        // out. Otherwise they run in the subscription the account check reports, after it.
        let account = k.aks().then(|| {
            scope.spawn(|| {
                let (current, subscription) = group();
                let id = match subscription {
                    Some(id) => Ok(id),
                    None => account(k, r),
                };
                (current.is_some(), id)
            })
        });
        let mut problems: Vec<String> = checks.into_iter().flat_map(|h| h.join().expect("check thread")).collect();
        if let Some(a) = account {
            let (current, id) = a.join().expect("account thread");
            match id {
                Ok(id) => {
                    azure = Some(if current {
                        r.info("the infrastructure is as this configuration applied it: Terraform does not run; quota, VM sizes and Kubernetes versions are not read (nothing is created)");
                        azure_preflight::Outcome::default()
                    } else {
                        azure_preflight::run(&k.s.d, r, Some(&id), &k.s.skip_preflight, || deployed_pools(k, r, &id))
                    });
                    outputs.insert("subscription_id".into(), id);
                }
                Err(e) => problems.push(e),
            }
        }
        problems
    });
    let mut problems = problems;
    if let Some(found) = azure {
        for f in &found.findings {
            match f.level {
                azure_preflight::Level::Error => problems.push(f.text()),
                azure_preflight::Level::Warning => r.info(&format!("warning: {}", f.text().replace('\n', "\n  "))),
                azure_preflight::Level::Info => r.info(&f.text().replace('\n', "; ")),
            }
        }
        if let Some(v) = found.kubernetes_version {
            let _ = k.s.kubernetes_version.set(v.clone());
            outputs.insert("kubernetes_version".into(), v);
        }
    }
    problems.extend(super::secrets::check_sources(k));
    if let Some(p) = context_problem(k) {
        problems.push(p);
    }
    if !problems.is_empty() {
        bail!(
            "{} problem{} found before changing anything:\n{}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.iter().map(|p| format!("  - {}", p.replace('\n', "\n    "))).collect::<Vec<_>>().join("\n")
        );
    }
    r.info(if k.aks() {
        "tools, account, Azure quota, VM sizes, Kubernetes version and secret sources are usable"
    } else {
        "tools and secret sources are usable"
    });
    Ok(outputs)
}

fn not_found(tool: &str, hint: &str) -> String {
    format!("`{tool}` is not on PATH; {hint}")
}

fn cmd_problem(tool: &str, e: &CmdError, hint: &str) -> String {
    match e {
        CmdError::NotFound { .. } => not_found(tool, hint),
        e => format!("{tool}: {e}"),
    }
}

/// `major.minor` from text such as `v3.14.4+g81c902a` or `1.9.5`.
pub fn parse_version(text: &str) -> Option<(u64, u64)> {
    let t = text.trim().trim_start_matches('v');
    let mut it = t.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

fn check_min(tool: &str, version: &str, min: (u64, u64)) -> Option<String> {
    match parse_version(version) {
        Some(v) if v >= min => None,
        Some(_) => Some(format!("{tool} {version} is too old: {}.{} or newer is needed", min.0, min.1)),
        None => Some(format!("cannot read the version of {tool} from {version:?}")),
    }
}

fn terraform_version() -> Cmd {
    Cmd::new("terraform").args(["version", "-json"])
}

fn check_terraform(r: &Runner, versions: &ToolVersions) -> Vec<String> {
    let hint = "install Terraform 1.5 or newer (https://developer.hashicorp.com/terraform/install)";
    match versions.output(r, &terraform_version().timeout(T_VERSION).idempotent(2).quiet()) {
        Ok(stdout) => {
            let v = serde_json::from_str::<serde_json::Value>(&stdout)
                .ok()
                .and_then(|j| j.get("terraform_version").and_then(|v| v.as_str()).map(str::to_string))
                .unwrap_or_else(|| stdout.trim().to_string());
            check_min("terraform", &v, MIN_TERRAFORM).into_iter().collect()
        }
        Err(e) => vec![cmd_problem("terraform", &e, hint)],
    }
}

fn docker_version() -> Cmd {
    Cmd::new("docker").args(["version", "--format", "{{.Server.Version}}"])
}

fn check_docker(r: &Runner) -> Vec<String> {
    let hint = "install Docker (https://docs.docker.com/engine/install/)";
    match r.run(&docker_version().timeout(T_VERSION).idempotent(2).quiet()) {
        Ok(o) if !o.stdout.trim().is_empty() => vec![],
        Ok(_) => vec!["docker: the Docker engine reported no version".into()],
        Err(CmdError::NotFound { .. }) => vec![not_found("docker", hint)],
        Err(e) => vec![format!(
            "docker: cannot reach the Docker engine{} (is dockerd running?): {e}",
            std::env::var("DOCKER_HOST").map(|h| format!(" at {h}")).unwrap_or_default()
        )],
    }
}

fn helm_version() -> Cmd {
    Cmd::new("helm").args(["version", "--short"])
}

fn check_helm(r: &Runner, versions: &ToolVersions) -> Vec<String> {
    let hint = "install Helm 3.8 or newer (https://helm.sh/docs/intro/install/)";
    match versions.output(r, &helm_version().timeout(T_VERSION).idempotent(2).quiet()) {
        Ok(stdout) => check_min("helm", stdout.trim(), MIN_HELM).into_iter().collect(),
        Err(e) => vec![cmd_problem("helm", &e, hint)],
    }
}

fn kubectl_version() -> Cmd {
    Cmd::new("kubectl").args(["version", "--client", "--output", "json"])
}

fn check_kubectl(r: &Runner, versions: &ToolVersions) -> Vec<String> {
    let hint = "install kubectl (https://kubernetes.io/docs/tasks/tools/)";
    match versions.output(r, &kubectl_version().timeout(T_VERSION).idempotent(2).quiet()) {
        Ok(stdout) => {
            let v = serde_json::from_str::<serde_json::Value>(&stdout)
                .ok()
                .and_then(|j| j.pointer("/clientVersion/gitVersion").and_then(|v| v.as_str()).map(str::to_string))
                .unwrap_or_else(|| stdout.trim().to_string());
            check_min("kubectl", &v, MIN_KUBECTL).into_iter().collect()
        }
        Err(e) => vec![cmd_problem("kubectl", &e, hint)],
    }
}

/// The subscription the deployment uses: the spec's `azure.subscriptionId`, else
/// `ARM_SUBSCRIPTION_ID`, else the Azure CLI's current one.
pub(crate) fn wanted_subscription(k: &Kube) -> Option<String> {
    k.s.d
        .azure
        .as_ref()
        .and_then(|a| a.subscription_id.clone())
        .or_else(|| std::env::var("ARM_SUBSCRIPTION_ID").ok().filter(|s| !s.is_empty()))
}

/// `az account show` for the wanted subscription: its id, or the problem.
fn account(k: &Kube, r: &Runner) -> std::result::Result<String, String> {
    let wanted = wanted_subscription(k);
    let cmd =
        az(k, wanted.as_deref(), ["account", "show", "--output", "json"]).timeout(T_ACCOUNT).idempotent(3).quiet();
    match r.run(&cmd) {
        Ok(o) => {
            let id = serde_json::from_str::<serde_json::Value>(&o.stdout)
                .ok()
                .and_then(|j| j.get("id").and_then(|v| v.as_str()).map(str::to_string));
            match id {
                Some(id) => Ok(id),
                None => Err("az account show printed no subscription id".into()),
            }
        }
        Err(CmdError::NotFound { .. }) => {
            Err(not_found("az", "install the Azure CLI (https://learn.microsoft.com/cli/azure/install-azure-cli)"))
        }
        Err(e) => Err(format!(
            "the Azure CLI has no usable account{}: run `az login`{}\n{e}",
            wanted.as_deref().map(|s| format!(" for subscription {s}")).unwrap_or_default(),
            if wanted.is_some() { " with access to that subscription" } else { "" }
        )),
    }
}

/// On target kubernetes with a named context: the context must exist in the kubeconfig.
fn context_problem(k: &Kube) -> Option<String> {
    if k.aks() {
        return None;
    }
    let ctx = k.s.d.kubernetes.as_ref()?.context.as_deref()?;
    let files: Vec<PathBuf> = match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(v) => std::env::split_paths(&v).collect(),
        None => vec![std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(".kube").join("config")],
    };
    let mut names = vec![];
    for f in &files {
        if let Ok(text) = std::fs::read_to_string(f)
            && let Ok(kc) = serde_saphyr::from_str::<KubeConfig>(&text)
        {
            names.extend(kc.contexts.into_iter().map(|c| c.name));
        }
    }
    if names.iter().any(|n| n == ctx) {
        return None;
    }
    let shown: Vec<_> = files.iter().map(|f| f.display().to_string()).collect();
    Some(format!(
        "kubernetes.context `{ctx}` is not in the kubeconfig ({}); contexts there: {}",
        shown.join(", "),
        if names.is_empty() { "none".to_string() } else { names.join(", ") }
    ))
}

// ---------------------------------------------------------------------------------------------
// infra

/// Terraform commands in the deployment's rendered `terraform/` folder (also `plan`'s).
pub(crate) struct Terraform {
    dir: PathBuf,
    subscription: Option<String>,
    /// `-var=kubernetes_version=…` for `plan` when the spec leaves the version open.
    kubernetes_version: Option<String>,
    /// `-var=raydeploy_applied=…`: the hash of this configuration and its variables, when the
    /// configuration declares the variable (a template override may not).
    applied: Option<String>,
}

impl Terraform {
    fn at(k: &Kube, subscription: Option<String>) -> Self {
        let dir = k.s.rendered_dir().join("terraform");
        let pinned = k.s.d.azure.as_ref().is_some_and(|a| a.kubernetes_version.is_some());
        let kubernetes_version = if pinned { None } else { k.s.kubernetes_version.get().cloned() };
        let applied = applied_hash(&k.s.rendered);
        Self { dir: std::path::absolute(&dir).unwrap_or(dir), subscription, kubernetes_version, applied }
    }

    /// Writes the rendered tree and points at it.
    fn prepared(k: &Kube, subscription: Option<String>) -> Result<Self> {
        k.s.write_rendered()?;
        Ok(Self::at(k, subscription))
    }

    /// For `raydeploy plan`: the rendered tree written, the subscription the spec or the
    /// environment names.
    pub(crate) fn for_preview(k: &Kube) -> Result<Self> {
        Self::prepared(k, wanted_subscription(k))
    }

    fn cmd(&self, sub: &str) -> Cmd {
        let mut c = Cmd::new("terraform")
            .arg(format!("-chdir={}", self.dir.display()))
            .arg(sub)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0");
        if let Some(s) = &self.subscription {
            c = c.env("ARM_SUBSCRIPTION_ID", s);
        }
        c
    }

    /// `init`, with `-upgrade` when the folder's lock file pins an azurerm version the rendered
    /// constraint no longer admits (a deployment made before raydeploy raised it): Terraform
    /// refuses to init over such a lock file otherwise.
    pub(crate) fn init(&self) -> Cmd {
        let c = self.cmd("init").args(["-input=false", "-no-color"]).timeout(T_INIT).idempotent(3);
        if locked_azurerm_excluded(&self.dir) { c.arg("-upgrade") } else { c }
    }

    fn plan(&self) -> Cmd {
        self.plan_to(Path::new(PLAN_FILE))
    }

    /// `plan -detailed-exitcode` saving the plan to `out` (relative to the Terraform folder, or
    /// absolute); exit 0 (no changes) and 2 (changes) are success.
    pub(crate) fn plan_to(&self, out: &Path) -> Cmd {
        let mut c = self.cmd("plan").args(["-input=false", "-no-color", "-detailed-exitcode", LOCK_TIMEOUT]);
        if let Some(v) = &self.kubernetes_version {
            c = c.arg(format!("-var=kubernetes_version={v}"));
        }
        if let Some(h) = &self.applied {
            c = c.arg(format!("-var={APPLIED_VAR}={h}"));
        }
        c.arg(format!("-out={}", out.display())).timeout(T_PLAN).idempotent(2).ok_codes(&[0, 2])
    }

    /// Applies the saved plan, and only it. Never retried.
    fn apply(&self) -> Cmd {
        self.apply_file(PLAN_FILE)
    }

    fn apply_file(&self, plan: &str) -> Cmd {
        self.cmd("apply").args(["-input=false", "-no-color", LOCK_TIMEOUT, plan]).timeout(T_APPLY)
    }

    pub(crate) fn show(&self, plan: &Path) -> Cmd {
        self.cmd("show")
            .args(["-json", "-no-color"])
            .arg(plan.to_string_lossy())
            .timeout(T_OUTPUT)
            .idempotent(3)
            .quiet()
    }

    /// `plan` is relative to the Terraform folder (as for Terraform itself under `-chdir`), or
    /// absolute. Unless `--allow-destroy`: fails, listing them, when the saved plan replaces or deletes
    /// the cluster, a node pool, the registry or the resource group.
    fn refuse_destructive(&self, k: &Kube, r: &Runner, plan: &Path) -> Result<()> {
        if k.s.allow_destroy {
            return Ok(());
        }
        let o = r.run(&self.show(plan))?;
        let json: serde_json::Value =
            serde_json::from_str(&o.stdout).context("terraform show -json printed something that is not JSON")?;
        let changes = crate::plan::infra::from_plan_json(&json);
        crate::context::refuse_destructive(changes.iter().filter_map(|c| c.destructive.as_deref()))
    }

    /// `show -json` of the state (what exists).
    fn show_state(&self) -> Cmd {
        self.cmd("show").args(["-json", "-no-color"]).timeout(T_OUTPUT).idempotent(3).quiet()
    }

    fn output(&self) -> Cmd {
        self.cmd("output").args(["-json", "-no-color"]).timeout(T_OUTPUT).idempotent(3).quiet()
    }

    fn destroy(&self) -> Cmd {
        self.cmd("destroy").args(["-auto-approve", "-input=false", "-no-color", LOCK_TIMEOUT]).timeout(T_APPLY)
    }

    fn plan_key(&self, hash: &str) -> String {
        format!("{}:{hash}", self.dir.display())
    }

    pub(crate) fn plan_path(&self) -> PathBuf {
        self.dir.join(PLAN_FILE)
    }

    /// A saved plan can hold sensitive values: it lives only between plan and apply.
    fn drop_plan(&self) {
        let _ = std::fs::remove_file(self.plan_path());
    }

    /// `plan`: true when it found changes (and saved them).
    fn plan_changes(&self, r: &Runner) -> Result<bool> {
        let o = r.run(&self.plan());
        match o {
            Ok(o) if o.code == 2 => Ok(true),
            Ok(_) => {
                self.drop_plan();
                Ok(false)
            }
            Err(e) => {
                self.drop_plan();
                Err(e.into())
            }
        }
    }

    /// The non-sensitive string outputs.
    fn outputs(&self, r: &Runner) -> Result<Outputs> {
        let o = r.run(&self.output())?;
        parse_outputs(&o.stdout)
    }
}

/// Non-sensitive outputs of `terraform output -json` (strings as they are, other values as
/// compact JSON); sensitive ones are left out.
pub fn parse_outputs(json: &str) -> Result<Outputs> {
    let v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).context("terraform output -json printed something that is not a JSON object")?;
    let mut out = Outputs::new();
    for (name, o) in v {
        if o.get("sensitive").and_then(|s| s.as_bool()).unwrap_or(false) {
            continue;
        }
        match o.get("value") {
            Some(serde_json::Value::String(s)) => out.insert(name, s.clone()),
            Some(serde_json::Value::Null) | None => continue,
            Some(other) => out.insert(name, other.to_string()),
        };
    }
    Ok(out)
}

/// The outputs the phases after infra use ([`REQUIRED_OUTPUTS`]), every one of them.
fn require_outputs(o: Outputs) -> Result<Outputs> {
    let missing: Vec<_> = REQUIRED_OUTPUTS.iter().filter(|k| !o.contains_key(**k)).collect();
    if !missing.is_empty() {
        bail!(
            "the Terraform state has no output {}; the infrastructure was not created by this deployment's configuration",
            missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(o.into_iter().filter(|(k, _)| REQUIRED_OUTPUTS.contains(&k.as_str())).collect())
}

/// The hash of the rendered Terraform and its variables (what `apply` writes to the resource
/// group's [`APPLIED_TAG`]), or `None` when the configuration does not declare [`APPLIED_VAR`]
/// (a template override without it: every deploy then plans).
///
/// The one other variable, `kubernetes_version` (the newest version AKS offers, for a spec that
/// leaves it open), is left out: the configuration ignores its changes on an existing cluster
/// and never gives it to a node pool, so it shapes only a cluster Terraform creates, and the tag
/// exists only once the cluster does. Leaving it out lets the tag be read before preflight has
/// asked AKS for its versions.
pub fn applied_hash(r: &crate::render::Rendered) -> Option<String> {
    let declared =
        r.files.range("terraform/".to_string()..).take_while(|(p, _)| p.starts_with("terraform/")).any(|(_, text)| {
            hcl::from_str::<hcl::Body>(text).is_ok_and(|b| {
                b.blocks().any(|blk| {
                    blk.identifier() == "variable" && blk.labels().first().is_some_and(|l| l.as_str() == APPLIED_VAR)
                })
            })
        });
    declared.then(|| crate::graph::Inputs::new().files(r, "terraform/").finish())
}

/// The subscription Terraform runs in. Also hands Terraform the Kubernetes version preflight
/// chose for a spec that leaves it open (`Terraform::at` reads it from the context).
fn subscription_of(k: &Kube, cx: &Cx) -> Option<String> {
    if let Some(v) = cx.output("preflight", "kubernetes_version") {
        let _ = k.s.kubernetes_version.set(v);
    }
    wanted_subscription(k).or_else(|| cx.output("preflight", "subscription_id"))
}

/// The node pools Terraform's state has (for the quota check of a redeploy): `show -json` of the
/// state in the rendered folder once initialised (local state lives there, so none before), or
/// after `init` with a remote backend (a fresh checkout of a deployed spec).
fn deployed_pools(k: &Kube, r: &Runner, subscription: &str) -> Result<Vec<azure_preflight::DeployedPool>> {
    let mut tf = Terraform::at(k, Some(subscription.to_string()));
    if !tf.dir.join(".terraform").is_dir() {
        if k.s.d.azure.as_ref().is_none_or(|a| a.state.is_none()) {
            return Ok(vec![]);
        }
        tf = Terraform::prepared(k, Some(subscription.to_string()))?;
        r.run(&tf.init())?;
    }
    let o = r.run(&tf.show_state())?;
    let json: serde_json::Value =
        serde_json::from_str(&o.stdout).context("terraform show -json printed something that is not JSON")?;
    Ok(azure_preflight::deployed_pools(&json))
}

/// The Azure preflight outside a deploy (for `raydeploy plan`): the subscription (`az account
/// show`), then the reads; the Kubernetes version it chooses is kept for Terraform's plan.
pub(crate) fn azure_findings(k: &Kube) -> Result<azure_preflight::Outcome> {
    if azure_preflight::Check::ALL.iter().all(|c| k.s.skip_preflight.contains(c)) {
        return Ok(azure_preflight::Outcome::default());
    }
    let r = Runner::new(
        "plan",
        Some(&k.s.dir.join("logs").join("plan.log")),
        k.s.redactor.clone(),
        std::sync::Arc::new(crate::run::progress::Plain::default()),
    )?;
    let sub = subscription_now(k, &r)?;
    let found = azure_preflight::run(&k.s.d, &r, Some(&sub), &k.s.skip_preflight, || deployed_pools(k, &r, &sub));
    if let Some(v) = &found.kubernetes_version {
        let _ = k.s.kubernetes_version.set(v.clone());
    }
    Ok(found)
}

/// Unchanged since the last completed run: skip. Otherwise ask Terraform: a plan without
/// changes means the live infrastructure matches (a fresh checkout of a deployed spec), and a
/// plan with changes is saved for `apply`.
fn infra_probe(k: &Kube, cx: &Cx) -> Result<Option<Outputs>> {
    if k.s.saved_tfplan.is_some() {
        // `deploy --plan`: that plan is applied as it is (Terraform refuses it when stale).
        return Ok(None);
    }
    if let Some(o) = unchanged(k, cx) {
        return Ok(Some(o));
    }
    if cx.early {
        // Before preflight is done: only the fast path's reads, in the subscription the spec or
        // the environment names (else the Azure CLI's current one); Terraform waits its turn.
        if k.s.refresh {
            return Ok(None);
        }
        return Ok(applied_outputs(k, cx, &Terraform::at(k, wanted_subscription(k))));
    }
    let tf = Terraform::prepared(k, subscription_of(k, cx))?;
    if !k.s.refresh
        && let Some(o) = applied_outputs(k, cx, &tf)
    {
        return Ok(Some(o));
    }
    cx.runner.run(&tf.init())?;
    if tf.plan_changes(&cx.runner)? {
        PLANNED.lock().expect("plan set").insert(tf.plan_key(&cx.hash));
        return Ok(None);
    }
    cx.runner.info("terraform plan: no changes; the infrastructure matches the configuration");
    Ok(Some(require_outputs(tf.outputs(&cx.runner)?)?))
}

/// What `az group show` of the resource group says: the value of its [`APPLIED_TAG`] (`None`
/// when the tag is missing) and the subscription its id names (`None` when the group is missing).
/// Documented shape (learn.microsoft.com/cli/azure/group#az-group-show): `{"id":
/// "/subscriptions/<subscription id>/resourceGroups/<name>", "location", "managedBy", "name",
/// "properties": {"provisioningState"}, "tags": {…} | null, "type"}`.
fn group_show(k: &Kube, r: &Runner, sub: Option<&str>, rg: &str) -> Result<(Option<String>, Option<String>), CmdError> {
    let c = az(k, sub, ["group", "show", "--name", rg, "--output", "json"]).timeout(T_OUTPUT).quiet();
    match r.run(&c) {
        Ok(o) => {
            let v = serde_json::from_str::<serde_json::Value>(&o.stdout).ok();
            let tag = v
                .as_ref()
                .and_then(|v| v.pointer(&format!("/tags/{APPLIED_TAG}")).and_then(|t| t.as_str()).map(str::to_string))
                .filter(|t| !t.is_empty());
            let subscription =
                v.as_ref().and_then(|v| v.get("id")).and_then(|id| id.as_str()).and_then(subscription_in_id);
            Ok((tag, subscription))
        }
        Err(CmdError::Failed { stderr_tail, .. }) if stderr_tail.contains("ResourceGroupNotFound") => Ok((None, None)),
        Err(e) => Err(e),
    }
}

/// The subscription of an Azure resource id (`/subscriptions/<id>/resourceGroups/…`).
fn subscription_in_id(id: &str) -> Option<String> {
    let mut parts = id.split('/');
    let (empty, word, sub) = (parts.next()?, parts.next()?, parts.next()?);
    let guid = sub.len() == 36 && sub.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    (empty.is_empty() && word.eq_ignore_ascii_case("subscriptions") && guid).then(|| sub.to_string())
}

/// `az acr show` of the registry: its `loginServer`. Documented shape
/// (learn.microsoft.com/cli/azure/acr#az-acr-show): `{"adminUserEnabled", "id", "location",
/// "loginServer", "name", "provisioningState", "resourceGroup", "sku": {"name", "tier"}, "tags",
/// "type", …}`.
fn acr_show(k: &Kube, r: &Runner, sub: Option<&str>, name: &str) -> Option<String> {
    let c = az(k, sub, ["acr", "show", "--name", name, "--output", "json"]).timeout(T_OUTPUT).quiet();
    let o = r.run(&c).ok()?;
    let v: serde_json::Value = serde_json::from_str(&o.stdout).ok()?;
    let login = v.get("loginServer")?.as_str()?;
    (v.get("provisioningState").and_then(|p| p.as_str()).is_none_or(|p| p == "Succeeded") && !login.is_empty())
        .then(|| login.to_string())
}

/// The fast path: when the resource group carries this configuration's hash, the infrastructure
/// is as the last successful apply of this configuration left it. Two reads at once; `None`
/// (take the full path) on anything else, with the reason in the log.
fn applied_outputs(k: &Kube, cx: &Cx, tf: &Terraform) -> Option<Outputs> {
    applied_state(k, &cx.runner, tf).0
}

/// [`applied_outputs`] and the subscription the resource group's id names, for any runner, read
/// once per run (preflight asks too).
fn applied_state(k: &Kube, r: &Runner, tf: &Terraform) -> (Option<Outputs>, Option<String>) {
    k.s.applied.get_or_init(|| read_applied(k, r, tf)).clone()
}

fn read_applied(k: &Kube, r: &Runner, tf: &Terraform) -> (Option<Outputs>, Option<String>) {
    let Some(want) = tf.applied.as_deref() else { return (None, None) };
    let Some(a) = k.s.d.azure.as_ref() else { return (None, None) };
    let sub = tf.subscription.as_deref();
    let (group, login) = std::thread::scope(|scope| {
        let login = scope.spawn(|| acr_show(k, r, sub, &a.acr_name));
        let group = group_show(k, r, sub, &a.resource_group);
        (group, login.join().expect("acr show thread"))
    });
    let (tag, subscription) = match group {
        Ok(g) => g,
        Err(e) => {
            r.info(&format!("cannot read resource group {} ({e}): planning with Terraform", a.resource_group));
            return (None, None);
        }
    };
    let short = |h: &str| h.chars().take(12).collect::<String>();
    match tag {
        Some(t) if t == want => {}
        Some(t) => {
            r.info(&format!(
                "resource group {} was last applied with configuration {} (this one is {}): planning with Terraform",
                a.resource_group,
                short(&t),
                short(want)
            ));
            return (None, subscription);
        }
        None => {
            r.info(&format!(
                "resource group {} has no {APPLIED_TAG} tag (not created yet, or not by this version of raydeploy): planning with Terraform",
                a.resource_group
            ));
            return (None, subscription);
        }
    }
    let Some(login) = login else {
        r.info(&format!("cannot read registry {}: planning with Terraform", a.acr_name));
        return (None, subscription);
    };
    r.info(&format!(
        "resource group {} carries {APPLIED_TAG}={} (this configuration and its variables): Terraform is not run (deploy --refresh runs it)",
        a.resource_group,
        short(want)
    ));
    let outputs = Outputs::from([
        ("acr_login_server".to_string(), login),
        ("acr_name".to_string(), a.acr_name.clone()),
        ("cluster_name".to_string(), a.aks_name.clone()),
        ("resource_group_name".to_string(), a.resource_group.clone()),
    ]);
    (Some(outputs), subscription)
}

fn infra_apply(k: &Kube, cx: &Cx) -> Result<Outputs> {
    let tf = Terraform::prepared(k, subscription_of(k, cx))?;
    if let Some(saved) = &k.s.saved_tfplan {
        let saved = std::path::absolute(saved)?;
        cx.runner.run(&tf.init())?;
        tf.refuse_destructive(k, &cx.runner, &saved)?;
        cx.runner.info(&format!("applying the saved plan {}", saved.display()));
        cx.runner.run(&tf.apply_file(&saved.to_string_lossy()))?;
        return require_outputs(tf.outputs(&cx.runner)?);
    }
    let planned = PLANNED.lock().expect("plan set").remove(&tf.plan_key(&cx.hash)) && tf.plan_path().is_file();
    if !planned {
        cx.runner.run(&tf.init())?;
        if !tf.plan_changes(&cx.runner)? {
            return require_outputs(tf.outputs(&cx.runner)?);
        }
    }
    if let Err(e) = tf.refuse_destructive(k, &cx.runner, Path::new(PLAN_FILE)) {
        tf.drop_plan();
        return Err(e);
    }
    let applied = cx.runner.run(&tf.apply());
    tf.drop_plan();
    applied?;
    require_outputs(tf.outputs(&cx.runner)?)
}

// ---------------------------------------------------------------------------------------------
// credentials

/// `az` with the deployment's subscription.
fn az<I, S>(_k: &Kube, subscription: Option<&str>, args: I) -> Cmd
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut c = Cmd::new("az").args(args).arg("--only-show-errors");
    if let Some(s) = subscription {
        c = c.arg("--subscription").arg(s);
    }
    c
}

/// Resource group and cluster: from the infra outputs when known, else from the model.
fn cluster_names(k: &Kube, cx: Option<&Cx>) -> (String, String) {
    let a = k.s.d.azure.as_ref();
    let model_rg = a.map(|a| a.resource_group.clone()).unwrap_or_default();
    let model_name = a.map(|a| a.aks_name.clone()).unwrap_or_default();
    let rg = cx.and_then(|cx| cx.output("infra", "resource_group_name")).unwrap_or(model_rg);
    let name = cx.and_then(|cx| cx.output("infra", "cluster_name")).unwrap_or(model_name);
    (rg, name)
}

fn get_credentials(k: &Kube, subscription: Option<&str>, rg: &str, name: &str, file: &Path) -> Cmd {
    az(
        k,
        subscription,
        [
            "aks",
            "get-credentials",
            "--resource-group",
            rg,
            "--name",
            name,
            "--file",
            &file.to_string_lossy(),
            "--overwrite-existing",
        ],
    )
    .timeout(T_CREDENTIALS)
    .idempotent(3)
}

fn kubelogin_convert(file: &Path) -> Cmd {
    Cmd::new("kubelogin")
        .args(["convert-kubeconfig", "-l", "azurecli", "--kubeconfig"])
        .arg(file.to_string_lossy())
        .timeout(T_VERSION)
        .idempotent(2)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct KubeConfig {
    clusters: Vec<Named<ClusterEntry>>,
    contexts: Vec<Named<serde_json::Value>>,
    users: Vec<Named<UserEntry>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Named<T: Default> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    item: T,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ClusterEntry {
    server: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
struct UserEntry {
    exec: Option<ExecEntry>,
    auth_provider: Option<AuthProvider>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ExecEntry {
    command: String,
    args: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AuthProvider {
    name: String,
}

/// A kubeconfig that authenticates through Entra ID in a way non-interactive runs cannot use
/// (the legacy `azure` auth provider, or kubelogin in another login mode than the Azure CLI's).
fn needs_kubelogin(kc: &KubeConfig) -> bool {
    kc.users.iter().any(|u| {
        u.item.auth_provider.as_ref().is_some_and(|a| a.name == "azure")
            || u.item.exec.as_ref().is_some_and(|e| {
                e.command.ends_with("kubelogin")
                    && !e.args.windows(2).any(|w| matches!(w[0].as_str(), "-l" | "--login") && w[1] == "azurecli")
                    && !e.args.iter().any(|a| a == "--login=azurecli")
            })
    })
}

fn read_kubeconfig(path: &Path) -> Result<KubeConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_str::<KubeConfig>(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a kubeconfig: {e}", path.display()))
}

/// An empty file only its owner can read (the kubeconfig holds cluster credentials).
fn create_private(path: &Path) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.flush()?;
    Ok(())
}

/// The deployment's own kubeconfig (never the user's ~/.kube/config): fetched into a private
/// temp file, converted for Entra ID clusters, then renamed into place.
fn credentials(k: &Kube, cx: &Cx) -> Result<Outputs> {
    let path = k.kubeconfig().context("credentials is a phase of target aks only")?;
    let dir = path.parent().expect("kubeconfig has a folder");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(".kubeconfig.new");
    create_private(&tmp)?;
    let (rg, name) = cluster_names(k, Some(cx));
    let sub = subscription_of(k, cx);
    let result = (|| -> Result<KubeConfig> {
        cx.runner.run(&get_credentials(k, sub.as_deref(), &rg, &name, &tmp))?;
        let kc = read_kubeconfig(&tmp)?;
        if needs_kubelogin(&kc) {
            cx.runner.info("the cluster uses Entra ID: converting the kubeconfig to Azure CLI login");
            match cx.runner.run(&kubelogin_convert(&tmp)) {
                Err(CmdError::NotFound { .. }) => bail!(
                    "cluster {name} uses Entra ID authentication and needs `kubelogin` on PATH (install it with `az aks install-cli`)"
                ),
                r => {
                    r?;
                }
            }
            return read_kubeconfig(&tmp);
        }
        Ok(kc)
    })();
    let kc = match result {
        Ok(kc) => kc,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    cx.runner.info(&format!("kubeconfig for {name} written to {} (mode 0600)", path.display()));
    let server = kc.clusters.first().map(|c| c.item.server.clone()).unwrap_or_default();
    Ok(Outputs::from([
        ("resource_group".to_string(), rg),
        ("cluster".to_string(), name),
        ("server".to_string(), server),
    ]))
}

// ---------------------------------------------------------------------------------------------
// destroy and status

fn side_runner(k: &Kube, name: &str) -> Result<Runner> {
    Ok(Runner::new(
        "infra",
        Some(&k.s.dir.join("logs").join(format!("{name}.log"))),
        k.s.redactor.clone(),
        k.s.reporter.clone(),
    )?)
}

/// The subscription outside a deploy: the spec's, `ARM_SUBSCRIPTION_ID`, or the Azure CLI's.
fn subscription_now(k: &Kube, r: &Runner) -> Result<String> {
    account(k, r).map_err(|e| anyhow::anyhow!(e))
}

/// `terraform destroy` of everything the deployment's configuration manages; removes the
/// deployment's kubeconfig and forgets the phases that depended on the infrastructure.
/// Destroying what is already gone succeeds.
pub fn destroy(k: &Kube, o: &DestroyOptions) -> Result<()> {
    let Some(a) = k.s.d.azure.as_ref() else { return Ok(()) };
    approve(
        &format!(
            "Destroy the Azure resources of `{}` (resource group {}, cluster {}, registry {})",
            k.s.d.name, a.resource_group, a.aks_name, a.acr_name
        ),
        o.auto_approve,
    )?;
    crate::run::signals::install();
    let _lock = k.s.lock("destroy")?;
    let r = side_runner(k, "destroy-infra")?;
    let sub = subscription_now(k, &r)?;
    let tf = Terraform::prepared(k, Some(sub))?;
    r.run(&tf.init())?;
    r.run(&tf.destroy())?;
    tf.drop_plan();
    if let Some(kc) = k.kubeconfig() {
        let _ = std::fs::remove_file(kc);
    }
    k.s.store()?.forget(&["preflight", "infra", "image-push", "credentials"])?;
    r.info("infrastructure destroyed");
    Ok(())
}

/// Per-phase state of every phase (from `state.json`) and, on aks, the live Terraform outputs.
pub fn status(k: &Kube) -> Result<(String, serde_json::Value)> {
    let store = k.s.store()?;
    let state = store.snapshot();
    let mut text = format!("deployment {} (target {})\n", k.s.d.name, k.s.d.target.as_str());
    let mut phases = serde_json::Map::new();
    let g = crate::graph::graph(&k.s.d, &k.s.rendered, Default::default());
    let mut ids: Vec<&str> = g.phases.iter().map(|p| p.id).collect();
    for id in state.phases.keys() {
        if !ids.contains(&id.as_str()) {
            ids.push(id);
        }
    }
    for id in ids {
        let rec = state.phases.get(id);
        let status = rec.map(|r| status_word(r.status)).unwrap_or("not run");
        let when = rec.and_then(|r| r.finished_at.or(Some(r.started_at))).unwrap_or(0);
        text.push_str(&format!("  {id:<12} {status}"));
        if let Some(e) = rec.and_then(|r| r.error.as_deref()) {
            text.push_str(&format!(": {}", e.lines().next().unwrap_or("")));
        }
        text.push('\n');
        phases.insert(
            id.to_string(),
            serde_json::json!({
                "status": status,
                "at": if when == 0 { serde_json::Value::Null } else { when.into() },
                "error": rec.and_then(|r| r.error.clone()),
                "outputs": rec.map(|r| r.outputs.clone()).unwrap_or_default(),
            }),
        );
    }
    let mut json = serde_json::json!({ "phases": phases });
    if k.aks() {
        match live_outputs(k) {
            Ok(o) if o.is_empty() => {
                text.push_str("infrastructure: none in the Terraform state\n");
                json["outputs"] = serde_json::json!({});
            }
            Ok(o) => {
                text.push_str("infrastructure (terraform outputs):\n");
                for (key, v) in &o {
                    text.push_str(&format!("  {key} = {v}\n"));
                }
                json["outputs"] = serde_json::to_value(&o)?;
            }
            Err(e) => {
                let e = k.s.redactor.scrub(&format!("{e:#}"));
                text.push_str(&format!("infrastructure: unknown ({})\n", e.lines().next().unwrap_or("")));
                json["outputs_error"] = e.into();
            }
        }
        if let Some(kc) = k.kubeconfig().filter(|p| p.is_file()) {
            text.push_str(&format!("kubeconfig: {}\n", kc.display()));
            json["kubeconfig"] = kc.display().to_string().into();
        }
    }
    Ok((text, json))
}

fn status_word(s: PhaseStatus) -> &'static str {
    match s {
        PhaseStatus::Running => "running",
        PhaseStatus::Completed => "completed",
        PhaseStatus::Failed => "failed",
        PhaseStatus::Interrupted => "interrupted",
    }
}

/// `terraform output -json` (after `init` when the folder was never initialised).
fn live_outputs(k: &Kube) -> Result<Outputs> {
    let r = Runner::new(
        "status",
        Some(&k.s.dir.join("logs").join("status.log")),
        k.s.redactor.clone(),
        std::sync::Arc::new(crate::run::progress::Collect::default()),
    )?;
    let tf = Terraform::prepared(k, wanted_subscription(k))?;
    if !tf.dir.join(".terraform").exists() {
        r.run(&tf.init().quiet())?;
    }
    tf.outputs(&r)
}

/// Provider address of azurerm in a lock file.
const AZURERM_ADDRESS: &str = "registry.terraform.io/hashicorp/azurerm";

/// Whether `dir/.terraform.lock.hcl` records an azurerm version that the azurerm version
/// constraint of `dir/*.tf` excludes. Anything unreadable counts as not excluded: `init` then
/// says what is wrong.
fn locked_azurerm_excluded(dir: &Path) -> bool {
    let string = |e: &hcl::Expression| match e {
        hcl::Expression::String(s) => Some(s.clone()),
        _ => None,
    };
    let Ok(lock) = std::fs::read_to_string(dir.join(".terraform.lock.hcl")) else { return false };
    let Ok(lock) = hcl::from_str::<hcl::Body>(&lock) else { return false };
    let locked = lock
        .blocks()
        .filter(|b| b.identifier() == "provider" && b.labels().first().is_some_and(|l| l.as_str() == AZURERM_ADDRESS))
        .flat_map(|b| b.body().attributes())
        .find(|a| a.key() == "version")
        .and_then(|a| string(a.expr()));
    let Some(locked) = locked else { return false };
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    let constraint = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tf"))
        .filter_map(|p| hcl::from_str::<hcl::Body>(&std::fs::read_to_string(p).ok()?).ok())
        .flat_map(|body| body.into_blocks())
        .filter(|b| b.identifier() == "terraform")
        .flat_map(|b| b.body.into_blocks())
        .filter(|b| b.identifier() == "required_providers")
        .flat_map(|b| b.body.into_attributes())
        .find(|a| a.key() == "azurerm")
        .and_then(|a| match a.expr {
            hcl::Expression::Object(o) => {
                o.iter().find_map(|(k, v)| (k.to_string().trim_matches('"') == "version").then(|| string(v)).flatten())
            }
            _ => None,
        });
    let Some(constraint) = constraint else { return false };
    crate::render::terraform::constraint_admits(&constraint, &locked) == Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_upgrades_a_lock_file_the_constraint_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let tf =
            Terraform { dir: dir.path().to_path_buf(), subscription: None, kubernetes_version: None, applied: None };
        std::fs::write(
            dir.path().join("providers.tf"),
            "terraform {\n  required_providers {\n    azurerm = {\n      source  = \"hashicorp/azurerm\"\n      \
             version = \">= 4.57, < 6.0\"\n    }\n  }\n}\n",
        )
        .unwrap();
        let lock = |v: &str| {
            format!(
                "provider \"registry.terraform.io/hashicorp/azurerm\" {{\n  version     = \"{v}\"\n  \
                 constraints = \"~> 4.0\"\n  hashes = [\"h1:x\"]\n}}\n"
            )
        };
        // No lock file yet: a first init.
        assert!(!tf.init().display().contains("-upgrade"), "{}", tf.init().display());
        std::fs::write(dir.path().join(".terraform.lock.hcl"), lock("4.40.0")).unwrap();
        assert!(tf.init().display().ends_with(" -upgrade"), "{}", tf.init().display());
        std::fs::write(dir.path().join(".terraform.lock.hcl"), lock("4.81.0")).unwrap();
        assert!(!tf.init().display().contains("-upgrade"), "{}", tf.init().display());
        std::fs::write(dir.path().join(".terraform.lock.hcl"), lock("5.2.0")).unwrap();
        assert!(!tf.init().display().contains("-upgrade"), "{}", tf.init().display());
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("v3.14.4+g81c902a"), Some((3, 14)));
        assert_eq!(parse_version("1.9.5"), Some((1, 9)));
        assert_eq!(parse_version("v1.30.1"), Some((1, 30)));
        assert_eq!(parse_version("nonsense"), None);
        assert!(check_min("helm", "v3.7.0", MIN_HELM).unwrap().contains("too old"));
        assert!(check_min("helm", "v3.8.0", MIN_HELM).is_none());
        assert!(check_min("terraform", "1.10.0", MIN_TERRAFORM).is_none());
    }

    #[test]
    fn the_subscription_of_a_resource_group_id() {
        let sub = "11111111-2222-3333-4444-555555555555";
        assert_eq!(subscription_in_id(&format!("/subscriptions/{sub}/resourceGroups/rg-x")).as_deref(), Some(sub));
        assert_eq!(subscription_in_id(&format!("/Subscriptions/{sub}/resourceGroups/rg-x")).as_deref(), Some(sub));
        for bad in
            ["", "/", "/subscriptions/", "/subscriptions/not-a-guid/resourceGroups/x", "subscriptions/x", "/tenants/x"]
        {
            assert_eq!(subscription_in_id(bad), None, "{bad}");
        }
        assert_eq!(subscription_in_id(&format!("x/subscriptions/{sub}")), None);
    }

    #[test]
    fn outputs_skip_sensitive_values() {
        let o = parse_outputs(
            r#"{"acr_name":{"sensitive":false,"type":"string","value":"acrx"},
                "kube":{"sensitive":true,"type":"string","value":"SECRET"},
                "n":{"sensitive":false,"type":"number","value":3}}"#,
        )
        .unwrap();
        assert_eq!(o.get("acr_name").unwrap(), "acrx");
        assert_eq!(o.get("n").unwrap(), "3");
        assert!(!o.contains_key("kube"));
        assert!(require_outputs(o).unwrap_err().to_string().contains("acr_login_server"));
    }

    #[test]
    fn entra_id_kubeconfigs_need_conversion() {
        let plain = "clusters: [{name: c, cluster: {server: 'https://x:443'}}]\nusers: [{name: u, user: {token: t}}]\n";
        let kc: KubeConfig = serde_saphyr::from_str(plain).unwrap();
        assert!(!needs_kubelogin(&kc));
        assert_eq!(kc.clusters[0].item.server, "https://x:443");
        let exec = "users: [{name: u, user: {exec: {command: kubelogin, args: [get-token, --login, devicecode]}}}]\n";
        assert!(needs_kubelogin(&serde_saphyr::from_str(exec).unwrap()));
        let done = "users: [{name: u, user: {exec: {command: kubelogin, args: [get-token, --login, azurecli]}}}]\n";
        assert!(!needs_kubelogin(&serde_saphyr::from_str(done).unwrap()));
        let legacy = "users: [{name: u, user: {auth-provider: {name: azure, config: {}}}}]\n";
        assert!(needs_kubelogin(&serde_saphyr::from_str(legacy).unwrap()));
    }
}
