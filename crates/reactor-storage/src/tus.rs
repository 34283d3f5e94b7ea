//! Resumable uploads, the TUS 1.0 protocol (what Supabase Storage and `tus-js-client` speak):
//! create an upload of a declared length, send its bytes in one or more `PATCH`es from the
//! offset the server reports, pick up after a dropped connection from that offset.
//!
//! The upload's state is a row (`storage.uploads` / `_reactor_storage_uploads`), so any
//! replica can take the next `PATCH`. Each `PATCH` streams into a chunk of its own in the
//! object store (kept even when the connection drops: the client resumes after the bytes that
//! arrived) and then moves the row's offset with a compare-and-set, so two racing `PATCH`es
//! cannot both land. When the last byte arrives the chunks become the object — directly when
//! there is one, else concatenated into one blob — and the object's row is committed as the
//! caller, under the same policies as any upload. Chunks are pending bytes: an upload left
//! unfinished past its expiry is removed by the sweep.

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::meta::{ObjectRow, Pending};
use crate::{Storage, StorageError, UploadOptions, blob, now_secs, path, postgres, sqlite};
use reactor_core::Principal;
use reactor_db::Db;

/// One resumable upload in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub id: String,
    pub bucket_id: String,
    pub name: String,
    /// Who created it: only they (or the service key, for its own) may continue it.
    pub user_id: Option<String>,
    pub service: bool,
    pub length: u64,
    pub offset: u64,
    pub mime_type: String,
    pub cache_control: Option<String>,
    pub metadata: serde_json::Value,
    pub upsert: bool,
    pub chunks: Vec<Chunk>,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The bytes one `PATCH` brought, in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

/// What creating an upload declares (`Upload-Length`, `Upload-Metadata`, `x-upsert`).
#[derive(Debug, Clone, Default)]
pub struct NewUpload {
    pub bucket_id: String,
    pub name: String,
    pub length: u64,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub upsert: bool,
}

/// The answer to a `PATCH`: where the upload stands, and the object once it is complete.
#[derive(Debug)]
pub struct Patched {
    pub upload: Upload,
    pub object: Option<ObjectRow>,
    /// The connection dropped: the bytes that arrived are kept.
    pub interrupted: bool,
}

impl Upload {
    fn belongs_to(&self, principal: &Principal) -> bool {
        if principal.is_service() {
            return self.service && self.user_id == principal.user_id;
        }
        !self.service && self.user_id.is_some() && self.user_id == principal.user_id
    }
}

async fn insert(db: &Db, u: &Upload) -> Result<(), StorageError> {
    match db {
        Db::Sqlite(p) => sqlite::insert_upload(p, u).await,
        Db::Postgres(p) => postgres::insert_upload(p, u).await,
    }
}

async fn find(db: &Db, id: &str) -> Result<Option<Upload>, StorageError> {
    match db {
        Db::Sqlite(p) => sqlite::find_upload(p, id).await,
        Db::Postgres(p) => postgres::find_upload(p, id).await,
    }
}

async fn advance(
    db: &Db,
    id: &str,
    from: u64,
    to: u64,
    chunks: &[Chunk],
) -> Result<bool, StorageError> {
    match db {
        Db::Sqlite(p) => sqlite::advance_upload(p, id, from, to, chunks).await,
        Db::Postgres(p) => postgres::advance_upload(p, id, from, to, chunks).await,
    }
}

async fn remove(db: &Db, id: &str) -> Result<(), StorageError> {
    match db {
        Db::Sqlite(p) => sqlite::delete_upload(p, id).await,
        Db::Postgres(p) => postgres::delete_upload(p, id).await,
    }
}

pub(crate) async fn expire(db: &Db) -> Result<Vec<Upload>, StorageError> {
    match db {
        Db::Sqlite(p) => sqlite::expire_uploads(p, now_secs()).await,
        Db::Postgres(p) => postgres::expire_uploads(p, now_secs()).await,
    }
}

impl Storage {
    /// Starts a resumable upload. Everything but the bytes is checked now — bucket, path,
    /// declared length against the limits, type, and the policies for the caller — so a
    /// refused upload is refused before any byte is sent.
    pub async fn tus_create(
        &self,
        principal: &Principal,
        new: NewUpload,
    ) -> Result<Upload, StorageError> {
        let bucket = self.bucket_for_write(principal, &new.bucket_id).await?;
        path::object_path(&new.name)?;
        let limit = self.limit_for(&bucket);
        if new.length > limit {
            return Err(StorageError::TooLarge { limit });
        }
        let mime = blob::content_type(new.content_type.as_deref(), &new.name);
        if !bucket.allows_mime(&mime) {
            return Err(StorageError::MimeNotAllowed(mime));
        }
        let probe = self.new_row(&bucket, &new.name, mime.clone(), principal.user_id.clone());
        self.meta(principal).may_write(&probe, new.upsert).await?;
        let upload = Upload {
            id: uuid::Uuid::new_v4().to_string(),
            bucket_id: bucket.id,
            name: new.name,
            user_id: principal.user_id.clone(),
            service: principal.is_service(),
            length: new.length,
            offset: 0,
            mime_type: mime,
            cache_control: new.cache_control,
            metadata: new.metadata.unwrap_or_else(|| serde_json::json!({})),
            upsert: new.upsert,
            chunks: Vec::new(),
            expires_at: now_secs() + self.inner.config.abandon_uploads_after.as_secs() as i64,
        };
        insert(&self.inner.db, &upload).await?;
        Ok(upload)
    }

