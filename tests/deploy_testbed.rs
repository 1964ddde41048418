//! The Kubernetes side of raydeploy against a real control plane (tests/support/testbed.rs): the
//! real `raydeploy` binary, target `kubernetes`, with the real Helm (3 and 4) and the bed's real
//! kubectl, behind recording wrappers that only log their argv (tests/support/bed_deploy.rs). The
//! API server validates and stores what raydeploy applies, the real KubeRay operator makes the
//! pods, the real scheduler places them on kwok's nodes, and kwok runs them (no containers). The
//! image phases use a docker stand-in that builds and pushes by name.
//!
//! The tests share one bed and run one at a time (the KubeRay operator release and its
//! cluster-scoped objects are shared by every deployment); each has its own deployment name and
//! namespace. Timings are printed, never asserted.

#[path = "support/testbed.rs"]
mod testbed;

#[path = "support/kube_env.rs"]
mod kube_env;

#[path = "support/bed_deploy.rs"]
mod bed_deploy;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bed_deploy::{BedDeploy, WAIT, bed_spec, condition, files, operator_bed, state, text};
use serde_json::Value;
use testbed::TestBed;

const CANARY: &str = "cnry-7d1e4b0a92f3";

/// One test at a time: the operator release is shared.
static SERIAL: Mutex<()> = Mutex::new(());

fn spec(name: &str, cpu_replicas: u32, extra: &str) -> String {
    spec_cpu(name, cpu_replicas, 1, extra)
}

fn spec_cpu(name: &str, cpu_replicas: u32, worker_cpu: u32, extra: &str) -> String {
    let workers = format!(
        "    - {{ name: cpu, cpu: {worker_cpu}, memory: 2Gi, replicas: {cpu_replicas} }}\n    \
         - {{ name: gpu, cpu: 1, memory: 4Gi, gpus: 1, replicas: 1 }}"
    );
    let secrets = "\nsecrets:\n  - name: api\n    exposeAsEnv: true\n    data:\n      token: { fromEnv: BED_TOKEN }\n";
    bed_spec(name, &workers, &format!("{secrets}{extra}"))
}

fn project(bed: &'static TestBed, helm: &str, spec: &str) -> BedDeploy {
    let mut p = BedDeploy::new(bed, helm, spec);
    p.set("BED_TOKEN", CANARY);
    p.set("RAYDEPLOY_READY_TIMEOUT", "300");
    p
}

fn deploy(p: &BedDeploy, extra: &[&str]) -> (std::process::Output, Duration) {
    let t0 = Instant::now();
    let mut args = vec!["deploy", "--auto-approve"];
    args.extend(extra);
    let o = p.run(&args);
    (o, t0.elapsed())
}

/// The pods of RayCluster `name` in namespace `name`, once head and every worker run.
fn running_pods(bed: &TestBed, name: &str, workers: usize) -> Vec<Value> {
    bed.wait_for(&format!("RayCluster {name}'s pods to run"), WAIT, |note| {
        let pods = bed.get_json(&["pods", "-n", name, "-l", &format!("ray.io/cluster={name}")]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        *note = items
            .iter()
            .map(|p| format!("{} {} {}", p["metadata"]["name"], p["status"]["phase"], p["spec"]["nodeName"]))
            .collect::<Vec<_>>()
            .join("; ");
        let running = items.iter().filter(|p| p["status"]["phase"] == "Running").count();
        (running == items.len() && items.len() == workers + 1).then_some(items)
    })
}

/// The full test's other secret values: the token after its rotation, a value from a file, one
/// from Key Vault (the Azure CLI stand-in), a mount's storage key. Each must reach its Secret, and
/// nothing else: no output, no file under `.raydeploy/`, no other object of the API.
const TOKEN_NEW: &str = "cnry-rotated-5c38e1d07a";
const FILE_SECRET: &str = "cnry-file-0b7e92d4c1";
const KV_SECRET: &str = "cnry-kv-e41f6a9d23";
const BLOB_KEY: &str = "cnry-blob-9a2d7c4e18";
const CANARIES: [&str; 5] = [CANARY, TOKEN_NEW, FILE_SECRET, KV_SECRET, BLOB_KEY];

/// [`spec`] plus a secret from a file and one from Key Vault, an Azure Blob mount (a
/// PersistentVolume and a claim) with its storage key in a second Secret, and a RayJob.
fn full_spec(name: &str, cpu_replicas: u32) -> String {
    let mount = "  mounts:\n    - { name: data, type: azureblob, storageAccount: stbed, container: data, path: /mnt/data, \
                 secret: blob-creds }\n\nsecrets:\n";
    let more = "      token: { fromEnv: BED_TOKEN }\n      db: { fromFile: ./db.txt }\n      \
                key: { fromKeyVault: { vault: kv-bed, secret: api-key } }\n  - name: blob-creds\n    data:\n      \
                azurestorageaccountname: { fromEnv: BED_BLOB_ACCOUNT }\n      \
                azurestorageaccountkey: { fromEnv: BED_BLOB_KEY }\n";
    spec(name, cpu_replicas, "jobs:\n  - name: report\n    entrypoint: python -c \"print(42)\"\n")
        .replace("\nsecrets:\n", &format!("\n{mount}"))
        .replace("      token: { fromEnv: BED_TOKEN }\n", more)
}

/// Every form of a value this test looks for: as is, and its base64 at each byte alignment
/// inside a longer base64 text.
fn forms(v: &str) -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    let mut out = vec![v.to_string()];
    for r in 0..3 {
        let mut buf = vec![b'#'; r];
        buf.extend_from_slice(v.as_bytes());
        let (start, end) = ((8 * r).div_ceil(6), (8 * (r + v.len())) / 6);
        out.push(STANDARD_NO_PAD.encode(&buf)[start..end].to_string());
    }
    out
}

