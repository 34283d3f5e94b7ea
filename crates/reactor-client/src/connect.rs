//! `/connect/v1`: what the CLI reads and manages of Connect.

use serde_json::Value;

use crate::{Client, ClientError, encode_segment};

impl Client {
    /// `GET /connect/v1/integrations`.
    pub async fn connect_integrations(&self) -> Result<Value, ClientError> {
        self.send(reqwest::Method::GET, "/connect/v1/integrations", None)
            .await
    }

    /// `GET /connect/v1/connections`, narrowed to an integration or an end user.
    pub async fn connect_connections(
        &self,
        integration: Option<&str>,
        end_user: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut query = Vec::new();
        if let Some(i) = integration {
            query.push(format!("integration={}", encode_segment(i)));
        }
        if let Some(u) = end_user {
            query.push(format!("end_user_id={}", encode_segment(u)));
        }
        let path = if query.is_empty() {
            "/connect/v1/connections".to_string()
        } else {
            format!("/connect/v1/connections?{}", query.join("&"))
        };
        self.send(reqwest::Method::GET, &path, None).await
    }

    /// `DELETE /connect/v1/connections/<id>`.
    pub async fn connect_delete(&self, id: &str) -> Result<(), ClientError> {
        let _: Value = self
            .send(
                reqwest::Method::DELETE,
                &format!("/connect/v1/connections/{}", encode_segment(id)),
                None,
            )
            .await?;
        Ok(())
    }
}
