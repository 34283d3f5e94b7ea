//! From the parsed request and the schema cache to one SQL statement per request, for either
//! dialect.
//!
//! Three rules hold everywhere here: every value is a bound parameter; every identifier was
//! found in the schema cache before it is quoted into the text; and the database, not Rust,
//! builds the JSON body (`json_agg` on Postgres, `json_group_array` on SQLite), so rows are
//! never materialised as Rust values on the way out.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::error::DataError;
use crate::grammar::{
    Condition, Embed, Field, Filter, IsValue, JsonKey, Nulls, Op, Operand, OrderTerm, Quantifier,
    SelectItem,
};
use crate::schema::{Column, ForeignKey, Kind, SchemaCache, Table, kind_of};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// A bound value.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(String),
    Texts(Vec<String>),
    Int(i64),
    Float(f64),
}

#[derive(Debug, Clone)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Param>,
}

/// Filters, order and paging for one level of the response: the top (`[]`) or an embed
/// (`["author"]`, `["author", "books"]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Level {
    pub conditions: Vec<Condition>,
    pub order: Vec<OrderTerm>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

pub type Levels = HashMap<Vec<String>, Level>;

/// What the final statement returns: the JSON body (or nothing), the number of rows in it, and
/// the total when `count=exact` asked for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Body {
    Json,
    None,
}

/// How an embedded table relates to its parent.
#[derive(Debug, Clone, Copy)]
enum Rel<'s> {
    /// The parent holds the foreign key.
    ToOne(&'s ForeignKey),
    /// The child holds the foreign key; `one` when its columns are unique (one-to-one).
    ToMany { fk: &'s ForeignKey, one: bool },
    ManyToMany {
        junction: &'s Table,
        to_parent: &'s ForeignKey,
        to_child: &'s ForeignKey,
    },
}

impl Rel<'_> {
    fn is_to_one(&self) -> bool {
        matches!(self, Rel::ToOne(_) | Rel::ToMany { one: true, .. })
    }
}

/// The FROM item of the top level: a table, a CTE of written rows, or a function call.
#[derive(Debug, Clone)]
pub struct Source {
    pub sql: String,
}

impl Source {
    pub fn table(dialect: Dialect, name: &str) -> Source {
        Source {
            sql: table_ref(dialect, name),
        }
    }
}

/// A table of the project as each dialect names it.
pub fn table_ref(dialect: Dialect, name: &str) -> String {
    match dialect {
        Dialect::Postgres => format!("\"public\".{}", quote_ident(name)),
        Dialect::Sqlite => quote_ident(name),
    }
}

#[derive(Debug)]
pub struct Builder<'s> {
    pub dialect: Dialect,
    schema: &'s SchemaCache,
    params: Vec<Param>,
    aliases: usize,
    /// O1: the request's role, whose recorded policies the builder applies. `None` on
    /// Postgres, where the database enforces its own.
    role: Option<reactor_core::DbRole>,
    /// Postgres: `reactor.assert_session(…)` with the caller's identity bound, selected by
    /// every statement so one run on a session set to someone else fails (see `reactor_db::requests`).
    guard: Option<String>,
    /// While rendering a read template: the marker standing for a request's values, and the
    /// parameters bound from markers as (parameter, value index, type) (see `templates`).
    slot_marker: Option<&'s str>,
    slots: Vec<(usize, usize, String)>,
}

pub fn quote_ident(name: &str) -> String {
    quoted(name, '"')
}

pub fn quote_literal(text: &str) -> String {
    quoted(text, '\'')
}

/// `text` between `quote`s, each `quote` in it doubled. In one allocation: every column of
/// every statement goes through here.
fn quoted(text: &str, quote: char) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    push_quoted(&mut out, text, quote);
    out
}

/// Appends `text` between `quote`s to `out`, each `quote` in it doubled.
fn push_quoted(out: &mut String, text: &str, quote: char) {
    out.push(quote);
    for piece in text.split_inclusive(quote) {
        out.push_str(piece);
        if piece.ends_with(quote) {
            out.push(quote);
        }
    }
    out.push(quote);
}

/// Appends one output column to a select list: `value as "key"` (Postgres), or `'key', value`
/// for SQLite's `json_object(…)`.
fn push_column(select: &mut String, dialect: Dialect, key: &str, value: &str) {
    if !select.is_empty() {
        select.push_str(", ");
    }
    match dialect {
        Dialect::Postgres => {
            select.push_str(value);
            select.push_str(" as ");
            push_quoted(select, key, '"');
        }
        Dialect::Sqlite => {
            push_quoted(select, key, '\'');
            select.push_str(", ");
            select.push_str(value);
        }
    }
}

/// The parameter a filter value becomes for a column of type `ty`. Postgres gets the text and
/// the SQL casts it; SQLite gets a number or 0/1 where the column holds those, so comparisons
/// behave as on Postgres — and a value Postgres would reject (`abc` for an integer) is
/// rejected with its error, 22P02.
pub(crate) fn typed_param(dialect: Dialect, value: &str, ty: &str) -> Result<Param, DataError> {
    if dialect == Dialect::Postgres {
        return Ok(Param::Text(value.to_string()));
    }
    let invalid = || DataError::Database {
        code: "22P02".into(),
        message: format!("invalid input syntax for type {ty}: \"{value}\""),
        details: None,
        hint: None,
    };
    Ok(match kind_of(ty) {
        Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" | "y" | "on" => Param::Int(1),
            "false" | "f" | "0" | "no" | "n" | "off" => Param::Int(0),
            _ => return Err(invalid()),
        },
        Kind::Int => Param::Int(value.trim().parse::<i64>().map_err(|_| invalid())?),
        Kind::Float => Param::Float(value.trim().parse::<f64>().map_err(|_| invalid())?),
        _ if ty == "uuid" => {
            let hex: String = value
                .chars()
                .filter(|c| !matches!(c, '-' | '{' | '}'))
                .collect();
            if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(invalid());
            }
            Param::Text(value.to_ascii_lowercase())
        }
        _ => Param::Text(value.to_string()),
    })
}

