//! Writes (`POST`, `PATCH`, `DELETE`) and rpc calls, rendered for each dialect.
//!
//! On Postgres a write and the read of what it wrote are one statement: the DML sits in a CTE
//! (`with _w as (insert … returning *)`) and the usual read renders over `_w`, embeds included.
//! SQLite cannot put DML in a CTE, so there a write is two statements in one transaction: the
//! DML returning the rowids it touched, then the read over those rowids.

use serde_json::{Map, Value};

use crate::error::DataError;
use crate::grammar::SelectItem;
use crate::render::{Body, Builder, Dialect, Levels, Param, Source, quote_ident, quote_literal};
use crate::schema::{Function, Table};

/// How a conflicting insert is resolved (`Prefer: resolution=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Merge,
    Ignore,
}

#[derive(Debug, Clone)]
pub struct Insert {
    /// The rows, each a JSON object.
    pub rows: Vec<Map<String, Value>>,
    /// `columns=`: the columns to write; otherwise every key seen in the body.
    pub columns: Option<Vec<String>>,
    /// `Prefer: missing=default`: a key absent from a row takes the column default, not NULL.
    pub missing_default: bool,
    pub on_conflict: Option<Vec<String>>,
    pub resolution: Option<Resolution>,
}

impl Insert {
    /// The columns written, in the table's order, each known.
    fn columns<'t>(&self, table: &'t Table) -> Result<Vec<&'t crate::schema::Column>, DataError> {
        let wanted: Vec<String> = match &self.columns {
            Some(cols) => cols.clone(),
            None => {
                let mut seen: Vec<String> = Vec::new();
                for row in &self.rows {
                    for key in row.keys() {
                        if !seen.contains(key) {
                            seen.push(key.clone());
                        }
                    }
                }
                seen
            }
        };
        for name in &wanted {
            if table.column(name).is_none() {
                return Err(DataError::unknown_column(table, name));
            }
        }
        Ok(table
            .columns
            .iter()
            .filter(|c| wanted.contains(&c.name))
            .collect())
    }
}

impl<'s> Builder<'s> {
    fn rows_json(rows: &[Map<String, Value>]) -> Result<String, DataError> {
        serde_json::to_string(rows).map_err(|e| DataError::Internal(e.to_string()))
    }

    fn conflict_clause(
        &self,
        table: &Table,
        insert: &Insert,
        columns: &[&crate::schema::Column],
    ) -> Result<String, DataError> {
        let Some(resolution) = insert.resolution else {
            return Ok(String::new());
        };
        let target = conflict_target(table, insert)?;
        let target_sql = target
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let updates: Vec<String> = columns
            .iter()
            .filter(|c| !target.contains(&c.name))
            .map(|c| format!("{0} = excluded.{0}", quote_ident(&c.name)))
            .collect();
        Ok(match resolution {
            Resolution::Ignore => format!(" on conflict ({target_sql}) do nothing"),
            Resolution::Merge if updates.is_empty() => {
                format!(" on conflict ({target_sql}) do nothing")
            }
            Resolution::Merge => {
                // O1: a conflicting row is overwritten only where the update policies let this
                // role touch it; a row skipped here is missing from RETURNING, which the caller
                // turns into Postgres's 42501.
                let guard = self
                    .policy(table, "update", false)
                    .map(|p| format!(" where {p}"))
                    .unwrap_or_default();
                format!(
                    " on conflict ({target_sql}) do update set {}{guard}",
                    updates.join(", ")
                )
            }
        })
    }

