//! The metadata side: bucket and object rows, read and written as the caller, through the
//! adapter of the database the server runs on (`sqlite.rs`, `postgres.rs`, functions of the
//! same names). On Postgres the caller's role and `reactor.*` settings make real row-level
//! security apply; on SQLite the [`Policies`] predicates are added to every statement, and
//! written rows are checked against the `WITH CHECK` side before the write is kept.

use std::time::Duration;

use reactor_core::{KeyTier, Principal};
use reactor_db::Db;
use serde::Serialize;

use crate::{Command, ListEntry, ListQuery, Policies, StorageError, postgres, sqlite};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub id: String,
    pub public: bool,
    pub file_size_limit: Option<u64>,
    pub allowed_mime_types: Option<Vec<String>>,
    /// The organization whose members share the bucket.
    pub org_id: Option<String>,
    /// Who created it (a user, when a user's token came with the service key).
    pub owner_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Bucket {
    /// Every bucket but another organization's is visible (its settings, not its objects:
    /// policies decide those). The service key sees all.
    pub fn visible_to(&self, principal: &Principal) -> bool {
        principal.is_service()
            || self.public
            || self.org_id.is_none()
            || self.org_id == principal.org_id
    }

    /// `allowed_mime_types` entries are exact (`image/png`) or a family (`image/*`).
    pub fn allows_mime(&self, mime: &str) -> bool {
        let Some(allowed) = &self.allowed_mime_types else {
            return true;
        };
        let essence = mime
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        allowed.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            match pattern.strip_suffix("/*") {
                Some(family) => essence.split_once('/').is_some_and(|(f, _)| f == family),
                None => pattern == "*/*" || pattern == essence,
            }
        })
    }
}

/// An object's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectRow {
    pub id: String,
    pub bucket_id: String,
    pub name: String,
    pub owner_id: Option<String>,
    pub org_id: Option<String>,
    pub size: i64,
    pub mime_type: String,
    pub sha256: String,
    /// Where the bytes are in the object store; never shown to callers.
    #[serde(skip)]
    pub blob: String,
    pub metadata: serde_json::Value,
    pub cache_control: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl ObjectRow {
    /// The strong validator sent as `ETag`.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.sha256)
    }

    /// Supabase's `metadata` object of a listing entry.
    pub fn listing_metadata(&self) -> serde_json::Value {
        serde_json::json!({
            "eTag": self.etag(),
            "size": self.size,
            "mimetype": self.mime_type,
            "cacheControl": self.cache_control.clone().unwrap_or_else(|| "no-cache".into()),
            "lastModified": self.updated_at,
            "contentLength": self.size,
            "httpStatusCode": 200,
        })
    }
}

/// Why bytes are recorded in the pending table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// Being uploaded: removed when abandoned (no row points to them after the expiry).
    Upload,
    /// No longer pointed to: removed at once.
    Delete,
}

impl Pending {
    pub fn name(self) -> &'static str {
        match self {
            Pending::Upload => "upload",
            Pending::Delete => "delete",
        }
    }
}

/// Predicates standing for row-level security on O1, for one caller and command.
#[derive(Debug, Clone)]
pub struct Preds {
    pub using: String,
    pub check: String,
}

/// The metadata as one caller sees it.
#[derive(Debug, Clone)]
pub struct Meta<'a> {
    pub db: &'a Db,
    pub principal: Principal,
    pub policies: Option<&'a dyn Policies>,
}

