//! Rendered reads kept by the shape of their query, so that a read of the same shape with
//! other values binds them to the SQL already written instead of rendering again.
//!
//! An app asks the same few shapes over and over (`items?id=eq.<key>` with a different key
//! each time); rendering one is a few dozen small formats and allocations, about a twentieth
//! of a read's CPU on the server (`bench/README.md`).
//!
//! The shape is the parsed query with the values of plain comparisons (`eq neq gt gte lt
//! lte`, no quantifier) taken out: those, and only those, reach the SQL through
//! `Builder::bind_typed` unchanged, so they can become slots. Every other value (`like`
//! patterns, lists, `is.`, full-text queries, limits) stays in the key. A template is made by
//! rendering the shape with a marker in place of each value; it is kept only if every marker
//! came back as a slot and none leaked into the text or another parameter. The marker is
//! random per process, so no request can spell one. Templates belong to one schema snapshot
//! and are dropped when the schema changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use reactor_core::{DbRole, Principal};

use crate::api::{Shape, builder, find_table};
use crate::error::DataError;
use crate::grammar::{Condition, Op, Operand};
use crate::render::{
    Body, Dialect, Level, Levels, Param, Source, Statement, session_guard_params, typed_param,
};
use crate::schema::SchemaCache;

/// Shapes kept at most; past this the cache starts over (a real app has a few dozen, and
/// requests crafted to fill it cost one render each, as without the cache).
const CAPACITY: usize = 1024;

/// A read's shape: everything that decides its SQL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ReadKey {
    table: String,
    /// O1 renders the role's policies into the SQL; on Postgres the guard binds who calls.
    role: DbRole,
    select: Vec<crate::grammar::SelectItem>,
    /// In path order, so that equal shapes are equal keys and walk their values alike.
    levels: Vec<(Vec<String>, Level)>,
    body: Body,
    count: bool,
}

/// One parameter of a template.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    /// The same for every read of the shape.
    Fixed(Param),
    /// The request's `index`th value, converted for a column of type `ty`.
    Value { index: usize, ty: String },
}

/// A read's SQL and where each of its parameters comes from. The first `guard` parameters are
/// the caller's identity (`Builder::with_session_guard`), bound again for each caller.
#[derive(Debug)]
pub(crate) struct Template {
    sql: String,
    guard: usize,
    parts: Vec<Part>,
}

/// What the cache holds for a shape: its template, or `None` when it cannot have one.
type Entry = Option<Arc<Template>>;

#[derive(Debug)]
pub(crate) struct ReadTemplates {
    marker: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The schema the templates were rendered against.
    schema: Option<Arc<SchemaCache>>,
    entries: HashMap<ReadKey, Entry>,
}

/// A request's shape and its values, in the order a walk over the shape meets them.
pub(crate) struct Masked {
    pub key: ReadKey,
    values: Vec<String>,
}

/// Whether a filter's value goes into the SQL as one bound parameter of the column's type,
/// untouched: the comparisons `Builder::filter` binds with `bind_typed` and nothing else.
fn slot_filter(op: Op, operand: &Operand, quantified: bool) -> bool {
    matches!(op, Op::Eq | Op::Neq | Op::Gt | Op::Gte | Op::Lt | Op::Lte)
        && matches!(operand, Operand::Value(_))
        && !quantified
}

/// Walks conditions in order, handing each slot filter's value to `f`.
fn each_slot(conditions: &mut [Condition], f: &mut impl FnMut(&mut String)) {
    for c in conditions {
        match c {
            Condition::Filter(filter) => {
                let quantified = filter.quantifier.is_some();
                if slot_filter(filter.op, &filter.operand, quantified)
                    && let Operand::Value(v) = &mut filter.operand
                {
                    f(v);
                }
            }
            Condition::Logic { children, .. } => each_slot(children, f),
        }
    }
}

impl Masked {
    /// The key of `shape`, and the values taken out of it in the order of a walk over the
    /// key's levels.
    pub fn of(table: &str, role: DbRole, shape: &Shape) -> Masked {
        let mut levels: Vec<(Vec<String>, Level)> = shape
            .levels
            .iter()
            .map(|(path, level)| (path.clone(), level.clone()))
            .collect();
        levels.sort_by(|a, b| a.0.cmp(&b.0));
        let mut values = Vec::new();
        for (_, level) in &mut levels {
            each_slot(&mut level.conditions, &mut |v| {
                values.push(std::mem::take(v))
            });
        }
        Masked {
            key: ReadKey {
                table: table.to_string(),
                role,
                select: shape.select.clone(),
                levels,
                body: shape.body,
                count: shape.count,
            },
            values,
        }
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }
}

