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
        .route("/upload/resumable", post(tus_create))
        .route(
            "/upload/resumable/{id}",
            axum::routing::head(tus_head)
                .patch(tus_patch)
                .delete(tus_delete),
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

// --- TUS 1.0 resumable uploads ----------------------------------------------------------------

const TUS_VERSION: &str = "1.0.0";

/// Every TUS answer says which protocol version and extensions it speaks (a bare `OPTIONS`
/// is a CORS preflight here, so discovery rides on every answer).
fn tus(status: StatusCode, mut headers: HeaderMap) -> Response {
    headers.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    headers.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    headers.insert(
        "tus-extension",
        HeaderValue::from_static("creation,creation-with-upload,termination,expiration"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (status, headers).into_response()
}

fn tus_error(e: impl Into<ApiError>) -> Response {
    let mut r = e.into().into_response();
    r.headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    r
}

fn tus_headers(upload: &crate::tus::Upload) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("upload-offset", HeaderValue::from(upload.offset));
    h.insert("upload-length", HeaderValue::from(upload.length));
    let expires =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(upload.expires_at.max(0) as u64);
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(expires)) {
        h.insert("upload-expires", v);
    }
    h
}

/// The refusal when the client does not speak TUS 1.0.0.
fn tus_refusal(headers: &HeaderMap) -> Option<Response> {
    match header_str(headers, "tus-resumable") {
        Some(TUS_VERSION) => None,
        _ => {
            let mut h = HeaderMap::new();
            h.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
            let mut r = tus_error(
                ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "tus_version",
                    "this server speaks TUS 1.0.0",
                )
                .with_hint("send `Tus-Resumable: 1.0.0` (tus-js-client does)"),
            );
            r.headers_mut().extend(h);
            Some(r)
        }
    }
}

/// `Upload-Metadata`: `key base64,key base64,…`.
fn tus_metadata(
    headers: &HeaderMap,
) -> Result<std::collections::HashMap<String, String>, ApiError> {
    use base64::Engine;
    let mut out = std::collections::HashMap::new();
    let Some(text) = header_str(headers, "upload-metadata") else {
        return Ok(out);
    };
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
        let value = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_metadata",
                    format!("Upload-Metadata `{key}` is not base64 of UTF-8 text"),
                )
            })?;
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

async fn tus_create(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(r) = tus_refusal(&headers) {
        return r;
    }
    let created = async {
        let length: u64 = header_str(&headers, "upload-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "upload_length",
                    "Upload-Length is missing or not a number",
                )
                .with_hint("declare the object's size in bytes; deferred lengths are not supported")
            })?;
        let meta = tus_metadata(&headers)?;
        let field = |k: &str| meta.get(k).cloned();
        let new = crate::tus::NewUpload {
            bucket_id: field("bucketName").unwrap_or_default(),
            name: field("objectName").unwrap_or_default(),
            length,
            content_type: field("contentType"),
            cache_control: field("cacheControl").as_deref().map(cache_control),
            metadata: match field("metadata") {
                Some(m) => Some(parse_metadata(&m).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_metadata",
                        "the `metadata` entry is not a JSON object",
                    )
                })?),
                None => None,
            },
            upsert: header_str(&headers, "x-upsert")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        };
        if new.bucket_id.is_empty() || new.name.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_metadata",
                "Upload-Metadata needs bucketName and objectName",
            ));
        }
        Ok::<_, ApiError>(storage.tus_create(&principal, new).await?)
    }
    .await;
    let upload = match created {
        Ok(u) => u,
        Err(e) => return tus_error(e),
    };
    let mut h = tus_headers(&upload);
    if let Ok(v) = HeaderValue::from_str(&format!("/storage/v1/upload/resumable/{}", upload.id)) {
        h.insert(header::LOCATION, v);
    }
    // creation-with-upload: the first bytes may come with the POST.
    let with_bytes = header_str(&headers, "content-type")
        .is_some_and(|t| t.eq_ignore_ascii_case("application/offset+octet-stream"));
    if with_bytes && upload.length > 0 {
        match storage
            .tus_patch(&principal, &upload.id, 0, body_stream(body))
            .await
        {
            Ok(p) => {
                h.extend(tus_headers(&p.upload));
            }
            Err(e) => return tus_error(e),
        }
    } else if upload.length == 0 {
        // An empty object is complete as soon as it is declared.
        let empty = futures_util::stream::empty().boxed();
        if let Err(e) = storage.tus_patch(&principal, &upload.id, 0, empty).await {
            return tus_error(e);
        }
    }
    tus(StatusCode::CREATED, h)
}