impl<'a> Meta<'a> {
    /// The server itself (bypasses row-level security): bucket management, public and
    /// signed access after their own checks, the pending table.
    pub fn system(db: &'a Db) -> Meta<'a> {
        Meta {
            db,
            principal: Principal::from_key("storage", KeyTier::Service),
            policies: None,
        }
    }

    /// The O1 predicates for `command`; `None` for the service key (it bypasses, as on
    /// Postgres). Without a policy source every other caller is refused (fail closed).
    pub fn preds(&self, command: Command) -> Option<Preds> {
        let role = self.principal.db_role();
        if role == reactor_core::DbRole::Service {
            return None;
        }
        Some(match self.policies {
            Some(p) => Preds {
                using: p.predicate(role, command, false),
                check: p.predicate(role, command, true),
            },
            None => Preds {
                using: "0".into(),
                check: "0".into(),
            },
        })
    }

    pub async fn buckets(&self) -> Result<Vec<Bucket>, StorageError> {
        match self.db {
            Db::Sqlite(p) => sqlite::buckets(p).await,
            Db::Postgres(p) => postgres::buckets(p).await,
        }
    }

    /// One bucket by its id: every object request looks its bucket up, so by key, not by
    /// reading them all.
    pub async fn bucket(&self, id: &str) -> Result<Option<Bucket>, StorageError> {
        match self.db {
            Db::Sqlite(p) => sqlite::find_bucket(p, id).await,
            Db::Postgres(p) => postgres::find_bucket(p, id).await,
        }
    }

    pub async fn insert_bucket(&self, bucket: &Bucket) -> Result<(), StorageError> {
        match self.db {
            Db::Sqlite(p) => sqlite::insert_bucket(p, bucket).await,
            Db::Postgres(p) => postgres::insert_bucket(p, bucket).await,
        }
    }

    pub async fn update_bucket(&self, bucket: &Bucket) -> Result<(), StorageError> {
        match self.db {
            Db::Sqlite(p) => sqlite::update_bucket(p, bucket).await,
            Db::Postgres(p) => postgres::update_bucket(p, bucket).await,
        }
    }

    /// Deletes every object row of the bucket and records their bytes for deletion, in one
    /// transaction; returns the bytes' keys.
    pub async fn empty_bucket(&self, id: &str) -> Result<Vec<String>, StorageError> {
        match self.db {
            Db::Sqlite(p) => sqlite::empty_bucket(p, id).await,
            Db::Postgres(p) => postgres::empty_bucket(p, id).await,
        }
    }

    pub async fn delete_bucket(&self, id: &str) -> Result<(), StorageError> {
        match self.db {
            Db::Sqlite(p) => sqlite::delete_bucket(p, id).await,
            Db::Postgres(p) => postgres::delete_bucket(p, id).await,
        }
    }

    /// The row, when the caller may select it.
    pub async fn find(&self, bucket: &str, name: &str) -> Result<Option<ObjectRow>, StorageError> {
        match self.db {
            Db::Sqlite(p) => {
                sqlite::find(
                    p,
                    &self.principal,
                    self.preds(Command::Select),
                    bucket,
                    name,
                )
                .await
            }
            Db::Postgres(p) => postgres::find(p, &self.principal, bucket, name).await,
        }
    }

    /// Rows under `prefix` the caller may select, by name.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectRow>, StorageError> {
        let pattern = format!("{}%", like_escape(prefix));
        match self.db {
            Db::Sqlite(p) => {
                sqlite::list(
                    p,
                    &self.principal,
                    self.preds(Command::Select),
                    bucket,
                    &pattern,
                )
                .await
            }
            Db::Postgres(p) => postgres::list(p, &self.principal, bucket, &pattern).await,
        }
    }

    /// Would `row` be accepted (inserted, or with `upsert` replacing an existing one)? Asked
    /// before the bytes are sent, and answered by the same rules the commit meets.
    pub async fn may_write(&self, row: &ObjectRow, upsert: bool) -> Result<(), StorageError> {
        match self.db {
            Db::Sqlite(p) => {
                sqlite::may_write(
                    p,
                    &self.principal,
                    self.preds(Command::Insert),
                    self.preds(Command::Update),
                    row,
                    upsert,
                )
                .await
            }
            Db::Postgres(p) => postgres::may_write(p, &self.principal, row, upsert).await,
        }
    }

    /// Makes `row` visible: inserts it (or replaces the row at its path with `upsert`),
    /// records replaced bytes for deletion and clears its own pending record. Returns the
    /// stored row and the key of the bytes it replaced.
    pub async fn commit(
        &self,
        row: &ObjectRow,
        upsert: bool,
    ) -> Result<(ObjectRow, Option<String>), StorageError> {
        match self.db {
            Db::Sqlite(p) => {
                sqlite::commit(
                    p,
                    &self.principal,
                    self.preds(Command::Insert),
                    self.preds(Command::Update),
                    row,
                    upsert,
                )
                .await
            }
            Db::Postgres(p) => postgres::commit(p, &self.principal, row, upsert).await,
        }
    }

    /// Deletes the rows the caller may delete among `names`; their bytes are recorded for
    /// deletion in the same transaction.
    pub async fn remove(
        &self,
        bucket: &str,
        names: &[String],
    ) -> Result<Vec<ObjectRow>, StorageError> {
        match self.db {
            Db::Sqlite(p) => {
                sqlite::remove(
                    p,
                    &self.principal,
                    self.preds(Command::Delete),
                    bucket,
                    names,
                )
                .await
            }
            Db::Postgres(p) => postgres::remove(p, &self.principal, bucket, names).await,
        }
    }

