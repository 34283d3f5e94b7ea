//! `/storage/v1`, with Supabase Storage's paths and JSON shapes: thin handlers that parse the
//! request, call [`Storage`], and render. [`router`] sits behind the key middleware;
//! [`public_router`] serves what needs no key (public buckets, signed URLs).

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use futures_util::{StreamExt, TryStreamExt};
use reactor_core::{ApiError, JsonBody, Principal};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    Bucket, BucketPatch, ByteRange, ListQuery, NewBucket, ObjectRow, Op, Storage, StorageError,
    UploadBody, UploadOptions,
};

type ApiResult<T> = Result<T, ApiError>;

pub fn router(storage: Storage) -> Router {
    Router::new()
        .route("/bucket", get(list_buckets).post(create_bucket))
        .route(
            "/bucket/{id}",
            get(get_bucket).put(update_bucket).delete(delete_bucket),
        )
        .route("/bucket/{id}/empty", post(empty_bucket))
        .route("/object/list/{bucket}", post(list_objects))
        .route("/object/move", post(move_object))
        .route("/object/copy", post(copy_object))
        .route("/object/sign/{bucket}", post(sign_many))
        .route("/object/sign/{bucket}/{*path}", post(sign_one))
        .route("/object/upload/sign/{bucket}/{*path}", post(sign_upload))
        .route("/object/info/{bucket}/{*path}", get(object_info))
        .route(
            "/object/authenticated/{bucket}/{*path}",
            get(download).head(download),
        )
        .route("/object/{bucket}", axum::routing::delete(delete_many))
        .route(
            "/object/{bucket}/{*path}",
            get(download)
                .head(download)
                .post(upload)
                .put(upload)
                .delete(delete_one),
        )
        .with_state(storage)
}

pub fn public_router(storage: Storage) -> Router {
    Router::new()
        .route(
            "/object/public/{bucket}/{*path}",
            get(download_public).head(download_public),
        )
        .route(
            "/object/sign/{bucket}/{*path}",
            get(download_signed).head(download_signed),
        )
        .route(
            "/object/upload/sign/{bucket}/{*path}",
            axum::routing::put(upload_signed),
        )
        .with_state(storage)
}

fn bucket_json(b: &Bucket) -> Value {
    json!({
        "id": b.id,
        "name": b.id,
        "owner": b.owner_id,
        "public": b.public,
        "file_size_limit": b.file_size_limit,
        "allowed_mime_types": b.allowed_mime_types,
        "org_id": b.org_id,
        "created_at": b.created_at,
        "updated_at": b.updated_at,
    })
}

fn message(text: &str) -> Json<Value> {
    Json(json!({ "message": text }))
}

async fn list_buckets(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    let buckets = storage.list_buckets(&principal).await?;
    Ok(Json(buckets.iter().map(bucket_json).collect()))
}

async fn create_bucket(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    JsonBody(new): JsonBody<NewBucket>,
) -> ApiResult<Json<Value>> {
    let bucket = storage.create_bucket(&principal, new).await?;
    Ok(Json(json!({ "name": bucket.id })))
}

async fn get_bucket(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(bucket_json(&storage.bucket(&principal, &id).await?)))
}

async fn update_bucket(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<BucketPatch>,
) -> ApiResult<Json<Value>> {
    storage.update_bucket(&principal, &id, patch).await?;
    Ok(message("Successfully updated"))
}

async fn empty_bucket(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    storage.empty_bucket(&principal, &id).await?;
    Ok(message("Successfully emptied"))
}

async fn delete_bucket(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    storage.delete_bucket(&principal, &id).await?;
    Ok(message("Successfully deleted"))
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// What the uploader says in its headers.
fn upload_options(headers: &HeaderMap, put: bool) -> ApiResult<UploadOptions> {
    let metadata = match header_str(headers, "x-metadata") {
        None => None,
        Some(text) => Some(parse_metadata(text).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_metadata",
                "x-metadata is not a JSON object (or base64 of one)",
            )
        })?),
    };
    Ok(UploadOptions {
        content_type: header_str(headers, "content-type").map(str::to_string),
        cache_control: header_str(headers, "cache-control").map(cache_control),
        // PUT replaces, as Supabase's `update` does.
        upsert: put
            || header_str(headers, "x-upsert").is_some_and(|v| v.eq_ignore_ascii_case("true")),
        content_length: header_str(headers, "content-length").and_then(|v| v.parse().ok()),
        md5_base64: header_str(headers, "content-md5").map(str::to_string),
        sha256: header_str(headers, "x-checksum-sha256")
            .or_else(|| header_str(headers, "x-amz-checksum-sha256"))
            .map(str::to_string),
        metadata,
    })
}

