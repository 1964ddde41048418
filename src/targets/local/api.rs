//! The Ray dashboard's HTTP API on 127.0.0.1: nodes (state API) and jobs (job API).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// A client for one dashboard (`http://127.0.0.1:PORT`). No proxy: the address is loopback.
pub struct Api {
    base: String,
    agent: ureq::Agent,
}

/// A node as the GCS sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub node_id: String,
    pub alive: bool,
    pub head: bool,
}

/// A job submission.
#[derive(Debug, Clone, PartialEq)]
pub struct JobInfo {
    pub submission_id: String,
    /// `PENDING`, `RUNNING`, `STOPPED`, `SUCCEEDED`, `FAILED`
    pub status: String,
    pub message: String,
    /// The `raydeploy_job` metadata: the spec's job name.
    pub job: Option<String>,
    pub start_time: u64,
    pub end_time: Option<u64>,
    pub driver_exit_code: Option<i64>,
}

impl JobInfo {
    pub fn finished(&self) -> bool {
        matches!(self.status.as_str(), "STOPPED" | "SUCCEEDED" | "FAILED")
    }

    fn parse(v: &Value) -> Option<Self> {
        Some(Self {
            submission_id: v.get("submission_id")?.as_str()?.to_string(),
            status: v.get("status").and_then(Value::as_str).unwrap_or("UNKNOWN").to_string(),
            message: v.get("message").and_then(Value::as_str).unwrap_or_default().to_string(),
            job: v.pointer("/metadata/raydeploy_job").and_then(Value::as_str).map(String::from),
            start_time: v.get("start_time").and_then(Value::as_u64).unwrap_or(0),
            end_time: v.get("end_time").and_then(Value::as_u64),
            driver_exit_code: v.get("driver_exit_code").and_then(Value::as_i64),
        })
    }
}

/// Key of the job metadata that names the spec's job.
pub const JOB_METADATA_KEY: &str = "raydeploy_job";

impl Api {
    pub fn new(base: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .new_agent();
        Self { base: base.trim_end_matches('/').to_string(), agent }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn get(&self, path: &str) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let mut r = self.agent.get(&url).call().with_context(|| format!("GET {url}"))?;
        let status = r.status().as_u16();
        let body =
            r.body_mut().with_config().limit(256 << 20).read_to_string().with_context(|| format!("GET {url}"))?;
        Ok((status, body))
    }

    fn get_json(&self, path: &str) -> Result<Value> {
        let (status, body) = self.get(path)?;
        if status != 200 {
            bail!("GET {}{path}: HTTP {status}: {}", self.base, tail(&body));
        }
        serde_json::from_str(&body).with_context(|| format!("GET {}{path}: not JSON: {}", self.base, tail(&body)))
    }

    /// Every node the GCS knows (alive and dead).
    pub fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let v = self.get_json("/api/v0/nodes?limit=10000&detail=false")?;
        let list = v.pointer("/data/result/result").and_then(Value::as_array).context("no node list in the reply")?;
        Ok(list
            .iter()
            .filter_map(|n| {
                Some(NodeInfo {
                    node_id: n.get("node_id")?.as_str()?.to_string(),
                    alive: n.get("state").and_then(Value::as_str) == Some("ALIVE"),
                    head: n.get("is_head_node").and_then(Value::as_bool).unwrap_or(false),
                })
            })
            .collect())
    }

    pub fn jobs(&self) -> Result<Vec<JobInfo>> {
        let v = self.get_json("/api/jobs/")?;
        Ok(v.as_array().map(|a| a.iter().filter_map(JobInfo::parse).collect()).unwrap_or_default())
    }

    pub fn job(&self, id: &str) -> Result<JobInfo> {
        let v = self.get_json(&format!("/api/jobs/{id}"))?;
        JobInfo::parse(&v).with_context(|| format!("job {id}: unexpected reply {v}"))
    }

    pub fn logs(&self, id: &str) -> Result<String> {
        let v = self.get_json(&format!("/api/jobs/{id}/logs"))?;
        Ok(v.get("logs").and_then(Value::as_str).unwrap_or_default().to_string())
    }

    pub fn stop(&self, id: &str) -> Result<()> {
        let url = format!("{}/api/jobs/{id}/stop", self.base);
        let r = self.agent.post(&url).send_empty().with_context(|| format!("POST {url}"))?;
        if r.status().as_u16() != 200 {
            bail!("POST {url}: HTTP {}", r.status());
        }
        Ok(())
    }

    pub fn delete(&self, id: &str) -> Result<()> {
        let url = format!("{}/api/jobs/{id}", self.base);
        let r = self.agent.delete(&url).call().with_context(|| format!("DELETE {url}"))?;
        if r.status().as_u16() != 200 {
            bail!("DELETE {url}: HTTP {}", r.status());
        }
        Ok(())
    }

    /// Connects the head's job agent (this client's address: the head's dashboard agent, not the
    /// dashboard) to Ray, and returns once it is connected; call it while the head is the only
    /// node. The agent connects on its first job request, as a driver on the first live node
    /// with its IP, and every node here shares 127.0.0.1: connected later, it may land on a
    /// worker. When that worker dies, the GCS marks the agent's driver finished and drops the
    /// classes it exported (among them the job supervisor's) while the agent goes on, so every
    /// later submission fails with "Job supervisor actor died". Connected now, it is on the head.
    pub fn attach_job_agent(&self, until: std::time::Instant) -> Result<()> {
        // Stopping a job that does not exist: the agent connects, then answers 404.
        let url = format!("{}/api/job_agent/jobs/raydeploy-attach/stop", self.base);
        loop {
            let err = match self.agent.post(&url).send_empty() {
                Ok(mut r) => {
                    let status = r.status().as_u16();
                    if status == 404 {
                        return Ok(());
                    }
                    let body = r.body_mut().read_to_string().unwrap_or_default();
                    format!("HTTP {status}: {}", tail(&body))
                }
                // Not listening yet.
                Err(e) => e.to_string(),
            };
            if std::time::Instant::now() >= until || crate::run::signals::interrupted() {
                bail!("the head's job agent did not connect to Ray (POST {url}: {err})");
            }
            crate::run::proc::sleep_unless_interrupted(Duration::from_millis(200));
        }
    }

    /// The submissions of the spec's job `name`, newest first.
    pub fn submissions(&self, name: &str) -> Result<Vec<JobInfo>> {
        let mut v: Vec<JobInfo> = self.jobs()?.into_iter().filter(|j| j.job.as_deref() == Some(name)).collect();
        v.sort_by(|a, b| b.start_time.cmp(&a.start_time).then(b.submission_id.cmp(&a.submission_id)));
        Ok(v)
    }
}

fn tail(s: &str) -> String {
    let s = s.trim();
    let start = s.char_indices().rev().nth(300).map_or(0, |(i, _)| i);
    s[start..].to_string()
}
