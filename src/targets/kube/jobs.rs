//! RayJobs on the deployed RayCluster: the `jobs` phase (`deploy --with-jobs`) and the `job`
//! commands. A submit deletes the previous RayJob of that name (KubeRay never re-runs a finished
//! one), applies the rendered manifest, follows the submitter's logs, and waits for
//! `.status.jobDeploymentStatus` Complete or Failed; the result is `.status.jobStatus`.
//!
//! Deleting finished RayJobs: a job whose spec sets `shutdownAfterFinish` carries the annotation
//! `raydeploy.io/delete-after-finished-seconds`. With 0 the RayJob is deleted as soon as its
//! result is known; otherwise it is left, and every later `job submit` and `deploy --with-jobs`
//! first deletes the deployment's RayJobs whose time is up (`.status.endTime` + seconds).
//! `job list` shows them, marked expired, and deletes nothing.
//!
//! The `jobs` phase decides from live state, as every other phase: it stamps each RayJob it
//! submits with [`JOB_INPUTS_ANNOTATION`], the hash of the job's inputs ([`inputs_hash`]), and is
//! skipped, even from a fresh checkout, when every shared job's RayJob is on the cluster with its
//! current hash and succeeded ([`judge`]). A RayJob that is gone (deleted after finishing), past
//! its delete-after time, submitted by `job submit` or `run` (no stamp), with other inputs, failed
//! or still running makes the phase submit every job again.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{Kube, live};
use crate::context::EXIT_INTERRUPTED;
use crate::model::{DELETE_AFTER_ANNOTATION, DEPLOYMENT_LABEL, Deployment, JOB_INPUTS_ANNOTATION, JobModel};
use crate::run::exec::{Cx, Outputs};
use crate::run::proc::{CmdError, Runner, sleep_unless_interrupted};
use crate::run::signals;

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    /// `.status.jobStatus` (SUCCEEDED, FAILED, STOPPED…), or the deployment status when the job
    /// never ran.
    pub status: String,
    pub message: Option<String>,
}

impl JobResult {
    pub fn succeeded(&self) -> bool {
        self.status == "SUCCEEDED"
    }

    pub fn exit_code(&self) -> u8 {
        if self.succeeded() { 0 } else { 1 }
    }
}

fn job<'a>(k: &'a Kube, name: &str) -> Result<&'a JobModel> {
    k.s.d.jobs.iter().find(|j| j.name == name).with_context(|| format!("no job `{name}` in the spec"))
}

fn manifest(k: &Kube, name: &str) -> Result<Value> {
    let path = format!("manifests/jobs/{name}.yaml");
    let text = k.s.rendered.files.get(&path).with_context(|| format!("{path} was not rendered"))?;
    live::yaml_docs(text)?.into_iter().next().with_context(|| format!("{path} is empty"))
}

fn ns<'a>(k: &'a Kube) -> &'a str {
    &k.s.d.cluster.namespace
}

fn selector(k: &Kube) -> String {
    format!("{DEPLOYMENT_LABEL}={}", k.s.d.name)
}

/// Terminal state of a RayJob object, if it has one.
fn terminal(rj: &Value) -> Option<JobResult> {
    let deployment = live::str_at(rj, "/status/jobDeploymentStatus").unwrap_or("");
    let job = live::str_at(rj, "/status/jobStatus").unwrap_or("");
    let message = live::str_at(rj, "/status/message").filter(|m| !m.is_empty()).map(str::to_string);
    match deployment {
        "Complete" | "Failed" | "ValidationFailed" => Some(JobResult {
            status: if job.is_empty() { deployment.to_ascii_uppercase() } else { job.to_string() },
            message,
        }),
        _ if matches!(job, "SUCCEEDED" | "FAILED" | "STOPPED") && deployment != "Running" => {
            Some(JobResult { status: job.to_string(), message })
        }
        _ => None,
    }
}

