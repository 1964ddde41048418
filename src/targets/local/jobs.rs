//! Jobs on the local cluster: submitted with Ray's job SDK (which packs and uploads the working
//! dir), streamed with `ray job logs --follow`, judged through the job API. A job's exit code is its result:
//! 0 when it succeeded, else the driver's exit code (1 when there is none).

use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::api::{Api, JOB_METADATA_KEY, JobInfo};
use super::nodes::Ctx;
use crate::model::JobModel;
use crate::run::proc::{Cmd, Runner, sleep_unless_interrupted};
use crate::run::signals;

/// Submits a job through Ray's job SDK (the CLI would re-quote a shell entrypoint); reads its
/// arguments as JSON on stdin and prints the submission id.
const SUBMIT_PY: &str = "import json, sys\n\
from ray.job_submission import JobSubmissionClient\n\
a = json.load(sys.stdin)\n\
print(JobSubmissionClient(a['address']).submit_job(**a['submit']))\n";

/// What the job SDK's `submit_job` gets for `job`.
pub fn submit_args(job: &JobModel, id: &str) -> serde_json::Value {
    let mut env = serde_json::Map::new();
    if let Some(w) = &job.local_working_dir {
        env.insert("working_dir".into(), w.to_string_lossy().into());
    }
    if !job.pip.is_empty() {
        env.insert("pip".into(), serde_json::json!(job.pip));
    }
    if !job.env_vars.is_empty() {
        env.insert("env_vars".into(), serde_json::json!(job.env_vars));
    }
    let mut a = serde_json::json!({
        "entrypoint": job.entrypoint,
        "submission_id": id,
        "runtime_env": env,
        "metadata": { JOB_METADATA_KEY: job.name },
    });
    if let Some(n) = job.entrypoint_num_cpus {
        a["entrypoint_num_cpus"] = n.into();
    }
    if let Some(n) = job.entrypoint_num_gpus {
        a["entrypoint_num_gpus"] = n.into();
    }
    a
}

/// The submit command (its arguments go on stdin).
pub fn submit_cmd(ctx: &Ctx, dashboard: &str, job: &JobModel, id: &str) -> Cmd {
    let input = serde_json::json!({ "address": dashboard, "submit": submit_args(job, id) });
    ctx.command(&ctx.venv.join("bin").join("python"), None)
        .args(["-c", SUBMIT_PY])
        .stdin(input.to_string())
        .timeout(Duration::from_secs(300))
        .quiet()
}

/// For `--dry-run`: the submission, as the SDK call it is.
pub fn submit_preview(ctx: &Ctx, job: &JobModel) -> String {
    format!(
        "{} -c 'JobSubmissionClient(<dashboard>).submit_job(**{})'",
        ctx.venv.join("bin").join("python").display(),
        submit_args(job, "<job>-<time>")
    )
}

/// Streams a submission's logs until it ends.
pub fn follow_cmd(ctx: &Ctx, dashboard: &str, id: &str) -> Cmd {
    ctx.cmd(None)
        .args(["job", "logs", "--address", dashboard, "--follow", "--log-color", "false", id])
        .timeout(Duration::from_secs(7 * 24 * 3600))
}

fn submission_id(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{name}-{:x}", nanos)
}

/// The exit code for a finished job.
pub fn exit_code(j: &JobInfo) -> u8 {
    if j.status == "SUCCEEDED" {
        return 0;
    }
    match j.driver_exit_code {
        Some(c) if (1..=255).contains(&c) => c as u8,
        _ => 1,
    }
}

/// Submits `job`. With `stream`, the job's logs are streamed through `runner` while it runs;
/// either way this returns once the job has finished. A submission whose supervisor died
/// before the entrypoint ran (a Ray-internal failure: nothing of the job ran) is submitted once
/// more.
pub fn submit(runner: &Runner, ctx: &Ctx, api: &Api, job: &JobModel, stream: bool) -> Result<JobInfo> {
    let first = submit_once(runner, ctx, api, job, stream)?;
    if !never_ran(&first) {
        return Ok(first);
    }
    runner.info(&format!(
        "job {}: Ray lost the job's supervisor before the entrypoint ran ({}); submitting once more",
        job.name,
        first.message.lines().next().unwrap_or_default()
    ));
    submit_once(runner, ctx, api, job, stream)
}

