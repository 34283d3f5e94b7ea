//! Migrations on SQLite (O1): the PostgreSQL a project writes, translated statement by
//! statement, or refused.
//!
//! The contract: what translates keeps its meaning (types, defaults, checks, keys, indexes,
//! views, seed rows, row-level security, `language sql` functions); anything else (plpgsql,
//! triggers, extensions, grants, custom types…) is refused at migration time with the file,
//! line and column and a hint that it needs Postgres (O2). Nothing is silently dropped.
//!
//! Row-level security cannot be enforced by SQLite itself: `enable row level security` and
//! `create policy` become rows of `_reactor_rls` / `_reactor_policies`, with their expressions
//! translated, and the Data API applies them to every request (see `render.rs`).

use std::ops::ControlFlow;

use sqlparser::ast::{
    AlterTableOperation, CastKind, ColumnOption, CreateFunctionBody, CreatePolicyCommand,
    CreatePolicyType, DataType, Expr, FunctionBehavior, FunctionReturnType, ObjectName, ObjectType,
    Owner, Statement, Value as SqlValue, visit_expressions_mut, visit_relations_mut,
};
use sqlparser::dialect::{GenericDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;

/// What one statement of a migration becomes on SQLite.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// SQLite SQL to execute.
    Sql(String),
    EnableRls {
        table: String,
    },
    Policy(PolicyRecord),
    DropPolicy {
        table: String,
        name: String,
    },
    Function(FunctionRecord),
    DropFunction {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PolicyRecord {
    pub table: String,
    pub name: String,
    pub permissive: bool,
    /// `all`, `select`, `insert`, `update` or `delete`.
    pub command: String,
    /// Request roles it applies to; empty means every role (`public`).
    pub roles: Vec<String>,
    /// SQLite expressions over the table's columns.
    pub using: Option<String>,
    pub check: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FunctionArgRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// The default's SQLite expression.
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FunctionRecord {
    pub name: String,
    pub args: Vec<FunctionArgRecord>,
    /// The return type (a table name when it returns rows of one).
    pub returns: String,
    pub returns_set: bool,
    pub volatile: bool,
    /// The body in SQLite's dialect; argument references are `$1`, `$2`… in declaration order.
    pub body: String,
}

/// A step and the line and column of the statement it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub line: usize,
    pub column: usize,
    pub step: Step,
}

/// A statement that cannot be translated, placed in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateError {
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: String,
}

/// A statement of the file and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    offset: usize,
    text: String,
}