impl ReadTemplates {
    pub fn new() -> ReadTemplates {
        ReadTemplates {
            marker: format!(
                "\u{1}reactor-slot-{}-",
                reactor_core::keys::random_base62(16)
            ),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry for `key` under `schema`, if there is one.
    fn get(&self, schema: &Arc<SchemaCache>, key: &ReadKey) -> Option<Entry> {
        let state = self.state();
        match &state.schema {
            Some(s) if Arc::ptr_eq(s, schema) => state.entries.get(key).cloned(),
            _ => None,
        }
    }

    fn put(&self, schema: &Arc<SchemaCache>, key: ReadKey, entry: Entry) {
        let mut state = self.state();
        let current = state
            .schema
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, schema));
        if !current || state.entries.len() >= CAPACITY {
            state.entries.clear();
            state.schema = Some(schema.clone());
        }
        state.entries.insert(key, entry);
    }

    /// The template for `shape`'s read, made on its first sight, with the request's values;
    /// `None` when the shape has none (it is then rendered afresh, errors included).
    pub fn read(
        &self,
        schema: &Arc<SchemaCache>,
        dialect: Dialect,
        principal: &Principal,
        table: &str,
        shape: &Shape,
    ) -> Option<(Arc<Template>, Masked)> {
        let masked = Masked::of(table, principal.db_role(), shape);
        if let Some(entry) = self.get(schema, &masked.key) {
            return entry.map(|t| (t, masked));
        }
        let made = self
            .make(schema, dialect, principal, &masked, shape)
            .map(Arc::new);
        self.put(schema, masked.key.clone(), made.clone());
        made.map(|t| (t, masked))
    }

    /// Renders `masked`'s shape with markers for its values and keeps it if it makes a
    /// template (see [`ReadTemplates::template`]).
    fn make(
        &self,
        schema: &SchemaCache,
        dialect: Dialect,
        principal: &Principal,
        masked: &Masked,
        shape: &Shape,
    ) -> Option<Template> {
        let table = find_table(schema, &masked.key.table).ok()?;
        let levels = self.marked_levels(&masked.key);
        let mut b = builder(schema, dialect, principal).with_slot_marker(&self.marker);
        let guard = b.bound();
        let sql = b
            .read(
                table,
                &Source::table(dialect, &table.name),
                &shape.select,
                &levels,
                shape.body,
                shape.count,
            )
            .ok()?;
        let slots = b.slots().to_vec();
        self.template(b.finish(sql), guard, &slots, masked.values.len(), principal)
    }

    /// The shape's levels with a marker where each value was, for rendering a template.
    fn marked_levels(&self, key: &ReadKey) -> Levels {
        let mut index = 0;
        key.levels
            .iter()
            .map(|(path, level)| {
                let mut level = level.clone();
                each_slot(&mut level.conditions, &mut |v| {
                    *v = format!("{}{index}", self.marker);
                    index += 1;
                });
                (path.clone(), level)
            })
            .collect()
    }

    /// A template from a statement rendered over `marked_levels`, whose first `guard`
    /// parameters are the session guard's and where `slots` maps the parameters `bind_typed`
    /// took from markers to (value index, type). `None` when a marker went anywhere else, a
    /// value went unused, or another parameter holds `principal`'s identity (a template is
    /// shared by every caller of the same role).
    fn template(
        &self,
        statement: Statement,
        guard: usize,
        slots: &[(usize, usize, String)],
        values: usize,
        principal: &Principal,
    ) -> Option<Template> {
        if statement.sql.contains(&self.marker) {
            return None;
        }
        let identity: Vec<&str> = [&principal.user_id, &principal.org_id, &principal.role]
            .into_iter()
            .filter_map(|v| v.as_deref())
            .filter(|v| !v.is_empty())
            .collect();
        let mut used = vec![false; values];
        let mut parts = Vec::with_capacity(statement.params.len());
        for (i, param) in statement.params.into_iter().enumerate() {
            if let Some((_, index, ty)) = slots.iter().find(|(at, _, _)| *at == i) {
                *used.get_mut(*index)? = true;
                parts.push(Part::Value {
                    index: *index,
                    ty: ty.clone(),
                });
                continue;
            }
            if i >= guard {
                let leaked =
                    |t: &String| t.contains(&self.marker) || identity.contains(&t.as_str());
                let leaks = match &param {
                    Param::Text(t) => leaked(t),
                    Param::Texts(ts) => ts.iter().any(leaked),
                    Param::Int(_) | Param::Float(_) => false,
                };
                if leaks {
                    return None;
                }
            }
            parts.push(Part::Fixed(param));
        }
        used.iter().all(|u| *u).then_some(Template {
            sql: statement.sql,
            guard,
            parts,
        })
    }
}