/// The caller's identity as the session guard binds it: role, user, org and org role
/// (Postgres only; SQLite sets them on its connection).
pub(crate) fn session_guard_params(
    dialect: Dialect,
    principal: &reactor_core::Principal,
) -> Vec<Param> {
    if dialect != Dialect::Postgres {
        return Vec::new();
    }
    let id = reactor_db::requests::SessionIdentity::of(principal);
    vec![
        Param::Text(id.role.to_string()),
        Param::Text(id.user_id),
        Param::Text(id.org_id),
        Param::Text(id.org_role),
    ]
}

/// Casts a client may ask for in `select=col::type`, as each dialect spells them.
fn cast_type(name: &str, dialect: Dialect) -> Option<&'static str> {
    let pg = match name.to_ascii_lowercase().as_str() {
        "text" => "text",
        "varchar" | "character varying" => "character varying",
        "int" | "integer" | "int4" => "integer",
        "smallint" | "int2" => "smallint",
        "bigint" | "int8" => "bigint",
        "numeric" | "decimal" => "numeric",
        "real" | "float4" => "real",
        "float" | "float8" | "double precision" => "double precision",
        "boolean" | "bool" => "boolean",
        "json" => "json",
        "jsonb" => "jsonb",
        "uuid" => "uuid",
        "date" => "date",
        "timestamp" => "timestamp",
        "timestamptz" => "timestamptz",
        "time" => "time",
        _ => return None,
    };
    Some(match dialect {
        Dialect::Postgres => pg,
        Dialect::Sqlite => match kind_of(pg) {
            Kind::Int => "integer",
            Kind::Float => "real",
            Kind::Bool => "boolean",
            Kind::Json => "json",
            _ => "text",
        },
    })
}

/// A rendered column reference: its SQL, the PostgreSQL type of its values and their kind.
struct Expr {
    sql: String,
    ty: String,
    kind: Kind,
}

impl<'s> Builder<'s> {
    pub fn new(dialect: Dialect, schema: &'s SchemaCache) -> Self {
        Builder {
            dialect,
            schema,
            params: Vec::new(),
            // `t0` is the top level.
            aliases: 1,
            role: None,
            guard: None,
            slot_marker: None,
            slots: Vec::new(),
        }
    }

    /// Postgres: makes every statement check that its session acts as `principal`, with the
    /// parameters `session_guard_params` gives.
    pub fn with_session_guard(mut self, principal: &reactor_core::Principal) -> Self {
        let bound: Vec<String> = session_guard_params(self.dialect, principal)
            .into_iter()
            .map(|p| self.bind(p))
            .collect();
        if !bound.is_empty() {
            self.guard = Some(format!("reactor.assert_session({})", bound.join(", ")));
        }
        self
    }

    /// Parameters bound so far (after `with_session_guard`: the guard's).
    pub(crate) fn bound(&self) -> usize {
        self.params.len()
    }

    /// Renders a read template: values starting with `marker` are bound as slots, not
    /// converted (see `templates`).
    pub(crate) fn with_slot_marker(mut self, marker: &'s str) -> Self {
        self.slot_marker = Some(marker);
        self
    }

    /// The parameters bound from markers: (parameter index, value index, type).
    pub(crate) fn slots(&self) -> &[(usize, usize, String)] {
        &self.slots
    }

    /// `, <guard> as guard` for a final select list, or nothing.
    pub fn guard_column(&self) -> String {
        self.guard
            .as_ref()
            .map(|g| format!(", {g} as guard"))
            .unwrap_or_default()
    }

    /// Applies row-level security as `role` would meet it (SQLite only).
    pub fn with_role(mut self, role: reactor_core::DbRole) -> Self {
        if self.dialect == Dialect::Sqlite {
            self.role = Some(role);
        }
        self
    }

    pub(crate) fn table_ref(&self, name: &str) -> String {
        table_ref(self.dialect, name)
    }

    /// The row-level security predicate of `table` for `command` (`select`, `insert`,
    /// `update`, `delete`), as Postgres combines policies: the permissive ones OR-ed (none
    /// applicable: no row), the restrictive ones AND-ed on top. `check` takes `with check`
    /// (falling back to `using`). `None` when nothing is to be enforced here.
    pub fn policy(&self, table: &Table, command: &str, check: bool) -> Option<String> {
        let role = self.role?;
        if role == reactor_core::DbRole::Service {
            return None;
        }
        Some(policy_predicate(
            self.schema,
            table,
            command,
            check,
            role,
            0,
        ))
    }

    pub fn finish(self, sql: String) -> Statement {
        Statement {
            sql,
            params: self.params,
        }
    }

    pub(crate) fn params_mut(&mut self) -> &mut Vec<Param> {
        &mut self.params
    }

    fn alias(&mut self) -> usize {
        let n = self.aliases;
        self.aliases += 1;
        n
    }

    pub fn bind(&mut self, p: Param) -> String {
        self.params.push(p);
        match self.dialect {
            Dialect::Postgres => format!("${}", self.params.len()),
            Dialect::Sqlite => format!("?{}", self.params.len()),
        }
    }

    /// Binds a text value as a value of type `ty` (see [`Builder::bind_typed`]).
    pub fn bind_value(&mut self, value: &str, ty: &str) -> Result<String, DataError> {
        self.bind_typed(value, ty)
    }

