//! Targets `aks` and `kubernetes`: terraform, docker, az, helm and kubectl. Each module carries
//! out a family of phases: [`infra`] (preflight, infra, credentials; [`azure_preflight`] checks
//! the subscription's quota, VM sizes and Kubernetes versions), [`image`] (image-build,
//! image-push), [`device_plugin`] (device-plugin), [`cluster`] (crds, operator, secrets, mounts,
//! cluster, ready, jobs) with [`chart`] for the operator chart on disk, [`secrets`] resolving
//! secret values, [`jobs`] for RayJobs,
//! [`live`] for reads and writes of cluster state, [`forward`] for the port-forwards of
//! `dashboard` and [`session`]; this file routes phases and commands to them.

pub mod azure_preflight;
pub mod chart;
pub mod cluster;
pub mod device_plugin;
pub mod forward;
pub mod image;
pub mod infra;
pub mod jobs;
pub mod live;
pub mod secrets;
pub mod session;

use std::path::PathBuf;

use anyhow::Result;

use crate::context::{self, Context, DestroyOptions};
use crate::graph::Phase;
use crate::run::exec::{Cx, Outputs, Phases};
use crate::run::proc::Cmd;
use crate::spec::Target;

pub struct Kube<'a> {
    pub s: &'a Context,
    /// Helm releases (name, namespace) this run found absent and has not installed since: asked
    /// again, Helm would give the same answer (see [`live::release`]).
    absent: std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
    /// The operator chart this run fetched from its repository or registry (see [`chart`]).
    pulled: std::sync::Mutex<Option<PathBuf>>,
    /// The chart's CRDs as the crds phase applies them, once read (see [`cluster`]).
    crds: std::sync::Mutex<Option<std::sync::Arc<cluster::ChartCrds>>>,
    /// The CRDs the operator watches that this run applied: served before it is installed.
    crds_applied: std::sync::Mutex<Vec<serde_json::Value>>,
}

impl<'a> Kube<'a> {
    pub fn new(s: &'a Context) -> Result<Self> {
        Ok(Self {
            s,
            absent: Default::default(),
            pulled: Default::default(),
            crds: Default::default(),
            crds_applied: Default::default(),
        })
    }

    /// Whether this run found the Helm release absent and has not installed it since.
    pub(crate) fn known_absent(&self, name: &str, ns: &str) -> bool {
        self.absent.lock().expect("absent releases").contains(&(name.to_string(), ns.to_string()))
    }