    /// The caller's upload `id` (`HEAD`): others' uploads and expired ones are not found.
    pub async fn tus_state(&self, principal: &Principal, id: &str) -> Result<Upload, StorageError> {
        match find(&self.inner.db, id).await? {
            Some(u) if u.belongs_to(principal) && u.expires_at >= now_secs() => Ok(u),
            _ => Err(StorageError::UploadNotFound(id.to_string())),
        }
    }

    /// Appends `body` at `offset` (`PATCH`), which must be where the upload stands.
    pub async fn tus_patch(
        &self,
        principal: &Principal,
        id: &str,
        offset: u64,
        body: crate::UploadBody,
    ) -> Result<Patched, StorageError> {
        let upload = self.tus_state(principal, id).await?;
        if offset != upload.offset {
            return Err(StorageError::OffsetMismatch {
                expected: upload.offset,
            });
        }
        let store = self.inner.store.as_ref();
        let key = format!(
            "{}/_uploads/{}/{}",
            upload.bucket_id,
            upload.id,
            uuid::Uuid::new_v4()
        );
        self.system().pending_add(&key, Pending::Upload).await?;
        let remaining = upload.length - upload.offset;
        let written = match blob::write(
            store,
            &key,
            body,
            remaining,
            &UploadOptions::default(),
            true,
        )
        .await
        {
            Ok(w) if w.size > 0 => w,
            Ok(_) => {
                self.reclaim(vec![key]).await;
                return Ok(Patched {
                    upload,
                    object: None,
                    interrupted: false,
                });
            }
            Err(e) => {
                self.reclaim(vec![key]).await;
                return Err(e);
            }
        };
        let mut chunks = upload.chunks.clone();
        chunks.push(Chunk {
            key: key.clone(),
            size: written.size,
            sha256: written.sha256,
        });
        let to = upload.offset + written.size;
        if !advance(&self.inner.db, id, upload.offset, to, &chunks).await? {
            // Another PATCH moved it first; these bytes are not part of it.
            self.reclaim(vec![key]).await;
            let now = self.tus_state(principal, id).await?;
            return Err(StorageError::OffsetMismatch {
                expected: now.offset,
            });
        }
        let upload = Upload {
            offset: to,
            chunks,
            ..upload
        };
        let object = if to == upload.length {
            Some(self.tus_finish(principal, &upload).await?)
        } else {
            None
        };
        Ok(Patched {
            upload,
            object,
            interrupted: written.interrupted,
        })
    }

    /// The last byte arrived: the chunks become the object, committed as the caller.
    async fn tus_finish(
        &self,
        principal: &Principal,
        upload: &Upload,
    ) -> Result<ObjectRow, StorageError> {
        let bucket = self
            .system()
            .bucket(&upload.bucket_id)
            .await?
            .ok_or_else(|| StorageError::BucketNotFound(upload.bucket_id.clone()))?;
        let (blob, sha256, leftovers) = match upload.chunks.as_slice() {
            [one] => (one.key.clone(), one.sha256.clone(), Vec::new()),
            chunks => {
                let blob = format!("{}/{}", bucket.id, uuid::Uuid::new_v4());
                self.system().pending_add(&blob, Pending::Upload).await?;
                let store = self.inner.store.clone();
                let keys: Vec<String> = chunks.iter().map(|c| c.key.clone()).collect();
                let parts = futures_util::stream::iter(keys)
                    .then(move |k| {
                        let store = store.clone();
                        async move { blob::stream(store.as_ref(), &k).await }
                    })
                    .map(|s| match s {
                        Ok(s) => s,
                        Err(e) => {
                            futures_util::stream::once(async move { Err(std::io::Error::other(e)) })
                                .boxed()
                        }
                    })
                    .flatten()
                    .boxed();
                let written = blob::write(
                    self.inner.store.as_ref(),
                    &blob,
                    parts,
                    upload.length,
                    &UploadOptions::default(),
                    false,
                )
                .await?;
                (
                    blob,
                    written.sha256,
                    chunks.iter().map(|c| c.key.clone()).collect(),
                )
            }
        };
        let mut row = self.new_row(
            &bucket,
            &upload.name,
            upload.mime_type.clone(),
            upload.user_id.clone(),
        );
        row.blob = blob.clone();
        row.size = upload.length as i64;
        row.sha256 = sha256;
        row.metadata = upload.metadata.clone();
        row.cache_control = upload.cache_control.clone();
        let committed = self
            .commit_or_reclaim(&self.meta(principal), &row, upload.upsert, leftovers)
            .await;
        remove(&self.inner.db, &upload.id).await?;
        committed
    }

    /// Abandons the caller's upload (`DELETE`) and its bytes.
    pub async fn tus_delete(&self, principal: &Principal, id: &str) -> Result<(), StorageError> {
        let upload = self.tus_state(principal, id).await?;
        remove(&self.inner.db, id).await?;
        self.reclaim(upload.chunks.into_iter().map(|c| c.key).collect())
            .await;
        Ok(())
    }
}

impl Storage {
    pub(crate) fn limit_for(&self, bucket: &crate::Bucket) -> u64 {
        bucket
            .file_size_limit
            .map_or(self.inner.config.max_upload_bytes, |l| {
                l.min(self.inner.config.max_upload_bytes)
            })
    }

    /// A row for a new object of `bucket` at `name`, before its bytes are known.
    pub(crate) fn new_row(
        &self,
        bucket: &crate::Bucket,
        name: &str,
        mime_type: String,
        owner: Option<String>,
    ) -> ObjectRow {
        ObjectRow {
            id: uuid::Uuid::new_v4().to_string(),
            bucket_id: bucket.id.clone(),
            name: name.to_string(),
            owner_id: owner,
            org_id: bucket.org_id.clone(),
            size: 0,
            mime_type,
            sha256: String::new(),
            blob: String::new(),
            metadata: serde_json::json!({}),
            cache_control: None,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }
}
