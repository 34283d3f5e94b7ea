//! Jobs wired to Functions: a run is the function invoked the way `/fn/v1` invokes it — a
//! `POST` with the run as its JSON body, the project's secrets as `env` — acting as the
//! project itself (the service role), its log lines kept with the run.

use std::sync::Arc;

use reactor_functions::{AnswerBody, Functions, Invocation};
use reactor_jobs::{BoxFuture, RunOutcome, RunRequest, Runner};

/// What an attempt keeps of a function's answer body, for its error message.
const KEEP_BODY: usize = 2048;

#[derive(Debug)]
pub(crate) struct FunctionsRunner {
    pub functions: Functions,
    pub env: Arc<dyn reactor_functions::http::EnvSource>,
    /// This server's URL, what `req.url` starts with.
    pub endpoint: String,
}

impl Runner for FunctionsRunner {
    fn run<'a>(&'a self, function: &'a str, request: RunRequest) -> BoxFuture<'a, RunOutcome> {
        Box::pin(async move {
            let id = format!("job-{}-{}", request.run, request.attempt);
            let env = match self.env.env().await {
                Ok(env) => env,
                Err(e) => {
                    return RunOutcome {
                        status: None,
                        error: Some(format!("cannot read the project's secrets: {}", e.message)),
                        logs: Vec::new(),
                    };
                }
            };
            let invocation = Invocation {
                method: "POST".into(),
                url: format!("{}/fn/v1/{function}", self.endpoint),
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("x-reactor-role".into(), "service".into()),
                    ("x-reactor-job".into(), request.job.clone()),
                    ("x-reactor-run-id".into(), request.run.clone()),
                    ("x-reactor-attempt".into(), request.attempt.to_string()),
                ],
                body: serde_json::to_vec(&request).unwrap_or_default(),
                id: id.clone(),
            };
            let mut outcome = match self.functions.invoke(function, invocation, env).await {
                Ok(answer) => {
                    let body = read_body(answer.body).await;
                    let ok = (200..300).contains(&answer.status);
                    RunOutcome {
                        status: Some(answer.status),
                        error: (!ok).then(|| {
                            let text = String::from_utf8_lossy(&body);
                            let text = text.trim();
                            if text.is_empty() {
                                format!("the function answered {}", answer.status)
                            } else {
                                format!("the function answered {}: {text}", answer.status)
                            }
                        }),
                        logs: Vec::new(),
                    }
                }
                Err(e) => RunOutcome {
                    status: None,
                    error: Some(e.to_string()),
                    logs: Vec::new(),
                },
            };
            outcome.logs = self
                .functions
                .logs()
                .read_invocation(function, &id)
                .into_iter()
                .filter_map(|l| serde_json::to_value(l).ok())
                .collect();
            outcome
        })
    }
}

/// The first bytes of an answer, read to its end (a streamed one too).
async fn read_body(body: AnswerBody) -> Vec<u8> {
    match body {
        AnswerBody::Full(mut bytes) => {
            bytes.truncate(KEEP_BODY);
            bytes
        }
        AnswerBody::Stream(mut rx) => {
            let mut kept = Vec::new();
            while let Some(chunk) = rx.recv().await {
                if let Ok(chunk) = chunk
                    && kept.len() < KEEP_BODY
                {
                    kept.extend_from_slice(&chunk[..chunk.len().min(KEEP_BODY - kept.len())]);
                }
            }
            kept
        }
    }
}