    /// Binds a filter value as a value of type `ty` (see [`typed_param`]); while rendering a
    /// template, a marker is bound as it is and recorded as a slot.
    fn bind_typed(&mut self, value: &str, ty: &str) -> Result<String, DataError> {
        let slot = self
            .slot_marker
            .and_then(|m| value.strip_prefix(m))
            .and_then(|index| index.parse::<usize>().ok());
        let param = match slot {
            Some(index) => {
                self.slots.push((self.params.len(), index, ty.to_string()));
                Param::Text(value.to_string())
            }
            None => typed_param(self.dialect, value, ty)?,
        };
        let p = self.bind(param);
        Ok(match self.dialect {
            Dialect::Postgres => format!("{p}::{ty}"),
            Dialect::Sqlite => p,
        })
    }

    fn column<'t>(&self, table: &'t Table, name: &str) -> Result<&'t Column, DataError> {
        table
            .column(name)
            .ok_or_else(|| DataError::unknown_column(table, name))
    }

    /// `t0."data"->'a'->>'b'`, with the keys bound.
    fn field(&mut self, table: &Table, alias: &str, field: &Field) -> Result<Expr, DataError> {
        let column = self.column(table, &field.name)?;
        let mut sql = format!("{alias}.{}", quote_ident(&column.name));
        let mut ty = column.ty.clone();
        for step in &field.path {
            let key = match &step.key {
                JsonKey::Index(i) => i.to_string(),
                JsonKey::Name(k) => self.bind(Param::Text(k.clone())),
            };
            let op = if step.text { "->>" } else { "->" };
            write!(sql, "{op}{key}").ok();
            ty = if step.text { "text" } else { "jsonb" }.to_string();
        }
        if !field.path.is_empty() {
            sql = format!("({sql})");
            if self.dialect == Dialect::Postgres && ty == "jsonb" {
                sql = format!("{sql}::jsonb");
            }
        }
        let kind = kind_of(&ty);
        Ok(Expr { sql, ty, kind })
    }

    /// A value as it goes into a SQLite `json_object`: booleans and JSON as JSON, not as 0/1
    /// and text.
    fn sqlite_json_value(expr: &str, kind: Kind) -> String {
        match kind {
            Kind::Bool => {
                format!("iif({expr} is null, null, json(iif({expr}, 'true', 'false')))")
            }
            Kind::Json | Kind::Array => format!("json({expr})"),
            _ => expr.to_string(),
        }
    }

    /// The rows of one level as a SELECT whose columns are the response's keys (Postgres) or
    /// one `_j` JSON object column (SQLite).
    #[allow(clippy::too_many_arguments)]
    pub fn level_rows(
        &mut self,
        table: &'s Table,
        source: &str,
        alias: &str,
        items: &[SelectItem],
        path: &[String],
        levels: &Levels,
        join: Option<String>,
        paged: bool,
    ) -> Result<String, DataError> {
        // Written straight into one list: a star over a wide table is most of a statement.
        let mut select = String::new();
        for item in items {
            match item {
                SelectItem::Star => {
                    // One buffer for every column's `alias."name"`.
                    let mut column = String::new();
                    for c in &table.columns {
                        column.clear();
                        column.push_str(alias);
                        column.push('.');
                        push_quoted(&mut column, &c.name, '"');
                        match self.dialect {
                            Dialect::Postgres => {
                                push_column(&mut select, self.dialect, &c.name, &column)
                            }
                            Dialect::Sqlite => {
                                let value = Self::sqlite_json_value(&column, c.kind());
                                push_column(&mut select, self.dialect, &c.name, &value);
                            }
                        }
                    }
                }
                SelectItem::Field {
                    alias: name,
                    field,
                    cast,
                } => {
                    let expr = self.field(table, alias, field)?;
                    let key = name.clone().unwrap_or_else(|| field.output_name());
                    let value = match cast {
                        Some(c) => {
                            let ty = cast_type(c, self.dialect).ok_or_else(|| {
                                DataError::BadRequest(format!(
                                    "cannot cast to \"{c}\": use text, integer, bigint, numeric, double precision, boolean, json, jsonb, uuid, date, timestamp or timestamptz"
                                ))
                            })?;
                            match self.dialect {
                                Dialect::Postgres => format!("{}::{ty}", expr.sql),
                                Dialect::Sqlite => match ty {
                                    "boolean" => Self::sqlite_json_value(&expr.sql, Kind::Bool),
                                    "json" => format!("json({})", expr.sql),
                                    _ => format!("cast({} as {ty})", expr.sql),
                                },
                            }
                        }
                        None => match self.dialect {
                            Dialect::Postgres => expr.sql,
                            Dialect::Sqlite => Self::sqlite_json_value(&expr.sql, expr.kind),
                        },
                    };
                    push_column(&mut select, self.dialect, &key, &value);
                }
                SelectItem::Embed(embed) => {
                    let key = embed.alias.as_ref().unwrap_or(&embed.relation);
                    let value = self.embed(table, alias, embed, path, levels)?;
                    push_column(&mut select, self.dialect, key, &value);
                }
            }
        }
        if self.dialect == Dialect::Sqlite {
            select = format!("json_object({select}) as _j");
        }
        let empty = Level::default();
        let level = levels.get(path).unwrap_or(&empty);
        let mut sql = format!("select {select} from {source} {alias}");
        let wheres = self.where_clause(table, alias, items, path, levels, join)?;
        sql.push_str(&where_sql(&wheres));
        let order = self.order_by(table, alias, items, path, level)?;
        if !order.is_empty() {
            write!(sql, " order by {order}").ok();
        }
        if paged {
            sql.push_str(&self.paging(level.limit, level.offset));
        }
        Ok(sql)
    }

    pub fn paging(&mut self, limit: Option<u64>, offset: Option<u64>) -> String {
        let mut sql = String::new();
        let as_int = |n: u64| Param::Int(i64::try_from(n).unwrap_or(i64::MAX));
        match (limit, offset) {
            (None, None) => {}
            (limit, offset) => {
                match limit {
                    Some(n) => {
                        let p = self.bind(as_int(n));
                        write!(sql, " limit {p}").ok();
                    }
                    None if self.dialect == Dialect::Sqlite => sql.push_str(" limit -1"),
                    None => {}
                }
                if let Some(n) = offset {
                    let p = self.bind(as_int(n));
                    write!(sql, " offset {p}").ok();
                }
            }
        }
        sql
    }

    /// The level's filters, the join to its parent, and the `!inner` embeds' existence tests.
    pub fn where_clause(
        &mut self,
        table: &'s Table,
        alias: &str,
        items: &[SelectItem],
        path: &[String],
        levels: &Levels,
        join: Option<String>,
    ) -> Result<String, DataError> {
        let mut parts: Vec<String> = join.into_iter().collect();
        if let Some(p) = self.policy(table, "select", false) {
            parts.push(p);
        }
        if let Some(level) = levels.get(path) {
            for c in &level.conditions {
                parts.push(self.condition(table, alias, items, path, levels, c)?);
            }
        }
        for item in items {
            if let SelectItem::Embed(e) = item
                && e.inner
            {
                let test = self.embed_exists(table, alias, e, path, levels)?;
                parts.push(test);
            }
        }
        Ok(parts.join(" and "))
    }

    fn condition(
        &mut self,
        table: &'s Table,
        alias: &str,
        items: &[SelectItem],
        path: &[String],
        levels: &Levels,
        c: &Condition,
    ) -> Result<String, DataError> {
        match c {
            Condition::Filter(f) => {
                // `author=not.is.null`: a test on an embed, not a column.
                if f.field.path.is_empty()
                    && table.column(&f.field.name).is_none()
                    && let Some(embed) = find_embed(items, &f.field.name)
                    && let Operand::Is(is @ (IsValue::Null | IsValue::NotNull)) = f.operand
                {
                    let exists = self.embed_exists(table, alias, embed, path, levels)?;
                    let wanted = (is == IsValue::NotNull) != f.negated;
                    return Ok(if wanted {
                        exists
                    } else {
                        format!("not {exists}")
                    });
                }
                self.filter(table, alias, f)
            }
            Condition::Logic {
                or,
                negated,
                children,
            } => {
                let joined = children
                    .iter()
                    .map(|c| self.condition(table, alias, items, path, levels, c))
                    .collect::<Result<Vec<_>, _>>()?
                    .join(if *or { " or " } else { " and " });
                Ok(if *negated {
                    format!("not ({joined})")
                } else {
                    format!("({joined})")
                })
            }
        }
    }

    fn filter(&mut self, table: &Table, alias: &str, f: &Filter) -> Result<String, DataError> {
        let lhs = self.field(table, alias, &f.field)?;
        let pg = self.dialect == Dialect::Postgres;
        let sql = match (&f.operand, f.op) {
            (Operand::Is(is), Op::Is) => {
                let test = match is {
                    IsValue::Null | IsValue::Unknown => "is null",
                    IsValue::NotNull => "is not null",
                    IsValue::True => "is true",
                    IsValue::False => "is false",
                };
                format!("{} {test}", lhs.sql)
            }
            (Operand::List(items), Op::In) => {
                if pg {
                    let p = self.bind(Param::Texts(items.clone()));
                    format!("{} = any({p}::{}[])", lhs.sql, lhs.ty)
                } else if items.is_empty() {
                    "0".to_string()
                } else {
                    let ps = items
                        .iter()
                        .map(|v| self.bind_typed(v, &lhs.ty))
                        .collect::<Result<Vec<_>, _>>()?
                        .join(", ");
                    format!("{} in ({ps})", lhs.sql)
                }
            }
            (Operand::List(items), op) => {
                let quantifier = f.quantifier.unwrap_or(Quantifier::Any);
                let (sym, text) = comparison(op, pg);
                let lhs_sql = if text && pg {
                    format!("{}::text", lhs.sql)
                } else {
                    lhs.sql.clone()
                };
                let items: Vec<String> = items
                    .iter()
                    .map(|v| {
                        if matches!(op, Op::Like | Op::Ilike) {
                            like_pattern(v)
                        } else {
                            v.clone()
                        }
                    })
                    .collect();
                if pg {
                    let ty = if text {
                        "text".to_string()
                    } else {
                        lhs.ty.clone()
                    };
                    let p = self.bind(Param::Texts(items));
                    let q = if quantifier == Quantifier::Any {
                        "any"
                    } else {
                        "all"
                    };
                    format!("{lhs_sql} {sym} {q}({p}::{ty}[])")
                } else {
                    let joiner = if quantifier == Quantifier::Any {
                        " or "
                    } else {
                        " and "
                    };
                    let tests = items
                        .iter()
                        .map(|v| {
                            let p = if text {
                                self.bind(Param::Text(v.clone()))
                            } else {
                                self.bind_typed(v, &lhs.ty)?
                            };
                            Ok(sqlite_comparison(op, &lhs_sql, &p))
                        })
                        .collect::<Result<Vec<_>, DataError>>()?;
                    if tests.is_empty() {
                        if quantifier == Quantifier::Any {
                            "0"
                        } else {
                            "1"
                        }
                        .to_string()
                    } else {
                        format!("({})", tests.join(joiner))
                    }
                }
            }
            (Operand::Value(v), op) if op.is_fts() => {
                self.fts(&lhs, op, f.language.as_deref(), v)?
            }
            (Operand::Value(v), Op::IsDistinct) => {
                let p = self.bind_typed(v, &lhs.ty)?;
                if pg {
                    format!("{} is distinct from {p}", lhs.sql)
                } else {
                    format!("{} is not {p}", lhs.sql)
                }
            }
            (
                Operand::Value(v),
                op @ (Op::Cs | Op::Cd | Op::Ov | Op::Sl | Op::Sr | Op::Nxr | Op::Nxl | Op::Adj),
            ) => {
                if !pg {
                    return self.sqlite_containment(&lhs, op, v);
                }
                let sym = match op {
                    Op::Cs => "@>",
                    Op::Cd => "<@",
                    Op::Ov => "&&",
                    Op::Sl => "<<",
                    Op::Sr => ">>",
                    Op::Nxr => "&<",
                    Op::Nxl => "&>",
                    _ => "-|-",
                };
                // `ov.(a,b)` is PostgREST's list spelling of an array.
                let v = if op == Op::Ov
                    && v.starts_with('(')
                    && v.ends_with(')')
                    && lhs.kind == Kind::Array
                {
                    format!("{{{}}}", &v[1..v.len() - 1])
                } else {
                    v.clone()
                };
                let p = self.bind_typed(&v, &lhs.ty)?;
                format!("{} {sym} {p}", lhs.sql)
            }
            (Operand::Value(v), op) => {
                let (sym, text) = comparison(op, pg);
                let value = if matches!(op, Op::Like | Op::Ilike) {
                    like_pattern(v)
                } else {
                    v.clone()
                };
                if pg {
                    if text {
                        let p = self.bind(Param::Text(value));
                        format!("{}::text {sym} {p}", lhs.sql)
                    } else {
                        let p = self.bind_typed(&value, &lhs.ty)?;
                        format!("{} {sym} {p}", lhs.sql)
                    }
                } else {
                    let p = if text {
                        self.bind(Param::Text(value))
                    } else {
                        self.bind_typed(&value, &lhs.ty)?
                    };
                    sqlite_comparison(op, &lhs.sql, &p)
                }
            }
            (Operand::Is(_), _) => {
                return Err(DataError::BadRequest(
                    "this operator does not take that value".into(),
                ));
            }
        };
        Ok(if f.negated {
            format!("not ({sql})")
        } else {
            sql
        })
    }

    fn fts(
        &mut self,
        lhs: &Expr,
        op: Op,
        language: Option<&str>,
        value: &str,
    ) -> Result<String, DataError> {
        let function = match op {
            Op::Fts => "to_tsquery",
            Op::Plfts => "plainto_tsquery",
            Op::Phfts => "phraseto_tsquery",
            _ => "websearch_to_tsquery",
        };
        match self.dialect {
            Dialect::Postgres => {
                let config = match language {
                    Some(l) => {
                        let p = self.bind(Param::Text(l.to_string()));
                        format!("{p}::regconfig, ")
                    }
                    None => String::new(),
                };
                let q = self.bind(Param::Text(value.to_string()));
                let doc = if lhs.kind == Kind::TsVector {
                    lhs.sql.clone()
                } else {
                    format!("to_tsvector({config}{}::text)", lhs.sql)
                };
                Ok(format!("{doc} @@ {function}({config}{q})"))
            }
            Dialect::Sqlite => {
                let q = self.bind(Param::Text(value.to_string()));
                let mode = self.bind(Param::Text(function.to_string()));
                Ok(format!("reactor_fts({}, {q}, {mode})", lhs.sql))
            }
        }
    }

    /// Array containment and overlap on SQLite, where arrays are stored as JSON arrays.
    fn sqlite_containment(&mut self, lhs: &Expr, op: Op, value: &str) -> Result<String, DataError> {
        if lhs.kind == Kind::Json && matches!(op, Op::Cs | Op::Cd) {
            serde_json::from_str::<serde_json::Value>(value).map_err(|_| DataError::Database {
                code: "22P02".into(),
                message: format!("invalid input syntax for type json: \"{value}\""),
                details: None,
                hint: None,
            })?;
            let p = self.bind(Param::Text(value.to_string()));
            let l = &lhs.sql;
            return Ok(match op {
                Op::Cs => format!("reactor_json_contains({l}, {p})"),
                _ => format!("reactor_json_contains({p}, {l})"),
            });
        }
        if lhs.kind != Kind::Array || !matches!(op, Op::Cs | Op::Cd | Op::Ov) {
            return Err(DataError::Unsupported(format!(
                "this operator on a column of type {}",
                lhs.ty
            )));
        }
        let items = pg_array_items(value).ok_or_else(|| {
            DataError::BadRequest(format!(
                "\"{value}\" is not an array literal such as {{a,b}}"
            ))
        })?;
        let json = serde_json::to_string(&items).map_err(|e| DataError::Internal(e.to_string()))?;
        let p = self.bind(Param::Text(json));
        let l = &lhs.sql;
        let test = match op {
            Op::Cs => format!(
                "not exists (select 1 from json_each({p}) v where v.value not in (select value from json_each({l})))"
            ),
            Op::Cd => format!(
                "not exists (select 1 from json_each({l}) v where v.value not in (select value from json_each({p})))"
            ),
            _ => format!(
                "exists (select 1 from json_each({l}) v where v.value in (select value from json_each({p})))"
            ),
        };
        // NULL contains nothing and is contained by nothing, as on Postgres.
        Ok(format!("({l} is not null and {test})"))
    }

    fn order_by(
        &mut self,
        table: &'s Table,
        alias: &str,
        items: &[SelectItem],
        path: &[String],
        level: &Level,
    ) -> Result<String, DataError> {
        let mut terms = Vec::new();
        for t in &level.order {
            let expr = match &t.relation {
                None => self.field(table, alias, &t.field)?.sql,
                Some(name) => {
                    let embed = find_embed(items, name)
                        .ok_or_else(|| DataError::NotEmbedded(name.clone()))?;
                    let (child, rel) = self.relationship(table, embed)?;
                    if !rel.is_to_one() {
                        return Err(DataError::BadRequest(format!(
                            "order={name}(…) needs a to-one relationship; '{name}' is to-many: order it with {}.order=",
                            path.iter()
                                .chain(std::iter::once(name))
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(".")
                        )));
                    }
                    let n = self.alias();
                    let child_alias = format!("t{n}");
                    let col = self.field(child, &child_alias, &t.field)?.sql;
                    let mut join = self.join(rel, alias, &child_alias);
                    if let Some(p) = self.policy(child, "select", false) {
                        join = format!("{join} and {p}");
                    }
                    format!(
                        "(select {col} from {} {child_alias} where {join})",
                        self.table_ref(&child.name)
                    )
                }
            };
            let dir = if t.desc { "desc" } else { "asc" };
            // Postgres's defaults, spelled out so SQLite sorts NULLs the same way.
            let nulls = match t.nulls {
                Some(Nulls::First) => "nulls first",
                Some(Nulls::Last) => "nulls last",
                None if t.desc => "nulls first",
                None => "nulls last",
            };
            terms.push(format!("{expr} {dir} {nulls}"));
        }
        Ok(terms.join(", "))
    }

    /// Finds the one relationship an embed means, honouring `!hint`.
    fn relationship(
        &self,
        parent: &'s Table,
        embed: &Embed,
    ) -> Result<(&'s Table, Rel<'s>), DataError> {
        let child =
            self.schema
                .table(&embed.relation)
                .ok_or_else(|| DataError::NoRelationship {
                    from: parent.name.clone(),
                    to: embed.relation.clone(),
                })?;
        let by_column = |fk: &ForeignKey| matches!(&embed.hint, Some(h) if fk.columns.len() == 1 && &fk.columns[0] == h);
        let by_name = |fk: &ForeignKey| matches!(&embed.hint, Some(h) if &fk.name == h);
        let matches_hint = |fk: &ForeignKey| embed.hint.is_none() || by_column(fk) || by_name(fk);
        // A self-reference is both directions of one key: `!<column>` follows the column up to
        // the row it points at, `!<constraint>` gathers the rows pointing here.
        let self_reference = parent.name == child.name;
        let mut found: Vec<(String, Rel<'s>)> = Vec::new();
        for fk in &parent.foreign_keys {
            if fk.target == child.name && matches_hint(fk) && !(self_reference && by_name(fk)) {
                found.push((fk.name.clone(), Rel::ToOne(fk)));
            }
        }
        for fk in &child.foreign_keys {
            if fk.target == parent.name && matches_hint(fk) && !(self_reference && by_column(fk)) {
                let one = child.is_unique(&fk.columns);
                found.push((fk.name.clone(), Rel::ToMany { fk, one }));
            }
        }
        for junction in self.schema.tables.values() {
            if junction.name == parent.name
                || junction.name == child.name
                || junction.primary_key.is_empty()
            {
                continue;
            }
            let in_key =
                |fk: &ForeignKey| fk.columns.iter().all(|c| junction.primary_key.contains(c));
            for to_parent in junction
                .foreign_keys
                .iter()
                .filter(|fk| fk.target == parent.name && in_key(fk))
            {
                for to_child in junction
                    .foreign_keys
                    .iter()
                    .filter(|fk| fk.target == child.name && in_key(fk))
                {
                    if std::ptr::eq(to_parent, to_child) {
                        continue;
                    }
                    let hinted = match &embed.hint {
                        None => true,
                        Some(h) => {
                            h == &junction.name || h == &to_parent.name || h == &to_child.name
                        }
                    };
                    if hinted {
                        found.push((
                            junction.name.clone(),
                            Rel::ManyToMany {
                                junction,
                                to_parent,
                                to_child,
                            },
                        ));
                    }
                }
            }
        }
        match found.len() {
            0 => Err(DataError::NoRelationship {
                from: parent.name.clone(),
                to: embed.relation.clone(),
            }),
            1 => Ok((child, found.remove(0).1)),
            _ => {
                let mut candidates: Vec<String> = found.into_iter().map(|(n, _)| n).collect();
                candidates.sort();
                Err(DataError::AmbiguousRelationship {
                    from: parent.name.clone(),
                    to: embed.relation.clone(),
                    candidates,
                })
            }
        }
    }

    /// The condition tying a child row (`c`) to its parent row (`p`).
    fn join(&mut self, rel: Rel, p: &str, c: &str) -> String {
        let pairs = |left: &str, lcols: &[String], right: &str, rcols: &[String]| {
            lcols
                .iter()
                .zip(rcols)
                .map(|(l, r)| format!("{left}.{} = {right}.{}", quote_ident(l), quote_ident(r)))
                .collect::<Vec<_>>()
                .join(" and ")
        };
        match rel {
            Rel::ToOne(fk) => pairs(c, &fk.target_columns, p, &fk.columns),
            Rel::ToMany { fk, .. } => pairs(c, &fk.columns, p, &fk.target_columns),
            Rel::ManyToMany {
                junction,
                to_parent,
                to_child,
            } => {
                let j = format!("j{}", self.alias());
                let visible = self
                    .policy(junction, "select", false)
                    .map(|p| format!(" and {p}"))
                    .unwrap_or_default();
                format!(
                    "exists (select 1 from {} {j} where {} and {}{visible})",
                    self.table_ref(&junction.name),
                    pairs(&j, &to_child.columns, c, &to_child.target_columns),
                    pairs(&j, &to_parent.columns, p, &to_parent.target_columns),
                )
            }
        }
    }

    /// What rendering an embed starts with: the child table, how it relates, its alias, the
    /// condition tying it to its parent row, and its level's path.
    fn embed_scope(
        &mut self,
        parent: &'s Table,
        parent_alias: &str,
        embed: &Embed,
        path: &[String],
    ) -> Result<EmbedScope<'s>, DataError> {
        let (child, rel) = self.relationship(parent, embed)?;
        let n = self.alias();
        let alias = format!("t{n}");
        let join = self.join(rel, parent_alias, &alias);
        Ok(EmbedScope {
            child,
            rel,
            n,
            alias,
            join,
            path: child_path(path, embed),
        })
    }

    fn embed(
        &mut self,
        parent: &'s Table,
        parent_alias: &str,
        embed: &Embed,
        path: &[String],
        levels: &Levels,
    ) -> Result<String, DataError> {
        let EmbedScope {
            child,
            rel,
            n,
            alias: child_alias,
            join,
            path: child_path,
        } = self.embed_scope(parent, parent_alias, embed, path)?;
        let source = self.table_ref(&child.name);
        let rows = self.level_rows(
            child,
            &source,
            &child_alias,
            &embed.select,
            &child_path,
            levels,
            Some(join),
            !rel.is_to_one(),
        )?;
        let e = format!("_e{n}");
        Ok(match (self.dialect, rel.is_to_one()) {
            (Dialect::Postgres, true) => format!("(select row_to_json({e}) from ({rows}) {e})"),
            (Dialect::Postgres, false) => {
                format!("coalesce((select json_agg({e}) from ({rows}) {e}), '[]')")
            }
            (Dialect::Sqlite, true) => format!("json((select {e}._j from ({rows}) {e}))"),
            (Dialect::Sqlite, false) => format!(
                "json(coalesce((select json_group_array(json({e}._j)) from ({rows}) {e}), '[]'))"
            ),
        })
    }

    /// `exists (…)`: the parent has at least one child matching the embed's filters.
    fn embed_exists(
        &mut self,
        parent: &'s Table,
        parent_alias: &str,
        embed: &Embed,
        path: &[String],
        levels: &Levels,
    ) -> Result<String, DataError> {
        let EmbedScope {
            child,
            alias: child_alias,
            join,
            path: child_path,
            ..
        } = self.embed_scope(parent, parent_alias, embed, path)?;
        let wheres = self.where_clause(
            child,
            &child_alias,
            &embed.select,
            &child_path,
            levels,
            Some(join),
        )?;
        Ok(format!(
            "exists (select 1 from {} {child_alias} where {wheres})",
            self.table_ref(&child.name)
        ))
    }

    /// The top-level read: `(body, rows, total)`.
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        &mut self,
        table: &'s Table,
        source: &Source,
        items: &[SelectItem],
        levels: &Levels,
        body: Body,
        count: bool,
    ) -> Result<String, DataError> {
        check_levels(items, levels)?;
        let rows = self.level_rows(table, &source.sql, "t0", items, &[], levels, None, true)?;
        let total = if count {
            let n = self.alias();
            let alias = format!("t{n}");
            let wheres = self.where_clause(table, &alias, items, &[], levels, None)?;
            format!(
                "(select count(*) from {} {alias}{})",
                source.sql,
                where_sql(&wheres)
            )
        } else {
            self.null_bigint().to_string()
        };
        Ok(self.wrap(&rows, body, &total))
    }

    fn null_bigint(&self) -> &'static str {
        match self.dialect {
            Dialect::Postgres => "null::bigint",
            Dialect::Sqlite => "null",
        }
    }

    /// Turns a rows SELECT into `(body, rows, total)`.
    pub fn wrap(&self, rows: &str, body: Body, total: &str) -> String {
        let agg = match (body, self.dialect) {
            (Body::None, Dialect::Postgres) => "null::text".to_string(),
            (Body::None, Dialect::Sqlite) => "null".to_string(),
            (Body::Json, Dialect::Postgres) => "coalesce(json_agg(_r), '[]')::text".to_string(),
            (Body::Json, Dialect::Sqlite) => {
                "coalesce(json_group_array(json(_r._j)), '[]')".to_string()
            }
        };
        let guard = self.guard_column();
        format!("select {agg} as body, count(*) as page, {total} as total{guard} from ({rows}) _r")
    }
}