    /// Moves a row to `dest`/`to` (an update: the caller needs the update policies on both
    /// the old and the new row).
    pub async fn rename(
        &self,
        bucket: &str,
        from: &str,
        dest: &Bucket,
        to: &str,
    ) -> Result<ObjectRow, StorageError> {
        match self.db {
            Db::Sqlite(p) => {
                sqlite::rename(
                    p,
                    &self.principal,
                    self.preds(Command::Update),
                    bucket,
                    from,
                    dest,
                    to,
                )
                .await
            }
            Db::Postgres(p) => postgres::rename(p, &self.principal, bucket, from, dest, to).await,
        }
    }

    pub async fn pending_add(&self, blob: &str, kind: Pending) -> Result<(), StorageError> {
        match self.db {
            Db::Sqlite(p) => sqlite::pending_add(p, blob, kind).await,
            Db::Postgres(p) => postgres::pending_add(p, blob, kind).await,
        }
    }

    pub async fn pending_done(&self, blob: &str) -> Result<(), StorageError> {
        match self.db {
            Db::Sqlite(p) => sqlite::pending_done(p, blob).await,
            Db::Postgres(p) => postgres::pending_done(p, blob).await,
        }
    }

    /// Bytes to delete now: marked for deletion, or uploads older than `abandoned` that no
    /// row points to. Records of uploads whose row did commit are dropped on the way.
    pub async fn pending_due(&self, abandoned: Duration) -> Result<Vec<String>, StorageError> {
        let secs = abandoned.as_secs() as i64;
        match self.db {
            Db::Sqlite(p) => sqlite::pending_due(p, secs).await,
            Db::Postgres(p) => postgres::pending_due(p, secs).await,
        }
    }
}

pub async fn prepare(db: &Db) -> Result<(), StorageError> {
    Ok(db
        .apply_migrations("storage", sqlite::MIGRATIONS, postgres::MIGRATIONS)
        .await?)
}

/// The project's storage signing key: made once (the first replica to start wins the race),
/// stored sealed under the master key when there is one.
pub async fn signing_key(
    db: &Db,
    master: Option<&reactor_core::seal::MasterKey>,
) -> Result<[u8; 32], StorageError> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let fresh: [u8; 32] = rand_key();
    let stored_form = match master {
        Some(m) => m.seal(&fresh),
        None => STANDARD.encode(fresh),
    };
    let stored = match db {
        Db::Sqlite(p) => sqlite::signing_key(p, &stored_form).await?,
        Db::Postgres(p) => postgres::signing_key(p, &stored_form).await?,
    };
    let bytes = if reactor_core::seal::is_sealed(&stored) {
        let m = master.ok_or_else(|| {
            StorageError::SigningKey(
                "it is sealed under a master key and this server has none".into(),
            )
        })?;
        m.open(&stored)
            .map_err(|e| StorageError::SigningKey(e.to_string()))?
    } else {
        STANDARD
            .decode(stored.as_bytes())
            .map_err(|e| StorageError::SigningKey(e.to_string()))?
    };
    bytes
        .try_into()
        .map_err(|_| StorageError::SigningKey("it is not 32 bytes long".into()))
}

fn rand_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    key[..16].copy_from_slice(a.as_bytes());
    key[16..].copy_from_slice(b.as_bytes());
    key
}