/// Supabase clients send `cacheControl: "3600"`, meaning `max-age=3600`.
fn cache_control(value: &str) -> String {
    if value.chars().all(|c| c.is_ascii_digit()) && !value.is_empty() {
        format!("max-age={value}")
    } else {
        value.to_string()
    }
}

fn parse_metadata(text: &str) -> Option<Value> {
    use base64::Engine;
    let value: Value = serde_json::from_str(text).ok().or_else(|| {
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    })?;
    value.is_object().then_some(value)
}

fn body_stream(body: Body) -> UploadBody {
    body.into_data_stream()
        .map_err(std::io::Error::other)
        .boxed()
}

fn uploaded(row: &ObjectRow) -> Json<Value> {
    let key = format!("{}/{}", row.bucket_id, row.name);
    Json(json!({ "Id": row.id, "Key": key, "id": row.id, "path": row.name, "fullPath": key }))
}

async fn upload(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    Path((bucket, path)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let options = upload_options(&headers, method == Method::PUT)?;
    let row = storage
        .upload(&principal, &bucket, &path, options, body_stream(body))
        .await?;
    Ok(uploaded(&row))
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
    download: Option<String>,
}

fn token(q: &TokenQuery) -> ApiResult<&str> {
    q.token.as_deref().ok_or_else(|| {
        StorageError::BadSignature
            .into_api()
            .with_details("the URL has no `token` parameter")
    })
}

async fn upload_signed(
    State(storage): State<Storage>,
    Path((bucket, path)): Path<(String, String)>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let grant = storage.signer().verify(
        token(&query)?,
        Op::Upload,
        &bucket,
        &path,
        crate::now_secs(),
    )?;
    let options = upload_options(&headers, false)?;
    let row = storage
        .upload_signed(&grant, options, body_stream(body))
        .await?;
    Ok(uploaded(&row))
}

#[derive(Debug, Default, Deserialize)]
struct DownloadQuery {
    download: Option<String>,
}

async fn download(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    Path((bucket, path)): Path<(String, String)>,
    Query(query): Query<DownloadQuery>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let row = storage.info(&principal, &bucket, &path).await?;
    serve(
        &storage,
        &row,
        &headers,
        query.download.as_deref(),
        method == Method::HEAD,
        false,
    )
    .await
}

async fn download_public(
    State(storage): State<Storage>,
    Path((bucket, path)): Path<(String, String)>,
    Query(query): Query<DownloadQuery>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let row = storage.public_info(&bucket, &path).await?;
    serve(
        &storage,
        &row,
        &headers,
        query.download.as_deref(),
        method == Method::HEAD,
        true,
    )
    .await
}

async fn download_signed(
    State(storage): State<Storage>,
    Path((bucket, path)): Path<(String, String)>,
    Query(query): Query<TokenQuery>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let row = storage.signed_info(&bucket, &path, token(&query)?).await?;
    serve(
        &storage,
        &row,
        &headers,
        query.download.as_deref(),
        method == Method::HEAD,
        false,
    )
    .await
}

/// An object as an HTTP response: validators, conditional requests, one byte range, and
/// `Content-Disposition` when `?download` asks for an attachment.
async fn serve(
    storage: &Storage,
    row: &ObjectRow,
    headers: &HeaderMap,
    download: Option<&str>,
    head: bool,
    public: bool,
) -> ApiResult<Response> {
    let etag = row.etag();
    let modified = humantime::parse_rfc3339(&row.updated_at).ok();
    let mut out = HeaderMap::new();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.insert(name, v);
        }
    };
    set(header::ETAG, &etag);
    if let Some(m) = modified {
        set(header::LAST_MODIFIED, &httpdate::fmt_http_date(m));
    }
    set(
        header::CACHE_CONTROL,
        row.cache_control.as_deref().unwrap_or(if public {
            "public, max-age=3600"
        } else {
            "private, no-cache"
        }),
    );
    set(header::ACCEPT_RANGES, "bytes");
    if let Some(name) = download {
        let file = if name.is_empty() {
            row.name.rsplit('/').next().unwrap_or(&row.name)
        } else {
            name
        };
        set(header::CONTENT_DISPOSITION, &attachment(file));
    }
    if not_modified(headers, &etag, modified) {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    let range = header_str(headers, "range").and_then(ByteRange::parse);
    let size = row.size as u64;
    let got = match storage.download(row, range).await {
        Ok(d) => d,
        Err(StorageError::RangeNotSatisfiable { size }) => {
            let mut e = StorageError::RangeNotSatisfiable { size }
                .into_api()
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                e.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(e);
        }
        Err(e) => return Err(e.into()),
    };
    set(header::CONTENT_TYPE, &row.mime_type);
    set(
        header::CONTENT_LENGTH,
        &(got.span.end - got.span.start).to_string(),
    );
    let status = if range.is_some() {
        set(
            header::CONTENT_RANGE,
            &format!(
                "bytes {}-{}/{size}",
                got.span.start,
                got.span.end.saturating_sub(1)
            ),
        );
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let body = if head {
        Body::empty()
    } else {
        Body::from_stream(got.stream)
    };
    Ok((status, out, body).into_response())
}

/// `If-None-Match` (which wins when present), else `If-Modified-Since`, at one-second
/// resolution as HTTP dates have.
fn not_modified(headers: &HeaderMap, etag: &str, modified: Option<std::time::SystemTime>) -> bool {
    if let Some(tags) = header_str(headers, "if-none-match") {
        return tags
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == etag);
    }
    let (Some(since), Some(modified)) = (
        header_str(headers, "if-modified-since").and_then(|v| httpdate::parse_http_date(v).ok()),
        modified,
    ) else {
        return false;
    };
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    secs(modified) <= secs(since)
}