fn assert_no_canary(what: &str, t: &str) {
    for c in CANARIES {
        for f in forms(c) {
            assert!(!t.contains(&f), "secret value {c} appears in {what} (as {f:?})");
        }
    }
}

fn b64(v: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(v)
}

fn unb64(v: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or("")).unwrap_or_default()
}

/// Helm's record of a release revision (the `release` key of its storage Secret): base64 of the
/// gzipped release JSON (the Secret's base64 on top is undone by [`unb64`]).
fn helm_payload(data: &[u8]) -> String {
    use base64::Engine;
    let gz = base64::engine::general_purpose::STANDARD.decode(data).expect("helm's payload is base64");
    if !gz.starts_with(&[0x1f, 0x8b]) {
        return String::from_utf8_lossy(&gz).into_owned();
    }
    let mut child = std::process::Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip runs");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &gz));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "gunzip of a Helm release");
    String::from_utf8(out.stdout).expect("a Helm release is JSON")
}

/// Every object the API server stores (every listable kind, every namespace), read back through
/// the API: the deployment's own Secrets hold exactly the current values, base64 in `data`;
/// no other object holds any secret value in any form — Helm's release records decoded, every
/// other Secret's data decoded. Returns how many objects were read.
fn assert_secrets_only_in_their_secrets(bed: &TestBed, name: &str, want: &[(&str, &str, &str)]) -> usize {
    let kinds = bed.kubectl(&["api-resources", "--verbs=list", "-o", "name"]);
    let kinds: Vec<&str> = kinds.lines().filter(|k| !k.is_empty()).collect();
    let all = bed.get_json(&[&kinds.join(","), "-A"]);
    let items = all["items"].as_array().unwrap();
    let mut found = 0;
    for o in items {
        let kind = o["kind"].as_str().unwrap_or("");
        let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
        let oname = o["metadata"]["name"].as_str().unwrap_or("");
        let what = format!("{kind} {ns}/{oname}");
        if kind == "Secret" && ns == name && want.iter().any(|(s, _, _)| *s == oname) {
            for (s, key, value) in want.iter().filter(|(s, _, _)| *s == oname) {
                assert_eq!(o["data"][*key], b64(value).as_str(), "{what} key {key}");
                assert!(o.get("stringData").is_none(), "{what}");
                found += 1;
                let _ = s;
            }
            let mut rest = o.clone();
            rest.as_object_mut().unwrap().remove("data");
            assert_no_canary(&what, &rest.to_string());
            continue;
        }
        assert_no_canary(&what, &o.to_string());
        if kind == "Secret" {
            for (key, v) in o["data"].as_object().into_iter().flatten() {
                let raw = unb64(v);
                let text = if o["type"] == "helm.sh/release.v1" && key == "release" {
                    helm_payload(&raw)
                } else {
                    String::from_utf8_lossy(&raw).into_owned()
                };
                assert_no_canary(&format!("{what} data {key} (decoded)"), &text);
            }
        }
    }
    assert_eq!(found, want.len(), "every value is in its Secret");
    let releases = items.iter().filter(|o| o["type"] == "helm.sh/release.v1").count();
    assert!(releases >= 2, "Helm's release records were read: {releases}");
    items.len()
}

/// `raydeploy ARGS…`; its output is kept for the final check.
fn run(p: &BedDeploy, outputs: &mut Vec<(String, String)>, args: &[&str]) -> std::process::Output {
    let o = p.run(args);
    outputs.push((args.join(" "), text(&o)));
    o
}

fn layer<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["layers"].as_array().unwrap().iter().find(|l| l["layer"] == name).unwrap_or_else(|| panic!("{plan}"))
}

fn plan_json(p: &BedDeploy, outputs: &mut Vec<(String, String)>, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["plan", "--output", "json"];
    args.extend(extra);
    let o = run(p, outputs, &args);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    (o.status.code().unwrap_or(-1), v)
}

fn position(calls: &[kube_env::Call], what: &str, pred: impl Fn(&kube_env::Call) -> bool) -> usize {
    calls.iter().position(pred).unwrap_or_else(|| {
        panic!("no call {what} in {:#?}", calls.iter().map(kube_env::Call::line).collect::<Vec<_>>())
    })
}