/// ` where <conditions>`, or nothing when there are none.
pub(crate) fn where_sql(conditions: &str) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" where {conditions}")
    }
}

struct EmbedScope<'s> {
    child: &'s Table,
    rel: Rel<'s>,
    n: usize,
    alias: String,
    join: String,
    path: Vec<String>,
}

/// How deep policies may lean on tables with policies of their own; Postgres reports such a
/// loop as infinite recursion, O1 denies.
const MAX_POLICY_DEPTH: usize = 8;

/// `table`'s policies for `command` as one predicate, for `role` (see [`Builder::policy`]).
pub(crate) fn policy_predicate(
    schema: &SchemaCache,
    table: &Table,
    command: &str,
    check: bool,
    role: reactor_core::DbRole,
    depth: usize,
) -> String {
    let Some(policies) = table.policies.as_ref() else {
        return "1".to_string();
    };
    if depth > MAX_POLICY_DEPTH {
        return "0".to_string();
    }
    let applies = |p: &&crate::translate::PolicyRecord| {
        (p.command == "all" || p.command == command)
            && (p.roles.is_empty() || p.roles.iter().any(|r| r == role.name()))
    };
    let expr = |p: &crate::translate::PolicyRecord| {
        let e = if check {
            p.check.as_ref().or(p.using.as_ref())
        } else {
            p.using.as_ref()
        };
        e.map_or_else(
            || "1".to_string(),
            |e| format!("({})", policy_tables(schema, e, role, depth)),
        )
    };
    let permissive: Vec<String> = policies
        .iter()
        .filter(applies)
        .filter(|p| p.permissive)
        .map(expr)
        .collect();
    let mut predicate = if permissive.is_empty() {
        "0".to_string()
    } else {
        format!("({})", permissive.join(" or "))
    };
    for p in policies.iter().filter(applies).filter(|p| !p.permissive) {
        predicate = format!("{predicate} and {}", expr(p));
    }
    predicate
}

