//! `/deploy/v1`: which files the server lacks, a bundle up (with progress), releases and
//! rollback.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::{Client, ClientError, encode_segment};

/// A deploy applies migrations and loads functions: allow it more than a request's minute.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl Client {
    /// Which of `hashes` (SHA-256, hex) the server does not hold.
    pub async fn deploy_missing(&self, hashes: &[String]) -> Result<Vec<String>, ClientError> {
        let answer: Value = self
            .send(
                reqwest::Method::POST,
                "/deploy/v1/missing",
                Some(json!({ "files": hashes })),
            )
            .await?;
        Ok(answer["missing"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Uploads a bundle and deploys it (or, `dry_run`, reports what it would do).
    /// `progress` hears the bytes sent so far.
    pub async fn deploy_bundle(
        &self,
        bundle: Vec<u8>,
        dry_run: bool,
        git_commit: Option<&str>,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<Value, ClientError> {
        let len = bundle.len() as u64;
        let mut sent = 0u64;
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            bundle.chunks(256 * 1024).map(|c| Ok(c.to_vec())).collect();
        let stream = futures_util::stream::iter(chunks).inspect(move |chunk| {
            if let Ok(c) = chunk {
                sent += c.len() as u64;
                progress(sent);
            }
        });
        let mut url = format!("{}/deploy/v1/releases?dry_run={dry_run}", self.endpoint);
        if let Some(commit) = git_commit {
            url = format!("{url}&git_commit={}", encode_segment(commit));
        }
        let req = self
            .authorized(self.http.post(url))
            .timeout(DEPLOY_TIMEOUT)
            .header("content-type", "application/zstd")
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(stream));
        self.answer(req).await
    }

    pub async fn releases(&self) -> Result<Value, ClientError> {
        self.send(reqwest::Method::GET, "/deploy/v1/releases", None)
            .await
    }

    pub async fn release(&self, id: &str) -> Result<Value, ClientError> {
        let path = format!("/deploy/v1/releases/{}", encode_segment(id));
        self.send(reqwest::Method::GET, &path, None).await
    }

    /// Back to `release` (an id or a prefix of one), or to the one before the current.
    pub async fn rollback(&self, release: Option<&str>) -> Result<Value, ClientError> {
        self.send(
            reqwest::Method::POST,
            "/deploy/v1/rollback",
            Some(json!({ "release": release })),
        )
        .await
    }
}
