//! The Storage capability: buckets of objects on `/storage/v1`, with Supabase Storage's paths
//! and JSON shapes.
//!
//! An object is two things: its bytes in an object store (`object_store`: the local file
//! system on O1, S3 on O2) under a key the server makes (`<bucket>/<uuid>`), and its metadata
//! row in the project database (`storage.objects` on Postgres, `_reactor_storage_objects` on
//! SQLite). The row decides everything: who may read, write or delete is row-level security
//! on that table — real on Postgres, simulated on SQLite with the same policies — and an
//! object exists for callers only once its row is committed. Bytes are written first, under a
//! fresh key recorded in a `pending` table; the row's commit clears that record in the same
//! transaction. Anything left pending (a dropped upload, a crash, the old bytes of a replaced
//! or deleted object) is removed by [`Storage::sweep`], so no half object is ever visible and
//! no orphan outlives the sweep.

mod blob;
pub mod http;
mod meta;
pub mod path;
mod postgres;
pub mod sign;
mod sqlite;
pub mod tus;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use reactor_core::{ApiError, DbRole, Principal};
use reactor_db::{Db, DbError};
use serde::{Deserialize, Serialize};

pub use blob::{ByteRange, Download, UploadBody};
pub use meta::{Bucket, ObjectRow};
pub use sign::{Grant, Op, Signer};

/// Row-level security for O1, where SQLite cannot enforce it: the SQL predicate over
/// `_reactor_storage_objects`' columns that stands for the policies on `storage.objects` for
/// a role and command (`check`: the `WITH CHECK` side, for written rows). The Data capability
/// owns the policy simulation and implements this; the server hands it over at start-up.
pub trait Policies: Send + Sync + fmt::Debug {
    fn predicate(&self, role: DbRole, command: Command, check: bool) -> String;
}

/// The SQL command a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Select,
    Insert,
    Update,
    Delete,
}

impl Command {
    pub fn name(self) -> &'static str {
        match self {
            Command::Select => "select",
            Command::Insert => "insert",
            Command::Update => "update",
            Command::Delete => "delete",
        }
    }
}

/// Where object bytes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A directory of the local file system (O1: `<project>/.reactor/storage`).
    Fs(PathBuf),
    S3(S3Config),
}

/// An S3 bucket (AWS, MinIO, R2…) holding every Reactor bucket under key prefixes.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// For S3-compatible servers; AWS when absent.
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// `http://endpoint/bucket/key` instead of `http://bucket.endpoint/key` (MinIO, R2).
    pub path_style: bool,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("path_style", &self.path_style)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub backend: Backend,
    /// Largest object anyone may upload; a bucket's own limit may only be lower.
    pub max_upload_bytes: u64,
    /// An upload whose row was never committed is taken for abandoned after this long, and
    /// its bytes removed.
    pub abandon_uploads_after: Duration,
}