/// A policy expression whose subqueries read tables with row-level security, rewritten so
/// they see those tables through their own `select` policies, as on Postgres:
/// `from lists l` becomes `from (select * from "lists" where <lists' policy>) l`. Cached per
/// expression and role; the cache lives as long as this schema.
fn policy_tables(
    schema: &SchemaCache,
    expr: &str,
    role: reactor_core::DbRole,
    depth: usize,
) -> String {
    let key = (expr.to_string(), role.name());
    if let Some(done) = schema.policy_cache(&key) {
        return done;
    }
    let rewritten =
        rewrite_policy_tables(schema, expr, role, depth).unwrap_or_else(|| expr.to_string());
    schema.remember_policy(key, rewritten.clone());
    rewritten
}

fn rewrite_policy_tables(
    schema: &SchemaCache,
    expr: &str,
    role: reactor_core::DbRole,
    depth: usize,
) -> Option<String> {
    use sqlparser::ast::{TableFactor, VisitMut, VisitorMut};
    use sqlparser::dialect::GenericDialect;
    use sqlparser::parser::Parser;

    struct Guarded<'a> {
        schema: &'a SchemaCache,
        role: reactor_core::DbRole,
        depth: usize,
    }
    impl VisitorMut for Guarded<'_> {
        type Break = ();
        // After the children: the replacement is not visited again (it names the table too).
        fn post_visit_table_factor(
            &mut self,
            factor: &mut TableFactor,
        ) -> std::ops::ControlFlow<()> {
            let TableFactor::Table { name, alias, .. } = factor else {
                return std::ops::ControlFlow::Continue(());
            };
            let table_name = name.to_string().trim_matches('"').to_string();
            let Some(table) = self
                .schema
                .table(&table_name)
                .filter(|t| t.policies.is_some())
            else {
                return std::ops::ControlFlow::Continue(());
            };
            let predicate = policy_predicate(
                self.schema,
                table,
                "select",
                false,
                self.role,
                self.depth + 1,
            );
            let alias = alias
                .as_ref()
                .map_or_else(|| quote_ident(&table_name), |a| a.to_string());
            let text = format!(
                "(select * from {} where {predicate}) as {alias}",
                quote_ident(&table_name)
            );
            match Parser::new(&GenericDialect {})
                .try_with_sql(&text)
                .and_then(|mut p| p.parse_table_factor())
            {
                Ok(replacement) => {
                    *factor = replacement;
                    std::ops::ControlFlow::Continue(())
                }
                Err(_) => std::ops::ControlFlow::Break(()),
            }
        }
    }

    let mut parsed = Parser::new(&GenericDialect {})
        .try_with_sql(expr)
        .and_then(|mut p| p.parse_expr())
        .ok()?;
    let mut visitor = Guarded {
        schema,
        role,
        depth,
    };
    if parsed.visit(&mut visitor).is_break() {
        return None;
    }
    Some(parsed.to_string())
}

