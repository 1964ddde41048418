//! A small emulation of the KubeRay `ray-cluster` Helm chart (v1.7.0): merges values over the
//! chart's values.yaml the way Helm does and builds the RayCluster its
//! `templates/raycluster-cluster.yaml` would produce, for the keys raydeploy sets (head:
//! rayStartParams, containerEnv → env, envFrom, resources, nodeSelector, tolerations, volumes,
//! volumeMounts, image, rayVersion, enableInTreeAutoscaling, autoscalerOptions; worker and
//! additionalWorkerGroups → workerGroupSpecs). Template details not driven by those keys are
//! copied as the chart writes them (empty `affinity`, `securityContext`, `imagePullSecrets`).
//! Null fields are dropped at the end, as the API server prunes them.

use serde_json::{Map, Value, json};

/// Helm's value coalescing: maps merge recursively, a `null` removes the key, anything else replaces.
pub fn merge(base: &Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let mut out = b.clone();
            for (k, v) in o {
                if v.is_null() {
                    out.remove(k);
                } else if let Some(bv) = b.get(k) {
                    out.insert(k.clone(), merge(bv, v));
                } else {
                    out.insert(k.clone(), v.clone());
                }
            }
            Value::Object(out)
        }
        (_, o) => o.clone(),
    }
}

/// Go template truthiness (`if`, `with`, `default`): false, 0, "", empty collections and nil are empty.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

fn or_default(v: &Value, d: Value) -> Value {
    if truthy(v) { v.clone() } else { d }
}

