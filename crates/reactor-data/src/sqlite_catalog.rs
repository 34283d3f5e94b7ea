//! The schema cache on SQLite (O1), read from `sqlite_schema` and the table pragmas.
//!
//! Declared column types are kept as written (the migration translation declares the
//! PostgreSQL type), so JSON rendering and filter conversion see the same types as on
//! Postgres. Foreign keys get Postgres's default constraint names (`<table>_<cols>_fkey`), so a
//! `!hint` written against O2 resolves on O1 too.

use reactor_db::DbError;
use rusqlite::Connection;

use crate::schema::{Arg, Column, ForeignKey, Function, SchemaCache, Table};
use crate::translate::{FunctionRecord, PolicyRecord};

pub fn read(conn: &Connection) -> Result<SchemaCache, DbError> {
    let mut names = conn.prepare(
        "select name, type = 'view' from sqlite_schema
         where type in ('table', 'view') and name not like 'sqlite\\_%' escape '\\'
           and name not like '\\_reactor\\_%' escape '\\'
         order by name",
    )?;
    let tables = names
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut cache = SchemaCache::default();
    for (name, view) in tables {
        let table = read_table(conn, &name, view)?;
        cache.tables.insert(name, table);
    }
    read_security(conn, &mut cache)?;
    read_functions(conn, &mut cache)?;
    Ok(cache)
}

fn has_table(conn: &Connection, name: &str) -> Result<bool, DbError> {
    Ok(conn.query_row(
        "select count(*) from sqlite_schema where type = 'table' and name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )? > 0)
}

fn record<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, DbError> {
    serde_json::from_str(text).map_err(|e| DbError::Task(format!("a recorded migration item: {e}")))
}

/// Tables with row-level security enabled get their policies (possibly none: deny all).
fn read_security(conn: &Connection, cache: &mut SchemaCache) -> Result<(), DbError> {
    if !has_table(conn, "_reactor_rls")? {
        return Ok(());
    }
    let mut stmt = conn.prepare("select table_name from _reactor_rls")?;
    let enabled = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    for name in enabled {
        if let Some(table) = cache.tables.get_mut(&name) {
            table.policies = Some(Vec::new());
        }
    }
    // Storage's object rows: always under row-level security, by the name policies use.
    if has_table(conn, "_reactor_storage_objects")? {
        let mut table = read_table(conn, "_reactor_storage_objects", false)?;
        table.policies = Some(Vec::new());
        cache
            .system_tables
            .insert("storage.objects".to_string(), table);
    }
    let mut stmt =
        conn.prepare("select record from _reactor_policies order by table_name, name")?;
    let records = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    for text in records {
        let policy: PolicyRecord = record(&text)?;
        if let Some(Some(policies)) = cache
            .tables
            .get_mut(&policy.table)
            .or_else(|| cache.system_tables.get_mut(&policy.table))
            .map(|t| t.policies.as_mut())
        {
            policies.push(policy);
        }
    }
    Ok(())
}

fn read_functions(conn: &Connection, cache: &mut SchemaCache) -> Result<(), DbError> {
    if !has_table(conn, "_reactor_functions")? {
        return Ok(());
    }
    let mut stmt = conn.prepare("select record from _reactor_functions order by name")?;
    let records = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    for text in records {
        let f: FunctionRecord = record(&text)?;
        let returns_table = cache
            .tables
            .contains_key(&f.returns)
            .then(|| f.returns.clone());
        let function = Function {
            name: f.name.clone(),
            args: f
                .args
                .into_iter()
                .map(|a| Arg {
                    name: a.name,
                    ty: a.ty,
                    has_default: a.default.is_some(),
                    default: a.default,
                })
                .collect(),
            returns: f.returns,
            returns_set: f.returns_set,
            returns_table,
            out_columns: Vec::new(),
            volatile: f.volatile,
            body: Some(f.body),
        };
        cache.functions.entry(f.name).or_default().push(function);
    }
    Ok(())
}

fn read_table(conn: &Connection, name: &str, view: bool) -> Result<Table, DbError> {
    let mut stmt = conn.prepare(
        "select name, type, \"notnull\", dflt_value, pk, hidden from pragma_table_xinfo(?1) order by cid",
    )?;
    let mut pk: Vec<(i64, String)> = Vec::new();
    let columns = stmt
        .query_map([name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|c| c.5 != 1)
        .map(|(col, ty, notnull, default, key, hidden)| {
            if key > 0 {
                pk.push((key, col.clone()));
            }
            Column {
                name: col,
                ty: ty.to_ascii_lowercase(),
                nullable: !notnull && key == 0,
                default,
                generated: hidden >= 2,
            }
        })
        .collect::<Vec<_>>();
    pk.sort();
    let primary_key: Vec<String> = pk.into_iter().map(|(_, c)| c).collect();

    let mut unique = Vec::new();
    let mut indexes = conn.prepare(
        "select name from pragma_index_list(?1) where \"unique\" and origin in ('u', 'c')",
    )?;
    let index_names = indexes
        .query_map([name], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    for index in index_names {
        let mut cols = conn.prepare("select name from pragma_index_info(?1) order by seqno")?;
        let cols = cols
            .query_map([&index], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        unique.push(cols);
    }

    let mut fk_stmt = conn.prepare(
        "select id, \"table\", \"from\", \"to\" from pragma_foreign_key_list(?1) order by id, seq",
    )?;
    let rows = fk_stmt
        .query_map([name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut foreign_keys: Vec<(i64, ForeignKey)> = Vec::new();
    for (id, target, from, to) in rows {
        match foreign_keys.iter_mut().find(|(i, _)| *i == id) {
            Some((_, fk)) => {
                fk.columns.push(from);
                fk.target_columns.extend(to);
            }
            None => foreign_keys.push((
                id,
                ForeignKey {
                    name: String::new(),
                    columns: vec![from],
                    target,
                    target_columns: to.into_iter().collect(),
                },
            )),
        }
    }
    let mut fks = Vec::new();
    for (_, mut fk) in foreign_keys {
        fk.name = format!("{name}_{}_fkey", fk.columns.join("_"));
        if fk.target_columns.is_empty() {
            // `references t` without columns means t's primary key.
            let mut pk =
                conn.prepare("select name from pragma_table_info(?1) where pk > 0 order by pk")?;
            fk.target_columns = pk
                .query_map([&fk.target], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
        }
        fks.push(fk);
    }
    fks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Table {
        name: name.to_string(),
        view,
        columns,
        primary_key,
        unique,
        foreign_keys: fks,
        policies: None,
    })
}