impl Template {
    /// The statement for `principal`'s request of this shape, `values` being its values in
    /// walk order.
    pub fn statement(
        &self,
        dialect: Dialect,
        principal: &Principal,
        values: &[String],
    ) -> Result<Statement, DataError> {
        let guard = session_guard_params(dialect, principal);
        if guard.len() != self.guard {
            return Err(DataError::Internal(
                "a read template's guard does not match its caller".into(),
            ));
        }
        let mut params = guard;
        params.reserve(self.parts.len().saturating_sub(self.guard));
        for part in &self.parts[self.guard..] {
            params.push(match part {
                Part::Fixed(p) => p.clone(),
                Part::Value { index, ty } => {
                    let value = values.get(*index).ok_or_else(|| {
                        DataError::Internal("a read template lacks a value".into())
                    })?;
                    typed_param(dialect, value, ty)?
                }
            });
        }
        Ok(Statement {
            sql: self.sql.clone(),
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use reactor_core::{KeyTier, Principal};
    use reactor_db::Db;

    use super::ReadTemplates;
    use crate::api::{Shape, render_read};
    use crate::migrations::{MigrationFile, migrate};
    use crate::render::{Body, Dialect, Statement};
    use crate::schema::SchemaCache;

    const LIBRARY: &str = include_str!("../../reactor-server/tests/fixtures/library.sql");
    const TODO: &str = include_str!("../../../examples/todo/data/migrations/0001_init.sql");

    /// Queries whose values the template takes as slots, each with the same shape asked
    /// again with other values (the second one meets the template made by the first).
    const SLOTTED: &[(&str, &str, &str)] = &[
        ("books", "id=eq.1", "id=eq.3"),
        (
            "books",
            "select=id,title&pages=gt.200&order=id",
            "select=id,title&pages=gt.1&order=id",
        ),
        (
            "books",
            "pages=gte.1&pages=lte.500&limit=2",
            "pages=gte.200&pages=lte.204&limit=2",
        ),
        ("books", "published=eq.true", "published=eq.false"),
        (
            "books",
            "rating=lt.4.5&author_id=neq.2",
            "rating=lt.1.5e0&author_id=neq.1",
        ),
        (
            "books",
            "or=(pages.lt.100,and(id.eq.2,title.eq.x))",
            "or=(pages.lt.5,and(id.eq.9,title.eq.y))",
        ),
        ("books", "id=not.eq.2", "id=not.eq.4"),
        (
            "books",
            "meta->>series=eq.Earthsea",
            "meta->>series=eq.Other",
        ),
        (
            "books",
            "select=id,author:authors(name)&author.name=eq.Ann",
            "select=id,author:authors(name)&author.name=eq.Ben",
        ),
        (
            "authors",
            "select=name,books(title)&books.pages=gt.100&id=eq.1",
            "select=name,books(title)&books.pages=gt.7&id=eq.2",
        ),
        (
            "todos",
            "select=title&id=eq.00000000-0000-0000-0000-000000000001",
            "select=title&id=eq.00000000-0000-0000-0000-0000000000AB",
        ),
    ];

    /// Queries whose values stay in the key: the template, if any, binds them as they were.
    const FIXED: &[(&str, &str)] = &[
        ("books", "title=like.The*"),
        ("books", "title=ilike.*sea*"),
        ("books", "id=in.(1,2,3)"),
        ("books", "isbn=is.null"),
        ("books", "tags=cs.{fantasy}"),
        ("books", "id=eq(any).{1,2}"),
        ("books", "title=fts.dragon"),
        ("books", "title=isdistinct.x"),
        (
            "books",
            "select=*&order=pages.desc.nullslast&limit=3&offset=1",
        ),
        ("books", "title=match.^The"),
    ];

    fn principals() -> Vec<Principal> {
        let anon = Principal::from_key("k", KeyTier::Public);
        let service = Principal::from_key("k", KeyTier::Service);
        let mut member = Principal::from_key("k", KeyTier::Public);
        member.user_id = Some("00000000-0000-0000-0000-00000000000a".into());
        member.org_id = Some("00000000-0000-0000-0000-0000000000ac".into());
        member.role = Some("member".into());
        vec![anon, service, member]
    }

    fn shape(query: &str, count: bool) -> Shape {
        let q = crate::http::parse_query(Some(query), &[]).expect(query);
        Shape {
            select: q
                .select
                .unwrap_or_else(|| vec![crate::grammar::SelectItem::Star]),
            levels: q.levels,
            body: Body::Json,
            count,
            single: false,
        }
    }

    /// The statement `Data::read` renders when a shape has no template.
    fn fresh(
        schema: &SchemaCache,
        dialect: Dialect,
        principal: &Principal,
        table: &str,
        shape: &Shape,
    ) -> Result<Statement, String> {
        render_read(schema, dialect, principal, table, shape).map_err(|e| format!("{e:?}"))
    }

    /// The template's statement for `shape`, or `None` when the shape has no template.
    fn templated(
        templates: &ReadTemplates,
        schema: &Arc<SchemaCache>,
        dialect: Dialect,
        principal: &Principal,
        table: &str,
        shape: &Shape,
    ) -> Option<Result<Statement, String>> {
        let (template, masked) = templates.read(schema, dialect, principal, table, shape)?;
        Some(
            template
                .statement(dialect, principal, masked.values())
                .map_err(|e| format!("{e:?}")),
        )
    }

    fn same(a: &Result<Statement, String>, b: &Result<Statement, String>) -> bool {
        match (a, b) {
            (Ok(a), Ok(b)) => a.sql == b.sql && a.params == b.params,
            (Err(a), Err(b)) => a == b,
            _ => false,
        }
    }

    async fn schema() -> (tempfile::TempDir, Arc<SchemaCache>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::connect(dir.path().join("data.db").to_str().expect("utf-8"))
            .await
            .expect("sqlite");
        migrate(
            &db,
            &[
                MigrationFile::new("0001_library.sql", LIBRARY),
                MigrationFile::new("0002_todo.sql", TODO),
            ],
        )
        .await
        .expect("migrate");
        let schema = crate::schema::load(&db).await.expect("schema");
        (dir, Arc::new(schema))
    }

    #[tokio::test]
    async fn a_template_gives_the_statement_a_fresh_render_gives() {
        let (_dir, schema) = schema().await;
        for dialect in [Dialect::Postgres, Dialect::Sqlite] {
            let templates = ReadTemplates::new();
            for principal in principals() {
                for count in [false, true] {
                    for (table, first, again) in SLOTTED {
                        for query in [first, again] {
                            let shape = shape(query, count);
                            let want = fresh(&schema, dialect, &principal, table, &shape);
                            let got =
                                templated(&templates, &schema, dialect, &principal, table, &shape)
                                    .unwrap_or_else(|| {
                                        panic!("{dialect:?} {table}?{query}: no template")
                                    });
                            assert!(
                                same(&got, &want),
                                "{dialect:?} {table}?{query} as {:?}:\n template {got:?}\n fresh {want:?}",
                                principal.db_role()
                            );
                            assert!(want.is_ok(), "{table}?{query}: {want:?}");
                        }
                    }
                    for (table, query) in FIXED {
                        let shape = shape(query, count);
                        let want = fresh(&schema, dialect, &principal, table, &shape);
                        if let Some(got) =
                            templated(&templates, &schema, dialect, &principal, table, &shape)
                        {
                            assert!(same(&got, &want), "{dialect:?} {table}?{query}");
                        }
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn a_bad_value_fails_through_a_template_as_it_fails_fresh() {
        let (_dir, schema) = schema().await;
        let templates = ReadTemplates::new();
        let principal = Principal::from_key("k", KeyTier::Public);
        let dialect = Dialect::Sqlite;
        for query in [
            "pages=eq.1",
            "pages=eq.abc",
            "published=eq.maybe",
            "id=eq.1&rating=gt.x",
        ] {
            let shape = shape(query, false);
            let want = fresh(&schema, dialect, &principal, "books", &shape);
            let got = templated(&templates, &schema, dialect, &principal, "books", &shape)
                .expect("a template");
            assert!(same(&got, &want), "{query}: {got:?} / {want:?}");
        }
        // The errors themselves: Postgres's 22P02.
        let shape = shape("pages=eq.abc", false);
        let got = templated(&templates, &schema, dialect, &principal, "books", &shape);
        assert!(matches!(got, Some(Err(e)) if e.contains("22P02")));
    }

    #[tokio::test]
    async fn templates_are_kept_per_role_and_per_schema() {
        let (_dir, schema) = schema().await;
        let templates = ReadTemplates::new();
        let anon = Principal::from_key("k", KeyTier::Public);
        let service = Principal::from_key("k", KeyTier::Service);
        let shape = shape(
            "select=title&id=eq.00000000-0000-0000-0000-000000000001",
            false,
        );
        let as_anon = templated(&templates, &schema, Dialect::Sqlite, &anon, "todos", &shape)
            .expect("template")
            .expect("statement");
        let as_service = templated(
            &templates,
            &schema,
            Dialect::Sqlite,
            &service,
            "todos",
            &shape,
        )
        .expect("template")
        .expect("statement");
        // The policies are rendered into the anonymous caller's SQL, not the service's.
        assert_ne!(as_anon.sql, as_service.sql);
        // Another snapshot of the schema (a migration ran) starts over: its template is
        // made against it, not taken from the old one.
        let reloaded = Arc::new((*schema).clone());
        let again = templated(
            &templates,
            &reloaded,
            Dialect::Sqlite,
            &anon,
            "todos",
            &shape,
        )
        .expect("template")
        .expect("statement");
        assert_eq!(again.sql, as_anon.sql);
        assert!(
            templates
                .state()
                .schema
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, &reloaded))
        );
    }
}