async fn tus_head(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = tus_refusal(&headers) {
        return r;
    }
    match storage.tus_state(&principal, &id).await {
        Ok(u) => tus(StatusCode::OK, tus_headers(&u)),
        Err(e) => tus_error(e),
    }
}

async fn tus_patch(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(r) = tus_refusal(&headers) {
        return r;
    }
    if !header_str(&headers, "content-type")
        .is_some_and(|t| t.eq_ignore_ascii_case("application/offset+octet-stream"))
    {
        return tus_error(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "a PATCH carries Content-Type: application/offset+octet-stream",
        ));
    }
    let Some(offset) = header_str(&headers, "upload-offset").and_then(|v| v.parse().ok()) else {
        return tus_error(ApiError::new(
            StatusCode::BAD_REQUEST,
            "upload_offset",
            "Upload-Offset is missing or not a number",
        ));
    };
    match storage
        .tus_patch(&principal, &id, offset, body_stream(body))
        .await
    {
        Ok(p) => tus(StatusCode::NO_CONTENT, tus_headers(&p.upload)),
        Err(e) => tus_error(e),
    }
}

async fn tus_delete(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = tus_refusal(&headers) {
        return r;
    }
    match storage.tus_delete(&principal, &id).await {
        Ok(()) => tus(StatusCode::NO_CONTENT, HeaderMap::new()),
        Err(e) => tus_error(e),
    }
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

/// The bytes and options of an upload: the raw body with its headers, or — as Supabase's
/// clients send a `Blob` — a `multipart/form-data` form whose text fields (`cacheControl`,
/// `metadata`) come before the file part, which is streamed like a raw body.
async fn upload_parts(
    headers: &HeaderMap,
    body: Body,
    put: bool,
) -> ApiResult<(UploadOptions, UploadBody)> {
    let mut options = upload_options(headers, put)?;
    let Some(boundary) = header_str(headers, "content-type")
        .filter(|t| t.to_ascii_lowercase().starts_with("multipart/form-data"))
        .map(|t| {
            multer::parse_boundary(t)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_form", e.to_string()))
        })
        .transpose()?
    else {
        return Ok((options, body_stream(body)));
    };
    let bad_form = |e: multer::Error| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_form", e.to_string())
            .with_hint("send the file as a form part after the text fields, or send the raw bytes")
    };
    let mut form = multer::Multipart::with_constraints(
        body.into_data_stream(),
        boundary,
        // Text fields are small; the file part has no limit here (the bucket's applies).
        multer::Constraints::new().size_limit(
            multer::SizeLimit::new()
                .for_field("cacheControl", 1024)
                .for_field("metadata", 64 * 1024),
        ),
    );
    options.content_length = None;
    options.content_type = None;
    while let Some(field) = form.next_field().await.map_err(bad_form)? {
        let name = field.name().unwrap_or_default().to_string();
        if field.file_name().is_some() || name.is_empty() {
            options.content_type = field.content_type().map(|m| m.to_string());
            return Ok((options, field.map_err(std::io::Error::other).boxed()));
        }
        let text = field.text().await.map_err(bad_form)?;
        match name.as_str() {
            "cacheControl" => options.cache_control = Some(cache_control(&text)),
            "metadata" => {
                options.metadata = Some(parse_metadata(&text).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_metadata",
                        "the metadata field is not a JSON object",
                    )
                })?)
            }
            _ => {}
        }
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_form",
        "the form has no file part",
    ))
}

async fn upload(
    State(storage): State<Storage>,
    Extension(principal): Extension<Principal>,
    Path((bucket, path)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let (options, body) = upload_parts(&headers, body, method == Method::PUT).await?;
    let row = storage
        .upload(&principal, &bucket, &path, options, body)
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
    let (options, body) = upload_parts(&headers, body, false).await?;
    let row = storage.upload_signed(&grant, options, body).await?;
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

/// The path is left as it is, as Supabase answers it: its clients `encodeURI` the whole URL.
fn signed_url(bucket: &str, path: &str, token: &str) -> String {
    format!("/object/sign/{bucket}/{path}?token={token}")
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
        "url": format!("/object/upload/sign/{bucket}/{path}?token={token}"),
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
