//! `/gateway/v1`: what the CLI reads of the AI gateway.

use serde_json::Value;

use crate::{Client, ClientError, encode_segment};

impl Client {
    /// `GET /gateway/v1/usage`: usage grouped by `group_by` (caller, model, day) since a day.
    pub async fn gateway_usage(
        &self,
        group_by: &str,
        since: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut path = format!("/gateway/v1/usage?group_by={}", encode_segment(group_by));
        if let Some(since) = since {
            path = format!("{path}&since={}", encode_segment(since));
        }
        self.send(reqwest::Method::GET, &path, None).await
    }
}