/// Splits a file into statements on top-level `;`, skipping comments, quoted strings,
/// quoted identifiers and dollar-quoted bodies.
fn split(sql: &str) -> Vec<Piece> {
    let bytes = sql.as_bytes();
    let mut pieces = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    let n = bytes.len();
    while i < n {
        let c = bytes[i];
        // Comments are not statements; they do not start one.
        if c == b'-' && bytes.get(i + 1) == Some(&b'-') {
            while i < n && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
            let mut depth = 1;
            i += 2;
            while i < n && depth > 0 {
                if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                } else {
                    i += 1;
                }
            }
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b';' {
            if let Some(s) = start.take() {
                pieces.push(Piece {
                    offset: s,
                    text: sql[s..i].to_string(),
                });
            }
            i += 1;
            continue;
        }
        if start.is_none() {
            start = Some(i);
        }
        match c {
            b'\'' | b'"' => {
                i += 1;
                while i < n {
                    if bytes[i] == c {
                        if bytes.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'$' => {
                // $tag$ … $tag$
                let tag_end = sql[i + 1..].find('$').map(|p| i + 1 + p).filter(|&e| {
                    sql[i + 1..e]
                        .chars()
                        .all(|ch| ch.is_alphanumeric() || ch == '_')
                });
                match tag_end {
                    Some(e) => {
                        let tag = &sql[i..=e];
                        match sql[e + 1..].find(tag) {
                            Some(close) => i = e + 1 + close + tag.len(),
                            None => i = n,
                        }
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    if let Some(s) = start {
        let text = sql[s..].trim_end().to_string();
        if !text.is_empty() {
            pieces.push(Piece { offset: s, text });
        }
    }
    pieces
}

fn line_column(sql: &str, offset: usize) -> (usize, usize) {
    let before = &sql[..offset.min(sql.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

const NEEDS_POSTGRES: &str = "this runs on Postgres (O2) only: keep it for reactor-server, or rewrite it within what O1 supports (see the README's Data section)";

/// Translates one migration file.
pub fn translate(sql: &str) -> Result<Vec<Located>, TranslateError> {
    let mut out = Vec::new();
    for piece in split(sql) {
        let (line, column) = line_column(sql, piece.offset);
        let located = |message: String, hint: &str, at: Option<(u64, u64)>| {
            let (line, column) = match at {
                // sqlparser positions are relative to the statement.
                Some((l, c)) if l > 1 => (line + l as usize - 1, c as usize),
                Some((_, c)) => (line, column + c as usize - 1),
                None => (line, column),
            };
            TranslateError {
                line,
                column,
                message,
                hint: hint.to_string(),
            }
        };
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, &piece.text).map_err(|e| {
            let text = e.to_string();
            located(
                format!(
                    "syntax error: {}",
                    text.trim_start_matches("sql parser error: ")
                ),
                "check the statement's syntax",
                position_of(&text),
            )
        })?;
        for statement in statements {
            let mut steps = Vec::new();
            statement_steps(statement, &mut steps)
                .map_err(|(message, hint)| located(message, hint, None))?;
            out.extend(steps.into_iter().map(|step| Located { line, column, step }));
        }
    }
    Ok(out)
}

/// `… at Line: 2, Column: 5` in a sqlparser message.
fn position_of(message: &str) -> Option<(u64, u64)> {
    let line = message
        .split("Line: ")
        .nth(1)?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()?;
    let column = message
        .split("Column: ")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((line, column))
}

type Refusal = (String, &'static str);

fn refuse<T>(what: impl Into<String>) -> Result<T, Refusal> {
    Err((
        format!("{} is not supported on SQLite (O1)", what.into()),
        NEEDS_POSTGRES,
    ))
}

/// Storage's tables, which policies may name: their name in a policy record, and the SQLite
/// table holding them.
const STORAGE_TABLES: &[(&str, &str)] = &[
    ("storage.objects", "_reactor_storage_objects"),
    ("storage.buckets", "_reactor_storage_buckets"),
];

/// The table a policy is on: a project table, or `storage.objects` (Storage's object rows).
fn policy_table(name: &ObjectName) -> Result<String, Refusal> {
    let text = name.to_string().replace('"', "");
    if text == "storage.objects" {
        return Ok(text);
    }
    table_name(name)
}

/// `public.todos` → `todos`; any other schema is refused.
fn table_name(name: &ObjectName) -> Result<String, Refusal> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| {
            p.as_ident()
                .map(|i| i.value.clone())
                .unwrap_or_else(|| p.to_string())
        })
        .collect();
    match parts.as_slice() {
        [t] => Ok(t.clone()),
        [s, t] if s == "public" => Ok(t.clone()),
        _ => refuse(format!("the name {name} (only the public schema is)")),
    }
}

fn statement_steps(mut statement: Statement, steps: &mut Vec<Step>) -> Result<(), Refusal> {
    match &mut statement {
        Statement::CreateTable(create) => {
            if create.query.is_some() || create.like.is_some() || create.partition_of.is_some() {
                return refuse("create table … as / like / partition of");
            }
            create.name =
                ObjectName::from(vec![sqlparser::ast::Ident::new(table_name(&create.name)?)]);
            for column in &mut create.columns {
                let ty = canonical_type(&column.data_type)?;
                let is_pk = column
                    .options
                    .iter()
                    .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)));
                if ty.serial && !is_pk {
                    return refuse(format!("{} outside a primary key", column.data_type));
                }
                let mut options = Vec::new();
                for mut def in std::mem::take(&mut column.options) {
                    match &mut def.option {
                        ColumnOption::Default(expr) => {
                            let e = if ty.name.ends_with("[]") {
                                array_default(expr)?
                            } else {
                                rewrite_expr(expr.clone())?
                            };
                            def.option = ColumnOption::Default(Expr::Nested(Box::new(e)));
                        }
                        ColumnOption::Check(check) => {
                            *check.expr = rewrite_expr((*check.expr).clone())?;
                        }
                        ColumnOption::Identity(_) => {
                            if !(is_pk && ty.name == "integer") {
                                return refuse(
                                    "an identity column other than an integer primary key",
                                );
                            }
                            continue;
                        }
                        ColumnOption::Generated { .. } => {
                            return refuse("a generated column");
                        }
                        ColumnOption::ForeignKey(fk) => {
                            fk.foreign_table = ObjectName::from(vec![sqlparser::ast::Ident::new(
                                table_name(&fk.foreign_table)?,
                            )]);
                        }
                        ColumnOption::Null
                        | ColumnOption::NotNull
                        | ColumnOption::PrimaryKey(_)
                        | ColumnOption::Unique(_) => {}
                        other => return refuse(format!("the column option {other}")),
                    }
                    options.push(def);
                }
                if let Some(n) = ty.max_length {
                    // Postgres refuses longer values; so does this check.
                    let check = parse_expr(&format!(
                        "length(\"{}\") <= {n}",
                        column.name.value.replace('"', "\"\"")
                    ))?;
                    options.push(sqlparser::ast::ColumnOptionDef {
                        name: None,
                        option: ColumnOption::Check(sqlparser::ast::CheckConstraint {
                            name: None,
                            expr: Box::new(check),
                            enforced: None,
                            no_inherit: false,
                        }),
                    });
                }
                column.options = options;
                column.data_type = DataType::Custom(
                    ObjectName::from(vec![sqlparser::ast::Ident::with_quote(
                        '"',
                        ty.name.clone(),
                    )]),
                    vec![],
                );
            }
            for constraint in &mut create.constraints {
                match constraint {
                    sqlparser::ast::TableConstraint::Check(c) => {
                        *c.expr = rewrite_expr((*c.expr).clone())?;
                    }
                    sqlparser::ast::TableConstraint::ForeignKey(fk) => {
                        fk.foreign_table = ObjectName::from(vec![sqlparser::ast::Ident::new(
                            table_name(&fk.foreign_table)?,
                        )]);
                    }
                    sqlparser::ast::TableConstraint::PrimaryKey(_)
                    | sqlparser::ast::TableConstraint::Unique(_) => {}
                    other => return refuse(format!("the table constraint {other}")),
                }
            }
            steps.push(Step::Sql(statement.to_string()));
        }
        Statement::CreateIndex(index) => {
            index.table_name = ObjectName::from(vec![sqlparser::ast::Ident::new(table_name(
                &index.table_name,
            )?)]);
            // The access method is a performance choice, not a meaning: a plain index serves.
            index.using = None;
            index.concurrently = false;
            if !index.include.is_empty() || !index.with.is_empty() {
                return refuse("index include/with options");
            }
            for column in &mut index.columns {
                column.column.expr = rewrite_expr(column.column.expr.clone())?;
                column.operator_class = None;
            }
            if let Some(p) = index.predicate.take() {
                index.predicate = Some(rewrite_expr(p)?);
            }
            steps.push(Step::Sql(statement.to_string()));
        }
        Statement::AlterTable(alter) => {
            let table = table_name(&alter.name)?;
            for op in &alter.operations {
                match op {
                    AlterTableOperation::EnableRowLevelSecurity => steps.push(Step::EnableRls {
                        table: table.clone(),
                    }),
                    // Requests never run as the table owner, so forcing changes nothing here.
                    AlterTableOperation::ForceRowLevelSecurity => {}
                    AlterTableOperation::AddColumn { column_def, .. } => {
                        let mut create = Parser::parse_sql(
                            &PostgreSqlDialect {},
                            &format!(
                                "create table \"{}\" ({column_def})",
                                table.replace('"', "\"\"")
                            ),
                        )
                        .map_err(|e| (e.to_string(), "check the column definition"))?;
                        let Some(Statement::CreateTable(mut created)) = create.pop() else {
                            return refuse("this column definition");
                        };
                        let mut one = Vec::new();
                        statement_steps(Statement::CreateTable(created.clone()), &mut one)?;
                        // Re-render the translated column through a throwaway table.
                        let translated = match one.pop() {
                            Some(Step::Sql(sql)) => sql,
                            _ => return refuse("this column definition"),
                        };
                        let open = translated.find('(').unwrap_or(0);
                        let column = translated[open + 1..translated.len() - 1].to_string();
                        created.columns.clear();
                        steps.push(Step::Sql(format!(
                            "ALTER TABLE \"{}\" ADD COLUMN {column}",
                            table.replace('"', "\"\"")
                        )));
                    }
                    AlterTableOperation::DropColumn { column_names, .. } => {
                        for c in column_names {
                            steps.push(Step::Sql(format!(
                                "ALTER TABLE \"{}\" DROP COLUMN {c}",
                                table.replace('"', "\"\"")
                            )));
                        }
                    }
                    AlterTableOperation::RenameColumn {
                        old_column_name,
                        new_column_name,
                    } => steps.push(Step::Sql(format!(
                        "ALTER TABLE \"{}\" RENAME COLUMN {old_column_name} TO {new_column_name}",
                        table.replace('"', "\"\"")
                    ))),
                    AlterTableOperation::RenameTable { table_name: to } => {
                        steps.push(Step::Sql(format!(
                            "ALTER TABLE \"{}\" RENAME TO {to}",
                            table.replace('"', "\"\"")
                        )))
                    }
                    other => return refuse(format!("alter table … {other}")),
                }
            }
        }
        Statement::CreatePolicy(policy) => {
            let table = policy_table(&policy.table_name)?;
            let command = match policy.command {
                None | Some(CreatePolicyCommand::All) => "all",
                Some(CreatePolicyCommand::Select) => "select",
                Some(CreatePolicyCommand::Insert) => "insert",
                Some(CreatePolicyCommand::Update) => "update",
                Some(CreatePolicyCommand::Delete) => "delete",
            };
            let mut roles = Vec::new();
            for owner in policy.to.iter().flatten() {
                match owner {
                    Owner::Ident(i) if i.value.eq_ignore_ascii_case("public") => {}
                    Owner::Ident(i)
                        if matches!(
                            i.value.as_str(),
                            "reactor_anon" | "reactor_authenticated" | "reactor_service"
                        ) =>
                    {
                        roles.push(i.value.clone())
                    }
                    other => {
                        return Err((
                            format!(
                                "policy {} names the role {other}, which requests never take",
                                policy.name
                            ),
                            "requests run as reactor_anon (public key), reactor_authenticated (a signed-in user) or reactor_service (service key)",
                        ));
                    }
                }
            }
            let translate = |e: &Option<Expr>| -> Result<Option<String>, Refusal> {
                e.clone()
                    .map(|e| rewrite_expr(e).map(|e| e.to_string()))
                    .transpose()
            };
            steps.push(Step::Policy(PolicyRecord {
                table,
                name: policy.name.value.clone(),
                permissive: !matches!(policy.policy_type, Some(CreatePolicyType::Restrictive)),
                command: command.to_string(),
                roles,
                using: translate(&policy.using)?,
                check: translate(&policy.with_check)?,
            }));
        }
        Statement::DropPolicy(drop) => {
            steps.push(Step::DropPolicy {
                table: policy_table(&drop.table_name)?,
                name: drop.name.value.clone(),
            });
        }
        Statement::CreateFunction(f) => {
            steps.push(Step::Function(function_record(f)?));
        }
        Statement::DropFunction(drop) => {
            for f in &drop.func_desc {
                steps.push(Step::DropFunction {
                    name: table_name(&f.name)?,
                });
            }
        }
        Statement::CreateView(view) => {
            if view.materialized {
                return refuse("a materialized view");
            }
            let name = table_name(&view.name)?;
            view.name = ObjectName::from(vec![sqlparser::ast::Ident::new(name.clone())]);
            let replace = view.or_replace;
            view.or_replace = false;
            rewrite_statement(&mut statement)?;
            if replace {
                steps.push(Step::Sql(format!(
                    "DROP VIEW IF EXISTS \"{}\"",
                    name.replace('"', "\"\"")
                )));
            }
            steps.push(Step::Sql(statement.to_string()));
        }
        Statement::Drop {
            object_type,
            cascade,
            names,
            ..
        } => {
            if *cascade {
                return refuse("drop … cascade");
            }
            if !matches!(
                object_type,
                ObjectType::Table | ObjectType::View | ObjectType::Index
            ) {
                return refuse(format!("drop {object_type}"));
            }
            for name in names.iter_mut() {
                *name = ObjectName::from(vec![sqlparser::ast::Ident::new(table_name(name)?)]);
            }
            steps.push(Step::Sql(statement.to_string()));
        }
        Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
            rewrite_statement(&mut statement)?;
            steps.push(Step::Sql(statement.to_string()));
        }
        Statement::Comment { .. } => {}
        Statement::Grant(_) | Statement::Revoke(_) => {
            return Err((
                "grant and revoke are not supported on SQLite (O1)".into(),
                "O1 has no database roles: every request role may use every table, and row-level security policies decide which rows; keep grants for O2 in a separate migration run only there",
            ));
        }
        Statement::CreateExtension(_) => return refuse("create extension"),
        Statement::CreateTrigger(_) => return refuse("a trigger"),
        Statement::CreateType { .. } => {
            return refuse("create type (use text with a check constraint)");
        }
        other => {
            let first: String = other
                .to_string()
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            return refuse(format!("the statement `{}…`", first.to_lowercase()));
        }
    }
    Ok(())
}

fn function_record(f: &sqlparser::ast::CreateFunction) -> Result<FunctionRecord, Refusal> {
    let name = table_name(&f.name)?;
    match &f.language {
        Some(l) if l.value.eq_ignore_ascii_case("sql") => {}
        Some(l) => return refuse(format!("a function in language {l}")),
        None => return refuse("a function without `language sql`"),
    }
    let mut args = Vec::new();
    for (i, a) in f.args.iter().flatten().enumerate() {
        if a.mode
            .as_ref()
            .is_some_and(|m| !matches!(m, sqlparser::ast::ArgMode::In))
        {
            return refuse("out and inout function parameters");
        }
        let Some(arg_name) = &a.name else {
            return refuse(format!(
                "unnamed parameter ${} (rpc calls name their arguments)",
                i + 1
            ));
        };
        args.push(FunctionArgRecord {
            name: arg_name.value.clone(),
            ty: canonical_type(&a.data_type)?.name,
            default: a
                .default_expr
                .clone()
                .map(|e| rewrite_expr(e).map(|e| e.to_string()))
                .transpose()?,
        });
    }
    let (returns, returns_set) = match &f.return_type {
        Some(FunctionReturnType::SetOf(t)) => (return_type(t)?, true),
        Some(FunctionReturnType::DataType(t)) => (return_type(t)?, false),
        None => return refuse("a function without a return type"),
    };
    let body_text = match &f.function_body {
        Some(CreateFunctionBody::AsBeforeOptions { body, .. })
        | Some(CreateFunctionBody::AsAfterOptions(body)) => match body {
            Expr::Value(v) => match &v.value {
                SqlValue::DollarQuotedString(s) => s.value.clone(),
                SqlValue::SingleQuotedString(s) => s.clone(),
                _ => return refuse("this function body"),
            },
            _ => return refuse("this function body"),
        },
        _ => return refuse("this function body"),
    };
    let mut inner = Parser::parse_sql(&PostgreSqlDialect {}, &body_text).map_err(|e| {
        (
            format!("the body of {name}: {e}"),
            "check the function body's SQL",
        )
    })?;
    if inner.len() != 1 {
        return refuse(format!("a function body of {} statements", inner.len()));
    }
    let mut body = inner.remove(0);
    if !matches!(
        body,
        Statement::Query(_) | Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
    ) {
        return refuse("a function body other than one select, insert, update or delete");
    }
    rewrite_statement(&mut body)?;
    // Arguments by name become positional references, as Postgres allows both.
    let names: Vec<String> = args.iter().map(|a| a.name.clone()).collect();
    let _ = visit_expressions_mut(&mut body, |e| {
        if let Expr::Identifier(ident) = e
            && let Some(i) = names.iter().position(|n| *n == ident.value)
        {
            *e = Expr::Value(SqlValue::Placeholder(format!("${}", i + 1)).into());
        }
        ControlFlow::<()>::Continue(())
    });
    let volatile = !matches!(
        f.behavior,
        Some(FunctionBehavior::Immutable | FunctionBehavior::Stable)
    );
    Ok(FunctionRecord {
        name,
        args,
        returns,
        returns_set,
        volatile,
        body: body.to_string(),
    })
}

fn return_type(t: &DataType) -> Result<String, Refusal> {
    match t {
        DataType::Custom(name, _) => {
            table_name(name).or_else(|_| canonical_type(t).map(|c| c.name))
        }
        other => canonical_type(other).map(|c| c.name),
    }
}

/// A column type as Postgres's `format_type` spells it, plus what the translation must keep.
struct Canonical {
    name: String,
    serial: bool,
    max_length: Option<u64>,
}

fn canonical_type(t: &DataType) -> Result<Canonical, Refusal> {
    let text = t.to_string().to_ascii_lowercase();
    let (base, array) = match text.strip_suffix("[]") {
        Some(b) => (b.trim().to_string(), true),
        None => (text.clone(), false),
    };
    let (head, args) = match base.split_once('(') {
        Some((h, a)) => (
            h.trim().to_string(),
            Some(a.trim_end_matches(')').trim().to_string()),
        ),
        None => (base.clone(), None),
    };
    let mut max_length = None;
    let mut serial = false;
    let name = match head.as_str() {
        "int" | "integer" | "int4" => "integer",
        "smallint" | "int2" => "smallint",
        "bigint" | "int8" => "bigint",
        "serial" | "serial4" | "bigserial" | "serial8" | "smallserial" => {
            serial = true;
            "integer"
        }
        "text" => "text",
        "varchar" | "character varying" => {
            max_length = args.as_deref().and_then(|a| a.parse().ok());
            "character varying"
        }
        "boolean" | "bool" => "boolean",
        "real" | "float4" => "real",
        "double precision" | "float8" | "float" => "double precision",
        "numeric" | "decimal" => "numeric",
        "uuid" => "uuid",
        "date" => "date",
        "timestamp" | "timestamp without time zone" => "timestamp without time zone",
        "timestamptz" | "timestamp with time zone" => "timestamp with time zone",
        "time" | "time without time zone" => "time without time zone",
        "json" => "json",
        "jsonb" => "jsonb",
        "bytea" => "bytea",
        _ => return refuse(format!("the type {t}")),
    };
    if array && (serial || max_length.is_some()) {
        return refuse(format!("the type {t}"));
    }
    Ok(Canonical {
        name: if array {
            format!("{name}[]")
        } else {
            name.to_string()
        },
        serial,
        max_length: if array { None } else { max_length },
    })
}

/// `'{a,b}'` as a default of an array column: arrays are JSON on SQLite.
fn array_default(expr: &Expr) -> Result<Expr, Refusal> {
    let literal = match expr {
        Expr::Value(v) => match &v.value {
            SqlValue::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        Expr::Cast { expr, .. } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                SqlValue::SingleQuotedString(s) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    let Some(items) = literal.and_then(|l| crate::render::pg_array_items(&l)) else {
        return refuse(format!("the array default {expr}"));
    };
    let json = serde_json::to_string(&items).map_err(|e| (e.to_string(), ""))?;
    Ok(Expr::Value(SqlValue::SingleQuotedString(json).into()))
}

fn parse_expr(text: &str) -> Result<Expr, Refusal> {
    Parser::new(&GenericDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| {
            (
                format!("internal translation error: {e}"),
                "report this with the statement",
            )
        })
}

/// Rewrites every expression of a statement (and strips `public.` from table names).
fn rewrite_statement(statement: &mut Statement) -> Result<(), Refusal> {
    let mut failure = None;
    let _ = visit_relations_mut(statement, |name| {
        match table_name(name) {
            Ok(t) => *name = ObjectName::from(vec![sqlparser::ast::Ident::new(t)]),
            Err(e) => {
                failure = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let mut failure = None;
    let _ = visit_expressions_mut(statement, |e| match rewrite_one(e) {
        Ok(()) => ControlFlow::Continue(()),
        Err(err) => {
            failure = Some(err);
            ControlFlow::Break(())
        }
    });
    failure.map_or(Ok(()), Err)
}

/// Rewrites one expression tree bottom-up.
pub fn rewrite_expr(mut expr: Expr) -> Result<Expr, Refusal> {
    let mut failure = None;
    let _ = visit_relations_mut(&mut expr, |name| {
        let text = name.to_string().replace('"', "");
        if let Some((_, local)) = STORAGE_TABLES.iter().find(|(pg, _)| *pg == text) {
            *name = ObjectName::from(vec![sqlparser::ast::Ident::new(*local)]);
        } else if let Ok(t) = table_name(name) {
            *name = ObjectName::from(vec![sqlparser::ast::Ident::new(t)]);
        }
        ControlFlow::<()>::Continue(())
    });
    let _ = visit_expressions_mut(&mut expr, |e| match rewrite_one(e) {
        Ok(()) => ControlFlow::Continue(()),
        Err(err) => {
            failure = Some(err);
            ControlFlow::Break(())
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(expr),
    }
}

/// Functions SQLite has with Postgres's meaning.
const SAME_FUNCTIONS: &[&str] = &[
    "lower",
    "upper",
    "length",
    "coalesce",
    "nullif",
    "abs",
    "round",
    "trim",
    "ltrim",
    "rtrim",
    "replace",
    "substr",
    "instr",
    "min",
    "max",
    "count",
    "sum",
    "avg",
    "reactor_user_id",
    "reactor_org_id",
    "reactor_role",
    "reactor_uuid",
    "reactor_now",
    "reactor_like",
    "json",
];

fn rewrite_one(e: &mut Expr) -> Result<(), Refusal> {
    match e {
        Expr::Function(f) => {
            let name = f.name.to_string().to_ascii_lowercase();
            let args_text = f.args.to_string();
            let renamed = match name.as_str() {
                "gen_random_uuid" | "uuid_generate_v4" => "reactor_uuid",
                "now"
                | "transaction_timestamp"
                | "statement_timestamp"
                | "clock_timestamp"
                | "current_timestamp"
                | "localtimestamp" => "reactor_now",
                "reactor.user_id" | "auth.uid" => "reactor_user_id",
                "reactor.org_id" => "reactor_org_id",
                "reactor.role" => "reactor_role",
                "char_length" | "character_length" => "length",
                "greatest" => "max",
                "least" => "min",
                "current_setting" => {
                    let setting = args_text.to_ascii_lowercase();
                    let target = if setting.contains("'reactor.user_id'") {
                        "reactor_user_id()"
                    } else if setting.contains("'reactor.org_id'") {
                        "reactor_org_id()"
                    } else if setting.contains("'reactor.role'") {
                        "reactor_role()"
                    } else {
                        return refuse(format!("current_setting{args_text}"));
                    };
                    *e = parse_expr(target)?;
                    return Ok(());
                }
                n if SAME_FUNCTIONS.contains(&n) => return Ok(()),
                _ => return refuse(format!("the function {}", f.name)),
            };
            let args = if args_text.is_empty() {
                "()".to_string()
            } else {
                args_text
            };
            let args = if renamed.starts_with("reactor_") && renamed != "reactor_like" {
                "()".to_string()
            } else {
                args
            };
            *e = parse_expr(&format!("{renamed}{args}"))?;
        }
        Expr::Cast {
            kind,
            expr,
            data_type,
            ..
        } => {
            if matches!(kind, CastKind::TryCast | CastKind::SafeCast) {
                return refuse("try_cast");
            }
            let ty = canonical_type(data_type)?;
            let inner = expr.to_string();
            let text = match crate::schema::kind_of(&ty.name) {
                crate::schema::Kind::Int => format!("CAST(({inner}) AS INTEGER)"),
                crate::schema::Kind::Float => format!("CAST(({inner}) AS REAL)"),
                crate::schema::Kind::Json => format!("json({inner})"),
                crate::schema::Kind::Array => return refuse(format!("a cast to {data_type}")),
                _ if ty.name == "text" || ty.name == "character varying" => {
                    format!("CAST(({inner}) AS TEXT)")
                }
                _ => format!("({inner})"),
            };
            *e = parse_expr(&text)?;
        }
        Expr::Like {
            negated,
            expr,
            pattern,
            escape_char: None,
            any: false,
        } => {
            let test = format!("reactor_like({expr}, {pattern}, 0)");
            *e = parse_expr(&if *negated {
                format!("NOT {test}")
            } else {
                test
            })?;
        }
        Expr::ILike {
            negated,
            expr,
            pattern,
            escape_char: None,
            any: false,
        } => {
            let test = format!("reactor_like({expr}, {pattern}, 1)");
            *e = parse_expr(&if *negated {
                format!("NOT {test}")
            } else {
                test
            })?;
        }
        Expr::Like { .. } | Expr::ILike { .. } => return refuse("like … escape / like any"),
        Expr::SimilarTo { .. } => return refuse("similar to"),
        Expr::AnyOp { .. } | Expr::AllOp { .. } => {
            return refuse("= any(…) / = all(…) (use in (…))");
        }
        Expr::Array(_) => return refuse("an array constructor"),
        Expr::Interval(_) => return refuse("an interval"),
        Expr::TypedString(ts) => {
            let value = ts.value.to_string();
            *e = parse_expr(&value)?;
        }
        Expr::Value(v) => {
            if let SqlValue::Placeholder(_) = v.value {
                return Ok(());
            }
        }
        Expr::Identifier(_)
        | Expr::CompoundIdentifier(_)
        | Expr::BinaryOp { .. }
        | Expr::UnaryOp { .. }
        | Expr::Nested(_)
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::IsTrue(_)
        | Expr::IsFalse(_)
        | Expr::IsNotTrue(_)
        | Expr::IsNotFalse(_)
        | Expr::IsDistinctFrom(..)
        | Expr::IsNotDistinctFrom(..)
        | Expr::In { .. }
        | Expr::Between { .. }
        | Expr::Case { .. }
        | Expr::Exists { .. }
        | Expr::Subquery(_) => {}
        other => {
            let text = other.to_string();
            return refuse(format!("the expression `{text}`"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql_steps(src: &str) -> Vec<String> {
        translate(src)
            .expect("translates")
            .into_iter()
            .filter_map(|s| match s.step {
                Step::Sql(sql) => Some(sql),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn splits_on_top_level_semicolons_only() {
        let src = "-- a; comment\ncreate table a (x text default 'a;b');\n/* b; */ create function f() returns int language sql as $$ select 1; $$;\n  select 1";
        let pieces = split(src);
        assert_eq!(pieces.len(), 3);
        assert!(pieces[0].text.starts_with("create table a"));
        assert_eq!(line_column(src, pieces[0].offset), (2, 1));
        assert!(pieces[1].text.ends_with("$$ select 1; $$"));
        assert_eq!(line_column(src, pieces[2].offset), (4, 3));
    }

    #[test]
    fn tables_keep_postgres_types_and_meaning() {
        let err = translate("create table t (n serial, x int)").expect_err("serial outside pk");
        assert!(err.message.contains("serial"), "{}", err.message);
        let steps = sql_steps(
            "create table public.t (
                id uuid primary key default gen_random_uuid(),
                org uuid not null default reactor.org_id(),
                name varchar(10) not null,
                tags text[] default '{a,b}',
                at timestamptz default now(),
                ok bool default true check (ok or name <> '')
            );",
        );
        let sql = &steps[0];
        assert!(sql.starts_with("CREATE TABLE t ("), "{sql}");
        assert!(
            sql.contains("id \"uuid\" PRIMARY KEY DEFAULT (reactor_uuid())"),
            "{sql}"
        );
        assert!(sql.contains("DEFAULT (reactor_org_id())"), "{sql}");
        assert!(
            sql.contains("\"character varying\" NOT NULL CHECK (length(\"name\") <= 10)"),
            "{sql}"
        );
        assert!(
            sql.contains("\"text[]\" DEFAULT ('[\"a\",\"b\"]')"),
            "{sql}"
        );
        assert!(
            sql.contains("\"timestamp with time zone\" DEFAULT (reactor_now())"),
            "{sql}"
        );
    }

    #[test]
    fn policies_become_records() {
        let steps: Vec<Step> = translate(
            "alter table todos enable row level security;
             create policy p on todos as restrictive for update to reactor_authenticated
               using (org_id = reactor.org_id()) with check (title ilike 'a%');",
        )
        .expect("translates")
        .into_iter()
        .map(|l| l.step)
        .collect();
        assert_eq!(
            steps[0],
            Step::EnableRls {
                table: "todos".into()
            }
        );
        let Step::Policy(p) = &steps[1] else {
            panic!("policy")
        };
        assert!(!p.permissive);
        assert_eq!(p.command, "update");
        assert_eq!(p.roles, ["reactor_authenticated"]);
        assert_eq!(p.using.as_deref(), Some("org_id = reactor_org_id()"));
        assert_eq!(p.check.as_deref(), Some("reactor_like(title, 'a%', 1)"));
    }

    #[test]
    fn functions_keep_their_body_with_positional_arguments() {
        let steps = translate(
            "create function add_them(a integer, b integer default 2) returns integer
               language sql immutable as $$ select a + b $$;",
        )
        .expect("translates");
        let Step::Function(f) = &steps[0].step else {
            panic!("function")
        };
        assert_eq!(f.body, "SELECT $1 + $2");
        assert!(!f.volatile);
        assert_eq!(f.args[1].default.as_deref(), Some("2"));
    }

    #[test]
    fn refusals_name_the_place_and_point_to_postgres() {
        let src = "create table a (x int);\n\ncreate extension pgcrypto;";
        let e = translate(src).expect_err("extension");
        assert_eq!((e.line, e.column), (3, 1));
        assert!(e.hint.contains("O2"), "{}", e.hint);
        let e = translate(
            "create function f() returns int language plpgsql as $$ begin return 1; end $$;",
        )
        .expect_err("plpgsql");
        assert!(e.message.contains("plpgsql"), "{}", e.message);
        let e = translate("create table b (x int check (x = any(array[1,2])));").expect_err("any");
        assert!(e.message.contains("array"), "{}", e.message);
        let e = translate("create table c (x int,\n  y int not nul);").expect_err("syntax");
        assert_eq!(e.line, 2, "{}", e.message);
    }
}
