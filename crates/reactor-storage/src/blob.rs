//! The bytes side: objects in an `object_store` (local directory or S3), written and read
//! as streams. An upload holds at most one part (8 MiB) plus the parts in flight in memory,
//! whatever its size; a download is a stream of the store's chunks.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use md5::Md5;
use object_store::path::Path as StorePath;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart,
};
use sha2::{Digest, Sha256};

use crate::{Backend, ObjectRow, StorageError, UploadOptions};

/// An upload's body as it arrives.
pub type UploadBody = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Uploads up to this size are sent to the store in one request; larger ones in parts of
/// this size.
const PART: usize = 8 * 1024 * 1024;

/// Parts in flight at once in a multipart upload.
const PARTS_IN_FLIGHT: usize = 2;

/// Chunks a local file is read in (object_store's own reader uses 8 KiB, one blocking-pool
/// hop each: too many for a large download).
const FILE_CHUNK: usize = 256 * 1024;

pub fn open(backend: &Backend) -> Result<Arc<dyn ObjectStore>, StorageError> {
    match backend {
        Backend::Fs(root) => {
            std::fs::create_dir_all(root).map_err(|e| {
                StorageError::Store(object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: format!("cannot create {}: {e}", root.display()).into(),
                })
            })?;
            Ok(Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(root)?,
            ))
        }
        Backend::S3(s3) => {
            let mut builder = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(&s3.bucket)
                .with_region(&s3.region)
                .with_virtual_hosted_style_request(!s3.path_style);
            if let Some(endpoint) = &s3.endpoint {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"));
            }
            if let Some(id) = &s3.access_key_id {
                builder = builder.with_access_key_id(id);
            }
            if let Some(secret) = &s3.secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            Ok(Arc::new(builder.build()?))
        }
    }
}

/// The type an object is stored with: the uploader's `Content-Type`, else a guess from the
/// path's extension, else `application/octet-stream`.
pub fn content_type(declared: Option<&str>, path: &str) -> String {
    match declared.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) if !t.eq_ignore_ascii_case("application/octet-stream") => t.to_string(),
        _ => mime_guess::from_path(path)
            .first_raw()
            .unwrap_or("application/octet-stream")
            .to_string(),
    }
}

#[derive(Debug)]
pub struct Written {
    pub size: u64,
    pub sha256: String,
    /// The body was cut off and `keep_partial` kept what had arrived.
    pub interrupted: bool,
}

/// Streams `body` into the store at `key`, hashing it on the way. Refused — with nothing
/// left in the store — when it grows past `limit`, does not match a checksum the client
/// declared, or is cut off (unless `keep_partial`: a resumable upload keeps what arrived, and
/// the client goes on from there).
pub async fn write(
    store: &dyn ObjectStore,
    key: &str,
    mut body: UploadBody,
    limit: u64,
    options: &UploadOptions,
    keep_partial: bool,
) -> Result<Written, StorageError> {
    let path = StorePath::from(key);
    let mut sha = Sha256::new();
    // MD5 costs as much as the copy itself: only when the client sent one to check.
    let mut md5 = options.md5_base64.as_ref().map(|_| Md5::new());
    let mut size: u64 = 0;
    let mut small: Vec<Bytes> = Vec::new();
    let mut multipart: Option<WriteMultipart> = None;
    let failed = async |multipart: Option<WriteMultipart>, e: StorageError| {
        if let Some(w) = multipart
            && let Err(abort) = w.abort().await
        {
            tracing::warn!(error = %abort, "cannot abort a multipart upload");
        }
        Err(e)
    };
    let mut interrupted = false;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(_) if keep_partial && size > 0 => {
                interrupted = true;
                break;
            }
            Err(e) => return failed(multipart, StorageError::Interrupted(e.to_string())).await,
        };
        size += chunk.len() as u64;
        if size > limit {
            return failed(multipart, StorageError::TooLarge { limit }).await;
        }
        sha.update(&chunk);
        if let Some(m) = &mut md5 {
            m.update(&chunk);
        }
        match &mut multipart {
            Some(w) => {
                if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    return failed(multipart, e.into()).await;
                }
                w.put(chunk);
            }
            None => {
                small.push(chunk);
                if size as usize > PART {
                    let upload = store.put_multipart(&path).await?;
                    let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
                    for b in small.drain(..) {
                        w.put(b);
                    }
                    multipart = Some(w);
                }
            }
        }
    }
    let sha256 = hex::encode(sha.finalize());
    if let Some(declared) = options.sha256.as_ref().filter(|_| !interrupted) {
        let ok = declared.eq_ignore_ascii_case(&sha256)
            || base64_decode(declared).is_some_and(|d| hex::encode(d) == sha256);
        if !ok {
            return failed(multipart, StorageError::ChecksumMismatch("SHA-256")).await;
        }
    }
    if let (Some(declared), Some(md5)) = (options.md5_base64.as_ref().filter(|_| !interrupted), md5)
    {
        let md5 = md5.finalize();
        if base64_decode(declared).as_deref() != Some(md5.as_slice()) {
            return failed(multipart, StorageError::ChecksumMismatch("MD5")).await;
        }
    }
    match multipart {
        Some(w) => {
            w.finish().await?;
        }
        None => {
            store.put(&path, PutPayload::from_iter(small)).await?;
        }
    }
    Ok(Written {
        size,
        sha256,
        interrupted,
    })
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
}