/// `prefix` as a LIKE pattern's literal part (`\` escapes).
fn like_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A flat list of rows under a prefix as Supabase lists a folder: objects directly in it,
/// and one entry per sub-folder; then search, sort and the page.
pub fn entries(rows: Vec<ObjectRow>, query: &ListQuery) -> Vec<ListEntry> {
    let base = if query.prefix.is_empty() || query.prefix.ends_with('/') {
        query.prefix.clone()
    } else {
        format!("{}/", query.prefix)
    };
    let mut folders: Vec<String> = Vec::new();
    let mut out: Vec<ListEntry> = Vec::new();
    for row in rows {
        let Some(rest) = row.name.strip_prefix(&base) else {
            continue;
        };
        match rest.split_once('/') {
            Some((folder, _)) => {
                if folders.last().map(String::as_str) != Some(folder)
                    && !folders.iter().any(|f| f == folder)
                {
                    folders.push(folder.to_string());
                }
            }
            None => out.push(ListEntry {
                name: rest.to_string(),
                id: Some(row.id.clone()),
                updated_at: Some(row.updated_at.clone()),
                created_at: Some(row.created_at.clone()),
                last_accessed_at: Some(row.updated_at.clone()),
                metadata: Some(row.listing_metadata()),
            }),
        }
    }
    let mut all: Vec<ListEntry> = folders
        .into_iter()
        .map(|name| ListEntry {
            name,
            id: None,
            updated_at: None,
            created_at: None,
            last_accessed_at: None,
            metadata: None,
        })
        .chain(out)
        .collect();
    if let Some(search) = query.search.as_deref().filter(|s| !s.is_empty()) {
        let needle = search.to_lowercase();
        all.retain(|e| e.name.to_lowercase().contains(&needle));
    }
    let sort = query.sort_by.clone().unwrap_or(crate::SortBy {
        column: "name".into(),
        order: "asc".into(),
    });
    let key = |e: &ListEntry| -> String {
        match sort.column.as_str() {
            "created_at" => e.created_at.clone().unwrap_or_default(),
            "updated_at" | "last_accessed_at" => e.updated_at.clone().unwrap_or_default(),
            _ => e.name.clone(),
        }
    };
    // Folders first, as Supabase lists them, then the chosen order.
    all.sort_by(|a, b| {
        let folder_first = b.id.is_none().cmp(&a.id.is_none());
        let by_key = key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name));
        folder_first.then(if sort.order.eq_ignore_ascii_case("desc") {
            by_key.reverse()
        } else {
            by_key
        })
    });
    let offset = query.offset.unwrap_or(0);
    // At most a thousand entries an answer, as Supabase pages them.
    let limit = query.limit.unwrap_or(100).min(1000);
    all.into_iter().skip(offset).take(limit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str) -> ObjectRow {
        ObjectRow {
            id: format!("id-{name}"),
            bucket_id: "b".into(),
            name: name.into(),
            owner_id: None,
            org_id: None,
            size: 1,
            mime_type: "text/plain".into(),
            sha256: "00".into(),
            blob: String::new(),
            metadata: serde_json::json!({}),
            cache_control: None,
            created_at: format!("2026-01-01T00:00:00.000Z{name}"),
            updated_at: String::new(),
        }
    }

    #[test]
    fn a_listing_shows_one_level_with_folders_first() {
        let rows = ["a.txt", "docs/x.txt", "docs/y/z.txt", "img/p.png", "b.txt"]
            .map(row)
            .to_vec();
        let names = |q: &ListQuery| {
            entries(rows.clone(), q)
                .into_iter()
                .map(|e| (e.name, e.id.is_some()))
                .collect::<Vec<_>>()
        };
        let root = ListQuery::default();
        assert_eq!(
            names(&root),
            [
                ("docs".to_string(), false),
                ("img".into(), false),
                ("a.txt".into(), true),
                ("b.txt".into(), true)
            ]
        );
        let docs = ListQuery {
            prefix: "docs".into(),
            ..Default::default()
        };
        assert_eq!(
            names(&docs),
            [("y".to_string(), false), ("x.txt".into(), true)]
        );
        let page = ListQuery {
            limit: Some(1),
            offset: Some(1),
            search: Some("T".into()),
            sort_by: Some(crate::SortBy {
                column: "name".into(),
                order: "desc".into(),
            }),
            ..Default::default()
        };
        assert_eq!(names(&page), [("a.txt".to_string(), true)]);
    }

    #[test]
    fn a_page_holds_at_most_a_thousand_entries() {
        let rows: Vec<ObjectRow> = (0..1500).map(|i| row(&format!("f{i:04}"))).collect();
        let asked = ListQuery {
            limit: Some(5000),
            ..Default::default()
        };
        assert_eq!(entries(rows.clone(), &asked).len(), 1000);
        assert_eq!(
            entries(rows, &ListQuery::default()).len(),
            100,
            "100 by default"
        );
    }

    #[test]
    fn mime_patterns_match_families() {
        let b = Bucket {
            id: "b".into(),
            public: false,
            file_size_limit: None,
            allowed_mime_types: Some(vec!["image/*".into(), "text/plain".into()]),
            org_id: None,
            owner_id: None,
            created_at: String::new(),
            updated_at: String::new(),
        };
        assert!(b.allows_mime("image/png"));
        assert!(b.allows_mime("text/plain; charset=utf-8"));
        assert!(!b.allows_mime("text/html"));
        assert!(!b.allows_mime("application/octet-stream"));
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_escape("a_b%c\\"), "a\\_b\\%c\\\\");
    }
}