    /// The INSERT of `insert`'s rows, read from one bound JSON array: Postgres through
    /// `json_populate_record` (its own conversion of JSON to each column's type), SQLite
    /// through `json_each`.
    fn insert_dml(&mut self, table: &'s Table, insert: &Insert) -> Result<String, DataError> {
        let columns = insert.columns(table)?;
        let name = self.table_ref(&table.name);
        if columns.is_empty() {
            if insert.rows.len() != 1 {
                return Err(DataError::BadBody(
                    "rows without any column can only be inserted one at a time".into(),
                ));
            }
            return Ok(format!("insert into {name} default values"));
        }
        let json = Self::rows_json(&insert.rows)?;
        let p = self.bind(Param::Text(json));
        let cols = columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let pg = self.dialect == Dialect::Postgres;
        let values = columns
            .iter()
            .map(|c| {
                let key = quote_literal(&c.name);
                let (value, present) = if pg {
                    (
                        format!("_p.{}", quote_ident(&c.name)),
                        format!("_j.v::jsonb ? {key}"),
                    )
                } else {
                    (
                        sqlite_json_field("_j.value", c),
                        format!("(_j.value -> {key}) is not null"),
                    )
                };
                if insert.missing_default {
                    let default = c.default.clone().unwrap_or_else(|| "null".to_string());
                    format!("case when {present} then {value} else {default} end")
                } else {
                    value
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let conflict = self.conflict_clause(table, insert, &columns)?;
        let from = if pg {
            format!(
                "json_array_elements({p}::json) _j(v) cross join lateral json_populate_record(null::{name}, _j.v) _p"
            )
        } else {
            // `where true` keeps SQLite from reading `on conflict` as a join constraint.
            format!("json_each({p}) _j where true")
        };
        Ok(format!(
            "insert into {name} ({cols}) select {values} from {from}{conflict}"
        ))
    }

    /// The top-level filters of an update or delete on `t0`, with (O1) the `using` policies of
    /// `command` on top of the `select` ones, as ` where …` or nothing.
    fn write_filter(
        &mut self,
        table: &'s Table,
        levels: &Levels,
        command: &str,
    ) -> Result<String, DataError> {
        let mut conditions = self.where_clause(table, "t0", &[], &[], levels, None)?;
        if let Some(p) = self.policy(table, command, false) {
            conditions = if conditions.is_empty() {
                p
            } else {
                format!("{conditions} and {p}")
            };
        }
        Ok(crate::render::where_sql(&conditions))
    }

    /// Postgres: one statement that inserts and returns `(body, rows, total)`.
    pub fn insert_pg(
        &mut self,
        table: &'s Table,
        insert: &Insert,
        items: &[SelectItem],
        levels: &Levels,
        body: Body,
    ) -> Result<String, DataError> {
        let dml = self.insert_dml(table, insert)?;
        self.over_cte(table, &dml, items, levels, body)
    }

    /// Postgres: `PATCH` as one statement.
    pub fn update_pg(
        &mut self,
        table: &'s Table,
        patch: &Map<String, Value>,
        items: &[SelectItem],
        levels: &Levels,
        body: Body,
    ) -> Result<String, DataError> {
        let name = self.table_ref(&table.name);
        let sets = self.patch_columns(table, patch)?;
        let json = serde_json::to_string(patch).map_err(|e| DataError::Internal(e.to_string()))?;
        let p = self.bind(Param::Text(json));
        let assignments = sets
            .iter()
            .map(|c| format!("{0} = _p.{0}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let filter = self.write_filter(table, levels, "update")?;
        let dml = format!(
            "update {name} t0 set {assignments} from json_populate_record(null::{name}, {p}::json) _p{filter}"
        );
        self.over_cte(table, &format!("{dml} returning t0.*"), items, levels, body)
    }

    /// Postgres: `DELETE` as one statement.
    pub fn delete_pg(
        &mut self,
        table: &'s Table,
        items: &[SelectItem],
        levels: &Levels,
        body: Body,
    ) -> Result<String, DataError> {
        let name = self.table_ref(&table.name);
        let filter = self.write_filter(table, levels, "delete")?;
        let dml = format!("delete from {name} t0{filter} returning t0.*");
        self.over_cte(table, &dml, items, levels, body)
    }

    /// `with _w as (<dml> returning *) <read over _w>`.
    fn over_cte(
        &mut self,
        table: &'s Table,
        dml: &str,
        items: &[SelectItem],
        levels: &Levels,
        body: Body,
    ) -> Result<String, DataError> {
        let dml = if dml.contains(" returning ") {
            dml.to_string()
        } else {
            format!("{dml} returning *")
        };
        let read = self.read(
            table,
            &Source { sql: "_w".into() },
            items,
            &top_free(levels),
            body,
            false,
        )?;
        Ok(format!("with _w as ({dml}) {read}"))
    }

    fn patch_columns(
        &self,
        table: &Table,
        patch: &Map<String, Value>,
    ) -> Result<Vec<String>, DataError> {
        if patch.is_empty() {
            return Err(DataError::BadBody(
                "the body names no column to update".into(),
            ));
        }
        patch
            .keys()
            .map(|k| {
                table
                    .column(k)
                    .map(|c| c.name.clone())
                    .ok_or_else(|| DataError::unknown_column(table, k))
            })
            .collect()
    }

    /// SQLite: the insert returning rowids, and the read over them.
    pub fn insert_sqlite(
        &mut self,
        table: &'s Table,
        insert: &Insert,
    ) -> Result<crate::render::Statement, DataError> {
        let sql = format!("{} returning rowid", self.insert_dml(table, insert)?);
        Ok(self.take_statement(sql))
    }

    pub fn update_sqlite(
        &mut self,
        table: &'s Table,
        patch: &Map<String, Value>,
        levels: &Levels,
    ) -> Result<crate::render::Statement, DataError> {
        let sets = self.patch_columns(table, patch)?;
        let json = serde_json::to_string(patch).map_err(|e| DataError::Internal(e.to_string()))?;
        let p = self.bind(Param::Text(json));
        let assignments = sets
            .iter()
            .filter_map(|c| table.column(c))
            .map(|c| format!("{} = {}", quote_ident(&c.name), sqlite_json_field(&p, c)))
            .collect::<Vec<_>>()
            .join(", ");
        let filter = self.write_filter(table, levels, "update")?;
        let sql = format!(
            "update {} as t0 set {assignments}{filter} returning rowid",
            quote_ident(&table.name)
        );
        Ok(self.take_statement(sql))
    }

    /// SQLite: the rowids a `DELETE` will remove (read first, then deleted by rowid).
    pub fn delete_targets_sqlite(
        &mut self,
        table: &'s Table,
        levels: &Levels,
    ) -> Result<crate::render::Statement, DataError> {
        let filter = self.write_filter(table, levels, "delete")?;
        let sql = format!(
            "select t0.rowid from {} t0{filter}",
            quote_ident(&table.name)
        );
        Ok(self.take_statement(sql))
    }

    /// SQLite, a merging upsert under row-level security: the rowids of the rows the upsert
    /// will find already there (matched on its conflict target), so what it then returns can
    /// be split into updated rows and inserted ones, each checked against its own policies.
    pub fn upsert_existing_sqlite(
        &mut self,
        table: &'s Table,
        insert: &Insert,
    ) -> Result<Option<crate::render::Statement>, DataError> {
        if insert.resolution != Some(Resolution::Merge)
            || self.policy(table, "update", true).is_none()
        {
            return Ok(None);
        }
        let target = conflict_target(table, insert)?;
        if insert
            .columns(table)?
            .iter()
            .all(|c| target.contains(&c.name))
        {
            // Nothing to update: the upsert does nothing on a conflict.
            return Ok(None);
        }
        let json = Self::rows_json(&insert.rows)?;
        let p = self.bind(Param::Text(json));
        let matches = target
            .iter()
            .filter_map(|c| table.column(c))
            .map(|c| {
                format!(
                    "t.{} = {}",
                    quote_ident(&c.name),
                    sqlite_json_field("j.value", c)
                )
            })
            .collect::<Vec<_>>()
            .join(" and ");
        let sql = format!(
            "select t.rowid from {} t where exists (select 1 from json_each({p}) j where {matches})",
            quote_ident(&table.name)
        );
        Ok(Some(self.take_statement(sql)))
    }

    /// SQLite: counts the written rows (rowids bound as a JSON array at parameter 1) that
    /// fail the `with check` policies for `command`; `None` when none apply.
    pub fn rls_check_sqlite(
        &mut self,
        table: &'s Table,
        command: &str,
    ) -> Option<crate::render::Statement> {
        let predicate = self.policy(table, command, true)?;
        let p = self.bind(Param::Text(String::new()));
        let sql = format!(
            "select count(*) from {} where rowid in (select value from json_each({p})) and not coalesce({predicate}, 0)",
            quote_ident(&table.name)
        );
        Some(self.take_statement(sql))
    }

    /// SQLite: the representation of the rows whose rowids are bound as a JSON array at
    /// parameter 1.
    pub fn read_rowids_sqlite(
        &mut self,
        table: &'s Table,
        items: &[SelectItem],
        levels: &Levels,
        body: Body,
    ) -> Result<crate::render::Statement, DataError> {
        let p = self.bind(Param::Text(String::new()));
        let source = Source {
            sql: format!(
                "(select * from {} where rowid in (select value from json_each({p})))",
                quote_ident(&table.name)
            ),
        };
        let sql = self.read(table, &source, items, &top_free(levels), body, false)?;
        Ok(self.take_statement(sql))
    }

    /// Postgres: an rpc call. Returns the statement's SQL and whether the result is one JSON
    /// value (scalar, or a single composite row) rather than an array.
    pub fn rpc_pg(
        &mut self,
        function: &'s Function,
        table: Option<&'s Table>,
        args: &Map<String, Value>,
        shape: &crate::api::Shape,
    ) -> Result<String, DataError> {
        let mut rendered = Vec::new();
        for arg in &function.args {
            if let Some(v) = args.get(&arg.name) {
                let value = match v {
                    Value::Null => "null".to_string(),
                    Value::String(s) => {
                        let p = self.bind(Param::Text(s.clone()));
                        format!("{p}::{}", arg.ty)
                    }
                    Value::Array(_) if arg.ty.ends_with("[]") => {
                        let p = self.bind(Param::Text(v.to_string()));
                        format!(
                            "array(select json_array_elements_text({p}::json))::{}",
                            arg.ty
                        )
                    }
                    other => {
                        let p = self.bind(Param::Text(other.to_string()));
                        if crate::schema::kind_of(&arg.ty) == crate::schema::Kind::Json {
                            format!("{p}::{}", arg.ty)
                        } else {
                            // Numbers and booleans: their JSON text is their SQL text.
                            format!("{p}::text::{}", arg.ty)
                        }
                    }
                };
                rendered.push(format!("{} => {value}", quote_ident(&arg.name)));
            }
        }
        let call = format!(
            "\"public\".{}({})",
            quote_ident(&function.name),
            rendered.join(", ")
        );
        match table {
            Some(table) => {
                let source = Source { sql: call };
                self.read(
                    table,
                    &source,
                    &shape.select,
                    &shape.levels,
                    shape.body,
                    shape.count,
                )
            }
            None if function.returns_set => Ok(format!(
                "select coalesce(json_agg(_r.v), '[]')::text as body, count(*) as page, null::bigint as total{} from {call} _r(v)",
                self.guard_column()
            )),
            None => Ok(format!(
                "select to_json({call})::text as body, 1::bigint as page, null::bigint as total{}",
                self.guard_column()
            )),
        }
    }

    /// SQLite: an rpc call over the body the translation recorded. Returns the SQL and
    /// whether it is DML (run as is, its first value the answer) rather than a query
    /// answering `(body, rows, total)`.
    pub fn rpc_sqlite(
        &mut self,
        function: &'s Function,
        table: Option<&'s Table>,
        args: &Map<String, Value>,
        shape: &crate::api::Shape,
    ) -> Result<(String, bool), DataError> {
        let Some(body) = &function.body else {
            return Err(DataError::Unsupported(format!(
                "the function {}",
                function.name
            )));
        };
        let mut refs = Vec::new();
        for arg in &function.args {
            refs.push(match args.get(&arg.name) {
                None => arg
                    .default
                    .as_ref()
                    .map_or_else(|| "null".to_string(), |d| format!("({d})")),
                Some(Value::Null) => "null".to_string(),
                Some(Value::String(v)) => self.bind_value(v, &arg.ty)?,
                Some(Value::Bool(b)) => self.bind(Param::Int(i64::from(*b))),
                Some(Value::Number(n)) => match n.as_i64() {
                    Some(i) => self.bind(Param::Int(i)),
                    None => self.bind(Param::Float(n.as_f64().unwrap_or_default())),
                },
                Some(other) => self.bind(Param::Text(other.to_string())),
            });
        }
        let body = substitute_args(body, &refs);
        let first = body
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let dml = !matches!(first.as_str(), "select" | "with" | "values");
        match table {
            Some(table) => {
                if dml {
                    return Err(DataError::Unsupported(
                        "an rpc function that writes and returns rows".into(),
                    ));
                }
                let source = Source {
                    sql: format!("({body})"),
                };
                let sql = self.read(
                    table,
                    &source,
                    &shape.select,
                    &shape.levels,
                    shape.body,
                    shape.count,
                )?;
                Ok((sql, false))
            }
            None if function.returns_set => Err(DataError::Unsupported(
                "a function returning a set of scalars".into(),
            )),
            None if dml => Ok((body, true)),
            None => {
                let value = format!("({body})");
                let json = match crate::schema::kind_of(&function.returns) {
                    crate::schema::Kind::Bool => {
                        format!("iif({value} is null, 'null', iif({value}, 'true', 'false'))")
                    }
                    crate::schema::Kind::Json => format!("coalesce(json({value}), 'null')"),
                    _ => format!("json_quote({value})"),
                };
                Ok((
                    format!("select {json} as body, 1 as page, null as total"),
                    false,
                ))
            }
        }
    }

    pub fn take_statement(&mut self, sql: String) -> crate::render::Statement {
        let params = std::mem::take(self.params_mut());
        crate::render::Statement { sql, params }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }
}

/// The columns an upsert resolves on: `on_conflict=`, else the primary key.
fn conflict_target(table: &Table, insert: &Insert) -> Result<Vec<String>, DataError> {
    let target = match &insert.on_conflict {
        Some(cols) => cols.clone(),
        None => table.primary_key.clone(),
    };
    if target.is_empty() {
        return Err(DataError::BadRequest(format!(
            "an upsert into {} needs on_conflict=<columns>: the table has no primary key",
            table.name
        )));
    }
    for c in &target {
        if table.column(c).is_none() {
            return Err(DataError::unknown_column(table, c));
        }
    }
    Ok(target)
}

/// Writes accept filters on the top level only; embeds only shape the representation.
fn top_free(levels: &Levels) -> Levels {
    levels
        .iter()
        .filter(|(path, _)| !path.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A JSON field of a written row as the column stores it on SQLite: JSON and arrays as JSON
/// text (a JSON `null` is SQL NULL), everything else as its SQL value.
fn sqlite_json_field(json: &str, column: &crate::schema::Column) -> String {
    let key = quote_literal(&column.name);
    match column.kind() {
        crate::schema::Kind::Json | crate::schema::Kind::Array => {
            format!("nullif({json} -> {key}, 'null')")
        }
        _ => format!("({json} ->> {key})"),
    }
}

/// Replaces `$1`, `$2`… outside quotes with the arguments' SQL.
fn substitute_args(body: &str, refs: &[String]) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.char_indices().peekable();
    let mut quote: Option<char> = None;
    while let Some((_, c)) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (Some(_), c) => out.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (None, '$') => {
                let mut digits = String::new();
                while let Some((_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                match digits
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| refs.get(n.wrapping_sub(1)))
                {
                    Some(r) => out.push_str(r),
                    None => {
                        out.push('$');
                        out.push_str(&digits);
                    }
                }
            }
            (None, c) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn arguments_are_substituted_outside_quotes_only() {
        let refs = vec!["?1".to_string(), "(2)".to_string()];
        assert_eq!(
            super::substitute_args("SELECT $1 + $2, '$1', \"$2\", $3", &refs),
            "SELECT ?1 + (2), '$1', \"$2\", $3"
        );
    }
}