/// A byte range as `Range: bytes=…` asks for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `start-end`, inclusive.
    FromTo(u64, u64),
    /// `start-`.
    From(u64),
    /// `-n`: the last n bytes.
    Last(u64),
}

impl ByteRange {
    /// One range from a `Range` header; `None` for anything else (several ranges, other
    /// units), which is then served whole, as RFC 9110 allows.
    pub fn parse(header: &str) -> Option<ByteRange> {
        let spec = header.trim().strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        match (a.is_empty(), b.is_empty()) {
            (true, false) => b.parse().ok().map(ByteRange::Last),
            (false, true) => a.parse().ok().map(ByteRange::From),
            (false, false) => {
                let (start, end) = (a.parse().ok()?, b.parse().ok()?);
                (start <= end).then_some(ByteRange::FromTo(start, end))
            }
            (true, true) => None,
        }
    }

    /// The half-open byte span within an object of `size` bytes, or `None` when it cannot
    /// be satisfied.
    pub fn resolve(self, size: u64) -> Option<std::ops::Range<u64>> {
        let span = match self {
            ByteRange::FromTo(s, e) => s..e.saturating_add(1).min(size),
            ByteRange::From(s) => s..size,
            ByteRange::Last(n) => size.saturating_sub(n)..size,
        };
        (span.start < span.end).then_some(span)
    }
}

/// An object's bytes on their way out.
pub struct Download {
    /// The span served (the whole object when no range was asked).
    pub span: std::ops::Range<u64>,
    pub stream: BoxStream<'static, Result<Bytes, std::io::Error>>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("span", &self.span)
            .finish()
    }
}

pub async fn read(
    store: Arc<dyn ObjectStore>,
    row: &ObjectRow,
    range: Option<ByteRange>,
) -> Result<Download, StorageError> {
    let size = row.size as u64;
    let span = match range {
        Some(r) => r
            .resolve(size)
            .ok_or(StorageError::RangeNotSatisfiable { size })?,
        None => 0..size,
    };
    if span.is_empty() {
        return Ok(Download {
            span,
            stream: futures_util::stream::empty().boxed(),
        });
    }
    let options = GetOptions {
        range: (span != (0..size)).then(|| GetRange::Bounded(span.clone())),
        ..Default::default()
    };
    let got = store
        .get_opts(&StorePath::from(row.blob.as_str()), options)
        .await?;
    let stream = match got.payload {
        GetResultPayload::File(file, _) => {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            let mut file = tokio::fs::File::from_std(file);
            file.seek(std::io::SeekFrom::Start(got.range.start))
                .await
                .map_err(|e| {
                    StorageError::Store(object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    })
                })?;
            let reader = file.take(got.range.end - got.range.start);
            tokio_util::io::ReaderStream::with_capacity(reader, FILE_CHUNK).boxed()
        }
        GetResultPayload::Stream(s) => s.map_err(std::io::Error::other).boxed(),
    };
    Ok(Download { span, stream })
}

/// The whole of stored bytes as a stream.
pub async fn stream(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<BoxStream<'static, Result<Bytes, std::io::Error>>, StorageError> {
    let got = store.get(&StorePath::from(key)).await?;
    Ok(got.into_stream().map_err(std::io::Error::other).boxed())
}

pub async fn copy(store: &dyn ObjectStore, from: &str, to: &str) -> Result<(), StorageError> {
    Ok(store
        .copy(&StorePath::from(from), &StorePath::from(to))
        .await?)
}

/// Deletes bytes; already gone is fine (another replica's sweep got there first).
pub async fn delete(store: &dyn ObjectStore, key: &str) -> Result<(), StorageError> {
    match store.delete(&StorePath::from(key)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(ByteRange::parse("bytes=0-9"), Some(ByteRange::FromTo(0, 9)));
        assert_eq!(ByteRange::parse("bytes=5-"), Some(ByteRange::From(5)));
        assert_eq!(ByteRange::parse("bytes=-3"), Some(ByteRange::Last(3)));
        assert_eq!(ByteRange::parse("bytes=0-1,4-5"), None);
        assert_eq!(ByteRange::parse("items=0-1"), None);
        assert_eq!(ByteRange::parse("bytes=9-2"), None);
        assert_eq!(ByteRange::FromTo(0, 9).resolve(5), Some(0..5));
        assert_eq!(ByteRange::From(5).resolve(5), None);
        assert_eq!(ByteRange::Last(3).resolve(10), Some(7..10));
        assert_eq!(ByteRange::Last(30).resolve(10), Some(0..10));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type(Some("image/png"), "x.bin"), "image/png");
        assert_eq!(content_type(None, "a/b.json"), "application/json");
        assert_eq!(
            content_type(Some("application/octet-stream"), "p.png"),
            "image/png"
        );
        assert_eq!(content_type(None, "noext"), "application/octet-stream");
    }
}
