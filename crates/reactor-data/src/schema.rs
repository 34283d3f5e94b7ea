//! The schema cache: what `/data/v1` may touch, read from the database's own catalog.
//!
//! Every identifier in a request is checked against it before any SQL is rendered, so a name
//! that reaches SQL is known to exist and is quoted. It also answers `select=*`, embedding
//! (foreign keys), rpc (functions and their arguments), the OpenAPI document and
//! `reactor data types`. It is loaded at start, after every migration, and again when a request
//! names something it does not know (another replica may have migrated meanwhile).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use reactor_db::{Db, DbError};
use serde::Deserialize;

#[derive(Debug, Clone, Default)]
pub struct SchemaCache {
    pub tables: HashMap<String, Table>,
    /// O1: tables other capabilities keep in the project database under row-level security
    /// (`storage.objects`), by the name policies give them; not reachable through `/data/v1`.
    pub system_tables: HashMap<String, Table>,
    /// Overloads share a name.
    pub functions: HashMap<String, Vec<Function>>,
    /// O1: policy expressions already rewritten for a role (see `render::policy_tables`).
    policy_texts: Arc<RwLock<HashMap<(String, &'static str), String>>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Table {
    pub name: String,
    #[serde(default)]
    pub view: bool,
    pub columns: Vec<Column>,
    #[serde(default)]
    pub primary_key: Vec<String>,
    #[serde(default)]
    pub unique: Vec<Vec<String>>,
    #[serde(default)]
    pub foreign_keys: Vec<ForeignKey>,
    /// O1 only: the table's row-level security policies when it is enabled (`None`: off).
    /// Postgres enforces its own and leaves this empty.
    #[serde(skip)]
    pub policies: Option<Vec<crate::translate::PolicyRecord>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Column {
    pub name: String,
    /// The PostgreSQL type as `format_type` spells it (`integer`, `text[]`,
    /// `timestamp with time zone`); on SQLite, the type the migration declared.
    #[serde(rename = "type")]
    pub ty: String,
    pub nullable: bool,
    /// The default's SQL expression, as the catalog renders it.
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub generated: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ForeignKey {
    pub name: String,
    pub columns: Vec<String>,
    pub target: String,
    pub target_columns: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Function {
    pub name: String,
    pub args: Vec<Arg>,
    /// The return type as `format_type` spells it.
    pub returns: String,
    pub returns_set: bool,
    /// The table whose rows it returns (`returns setof todos`, `returns todos`).
    #[serde(default)]
    pub returns_table: Option<String>,
    /// The columns of `returns table(…)` or out parameters.
    #[serde(default)]
    pub out_columns: Vec<Column>,
    pub volatile: bool,
    /// O1 only: the translated body, arguments as `$1`, `$2`….
    #[serde(skip)]
    pub body: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Arg {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub has_default: bool,
    /// O1 only: the default's SQLite expression.
    #[serde(skip)]
    pub default: Option<String>,
}

/// What a column's values are, for rendering JSON and converting filter values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    Float,
    Json,
    Array,
    TsVector,
    Other,
}

impl Column {
    pub fn kind(&self) -> Kind {
        kind_of(&self.ty)
    }
}

pub fn kind_of(ty: &str) -> Kind {
    let ty = ty.to_ascii_lowercase();
    if ty.ends_with("[]") {
        return Kind::Array;
    }
    match ty.as_str() {
        "boolean" | "bool" => Kind::Bool,
        "smallint" | "integer" | "bigint" | "int" | "int2" | "int4" | "int8" | "serial"
        | "bigserial" => Kind::Int,
        "real" | "double precision" | "numeric" | "float4" | "float8" | "decimal" => Kind::Float,
        "json" | "jsonb" => Kind::Json,
        "tsvector" => Kind::TsVector,
        _ if ty.starts_with("numeric") || ty.starts_with("decimal") => Kind::Float,
        _ => Kind::Other,
    }
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The closest column name, for "did you mean".
    pub fn suggest(&self, name: &str) -> Option<&str> {
        closest(name, self.columns.iter().map(|c| c.name.as_str()))
    }

    /// True when `columns` are the primary key or a unique key: a foreign key pointing at them
    /// finds at most one row.
    pub fn is_unique(&self, columns: &[String]) -> bool {
        let same =
            |key: &[String]| key.len() == columns.len() && key.iter().all(|k| columns.contains(k));
        (!self.primary_key.is_empty() && same(&self.primary_key))
            || self.unique.iter().any(|u| same(u))
    }
}

impl Function {
    pub fn is_scalar(&self) -> bool {
        self.returns_table.is_none() && self.out_columns.is_empty()
    }
}

impl SchemaCache {
    pub(crate) fn policy_cache(&self, key: &(String, &'static str)) -> Option<String> {
        self.policy_texts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    pub(crate) fn remember_policy(&self, key: (String, &'static str), text: String) {
        self.policy_texts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, text);
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.get(name)
    }

    pub fn suggest_table(&self, name: &str) -> Option<&str> {
        closest(name, self.tables.keys().map(String::as_str))
    }
}

pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::levenshtein(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

#[derive(Debug, Deserialize)]
struct Catalog {
    tables: Vec<Table>,
    functions: Vec<Function>,
}

impl From<Catalog> for SchemaCache {
    fn from(c: Catalog) -> Self {
        let mut functions: HashMap<String, Vec<Function>> = HashMap::new();
        for f in c.functions {
            functions.entry(f.name.clone()).or_default().push(f);
        }
        SchemaCache {
            tables: c.tables.into_iter().map(|t| (t.name.clone(), t)).collect(),
            functions,
            system_tables: HashMap::new(),
            policy_texts: Arc::default(),
        }
    }
}

/// One round trip: the whole `public` schema as one JSON document.
const PG_CATALOG: &str = r#"
with cols as (
    select a.attrelid, a.attnum, a.attname, a.atttypid, a.attnotnull, a.attgenerated,
           pg_get_expr(d.adbin, d.adrelid) as def
    from pg_attribute a
    left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
    where a.attnum > 0 and not a.attisdropped
),
keycols as (
    select con.oid, con.conrelid, con.confrelid, con.contype, con.conname,
           (select json_agg(a.attname order by k.ord)
              from unnest(con.conkey) with ordinality k(attnum, ord)
              join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum) as cols,
           (select json_agg(a.attname order by k.ord)
              from unnest(con.confkey) with ordinality k(attnum, ord)
              join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.attnum) as fcols
    from pg_constraint con
    where con.contype in ('p', 'u', 'f')
)
select json_build_object(
  'tables', coalesce((
    select json_agg(json_build_object(
      'name', c.relname,
      'view', c.relkind in ('v', 'm'),
      'columns', (select coalesce(json_agg(json_build_object(
                     'name', cl.attname,
                     'type', format_type(cl.atttypid, null),
                     'nullable', not cl.attnotnull,
                     'default', cl.def,
                     'generated', cl.attgenerated <> '') order by cl.attnum), '[]')
                  from cols cl where cl.attrelid = c.oid),
      'primary_key', coalesce((select k.cols from keycols k
                               where k.conrelid = c.oid and k.contype = 'p'), '[]'),
      'unique', (select coalesce(json_agg(k.cols), '[]') from keycols k
                 where k.conrelid = c.oid and k.contype = 'u'),
      'foreign_keys', (select coalesce(json_agg(json_build_object(
                          'name', k.conname, 'columns', k.cols,
                          'target', t.relname, 'target_columns', k.fcols) order by k.conname), '[]')
                       from keycols k
                       join pg_class t on t.oid = k.confrelid
                       join pg_namespace tn on tn.oid = t.relnamespace
                       where k.conrelid = c.oid and k.contype = 'f' and tn.nspname = 'public')
    ) order by c.relname)
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'public' and c.relkind in ('r', 'v', 'm', 'p', 'f')
  ), '[]'),
  'functions', coalesce((
    select json_agg(json_build_object(
      'name', p.proname,
      'args', (select coalesce(json_agg(json_build_object(
                  'name', coalesce(a.name, ''),
                  'type', format_type(a.type, null),
                  'has_default', a.input_ord > p.pronargs - p.pronargdefaults) order by a.ord), '[]')
               from (select x.*, row_number() over (order by x.ord) as input_ord
                     from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]),
                                 coalesce(p.proargnames, array[]::text[]),
                                 coalesce(p.proargmodes::text[],
                                          array_fill('i'::text, array[cardinality(p.proargtypes::oid[])])))
                          with ordinality x(type, name, mode, ord)
                     where x.mode in ('i', 'b', 'v')) a),
      'returns', format_type(p.prorettype, null),
      'returns_set', p.proretset,
      'returns_table', case when rt.typtype = 'c' and rc.relkind in ('r', 'v', 'm', 'p')
                            and rn.nspname = 'public' then rc.relname end,
      'out_columns', (select coalesce(json_agg(json_build_object(
                         'name', o.name, 'type', format_type(o.type, null), 'nullable', true)
                         order by o.ord), '[]')
                      from unnest(coalesce(p.proallargtypes, array[]::oid[]),
                                  coalesce(p.proargnames, array[]::text[]),
                                  coalesce(p.proargmodes::text[], array[]::text[]))
                           with ordinality o(type, name, mode, ord)
                      where o.mode in ('o', 'b', 't')),
      'volatile', p.provolatile = 'v'
    ))
    from pg_proc p
    join pg_namespace n on n.oid = p.pronamespace
    join pg_type rt on rt.oid = p.prorettype
    left join pg_class rc on rc.oid = rt.typrelid
    left join pg_namespace rn on rn.oid = rc.relnamespace
    where n.nspname = 'public' and p.prokind = 'f'
  ), '[]')
)::text
"#;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("the catalog could not be read: {0}")]
    Db(#[from] DbError),
    #[error("the catalog answer did not parse: {0}")]
    Parse(#[from] serde_json::Error),
}

pub async fn load(db: &Db) -> Result<SchemaCache, SchemaError> {
    match db {
        Db::Postgres(pool) => {
            let text: String = sqlx::query_scalar(PG_CATALOG)
                .fetch_one(pool)
                .await
                .map_err(DbError::from)?;
            let catalog: Catalog = serde_json::from_str(&text)?;
            Ok(catalog.into())
        }
        Db::Sqlite(pool) => Ok(pool.with(|conn| crate::sqlite_catalog::read(conn)).await?),
    }
}

/// The cache shared by all requests, with reload-on-miss rate-limited so a client asking for
/// a table that does not exist cannot make the server re-read the catalog on every request.
#[derive(Debug, Clone)]
pub struct SchemaHandle {
    inner: Arc<RwLock<Shared>>,
}

#[derive(Debug)]
struct Shared {
    cache: Arc<SchemaCache>,
    loaded_at: Instant,
}

const RELOAD_ON_MISS_AFTER: Duration = Duration::from_secs(1);

impl SchemaHandle {
    pub fn new(cache: SchemaCache) -> Self {
        SchemaHandle {
            inner: Arc::new(RwLock::new(Shared {
                cache: Arc::new(cache),
                loaded_at: Instant::now(),
            })),
        }
    }

    pub fn get(&self) -> Arc<SchemaCache> {
        let shared = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&shared.cache)
    }

    pub async fn reload(&self, db: &Db) -> Result<Arc<SchemaCache>, SchemaError> {
        let cache = Arc::new(load(db).await?);
        let mut shared = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        shared.cache = Arc::clone(&cache);
        shared.loaded_at = Instant::now();
        Ok(cache)
    }

    /// Reloads after a miss unless the cache is fresher than a second; answers whether it did.
    pub async fn reload_after_miss(&self, db: &Db) -> bool {
        let stale = {
            let shared = self
                .inner
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            shared.loaded_at.elapsed() >= RELOAD_ON_MISS_AFTER
        };
        if !stale {
            return false;
        }
        match self.reload(db).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "schema cache reload failed");
                false
            }
        }
    }
}
