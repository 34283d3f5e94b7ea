//! `/storage/v1`: buckets and objects, files streamed both ways with a progress callback.

use std::path::Path;
use std::time::Duration;

use futures_util::TryStreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::{Client, ClientError, encode_segment};

/// Transfers take as long as their bytes take; this only bounds a stalled one.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// `folder/file name.txt` → `folder/file%20name.txt`: each segment encoded, slashes kept.
fn encode_path(path: &str) -> String {
    path.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

impl Client {
    pub async fn buckets(&self) -> Result<Vec<Value>, ClientError> {
        self.send(reqwest::Method::GET, "/storage/v1/bucket", None)
            .await
    }

    pub async fn create_bucket(&self, bucket: Value) -> Result<(), ClientError> {
        self.send::<Value>(reqwest::Method::POST, "/storage/v1/bucket", Some(bucket))
            .await?;
        Ok(())
    }

    pub async fn empty_bucket(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/storage/v1/bucket/{}/empty", encode_segment(id));
        self.send::<Value>(reqwest::Method::POST, &path, None)
            .await?;
        Ok(())
    }

    pub async fn delete_bucket(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/storage/v1/bucket/{}", encode_segment(id));
        self.send::<Value>(reqwest::Method::DELETE, &path, None)
            .await?;
        Ok(())
    }

    /// Every entry of one folder level, page after page.
    pub async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<Value>, ClientError> {
        const PAGE: usize = 1000;
        let path = format!("/storage/v1/object/list/{}", encode_segment(bucket));
        let mut all = Vec::new();
        loop {
            let body = json!({ "prefix": prefix, "limit": PAGE, "offset": all.len() });
            let page: Vec<Value> = self.send(reqwest::Method::POST, &path, Some(body)).await?;
            let done = page.len() < PAGE;
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    /// Uploads a local file to `bucket`/`path` as a resumable (TUS) upload: the server checks
    /// the bucket, size, type and policies when the upload is created, before a byte is sent,
    /// and a transfer cut off is resumed from the offset the server reports (three times at
    /// most). `progress` hears the bytes the server holds so far.
    pub async fn upload_file(
        &self,
        bucket: &str,
        path: &str,
        file: &Path,
        content_type: Option<&str>,
        upsert: bool,
        progress: impl Fn(u64) + Clone + Send + Sync + 'static,
    ) -> Result<Value, ClientError> {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let local = |e: std::io::Error| ClientError::Local(format!("{}: {e}", file.display()));
        let len = tokio::fs::metadata(file).await.map_err(local)?.len();
        let mut metadata = format!("bucketName {},objectName {}", b64(bucket), b64(path));
        if let Some(t) = content_type {
            metadata.push_str(&format!(",contentType {}", b64(t)));
        }
        let created = self
            .authorized(
                self.http
                    .post(format!("{}/storage/v1/upload/resumable", self.endpoint)),
            )
            .header("tus-resumable", "1.0.0")
            .header("upload-length", len)
            .header("upload-metadata", metadata)
            .header("x-upsert", if upsert { "true" } else { "false" })
            .send()
            .await
            .map_err(|s| self.unreachable(s))?;
        let status = created.status().as_u16();
        if status != 201 {
            let bytes = created.bytes().await.map_err(|s| self.unreachable(s))?;
            return Err(crate::api_error(status, &bytes));
        }
        let location = created
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| format!("{}{l}", self.endpoint))
            .ok_or_else(|| crate::unexpected(status, b"a created upload without a Location"))?;
        let mut offset = 0u64;
        let mut attempts = 0;
        while offset < len {
            let sent = self
                .patch_from(&location, file, offset, len, progress.clone())
                .await;
            match sent {
                Ok(()) => offset = len,
                Err(ClientError::Unreachable { .. }) if attempts < 3 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(500 * attempts)).await;
                    offset = self.upload_offset(&location).await?;
                }
                Err(e) => return Err(e),
            }
        }
        progress(len);
        Ok(json!({ "Key": format!("{bucket}/{path}") }))
    }

    /// Sends the file from `offset` in one `PATCH`.
    async fn patch_from(
        &self,
        location: &str,
        file: &Path,
        offset: u64,
        len: u64,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<(), ClientError> {
        use tokio::io::AsyncSeekExt;
        let local = |e: std::io::Error| ClientError::Local(format!("{}: {e}", file.display()));
        let mut opened = tokio::fs::File::open(file).await.map_err(local)?;
        opened
            .seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(local)?;
        let mut sent = offset;
        let stream = tokio_util::io::ReaderStream::with_capacity(opened, 256 * 1024).inspect_ok(
            move |chunk| {
                sent += chunk.len() as u64;
                progress(sent);
            },
        );
        let req = self
            .authorized(self.http.patch(location))
            .timeout(TRANSFER_TIMEOUT)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", offset)
            .header("content-type", "application/offset+octet-stream")
            .header("content-length", len - offset)
            .body(reqwest::Body::wrap_stream(stream));
        self.answer_raw(req).await.map(|_| ())
    }

    /// Where a resumable upload stands (`HEAD`).
    async fn upload_offset(&self, location: &str) -> Result<u64, ClientError> {
        let res = self
            .authorized(self.http.head(location))
            .header("tus-resumable", "1.0.0")
            .send()
            .await
            .map_err(|s| self.unreachable(s))?;
        let status = res.status().as_u16();
        res.headers()
            .get("upload-offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| crate::unexpected(status, b"no Upload-Offset"))
    }

    /// Streams `bucket`/`path` into `dest`, written beside it first and renamed when whole,
    /// so a failed download never leaves a partial file under the name. `progress` hears the
    /// bytes received and the total when the server said it. Returns the bytes written.
    pub async fn download_file(
        &self,
        bucket: &str,
        path: &str,
        dest: &Path,
        progress: impl Fn(u64, Option<u64>),
    ) -> Result<u64, ClientError> {
        let url = format!(
            "{}/storage/v1/object/{}/{}",
            self.endpoint,
            encode_segment(bucket),
            encode_path(path)
        );
        let res = self
            .authorized(self.http.get(url))
            .timeout(TRANSFER_TIMEOUT)
            .send()
            .await
            .map_err(|source| self.unreachable(source))?;
        let status = res.status().as_u16();
        if !(200..300).contains(&status) {
            let bytes = res
                .bytes()
                .await
                .map_err(|source| self.unreachable(source))?;
            return Err(crate::api_error(status, &bytes));
        }
        let total = res.content_length();
        let local = |e: std::io::Error| ClientError::Local(format!("{}: {e}", dest.display()));
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let partial = dest.with_file_name(format!(".{name}.reactor-partial"));
        let mut out = tokio::fs::File::create(&partial).await.map_err(local)?;
        let mut got = 0u64;
        let mut stream = res.bytes_stream();
        let copied: Result<(), ClientError> = async {
            while let Some(chunk) = stream
                .try_next()
                .await
                .map_err(|source| self.unreachable(source))?
            {
                out.write_all(&chunk).await.map_err(local)?;
                got += chunk.len() as u64;
                progress(got, total);
            }
            out.flush().await.map_err(local)?;
            out.sync_all().await.map_err(local)?;
            Ok(())
        }
        .await;
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        tokio::fs::rename(&partial, dest).await.map_err(local)?;
        Ok(got)
    }

    /// Deletes objects; the ones deleted.
    pub async fn remove_objects(
        &self,
        bucket: &str,
        paths: &[String],
    ) -> Result<Vec<Value>, ClientError> {
        let path = format!("/storage/v1/object/{}", encode_segment(bucket));
        self.send(
            reqwest::Method::DELETE,
            &path,
            Some(json!({ "prefixes": paths })),
        )
        .await
    }

    /// Moves (`copy: false`) or copies an object, possibly to another bucket.
    pub async fn relocate_object(
        &self,
        from: (&str, &str),
        to: (&str, &str),
        copy: bool,
    ) -> Result<(), ClientError> {
        let verb = if copy { "copy" } else { "move" };
        let body = json!({
            "bucketId": from.0,
            "sourceKey": from.1,
            "destinationBucket": to.0,
            "destinationKey": to.1,
        });
        self.send::<Value>(
            reqwest::Method::POST,
            &format!("/storage/v1/object/{verb}"),
            Some(body),
        )
        .await?;
        Ok(())
    }

    /// A signed download URL, valid `expires_in` seconds.
    pub async fn sign_object(
        &self,
        bucket: &str,
        path: &str,
        expires_in: u64,
    ) -> Result<String, ClientError> {
        let url = format!(
            "/storage/v1/object/sign/{}/{}",
            encode_segment(bucket),
            encode_path(path)
        );
        let body: Value = self
            .send(
                reqwest::Method::POST,
                &url,
                Some(json!({ "expiresIn": expires_in })),
            )
            .await?;
        let signed = body["signedURL"].as_str().unwrap_or_default();
        // The server answers the path as it is (Supabase's shape); encode it here.
        let (path, query) = signed.split_once('?').unwrap_or((signed, ""));
        Ok(format!(
            "{}/storage/v1{}?{query}",
            self.endpoint,
            encode_path(path)
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_keep_their_slashes() {
        assert_eq!(
            super::encode_path("a b/c?d/ü.txt"),
            "a%20b/c%3Fd/%C3%BC.txt"
        );
    }
}