/// A failed submission whose entrypoint never started.
pub fn never_ran(j: &JobInfo) -> bool {
    j.status == "FAILED" && j.driver_exit_code.is_none() && j.message.starts_with("Job supervisor actor died")
}

fn submit_once(runner: &Runner, ctx: &Ctx, api: &Api, job: &JobModel, stream: bool) -> Result<JobInfo> {
    let id = submission_id(&job.name);
    runner.run(&submit_cmd(ctx, api.base(), job, &id))?;
    if stream {
        // The job API judges the job: the log stream's own exit code says nothing about it.
        if let Err(e) = runner.run(&follow_cmd(ctx, api.base(), &id).ok_codes(&[0, 1])) {
            if e.is_interrupt() {
                bail!(
                    "interrupted; job {id} goes on running on the cluster (`raydeploy job delete {}` stops it)",
                    job.name
                );
            }
            runner.info(&format!("log stream ended early: {e}"));
        }
    }
    wait(api, &id)
}

/// Waits until the submission has finished (Ctrl-C leaves it running and says so).
pub fn wait(api: &Api, id: &str) -> Result<JobInfo> {
    loop {
        let info = api.job(id)?;
        if info.finished() {
            return Ok(info);
        }
        if signals::interrupted() {
            bail!("interrupted; job {id} is still {} on the cluster", info.status);
        }
        sleep_unless_interrupted(Duration::from_millis(500));
    }
}

/// The newest submission of the spec's job `name`.
pub fn latest(api: &Api, name: &str) -> Result<JobInfo> {
    api.submissions(name)?.into_iter().next().with_context(|| format!("job {name} was never submitted to this cluster"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(status: &str, code: Option<i64>, message: &str) -> JobInfo {
        JobInfo {
            submission_id: "s-1".into(),
            status: status.into(),
            message: message.into(),
            job: Some("s".into()),
            start_time: 1,
            end_time: Some(2),
            driver_exit_code: code,
        }
    }

    #[test]
    fn exit_codes_follow_the_job() {
        assert_eq!(exit_code(&info("SUCCEEDED", Some(0), "")), 0);
        assert_eq!(exit_code(&info("FAILED", Some(3), "")), 3);
        assert_eq!(exit_code(&info("FAILED", None, "")), 1);
        assert_eq!(exit_code(&info("STOPPED", None, "")), 1);
        assert_eq!(exit_code(&info("FAILED", Some(-9), "")), 1);
    }

    #[test]
    fn only_a_lost_supervisor_is_submitted_again() {
        assert!(never_ran(&info("FAILED", None, "Job supervisor actor died: The actor died unexpectedly")));
        assert!(!never_ran(&info("FAILED", Some(3), "Job entrypoint command failed with exit code 3")));
        assert!(!never_ran(&info("STOPPED", None, "Job supervisor actor died")));
    }

    #[test]
    fn the_sdk_gets_the_runtime_env() {
        let d = crate::targets::local::example_deployment();
        let mut job = d.jobs[0].clone();
        job.pip = vec!["numpy".into()];
        job.env_vars.insert("A".into(), "1".into());
        job.entrypoint_num_cpus = Some(0.5);
        let a = submit_args(&job, "sample-1");
        assert_eq!(a["entrypoint"], "python sample.py");
        assert_eq!(a["runtime_env"]["pip"], serde_json::json!(["numpy"]));
        assert_eq!(a["runtime_env"]["env_vars"]["A"], "1");
        assert!(a["runtime_env"]["working_dir"].as_str().unwrap().ends_with("jobs/sample"));
        assert_eq!(a["metadata"][JOB_METADATA_KEY], "sample");
        assert_eq!(a["entrypoint_num_cpus"], 0.5);
    }
}