fn child_path(path: &[String], embed: &Embed) -> Vec<String> {
    let mut p = path.to_vec();
    p.push(
        embed
            .alias
            .clone()
            .unwrap_or_else(|| embed.relation.clone()),
    );
    p
}

fn find_embed<'a>(items: &'a [SelectItem], name: &str) -> Option<&'a Embed> {
    items.iter().find_map(|i| match i {
        SelectItem::Embed(e) if e.alias.as_deref().unwrap_or(&e.relation) == name => Some(e),
        _ => None,
    })
}

/// Every filtered or ordered level must be an embed of the request.
fn check_levels(items: &[SelectItem], levels: &Levels) -> Result<(), DataError> {
    for path in levels.keys() {
        let mut current = items;
        for name in path {
            match find_embed(current, name) {
                Some(e) => current = &e.select,
                None => return Err(DataError::NotEmbedded(path.join("."))),
            }
        }
    }
    Ok(())
}

/// The operator and whether it compares text.
fn comparison(op: Op, pg: bool) -> (&'static str, bool) {
    match op {
        Op::Eq => ("=", false),
        Op::Neq => ("<>", false),
        Op::Gt => (">", false),
        Op::Gte => (">=", false),
        Op::Lt => ("<", false),
        Op::Lte => ("<=", false),
        Op::Like => ("like", true),
        Op::Ilike => (if pg { "ilike" } else { "like" }, true),
        Op::Match => ("~", true),
        Op::Imatch => ("~*", true),
        _ => ("=", false),
    }
}