/// The submitter has started once KubeRay reports the job running (or finished).
fn submitter_started(rj: &Value) -> bool {
    matches!(live::str_at(rj, "/status/jobDeploymentStatus"), Some("Running" | "Complete" | "Failed"))
}

fn get_rayjob(k: &Kube, r: &Runner, name: &str) -> Result<Option<Value>> {
    live::get(k, r, &["rayjob", name], Some(ns(k)))
}

fn delete_rayjob(k: &Kube, r: &Runner, name: &str, wait: bool) -> Result<()> {
    let mut c = k.kubectl().args(["delete", "rayjob", name, "-n", ns(k), "--ignore-not-found"]);
    if wait {
        // Foreground: the submitter Job and its pod are gone too, so logs are the new run's.
        c = c.args(["--cascade=foreground", "--wait=true"]);
    }
    match r.run(&c.timeout(live::WRITE_TIMEOUT)) {
        Ok(_) => Ok(()),
        Err(e) if live::no_such_kind(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the deployment's finished RayJobs whose delete-after time has passed.
pub fn cleanup_expired(k: &Kube, r: &Runner) -> Result<()> {
    let now = crate::run::state::now() as i64;
    for rj in deployed_rayjobs(k, r)? {
        if expired(&rj, now) {
            let name = live::name(&rj).to_string();
            r.info(&format!("deleting RayJob {name}: finished longer ago than its delete-after time"));
            delete_rayjob(k, r, &name, false)?;
        }
    }
    Ok(())
}

/// Finished and past `endTime + delete-after seconds`.
fn expired(rj: &Value, now: i64) -> bool {
    let Some(after) = live::annotation(rj, DELETE_AFTER_ANNOTATION).and_then(|a| a.parse::<i64>().ok()) else {
        return false;
    };
    let Some(end) = live::str_at(rj, "/status/endTime").and_then(live::parse_time) else { return false };
    terminal(rj).is_some() && now >= end + after
}

/// Runs one job to its end on the deployed cluster. `follow` streams the submitter's logs
/// through the runner as they come; otherwise they are returned at the end. `stamp` (the `jobs`
/// phase) marks the RayJob with the job's inputs hash.
fn run_job(k: &Kube, r: &Runner, name: &str, follow: bool, stamp: bool) -> Result<(JobResult, Option<String>)> {
    let mut obj = manifest(k, name)?;
    if stamp {
        let hash = inputs_hash_of(&k.s.d, &obj);
        live::set_annotation(&mut obj, JOB_INPUTS_ANNOTATION, &hash);
    }
    submit_shared(k, r, name, &obj)?;
    let Some((result, streamed)) = follow_to_end(k, r, name, follow)? else {
        bail!("interrupted while waiting for RayJob {}/{name} (it keeps running on the cluster)", ns(k));
    };
    let logs = if follow && streamed { None } else { read_logs(k, r, name)? };
    let after = live::annotation(&obj, DELETE_AFTER_ANNOTATION).and_then(|a| a.parse::<u64>().ok());
    if after == Some(0) {
        delete_rayjob(k, r, name, false)?;
    }
    Ok((result, logs))
}

/// Submits a shared job's RayJob to the deployed cluster, in place of a previous one.
fn submit_shared(k: &Kube, r: &Runner, name: &str, obj: &Value) -> Result<()> {
    let j = job(k, name)?;
    if j.ephemeral.is_some() {
        bail!("job {name} runs on a cluster of its own (cluster: ephemeral): run it with `raydeploy run {name}`");
    }
    let c = &k.s.d.cluster;
    if live::get(k, r, &["raycluster", &c.name], Some(&c.namespace))?.is_none() {
        bail!("no RayCluster {}/{} to run job {name} on: deploy first (raydeploy deploy)", c.namespace, c.name);
    }
    cleanup_expired(k, r)?;
    delete_rayjob(k, r, name, true)?;
    live::apply(k, r, std::slice::from_ref(obj), true)?;
    r.info(&format!("submitted RayJob {}/{name}", ns(k)));
    Ok(())
}

/// Waits for a submitted RayJob to end (streaming the submitter's logs with `follow`): its
/// result and whether the logs were streamed, or `None` when Ctrl-C came first.
fn follow_to_end(k: &Kube, r: &Runner, name: &str, follow: bool) -> Result<Option<(JobResult, bool)>> {
    let j = job(k, name)?;
    let deadline = j.active_deadline_seconds.map(|s| std::time::Instant::now() + Duration::from_secs(s as u64 + 300));
    let mut streamed = false;
    loop {
        if signals::interrupted() {
            return Ok(None);
        }
        let rj = match get_rayjob(k, r, name) {
            Ok(rj) => rj.with_context(|| format!("RayJob {}/{name} disappeared", ns(k)))?,
            Err(_) if signals::interrupted() => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some(t) = terminal(&rj) {
            return Ok(Some((t, streamed)));
        }
        if follow && !streamed && submitter_started(&rj) {
            // Ends when the submitter's container ends; an error (pod not started yet) is retried
            // at the next poll.
            let logs = k
                .kubectl()
                .args(["logs", "-f", &format!("job/{name}"), "-n", ns(k)])
                .timeout(Duration::from_secs(j.active_deadline_seconds.map_or(7 * 24 * 3600, |s| s as u64 + 300)));
            match r.run(&logs) {
                Ok(_) => streamed = true,
                Err(e) if e.is_interrupt() => return Ok(None),
                Err(e) => r.info(&format!("logs not available yet: {}", e.to_string().lines().next().unwrap_or(""))),
            }
            continue;
        }
        if deadline.is_some_and(|d| std::time::Instant::now() > d) {
            bail!("RayJob {}/{name} did not finish within its activeDeadlineSeconds", ns(k));
        }
        sleep_unless_interrupted(live::poll_interval());
    }
}

/// The images `image-push` recorded, pinned by digest (`run` brought that phase up to date).
fn recorded_pins(k: &Kube) -> Result<super::cluster::Pins> {
    let push = k.s.store()?.phase("image-push").map(|p| p.outputs).unwrap_or_default();
    let cpu = push.get("cpu_image").cloned().context("image-push recorded no cpu_image (the pinned image)")?;
    Ok(super::cluster::Pins { cpu, gpu: push.get("gpu_image").cloned() })
}

/// An ephemeral job's RayJob, every image pinned to its digest.
fn ephemeral_manifest(k: &Kube, j: &JobModel) -> Result<Value> {
    let d = &k.s.d;
    let pins = recorded_pins(k)?;
    let gpu_groups = j.ephemeral.as_ref().is_some_and(|c| c.groups().any(|g| g.is_gpu()));
    if gpu_groups && pins.gpu.is_none() {
        bail!("image-push recorded no gpu_image but job {} has a GPU group", j.name);
    }
    let pin = |r: &crate::model::ImageRef| -> String {
        match (&d.image.gpu, &pins.gpu) {
            (Some(gpu), Some(pinned)) if gpu == r => pinned.clone(),
            _ => pins.cpu.clone(),
        }
    };
    let rj = crate::render::manifests::rayjob::rayjob_with(d, j, &pin)?;
    Ok(serde_json::to_value(rj)?)
}

/// Deletes the RayJob even after Ctrl-C (that stops the job and, for an ephemeral job, its
/// cluster: the RayCluster and its pods are the RayJob's), waiting until they are gone.
fn stop_rayjob(k: &Kube, r: &Runner, name: &str) -> Result<()> {
    let c = k
        .kubectl()
        .args(["delete", "rayjob", name, "-n", ns(k), "--ignore-not-found", "--cascade=foreground", "--wait=true"])
        .timeout(live::WRITE_TIMEOUT)
        .cleanup();
    r.run(&c)?;
    Ok(())
}

/// Applies an ephemeral job's RayJob, in place of a previous one.
fn submit_ephemeral(k: &Kube, r: &Runner, j: &JobModel, c: &crate::model::EphemeralCluster) -> Result<Value> {
    let obj = ephemeral_manifest(k, j)?;
    delete_rayjob(k, r, &j.name, true)?;
    live::ensure_namespace(k, r, ns(k))?;
    live::apply(k, r, std::slice::from_ref(&obj), true)?;
    let groups: Vec<String> = c.workers.iter().map(|g| format!("{} ×{}", g.name, g.replicas)).collect();
    r.info(&format!(
        "submitted RayJob {}/{} with a cluster of its own (head{}{})",
        ns(k),
        j.name,
        if groups.is_empty() { "" } else { ", " },
        groups.join(", ")
    ));
    Ok(obj)
}

/// After Ctrl-C: deletes the RayJob (if it got there), which stops the job and any cluster of
/// its own; the exit code of an interrupted run.
fn interrupted(k: &Kube, r: &Runner, name: &str) -> Result<u8> {
    r.info(&format!("interrupted: deleting RayJob {}/{name} (stops the job and any cluster of its own)", ns(k)));
    stop_rayjob(k, r, name)?;
    eprintln!("interrupted: RayJob {}/{name} deleted", ns(k));
    Ok(EXIT_INTERRUPTED)
}

/// `run NAME`: a shared job on the deployed cluster (as `job submit --follow`); an ephemeral job
/// on its own cluster (its RayJob's `rayClusterSpec`, images pinned by digest). A previous RayJob
/// of the job is replaced. After the job: with `rm` the RayJob is deleted (its cluster with it);
/// otherwise an ephemeral job's RayJob is left to the operator, which deletes it and its
/// cluster `ttlSecondsAfterFinished` after the job ended. Ctrl-C deletes the RayJob.
pub fn run(k: &Kube, name: &str, rm: bool) -> Result<u8> {
    signals::install();
    let j = job(k, name)?;
    let r = live::side_runner(k, &format!("run-{name}"), false)?;
    let submitted = match &j.ephemeral {
        None => manifest(k, name).and_then(|obj| submit_shared(k, &r, name, &obj).map(|()| obj)),
        Some(c) => submit_ephemeral(k, &r, j, c),
    };
    let obj = match submitted {
        Ok(obj) => obj,
        Err(e) if !signals::interrupted() => return Err(e),
        Err(_) => return interrupted(k, &r, name),
    };
    let (result, streamed) = match follow_to_end(k, &r, name, true) {
        Ok(Some(v)) => v,
        Err(e) if !signals::interrupted() => {
            if rm {
                delete_rayjob(k, &r, name, true)?;
            }
            return Err(e);
        }
        // Ctrl-C (follow_to_end returns None only then).
        Ok(None) | Err(_) => return interrupted(k, &r, name),
    };
    if !streamed && let Some(l) = read_logs(k, &r, name)? {
        print!("{l}");
    }
    let after = live::annotation(&obj, DELETE_AFTER_ANNOTATION).and_then(|a| a.parse::<u64>().ok());
    if rm || after == Some(0) {
        delete_rayjob(k, &r, name, true)?;
        r.info(&format!("deleted RayJob {}/{name}", ns(k)));
    } else if j.ephemeral.is_some() {
        r.info(&format!(
            "RayJob {}/{name} and its cluster stay {}s after the job (ttlSecondsAfterFinished), then the operator \
             deletes them; --rm deletes them at once",
            ns(k),
            j.ttl_seconds_after_finished.unwrap_or(0)
        ));
    }
    eprintln!("{}", describe(name, &result));
    Ok(result.exit_code())
}

/// The submitter's logs (none when its pod is gone).
fn read_logs(k: &Kube, r: &Runner, name: &str) -> Result<Option<String>> {
    let c = k
        .kubectl()
        .args(["logs", &format!("job/{name}"), "-n", ns(k)])
        .timeout(live::READ_TIMEOUT)
        .idempotent(live::READ_ATTEMPTS)
        .quiet();
    match r.run(&c) {
        Ok(o) => Ok(Some(k.s.redactor.scrub(&o.stdout))),
        Err(CmdError::Failed { stderr_tail, .. }) if stderr_tail.contains("not found") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn describe(name: &str, res: &JobResult) -> String {
    format!(
        "job {name} {}{}",
        if res.succeeded() { "succeeded".to_string() } else { format!("failed ({})", res.status) },
        res.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
    )
}

/// The `jobs` phase: every job, one after the other; fails when one fails.
pub fn phase(k: &Kube, cx: &Cx) -> Result<Outputs> {
    let r = &cx.runner;
    let mut outputs = Outputs::new();
    let mut failed = vec![];
    for j in &k.s.d.jobs {
        if j.ephemeral.is_some() {
            r.info(&format!("job {}: runs on a cluster of its own, with `raydeploy run {}`", j.name, j.name));
            continue;
        }
        let (res, _) = run_job(k, r, &j.name, true, true)?;
        r.info(&describe(&j.name, &res));
        if !res.succeeded() {
            failed.push(describe(&j.name, &res));
        }
        outputs.insert(j.name.clone(), res.status);
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(outputs)
}

/// Jobs that ran to success with the same inputs are not run again: the state says so, or else
/// the deployment's RayJobs on the cluster do ([`judge`]).
pub fn probe(k: &Kube, cx: &Cx) -> Result<Option<Outputs>> {
    if let Some(o) = cx.unchanged().filter(|o| o.values().all(|s| s == "SUCCEEDED")) {
        return Ok(Some(o));
    }
    let found = deployed_rayjobs(k, &cx.runner)?;
    let verdicts = judge(&found, &wanted(k)?, crate::run::state::now() as i64);
    let done = succeeded(&verdicts);
    if done.is_some() {
        cx.runner.info(&format!(
            "every job's RayJob succeeded with these inputs ({JOB_INPUTS_ANNOTATION}): not submitted again"
        ));
    }
    Ok(done)
}

/// The deployment's RayJobs on the cluster (none without the RayJob kind).
pub fn deployed_rayjobs(k: &Kube, r: &Runner) -> Result<Vec<Value>> {
    Ok(live::items(live::get(k, r, &["rayjobs", "-l", &selector(k)], Some(ns(k)))?))
}

/// The inputs hash of a job as the `jobs` phase submits it: its rendered RayJob and the images
/// (the job's folder is copied into the image, so its code is there, not in the manifest). Only
/// what reaches the cluster counts: not where this checkout is.
pub fn inputs_hash(k: &Kube, name: &str) -> Result<String> {
    Ok(inputs_hash_of(&k.s.d, &manifest(k, name)?))
}

fn inputs_hash_of(d: &Deployment, rendered: &Value) -> String {
    let image = serde_json::json!([d.image.content_hash, d.image.cpu, d.image.gpu]);
    live::short_hash([live::canonical(rendered).as_bytes(), live::canonical(&image).as_bytes()])
}

/// Every job the `jobs` phase submits (not the ephemeral ones), with its inputs hash.
pub fn wanted(k: &Kube) -> Result<BTreeMap<String, String>> {
    k.s.d
        .jobs
        .iter()
        .filter(|j| j.ephemeral.is_none())
        .map(|j| Ok((j.name.clone(), inputs_hash(k, &j.name)?)))
        .collect()
}

/// What a job's RayJob on the cluster says about submitting the job again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No RayJob of that name (never submitted, or deleted after it finished).
    Missing,
    /// Submitted by the `jobs` phase with these inputs and succeeded: not submitted again.
    Succeeded,
    /// On the cluster but submitted again: `status` is its `.status.jobStatus`, `why` the reason.
    Stale { status: String, why: &'static str },
}

/// Judges each job of `want` (name → inputs hash) by its RayJob in `found` (the deployment's
/// RayJobs), at `now` (seconds since the epoch, for delete-after times).
pub fn judge(found: &[Value], want: &BTreeMap<String, String>, now: i64) -> BTreeMap<String, Verdict> {
    want.iter()
        .map(|(name, hash)| {
            let v = match found.iter().find(|o| live::name(o) == name) {
                None => Verdict::Missing,
                Some(rj) => verdict(rj, hash, now),
            };
            (name.clone(), v)
        })
        .collect()
}

fn verdict(rj: &Value, hash: &str, now: i64) -> Verdict {
    let status = live::str_at(rj, "/status/jobStatus").filter(|s| !s.is_empty()).unwrap_or("no result yet").to_string();
    let stamp = live::annotation(rj, JOB_INPUTS_ANNOTATION);
    let why = if rj.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
        "being deleted"
    } else if stamp.is_none() {
        "not submitted by deploy --with-jobs"
    } else if stamp != Some(hash) {
        "submitted with other inputs"
    } else {
        match terminal(rj) {
            None => "not finished",
            Some(t) if !t.succeeded() => "did not succeed",
            Some(_) if expired(rj, now) => "past its delete-after time",
            Some(_) => return Verdict::Succeeded,
        }
    };
    Verdict::Stale { status, why }
}

/// The `jobs` phase's outputs when every job succeeded with its inputs (as [`phase`] gives them).
pub fn succeeded(verdicts: &BTreeMap<String, Verdict>) -> Option<Outputs> {
    verdicts
        .iter()
        .map(|(name, v)| (*v == Verdict::Succeeded).then(|| (name.clone(), "SUCCEEDED".to_string())))
        .collect()
}

pub fn preview(k: &Kube) -> Vec<String> {
    let mut v = vec![];
    for j in &k.s.d.jobs {
        v.push(format!("{}  # manifests/jobs/{}.yaml", live::apply_cmd(k, true).display(), j.name));
        v.push(k.kubectl().args(["logs", "-f", &format!("job/{}", j.name), "-n", ns(k)]).display());
    }
    v
}

/// Deletes every RayJob of the deployment (none, or no RayJob kind, is fine).
pub fn destroy(k: &Kube, r: &Runner) -> Result<()> {
    let c = k
        .kubectl()
        .args(["delete", "rayjobs", "-l", &selector(k), "-n", ns(k), "--ignore-not-found"])
        .timeout(live::WRITE_TIMEOUT);
    match r.run(&c) {
        Ok(_) => Ok(()),
        Err(e) if live::no_such_kind(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `job submit NAME [--follow]`: the exit code is the job's result.
pub fn submit(k: &Kube, name: &str, follow: bool) -> Result<u8> {
    signals::install();
    let r = live::side_runner(k, &format!("job-{name}"), false)?;
    let (res, logs) = run_job(k, &r, name, follow, false)?;
    if let Some(l) = logs {
        print!("{l}");
    }
    eprintln!("{}", describe(name, &res));
    Ok(res.exit_code())
}

/// `job logs NAME`: the submitter's logs; the exit code is the job's result once it finished.
pub fn logs(k: &Kube, name: &str) -> Result<u8> {
    job(k, name)?;
    let r = live::side_runner(k, &format!("job-{name}"), true)?;
    let Some(rj) = get_rayjob(k, &r, name)? else {
        bail!("no RayJob {}/{name}: submit it first (raydeploy job submit {name})", ns(k));
    };
    match read_logs(k, &r, name)? {
        Some(l) => print!("{l}"),
        None => eprintln!("the submitter of {name} has no logs (yet)"),
    }
    Ok(terminal(&rj).map_or(0, |t| t.exit_code()))
}

/// `job list`: the spec's jobs and the state of their RayJobs.
pub fn list(k: &Kube) -> Result<(String, Value)> {
    let r = live::side_runner(k, "job-list", true)?;
    let found = deployed_rayjobs(k, &r)?;
    let now = crate::run::state::now() as i64;
    let mut text = format!("{:<24} {:<12} {:<12} {}\n", "JOB", "STATUS", "DEPLOYMENT", "FINISHED");
    let mut rows = vec![];
    for j in &k.s.d.jobs {
        let rj = found.iter().find(|o| live::name(o) == j.name);
        let s = |p: &str| rj.and_then(|o| live::str_at(o, p)).filter(|s| !s.is_empty()).map(str::to_string);
        let status = s("/status/jobStatus");
        let deployment = s("/status/jobDeploymentStatus");
        let end = s("/status/endTime");
        let is_expired = rj.is_some_and(|o| expired(o, now));
        text.push_str(&format!(
            "{:<24} {:<12} {:<12} {}{}\n",
            j.name,
            if rj.is_none() { "not submitted".to_string() } else { status.clone().unwrap_or("-".into()) },
            deployment.clone().unwrap_or("-".into()),
            end.clone().unwrap_or("-".into()),
            if is_expired { " (expired: deleted at the next submit)" } else { "" }
        ));
        rows.push(serde_json::json!({
            "name": j.name,
            "submitted": rj.is_some(),
            "job_status": status,
            "deployment_status": deployment,
            "start_time": s("/status/startTime"),
            "end_time": end,
            "expired": is_expired,
            "message": s("/status/message"),
        }));
    }
    Ok((text, serde_json::json!({ "jobs": rows })))
}

/// `job delete NAME`: deletes the RayJob (stopping the job if it runs).
pub fn delete(k: &Kube, name: &str) -> Result<()> {
    job(k, name)?;
    let r = live::side_runner(k, &format!("job-{name}"), false)?;
    if get_rayjob(k, &r, name)?.is_none() {
        eprintln!("RayJob {}/{name} is already gone", ns(k));
        return Ok(());
    }
    delete_rayjob(k, &r, name, true)?;
    eprintln!("deleted RayJob {}/{name}", ns(k));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rj(dep: &str, job: &str) -> Value {
        serde_json::json!({"metadata": {"name": "j", "annotations": {DELETE_AFTER_ANNOTATION: "60"}},
            "status": {"jobDeploymentStatus": dep, "jobStatus": job, "endTime": "2024-01-01T00:00:00Z"}})
    }

    #[test]
    fn terminal_states() {
        assert_eq!(terminal(&rj("Complete", "SUCCEEDED")).unwrap().exit_code(), 0);
        assert_eq!(terminal(&rj("Failed", "FAILED")).unwrap().exit_code(), 1);
        assert_eq!(terminal(&rj("Failed", "")).unwrap().status, "FAILED");
        assert!(terminal(&rj("Running", "RUNNING")).is_none());
        assert!(terminal(&rj("Initializing", "")).is_none());
    }

    const HASH: &str = "0123abcd";

    /// A RayJob named `name` as the cluster reports it: `stamp` its inputs annotation.
    fn live_job(name: &str, stamp: Option<&str>, dep: &str, job: &str) -> Value {
        let mut v = rj(dep, job);
        v["metadata"]["name"] = name.into();
        if let Some(h) = stamp {
            v["metadata"]["annotations"][JOB_INPUTS_ANNOTATION] = h.into();
        }
        v
    }

    fn want(names: &[&str]) -> BTreeMap<String, String> {
        names.iter().map(|n| (n.to_string(), HASH.to_string())).collect()
    }

    #[test]
    fn every_job_succeeded_with_its_inputs_skips_the_phase() {
        let end = live::parse_time("2024-01-01T00:00:00Z").unwrap();
        let found =
            [live_job("a", Some(HASH), "Complete", "SUCCEEDED"), live_job("b", Some(HASH), "Complete", "SUCCEEDED")];
        let v = judge(&found, &want(&["a", "b"]), end + 1);
        assert!(v.values().all(|v| *v == Verdict::Succeeded), "{v:?}");
        let out = succeeded(&v).expect("skipped");
        assert_eq!(out, Outputs::from([("a".into(), "SUCCEEDED".into()), ("b".into(), "SUCCEEDED".into())]));
        // RayJobs of jobs no longer in the spec do not matter.
        let more = [found[0].clone(), found[1].clone(), live_job("old", None, "Failed", "FAILED")];
        assert_eq!(succeeded(&judge(&more, &want(&["a", "b"]), end + 1)), Some(out));
    }

    #[test]
    fn anything_else_submits_again() {
        let end = live::parse_time("2024-01-01T00:00:00Z").unwrap();
        // Without a delete-after time a RayJob never expires.
        let mut ok = live_job("a", Some(HASH), "Complete", "SUCCEEDED");
        ok["metadata"]["annotations"].as_object_mut().unwrap().remove(DELETE_AFTER_ANNOTATION);
        let stale = |other: Value, now: i64| {
            let v = judge(&[ok.clone(), other], &want(&["a", "b"]), now);
            assert_eq!(v["a"], Verdict::Succeeded);
            assert_eq!(succeeded(&v), None, "{v:?}");
            v["b"].clone()
        };
        let why = |v: Verdict| match v {
            Verdict::Stale { why, .. } => why,
            other => panic!("{other:?}"),
        };
        // Missing: never submitted, or deleted after it finished.
        assert_eq!(judge(&[ok.clone()], &want(&["a", "b"]), end)["b"], Verdict::Missing);
        assert_eq!(succeeded(&judge(&[], &want(&["a"]), end)), None);
        assert_eq!(
            why(stale(live_job("b", Some("feedbeef"), "Complete", "SUCCEEDED"), end)),
            "submitted with other inputs"
        );
        assert_eq!(
            why(stale(live_job("b", None, "Complete", "SUCCEEDED"), end)),
            "not submitted by deploy --with-jobs"
        );
        assert_eq!(
            stale(live_job("b", Some(HASH), "Failed", "FAILED"), end),
            Verdict::Stale { status: "FAILED".into(), why: "did not succeed" }
        );
        assert_eq!(why(stale(live_job("b", Some(HASH), "Running", "RUNNING"), end)), "not finished");
        assert_eq!(why(stale(live_job("b", Some(HASH), "Initializing", ""), end)), "not finished");
        // Past `endTime` + its delete-after seconds (60): deleted at the next submit, so gone.
        assert_eq!(
            why(stale(live_job("b", Some(HASH), "Complete", "SUCCEEDED"), end + 60)),
            "past its delete-after time"
        );
        let mut deleting = live_job("b", Some(HASH), "Complete", "SUCCEEDED");
        deleting["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:01Z".into();
        assert_eq!(why(stale(deleting, end)), "being deleted");
    }

    #[test]
    fn a_jobs_inputs_are_its_manifest_and_image_not_the_checkouts_folder() {
        let hash = |dir: &std::path::Path, code: &str| {
            let (d, r) = crate::graph::tests::with_job(dir, code);
            let obj = live::yaml_docs(&r.files["manifests/jobs/hello.yaml"]).unwrap().remove(0);
            inputs_hash_of(&d, &obj)
        };
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = hash(one.path(), "print('hello')\n");
        assert_eq!(first, hash(two.path(), "print('hello')\n"), "a fresh checkout elsewhere: the same inputs");
        assert_ne!(first, hash(two.path(), "print('bye')\n"), "the job's code (in the image) is an input");
    }

    #[test]
    fn expiry() {
        let end = live::parse_time("2024-01-01T00:00:00Z").unwrap();
        assert!(!expired(&rj("Complete", "SUCCEEDED"), end + 59));
        assert!(expired(&rj("Complete", "SUCCEEDED"), end + 60));
        assert!(!expired(&rj("Running", "RUNNING"), end + 600));
    }
}