fn deploy_from_nothing_then_noop_plan_status_destroy(helm: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("full-{helm}");
    let bed = operator_bed(&name, "8");
    // The CRDs stay after a destroy (README): an earlier test's deploy left raydeploy's label on
    // them. Without it they are someone else's, and this deploy applies them again.
    bed.kubectl(&["label", "crd", "-l", "raydeploy.io/kuberay-version", "raydeploy.io/kuberay-version-"]);
    let mut p = project(bed, helm, &full_spec(&name, 1));
    std::fs::write(p.spec_dir.join("db.txt"), FILE_SECRET).unwrap();
    p.add_az();
    p.set("RAYDEPLOY_FAKE_KV_KV_BED_API_KEY", KV_SECRET).set("BED_BLOB_ACCOUNT", "stbed").set("BED_BLOB_KEY", BLOB_KEY);
    let mut outs: Vec<(String, String)> = vec![];

    // 0. Nothing deployed yet: status says so; plan says what each layer creates; the dry run
    // runs nothing.
    let o = run(&p, &mut outs, &["status", "--output", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let st: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(st["cluster"]["raycluster"]["exists"], false, "{st}");
    assert!(st["cluster"]["releases"]["cluster"].is_null(), "{st}");
    let (code, plan) = plan_json(&p, &mut outs, &[]);
    assert_eq!(code, 2, "{plan}");
    assert_eq!(plan["mode"], "live");
    assert_eq!(layer(&plan, "image")["items"][0]["action"], "build", "{plan}");
    assert_eq!(layer(&plan, "operator")["status"], "create", "{plan}");
    assert_eq!(layer(&plan, "cluster")["status"], "create", "{plan}");
    let items = layer(&plan, "secrets")["items"].as_array().unwrap().clone();
    assert!(items.iter().any(|i| i["name"] == "api.token" && i["action"] == "add"), "{items:?}");
    assert!(
        items.iter().any(|i| i["name"] == "blob-creds.azurestorageaccountkey" && i["action"] == "add"),
        "{items:?}"
    );
    p.clear_calls();
    let o = run(&p, &mut outs, &["deploy", "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(p.calls().iter().all(|c| !c.mutating()), "the dry run changes nothing: {:#?}", p.calls());

    // 1. From nothing.
    p.clear_calls();
    let t0 = Instant::now();
    let o = run(&p, &mut outs, &["deploy", "--auto-approve"]);
    let first = t0.elapsed();
    let out = text(&o);
    assert!(o.status.success(), "deploy with {helm}:\n{out}\ncalls:\n{:#?}", p.calls());
    eprintln!("{helm}: deploy from nothing took {:.1} s", first.as_secs_f64());
    let calls = p.calls();

    // CRDs: from the chart, applied server-side by raydeploy before the operator, labelled with
    // the KubeRay version, Established.
    for crd in ["rayclusters.ray.io", "rayjobs.ray.io"] {
        let c = bed.get_json(&["crd", crd, "--show-managed-fields"]);
        assert_eq!(c["metadata"]["labels"]["raydeploy.io/kuberay-version"], "1.7.0", "{crd}");
        assert_eq!(condition(&c, "Established").unwrap()["status"], "True", "{crd}");
        let managers = c["metadata"]["managedFields"].as_array().unwrap();
        assert!(
            managers.iter().any(|m| m["manager"] == "raydeploy" && m["operation"] == "Apply"),
            "{crd} applied server-side by raydeploy: {managers:?}"
        );
    }
    let is_helm = |c: &kube_env::Call, w: &[&str]| c.tool == "helm" && c.has(w);
    assert!(
        !calls.iter().any(|c| is_helm(c, &["show", "crds"])),
        "a chart folder's CRDs are read from its crds/ folder, without helm"
    );
    let op = position(&calls, "helm upgrade kuberay-operator", |c| {
        is_helm(c, &["upgrade", "--install", "kuberay-operator"])
    });
    let rollout = position(&calls, "kubectl rollout status of the operator", |c| {
        c.tool == "kubectl" && c.has(&["rollout", "status", "deployment", "-n", "kuberay"])
    });
    let rc = position(&calls, "helm upgrade ray-cluster", |c| is_helm(c, &["upgrade", "--install", &name]));
    assert!(op < rollout, "the operator's release, then its roll-out watched");
    // The order of the objects, from the API's own times (seconds: `<=`): raydeploy's apply of
    // the CRDs before the operator's Deployment; the Secret before the RayCluster.
    let crd = bed.get_json(&["crd", "rayclusters.ray.io", "--show-managed-fields"]);
    let crd_applied = crd["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["manager"] == "raydeploy")
        .and_then(|m| m["time"].as_str())
        .unwrap()
        .to_string();
    let created = |what: &[&str]| bed.get_json(what)["metadata"]["creationTimestamp"].as_str().unwrap().to_string();
    let operator_created = created(&["deployment", "kuberay-operator", "-n", "kuberay"]);
    assert!(crd_applied <= operator_created, "CRDs {crd_applied}, operator {operator_created}");
    // Every CRD the operator watches was Established before its Deployment was created.
    for crd in ["rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io"] {
        let c = bed.get_json(&["crd", crd]);
        let established = condition(&c, "Established").and_then(|e| e["lastTransitionTime"].as_str()).unwrap();
        assert!(
            established <= operator_created.as_str(),
            "{crd} Established {established}, operator {operator_created}"
        );
    }
    let (secret, cluster) = (created(&["secret", "api", "-n", &name]), created(&["raycluster", &name, "-n", &name]));
    assert!(secret <= cluster, "Secret {secret}, RayCluster {cluster}");
    for w in ["--skip-crds", "--create-namespace"] {
        assert!(calls[op].has(&[w]), "{w} missing: {}", calls[op].line());
    }
    assert!(!calls[op].has(&["--wait"]), "kubectl watches the roll-out, Helm does not poll it: {}", calls[op].line());
    // From the chart folder's copy without crds/: the release record carries no CRD.
    assert!(calls[op].argv.iter().any(|a| a.ends_with("/charts/kuberay-operator")), "{}", calls[op].line());
    let record = bed.get_json(&["secret", "-n", "kuberay", "-l", "owner=helm,name=kuberay-operator"]);
    let record = &record["items"].as_array().unwrap()[0];
    let payload: Value = serde_json::from_str(&helm_payload(&unb64(&record["data"]["release"]))).unwrap();
    let chart_files: Vec<&str> =
        payload["chart"]["files"].as_array().into_iter().flatten().filter_map(|f| f["name"].as_str()).collect();
    assert!(payload["chart"]["templates"].as_array().is_some_and(|t| !t.is_empty()), "a Helm release record");
    assert!(
        !chart_files.iter().any(|f| f.starts_with("crds/")),
        "the operator's release record keeps the CRDs: {chart_files:?}"
    );
    let files_of = |c: &kube_env::Call| -> Vec<String> {
        c.argv.windows(2).filter(|w| w[0] == "-f").map(|w| w[1].clone()).collect()
    };
    let f = files_of(&calls[rc]);
    assert_eq!(f.len(), 2, "{}", calls[rc].line());
    assert!(f[0].ends_with("helm/ray-cluster.values.yaml") && f[1].ends_with("helm/ray-cluster.images.yaml"));
    let kv: Vec<&kube_env::Call> = calls
        .iter()
        .filter(|c| {
            c.tool == "az" && c.has(&["keyvault", "secret", "show", "--vault-name", "kv-bed", "--name", "api-key"])
        })
        .collect();
    assert!(!kv.is_empty() && kv.iter().all(|c| c.has(&["--query", "value", "-o", "tsv"])), "Key Vault read");
    // The operator release, and its Deployment Available (kwok runs it).
    let rel: Value =
        serde_json::from_str(&bed.helm(helm, &["status", "kuberay-operator", "-n", "kuberay", "-o", "json"]))
            .expect("helm status JSON");
    assert_eq!(rel["info"]["status"], "deployed", "{rel}");
    bed.wait_for("the operator Deployment to be Available", WAIT, |note| {
        let deploys = bed.get_json(&["deployments", "-n", "kuberay"]);
        *note = deploys.to_string();
        deploys["items"]
            .as_array()?
            .iter()
            .any(|d| {
                d["metadata"]["name"].as_str().is_some_and(|n| n.contains("kuberay-operator"))
                    && condition(d, "Available").is_some_and(|c| c["status"] == "True")
            })
            .then_some(())
    });

    // The Secrets: the values from the environment, the file and Key Vault, labelled with a salted
    // hash (never the value); read back through the API only.
    let s = bed.get_json(&["secret", "api", "-n", &name]);
    assert_eq!(s["data"]["token"], b64(CANARY).as_str());
    assert_eq!(s["metadata"]["labels"]["raydeploy.io/secret-hash"].as_str().map(str::len), Some(32), "{s}");
    assert!(s["metadata"]["annotations"]["raydeploy.io/secret-salt"].is_string(), "{s}");
    assert_no_canary("deploy's output", &out);

    // The mount: a PersistentVolume and the claim bound to it.
    let pvc = bed.wait_for("the mount's claim to be Bound", WAIT, |note| {
        let pvc = bed.get_json(&["pvc", &format!("{name}-data"), "-n", &name]);
        *note = pvc["status"].to_string();
        (pvc["status"]["phase"] == "Bound").then_some(pvc)
    });
    assert_eq!(pvc["spec"]["volumeName"], format!("{name}-data"));
    let pv = bed.get_json(&["pv", &format!("{name}-data")]);
    assert_eq!(pv["spec"]["csi"]["nodeStageSecretRef"]["name"], "blob-creds", "{pv}");

    // The ray-cluster release and the operator's pods, placed by the scheduler, each running the
    // image pinned to the digest image-push recorded.
    let rel: Value = serde_json::from_str(&bed.helm(helm, &["status", &name, "-n", &name, "-o", "json"])).unwrap();
    assert_eq!(rel["info"]["status"], "deployed");
    let pods = running_pods(bed, &name, 2);
    for pod in &pods {
        let node = bed.get_json(&["node", pod["spec"]["nodeName"].as_str().unwrap()]);
        let group = pod["metadata"]["labels"]["ray.io/group"].as_str().unwrap_or("");
        let pool = &node["metadata"]["labels"]["raydeploy.test/pool"];
        if group == "gpu" {
            assert_eq!(pool, "gpu", "the GPU worker on the GPU node");
        } else {
            assert_eq!(pool, "cpu", "{} ({group}) stays off the tainted GPU node", pod["metadata"]["name"]);
        }
        let img = pod["spec"]["containers"][0]["image"].as_str().unwrap();
        assert!(img.starts_with(&format!("127.0.0.1:5999/acme/ray-{name}:")) && img.contains("@sha256:1111"), "{img}");
        let mounted = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["persistentVolumeClaim"]["claimName"] == format!("{name}-data").as_str());
        assert!(mounted, "{} mounts the claim", pod["metadata"]["name"]);
    }
    assert_eq!(state(&p, &name)["phases"]["ready"]["status"], "completed");

    // 2. Again: nothing to do, decided from the live objects.
    p.clear_calls();
    let o = run(&p, &mut outs, &["deploy", "--auto-approve"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(p.mutating(), Vec::<String>::new(), "a second deploy changes nothing");

    // 3. From a fresh checkout (no state): still nothing.
    std::fs::remove_file(p.state_dir(&name).join("state.json")).unwrap();
    p.clear_calls();
    let t0 = Instant::now();
    let o = run(&p, &mut outs, &["deploy", "--auto-approve"]);
    let fresh = t0.elapsed();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(p.mutating(), Vec::<String>::new(), "a deploy from a fresh checkout changes nothing");
    assert!(text(&o).contains("live state already matches"), "{}", text(&o));
    eprintln!("{helm}: deploy from a fresh checkout took {:.1} s", fresh.as_secs_f64());

    // plan against the live cluster: no changes; the job, never run, is information only;
    // `plan --with-jobs` counts it, as `deploy --with-jobs` would submit it.
    let o = run(&p, &mut outs, &["plan"]);
    assert_eq!(o.status.code(), Some(0), "plan after deploy:\n{}", text(&o));
    assert!(text(&o).contains("No changes."), "{}", text(&o));
    assert!(text(&o).contains("i RayJob/report: not on the cluster"), "{}", text(&o));
    let (code, plan) = plan_json(&p, &mut outs, &["--with-jobs"]);
    assert_eq!(code, 2, "{plan}");
    let jobs = layer(&plan, "jobs");
    assert_eq!(
        (&jobs["status"], &jobs["items"][0]["action"], &jobs["items"][0]["name"]),
        (&"changes".into(), &"run".into(), &"RayJob/report".into()),
        "{jobs}"
    );

    // A replicas change: the values diff, exit 2, nothing changed. `plan --out` of it is refused
    // by `deploy --plan` once the live release moved after it was written.
    p.write_spec(&full_spec(&name, 2));
    p.clear_calls();
    let o = run(&p, &mut outs, &["plan", "--out", "replicas.plan"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "plan after a replicas change:\n{out}");
    assert!(out.contains("+  replicas: 2"), "the values diff shows the new replicas:\n{out}");
    assert_eq!(p.mutating(), Vec::<String>::new(), "plan changes nothing");
    let o = run(&p, &mut outs, &["deploy", "--auto-approve"]);
    assert!(o.status.success(), "{}", text(&o));
    running_pods(bed, &name, 3);
    let o = run(&p, &mut outs, &["deploy", "--auto-approve", "--plan", "replicas.plan"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("no longer matches") && out.contains("live release"), "{out}");

    // A rotated secret: plan names the key, never a value; `plan --out` + `deploy --plan`
    // applies exactly that: the Secret alone.
    p.set("BED_TOKEN", TOKEN_NEW);
    let o = run(&p, &mut outs, &["plan"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("~ api.token: value changed (redacted)"), "{out}");
    let (_, plan) = plan_json(&p, &mut outs, &[]);
    let items = layer(&plan, "secrets")["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "only the rotated key: {items:?}");
    assert_eq!((&items[0]["name"], &items[0]["action"]), (&"api.token".into(), &"change".into()));
    let o = run(&p, &mut outs, &["plan", "--out", "rotate.plan"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    p.clear_calls();
    let o = run(&p, &mut outs, &["deploy", "--auto-approve", "--plan", "rotate.plan"]);
    assert!(o.status.success(), "{}", text(&o));
    let m = p.mutating();
    assert!(m.len() == 1 && m[0].starts_with("kubectl apply"), "the new value is applied alone: {m:#?}");
    let o = run(&p, &mut outs, &["plan"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // In the API: the values in their Secrets, base64 in `data`, and nowhere else.
    let read = assert_secrets_only_in_their_secrets(
        bed,
        &name,
        &[
            ("api", "token", TOKEN_NEW),
            ("api", "db", FILE_SECRET),
            ("api", "key", KV_SECRET),
            ("blob-creds", "azurestorageaccountkey", BLOB_KEY),
        ],
    );
    eprintln!("{helm}: {read} objects of the API checked for secret values");

    // status from the real objects.
    let o = run(&p, &mut outs, &["status"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains(&format!("ray-cluster release {name}/{name}: deployed (chart ray-cluster-1.7.0")), "{t}");
    assert!(t.contains(&format!("RayCluster {name}/{name}: ready")), "{t}");
    assert!(t.contains(&format!("svc/{name}-head-svc")), "{t}");
    let o = run(&p, &mut outs, &["status", "--output", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let st: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let c = &st["cluster"];
    assert_eq!(c["raycluster"]["state"], "ready", "{st}");
    assert_eq!(c["releases"]["operator"]["status"], "deployed", "{st}");
    assert_eq!(
        (&c["groups"]["head"]["ready"], &c["groups"]["cpu"]["pods"], &c["groups"]["gpu"]["pods"]),
        (&1.into(), &2.into(), &1.into()),
        "{st}"
    );

    // destroy: refused without approval (no terminal), then in reverse order; nothing of the
    // deployment is left but the CRDs (README: they stay); a second destroy succeeds.
    p.clear_calls();
    let o = run(&p, &mut outs, &["destroy"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("--auto-approve"), "{}", text(&o));
    assert_eq!(p.mutating(), Vec::<String>::new());
    let o = run(&p, &mut outs, &["destroy", "--auto-approve"]);
    assert!(o.status.success(), "destroy:\n{}", text(&o));
    let calls = p.calls();
    let rc = position(&calls, "helm uninstall (cluster)", |c| is_helm(c, &["uninstall", &name]));
    let sec = position(&calls, "kubectl delete secret", |c| c.tool == "kubectl" && c.has(&["delete", "secret"]));
    let vol = position(&calls, "kubectl delete (volumes)", |c| {
        c.tool == "kubectl" && c.has(&["delete"]) && c.argv.iter().any(|a| a.starts_with("persistentvolume"))
    });
    let op = position(&calls, "helm uninstall kuberay-operator", |c| is_helm(c, &["uninstall", "kuberay-operator"]));
    assert!(rc < sec && sec < vol && vol < op, "{:#?}", calls.iter().map(kube_env::Call::line).collect::<Vec<_>>());
    let releases =
        bed.helm(helm, &["list", "-A", "-q", "--deployed", "--failed", "--pending", "--uninstalling", "--superseded"]);
    assert!(!releases.lines().any(|l| l == name || l == "kuberay-operator"), "releases gone: {releases}");
    let records = bed.get_json(&["secrets", "-A", "-l", "owner=helm"]);
    assert_eq!(records["items"].as_array().unwrap().len(), 0, "Helm's records gone: {records}");
    let gone = |what: &[&str]| {
        let v = bed.get_json(what);
        assert_eq!(v["items"].as_array().unwrap().len(), 0, "{what:?}: {v}");
    };
    gone(&["rayclusters", "-n", &name]);
    gone(&["rayjobs", "-n", &name]);
    gone(&["secrets", "-n", &name, "-l", &format!("raydeploy.io/deployment={name}")]);
    gone(&["pvc", "-n", &name]);
    gone(&["pods", "-n", &name]);
    let pvs = bed.get_json(&["pv"]);
    assert!(
        !pvs["items"].as_array().unwrap().iter().any(|v| v["metadata"]["name"] == format!("{name}-data").as_str()),
        "{pvs}"
    );
    for crd in ["rayclusters.ray.io", "rayjobs.ray.io"] {
        bed.get_json(&["crd", crd]);
    }
    assert!(text(&o).contains("the KubeRay CRDs and namespaces stay"), "{}", text(&o));
    assert_eq!(state(&p, &name)["phases"]["cluster"], Value::Null, "destroy forgets the phases");
    p.clear_calls();
    let o = run(&p, &mut outs, &["destroy", "--auto-approve"]);
    assert!(o.status.success(), "second destroy:\n{}", text(&o));
    assert!(text(&o).contains("already gone"), "{}", text(&o));
    assert!(p.calls().iter().all(|c| !is_helm(c, &["uninstall"])), "{:#?}", p.calls());

    // No secret value in any output, any file under .raydeploy/ or the recorded calls.
    for (args, t) in &outs {
        assert_no_canary(&format!("the output of `raydeploy {args}`"), t);
    }
    // Every file next to the spec: state, logs, rendered files, the saved plans (but the
    // secret's own source file).
    let stored: Vec<_> = files(&p.spec_dir).into_iter().filter(|(f, _)| !f.ends_with("db.txt")).collect();
    let raydeploy = stored.iter().filter(|(f, _)| f.starts_with(p.spec_dir.join(".raydeploy"))).count();
    assert!(raydeploy > 10, "state, logs and rendered files were checked ({raydeploy})");
    assert!(stored.iter().any(|(f, _)| f.ends_with("rotate.plan")), "the saved plans were checked");
    for (path, t) in stored {
        assert_no_canary(&path.display().to_string(), &t);
    }
    assert_no_canary("the recorded calls", &std::fs::read_to_string(p.log_path()).unwrap_or_default());
}

#[test]
fn helm3_deploy_noop_plan_status_destroy() {
    deploy_from_nothing_then_noop_plan_status_destroy("helm3");
}

#[test]
fn helm4_deploy_noop_plan_status_destroy() {
    deploy_from_nothing_then_noop_plan_status_destroy("helm4");
}

/// A worker asking more CPU than any node has: `ready` gives up after RAYDEPLOY_READY_TIMEOUT,
/// naming the pod and the scheduler's reason.
fn unschedulable_worker(helm: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("big-{helm}");
    let bed = operator_bed(&name, "4");
    let mut p = project(bed, helm, &spec_cpu(&name, 1, 64, ""));
    p.set("RAYDEPLOY_READY_TIMEOUT", "20");
    let (o, _) = deploy(&p, &[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "deploy with an unschedulable worker:\n{out}");
    let pods = bed.get_json(&["pods", "-n", &name, "-l", &format!("ray.io/cluster={name},ray.io/group=cpu")]);
    let pod = pods["items"][0]["metadata"]["name"].as_str().expect("the cpu worker's pod exists").to_string();
    assert_eq!(pods["items"][0]["status"]["phase"], "Pending");
    assert!(out.contains("is not ready after 20s"), "{out}");
    assert!(out.contains(&pod), "the message names pod {pod}:\n{out}");
    assert!(out.contains("Insufficient cpu"), "the message gives the scheduler's reason:\n{out}");
    assert!(out.contains(&format!("{pod} (group cpu): Pending")), "{out}");
    assert!(out.contains("event FailedScheduling"), "the scheduler's event:\n{out}");
    assert_eq!(state(&p, &name)["phases"]["ready"]["status"], "failed");
    let o = p.run(&["destroy", "--auto-approve"]);
    assert!(o.status.success(), "destroy:\n{}", text(&o));
}

#[test]
fn helm3_unschedulable_worker_fails_ready_with_the_schedulers_reason() {
    unschedulable_worker("helm3");
}

#[test]
fn helm4_unschedulable_worker_fails_ready_with_the_schedulers_reason() {
    unschedulable_worker("helm4");
}

/// `job submit`: the API server accepts the RayJob raydeploy renders (the CRD's schema validates
/// it on the way in). Its run cannot complete: kwok's pods run no Ray, so the RayJob's submitter
/// never reaches the dashboard. Only the acceptance is asserted; the waiting `job submit` is
/// interrupted once the object is stored.
fn rayjob_accepted(helm: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("job-{helm}");
    let bed = operator_bed(&name, "8");
    let jobs = "jobs:\n  - name: hello\n    entrypoint: python -c 'print(42)'\n    activeDeadlineSeconds: 600\n";
    let p = project(bed, helm, &spec(&name, 1, jobs));
    let (o, _) = deploy(&p, &[]);
    assert!(o.status.success(), "deploy:\n{}", text(&o));
    p.clear_calls();
    let child = p.spawn(&["job", "submit", "hello"]);
    let rj = bed.wait_for("RayJob hello to be stored", WAIT, |note| {
        let out = bed.kubectl_output(&["get", "rayjob", "hello", "-n", &name, "-o", "json"]);
        *note = String::from_utf8_lossy(&out.stderr).into_owned();
        out.status.success().then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    });
    // SAFETY: SIGINT to the raydeploy process this test started (nsenter execs it).
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(rj["spec"]["entrypoint"], "python -c 'print(42)'", "{rj}");
    assert!(
        p.calls().iter().any(|c| c.tool == "kubectl" && c.argv.first().is_some_and(|a| a == "apply")),
        "raydeploy applied the RayJob: {:#?}\n{}",
        p.calls(),
        text(&out)
    );
    p.clear_calls();
    let o = p.run(&["destroy", "--auto-approve"]);
    assert!(o.status.success(), "destroy:\n{}", text(&o));
    let calls = p.calls();
    let jobs = calls.iter().position(|c| c.tool == "kubectl" && c.has(&["delete", "rayjobs"]));
    let cluster = calls.iter().position(|c| c.tool == "helm" && c.has(&["uninstall", &name]));
    assert!(jobs.is_some() && jobs < cluster, "the RayJobs go before the cluster: {calls:#?}");
    let left = bed.get_json(&["rayjobs", "-n", &name]);
    assert_eq!(left["items"].as_array().unwrap().len(), 0, "destroy removes the RayJob: {left}");
}

#[test]
fn helm3_rayjob_is_accepted_by_the_api_server() {
    rayjob_accepted("helm3");
}

#[test]
fn helm4_rayjob_is_accepted_by_the_api_server() {
    rayjob_accepted("helm4");
}

/// `run` of an ephemeral job against the real control plane: from nothing, `run` brings up what
/// the job needs (CRDs, the operator with the real Helm, the Secret) but no long-running
/// cluster; the API server stores the RayJob with its `rayClusterSpec` (the CRD's schema and CEL
/// rules validate it on the way in), and the real operator turns it into a RayCluster of its own
/// whose pods run on kwok's nodes with the rendered templates (the job's worker change applied).
/// The job cannot finish (kwok's pods run no Ray): Ctrl-C deletes the RayJob, and its RayCluster
/// and pods go with it.
#[test]
fn helm4_ephemeral_rayjob_runs_its_own_cluster_and_ctrl_c_deletes_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = "eph-helm4";
    let bed = operator_bed(name, "16");
    let jobs = concat!(
        "jobs:\n",
        "  - name: train\n",
        "    cluster: ephemeral\n",
        "    entrypoint: python -c 'print(42)'\n",
        "    ttlSecondsAfterFinished: 60\n",
        "    workerGroups:\n",
        "      - { name: cpu, replicas: 2 }\n",
        "      - { name: gpu, replicas: 0, minReplicas: 0, maxReplicas: 0 }\n",
    );
    let p = project(bed, "helm4", &spec(name, 1, jobs));
    let t0 = Instant::now();
    let child = p.spawn(&["run", "train", "--auto-approve"]);
    let rj = bed.wait_for("RayJob train to be stored", WAIT, |note| {
        let out = bed.kubectl_output(&["get", "rayjob", "train", "-n", name, "-o", "json"]);
        *note = String::from_utf8_lossy(&out.stderr).into_owned();
        out.status.success().then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    });
    assert!(rj["spec"].get("clusterSelector").is_none(), "{rj:#}");
    assert_eq!(rj["spec"]["shutdownAfterJobFinishes"], true);
    assert_eq!(rj["spec"]["ttlSecondsAfterFinished"], 60);
    let image = rj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(image.contains("@sha256:"), "pinned by digest: {image}");
    // The operator makes the job's own cluster: a head and the job's two CPU workers, running.
    let pods = bed.wait_for("the operator to run the job's own cluster", WAIT, |note| {
        let rcs = bed.get_json(&["rayclusters", "-n", name]);
        let own: Vec<&Value> = rcs["items"]
            .as_array()?
            .iter()
            .filter(|rc| {
                rc["metadata"]["ownerReferences"].as_array().is_some_and(|o| o.iter().any(|r| r["name"] == "train"))
            })
            .collect();
        let rc = own.first()?;
        let rc_name = rc["metadata"]["name"].as_str()?.to_string();
        let pods = bed.get_json(&["pods", "-n", name, "-l", &format!("ray.io/cluster={rc_name}")]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        *note = items
            .iter()
            .map(|p| format!("{} {}", p["metadata"]["name"], p["status"]["phase"]))
            .collect::<Vec<_>>()
            .join("; ");
        let running = items.iter().filter(|p| p["status"]["phase"] == "Running").count();
        (running == 3).then_some(items)
    });
    for p in &pods {
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["image"], image.as_str(), "{}", p["metadata"]["name"]);
        assert!(c["envFrom"].as_array().unwrap().iter().any(|e| e["secretRef"]["name"] == "api"), "{c:#}");
        assert_eq!(p["metadata"]["labels"]["raydeploy.io/job"], "train");
    }
    let workers = pods.iter().filter(|p| p["metadata"]["labels"]["ray.io/node-type"] == "worker").count();
    assert_eq!(workers, 2, "the job's replicas");
    // No long-running cluster: `run` does not deploy it.
    let rel = bed.get_json(&["rayclusters", "-n", name]);
    assert!(rel["items"].as_array().unwrap().iter().all(|rc| rc["metadata"]["name"] != name), "{rel:#}");
    eprintln!("run: RayJob stored and its cluster running in {:.1} s", t0.elapsed().as_secs_f64());

    // SAFETY: SIGINT to the raydeploy process this test started (nsenter execs it).
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(text(&out).contains(&format!("interrupted: RayJob {name}/train deleted")), "{}", text(&out));
    let left = bed.kubectl_output(&["get", "rayjob", "train", "-n", name]);
    assert!(!left.status.success(), "the RayJob is gone");
    bed.wait_for("the job's cluster to go with its RayJob", WAIT, |note| {
        let rcs = bed.get_json(&["rayclusters", "-n", name]);
        *note = rcs["items"].to_string();
        rcs["items"].as_array()?.is_empty().then_some(())
    });
    let o = p.run(&["destroy", "--auto-approve"]);
    assert!(o.status.success(), "destroy:\n{}", text(&o));
}