/// SQLite spellings: `like` there ignores ASCII case, so Postgres's case-sensitive `like`
/// goes through `glob`-free `reactor_like`, and regular expressions through `regexp`.
fn sqlite_comparison(op: Op, lhs: &str, p: &str) -> String {
    match op {
        Op::Like => format!("reactor_like({lhs}, {p}, 0)"),
        Op::Ilike => format!("reactor_like({lhs}, {p}, 1)"),
        Op::Match => format!("reactor_regexp({lhs}, {p}, 0)"),
        Op::Imatch => format!("reactor_regexp({lhs}, {p}, 1)"),
        _ => {
            let (sym, _) = comparison(op, false);
            format!("{lhs} {sym} {p}")
        }
    }
}

/// PostgREST lets `*` stand for `%` in URLs.
fn like_pattern(v: &str) -> String {
    v.replace('*', "%")
}

/// `{a,"b c"}` → `["a", "b c"]`.
pub fn pg_array_items(v: &str) -> Option<Vec<String>> {
    let inner = v.strip_prefix('{')?.strip_suffix('}')?;
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = inner.chars();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => cur.extend(chars.next()),
            ',' if !quoted => items.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if any {
        items.push(cur);
    }
    Some(items)
}

#[cfg(test)]
mod tests {
    use super::{quote_ident, quote_literal};

    #[test]
    fn quoting_doubles_the_quote_and_nothing_else() {
        assert_eq!(quote_ident("items"), "\"items\"");
        assert_eq!(quote_ident(""), "\"\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("\"\""), "\"\"\"\"\"\"");
        assert_eq!(quote_ident("it's"), "\"it's\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(
            quote_literal("'; drop table x; --"),
            "'''; drop table x; --'"
        );
        assert_eq!(quote_literal("naïve \"x\""), "'naïve \"x\"'");
    }
}