/// `{{ $val | quote }}`: the value printed with Go's `%v`, as a string.
fn quote(v: &Value) -> Value {
    Value::String(match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn start_params(g: &Value) -> Value {
    let mut out = Map::new();
    for key in ["rayStartParams", "initArgs"] {
        if let Some(m) = g[key].as_object() {
            for (k, v) in m {
                out.insert(k.clone(), quote(v));
            }
        }
    }
    Value::Object(out)
}

/// The `ray-cluster.fullname` helper.
pub fn fullname(values: &Value, release: &str) -> String {
    if let Some(f) = values["fullnameOverride"].as_str().filter(|s| !s.is_empty()) {
        return trunc(f);
    }
    let name = values["nameOverride"].as_str().filter(|s| !s.is_empty()).unwrap_or("ray-cluster");
    if release.contains(name) { trunc(release) } else { trunc(&format!("{release}-{name}")) }
}

fn trunc(s: &str) -> String {
    s.chars().take(63).collect::<String>().trim_end_matches('-').to_string()
}

fn chart_labels(chart_version: &str, release: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("helm.sh/chart".into(), json!(format!("ray-cluster-{chart_version}")));
    m.insert("app.kubernetes.io/instance".into(), json!(release));
    m.insert("app.kubernetes.io/managed-by".into(), json!("Helm"));
    m
}

fn image(values: &Value, g: &Value) -> (Value, Value) {
    let img = if truthy(&g["image"]) { &g["image"] } else { &values["image"] };
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        o => o.to_string(),
    };
    (json!(format!("{}:{}", text(&img["repository"]), text(&img["tag"]))), img["pullPolicy"].clone())
}

fn container(values: &Value, g: &Value, name: &str) -> Value {
    let mut c = Map::new();
    if truthy(&g["volumeMounts"]) {
        c.insert("volumeMounts".into(), g["volumeMounts"].clone());
    }
    c.insert("name".into(), json!(name));
    let (img, pull) = image(values, g);
    c.insert("image".into(), img);
    c.insert("imagePullPolicy".into(), pull);
    c.insert("resources".into(), g["resources"].clone());
    c.insert("securityContext".into(), g["securityContext"].clone());
    let mut env: Vec<Value> = values["common"]["containerEnv"].as_array().cloned().unwrap_or_default();
    env.extend(g["containerEnv"].as_array().cloned().unwrap_or_default());
    if !env.is_empty() {
        c.insert("env".into(), Value::Array(env));
    }
    for key in ["envFrom", "lifecycle", "command", "args"] {
        if truthy(&g[key]) {
            c.insert(key.into(), g[key].clone());
        }
    }
    // The head writes `ports` only when set; worker templates always write them.
    if name == "ray-worker" || truthy(&g["ports"]) {
        c.insert("ports".into(), g["ports"].clone());
    }
    Value::Object(c)
}

fn pod_template(values: &Value, g: &Value, container_name: &str, labels: &Map<String, Value>) -> Value {
    let mut spec = Map::new();
    if truthy(&g["dnsConfig"]) {
        spec.insert("dnsConfig".into(), g["dnsConfig"].clone());
    }
    spec.insert("imagePullSecrets".into(), values["imagePullSecrets"].clone());
    for key in ["serviceAccountName", "restartPolicy", "initContainers"] {
        if truthy(&g[key]) {
            spec.insert(key.into(), g[key].clone());
        }
    }
    let mut containers = vec![container(values, g, container_name)];
    containers.extend(g["sidecarContainers"].as_array().cloned().unwrap_or_default());
    spec.insert("containers".into(), Value::Array(containers));
    if truthy(&g["volumes"]) {
        spec.insert("volumes".into(), g["volumes"].clone());
    }
    spec.insert("affinity".into(), g["affinity"].clone());
    for key in ["priorityClassName", "priority"] {
        if truthy(&g[key]) {
            spec.insert(key.into(), g[key].clone());
        }
    }
    spec.insert("tolerations".into(), g["tolerations"].clone());
    spec.insert("nodeSelector".into(), g["nodeSelector"].clone());
    if truthy(&g["podSecurityContext"]) {
        spec.insert("securityContext".into(), g["podSecurityContext"].clone());
    }
    let mut pod_labels = g["labels"].as_object().cloned().unwrap_or_default();
    pod_labels.extend(labels.clone());
    json!({
        "spec": spec,
        "metadata": { "annotations": g["annotations"].clone(), "labels": pod_labels },
    })
}

fn worker_group(values: &Value, g: &Value, group_name: &Value, labels: &Map<String, Value>) -> Value {
    json!({
        "rayStartParams": start_params(g),
        "replicas": g["replicas"].clone(),
        "minReplicas": or_default(&g["minReplicas"], json!(0)),
        "maxReplicas": or_default(&g["maxReplicas"], json!(2147483647)),
        "numOfHosts": or_default(&g["numOfHosts"], json!(1)),
        "groupName": group_name.clone(),
        "template": pod_template(values, g, "ray-worker", labels),
    })
}

/// The RayCluster the chart renders from `values` (already merged over the chart defaults).
pub fn raycluster(values: &Value, release: &str, chart_version: &str) -> Value {
    let labels = chart_labels(chart_version, release);
    let head = &values["head"];
    let mut spec = Map::new();
    for key in ["rayVersion", "enableInTreeAutoscaling", "autoscalerOptions"] {
        if truthy(&head[key]) {
            spec.insert(key.into(), head[key].clone());
        }
    }
    let mut head_spec = Map::new();
    if truthy(&head["headService"]) {
        head_spec.insert("headService".into(), head["headService"].clone());
    }
    head_spec.insert("serviceType".into(), values["service"]["type"].clone());
    head_spec.insert("rayStartParams".into(), start_params(head));
    head_spec.insert("template".into(), pod_template(values, head, "ray-head", &labels));
    spec.insert("headGroupSpec".into(), Value::Object(head_spec));

    let mut groups = vec![];
    if let Some(extra) = values["additionalWorkerGroups"].as_object() {
        let mut names: Vec<&String> = extra.keys().collect();
        names.sort();
        for name in names {
            let g = &extra[name];
            if g["disabled"] != Value::Bool(true) {
                groups.push(worker_group(values, g, &json!(name), &labels));
            }
        }
    }
    let worker = &values["worker"];
    if worker["disabled"] != Value::Bool(true) {
        groups.push(worker_group(values, worker, &worker["groupName"], &labels));
    }
    spec.insert("workerGroupSpecs".into(), Value::Array(groups));

    let mut metadata = json!({ "labels": labels, "name": fullname(values, release) });
    if truthy(&values["annotations"]) {
        metadata["annotations"] = values["annotations"].clone();
    }
    let mut rc = json!({ "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": metadata, "spec": spec });
    drop_nulls(&mut rc);
    rc
}

fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, c| !c.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}
