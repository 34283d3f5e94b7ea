//! `/jobs/v1`: the project's jobs and their runs.

use serde_json::Value;

use crate::{Client, ClientError, encode_segment};

impl Client {
    pub async fn jobs(&self) -> Result<Vec<Value>, ClientError> {
        self.send(reqwest::Method::GET, "/jobs/v1", None).await
    }

    /// Enqueues a run of `job` with `payload`; the run.
    pub async fn enqueue_run(&self, job: &str, payload: Value) -> Result<Value, ClientError> {
        let path = format!("/jobs/v1/{}/runs", encode_segment(job));
        self.send(reqwest::Method::POST, &path, Some(payload)).await
    }

    pub async fn job_runs(&self, job: &str, limit: u32) -> Result<Vec<Value>, ClientError> {
        let path = format!("/jobs/v1/{}/runs?limit={limit}", encode_segment(job));
        self.send(reqwest::Method::GET, &path, None).await
    }

    pub async fn job_run(&self, id: &str) -> Result<Value, ClientError> {
        let path = format!("/jobs/v1/runs/{}", encode_segment(id));
        self.send(reqwest::Method::GET, &path, None).await
    }

    /// `cancel` or `retry`.
    pub async fn job_run_action(&self, id: &str, action: &str) -> Result<Value, ClientError> {
        let path = format!("/jobs/v1/runs/{}/{action}", encode_segment(id));
        self.send(reqwest::Method::POST, &path, None).await
    }
}