/// `attachment; filename="…"; filename*=UTF-8''…` (RFC 6266): an ASCII fallback and the
/// exact name percent-encoded.
fn attachment(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

async fn object_info(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    Path((bucket, path)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let row = storage.info(&principal, &bucket, &path).await?;
    let mut value = serde_json::to_value(&row).map_err(|_| ApiError::internal())?;
    value["etag"] = json!(row.etag());
    value["content_type"] = json!(row.mime_type);
    value["last_modified"] = json!(row.updated_at);
    Ok(Json(value))
}

async fn delete_one(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    Path((bucket, path)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let removed = storage
        .remove(&principal, &bucket, std::slice::from_ref(&path))
        .await?;
    if removed.is_empty() {
        return Err(StorageError::ObjectNotFound(path).into());
    }
    Ok(message("Successfully deleted"))
}

#[derive(Debug, Deserialize)]
struct Prefixes {
    prefixes: Vec<String>,
}

async fn delete_many(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    Path(bucket): Path<String>,
    JsonBody(body): JsonBody<Prefixes>,
) -> ApiResult<Json<Value>> {
    let removed = storage.remove(&principal, &bucket, &body.prefixes).await?;
    Ok(Json(
        serde_json::to_value(&removed).map_err(|_| ApiError::internal())?,
    ))
}

async fn list_objects(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    Path(bucket): Path<String>,
    JsonBody(query): JsonBody<ListQuery>,
) -> ApiResult<Json<Value>> {
    let entries = storage.list(&principal, &bucket, query).await?;
    Ok(Json(
        serde_json::to_value(&entries).map_err(|_| ApiError::internal())?,
    ))
}

#[derive(Debug, Deserialize)]
struct MoveBody {
    #[serde(rename = "bucketId")]
    bucket_id: String,
    #[serde(rename = "sourceKey")]
    source_key: String,
    #[serde(rename = "destinationKey")]
    destination_key: String,
    #[serde(rename = "destinationBucket", default)]
    destination_bucket: Option<String>,
}

async fn move_object(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<MoveBody>,
) -> ApiResult<Json<Value>> {
    let dest = body
        .destination_bucket
        .as_deref()
        .unwrap_or(&body.bucket_id);
    storage
        .move_object(
            &principal,
            &body.bucket_id,
            &body.source_key,
            dest,
            &body.destination_key,
        )
        .await?;
    Ok(message("Successfully moved"))
}

async fn copy_object(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<MoveBody>,
) -> ApiResult<Json<Value>> {
    let dest = body
        .destination_bucket
        .as_deref()
        .unwrap_or(&body.bucket_id);
    let upsert = header_str(&headers, "x-upsert").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let row = storage
        .copy_object(
            &principal,
            &body.bucket_id,
            &body.source_key,
            dest,
            &body.destination_key,
            upsert,
        )
        .await?;
    Ok(Json(
        json!({ "Key": format!("{}/{}", row.bucket_id, row.name), "Id": row.id }),
    ))
}

#[derive(Debug, Deserialize)]
struct SignBody {
    #[serde(rename = "expiresIn")]
    expires_in: i64,
    #[serde(default)]
    paths: Vec<String>,
}

fn signed_url(bucket: &str, path: &str, token: &str) -> String {
    format!(
        "/object/sign/{}/{}?token={token}",
        encode_path(bucket),
        encode_path(path)
    )
}

/// Percent-encodes what a URL path segment cannot hold, keeping `/` between segments.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn sign_one(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    Path((bucket, path)): Path<(String, String)>,
    JsonBody(body): JsonBody<SignBody>,
) -> ApiResult<Json<Value>> {
    let token = storage
        .sign_download(&principal, &bucket, &path, body.expires_in)
        .await?;
    Ok(Json(
        json!({ "signedURL": signed_url(&bucket, &path, &token) }),
    ))
}

async fn sign_many(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    Path(bucket): Path<String>,
    JsonBody(body): JsonBody<SignBody>,
) -> ApiResult<Json<Value>> {
    let mut out = Vec::with_capacity(body.paths.len());
    for path in &body.paths {
        out.push(
            match storage
                .sign_download(&principal, &bucket, path, body.expires_in)
                .await
            {
                Ok(token) => json!({
                    "path": path,
                    "signedURL": signed_url(&bucket, path, &token),
                    "error": null,
                }),
                Err(e) => json!({ "path": path, "signedURL": null, "error": e.to_string() }),
            },
        );
    }
    Ok(Json(Value::from(out)))
}

async fn sign_upload(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    Path((bucket, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let upsert = header_str(&headers, "x-upsert").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let token = storage
        .sign_upload(&principal, &bucket, &path, upsert)
        .await?;
    Ok(Json(json!({
        "url": format!("/object/upload/sign/{}/{}?token={token}", encode_path(&bucket), encode_path(&path)),
        "token": token,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_keep_the_exact_name() {
        assert_eq!(
            attachment("report.pdf"),
            "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
        );
        assert_eq!(
            attachment("résumé \"1\".txt"),
            "attachment; filename=\"r_sum_ _1_.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22.txt"
        );
    }

    #[test]
    fn conditional_requests() {
        let mut h = HeaderMap::new();
        let t = httpdate::parse_http_date("Wed, 25 Nov 2026 10:00:00 GMT").ok();
        assert!(!not_modified(&h, "\"a\"", t));
        h.insert("if-none-match", HeaderValue::from_static("\"b\", \"a\""));
        assert!(not_modified(&h, "\"a\"", t));
        h.insert("if-none-match", HeaderValue::from_static("\"b\""));
        h.insert(
            "if-modified-since",
            HeaderValue::from_static("Thu, 26 Nov 2026 10:00:00 GMT"),
        );
        // If-None-Match wins when present.
        assert!(!not_modified(&h, "\"a\"", t));
        h.remove("if-none-match");
        assert!(not_modified(&h, "\"a\"", t));
    }

    #[test]
    fn numeric_cache_control_means_max_age() {
        assert_eq!(cache_control("3600"), "max-age=3600");
        assert_eq!(cache_control("no-store"), "no-store");
    }
}