impl StorageConfig {
    pub fn new(backend: Backend) -> StorageConfig {
        StorageConfig {
            backend,
            max_upload_bytes: 5 * 1024 * 1024 * 1024,
            abandon_uploads_after: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("`{0}` is not a valid bucket name: {1}")]
    InvalidBucketName(String, String),
    #[error("`{0}` is not a valid object path: {1}")]
    InvalidPath(String, String),
    #[error("bucket `{0}` not found")]
    BucketNotFound(String),
    #[error("bucket `{0}` already exists")]
    BucketExists(String),
    #[error("bucket `{0}` is not empty")]
    BucketNotEmpty(String),
    #[error("object `{0}` not found")]
    ObjectNotFound(String),
    #[error("object `{0}` already exists")]
    ObjectExists(String),
    #[error("the storage policies do not allow this {0} for the caller")]
    Denied(&'static str),
    #[error("{0} requires the service key")]
    ServiceOnly(&'static str),
    #[error("the object is larger than the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("content type `{0}` is not allowed in this bucket")]
    MimeNotAllowed(String),
    #[error("the {0} checksum the client sent does not match the bytes received")]
    ChecksumMismatch(&'static str),
    #[error("the upload was cut off: {0}")]
    Interrupted(String),
    #[error("no upload `{0}` (finished, abandoned, expired, or someone else's)")]
    UploadNotFound(String),
    #[error("the upload is at byte {expected}")]
    OffsetMismatch { expected: u64 },
    #[error("the signature is invalid")]
    BadSignature,
    #[error("the signed URL has expired")]
    SignatureExpired,
    #[error("the range cannot be satisfied for an object of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    BadRequest(String),
    #[error("cannot read the storage signing key: {0}")]
    SigningKey(String),
}

impl StorageError {
    pub fn into_api(self) -> ApiError {
        use StorageError as E;
        let (status, code) = match &self {
            E::Db(_) | E::Store(_) | E::SigningKey(_) => {
                tracing::error!(error = %self, "storage failed");
                return ApiError::internal();
            }
            E::InvalidBucketName(..) => (StatusCode::BAD_REQUEST, "invalid_bucket_name"),
            E::InvalidPath(..) => (StatusCode::BAD_REQUEST, "invalid_path"),
            E::BucketNotFound(_) => (StatusCode::NOT_FOUND, "bucket_not_found"),
            E::BucketExists(_) => (StatusCode::CONFLICT, "bucket_exists"),
            E::BucketNotEmpty(_) => (StatusCode::CONFLICT, "bucket_not_empty"),
            E::ObjectNotFound(_) => (StatusCode::NOT_FOUND, "object_not_found"),
            E::ObjectExists(_) => (StatusCode::CONFLICT, "object_exists"),
            E::Denied(_) => (StatusCode::FORBIDDEN, "42501"),
            E::ServiceOnly(_) => (StatusCode::FORBIDDEN, "not_admin"),
            E::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            E::MimeNotAllowed(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_mime_type"),
            E::ChecksumMismatch(_) => (StatusCode::BAD_REQUEST, "checksum_mismatch"),
            E::Interrupted(_) => (StatusCode::BAD_REQUEST, "upload_interrupted"),
            E::UploadNotFound(_) => (StatusCode::NOT_FOUND, "upload_not_found"),
            E::OffsetMismatch { .. } => (StatusCode::CONFLICT, "offset_mismatch"),
            E::BadSignature => (StatusCode::FORBIDDEN, "invalid_signature"),
            E::SignatureExpired => (StatusCode::FORBIDDEN, "signature_expired"),
            E::RangeNotSatisfiable { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "invalid_range"),
            E::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        };
        let hint = match &self {
            E::InvalidBucketName(..) => Some("e.g. `avatars` or `team-files`"),
            E::InvalidPath(..) => Some("use a relative path such as `folder/file.png`"),
            E::BucketNotFound(_) => Some("`GET /storage/v1/bucket` lists the buckets you can see"),
            E::BucketNotEmpty(_) => Some("empty it first: `POST /storage/v1/bucket/<id>/empty`"),
            E::ObjectExists(_) => Some("send `x-upsert: true` to replace it"),
            E::Denied(_) => Some(
                "row-level security policies on storage.objects decide who may read, write or delete; sign in, switch to the right org, or change the policies in a migration",
            ),
            E::ServiceOnly(_) => Some("use an rk_svc_… key, from servers only"),
            E::TooLarge { .. } => Some(
                "raise the bucket's file_size_limit, or use a resumable upload for large files",
            ),
            E::MimeNotAllowed(_) => Some("the bucket's allowed_mime_types lists what it takes"),
            E::ChecksumMismatch(_) => Some("nothing was stored; send the upload again"),
            E::BadSignature => Some("ask for a new signed URL; tokens cannot be edited"),
            E::OffsetMismatch { .. } => {
                Some("send a HEAD for the upload's Upload-Offset and continue from there")
            }
            E::UploadNotFound(_) => Some("create a new upload"),
            E::SignatureExpired => Some("ask for a new signed URL with a longer expiresIn"),
            _ => None,
        };
        let e = ApiError::new(status, code, self.to_string());
        match hint {
            Some(h) => e.with_hint(h),
            None => e,
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        e.into_api()
    }
}

/// A new bucket, as `POST /storage/v1/bucket` takes it (Supabase's shape; `id` or `name`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NewBucket {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub file_size_limit: Option<SizeLimit>,
    #[serde(default)]
    pub allowed_mime_types: Option<Vec<String>>,
    /// The organization whose members share the bucket.
    #[serde(default)]
    pub org_id: Option<String>,
}

/// Changes to a bucket (`PUT /storage/v1/bucket/<id>`); absent fields stay, `null` clears.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BucketPatch {
    #[serde(default)]
    pub public: Option<bool>,
    #[serde(default, deserialize_with = "some")]
    pub file_size_limit: Option<Option<SizeLimit>>,
    #[serde(default, deserialize_with = "some")]
    pub allowed_mime_types: Option<Option<Vec<String>>>,
}

fn some<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A size limit as Supabase takes it: a number of bytes or a string such as `"10MB"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SizeLimit {
    Bytes(u64),
    Text(String),
}

impl SizeLimit {
    pub fn bytes(&self) -> Result<u64, StorageError> {
        match self {
            SizeLimit::Bytes(n) => Ok(*n),
            SizeLimit::Text(t) => parse_size(t).ok_or_else(|| {
                StorageError::BadRequest(format!(
                    "`{t}` is not a size; write bytes as a number or e.g. \"10MB\""
                ))
            }),
        }
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// What an uploader says about the bytes it sends.
#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub upsert: bool,
    /// The declared length (`Content-Length`), refused early when over the limit.
    pub content_length: Option<u64>,
    /// `Content-MD5` (base64), verified when present.
    pub md5_base64: Option<String>,
    /// `x-checksum-sha256` (hex or base64), verified when present.
    pub sha256: Option<String>,
    /// User metadata kept with the object (`x-metadata`, JSON).
    pub metadata: Option<serde_json::Value>,
}

/// One listing request (`POST /storage/v1/object/list/<bucket>`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub offset: Option<usize>,
    #[serde(default, rename = "sortBy")]
    pub sort_by: Option<SortBy>,
    #[serde(default)]
    pub search: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SortBy {
    #[serde(default = "default_sort_column")]
    pub column: String,
    #[serde(default = "default_sort_order")]
    pub order: String,
}

fn default_sort_column() -> String {
    "name".into()
}

fn default_sort_order() -> String {
    "asc".into()
}

/// One entry of a listing: an object, or a folder (`id` null) holding objects deeper down.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ListEntry {
    pub name: String,
    pub id: Option<String>,
    pub updated_at: Option<String>,
    pub created_at: Option<String>,
    pub last_accessed_at: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

/// The Storage capability over one database and one object store.
#[derive(Clone)]
pub struct Storage {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: Db,
    pub(crate) store: Arc<dyn object_store::ObjectStore>,
    policies: Option<Arc<dyn Policies>>,
    signer: Signer,
    pub(crate) config: StorageConfig,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("store", &self.inner.store.to_string())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Storage {
    /// Applies the storage tables, opens the object store and reads (or makes) the signing
    /// key. `policies` is what O1 evaluates row-level security with; without it only the
    /// service key may touch objects on SQLite (fail closed).
    pub async fn start(
        db: Db,
        config: StorageConfig,
        master_key: Option<&reactor_core::seal::MasterKey>,
        policies: Option<Arc<dyn Policies>>,
    ) -> Result<Storage, StorageError> {
        meta::prepare(&db).await?;
        let store = blob::open(&config.backend)?;
        let key = meta::signing_key(&db, master_key).await?;
        Ok(Storage {
            inner: Arc::new(Inner {
                db,
                store,
                policies,
                signer: Signer::new(key),
                config,
            }),
        })
    }

    pub fn config(&self) -> &StorageConfig {
        &self.inner.config
    }

    pub fn signer(&self) -> &Signer {
        &self.inner.signer
    }

    pub(crate) fn meta(&self, principal: &Principal) -> meta::Meta<'_> {
        meta::Meta {
            db: &self.inner.db,
            principal: principal.clone(),
            policies: self.inner.policies.as_deref(),
        }
    }

    pub(crate) fn system(&self) -> meta::Meta<'_> {
        meta::Meta::system(&self.inner.db)
    }

    // --- buckets -------------------------------------------------------------------------

    /// Buckets the caller can see: every bucket for the service key; public buckets and the
    /// active org's buckets for everyone else.
    pub async fn list_buckets(&self, principal: &Principal) -> Result<Vec<Bucket>, StorageError> {
        let all = self.system().buckets().await?;
        Ok(all
            .into_iter()
            .filter(|b| b.visible_to(principal))
            .collect())
    }

    pub async fn bucket(&self, principal: &Principal, id: &str) -> Result<Bucket, StorageError> {
        path::bucket_id(id)?;
        match self.system().bucket(id).await? {
            Some(b) if b.visible_to(principal) => Ok(b),
            _ => Err(StorageError::BucketNotFound(id.to_string())),
        }
    }

    pub async fn create_bucket(
        &self,
        principal: &Principal,
        new: NewBucket,
    ) -> Result<Bucket, StorageError> {
        if !principal.is_service() {
            return Err(StorageError::ServiceOnly("creating a bucket"));
        }
        let id = new
            .id
            .or(new.name)
            .ok_or_else(|| StorageError::BadRequest("a bucket needs an `id` (or `name`)".into()))?;
        path::bucket_id(&id)?;
        if let Some(org) = &new.org_id {
            uuid::Uuid::parse_str(org)
                .map_err(|_| StorageError::BadRequest(format!("org_id `{org}` is not a UUID")))?;
        }
        let bucket = Bucket {
            id,
            public: new.public,
            file_size_limit: new.file_size_limit.map(|l| l.bytes()).transpose()?,
            allowed_mime_types: check_mime_patterns(new.allowed_mime_types)?,
            org_id: new.org_id,
            owner_id: principal.user_id.clone(),
            created_at: String::new(),
            updated_at: String::new(),
        };
        self.system().insert_bucket(&bucket).await?;
        self.bucket(principal, &bucket.id).await
    }

    pub async fn update_bucket(
        &self,
        principal: &Principal,
        id: &str,
        patch: BucketPatch,
    ) -> Result<Bucket, StorageError> {
        if !principal.is_service() {
            return Err(StorageError::ServiceOnly("changing a bucket"));
        }
        let mut bucket = self.bucket(principal, id).await?;
        if let Some(public) = patch.public {
            bucket.public = public;
        }
        if let Some(limit) = patch.file_size_limit {
            bucket.file_size_limit = limit.map(|l| l.bytes()).transpose()?;
        }
        if let Some(types) = patch.allowed_mime_types {
            bucket.allowed_mime_types = check_mime_patterns(types)?;
        }
        self.system().update_bucket(&bucket).await?;
        self.bucket(principal, id).await
    }

    /// Deletes every object of the bucket (service key only); returns how many.
    pub async fn empty_bucket(&self, principal: &Principal, id: &str) -> Result<u64, StorageError> {
        if !principal.is_service() {
            return Err(StorageError::ServiceOnly("emptying a bucket"));
        }
        self.bucket(principal, id).await?;
        let blobs = self.system().empty_bucket(id).await?;
        let n = blobs.len() as u64;
        self.reclaim(blobs).await;
        Ok(n)
    }

    /// Deletes an empty bucket (service key only); a bucket holding objects is refused.
    pub async fn delete_bucket(&self, principal: &Principal, id: &str) -> Result<(), StorageError> {
        if !principal.is_service() {
            return Err(StorageError::ServiceOnly("deleting a bucket"));
        }
        self.bucket(principal, id).await?;
        self.system().delete_bucket(id).await
    }

    // --- objects -------------------------------------------------------------------------

    /// Stores `body` as `bucket`/`name` for the caller. Everything that can be decided before
    /// the bytes arrive (bucket, path, declared size, type, policies, an existing object
    /// without upsert) is checked first, so a refused upload is refused before it is sent.
    pub async fn upload(
        &self,
        principal: &Principal,
        bucket_id: &str,
        name: &str,
        options: UploadOptions,
        body: UploadBody,
    ) -> Result<ObjectRow, StorageError> {
        let bucket = self.bucket_for_write(principal, bucket_id).await?;
        self.upload_into(
            self.meta(principal),
            &bucket,
            name,
            options,
            body,
            principal.user_id.clone(),
        )
        .await
    }

    /// An upload through a signed upload URL: the grant stands for its signer.
    pub async fn upload_signed(
        &self,
        grant: &Grant,
        mut options: UploadOptions,
        body: UploadBody,
    ) -> Result<ObjectRow, StorageError> {
        let bucket = self
            .system()
            .bucket(&grant.bucket)
            .await?
            .ok_or_else(|| StorageError::BucketNotFound(grant.bucket.clone()))?;
        options.upsert = grant.upsert;
        self.upload_into(
            self.system(),
            &bucket,
            &grant.path,
            options,
            body,
            grant.owner.clone(),
        )
        .await
    }

    pub(crate) async fn bucket_for_write(
        &self,
        principal: &Principal,
        bucket_id: &str,
    ) -> Result<Bucket, StorageError> {
        path::bucket_id(bucket_id)?;
        let bucket = self
            .system()
            .bucket(bucket_id)
            .await?
            .ok_or_else(|| StorageError::BucketNotFound(bucket_id.to_string()))?;
        // A bucket the caller cannot see does not exist for them; policies decide the rest.
        if !bucket.visible_to(principal) {
            return Err(StorageError::BucketNotFound(bucket_id.to_string()));
        }
        Ok(bucket)
    }

    async fn upload_into(
        &self,
        meta: meta::Meta<'_>,
        bucket: &Bucket,
        name: &str,
        options: UploadOptions,
        body: UploadBody,
        owner: Option<String>,
    ) -> Result<ObjectRow, StorageError> {
        path::object_path(name)?;
        let limit = self.limit_for(bucket);
        if options.content_length.is_some_and(|n| n > limit) {
            return Err(StorageError::TooLarge { limit });
        }
        let mime = blob::content_type(options.content_type.as_deref(), name);
        if !bucket.allows_mime(&mime) {
            return Err(StorageError::MimeNotAllowed(mime));
        }
        let blob = format!("{}/{}", bucket.id, uuid::Uuid::new_v4());
        let mut row = self.new_row(bucket, name, mime, owner);
        row.blob = blob.clone();
        row.metadata = options
            .metadata
            .clone()
            .unwrap_or_else(|| serde_json::json!({}));
        row.cache_control = options.cache_control.clone();
        meta.may_write(&row, options.upsert).await?;
        // From here the bytes may exist before their row: recorded, so a crash leaves a
        // pending entry the sweep removes, never an orphan.
        self.system()
            .pending_add(&blob, meta::Pending::Upload)
            .await?;
        let written = blob::write(
            self.inner.store.as_ref(),
            &blob,
            body,
            limit,
            &options,
            false,
        )
        .await;
        let written = match written {
            Ok(w) => w,
            Err(e) => {
                self.reclaim(vec![blob]).await;
                return Err(e);
            }
        };
        row.size = written.size as i64;
        row.sha256 = written.sha256;
        self.commit_or_reclaim(&meta, &row, options.upsert, Vec::new())
            .await
    }

    /// Commits `row`, whose bytes are stored at `row.blob`, then removes what is no longer
    /// pointed to: the bytes it replaced and `spent` when it commits; its own bytes and
    /// `spent` when it does not.
    pub(crate) async fn commit_or_reclaim(
        &self,
        meta: &meta::Meta<'_>,
        row: &ObjectRow,
        upsert: bool,
        mut spent: Vec<String>,
    ) -> Result<ObjectRow, StorageError> {
        let committed = meta.commit(row, upsert).await;
        match committed {
            Ok((stored, replaced)) => {
                spent.extend(replaced);
                self.reclaim(spent).await;
                Ok(stored)
            }
            Err(e) => {
                spent.push(row.blob.clone());
                self.reclaim(spent).await;
                Err(e)
            }
        }
    }

    /// The object's row when the caller may read it.
    pub async fn info(
        &self,
        principal: &Principal,
        bucket_id: &str,
        name: &str,
    ) -> Result<ObjectRow, StorageError> {
        path::bucket_id(bucket_id)?;
        path::object_path(name)?;
        self.meta(principal)
            .find(bucket_id, name)
            .await?
            .ok_or_else(|| StorageError::ObjectNotFound(name.to_string()))
    }

    /// The object of a public bucket, for anyone.
    pub async fn public_info(
        &self,
        bucket_id: &str,
        name: &str,
    ) -> Result<ObjectRow, StorageError> {
        path::bucket_id(bucket_id)?;
        path::object_path(name)?;
        match self.system().bucket(bucket_id).await? {
            Some(b) if b.public => {}
            // A private bucket's objects are not found here, whether or not they exist.
            _ => return Err(StorageError::BucketNotFound(bucket_id.to_string())),
        }
        self.system()
            .find(bucket_id, name)
            .await?
            .ok_or_else(|| StorageError::ObjectNotFound(name.to_string()))
    }

    /// The object a signed download token names, whoever presents it.
    pub async fn signed_info(
        &self,
        bucket_id: &str,
        name: &str,
        token: &str,
    ) -> Result<ObjectRow, StorageError> {
        self.inner
            .signer
            .verify(token, Op::Download, bucket_id, name, now_secs())?;
        self.system()
            .find(bucket_id, name)
            .await?
            .ok_or_else(|| StorageError::ObjectNotFound(name.to_string()))
    }

    /// The object's bytes, or a range of them, streamed from the store.
    pub async fn download(
        &self,
        row: &ObjectRow,
        range: Option<ByteRange>,
    ) -> Result<Download, StorageError> {
        blob::read(self.inner.store.clone(), row, range).await
    }

    /// Deletes the named objects the caller may delete; returns those deleted.
    pub async fn remove(
        &self,
        principal: &Principal,
        bucket_id: &str,
        names: &[String],
    ) -> Result<Vec<ObjectRow>, StorageError> {
        path::bucket_id(bucket_id)?;
        for n in names {
            path::object_path(n)?;
        }
        let removed = self.meta(principal).remove(bucket_id, names).await?;
        self.reclaim(removed.iter().map(|r| r.blob.clone()).collect())
            .await;
        Ok(removed)
    }

    /// Folders and objects directly under `query.prefix`, as Supabase lists them.
    pub async fn list(
        &self,
        principal: &Principal,
        bucket_id: &str,
        query: ListQuery,
    ) -> Result<Vec<ListEntry>, StorageError> {
        self.bucket_for_write(principal, bucket_id).await?;
        path::prefix(&query.prefix)?;
        let rows = self.meta(principal).list(bucket_id, &query.prefix).await?;
        Ok(meta::entries(rows, &query))
    }

    /// Renames an object (metadata only: its bytes stay where they are).
    pub async fn move_object(
        &self,
        principal: &Principal,
        bucket_id: &str,
        from: &str,
        to_bucket: &str,
        to: &str,
    ) -> Result<ObjectRow, StorageError> {
        path::bucket_id(bucket_id)?;
        path::object_path(from)?;
        let dest = self.bucket_for_write(principal, to_bucket).await?;
        path::object_path(to)?;
        self.meta(principal)
            .rename(bucket_id, from, &dest, to)
            .await
    }

    /// Copies an object the caller may read to a new path the caller may write.
    pub async fn copy_object(
        &self,
        principal: &Principal,
        bucket_id: &str,
        from: &str,
        to_bucket: &str,
        to: &str,
        upsert: bool,
    ) -> Result<ObjectRow, StorageError> {
        let source = self.info(principal, bucket_id, from).await?;
        let dest = self.bucket_for_write(principal, to_bucket).await?;
        path::object_path(to)?;
        if !dest.allows_mime(&source.mime_type) {
            return Err(StorageError::MimeNotAllowed(source.mime_type));
        }
        if dest.file_size_limit.is_some_and(|l| source.size as u64 > l) {
            return Err(StorageError::TooLarge {
                limit: dest.file_size_limit.unwrap_or_default(),
            });
        }
        let blob = format!("{}/{}", dest.id, uuid::Uuid::new_v4());
        let row = ObjectRow {
            id: uuid::Uuid::new_v4().to_string(),
            bucket_id: dest.id.clone(),
            name: to.to_string(),
            owner_id: principal.user_id.clone(),
            org_id: dest.org_id.clone(),
            blob: blob.clone(),
            created_at: String::new(),
            updated_at: String::new(),
            ..source.clone()
        };
        let meta = self.meta(principal);
        meta.may_write(&row, upsert).await?;
        self.system()
            .pending_add(&blob, meta::Pending::Upload)
            .await?;
        if let Err(e) = blob::copy(self.inner.store.as_ref(), &source.blob, &blob).await {
            self.reclaim(vec![blob]).await;
            return Err(e);
        }
        self.commit_or_reclaim(&meta, &row, upsert, Vec::new())
            .await
    }

    /// A token for downloading an object the caller may read, valid `expires_in` seconds.
    pub async fn sign_download(
        &self,
        principal: &Principal,
        bucket_id: &str,
        name: &str,
        expires_in: i64,
    ) -> Result<String, StorageError> {
        if expires_in <= 0 {
            return Err(StorageError::BadRequest(
                "expiresIn must be a positive number of seconds".into(),
            ));
        }
        self.info(principal, bucket_id, name).await?;
        Ok(self.inner.signer.sign(&Grant {
            op: Op::Download,
            bucket: bucket_id.to_string(),
            path: name.to_string(),
            exp: now_secs().saturating_add(expires_in),
            owner: None,
            org: None,
            upsert: false,
        }))
    }

    /// A token for uploading one object as the caller, valid two hours (Supabase's span);
    /// the caller's right to write it is checked now.
    pub async fn sign_upload(
        &self,
        principal: &Principal,
        bucket_id: &str,
        name: &str,
        upsert: bool,
    ) -> Result<String, StorageError> {
        let bucket = self.bucket_for_write(principal, bucket_id).await?;
        path::object_path(name)?;
        let probe = self.new_row(
            &bucket,
            name,
            "application/octet-stream".into(),
            principal.user_id.clone(),
        );
        self.meta(principal).may_write(&probe, upsert).await?;
        Ok(self.inner.signer.sign(&Grant {
            op: Op::Upload,
            bucket: bucket.id,
            path: name.to_string(),
            exp: now_secs() + 2 * 3600,
            owner: principal.user_id.clone(),
            org: principal.org_id.clone(),
            upsert,
        }))
    }

    /// Removes bytes no committed row points to: deleted and replaced objects' bytes at once,
    /// uploads never committed once they are older than `abandon_uploads_after`. Runs after
    /// every delete and periodically ([`Storage::run_sweeper`]); safe on every replica at once.
    pub async fn sweep(&self) -> Result<usize, StorageError> {
        for gone in tus::expire(&self.inner.db).await? {
            for chunk in gone.chunks {
                self.system()
                    .pending_add(&chunk.key, meta::Pending::Delete)
                    .await?;
            }
        }
        let due = self
            .system()
            .pending_due(self.inner.config.abandon_uploads_after)
            .await?;
        let n = due.len();
        self.delete_blobs(due).await;
        Ok(n)
    }

    /// Sweeps every `every` until the process ends.
    pub async fn run_sweeper(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "storage sweep failed; retrying later");
            }
        }
    }

    /// Marks `blobs` for deletion and deletes them now; whatever fails here stays pending for
    /// the sweep.
    pub(crate) async fn reclaim(&self, blobs: Vec<String>) {
        if blobs.is_empty() {
            return;
        }
        for b in &blobs {
            if let Err(e) = self.system().pending_add(b, meta::Pending::Delete).await {
                tracing::warn!(error = %e, blob = %b, "cannot record bytes to delete");
            }
        }
        self.delete_blobs(blobs).await;
    }

    async fn delete_blobs(&self, blobs: Vec<String>) {
        for b in blobs {
            match blob::delete(self.inner.store.as_ref(), &b).await {
                Ok(()) => {
                    if let Err(e) = self.system().pending_done(&b).await {
                        tracing::warn!(error = %e, blob = %b, "cannot clear a deleted blob's record");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, blob = %b, "cannot delete bytes; the sweep retries")
                }
            }
        }
    }
}

fn check_mime_patterns(types: Option<Vec<String>>) -> Result<Option<Vec<String>>, StorageError> {
    let Some(types) = types else {
        return Ok(None);
    };
    for t in &types {
        let ok = t.split_once('/').is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && !t.contains(char::is_whitespace)
        });
        if !ok {
            return Err(StorageError::BadRequest(format!(
                "`{t}` is not a MIME type or pattern such as `image/png` or `image/*`"
            )));
        }
    }
    Ok(if types.is_empty() { None } else { Some(types) })
}

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MB"), Some(10 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("1 GB"), Some(1 << 30));
        assert_eq!(parse_size("2kb"), Some(2048));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("5XB"), None);
    }

    #[test]
    fn mime_patterns() {
        assert!(check_mime_patterns(Some(vec!["image/*".into(), "text/plain".into()])).is_ok());
        assert!(check_mime_patterns(Some(vec!["image".into()])).is_err());
        assert_eq!(check_mime_patterns(Some(vec![])).ok(), Some(None));
    }
}