    /// Records that the release is absent (`true`) or may exist (`false`, raydeploy installs it).
    pub(crate) fn absent(&self, name: &str, ns: &str, absent: bool) {
        let mut set = self.absent.lock().expect("absent releases");
        let key = (name.to_string(), ns.to_string());
        if absent {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    pub fn aks(&self) -> bool {
        self.s.d.target == Target::Aks
    }

    /// The kubeconfig the deployment uses: its own file (written by `credentials`) on AKS;
    /// on target kubernetes the user's (`KUBECONFIG` or ~/.kube/config) with the spec's context.
    pub fn kubeconfig(&self) -> Option<PathBuf> {
        self.aks().then(|| self.s.dir.join("kubeconfig"))
    }

    fn context(&self) -> Option<&str> {
        self.s.d.kubernetes.as_ref().and_then(|k| k.context.as_deref())
    }

    /// `kubectl` with the deployment's kubeconfig and context.
    pub fn kubectl(&self) -> Cmd {
        let mut c = Cmd::new("kubectl");
        if let Some(k) = self.kubeconfig() {
            c = c.arg("--kubeconfig").arg(k.to_string_lossy());
        }
        if let Some(ctx) = self.context() {
            c = c.arg("--context").arg(ctx);
        }
        c
    }

    /// `helm` with the deployment's kubeconfig and context.
    pub fn helm(&self) -> Cmd {
        let mut c = Cmd::new("helm");
        if let Some(k) = self.kubeconfig() {
            c = c.arg("--kubeconfig").arg(k.to_string_lossy());
        }
        if let Some(ctx) = self.context() {
            c = c.arg("--kube-context").arg(ctx);
        }
        c
    }
}

impl Phases for Kube<'_> {
    fn probe(&self, p: &Phase, cx: &Cx) -> Result<Option<Outputs>> {
        match p.id {
            "preflight" | "infra" | "credentials" => infra::probe(self, p, cx),
            "image-build" | "image-push" => image::probe(self, p, cx),
            device_plugin::PHASE => device_plugin::probe(self, p, cx).map_err(live::explain_unreachable),
            _ => cluster::probe(self, p, cx).map_err(live::explain_unreachable),
        }
    }

    fn apply(&self, p: &Phase, cx: &Cx) -> Result<Outputs> {
        match p.id {
            "preflight" | "infra" | "credentials" => infra::apply(self, p, cx),
            "image-build" | "image-push" => image::apply(self, p, cx),
            device_plugin::PHASE => device_plugin::apply(self, p, cx).map_err(live::explain_unreachable),
            _ => cluster::apply(self, p, cx).map_err(live::explain_unreachable),
        }
    }

    /// What each probe needs (see [`Phases::early`]): the infra fast path and the image reads
    /// need nothing; the kubeconfig is fetched once the fast path found the cluster; the push
    /// probe needs the registry infra reports; the cluster-side probes need the kubeconfig
    /// file, the cluster's also the pushed digests, and those that need the CRDs the CRDs found
    /// in place. So a no-op deploy reads preflight ∥ infra ∥ images, then the kubeconfig, then
    /// the CRDs ∥ Secrets ∥ volumes, then the releases and the RayCluster.
    fn early(&self, p: &Phase) -> Option<crate::run::exec::Early> {
        use crate::run::exec::Early;
        // The kubeconfig file is enough (credentials' early fetch), not its outputs.
        let after: Vec<&'static str> = if self.aks() { vec!["credentials"] } else { vec![] };
        Some(match p.id {
            "infra" | "image-build" => Early::default(),
            // Fetched early only once the infra fast path found the cluster as configured.
            "credentials" => Early { after: vec!["infra"], apply: true, ..Early::default() },
            "image-push" => Early { needs: if self.aks() { vec!["infra"] } else { vec![] }, ..Early::default() },
            // The CRDs' version labels answer "not in place" for good.
            "crds" => Early { after: after.clone(), final_no: true, ..Early::default() },
            "secrets" | "mounts" | device_plugin::PHASE => Early { after, ..Early::default() },
            // What needs the CRDs is probed early once they are found in place: when the crds
            // phase must run (a first deploy, a KubeRay upgrade), its probe and the CRDs' apply
            // have the machine and the API server to themselves, and these phases probe in
            // their turn.
            "operator" | "ready" => Early { after: [after, vec!["crds"]].concat(), ..Early::default() },
            "cluster" => Early { needs: vec!["image-push"], after: [after, vec!["crds"]].concat(), ..Early::default() },
            _ => return None,
        })
    }

    fn preview(&self, p: &Phase) -> Vec<String> {
        match p.id {
            "preflight" | "infra" | "credentials" => infra::preview(self, p),
            "image-build" | "image-push" => image::preview(self, p),
            device_plugin::PHASE => device_plugin::preview(self, p),
            _ => cluster::preview(self, p),
        }
    }
}

impl context::Target for Kube<'_> {
    fn destroy(&self, s: &Context, o: &DestroyOptions) -> Result<()> {
        // One question for everything that goes, then no more.
        let infra = self.aks() && !o.keep_infra;
        let what = if infra {
            format!(
                "Destroy `{}`: its Ray cluster, operator, secrets and the Azure infrastructure (AKS, registry)",
                s.d.name
            )
        } else {
            format!(
                "Remove `{}` (Ray cluster, operator{}, secrets, volumes) from the cluster",
                s.d.name,
                if s.d.device_plugin.is_some() { ", NVIDIA device plugin" } else { "" }
            )
        };
        context::approve(&what, o.auto_approve)?;
        let o = DestroyOptions { auto_approve: true, ..o.clone() };
        cluster::destroy(self, &o).map_err(live::explain_unreachable)?;
        if infra {
            infra::destroy(self, &o)?;
        }
        Ok(())
    }
    fn status(&self, _s: &Context) -> Result<(String, serde_json::Value)> {
        let (t1, j1) = infra::status(self)?;
        let (t2, j2) = cluster::status(self)?;
        Ok((format!("{t1}{t2}"), serde_json::json!({"infra": j1, "cluster": j2})))
    }
    fn job_submit(&self, _s: &Context, name: &str, follow: bool) -> Result<u8> {
        jobs::submit(self, name, follow)
    }
    fn job_logs(&self, _s: &Context, name: &str) -> Result<u8> {
        jobs::logs(self, name)
    }
    fn job_list(&self, _s: &Context) -> Result<(String, serde_json::Value)> {
        jobs::list(self)
    }
    fn job_delete(&self, _s: &Context, name: &str) -> Result<()> {
        jobs::delete(self, name)
    }
    fn dashboard(&self, _s: &Context) -> Result<()> {
        cluster::dashboard(self)
    }
    fn session(&self, _s: &Context, o: &crate::session::Options) -> Result<()> {
        session::session(self, o)
    }

    fn run(&self, _s: &Context, name: &str, rm: bool) -> Result<u8> {
        jobs::run(self, name, rm)
    }
}

/// For phases a module does not handle (a routing bug).
pub(crate) fn unknown(p: &Phase) -> anyhow::Error {
    anyhow::anyhow!("no handler for phase {}", p.id)
}
